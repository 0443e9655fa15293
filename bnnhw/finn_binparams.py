"""Import FINN / BNN-PYNQ binparams folders (the MVTU's own weight and threshold files).

A binparams folder holds, for each layer ``L`` and each of its ``PE`` processing elements
``p``, the memories of that PE as FINN's matrix-vector threshold unit reads them:

* ``{L}-{p}-weights.bin``: little-endian uint64 words, ``NF * SF`` of them (``NF = MH / PE``
  neuron folds, ``SF = MW / SIMD`` synapse folds). Word ``nf * SF + sf``, bit ``i`` is input
  column ``sf * SIMD + i`` of neuron ``nf * PE + p``; bit 1 is +1 (so ``SIMD <= 64``).
* ``{L}-{p}-thres.bin``: ``NF`` little-endian int64 thresholds, neuron ``nf * PE + p`` fires
  when its popcount ``> T``. Hidden layers always have them; the output layer may.

The user gives each layer's ``MW x MH : SIMD x PE`` (:func:`parse_layers`), the real input
size before padding and the real number of classes. The popcount is the XNOR popcount over the
padded ``MW`` columns, with padded input bits 0. A padded column ``j`` of neuron ``r`` therefore
adds the constant ``1 - w_rj`` (1 where the weight bit is 0), and dropping the padded columns
turns the test ``P_padded > T`` into ``P >= T - z_r + 1`` on the real popcount ``P``, ``z_r``
being the number of 0 weight bits among ``r``'s padded columns; the result is clipped to
``[0, MW + 1]`` (``T = 32767``, FINN's padding neuron, becomes the neuron that never fires).

Layer ``L + 1`` reads all ``MH_L`` outputs of layer ``L``, padding neurons included (they are
constant), plus ``MW_{L+1} - MH_L`` padded zero bits. The output layer's first ``outputs``
rows are the classes. Without thresholds their scores are the padded popcounts
``P_padded = P + z_c``; with thresholds the score of class ``c`` is its margin
``P_padded - T_c`` (the only ordering the thresholds define). Where these differ between
classes by more than a common constant they are stored exactly as the integer affine
``1 * P + offset_c`` of the model file, else as plain popcounts.

The input is ``inputs`` pixels binarized as ``pixel >= input_threshold``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .model import DenseLayer, InputQuantizer, Model

__all__ = ["BinparamsError", "BinparamsLayer", "import_binparams", "parse_layers"]

WORD_BITS = 64
PAD_THRESHOLD = 32767
"""FINN's threshold of a padding neuron (it never fires)."""


class BinparamsError(ValueError):
    """A binparams folder or layer list that cannot become a model, and why."""


@dataclass(frozen=True)
class BinparamsLayer:
    """One layer's padded matrix size and folding: ``MW x MH : SIMD x PE``."""

    mw: int
    mh: int
    simd: int
    pe: int

    @property
    def sf(self) -> int:
        """Synapse folds ``MW / SIMD``."""
        return self.mw // self.simd

    @property
    def nf(self) -> int:
        """Neuron folds ``MH / PE``."""
        return self.mh // self.pe


LAYER_SPEC = re.compile(r"(\d+)x(\d+):(\d+)x(\d+)")


def parse_layers(text: str) -> list[BinparamsLayer]:
    """Parse ``MWxMH:SIMDxPE,...``; each entry must be positive with SIMD dividing MW, PE
    dividing MH and SIMD at most 64."""
    layers = []
    for i, entry in enumerate(text.split(",")):
        match = LAYER_SPEC.fullmatch(entry.strip())
        if not match:
            raise BinparamsError(f"layer {i}: {entry!r} is not MWxMH:SIMDxPE (e.g. "
                                 f"832x1024:64x32)")
        layer = BinparamsLayer(*(int(v) for v in match.groups()))
        if min(layer.mw, layer.mh, layer.simd, layer.pe) < 1:
            raise BinparamsError(f"layer {i}: {entry!r} has a zero size")
        if layer.mw % layer.simd or layer.mh % layer.pe:
            raise BinparamsError(f"layer {i}: SIMD {layer.simd} must divide MW {layer.mw} and "
                                 f"PE {layer.pe} must divide MH {layer.mh}")
        if layer.simd > WORD_BITS:
            raise BinparamsError(f"layer {i}: SIMD {layer.simd} does not fit a 64-bit word")
        layers.append(layer)
    return layers


