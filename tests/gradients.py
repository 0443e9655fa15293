"""Central-difference gradients for the trainer's backward tests."""

import numpy as np


def numeric_grad(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar ``f()`` with respect to ``x`` (changed in place)."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        up = f()
        x[i] = old - h
        down = f()
        x[i] = old
        grad[i] = (up - down) / (2 * h)
    return grad


def assert_param_grads(layer, loss, names, rtol: float = 1e-5, atol: float = 1e-7) -> None:
    """``layer.grads[name]`` equals the central differences of ``loss()`` with respect to
    ``layer.params[name]`` for every name (the gradients of the layer's last backward)."""
    for name in names:
        np.testing.assert_allclose(layer.grads[name], numeric_grad(loss, layer.params[name]),
                                   rtol=rtol, atol=atol)
