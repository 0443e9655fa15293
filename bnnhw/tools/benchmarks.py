"""The benchmark report: ``BENCHMARKS.md``, ``docs/benchmarks.json`` and plots, from JSON only.

Every figure comes from a JSON file that a repository command wrote under ``docs/``:

=========================================== ===============================================
file                                        command
=========================================== ===============================================
``docs/train_<arch>_<dataset>.json``        ``python -m bnnhw.train.bench --arch ...``
``docs/training_efficiency.json``           ``python -m bnnhw.train.bench``
``docs/sim_<model>_<simulator>.json``       ``python -m bnnhw.sim.bench``
``docs/sim_build_<model>_<simulator>.json`` ``python -m bnnhw.sim.build_bench``
``docs/boards/<board>_<model>.json``        ``python -m bnnhw.boards.bench``
``docs/boards/auto/<board>_<model>.json``   ``python -m bnnhw.boards.bench --fold auto``
``docs/boards/stages/stage-fmax_*.json``    ``python -m bnnhw.boards.stage_fmax``
``docs/estimator-calibration.json``         ``python -m bnnhw.tools.estimate_calibrate``
``docs/eval_<model>.json``                  ``bnnhw bench --run`` (reference on the test set)
``docs/anchors.json``                       ``bnnhw bench --anchors REFERENCE.md``
``docs/demo_bench.json``                    ``python -m bnnhw.tools.demo_bench`` (fresh venv)
=========================================== ===============================================

Board rows: ``cycles per frame`` is the accelerator's declared figure (equal to the one
measured in simulation); the ideal is the slowest layer's ``V * NF * SF``
(:meth:`bnnhw.folding.Folding.layer_cycles` of the report's folding) and the efficiency is
``ideal / cycles per frame``. FPS is at the clock the design was built for and at fmax.
Anchor rows are published figures of other systems, copied from the reference table, and are
marked as such.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from ..evaluate import evaluate
from ..folding import parse_fold
from ..model import load_model, write_atomic

__all__ = ["collect", "parse_anchors", "run_cheap", "write_benchmarks"]


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


def parse_anchors(markdown: str, source: str) -> dict[str, Any]:
    """The rows of the "Published numbers" table of a reference Markdown file.

    Raises
    ------
    ValueError
        If the text has no table with the columns system, data, accuracy, speed, resources.
    """
    rows = []
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if [c.lower() for c in cells] == ["system", "data", "accuracy", "speed", "resources"]:
            for row in lines[i + 2:]:
                if not row.strip().startswith("|"):
                    break
                system, data, accuracy, speed, resources = (
                    c.strip() for c in row.strip().strip("|").split("|"))
                rows.append({"system": system, "data": data, "accuracy": accuracy,
                             "speed": speed, "resources": resources})
            break
    if not rows:
        raise ValueError(f"{source}: no table with columns system | data | accuracy | speed | "
                         f"resources")
    return {"source": source, "published": True, "rows": rows,
            "command": f"bnnhw bench --anchors {source}"}


def _model_files(docs: Path) -> dict[str, Path]:
    return {load_model(p).sha256(): p for p in sorted((docs / "models").glob("*.npz"))}


def _board_rows(docs: Path, training: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    models = _model_files(docs)
    rows = []
    paths = [(p, "hand") for p in sorted((docs / "boards").glob("*.json"))] + [
        (p, "auto") for p in sorted((docs / "boards" / "auto").glob("*.json"))]
    covered = {(_read(p)["model_sha256"], _read(p)["board"]) for p, _ in paths}
    best: dict[tuple[str, str], tuple[float, Path]] = {}
    for path in sorted((docs / "calibration").glob("*.json")):
        r = _read(path)
        key = (r["model_sha256"], r["board"])
        fps = r.get("fps_at_clock", r.get("fps_at_board_clock"))
        if key not in covered and (key not in best or fps > best[key][0]):
            best[key] = (fps, path)
    paths += [(path, "calibration") for _, path in sorted(best.values(), key=lambda b: b[1])]
    for path, origin in paths:
        r = _read(path)
        model_file = models.get(r["model_sha256"])
        ideal = None
        if model_file is not None:
            ideal = max(parse_fold(r["folding"], load_model(model_file)).layer_cycles(
                load_model(model_file)))
        util = r["utilisation"]
        clk = r.get("clk_mhz")
        acc = next((v for k, v in r.items() if k.startswith("reference_accuracy_")), None)
        train = training.get(r["model_sha256"], {})
        rows.append({
            "source": str(path), "model": model_file.stem if model_file else r["topology"],
            "topology": r["topology"], "board": r["board"], "device": r["device"],
            "folding": r["folding"], "origin": origin,
            "accuracy_pct": 100 * acc if acc is not None else train.get("reference_accuracy"),
            "cycles_per_frame": r["cycles_per_frame"], "ideal_cycles": ideal,
            "efficiency": None if ideal is None else ideal / r["cycles_per_frame"],
            "clk_mhz": clk, "fmax_mhz": r["fmax_mhz"],
            "fps_at_clock": r.get("fps_at_clock", r.get("fps_at_board_clock")),
            "fps_at_fmax": r["fps_at_fmax"],
            "lut_pct": 100 * util["luts"]["used"] / util["luts"]["total"],
            "luts": util["luts"]["used"],
            "bram_pct": 100 * util["bram"]["used"] / util["bram"]["total"],
            "bram": util["bram"]["used"],
            "spram": (util.get("spram") or {}).get("used"),
            "build_seconds": r["build_seconds"], "command": r.get("command"),
        })
    return rows


def collect(docs: Path = Path("docs")) -> dict[str, Any]:
    """Gather every benchmark JSON under ``docs`` into one dict (see the module docs)."""
    training, train_rows = {}, []
    for path in sorted(docs.glob("train_*.json")):
        t = _read(path)
        recipe = t.get("recipe") or {}
        row = {"source": str(path), "arch": t["arch"], "dataset": t["dataset"],
               "mode": t.get("mode"), "epochs": t["epochs"], "accuracy_pct": t["accuracy"],
               "input": t.get("input"), "augment": recipe.get("augment"),
               "batch_size": recipe.get("batch_size"), "lr": recipe.get("lr"),
               "lr_end": recipe.get("lr_end"), "seed": t.get("seed"),
               "init_epochs": (recipe.get("init") or {}).get("epochs"),
               "reference_accuracy_pct": t.get("reference_accuracy"),
               "seconds_per_epoch": t["seconds_per_epoch"], "weight_bits": t.get("weight_bits"),
               "command": t.get("command")}
        train_rows.append(row)
        if t.get("model_sha256"):
            training[t["model_sha256"]] = t
    sims, sim_builds = [], []
    for path in sorted(docs.glob("sim_build_*.json")):
        b = _read(path)
        sim_builds.append({"source": str(path), "model": b["model"],
                           "simulator": b["simulator"], "fold": b["fold"],
                           "variants": b["variants"], "speedup": b["speedup"],
                           "speedup_O0": b["speedup_O0"],
                           "speedup_ports_build": b["speedup_ports_build"],
                           "speedup_ports_sim": b["speedup_ports_sim"]})
    for path in sorted(p for p in docs.glob("sim_*.json")
                       if not p.name.startswith("sim_build_")):
        s = _read(path)
        sims.append({"source": str(path), "model": s["model"], "simulator": s["simulator"],
                     "images": s["images"], "mismatches": s["mismatches"],
                     "cycles_per_frame_measured": s["cycles_per_frame_measured"],
                     "cycles_per_frame_declared": s["cycles_per_frame_declared"],
                     "images_per_minute": s["images_per_minute"],
                     "build_seconds": s["build_seconds"], "sim_seconds": s["sim_seconds"],
                     "accuracy_pct": 100 * s["accuracy"]})
    evals = [dict(_read(p), source=str(p)) for p in sorted(docs.glob("eval_*.json"))]
    for e in evals:
        e.pop("confusion", None)
    calibration = None
    if (docs / "estimator-calibration.json").is_file():
        c = _read(docs / "estimator-calibration.json")
        calibration = {"source": str(docs / "estimator-calibration.json"),
                       "summary": c["summary"], "rows": c["rows"]}
    anchors = _read(docs / "anchors.json") if (docs / "anchors.json").is_file() else None
    efficiency_path = docs / "training_efficiency.json"
    efficiency = (dict(_read(efficiency_path), source=str(efficiency_path))
                  if efficiency_path.is_file() else None)
    stage_fmax = [dict(_read(p), source=str(p))
                  for p in sorted((docs / "boards" / "stages").glob("stage-fmax_*.json"))]
    demo_path = docs / "demo_bench.json"
    demo = dict(_read(demo_path), source=str(demo_path)) if demo_path.is_file() else None
    return {"boards": _board_rows(docs, training), "training": train_rows,
            "simulation": sims, "simulator_builds": sim_builds, "evaluation": evals,
            "calibration": calibration, "stage_fmax": stage_fmax,
            "anchors": anchors, "demo": demo, "training_efficiency": efficiency,
            "command": "bnnhw bench"}


def _fmt(value: Any, spec: str = "", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A Markdown table: the header, its rule, one line per row (an empty cell stays ``| |``),
    and a blank line."""
    def line(cells: list[Any]) -> str:
        return "|" + "|".join(f" {c} " if str(c) else " " for c in cells) + "|"

    return [line(header), "|" + "---|" * len(header)] + [line(r) for r in rows] + [""]


