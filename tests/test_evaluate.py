"""``bnnhw.evaluate``: accuracy with the integer reference, and its input checks."""

from pathlib import Path

import numpy as np
import pytest

from bnnhw import datasets, reference
from bnnhw.evaluate import check_fits_dataset, check_limit, evaluate
from bnnhw.model import DenseLayer, InputQuantizer, Model, ModelError, load_model


@pytest.mark.parametrize("limit", [0, 10_001, 2.5, True, "5"])
def test_limit_out_of_range_names_the_value(limit):
    with pytest.raises(ValueError, match=rf"limit must be an integer from 1 to 10000 test "
                                         rf"images \(limit={limit!r}\)"):
        check_limit(limit)


def test_limit_defaults_to_all():
    assert check_limit(None) == 10_000 and check_limit(7) == 7 and check_limit(None, 5) == 5


def test_model_that_does_not_fit_the_dataset():
    rng = np.random.default_rng(0)
    model = Model(InputQuantizer.fixed(127.5, 36), (DenseLayer(rng.integers(0, 2, (4, 36))),))
    with pytest.raises(ModelError, match="m.npz takes 36 pixels and scores 4 classes, but mnist "
                                         "has 784 pixels and 10 classes"):
        check_fits_dataset(model, "mnist", "m.npz")


@pytest.mark.needs_data
def test_accuracy_and_confusion_equal_the_reference():
    path = Path(__file__).resolve().parents[1] / "docs" / "models" / "tfc_mnist.npz"
    model = load_model(path)
    result = evaluate(path, "mnist", 300)
    test = datasets.load("mnist", "test")
    classes, _ = reference.infer(model, test.images[:300])
    assert result["images"] == 300
    assert result["accuracy"] == float((classes == test.labels[:300]).mean())
    confusion = np.array(result["confusion"])
    assert confusion.sum() == 300 and np.trace(confusion) == int((classes == test.labels[:300])
                                                                 .sum())
    assert result["model_sha256"] == model.sha256() and result["topology"] == model.topology
