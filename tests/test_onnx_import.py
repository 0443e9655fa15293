"""QONNX import: random dense BNN graphs built with onnx.helper, in every accepted spelling.

The oracle is the graph itself, executed by the ``qonnx`` package (onnxruntime for the
standard ops, qonnx's own BipolarQuant/Quant): the imported model's classes must equal the
graph's argmax (lowest index on ties) on every image, and :func:`run_graph` (the importer's own
float32 executor) must give the graph's output.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from bnnhw.onnx_import import ImportRefused, import_qonnx, load_graph, run_graph
from bnnhw.reference import argmax_lowest, infer

QDOMAIN = "qonnx.custom_op.general"
OLD_DOMAIN = "finn.custom_op.general"
PIXELS = 36  # 6x6 images keep the graphs small


class Builder:
    """Collects nodes and initializers of a graph under construction."""

    def __init__(self, rng, spelling):
        self.rng, self.s = rng, spelling
        self.nodes, self.inits, self.count = [], [], 0

    def name(self, prefix):
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, array):
        name = self.name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op, inputs, domain="", **attrs):
        out = self.name("t")
        self.nodes.append(helper.make_node(op, inputs, [out], domain=domain, **attrs))
        return out

    def quant(self, x, scale=1.0):
        domain = OLD_DOMAIN if self.s["old_domain"] else QDOMAIN
        s = self.const(np.float32(scale))
        if self.s["quant"] == "Quant":
            z, bw = self.const(np.float32(0)), self.const(np.float32(1))
            return self.node("Quant", [x, s, z, bw], domain, signed=1, narrow=0,
                             rounding_mode="ROUND")
        return self.node("BipolarQuant", [x, s], domain)

    def matmul(self, x, k, m, magnitude):
        w = self.rng.standard_normal((k, m)).astype(np.float32)
        wq = self.quant(self.const(w), magnitude)
        if self.s["gemm"]:
            wt = self.node("Transpose", [wq], perm=[1, 0])
            return self.node("Gemm", [x, wt], transB=1)
        return self.node("MatMul", [x, wq])

    def conv(self, x, oc, ch, k, magnitude):
        w = self.rng.standard_normal((oc, ch, k, k)).astype(np.float32)
        return self.node("Conv", [x, self.quant(self.const(w), magnitude)],
                         kernel_shape=[k, k], strides=[1, 1], pads=[0, 0, 0, 0])

    def affine(self, x, m, k, channels=False):
        # Centred near the accumulator's spread so that thresholds land inside [0, K].
        gamma = self.rng.uniform(0.5, 2.0, m).astype(np.float32)
        gamma *= self.rng.choice([-1, 1], m)
        gamma[0] = 0.0 if self.s["zero_gamma"] and m > 1 else gamma[0]
        mean = self.rng.uniform(-0.3, 0.3, m).astype(np.float32) * k
        var = self.rng.uniform(0.5, 2.0, m).astype(np.float32) * k
        beta = self.rng.uniform(-0.5, 0.5, m).astype(np.float32)
        if self.s["affine"] == "bn":
            return self.node("BatchNormalization",
                             [x, self.const(gamma), self.const(beta), self.const(mean),
                              self.const(var)], epsilon=1e-5)
        shape = (1, m, 1, 1) if channels else (m,)   # a map's per-channel constants
        y = self.node("Sub", [x, self.const(mean.reshape(shape))])
        y = self.node("Div", [y, self.const(np.sqrt(var + 1e-5).astype(np.float32)
                                            .reshape(shape))])
        y = self.node("Mul", [y, self.const(gamma.reshape(shape))])
        return self.node("Add", [y, self.const(beta.reshape(shape))])


def build_graph(rng, sizes, spelling, path, side=6):
    """A dense BNN over 1 x 1 x side x side inputs (pixels / 255), saved to ``path``."""
    pixels = side * side
    b = Builder(rng, spelling)
    x = "image"
    if spelling["shape_subgraph"]:
        shape = b.node("Shape", [x])
        batch = b.node("Gather", [shape, b.const(np.array(0, np.int64))], axis=0)
        batch = b.node("Unsqueeze", [batch, b.const(np.array([0], np.int64))])
        target = b.node("Concat", [batch, b.const(np.array([-1], np.int64))], axis=0)
        h = b.node("Reshape", [x, target])
    else:
        h = b.node("Flatten", [x], axis=1)
    if not spelling["pixels8"]:
        h = b.node("Sub", [h, b.const(np.float32(rng.uniform(0.2, 0.6)))])
        h = b.quant(h)
    k = pixels
    for m in sizes[:-1]:
        h = b.matmul(h, k, m, rng.choice([1.0, 0.5, 0.25]))
        h = b.affine(h, m, k)
        h = b.quant(h)
        spelling = {**spelling, "pixels8": False}
        k = m
    h = b.matmul(h, k, sizes[-1], 1.0)
    if spelling["final"] == "scalar":   # a scalar TensorNorm: the popcounts stay the scores
        h = b.node("Mul", [h, b.const(np.float32(0.75))])
        h = b.node("Add", [h, b.const(np.float32(0.1))])
    elif spelling["final"] == "per-class":  # a final batch norm: scales of both signs, zero
        h = b.affine(h, sizes[-1], k)
    out = b.nodes[-1].output[0]
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, side, side])]
    if spelling["inits_as_inputs"]:
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                   for t in b.inits]
    graph = helper.make_graph(b.nodes, "bnn", inputs,
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
                              b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid(QDOMAIN, 1),
                                                    helper.make_opsetid(OLD_DOMAIN, 1)],
                              ir_version=3 if spelling["inits_as_inputs"] else 8)
    path.write_bytes(model.SerializeToString())
    return path


def build_conv_graph(rng, spelling, path, side=8):
    """A binarized CNN over 1 x 1 x side x side inputs: one or two 1-bit conv blocks (conv,
    per-channel affine, quantizer, sometimes a 2x2 max-pool), an optional NHWC transpose, a
    flatten, a hidden dense block and the output layer."""
    b = Builder(rng, spelling)
    h = "image"
    if not spelling["pixels8"]:
        h = b.quant(b.node("Sub", [h, b.const(np.float32(rng.uniform(0.2, 0.6)))]))
    ch, size = 1, side
    for _ in range(spelling["blocks"]):
        k, oc = int(rng.integers(2, 4)), int(rng.integers(2, 5))
        h = b.conv(h, oc, ch, k, rng.choice([1.0, 0.5]))
        h = b.quant(b.affine(h, oc, k * k * ch, channels=True))
        ch, size = oc, size - k + 1
        if size >= 4 and rng.random() < 0.7:
            h = b.node("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])
            size //= 2
        spelling = {**spelling, "pixels8": False}
    if spelling["nhwc"]:
        h = b.node("Transpose", [h], perm=[0, 2, 3, 1])
    h = b.node("Flatten", [h], axis=1)
    k = ch * size * size
    h = b.quant(b.affine(b.matmul(h, k, 6, 1.0), 6, k))
    h = b.matmul(h, 6, 4, 1.0)
    if spelling["final"] == "per-class":
        h = b.affine(h, 4, 6)
    out = b.nodes[-1].output[0]
    graph = helper.make_graph(
        b.nodes, "cnn", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                       [1, 1, side, side])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid(QDOMAIN, 1),
                                                    helper.make_opsetid(OLD_DOMAIN, 1)])
    path.write_bytes(model.SerializeToString())
    return path


def qonnx_outputs(path, images, side=6):
    """The graph's output for each image, executed by qonnx (the oracle)."""
    import onnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    model = onnx.load(str(path))
    for node in model.graph.node:
        if node.domain == OLD_DOMAIN:
            node.domain = QDOMAIN  # qonnx executes the current domain name
    wrapper = ModelWrapper(model).transform(InferShapes())
    out = wrapper.graph.output[0].name
    x = images.astype(np.float32) / np.float32(255)
    return np.stack([execute_onnx(wrapper, {"image": x[i].reshape(1, 1, side, side)})[out]
                     .ravel() for i in range(len(images))])


