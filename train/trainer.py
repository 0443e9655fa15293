"""Training loop: mini-batch Adam on MNIST / Fashion-MNIST, export, curves.

A preset with ``conv`` blocks trains a binarized CNN (:class:`bnnhw.train.conv.CNN`, mode W1A1
only); every other preset an :class:`MLP`.

Determinism: one :class:`numpy.random.SeedSequence` seeded with ``seed`` spawns independent
generators for the initial weights, the epoch shuffles and the dropout masks, and all
arithmetic is float32 with fixed shapes, so the same seed gives bit-identical weights.

Reported accuracies: ``train_accuracy`` of an epoch is measured on the training batches as they
are trained (training mode, dropout on); ``test_accuracy`` is the eval-mode network on the whole
test split after the epoch. The final figure is the last epoch's, never the best one.
"""

from __future__ import annotations

import io
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bnnhw import datasets
from bnnhw.model import InputQuantizer, Model, PixelInput, write_atomic

from .conv import CNN
from .losses import get_loss
from .network import MLP, check_mode
from .optim import Adam, decayed_lr
from .presets import get_preset


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
        Eval-mode accuracy of the float network on the test split after the last epoch.
    seconds : float
        Training wall time (all epochs, including the per-epoch test evaluation).
    curves_png : Path or None
    out : Path or None
        The written model file.
    """

    model: Model | None
    network: MLP | CNN
    history: list[dict] = field(default_factory=list)
    float_test_accuracy: float = 0.0
    seconds: float = 0.0
    curves_png: Path | None = None
    out: Path | None = None


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


def train(dataset: str, arch: str, epochs: int, seed: int, out: str | Path | None,
          data_dir: str | Path | None = None, mode: str = "W1A1",
          input_threshold: float | None = None, thermometer_levels: int | None = None,
          curves_png: str | Path | None = None, progress: bool = True,
          limit_train: int | None = None, loss: str | None = None, lr: float | None = None,
          lr_end: float | None = None, batch_size: int | None = None,
          input_kind: str = "bits") -> TrainResult:
    """Train an MLP preset and (W1A1) export the folded integer model.

    Parameters
    ----------
    dataset : {"mnist", "fashion-mnist"}
    arch : {"seed000", "tfc", "sfc", "lfc", "cbcnn", "cnv-tiny"}
    epochs : int
        At least 1. The learning rate decays geometrically from ``lr`` to ``lr_end``.
    seed : int
    out : path or None
        Model file to write (W1A1 only), atomically, with ``meta`` holding the dataset,
        architecture, mode, epochs, seed, float test accuracy and training seconds.
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

    Raises
    ------
    ValueError
        Unknown dataset, architecture, mode or loss (naming the value and the choices), bad
        numbers, ``out`` with a mode other than W1A1, or a CNN preset with a mode other than
        W1A1.
    """
    if dataset not in datasets.DATASETS:
        raise ValueError(
            f"unknown dataset {dataset!r}; choose one of {', '.join(datasets.DATASETS)}"
        )
    preset = get_preset(arch)
    check_mode(mode)
    loss_fn = get_loss(loss or preset.loss)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if limit_train is not None and limit_train < 1:
        raise ValueError(f"limit_train must be >= 1, got {limit_train}")
    if preset.conv and mode != "W1A1":
        raise ValueError(f"architecture {arch!r} is a binarized CNN and trains in mode W1A1 only, "
                         f"not {mode!r}")
    if out is not None and mode != "W1A1":
        raise ValueError(f"only mode W1A1 exports a model file; mode {mode!r} cannot write {out}")
    batch = batch_size or preset.batch_size
    lr0, lr1 = lr or preset.lr, lr_end or preset.lr_end
    quantizer = make_quantizer(mode, preset.input_threshold, input_threshold,
                               thermometer_levels, input_kind)

    train_split = datasets.load(dataset, "train", data_dir)
    test_split = datasets.load(dataset, "test", data_dir)
    images, labels = train_split.images, train_split.labels.astype(np.int64)
    if limit_train is not None:
        images, labels = images[:limit_train], labels[:limit_train]
    test_labels = test_split.labels.astype(np.int64)

    init_seq, shuffle_seq, dropout_seq = np.random.SeedSequence(seed).spawn(3)
    shuffle_rng = np.random.default_rng(shuffle_seq)
    if preset.conv:
        net: MLP | CNN = CNN(preset.conv, preset.hidden, preset.kernel, quantizer,
                             np.random.default_rng(init_seq), np.random.default_rng(dropout_seq),
                             dropout_hidden=preset.dropout_hidden)
    else:
        net = MLP(preset.hidden, mode, quantizer, np.random.default_rng(init_seq),
                  np.random.default_rng(dropout_seq), dropout_input=preset.dropout_input,
                  dropout_hidden=preset.dropout_hidden)
    x_train = net.encode(images)
    opt = Adam(net.param_groups(), lr=lr0)
    history: list[dict] = []
    start = time.perf_counter()
    n = x_train.shape[0]
    for epoch in range(epochs):
        t0 = time.perf_counter()
        opt.lr = decayed_lr(lr0, lr1, epoch, epochs)
        order = shuffle_rng.permutation(n)
        total_loss, correct = 0.0, 0
        steps = range(0, n, batch)
        bar = tqdm(steps, desc=f"{arch} {mode} epoch {epoch + 1}/{epochs}", disable=not progress,
                   leave=False, unit="batch")
        for s in bar:
            idx = order[s:s + batch]
            logits = net.forward(x_train[idx], training=True)
            value, grad = loss_fn(logits, labels[idx])
            net.backward(grad)
            opt.step()
            net.constrain()
            total_loss += value * len(idx)
            correct += int((np.argmax(logits, axis=1) == labels[idx]).sum())
        test_acc = float((net.predict(test_split.images) == test_labels).mean())
        history.append({"epoch": epoch + 1, "lr": opt.lr, "loss": total_loss / n,
                        "train_accuracy": correct / n, "test_accuracy": test_acc,
                        "seconds": time.perf_counter() - t0})
        if progress:
            tqdm.write(f"epoch {epoch + 1}/{epochs}: loss {total_loss / n:.4f} "
                       f"train {correct / n:.4f} test {test_acc:.4f} "
                       f"({history[-1]['seconds']:.1f} s)", file=sys.stderr)
    seconds = time.perf_counter() - start
    result = TrainResult(None, net, history, history[-1]["test_accuracy"], seconds)
    if mode == "W1A1":
        meta = {"dataset": dataset, "arch": arch, "mode": mode, "epochs": epochs, "seed": seed,
                "hidden": list(preset.hidden),
                "float_test_accuracy": result.float_test_accuracy,
                "training_seconds": round(seconds, 3)}
        if isinstance(quantizer, PixelInput):
            meta["input"] = quantizer.kind
        else:
            meta["input_thresholds"] = list(quantizer.thresholds)
        if preset.conv:
            meta.update(conv=[list(block) for block in preset.conv], kernel=preset.kernel)
        result.model = net.export(meta)
    if out is not None:
        result.out = result.model.save(out)
        if curves_png is None:
            curves_png = Path(out).with_suffix(".curves.png")
    if curves_png is not None:
        result.curves_png = plot_curves(history, Path(curves_png),
                                        f"{arch} {mode} on {dataset} (seed {seed})")
    return result


def plot_curves(history: list[dict], path: Path, title: str) -> Path:
    """Plot loss and train/test accuracy per epoch into a PNG, written atomically."""
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
