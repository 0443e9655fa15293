"""Layers of the float training network, forward and backward by hand (numpy, float32).

Every layer keeps what its backward pass needs from the last forward call. Parameters are
float32 arrays in ``params`` with their gradients, under the same names, in ``grads``.

Binarization follows :mod:`bnnhw.passes`: ``sign(x) = +1`` for ``x >= 0`` and ``-1``
otherwise. The gradient of ``sign`` is the straight-through estimator of ``hardtanh``::

    d sign(x) / dx  :=  1 if |x| <= 1 else 0

For binary weights the estimator is the identity (BinaryConnect): the latent real weights
receive the gradient of the binary weights and are clipped to ``[-1, 1]`` after each step.
"""

from __future__ import annotations

import numpy as np

from bnnhw.model import PIXEL_MAX
from bnnhw.passes import batchnorm_eval, pixel_preactivation

F32 = np.float32


def sign(x: np.ndarray) -> np.ndarray:
    """``+1`` where ``x >= 0``, ``-1`` elsewhere, as float32."""
    return np.where(x >= 0, F32(1), F32(-1))


class Layer:
    """Base class: ``forward(x, training)``, ``backward(grad) -> grad_input``, parameters."""

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        """Compute the output for ``x`` (float32, shape ``(N, features)``)."""
        raise NotImplementedError

    def backward(self, grad: np.ndarray) -> np.ndarray:
        """Given ``dL/d output``, store parameter gradients and return ``dL/d input``."""
        raise NotImplementedError

    def constrain(self) -> None:
        """Project the parameters back onto their domain after an optimizer step."""


class BinaryDense(Layer):
    """``y = x @ sign(W).T`` with latent real weights ``W`` (MH, MW) clipped to ``[-1, 1]``.

    Backward: ``dL/dW = g.T @ x`` (straight through ``sign``), ``dL/dx = g @ sign(W)``.
    With ``x`` in ``{-1, +1}`` the products are small integers, exact in float32.

    Parameters
    ----------
    in_features, out_features : int
    rng : numpy.random.Generator
        Draws the latent weights uniformly from ``[-init, init]``.
    init : float
    """

    def __init__(self, in_features: int, out_features: int, rng: np.random.Generator,
                 init: float = 1.0) -> None:
        super().__init__()
        self.params["W"] = rng.uniform(-init, init, (out_features, in_features)).astype(F32)
        self.need_input_grad = True

    def binary_weights(self) -> np.ndarray:
        """``sign(W)`` as float32 +-1."""
        return sign(self.params["W"])

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._x = x
        self._wb = self.binary_weights()
        return x @ self._wb.T

    def backward(self, grad: np.ndarray) -> np.ndarray:
        self.grads["W"] = grad.T @ self._x
        return grad @ self._wb if self.need_input_grad else grad

    def constrain(self) -> None:
        np.clip(self.params["W"], -1, 1, out=self.params["W"])


class PixelScale(Layer):
    """``y = a / 255`` after the first layer of an 8-bit-input network (no parameters).

    The first layer multiplies the raw pixels (0..255, exact in float32) by +-1 weights, so its
    output ``a`` is an exact integer; dividing here (:func:`bnnhw.passes.pixel_preactivation`)
    equals feeding it ``x / 255`` and is the expression the fold pass searches. Backward:
    ``dL/da = g / 255``.
    """

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return pixel_preactivation(x, F32)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad / F32(PIXEL_MAX)


class Dense(Layer):
    """Real dense layer ``y = x @ W.T + b`` (Glorot-uniform ``W``, zero ``b``)."""

    def __init__(self, in_features: int, out_features: int, rng: np.random.Generator) -> None:
        super().__init__()
        bound = np.sqrt(6.0 / (in_features + out_features))
        self.params["W"] = rng.uniform(-bound, bound, (out_features, in_features)).astype(F32)
        self.params["b"] = np.zeros(out_features, dtype=F32)
        self.need_input_grad = True

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._x = x
        return x @ self.params["W"].T + self.params["b"]

    def backward(self, grad: np.ndarray) -> np.ndarray:
        self.grads["W"] = grad.T @ self._x
        self.grads["b"] = grad.sum(axis=0)
        return grad @ self.params["W"] if self.need_input_grad else grad


