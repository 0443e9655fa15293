"""The trainer's losses (``bnnhw.train.losses``): gradients, values and names."""

import numpy as np
import pytest
from bnnhw.train.losses import cross_entropy, get_loss, squared_hinge
from gradients import numeric_grad


@pytest.mark.parametrize("loss_fn", [cross_entropy, squared_hinge])
def test_loss_gradients_match_numeric(loss_fn):
    rng = np.random.default_rng(4)
    z = rng.normal(size=(5, 4))
    y = np.array([0, 3, 1, 1, 2])
    value, grad = loss_fn(z, y)
    np.testing.assert_allclose(grad, numeric_grad(lambda: loss_fn(z, y)[0], z),
                               rtol=1e-5, atol=1e-8)
    assert value > 0


def test_loss_values():
    z = np.array([[2.0, -1.0], [0.0, 0.0]])
    y = np.array([0, 1])
    assert squared_hinge(z, y)[0] == pytest.approx((0 + 0 + 1 + 1) / 2)
    expected = (np.log(1 + np.exp(-3.0)) + np.log(2.0)) / 2
    assert cross_entropy(z, y)[0] == pytest.approx(expected)


def test_get_loss_names_choices():
    with pytest.raises(ValueError, match="'hinge'"):
        get_loss("hinge")
