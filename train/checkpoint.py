"""Training checkpoints: the whole state of a run after an epoch, written atomically.

A checkpoint is ``DIR/checkpoint.npz`` (numpy's zip of arrays, read with
``allow_pickle=False``) holding:

* ``config``: the run's settings as JSON (dataset, architecture, epochs, seed, learning rates,
  batch size, loss, input coding, augmentation, ...). A resumed run must ask for the same ones.
* ``net.<layer>.<name>``: every parameter and batch-norm running statistic;
* ``opt.t``, ``opt.m.<group>.<name>``, ``opt.v.<group>.<name>``: Adam's step count and moments;
* ``rng``: the state of every random generator the run still draws from, as JSON;
* ``history``: the per-epoch records so far, as JSON; its length is the number of finished
  epochs.

Since the file is replaced in one ``os.replace``, a run stopped at any moment leaves either the
previous epoch's checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bnnhw.model import write_atomic

FILENAME = "checkpoint.npz"
FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or from a different run configuration."""


@dataclass
class Checkpoint:
    """The state of a run after ``len(history)`` epochs (see the module docstring)."""

    config: dict
    net: dict[str, np.ndarray]
    opt: dict[str, np.ndarray]
    rng: dict[str, dict]
    history: list[dict]

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/checkpoint.npz`` atomically (the directory is created)."""
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise CheckpointError(f"checkpoint directory {directory} is a file")
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {f"net.{k}": v for k, v in self.net.items()}
        arrays |= {f"opt.{k}": v for k, v in self.opt.items()}
        arrays["format"] = np.array(FORMAT, dtype=np.int64)
        for name in ("config", "rng", "history"):
            arrays[name] = np.array(json.dumps(getattr(self, name), sort_keys=True))
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        path = directory / FILENAME
        write_atomic(path, buffer.getvalue())
        return path


def checkpoint_path(directory: str | Path) -> Path:
    """The checkpoint file inside ``directory``."""
    return Path(directory) / FILENAME


def load_checkpoint(directory: str | Path) -> Checkpoint:
    """Read ``directory/checkpoint.npz``.

    Raises
    ------
    CheckpointError
        No checkpoint there, a truncated or foreign file, or an unknown format version.
    """
    path = checkpoint_path(directory)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        version = int(arrays.pop("format"))
        texts = {name: json.loads(str(arrays.pop(name))) for name in ("config", "rng", "history")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as error:
        raise CheckpointError(f"{path} is not a readable checkpoint: {error}") from None
    if version != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {version}, this version reads {FORMAT}")
    net = {k[4:]: v for k, v in arrays.items() if k.startswith("net.")}
    opt = {k[4:]: v for k, v in arrays.items() if k.startswith("opt.")}
    return Checkpoint(texts["config"], net, opt, texts["rng"], texts["history"])


def check_config(saved: dict, wanted: dict, path: Path) -> None:
    """Refuse to resume a checkpoint whose settings differ from the run asked for."""
    _refuse_differences(saved, wanted, sorted(saved.keys() | wanted.keys()),
                        f"{path} was written by a different run")


NETWORK_KEYS = ("arch", "mode", "input", "input_thresholds", "output_bn")
"""The settings that define a network's layers and shapes: a fine-tune (``init``) must match
them; the data, schedule and augmentation may differ."""


def check_same_network(saved: dict, wanted: dict, path: Path) -> None:
    """Refuse to fine-tune from a checkpoint of a different network (:data:`NETWORK_KEYS`)."""
    _refuse_differences(saved, wanted, NETWORK_KEYS, f"{path} holds a different network")


def _refuse_differences(saved: dict, wanted: dict, keys: list[str] | tuple[str, ...],
                        what: str) -> None:
    """``CheckpointError("<what> (key: checkpoint X, asked Y, ...)")`` if any of ``keys``
    differs between the saved and the wanted settings."""
    differ = [k for k in keys if saved.get(k) != wanted.get(k)]
    if differ:
        details = ", ".join(f"{k}: checkpoint {saved.get(k)!r}, asked {wanted.get(k)!r}"
                            for k in differ)
        raise CheckpointError(f"{what} ({details})")
