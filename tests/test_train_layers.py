"""The trainer's layers (``bnnhw.train.layers``): backward passes against central differences,
straight-through estimators and exact binary products."""

import numpy as np
import pytest
from bnnhw.train.layers import BatchNorm1d, BinaryDense, Dense, Scale, SignActivation
from bnnhw.train.optim import Adam
from gradients import assert_param_grads, numeric_grad


def test_batchnorm_backward_matches_numeric_gradient():
    rng = np.random.default_rng(1)
    bn = BatchNorm1d(3)
    bn.params["gamma"] = rng.normal(size=3)
    bn.params["beta"] = rng.normal(size=3)
    x = rng.normal(size=(5, 3))
    r = rng.normal(size=(5, 3))

    def loss():
        return float(np.sum(bn.forward(x, True) * r))

    loss()
    dx = bn.backward(r.copy())  # backward overwrites the gradient it is given
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=1e-5, atol=1e-7)
    bn.forward(x, True)
    bn.backward(r.copy())
    assert_param_grads(bn, loss, ("gamma", "beta"))


def test_dense_backward_matches_numeric_gradient():
    rng = np.random.default_rng(2)
    dense = Dense(4, 3, rng)
    dense.params = {k: v.astype(np.float64) for k, v in dense.params.items()}
    x = rng.normal(size=(6, 4))
    r = rng.normal(size=(6, 3))

    def loss():
        return float(np.sum(dense.forward(x, True) * r))

    loss()
    dx = dense.backward(r)
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=1e-5, atol=1e-7)
    assert_param_grads(dense, loss, ("W", "b"))


def test_binary_dense_is_straight_through_and_exact():
    rng = np.random.default_rng(3)
    layer = BinaryDense(5, 2, rng)
    x = np.where(rng.random((4, 5)) < 0.5, -1.0, 1.0).astype(np.float32)
    y = layer.forward(x, True)
    wb = np.where(layer.params["W"] >= 0, 1, -1)
    np.testing.assert_array_equal(y, x.astype(np.int64) @ wb.T)
    g = rng.normal(size=(4, 2)).astype(np.float32)
    dx = layer.backward(g)
    np.testing.assert_allclose(layer.grads["W"], g.T @ x, rtol=1e-6)
    np.testing.assert_allclose(dx, g @ wb, rtol=1e-6)
    layer.grads["W"][...] = -1e3
    opt = Adam([(layer.params, layer.grads, layer.bounds)], lr=10.0)
    opt.step()
    assert layer.params["W"].max() == 1 and layer.params["W"].min() >= -1


def test_sign_activation_straight_through_hardtanh():
    act = SignActivation()
    out = act.forward(np.array([[-2.0, -1.0, -0.0, 0.5, 1.0, 1.5]], np.float32), True)
    assert out.tolist() == [[-1, -1, 1, 1, 1, 1]]
    assert act.backward(np.ones((1, 6), np.float32)).tolist() == [[0, 1, 1, 1, 1, 0]]


def test_scale_backward_matches_numeric_gradient():
    scale = Scale(0.3)
    scale.params["s"] = scale.params["s"].astype(np.float64)
    x = np.array([[1.0, -3.0], [2.0, 5.0]])
    r = np.array([[0.5, -1.0], [2.0, 0.25]])

    def loss():
        return float(np.sum(scale.forward(x, True) * r))

    loss()
    scale.backward(r)
    np.testing.assert_allclose(scale.grads["s"], numeric_grad(loss, scale.params["s"]),
                               rtol=1e-5)
    with pytest.raises(ValueError, match="positive, got 0"):
        Scale(0.0)
