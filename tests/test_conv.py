"""Binary convolutions and max-pool: model file, reference, fold pass and trainer.

The reference is checked against a plain +-1 loop written from the definitions; the fold pass
against the float trainer layers (conv, batch norm in eval mode, max-pool, sign) on random
layers whose batch-norm parameters include negative and zero ``gamma`` and means sitting exactly
on reachable dot products (batch-norm output exactly 0, where ``sign(0) = +1`` decides).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from bnnhw.train.conv import BatchNorm2d, BinaryConv2d, MaxPool2d
from bnnhw.train.layers import SignActivation
from hypothesis import given, settings
from hypothesis import strategies as st

from bnnhw.model import (
    ConvLayer,
    DenseLayer,
    InputQuantizer,
    MaxPoolLayer,
    Model,
    ModelError,
    load_model,
)
from bnnhw.passes import batchnorm_eval, fold_conv, fold_model
from bnnhw.reference import conv_bits, im2col, infer, layer_outputs, maxpool_bits

F32 = np.float32


# -- plain definitions ----------------------------------------------------------------------
def plain_conv_pm1(x: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    """Dot products of +-1 maps ``x`` (H, W, C) with +-1 kernels ``w`` (OC, K, K, C), loops."""
    h, wd, c = x.shape
    out = np.zeros((h - k + 1, wd - k + 1, w.shape[0]), dtype=np.int64)
    for oy in range(h - k + 1):
        for ox in range(wd - k + 1):
            for o in range(w.shape[0]):
                total = 0
                for ky in range(k):
                    for kx in range(k):
                        for ch in range(c):
                            total += int(x[oy + ky, ox + kx, ch]) * int(w[o, ky, kx, ch])
                out[oy, ox, o] = total
    return out


def plain_pool_pm1(x: np.ndarray) -> np.ndarray:
    """``max`` over 2x2 windows, stride 2, of a +-1 map (H, W, C), loops."""
    h, w, c = x.shape
    out = np.empty((h // 2, w // 2, c), dtype=np.int64)
    for y in range(h // 2):
        for xx in range(w // 2):
            for ch in range(c):
                out[y, xx, ch] = max(x[2 * y + dy, 2 * xx + dx, ch]
                                     for dy in (0, 1) for dx in (0, 1))
    return out


def plain_infer(model: Model, images: np.ndarray) -> np.ndarray:
    """Scores of ``model`` on ``images`` from the +-1 definitions, one image at a time."""
    scores = []
    for image in images:
        v = 2 * model.quantizer.quantize(image[None])[0].astype(np.int64) - 1
        for layer in model.layers:
            if isinstance(layer, ConvLayer):
                h, w, c = layer.in_shape
                k = layer.kernel
                kern = (2 * layer.weights.astype(np.int64) - 1).reshape(-1, k, k, c)
                dot = plain_conv_pm1(v.reshape(h, w, c), kern, k)
                p = (dot + layer.fan_in) // 2
                v = np.where(p >= layer.thresholds, 1, -1).reshape(-1)
            elif isinstance(layer, MaxPoolLayer):
                v = plain_pool_pm1(v.reshape(layer.in_shape)).reshape(-1)
            else:
                dot = (2 * layer.weights.astype(np.int64) - 1) @ v
                p = (dot + layer.in_features) // 2
                if layer.thresholds is None:
                    scores.append(p)
                else:
                    v = np.where(p >= layer.thresholds, 1, -1)
    return np.array(scores)


def random_model(rng: np.random.Generator, h: int, w: int, levels: int,
                 blocks: list[tuple[int, int, bool]], dense: list[int], classes: int) -> Model:
    """A model of conv blocks ``(channels, kernel, pool)``, dense widths, an output layer."""
    quantizer = InputQuantizer.thermometer(levels, pixels=h * w)
    shape = (h, w, levels)
    layers: list = []
    for channels, k, pool in blocks:
        fan_in = k * k * shape[2]
        layers.append(ConvLayer(rng.integers(0, 2, (channels, fan_in)),
                                rng.integers(0, fan_in + 2, channels), k, shape))
        shape = layers[-1].out_shape
        if pool:
            layers.append(MaxPoolLayer(shape))
            shape = layers[-1].out_shape
    width = int(np.prod(shape))
    for mh in dense:
        layers.append(DenseLayer(rng.integers(0, 2, (mh, width)), rng.integers(0, width + 2, mh)))
        width = mh
    layers.append(DenseLayer(rng.integers(0, 2, (classes, width))))
    return Model(quantizer, tuple(layers), {"test": True})


@st.composite
def model_specs(draw):
    levels = draw(st.integers(1, 2))
    h, w = draw(st.integers(3, 9)), draw(st.integers(3, 9))
    blocks, shape = [], (h, w)
    for _ in range(draw(st.integers(1, 2))):
        k = draw(st.integers(1, min(3, *shape)))
        shape = (shape[0] - k + 1, shape[1] - k + 1)
        pool = min(shape) >= 2 and draw(st.booleans())
        if pool:
            shape = (shape[0] // 2, shape[1] // 2)
        blocks.append((draw(st.integers(1, 5)), k, pool))
        if min(shape) < 3:
            break
    dense = draw(st.lists(st.integers(1, 12), max_size=1))
    return h, w, levels, blocks, dense, draw(st.integers(2, 5)), draw(st.integers(0, 2**32 - 1))


# -- reference ------------------------------------------------------------------------------
def test_im2col_is_channel_innermost_window_order():
    h, w, c, k = 4, 5, 3, 2
    bits = np.arange(h * w * c).reshape(1, -1)
    cols = im2col(bits, (h, w, c), k)
    assert cols.shape == ((h - k + 1) * (w - k + 1), k * k * c)
    for oy in range(h - k + 1):
        for ox in range(w - k + 1):
            for ky in range(k):
                for kx in range(k):
                    for ch in range(c):
                        row, col = oy * (w - k + 1) + ox, (ky * k + kx) * c + ch
                        assert cols[row, col] == ((oy + ky) * w + ox + kx) * c + ch


@settings(max_examples=60, deadline=None)
@given(model_specs())
def test_reference_equals_plain_loops(spec):
    h, w, levels, blocks, dense, classes, seed = spec
    rng = np.random.default_rng(seed)
    model = random_model(rng, h, w, levels, blocks, dense, classes)
    images = rng.integers(0, 256, (3, h * w), dtype=np.uint8)
    classes_ref, scores = infer(model, images)
    np.testing.assert_array_equal(scores, plain_infer(model, images))
    np.testing.assert_array_equal(layer_outputs(model, images)[-1], scores)
    assert classes_ref.tolist() == np.argmax(scores, axis=1).tolist()


def test_maxpool_is_or_and_drops_odd_edges():
    layer = MaxPoolLayer((3, 5, 1))
    bits = np.zeros((1, 15), dtype=np.uint8)
    bits[0, 1 * 5 + 1] = 1          # (1, 1) -> pooled (0, 0)
    bits[0, 0 * 5 + 4] = 1          # (0, 4): last odd column, dropped
    bits[0, 2 * 5 + 0] = 1          # (2, 0): last odd row, dropped
    assert layer.out_shape == (1, 2, 1)
    assert maxpool_bits(layer, bits).tolist() == [[1, 0]]


def test_conv_threshold_tie_fires_and_constant_channels():
    # K*K*C = 4; input all ones; row 0 agrees on 2 bits -> P = 2.
    layer = ConvLayer(np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]),
                      np.array([2, 3, 0, 5]), 2, (2, 2, 1))
    out = conv_bits(layer, np.ones((1, 4), dtype=np.uint8))
    assert out.tolist() == [[1, 0, 1, 0]]


# -- fold pass ------------------------------------------------------------------------------
bn_values = st.one_of(
    st.floats(-4, 4, width=32),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-30, -1e-30]),
)


@st.composite
def conv_layers(draw):
    c = draw(st.integers(1, 3))
    k = draw(st.integers(1, 3))
    h, w = draw(st.integers(k, 7)), draw(st.integers(k, 7))
    oc = draw(st.integers(1, 4))
    fan_in = k * k * c
    pool = min(h - k + 1, w - k + 1) >= 2 and draw(st.booleans())
    gammas = draw(st.lists(st.one_of(bn_values, st.sampled_from([0.0, -1.0, -0.5])),
                           min_size=oc, max_size=oc))
    betas = draw(st.lists(bn_values, min_size=oc, max_size=oc))
    # means on reachable dot products (same parity as K*K*C) make BN exactly 0 when beta = 0
    means = [draw(st.one_of(st.integers(-fan_in, fan_in).map(lambda d: float(d - (d + fan_in) % 2)),
                            st.floats(-fan_in - 1, fan_in + 1, width=32)))
             for _ in range(oc)]
    variances = draw(st.lists(st.floats(0, 50, width=32), min_size=oc, max_size=oc))
    seed = draw(st.integers(0, 2**32 - 1))
    return (c, k, h, w, oc, pool, np.array(gammas, F32), np.array(betas, F32),
            np.array(means, F32), np.array(variances, F32), seed)


def float_block(conv: BinaryConv2d, bn: BatchNorm2d, pool: MaxPool2d | None,
                x_bits: np.ndarray) -> np.ndarray:
    """The trainer's eval-mode block ``sign(pool(BN(conv(x))))`` as bits ``(N, OH*OW*OC)``."""
    x = (2 * x_bits.astype(F32) - 1).reshape(-1, *conv.in_shape)
    y = bn.forward(conv.forward(x, training=False), training=False)
    if pool is not None:
        y = pool.forward(y, training=False)
    out = SignActivation().forward(y, training=False)
    return ((out.reshape(out.shape[0], -1) + 1) / 2).astype(np.uint8)


