"""The float MLP that trains, predicts, and (in mode W1A1) exports to an integer model.

Modes, for hidden widths ``h_1 .. h_L`` and ``C`` classes:

``W1A1``
    ``x`` in {-1, +1} (the input quantizer's bits), then per hidden layer
    ``a = sign(BN(x @ sign(W).T))`` and finally ``logits = alpha * (a @ sign(W_out).T)`` with
    one learnable scalar ``alpha = exp(s) > 0``. :meth:`MLP.export` folds this network into a
    :class:`bnnhw.model.Model` whose integer inference reproduces :meth:`MLP.predict` exactly:
    BN in eval mode is :func:`bnnhw.passes.batchnorm_eval` on float32 parameters, the dot
    products of +-1 vectors are exact integers in float32, and ``alpha * dot`` keeps the order
    (and the ties) of the popcounts ``P = (dot + K) / 2``.
``W1A32``
    BinaryConnect: binary weights, real activations ``hardtanh(BN(x @ sign(W).T))``, the same
    binary scaled output layer.
``FP32``
    Real weights: ``relu(BN(x @ W.T + b))`` and a real output layer ``a @ W_out.T + b_out``.

The input of W1A1 is quantized, or (with a :class:`bnnhw.model.PixelInput`, input kind
``pixels8``) the raw 8-bit pixels: the first layer is then ``a = x @ sign(W).T`` on the pixels
``x`` in [0, 255] (exact integers in float32) followed by ``a / 255``
(:class:`~bnnhw.train.layers.PixelScale`, the same as reading ``x / 255``) and its batch norm,
which :func:`bnnhw.passes.fold_pixels` folds exactly into integer thresholds on ``a``. W1A32 and
FP32 read ``pixel / 127.5 - 1`` unless a quantizer is given.
"""

from __future__ import annotations

import numpy as np

from bnnhw.model import InputQuantizer, Model, PixelInput
from bnnhw.passes import fold_model

from .layers import (
    F32,
    BatchNorm1d,
    BinaryDense,
    Dense,
    Dropout,
    Hardtanh,
    Layer,
    OutputBatchNorm,
    PixelScale,
    ReLU,
    Scale,
    SignActivation,
)

MODES = ("W1A1", "W1A32", "FP32")
PREDICT_CHUNK = 2048


