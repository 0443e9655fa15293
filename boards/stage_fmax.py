# amaranth: UnusedElaboratable=no
"""Stage fmax: each pipeline stage of an accelerator placed and routed on its own.

``python -m bnnhw.boards.stage_fmax --model docs/models/cbcnn-deep_mnist.npz --board ulx3s-85f
--fold auto --target-fps 8000 [--stages swu1,swu4] [--freq 100] [--seeds 1,2]``

A whole-board build names one critical path (:func:`bnnhw.boards.build.parse_critical_path`);
this benchmark says what every stage could reach by itself, so the stage that limits the clock
and the margin of all the others are known before a long build. Each stage's component is
wrapped in :class:`StageHarness` (random traffic in, a consumer that stalls at random, the
output folded into one bit so that nothing is optimised away), synthesised with the board's
YoWASP yosys (``synth_ecp5`` / ``synth_ice40``, as the board build) and placed and routed by
nextpnr for the board's device, out of context on ECP5 (no I/O). nextpnr's fmax of the clock,
its LUT count and the critical path are recorded per stage and place-and-route seed; the
result is printed and written to ``<out-dir>/stage-fmax_<board>_<model stem>.json``.

The figures are upper bounds for the stage in a full design: there it shares the die with the
other stages and its neighbours' handshakes run across more wire.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from amaranth.back import verilog
from amaranth.hdl import Cat, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from bnnhw.devices import get_board
from bnnhw.estimate import resolve_fold
from bnnhw.gateware.dataflow import Accelerator
from bnnhw.model import load_model, write_atomic

from .build import parse_critical_path, parse_nextpnr_log, toolchain_env
from .platforms import make_platform

__all__ = ["StageHarness", "main", "place_stage", "stage_fmax"]


class StageHarness(wiring.Component):
    """A stream component between a random producer and a random consumer, one output bit.

    A 32-bit LFSR (taps 32, 30, 10, 1) drives: the producer's ``valid`` (one bit of it), its
    payload (a shift register of the input width fed by another bit), and the consumer's
    ``ready``. Every word the consumer takes is XORed into a register as wide as the output;
    ``out`` is that register's parity, so every output bit is observable.
    """

    def __init__(self, component: wiring.Component):
        self.component = component
        super().__init__({"out": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.component
        i, o = dut.i_stream, dut.o_stream
        lfsr = Signal(32, init=0xACE1)
        m.d.sync += lfsr.eq(Cat(lfsr[1:], lfsr[0] ^ lfsr[2] ^ lfsr[22] ^ lfsr[31]))
        in_bits = len(Value.cast(i.payload))
        source = Signal(in_bits, init=1)
        m.d.sync += source.eq(Cat(source[1:], source[0] ^ lfsr[5]))
        m.d.comb += [i.valid.eq(lfsr[3]), Value.cast(i.payload).eq(source),
                     o.ready.eq(lfsr[7] | lfsr[13])]
        out_bits = Value.cast(o.payload)
        taken = Signal(len(out_bits))
        with m.If(o.valid & o.ready):
            m.d.sync += taken.eq(taken ^ out_bits)
        m.d.comb += self.out.eq(taken.xor())
        return m


def _device_args(board) -> list[str]:
    """nextpnr's device options for the board: the ones Amaranth's own build script for the
    board's platform writes (its ``_nextpnr_device_options`` / ``_nextpnr_package_options``
    tables), so the stage is placed on the same device, package and speed grade."""
    platform = make_platform(board)
    device = platform._nextpnr_device_options[platform.device]
    if board.family == "ecp5":
        package = platform._nextpnr_package_options[platform.package].upper()
        return [device, "--package", package, "--speed", str(platform.speed),
                "--out-of-context"]
    package = (platform.package.lower()
               + platform._nextpnr_package_options.get(platform.device, ""))
    return [device, "--package", package, "--pcf-allow-unconstrained"]


def place_stage(component: wiring.Component, board: str, work_dir: Path, freq_mhz: float,
                seed: int = 1) -> dict[str, Any]:
    """Synthesise, place and route ``component`` in a :class:`StageHarness` for ``board``.

    Returns
    -------
    dict
        ``{"seed", "fmax_mhz", "luts", "ffs", "bram", "critical_path"}`` (counts as
        :func:`bnnhw.boards.build.parse_nextpnr_log` and the path as ``parse_critical_path``
        give them; ``ffs`` is None on iCE40, where nextpnr counts no flip-flops apart).
    """
    info = get_board(board)
    env = toolchain_env(info, program=False)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "top.v").write_text(verilog.convert(StageHarness(component), name="top"))
    subprocess.run([env["YOSYS"], "-q", "-p",
                    f"read_verilog top.v; synth_{info.family} -top top -json top.json"],
                   cwd=work_dir, check=True, capture_output=True)
    nextpnr = env["NEXTPNR_ECP5" if info.family == "ecp5" else "NEXTPNR_ICE40"]
    run = subprocess.run([nextpnr, *_device_args(info), "--json", "top.json",
                          "--freq", str(freq_mhz), "--seed", str(seed),
                          "--timing-allow-fail", "--router", "router2"],
                         cwd=work_dir, capture_output=True, text=True)
    (work_dir / "nextpnr.log").write_text(run.stderr)
    if run.returncode:
        raise RuntimeError(f"nextpnr failed on seed {seed}, see {work_dir / 'nextpnr.log'}")
    util = parse_nextpnr_log(run.stderr, info.family)
    used = {key: util[key]["used"] if util.get(key) else None for key in ("luts", "ffs", "bram")}
    return {"seed": seed, "fmax_mhz": util["fmax_mhz"], **used,
            "critical_path": parse_critical_path(run.stderr)}


def stage_fmax(accelerator: Accelerator, board: str, stages: Sequence[str] | None = None,
               freq_mhz: float = 100.0, seeds: Sequence[int] = (1,),
               progress: bool = True) -> list[dict[str, Any]]:
    """:func:`place_stage` for each stage of ``accelerator`` (``stages``: names, None: all).

    Returns one row per stage: ``{"stage", "kind", "fmax_mhz"`` (the lowest over the seeds),
    ``"runs"`` (per seed)``}``.
    """
    known = {s.name: s for s in accelerator.stages}
    wanted = list(known) if stages is None else list(stages)
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; this accelerator has {list(known)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bnnhw-stage-") as tmp:
        for name in wanted:
            runs = [place_stage(known[name].component, board, Path(tmp) / f"{name}-{seed}",
                                freq_mhz, seed) for seed in seeds]
            fmax = [r["fmax_mhz"] for r in runs if r["fmax_mhz"] is not None]
            rows.append({"stage": name, "kind": known[name].kind,
                         "fmax_mhz": min(fmax) if fmax else None, "runs": runs})
            if progress:
                print(f"{name:12s} {known[name].kind:12s} "
                      + " ".join(f"{r['fmax_mhz']:7.2f}" for r in runs) + " MHz",
                      file=sys.stderr, flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: place and route the stages, print a table, write the JSON."""
    parser = argparse.ArgumentParser(prog="python -m bnnhw.boards.stage_fmax",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--board", required=True)
    parser.add_argument("--fold", required=True, help="a folding spec or 'auto'")
    parser.add_argument("--target-fps", help="with --fold auto: frames/s or 'max'")
    parser.add_argument("--stages", help="comma-separated stage names (default: all)")
    parser.add_argument("--freq", type=float, default=100.0,
                        help="clock nextpnr aims at, MHz (default 100)")
    parser.add_argument("--seeds", default="1", help="comma-separated nextpnr seeds")
    parser.add_argument("--out-dir", type=Path, default=Path("docs/boards/stages"))
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    stages = args.stages.split(",") if args.stages else None
    try:  # a bad model file, board, folding or stage name: one line naming it, exit 2
        model = load_model(args.model)
        folding = resolve_fold(args.fold, model, args.board, args.target_fps)
        accelerator = Accelerator(model, folding)
        rows = stage_fmax(accelerator, args.board, stages, args.freq, seeds)
    except ValueError as exc:
        parser.error(str(exc))
    command = ["python", "-m", "bnnhw.boards.stage_fmax", "--model", str(args.model),
               "--board", args.board, "--fold", args.fold]
    command += ["--target-fps", args.target_fps] if args.target_fps else []
    command += ["--stages", args.stages] if args.stages else []
    command += ["--freq", f"{args.freq:g}", "--seeds", args.seeds, "--out-dir",
                str(args.out_dir)]
    result = {"board": args.board, "model": str(args.model), "model_sha256": model.sha256(),
              "folding": folding.spec, "freq_mhz": args.freq, "seeds": seeds,
              "stages": rows, "command": " ".join(command)}
    limit = min((r for r in rows if r["fmax_mhz"] is not None),
                key=lambda r: r["fmax_mhz"], default=None)
    print(f"folding {folding.spec} on {args.board}")
    for r in rows:
        print(f"  {r['stage']:12s} {r['kind']:12s} fmax {r['fmax_mhz']:7.2f} MHz "
              f"({r['runs'][0]['luts']} LUTs, {r['runs'][0]['bram']} block RAMs)")
    if limit is not None:
        print(f"slowest stage: {limit['stage']} at {limit['fmax_mhz']:.2f} MHz")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"stage-fmax_{args.board}_{args.model.stem}.json"
    write_atomic(out, json.dumps(result, indent=1).encode())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
