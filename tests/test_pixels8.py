"""The 8-bit first layer (input kind ``pixels8``): model file, reference and fold pass."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnnhw.model import (
    ConvLayer,
    DenseLayer,
    InputQuantizer,
    MaxPoolLayer,
    Model,
    ModelError,
    PixelInput,
    load_model,
)
from bnnhw.passes import batchnorm_eval, binarize, fold_model, fold_pixels, pixel_preactivation
from bnnhw.reference import im2col, infer, layer_outputs


def pixel_mlp(rng: np.random.Generator, pixels=12, hidden=5, classes=3) -> Model:
    k = pixels
    first = DenseLayer(rng.integers(0, 2, (hidden, k)),
                       rng.integers(-255 * k, 255 * k + 2, hidden), pixels8=True)
    out = DenseLayer(rng.integers(0, 2, (classes, hidden)))
    return Model(PixelInput(pixels), (first, out), {"name": "p8"})


def pixel_cnn(rng: np.random.Generator, side=6, channels=3, classes=2) -> Model:
    fan_in = 9
    conv = ConvLayer(rng.integers(0, 2, (channels, fan_in)),
                     rng.integers(-255 * fan_in, 255 * fan_in + 2, channels), 3,
                     (side, side, 1), pixels8=True)
    pool = MaxPoolLayer(conv.out_shape)
    out = DenseLayer(rng.integers(0, 2, (classes, pool.out_features)))
    return Model(PixelInput(side * side), (conv, pool, out), {})


@pytest.mark.parametrize("build", [pixel_mlp, pixel_cnn])
def test_pixels8_round_trip(tmp_path, build):
    model = build(np.random.default_rng(5))
    loaded = load_model(model.save(tmp_path / "m.npz"))
    assert loaded.sha256() == model.sha256()
    assert loaded.quantizer == model.quantizer
    assert "input_thresholds" not in model.arrays()
    header = json.loads(str(model.arrays()["header"]))
    assert header["input"] == {"kind": "pixels8", "pixels": model.quantizer.pixels}
    assert loaded.layers[0].pixels8 and not loaded.layers[-1].pixels8
    for a, b in zip(model.layers, loaded.layers, strict=True):
        if a.weights is not None:
            np.testing.assert_array_equal(a.weights, b.weights)
        if a.thresholds is not None:
            np.testing.assert_array_equal(a.thresholds, b.thresholds)


def test_pixel_thresholds_use_the_wide_range():
    w = np.ones((2, 4), int)
    DenseLayer(w, np.array([-1020, 1021]), pixels8=True)
    with pytest.raises(ModelError, match=r"\[-255 MW, 255 MW \+ 1\] = \[-1020, 1021\].*1022"):
        DenseLayer(w, np.array([0, 1022]), pixels8=True)
    with pytest.raises(ModelError, match=r"\[0, MW \+ 1\] = \[0, 5\]"):
        DenseLayer(w, np.array([-1, 0]))
    with pytest.raises(ModelError, match="pixels8 layer needs thresholds"):
        DenseLayer(w, None, pixels8=True)


def test_only_the_first_layer_of_a_pixels8_model_reads_pixels():
    rng = np.random.default_rng(0)
    model = pixel_mlp(rng)
    plain = DenseLayer(model.layers[0].weights, np.zeros(5, int))
    with pytest.raises(ModelError, match=r"layer 0 \(dense\) has pixels8=False.*'pixels8'"):
        Model(PixelInput(12), (plain, model.layers[1]))
    with pytest.raises(ModelError, match=r"layer 0 \(dense\) has pixels8=True.*'thermometer'"):
        Model(InputQuantizer((128,), 12), model.layers)
    with pytest.raises(ModelError, match="pixels must be a positive integer, got 0"):
        PixelInput(0)


def test_pixel_conv_reads_one_channel():
    conv = ConvLayer(np.ones((2, 18), int), np.zeros(2, int), 3, (4, 4, 2), pixels8=True)
    out = DenseLayer(np.ones((2, 8), int))
    with pytest.raises(ModelError, match=r"pixels8 input gives 16 pixels x 1 level.*C = 1"):
        Model(PixelInput(16), (conv, out))


def test_pixel_input_checks_images():
    q = PixelInput(3)
    assert q.quantize(np.array([[0, 128, 255]], np.uint8)).tolist() == [[0, 128, 255]]
    with pytest.raises(ModelError, match=r"shape \(N, 3\)"):
        q.quantize(np.zeros((1, 4), np.uint8))
    with pytest.raises(ModelError, match="max 256"):
        q.quantize(np.array([[0, 1, 256]]))


def _resave(path, header=None, **arrays):
    data = dict(np.load(path, allow_pickle=False))
    if header is not None:
        data["header"] = np.array(json.dumps(header))
    data.update(arrays)
    np.savez(path, **data)


@pytest.mark.parametrize(
    ("input_spec", "message"),
    [
        ({"kind": "pixels16", "pixels": 12}, r"unknown input kind 'pixels16'"),
        ({"kind": "pixels8"}, r"input kind 'pixels8' needs integer 'pixels'"),
        ({"kind": "pixels8", "pixels": "many"}, r"needs integer 'pixels', got"),
    ],
)
def test_loader_names_bad_input_kinds(tmp_path, input_spec, message):
    path = pixel_mlp(np.random.default_rng(1)).save(tmp_path / "m.npz")
    header = json.loads(str(np.load(path)["header"]))
    header["input"] = input_spec
    _resave(path, header)
    with pytest.raises(ModelError, match=message) as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_loader_rejects_pixels8_with_input_thresholds(tmp_path):
    path = pixel_mlp(np.random.default_rng(1)).save(tmp_path / "m.npz")
    _resave(path, input_thresholds=np.array([128], np.int16))
    with pytest.raises(ModelError, match="'pixels8' has no input thresholds"):
        load_model(path)


def test_loader_checks_pixel_threshold_range(tmp_path):
    path = pixel_mlp(np.random.default_rng(1)).save(tmp_path / "m.npz")
    _resave(path, **{"layer0.thresholds": np.full(5, 255 * 12 + 2, np.int32)})
    with pytest.raises(ModelError, match=r"\[-3060, 3061\], got min 3062"):
        load_model(path)


# -- fold pass and reference: float network == integer reference --------------------------

F32 = np.float32


def float_pixel_bits(x, w_pm1, bn):
    """The float network's first layer: ``sign(BN(a / 255))`` as bits, ``a`` in float32."""
    a = x.astype(F32) @ w_pm1.astype(F32).T
    return binarize(batchnorm_eval(pixel_preactivation(a, F32), *bn))


