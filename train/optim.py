"""Adam with an exponentially decaying learning rate.

For a parameter ``p`` with gradient ``g`` at step ``t`` (1-based)::

    m <- b1 m + (1 - b1) g,      v <- b2 v + (1 - b2) g^2
    p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

The learning rate of epoch ``e`` (0-based) of ``E`` is ``lr0 * (lr_end / lr0) ** (e / (E - 1))``
(a geometric sweep from ``lr0`` to ``lr_end``; ``lr0`` for a single epoch).
"""

from __future__ import annotations

import numpy as np


def decayed_lr(lr0: float, lr_end: float, epoch: int, epochs: int) -> float:
    """Learning rate of ``epoch`` (0-based): geometric from ``lr0`` to ``lr_end``."""
    if epochs <= 1:
        return lr0
    return float(lr0 * (lr_end / lr0) ** (epoch / (epochs - 1)))


class Adam:
    """Adam over a list of ``(params, grads)`` dict pairs, updated in place (float32).

    Parameters
    ----------
    groups : list of (dict, dict)
        Each layer's ``params`` and ``grads`` dicts (same keys).
    lr, beta1, beta2, eps : float
    """

    def __init__(self, groups: list[tuple[dict, dict]], lr: float = 1e-3, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8) -> None:
        self.groups = groups
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.t = 0
        self.m = [{k: np.zeros_like(v) for k, v in p.items()} for p, _ in groups]
        self.v = [{k: np.zeros_like(v) for k, v in p.items()} for p, _ in groups]

    def step(self) -> None:
        """Apply one update with the gradients currently stored in the groups."""
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        step = np.float32(self.lr * np.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t))
        eps = np.float32(self.eps * np.sqrt(1 - b2 ** self.t))
        for (params, grads), m, v in zip(self.groups, self.m, self.v, strict=True):
            for name, p in params.items():
                g = grads[name]
                m[name] *= np.float32(b1)
                m[name] += np.float32(1 - b1) * g
                v[name] *= np.float32(b2)
                v[name] += np.float32(1 - b2) * (g * g)
                p -= step * m[name] / (np.sqrt(v[name]) + eps)
