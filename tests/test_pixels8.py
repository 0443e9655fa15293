"""The 8-bit first layer (input kind ``pixels8``): model file, reference and fold pass."""

import json

import numpy as np
import pytest

from bnnhw.folding import Folding, FoldingError, balanced_folding
from bnnhw.gateware.dataflow import Accelerator
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


def test_accelerator_refuses_pixels8_by_name():
    model = pixel_mlp(np.random.default_rng(2))
    with pytest.raises(FoldingError, match="input kind is 'pixels8'"):
        balanced_folding(model)
    with pytest.raises(FoldingError, match="input kind is 'pixels8'"):
        Accelerator(model, Folding(((5, 12), (3, 5)), 1))
