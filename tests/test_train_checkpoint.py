"""Checkpoint and resume: a stopped run continues bit-identically, and bad checkpoints are
refused with a clear error."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from bnnhw.train import train
from bnnhw.train.checkpoint import CheckpointError, checkpoint_path, load_checkpoint

SMALL = {"limit_train": 1200, "progress": False, "threads": 1}


def same_weights(a, b) -> bool:
    sa, sb = a.network.state(), b.network.state()
    return sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)


@pytest.mark.needs_data
@pytest.mark.parametrize("arch, recipe", [
    ("tfc", {}),
    ("cnv-micro", {"augment": "shift:2,flip", "input_kind": "pixels8"}),
    ("cnv-micro", {"augment": "shift:1"}),      # bit input: the window-code first block
])
def test_two_plus_two_epochs_equal_four(tmp_path, arch, recipe):
    whole = train("mnist", arch, 4, 5, tmp_path / "whole.npz", checkpoint=tmp_path / "a",
                  **SMALL, **recipe)
    first = train("mnist", arch, 4, 5, tmp_path / "split.npz", checkpoint=tmp_path / "b",
                  stop_after=2, **SMALL, **recipe)
    assert not first.finished and first.model is None and len(first.history) == 2
    assert not (tmp_path / "split.npz").exists()
    assert len(load_checkpoint(tmp_path / "b").history) == 2
    rest = train("mnist", arch, 4, 5, tmp_path / "split.npz", checkpoint=tmp_path / "b",
                 resume=True, **SMALL, **recipe)
    assert rest.finished and len(rest.history) == 4
    assert same_weights(whole, rest)
    assert (tmp_path / "whole.npz").read_bytes() == (tmp_path / "split.npz").read_bytes()
    assert [h["test_accuracy"] for h in whole.history] == \
        [h["test_accuracy"] for h in rest.history]


@pytest.mark.needs_data
def test_checkpoint_refusals(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        train("mnist", "tfc", 2, 0, None, checkpoint=tmp_path / "none", resume=True, **SMALL)
    train("mnist", "tfc", 2, 0, None, checkpoint=tmp_path / "c", stop_after=1, **SMALL)
    with pytest.raises(CheckpointError, match="already exists"):
        train("mnist", "tfc", 2, 0, None, checkpoint=tmp_path / "c", **SMALL)
    with pytest.raises(CheckpointError, match=r"different run \(.*seed: checkpoint 0, asked 1"):
        train("mnist", "tfc", 2, 1, None, checkpoint=tmp_path / "c", resume=True, **SMALL)
    with pytest.raises(CheckpointError, match="augment"):
        train("mnist", "tfc", 2, 0, None, checkpoint=tmp_path / "c", resume=True,
              augment="flip", **SMALL)
    path = checkpoint_path(tmp_path / "c")
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        train("mnist", "tfc", 2, 0, None, checkpoint=tmp_path / "c", resume=True, **SMALL)
    path.write_bytes(good)
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        train("mnist", "tfc", 1, 0, None, checkpoint=tmp_path / "file", **SMALL)
    with pytest.raises(ValueError, match="need a checkpoint directory"):
        train("mnist", "tfc", 2, 0, None, stop_after=1, **SMALL)


@pytest.mark.needs_data
def test_cli_train_stops_and_resumes(tmp_path):
    base = [sys.executable, "-m", "bnnhw.tools.cli", "train", "--arch", "tfc", "--epochs", "2",
            "--threads", "1", "--checkpoint", str(tmp_path / "ck"), "--out",
            str(tmp_path / "m.npz"), "--json"]
    env = dict(os.environ)
    first = subprocess.run(base + ["--stop-after", "1"], capture_output=True, text=True, env=env,
                           check=True, timeout=300)
    report = json.loads(first.stdout)
    assert report["finished"] is False and report["epochs_done"] == 1
    assert not (tmp_path / "m.npz").exists()
    again = subprocess.run(base, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 2 and "already exists" in again.stderr
    done = subprocess.run(base + ["--resume"], capture_output=True, text=True, env=env,
                          check=True, timeout=300)
    report = json.loads(done.stdout)
    assert report["finished"] is True and report["epochs_done"] == 2
    assert (tmp_path / "m.npz").is_file()


@pytest.mark.needs_data
def test_fine_tune_starts_from_the_checkpoint_weights(tmp_path):
    """``init`` loads an earlier run's weights: with a learning rate too small to move them, one
    epoch of fine-tuning leaves the earlier weights, not the new seed's, and the model records
    where it started; another network's checkpoint is refused by name."""
    first = train("mnist", "tfc", 2, 0, None, checkpoint=tmp_path / "a", **SMALL)
    fresh = train("mnist", "tfc", 1, 3, None, lr=1e-9, lr_end=1e-9, **SMALL)
    tuned = train("mnist", "tfc", 1, 3, tmp_path / "t.npz", init=tmp_path / "a", lr=1e-9,
                  lr_end=1e-9, **SMALL)
    weights = [{k: v for k, v in run.network.state().items() if k.endswith(".W")}
               for run in (first, fresh, tuned)]
    assert all(np.allclose(weights[2][k], weights[0][k], atol=1e-6) for k in weights[0])
    assert not any(np.allclose(weights[2][k], weights[1][k], atol=1e-2) for k in weights[0])
    assert abs(tuned.float_test_accuracy - first.float_test_accuracy) < 0.02
    recipe = tuned.model.meta["recipe"]
    assert recipe["init"]["epochs"] == 2
    assert recipe["init"]["lr"] == first.model.meta["recipe"]["lr"]
    assert len(recipe["init"]["checkpoint_sha256"]) == 64
    with pytest.raises(CheckpointError, match=r"different network \(arch: checkpoint 'tfc', "
                                              r"asked 'sfc'"):
        train("mnist", "sfc", 1, 0, None, init=tmp_path / "a", **SMALL)
    with pytest.raises(CheckpointError, match="input: checkpoint 'bits', asked 'pixels8'"):
        train("mnist", "tfc", 1, 0, None, init=tmp_path / "a", input_kind="pixels8", **SMALL)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train("mnist", "tfc", 1, 0, None, init=tmp_path / "missing", **SMALL)
