"""Training benchmarks: the trainer's CPU efficiency, and full training runs.

``python -m bnnhw.train.bench [--threads 1,2]`` measures how well a training step uses the CPU
(:func:`efficiency`): for lfc, cbcnn and cnv-tiny it times real training steps on MNIST batches
and divides the step's matrix-product FLOP/s by the FLOP/s of a large fp32 GEMM measured in the
same run on the same thread count. It prints a table and writes
``docs/training_efficiency.json``.

``python -m bnnhw.train.bench --arch sfc --epochs N [--dataset mnist] [--seed S]
[--save docs/models/sfc_mnist.npz] [recipe options]`` trains and writes
``docs/train_<arch>_<dataset>.json`` (atomically) with the float test accuracy of the last
epoch, the integer reference accuracy of the exported model (identical by construction, checked
here on the whole test set), the recipe, the epochs and seconds per epoch, and the per-epoch
history; ``--save`` also writes the model file, ``--checkpoint DIR`` keeps the state after every
epoch and ``--resume`` continues it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from bnnhw import datasets
from bnnhw.model import write_atomic
from bnnhw.reference import infer

from .augment import parse_augment
from .conv import CNN, BinaryConv2d
from .layers import BinaryDense, Dense
from .losses import get_loss
from .network import MLP, MODES
from .optim import Adam
from .presets import PRESETS, get_preset
from .trainer import make_quantizer, train

EFFICIENCY_ARCHS = ("lfc", "cbcnn", "cnv-tiny")
GEMM_SIZE = 2048


def step_matmul_flops(net: MLP | CNN, batch: int) -> int:
    """Floating-point operations of the matrix products in one training step of ``batch``.

    A product of an ``(M, K)`` and a ``(K, N)`` matrix counts ``2 M K N``. Per dense layer with
    weights ``(out, in)``: forward ``x W^T``, weight gradient ``g^T x`` and, except for the first
    layer, input gradient ``g W``, each ``2 batch in out``; per convolution the same with
    ``batch * OH * OW`` rows and ``in = K * K * C``.
    """
    total = 0
    for layer in net.layers:
        if isinstance(layer, BinaryConv2d):
            oh, ow, oc = layer.out_shape
            rows, inner = batch * oh * ow, layer.params["W"].shape[1]
            out = oc
        elif isinstance(layer, BinaryDense | Dense):
            rows = batch
            out, inner = layer.params["W"].shape
        else:
            continue
        total += 2 * rows * inner * out * (3 if layer.need_input_grad else 2)
    return total


def gemm_flops_per_second(size: int = GEMM_SIZE, repeats: int = 5) -> float:
    """Best FLOP/s of ``A @ B`` for two random float32 ``size x size`` matrices."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    out = np.empty_like(a)
    np.matmul(a, b, out=out)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def time_steps(arch: str, images: np.ndarray, labels: np.ndarray, steps: int,
               seed: int = 0) -> tuple[float, MLP | CNN, int]:
    """Median seconds of a training step (forward, loss, backward, Adam) of preset ``arch``.

    The network and batches are built as :func:`bnnhw.train.trainer.train` builds them (the
    preset's default input coding, batch size and loss); three warm-up steps compile the kernels
    first.
    """
    preset = get_preset(arch)
    quantizer = make_quantizer("W1A1", preset.input_threshold, None, None)
    rng = np.random.default_rng(seed)
    if preset.conv:
        net: MLP | CNN = CNN(preset.conv, preset.hidden, preset.kernel, quantizer, rng, rng,
                             dropout_hidden=preset.dropout_hidden)
    else:
        net = MLP(preset.hidden, "W1A1", quantizer, rng, rng,
                  dropout_input=preset.dropout_input, dropout_hidden=preset.dropout_hidden)
    loss_fn = get_loss(preset.loss)
    opt = Adam(net.param_groups(), lr=preset.lr)
    x_all = net.encode(images)
    batch = preset.batch_size
    times = []
    for step in range(steps + 3):
        idx = rng.choice(len(images), batch, replace=False)
        start = time.perf_counter()
        logits = net.forward(x_all[idx], training=True)
        _, grad = loss_fn(logits, labels[idx])
        net.backward(grad)
        opt.step()
        if step >= 3:
            times.append(time.perf_counter() - start)
    return float(np.median(times)), net, batch


