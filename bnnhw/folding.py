"""Folding: how many PEs and SIMD lanes each layer gets, and how many pixels enter per word.

A layer of ``MH`` neurons over ``MW`` inputs with ``PE`` processing elements of ``SIMD`` lanes
takes ``NF * SF = (MH / PE) * (MW / SIMD)`` cycles per input vector (see :mod:`bnnhw.packing`).
A dense layer sees one vector per frame; a convolution sees one window of ``MW = K * K * C``
bits per output position, ``OH * OW`` per frame, with ``MH = OC``. A dataflow of layers runs at
the pace of its slowest stage, so a good folding makes all stages about equal (FINN's "balanced
pipeline").

Spec strings (:func:`parse_fold`)
---------------------------------
``"16x49,16x32,16x32,10x32"``
    ``PExSIMD`` per layer, first layer first. Pixels per word default to the smallest ``P``
    dividing the pixel count with ``pixels / P <= max`` of :meth:`Folding.layer_cycles` (the
    input is never the bottleneck).
``"16x3,-,16x16,-,8x100,10x8"``
    A max-pool layer takes no folding; its entry is ``-``.
``"16x49,16x32,16x32,10x32@4"``
    The same with ``P = 4`` pixels per input word.
``None``, ``"balanced"`` or ``"balanced:LANES"``
    :func:`balanced_folding` with ``LANES`` lanes (PE * SIMD) for the layer with the most work
    (default :data:`DEFAULT_LANES`).

Constraints (checked by :meth:`Folding.check`, messages name the layer and the values): one
entry per layer; ``PE | MH`` and ``SIMD | MW`` for every dense and conv layer, ``-`` exactly
for the max-pool layers; ``P | pixels``. The first layer's SIMD need not equal ``P * L`` (``L``
thermometer levels): the accelerator converts the quantizer's ``P * L``-bit words to the width
the layer reads (see :class:`bnnhw.gateware.dataflow.Accelerator`). The first layer of a
``pixels8`` model folds the same way over its ``MW`` pixels: each of its ``PE * SIMD`` lanes adds
or subtracts one 8-bit pixel instead of counting one XNOR bit, and it reads ``8 P``-bit words.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import Model
from .packing import check_folding

__all__ = ["DEFAULT_LANES", "Folding", "FoldingError", "balanced_folding", "divisors",
           "parse_fold"]

DEFAULT_LANES = 256
"""XNOR lanes (PE * SIMD) given to the largest layer by the default balanced folding."""


class FoldingError(ValueError):
    """A folding that does not fit the model, or a malformed folding spec."""


@dataclass(frozen=True)
class Folding:
    """Per-layer ``(PE, SIMD)`` and the pixels per input word.

    Parameters
    ----------
    layers : tuple of (int, int) or None
        ``(PE, SIMD)`` of each layer, first layer first; ``None`` for a max-pool layer.
    pixels_per_word : int
        ``P``, pixels in each input stream word.
    """

    layers: tuple[tuple[int, int] | None, ...]
    pixels_per_word: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(
            None if entry is None else (int(entry[0]), int(entry[1])) for entry in self.layers))
        if self.pixels_per_word < 1:
            raise FoldingError(f"pixels per word must be >= 1 (P={self.pixels_per_word})")

    def check(self, model: Model) -> None:
        """Raise :class:`FoldingError` unless this folding fits ``model``."""
        if len(self.layers) != len(model.layers):
            raise FoldingError(
                f"folding has {len(self.layers)} layer(s) but the model has "
                f"{len(model.layers)} (topology {model.topology})")
        for i, (entry, layer) in enumerate(zip(self.layers, model.layers, strict=True)):
            if not layer.folded or entry is None:
                if not layer.folded and entry is None:
                    continue
                got = "-" if entry is None else f"{entry[0]}x{entry[1]}"
                want = "PExSIMD" if layer.folded else "'-'"
                raise FoldingError(f"layer {i} is a {layer.kind} layer and needs {want} in the "
                                   f"folding, got {got!r}")
            mh, mw = layer.matrix_shape
            try:
                check_folding(mh, mw, entry[0], entry[1], i)
            except ValueError as exc:
                raise FoldingError(str(exc)) from None
        pixels = model.quantizer.pixels
        if pixels % self.pixels_per_word:
            raise FoldingError(
                f"pixels per word must divide the pixel count "
                f"(pixels={pixels}, P={self.pixels_per_word})")

    def layer_cycles(self, model: Model) -> list[int]:
        """Cycles per frame of every layer's compute.

        ``V * NF * SF`` for dense (``V = 1``) and conv (``V = OH * OW``) layers; ``H * W`` for
        a max-pool, which takes one pixel per cycle.
        """
        cycles = []
        for entry, layer in zip(self.layers, model.layers, strict=True):
            if entry is None:
                h, w, _ = layer.in_shape
                cycles.append(h * w)
            else:
                mh, mw = layer.matrix_shape
                cycles.append(layer.vectors * (mh // entry[0]) * (mw // entry[1]))
        return cycles

    @property
    def spec(self) -> str:
        """The spec string that :func:`parse_fold` turns back into this folding."""
        body = ",".join("-" if entry is None else f"{entry[0]}x{entry[1]}"
                        for entry in self.layers)
        return f"{body}@{self.pixels_per_word}"


def divisors(n: int) -> list[int]:
    """The divisors of ``n``, ascending: the PE (of ``MH``) and SIMD (of ``MW``) choices."""
    return [d for d in range(1, n + 1) if n % d == 0]


def _default_pixels_per_word(pixels: int, cycles: int) -> int:
    """Smallest ``P`` dividing ``pixels`` with ``pixels / P <= cycles``."""
    return next(p for p in divisors(pixels) if pixels // p <= cycles)


def balanced_folding(model: Model, lanes: int = DEFAULT_LANES) -> Folding:
    """A folding whose layers all take about the same number of cycles per frame.

    Rule: the target is ``T = ceil(max_i V_i * MH_i * MW_i / lanes)``, the cycles the layer with
    the most work needs with ``lanes`` XNOR lanes (``V`` vectors per frame: 1 for dense layers,
    ``OH * OW`` for convolutions). Each dense or conv layer then gets the ``(PE, SIMD)`` pair
    with ``PE | MH``, ``SIMD | MW`` and ``V * NF * SF <= T`` that uses the fewest lanes ``PE *
    SIMD`` (ties: the larger SIMD, which needs fewer accumulators and comparators), or ``(MH,
    MW)`` if none is fast enough; max-pool layers get ``-``. Pixels per word: the smallest
    ``P`` with ``pixels / P <=`` the largest :meth:`Folding.layer_cycles`. For SFC
    (784-256-256-256-10, one level) and 256 lanes: ``T = 784``; layers get 16x16 (784
    cycles), 1x128 (512), 1x128 (512) and 1x4 (640), and ``P = 1``.

    Parameters
    ----------
    model : Model
    lanes : int
        Lanes of the largest layer, from 1 to ``max_i V_i * MH_i * MW_i`` (where every layer
        is fully unfolded already).
    """
    computing = [layer for layer in model.layers if layer.folded]
    largest = max(layer.vectors * layer.weights.size for layer in computing)
    if not 1 <= lanes <= largest:
        raise FoldingError(f"balanced folding needs 1 <= lanes <= {largest} (the largest "
                           f"layer's work, where every layer is fully unfolded) (lanes={lanes})")
    target = max(1, -(-largest // lanes))
    layers: list[tuple[int, int] | None] = []
    for layer in model.layers:
        if not layer.folded:
            layers.append(None)
            continue
        (mh, mw), v = layer.matrix_shape, layer.vectors
        pairs = [(pe, simd) for pe in divisors(mh) for simd in divisors(mw)
                 if v * (mh // pe) * (mw // simd) <= target] or [(mh, mw)]
        layers.append(min(pairs, key=lambda p: (p[0] * p[1], -p[1])))
    cycles = max(Folding(tuple(layers), 1).layer_cycles(model))
    folding = Folding(tuple(layers), _default_pixels_per_word(model.quantizer.pixels, cycles))
    folding.check(model)
    return folding


def _int(text: str, what: str, spec: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise FoldingError(f"fold spec {spec!r}: {what} {text!r} is not an integer") from None


def parse_fold(spec: str | None, model: Model) -> Folding:
    """Turn a spec string (see the module docs) into a :class:`Folding` checked against ``model``.

    Raises
    ------
    FoldingError
        Malformed spec (naming the bad entry), or a folding that does not fit the model.
    """
    if spec is None or spec.strip() == "balanced":
        return balanced_folding(model)
    spec = spec.strip()
    if spec.startswith("balanced:"):
        return balanced_folding(model, _int(spec.split(":", 1)[1], "lane count", spec))
    body, at, pixels = spec.partition("@")
    layers = []
    for i, entry in enumerate(body.split(",")):
        if entry.strip() == "-":
            layers.append(None)
            continue
        pe, x, simd = entry.strip().lower().partition("x")
        if not x:
            raise FoldingError(
                f"fold spec {spec!r}: layer {i} entry {entry.strip()!r} is not PExSIMD or '-'")
        layers.append((_int(pe, f"layer {i} PE", spec), _int(simd, f"layer {i} SIMD", spec)))
    for i, entry in enumerate(layers):
        if entry is None:
            continue
        pe, simd = entry
        if pe < 1 or simd < 1:
            raise FoldingError(f"layer {i}: PE and SIMD must be >= 1 (PE={pe}, SIMD={simd})")
    if at:
        p = _int(pixels, "pixels per word", spec)
        if p < 1:
            raise FoldingError(f"fold spec {spec!r}: pixels per word must be >= 1 (P={p})")
    else:
        p = 1
    folding = Folding(tuple(layers), p)
    folding.check(model)
    if not at:
        cycles = max(folding.layer_cycles(model))
        folding = Folding(folding.layers, _default_pixels_per_word(model.quantizer.pixels,
                                                                   cycles))
    return folding