class BatchNorm1d(Layer):
    """Batch norm over features.

    Training: ``xhat = (x - m_B) / sqrt(v_B + eps)`` with the batch mean ``m_B`` and biased
    batch variance ``v_B``; ``y = gamma * xhat + beta``. The running statistics move as
    ``r <- (1 - momentum) r + momentum * batch`` (the variance with the unbiased estimate).
    Eval: :func:`bnnhw.passes.batchnorm_eval` on the float32 running statistics, which is the
    expression the fold pass turns into integer thresholds.

    Backward (training mode), with ``g = dL/dy`` and batch size ``n``::

        dL/dgamma = sum g * xhat,   dL/dbeta = sum g
        dL/dx = gamma / (n sigma) * (n g - sum g - xhat * sum(g * xhat))
    """

    def __init__(self, features: int, eps: float = 1e-4, momentum: float = 0.1) -> None:
        super().__init__()
        self.params["gamma"] = np.ones(features, dtype=F32)
        self.params["beta"] = np.zeros(features, dtype=F32)
        self.running_mean = np.zeros(features, dtype=F32)
        self.running_var = np.ones(features, dtype=F32)
        self.eps = eps
        self.momentum = momentum

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        if not training:
            return batchnorm_eval(x, self.running_mean, self.running_var, self.params["gamma"],
                                  self.params["beta"], self.eps)
        n = x.shape[0]
        mean = x.mean(axis=0)
        centred = x - mean
        var = (centred * centred).mean(axis=0)
        sigma = np.sqrt(var + F32(self.eps))
        self._xhat = centred / sigma
        self._sigma = sigma
        m = F32(self.momentum)
        unbiased = var * F32(n / max(n - 1, 1))
        self.running_mean = ((1 - m) * self.running_mean + m * mean).astype(F32)
        self.running_var = ((1 - m) * self.running_var + m * unbiased).astype(F32)
        return self._xhat * self.params["gamma"] + self.params["beta"]

    def backward(self, grad: np.ndarray) -> np.ndarray:
        xhat, n = self._xhat, grad.shape[0]
        sum_g = grad.sum(axis=0)
        sum_gx = (grad * xhat).sum(axis=0)
        self.grads["gamma"] = sum_gx
        self.grads["beta"] = sum_g
        scale = self.params["gamma"] / (F32(n) * self._sigma)
        return scale * (F32(n) * grad - sum_g - xhat * sum_gx)


class SignActivation(Layer):
    """``sign`` forward; backward ``g * (|x| <= 1)`` (straight-through hardtanh)."""

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._pass = np.abs(x) <= 1
        return sign(x)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad * self._pass


class Hardtanh(Layer):
    """``clip(x, -1, 1)``; gradient ``g * (|x| <= 1)``."""

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._pass = np.abs(x) <= 1
        return np.clip(x, -1, 1)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad * self._pass


class ReLU(Layer):
    """``max(x, 0)``; gradient ``g * (x > 0)``."""

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._pass = x > 0
        return np.maximum(x, 0)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad * self._pass


class Dropout(Layer):
    """Inverted dropout: in training keep each unit with probability ``1 - rate`` and divide
    by ``1 - rate``; identity in eval.

    Placed before a binary dense layer, it zeroes +-1 activations during training only.
    """

    def __init__(self, rate: float, rng: np.random.Generator) -> None:
        super().__init__()
        if not 0 <= rate < 1:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = rate
        self.rng = rng

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        if not training or self.rate == 0:
            self._mask = None
            return x
        keep = self.rng.random(x.shape, dtype=F32) >= F32(self.rate)
        self._mask = keep * F32(1 / (1 - self.rate))
        return x * self._mask

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad if self._mask is None else grad * self._mask


class Scale(Layer):
    """Scalar output scale ``y = exp(s) * x`` with a learnable log-scale ``s``.

    ``alpha = exp(s) > 0`` keeps the argmax of ``alpha * dot`` equal to the argmax of the
    integer popcounts. ``dL/ds = alpha * sum(g * x)``.
    """

    def __init__(self, alpha: float) -> None:
        super().__init__()
        if alpha <= 0:
            raise ValueError(f"the output scale must be positive, got {alpha}")
        self.params["s"] = np.array([np.log(alpha)], dtype=F32)

    @property
    def alpha(self) -> np.floating:
        """The current scale ``exp(s)`` (in the dtype of ``s``)."""
        return np.exp(self.params["s"][0])

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._x = x
        return x * self.alpha

    def backward(self, grad: np.ndarray) -> np.ndarray:
        alpha = self.alpha
        self.grads["s"] = np.array([alpha * np.sum(grad * self._x)], dtype=alpha.dtype)
        return grad * alpha