def efficiency(threads: tuple[int, ...] = (1, 2), archs: tuple[str, ...] = EFFICIENCY_ARCHS,
               steps: int = 30, data_dir: str | Path | None = None) -> dict:
    """Training matmul FLOP/s over same-run fp32 GEMM FLOP/s, per architecture and thread count.

    For each thread count the GEMM reference (:func:`gemm_flops_per_second`) is measured before
    and after the architectures' steps, and the better of the two is used, so a noisy moment
    cannot flatter the ratio.

    Returns
    -------
    dict
        ``rows``: per (arch, threads) ``step_ms``, ``matmul_gflop_per_step``,
        ``train_gflops``, ``gemm_gflops`` and ``ratio``.
    """
    train_split = datasets.load("mnist", "train", data_dir)
    images, labels = train_split.images[:5000], train_split.labels[:5000].astype(np.int64)
    rows = []
    for count in threads:
        with threadpool_limits(limits=count, user_api="blas"):
            gemm_before = gemm_flops_per_second()
            measured = [(arch, *time_steps(arch, images, labels, steps)) for arch in archs]
            gemm = max(gemm_before, gemm_flops_per_second())
        for arch, seconds, net, batch in measured:
            flops = step_matmul_flops(net, batch)
            rows.append({"arch": arch, "threads": count, "batch_size": batch,
                         "step_ms": 1e3 * seconds, "matmul_gflop_per_step": flops / 1e9,
                         "train_gflops": flops / seconds / 1e9, "gemm_gflops": gemm / 1e9,
                         "ratio": flops / seconds / gemm})
    return {"gemm_size": GEMM_SIZE, "steps": steps, "rows": rows,
            "command": "python -m bnnhw.train.bench --threads "
                       + ",".join(str(t) for t in threads)}


def format_efficiency(report: dict) -> str:
    """The efficiency rows as a Markdown table."""
    lines = ["| arch | threads | batch | step (ms) | matmul GFLOP/step | train GFLOP/s | "
             "GEMM GFLOP/s | ratio |", "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['arch']} | {r['threads']} | {r['batch_size']} | {r['step_ms']:.1f} "
                     f"| {r['matmul_gflop_per_step']:.3f} | {r['train_gflops']:.1f} | "
                     f"{r['gemm_gflops']:.1f} | {r['ratio']:.2f} |")
    return "\n".join(lines)


def bench(arch: str, dataset: str = "mnist", epochs: int = 10, seed: int = 0,
          data_dir: str | Path | None = None, out_dir: str | Path = "docs",
          save: str | Path | None = None, mode: str = "W1A1",
          thermometer_levels: int | None = None, progress: bool = True, **recipe) -> dict:
    """Train ``arch`` on ``dataset`` and write ``<out_dir>/train_<arch>_<dataset>.json``.

    ``recipe`` passes the trainer's options on (``input_kind``, ``augment``, ``lr``,
    ``lr_end``, ``batch_size``, ``loss``, ``threads``, ``checkpoint``, ``resume``,
    ``stop_after``, ``output_bn``, ``calibrate``, ``init``). A run that ``stop_after`` ends
    early writes no JSON and returns the partial history.

    Returns
    -------
    dict
        ``accuracy`` (float network, last epoch, %), ``reference_accuracy`` (packed integer
        model, %, W1A1 only), ``epochs``, ``seconds``, ``seconds_per_epoch``, ``history``.
    """
    curves = Path(out_dir) / f"train_{arch}_{dataset}.png"
    result = train(dataset, arch, epochs, seed, save, data_dir=data_dir, mode=mode,
                   thermometer_levels=thermometer_levels, curves_png=curves,
                   progress=progress, **recipe)
    if not result.finished:
        return {"arch": arch, "dataset": dataset, "finished": False, "history": result.history}
    flags = {"input_kind": "input"}
    options = "".join(f" --{flags.get(k, k).replace('_', '-')}" + ("" if v is True else f" {v}")
                      for k, v in recipe.items()
                      if v is not None and k not in ("checkpoint", "resume", "stop_after"))
    report = {
        "arch": arch, "dataset": dataset, "mode": mode, "seed": seed, "epochs": epochs,
        "hidden": list(PRESETS[arch].hidden),
        "conv": [list(block) for block in PRESETS[arch].conv] or None,
        "recipe": (result.model.meta.get("recipe") if result.model is not None else None),
        "input": recipe.get("input_kind") or "bits",
        "accuracy": 100 * result.float_test_accuracy,
        "calibration": result.calibration,
        "seconds": result.seconds, "seconds_per_epoch": result.seconds / epochs,
        "history": result.history, "curves_png": str(curves),
        "command": f"python -m bnnhw.train.bench --arch {arch} --dataset {dataset} "
                   f"--epochs {epochs} --seed {seed} --mode {mode}"
                   + (f" --thermometer {thermometer_levels}" if thermometer_levels else "")
                   + options,
    }
    if result.model is not None:
        test = datasets.load(dataset, "test", data_dir)
        classes = infer(result.model, test.images)[0]
        if not np.array_equal(classes, result.network.predict(test.images)):
            raise AssertionError(f"{arch}: float and integer classes differ")
        report["reference_accuracy"] = 100 * float((classes == test.labels).mean())
        report["float_equals_reference_images"] = int(len(classes))
        report["weight_bits"] = result.model.weight_bits
        report["model_sha256"] = result.model.sha256()
        report["model_file"] = str(save) if save else None
    path = Path(out_dir) / f"train_{arch}_{dataset}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(report, indent=2) + "\n").encode())
    return report


