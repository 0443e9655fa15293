"""Adam with an exponentially decaying learning rate.

For a parameter ``p`` with gradient ``g`` at step ``t`` (1-based)::

    m <- b1 m + (1 - b1) g,      v <- b2 v + (1 - b2) g^2
    p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    p <- clip(p, -b, b)          for a parameter with a bound b (latent binary weights)

computed as ``p - step * m / (sqrt(v) + eps')`` with ``step = lr sqrt(1 - b2^t) / (1 - b1^t)``
and ``eps' = eps sqrt(1 - b2^t)``, in one pass over ``p, g, m, v``
(:func:`bnnhw.train.kernels.adam_update`).

The learning rate of epoch ``e`` (0-based) of ``E`` is ``lr0 * (lr_end / lr0) ** (e / (E - 1))``
(a geometric sweep from ``lr0`` to ``lr_end``; ``lr0`` for a single epoch).
"""

from __future__ import annotations

import numpy as np

from .kernels import adam_update


def decayed_lr(lr0: float, lr_end: float, epoch: int, epochs: int) -> float:
    """Learning rate of ``epoch`` (0-based): geometric from ``lr0`` to ``lr_end``."""
    if epochs <= 1:
        return lr0
    return float(lr0 * (lr_end / lr0) ** (epoch / (epochs - 1)))


class Adam:
    """Adam over a list of ``(params, grads, bounds)`` dict triples, updated in place (float32).

    Parameters
    ----------
    groups : list of (dict, dict, dict)
        Each layer's ``params`` and ``grads`` dicts (same keys) and its ``bounds`` (the
        parameters to keep in ``[-b, b]``).
    lr, beta1, beta2, eps : float
    """

    def __init__(self, groups: list[tuple[dict, dict, dict]], lr: float = 1e-3,
                 beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
        self.groups = groups
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.t = 0
        self.m = [{k: np.zeros_like(v) for k, v in p.items()} for p, _, _ in groups]
        self.v = [{k: np.zeros_like(v) for k, v in p.items()} for p, _, _ in groups]

    def step(self) -> None:
        """Apply one update with the gradients currently stored in the groups."""
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        step = self.lr * np.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)
        eps = self.eps * np.sqrt(1 - b2 ** self.t)
        for (params, grads, bounds), m, v in zip(self.groups, self.m, self.v, strict=True):
            for name, p in params.items():
                adam_update(p.reshape(-1), grads[name].reshape(-1), m[name].reshape(-1),
                            v[name].reshape(-1), step, eps, b1, b2, bounds.get(name, 0.0))

    def state(self) -> dict[str, np.ndarray]:
        """The moments, keyed ``"m.{group}.{name}"`` and ``"v.{group}.{name}"``, and ``t``."""
        state = {"t": np.array(self.t, dtype=np.int64)}
        for i, (m, v) in enumerate(zip(self.m, self.v, strict=True)):
            for name in m:
                state[f"m.{i}.{name}"] = m[name]
                state[f"v.{i}.{name}"] = v[name]
        return state

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state` in place (shapes and dtypes must match)."""
        self.t = int(state["t"])
        for i, (m, v) in enumerate(zip(self.m, self.v, strict=True)):
            for name in m:
                m[name][...] = state[f"m.{i}.{name}"]
                v[name][...] = state[f"v.{i}.{name}"]
