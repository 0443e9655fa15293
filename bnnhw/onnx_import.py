"""Import binarized networks from QONNX graphs (Brevitas and FINN exports) as bnnhw models.

A QONNX BNN is a chain: the input scaling, a 1-bit quantizer (or none: raw pixels into the first
layer), then per layer a ``MatMul``/``Gemm`` with 1-bit weights, an affine (``BatchNormalization``
or ``Mul``/``Add``/``Sub``/``Div`` by constants) and a 1-bit quantizer, and at the end the output
layer's matrix product with an optional affine. :func:`import_qonnx` walks that chain and folds
it into the integer form of :mod:`bnnhw.model`:

* Constant subgraphs are evaluated first: weight quantizers (``BipolarQuant``, or ``Quant`` at
  bit width 1, which give ``s * sign(W)``), and shape computations
  (``Shape``/``Gather``/``Unsqueeze``/``Concat`` feeding a ``Reshape``, with the batch taken as
  1). Initializers listed as graph inputs (old IR versions) are constants too.
* A quantized weight matrix must hold ``±s_j`` in each output column ``j``; its bits are
  ``W > 0`` and ``s_j`` joins the column's affine.
* Every quantizer on an accumulator ``c`` (the ±1 dot product, an integer in ``[-K, K]`` of the
  parity of ``K``) fires where ``f_j(c) >= 0``, ``f_j`` being the recorded affine ops evaluated
  in float32 in graph order, as ONNX runtimes do. ``f_j`` must be monotone; the threshold on
  the popcount ``P = (c + K) / 2`` is found by binary search on that same float expression
  (:func:`bnnhw.passes.least_firing`), a decreasing ``f_j`` flips the weight row, a constant one
  gives the constant neuron (``T = 0`` or ``K + 1``).
* The input quantizer fires on pixel ``p`` (0..255) where ``f(p / D) >= 0`` with the graph
  input ``x = p / D`` (``D = input_divisor``, 255 for networks trained on ``ToTensor`` images,
  1 for raw pixels); the least such ``p`` is the input threshold. Without an input quantizer the
  first layer reads the 8-bit pixels (input kind ``pixels8``) and its threshold is the least
  integer ``a = sum_k w_k p_k`` with ``f(a / D) >= 0``.
* The output layer's affine: when it is one function for every class, strictly increasing on
  the accumulator's values, the popcounts are the scores. Otherwise (a final batch norm or
  TensorNorm with per-class scales of any sign, or per-class offsets) the scores become the
  exact integer affine ``scale_c * P + offset_c`` of :func:`bnnhw.passes.fold_output_affine`,
  fitted to the graph's affine evaluated in float64; the check on test images compares it with
  the graph's own float32 execution.

* Convolutions (``Conv``: square kernel, stride 1, no padding, one group) on NCHW maps become
  conv layers: the weights ``(OC, C, K, K)`` are reordered into bnnhw's window order
  ``(ky * K + kx) * C + c`` and fold per output channel like a dense layer's columns (a
  per-channel affine ``(1, C, 1, 1)`` is one value per column). ``MaxPool`` 2x2 with stride 2
  after an activation quantizer becomes a max-pool layer (the OR of bits). A ``Flatten`` or
  ``Reshape`` of an NCHW map yields columns ``c * H * W + y * W + x``; the next matrix
  product's columns are permuted into bnnhw's ``(y * W + x) * C + c`` (no permutation after a
  ``Transpose`` to NHWC).

Anything else is refused with :class:`ImportRefused`, naming the node, its op type and why:
other ops, quantizers wider than 1 bit, padded or strided convolutions, max-pool before a
quantizer, a weight column with two magnitudes, a non-monotone affine. :func:`run_graph`
executes the same graphs in float32 with numpy, and :func:`import_qonnx` compares the imported
model with it on test images before a model is returned.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .model import (
    ConvLayer,
    DenseLayer,
    InputQuantizer,
    MaxPoolLayer,
    Model,
    ModelError,
    PixelInput,
)
from .passes import fold_output_affine, least_firing
from .reference import argmax_lowest, infer

__all__ = ["ImportRefused", "ImportedModel", "import_qonnx", "load_graph", "run_graph"]

QUANT_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general", "finn")
"""Op domains of ``BipolarQuant``/``Quant``: the current QONNX one and older Brevitas/FINN
names."""
AFFINE_OPS = ("Mul", "Add", "Sub", "Div")
SHAPE_OPS = ("Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Identity",
             "Constant")
LAYOUT_OPS = ("Flatten", "Reshape", "Identity")
"""Layout ops on activations; ``Transpose`` (NCHW <-> NHWC of a map) is handled apart."""


class ImportRefused(ValueError):
    """A graph (or one of its nodes) that cannot become a bnnhw model, and why."""


@dataclass
class _Node:
    op: str
    domain: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]

    def where(self) -> str:
        return f"node {self.name or self.outputs[0]!r} ({self.op})"


@dataclass
class Graph:
    """A loaded ONNX graph: its nodes in order, constants, and the one input and output."""

    nodes: list[_Node]
    constants: dict[str, np.ndarray]
    input: str
    input_shape: tuple[int, ...]
    output: str


def load_graph(path: str | os.PathLike) -> Graph:
    """Read an ONNX file with the ``onnx`` package into a :class:`Graph` (no execution).

    Raises
    ------
    ImportRefused
        Not a readable ONNX model, or a graph without exactly one dynamic input and output.
    """
    # onnx loads only when a graph is imported (start-up time).
    import onnx
    from onnx import numpy_helper

    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and others from protobuf
        raise ImportRefused(f"{path}: not a readable ONNX model ({type(exc).__name__}: "
                            f"{exc})") from None
    graph = proto.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in constants]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ImportRefused(f"{path}: the graph must have one input and one output, it has "
                            f"{len(inputs)} and {len(graph.output)}")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.dim_value > 0 else 1 for d in dims)
    nodes = [_Node(n.op_type, n.domain, n.name, list(n.input), list(n.output),
                   {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute})
             for n in graph.node]
    return Graph(nodes, constants, inputs[0].name, shape, graph.output[0].name)


# --- float32 execution of the accepted ops ------------------------------------------------

def _bipolar(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """BipolarQuant: ``scale * sign(x)`` with ``sign(0) = +1``."""
    return np.where(x >= 0, np.float32(1), np.float32(-1)).astype(np.float32) * scale


def _quant_bits(node: _Node, constants: dict[str, np.ndarray]) -> None:
    """Refuse a ``Quant`` that is not a 1-bit (bipolar) quantizer."""
    if node.op == "Quant":
        width = constants.get(node.inputs[3]) if len(node.inputs) > 3 else None
        if width is None or float(np.asarray(width)) != 1:
            raise ImportRefused(f"{node.where()}: only 1-bit quantizers can be imported "
                                f"(bit width {None if width is None else float(width)})")


def _batchnorm(node: _Node, x: np.ndarray, c: dict[str, np.ndarray],
               dtype: type = np.float32) -> np.ndarray:
    scale, bias, mean, var = (c[n].astype(dtype) for n in node.inputs[1:5])
    eps = dtype(node.attrs.get("epsilon", 1e-5))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    a = scale / np.sqrt(var + eps)
    return ((x - mean.reshape(shape)) * a.reshape(shape) + bias.reshape(shape)).astype(dtype)


def _arithmetic(op: str, x: np.ndarray, y: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """``Mul``/``Add``/``Sub``/``Div`` of two float operands, in ``dtype``."""
    x, y = x.astype(dtype), y.astype(dtype)
    return {"Mul": np.multiply, "Add": np.add, "Sub": np.subtract,
            "Div": np.divide}[op](x, y).astype(dtype)


def _conv_attributes(node: _Node, kernel: int) -> None:
    """Refuse a ``Conv`` other than square, stride 1, no padding, no dilation, one group."""
    a = node.attrs
    ok = (list(a.get("strides", [1, 1])) == [1, 1] and not any(a.get("pads", [0] * 4))
          and list(a.get("dilations", [1, 1])) == [1, 1] and a.get("group", 1) == 1
          and list(a.get("kernel_shape", [kernel, kernel])) == [kernel, kernel]
          and a.get("auto_pad", "NOTSET") in ("NOTSET", "VALID", b"NOTSET", b"VALID"))
    if not ok:
        raise ImportRefused(f"{node.where()}: only square convolutions with stride 1, no "
                            f"padding, no dilation and one group can be imported ({a})")


def _pool_attributes(node: _Node) -> None:
    """Refuse a ``MaxPool`` other than 2 x 2 with stride 2 and no padding."""
    a = node.attrs
    if (list(a.get("kernel_shape", [])) != [2, 2] or list(a.get("strides", [1, 1])) != [2, 2]
            or any(a.get("pads", [0] * 4)) or a.get("ceil_mode", 0)
            or list(a.get("dilations", [1, 1])) != [1, 1]):
        raise ImportRefused(f"{node.where()}: only 2x2 max-pool with stride 2 and no padding "
                            f"can be imported ({a})")


def _conv(node: _Node, x: np.ndarray, w: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """``Conv`` (NCHW, weights (OC, C, K, K)) in float32: valid, stride 1."""
    k = w.shape[-1]
    _conv_attributes(node, k)
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))
    y = np.einsum("ncyxij,ocij->noyx", windows, w, dtype=np.float32, optimize=True)
    if bias is not None:
        y = y + bias.reshape(1, -1, 1, 1)
    return y.astype(np.float32)


def _evaluate(node: _Node, values: list[np.ndarray], c: dict[str, np.ndarray]) -> np.ndarray:
    """One node in float32 (constants and activations alike)."""
    op, a = node.op, node.attrs
    x = values[0] if values else None
    if op in ("BipolarQuant", "Quant"):
        _quant_bits(node, c)
        return _bipolar(x.astype(np.float32), values[1].astype(np.float32))
    if op in AFFINE_OPS:
        y = values[1]
        if x.dtype.kind in "iu" and y.dtype.kind in "iu":
            return {"Mul": np.multiply, "Add": np.add, "Sub": np.subtract,
                    "Div": np.floor_divide}[op](x, y)
        return _arithmetic(op, x, y)
    if op == "MatMul":
        return np.matmul(x.astype(np.float32), values[1].astype(np.float32))
    if op == "Gemm":
        w = values[1].astype(np.float32)
        x = x.astype(np.float32)
        x = x.T if a.get("transA", 0) else x
        w = w.T if a.get("transB", 0) else w
        y = np.float32(a.get("alpha", 1.0)) * (x @ w)
        if len(values) > 2:
            y = y + np.float32(a.get("beta", 1.0)) * values[2].astype(np.float32)
        return y.astype(np.float32)
    if op == "BatchNormalization":
        return _batchnorm(node, x.astype(np.float32), c)
    if op == "Conv":
        return _conv(node, x.astype(np.float32), values[1].astype(np.float32),
                     values[2].astype(np.float32) if len(values) > 2 else None)
    if op == "MaxPool":
        _pool_attributes(node)
        n, ch, h, w = x.shape
        return x[:, :, :h // 2 * 2, :w // 2 * 2].reshape(n, ch, h // 2, 2, w // 2, 2).max(
            axis=(3, 5))
    if op == "Flatten":
        axis = a.get("axis", 1)
        return x.reshape(int(np.prod(x.shape[:axis])), -1)
    if op == "Reshape":
        shape = [int(v) for v in values[1]]
        shape = [x.shape[i] if v == 0 else v for i, v in enumerate(shape)]
        return x.reshape(shape)
    if op == "Identity":
        return x
    if op == "Transpose":
        return np.transpose(x, a.get("perm"))
    if op == "Shape":
        return np.array(x.shape, dtype=np.int64)
    if op == "Gather":
        return np.take(x, values[1].astype(np.int64), axis=a.get("axis", 0))
    if op == "Unsqueeze":
        axes = a.get("axes") if "axes" in a else [int(v) for v in values[1]]
        for axis in sorted(axes):
            x = np.expand_dims(x, axis)
        return x
    if op == "Squeeze":
        axes = a.get("axes") if "axes" in a else [int(v) for v in values[1]]
        return np.squeeze(x, axis=tuple(axes))
    if op == "Concat":
        return np.concatenate([np.atleast_1d(v) for v in values], axis=a.get("axis", 0))
    if op == "Cast":
        import onnx  # loaded on use (start-up time), as in load_graph

        return x.astype(onnx.helper.tensor_dtype_to_np_dtype(a["to"]))
    if op == "Constant":
        from onnx import numpy_helper  # loaded on use (start-up time), as in load_graph

        return numpy_helper.to_array(a["value"])
    raise ImportRefused(f"{node.where()}: op {op} is not supported")


def run_graph(graph: Graph, x: np.ndarray) -> np.ndarray:
    """Execute ``graph`` on the float32 input ``x`` with numpy; returns the output tensor.

    Supports exactly the ops :func:`import_qonnx` accepts, computed in float32 elementwise
    as written (``BatchNormalization`` as ``(x - mean) * (scale / sqrt(var + eps)) + B``).
    """
    values = dict(graph.constants)
    values[graph.input] = np.asarray(x, dtype=np.float32)
    for node in graph.nodes:
        values[node.outputs[0]] = _evaluate(
            node, [values[n] for n in node.inputs if n], graph.constants)
    return values[graph.output]


# --- import --------------------------------------------------------------------------------

@dataclass
class _Chain:
    """The float ops applied, in order, to a per-column integer accumulator (or the input)."""

    ops: list[tuple[_Node, np.ndarray | None]] = field(default_factory=list)

    def apply(self, c: np.ndarray, constants: dict[str, np.ndarray],
              dtype: type = np.float32) -> np.ndarray:
        """``f(c)`` for ``c`` of shape (rows, columns) (one value per column), in float32 as
        the graph computes it, or in ``dtype``."""
        v = c.astype(dtype)
        for node, other in self.ops:
            if node.op == "BatchNormalization":
                v = _batchnorm(node, v, constants, dtype)
            elif node.op == "Gemm":
                v = (dtype(node.attrs.get("beta", 1.0)) * other.astype(dtype) + v).astype(dtype)
            else:
                v = _arithmetic(node.op, v, other, dtype)
        return v


@dataclass
class ImportedModel:
    """What :func:`import_qonnx` recognised: the model, one table row per layer, the input
    coding, and the check on test images."""

    model: Model
    rows: list[dict[str, Any]]
    input_coding: str
    checked_images: int = 0
    mismatches: int = 0


def _weights(node: _Node, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bits (M, K), magnitude per output column) of a folded 1-bit weight matrix (K, M)."""
    magnitude = np.abs(w).astype(np.float32)
    column = magnitude.max(axis=0)
    if (magnitude != column[None, :]).any() or (column == 0).any():
        raise ImportRefused(f"{node.where()}: the weights are not 1-bit (each output column "
                            f"must hold +s and -s only); quantize them with BipolarQuant")
    return (w > 0).T.astype(np.uint8), column


