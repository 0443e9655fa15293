"""Calibrate the estimator's LUT and flip-flop model on real builds.

``python -m bnnhw.tools.estimate_calibrate [--run] [--rebuild]``

1. With ``--run``, builds every configuration of :data:`CONFIGS` that has no report yet in
   ``docs/calibration/`` (``--rebuild``: all of them), one at a time, with
   :func:`bnnhw.boards.build.build`, and stores each report there as
   ``<board>_<model>_<fold>.json``. The board reports ``docs/boards/*.json`` and
   ``docs/boards/clock/*.json`` (``python -m bnnhw.boards.bench``) are used as further data
   points.
2. Fits, per FPGA family, ``LUT = X c`` and ``FF = X f`` by non-negative least squares, where
   a row of ``X`` holds ``1`` (the fixed board-top term) and the summed stage features of
   :mod:`bnnhw.estimate` for one build (the coefficients of :data:`PINNED` are set, not
   fitted: ``f.reg_bits = 1``); the solution is exact NNLS, found by solving the
   least-squares problem on every subset of the columns and keeping the best one whose
   coefficients are all ``>= 0``.
3. Fits, per family, the period model of :mod:`bnnhw.estimate`
   (``1000 / fmax = t_board + c . FMAX_FEATURES``) by the same NNLS, with a column per board,
   on the estimated features of each build; its ``margin`` is the largest overestimate of
   fmax when each build is predicted by a fit without it (builds alone on their board, or
   the only ones with a nonzero period term, are not left out: that term would be unknown).
   Designs built (board, model hash,
   folding) are listed with their lowest measured fmax and most LUTs as ``measured``.
4. Writes the coefficients to :data:`bnnhw.estimate.COEFFICIENTS_PATH` and the table
   (configuration, estimated vs measured LUT/FF/block RAM/SPRAM, error in %, and the LUT error
   when that build is left out of the fit) to ``docs/estimator-calibration.md`` and ``.json``,
   with the builds of ``docs/boards/auto/`` (foldings chosen with these coefficients) checked
   but not fitted. Builds of earlier gateware (their recorded latency is not the one the
   design has now) are listed apart and take no part.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from ..estimate import (
    COEFFICIENTS_PATH,
    FF_FEATURES,
    FMAX_FEATURES,
    LUT_FEATURES,
    estimate,
    modelled_fmax,
)
from ..model import Model, load_model, write_atomic

__all__ = ["CONFIGS", "calibrate", "fit", "main", "nnls"]

CONFIGS: tuple[tuple[str, str, str], ...] = (
    ("icebreaker", "tfc", "balanced:16"),
    ("icebreaker", "tfc", "balanced:32"),
    ("icebreaker", "tfc", "balanced:64"),
    ("icebreaker", "tfc", "8x8,2x8,2x8,2x2"),
    ("icebreaker", "tfc", "balanced:128"),
    ("icebreaker", "tfc", "8x16,2x16,2x16,2x2"),
    ("icebreaker", "sfc", "1x16,1x16,1x16,1x2"),
    ("icebreaker", "sfc", "1x28,1x32,1x8,1x1"),
    ("orangecrab-25f", "tfc", "balanced:64"),
    ("orangecrab-25f", "tfc", "balanced:256"),
    ("orangecrab-25f", "sfc", "balanced:64"),
    ("orangecrab-25f", "sfc", "balanced:512"),
    ("ulx3s-85f", "tfc", "balanced:256"),
    ("ulx3s-85f", "sfc", "balanced:128"),
    ("ulx3s-85f", "lfc", "balanced:1024"),
    ("ulx3s-85f", "lfc", "16x98,16x128,16x128,2x16@2"),
    ("ulx3s-85f", "tfc", "1x784,1x64,1x64,1x64"),
    ("ulx3s-85f", "sfc", "1x784,1x256,1x256,5x2@4"),
    ("icebreaker", "cnv-micro", "2x9,-,4x18,-,1x8,1x1"),
    ("ulx3s-85f", "cnv-tiny", "8x9,-,8x48,-,1x50,1x1"),
    ("orangecrab-25f", "cnv-tiny", "16x9,-,16x48,-,2x40,1x1"),
    ("icebreaker", "sfc", "1x49,16x1,16x1,1x1@1"),
    ("orangecrab-25f", "cbcnn-small", "32x9,-,8x288,-,8x64,1x4@1"),
)
"""``(board, model, fold)`` built by ``--run``; the model is ``docs/models/<model>_mnist.npz``."""

PINNED = {"ffs": {"reg_bits": 1.0}}
"""Coefficients known exactly rather than fitted: a register bit is one flip-flop."""


def config_name(board: str, model: str, fold: str) -> str:
    """File stem of a calibration build: ``<board>_<model>_<fold>`` with ``:`` and ``,``
    dropped / turned into ``-``."""
    return f"{board}_{model}_{fold.replace(':', '').replace(',', '-')}"


def nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``argmin_{x >= 0} |a x - b|`` by least squares on every subset of columns.

    The NNLS optimum has some set of columns free and the rest at zero; solving the
    unconstrained problem on each subset and keeping the feasible one with the smallest
    residual finds it exactly (2^n subsets; n <= 5 here).
    """
    n = a.shape[1]
    best, best_res = np.zeros(n), float(np.sum(b ** 2))
    for k in range(1, n + 1):
        for cols in combinations(range(n), k):
            x, *_ = np.linalg.lstsq(a[:, cols], b, rcond=None)
            if np.any(x < 0):
                continue
            res = float(np.sum((a[:, cols] @ x - b) ** 2))
            if res < best_res - 1e-9:
                best_res, best = res, np.zeros(n)
                best[list(cols)] = x
    return best