def check_mode(mode: str) -> str:
    """Return ``mode`` if known; ``ValueError`` naming the value and the choices."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    return mode


class LayerStack:
    """What every trainable network shares: a ``layers`` list of :class:`Layer` objects."""

    layers: list[Layer]

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        """Logits for encoded inputs ``x`` (see :meth:`encode`)."""
        out = np.asarray(x, dtype=F32)
        for layer in self.layers:
            out = layer.forward(out, training)
        return out

    def state(self) -> dict[str, np.ndarray]:
        """Every parameter and running statistic, keyed ``"{layer}.{name}"``."""
        state = {}
        for i, layer in enumerate(self.layers):
            for name, value in layer.params.items():
                state[f"{i}.{name}"] = value
            if isinstance(layer, BatchNorm1d):
                state[f"{i}.running_mean"] = layer.running_mean
                state[f"{i}.running_var"] = layer.running_var
        return state

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state` (the same keys, shapes and dtypes); ``ValueError`` otherwise."""
        mine = self.state()
        if mine.keys() != state.keys():
            raise ValueError(f"state keys differ: missing {sorted(mine.keys() - state.keys())}, "
                             f"unexpected {sorted(state.keys() - mine.keys())}")
        for key, value in state.items():
            if value.shape != mine[key].shape or value.dtype != mine[key].dtype:
                raise ValueError(f"state {key}: {value.dtype}{value.shape}, expected "
                                 f"{mine[key].dtype}{mine[key].shape}")
        for i, layer in enumerate(self.layers):
            for name, value in layer.params.items():
                value[...] = state[f"{i}.{name}"]
            if isinstance(layer, BatchNorm1d):
                layer.running_mean = state[f"{i}.running_mean"].copy()
                layer.running_var = state[f"{i}.running_var"].copy()

    def calibrate_batchnorm(self, images: np.ndarray, chunk: int = 1000) -> None:
        """Replace every batch norm's running statistics by the exact statistics of its input
        over ``images``, the network before it in eval mode.

        Layer by layer, over all ``N`` images at once (held in chunks of ``chunk`` images): a
        batch norm whose input values, pooled over the images and any spatial positions, are
        ``z_1 .. z_M`` gets ``running_mean = (1/M) sum z_i`` and ``running_var = 1/(M - 1)
        sum (z_i - mean)**2`` (float64 sums, stored as float32), then the images pass through
        it in eval mode to the next layer. The running statistics that training keeps are an
        exponential average over the last few batches (:class:`BatchNorm1d`), so the
        thresholds ``sign(BN(.))`` folds into move from batch to batch; these are the
        statistics that the exported, eval-mode network actually sees. Parameters are not
        touched, so training is unaffected; only eval mode changes.
        """
        images = np.asarray(images)
        if images.ndim != 2 or images.shape[0] < 2:
            raise ValueError(f"calibration needs at least 2 images as (N, pixels), got shape "
                             f"{images.shape}")
        parts = [np.asarray(self.encode(images[s:s + chunk]), dtype=F32)
                 for s in range(0, images.shape[0], chunk)]
        for layer in self.layers:
            if isinstance(layer, BatchNorm1d):
                axes = tuple(range(parts[0].ndim - 1))
                count = sum(part.size // part.shape[-1] for part in parts)
                mean = sum(part.sum(axis=axes, dtype=np.float64) for part in parts) / count
                square = sum(((part - mean) ** 2).sum(axis=axes) for part in parts)
                layer.running_mean = mean.astype(F32)
                layer.running_var = (square / (count - 1)).astype(F32)
            parts = [layer.forward(part, training=False) for part in parts]

    def output_table(self) -> np.ndarray | None:
        """The final batch norm's scores for every output popcount (see
        :class:`~bnnhw.train.layers.OutputBatchNorm`), or None for a scaled output layer."""
        if not isinstance(self.layers[-1], OutputBatchNorm):
            return None
        dense = [layer for layer in self.layers if isinstance(layer, BinaryDense)][-1]
        return self.layers[-1].table(dense.params["W"].shape[1])

    def param_groups(self) -> list[tuple[dict, dict, dict]]:
        """``(params, grads, bounds)`` of every layer that has parameters."""
        return [(layer.params, layer.grads, layer.bounds) for layer in self.layers
                if layer.params]


class MLP(LayerStack):
    """A multilayer perceptron in one of :data:`MODES`.

    Parameters
    ----------
    hidden : sequence of int
        Hidden layer widths.
    mode : str
    quantizer : InputQuantizer, PixelInput or None
        Required for W1A1; optional for the other modes. :class:`PixelInput` (W1A1 only): the
        first layer reads the 8-bit pixels (see the module docstring).
    rng : numpy.random.Generator
        Initial weights.
    dropout_rng : numpy.random.Generator
        Dropout masks.
    classes, pixels : int
    dropout_input, dropout_hidden : float
    bn_eps : float
    output_bn : bool
        End in a batch norm on the class scores (:class:`~bnnhw.train.layers.OutputBatchNorm`)
        instead of the scalar ``alpha`` (binary modes).
    """

    def __init__(self, hidden: tuple[int, ...], mode: str,
                 quantizer: InputQuantizer | PixelInput | None,
                 rng: np.random.Generator, dropout_rng: np.random.Generator, classes: int = 10,
                 pixels: int = 784, dropout_input: float = 0.0, dropout_hidden: float = 0.0,
                 bn_eps: float = 1e-4, output_bn: bool = False) -> None:
        check_mode(mode)
        if mode == "W1A1" and quantizer is None:
            raise ValueError("mode W1A1 needs an input quantizer (fixed threshold or thermometer)")
        if isinstance(quantizer, PixelInput) and mode != "W1A1":
            raise ValueError(f"input kind 'pixels8' trains in mode W1A1 only, not {mode!r}")
        if quantizer is not None and quantizer.pixels != pixels:
            raise ValueError(f"quantizer has {quantizer.pixels} pixels, expected {pixels}")
        if not hidden or any(h < 1 for h in hidden):
            raise ValueError(f"hidden widths must be positive and non-empty, got {hidden}")
        self.mode, self.quantizer, self.hidden = mode, quantizer, tuple(hidden)
        self.classes, self.pixels, self.bn_eps = classes, pixels, bn_eps
        self.layers: list[Layer] = []
        width = quantizer.out_bits if quantizer is not None else pixels
        for i, h in enumerate(self.hidden):
            rate = dropout_input if i == 0 else dropout_hidden
            if rate:
                self.layers.append(Dropout(rate, dropout_rng))
            if mode == "FP32":
                self.layers += [Dense(width, h, rng), BatchNorm1d(h, bn_eps), ReLU()]
            else:
                act = SignActivation() if mode == "W1A1" else Hardtanh()
                self.layers.append(BinaryDense(width, h, rng))
                if i == 0 and isinstance(quantizer, PixelInput):
                    self.layers.append(PixelScale())
                self.layers += [BatchNorm1d(h, bn_eps), act]
            width = h
        if dropout_hidden:
            self.layers.append(Dropout(dropout_hidden, dropout_rng))
        if mode == "FP32":
            self.layers.append(Dense(width, classes, rng))
        else:
            self.layers += output_head(width, classes, rng, output_bn, bn_eps)
        self._first = next(i for i, layer in enumerate(self.layers)
                           if isinstance(layer, BinaryDense | Dense))
        self.layers[self._first].need_input_grad = False

    # -- data -----------------------------------------------------------------------------
    def encode(self, images: np.ndarray) -> np.ndarray:
        """Network input for uint8 images ``(N, pixels)``, as int8 (+-1), uint8 or float32.

        With a quantizer: ``2 * bits - 1`` (int8; bit ``j * L + l`` is level ``l`` of pixel
        ``j``). With :class:`PixelInput`: the pixels themselves (uint8). Without:
        ``pixel / 127.5 - 1`` (float32).
        """
        images = np.asarray(images)
        if images.ndim != 2 or images.shape[1] != self.pixels:
            raise ValueError(f"images must have shape (N, {self.pixels}), got {images.shape}")
        if isinstance(self.quantizer, PixelInput):
            return self.quantizer.quantize(images).astype(np.uint8)
        if self.quantizer is not None:
            return (self.quantizer.quantize(images).astype(np.int8) * 2 - 1).astype(np.int8)
        return images.astype(F32) / F32(127.5) - F32(1)

    # -- forward / backward ---------------------------------------------------------------
    def backward(self, grad: np.ndarray) -> None:
        """Back-propagate ``dL/dlogits`` and leave every parameter gradient in its layer.

        The input needs no gradient, so the pass stops at the first dense layer.
        """
        for layer in reversed(self.layers[self._first:]):
            grad = layer.backward(grad)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Eval-mode logits ``(N, classes)`` of uint8 images, computed in chunks (float32, or
        float64 after an output batch norm)."""
        return chunked_logits(self, images, PREDICT_CHUNK)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Eval-mode classes: ``argmax`` of the float logits, lowest index on ties."""
        return np.argmax(self.logits(images), axis=1).astype(np.int64)

    # -- inspection -----------------------------------------------------------------------
    def footprint_bytes(self) -> int:
        """Bytes of parameters needed for inference, as stored.

        W1A1: packed weight bits (``ceil(MW / 8)`` bytes per row) plus one integer threshold
        per hidden neuron, int16 when the layer's sums fit (``|a| <= MW * x_max <= 32767``,
        ``x_max`` = 1 for bits, 255 for the 8-bit pixels of a ``pixels8`` first layer), int32
        otherwise. W1A32: packed weight bits and the eval BN as a float32 scale and shift per
        hidden neuron (the positive output scale does not change the argmax). FP32: every
        weight and bias as float32 plus the BN scale and shift per hidden neuron.
        """
        total = 0
        sum_bound = 0
        for layer in self.layers:
            if isinstance(layer, BinaryDense):
                mh, mw = layer.params["W"].shape
                total += mh * -(-mw // 8)
                sum_bound = mw
            elif isinstance(layer, PixelScale):
                sum_bound *= 255
            elif isinstance(layer, Dense):
                total += 4 * (layer.params["W"].size + layer.params["b"].size)
            elif isinstance(layer, BatchNorm1d):
                if self.mode == "W1A1":
                    per_neuron = 2 if sum_bound <= np.iinfo(np.int16).max else 4
                else:
                    per_neuron = 8
                total += layer.running_mean.size * per_neuron
        return total

    def export(self, meta: dict) -> Model:
        """Fold the W1A1 network into an integer :class:`bnnhw.model.Model`.

        Raises
        ------
        ValueError
            For any mode but W1A1.
        """
        if self.mode != "W1A1":
            raise ValueError(f"only mode W1A1 exports to an integer model, not {self.mode!r}")
        dense = [layer for layer in self.layers if isinstance(layer, BinaryDense)]
        norms = [layer for layer in self.layers
                 if isinstance(layer, BatchNorm1d) and not isinstance(layer, OutputBatchNorm)]
        hidden = [{"weights": d.binary_weights(), "mean": bn.running_mean,
                   "var": bn.running_var, "gamma": bn.params["gamma"],
                   "beta": bn.params["beta"], "eps": bn.eps}
                  for d, bn in zip(dense[:-1], norms, strict=True)]
        return fold_model(self.quantizer, hidden, dense[-1].binary_weights(), meta,
                          self.output_table())


def output_head(width: int, classes: int, rng: np.random.Generator, output_bn: bool,
                bn_eps: float) -> list[Layer]:
    """The binary output layer and what scales its ``dot``: a final batch norm, or the
    learnable scalar ``alpha`` started at ``1 / sqrt(width)``."""
    scale = OutputBatchNorm(classes, bn_eps) if output_bn else Scale(1 / np.sqrt(width))
    return [BinaryDense(width, classes, rng), scale]


def chunked_logits(net: LayerStack, images: np.ndarray, chunk: int) -> np.ndarray:
    """Eval-mode logits of uint8 images, ``chunk`` images at a time."""
    images = np.asarray(images)
    parts = [net.forward(net.encode(images[start:start + chunk]), training=False)
             for start in range(0, images.shape[0], chunk)]
    return np.concatenate(parts) if parts else np.empty((0, net.classes), dtype=F32)