def _read(path: Path, dtype: str, count: int) -> np.ndarray:
    """``count`` little-endian values of ``dtype`` from ``path``; the size must be exact."""
    if not path.is_file():
        raise BinparamsError(f"{path}: missing")
    expected = count * np.dtype(dtype).itemsize
    size = path.stat().st_size
    if size != expected:
        raise BinparamsError(f"{path}: {size} bytes, expected {expected} ({count} {dtype} "
                             f"values)")
    return np.fromfile(path, dtype=np.dtype(dtype).newbyteorder("<"))


def read_layer(folder: Path, index: int, layer: BinparamsLayer,
               thresholds: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The padded weight bits ``(MH, MW)`` and thresholds ``(MH,)`` (or None) of one layer."""
    bits = np.zeros((layer.mh, layer.mw), dtype=np.uint8)
    t = np.zeros(layer.mh, dtype=np.int64) if thresholds else None
    shifts = np.arange(layer.simd, dtype=np.uint64)
    for p in range(layer.pe):
        words = _read(folder / f"{index}-{p}-weights.bin", "uint64", layer.nf * layer.sf)
        words = words.reshape(layer.nf, layer.sf, 1)
        lanes = ((words >> shifts) & np.uint64(1)).astype(np.uint8)  # (NF, SF, SIMD)
        bits[p::layer.pe] = lanes.reshape(layer.nf, layer.mw)
        if thresholds:
            t[p::layer.pe] = _read(folder / f"{index}-{p}-thres.bin", "int64", layer.nf)
    return bits, t


def _drop_padding(bits: np.ndarray, real: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The real columns, and per row the popcount the padded columns add (zero weight bits)."""
    if real > bits.shape[1]:
        raise BinparamsError(f"{where}: MW {bits.shape[1]} is smaller than its {real} inputs")
    return bits[:, :real], (bits[:, real:] == 0).sum(axis=1).astype(np.int64)


def import_binparams(folder: str | os.PathLike, layers: list[BinparamsLayer], inputs: int,
                     outputs: int, input_threshold: int) -> Model:
    """Read a binparams folder into a :class:`bnnhw.model.Model` (see the module docstring).

    Raises
    ------
    BinparamsError
        A missing file, a file of the wrong size, sizes that do not chain, or a bad
        threshold; nothing is written here.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BinparamsError(f"{folder}: not a folder")
    if not 0 <= input_threshold <= 256:
        raise BinparamsError(f"input threshold {input_threshold} must lie in [0, 256]")
    if not layers:
        raise BinparamsError("no layers given")
    last = len(layers) - 1
    if not 2 <= outputs <= layers[-1].mh:
        raise BinparamsError(f"outputs {outputs} must lie in [2, {layers[-1].mh}] (the output "
                             f"layer's MH)")
    model_layers: list[DenseLayer] = []
    real = inputs
    for i, layer in enumerate(layers):
        where = f"layer {i} ({layer.mw}x{layer.mh}:{layer.simd}x{layer.pe})"
        has_thresholds = i < last or (folder / f"{i}-0-thres.bin").is_file()
        bits, t = read_layer(folder, i, layer, has_thresholds)
        bits, extra = _drop_padding(bits, real, where)
        if i < last:
            stored = np.clip(t - extra + 1, 0, real + 1)
            model_layers.append(DenseLayer(bits, stored))
            real = layer.mh
            continue
        bits, extra = bits[:outputs], extra[:outputs]
        score = extra if t is None else extra - t[:outputs]   # score = P + this
        if (score == score[0]).all():
            model_layers.append(DenseLayer(bits))
        else:
            model_layers.append(DenseLayer(bits, None, scale=np.ones(outputs, np.int64),
                                           offset=score - score.min()))
    meta = {"imported_from": folder.name, "format": "finn-binparams",
            "layers": [f"{v.mw}x{v.mh}:{v.simd}x{v.pe}" for v in layers]}
    return Model(InputQuantizer((int(input_threshold),), inputs), tuple(model_layers), meta)
