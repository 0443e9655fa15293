"""bnnhw report: one self-contained HTML page per model."""

import base64
import json
import re
from pathlib import Path

import pytest

from bnnhw.estimate import resolve_fold
from bnnhw.model import load_model
from bnnhw.tools import cli
from bnnhw.tools.report import find_training, write_report

DOCS = Path(__file__).resolve().parent.parent / "docs"
# A real iCEBreaker build of the committed sfc model (auto folding, 28.125 MHz, fmax 37.22 MHz).
ICE_SFC_BUILD = DOCS / "calibration/icebreaker_sfc_1x49-16x1-16x1-1x1@1.json"
pytestmark = pytest.mark.needs_data


def _images(text):
    return re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)


def test_report_embeds_every_section(tmp_path):
    out = tmp_path / "r.html"
    # The committed sfc model, its training record and a real iCEBreaker build of it.
    result = write_report(DOCS / "models/sfc_mnist.npz", out, board="orangecrab-25f",
                          build_json=ICE_SFC_BUILD, limit=200)
    text = out.read_text()
    assert result["sections"] == ["training", "estimate", "confusion", "board"]
    assert result["training_json"].endswith("train_sfc_mnist.json")
    images = _images(text)
    assert len(images) == 3
    assert all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    assert "src=\"http" not in text and "<link" not in text
    assert "<h2>Test set</h2>" in text and "alt=\"confusion matrix\"" in text
    assert "37.22 MHz" in text and "200 mnist test images" in text
    assert "layer0" in text and result["folding"].split(",")[0] in text and "<td>top</td>" in text


def test_report_defaults_to_the_build_folding_or_a_folding_that_fits(tmp_path):
    # sfc's balanced folding needs 24 SPRAMs on the iCEBreaker; with the build report given,
    # the report takes the build's board and folding, without it the auto folding.
    build = json.loads(ICE_SFC_BUILD.read_text())
    with_build = write_report(DOCS / "models/sfc_mnist.npz", tmp_path / "a.html", limit=10,
                              build_json=ICE_SFC_BUILD)
    assert with_build["folding"] == build["folding"]
    alone = write_report(DOCS / "models/sfc_mnist.npz", tmp_path / "b.html", limit=10)
    assert alone["folding"] == resolve_fold("auto", load_model(DOCS / "models/sfc_mnist.npz"),
                                            "icebreaker").spec


def test_find_training_by_hash():
    sha = json.loads((DOCS / "train_tfc_mnist.json").read_text())["model_sha256"]
    assert find_training(sha, DOCS).name == "train_tfc_mnist.json"
    assert find_training("0" * 64, DOCS) is None


def test_report_rejects_a_build_of_another_model(tmp_path):
    out = tmp_path / "r.html"
    with pytest.raises(ValueError, match="build report .*orangecrab-25f_sfc.json is for model"):
        write_report(DOCS / "models/tfc_mnist.npz", out,
                     build_json=DOCS / "boards/orangecrab-25f_sfc.json", limit=10)
    assert not out.exists()


def test_cli_report_smoke(tmp_path, capsys):
    out = tmp_path / "tfc.html"
    assert cli.main(["report", str(DOCS / "models/tfc_mnist.npz"), "--out", str(out),
                     "--fold", "auto", "--board", "icebreaker", "--limit", "100",
                     "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["out"] == str(out) and result["sections"][:3] == [
        "training", "estimate", "confusion"]
    assert "<h2>Per-layer estimate</h2>" in out.read_text()
    assert cli.main(["report", str(DOCS / "models/tfc_mnist.npz"), "--out", str(out),
                     "--board", "nope"]) == 2
    assert "unknown board 'nope'" in capsys.readouterr().err


def test_report_names_the_clock_and_the_critical_path(tmp_path):
    build = json.loads(ICE_SFC_BUILD.read_text())
    build["critical_path"] = {"source": "core.accelerator.layer0.buffer.0.0",
                              "sink": "core.accelerator.labelselect.best_DFF",
                              "stages": ["layer0", "accelerator", "labelselect"],
                              "logic_ns": 20.5, "routing_ns": 9.25, "total_ns": 29.75}
    path = tmp_path / "build.json"
    path.write_text(json.dumps(build))
    write_report(DOCS / "models/sfc_mnist.npz", tmp_path / "r.html", build_json=path, limit=20)
    text = (tmp_path / "r.html").read_text()
    assert f"{build['clk_mhz']:g} MHz (timing met)" in text
    assert f"<td>{build['fps_at_clock']:.0f}</td>" in text
    assert "29.75 ns = 20.50 logic + 9.25 routing, through layer0 → accelerator → labelselect" \
        in text and "core.accelerator.labelselect.best_DFF" in text
