"""Convolutional layers of the float training network and the binarized CNN.

Feature maps are float32 arrays ``(N, H, W, C)``, channel innermost, which is the ``(y, x, c)``
bit order of :mod:`bnnhw.model`; flattening a map is a reshape.

Block order: ``conv -> batch norm -> max-pool -> sign``. Since ``sign`` is monotone
non-decreasing and ``max`` returns one of its arguments, ``sign(max(BN(.)))`` equals
``max(sign(BN(.)))``, which the fold pass turns into thresholds followed by an OR over each
``2 x 2`` window (see :mod:`bnnhw.passes`). Seed 003 (CBCNN) pools *before* its batch norm; that
order is not kept here because with a negative batch-norm ``gamma`` it is an AND of the folded
bits, not the OR the hardware computes.
"""

from __future__ import annotations

import numpy as np

from bnnhw.model import PIXEL_MAX, InputQuantizer, Model, PixelInput
from bnnhw.passes import fold_model
from bnnhw.reference import im2col

from . import kernels
from .layers import (
    F32,
    BatchNorm1d,
    BinaryDense,
    BinaryLayer,
    Dropout,
    Layer,
    OutputBatchNorm,
    PixelScale,
    SignActivation,
    binary_product,
)
from .network import PREDICT_CHUNK, LayerStack, chunked_logits, output_head


