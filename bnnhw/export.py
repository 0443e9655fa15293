"""Verilog export of the accelerator, with a JSON sidecar describing ports, folding and timing.

``generate`` writes two files into the output folder:

``bnnhw_top.v``
    ``amaranth.back.verilog.convert`` of :class:`bnnhw.gateware.dataflow.Accelerator`, module
    ``bnnhw_top`` with ports ``clk``, ``rst``, ``i_stream__payload/valid/ready`` and
    ``o_stream__payload/valid/ready``.
``bnnhw_top.json``
    ``{"top", "model_sha256", "topology", "ports": [{name, direction, width}], "folding":
    [{layer, kind, mh, mw, pe, simd, nf, sf, vectors, cycles_per_frame, latency}], "stages":
    [{name, latency, cycles_per_frame}], "pixels_per_word", "latency", "cycles_per_frame",
    "input": {...}, "output": {...}}``. A conv layer has ``mh = OC``, ``mw = K * K * C`` and
    ``vectors = OH * OW``; a max-pool layer has ``null`` in every folding field.

Both are rendered in memory first and written atomically; if anything fails, no new file is
left behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .folding import Folding, matrix_shape, vectors
from .model import Model, write_atomic

__all__ = ["TOP", "generate", "sidecar"]

TOP = "bnnhw_top"


def sidecar(model: Model, accelerator: Any) -> dict[str, Any]:
    """The JSON description of an elaborated-to-be ``accelerator`` built from ``model``."""
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
            (mh, mw), (pe, simd) = matrix_shape(layer), entry
            row.update(mh=mh, mw=mw, pe=pe, simd=simd, nf=mh // pe, sf=mw // simd,
                       vectors=vectors(layer))
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


def generate(model: Model, out_dir: str | os.PathLike, folding: Folding) -> dict[str, Any]:
    """Write ``bnnhw_top.v`` and ``bnnhw_top.json`` for ``model`` folded as ``folding``.

    Parameters
    ----------
    model : Model
    out_dir : path
        Created if missing.
    folding : Folding
        Checked against the model first.

    Returns
    -------
    dict
        The sidecar contents plus ``"verilog_path"`` and ``"sidecar_path"``.

    Raises
    ------
    bnnhw.folding.FoldingError
        If the folding does not fit the model (nothing is written).
    """
    folding.check(model)
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    from amaranth.back import verilog

    from .gateware.dataflow import Accelerator

    accelerator = Accelerator(model, folding)
    info = sidecar(model, accelerator)
    text = verilog.convert(accelerator, name=TOP)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    v_path, j_path = out / f"{TOP}.v", out / f"{TOP}.json"
    write_atomic(v_path, text.encode())
    try:
        write_atomic(j_path, (json.dumps(info, indent=2) + "\n").encode())
    except BaseException:
        v_path.unlink(missing_ok=True)
        raise
    return {**info, "verilog_path": str(v_path), "sidecar_path": str(j_path)}
