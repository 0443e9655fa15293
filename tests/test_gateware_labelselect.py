# amaranth: UnusedElaboratable=no
"""Label select: argmax with ties to the lowest index, all scores passed on, timing."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnnhw.gateware.labelselect import LabelSelect
from bnnhw.gateware.simulate import run_stream
from bnnhw.reference import argmax_lowest


def encode(scores, pe, bits):
    words = []
    for start in range(0, len(scores), pe):
        words.append(sum(int(s) << (p * bits) for p, s in enumerate(scores[start:start + pe])))
    return words


def decode(word, classes, class_bits, bits):
    return word & ((1 << class_bits) - 1), [(word >> (class_bits + c * bits)) & ((1 << bits) - 1)
                                            for c in range(classes)]


@settings(max_examples=25, deadline=None)
@given(shape=st.sampled_from([(2, 1), (2, 2), (6, 3), (10, 1), (10, 5), (10, 10), (9, 3)]),
       bits=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_labelselect_matches_reference(shape, bits, seed):
    classes, pe = shape
    rng = np.random.default_rng(seed)
    # Few distinct values, so ties are common.
    scores = rng.integers(0, min(3, 1 << bits), (6, classes))
    words = [w for row in scores for w in encode(row, pe, bits)]
    dut = LabelSelect(classes, pe, bits)
    run = run_stream(dut, words, len(scores), in_stall=0.3, out_stall=0.5, seed=seed)
    expected = [(int(c), [int(v) for v in row]) for c, row in zip(argmax_lowest(scores), scores,
                                                                  strict=True)]
    assert [decode(w, classes, dut.class_bits, bits) for w in run.outputs] == expected
    run = run_stream(LabelSelect(classes, pe, bits), words, len(scores))
    assert run.out_times[0] - run.in_times[0] == dut.latency == classes // pe
    assert run.out_times[2] - run.out_times[1] == dut.cycles_per_frame


@pytest.mark.parametrize(("scores", "winner"), [([3, 3, 1], 0), ([1, 4, 4], 1), ([2, 2, 2], 0),
                                                ([0, 0, 5], 2)])
def test_labelselect_ties_go_to_lowest_index(scores, winner):
    dut = LabelSelect(3, 1, 3)
    run = run_stream(dut, scores, 1)
    assert decode(run.outputs[0], 3, 2, 3) == (winner, scores)


def test_labelselect_rejects_bad_pe():
    with pytest.raises(ValueError, match=r"C=10, PE=3"):
        LabelSelect(10, 3, 4)


def test_labelselect_logic_grows_linearly_with_pe():
    # A chain of compare-selects that reuse their own output elaborates in time exponential in
    # PE; the tree of named nodes stays linear: doubling PE about doubles the netlist.
    from amaranth.back import rtlil

    sizes = {pe: len(rtlil.convert(LabelSelect(300, pe, 10))) for pe in (25, 50, 100)}
    assert sizes[50] < 2.5 * sizes[25] and sizes[100] < 2.5 * sizes[50]


def test_300_class_output_layer_generates(tmp_path):
    from gateware_helpers import random_model

    from bnnhw.export import generate
    from bnnhw.folding import parse_fold

    model = random_model(np.random.default_rng(3), 16, 1, [300])
    info = generate(model, tmp_path, parse_fold("25x16", model))
    assert info["output"]["classes"] == 300 and info["stages"][-1]["cycles_per_frame"] == 12