def _models(models_dir: Path) -> dict[str, Path]:
    return {load_model(p).sha256(): p for p in sorted(models_dir.glob("*.npz"))}


FIT_FOLDERS = ("calibration", "boards", "boards/clock")
HELD_OUT_FOLDERS = ("boards/auto",)
"""Build reports fitted on (calibration builds, hand-folded board builds and builds at a
hand-chosen clock), and those only checked (builds of ``--fold auto`` foldings, which depend
on the coefficients)."""


def _points(docs: Path, folders: tuple[str, ...] = FIT_FOLDERS) -> list[dict[str, Any]]:
    """Every build report in ``folders`` under ``docs``, with its model file."""
    models = _models(docs / "models")
    points = []
    for path in [p for folder in folders for p in sorted((docs / folder).glob("*.json"))]:
        report = json.loads(path.read_text())
        model = models.get(report["model_sha256"])
        if model is None:
            raise FileNotFoundError(f"{path}: no model with sha256 {report['model_sha256'][:16]}"
                                    f" in {docs / 'models'}")
        points.append({"report": report, "source": str(path), "model_file": model})
    return points


def _built_on_current_gateware(p: dict[str, Any]) -> bool:
    """Whether a build report's design is the one this gateware elaborates: the latency it
    recorded equals the accelerator's latency now. Each pipelining change of a unit changed
    its declared latency (the MVTU's register after the XNOR: + 1 cycle and about one LUT per
    lane), so builds of earlier gateware show a shorter one and are neither fitted nor checked.
    """
    r = p["report"]
    zero = {f: {"luts": {"fixed": 0.0}, "ffs": {"fixed": 0.0}} for f in ("ice40", "ecp5")}
    est = estimate(p["model"], r["board"], r["folding"], zero,
                   tuple(r.get("spram_layers", ())) or None)
    return est.latency == r["latency"]