def random_bn(rng, mh, k, gamma_kinds):
    """Batch norms with gammas of the chosen signs, means spread over the pixel range."""
    mean = (rng.normal(0, 60 * np.sqrt(k), mh) / 255).astype(F32)
    var = rng.uniform(0.01, 4 * k, mh).astype(F32)
    gamma = rng.choice(gamma_kinds, mh).astype(F32) * rng.uniform(0.1, 3, mh).astype(F32)
    beta = rng.normal(0, 1, mh).astype(F32)
    return mean, var, gamma, beta, 1e-4


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 12), st.integers(0, 2**32 - 1),
       st.sampled_from([(1.0,), (-1.0,), (0.0,), (1.0, -1.0, 0.0)]))
def test_fold_pixels_equals_float_layer(k, mh, seed, gamma_kinds):
    rng = np.random.default_rng(seed)
    w = rng.choice(np.array([-1.0, 1.0], F32), (mh, k))
    bn = random_bn(rng, mh, k, gamma_kinds)
    layer = fold_pixels(w, *bn)
    x = rng.integers(0, 256, (64, k))
    x[0], x[1] = 0, 255
    model = Model(PixelInput(k), (layer, DenseLayer(np.ones((2, mh), int))))
    got = layer_outputs(model, x)[1]
    np.testing.assert_array_equal(got, float_pixel_bits(x, w, bn))
    # every threshold is where the float expression switches, over all of [-255 K, 255 K]
    a = np.arange(-255 * k, 255 * k + 1)
    flip = bn[2] < 0
    for r in range(mh):
        pre = pixel_preactivation(-a if flip[r] else a, F32)
        fires = batchnorm_eval(pre, *(p[r] for p in bn[:4]), bn[4]) >= 0
        np.testing.assert_array_equal(a >= layer.thresholds[r], fires)


