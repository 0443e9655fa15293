"""Training loop: mini-batch Adam on MNIST / Fashion-MNIST, export, curves.

A preset with ``conv`` blocks trains a binarized CNN (:class:`bnnhw.train.conv.CNN`, mode W1A1
only); every other preset an :class:`MLP`.

Determinism: one :class:`numpy.random.SeedSequence` seeded with ``seed`` spawns independent
generators for the initial weights, the epoch shuffles, the dropout masks and the augmentation,
and all arithmetic is float32 with fixed shapes and fixed reduction orders, so the same seed
on the same BLAS thread count gives bit-identical weights. A checkpoint stores the generators'
states with the weights and moments, so a resumed run continues the same sequence.

Reported accuracies: ``train_accuracy`` of an epoch is measured on the training batches as they
are trained (training mode, dropout on); ``test_accuracy`` is the eval-mode network on the whole
test split after the epoch. The final figure is the last epoch's, never the best one.
"""

from __future__ import annotations

import io
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from bnnhw import datasets
from bnnhw.model import InputQuantizer, Model, PixelInput, write_atomic

from .augment import Augment, parse_augment
from .checkpoint import (
    Checkpoint,
    CheckpointError,
    check_config,
    check_same_network,
    checkpoint_path,
    load_checkpoint,
)
from .conv import CNN
from .losses import get_loss
from .network import MLP, check_mode
from .optim import Adam, decayed_lr
from .presets import Preset, get_preset


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes
    ----------
    model : Model or None
        The folded integer model (W1A1 only).
    network : MLP or CNN
        The trained float network.
    history : list of dict
        Per epoch: ``epoch``, ``lr``, ``loss``, ``train_accuracy``, ``test_accuracy``,
        ``seconds``.
    float_test_accuracy : float
        Eval-mode accuracy of the float network on the test split after the last epoch (after
        the batch-norm calibration, when one was asked for).
    seconds : float
        Training wall time, summed over the epochs (across resumed runs too), each including
        its test evaluation.
    curves_png : Path or None
    out : Path or None
        The written model file.
    finished : bool
        False when ``stop_after`` ended the run before its last epoch (no model exported).
    calibration : dict or None
        With ``calibrate``: ``images`` (how many), ``test_accuracy_before`` (with the running
        statistics of training) and ``test_accuracy`` (with the calibrated ones).
    """

    model: Model | None
    network: MLP | CNN
    history: list[dict] = field(default_factory=list)
    float_test_accuracy: float = 0.0
    seconds: float = 0.0
    curves_png: Path | None = None
    out: Path | None = None
    finished: bool = True
    calibration: dict | None = None


INPUT_KINDS = ("bits", "pixels8")


def make_quantizer(mode: str, default_threshold: float, input_threshold: float | None,
                   thermometer_levels: int | None,
                   input_kind: str = "bits") -> InputQuantizer | PixelInput | None:
    """The input stage: a thermometer code, a fixed threshold, raw pixels, or (non-W1A1) none.

    ``input_kind="pixels8"`` (W1A1 only, no threshold or thermometer) gives
    :class:`bnnhw.model.PixelInput`: the first layer reads the 8-bit pixels.
    """
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"unknown input kind {input_kind!r}; choose one of "
                         f"{', '.join(INPUT_KINDS)}")
    if input_kind == "pixels8":
        if mode != "W1A1":
            raise ValueError(f"input kind 'pixels8' trains in mode W1A1 only, not {mode!r}")
        if input_threshold is not None or thermometer_levels is not None:
            raise ValueError("input kind 'pixels8' takes no input_threshold or "
                             "thermometer_levels")
        return PixelInput()
    if input_threshold is not None and thermometer_levels is not None:
        raise ValueError("give either input_threshold or thermometer_levels, not both")
    if thermometer_levels is not None:
        if thermometer_levels < 1:
            raise ValueError(f"thermometer_levels must be >= 1, got {thermometer_levels}")
        return InputQuantizer.thermometer(thermometer_levels)
    if input_threshold is not None:
        if not 0 <= input_threshold <= 256:
            raise ValueError(f"input_threshold must lie in [0, 256], got {input_threshold}")
        return InputQuantizer.fixed(input_threshold)
    return InputQuantizer.fixed(default_threshold) if mode == "W1A1" else None


def default_threads() -> int:
    """The cores this process may run on (its CPU affinity)."""
    return len(os.sched_getaffinity(0))


def train(dataset: str, arch: str, epochs: int, seed: int, out: str | Path | None,
          data_dir: str | Path | None = None, mode: str = "W1A1",
          input_threshold: float | None = None, thermometer_levels: int | None = None,
          curves_png: str | Path | None = None, progress: bool = True,
          limit_train: int | None = None, loss: str | None = None, lr: float | None = None,
          lr_end: float | None = None, batch_size: int | None = None,
          input_kind: str = "bits", augment: Augment | str | None = None,
          threads: int | None = None, checkpoint: str | Path | None = None,
          resume: bool = False, stop_after: int | None = None,
          output_bn: bool = False, calibrate: int | None = None,
          init: str | Path | None = None) -> TrainResult:
    """Train a preset and (W1A1) export the folded integer model.

    Parameters
    ----------
    dataset : {"mnist", "fashion-mnist"}
    arch : {"seed000", "tfc", "sfc", "lfc", "cbcnn", "cnv-tiny", "cnv-micro"}
    epochs : int
        At least 1. The learning rate decays geometrically from ``lr`` to ``lr_end``.
    seed : int
    out : path or None
        Model file to write (W1A1 only), atomically, with ``meta`` holding the dataset,
        architecture, mode, epochs, seed, recipe and float test accuracy.
    data_dir : path or None
        See :func:`bnnhw.datasets.locate`.
    mode : {"W1A1", "W1A32", "FP32"}
    input_threshold : float or None
        Fixed input threshold (pixel bit = ``pixel >= ceil(threshold)``); the preset's default
        (127.5) for W1A1 when neither this nor ``thermometer_levels`` is given.
    thermometer_levels : int or None
        Thermometer code with this many evenly spaced levels per pixel.
    curves_png : path or None
        Where to plot the curves; defaults to ``<out>.curves.png`` when ``out`` is given.
    progress : bool
        Show tqdm progress bars.
    limit_train : int or None
        Train on the first ``limit_train`` training images only.
    loss, lr, lr_end, batch_size
        Override the preset's hyperparameters.
    input_kind : {"bits", "pixels8"}
        ``"bits"``: the quantized input above. ``"pixels8"`` (W1A1, MLP and CNN presets): the
        first layer reads the raw 8-bit pixels, as ``x / 255`` in the float network, folded
        exactly into integer thresholds on ``a = sum_k w_k x_k`` (input kind ``pixels8`` of
        the model file).
    augment : Augment, str or None
        Training-set augmentation (:mod:`bnnhw.train.augment`), e.g. ``"shift:2,flip"``.
    threads : int or None
        BLAS threads for the matrix products (threadpoolctl); default: the cores this process
        may use. The elementwise kernels run on one thread.
    checkpoint : path or None
        Directory where the whole training state is written atomically after every epoch
        (:mod:`bnnhw.train.checkpoint`). A fresh run refuses a directory that already holds a
        checkpoint, so nothing is lost by mistake.
    resume : bool
        Continue the run saved in ``checkpoint`` (same settings) from its last finished epoch.
        The result is bit-identical to an uninterrupted run on the same thread count.
    output_bn : bool
        End the network in a batch norm on the class scores
        (:class:`~bnnhw.train.layers.OutputBatchNorm`) instead of a scalar scale; the model
        file's output layer then carries the exact integer affine
        (:func:`bnnhw.passes.fold_output_affine`).
    stop_after : int or None
        Stop once this many epochs of the schedule are done (a time slice of a long run); the
        checkpoint holds the state, and no model is exported until the last epoch.
    calibrate : int or None
        After the last epoch, recompute every batch norm's statistics exactly over this many
        training images (a permutation drawn from ``seed``, no augmentation) with
        :meth:`~bnnhw.train.network.LayerStack.calibrate_batchnorm`, before the final test
        accuracy and the export. Training itself is unchanged, so a finished checkpoint can be
        resumed with it. Recorded in the model's recipe as ``bn_calibration_images``.
    init : path or None
        Fine-tune: a checkpoint directory of an earlier run of the same network (architecture,
        mode, input coding, output head) whose weights and batch-norm statistics this run
        starts from, instead of the seed's random weights; Adam starts afresh with this run's
        learning rates. The earlier run's epochs and the checkpoint's SHA-256 are recorded in
        the config (a resumed fine-tune must name the same file) and in the model's recipe as
        ``init``.

    Raises
    ------
    ValueError
        Unknown dataset, architecture, mode or loss (naming the value and the choices), bad
        numbers, ``out`` with a mode other than W1A1, or a CNN preset with a mode other than
        W1A1.
    CheckpointError
        ``resume`` without a readable checkpoint of the same settings, a fresh run into a
        directory that already holds one, or an ``init`` checkpoint that is unreadable or of
        another network (naming the settings that differ).
    """
    preset, config, quantizer, augment = _settings(
        dataset, arch, epochs, seed, mode, input_threshold, thermometer_levels, limit_train,
        loss, lr, lr_end, batch_size, input_kind, augment, threads, checkpoint, resume,
        stop_after, out, output_bn)
    start = None
    if init is not None:
        start = load_checkpoint(init)
        check_same_network(start.config, config, checkpoint_path(init))
        config["init"] = {"checkpoint_sha256": datasets.sha256_of(checkpoint_path(init)),
                          "epochs": len(start.history), "lr": start.config["lr"],
                          "lr_end": start.config["lr_end"], "augment": start.config["augment"]}
    threads = threads or default_threads()
    loss_fn = get_loss(config["loss"])
    if calibrate is not None and (isinstance(calibrate, bool) or not isinstance(calibrate, int)
                                  or calibrate < 2):
        raise ValueError(f"calibrate must be a number of training images >= 2 "
                         f"(calibrate={calibrate!r})")
    saved = None
    if checkpoint is not None:
        if resume:
            saved = load_checkpoint(checkpoint)
            check_config(saved.config, config, checkpoint_path(checkpoint))
        elif checkpoint_path(checkpoint).exists():
            raise CheckpointError(f"{checkpoint_path(checkpoint)} already exists; resume it "
                                  f"(--resume) or choose another directory")

    train_split = datasets.load(dataset, "train", data_dir)
    test_split = datasets.load(dataset, "test", data_dir)
    images, labels = train_split.images, train_split.labels.astype(np.int64)
    if limit_train is not None:
        images, labels = images[:limit_train], labels[:limit_train]
    if calibrate is not None and calibrate > images.shape[0]:
        raise ValueError(f"calibrate={calibrate} asks for more images than the "
                         f"{images.shape[0]} of the training set")
    test_labels = test_split.labels.astype(np.int64)

    net, rngs = _network(preset, mode, quantizer, seed, output_bn)
    x_train = None if augment.active else net.encode(images)
    opt = Adam(net.param_groups(), lr=config["lr"])
    history: list[dict] = []
    if start is not None:
        net.load_state(start.net)
    if saved is not None:
        net.load_state(saved.net)
        opt.load_state(saved.opt)
        for name, rng in rngs.items():
            rng.bit_generator.state = saved.rng[name]
        history = saved.history
    last = epochs if stop_after is None else min(epochs, stop_after)
    n = images.shape[0]
    with threadpool_limits(limits=threads, user_api="blas"):
        for epoch in range(len(history), last):
            t0 = time.perf_counter()
            opt.lr = decayed_lr(config["lr"], config["lr_end"], epoch, epochs)
            bar = tqdm(range(0, n, config["batch_size"]),
                       desc=f"{arch} {mode} epoch {epoch + 1}/{epochs}", disable=not progress,
                       leave=False, unit="batch")
            total_loss, correct = _epoch(net, opt, loss_fn, images, labels, x_train, augment,
                                         rngs, bar, config["batch_size"])
            test_acc = float((net.predict(test_split.images) == test_labels).mean())
            history.append({"epoch": epoch + 1, "lr": opt.lr, "loss": total_loss / n,
                            "train_accuracy": correct / n, "test_accuracy": test_acc,
                            "seconds": time.perf_counter() - t0, "threads": threads})
            if checkpoint is not None:
                Checkpoint(config, net.state(), opt.state(),
                           {name: rng.bit_generator.state for name, rng in rngs.items()},
                           history).save(checkpoint)
            if progress:
                tqdm.write(f"epoch {epoch + 1}/{epochs}: loss {total_loss / n:.4f} "
                           f"train {correct / n:.4f} test {test_acc:.4f} "
                           f"({history[-1]['seconds']:.1f} s)", file=sys.stderr)
    seconds = sum(h["seconds"] for h in history)
    result = TrainResult(None, net, history, history[-1]["test_accuracy"] if history else 0.0,
                         seconds, finished=len(history) == epochs)
    if not result.finished:
        return result
    if calibrate is not None:
        pick = np.random.default_rng(seed).permutation(n)[:calibrate]
        with threadpool_limits(limits=threads, user_api="blas"):
            net.calibrate_batchnorm(images[pick])
            accuracy = float((net.predict(test_split.images) == test_labels).mean())
        result.calibration = {"images": calibrate,
                              "test_accuracy_before": result.float_test_accuracy,
                              "test_accuracy": accuracy}
        result.float_test_accuracy = accuracy
    if mode == "W1A1":
        meta = _model_meta(config, preset, quantizer, result.float_test_accuracy)
        if calibrate is not None:
            meta["recipe"]["bn_calibration_images"] = calibrate
        result.model = net.export(meta)
    if out is not None:
        result.out = result.model.save(out)
        if curves_png is None:
            curves_png = Path(out).with_suffix(".curves.png")
    if curves_png is not None:
        result.curves_png = plot_curves(history, Path(curves_png),
                                        f"{arch} {mode} on {dataset} (seed {seed})")
    return result


def _settings(dataset: str, arch: str, epochs: int, seed: int, mode: str,
              input_threshold: float | None, thermometer_levels: int | None,
              limit_train: int | None, loss: str | None, lr: float | None,
              lr_end: float | None, batch_size: int | None, input_kind: str,
              augment: Augment | str | None, threads: int | None,
              checkpoint: str | Path | None, resume: bool, stop_after: int | None,
              out: str | Path | None, output_bn: bool
              ) -> tuple[Preset, dict[str, Any], InputQuantizer | PixelInput, Augment]:
    """Check :func:`train`'s options (its ``ValueError`` cases) and resolve them against the
    preset: ``(preset, config, quantizer, augment)``, where ``config`` is what a checkpoint
    records and a resumed run must repeat."""
    if dataset not in datasets.DATASETS:
        raise ValueError(
            f"unknown dataset {dataset!r}; choose one of {', '.join(datasets.DATASETS)}"
        )
    preset = get_preset(arch)
    check_mode(mode)
    loss_name = loss or preset.loss
    get_loss(loss_name)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if limit_train is not None and limit_train < 1:
        raise ValueError(f"limit_train must be >= 1, got {limit_train}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if stop_after is not None and not 1 <= stop_after:
        raise ValueError(f"stop_after must be >= 1, got {stop_after}")
    if (resume or stop_after is not None) and checkpoint is None:
        raise ValueError("resume and stop_after need a checkpoint directory")
    if preset.conv and mode != "W1A1":
        raise ValueError(f"architecture {arch!r} is a binarized CNN and trains in mode W1A1 only, "
                         f"not {mode!r}")
    if out is not None and mode != "W1A1":
        raise ValueError(f"only mode W1A1 exports a model file; mode {mode!r} cannot write {out}")
    if not isinstance(augment, Augment):
        augment = parse_augment(augment)
    batch = batch_size or preset.batch_size
    lr0, lr1 = lr or preset.lr, lr_end or preset.lr_end
    if batch < 2 or lr0 <= 0 or lr1 <= 0:
        raise ValueError(f"batch size must be >= 2 and learning rates > 0, got batch {batch}, "
                         f"lr {lr0}, lr_end {lr1}")
    quantizer = make_quantizer(mode, preset.input_threshold, input_threshold,
                               thermometer_levels, input_kind)
    config = {"dataset": dataset, "arch": arch, "mode": mode, "epochs": epochs, "seed": seed,
              "batch_size": batch, "lr": lr0, "lr_end": lr1, "loss": loss_name,
              "input": input_kind, "input_thresholds": None, "augment": augment.spec,
              "limit_train": limit_train, "dropout_input": preset.dropout_input,
              "dropout_hidden": preset.dropout_hidden}
    if isinstance(quantizer, InputQuantizer):
        config["input_thresholds"] = [float(t) for t in quantizer.thresholds]
    if output_bn:   # only when set, so that earlier checkpoints and model files stay valid
        config["output_bn"] = True
    return preset, config, quantizer, augment


def _network(preset: Preset, mode: str, quantizer: InputQuantizer | PixelInput, seed: int,
             output_bn: bool) -> tuple[MLP | CNN, dict[str, np.random.Generator]]:
    """The network of ``preset`` and the run's random streams, all spawned from ``seed``:
    weight initialisation, and ``shuffle``, ``dropout`` and ``augment`` (checkpointed)."""
    init_seq, shuffle_seq, dropout_seq, augment_seq = np.random.SeedSequence(seed).spawn(4)
    rngs = {"shuffle": np.random.default_rng(shuffle_seq),
            "dropout": np.random.default_rng(dropout_seq),
            "augment": np.random.default_rng(augment_seq)}
    if preset.conv:
        net: MLP | CNN = CNN(preset.conv, preset.hidden, preset.kernel, quantizer,
                             np.random.default_rng(init_seq), rngs["dropout"],
                             dropout_hidden=preset.dropout_hidden, output_bn=output_bn)
    else:
        net = MLP(preset.hidden, mode, quantizer, np.random.default_rng(init_seq),
                  rngs["dropout"], dropout_input=preset.dropout_input,
                  dropout_hidden=preset.dropout_hidden, output_bn=output_bn)
    return net, rngs


def _epoch(net: MLP | CNN, opt: Adam, loss_fn: Any, images: np.ndarray, labels: np.ndarray,
           x_train: np.ndarray | None, augment: Augment, rngs: dict[str, np.random.Generator],
           batch_starts: Any, batch: int) -> tuple[float, int]:
    """One pass over the shuffled training set: ``(summed loss, correct predictions)``.

    ``x_train`` is the encoded training set, or None to encode each augmented batch."""
    order = rngs["shuffle"].permutation(images.shape[0])
    side = int(round(np.sqrt(images.shape[1])))
    total_loss, correct = 0.0, 0
    for s in batch_starts:
        idx = order[s:s + batch]
        if x_train is None:
            x = net.encode(augment.apply(images[idx], side, rngs["augment"]))
        else:
            x = x_train[idx]
        logits = net.forward(x, training=True)
        value, grad = loss_fn(logits, labels[idx])
        net.backward(grad)
        opt.step()
        total_loss += value * len(idx)
        correct += int((np.argmax(logits, axis=1) == labels[idx]).sum())
    return total_loss, correct


def _model_meta(config: dict[str, Any], preset: Preset, quantizer: InputQuantizer | PixelInput,
                accuracy: float) -> dict[str, Any]:
    """The ``meta`` of the exported model file: the run, its recipe and its input."""
    meta = {k: config[k] for k in ("dataset", "arch", "mode", "epochs", "seed")}
    meta.update(hidden=list(preset.hidden), float_test_accuracy=accuracy,
                recipe={k: config[k] for k in ("batch_size", "lr", "lr_end", "loss", "augment",
                                               "dropout_input", "dropout_hidden", "output_bn",
                                               "init")
                        if k in config})
    if isinstance(quantizer, PixelInput):
        meta["input"] = quantizer.kind
    else:
        meta["input_thresholds"] = list(quantizer.thresholds)
    if preset.conv:
        meta.update(conv=[list(block) for block in preset.conv], kernel=preset.kernel)
    return meta


def plot_curves(history: list[dict], path: Path, title: str) -> Path:
    """Plot loss and train/test accuracy per epoch into a PNG, written atomically."""
    # matplotlib loads only when a figure is drawn (start-up time).
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["loss"] for h in history], marker="o")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss")
    ax_acc.plot(epochs, [100 * h["train_accuracy"] for h in history], marker="o",
                label="train (training mode, on the batches)")
    ax_acc.plot(epochs, [100 * h["test_accuracy"] for h in history], marker="o", label="test")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.legend()
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buffer.getvalue())
    return path
