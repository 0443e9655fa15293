"""One self-contained HTML page about a model: training, estimate, confusion matrix, board.

:func:`write_report` draws with matplotlib and embeds every PNG as a base64 ``data:`` URI, so
the page needs no other file. Sections:

* training curves (loss, train and test accuracy per epoch) from the model's training JSON
  (``docs/train_*.json`` whose ``model_sha256`` matches, or the file given);
* per-layer cycles per frame and estimated LUTs / RAM blocks (:func:`bnnhw.estimate.estimate`
  on the chosen board and folding);
* the confusion matrix of the integer reference on the test set
  (:func:`bnnhw.evaluate.evaluate`, rows = true label);
* the figures of a board build report, if one is given.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..estimate import estimate, resolve_fold
from ..evaluate import evaluate
from ..model import load_model, write_atomic

__all__ = ["find_training", "write_report"]


def find_training(sha256: str, docs: Path = Path("docs")) -> Path | None:
    """The ``train_*.json`` under ``docs`` whose ``model_sha256`` is ``sha256``, if any."""
    for path in sorted(docs.glob("train_*.json")):
        try:
            if json.loads(path.read_text()).get("model_sha256") == sha256:
                return path
        except json.JSONDecodeError:
            continue
    return None


def _img(fig: Any, alt: str) -> str:
    # matplotlib loads only when a figure is drawn (start-up time).
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


DEFAULT_BOARD = "icebreaker"


def _critical_path_rows(path: dict[str, Any] | None) -> list[list[str]]:
    """Table rows naming the build's critical path (none for reports made without it)."""
    if path is None:
        return []
    return [["critical path", f"{path['total_ns']:.2f} ns = {path['logic_ns']:.2f} logic + "
                              f"{path['routing_ns']:.2f} routing, through "
                              f"{' → '.join(path['stages'])}"],
            ["path from", path["source"]], ["path to", path["sink"]]]


def _read_build(build_json: str | Path | None, model: Any,
                model_path: str | Path) -> dict[str, Any] | None:
    """The board build report at ``build_json`` (None: none); ``ValueError`` when it was
    built from another model."""
    if build_json is None:
        return None
    build = json.loads(Path(build_json).read_text())
    if build.get("model_sha256") != model.sha256():
        raise ValueError(f"build report {build_json} is for model "
                         f"{str(build.get('model_sha256'))[:16]}, not {model.sha256()[:16]} "
                         f"({model_path})")
    return build


def _training_section(plt: Any, train: dict[str, Any], train_path: Path) -> list[str]:
    """Loss and accuracy curves of the training record."""
    hist = train["history"]
    epochs = [h["epoch"] for h in hist]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.plot(epochs, [h["loss"] for h in hist])
    a.set(xlabel="epoch", ylabel="loss", title="Training loss")
    b.plot(epochs, [100 * h["train_accuracy"] for h in hist], label="train")
    b.plot(epochs, [100 * h["test_accuracy"] for h in hist], label="test")
    b.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    b.legend()
    return ["<h2>Training</h2>",
            f"<p>{html.escape(str(train_path))}: {train['epochs']} epochs, "
            f"{train['seconds_per_epoch']:.1f} s/epoch, float test accuracy "
            f"{train['accuracy']:.2f} %.</p>", _img(fig, "training curves")]


def _estimate_section(plt: Any, est: Any) -> list[str]:
    """Cycles and resources per stage from the estimator, as bars and a table."""
    names = [s.name for s in est.stages]
    rows = list(est.stages)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.bar(names, [s.cycles_per_frame for s in rows])
    a.axhline(est.ideal_cycles, color="k", ls=":", lw=1)
    a.set(ylabel="cycles per frame", title=f"Cycles per stage ({est.folding})")
    b.bar(names, [s.luts for s in rows], label="LUT (estimated)")
    b.bar(names, [s.ffs for s in rows], alpha=0.5, label="FF (estimated)")
    b.set(title=f"Resources per stage on {est.board}")
    b.legend()
    for ax in (a, b):
        ax.tick_params(axis="x", rotation=60, labelsize=8)
    return ["<h2>Per-layer estimate</h2>", _img(fig, "per-layer cycles and resources"),
            _table(["stage", "kind", "PExSIMD", "cycles/frame", "LUT", "FF", "block RAM",
                    "SPRAM", "weights in"],
                   [[s.name, s.kind, f"{s.pe}x{s.simd}" if s.pe else "", s.cycles_per_frame,
                     f"{s.luts:.0f}", f"{s.ffs:.0f}", s.bram, s.spram, s.weights_in]
                    for s in est.stages]),
            f"<p>Total {est.totals['luts']:.0f} LUT, {est.totals['bram']} block RAM, "
            f"{est.cycles_per_frame} cycles/frame (efficiency {100 * est.efficiency:.0f} %), "
            f"{est.fps_at_board_clock:.0f} frames/s at the {est.clk_mhz:g} MHz board clock"
            + (f", {est.fps_at_fmax:.0f} at the modelled fmax {est.fmax_mhz:.1f} MHz"
               if est.fmax_mhz is not None else "")
            + " (estimate, no synthesis).</p>"]


