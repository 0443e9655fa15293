"""Bit-exact integer reference model: the oracle every other stage is compared with.

Numpy only. A binary dense layer computes, for input bits ``x`` and weight row ``w_r``
(``K = MW`` bits each, packed 64 per word, see :mod:`bnnhw.packing`)::

    P_r = popcount(XNOR(x, w_r)) = K - popcount(x XOR w_r)
    dot_r = 2 P_r - K                              # the +-1 dot product (seed 000, Alg. 2)

Thresholded layers output bit ``P_r >= T_r``; the output layer's scores are ``P_r``, or with an
output affine ``scale_r * P_r + offset_r`` (integers, see :meth:`bnnhw.model.DenseLayer.scores`);
the class is the argmax of the scores, the lowest index winning ties.

A convolution (:class:`bnnhw.model.ConvLayer`) is the same test on every window: the input map
``(N, H, W, C)`` becomes, by :func:`im2col`, one ``K * K * C`` row per output position
``(oy, ox)`` with column ``(ky * K + kx) * C + c = x[oy + ky, ox + kx, c]``; the rows go
through the packed XNOR-popcount against the ``(OC, K * K * C)`` weights and the thresholds,
and the result is the ``(OH, OW, OC)`` map flattened channel innermost. A max-pool
(:class:`bnnhw.model.MaxPoolLayer`) is the OR of each ``2 x 2`` window of bits.

The first layer of a ``pixels8`` model (``pixels8=True``) reads the 8-bit pixels ``x`` in
``[0, 255]`` instead of bits: :func:`pixel_sums` computes ``a_r = sum_k (2 w_rk - 1) x_k`` by an
int64 matrix product, and the layer outputs ``a_r >= T_r`` (a convolution does this on the
:func:`im2col` rows of the ``H x W x 1`` pixel map).
"""

from __future__ import annotations

import numpy as np

from .model import ConvLayer, DenseLayer, MaxPoolLayer, Model
from .packing import pack_bits, unpack_bits

CHUNK = 1024
CONV_ROWS = 1 << 16


def popcounts(x_words: np.ndarray, w_words: np.ndarray, k: int) -> np.ndarray:
    """Popcounts of XNOR between packed inputs and packed weight rows.

    Parameters
    ----------
    x_words : ndarray of uint64, shape (N, W)
    w_words : ndarray of uint64, shape (MH, W)
    k : int
        Number of valid bits; padding bits are zero in both operands, so they never differ.

    Returns
    -------
    ndarray of int64, shape (N, MH)
        ``P[n, r] = k - popcount(x[n] XOR w[r])``.
    """
    differ = np.zeros((x_words.shape[0], w_words.shape[0]), dtype=np.int64)
    for j in range(x_words.shape[1]):
        differ += np.bitwise_count(x_words[:, j, None] ^ w_words[None, :, j])
    return k - differ


