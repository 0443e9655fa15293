"""Training with the 8-bit first layer (input kind ``pixels8``): float network == reference."""

from __future__ import annotations

import numpy as np
import pytest
from bnnhw.train import MLP, train
from bnnhw.train.layers import F32, BinaryDense, PixelScale

from bnnhw import datasets
from bnnhw.model import PixelInput, load_model
from bnnhw.passes import pixel_preactivation
from bnnhw.reference import infer
from bnnhw.tools.cli import _parser


def test_pixel_mlp_reads_raw_pixels_and_scales_after_the_first_layer():
    rng = np.random.default_rng(0)
    net = MLP((5, 4), "W1A1", PixelInput(6), rng, rng, classes=3, pixels=6)
    assert isinstance(net.layers[0], BinaryDense) and isinstance(net.layers[1], PixelScale)
    assert sum(isinstance(layer, PixelScale) for layer in net.layers) == 1
    images = np.array([[0, 1, 2, 253, 254, 255]], np.uint8)
    np.testing.assert_array_equal(net.encode(images), images)
    a = np.array([[-1530.0, 7.0, 0.0]], F32)
    scale = PixelScale()
    np.testing.assert_array_equal(scale.forward(a, True), pixel_preactivation(a, F32))
    np.testing.assert_array_equal(scale.backward(np.full((1, 3), 255, F32)), np.ones((1, 3)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_kind": "pixels16"}, r"unknown input kind 'pixels16'; choose one of bits, pix"),
        ({"input_kind": "pixels8", "mode": "FP32"}, r"'pixels8' trains in mode W1A1 only, not "
                                                     r"'FP32'"),
        ({"input_kind": "pixels8", "thermometer_levels": 3}, "takes no input_threshold"),
    ],
)
def test_bad_input_kind_arguments_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        train("mnist", "tfc", 1, 0, None, progress=False, **kwargs)


def test_cli_train_accepts_input_pixels8(tmp_path):
    args = _parser().parse_args(["train", "--arch", "tfc", "--input", "pixels8", "--out",
                                 str(tmp_path / "m.npz")])
    assert args.input == "pixels8"
    with pytest.raises(SystemExit):
        _parser().parse_args(["train", "--input", "pixels4", "--out", "m.npz"])


@pytest.mark.needs_data
def test_pixels8_tfc_equals_reference_on_all_test_images(tmp_path):
    out = tmp_path / "tfc_pixels8.npz"
    result = train("mnist", "tfc", 1, 0, out, progress=False, limit_train=5000,
                   input_kind="pixels8")
    test = datasets.load("mnist", "test")
    assert test.images.shape[0] == 10_000
    model = load_model(out)
    assert model.sha256() == result.model.sha256()
    assert model.quantizer == PixelInput(784) and model.layers[0].pixels8
    assert model.meta["input"] == "pixels8" and "input_thresholds" not in model.meta
    assert model.layers[0].thresholds.min() < 0 or model.layers[0].thresholds.max() > 785
    classes, _ = infer(model, test.images)
    np.testing.assert_array_equal(result.network.predict(test.images), classes)
    accuracy = float((classes == test.labels).mean())
    assert accuracy == result.float_test_accuracy
    assert accuracy > 0.8


@pytest.mark.needs_data
def test_pixels8_cnn_equals_reference(tmp_path):
    result = train("mnist", "cnv-micro", 1, 0, None, progress=False, limit_train=600,
                   input_kind="pixels8")
    model = result.model
    assert model.layers[0].kind == "conv" and model.layers[0].pixels8
    assert model.layers[0].in_shape == (28, 28, 1)
    test = datasets.load("mnist", "test")
    images = test.images[:2000]
    np.testing.assert_array_equal(result.network.predict(images), infer(model, images)[0])
