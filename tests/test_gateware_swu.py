# amaranth: UnusedElaboratable=no
"""Sliding-window unit against reference.im2col: shapes, kernels, word widths, stalls, timing."""

import numpy as np
import pytest
from gateware_helpers import divisors
from hypothesis import given, settings
from hypothesis import strategies as st

from bnnhw.gateware.simulate import run_stream, steady_interval
from bnnhw.gateware.swu import SlidingWindowUnit
from bnnhw.packing import vector_to_words, words_to_ints
from bnnhw.reference import im2col


def pixel_stream(maps, c):
    """Frames ``(N, H * W * C)`` as one ``C``-bit word per pixel."""
    return [w for frame in maps for w in words_to_ints(vector_to_words(frame, c))]


def window_stream(maps, in_shape, k, width):
    return [w for row in im2col(maps, in_shape, k)
            for w in words_to_ints(vector_to_words(row, width))]


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 7), w=st.integers(1, 7), c=st.integers(1, 4),
       seed=st.integers(0, 2**32 - 1))
def test_swu_matches_im2col(h, w, c, seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, min(h, w) + 1))
    width = int(rng.choice(divisors(k * k * c)))
    maps = rng.integers(0, 2, (3, h * w * c)).astype(np.uint8)
    expected = window_stream(maps, (h, w, c), k, width)
    dut = SlidingWindowUnit((h, w, c), k, width)
    run = run_stream(dut, pixel_stream(maps, c), len(expected), in_stall=0.3, out_stall=0.4,
                     seed=seed)
    assert run.outputs == expected


@pytest.mark.parametrize(("shape", "k", "width"), [
    ((6, 5, 2), 3, 18), ((6, 5, 2), 3, 3), ((5, 7, 1), 2, 1), ((4, 4, 3), 1, 1),
    ((3, 3, 2), 3, 2), ((8, 6, 4), 3, 4),
])
def test_swu_timing_is_declared(shape, k, width):
    rng = np.random.default_rng(1)
    h, w, c = shape
    frames = 4
    maps = rng.integers(0, 2, (frames, h * w * c)).astype(np.uint8)
    dut = SlidingWindowUnit(shape, k, width)
    per_frame = (h - k + 1) * (w - k + 1) * dut.slices
    run = run_stream(dut, pixel_stream(maps, c), frames * per_frame)
    assert run.outputs == window_stream(maps, shape, k, width)
    assert run.out_times[0] - run.in_times[0] == dut.latency
    assert run.out_times[:per_frame] == dut.frame_times(range(h * w))
    assert steady_interval(run.out_times, per_frame) == dut.cycles_per_frame
    if dut.slices == 1:
        assert dut.cycles_per_frame == h * w


def test_swu_rejects_bad_parameters():
    with pytest.raises(ValueError, match=r"out_width=4, K\*K\*C=18"):
        SlidingWindowUnit((5, 5, 2), 3, 4)
    with pytest.raises(ValueError, match=r"in_shape=\(2, 5, 1\), K=3"):
        SlidingWindowUnit((2, 5, 1), 3, 1)
