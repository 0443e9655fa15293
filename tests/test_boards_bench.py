"""The board benchmark's records: each JSON's command rebuilds that very report."""

import json
import shlex
from pathlib import Path

import pytest
from bnnhw.boards import bench

from bnnhw.model import load_model

DOCS = Path(__file__).resolve().parent.parent / "docs"
REPORTS = sorted(p for p in (DOCS / "boards").rglob("*.json") if p.parent.name != "stages")


@pytest.mark.parametrize("path", REPORTS, ids=lambda p: str(p.relative_to(DOCS)))
def test_recorded_command_names_the_same_build(path):
    report = json.loads(path.read_text())
    words = shlex.split(report["command"])
    assert words[:3] == ["python", "-m", "bnnhw.boards.bench"]
    args = bench.parser().parse_args(words[3:])
    dataset = next(k for k in report if k.startswith("reference_accuracy_"))
    assert dataset == f"reference_accuracy_{args.dataset}_test"
    assert args.board == report["board"]
    model = DOCS.parent / args.model
    assert load_model(model).sha256() == report["model_sha256"]
    # The command writes into the folder the report is in (the builds of the baseline
    # weights keep the names they had before the retrained models took those names).
    assert (DOCS.parent / args.out_dir).resolve() == path.parent.resolve()
    stem = f"{args.board}_{model.stem.split('_')[0]}"
    stem += "" if args.dataset == "mnist" else f"_{args.dataset}"
    assert path.stem == stem or "-baseline_" in model.name
    if args.fold == "auto":
        assert report["fold_request"]["fold"] == "auto"
    elif args.fold is not None:
        assert args.fold == report["folding"]
