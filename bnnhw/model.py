"""The network description and the versioned model file.

A model is an :class:`InputQuantizer` followed by a chain of binary layers: optionally
convolution and max-pool layers (:class:`ConvLayer`, :class:`MaxPoolLayer`) on ``H x W x C`` bit
maps, then dense layers (:class:`DenseLayer`). Every layer but the last is *thresholded*: neuron
``r`` outputs bit 1 (the value +1) exactly when its popcount ``P_r = popcount(XNOR(x, w_r))``
satisfies ``P_r >= T_r``. The last layer is the dense *output* layer: it has no thresholds and
its popcounts are the class scores.

Instead of the quantizer, a model may start with :class:`PixelInput` (input kind ``pixels8``):
the first layer then reads the 8-bit pixels themselves with +-1 weights and integer thresholds
on ``a_r = sum_k w_rk x_k`` (see :class:`DenseLayer`, ``pixels8``).

Bit maps are flattened in ``(y, x, c)`` order, channel innermost: bit ``(y * W + x) * C + c``.
The quantizer's output is such a map with ``C = L`` (level ``l`` of pixel ``y * W + x`` is
channel ``l``), and a dense layer after a convolution or pool reads the map in this order.

Encoding: bit 1 stands for +1 and bit 0 for -1 everywhere (inputs, weights, activations).

File format (version 1)
-----------------------
A ``.npz`` archive (no pickles; loaded with ``allow_pickle=False``) holding:

``format``
    0-d unicode array, always ``"bnnhw-model"``.
``version``
    0-d int64 array, the format version (1).
``header``
    0-d unicode array with a JSON object ``{"input": {...}, "layers": [...], "meta": {...}}``.
    ``input`` is ``{"kind": "thermometer", "pixels": N, "levels": L}`` or, for raw 8-bit
    pixels into the first layer (:class:`PixelInput`), ``{"kind": "pixels8", "pixels": N}``;
    each layer is
    ``{"kind": "dense" | "output", "in_features": MW, "out_features": MH}``, or for a
    convolution ``{"kind": "conv", "in_features", "out_features", "in_shape": [H, W, C],
    "kernel": K, "stride": 1, "padding": 0, "out_channels": OC}``, or for a max-pool
    ``{"kind": "maxpool", "in_features", "out_features", "in_shape": [H, W, C], "pool": 2,
    "stride": 2}``; ``meta`` is free JSON (dataset, architecture, training figures).
``input_thresholds``
    Thermometer input only (absent for ``pixels8``): int16 array ``(L,)``, strictly
    increasing, each in ``[0, 256]``. Pixel ``p`` (0..255) gives
    ``L`` bits, bit ``l`` being ``p >= input_thresholds[l]``. A fixed threshold is ``L = 1``.
``layer{i}.weights``
    uint8 array ``(MH, ceil(MW / 8))``: row ``r`` holds neuron ``r``'s weight bits packed with
    ``numpy.packbits(..., bitorder="little")``; bits past ``MW`` are zero. A convolution stores
    ``(OC, ceil(K * K * C / 8))``, its ``MW = K * K * C`` columns in sliding-window order
    ``(ky * K + kx) * C + c``. Max-pool layers have no arrays.
``layer{i}.thresholds``
    int32 array ``(MH,)`` with values in ``[0, MW + 1]`` (dense and conv layers). ``0`` means
    the neuron is constantly +1 and ``MW + 1`` constantly -1. The first layer of a ``pixels8``
    model compares ``a_r = sum_k w_rk x_k`` (``w`` in {-1, +1}, pixels ``x`` in [0, 255]) with
    thresholds in ``[-255 MW, 255 MW + 1]``.

Writing is atomic (a temporary file in the target folder, then a rename).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_NAME = "bnnhw-model"
FORMAT_VERSION = 1
LAYER_KINDS = ("dense", "output", "conv", "maxpool")
INPUT_KINDS = ("thermometer", "pixels8")
PIXEL_MAX = 255


class ModelError(ValueError):
    """A model that is inconsistent, or a model file that cannot be read."""


@dataclass(frozen=True)
class InputQuantizer:
    """Thermometer code of 8-bit pixels: bit ``l`` of pixel ``p`` is ``p >= thresholds[l]``.

    A single threshold is the fixed-threshold binarization (``sign(p - t)`` with
    ``sign(0) = +1`` becomes ``p >= ceil(t)``).

    Parameters
    ----------
    thresholds : tuple of int
        Strictly increasing integers in ``[0, 256]``.
    pixels : int
        Number of pixels per image (784 for MNIST).
    """

    thresholds: tuple[int, ...]
    pixels: int = 784

    kind = "thermometer"

    def __post_init__(self) -> None:
        t = self.thresholds
        if len(t) < 1:
            raise ModelError("the input quantizer needs at least one threshold")
        if any(not isinstance(v, int | np.integer) or not 0 <= v <= 256 for v in t):
            raise ModelError(f"input thresholds must be integers in [0, 256], got {list(t)}")
        if any(b <= a for a, b in zip(t, t[1:], strict=False)):
            raise ModelError(f"input thresholds must be strictly increasing, got {list(t)}")
        if self.pixels < 1:
            raise ModelError(f"pixels must be positive, got {self.pixels}")

    @classmethod
    def fixed(cls, threshold: float, pixels: int = 784) -> InputQuantizer:
        """Binarize with ``sign(p - threshold)``, ``sign(0) = +1``: ``p >= ceil(threshold)``."""
        return cls((int(np.ceil(threshold)),), pixels)

    @classmethod
    def thermometer(cls, levels: int, pixels: int = 784) -> InputQuantizer:
        """Evenly spaced thermometer code: ``thresholds[l] = round(256 (l + 1) / (levels + 1))``."""
        if levels < 1:
            raise ModelError(f"thermometer levels must be >= 1, got {levels}")
        return cls(tuple(int(round(256 * (k + 1) / (levels + 1))) for k in range(levels)), pixels)

    @property
    def levels(self) -> int:
        """Bits per pixel ``L``."""
        return len(self.thresholds)

    @property
    def out_bits(self) -> int:
        """Bits per image, ``pixels * L``; bit ``j * L + l`` is level ``l`` of pixel ``j``."""
        return self.pixels * self.levels

    def quantize(self, images: np.ndarray) -> np.ndarray:
        """Map uint8 images ``(N, pixels)`` to bits ``(N, pixels * L)`` (uint8 0/1)."""
        images = np.asarray(images)
        if images.ndim != 2 or images.shape[1] != self.pixels:
            raise ModelError(
                f"images must have shape (N, {self.pixels}), got {tuple(images.shape)}"
            )
        t = np.asarray(self.thresholds, dtype=np.int16)
        bits = images.astype(np.int16)[:, :, None] >= t[None, None, :]
        return bits.reshape(images.shape[0], -1).astype(np.uint8)


@dataclass(frozen=True)
class PixelInput:
    """Raw 8-bit pixels as the first layer's input (input kind ``"pixels8"``, FINN-CNV style).

    The image is passed on unchanged: value ``j`` is pixel ``j`` in ``[0, 255]``. The first
    layer (dense, or a convolution reading the image as ``H x W x 1``) is then a *pixel layer*
    (``pixels8=True``): neuron ``r`` computes ``a_r = sum_k w_rk * x_k`` with ``w_rk`` in
    ``{-1, +1}`` (bit 1 = +1), an integer in ``[-255 K, 255 K]``, and fires iff
    ``a_r >= T_r``.

    Parameters
    ----------
    pixels : int
        Number of pixels per image (784 for MNIST).
    """

    pixels: int = 784

    kind = "pixels8"

    def __post_init__(self) -> None:
        if not isinstance(self.pixels, int | np.integer) or self.pixels < 1:
            raise ModelError(f"pixels must be a positive integer, got {self.pixels!r}")

    @property
    def levels(self) -> int:
        """One 8-bit channel per pixel: 1."""
        return 1

    @property
    def out_bits(self) -> int:
        """Values per image handed to the first layer, ``pixels`` (8-bit values, not bits)."""
        return self.pixels

    def quantize(self, images: np.ndarray) -> np.ndarray:
        """Check uint8-valued images ``(N, pixels)`` and return them as int64, unchanged."""
        images = np.asarray(images)
        if images.ndim != 2 or images.shape[1] != self.pixels:
            raise ModelError(
                f"images must have shape (N, {self.pixels}), got {tuple(images.shape)}"
            )
        if images.size and (images.min() < 0 or images.max() > 255):
            raise ModelError(f"pixels must lie in [0, 255], got min {images.min()} "
                             f"max {images.max()}")
        return images.astype(np.int64)


def _check_weights(weights: np.ndarray) -> np.ndarray:
    w = np.asarray(weights)
    if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] < 1:
        raise ModelError(f"weights must be a non-empty 2-D array, got shape {w.shape}")
    if not np.isin(w, (0, 1)).all():
        raise ModelError("weights must hold only bits 0 and 1")
    return w.astype(np.uint8)


def threshold_range(mw: int, pixels8: bool) -> tuple[int, int]:
    """Inclusive threshold bounds of a layer with ``MW`` inputs.

    ``[0, MW + 1]`` for popcounts of bits; ``[-255 MW, 255 MW + 1]`` for a pixel layer, whose
    accumulator ``a = sum_k w_k x_k`` lies in ``[-255 MW, 255 MW]``. The lower bound is a
    neuron that always fires, the upper bound one that never does.
    """
    return (-PIXEL_MAX * mw, PIXEL_MAX * mw + 1) if pixels8 else (0, mw + 1)


def _check_thresholds(thresholds: np.ndarray, shape: tuple[int, int],
                      pixels8: bool = False) -> np.ndarray:
    t = np.asarray(thresholds)
    mh, mw = shape
    if t.shape != (mh,):
        raise ModelError(f"thresholds must have shape ({mh},) to match MH={mh}, got {t.shape}")
    if not np.issubdtype(t.dtype, np.integer):
        raise ModelError(f"thresholds must be integers, got dtype {t.dtype}")
    lo, hi = threshold_range(mw, pixels8)
    bound = "[-255 MW, 255 MW + 1]" if pixels8 else "[0, MW + 1]"
    if t.size and (t.min() < lo or t.max() > hi):
        raise ModelError(
            f"thresholds must lie in {bound} = [{lo}, {hi}], got min {t.min()} max {t.max()}"
        )
    return t.astype(np.int64)


SCALE_LIMIT = 1 << 41
"""Output affine: every per-class scale lies in ``(-SCALE_LIMIT, SCALE_LIMIT)``."""
SCORE_BITS_MAX = 60
"""Output affine: every score ``scale_r * P + offset_r``, ``P`` in ``[0, MW]``, lies in
``[0, 2**SCORE_BITS_MAX)``."""


def _check_affine(scale: np.ndarray, offset: np.ndarray,
                  shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    mh, mw = shape
    arrays = []
    for name, a in (("scale", scale), ("offset", offset)):
        a = np.asarray(a)
        if a.shape != (mh,) or not np.issubdtype(a.dtype, np.integer):
            raise ModelError(f"the output {name} must be integers of shape ({mh},), got "
                             f"{a.dtype} {a.shape}")
        arrays.append(a.astype(np.int64))
    scale, offset = arrays
    if np.abs(scale).max() >= SCALE_LIMIT:
        raise ModelError(f"output scales must lie in (-2**41, 2**41), got "
                         f"{int(np.abs(scale).max())}")
    ends = (offset, offset + scale * mw)
    low, high = min(int(e.min()) for e in ends), max(int(e.max()) for e in ends)
    if low < 0 or high >= 1 << SCORE_BITS_MAX:
        raise ModelError(f"output scores scale*P + offset must lie in [0, 2**{SCORE_BITS_MAX}) "
                         f"for P in [0, {mw}], got [{low}, {high}]")
    return scale, offset


def _check_shape(shape: tuple[int, ...], what: str) -> tuple[int, int, int]:
    try:
        h, w, c = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise ModelError(f"{what} must be (H, W, C), got {shape!r}") from None
    if min(h, w, c) < 1:
        raise ModelError(f"{what} must be positive (H, W, C), got {(h, w, c)}")
    return h, w, c


@dataclass(frozen=True, eq=False)
class DenseLayer:
    """A binary dense layer of ``MH`` neurons over ``MW`` input bits.

    Parameters
    ----------
    weights : ndarray of uint8, shape (MH, MW)
        Weight bits (1 = +1, 0 = -1).
    thresholds : ndarray of int64, shape (MH,), or None
        Neuron ``r`` outputs 1 iff ``popcount(XNOR(x, w_r)) >= thresholds[r]``. ``None`` marks
        the output layer, whose popcounts are the scores.
    pixels8 : bool
        A pixel layer (the first layer of a :class:`PixelInput` model): the inputs are 8-bit
        values ``x_k`` in ``[0, 255]`` and neuron ``r`` outputs 1 iff
        ``sum_k (2 w_rk - 1) x_k >= thresholds[r]``, thresholds in ``[-255 MW, 255 MW + 1]``.
    """

    weights: np.ndarray
    thresholds: np.ndarray | None = None
    pixels8: bool = False
    scale: np.ndarray | None = None
    offset: np.ndarray | None = None

    def __post_init__(self) -> None:
        w = _check_weights(self.weights)
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "pixels8", bool(self.pixels8))
        if self.thresholds is not None:
            object.__setattr__(self, "thresholds",
                               _check_thresholds(self.thresholds, w.shape, self.pixels8))
            if self.scale is not None or self.offset is not None:
                raise ModelError("only the output layer takes a score scale and offset")
        elif self.pixels8:
            raise ModelError("a pixels8 layer needs thresholds (the output layer reads bits)")
        if (self.scale is None) != (self.offset is None):
            raise ModelError("the output affine needs both a scale and an offset per class")
        if self.scale is not None:
            scale, offset = _check_affine(self.scale, self.offset, w.shape)
            object.__setattr__(self, "scale", scale)
            object.__setattr__(self, "offset", offset)

    @property
    def affine(self) -> bool:
        """Whether the output scores are ``scale_r * P_r + offset_r`` instead of ``P_r``."""
        return self.scale is not None

    def scores(self, popcounts: np.ndarray) -> np.ndarray:
        """The output layer's class scores for popcounts ``(N, MH)``: ``P`` itself, or
        ``scale * P + offset`` (int64, in ``[0, 2**SCORE_BITS_MAX)``)."""
        p = np.asarray(popcounts, dtype=np.int64)
        if self.scale is None:
            return p
        return p * self.scale[None, :] + self.offset[None, :]

    @property
    def score_max(self) -> int:
        """The largest score the output layer can produce (``MW`` for plain popcounts)."""
        if self.scale is None:
            return self.in_features
        return int(np.maximum(self.offset, self.offset + self.scale * self.in_features).max())

    @property
    def kind(self) -> str:
        """``"dense"`` for a thresholded layer, ``"output"`` for the scoring layer."""
        return "output" if self.thresholds is None else "dense"

    folded = True
    """Runs on an MVTU folded by ``PE x SIMD`` (a folding entry ``PExSIMD``)."""
    maps = False
    """Reads and writes feature maps (a conv or max-pool stage)."""

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """``(MH, MW)`` of the weight matrix the MVTU holds."""
        return self.out_features, self.in_features

    vectors = 1
    """Input vectors per frame."""

    @property
    def in_features(self) -> int:
        """``MW``, the number of input bits."""
        return int(self.weights.shape[1])

    @property
    def out_features(self) -> int:
        """``MH``, the number of neurons."""
        return int(self.weights.shape[0])

    @property
    def weight_bits(self) -> int:
        """Weight memory in bits, ``MH * MW``."""
        return self.in_features * self.out_features


class MapLayer:
    """Sizes shared by layers on ``H x W x C`` bit maps (flattened ``(y, x, c)``)."""

    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]  # a property of each subclass

    @property
    def in_features(self) -> int:
        """``H * W * C``."""
        return int(np.prod(self.in_shape))

    @property
    def out_features(self) -> int:
        """Product of :attr:`out_shape`."""
        return int(np.prod(self.out_shape))


@dataclass(frozen=True, eq=False)
class ConvLayer(MapLayer):
    """A binary 2-D convolution, stride 1, no padding ("valid"), then thresholds.

    The input is an ``H x W x C`` bit map (bit ``(y * W + x) * C + c``). For each output
    position ``(oy, ox)`` in ``[0, H - K] x [0, W - K]`` the window is the ``K * K * C`` vector
    ``v[(ky * K + kx) * C + c] = x[oy + ky, ox + kx, c]`` (the sliding-window order, channel
    innermost), and output channel ``o`` is the bit ``popcount(XNOR(v, w_o)) >= T_o``. The
    output map is ``(H - K + 1) x (W - K + 1) x OC``, again channel innermost.

    Parameters
    ----------
    weights : ndarray of uint8, shape (OC, K * K * C)
        Weight bits (1 = +1), columns in the window order above.
    thresholds : ndarray of int64, shape (OC,)
        In ``[0, K * K * C + 1]``.
    kernel : int
        ``K``, at most ``min(H, W)``.
    in_shape : tuple of int
        ``(H, W, C)``.
    pixels8 : bool
        A pixel layer: the map holds 8-bit values in ``[0, 255]`` and channel ``o`` is the bit
        ``sum_j (2 w_oj - 1) v_j >= T_o``, ``T_o`` in ``[-255 K K C, 255 K K C + 1]``.
    """

    weights: np.ndarray
    thresholds: np.ndarray
    kernel: int
    in_shape: tuple[int, int, int]
    pixels8: bool = False

    def __post_init__(self) -> None:
        h, w, c = _check_shape(self.in_shape, "conv in_shape")
        object.__setattr__(self, "in_shape", (h, w, c))
        k = int(self.kernel)
        if k < 1 or k > min(h, w):
            raise ModelError(f"conv kernel must lie in [1, min(H, W)] = [1, {min(h, w)}], "
                             f"got {self.kernel}")
        object.__setattr__(self, "kernel", k)
        bits = _check_weights(self.weights)
        if bits.shape[1] != k * k * c:
            raise ModelError(f"conv weights must have K*K*C = {k}*{k}*{c} = {k * k * c} "
                             f"columns, got shape {bits.shape}")
        object.__setattr__(self, "weights", bits)
        object.__setattr__(self, "pixels8", bool(self.pixels8))
        if self.thresholds is None:
            raise ModelError("a conv layer needs thresholds")
        object.__setattr__(self, "thresholds",
                           _check_thresholds(self.thresholds, bits.shape, self.pixels8))

    kind = "conv"
    folded = True
    maps = True

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """``(OC, K * K * C)``: one MVTU row per output channel, one column per window bit."""
        return int(self.weights.shape[0]), self.fan_in

    @property
    def vectors(self) -> int:
        """``OH * OW`` windows per frame."""
        oh, ow, _ = self.out_shape
        return oh * ow

    @property
    def fan_in(self) -> int:
        """``K * K * C``, the bits of one window (the popcount range is ``0..fan_in``)."""
        return int(self.weights.shape[1])

    @property
    def out_shape(self) -> tuple[int, int, int]:
        """``(H - K + 1, W - K + 1, OC)``."""
        h, w, _ = self.in_shape
        return h - self.kernel + 1, w - self.kernel + 1, int(self.weights.shape[0])


    @property
    def weight_bits(self) -> int:
        """Weight memory in bits, ``OC * K * K * C``."""
        return int(self.weights.size)


@dataclass(frozen=True, eq=False)
class MaxPoolLayer(MapLayer):
    """Max-pool of a bit map over ``2 x 2`` windows with stride 2: the OR of the four bits.

    Output ``(y, x, c)`` is ``OR`` of input ``(2y + dy, 2x + dx, c)`` for ``dy, dx`` in
    ``{0, 1}``; ``max`` of +-1 values is that OR. An odd last row or column is dropped (the
    output is ``floor(H / 2) x floor(W / 2) x C``).

    Parameters
    ----------
    in_shape : tuple of int
        ``(H, W, C)`` with ``H, W >= 2``.
    pool : int
        Window size and stride; only 2 is supported.
    """

    in_shape: tuple[int, int, int]
    pool: int = 2

    def __post_init__(self) -> None:
        h, w, c = _check_shape(self.in_shape, "maxpool in_shape")
        object.__setattr__(self, "in_shape", (h, w, c))
        if self.pool != 2:
            raise ModelError(f"only 2x2 max-pool with stride 2 is supported, got pool={self.pool}")
        if min(h, w) < 2:
            raise ModelError(f"maxpool needs H, W >= 2, got in_shape {(h, w, c)}")

    kind = "maxpool"
    folded = False
    maps = True
    weights = None
    thresholds = None
    pixels8 = False

    @property
    def out_shape(self) -> tuple[int, int, int]:
        """``(H // 2, W // 2, C)``."""
        h, w, c = self.in_shape
        return h // 2, w // 2, c


    @property
    def weight_bits(self) -> int:
        """Max-pool has no weights: 0."""
        return 0


Layer = DenseLayer | ConvLayer | MaxPoolLayer


@dataclass(frozen=True, eq=False)
class Model:
    """A quantizer, thresholded layers, and one dense output layer at the end.

    Parameters
    ----------
    quantizer : InputQuantizer or PixelInput
        With :class:`PixelInput` the first layer must be a pixel layer (``pixels8=True``, a
        dense layer or a convolution on ``H x W x 1``) and no other layer may be one.
    layers : tuple of DenseLayer, ConvLayer, MaxPoolLayer
        ``layers[0].in_features == quantizer.out_bits``; each layer feeds the next; only the
        last layer is an output layer. Convolution and max-pool layers come before every dense
        layer; the first of them reads the image as ``H x W x L`` (``H * W = pixels``, ``L``
        quantizer levels) and each later one takes the previous one's ``out_shape``.
    meta : dict
        JSON-serialisable facts about the model (dataset, architecture, training figures).
    """

    quantizer: InputQuantizer | PixelInput
    layers: tuple[DenseLayer, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise ModelError("a model needs at least one layer")
        expected = self.quantizer.out_bits
        shape: tuple[int, int, int] | None = None
        dense_seen = False
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, DenseLayer | ConvLayer | MaxPoolLayer):
                raise ModelError(f"layer {i} is not a layer object: {type(layer).__name__}")
            want = i == 0 and self.quantizer.kind == "pixels8"
            if layer.pixels8 != want:
                raise ModelError(
                    f"layer {i} ({layer.kind}) has pixels8={layer.pixels8} but the input kind "
                    f"is {self.quantizer.kind!r}: only the first layer of a 'pixels8' model, "
                    f"and it must, reads 8-bit pixels")
            if isinstance(layer, ConvLayer | MaxPoolLayer):
                self._check_spatial(i, layer, shape, dense_seen)
                shape = layer.out_shape
            elif layer.in_features != expected:
                raise ModelError(
                    f"layer {i} expects {layer.in_features} input bits but receives {expected}"
                )
            else:
                dense_seen = True
            last = i == len(self.layers) - 1
            if last and layer.kind != "output":
                raise ModelError(f"the last layer (layer {i}) must be an output layer")
            if not last and layer.kind == "output":
                raise ModelError(f"layer {i} is an output layer but is not the last layer")
            expected = layer.out_features
        if self.classes < 2:
            raise ModelError(f"the output layer needs at least 2 classes, got {self.classes}")
        try:
            json.dumps(self.meta)
        except TypeError as exc:
            raise ModelError(f"meta must be JSON-serialisable: {exc}") from None

    def _check_spatial(self, i: int, layer: ConvLayer | MaxPoolLayer,
                       shape: tuple[int, int, int] | None, dense_seen: bool) -> None:
        """Check that a conv/maxpool layer reads the map the previous stage produces.

        ``shape`` is the previous spatial layer's ``out_shape`` (``None``: the quantizer);
        spatial layers may not follow dense ones.
        """
        h, w, c = layer.in_shape
        if dense_seen:
            raise ModelError(f"layer {i} ({layer.kind}) follows a dense layer; conv and maxpool "
                             f"layers must come before every dense layer")
        if shape is None:
            q = self.quantizer
            if h * w != q.pixels or c != q.levels:
                raise ModelError(
                    f"layer {i} ({layer.kind}) reads the image as {h}x{w}x{c} (HxWxC) but the "
                    f"{q.kind} input gives {q.pixels} pixels x {q.levels} level(s): need H*W = "
                    f"{q.pixels} and C = {q.levels}"
                )
        elif shape != layer.in_shape:
            raise ModelError(
                f"layer {i} ({layer.kind}) expects an input map {h}x{w}x{c} (HxWxC) but "
                f"receives {shape[0]}x{shape[1]}x{shape[2]}"
            )

    @property
    def classes(self) -> int:
        """Number of classes (neurons of the output layer)."""
        return self.layers[-1].out_features

    @property
    def weight_bits(self) -> int:
        """Total weight memory in bits."""
        return sum(layer.weight_bits for layer in self.layers)

    @property
    def topology(self) -> str:
        """``"784-256-256-256-10"``-style description of the bit widths."""
        return "-".join(str(v) for v in [self.quantizer.out_bits]
                        + [layer.out_features for layer in self.layers])

    def header(self) -> dict[str, Any]:
        """The JSON header written into the model file."""
        return {
            "input": _input_header(self.quantizer),
            "layers": [_layer_header(layer) for layer in self.layers],
            "meta": self.meta,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """All arrays of the model file, keyed by their archive names."""
        arrays: dict[str, np.ndarray] = {
            "format": np.array(FORMAT_NAME),
            "version": np.array(FORMAT_VERSION, dtype=np.int64),
            "header": np.array(json.dumps(self.header(), sort_keys=True)),
        }
        if isinstance(self.quantizer, InputQuantizer):
            arrays["input_thresholds"] = np.array(self.quantizer.thresholds, dtype=np.int16)
        for i, layer in enumerate(self.layers):
            if layer.weights is None:
                continue
            arrays[f"layer{i}.weights"] = np.packbits(layer.weights, axis=1, bitorder="little")
            if layer.thresholds is not None:
                arrays[f"layer{i}.thresholds"] = layer.thresholds.astype(np.int32)
            if isinstance(layer, DenseLayer) and layer.affine:
                arrays[f"layer{i}.scale"] = layer.scale.astype(np.int64)
                arrays[f"layer{i}.offset"] = layer.offset.astype(np.int64)
        return arrays

    def sha256(self) -> str:
        """Content hash of the model (header and every array), stable across saves."""
        digest = hashlib.sha256()
        for name, array in sorted(self.arrays().items()):
            digest.update(name.encode())
            digest.update(str(array.dtype).encode() + str(array.shape).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model file atomically (temporary file in the same folder, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **self.arrays())
        write_atomic(path, buffer.getvalue())
        return path


def _input_header(quantizer: InputQuantizer | PixelInput) -> dict[str, Any]:
    """The header's ``input`` entry: ``thermometer`` with ``levels``, or ``pixels8``."""
    if isinstance(quantizer, PixelInput):
        return {"kind": "pixels8", "pixels": quantizer.pixels}
    return {"kind": "thermometer", "pixels": quantizer.pixels, "levels": quantizer.levels}


def _layer_header(layer: Layer) -> dict[str, Any]:
    """A layer's entry in the header's ``layers`` list (see the module docstring)."""
    spec: dict[str, Any] = {"kind": layer.kind, "in_features": layer.in_features,
                            "out_features": layer.out_features}
    if isinstance(layer, ConvLayer):
        spec.update(in_shape=list(layer.in_shape), kernel=layer.kernel, stride=1, padding=0,
                    out_channels=layer.out_shape[2])
    elif isinstance(layer, MaxPoolLayer):
        spec.update(in_shape=list(layer.in_shape), pool=layer.pool, stride=layer.pool)
    elif layer.affine:
        spec["affine"] = True
    return spec


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling file and ``os.replace``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a tool's log, for an error message (``"(no log)"`` if the
    file is missing)."""
    if not path.is_file():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


MEMBER_NAME = re.compile(
    r"(format|version|header|input_thresholds|layer\d+\.(weights|thresholds|scale|offset))")
"""Names of the arrays a model file may hold; any other member is refused."""
SMALL_MEMBER_BYTES = 1 << 20
"""Largest ``format``, ``version`` or ``header`` member accepted (the header is a few KiB)."""
NPY_HEADER_BYTES = 4096
"""Room for an ``.npy`` header on top of an array's data when a member's size is checked."""


class _Archive:
    """The members of an open model file, each checked before it is decompressed.

    A member must have a known name (:data:`MEMBER_NAME`), and both its size in the zip
    directory and the shape in its ``.npy`` header must fit what the caller expects, so that
    a declared size can never make the loader allocate more than the model needs (no zip
    bombs, no 100 GB shapes). Object arrays are refused without being unpickled.
    """

    def __init__(self, archive: zipfile.ZipFile, where: str) -> None:
        self.zip, self.where = archive, where
        self.members: dict[str, zipfile.ZipInfo] = {}
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            if not info.filename.endswith(".npy") or not MEMBER_NAME.fullmatch(name):
                raise ModelError(f"{where}: unexpected member {info.filename!r} (a model file "
                                 f"holds only format, version, header and layer arrays)")
            if name in self.members:
                raise ModelError(f"{where}: member {info.filename!r} appears twice")
            self.members[name] = info

    def __contains__(self, name: str) -> bool:
        return name in self.members

    def read(self, name: str, dtype: str | None, shape: tuple[int, ...] | None,
             max_bytes: int) -> np.ndarray:
        """Array ``name``; its dtype and shape must be ``dtype``/``shape`` where given."""
        where = self.where
        if name not in self.members:
            raise ModelError(f"{where}: missing array '{name}'")
        info = self.members[name]
        if info.file_size > max_bytes:
            raise ModelError(f"{where}: member '{name}' declares {info.file_size} bytes, more "
                             f"than the {max_bytes} it may hold")
        try:
            with self.zip.open(info) as handle:
                version = np.lib.format.read_magic(handle)
                got_shape, _, got_dtype = (np.lib.format.read_array_header_1_0(handle)
                                           if version == (1, 0) else
                                           np.lib.format.read_array_header_2_0(handle))
                if got_dtype.hasobject:
                    raise ModelError(f"{where}: array '{name}' holds Python objects, which a "
                                     f"model file never does")
                if dtype is not None and got_dtype != np.dtype(dtype):
                    raise ModelError(f"{where}: array '{name}' has dtype {got_dtype}, "
                                     f"expected {dtype}")
                if shape is not None and tuple(got_shape) != shape:
                    raise ModelError(f"{where}: array '{name}' has shape {tuple(got_shape)}, "
                                     f"expected {shape}")
                if got_dtype.itemsize * math.prod(got_shape) > max_bytes:
                    raise ModelError(f"{where}: array '{name}' declares shape "
                                     f"{tuple(got_shape)}, more than the {max_bytes} bytes "
                                     f"it may hold")
            with self.zip.open(info) as handle:
                return np.lib.format.read_array(handle, allow_pickle=False)
        except ModelError:
            raise
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
            raise ModelError(f"{where}: member '{name}' is corrupt ({type(exc).__name__}: "
                             f"{str(exc).split('. ')[0]})") from None


def _array(archive: _Archive, name: str, dtype: str, shape: tuple[int, ...],
           where: str) -> np.ndarray:
    nbytes = np.dtype(dtype).itemsize * math.prod(shape)
    return archive.read(name, dtype, shape, nbytes + NPY_HEADER_BYTES)


def _header(archive: _Archive, where: str) -> dict[str, Any]:
    for name in ("format", "version", "header"):
        if name not in archive:
            raise ModelError(f"{where}: missing array '{name}' (not a bnnhw model file?)")
    fmt = archive.read("format", None, (), SMALL_MEMBER_BYTES)
    if fmt.dtype.kind != "U" or str(fmt) != FORMAT_NAME:
        raise ModelError(f"{where}: format is {fmt!r}, expected '{FORMAT_NAME}'")
    version = archive.read("version", None, None, SMALL_MEMBER_BYTES)
    if version.shape != () or not np.issubdtype(version.dtype, np.integer):
        raise ModelError(f"{where}: version must be a scalar integer, got {version!r}")
    if int(version) != FORMAT_VERSION:
        raise ModelError(
            f"{where}: unsupported model file version {int(version)} "
            f"(this bnnhw reads version {FORMAT_VERSION})"
        )
    text = archive.read("header", None, (), SMALL_MEMBER_BYTES)
    if text.dtype.kind != "U":
        raise ModelError(f"{where}: header must be a text array, got dtype {text.dtype}")
    try:
        header = json.loads(str(text), parse_constant=_refuse_constant)
    except (json.JSONDecodeError, ValueError) as exc:
        raise ModelError(f"{where}: header is not valid JSON ({exc})") from None
    if not isinstance(header, dict) or not {"input", "layers", "meta"} <= header.keys():
        raise ModelError(f"{where}: header must hold 'input', 'layers' and 'meta'")
    return header


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number a model header may hold")


def load_model(path: str | os.PathLike) -> Model:
    """Read and validate a model file.

    Raises
    ------
    ModelError
        With a message naming the file and the first problem found: not an archive, truncated,
        wrong format or version, missing arrays, wrong dtypes or shapes, values out of range,
        or layers that do not chain.
    """
    path = Path(path)
    where = str(path)
    if path.is_dir():
        raise ModelError(f"{where}: is a folder, not a model file")
    if not path.is_file():
        raise ModelError(f"{where}: no such model file")
    try:
        handle = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        with path.open("rb") as raw:
            npy = raw.read(6) == b"\x93NUMPY"
        kind = "a single .npy array" if npy else "truncated or not an archive"
        raise ModelError(f"{where}: not a readable model archive: a model file is a zip "
                         f"(.npz) archive, this is {kind} ({exc})") from None
    with handle:
        return _load_archive(_Archive(handle, where), where)


def _load_archive(archive: _Archive, where: str) -> Model:
    header = _header(archive, where)
    spec = header["input"]
    kind = spec.get("kind") if isinstance(spec, dict) else None
    if kind not in INPUT_KINDS:
        raise ModelError(f"{where}: unknown input kind {kind!r} in {spec!r}; "
                         f"expected one of {', '.join(INPUT_KINDS)}")
    fields = ("pixels", "levels") if kind == "thermometer" else ("pixels",)
    try:
        pixels = int(spec["pixels"])
        levels = int(spec["levels"]) if kind == "thermometer" else 1
    except (KeyError, TypeError, ValueError, OverflowError):
        raise ModelError(f"{where}: input kind {kind!r} needs integer "
                         f"{' and '.join(repr(f) for f in fields)}, got {spec!r}") from None
    if kind == "pixels8" and "input_thresholds" in archive:
        raise ModelError(f"{where}: input kind 'pixels8' has no input thresholds, but the file "
                         f"holds 'input_thresholds'")
    if kind == "thermometer":
        thresholds = _array(archive, "input_thresholds", "int16", (levels,), where)
    layers = []
    specs = header["layers"]
    if not isinstance(specs, list) or not specs:
        raise ModelError(f"{where}: header 'layers' must be a non-empty list")
    try:
        quantizer = (InputQuantizer(tuple(int(v) for v in thresholds), pixels)
                     if kind == "thermometer" else PixelInput(pixels))
        for i, layer_spec in enumerate(specs):
            layer_kind = layer_spec.get("kind") if isinstance(layer_spec, dict) else None
            if layer_kind not in LAYER_KINDS:
                raise ModelError(f"layer {i} has unknown kind {layer_kind!r}")
            layers.append(_load_layer(archive, i, layer_kind, layer_spec, where,
                                      pixels8=i == 0 and kind == "pixels8"))
        model = Model(quantizer, tuple(layers), header["meta"])
    except ModelError as exc:
        if str(exc).startswith(where):
            raise
        raise ModelError(f"{where}: {exc}") from None
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise ModelError(f"{where}: malformed layer description ({exc})") from None
    return model


def _load_layer(archive: dict[str, np.ndarray], i: int, kind: str, spec: dict[str, Any],
                where: str, pixels8: bool) -> Layer:
    """Build layer ``i`` of kind ``kind`` from its header entry and arrays, validating both.

    ``pixels8`` marks the first layer of a ``pixels8`` model (8-bit inputs, wide thresholds).
    """
    mw, mh = int(spec["in_features"]), int(spec["out_features"])
    if mw < 1 or mh < 1:
        raise ModelError(f"layer {i} has non-positive size {mh}x{mw}")
    if kind == "maxpool":
        if int(spec["stride"]) != int(spec["pool"]):
            raise ModelError(f"layer {i}: maxpool stride {spec['stride']} must equal pool "
                             f"{spec['pool']}")
        layer: Layer = MaxPoolLayer(tuple(spec["in_shape"]), int(spec["pool"]))
    else:
        if kind == "conv":
            if int(spec["stride"]) != 1 or int(spec["padding"]) != 0:
                raise ModelError(f"layer {i}: conv supports stride 1 and padding 0 only, got "
                                 f"stride {spec['stride']} padding {spec['padding']}")
            k = int(spec["kernel"])
            rows, cols = int(spec["out_channels"]), k * k * _check_shape(
                tuple(spec["in_shape"]), f"layer {i} conv in_shape")[2]
        else:
            rows, cols = mh, mw
        if rows < 1 or cols < 1:
            raise ModelError(f"layer {i} has non-positive weight shape {rows}x{cols}")
        packed = _array(archive, f"layer{i}.weights", "uint8", (rows, (cols + 7) // 8), where)
        bits = np.unpackbits(packed, axis=1, bitorder="little")
        if bits[:, cols:].any():
            raise ModelError(f"layer {i} has weight bits set past MW={cols}")
        t = scale = offset = None
        if kind != "output":
            t = _array(archive, f"layer{i}.thresholds", "int32", (rows,), where)
        elif spec.get("affine", False) is True:
            scale = _array(archive, f"layer{i}.scale", "int64", (rows,), where)
            offset = _array(archive, f"layer{i}.offset", "int64", (rows,), where)
        elif "affine" in spec:
            raise ModelError(f"layer {i}: 'affine' must be true when present, got "
                             f"{spec['affine']!r}")
        for name in ("scale", "offset"):
            if (kind != "output" or scale is None) and f"layer{i}.{name}" in archive:
                raise ModelError(f"layer {i} ({kind}) holds 'layer{i}.{name}' but its header "
                                 f"entry has no \"affine\": true")
        if kind == "conv":
            layer = ConvLayer(bits[:, :cols], t, k, tuple(spec["in_shape"]), pixels8)
        else:
            layer = DenseLayer(bits[:, :cols], t, pixels8, scale, offset)
    if (layer.in_features, layer.out_features) != (mw, mh):
        raise ModelError(f"layer {i} ({kind}) header says {mw} -> {mh} bits but its shape gives "
                         f"{layer.in_features} -> {layer.out_features}")
    return layer