def import_qonnx(path: str | os.PathLike, input_divisor: float = 255.0,
                 check_images: np.ndarray | None = None) -> ImportedModel:
    """Fold a QONNX BNN into a :class:`bnnhw.model.Model` (see the module docstring).

    Parameters
    ----------
    path : path
        The ``.onnx`` file.
    input_divisor : float
        The graph's input is the pixel (0..255) divided by this (255: ``ToTensor`` images).
    check_images : ndarray of uint8 (N, pixels), optional
        Images on which the imported model's classes must equal the graph's own argmax
        (lowest index on ties), executed by :func:`run_graph`.

    Raises
    ------
    ImportRefused
        Naming the node, its op type and the reason; or, with ``check_images``, the number of
        images whose class differs (nothing is returned).
    """
    graph = load_graph(path)
    walk = _Walk(graph, np.float32(input_divisor))
    for node in graph.nodes:
        walk.step(node)
    layers, rows, quantizer = walk.finish(path)
    model = Model(quantizer, tuple(layers), {"imported_from": Path(path).name,
                                             "input_divisor": float(input_divisor)})
    coding = ("8-bit pixels into the first layer" if isinstance(quantizer, PixelInput)
              else f"pixel >= {quantizer.thresholds[0]} (BipolarQuant of the scaled input)")
    result = ImportedModel(model, rows, coding)
    if check_images is not None:
        _check(graph, model, check_images, walk.divisor, result)
    return result


