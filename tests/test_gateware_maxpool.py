# amaranth: UnusedElaboratable=no
"""Streaming max-pool against reference.maxpool_bits: odd sizes, channels, stalls, timing."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnnhw.gateware.maxpool import MaxPool
from bnnhw.gateware.simulate import run_stream, steady_interval
from bnnhw.model import MaxPoolLayer
from bnnhw.packing import vector_to_words, words_to_ints
from bnnhw.reference import maxpool_bits


def pixel_stream(maps, c):
    return [w for frame in maps for w in words_to_ints(vector_to_words(frame, c))]


@settings(max_examples=40, deadline=None)
@given(h=st.integers(2, 7), w=st.integers(2, 7), c=st.integers(1, 4),
       seed=st.integers(0, 2**32 - 1))
def test_maxpool_matches_reference(h, w, c, seed):
    rng = np.random.default_rng(seed)
    maps = (rng.random((3, h * w * c)) < rng.random()).astype(np.uint8)
    expected = pixel_stream(maxpool_bits(MaxPoolLayer((h, w, c)), maps), c)
    run = run_stream(MaxPool((h, w, c)), pixel_stream(maps, c), len(expected), in_stall=0.3,
                     out_stall=0.5, seed=seed)
    assert run.outputs == expected


@pytest.mark.parametrize("shape", [(2, 2, 1), (5, 4, 3), (4, 7, 2), (7, 7, 1)])
def test_maxpool_timing_is_declared(shape):
    rng = np.random.default_rng(2)
    h, w, c = shape
    frames = 4
    maps = rng.integers(0, 2, (frames, h * w * c)).astype(np.uint8)
    dut = MaxPool(shape)
    per_frame = (h // 2) * (w // 2)
    run = run_stream(dut, pixel_stream(maps, c), frames * per_frame)
    assert run.outputs == pixel_stream(maxpool_bits(MaxPoolLayer(shape), maps), c)
    assert run.out_times[0] - run.in_times[0] == dut.latency == w + 2
    assert run.out_times[:per_frame] == dut.frame_times(range(h * w))
    assert steady_interval(run.out_times, per_frame) == dut.cycles_per_frame == h * w


def test_maxpool_rejects_small_maps():
    with pytest.raises(ValueError, match=r"in_shape=\(1, 4, 2\)"):
        MaxPool((1, 4, 2))
