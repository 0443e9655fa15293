"""Layers of the float training network, forward and backward by hand (numpy, float32).

Every layer keeps what its backward pass needs from the last forward call. Parameters are
float32 arrays in ``params`` with their gradients, under the same names, in ``grads``.

Binarization follows :mod:`bnnhw.passes`: ``sign(x) = +1`` for ``x >= 0`` and ``-1``
otherwise. The gradient of ``sign`` is the straight-through estimator of ``hardtanh``::

    d sign(x) / dx  :=  1 if |x| <= 1 else 0

For binary weights the estimator is the identity (BinaryConnect): the latent real weights
receive the gradient of the binary weights and are kept in ``[-1, 1]`` by the optimizer, which
reads each layer's ``bounds``.

Memory traffic: in training mode the elementwise work runs in the one-pass kernels of
:mod:`bnnhw.train.kernels`, into buffers a layer keeps from one step to the next (same shape,
same array), and the backward pass overwrites the incoming gradient where nothing else reads it.
Eval mode allocates fresh arrays and computes with numpy, in the expressions the fold pass
reproduces.
"""

from __future__ import annotations

import numpy as np

from bnnhw.model import PIXEL_MAX
from bnnhw.passes import batchnorm_eval, batchnorm_scale, pixel_preactivation

from . import kernels

F32 = np.float32


def sign(x: np.ndarray) -> np.ndarray:
    """``+1`` where ``x >= 0``, ``-1`` elsewhere, as float32."""
    return np.where(x >= 0, F32(1), F32(-1))


class Layer:
    """Base class: ``forward(x, training)``, ``backward(grad) -> grad_input``, parameters.

    ``bounds`` maps a parameter name to ``b > 0`` when the parameter must stay in ``[-b, b]``
    (the latent weights of a binary layer); the optimizer clips it in the same pass.
    """

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.bounds: dict[str, float] = {}
        self._buffers: dict[str, np.ndarray] = {}

    def buffer(self, name: str, shape: tuple[int, ...], dtype=F32) -> np.ndarray:
        """A scratch array kept between steps: the same one again while the shape is the same.

        The contents are undefined; the caller overwrites them.
        """
        array = self._buffers.get(name)
        if array is None or array.shape != tuple(shape) or array.dtype != dtype:
            array = self._buffers[name] = np.empty(shape, dtype=dtype)
        return array

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        """Compute the output for ``x`` (float32, shape ``(N, features)``)."""
        raise NotImplementedError

    def backward(self, grad: np.ndarray) -> np.ndarray:
        """Given ``dL/d output``, store parameter gradients and return ``dL/d input``."""
        raise NotImplementedError


XNOR_MIN_CHANNELS = 64
"""Input channels from which a binary layer's training forward runs on XNOR and popcount of
pixel words (``ceil(C / 64)`` words per pixel, ``K^2`` pixels per window).

Below one 64-bit word per pixel the pixel words are mostly padding; a narrower convolution
packs window rows instead (:data:`XNOR_MIN_ROW_BITS`)."""

XNOR_MIN_ROW_BITS = 32
"""Bits of a window row (``K * C``, at most 64) from which a convolution with fewer than
:data:`XNOR_MIN_CHANNELS` input channels runs on XNOR and popcount of row words (one word per
window row, ``K`` per window).

The popcount product costs ``K`` word operations per output channel and position whatever
``C``, BLAS ``K^2 C`` multiply-adds. Measured on one thread for a batch of 50 13x13 maps to 32,
16 and 8 output channels: 16 channels 3x3 (48 bits) take 0.16 ms of popcount plus about 0.08 ms
of packing against BLAS's 0.43 ms; 8 channels (24 bits) 0.12 ms plus packing against 0.14; 4
channels 0.11 against 0.07."""