class _Walk:
    """The graph walked node by node, in order, with what has been recognised so far.

    ``state`` is ``"input"`` (before the first quantizer or matrix product), ``"bits"`` (after
    an activation quantizer) or ``"acc"`` (after a matrix product, collecting the affine ops
    in ``chain`` until the next quantizer folds them into thresholds).
    """

    def __init__(self, graph: Graph, divisor: np.float32) -> None:
        self.c = dict(graph.constants)
        self.divisor = divisor
        self.pixels = int(np.prod(graph.input_shape[1:]))
        self.dynamic = {graph.input}
        self.shapes: dict[str, tuple[int, ...]] = {graph.input: graph.input_shape}
        self.state = "input"
        self.chain = _Chain()
        self.layers: list[DenseLayer | ConvLayer | MaxPoolLayer] = []
        self.rows: list[dict[str, Any]] = []
        self.quantizer: InputQuantizer | PixelInput | None = None
        self.pending: dict[str, Any] | None = None   # the product waiting for its quantizer
        self.act_scale = np.float32(1)
        self.layout = "NCHW"                         # of the current 4-D map
        self.flat_from: tuple[str, tuple[int, ...]] | None = None  # map a flat tensor came from

    def step(self, node: _Node) -> None:
        """Take one node: evaluate it if constant, else fold it into the model."""
        if node.domain and node.domain not in QUANT_DOMAINS and node.domain != "ai.onnx":
            raise ImportRefused(f"{node.where()}: unknown op domain {node.domain!r}")
        inputs = [n for n in node.inputs if n]
        if not any(n in self.dynamic for n in inputs):
            if node.op in ("BipolarQuant", "Quant", *SHAPE_OPS, *AFFINE_OPS, "Reshape",
                           "Flatten", "Transpose"):
                self.c[node.outputs[0]] = _evaluate(node, [self.c[n] for n in inputs], self.c)
                return
            raise ImportRefused(f"{node.where()}: op {node.op} is not supported")
        out = node.outputs[0]
        self.dynamic.add(out)
        x = next(n for n in inputs if n in self.dynamic)
        shape = self.shapes[x]
        others = [n for n in inputs if n not in self.dynamic]
        if node.op == "Shape":
            self.c[out] = np.array(shape, dtype=np.int64)
            self.dynamic.discard(out)
            return
        handlers = {"Transpose": self.transpose, "MaxPool": self.maxpool,
                    "BipolarQuant": self.quantize, "Quant": self.quantize,
                    "BatchNormalization": self.affine, "Conv": self.conv,
                    "MatMul": self.matmul, "Gemm": self.matmul,
                    **dict.fromkeys(LAYOUT_OPS, self.relayout),
                    **dict.fromkeys(AFFINE_OPS, self.affine)}
        if node.op not in handlers:
            raise ImportRefused(f"{node.where()}: op {node.op} is not supported")
        self.shapes[out] = handlers[node.op](node, shape, others, inputs.index(x))

    def relayout(self, node: _Node, shape: tuple[int, ...], others: list[str],
                 _: int) -> tuple[int, ...]:
        """``Flatten``/``Reshape``/``Identity``: remember the map a flat tensor came from."""
        if node.op == "Reshape":
            target = _evaluate(node, [np.zeros(shape, np.float32), self.c[others[0]]], self.c)
            new = target.shape
        elif node.op == "Flatten":
            new = (shape[0], int(np.prod(shape[1:])))
        else:
            new = shape
        if len(new) == 4 and self.state == "input" and len(shape) != 4:
            self.layout = "NCHW"            # the flat image reshaped into a map
        elif len(new) == 2 and len(shape) == 4:
            if self.state == "acc":
                raise ImportRefused(f"{node.where()}: flatten the map after its quantizer")
            self.flat_from = (self.layout, shape[1:])
        elif len(new) != 2 and new != shape and self.state != "input":
            raise ImportRefused(f"{node.where()}: only flat (N, features) activations or "
                                f"unchanged (N, C, H, W) maps can be imported (shape {new})")
        return new

    def transpose(self, node: _Node, shape: tuple[int, ...], *_: Any) -> tuple[int, ...]:
        """NCHW <-> NHWC of a map of bits."""
        perm = list(node.attrs.get("perm", []))
        if len(shape) != 4 or self.state == "acc" or perm not in ([0, 2, 3, 1], [0, 3, 1, 2]):
            raise ImportRefused(f"{node.where()}: only NCHW <-> NHWC transposes of a map of "
                                f"bits can be imported (perm {perm})")
        self.layout = "NHWC" if (self.layout, perm) == ("NCHW", [0, 2, 3, 1]) else "NCHW"
        return tuple(shape[i] for i in perm)

    def maxpool(self, node: _Node, shape: tuple[int, ...], *_: Any) -> tuple[int, ...]:
        """2x2 max-pool of a map of bits: a max-pool layer."""
        _pool_attributes(node)
        if self.state != "bits" or len(shape) != 4 or self.layout != "NCHW":
            raise ImportRefused(f"{node.where()}: max-pool must follow an activation "
                                f"quantizer, on an NCHW map (pool after the quantizer)")
        _, ch, h, w = shape
        self.layers.append(MaxPoolLayer((h, w, ch)))
        self.rows.append({"layer": len(self.layers) - 1, "op": "MaxPool", "shape": [h, w, ch],
                          "input": "bits", "folded": "2x2 OR of bits"})
        return (shape[0], ch, h // 2, w // 2)

    def quantize(self, node: _Node, shape: tuple[int, ...], *_: Any) -> tuple[int, ...]:
        """An activation quantizer: the input threshold, or the pending layer's thresholds."""
        _quant_bits(node, self.c)
        scale = self.c[node.inputs[1]].astype(np.float32)
        if scale.size != 1 or float(scale) <= 0:
            raise ImportRefused(f"{node.where()}: an activation quantizer needs one positive "
                                f"scale (got {scale.ravel()[:4]})")
        ops = len(self.chain.ops)
        if self.state == "input":
            self.quantizer = _input_quantizer(node, self.chain, self.c, self.pixels,
                                              self.divisor)
            self.rows.append({"layer": "input", "op": "BipolarQuant", "shape": [self.pixels],
                              "folded": f"{ops} affine op(s) -> threshold "
                                        f"{self.quantizer.thresholds[0]}"})
        elif self.state == "acc":
            pending = self.pending
            hidden = _hidden_layer(node, pending, self.chain, self.c, self.divisor)
            if pending["conv"] is not None:
                hidden = ConvLayer(hidden.weights, hidden.thresholds, *pending["conv"],
                                   hidden.pixels8)
            self.layers.append(hidden)
            self.rows.append(pending["row"] | {"folded": f"{ops} affine op(s) + sign -> "
                                                         f"thresholds"})
        else:
            raise ImportRefused(f"{node.where()}: two quantizers in a row")
        self.state, self.chain, self.pending = "bits", _Chain(), None
        self.act_scale = np.float32(scale)
        return shape

    def affine(self, node: _Node, shape: tuple[int, ...], others: list[str],
               position: int) -> tuple[int, ...]:
        """``BatchNormalization`` or ``Mul``/``Add``/``Sub``/``Div`` by a constant: recorded."""
        if self.state == "bits":
            raise ImportRefused(f"{node.where()}: an affine op on binary activations is not "
                                f"supported")
        if node.op == "BatchNormalization":
            self.chain.ops.append((node, None))
            return shape
        if position != 0 and node.op in ("Sub", "Div"):
            raise ImportRefused(f"{node.where()}: the activation must be the first operand of "
                                f"{node.op}")
        self.chain.ops.append((node, _per_column(node, self.c[others[0]], shape)))
        return shape

    def conv(self, node: _Node, shape: tuple[int, ...], others: list[str],
             _: int) -> tuple[int, ...]:
        """A 1-bit convolution: the pending conv layer."""
        if self.state == "acc" or len(shape) != 4 or self.layout != "NCHW":
            raise ImportRefused(f"{node.where()}: a convolution needs an NCHW map of bits from "
                                f"a 1-bit quantizer (or the input) in front of it")
        w = self.c[others[0]].astype(np.float32)
        oc, ch, kh, kw = w.shape
        _conv_attributes(node, kw)
        if kh != kw:
            raise ImportRefused(f"{node.where()}: the kernel must be square ({kh}x{kw})")
        _, _, h, width = shape
        # bnnhw's window order: column (ky * K + kx) * C + c.
        self.product(node, *_weights(node, w.transpose(0, 2, 3, 1).reshape(oc, -1).T))
        if len(others) > 1:
            self.chain.ops.append((_Node("Add", "", f"{node.name}:bias", [], [""], {}),
                                   self.c[others[1]].astype(np.float32)[None, :]))
        self.pending["conv"] = (kw, (h, width, ch))
        return (shape[0], oc, h - kw + 1, width - kw + 1)

    def matmul(self, node: _Node, shape: tuple[int, ...], others: list[str],
               _: int) -> tuple[int, ...]:
        """``MatMul``/``Gemm`` with 1-bit weights: the pending dense layer."""
        if self.state == "acc":
            raise ImportRefused(f"{node.where()}: a matrix product needs a 1-bit quantizer "
                                f"(or the input) in front of it")
        if node.op == "Gemm" and node.attrs.get("transA", 0):
            raise ImportRefused(f"{node.where()}: Gemm with transA is not supported")
        w = self.c[others[0]].astype(np.float32)
        if node.op == "Gemm" and node.attrs.get("transB", 0):
            w = w.T
        bits, magnitude = _weights(node, w)
        if self.flat_from is not None:
            bits = bits[:, _flat_order(*self.flat_from)]
            self.flat_from = None
        self.product(node, bits, magnitude)
        alpha = np.float32(node.attrs.get("alpha", 1.0)) if node.op == "Gemm" else None
        if alpha is not None and alpha != 1:
            self.chain.ops.append((_Node("Mul", "", f"{node.name}:alpha", [], [""], {}),
                                   np.array(alpha, np.float32)))
        if node.op == "Gemm" and len(others) > 1:
            self.chain.ops.append((node, self.c[others[1]].astype(np.float32)))
        return (shape[0], bits.shape[0])

    def product(self, node: _Node, bits: np.ndarray, magnitude: np.ndarray) -> None:
        """Start the pending layer of a matrix product or convolution."""
        self.pending, self.chain = _matrix_product(
            node, bits, magnitude, self.state, self.chain, self.c, self.act_scale,
            self.divisor, self.pixels, len(self.layers))
        if self.pending["pixel_layer"]:
            self.quantizer = PixelInput(self.pixels)
        self.state = "acc"

    def finish(self, path: Any) -> tuple[list, list[dict[str, Any]],
                                         InputQuantizer | PixelInput]:
        """The layers with the output layer, the table rows and the input quantizer."""
        if self.state != "acc" or self.pending is None:
            raise ImportRefused(f"{path}: the graph must end in the output layer's matrix "
                                f"product (optionally followed by an affine)")
        if self.pending["conv"] is not None:
            raise ImportRefused(f"{path}: the output layer must be a MatMul or Gemm, not a "
                                f"Conv")
        output, how = _output_layer(self.pending, self.chain, self.c, path)
        self.layers.append(output)
        self.rows.append(self.pending["row"] | {"folded": f"{len(self.chain.ops)} affine "
                                                          f"op(s), {how}"})
        if self.quantizer is None:
            raise ImportRefused(f"{path}: no input coding found")
        return self.layers, self.rows, self.quantizer


def _matrix_product(node: _Node, bits: np.ndarray, magnitude: np.ndarray, state: str,
                    chain: _Chain, c: dict[str, np.ndarray], act_scale: np.float32,
                    divisor: np.float32, pixels: int, index: int) -> tuple[dict, _Chain]:
    """The pending layer of a ``MatMul``/``Gemm``/``Conv`` with 1-bit ``bits`` (M, K), and
    the chain that maps its integer accumulator to the graph's value.

    Accumulator -> graph value: (sum of +-1 products) * act_scale * |w_j|; for a pixel layer
    (``state == "input"``) the accumulator is ``sum_k w_k p_k`` and the input
    ``p * scale / D``, where only a positive scaling of the input commutes with the sum.
    """
    pixel_layer = state == "input"
    input_scale = np.float32(1)
    if pixel_layer:
        if any(op.op not in ("Mul", "Div") or other.size != 1 or float(other) <= 0
               for op, other in chain.ops):
            raise ImportRefused(f"{node.where()}: between the input and a pixel layer "
                                f"only Mul/Div by one positive constant are supported")
        input_scale = chain.apply(np.ones((1, 1)), c)[0, 0]
    factor = (magnitude * input_scale / divisor) if pixel_layer else (magnitude * act_scale)
    new = _Chain()
    new.ops.append((_Node("Mul", "", f"{node.name}:scale", [], [""], {}),
                    factor.astype(np.float32)[None, :]))
    k = bits.shape[1]
    pending = {"bits": bits, "k": k, "pixel_layer": pixel_layer, "conv": None,
               "row": {"layer": index, "op": node.op, "shape": [int(bits.shape[0]), k],
                       "input": "8-bit pixels" if pixel_layer else "bits"}}
    return pending, new


def _per_column(node: _Node, constant: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """An affine op's constant as one value or one per column: a map's per-channel constant
    ``(C, 1, 1)`` or ``(1, C, 1, 1)`` becomes ``(1, C)``."""
    constant = constant.astype(np.float32)
    if len(shape) != 4 or constant.size == 1:
        return constant
    if constant.size == shape[1] and constant.squeeze().shape == (shape[1],) \
            and constant.ndim >= 3 and constant.shape[-2:] == (1, 1):
        return constant.reshape(1, -1)
    raise ImportRefused(f"{node.where()}: on a map, an affine constant must be one value or "
                        f"one per channel (shape {constant.shape})")


def _flat_order(layout: str, shape: tuple[int, ...]) -> np.ndarray:
    """For each bnnhw column ``(y * W + x) * C + c`` of a flattened map, the graph's column:
    ``c * H * W + y * W + x`` after an NCHW flatten, the same column after NHWC."""
    if layout == "NHWC":
        return np.arange(int(np.prod(shape)))
    ch, h, w = shape
    return np.arange(ch * h * w).reshape(ch, h, w).transpose(1, 2, 0).ravel()


def _input_quantizer(node: _Node, chain: _Chain, c: dict[str, np.ndarray], pixels: int,
                     divisor: np.float32) -> InputQuantizer:
    p = np.arange(256, dtype=np.float32)
    fires = chain.apply((p / divisor)[:, None], c)[:, 0] >= 0
    if fires.ndim != 1 or (np.diff(fires.astype(np.int8)) < 0).any():
        raise ImportRefused(f"{node.where()}: the input quantizer must fire on bright pixels "
                            f"(an increasing input affine)")
    threshold = int(np.argmax(fires)) if fires.any() else 256
    return InputQuantizer((threshold,), pixels)


def _direction(pending: dict[str, Any], chain: _Chain, c: dict[str, np.ndarray],
               node_where: str) -> tuple[np.ndarray, np.ndarray]:
    """Per output column: (+1 increasing, -1 decreasing, 0 constant), and the accumulator's
    attainable values as a (values, columns) grid checked for monotonicity."""
    k, m = pending["k"], pending["bits"].shape[0]
    if pending["pixel_layer"]:
        grid = np.linspace(-255 * k, 255 * k, 513).round()
    else:
        grid = np.arange(-k, k + 1, 2)
    values = chain.apply(np.repeat(grid[:, None], m, axis=1), c)
    step = np.diff(values, axis=0)
    up, down = (step >= 0).all(axis=0), (step <= 0).all(axis=0)
    if not (up | down).all():
        bad = int(np.argmin(up | down))
        raise ImportRefused(f"{node_where}: the affine after output {bad} is not monotone")
    return np.where(up & down, 0, np.where(up, 1, -1)), values


def _hidden_layer(node: _Node, pending: dict[str, Any], chain: _Chain,
                  c: dict[str, np.ndarray], divisor: np.float32) -> DenseLayer:
    bits, k = pending["bits"], pending["k"]
    m = bits.shape[0]
    direction, _ = _direction(pending, chain, c, node.where())
    flip = direction < 0
    stored = np.where(flip[:, None], 1 - bits, bits).astype(np.uint8)
    if pending["pixel_layer"]:
        def fires(a: np.ndarray) -> np.ndarray:
            acc = np.where(flip, -a, a)
            return chain.apply(acc[None, :].astype(np.float32), c)[0] >= 0

        lo, hi = -255 * k, 255 * k
        thresholds = least_firing(fires, lo, hi, m)
        return DenseLayer(stored, thresholds, pixels8=True)

    def fires(p: np.ndarray) -> np.ndarray:
        acc = np.where(flip, k - 2 * p, 2 * p - k)
        return chain.apply(acc[None, :], c)[0] >= 0

    constant = direction == 0
    thresholds = least_firing(fires, 0, k, m)
    always = chain.apply(np.zeros((1, m)), c)[0] >= 0
    thresholds = np.where(constant, np.where(always, 0, k + 1), thresholds)
    return DenseLayer(stored, thresholds)


def _output_layer(pending: dict[str, Any], chain: _Chain, c: dict[str, np.ndarray],
                  path: Any) -> tuple[DenseLayer, str]:
    """The output layer and how its affine was folded: plain popcounts when one strictly
    increasing function maps them to the graph's scores, else the exact per-class integer
    affine of :func:`bnnhw.passes.fold_output_affine` on the scores evaluated in float64."""
    if pending["pixel_layer"]:
        raise ImportRefused(f"{path}: a single pixel layer cannot be the output layer")
    bits, k = pending["bits"], pending["k"]
    acc = np.repeat((2 * np.arange(k + 1) - k)[:, None], bits.shape[0], axis=1)
    values = chain.apply(acc, c)
    if (np.diff(values, axis=0) > 0).all() and (values == values[:, :1]).all():
        return DenseLayer(bits), "one increasing function for all classes -> popcount argmax"
    try:
        layer = fold_output_affine(2 * bits.astype(np.int64) - 1,
                                   chain.apply(acc, c, np.float64))
    except ModelError as exc:
        raise ImportRefused(f"{path}: the output layer's affine per class: {exc}") from None
    signs = f"{int((layer.scale > 0).sum())} +, {int((layer.scale < 0).sum())} -, " \
            f"{int((layer.scale == 0).sum())} zero"
    return layer, f"per-class affine -> integer scale*P + offset (scales {signs})"


def _check(graph: Graph, model: Model, images: np.ndarray, divisor: np.float32,
           result: ImportedModel) -> None:

    x = images.astype(np.float32) / divisor
    x = x.reshape((len(images), *graph.input_shape[1:]))
    out = run_graph(graph, x).reshape(len(images), -1)
    expected = argmax_lowest(out)
    classes, _ = infer(model, images)
    result.checked_images = len(images)
    result.mismatches = int((classes != expected).sum())
    if result.mismatches:
        raise ImportRefused(f"the imported model's class differs from the graph's on "
                            f"{result.mismatches} of {len(images)} images; nothing written")