SPELLINGS = st.fixed_dictionaries({
    "quant": st.sampled_from(["BipolarQuant", "Quant"]),
    "gemm": st.booleans(), "affine": st.sampled_from(["bn", "ops"]),
    "old_domain": st.booleans(), "inits_as_inputs": st.booleans(),
    "shape_subgraph": st.booleans(), "pixels8": st.booleans(),
    "final": st.sampled_from(["none", "scalar", "per-class"]),
    "zero_gamma": st.booleans()})


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spelling=SPELLINGS, seed=st.integers(0, 2**31), sizes=st.sampled_from(
    [(8, 4), (12, 8, 5), (6, 3)]))
def test_imported_model_equals_the_graph(tmp_path, spelling, seed, sizes):
    rng = np.random.default_rng(seed)
    path = build_graph(rng, sizes, spelling, tmp_path / f"g{seed}.onnx")
    images = rng.integers(0, 256, (24, PIXELS), dtype=np.uint8)
    images[0] = 0
    images[1] = 255
    imported = import_qonnx(path, check_images=images)
    assert imported.mismatches == 0 and imported.checked_images == 24
    oracle = qonnx_outputs(path, images)
    ours = run_graph(load_graph(path), images.reshape(-1, 1, 6, 6).astype(np.float32) / 255)
    np.testing.assert_allclose(ours.reshape(oracle.shape), oracle, rtol=1e-5, atol=1e-5)
    classes, _ = infer(imported.model, images)
    assert (classes == argmax_lowest(oracle)).all()
    model = imported.model
    assert model.topology.split("-")[0] == str(PIXELS)
    assert [layer.out_features for layer in model.layers] == list(sizes)
    assert (type(model.quantizer).__name__ == "PixelInput") == spelling["pixels8"]
    assert [r["layer"] for r in imported.rows][-1] == len(sizes) - 1
    assert model.layers[-1].affine == (spelling["final"] == "per-class")


