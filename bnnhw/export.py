"""Verilog export of the accelerator, with a JSON sidecar describing ports, folding and timing.

``generate`` writes two files into the output folder:

``bnnhw_top.v``
    ``amaranth.back.verilog.convert`` of :class:`bnnhw.gateware.dataflow.Accelerator`, module
    ``bnnhw_top`` with ports ``clk``, ``rst``, ``i_stream__payload/valid/ready`` and
    ``o_stream__payload/valid/ready``.
``bnnhw_top_mem/``
    The initial contents of every memory of more than :data:`INLINE_WORDS` words (weights,
    thresholds), one ``$readmemh`` file per memory, named ``<module>.<memory>.hex``. The
    Verilog loads them with ``initial $readmemh("bnnhw_top_mem/<file>", <memory>);``, a path
    relative to the working directory of the simulator (yosys also looks beside the ``.v``).
    Written out like this instead of as one assignment per word, the design compiles much
    faster in Verilator and Icarus (``python -m bnnhw.sim.build_bench`` measures it).
``bnnhw_top.json``
    ``{"top", "model_sha256", "topology", "ports": [{name, direction, width}], "folding":
    [{layer, kind, mh, mw, pe, simd, nf, sf, vectors, cycles_per_frame, latency}], "stages":
    [{name, latency, cycles_per_frame}], "pixels_per_word", "latency", "cycles_per_frame",
    "input": {...}, "output": {...}, "memory_files": [...], "verilog_sha256",
    "memory_sha256"}``. A conv layer has ``mh = OC``,
    ``mw = K * K * C`` and ``vectors = OH * OW``; a max-pool layer has ``null`` in every
    folding field.

All are rendered in memory first and written atomically (the memory folder is built beside
its final place and renamed); if anything fails, no new file is left behind. The three are
moved into place one after the other, so the sidecar records the SHA-256 of the Verilog and
of the memory files: :func:`check_generated` (run by the simulator bench before it builds)
refuses a Verilog or memory folder that is not the one its sidecar was written with, as a
kill between the renames would leave.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .folding import Folding
from .model import Model

__all__ = ["INLINE_WORDS", "MEMORY_DIR", "TOP", "check_generated", "externalise_memories",
           "generate", "sidecar"]

TOP = "bnnhw_top"
MEMORY_DIR = f"{TOP}_mem"
INLINE_WORDS = 16
"""Memories of at most this many words keep their initialiser inline in the Verilog."""

_MODULE = re.compile(r"module\s+\\?([^\s(]+)")
_WORD = re.compile(r"\s*(\\\S+ |[A-Za-z_][\w$]*)\[(\d+)\] = (\d+)'([hdbo])([0-9a-fA-F_]+);")


def _parse_initialiser(lines: list[str]) -> tuple[str, int, list[int]] | None:
    """``(memory, width, words)`` if ``lines`` assign words 0, 1, 2, ... of one memory."""
    name, width, words = None, None, []
    for index, line in enumerate(lines):
        match = _WORD.fullmatch(line)
        if match is None or int(match[2]) != index or name not in (None, match[1]) \
                or width not in (None, int(match[3])):
            return None
        name, width = match[1], int(match[3])
        words.append(int(match[5].replace("_", ""), {"h": 16, "d": 10, "b": 2, "o": 8}[match[4]]))
    return (name, width, words) if name is not None else None


def externalise_memories(text: str, inline_words: int = INLINE_WORDS,
                         folder: str = MEMORY_DIR) -> tuple[str, dict[str, str]]:
    """Move the word-by-word memory initialisers of yosys' Verilog into ``$readmemh`` files.

    yosys writes a memory's initial contents as ``initial begin mem[0] = W'h..; ... end``,
    one statement per word. Each such block of more than ``inline_words`` words becomes
    ``initial $readmemh("<folder>/<module>.<memory>.hex", mem);`` and its words one hex
    number per line, ``ceil(W / 4)`` digits. Any other ``initial`` block is left as it is.

    Returns
    -------
    (str, dict)
        The new Verilog and ``{file name: file contents}`` (names without the folder).
    """
    out: list[str] = []
    files: dict[str, str] = {}
    module = TOP
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("module "):
            module = _MODULE.match(line)[1]
        end = (next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "end"), None)
               if line.strip() == "initial begin" else None)
        if end is not None:
            parsed = _parse_initialiser(lines[i + 1:end])
            if parsed is not None and len(parsed[2]) > inline_words:
                name, width, words = parsed
                clean = re.sub(r"[^\w.]", "_", f"{module}.{name.strip()}")
                file = f"{clean}.hex"
                assert file not in files, f"two memories map to {file}"
                digits = -(-width // 4)
                files[file] = "".join(f"{w:0{digits}x}\n" for w in words)
                indent = line[:len(line) - len(line.lstrip())]
                out.append(f'{indent}initial $readmemh("{folder}/{file}", {name});')
                i = end + 1
                continue
        out.append(line)
        i += 1
    return "\n".join(out), files


def _memory_hash(memories: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(memories):
        digest.update(f"{name}\n{len(memories[name])}\n".encode())
        digest.update(memories[name].encode())
    return digest.hexdigest()


def check_generated(verilog: str | os.PathLike, info: dict[str, Any]) -> None:
    """Raise ``ValueError`` unless ``verilog`` and its ``bnnhw_top_mem/`` are what ``info``
    (the sidecar) was written with. Sidecars without the hashes (older exports) pass."""
    verilog = Path(verilog)
    if "verilog_sha256" in info and \
            hashlib.sha256(verilog.read_bytes()).hexdigest() != info["verilog_sha256"]:
        raise ValueError(f"{verilog} is not the Verilog its sidecar describes (SHA-256 "
                         f"differs): the files were not written together; generate again")
    if "memory_sha256" in info:
        folder = verilog.parent / MEMORY_DIR
        try:
            memories = {name: (folder / name).read_text() for name in info["memory_files"]}
        except OSError as exc:
            raise ValueError(f"{folder}: memory file missing ({exc.strerror}: "
                             f"{exc.filename}); generate again") from None
        if _memory_hash(memories) != info["memory_sha256"]:
            raise ValueError(f"{folder} does not hold the memories its sidecar describes; "
                             f"generate again")


def sidecar(model: Model, accelerator: Any) -> dict[str, Any]:
    """The JSON description of an elaborated-to-be ``accelerator`` built from ``model``."""
    # amaranth loads when a design is elaborated, not with this module (start-up time).
    from amaranth.hdl import Shape
    from amaranth.lib import wiring

    ports = [{"name": "clk", "direction": "input", "width": 1},
             {"name": "rst", "direction": "input", "width": 1}]
    for path, member, _ in accelerator.signature.flatten(accelerator):
        ports.append({"name": "__".join(str(p) for p in path),
                      "direction": "input" if member.flow == wiring.In else "output",
                      "width": Shape.cast(member.shape).width})
    folding = []
    for index, (layer, entry) in enumerate(zip(model.layers, accelerator.folding.layers,
                                               strict=True)):
        stage = next(s for s in accelerator.stages if s.name == f"layer{index}")
        row = {"layer": index, "kind": layer.kind, "mh": None, "mw": None, "pe": None,
               "simd": None, "nf": None, "sf": None, "vectors": None}
        if entry is not None:
            (mh, mw), (pe, simd) = layer.matrix_shape, entry
            row.update(mh=mh, mw=mw, pe=pe, simd=simd, nf=mh // pe, sf=mw // simd,
                       vectors=layer.vectors)
        folding.append({**row, "cycles_per_frame": stage.cycles_per_frame,
                        "latency": stage.latency})
    p = accelerator.pixels_per_word
    cb, sb = accelerator.class_bits, accelerator.score_bits
    return {
        "top": TOP,
        "model_sha256": model.sha256(),
        "topology": model.topology,
        "ports": ports,
        "folding": folding,
        "stages": [{"name": s.name, "latency": s.latency, "cycles_per_frame": s.cycles_per_frame}
                   for s in accelerator.stages],
        "pixels_per_word": p,
        "latency": accelerator.latency,
        "cycles_per_frame": accelerator.cycles_per_frame,
        "input": {
            "width": 8 * p, "pixels_per_word": p,
            "words_per_frame": accelerator.words_per_frame,
            "format": f"{p} uint8 pixel(s) per word; pixel w*{p}+j of a frame in bits "
                      f"[8j, 8j+8) of word w (bnnhw.packing.pixel_words)",
        },
        "output": {
            "width": accelerator.out_width, "class_bits": cb, "score_bits": sb,
            "classes": accelerator.classes,
            "format": f"one word per frame: class in bits [0, {cb}); score c (popcount of the "
                      f"output layer) in bits [{cb} + c*{sb}, {cb} + (c+1)*{sb}); "
                      f"class = lowest index of the maximum score",
        },
    }


def generate(model: Model, out_dir: str | os.PathLike, folding: Folding,
             inline_words: int = INLINE_WORDS) -> dict[str, Any]:
    """Write ``bnnhw_top.v`` and ``bnnhw_top.json`` for ``model`` folded as ``folding``.

    Parameters
    ----------
    model : Model
    out_dir : path
        Created if missing.
    folding : Folding
        Checked against the model first.
    inline_words : int
        Memories of more words are initialised from ``bnnhw_top_mem/`` files
        (:func:`externalise_memories`); a huge value keeps every initialiser inline.

    Returns
    -------
    dict
        The sidecar contents plus ``"verilog_path"``, ``"sidecar_path"`` and ``"memory_path"``.

    Raises
    ------
    bnnhw.folding.FoldingError
        If the folding does not fit the model (nothing is written).
    """
    folding.check(model)
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    # amaranth loads when a design is elaborated, not with this module (start-up time).
    from amaranth.back import verilog

    from .gateware.dataflow import Accelerator

    accelerator = Accelerator(model, folding)
    info = sidecar(model, accelerator)
    text, memories = externalise_memories(verilog.convert(accelerator, name=TOP), inline_words)
    info["memory_files"] = sorted(memories)
    info["verilog_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    info["memory_sha256"] = _memory_hash(memories)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    v_path, j_path, m_path = out / f"{TOP}.v", out / f"{TOP}.json", out / MEMORY_DIR
    staging = Path(tempfile.mkdtemp(prefix=f".{TOP}.", dir=out))
    try:
        (staging / MEMORY_DIR).mkdir()
        for name, contents in memories.items():
            (staging / MEMORY_DIR / name).write_text(contents)
        (staging / v_path.name).write_text(text)
        (staging / j_path.name).write_text(json.dumps(info, indent=2) + "\n")
        # Everything is on disk: swap it in by renames within one folder.
        if m_path.is_dir():
            m_path.replace(staging / "old")
        (staging / MEMORY_DIR).replace(m_path)
        (staging / v_path.name).replace(v_path)
        (staging / j_path.name).replace(j_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {**info, "verilog_path": str(v_path), "sidecar_path": str(j_path),
            "memory_path": str(m_path)}