@settings(max_examples=250, deadline=None)
@given(conv_layers())
def test_folded_conv_equals_float_conv_bits(spec):
    c, k, h, w, oc, pool, gamma, beta, mean, var, seed = spec
    rng = np.random.default_rng(seed)
    conv = BinaryConv2d((h, w, c), oc, k, rng)
    conv.params["W"] = rng.choice(np.array([-1, 1], F32), (oc, k * k * c))
    bn = BatchNorm2d(oc, eps=1e-4)
    bn.params["gamma"], bn.params["beta"] = gamma, beta
    bn.running_mean, bn.running_var = mean, var
    mp = MaxPool2d(conv.out_shape) if pool else None
    x_bits = rng.integers(0, 2, (6, h * w * c), dtype=np.uint8)
    x_bits[0], x_bits[1] = 0, 1

    folded = fold_conv(conv.binary_weights(), mean, var, gamma, beta, bn.eps, k, (h, w, c))
    bits = conv_bits(folded, x_bits)
    if mp is not None:
        bits = maxpool_bits(MaxPoolLayer(folded.out_shape), bits)
    np.testing.assert_array_equal(bits, float_block(conv, bn, mp, x_bits))
    assert ((gamma < 0) == (folded.weights != (conv.binary_weights() > 0)).all(axis=1)).all()