def _boards_section(rows: list[dict[str, Any]]) -> list[str]:
    table = []
    for r in rows:
        fold = f"`{r['folding']}`" + ("" if r["origin"] == "hand" else f" ({r['origin']})")
        table.append([
            r["model"], r["board"], fold, f"{_fmt(r['accuracy_pct'], '.2f')} %",
            r["cycles_per_frame"], _fmt(r["ideal_cycles"]),
            f"{_fmt(r['efficiency'] and 100 * r['efficiency'], '.0f')} %",
            _fmt(r["clk_mhz"], "g"), _fmt(r["fmax_mhz"], ".1f"),
            _fmt(r["fps_at_clock"], ",.0f"), _fmt(r["fps_at_fmax"], ",.0f"),
            f"{r['luts']} ({r['lut_pct']:.1f} %)",
            f"{r['bram']} ({r['bram_pct']:.1f} %)"
            + (f" + {r['spram']} SPRAM" if r["spram"] else ""),
            f"{r['build_seconds']:.0f}"])
    return (["## Accelerators on boards (real yosys + nextpnr builds)", "",
             "Efficiency = slowest layer's NF*SF / cycles per frame. FPS at the built clock and "
             "at nextpnr's fmax. Folding by hand or default (`docs/boards/`), chosen by `--fold "
             "auto` (auto, `docs/boards/auto/`), or, for a model and board with neither, the "
             "fastest estimator calibration build (calibration, `docs/calibration/`).", ""]
            + _table(["model", "board", "folding", "accuracy", "cycles/frame", "ideal",
                      "efficiency", "clock MHz", "fmax MHz", "FPS at clock", "FPS at fmax",
                      "LUT", "block RAM", "build s"], table)[:-1]
            + ["", "![FPS against LUTs](docs/bench_boards.png)", ""])