@pytest.mark.parametrize("gamma", [2.0, -2.0])
def test_pixel_threshold_tie_and_flip_direction(gamma):
    """BN is exactly 0 at ``a = 300``: sign(0) = +1 fires there, and a gamma < 0 row flips."""
    k = 4
    mean = pixel_preactivation(np.array([300]), F32)
    bn = (mean, np.array([1.0], F32), np.array([gamma], F32), np.zeros(1, F32), 1e-4)
    layer = fold_pixels(np.ones((1, k), F32), *bn)
    model = Model(PixelInput(k), (layer, DenseLayer(np.ones((2, 1), int))))
    x = np.array([[75, 75, 75, 75], [75, 75, 75, 74], [75, 75, 75, 76], [0, 0, 0, 0]])
    assert batchnorm_eval(pixel_preactivation(np.array([300]), F32), *bn)[0] == 0
    bits = layer_outputs(model, x)[1][:, 0].tolist()
    if gamma > 0:
        assert layer.weights.tolist() == [[1, 1, 1, 1]] and layer.thresholds.tolist() == [300]
        assert bits == [1, 0, 1, 0]  # fires iff a >= 300
    else:
        assert layer.weights.tolist() == [[0, 0, 0, 0]] and layer.thresholds.tolist() == [-300]
        assert bits == [1, 1, 0, 1]  # weights negated: a' = -a >= -300 iff a <= 300
    np.testing.assert_array_equal(bits, float_pixel_bits(x, np.ones((1, k)), bn)[:, 0])


@pytest.mark.parametrize(("beta", "threshold"), [(0.0, -255 * 3), (0.5, -255 * 3),
                                                  (-0.5, 255 * 3 + 1)])
def test_pixel_gamma_zero_is_constant(beta, threshold):
    bn = (np.zeros(1, F32), np.ones(1, F32), np.zeros(1, F32), np.array([beta], F32), 1e-4)
    layer = fold_pixels(np.ones((1, 3), F32), *bn)
    assert layer.thresholds.tolist() == [threshold]


@settings(max_examples=30, deadline=None)
@given(st.integers(3, 7), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_pixel_conv_model_equals_float_network(side, channels, seed):
    """Conv pixel layer, max-pool, dense output: folded reference == float forward."""
    rng = np.random.default_rng(seed)
    kernel = 3
    w = rng.choice(np.array([-1.0, 1.0], F32), (channels, kernel * kernel))
    bn = random_bn(rng, channels, kernel * kernel, (1.0, -1.0, 0.0))
    out_w = rng.choice(np.array([-1.0, 1.0], F32), (3, (side - 2) ** 2 * channels))
    hidden = [{"kind": "conv", "weights": w, "mean": bn[0], "var": bn[1], "gamma": bn[2],
               "beta": bn[3], "eps": bn[4], "kernel": kernel, "in_shape": (side, side, 1)}]
    model = fold_model(PixelInput(side * side), hidden, out_w, {})
    assert model.layers[0].pixels8 and model.layers[0].kind == "conv"
    x = rng.integers(0, 256, (32, side * side))
    cols = im2col(x, (side, side, 1), kernel)
    bits = float_pixel_bits(cols, w, bn).reshape(32, -1)
    scores = (2.0 * bits - 1) @ out_w.T
    classes, ref_scores = infer(model, x)
    np.testing.assert_array_equal(layer_outputs(model, x)[1], bits)
    np.testing.assert_array_equal(2 * ref_scores - out_w.shape[1], scores)
    np.testing.assert_array_equal(classes, np.argmax(scores, axis=1))
