"""Training benchmark: train a preset, print and record accuracy and speed.

``python -m bnnhw.train.bench --arch sfc --epochs N [--dataset mnist] [--seed S]
[--save docs/models/sfc_mnist.npz]`` writes ``docs/train_<arch>_<dataset>.json`` (atomically)
with the float test accuracy of the last epoch, the integer reference accuracy of the exported
model (identical by construction, checked here), the epochs and seconds per epoch, and the
per-epoch history; ``--save`` also writes the model file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bnnhw import datasets
from bnnhw.model import write_atomic
from bnnhw.reference import infer

from .network import MODES
from .presets import PRESETS
from .trainer import train


def bench(arch: str, dataset: str = "mnist", epochs: int = 10, seed: int = 0,
          data_dir: str | Path | None = None, out_dir: str | Path = "docs",
          save: str | Path | None = None, mode: str = "W1A1",
          thermometer_levels: int | None = None, progress: bool = True) -> dict:
    """Train ``arch`` on ``dataset`` and write ``<out_dir>/train_<arch>_<dataset>.json``.

    Returns
    -------
    dict
        ``accuracy`` (float network, last epoch, %), ``reference_accuracy`` (packed integer
        model, %, W1A1 only), ``epochs``, ``seconds``, ``seconds_per_epoch``, ``history``.
    """
    curves = Path(out_dir) / f"train_{arch}_{dataset}.png"
    result = train(dataset, arch, epochs, seed, save, data_dir=data_dir, mode=mode,
                   thermometer_levels=thermometer_levels, curves_png=curves,
                   progress=progress)
    report = {
        "arch": arch, "dataset": dataset, "mode": mode, "seed": seed, "epochs": epochs,
        "hidden": list(PRESETS[arch].hidden),
        "conv": [list(block) for block in PRESETS[arch].conv] or None,
        "accuracy": 100 * result.float_test_accuracy,
        "seconds": result.seconds, "seconds_per_epoch": result.seconds / epochs,
        "history": result.history, "curves_png": str(curves),
        "command": f"python -m bnnhw.train.bench --arch {arch} --dataset {dataset} "
                   f"--epochs {epochs} --seed {seed} --mode {mode}"
                   + (f" --thermometer {thermometer_levels}" if thermometer_levels else ""),
    }
    if result.model is not None:
        test = datasets.load(dataset, "test", data_dir)
        classes = infer(result.model, test.images)[0]
        if not np.array_equal(classes, result.network.predict(test.images)):
            raise AssertionError(f"{arch}: float and integer classes differ")
        report["reference_accuracy"] = 100 * float((classes == test.labels).mean())
        report["weight_bits"] = result.model.weight_bits
        report["model_sha256"] = result.model.sha256()
        report["model_file"] = str(save) if save else None
    path = Path(out_dir) / f"train_{arch}_{dataset}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(report, indent=2) + "\n").encode())
    return report


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m bnnhw.train.bench``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", required=True, choices=tuple(PRESETS))
    parser.add_argument("--dataset", default="mnist", choices=datasets.DATASETS)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", default="W1A1", choices=MODES)
    parser.add_argument("--thermometer", type=int, default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out-dir", default="docs")
    parser.add_argument("--save", default=None, help="also write the model file here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    report = bench(args.arch, args.dataset, args.epochs, args.seed, args.data_dir, args.out_dir,
                   args.save, args.mode, args.thermometer, not args.no_progress)
    summary = {k: report[k] for k in ("arch", "dataset", "mode", "epochs", "accuracy",
                                      "seconds_per_epoch")}
    summary["reference_accuracy"] = report.get("reference_accuracy")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