def binary_product(layer: BinaryLayer, x: np.ndarray, kernel: int, out: np.ndarray) -> bool:
    """Write ``sign(W)`` of ``layer`` to its buffer ``layer._wb`` and, if it can, the product.

    ``x`` is the input map (N, H, W, C) (a dense layer's (M, K) input as (M, 1, 1, K)) and
    ``out`` (N, OH, OW, OC) the output to fill. When ``C >= XNOR_MIN_CHANNELS`` (pixel words),
    or ``XNOR_MIN_ROW_BITS <= K C <= 64`` (row words), and every input lies in
    ``{-m, 0, +m}`` (signs, possibly after inverted dropout), ``out`` becomes
    ``sum_k x_k sign(W)_ok`` by :func:`bnnhw.train.kernels.xnor_conv` and the function returns
    ``True``: for ``m = 1`` these are the float32 product's integers exactly, otherwise ``m``
    times the integer, rounded once. Otherwise ``out`` is untouched and it returns ``False``.
    """
    w = layer.params["W"]
    layer.sign_into_buffer()
    channels = x.shape[-1]
    pixel_words = channels >= XNOR_MIN_CHANNELS
    rows = not pixel_words and XNOR_MIN_ROW_BITS <= kernel * channels <= kernels.WORD_BITS
    if not (pixel_words or rows):
        return False
    words = -(-channels // kernels.WORD_BITS)
    pixels = x.reshape(-1, channels)
    bits = layer.buffer("xbits", (pixels.shape[0], words), np.uint64)
    nonzero = layer.buffer("xnonzero", (pixels.shape[0], words), np.uint64)
    magnitude = kernels.pack_uniform_signs(pixels, bits, nonzero)
    if magnitude < 0:
        return False
    shape = (*x.shape[:3], words)
    if rows:
        row_shape = (*x.shape[:2], x.shape[2] - kernel + 1, 1)
        packed_weights = layer.buffer("wbits", (kernel, 1, w.shape[0]), np.uint64)
        row_bits = layer.buffer("xrows", row_shape, np.uint64)
        row_nonzero = layer.buffer("xrows_nonzero", row_shape, np.uint64)
        kernels.join_window_rows(bits.reshape(shape), kernel, channels, row_bits)
        kernels.join_window_rows(nonzero.reshape(shape), kernel, channels, row_nonzero)
        bits, nonzero, height, width = row_bits, row_nonzero, kernel, 1
    else:
        packed_weights = layer.buffer("wbits", (kernel * kernel, words, w.shape[0]), np.uint64)
        bits, nonzero, height, width = bits.reshape(shape), nonzero.reshape(shape), kernel, kernel
    kernels.pack_weight_signs(w, packed_weights)
    kernels.xnor_conv(bits, nonzero, magnitude, packed_weights, height, width, out)
    return True


class BinaryLayer(Layer):
    """A layer with latent real weights ``W`` clipped to ``[-1, 1]`` whose forward uses
    ``sign(W)`` (BinaryConnect): the dense and the convolution layers.

    Parameters
    ----------
    shape : tuple of int
        ``(out, in)`` of ``W``.
    rng : numpy.random.Generator
        Draws the latent weights uniformly from ``[-init, init]``.
    init : float
    """

    def __init__(self, shape: tuple[int, int], rng: np.random.Generator,
                 init: float = 1.0) -> None:
        super().__init__()
        self.params["W"] = rng.uniform(-init, init, shape).astype(F32)
        self.grads["W"] = np.zeros_like(self.params["W"])
        self.bounds["W"] = 1.0
        self.need_input_grad = True

    def binary_weights(self) -> np.ndarray:
        """``sign(W)`` as float32 +-1."""
        return sign(self.params["W"])

    def sign_into_buffer(self) -> np.ndarray:
        """Training: write ``sign(W)`` into the kept buffer ``_wb`` (float32 +-1) and return it."""
        self._wb = self.buffer("wb", self.params["W"].shape)
        kernels.sign_into(self.params["W"].reshape(-1), self._wb.reshape(-1))
        return self._wb


class BinaryDense(BinaryLayer):
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
        super().__init__((out_features, in_features), rng, init)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._x = x
        rows, out_features = x.shape[0], self.params["W"].shape[0]
        if training:
            out = self.buffer("out", (rows, out_features))
            if binary_product(self, x.reshape(rows, 1, 1, -1), 1,
                              out.reshape(rows, 1, 1, out_features)):
                return out
        else:
            self._wb = self.binary_weights()
        return x @ self._wb.T

    def backward(self, grad: np.ndarray) -> np.ndarray:
        np.matmul(grad.T, self._x, out=self.grads["W"])
        return grad @ self._wb if self.need_input_grad else grad


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
    expression the fold pass turns into integer thresholds, computed operation by operation in
    :func:`bnnhw.train.kernels.batchnorm_eval_into` (bit-identical, tested).

    Backward (training mode), with ``g = dL/dy`` and batch size ``n``::

        dL/dgamma = sum g * xhat,   dL/dbeta = sum g
        dL/dx = gamma / (n sigma) * (n g - sum g - xhat * sum(g * xhat))
    """

    def __init__(self, features: int, eps: float = 1e-4, momentum: float = 0.1) -> None:
        super().__init__()
        self.params["gamma"] = np.ones(features, dtype=F32)
        self.params["beta"] = np.zeros(features, dtype=F32)
        self.grads = {name: np.zeros_like(value) for name, value in self.params.items()}
        self.running_mean = np.zeros(features, dtype=F32)
        self.running_var = np.ones(features, dtype=F32)
        self.eps = eps
        self.momentum = momentum

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        if not training:
            x = np.ascontiguousarray(x, dtype=F32)
            out = np.empty_like(x)
            scale = batchnorm_scale(self.running_var, self.params["gamma"], self.eps, F32)
            kernels.batchnorm_eval_into(x, self.running_mean, scale, self.params["beta"], out)
            return out
        n, c = x.shape
        dtype = self.params["gamma"].dtype
        x = np.ascontiguousarray(x, dtype=dtype)
        self._xhat = self.buffer("xhat", x.shape, dtype)
        out = self.buffer("out", x.shape, dtype)
        mean, var, self._sigma = (np.empty(c, dtype) for _ in range(3))
        kernels.batchnorm_train(x, self.params["gamma"], self.params["beta"], self.eps,
                                self._xhat, out, mean, var, self._sigma)
        self.update_running(mean, var, n)
        return out

    def update_running(self, mean: np.ndarray, var: np.ndarray, n: int) -> None:
        """Move the running statistics towards a batch's ``mean`` and biased ``var`` over
        ``n`` samples (the variance with the unbiased estimate)."""
        m = F32(self.momentum)
        unbiased = var * F32(n / max(n - 1, 1))
        self.running_mean = ((1 - m) * self.running_mean + m * mean).astype(F32)
        self.running_var = ((1 - m) * self.running_var + m * unbiased).astype(F32)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        grad = np.ascontiguousarray(grad, dtype=self._xhat.dtype)
        for name, value in self.params.items():
            if self.grads[name].dtype != value.dtype:
                self.grads[name] = np.zeros_like(value)
        kernels.batchnorm_backward(grad, self._xhat, self.params["gamma"], self._sigma,
                                   self.grads["gamma"], self.grads["beta"])
        return grad


class OutputBatchNorm(BatchNorm1d):
    """Batch norm on the class scores (the output layer's ``dot``), as BNN recipes end.

    Training is :class:`BatchNorm1d`'s. Eval computes
    :func:`bnnhw.passes.batchnorm_eval` in **float64** and returns float64 scores: on the
    integer ``dot`` the scores are then the affine lines ``a_c dot + b_c`` to float64
    precision, which :func:`bnnhw.passes.fold_output_affine` turns into exact integer scores
    from :meth:`table` (the same expression on every ``dot`` the layer can see), so the
    exported model's argmax equals this network's on every input.
    """

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        if training:
            return super().forward(x, training)
        f64 = np.float64
        return batchnorm_eval(np.asarray(x, dtype=f64), self.running_mean.astype(f64),
                              self.running_var.astype(f64), self.params["gamma"].astype(f64),
                              self.params["beta"].astype(f64), self.eps)

    def table(self, fan_in: int) -> np.ndarray:
        """Eval scores ``(K + 1, C)`` for the popcounts ``P = 0..K`` (``dot = 2P - K``)."""
        dot = (2 * np.arange(fan_in + 1) - fan_in)[:, None]
        return self.forward(np.repeat(dot, self.running_mean.size, axis=1), training=False)


class SignActivation(Layer):
    """``sign`` forward; backward ``g * (|x| <= 1)`` (straight-through hardtanh)."""

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        if not training:
            return sign(x)
        x = np.ascontiguousarray(x, dtype=F32)
        out = self.buffer("out", x.shape)
        self._pass = self.buffer("pass", x.shape, np.bool_)
        kernels.sign_and_window(x.reshape(-1), out.reshape(-1), self._pass.reshape(-1))
        return out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        grad = np.ascontiguousarray(grad, dtype=F32)
        kernels.mask_inplace(grad.reshape(-1), self._pass.reshape(-1))
        return grad


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
        x = np.ascontiguousarray(x, dtype=F32)
        uniform = self.buffer("uniform", x.shape)
        self.rng.random(x.shape, dtype=F32, out=uniform)
        out = self.buffer("out", x.shape)
        self._mask = self.buffer("keep", x.shape, np.bool_)
        kernels.dropout_forward(x.reshape(-1), uniform.reshape(-1), F32(self.rate),
                                F32(1 / (1 - self.rate)), out.reshape(-1),
                                self._mask.reshape(-1))
        return out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        if self._mask is not None:
            grad = np.ascontiguousarray(grad, dtype=F32)
            kernels.dropout_backward(grad.reshape(-1), self._mask.reshape(-1),
                                     F32(1 / (1 - self.rate)))
        return grad


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
