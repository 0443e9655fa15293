# amaranth: UnusedElaboratable=no
"""Width converter: order kept for up, down and general ratios; declared timing."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnnhw.gateware.simulate import run_stream
from bnnhw.gateware.widthconv import WidthConverter
from bnnhw.packing import vector_to_words, words_to_ints


@settings(max_examples=30, deadline=None)
@given(pair=st.sampled_from([(1, 4), (3, 12), (4, 1), (12, 3), (5, 5), (6, 4), (4, 6), (2, 3)]),
       seed=st.integers(0, 2**32 - 1))
def test_widthconv_keeps_order(pair, seed):
    a, b = pair
    length = 12 * a * b // np.gcd(a, b) // 2 if (a * b) % 2 == 0 else 2 * a * b
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, 3 * length)
    frames = bits.reshape(3, length)
    words_in = [w for f in frames for w in words_to_ints(vector_to_words(f, a))]
    words_out = [w for f in frames for w in words_to_ints(vector_to_words(f, b))]
    dut = WidthConverter(a, b, length)
    run = run_stream(dut, words_in, len(words_out), in_stall=0.3, out_stall=0.4, seed=seed)
    assert run.outputs == words_out
    run = run_stream(WidthConverter(a, b, length), words_in, len(words_out))
    assert run.out_times[0] - run.in_times[0] == dut.latency
    per_frame = length // b
    offered = [0] + [t + 1 for t in run.in_times[:length // a - 1]]
    assert run.out_times[:per_frame] == dut.frame_times(offered)
    interval = run.out_times[2 * per_frame] - run.out_times[per_frame]
    assert interval == dut.cycles_per_frame == length // np.gcd(a, b)


def test_widthconv_rejects_non_dividing_widths():
    with pytest.raises(ValueError, match=r"A=5, B=4, V=12"):
        WidthConverter(5, 4, 12)
