"""The one definition of how bits are laid out: packed words, MVTU memories and stream words.

Conventions (shared by the reference, the gateware, the exporter and the benches):

* A bit vector ``x`` of ``K`` bits packs into 64-bit words; bit ``k`` is bit ``k % 64`` of word
  ``k // 64``. Padding bits are zero.
* MVTU layout (FINN): a layer of ``MH`` rows and ``MW`` columns folded by ``PE`` and ``SIMD`` has
  ``NF = MH / PE`` neuron folds and ``SF = MW / SIMD`` synapse folds. Row ``r = nf * PE + pe``
  lives in processing element ``pe``; PE ``pe`` stores at address ``nf * SF + sf`` the word whose
  bit ``i`` is column ``sf * SIMD + i``. Thresholds: PE ``pe`` stores at address ``nf`` the
  threshold of row ``nf * PE + pe``.
* Stream words: a layer reads its input vector as ``SF`` words of ``SIMD`` bits (word ``sf``,
  bit ``i`` = element ``sf * SIMD + i``) and writes its output as ``NF`` words of ``PE`` lanes
  (word ``nf``, lane ``pe`` = neuron ``nf * PE + pe``).
* Bit maps (conv and max-pool layers) travel pixel by pixel in raster order, one word of ``C``
  bits per pixel; a convolution's windows (im2col rows, column ``(ky * K + kx) * C + c``) reach
  its MVTU as ``SF`` words of ``SIMD`` bits, and its output ``NF`` words per position are the
  next map, channel innermost.
* Input pixels: a frame of ``N`` pixels travels as ``N / P`` words of ``P`` bytes, pixel
  ``w * P + j`` in bits ``[8 j, 8 j + 8)`` of word ``w``.
"""

from __future__ import annotations

import numpy as np

WORD_BITS = 64


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack ``(N, K)`` 0/1 bits into ``(N, ceil(K / 64))`` uint64 words (bit k -> word k//64)."""
    bits = np.asarray(bits, dtype=np.uint8)
    n, k = bits.shape
    words = -(-k // WORD_BITS)
    padded = np.zeros((n, words * WORD_BITS), dtype=np.uint8)
    padded[:, :k] = bits
    as_bytes = np.packbits(padded, axis=1, bitorder="little")
    return as_bytes.view("<u8").reshape(n, words)


def unpack_bits(words: np.ndarray, k: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``(N, W)`` uint64 to the first ``k`` bits ``(N, k)``."""
    words = np.ascontiguousarray(words, dtype="<u8")
    bits = np.unpackbits(words.view(np.uint8), axis=1, bitorder="little")
    return bits[:, :k]


def check_folding(mh: int, mw: int, pe: int, simd: int, layer: int | str) -> None:
    """Reject a folding that does not divide the layer, naming the layer and the values.

    Raises
    ------
    ValueError
        If ``PE`` does not divide ``MH`` or ``SIMD`` does not divide ``MW``, or either is < 1.
    """
    if pe < 1 or simd < 1:
        raise ValueError(f"layer {layer}: PE and SIMD must be >= 1 (PE={pe}, SIMD={simd})")
    if mh % pe:
        raise ValueError(f"layer {layer}: PE must divide MH (MH={mh}, PE={pe})")
    if mw % simd:
        raise ValueError(f"layer {layer}: SIMD must divide MW (MW={mw}, SIMD={simd})")


def words_to_ints(bits: np.ndarray) -> list[int]:
    """Each row of 0/1 bits ``(..., B)`` becomes an integer with row[i] at bit i."""
    bits = np.asarray(bits, dtype=np.uint8)
    weights = [1 << i for i in range(bits.shape[-1])]
    flat = bits.reshape(-1, bits.shape[-1])
    return [sum(w for w, b in zip(weights, row, strict=True) if b) for row in flat.tolist()]


def mvtu_weight_words(weights: np.ndarray, pe: int, simd: int) -> np.ndarray:
    """Weight memory words of each PE, as 0/1 bits.

    Parameters
    ----------
    weights : ndarray (MH, MW) of 0/1
    pe, simd : int

    Returns
    -------
    ndarray of uint8, shape (PE, NF * SF, SIMD)
        ``out[pe, nf * SF + sf, i] = weights[nf * PE + pe, sf * SIMD + i]``.
    """
    mh, mw = weights.shape
    check_folding(mh, mw, pe, simd, "?")
    nf, sf = mh // pe, mw // simd
    w = np.asarray(weights, dtype=np.uint8).reshape(nf, pe, sf, simd)
    return w.transpose(1, 0, 2, 3).reshape(pe, nf * sf, simd)


def mvtu_thresholds(thresholds: np.ndarray, pe: int) -> np.ndarray:
    """Threshold memory of each PE: ``out[pe, nf] = thresholds[nf * PE + pe]``, shape (PE, NF)."""
    t = np.asarray(thresholds)
    return t.reshape(-1, pe).T.copy()


def vector_to_words(vector: np.ndarray, width: int) -> np.ndarray:
    """Split a ``(K,)`` vector into ``(K / width, width)`` stream words, element order kept."""
    vector = np.asarray(vector)
    if vector.shape[0] % width:
        raise ValueError(f"word width {width} does not divide vector length {vector.shape[0]}")
    return vector.reshape(-1, width)


def pixel_words(image: np.ndarray, pixels_per_word: int) -> list[int]:
    """A uint8 image ``(N,)`` as ``N / P`` integers, pixel ``w * P + j`` in bits ``[8j, 8j+8)``."""
    image = np.asarray(image, dtype=np.uint8).reshape(-1)
    if image.size % pixels_per_word:
        raise ValueError(
            f"pixels per word ({pixels_per_word}) must divide the image size ({image.size})"
        )
    rows = image.reshape(-1, pixels_per_word)
    return [int.from_bytes(row.tobytes(), "little") for row in rows]
