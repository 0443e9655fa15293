# amaranth: UnusedElaboratable=no
"""MVTU alone against reference.popcounts: bits, scores, foldings, input widths, timing."""

import numpy as np
import pytest
from gateware_helpers import divisors, random_thresholds
from hypothesis import given, settings
from hypothesis import strategies as st

from bnnhw.gateware.mvtu import MVTU
from bnnhw.gateware.simulate import run_stream, steady_interval
from bnnhw.packing import pack_bits, vector_to_words, words_to_ints
from bnnhw.reference import popcounts


def expected_words(weights, thresholds, pe, vectors, lane_bits):
    p = popcounts(pack_bits(vectors), pack_bits(weights), weights.shape[1])
    lanes = p if thresholds is None else (p >= thresholds).astype(np.int64)
    return [sum(int(v) << (k * lane_bits) for k, v in enumerate(row))
            for row in lanes.reshape(-1, pe)]


@settings(max_examples=40, deadline=None)
@given(mh=st.integers(1, 12), mw=st.integers(1, 24), output=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_mvtu_matches_reference(mh, mw, output, seed):
    rng = np.random.default_rng(seed)
    pe = int(rng.choice(divisors(mh)))
    simd = int(rng.choice(divisors(mw)))
    in_width = simd * int(rng.choice(divisors(mw // simd)))
    weights = rng.integers(0, 2, (mh, mw)).astype(np.uint8)
    thresholds = None if output else random_thresholds(rng, mw, mh)
    vectors = rng.integers(0, 2, (4, mw)).astype(np.uint8)
    vectors[0] = weights[0]  # a full match: P = MW
    words = [w for v in vectors for w in words_to_ints(vector_to_words(v, in_width))]
    dut = MVTU(weights, thresholds, pe, simd, in_width)
    expected = expected_words(weights, thresholds, pe, vectors, dut.lane_bits)
    run = run_stream(dut, words, len(expected), in_stall=0.3, out_stall=0.4, seed=seed)
    assert run.outputs == expected
    run = run_stream(MVTU(weights, thresholds, pe, simd, in_width), words, len(expected))
    assert run.out_times[0] - run.in_times[0] == dut.latency
    assert run.out_times[:dut.nf] == dut.frame_times(run.in_times[:mw // in_width])
    nf = dut.nf
    assert run.out_times[2 * nf] - run.out_times[nf] == dut.cycles_per_frame == nf * (mw // simd)


def test_mvtu_weight_memory_is_overridable():
    built = []

    class Recording(MVTU):
        def weight_memory(self, pe, init, width):
            built.append((pe, list(init)))
            return super().weight_memory(pe, init, width)

    weights = np.array([[1, 0, 1, 1], [0, 0, 1, 0]], dtype=np.uint8)
    dut = Recording(weights, None, 2, 2)
    run = run_stream(dut, [0b01, 0b11], 1)
    assert run.outputs == expected_words(weights, None, 2, np.array([[1, 0, 1, 1]]), 3)
    # PE 1 stores its words one place ahead (weight_offsets: pe mod NF*SF).
    assert dut.weight_offsets() == [[0], [1]]
    assert built == [(0, [0b01, 0b11]), (1, [0b01, 0b00])]


def test_mvtu_weight_offsets_can_be_switched_off():
    built = []

    class Fixed(MVTU):
        def weight_memory(self, pe, init, width):
            built.append((pe, list(init)))
            return super().weight_memory(pe, init, width)

        def weight_offsets(self):
            return [[0]] * self.pe

    weights = np.array([[1, 0, 1, 1], [0, 0, 1, 0]], dtype=np.uint8)
    dut = Fixed(weights, None, 2, 2)
    run = run_stream(dut, [0b01, 0b11, 0b10, 0b00], 2)
    vectors = np.array([[1, 0, 1, 1], [0, 1, 0, 0]])
    assert run.outputs == expected_words(weights, None, 2, vectors, 3)
    assert built == [(0, [0b01, 0b11]), (1, [0b00, 0b01])]


def test_mvtu_rejects_bad_folding():
    with pytest.raises(ValueError, match=r"layer 2: SIMD must divide MW \(MW=6, SIMD=4\)"):
        MVTU(np.zeros((4, 6)), None, 2, 4, name="2")
    with pytest.raises(ValueError, match=r"in_width=4, SIMD=2, MW=6"):
        MVTU(np.zeros((4, 6)), None, 2, 2, in_width=4)
    with pytest.raises(ValueError, match=r"layer 1: vectors per frame must be >= 1 \(vectors=0\)"):
        MVTU(np.zeros((4, 6)), None, 2, 2, name="1", vectors=0)
    with pytest.raises(ValueError, match=r"layer 3: the input buffer needs >= 2 banks \(banks=1\)"):
        MVTU(np.zeros((4, 6)), None, 2, 2, name="3", banks=1)


@pytest.mark.parametrize(("mh", "mw", "pe", "simd", "in_width", "vectors", "banks"), [
    (4, 9, 2, 3, 3, 5, 2), (4, 9, 4, 9, 9, 6, 2), (6, 8, 1, 2, 8, 4, 2), (2, 4, 2, 1, 1, 3, 2),
    (4, 9, 2, 3, 9, 5, 3), (2, 4, 1, 1, 4, 7, 5),
    (8, 64, 8, 64, 64, 6, 2),  # SF = 1 behind a 6-level popcount: the output queue's worst case
])
def test_mvtu_over_many_vectors_keeps_the_frame_contract(mh, mw, pe, simd, in_width, vectors,
                                                         banks):
    """A conv frame: ``V`` vectors back to back take ``V * NF * SF`` cycles, outputs in order;
    the ``B`` banks take the first ``B`` vectors back to back."""
    rng = np.random.default_rng(mh * mw + vectors)
    weights = rng.integers(0, 2, (mh, mw)).astype(np.uint8)
    thresholds = random_thresholds(rng, mw, mh)
    frames = 3
    vecs = rng.integers(0, 2, (frames * vectors, mw)).astype(np.uint8)
    words = [w for v in vecs for w in words_to_ints(vector_to_words(v, in_width))]
    dut = MVTU(weights, thresholds, pe, simd, in_width, vectors=vectors, banks=banks)
    expected = expected_words(weights, thresholds, pe, vecs, 1)
    per_frame = vectors * dut.nf
    assert dut.cycles_per_frame == vectors * dut.nf * dut.sf
    run = run_stream(dut, words, len(expected))
    assert run.outputs == expected
    assert run.out_times[0] - run.in_times[0] == dut.latency
    assert run.in_times[:banks * dut.depth] == list(range(banks * dut.depth))
    if dut.nf * dut.sf > (banks - 1) * dut.depth:  # all banks full: the collector waits
        assert run.in_times[banks * dut.depth] == dut.depth + dut.nf * dut.sf
    assert run.out_times[:per_frame] == dut.frame_times(range(vectors * dut.depth))
    assert steady_interval(run.out_times, per_frame) == dut.cycles_per_frame
    run = run_stream(MVTU(weights, thresholds, pe, simd, in_width, vectors=vectors, banks=banks),
                     words, len(expected), in_stall=0.3, out_stall=0.3, seed=1)
    assert run.outputs == expected


def test_large_pe_memories_are_split_into_columns_of_whole_block_ram_ports():
    # cbcnn-deep's dense layer folded 1x256: 4096 words of 256 bits per PE (57 DP16KD): cut
    # into 36-bit columns (8 cascaded blocks each) and the 4 bits left (one 4096 x 4 block),
    # every counter its own offset.
    dut = MVTU(np.zeros((512, 2048), dtype=np.uint8), None, 1, 256)
    assert dut.nf * dut.sf == 4096
    assert dut.weight_slices() == [36] * 7 + [4]
    assert dut.weight_offsets() == [list(range(8))]
    small = MVTU(np.zeros((64, 576), dtype=np.uint8), None, 16, 192)
    assert small.weight_slices() == [192]


@settings(max_examples=15, deadline=None)
@given(mh=st.integers(1, 8), mw=st.integers(1, 24), output=st.booleans(),
       slice_bits=st.integers(1, 64), seed=st.integers(0, 2**32 - 1))
def test_sliced_weight_memories_match_the_reference(mh, mw, output, slice_bits, seed):
    rng = np.random.default_rng(seed)
    pe = int(rng.choice(divisors(mh)))
    simd = int(rng.choice(divisors(mw)))
    weights = rng.integers(0, 2, (mh, mw)).astype(np.uint8)
    thresholds = None if output else random_thresholds(rng, mw, mh)
    vectors = rng.integers(0, 2, (3, mw)).astype(np.uint8)
    words = [w for v in vectors for w in words_to_ints(vector_to_words(v, simd))]

    class Sliced(MVTU):
        def weight_slices(self):
            # Columns of slice_bits (the last one narrower), as a large memory would be cut.
            return [min(slice_bits, self.simd - lo) for lo in range(0, self.simd, slice_bits)]

    dut = Sliced(weights, thresholds, pe, simd, simd)
    expected = expected_words(weights, thresholds, pe, vectors, dut.lane_bits)
    run = run_stream(dut, words, len(expected), in_stall=0.3, out_stall=0.3, seed=seed)
    assert run.outputs == expected
