"""Benchmark: a whole test set through the simulated accelerator, figures printed and saved.

Usage::

    python -m bnnhw.sim.bench --model docs/models/sfc_mnist.npz --simulator verilator \\
        --limit 10000

It runs :func:`bnnhw.sim.run_sim` (default: balanced folding, no stalls, so the frame interval
is the design's own) and writes ``docs/sim_<model>_<simulator>.json`` (``<model>`` is the model
file's stem) with every figure of the run, among them ``images``, ``mismatches``, ``lost``,
``efficiency`` = ideal cycles ``latency + (N - 1) * cycles_per_frame`` over the measured cycles
from the first input word to the last output word, ``images_per_minute`` (simulated images per
minute of simulation wall time) and ``seconds`` (the whole run, build included).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bnnhw.model import write_atomic

from .runner import SIMULATORS, run_sim

SUMMARY = ("images", "mismatches", "lost", "duplicated", "accuracy", "reference_accuracy",
           "cycles_per_frame_declared", "cycles_per_frame_measured", "latency_declared",
           "latency_measured", "efficiency", "images_per_minute", "build_seconds",
           "sim_seconds", "seconds")


def default_output(model: str | Path, simulator: str) -> Path:
    """``docs/sim_<model stem>_<simulator>.json``."""
    return Path("docs") / f"sim_{Path(model).stem}_{simulator}.json"


def run_benchmark(model: str | Path, simulator: str = "verilator", limit: int = 10000,
                  dataset: str = "mnist", fold: str | None = None, stall: float = 0.0,
                  seed: int = 0, data_dir: str | Path | None = None,
                  build_dir: str | Path | None = None,
                  out: str | Path | None = None) -> dict[str, Any]:
    """Run :func:`bnnhw.sim.run_sim` and write its result as JSON (atomically) to ``out``.

    Returns the result with ``model`` and ``output`` (the JSON path) added.
    """
    result = run_sim(model, dataset=dataset, limit=limit, simulator=simulator, fold=fold,
                     data_dir=data_dir, build_dir=build_dir, seed=seed, stall=stall)
    path = Path(out) if out is not None else default_output(model, simulator)
    result = {"model": str(model), **result, "output": str(path)}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(result, indent=1) + "\n").encode())
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of :func:`run_benchmark`; prints a summary table."""
    parser = argparse.ArgumentParser(prog="python -m bnnhw.sim.bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--simulator", choices=SIMULATORS, default="verilator")
    parser.add_argument("--limit", type=int, default=10000)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--fold", help="fold spec (default: balanced)")
    parser.add_argument("--stall", type=float, default=0.0,
                        help="gap/stall probability after the clean phase (default 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--build-dir", type=Path, help="keep the build here (reused)")
    parser.add_argument("--out", type=Path, help="JSON output (default docs/sim_<model>_<sim>)")
    args = parser.parse_args(argv)
    result = run_benchmark(args.model, args.simulator, args.limit, args.dataset, args.fold,
                           args.stall, args.seed, args.data_dir, args.build_dir, args.out)
    for key in ("model", "simulator", "fold", *SUMMARY, "output"):
        value = result.get(key)
        print(f"{key:<26} {value:.6g}" if isinstance(value, float) else f"{key:<26} {value}")
    ok = result["mismatches"] == 0 and result["lost"] == 0 and result["duplicated"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