def _anchors_section(anchors: dict[str, Any]) -> list[str]:
    rows = [[f"**published**: {a['system']}", a["data"], a["accuracy"], a["speed"],
             a["resources"]] for a in anchors["rows"]]
    return (["## Published figures of other systems (**published**, not ours)", "",
             f"Source: {anchors['source']}.", ""]
            + _table(["system", "data", "accuracy", "speed", "resources"], rows))


def _training_section(runs: list[dict[str, Any]]) -> list[str]:
    rows = []
    for t in runs:
        recipe = "-"
        if t.get("batch_size"):
            recipe = (f"{t.get('input') or 'bits'}, {t.get('augment') or 'none'}, batch "
                      f"{t['batch_size']}, lr {t['lr']:g}→{t['lr_end']:g}")
            if t.get("init_epochs"):
                recipe += f", fine-tuned from a {t['init_epochs']}-epoch checkpoint"
        rows.append([t["arch"], t["dataset"], t["mode"], t["epochs"], recipe,
                     _fmt(t.get("seed")), f"{t['accuracy_pct']:.2f} %",
                     f"{_fmt(t['reference_accuracy_pct'], '.2f')} %",
                     f"{t['seconds_per_epoch']:.1f}", _fmt(t["weight_bits"])])
    return (["## Training (numpy trainer, this machine)", "",
             "Recipe: input coding, augmentation, batch size and the learning rate's geometric "
             "sweep; the full command is in each JSON.", ""]
            + _table(["arch", "dataset", "mode", "epochs", "recipe", "seed", "float accuracy",
                      "reference accuracy", "s/epoch", "weight bits"], rows)[:-1]
            + ["", "![Seconds per epoch](docs/bench_training.png)", ""])