def test_pool_before_negative_gamma_batch_norm_is_an_and_not_an_or():
    """Why the trainer pools after batch norm: ``BN(max(.))`` with gamma < 0 is ``min(BN(.))``."""
    dots = np.array([[-1.0], [1.0]], F32)  # two positions of one window, one channel
    args = (np.array([0], F32), np.array([1], F32), np.array([-1], F32), np.array([0], F32), 0.0)
    pool_first = batchnorm_eval(dots.max(axis=0), *args) >= 0
    bn_first = (batchnorm_eval(dots, *args) >= 0).max(axis=0)
    assert pool_first.tolist() == [False] and bn_first.tolist() == [True]


def test_fold_model_with_conv_and_pool_and_unknown_kind():
    rng = np.random.default_rng(0)
    ones, zeros = np.ones(2, F32), np.zeros(2, F32)
    conv = {"kind": "conv", "weights": rng.choice([-1.0, 1.0], (2, 9)), "mean": zeros,
            "var": ones, "gamma": ones, "beta": zeros, "eps": 1e-4, "kernel": 3,
            "in_shape": (6, 6, 1)}
    model = fold_model(InputQuantizer.fixed(127.5, 36), [conv, {"kind": "maxpool",
                                                                "in_shape": (4, 4, 2)}],
                       rng.choice([-1.0, 1.0], (3, 8)), {})
    assert [layer.kind for layer in model.layers] == ["conv", "maxpool", "output"]
    with pytest.raises(ModelError, match="hidden layer 0 has unknown kind 'pool'"):
        fold_model(InputQuantizer.fixed(127.5, 36), [{"kind": "pool"}], np.ones((2, 36)), {})


