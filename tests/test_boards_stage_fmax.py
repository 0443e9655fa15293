# amaranth: UnusedElaboratable=no
"""Stage fmax benchmark: the harness really moves words; one real place-and-route (synth)."""

import json

import numpy as np
import pytest
from amaranth.sim import Simulator
from bnnhw.boards import stage_fmax
from bnnhw.boards.stage_fmax import StageHarness, place_stage

from bnnhw.folding import parse_fold
from bnnhw.gateware.dataflow import Accelerator
from bnnhw.gateware.swu import SlidingWindowUnit
from bnnhw.model import DenseLayer, InputQuantizer, Model


def tiny_model(seed=0):
    rng = np.random.default_rng(seed)
    q = InputQuantizer((128,), 16)
    h = DenseLayer(rng.integers(0, 2, (8, 16)), rng.integers(0, 18, 8))
    o = DenseLayer(rng.integers(0, 2, (4, 8)))
    return Model(q, (h, o))


def test_harness_feeds_and_drains_the_stage():
    swu = SlidingWindowUnit((4, 4, 2), 3, 6)
    harness = StageHarness(swu)
    counts = {"in": 0, "out": 0, "stalled": 0}

    async def bench(ctx):
        for _ in range(400):
            await ctx.tick()
            if ctx.get(swu.i_stream.valid) and ctx.get(swu.i_stream.ready):
                counts["in"] += 1
            if ctx.get(swu.o_stream.valid):
                counts["out" if ctx.get(swu.o_stream.ready) else "stalled"] += 1

    sim = Simulator(harness)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    # 400 cycles with valid and ready random: whole frames (16 pixels, 4 windows of 3 words)
    # go through, and the consumer holds some words back.
    assert counts["in"] >= 32 and counts["out"] >= 12 and counts["stalled"] > 0


def test_unknown_stage_is_refused_with_the_names():
    model = tiny_model()
    acc = Accelerator(model, parse_fold("2x8,1x4@1", model))
    with pytest.raises(ValueError, match=r"unknown stage\(s\) \['swu9'\]; this accelerator has "
                                         r"\['quantizer', .*'layer0'"):
        stage_fmax.stage_fmax(acc, "orangecrab-25f", ["swu9"])


@pytest.mark.parametrize("args, named", [
    (["--model", "nope.npz", "--board", "ulx3s-85f"], "nope.npz: no such model file"),
    (["--model", "MODEL", "--board", "de10"], "unknown board 'de10'"),
    (["--model", "MODEL", "--board", "ulx3s-85f", "--stages", "swu9"], "unknown stage(s)"),
])
def test_bad_input_is_named_and_nothing_is_written(args, named, tmp_path, capsys):
    model = tiny_model()
    path = tmp_path / "m.npz"
    model.save(path)
    args = [str(path) if a == "MODEL" else a for a in args]
    with pytest.raises(SystemExit) as exit_:
        stage_fmax.main([*args, "--fold", "2x8,1x4@1", "--out-dir", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bad_seeds_are_refused(capsys):
    with pytest.raises(SystemExit):
        stage_fmax.main(["--model", "x.npz", "--board", "orangecrab-25f", "--fold", "auto",
                         "--seeds", "1,two"])
    assert "'1,two'" in capsys.readouterr().err


@pytest.mark.synth
def test_a_stage_is_placed_and_routed_on_ecp5(tmp_path):
    model = tiny_model()
    acc = Accelerator(model, parse_fold("2x8,1x4@1", model))
    layer0 = next(s.component for s in acc.stages if s.name == "layer0")
    run = place_stage(layer0, "orangecrab-25f", tmp_path / "layer0", freq_mhz=100, seed=1)
    assert run["seed"] == 1
    assert 20 < run["fmax_mhz"] < 1000
    assert run["luts"] > 8            # at least the popcount of 8 lanes and the threshold
    path = run["critical_path"]
    assert path["total_ns"] == pytest.approx(path["logic_ns"] + path["routing_ns"], abs=0.01)
    assert 1000 / run["fmax_mhz"] == pytest.approx(path["total_ns"], rel=0.05)
    assert json.dumps(run)                 # the row is JSON as written by the command