def pixel_sums(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Accumulators of a pixel layer: ``a[n, r] = sum_k (2 w[r, k] - 1) x[n, k]``, exactly.

    Parameters
    ----------
    x : ndarray, shape (N, K)
        8-bit values in ``[0, 255]``.
    weights : ndarray of uint8, shape (MH, K)
        Weight bits, 1 = +1.

    Returns
    -------
    ndarray of int64, shape (N, MH)
        In ``[-255 K, 255 K]``.
    """
    return np.asarray(x, dtype=np.int64) @ (2 * weights.astype(np.int64) - 1).T


def im2col(bits: np.ndarray, in_shape: tuple[int, int, int], kernel: int) -> np.ndarray:
    """Sliding windows of bit maps, stride 1, no padding.

    Parameters
    ----------
    bits : ndarray, shape (N, H * W * C)
        Maps flattened ``(y, x, c)``, channel innermost.
    in_shape : tuple of int
        ``(H, W, C)``.
    kernel : int
        ``K``.

    Returns
    -------
    ndarray, shape (N * OH * OW, K * K * C)
        Row ``(n * OH + oy) * OW + ox``, column ``(ky * K + kx) * C + c`` holds
        ``bits[n, ((oy + ky) * W + ox + kx) * C + c]``; ``OH = H - K + 1``, ``OW = W - K + 1``.
    """
    h, w, c = in_shape
    maps = np.asarray(bits).reshape(-1, h, w, c)
    windows = np.lib.stride_tricks.sliding_window_view(maps, (kernel, kernel), axis=(1, 2))
    # windows: (N, OH, OW, C, ky, kx) -> (N, OH, OW, ky, kx, C)
    return windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, kernel * kernel * c)


def conv_bits(layer: ConvLayer, bits: np.ndarray) -> np.ndarray:
    """Output bits ``(N, OH * OW * OC)`` of a convolution on input maps ``(N, H * W * C)``.

    Works through :func:`im2col` and :func:`popcounts` (a pixel layer: :func:`pixel_sums`) on
    at most about ``CONV_ROWS`` windows at a time.
    """
    oh, ow, oc = layer.out_shape
    w = pack_bits(layer.weights)
    out = np.empty((bits.shape[0], oh * ow * oc), dtype=np.uint8)
    step = max(1, CONV_ROWS // (oh * ow))
    for start in range(0, bits.shape[0], step):
        cols = im2col(bits[start:start + step], layer.in_shape, layer.kernel)
        if layer.pixels8:
            p = pixel_sums(cols, layer.weights)
        else:
            p = popcounts(pack_bits(cols), w, layer.fan_in)
        fired = (p >= layer.thresholds[None, :]).astype(np.uint8)
        out[start:start + step] = fired.reshape(-1, oh * ow * oc)
    return out


def maxpool_bits(layer: MaxPoolLayer, bits: np.ndarray) -> np.ndarray:
    """OR over ``2 x 2`` windows (stride 2) of maps ``(N, H * W * C)``; odd edges dropped."""
    h, w, c = layer.in_shape
    oh, ow, _ = layer.out_shape
    maps = np.asarray(bits).reshape(-1, h, w, c)[:, :2 * oh, :2 * ow]
    pooled = maps.reshape(-1, oh, 2, ow, 2, c).max(axis=(2, 4))
    return pooled.reshape(-1, oh * ow * c)


def dense_values(layer: DenseLayer, bits: np.ndarray) -> np.ndarray:
    """A dense layer on input bits ``(N, MW)`` (a pixel layer: 8-bit values): its output bits
    (uint8) when thresholded, else the output layer's scores (int64)."""
    if layer.pixels8:
        p = pixel_sums(bits, layer.weights)
    else:
        p = popcounts(pack_bits(bits), pack_bits(layer.weights), layer.in_features)
    if layer.thresholds is None:
        return layer.scores(p)
    return (p >= layer.thresholds[None, :]).astype(np.uint8)


LAYER_REFERENCE = {"dense": dense_values, "output": dense_values, "conv": conv_bits,
                   "maxpool": maxpool_bits}
"""The integer semantics of each layer kind (:data:`bnnhw.model.LAYER_KINDS`), by kind."""


def apply_layer(layer: DenseLayer | ConvLayer | MaxPoolLayer, bits: np.ndarray) -> np.ndarray:
    """One layer on input bits ``(N, in_features)``: :data:`LAYER_REFERENCE` of its kind.

    Returns the output bits (uint8) of a thresholded layer, or the scores (int64) of the
    output layer.
    """
    return LAYER_REFERENCE[layer.kind](layer, bits)


def layer_outputs(model: Model, images: np.ndarray) -> list[np.ndarray]:
    """Every layer's output for a batch of uint8 images ``(N, pixels)``.

    Returns
    -------
    list of ndarray
        ``[input_bits, bits_1, ..., bits_{L-1}, scores]``: the quantized input bits (for a
        ``pixels8`` model the pixels as int64), each thresholded layer's bits (uint8), and the
        output layer's popcounts (int64).
    """
    outputs = [model.quantizer.quantize(images)]
    for layer in model.layers:
        outputs.append(apply_layer(layer, outputs[-1]))
    return outputs


def infer(model: Model, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Classify uint8 images ``(N, pixels)``; returns ``(classes (N,), scores (N, C))``.

    The work is done in chunks of ``CHUNK`` images with packed XNOR-popcount; the argmax
    breaks ties toward the lowest class index.
    """
    images = np.asarray(images)
    scores = np.empty((images.shape[0], model.classes), dtype=np.int64)
    for start in range(0, images.shape[0], CHUNK):
        x = model.quantizer.quantize(images[start:start + CHUNK])
        for layer in model.layers:
            x = apply_layer(layer, x)
        scores[start:start + CHUNK] = x
    return argmax_lowest(scores), scores


def argmax_lowest(scores: np.ndarray) -> np.ndarray:
    """Row-wise argmax; among equal maxima the lowest index wins."""
    return np.argmax(scores, axis=1).astype(np.int64)


__all__ = ["LAYER_REFERENCE", "apply_layer", "argmax_lowest", "conv_bits", "dense_values",
           "im2col", "infer", "layer_outputs", "maxpool_bits", "pack_bits", "pixel_sums",
           "popcounts", "unpack_bits"]
