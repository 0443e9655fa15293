"""Bit-exact integer reference model: the oracle every other stage is compared with.

Numpy only. A binary dense layer computes, for input bits ``x`` and weight row ``w_r``
(``K = MW`` bits each, packed 64 per word, see :mod:`bnnhw.packing`)::

    P_r = popcount(XNOR(x, w_r)) = K - popcount(x XOR w_r)
    dot_r = 2 P_r - K                              # the +-1 dot product (seed 000, Alg. 2)

Thresholded layers output bit ``P_r >= T_r``; the output layer's scores are ``P_r``; the class
is the argmax of the scores, the lowest index winning ties.
"""

from __future__ import annotations

import numpy as np

from .model import Model
from .packing import pack_bits, unpack_bits

CHUNK = 1024


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


def layer_outputs(model: Model, images: np.ndarray) -> list[np.ndarray]:
    """Every layer's output for a batch of uint8 images ``(N, pixels)``.

    Returns
    -------
    list of ndarray
        ``[input_bits, bits_1, ..., bits_{L-1}, scores]``: the quantized input bits, each
        thresholded layer's bits (uint8), and the output layer's popcounts (int64).
    """
    bits = model.quantizer.quantize(images)
    outputs = [bits]
    x = pack_bits(bits)
    for layer in model.layers:
        p = popcounts(x, pack_bits(layer.weights), layer.in_features)
        if layer.thresholds is None:
            outputs.append(p)
        else:
            out = (p >= layer.thresholds[None, :]).astype(np.uint8)
            outputs.append(out)
            x = pack_bits(out)
    return outputs


def infer(model: Model, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Classify uint8 images ``(N, pixels)``; returns ``(classes (N,), scores (N, C))``.

    The work is done in chunks of ``CHUNK`` images with packed XNOR-popcount; the argmax
    breaks ties toward the lowest class index.
    """
    images = np.asarray(images)
    weights = [pack_bits(layer.weights) for layer in model.layers]
    scores = np.empty((images.shape[0], model.classes), dtype=np.int64)
    for start in range(0, images.shape[0], CHUNK):
        x = pack_bits(model.quantizer.quantize(images[start:start + CHUNK]))
        for layer, w in zip(model.layers, weights, strict=True):
            p = popcounts(x, w, layer.in_features)
            if layer.thresholds is not None:
                x = pack_bits((p >= layer.thresholds[None, :]).astype(np.uint8))
        scores[start:start + CHUNK] = p
    return argmax_lowest(scores), scores


def argmax_lowest(scores: np.ndarray) -> np.ndarray:
    """Row-wise argmax; among equal maxima the lowest index wins."""
    return np.argmax(scores, axis=1).astype(np.int64)


__all__ = ["argmax_lowest", "infer", "layer_outputs", "pack_bits", "popcounts", "unpack_bits"]