# -- model and file -------------------------------------------------------------------------
def test_conv_model_round_trip(tmp_path):
    model = random_model(np.random.default_rng(1), 8, 7, 2, [(3, 3, True), (4, 2, False)], [5], 3)
    path = model.save(tmp_path / "cnn.npz")
    loaded = load_model(path)
    assert loaded.sha256() == model.sha256()
    assert [layer.kind for layer in loaded.layers] == ["conv", "maxpool", "conv", "dense",
                                                       "output"]
    header = json.loads(str(np.load(path)["header"]))
    assert header["layers"][0] == {"kind": "conv", "in_features": 112, "out_features": 90,
                                   "in_shape": [8, 7, 2], "kernel": 3, "stride": 1,
                                   "padding": 0, "out_channels": 3}
    assert header["layers"][1] == {"kind": "maxpool", "in_features": 90, "out_features": 18,
                                   "in_shape": [6, 5, 3], "pool": 2, "stride": 2}
    images = np.random.default_rng(2).integers(0, 256, (20, 56), dtype=np.uint8)
    np.testing.assert_array_equal(infer(loaded, images)[1], infer(model, images)[1])
    assert model.weight_bits == 3 * 18 + 4 * 12 + 5 * 8 + 3 * 5


@settings(max_examples=40, deadline=None)
@given(model_specs())
def test_conv_model_round_trip_property(spec):
    h, w, levels, blocks, dense, classes, seed = spec
    model = random_model(np.random.default_rng(seed), h, w, levels, blocks, dense, classes)
    with tempfile.TemporaryDirectory() as folder:
        loaded = load_model(model.save(Path(folder) / "m.npz"))
    assert loaded.sha256() == model.sha256()
    for a, b in zip(model.layers, loaded.layers, strict=True):
        assert (a.kind, a.in_features, a.out_features) == (b.kind, b.in_features, b.out_features)
        assert getattr(a, "in_shape", None) == getattr(b, "in_shape", None)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ConvLayer(np.ones((2, 9)), np.zeros(2, int), 4, (3, 3, 1)),
         r"conv kernel must lie in \[1, min\(H, W\)\] = \[1, 3\], got 4"),
        (lambda: ConvLayer(np.ones((2, 8)), np.zeros(2, int), 3, (3, 3, 1)),
         r"K\*K\*C = 3\*3\*1 = 9 columns, got shape \(2, 8\)"),
        (lambda: ConvLayer(np.ones((2, 9)), None, 3, (3, 3, 1)), "a conv layer needs thresholds"),
        (lambda: ConvLayer(np.ones((2, 9)), np.array([0, 11]), 3, (3, 3, 1)),
         r"thresholds must lie in \[0, MW \+ 1\] = \[0, 10\]"),
        (lambda: ConvLayer(np.ones((2, 9)), np.zeros(2, int), 3, (3, 0, 1)),
         r"conv in_shape must be positive \(H, W, C\), got \(3, 0, 1\)"),
        (lambda: MaxPoolLayer((4, 4, 1), pool=3), "only 2x2 max-pool with stride 2"),
        (lambda: MaxPoolLayer((1, 4, 1)), r"maxpool needs H, W >= 2, got in_shape \(1, 4, 1\)"),
    ],
)
def test_layer_validation_names_the_value(build, message):
    with pytest.raises(ModelError, match=message):
        build()