def _confusion_section(plt: Any, result: dict[str, Any], dataset: str) -> list[str]:
    """The integer reference's accuracy and confusion matrix on the test set."""
    confusion = np.array(result["confusion"])
    fig, ax = plt.subplots(figsize=(5, 4.5))
    im = ax.imshow(confusion, cmap="Blues")
    for (i, j), v in np.ndenumerate(confusion):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=6,
                color="white" if v > confusion.max() / 2 else "black")
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (integer reference)",
           xticks=range(len(confusion)), yticks=range(len(confusion)))
    fig.colorbar(im)
    return ["<h2>Test set</h2>",
            f"<p>{result['images']} {html.escape(dataset)} test images, accuracy "
            f"{100 * result['accuracy']:.2f} % (bit-exact integer reference).</p>",
            _img(fig, "confusion matrix")]


def _build_section(build: dict[str, Any]) -> list[str]:
    """The board build's figures: clock, timing, throughput, critical path, utilisation."""
    util = build["utilisation"]
    return ["<h2>Board build</h2>",
            _table(["figure", "value"], [
                ["board", f"{build['board']} ({build['device']})"],
                ["folding", build["folding"]],
                ["cycles/frame", build["cycles_per_frame"]],
                ["clock", f"{build['clk_mhz']:g} MHz"
                 + (" (timing met)" if build.get("timing_met") else " (timing NOT met)")],
                ["frames/s at the clock", f"{build['fps_at_clock']:.0f}"],
                ["fmax", f"{build['fmax_mhz']} MHz"],
                ["frames/s at fmax", f"{build['fps_at_fmax']:.0f}"],
                *_critical_path_rows(build.get("critical_path")),
                ["build", f"{build['build_seconds']:.0f} s"],
                *[[k, f"{v['used']} / {v['total']}"] for k, v in util.items() if v]])]


def write_report(model_path: str | Path, out: str | Path = "report.html", *,
                 board: str | None = None, fold: str | None = None,
                 training_json: str | Path | None = None, build_json: str | Path | None = None,
                 dataset: str = "mnist", limit: int | None = None,
                 data_dir: str | Path | None = None, docs: Path = Path("docs"),
                 target_fps: str | None = None) -> dict[str, Any]:
    """Write the HTML report of ``model_path`` to ``out`` (atomically).

    Parameters
    ----------
    model_path : path
    out : path
    board, fold, target_fps
        Board and folding of the estimate (see :func:`bnnhw.estimate.resolve_fold`). By
        default the board and folding of ``build_json`` when given, else the iCEBreaker
        and ``fold="auto"`` (the fastest folding that fits the board).
    training_json : path or None
        Training record; default: found by the model's sha256 under ``docs``.
    build_json : path or None
        A board build report (``report.json`` or ``docs/boards/*.json``).
    dataset, limit, data_dir
        Test set of the confusion matrix (``limit`` images, default all).

    Returns
    -------
    dict
        ``out``, ``accuracy``, ``training_json`` and ``build_json`` used, ``sections``.
    """
    # matplotlib loads only when a figure is drawn (start-up time).
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = load_model(model_path)
    build = _read_build(build_json, model, model_path)
    if build is not None and board in (None, build["board"]):
        board = build["board"]
        if fold is None and target_fps is None:
            fold = build["folding"]
    board = board or DEFAULT_BOARD
    if fold is None:
        fold = "auto"
    train_path = Path(training_json) if training_json else find_training(model.sha256(), docs)
    train = json.loads(train_path.read_text()) if train_path else None
    folding = resolve_fold(fold, model, board, target_fps)
    est = estimate(model, board, folding)
    result = evaluate(model_path, dataset, limit, data_dir)
    sections = []

    parts = [f"<h1>bnnhw report: {html.escape(Path(model_path).name)}</h1>",
             f"<p>Topology {html.escape(model.topology)}, {model.weight_bits} weight bits, "
             f"sha256 {model.sha256()[:16]}.</p>"]
    if train:
        parts += _training_section(plt, train, train_path)
        sections.append("training")
    parts += _estimate_section(plt, est)
    sections.append("estimate")
    parts += _confusion_section(plt, result, dataset)
    sections.append("confusion")
    if build:
        parts += _build_section(build)
        sections.append("board")

    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>bnnhw report</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
            "img{max-width:100%}</style></head><body>" + "\n".join(parts) + "</body></html>\n")
    out = Path(out)
    write_atomic(out, page.encode())
    return {"out": str(out), "accuracy": result["accuracy"],
            "training_json": None if train_path is None else str(train_path),
            "build_json": None if build_json is None else str(build_json),
            "folding": est.folding, "sections": sections}
