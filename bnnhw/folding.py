"""Folding: how many PEs and SIMD lanes each layer gets, and how many pixels enter per word.

A layer of ``MH`` neurons over ``MW`` inputs with ``PE`` processing elements of ``SIMD`` lanes
takes ``NF * SF = (MH / PE) * (MW / SIMD)`` cycles per frame (see :mod:`bnnhw.packing`). A
dataflow of layers runs at the pace of its slowest stage, so a good folding makes all stages
about equal (FINN's "balanced pipeline").

Spec strings (:func:`parse_fold`)
---------------------------------
``"16x49,16x32,16x32,10x32"``
    ``PExSIMD`` per layer, first layer first. Pixels per word default to the smallest ``P``
    dividing the pixel count with ``pixels / P <= max NF*SF`` (the input is never the
    bottleneck).
``"16x49,16x32,16x32,10x32@4"``
    The same with ``P = 4`` pixels per input word.
``None``, ``"balanced"`` or ``"balanced:LANES"``
    :func:`balanced_folding` with ``LANES`` lanes (PE * SIMD) for the largest layer (default
    :data:`DEFAULT_LANES`).

Constraints (checked by :meth:`Folding.check`, messages name the layer and the values): one
entry per layer; ``PE | MH`` and ``SIMD | MW`` for every layer; ``P | pixels``. The first
layer's SIMD need not equal ``P * L`` (``L`` thermometer levels): the accelerator joins the
quantizer's ``P * L``-bit words into ``lcm(P * L, SIMD)``-bit words, which divide ``MW``
because both widths do.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import Model
from .packing import check_folding

__all__ = ["DEFAULT_LANES", "Folding", "FoldingError", "balanced_folding", "parse_fold"]

DEFAULT_LANES = 256
"""XNOR lanes (PE * SIMD) given to the largest layer by the default balanced folding."""


class FoldingError(ValueError):
    """A folding that does not fit the model, or a malformed folding spec."""


@dataclass(frozen=True)
class Folding:
    """Per-layer ``(PE, SIMD)`` and the pixels per input word.

    Parameters
    ----------
    layers : tuple of (int, int)
        ``(PE, SIMD)`` of each dense layer, first layer first.
    pixels_per_word : int
        ``P``, pixels in each input stream word.
    """

    layers: tuple[tuple[int, int], ...]
    pixels_per_word: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple((int(pe), int(simd)) for pe, simd in self.layers))
        if self.pixels_per_word < 1:
            raise FoldingError(f"pixels per word must be >= 1 (P={self.pixels_per_word})")

    def check(self, model: Model) -> None:
        """Raise :class:`FoldingError` unless this folding fits ``model``."""
        require_dense(model)
        if len(self.layers) != len(model.layers):
            raise FoldingError(
                f"folding has {len(self.layers)} layer(s) but the model has "
                f"{len(model.layers)} (topology {model.topology})")
        for i, ((pe, simd), layer) in enumerate(zip(self.layers, model.layers, strict=True)):
            try:
                check_folding(layer.out_features, layer.in_features, pe, simd, i)
            except ValueError as exc:
                raise FoldingError(str(exc)) from None
        pixels = model.quantizer.pixels
        if pixels % self.pixels_per_word:
            raise FoldingError(
                f"pixels per word must divide the pixel count "
                f"(pixels={pixels}, P={self.pixels_per_word})")

    def layer_cycles(self, model: Model) -> list[int]:
        """``NF * SF`` of every layer."""
        return [(layer.out_features // pe) * (layer.in_features // simd)
                for (pe, simd), layer in zip(self.layers, model.layers, strict=True)]

    @property
    def spec(self) -> str:
        """The spec string that :func:`parse_fold` turns back into this folding."""
        body = ",".join(f"{pe}x{simd}" for pe, simd in self.layers)
        return f"{body}@{self.pixels_per_word}"


def require_dense(model: Model) -> None:
    """Raise :class:`FoldingError` if ``model`` has a layer the gateware cannot build yet.

    The dataflow builds dense and output layers; conv and max-pool layers (model file kinds
    ``conv`` and ``maxpool``) run in the reference and the trainer only.
    """
    for i, layer in enumerate(model.layers):
        if layer.kind not in ("dense", "output"):
            raise FoldingError(
                f"layer {i} is a {layer.kind} layer; the accelerator builds dense layers only "
                f"(topology {model.topology})")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _default_pixels_per_word(pixels: int, cycles: int) -> int:
    """Smallest ``P`` dividing ``pixels`` with ``pixels / P <= cycles``."""
    return next(p for p in _divisors(pixels) if pixels // p <= cycles)


def balanced_folding(model: Model, lanes: int = DEFAULT_LANES) -> Folding:
    """A folding whose layers all take about the same number of cycles per frame.

    Rule: the target is ``T = ceil(max_i MH_i * MW_i / lanes)``, the cycles the largest
    layer needs with ``lanes`` XNOR lanes. Each layer then gets the ``(PE, SIMD)`` pair with
    ``PE | MH``, ``SIMD | MW`` and ``NF * SF <= T`` that uses the fewest lanes ``PE * SIMD``
    (ties: the larger SIMD, which needs fewer accumulators and comparators). Pixels per word:
    the smallest ``P`` with ``pixels / P <= max NF*SF``. For SFC (784-256-256-256-10, one
    level) and 256 lanes: ``T = 784``; layers get 16x16 (784 cycles), 1x128 (512), 1x128 (512)
    and 1x4 (640), and ``P = 1``.

    Parameters
    ----------
    model : Model
    lanes : int
        Lanes of the largest layer (>= 1).
    """
    if lanes < 1:
        raise FoldingError(f"balanced folding needs lanes >= 1 (lanes={lanes})")
    require_dense(model)
    sizes = [(layer.out_features, layer.in_features) for layer in model.layers]
    largest = max(mh * mw for mh, mw in sizes)
    target = max(1, -(-largest // lanes))
    layers = []
    for mh, mw in sizes:
        pairs = [(pe, simd) for pe in _divisors(mh) for simd in _divisors(mw)
                 if (mh // pe) * (mw // simd) <= target]
        layers.append(min(pairs, key=lambda p: (p[0] * p[1], -p[1])))
    cycles = max((mh // pe) * (mw // simd) for (pe, simd), (mh, mw) in zip(layers, sizes,
                                                                           strict=True))
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
        pe, x, simd = entry.strip().lower().partition("x")
        if not x:
            raise FoldingError(
                f"fold spec {spec!r}: layer {i} entry {entry.strip()!r} is not PExSIMD")
        layers.append((_int(pe, f"layer {i} PE", spec), _int(simd, f"layer {i} SIMD", spec)))
    for i, (pe, simd) in enumerate(layers):
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
