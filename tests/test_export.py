# amaranth: UnusedElaboratable=no
"""Verilog export: files written, sidecar consistent with the accelerator, no partial output."""

import json
import re
import types

import numpy as np
import pytest
from gateware_helpers import random_model

from bnnhw.export import INLINE_WORDS, MEMORY_DIR, generate
from bnnhw.folding import Folding, FoldingError, parse_fold
from bnnhw.gateware.dataflow import Accelerator


@pytest.fixture(scope="module")
def model():
    return random_model(np.random.default_rng(1), 8, 2, [8, 4])


def test_generate_writes_verilog_and_sidecar(model, tmp_path):
    folding = parse_fold("4x4,2x4@2", model)
    result = generate(model, tmp_path / "out", folding)
    verilog = (tmp_path / "out" / "bnnhw_top.v").read_text()
    info = json.loads((tmp_path / "out" / "bnnhw_top.json").read_text())
    assert result["verilog_path"].endswith("bnnhw_top.v")
    assert {k: v for k, v in result.items() if not k.endswith("_path")} == info
    assert "module bnnhw_top" in verilog
    accel = Accelerator(model, folding)
    widths = {"clk": 1, "rst": 1, "i_stream__payload": 16, "i_stream__valid": 1,
              "i_stream__ready": 1, "o_stream__payload": accel.out_width,
              "o_stream__valid": 1, "o_stream__ready": 1}
    assert {p["name"]: p["width"] for p in info["ports"]} == widths
    for port in info["ports"]:
        decl = f"{port['direction']} [{port['width'] - 1}:0] {port['name']};"
        assert (decl if port["width"] > 1 else f"{port['direction']} {port['name']};") in verilog
    assert info["top"] == "bnnhw_top"
    assert info["model_sha256"] == model.sha256()
    assert info["topology"] == "16-8-4"
    assert info["latency"] == accel.latency
    assert info["cycles_per_frame"] == accel.cycles_per_frame
    assert info["pixels_per_word"] == info["input"]["pixels_per_word"] == 2
    assert info["input"]["width"] == 16 and info["input"]["words_per_frame"] == 4
    assert info["output"] == {**info["output"], "width": accel.out_width, "class_bits": 2,
                              "score_bits": 4, "classes": 4}
    assert [(f["pe"], f["simd"], f["nf"], f["sf"], f["kind"]) for f in info["folding"]] == [
        (4, 4, 2, 4, "dense"), (2, 4, 2, 2, "output")]
    stages = {s.name: s for s in accel.stages}
    for f in info["folding"]:
        stage = stages[f"layer{f['layer']}"]
        assert (f["latency"], f["cycles_per_frame"]) == (stage.latency, stage.cycles_per_frame)
        assert f["cycles_per_frame"] == f["nf"] * f["sf"]


def test_failing_export_leaves_no_files(model, tmp_path):
    with pytest.raises(FoldingError, match=r"layer 0: PE must divide MH \(MH=8, PE=3\)"):
        generate(model, tmp_path / "out", Folding(((3, 4), (2, 4)), 2))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_conv_sidecar_rows(tmp_path):
    from gateware_helpers import random_thresholds

    from bnnhw.model import ConvLayer, DenseLayer, InputQuantizer, MaxPoolLayer, Model

    rng = np.random.default_rng(2)
    conv = ConvLayer(rng.integers(0, 2, (4, 9)), random_thresholds(rng, 9, 4), 3, (5, 5, 1))
    model = Model(InputQuantizer((128,), 25), (conv, MaxPoolLayer((3, 3, 4)),
                                              DenseLayer(rng.integers(0, 2, (3, 4)))))
    info = generate(model, tmp_path / "out", parse_fold("2x3,-,1x2@5", model))
    conv_row, pool_row, out_row = info["folding"]
    assert {k: conv_row[k] for k in ("kind", "mh", "mw", "pe", "simd", "nf", "sf", "vectors")
            } == {"kind": "conv", "mh": 4, "mw": 9, "pe": 2, "simd": 3, "nf": 2, "sf": 3,
                  "vectors": 9}
    assert conv_row["cycles_per_frame"] == 9 * 2 * 3
    assert pool_row["kind"] == "maxpool" and pool_row["pe"] is None
    assert pool_row["cycles_per_frame"] == 9
    assert (out_row["mw"], out_row["vectors"]) == (4, 1)
    assert [s["name"] for s in info["stages"]] == [
        "quantizer", "width0", "swu0", "layer0", "width1", "layer1", "layer2", "labelselect"]
    assert "module bnnhw_top" in (tmp_path / "out" / "bnnhw_top.v").read_text()