def _efficiency_section(efficiency: dict[str, Any]) -> list[str]:
    rows = [[r["arch"], r["threads"], r["batch_size"], f"{r['step_ms']:.1f}",
             f"{r['matmul_gflop_per_step']:.3f}", f"{r['train_gflops']:.1f}",
             f"{r['gemm_gflops']:.1f}", f"{r['ratio']:.2f}"] for r in efficiency["rows"]]
    return (["## Training efficiency (matrix-product FLOP/s of a training step over the same "
             "run's fp32 GEMM FLOP/s)", "",
             f"`{efficiency['command']}`; GEMM: {efficiency['gemm_size']}x"
             f"{efficiency['gemm_size']} float32, same thread count; median of "
             f"{efficiency['steps']} steps.", ""]
            + _table(["arch", "threads", "batch", "step ms", "matmul GFLOP/step",
                      "train GFLOP/s", "GEMM GFLOP/s", "ratio"], rows))


def _simulation_section(runs: list[dict[str, Any]]) -> list[str]:
    rows = [[s["model"], s["simulator"], s["images"], s["mismatches"],
             f"{s['cycles_per_frame_measured']:g} / {s['cycles_per_frame_declared']}",
             f"{s['images_per_minute']:.0f}", f"{s['build_seconds']:.0f}",
             f"{s['sim_seconds']:.0f}", f"{s['accuracy_pct']:.2f} %"] for s in runs]
    return (["## Simulation (cocotb, whole test set)", ""]
            + _table(["model", "simulator", "images", "mismatches",
                      "cycles/frame measured / declared", "images/min", "build s", "sim s",
                      "accuracy"], rows))


def _simulator_builds_section(builds: list[dict[str, Any]]) -> list[str]:
    rows = []
    for b in builds:
        rows += [[b["model"], b["simulator"], f"`{b['fold']}`", name, f"{v['verilog_bytes']:,}",
                  v["memory_files"], f"{v['build_seconds']:.0f}",
                  f"{v['cycles_per_second']:,.0f}", v["mismatches"]]
                 for name, v in b["variants"].items()]
        rows.append(["", "", "", "inline / readmemh", "", "", f"{b['speedup']:.2f}x", "", ""])
        rows.append(["", "", "", "optimised / -O0", "", "", f"{b['speedup_O0']:.2f}x", "", ""])
        rows.append(["", "", "", "all public / ports only", "", "",
                     f"{b['speedup_ports_build']:.2f}x", f"{b['speedup_ports_sim']:.2f}x", ""])
    return (["## Simulator build and run time (memories inline or in `$readmemh` files, C++ "
             "optimised or -O0, every signal or only the ports public; one run)", ""]
            + _table(["model", "simulator", "folding", "variant", "Verilog bytes",
                      "memory files", "build s", "simulated cycles/s", "mismatches"], rows))


def _evaluation_section(runs: list[dict[str, Any]]) -> list[str]:
    rows = [[e["model"], e.get("dataset", "mnist"), e["topology"], e["images"],
             f"{100 * e['accuracy']:.2f} %", f"{e['ms_per_image']:.4f}"] for e in runs]
    return (["## Integer reference on the test set", ""]
            + _table(["model", "dataset", "topology", "images", "accuracy", "ms/image"], rows))