CONV_SPELLINGS = st.fixed_dictionaries({
    "quant": st.sampled_from(["BipolarQuant", "Quant"]), "gemm": st.booleans(),
    "affine": st.sampled_from(["bn", "ops"]), "old_domain": st.booleans(),
    "pixels8": st.booleans(), "final": st.sampled_from(["none", "per-class"]),
    "zero_gamma": st.booleans(), "blocks": st.integers(1, 2), "nhwc": st.booleans()})


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spelling=CONV_SPELLINGS, seed=st.integers(0, 2**31))
def test_imported_cnn_equals_the_graph(tmp_path, spelling, seed):
    rng = np.random.default_rng(seed)
    path = build_conv_graph(rng, spelling, tmp_path / f"c{seed}.onnx")
    images = rng.integers(0, 256, (24, 64), dtype=np.uint8)
    images[0], images[1] = 0, 255
    imported = import_qonnx(path, check_images=images)
    assert imported.mismatches == 0
    oracle = qonnx_outputs(path, images, side=8)
    ours = run_graph(load_graph(path), images.reshape(-1, 1, 8, 8).astype(np.float32) / 255)
    np.testing.assert_allclose(ours.reshape(oracle.shape), oracle, rtol=1e-5, atol=1e-5)
    classes, _ = infer(imported.model, images)
    assert (classes == argmax_lowest(oracle)).all()
    kinds = [layer.kind for layer in imported.model.layers]
    assert kinds.count("conv") == spelling["blocks"] and kinds[-2:] == ["dense", "output"]
    assert imported.model.layers[0].pixels8 == spelling["pixels8"]


def refused(tmp_path, nodes, inits, message):
    graph = helper.make_graph(
        nodes, "bad", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 36])],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    path = tmp_path / "bad.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(ImportRefused, match=message):
        import_qonnx(path)


def test_refusals_name_the_node_and_why(tmp_path):
    w = np.ones((36, 4), np.float32)
    q = lambda name, x, out, extra=(): helper.make_node(  # noqa: E731
        "Quant", [x, "s", "z", name], [out], domain=QDOMAIN, signed=1, narrow=0,
        rounding_mode="ROUND")
    consts = {"s": np.float32(1), "z": np.float32(0), "bw2": np.float32(2),
              "bw1": np.float32(1), "w": w, "w2": np.arange(144, dtype=np.float32).reshape(36, 4)}
    refused(tmp_path, [q("bw2", "image", "a")], consts,
            r"node 'a' \(Quant\): only 1-bit quantizers can be imported \(bit width 2.0\)")
    refused(tmp_path, [q("bw1", "image", "a"),
                       helper.make_node("Softmax", ["a"], ["b"], name="soft")], consts,
            r"node 'soft' \(Softmax\): op Softmax is not supported")
    refused(tmp_path, [q("bw1", "image", "a"), helper.make_node("MatMul", ["a", "w2"], ["b"],
                                                                  name="mm")], consts,
            r"node 'mm' \(MatMul\): the weights are not 1-bit")


