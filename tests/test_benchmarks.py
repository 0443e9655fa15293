"""bnnhw bench: BENCHMARKS.md, docs/benchmarks.json and plots from the committed JSON files."""

import json
import shutil
from pathlib import Path

import pytest

from bnnhw.tools import cli
from bnnhw.tools.benchmarks import collect, parse_anchors, write_benchmarks

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = """# Facts
## Published numbers to beat (anchors)
| system | data | accuracy | speed | resources |
|---|---|---|---|---|
| FINN SFC-max (Z7045) | MNIST | 95.8 % | 12.3 M FPS, 0.31 µs | 91 k LUT |
| pocket-bnn (VHDL) | MNIST | 75 % | < 10 µs (sim) | 17.3 k LUT |

Weight bits per topology: ...
"""


@pytest.fixture
def repo(tmp_path):
    """A copy of docs/ (JSON, models) in a temporary repository root."""
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs, ignore=shutil.ignore_patterns("*.png", "*.md"))
    (docs / "anchors.json").unlink(missing_ok=True)
    (tmp_path / "REFERENCE.md").write_text(REFERENCE)
    return tmp_path


def test_parse_anchors_reads_the_published_table():
    data = parse_anchors(REFERENCE, "REFERENCE.md")
    assert data["published"] is True
    assert [r["system"] for r in data["rows"]] == ["FINN SFC-max (Z7045)", "pocket-bnn (VHDL)"]
    assert data["rows"][0]["speed"] == "12.3 M FPS, 0.31 µs"
    with pytest.raises(ValueError, match="notes.md: no table with columns system"):
        parse_anchors("# nothing here\n", "notes.md")


def test_collect_takes_every_figure_from_json(repo):
    data = collect(repo / "docs")
    boards = {(r["model"], r["board"], r["origin"]): r for r in data["boards"]}
    report = json.loads((repo / "docs/boards/orangecrab-25f_sfc.json").read_text())
    row = boards["sfc-baseline_mnist", "orangecrab-25f", "hand"]
    auto = boards["sfc-baseline_mnist", "orangecrab-25f", "auto"]
    assert auto["cycles_per_frame"] < row["cycles_per_frame"]
    assert ("tfc_mnist", "orangecrab-25f", "calibration") in boards
    assert row["cycles_per_frame"] == report["cycles_per_frame"]
    assert row["fmax_mhz"] == report["fmax_mhz"]
    assert row["ideal_cycles"] == 784 and row["efficiency"] == 1.0
    assert row["accuracy_pct"] == pytest.approx(100 * report["reference_accuracy_mnist_test"])
    assert {r["arch"] for r in data["training"]} >= {"tfc", "sfc", "lfc"}
    tuned = [r for r in data["training"]
             if r["source"].endswith("cbcnn-deep-ft_fashion-mnist.json")]
    assert len(tuned) == 1 and tuned[0]["init_epochs"] == 60
    assert data["simulation"][0]["mismatches"] == 0


def test_cli_bench_writes_report_plots_and_json(repo, capsys):
    assert cli.main(["bench", "--root", str(repo), "--anchors", str(repo / "REFERENCE.md"),
                     "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["anchors"] == 2 and result["boards"] >= 3
    text = (repo / "BENCHMARKS.md").read_text()
    assert "| sfc-baseline_mnist | orangecrab-25f |" in text and "189,554" in text
    assert "**published**: FINN SFC-max (Z7045)" in text and "not ours" in text
    assert "Estimator calibration" in text
    for name in ("bench_boards.png", "bench_training.png", "bench_calibration.png"):
        assert (repo / "docs" / name).read_bytes()[:4] == b"\x89PNG"
    data = json.loads((repo / "docs/benchmarks.json").read_text())
    assert data["anchors"]["rows"][1]["system"] == "pocket-bnn (VHDL)"


def test_cli_bench_missing_docs_exits_2(tmp_path, capsys):
    assert cli.main(["bench", "--root", str(tmp_path)]) == 2
    assert f"no docs folder under {tmp_path}" in capsys.readouterr().err
    assert not (tmp_path / "BENCHMARKS.md").exists()


def test_bad_json_is_named_and_nothing_is_written(repo, capsys):
    (repo / "docs/train_bad_mnist.json").write_text("{not json")
    assert cli.main(["bench", "--root", str(repo)]) == 2
    assert "train_bad_mnist.json: not valid JSON" in capsys.readouterr().err
    assert not (repo / "BENCHMARKS.md").exists()


def test_write_benchmarks_returns_the_table(repo):
    result = write_benchmarks(repo)
    assert result["table"].startswith("# Benchmarks")


def test_demo_bench_record_is_shown(repo):
    record = {"command": "python -m bnnhw.tools.demo_bench --epochs 5 --board icebreaker",
              "install_seconds": 61.2, "demo_seconds": 170.4, "total_seconds": 231.6,
              "table": "stage  result  seconds\ntrain  sfc  20.0"}
    (repo / "docs" / "demo_bench.json").write_text(json.dumps(record))
    data = collect(repo / "docs")
    assert data["demo"]["total_seconds"] == 231.6
    write_benchmarks(repo)
    text = (repo / "BENCHMARKS.md").read_text()
    assert "install (venv + `pip install -e '.[dev]'`) 61 s, `bnnhw demo` 170 s, total 232 s" \
        in text
    assert "train  sfc  20.0" in text


def test_stage_fmax_runs_are_tabled(repo):
    stages = repo / "docs" / "boards" / "stages"
    stages.mkdir(parents=True, exist_ok=True)
    path = lambda ns: {"routing_ns": ns, "logic_ns": 1.0, "total_ns": ns + 1.0}  # noqa: E731
    record = {"board": "ulx3s-85f", "model": "m.npz", "folding": "2x8,1x4@1", "freq_mhz": 100,
              "seeds": [1, 2], "command": "python -m bnnhw.boards.stage_fmax --model m.npz",
              "stages": [{"stage": "swu9", "kind": "swu", "fmax_mhz": 81.25,
                          "runs": [{"seed": 1, "fmax_mhz": 93.5, "luts": 1234,
                                    "critical_path": path(7.5)},
                                   {"seed": 2, "fmax_mhz": 81.25, "luts": 1240,
                                    "critical_path": path(9.0)}]}]}
    (stages / "stage-fmax_ulx3s-85f_m.json").write_text(json.dumps(record))
    data = collect(repo / "docs")
    assert [r["stages"][0]["stage"] for r in data["stage_fmax"]][-1] == "swu9"
    write_benchmarks(repo)
    text = (repo / "BENCHMARKS.md").read_text()
    assert "## Stage fmax" in text
    assert "| swu9 | swu | 81.25 | 93.50 / 81.25 | 1234 | 7.50 |" in text