def test_model_checks_the_map_chain():
    q = InputQuantizer.fixed(127.5, 16)
    conv = ConvLayer(np.ones((2, 9)), np.zeros(2, int), 3, (4, 4, 1))
    out = DenseLayer(np.ones((2, 8)))
    assert Model(q, (conv, out), {}).layers[0].out_shape == (2, 2, 2)
    with pytest.raises(ModelError, match=r"reads the image as 4x4x1 .* 16 pixels x 2 level"):
        Model(InputQuantizer.thermometer(2, 16), (conv, DenseLayer(np.ones((2, 8)))), {})
    wide = ConvLayer(np.ones((2, 9)), np.zeros(2, int), 3, (3, 5, 1))
    with pytest.raises(ModelError, match="need H\\*W = 16 and C = 1") as info:
        Model(q, (wide, DenseLayer(np.ones((2, 6)))), {})
    assert "3x5x1" in str(info.value)
    with pytest.raises(ModelError, match=r"expects an input map 3x3x2 \(HxWxC\) but receives "
                                         r"2x2x2"):
        Model(q, (conv, MaxPoolLayer((3, 3, 2)), DenseLayer(np.ones((2, 2)))), {})
    dense = DenseLayer(np.ones((16, 16)), np.zeros(16, int))
    with pytest.raises(ModelError, match="layer 1 \\(conv\\) follows a dense layer"):
        Model(q, (dense, conv, out), {})
    with pytest.raises(ModelError, match="the last layer \\(layer 1\\) must be an output layer"):
        Model(q, (conv, MaxPoolLayer((2, 2, 2))), {})
    with pytest.raises(ModelError, match="layer 1 expects 9 input bits but receives 8"):
        Model(q, (conv, DenseLayer(np.ones((2, 9)))), {})


def rewrite_header(path, change) -> None:
    arrays = dict(np.load(path, allow_pickle=False))
    header = json.loads(str(arrays["header"]))
    change(header)
    arrays["header"] = np.array(json.dumps(header))
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h: h["layers"][0].update(stride=2), "conv supports stride 1 and padding 0 only"),
        (lambda h: h["layers"][0].update(padding=1), "conv supports stride 1 and padding 0 only"),
        (lambda h: h["layers"][1].update(stride=1), "maxpool stride 1 must equal pool 2"),
        (lambda h: h["layers"][1].update(pool=3), "maxpool stride 2 must equal pool 3"),
        (lambda h: h["layers"][0].update(kernel=2),
         r"'layer0.weights' has shape \(3, 3\), expected \(3, 1\)"),
        (lambda h: h["layers"][0].update(out_features=91), "header says 112 -> 91 bits"),
        (lambda h: h["layers"][0].update(in_shape=[7, 8, 2]),
         "reads the image as 7x8x2 .* need H\\*W = 56 and C = 2|expects an input map"),
        (lambda h: h["layers"][0].pop("kernel"), "malformed layer description"),
    ],
)
def test_loader_names_conv_problems(tmp_path, change, message):
    model = random_model(np.random.default_rng(3), 8, 7, 2, [(3, 3, True)], [], 3)
    path = model.save(tmp_path / "cnn.npz")
    rewrite_header(path, change)
    with pytest.raises(ModelError, match=message) as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_loader_rejects_missing_conv_thresholds(tmp_path):
    model = random_model(np.random.default_rng(4), 6, 6, 1, [(2, 3, False)], [], 2)
    path = model.save(tmp_path / "cnn.npz")
    arrays = dict(np.load(path, allow_pickle=False))
    del arrays["layer0.thresholds"]
    np.savez(path, **arrays)
    with pytest.raises(ModelError, match="missing array 'layer0.thresholds'"):
        load_model(path)


# -- trainer layers -------------------------------------------------------------------------
