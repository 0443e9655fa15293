"""Demo benchmark: the README's first command, timed from a fresh virtual environment.

``python -m bnnhw.tools.demo_bench [--epochs N] [--board B|none]`` creates a new venv in a temporary
folder, installs this checkout into it (``pip install -e '.[dev]'``, with whatever pip cache
the machine has), runs ``bnnhw demo --json`` there, and writes ``docs/demo_bench.json``:
``install_seconds``, ``demo_seconds`` (wall time of the demo process), ``total_seconds``, the
demo's own per-stage figures and its summary table. ``bnnhw bench`` shows it in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..model import write_atomic

ROOT = Path(__file__).resolve().parent.parent


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def demo_bench(epochs: int = 5, board: str = "icebreaker",
               out: Path = Path("docs/demo_bench.json")) -> dict[str, Any]:
    """Time install + demo in a fresh venv and write ``out`` (see the module docs)."""
    with tempfile.TemporaryDirectory(prefix="bnnhw-demo-bench-") as tmp:
        venv = Path(tmp) / "venv"
        start = time.perf_counter()
        _run([sys.executable, "-m", "venv", str(venv)])
        _run([str(venv / "bin" / "pip"), "install", "-q", "-e", f"{ROOT}[dev]"])
        installed = time.perf_counter()
        proc = _run([str(venv / "bin" / "bnnhw"), "demo", "--out", str(Path(tmp) / "demo"),
                     "--epochs", str(epochs), "--board", board, "--json"])
        done = time.perf_counter()
    demo = json.loads(proc.stdout)
    record = {
        "command": "python -m bnnhw.tools.demo_bench " + shlex.join(
            ["--epochs", str(epochs), "--board", board]),
        "install_seconds": installed - start, "demo_seconds": done - installed,
        "total_seconds": done - start, "epochs": epochs, "board": board,
        "accuracy": demo["eval"]["accuracy"], "sim_mismatches": demo["sim"]["mismatches"],
        "train_seconds": demo["train"]["seconds"],
        "table": demo["table"],
    }
    write_atomic(out, (json.dumps(record, indent=2) + "\n").encode())
    return record


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bnnhw.tools.demo_bench", description=__doc__)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--board", default="icebreaker")
    parser.add_argument("--out", type=Path, default=Path("docs/demo_bench.json"))
    args = parser.parse_args(argv)
    record = demo_bench(args.epochs, args.board, args.out)
    print(record["table"])
    print(f"install {record['install_seconds']:.1f} s, demo {record['demo_seconds']:.1f} s, "
          f"total {record['total_seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