def thread_counts(text: str) -> tuple[int, ...]:
    """``--threads 1,2``: positive thread counts."""
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"threads must be integers like 1,2, got {text!r}") \
            from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"threads must be >= 1, got {text!r}")
    return counts


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m bnnhw.train.bench``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=tuple(PRESETS),
                        help="train this preset; without it, measure the efficiency")
    parser.add_argument("--dataset", default="mnist", choices=datasets.DATASETS)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", default="W1A1", choices=MODES)
    parser.add_argument("--thermometer", type=int, default=None)
    parser.add_argument("--input", default=None, choices=("bits", "pixels8"))
    parser.add_argument("--augment", default=None, help="e.g. shift:2,flip")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--lr-end", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--loss", default=None)
    parser.add_argument("--threads", type=thread_counts, default=None,
                        help="BLAS threads (efficiency: a list, default 1,2)")
    parser.add_argument("--checkpoint", default=None, help="checkpoint directory")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--stop-after", type=int, default=None)
    parser.add_argument("--output-bn", action="store_true",
                        help="end in a batch norm per class (exact integer affine scores)")
    parser.add_argument("--calibrate", type=int, default=None, metavar="N",
                        help="after the last epoch, recompute the batch-norm statistics over N "
                             "training images")
    parser.add_argument("--init", default=None, metavar="DIR",
                        help="fine-tune from the weights of this checkpoint")
    parser.add_argument("--steps", type=int, default=30, help="efficiency: timed steps")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out-dir", default="docs")
    parser.add_argument("--save", default=None, help="also write the model file here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.arch is None:
        report = efficiency(args.threads or (1, 2), steps=args.steps, data_dir=args.data_dir)
        print(format_efficiency(report))
        path = Path(args.out_dir) / "training_efficiency.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, (json.dumps(report, indent=2) + "\n").encode())
        return 0
    if args.augment is not None:
        parse_augment(args.augment)
    if args.threads is not None and len(args.threads) != 1:
        parser.error("training takes one thread count")
    recipe = {"input_kind": args.input, "augment": args.augment, "lr": args.lr,
              "lr_end": args.lr_end, "batch_size": args.batch_size, "loss": args.loss,
              "threads": args.threads[0] if args.threads else None,
              "checkpoint": args.checkpoint, "resume": args.resume or None,
              "stop_after": args.stop_after, "output_bn": args.output_bn or None,
              "calibrate": args.calibrate, "init": args.init}
    recipe = {k: v for k, v in recipe.items() if v is not None}
    report = bench(args.arch, args.dataset, args.epochs, args.seed, args.data_dir, args.out_dir,
                   args.save, args.mode, args.thermometer, not args.no_progress, **recipe)
    if not report.get("finished", True):
        print(json.dumps({"arch": args.arch, "finished": False,
                          "epochs_done": len(report["history"])}))
        return 0
    summary = {k: report[k] for k in ("arch", "dataset", "mode", "epochs", "accuracy",
                                      "seconds_per_epoch")}
    summary["reference_accuracy"] = report.get("reference_accuracy")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
