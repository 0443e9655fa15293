"""Benchmark: how long a simulator takes to build and run the accelerator, by build setting.

Usage::

    python -m bnnhw.sim.build_bench --model docs/models/lfc_mnist.npz --fold 64x49,64x32,... \\
        --simulator verilator

It generates the same design twice, once with every memory initialiser written inline as one
assignment per word (how yosys writes it) and once with the initialisers of memories of more
than :data:`bnnhw.export.INLINE_WORDS` words moved into ``$readmemh`` files
(:func:`bnnhw.export.externalise_memories`, the default of :func:`bnnhw.export.generate`), and
builds them with the simulator one after the other in the same run: both with the C++ at the
default optimisation, and the ``$readmemh`` one also with ``-O0`` (what short runs use, see
:data:`bnnhw.sim.runner.OPTIMIZE_CYCLES`) and with every signal public to the bench (cocotb's
default; the others make only the top's ports public, see
:data:`bnnhw.sim.runner.PUBLIC_PORTS_VLT`). Every build is then run on ``--images`` test images
against the integer reference, so a faster build that simulated something else would show up
as mismatches, and its simulated cycles per second of simulation wall time are measured (the
simulator's start-up included: give enough images for a few seconds of simulation). It prints
the seconds of each build, the rates and the ratios, and writes
``docs/sim_build_<model stem>_<simulator>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bnnhw import datasets, reference
from bnnhw.export import INLINE_WORDS, generate
from bnnhw.folding import parse_fold
from bnnhw.model import load_model, write_atomic

from .runner import SIMULATORS, TOPLEVEL, simulate

VARIANTS = {"inline": (1 << 62, True, False), "readmemh": (INLINE_WORDS, True, False),
            "readmemh -O0": (INLINE_WORDS, False, False),
            "readmemh all public": (INLINE_WORDS, True, True)}
"""Variant name: (largest memory written inline, optimised C++ build, every signal public)."""


def run_build_bench(model_path: str | Path, simulator: str = "verilator",
                    fold: str | None = None, images: int = 20, dataset: str = "mnist",
                    data_dir: str | Path | None = None,
                    out: str | Path | None = None) -> dict[str, Any]:
    """Build every variant, check each on ``images`` test images, write the JSON to ``out``.

    Returns
    -------
    dict
        ``{"model", "model_sha256", "simulator", "fold", "images", "variants": {name:
        {"verilog_bytes", "memory_files", "build_seconds", "sim_seconds", "cycles",
        "cycles_per_second", "mismatches", "lost"}}, "speedup", "speedup_O0",
        "speedup_ports_build", "speedup_ports_sim"}`` where ``speedup`` = inline build seconds
        / readmemh build seconds, ``speedup_O0`` = optimised / ``-O0`` build seconds (both
        readmemh), ``speedup_ports_build`` = all-public / ports-only build seconds and
        ``speedup_ports_sim`` = ports-only / all-public simulated cycles per second.
    """
    model = load_model(model_path)
    folding = parse_fold(fold, model)
    split = datasets.load(dataset, "test", data_dir)
    pixels = split.images[:images]
    classes, scores = reference.infer(model, pixels)
    expected = np.concatenate([classes[:, None], scores], axis=1)
    variants: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bnnhw-build-bench-") as tmp:
        for name, (inline_words, optimize, all_public) in VARIANTS.items():
            rtl = Path(tmp) / name / "rtl"
            info = generate(model, rtl, folding, inline_words=inline_words)
            start = time.perf_counter()
            result = simulate(rtl / f"{TOPLEVEL}.v", info, pixels, expected, simulator,
                              Path(tmp) / name.replace(" ", "_"), stall=0.0,
                              optimize=optimize, all_public=all_public)
            variants[name] = {
                "verilog_bytes": (rtl / f"{TOPLEVEL}.v").stat().st_size,
                "memory_files": len(info["memory_files"]),
                "build_seconds": result["build_seconds"],
                "sim_seconds": result["sim_seconds"],
                "cycles": result["cycles"],
                "cycles_per_second": result["cycles"] / result["sim_seconds"],
                "wall_seconds": time.perf_counter() - start,
                "mismatches": result["mismatches"], "lost": result["lost"]}
    path = Path(out) if out is not None else (
        Path("docs") / f"sim_build_{Path(model_path).stem}_{simulator}.json")
    report = {"model": str(model_path), "model_sha256": model.sha256(),
              "simulator": simulator, "fold": folding.spec, "images": int(len(pixels)),
              "variants": variants,
              "speedup": variants["inline"]["build_seconds"]
              / variants["readmemh"]["build_seconds"],
              "speedup_O0": variants["readmemh"]["build_seconds"]
              / variants["readmemh -O0"]["build_seconds"],
              "speedup_ports_build": variants["readmemh all public"]["build_seconds"]
              / variants["readmemh"]["build_seconds"],
              "speedup_ports_sim": variants["readmemh"]["cycles_per_second"]
              / variants["readmemh all public"]["cycles_per_second"], "output": str(path)}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(report, indent=1) + "\n").encode())
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of :func:`run_build_bench`; prints one row per variant."""
    parser = argparse.ArgumentParser(prog="python -m bnnhw.sim.build_bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--simulator", choices=SIMULATORS, default="verilator")
    parser.add_argument("--fold", help="fold spec (default: balanced)")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.images < 1:
        parser.error(f"--images must be >= 1 (got {args.images})")
    report = run_build_bench(args.model, args.simulator, args.fold, args.images, args.dataset,
                             args.data_dir, args.out)
    print(f"{report['model']} {report['simulator']} fold {report['fold']}")
    print(f"{'variant':<20} {'verilog bytes':>14} {'files':>6} {'build s':>9} "
          f"{'cycles/s':>9} {'mismatches':>11}")
    for name, row in report["variants"].items():
        print(f"{name:<20} {row['verilog_bytes']:>14,} {row['memory_files']:>6} "
              f"{row['build_seconds']:>9.1f} {row['cycles_per_second']:>9.0f} "
              f"{row['mismatches'] + row['lost']:>11}")
    print(f"build speed-up inline / readmemh: {report['speedup']:.2f}x; optimised / -O0: "
          f"{report['speedup_O0']:.2f}x; all public / ports only: "
          f"{report['speedup_ports_build']:.2f}x build, {report['speedup_ports_sim']:.2f}x "
          f"simulation -> {report['output']}")
    bad = any(r["mismatches"] or r["lost"] for r in report["variants"].values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
