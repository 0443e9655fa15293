"""Bit packing and the MVTU memory layout (``bnnhw.packing``)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bnnhw.packing import (
    check_folding,
    mvtu_thresholds,
    mvtu_weight_words,
    pack_bits,
    pixel_words,
    unpack_bits,
    vector_to_words,
    words_to_ints,
)


@given(n=st.integers(1, 4), k=st.integers(1, 200), seed=st.integers(0, 2**32 - 1))
def test_pack_unpack_round_trip_and_bit_order(n, k, seed):
    bits = np.random.default_rng(seed).integers(0, 2, (n, k)).astype(np.uint8)
    words = pack_bits(bits)
    assert words.shape == (n, -(-k // 64)) and words.dtype == np.dtype("<u8")
    np.testing.assert_array_equal(unpack_bits(words, k), bits)
    # Bit j of the row is bit j % 64 of word j // 64; padding bits are zero.
    for j in range(k):
        assert (words[:, j // 64] >> np.uint64(j % 64) & np.uint64(1) == bits[:, j]).all()
    assert words_to_ints(bits[:, :min(k, 64)]) == [int(w) for w in words[:, 0]]


@given(data=st.data())
def test_mvtu_layout_is_the_reference_layout(data):
    """``out[p, nf * SF + sf, i] = W[nf * PE + p, sf * SIMD + i]`` and ``T[nf * PE + p]``."""
    pe, nf = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    simd, sf = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 4))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    w = rng.integers(0, 2, (pe * nf, simd * sf))
    t = rng.integers(0, 100, pe * nf)
    words, thresholds = mvtu_weight_words(w, pe, simd), mvtu_thresholds(t, pe)
    for p in range(pe):
        for f in range(nf):
            assert thresholds[p, f] == t[f * pe + p]
            for s in range(sf):
                np.testing.assert_array_equal(words[p, f * sf + s],
                                              w[f * pe + p, s * simd:(s + 1) * simd])


def test_folding_errors_name_the_layer_and_values():
    with pytest.raises(ValueError, match=r"layer 2: PE must divide MH \(MH=10, PE=3\)"):
        check_folding(10, 8, 3, 2, 2)
    with pytest.raises(ValueError, match=r"layer x: SIMD must divide MW \(MW=8, SIMD=3\)"):
        check_folding(10, 8, 2, 3, "x")
    with pytest.raises(ValueError, match=r"PE and SIMD must be >= 1 \(PE=0, SIMD=1\)"):
        check_folding(10, 8, 0, 1, 0)


def test_stream_words():
    assert pixel_words(np.array([1, 2, 3, 4], np.uint8), 2) == [0x0201, 0x0403]
    with pytest.raises(ValueError, match=r"pixels per word \(3\) must divide the image size"):
        pixel_words(np.zeros(4, np.uint8), 3)
    np.testing.assert_array_equal(vector_to_words(np.arange(6), 3), [[0, 1, 2], [3, 4, 5]])
    with pytest.raises(ValueError, match="word width 4 does not divide vector length 6"):
        vector_to_words(np.arange(6), 4)