def _calibration_section(calibration: dict[str, Any]) -> list[str]:
    rows = [[family, s["builds"], f"{s['lut_max_abs_error_pct']:.1f} %",
             f"{s['lut_mean_abs_error_pct']:.1f} %",
             f"{_fmt(s['lut_loo_max_abs_error_pct'], '.1f')} %",
             f"{_fmt(s.get('lut_held_out_max_abs_error_pct'), '.1f')} %",
             f"{s['bram_max_abs_error_blocks']} blocks", f"{s['fmax_max_abs_error_pct']:.1f} %",
             f"{s['fmax_loo_max_abs_error_pct']:.1f} %",
             f"{_fmt(s.get('fmax_held_out_max_abs_error_pct'), '.1f')} %",
             f"{s['clock_margin_pct']:.1f} %"]
            for family, s in calibration["summary"].items()]
    return (["## Estimator calibration", "",
             "Details: [docs/estimator-calibration.md](docs/estimator-calibration.md).", ""]
            + _table(["family", "builds", "LUT max abs error", "LUT mean abs error",
                      "LUT leave-one-out max", "LUT held-out max (auto builds)",
                      "block RAM max error", "fmax max abs error", "fmax leave-one-out max",
                      "fmax held-out max", "clock margin"], rows)[:-1]
            + ["", "![Estimated against measured LUTs](docs/bench_calibration.png)", ""])


def _stage_fmax_section(runs: list[dict[str, Any]]) -> list[str]:
    out = ["## Stage fmax (each stage placed and routed alone, out of context)", ""]
    for r in runs:
        rows = [[s["stage"], s["kind"], _fmt(s["fmax_mhz"], ".2f"),
                 " / ".join(_fmt(run["fmax_mhz"], ".2f") for run in s["runs"]),
                 _fmt(s["runs"][0]["luts"]),
                 _fmt((s["runs"][0]["critical_path"] or {}).get("routing_ns"), ".2f")]
                for s in r["stages"]]
        out += [f"`{r['command']}` ({r['board']}, `{r['folding']}`, aimed at "
                f"{r['freq_mhz']:g} MHz):", ""]
        out += _table(["stage", "kind", "fmax MHz (lowest)", "per seed", "LUTs",
                       "routing ns on the path"], rows)
    return out


def _demo_section(demo: dict[str, Any]) -> list[str]:
    return ["## Demo from a fresh virtual environment", "",
            f"`{demo['command']}`: install (venv + `pip install -e '.[dev]'`) "
            f"{demo['install_seconds']:.0f} s, `bnnhw demo` {demo['demo_seconds']:.0f} s, "
            f"total {demo['total_seconds']:.0f} s.", "", "```", demo["table"], "```", ""]


def format_markdown(data: dict[str, Any]) -> str:
    """``BENCHMARKS.md`` from the collected data: one section per kind of figure."""
    out = ["# Benchmarks", "",
           "Generated by `bnnhw bench` from the JSON files under `docs/` (each names the command "
           "that wrote it); edit nothing here by hand. Rows marked **published** are figures "
           "of other systems copied from their publications, not measurements of this "
           "project.", ""]
    out += _boards_section(data["boards"])
    if data["anchors"]:
        out += _anchors_section(data["anchors"])
    out += _training_section(data["training"])
    sections = [("training_efficiency", _efficiency_section), ("simulation", _simulation_section),
                ("simulator_builds", _simulator_builds_section),
                ("evaluation", _evaluation_section), ("calibration", _calibration_section),
                ("stage_fmax", _stage_fmax_section), ("demo", _demo_section)]
    for key, section in sections:
        if data.get(key):
            out += section(data[key])
    return "\n".join(out) + "\n"


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def plots(data: dict[str, Any]) -> dict[str, bytes]:
    """PNG bytes of ``bench_boards.png``, ``bench_training.png`` and, with a calibration,
    ``bench_calibration.png``."""
    # matplotlib loads only when a figure is drawn (start-up time).
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    fig, ax = plt.subplots(figsize=(6, 4))
    origins: dict[tuple[str, Any, Any], list[str]] = {}  # equal builds share one label
    for r in data["boards"]:
        if r["fps_at_clock"]:
            ax.scatter(r["luts"], r["fps_at_clock"],
                       marker={"hand": "o", "auto": "s", "calibration": "^"}[r["origin"]])
            origins.setdefault((f"{r['model']} {r['board']}", r["luts"], r["fps_at_clock"]),
                               []).append(r["origin"])
    for (name, luts, fps), kinds in origins.items():
        ax.annotate(f"{name} {' = '.join(kinds)}", (luts, fps), fontsize=7)
    ax.set(xscale="log", yscale="log", xlabel="LUTs", ylabel="frames/s at the built clock",
           title="Board builds")
    out["bench_boards.png"] = _png(fig)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = [f"{t['arch']} {t['dataset']}" for t in data["training"]]
    ax.barh(names, [t["seconds_per_epoch"] for t in data["training"]])
    ax.set(xlabel="seconds per epoch", xscale="log", title="Training time per epoch")
    out["bench_training.png"] = _png(fig)
    plt.close(fig)

    if data["calibration"]:
        fig, ax = plt.subplots(figsize=(5, 5))
        rows = data["calibration"]["rows"]
        for family, marker in (("ice40", "o"), ("ecp5", "s")):
            pts = [(r["luts"]["measured"], r["luts"]["estimated"]) for r in rows
                   if r["family"] == family]
            if pts:
                ax.scatter(*zip(*pts, strict=True), marker=marker, label=family)
        top = max(max(r["luts"]["measured"], r["luts"]["estimated"]) for r in rows)
        ax.plot([0, top], [0, top], "k:", lw=1)
        ax.plot([0, top], [0, 1.15 * top], "r:", lw=0.8, label="±15 %")
        ax.plot([0, top], [0, 0.85 * top], "r:", lw=0.8)
        ax.set(xlabel="measured LUTs", ylabel="estimated LUTs", xscale="log", yscale="log",
               title="Estimator calibration")
        ax.legend()
        out["bench_calibration.png"] = _png(fig)
        plt.close(fig)
    return out