def _inline_initialisers(text):
    """``{memory name: [words]}`` of every ``initial begin m[i] = W'hX; ... end`` block."""
    blocks = {}
    for body in re.findall(r"initial begin\n(.*?)\n\s*end\n", text, re.S):
        rows = [re.fullmatch(r"\s*(\S+)\[(\d+)\] = \d+'([hd])([0-9a-f]+);", line)
                for line in body.split("\n")]
        if all(rows):
            blocks.setdefault(rows[0][1], []).append(
                [int(r[4], 16 if r[3] == "h" else 10) for r in rows])
    return blocks


def test_large_memories_are_loaded_from_hex_files_with_the_same_words(tmp_path):
    rng = np.random.default_rng(5)
    model = random_model(rng, 96, 1, [32, 10])
    folding = parse_fold("2x4,1x4@1", model)
    info = generate(model, tmp_path / "files", folding)
    generate(model, tmp_path / "inline", folding, inline_words=1 << 62)
    files_v = (tmp_path / "files" / "bnnhw_top.v").read_text()
    inline_v = (tmp_path / "inline" / "bnnhw_top.v").read_text()
    assert "$readmemh" not in inline_v and not info["memory_files"] == []
    assert not any((tmp_path / "inline" / MEMORY_DIR).iterdir())
    loads = re.findall(r'initial \$readmemh\("bnnhw_top_mem/([^"]+)", (\S+)\);', files_v)
    assert sorted(f for f, _ in loads) == info["memory_files"] == sorted(
        p.name for p in (tmp_path / "files" / MEMORY_DIR).iterdir())
    inline = _inline_initialisers(inline_v)
    kept = _inline_initialisers(files_v)
    for file, memory in loads:
        words = [int(w, 16) for w in (tmp_path / "files" / MEMORY_DIR / file).read_text().split()]
        assert len(words) > INLINE_WORDS
        assert words in inline[memory]
    # Exactly the large initialisers moved; the small ones stayed.
    moved = sum(len(v) for v in inline.values()) - sum(len(v) for v in kept.values())
    assert moved == len(loads) > 0
    assert all(len(w) <= INLINE_WORDS for v in kept.values() for w in v)
    # 32 x 96 weights at 2 PE x 4 SIMD: (32 / 2) * (96 / 4) = 384 words per PE memory.
    assert any(len(w) == 384 for v in inline.values() for w in v)


def test_failed_regeneration_keeps_the_previous_output(model, tmp_path, monkeypatch):
    import bnnhw.export as export

    generate(model, tmp_path / "out", parse_fold("4x4,2x4@2", model), inline_words=2)
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "out").rglob("*")
              if p.is_file()}
    assert any(MEMORY_DIR in str(p) for p in before)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    # Fails while the new files are staged (the sidecar is rendered last).
    monkeypatch.setattr(export, "json", types.SimpleNamespace(dumps=broken))
    with pytest.raises(OSError, match="disk full"):
        generate(model, tmp_path / "out", parse_fold("2x4,1x4@2", model), inline_words=2)
    after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "out").rglob("*")
             if p.is_file()}
    assert after == before


def test_sidecar_refuses_a_verilog_or_memories_written_apart(model, tmp_path):
    from bnnhw.export import check_generated

    folding = parse_fold("4x4,2x4@2", model)
    info = generate(model, tmp_path / "a", folding, inline_words=2)
    verilog = tmp_path / "a" / "bnnhw_top.v"
    check_generated(verilog, info)
    other = generate(model, tmp_path / "b", parse_fold("2x4,1x4@2", model), inline_words=2)
    # A kill between the renames: the new Verilog beside the old sidecar.
    verilog.write_bytes((tmp_path / "b" / "bnnhw_top.v").read_bytes())
    with pytest.raises(ValueError, match="is not the Verilog its sidecar describes"):
        check_generated(verilog, info)
    check_generated(tmp_path / "b" / "bnnhw_top.v", other)
    memory = tmp_path / "b" / MEMORY_DIR / other["memory_files"][0]
    memory.write_text(memory.read_text().replace("0", "1", 1) or "1\n")
    with pytest.raises(ValueError, match="does not hold the memories its sidecar describes"):
        check_generated(tmp_path / "b" / "bnnhw_top.v", other)
