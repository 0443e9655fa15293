"""Losses on logits ``z`` (N, C) and integer labels ``y`` (N,); each returns
``(mean loss, dL/dz)``.

* Squared hinge: with targets ``t_{n,c} = +1`` for the true class and ``-1`` otherwise,
  ``L = mean_n sum_c max(0, 1 - t z)^2``; ``dL/dz = -2 t max(0, 1 - t z) / N``.
* Softmax cross-entropy: ``L = mean_n (logsumexp(z_n) - z_{n,y_n})``;
  ``dL/dz = (softmax(z) - onehot(y)) / N``.
"""

from __future__ import annotations

import numpy as np

LOSSES = ("cross-entropy", "squared-hinge")


def squared_hinge(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Squared hinge loss and its gradient (see the module docstring)."""
    n = z.shape[0]
    t = np.full(z.shape, -1, dtype=z.dtype)
    t[np.arange(n), y] = 1
    margin = np.maximum(0, 1 - t * z)
    loss = float(np.sum(margin * margin, dtype=np.float64) / n)
    return loss, (-2 / n) * t * margin


def cross_entropy(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Softmax cross-entropy and its gradient (see the module docstring)."""
    n = z.shape[0]
    shifted = z - z.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    log_p = shifted - np.log(total)
    loss = float(-np.mean(log_p[np.arange(n), y], dtype=np.float64))
    grad = exp / total
    grad[np.arange(n), y] -= 1
    return loss, grad / n


def get_loss(name: str):
    """The loss function called ``name``; ``ValueError`` naming the value and the choices."""
    if name == "cross-entropy":
        return cross_entropy
    if name == "squared-hinge":
        return squared_hinge
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