def test_per_class_scales_become_the_integer_affine(tmp_path):
    """A per-class Mul and Add after the last MatMul: scales 2, -1, 0, 2 and offsets."""
    w = np.where(np.random.default_rng(0).random((36, 4)) < 0.5, -1, 1).astype(np.float32)
    nodes = [helper.make_node("BipolarQuant", ["image", "s"], ["a"], domain=QDOMAIN),
             helper.make_node("MatMul", ["a", "w"], ["b"]),
             helper.make_node("Mul", ["b", "scale"], ["c"]),
             helper.make_node("Add", ["c", "shift"], ["d"])]
    consts = {"s": np.float32(1), "w": w, "scale": np.array([2, -1, 0, 2], np.float32),
              "shift": np.array([0, 0.5, 3, 1], np.float32)}
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 36])],
        [helper.make_tensor_value_info("d", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in consts.items()])
    path = tmp_path / "perclass.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    images = np.random.default_rng(1).integers(0, 256, (200, 36), dtype=np.uint8)
    imported = import_qonnx(path, input_divisor=1.0, check_images=images)
    out = imported.model.layers[-1]
    # Scores 2 dot, -dot + 0.5, 3, 2 dot + 1 with dot = 2P - 36: slopes 4, -2, 0, 4 in P.
    assert out.affine and out.scale[2] == 0 and out.scale[1] < 0
    assert out.scale[0] == out.scale[3] == -2 * out.scale[1]
    assert "per-class affine" in imported.rows[-1]["folded"]
    assert imported.mismatches == 0


def test_not_onnx_is_refused(tmp_path):
    path = tmp_path / "x.onnx"
    path.write_bytes(b"not a protobuf at all \x00\xff")
    with pytest.raises(ImportRefused, match="not a readable ONNX model"):
        import_qonnx(path)


@pytest.mark.needs_data
def test_import_command_checks_on_mnist_and_writes_the_model(tmp_path, capsys):
    import json

    from bnnhw.model import load_model
    from bnnhw.tools.cli import main

    spelling = {"quant": "BipolarQuant", "gemm": True, "affine": "bn", "old_domain": True,
                "inits_as_inputs": False, "shape_subgraph": True, "pixels8": False,
                "final": "per-class", "zero_gamma": True}
    path = build_graph(np.random.default_rng(7), (64, 10), spelling, tmp_path / "g.onnx", 28)
    out = tmp_path / "m.npz"
    assert main(["import", str(path), "--out", str(out), "--limit", "500", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["checked_images"] == 500 and result["mismatches"] == 0
    assert load_model(out).sha256() == result["model_sha256"]
    assert result["topology"] == "784-64-10" and load_model(out).layers[-1].affine
    assert main(["import", str(path), "--out", str(tmp_path / "m2.npz"), "--limit", "5"]) == 0
    text = capsys.readouterr().out
    assert "input coding: pixel >=" in text and "0 class differences" in text


@pytest.mark.needs_data
@pytest.mark.parametrize("kind", ["dense", "cnn"])
def test_no_class_differs_from_the_graph_on_all_mnist_test_images(kind, tmp_path):
    """The acceptance run: a 28 x 28 network, folded, against the graph on 10,000 images."""
    from bnnhw import datasets

    spelling = {"quant": "Quant", "gemm": False, "affine": "ops", "old_domain": False,
                "inits_as_inputs": False, "shape_subgraph": False, "pixels8": kind == "cnn",
                "final": "per-class", "zero_gamma": True, "blocks": 2, "nhwc": False}
    rng = np.random.default_rng(21)
    path = (build_conv_graph(rng, spelling, tmp_path / "c.onnx", side=28) if kind == "cnn"
            else build_graph(rng, (48, 10), spelling, tmp_path / "d.onnx", 28))
    images = datasets.load("mnist", "test").images
    imported = import_qonnx(path, check_images=images)
    assert (imported.checked_images, imported.mismatches) == (10000, 0)


def test_conv_refusals_name_the_node_and_why(tmp_path):
    def graph(nodes, message):
        consts = {"s": np.float32(1), "w": np.ones((2, 1, 3, 3), np.float32)}
        g = helper.make_graph(
            nodes, "bad", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                         [1, 1, 8, 8])],
            [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)],
            [numpy_helper.from_array(v, k) for k, v in consts.items()])
        path = tmp_path / "bad.onnx"
        path.write_bytes(helper.make_model(g).SerializeToString())
        with pytest.raises(ImportRefused, match=message):
            import_qonnx(path)

    quant = helper.make_node("BipolarQuant", ["image", "s"], ["a"], domain=QDOMAIN)
    graph([quant, helper.make_node("Conv", ["a", "w"], ["b"], name="padded", pads=[1, 1, 1, 1])],
          r"node 'padded' \(Conv\): only square convolutions with stride 1, no padding")
    graph([quant, helper.make_node("Conv", ["a", "w"], ["b"]),
           helper.make_node("MaxPool", ["b"], ["c"], name="early", kernel_shape=[2, 2],
                            strides=[2, 2])],
          r"node 'early' \(MaxPool\): max-pool must follow an activation quantizer")
    graph([quant, helper.make_node("MaxPool", ["a"], ["c"], name="big", kernel_shape=[3, 3],
                                   strides=[3, 3])],
          r"node 'big' \(MaxPool\): only 2x2 max-pool with stride 2")