class BinaryConv2d(BinaryLayer):
    """Binary convolution, stride 1, no padding: ``y = im2col(x) @ sign(W).T``.

    ``W`` is ``(OC, K * K * C)`` with column ``(ky * K + kx) * C + c`` (the window order of
    :func:`bnnhw.reference.im2col`), so ``sign(W)`` is the model file's weight matrix as is.

    Backward, with ``G = dL/dy`` as ``(N * OH * OW, OC)``: ``dL/dW = G.T @ im2col(x)`` (straight
    through ``sign``) and ``dL/dx`` scatters ``G @ sign(W)`` back over the windows.

    Parameters
    ----------
    in_shape : tuple of int
        ``(H, W, C)``.
    out_channels, kernel : int
    rng : numpy.random.Generator
        Latent weights uniform in ``[-1, 1]``.
    """

    def __init__(self, in_shape: tuple[int, int, int], out_channels: int, kernel: int,
                 rng: np.random.Generator) -> None:
        h, w, c = in_shape
        if kernel < 1 or kernel > min(h, w):
            raise ValueError(f"kernel must lie in [1, {min(h, w)}] for input {in_shape}, "
                             f"got {kernel}")
        super().__init__((out_channels, kernel * kernel * c), rng)
        self.in_shape, self.kernel = (h, w, c), kernel
        self.out_shape = (h - kernel + 1, w - kernel + 1, out_channels)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        n = x.shape[0]
        w = self.params["W"]
        if training:
            oh, ow, oc = self.out_shape
            k, c = self.kernel, self.in_shape[2]
            maps = np.ascontiguousarray(x, dtype=F32).reshape(n, *self.in_shape)
            self._cols = self.buffer("cols", (n * oh * ow, w.shape[1]))
            kernels.im2col_into(maps, k, self._cols.reshape(n, oh, ow, k, k, c))
            out = self.buffer("out", (self._cols.shape[0], oc))
            if not binary_product(self, maps, k, out.reshape(n, oh, ow, oc)):
                np.matmul(self._cols, self._wb.T, out=out)
            return out.reshape(n, *self.out_shape)
        cols = im2col(x.reshape(n, -1), self.in_shape, self.kernel)
        return (cols @ self.binary_weights().T).reshape(n, *self.out_shape)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        oh, ow, oc = self.out_shape
        g = grad.reshape(-1, oc)
        np.matmul(g.T, self._cols, out=self.grads["W"])
        if not self.need_input_grad:
            return grad
        k, (h, w, c) = self.kernel, self.in_shape
        dcols = self.buffer("dcols", self._cols.shape)
        np.matmul(g, self._wb, out=dcols)
        dx = self.buffer("dx", (g.shape[0] // (oh * ow), h, w, c))
        kernels.col2im(dcols.reshape(-1, oh, ow, k, k, c), k, dx)
        return dx


class BatchNorm2d(BatchNorm1d):
    """Batch norm per channel: :class:`BatchNorm1d` over the ``N * H * W`` positions.

    Eval mode is :func:`bnnhw.passes.batchnorm_eval` per element with the channel's
    parameters, the expression the fold pass turns into one threshold per channel.
    """

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return super().forward(x.reshape(-1, x.shape[-1]), training).reshape(x.shape)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return super().backward(grad.reshape(-1, grad.shape[-1])).reshape(grad.shape)


class MaxPool2d(Layer):
    """``2 x 2`` max-pool with stride 2 on ``(N, H, W, C)``; an odd last row or column is dropped.

    Backward routes each output gradient to the first maximum of its window (row-major order
    ``dy * 2 + dx``); the rest of the window, and a dropped edge, get 0.

    Parameters
    ----------
    in_shape : tuple of int
        ``(H, W, C)`` of the maps it pools (recorded for the export).
    """

    def __init__(self, in_shape: tuple[int, int, int]) -> None:
        super().__init__()
        if min(in_shape[:2]) < 2:
            raise ValueError(f"cannot max-pool a {in_shape[0]}x{in_shape[1]} map")
        self.in_shape = tuple(in_shape)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        n, h, w, c = x.shape
        x = np.ascontiguousarray(x)
        shape = (n, h // 2, w // 2, c)
        out = self.buffer("out", shape, x.dtype) if training else np.empty(shape, x.dtype)
        self._arg = self.buffer("arg", shape, np.uint8)
        self._in_shape = x.shape
        kernels.maxpool2_forward(x, out, self._arg)
        return out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        dx = self.buffer("dx", self._in_shape)
        kernels.maxpool2_backward(np.ascontiguousarray(grad, dtype=F32), self._arg, dx)
        return dx


class FusedActivation:
    """Training-mode fusion of a conv block's ``[PixelScale] BatchNorm2d [MaxPool2d] Sign``.

    The layers stay in :attr:`CNN.layers` (their parameters, statistics and eval-mode
    expressions are the ones exported); in training :class:`CNN` hands the block's span
    ``layers[start:end]`` to :func:`bnnhw.train.kernels.block_forward` and
    :func:`~bnnhw.train.kernels.block_backward`, which read the convolution output twice and
    write only the pooled maps (forward) or the input gradient (backward), instead of the
    dozen full-size passes of the separate layers. The maths is the layers': batch norm of
    ``prescale * x`` (``prescale = 1/255`` after a pixel layer), first maximum of each window,
    straight-through ``sign``.
    """

    def __init__(self, start: int, end: int, norm: BatchNorm2d, pool: bool,
                 prescale: float) -> None:
        self.start, self.end, self.norm, self.pool = start, end, norm, pool
        self.prescale = F32(prescale)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Pooled sign maps of the convolution output ``x`` (N, H, W, C)."""
        norm = self.norm
        self._x = x = np.ascontiguousarray(x, dtype=F32)
        n, h, w, c = x.shape
        shape = (n, h // 2, w // 2, c) if self.pool else x.shape
        out = norm.buffer("fused_out", shape)
        self._passes = norm.buffer("fused_passes", shape, np.bool_)
        self._arg = norm.buffer("fused_arg", shape, np.uint8)
        self._mean, var, self._sigma = (np.empty(c, F32) for _ in range(3))
        kernels.block_forward(x, self.prescale, norm.params["gamma"], norm.params["beta"],
                              F32(norm.eps), self.pool, out, self._passes, self._arg,
                              self._mean, var, self._sigma)
        norm.update_running(self._mean, var, n * h * w)
        return out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        """``dL/dx`` of the convolution output; leaves ``dL/dgamma``, ``dL/dbeta`` in the norm."""
        norm = self.norm
        dx = norm.buffer("fused_dx", self._x.shape)
        kernels.block_backward(np.ascontiguousarray(grad, dtype=F32), self._passes, self._arg,
                               self._x, self.prescale, self.pool, self._mean, self._sigma,
                               norm.params["gamma"], dx, norm.grads["gamma"],
                               norm.grads["beta"])
        return dx


CODE_MAX_BITS = 10
"""Largest window (``K * K * C`` input bits) of a first convolution that trains on window codes
(:class:`CodedFirstBlock`): a table of ``2^bits`` rows per output channel."""


class CodedFirstBlock:
    """Training-mode first conv block on window codes, for a sign input with few bits per window.

    When the network's input is signs (bit or thermometer input) and the first convolution's
    window holds ``B = K K C <= CODE_MAX_BITS`` bits, the window can only take ``2^B`` values.
    Each position's window becomes one integer code (:func:`~bnnhw.train.kernels.window_codes`),
    and the convolution output at that position is row ``code`` of the table
    ``T = S sign(W)^T``, where ``S`` (``2^B x B``) holds the ``+-1`` entries of every code. The
    block never materialises the convolution output or its ``im2col`` matrix:

    * forward (:func:`~bnnhw.train.kernels.coded_block_forward`): batch-norm statistics from the
      code histogram, then ``sign(maxpool?(BN(T[code])))`` as in :class:`FusedActivation`, the
      same values (the products are small integers, exact in float32 either way);
    * backward (:func:`~bnnhw.train.kernels.coded_block_backward`): the batch-norm gradients as
      in :class:`FusedActivation`, and the gradient of the conv output summed per code,
      ``G[code]``, so that ``dL/dW = G^T S``, the same sum as ``dx^T im2col(x)`` taken in
      another order (float64).

    If an input entry is not ``+-1``, :meth:`forward` returns None and the network runs the
    layers instead.
    """

    def __init__(self, conv: BinaryConv2d, fused: FusedActivation) -> None:
        self.conv, self.fused = conv, fused
        bits = conv.params["W"].shape[1]
        codes = np.arange(2**bits)[:, None]
        self.signs = np.where((codes >> np.arange(bits)) & 1, 1.0, -1.0)

    def forward(self, x: np.ndarray) -> np.ndarray | None:
        """Pooled sign maps of the block for the sign input ``x`` (N, H, W, C), or None."""
        conv, norm = self.conv, self.fused.norm
        n = x.shape[0]
        oh, ow, oc = conv.out_shape
        self._codes = conv.buffer("codes", (n, oh, ow), np.int64)
        if not kernels.window_codes(x.reshape(n, *conv.in_shape), conv.kernel, self._codes):
            return None
        self._table = (self.signs @ conv.sign_into_buffer().T).astype(F32)
        pool = self.fused.pool
        shape = (n, oh // 2, ow // 2, oc) if pool else (n, oh, ow, oc)
        out = norm.buffer("coded_out", shape)
        self._passes = norm.buffer("coded_passes", shape, np.bool_)
        self._arg = norm.buffer("coded_arg", shape, np.uint8)
        self._counts = norm.buffer("coded_counts", (len(self.signs),), np.int64)
        self._mean, var, self._sigma = (np.empty(oc, F32) for _ in range(3))
        kernels.coded_block_forward(self._codes, self._table, norm.params["gamma"],
                                    norm.params["beta"], F32(norm.eps), pool, self._counts,
                                    out, self._passes, self._arg, self._mean, var, self._sigma)
        norm.update_running(self._mean, var, n * oh * ow)
        return out

    def backward(self, grad: np.ndarray) -> None:
        """Leave ``dL/dW`` in the convolution and ``dL/dgamma``, ``dL/dbeta`` in the norm."""
        norm = self.fused.norm
        sums = norm.buffer("coded_sums", self._table.shape, np.float64)
        kernels.coded_block_backward(np.ascontiguousarray(grad, dtype=F32), self._passes,
                                     self._arg, self._codes, self._table, self._counts,
                                     self.fused.pool, self._mean, self._sigma,
                                     norm.params["gamma"], sums, norm.grads["gamma"],
                                     norm.grads["beta"])
        dw = self.conv.buffer("coded_dw", self.conv.grads["W"].shape, np.float64)
        np.matmul(sums.T, self.signs, out=dw)
        self.conv.grads["W"][...] = dw


class Flatten(Layer):
    """``(N, H, W, C) -> (N, H * W * C)``, element ``(y * W + x) * C + c`` (channel innermost)."""

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad.reshape(self._shape)


class CNN(LayerStack):
    """Binarized CNN (W1A1): conv blocks, dense blocks, a scaled binary output layer.

    The network, for an image of ``side x side`` pixels quantized to ``L`` bits each::

        x = 2 * bits - 1  as (N, side, side, L)
            (PixelInput: the pixels 0..255 as (N, side, side, 1), and the first conv's output
            divided by 255 before its batch norm, see :class:`~bnnhw.train.layers.PixelScale`)
        per conv block:  x = sign(maxpool?(BN(conv(x))))      (pool only if the block pools)
        flatten (y, x, c)
        per dense block: x = sign(BN(x @ sign(W).T))
        logits = alpha * (x @ sign(W_out).T),  alpha = exp(s) > 0
            (or, with ``output_bn``, a batch norm per class on x @ sign(W_out).T)

    :meth:`export` folds it into a :class:`bnnhw.model.Model` whose integer inference equals
    :meth:`predict` exactly (see the module docstring for the pool order).

    Parameters
    ----------
    conv : sequence of (int, bool)
        Output channels and "max-pool after" of each conv block.
    hidden : sequence of int
        Dense block widths.
    kernel : int
    quantizer : InputQuantizer or PixelInput
        Its pixels must be a square number; its levels are the input channels (one 8-bit
        channel for :class:`PixelInput`).
    rng, dropout_rng : numpy.random.Generator
    classes : int
    dropout_hidden : float
        Dropout before every dense layer (training only).
    bn_eps : float
    output_bn : bool
        End in a batch norm on the class scores instead of the scalar ``alpha``.
    """

    mode = "W1A1"

    def __init__(self, conv: tuple[tuple[int, bool], ...], hidden: tuple[int, ...], kernel: int,
                 quantizer: InputQuantizer | PixelInput, rng: np.random.Generator,
                 dropout_rng: np.random.Generator, classes: int = 10,
                 dropout_hidden: float = 0.0, bn_eps: float = 1e-4,
                 output_bn: bool = False) -> None:
        side = int(round(np.sqrt(quantizer.pixels)))
        if side * side != quantizer.pixels:
            raise ValueError(f"a CNN needs square images, got {quantizer.pixels} pixels")
        if not conv or any(c < 1 for c, _ in conv) or any(h < 1 for h in hidden):
            raise ValueError(f"conv channels must be positive and non-empty and hidden widths "
                             f"positive, got conv={conv} hidden={hidden}")
        self.quantizer, self.classes, self.pixels = quantizer, classes, quantizer.pixels
        self.conv, self.hidden, self.kernel = tuple(conv), tuple(hidden), kernel
        self.in_shape = (side, side, quantizer.levels)
        self.layers: list[Layer] = []
        shape = self.in_shape
        self._fused: dict[int, FusedActivation] = {}
        for index, (channels, pool) in enumerate(self.conv):
            conv_layer = BinaryConv2d(shape, channels, kernel, rng)
            self.layers.append(conv_layer)
            start, prescale = len(self.layers), 1.0
            if index == 0 and isinstance(quantizer, PixelInput):
                self.layers.append(PixelScale())
                prescale = 1 / PIXEL_MAX
            norm = BatchNorm2d(channels, bn_eps)
            self.layers.append(norm)
            shape = conv_layer.out_shape
            if pool:
                self.layers.append(MaxPool2d(shape))
                shape = (shape[0] // 2, shape[1] // 2, shape[2])
            self.layers.append(SignActivation())
            self._fused[start] = FusedActivation(start, len(self.layers), norm, pool, prescale)
        self.layers.append(Flatten())
        width = int(np.prod(shape))
        for h in self.hidden:
            if dropout_hidden:
                self.layers.append(Dropout(dropout_hidden, dropout_rng))
            self.layers += [BinaryDense(width, h, rng), BatchNorm1d(h, bn_eps), SignActivation()]
            width = h
        if dropout_hidden:
            self.layers.append(Dropout(dropout_hidden, dropout_rng))
        self.layers += output_head(width, classes, rng, output_bn, bn_eps)
        self.layers[0].need_input_grad = False
        first = self.layers[0]
        self._coded = None
        if (isinstance(quantizer, InputQuantizer) and 1 in self._fused
                and first.params["W"].shape[1] <= CODE_MAX_BITS):
            self._coded = CodedFirstBlock(first, self._fused[1])
        self._coded_active = False

    def encode(self, images: np.ndarray) -> np.ndarray:
        """``2 * bits - 1`` (int8) of uint8 images ``(N, pixels)``, shape ``(N, side, side, L)``.

        With :class:`PixelInput`: the pixels (uint8), shape ``(N, side, side, 1)``.
        """
        images = np.asarray(images)
        if images.ndim != 2 or images.shape[1] != self.pixels:
            raise ValueError(f"images must have shape (N, {self.pixels}), got {images.shape}")
        if isinstance(self.quantizer, PixelInput):
            return self.quantizer.quantize(images).astype(np.uint8).reshape(-1, *self.in_shape)
        bits = self.quantizer.quantize(images).astype(np.int8)
        return (bits * 2 - 1).astype(np.int8).reshape(-1, *self.in_shape)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        """Logits for encoded inputs; in training each conv block's activation runs fused
        (:class:`FusedActivation`), and a small-window first block on window codes
        (:class:`CodedFirstBlock`)."""
        if not training:
            return super().forward(x, training)
        i = 0
        self._coded_active = False
        if self._coded is not None:
            coded = self._coded.forward(x)
            if coded is not None:
                out, i, self._coded_active = coded, self._coded.fused.end, True
        if not self._coded_active:
            out = np.asarray(x, dtype=F32)
        while i < len(self.layers):
            if i in self._fused:
                out = self._fused[i].forward(out)
                i = self._fused[i].end
            else:
                out = self.layers[i].forward(out, training)
                i += 1
        return out

    def backward(self, grad: np.ndarray) -> None:
        """Back-propagate ``dL/dlogits``; the first convolution computes no input gradient."""
        ends = {block.end: block for block in self._fused.values()}
        i = len(self.layers)
        while i > 0:
            if self._coded_active and i == self._coded.fused.end:
                self._coded.backward(grad)
                return
            if i in ends:
                grad = ends[i].backward(grad)
                i = ends[i].start
            else:
                grad = self.layers[i - 1].backward(grad)
                i -= 1

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Eval-mode logits ``(N, classes)`` of uint8 images, in chunks (float32, or float64
        after an output batch norm)."""
        return chunked_logits(self, images, PREDICT_CHUNK // 8)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Eval-mode classes: ``argmax`` of the float logits, lowest index on ties."""
        return np.argmax(self.logits(images), axis=1).astype(np.int64)

    def export(self, meta: dict) -> Model:
        """Fold the network into an integer :class:`bnnhw.model.Model` (conv, maxpool, dense)."""
        hidden: list[dict] = []
        pending: dict = {}
        binary = [layer for layer in self.layers if isinstance(layer, BinaryConv2d | BinaryDense)]
        for layer in self.layers:
            if isinstance(layer, BinaryConv2d):
                pending = {"kind": "conv", "weights": layer.binary_weights(),
                           "kernel": layer.kernel, "in_shape": layer.in_shape}
            elif isinstance(layer, BinaryDense) and layer is not binary[-1]:
                pending = {"weights": layer.binary_weights()}
            elif isinstance(layer, BatchNorm1d) and not isinstance(layer, OutputBatchNorm):
                pending.update(mean=layer.running_mean, var=layer.running_var,
                               gamma=layer.params["gamma"], beta=layer.params["beta"],
                               eps=layer.eps)
                hidden.append(pending)
            elif isinstance(layer, MaxPool2d):
                hidden.append({"kind": "maxpool", "in_shape": layer.in_shape})
        return fold_model(self.quantizer, hidden, binary[-1].binary_weights(), meta,
                          self.output_table())