def _design(points: list[dict[str, Any]], family: str, names: tuple[str, ...],
            zero: dict[str, Any]) -> tuple[np.ndarray, list[Any]]:
    rows, ests = [], []
    for p in points:
        r = p["report"]
        est = estimate(p["model"], r["board"], r["folding"], zero,
                       tuple(r.get("spram_layers", ())) or None)
        feats = {n: sum(s.features.get(n, 0.0) for s in est.stages) for n in names}
        rows.append([1.0] + [feats[n] for n in names])
        ests.append(est)
    return np.array(rows), ests


def fit(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Coefficients ``{family: {"luts": {...}, "ffs": {...}, "fmax": {...}}, "measured":
    [...]}``."""
    zero = {f: {"luts": {"fixed": 0.0}, "ffs": {"fixed": 0.0}} for f in ("ice40", "ecp5")}
    out: dict[str, Any] = {}
    for family in ("ice40", "ecp5"):
        pts = [p for p in points if p["report"]["family"] == family]
        if not pts:
            raise ValueError(f"no calibration build for family {family}")
        out[family] = {}
        for key, names in (("luts", LUT_FEATURES), ("ffs", FF_FEATURES)):
            pinned = PINNED.get(key, {})
            free = tuple(n for n in names if n not in pinned)
            x, _ = _design(pts, family, names, zero)
            y = np.array([p["report"]["utilisation"][key]["used"] for p in pts], float)
            for n, v in pinned.items():
                y = y - v * x[:, 1 + names.index(n)]
            c = nnls(x[:, [0] + [1 + names.index(n) for n in free]], y)
            out[family][key] = ({"fixed": float(c[0])} | dict(pinned)
                                | {n: float(v) for n, v in zip(free, c[1:], strict=True)})
    for family in ("ice40", "ecp5"):
        timed = [_timing_point(p, out) for p in points
                 if p["report"]["family"] == family and p["report"].get("fmax_mhz")]
        if timed:
            out[family]["fmax"] = _fit_period(timed) | {"margin": _margin(timed)}
    out["measured"] = _measured(points)
    return out


def _timing_point(p: dict[str, Any], coefs: dict[str, Any]) -> dict[str, Any]:
    """A build's board, period model features (from the LUT fit) and measured period."""
    r = p["report"]
    est = estimate(p["model"], r["board"], r["folding"], coefs,
                   tuple(r.get("spram_layers", ())) or None)
    return {"board": r["board"], "family": r["family"], "features": est.fmax_features,
            "period_ns": 1000.0 / float(r["fmax_mhz"])}


def _fit_period(timed: list[dict[str, Any]]) -> dict[str, Any]:
    """NNLS of the period on one column per board and the :data:`FMAX_FEATURES`."""
    boards = sorted({t["board"] for t in timed})
    x = np.array([[float(t["board"] == b) for b in boards]
                  + [t["features"][n] for n in FMAX_FEATURES] for t in timed])
    c = nnls(x, np.array([t["period_ns"] for t in timed]))
    return ({"period_ns": {b: float(v) for b, v in zip(boards, c, strict=False)}}
            | {n: float(v) for n, v in zip(FMAX_FEATURES, c[len(boards):], strict=True)})


def _can_leave_out(t: dict[str, Any], rest: list[dict[str, Any]]) -> bool:
    """Whether a fit of the period model on ``rest`` can predict timing point ``t``: not when
    ``t`` is alone on its board or the only build with a nonzero term of the model (that term
    would be unknown, and the error would measure nothing)."""
    return any(u["board"] == t["board"] for u in rest) and not any(
        t["features"][n] and not any(u["features"][n] for u in rest) for n in FMAX_FEATURES)


def _margin(timed: list[dict[str, Any]]) -> float:
    """Largest leave-one-out overestimate of fmax, ``max(0, max_i f_est / f_meas - 1)``."""
    over = [0.0]
    for i, t in enumerate(timed):
        rest = timed[:i] + timed[i + 1:]
        if not _can_leave_out(t, rest):
            continue
        fmax = modelled_fmax(_fit_period(rest), t["board"], t["features"])
        over.append(fmax * t["period_ns"] / 1000.0 - 1.0)
    return max(over)


def _measured(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each design built: ``{board, model_sha256, folding, fmax_mhz, luts, builds}`` with the
    lowest fmax and the most LUTs of its builds, sorted."""
    designs: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for p in points:
        r = p["report"]
        designs.setdefault((r["board"], r["model_sha256"], r["folding"]), []).append(r)
    return [{"board": b, "model_sha256": m, "folding": f,
             "fmax_mhz": min((float(r["fmax_mhz"]) for r in rs if r.get("fmax_mhz")),
                             default=None),
             "luts": max(int(r["utilisation"]["luts"]["used"]) for r in rs),
             "builds": len(rs)}
            for (b, m, f), rs in sorted(designs.items())]


def _model_only(coefs: dict[str, Any]) -> dict[str, Any]:
    """The coefficients without the measured designs, so that fmax comes from the model."""
    return {k: v for k, v in coefs.items() if k != "measured"}


def _err(est: float, meas: float) -> float:
    return 100.0 * (est - meas) / meas if meas else 0.0


def calibrate(docs: Path = Path("docs"), coefficients_path: Path = COEFFICIENTS_PATH
              ) -> dict[str, Any]:
    """Fit on every report under ``docs``, write the coefficients and the calibration table.

    Returns
    -------
    dict
        ``coefficients``, ``rows`` (one per build) and ``summary`` (max/mean absolute LUT error
        per family, in and out of sample).
    """
    points = _points(docs)
    held = _points(docs, HELD_OUT_FOLDERS)
    for p in points + held:
        p["model"] = load_model(p["model_file"])
    earlier = [p for p in points + held if not _built_on_current_gateware(p)]
    points = [p for p in points if p not in earlier]
    held = [p for p in held if p not in earlier]
    coefs = fit(points)
    timed = {id(p): _timing_point(p, coefs) for p in points if p["report"].get("fmax_mhz")}
    rows = [_row(p, coefs, fit([q for q in points if q is not p]),
                 id(p) in timed and _can_leave_out(timed[id(p)], [
                     t for k, t in timed.items() if k != id(p)
                     and t["family"] == timed[id(p)]["family"]]))
            for p in points]
    held_rows = [_row(p, coefs, None) for p in held]
    earlier_rows = [_row(p, coefs, None) for p in earlier]
    summary = {}
    for family in ("ice40", "ecp5"):
        fam = [r for r in rows if r["family"] == family]
        lut = [abs(r["luts"]["error_pct"]) for r in fam]
        loo = [abs(r["luts"]["loo_error_pct"]) for r in fam if r["luts"]["loo_error_pct"]
               is not None]
        ram = [abs(r["bram"]["estimated"] - r["bram"]["measured"]) for r in fam]
        out = [abs(r["luts"]["error_pct"]) for r in held_rows if r["family"] == family]
        summary[family] = {"builds": len(fam), "lut_max_abs_error_pct": max(lut),
                           "lut_mean_abs_error_pct": float(np.mean(lut)),
                           "lut_loo_max_abs_error_pct": max(loo) if loo else None,
                           "lut_held_out_max_abs_error_pct": max(out) if out else None,
                           "ff_max_abs_error_pct": max(abs(r["ffs"]["error_pct"]) for r in fam),
                           "fmax_max_abs_error_pct": max(abs(r["fmax"]["error_pct"]) for r in fam),
                           "fmax_loo_max_abs_error_pct": max(
                               abs(r["fmax"]["loo_error_pct"]) for r in fam
                               if r["fmax"]["loo_error_pct"] is not None),
                           "fmax_held_out_max_abs_error_pct": max(
                               (abs(r["fmax"]["error_pct"]) for r in held_rows
                                if r["family"] == family), default=None),
                           "clock_margin_pct": 100 * coefs[family]["fmax"]["margin"],
                           "bram_max_abs_error_blocks": max(ram)}
    result = {"command": "python -m bnnhw.tools.estimate_calibrate", "coefficients": coefs,
              "rows": rows, "held_out": held_rows, "earlier_gateware": earlier_rows,
              "summary": summary}
    write_atomic(coefficients_path, (json.dumps(coefs, indent=2) + "\n").encode())
    write_atomic(docs / "estimator-calibration.json",
                 (json.dumps(result, indent=2) + "\n").encode())
    write_atomic(docs / "estimator-calibration.md", format_calibration(result).encode())
    return result


def _row(p: dict[str, Any], coefs: dict[str, Any], loo_coefs: dict[str, Any] | None,
         fmax_left_out: bool = False) -> dict[str, Any]:
    """Estimated vs measured figures of one build (``loo_coefs``: fitted without it; its
    fmax only where ``fmax_left_out``, see :func:`_can_leave_out`)."""
    r = p["report"]
    spram = tuple(r.get("spram_layers", ())) or None
    est = estimate(p["model"], r["board"], r["folding"], _model_only(coefs), spram)
    loo = loo_fmax = None
    if loo_coefs is not None:
        loo_est = estimate(p["model"], r["board"], r["folding"], _model_only(loo_coefs), spram)
        loo = loo_est.totals["luts"]
        loo_fmax = loo_est.fmax_mhz if fmax_left_out else None
    util = r["utilisation"]
    row = {"source": p["source"], "board": r["board"], "family": r["family"],
           "topology": r["topology"], "model": str(p["model_file"]),
           "folding": r["folding"], "cycles_per_frame": r["cycles_per_frame"],
           "fmax_mhz": r["fmax_mhz"], "build_seconds": r["build_seconds"]}
    for key in ("luts", "ffs", "bram", "spram"):
        meas = (util.get(key) or {}).get("used", 0)
        row[key] = {"estimated": est.totals[key], "measured": meas,
                    "error_pct": _err(est.totals[key], meas)}
    row["luts"]["loo_estimated"] = loo
    row["luts"]["loo_error_pct"] = None if loo is None else _err(loo, row["luts"]["measured"])
    row["fmax"] = {"estimated": est.fmax_mhz, "measured": r["fmax_mhz"],
                   "error_pct": _err(est.fmax_mhz, r["fmax_mhz"]),
                   "loo_estimated": loo_fmax,
                   "loo_error_pct": None if loo_fmax is None else _err(loo_fmax, r["fmax_mhz"])}
    return row


def _table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| board | model | folding | LUT est / meas | LUT err | LUT LOO | FF est / meas "
             "| FF err | BRAM est / meas | SPRAM est / meas | fmax MHz est / meas | fmax err "
             "| fmax LOO |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lu, ff, br, sp, fm = r["luts"], r["ffs"], r["bram"], r["spram"], r["fmax"]
        loo = "-" if lu["loo_error_pct"] is None else f"{lu['loo_error_pct']:+.1f} %"
        fmax_loo = "-" if fm["loo_error_pct"] is None else f"{fm['loo_error_pct']:+.1f} %"
        lines.append(
            f"| {r['board']} | {r['topology']} | `{r['folding']}` | {lu['estimated']:.0f} / "
            f"{lu['measured']} | {lu['error_pct']:+.1f} % | {loo} | {ff['estimated']:.0f} / "
            f"{ff['measured']} | {ff['error_pct']:+.1f} % | {br['estimated']} / "
            f"{br['measured']} | {sp['estimated']} / {sp['measured']} | "
            f"{fm['estimated']:.1f} / {fm['measured']} | {fm['error_pct']:+.1f} % | "
            f"{fmax_loo} |")
    return lines


def format_calibration(result: dict[str, Any]) -> str:
    """The calibration table as Markdown."""
    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} %"

    lines = [
        "# Estimator calibration", "",
        "Written by `python -m bnnhw.tools.estimate_calibrate` from the build reports in "
        "`docs/calibration/` and `docs/boards/` (each a real yosys + nextpnr build). "
        "Estimated vs measured; error = (estimated - measured) / measured. "
        "\"LUT LOO\" is the LUT error when that build is left out of the fit "
        "(an out-of-sample figure). fmax is the period model's figure even where the design "
        "was built (an estimate then takes the measured one); \"fmax LOO\" is its error "
        "from a fit without that build. The clock margin of `--clock-mhz auto` is the largest "
        "LOO overestimate of fmax in the family.", "", *_table(result["rows"]), "",
        "## Held out: builds of `--fold auto` foldings (`docs/boards/auto/`), not fitted", "",
        *_table(result["held_out"]), "",
        "## Built on earlier gateware, neither fitted nor checked", "",
        "Builds whose recorded latency differs from the latency the gateware declares now for "
        "the same design (an earlier pipelining of its units); shown with this fit's "
        "estimate of the design as it is now.", "",
        *_table(result["earlier_gateware"]), "",
        "## Summary", "",
        "| family | builds | LUT max abs err | LUT mean abs err | LUT LOO max abs err "
        "| LUT held-out max abs err | FF max abs err | BRAM max abs err (blocks) "
        "| fmax max abs err | fmax LOO max abs err | fmax held-out max abs err "
        "| clock margin |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for family, s in result["summary"].items():
        lines.append(f"| {family} | {s['builds']} | {pct(s['lut_max_abs_error_pct'])} | "
                     f"{pct(s['lut_mean_abs_error_pct'])} | "
                     f"{pct(s['lut_loo_max_abs_error_pct'])} | "
                     f"{pct(s['lut_held_out_max_abs_error_pct'])} | "
                     f"{pct(s['ff_max_abs_error_pct'])} | {s['bram_max_abs_error_blocks']} | "
                     f"{pct(s['fmax_max_abs_error_pct'])} | "
                     f"{pct(s['fmax_loo_max_abs_error_pct'])} | "
                     f"{pct(s['fmax_held_out_max_abs_error_pct'])} | "
                     f"{pct(s['clock_margin_pct'])} |")
    lines += ["", "Coefficients (LUTs and flip-flops per unit of each stage feature, see "
              "`bnnhw/estimate.py`):", "", "```json",
              json.dumps(result["coefficients"], indent=2), "```", ""]
    return "\n".join(lines)


def run_builds(docs: Path = Path("docs"), rebuild: bool = False) -> list[Path]:
    """Build the :data:`CONFIGS` without a report (all with ``rebuild``), one at a time."""
    # The board flow (amaranth, amaranth-boards) loads only for board commands.
    from ..boards.build import build

    written = []
    out = docs / "calibration"
    out.mkdir(parents=True, exist_ok=True)
    for board, name, fold in CONFIGS:
        path = out / f"{config_name(board, name, fold)}.json"
        if path.exists() and not rebuild:
            continue
        model_file = docs / "models" / f"{name}_mnist.npz"
        model: Model = load_model(model_file)
        with tempfile.TemporaryDirectory(prefix="bnnhw-cal-") as tmp:
            report = build(model, board, tmp, fold=fold)
        report["command"] = (f"python -m bnnhw.boards.build (via bnnhw.tools.estimate_calibrate): "
                             f"{model_file} --board {board} --fold {fold}")
        write_atomic(path, (json.dumps(report, indent=2) + "\n").encode())
        print(f"{path.name}: {report['utilisation']['luts']['used']} LUT, "
              f"{report['build_seconds']:.0f} s", flush=True)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bnnhw.tools.estimate_calibrate",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true", help="build the missing configurations")
    parser.add_argument("--rebuild", action="store_true", help="build every configuration")
    parser.add_argument("--docs", type=Path, default=Path("docs"))
    args = parser.parse_args(argv)
    if args.run or args.rebuild:
        run_builds(args.docs, args.rebuild)
    result = calibrate(args.docs)
    print(format_calibration(result), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