def run_cheap(docs: Path = Path("docs"), data_dir: str | Path | None = None,
              dataset: str = "mnist") -> list[Path]:
    """Rerun the cheap measurements: the integer reference of every model in ``docs/models``
    on the test set it was trained for (``meta.dataset``, else ``dataset``), into
    ``docs/eval_<model>.json`` (written by :func:`bnnhw.evaluate.evaluate`)."""

    written = []
    for path in sorted((docs / "models").glob("*.npz")):
        trained_on = load_model(path).meta.get("dataset", dataset)
        result = evaluate(path, trained_on, None, data_dir)
        result["command"] = f"bnnhw eval {path} --dataset {trained_on}"
        out = docs / f"eval_{path.stem}.json"
        write_atomic(out, (json.dumps(result, indent=2) + "\n").encode())
        written.append(out)
    return written


def write_benchmarks(root: Path = Path("."), anchors: str | Path | None = None,
                     run: bool = False, data_dir: str | Path | None = None) -> dict[str, Any]:
    """Regenerate ``BENCHMARKS.md``, ``docs/benchmarks.json`` and the plots under ``root``.

    Parameters
    ----------
    root : Path
        Repository root (holds ``docs/``).
    anchors : path or None
        A reference Markdown file whose published table becomes ``docs/anchors.json``.
    run : bool
        Rerun the cheap measurements first (:func:`run_cheap`).

    Returns
    -------
    dict
        The collected data plus ``written`` (the files written).
    """
    docs = root / "docs"
    if not docs.is_dir():
        raise FileNotFoundError(f"no docs folder under {root}")
    if anchors is not None:
        text = Path(anchors).read_text()
        parsed = parse_anchors(text, Path(anchors).name)
        write_atomic(docs / "anchors.json", (json.dumps(parsed, indent=2) + "\n").encode())
    if run:
        run_cheap(docs, data_dir)
    data = collect(docs)
    images = plots(data)
    markdown = format_markdown(data)
    written = []
    for name, png in images.items():
        write_atomic(docs / name, png)
        written.append(str(docs / name))
    write_atomic(docs / "benchmarks.json", (json.dumps(data, indent=2) + "\n").encode())
    write_atomic(root / "BENCHMARKS.md", markdown.encode())
    written += [str(docs / "benchmarks.json"), str(root / "BENCHMARKS.md")]
    summary = {"boards": len(data["boards"]), "training": len(data["training"]),
               "simulation": len(data["simulation"]), "anchors":
               0 if not data["anchors"] else len(data["anchors"]["rows"]), "written": written}
    return summary | {"table": markdown}

