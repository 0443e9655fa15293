# amaranth: UnusedElaboratable=no
"""Pipelined popcount: counts, tag pass-through, declared latency, back-pressure."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnnhw.gateware.popcount import Popcount, popcount_latency
from bnnhw.gateware.simulate import run_stream


def expected(word, width, lanes, tag_width):
    count_width = width.bit_length()
    out = 0
    for lane in range(lanes):
        out |= ((word >> (lane * width)) & ((1 << width) - 1)).bit_count() << (lane * count_width)
    return out | (word >> (lanes * width)) << (lanes * count_width)


@settings(max_examples=30, deadline=None)
@given(width=st.integers(1, 40), lanes=st.integers(1, 3), tag_width=st.integers(0, 4),
       seed=st.integers(0, 2**32 - 1))
def test_popcount_counts(width, lanes, tag_width, seed):
    rng = np.random.default_rng(seed)
    bits = lanes * width + tag_width
    words = [int.from_bytes(rng.bytes(8), "little") & ((1 << bits) - 1) for _ in range(12)]
    words += [0, (1 << bits) - 1]
    dut = Popcount(width, lanes, tag_width)
    run = run_stream(dut, words, len(words), in_stall=0.3, out_stall=0.4, seed=seed)
    assert run.outputs == [expected(w, width, lanes, tag_width) for w in words]
    run = run_stream(Popcount(width, lanes, tag_width), words, len(words))
    assert run.out_times[0] - run.in_times[0] == dut.latency == popcount_latency(width)
    assert np.diff(run.out_times).tolist() == [dut.cycles_per_frame] * (len(words) - 1)


@pytest.mark.parametrize(("width", "latency"), [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (64, 6),
                                                (65, 7)])
def test_popcount_latency_formula(width, latency):
    assert popcount_latency(width) == latency


def test_popcount_rejects_bad_width():
    with pytest.raises(ValueError, match="width=0"):
        Popcount(0)
