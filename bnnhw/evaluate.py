"""Accuracy of a model on a test set, with the bit-exact integer reference.

:func:`check_fits_dataset` refuses a model whose input or classes do not match the data set
(MNIST and Fashion-MNIST: 784 pixels, 10 classes); :func:`evaluate` scores a model file on
the first ``limit`` test images and returns accuracy, timing and the confusion matrix.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from . import datasets, reference
from .model import Model, ModelError, load_model

__all__ = ["DATASET_CLASSES", "DATASET_PIXELS", "check_fits_dataset", "check_limit", "evaluate"]

DATASET_CLASSES = 10
DATASET_PIXELS = 28 * 28
TEST_IMAGES = 10_000


def check_fits_dataset(model: Model, dataset: str, where: str = "model") -> None:
    """Raise :class:`bnnhw.model.ModelError` unless ``model`` reads and scores ``dataset``.

    The model must take the data set's 784 pixels and score its 10 classes; a model with
    fewer classes would index past its scores, one with more would never be right on some.
    """
    datasets.check_name(dataset)
    pixels = model.quantizer.pixels
    if pixels != DATASET_PIXELS or model.classes != DATASET_CLASSES:
        raise ModelError(f"{where} takes {pixels} pixels and scores {model.classes} classes, "
                         f"but {dataset} has {DATASET_PIXELS} pixels and {DATASET_CLASSES} "
                         f"classes")


def check_limit(limit: int | None, available: int = TEST_IMAGES) -> int:
    """The number of test images to use: ``limit`` (1 to ``available``) or all when None."""
    if limit is None:
        return available
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) \
            or not 1 <= limit <= available:
        raise ValueError(f"limit must be an integer from 1 to {available} test images "
                         f"(limit={limit!r})")
    return int(limit)


def evaluate(model_path: str | Path, dataset: str = "mnist", limit: int | None = None,
             data_dir: str | Path | None = None) -> dict[str, Any]:
    """Accuracy of a model file on the first ``limit`` test images, with the integer reference.

    Parameters
    ----------
    model_path : path
    dataset : {"mnist", "fashion-mnist"}
    limit : int, optional
        1 to 10,000 test images (all when omitted).
    data_dir : path, optional
        Folder with the IDX files (see :func:`bnnhw.datasets.load`).

    Returns
    -------
    dict
        ``accuracy`` = correct / ``images``, ``images``, ``seconds`` (reference inference
        only), ``ms_per_image``, ``model_sha256``, ``topology``, ``dataset`` and
        ``confusion`` (10x10 counts, rows = true label, columns = predicted class).

    Raises
    ------
    bnnhw.model.ModelError
        An unreadable model, or one that does not fit the data set (:func:`check_fits_dataset`).
    ValueError
        ``limit`` out of range.
    bnnhw.datasets.DatasetError
        Unknown, missing or corrupt data set.
    """
    limit = check_limit(limit)
    model = load_model(model_path)
    check_fits_dataset(model, dataset, str(model_path))
    split = datasets.load(dataset, "test", data_dir)
    images, labels = split.images[:limit], split.labels[:limit]
    start = time.perf_counter()
    classes, _ = reference.infer(model, images)
    seconds = time.perf_counter() - start
    confusion = np.zeros((model.classes, model.classes), dtype=np.int64)
    np.add.at(confusion, (labels, classes), 1)
    return {
        "model": str(model_path), "model_sha256": model.sha256(), "topology": model.topology,
        "dataset": dataset, "images": int(len(labels)),
        "accuracy": float((classes == labels).mean()),
        "seconds": seconds, "ms_per_image": 1e3 * seconds / len(labels),
        "confusion": confusion.tolist(),
    }
