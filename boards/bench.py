"""Board benchmark: build a model for a board and record the report with the model's accuracy.

``python -m bnnhw.boards.bench --model docs/models/sfc_mnist.npz --board icebreaker`` runs
:func:`bnnhw.boards.build.build` (default folding unless ``--fold``), evaluates the model file
with the integer reference on the whole test set (the accelerator is bit-exact with it), prints
the text report and writes ``docs/boards/<board>_<model stem>.json`` and ``.txt``.

``--clock-mhz F`` clocks the design from the board's PLL at up to ``F`` MHz (``auto``: the
clock the estimator expects to meet timing). ``--fold auto
[--target-fps N|max]`` lets :func:`bnnhw.estimate.auto_folding` choose the
folding for the board (the report keeps the request as ``fold_request``); use ``--out-dir
docs/boards/auto`` to keep such builds apart from the hand-folded ones.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bnnhw.devices import NEXTPNR_ROUTERS
from bnnhw.estimate import resolve_fold
from bnnhw.evaluate import evaluate
from bnnhw.model import load_model, write_atomic

from .build import BuildError, build, format_report
from .pll import clock_arg


def run_benchmark(model_path: Path, board: str, fold: str | None = None,
                  dataset: str = "mnist", data_dir: Path | None = None,
                  out_dir: Path = Path("docs/boards"),
                  target_fps: str | None = None,
                  clock_mhz: float | str | None = None,
                  router: str | None = None) -> dict[str, Any]:
    """Build ``model_path`` for ``board``, add the test accuracy, write JSON and text.

    ``clock_mhz`` (MHz or ``"auto"``) runs the design from a PLL and ``router`` picks
    nextpnr's router (see :func:`bnnhw.boards.build.build`)."""

    model = load_model(model_path)
    request = fold
    if fold is not None:
        fold = resolve_fold(fold, model, board, target_fps).spec
    tmp = Path(tempfile.mkdtemp(prefix="bnnhw-board-"))
    # A failure keeps its logs.
    report = build(model, board, tmp, fold=fold, clock_mhz=clock_mhz, router=router)
    shutil.rmtree(tmp)
    if request is not None and request.strip() == "auto":
        report["fold_request"] = {"fold": "auto", "target_fps": target_fps or "max"}
    accuracy = evaluate(model_path, dataset, None, data_dir)["accuracy"]
    report[f"reference_accuracy_{dataset}_test"] = accuracy
    report["command"] = "python -m bnnhw.boards.bench " + shlex.join(
        ["--model", str(model_path), "--board", board]
        + (["--dataset", dataset] if dataset != "mnist" else [])
        + (["--fold", request] if request else [])
        + (["--target-fps", target_fps] if target_fps else [])
        + (["--clock-mhz", clock_mhz if isinstance(clock_mhz, str) else f"{clock_mhz:g}"]
           if clock_mhz else [])
        + (["--router", router] if router else [])
        + (["--out-dir", str(out_dir)] if out_dir != Path("docs/boards") else []))
    text = format_report(report) + (
        f"accuracy     {100 * accuracy:.2f} % on the {dataset} test set "
        f"(bit-exact reference model)\n")
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{board}_{model_path.stem.split('_')[0]}"
    if dataset != "mnist":
        stem += f"_{dataset}"
    write_atomic(out_dir / f"{stem}.json", (json.dumps(report, indent=2) + "\n").encode())
    write_atomic(out_dir / f"{stem}.txt", text.encode())
    print(text, end="")
    return report


def parser() -> argparse.ArgumentParser:
    """The command line's arguments (also used to read back the ``command`` of a report)."""
    parser = argparse.ArgumentParser(prog="python -m bnnhw.boards.bench", description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--board", required=True)
    parser.add_argument("--fold")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--target-fps", help="with --fold auto: frames/s or 'max'")
    parser.add_argument("--out-dir", type=Path, default=Path("docs/boards"))
    parser.add_argument("--clock-mhz", type=clock_arg,
                        help="run from a PLL at up to this clock (MHz), or 'auto'")
    parser.add_argument("--router", choices=NEXTPNR_ROUTERS,
                        help="nextpnr's router (default router1)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    args = parser().parse_args(argv)
    try:
        run_benchmark(args.model, args.board, args.fold, args.dataset, args.data_dir,
                      args.out_dir, args.target_fps, args.clock_mhz, args.router)
    except BuildError as exc:
        print(f"bnnhw: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
