"""The numpy trainer (``bnnhw.train.trainer``): determinism, errors, other modes, and float ==
integer on real data."""

from __future__ import annotations

import numpy as np
import pytest
from bnnhw.train import MLP, train
from bnnhw.train.conv import CNN
from bnnhw.train.layers import BatchNorm1d, BinaryDense

from bnnhw import datasets
from bnnhw.model import InputQuantizer, PixelInput, load_model
from bnnhw.reference import infer


def test_output_argmax_tie_goes_to_lowest_index_in_float_network():
    """Equal output rows give equal float logits; predict picks the lowest class like infer."""
    rng = np.random.default_rng(5)
    net = MLP((4,), "W1A1", InputQuantizer((128,), 6), rng, rng, classes=3, pixels=6)
    out = [layer for layer in net.layers if isinstance(layer, BinaryDense)][-1]
    out.params["W"][:] = 0.5
    images = rng.integers(0, 256, (20, 6), dtype=np.uint8)
    assert net.predict(images).tolist() == [0] * 20
    classes, scores = infer(net.export({}), images)
    assert classes.tolist() == [0] * 20
    assert (scores[:, 0] == scores[:, 2]).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dataset": "cifar"}, "unknown dataset 'cifar'; choose one of mnist, fashion-mnist"),
        ({"arch": "xl"}, "unknown architecture 'xl'; choose one of seed000, tfc, sfc, lfc"),
        ({"mode": "W2A2"}, "unknown mode 'W2A2'; choose one of W1A1, W1A32, FP32"),
        ({"loss": "mse"}, "unknown loss 'mse'; choose one of cross-entropy, squared-hinge"),
        ({"epochs": 0}, "epochs must be >= 1, got 0"),
        ({"mode": "FP32", "out": "x.npz"}, "only mode W1A1 exports a model file; mode 'FP32'"),
        ({"input_threshold": 90, "thermometer_levels": 2}, "either input_threshold or"),
        ({"input_threshold": 300}, "input_threshold must lie in \\[0, 256\\], got 300"),
        ({"thermometer_levels": 0}, "thermometer_levels must be >= 1, got 0"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, message, tmp_path):
    args = {"dataset": "mnist", "arch": "tfc", "epochs": 1, "seed": 0, "out": None}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        train(**args, data_dir=tmp_path, progress=False)


@pytest.mark.needs_data
def test_training_is_deterministic():
    runs = [train("mnist", "tfc", 1, 7, None, progress=False, limit_train=3000)
            for _ in range(2)]
    a, b = (r.network.state() for r in runs)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].tobytes() == b[name].tobytes(), name
    layers = [r.model.layers for r in runs]
    for one, two in zip(*layers, strict=True):
        assert one.weights.tobytes() == two.weights.tobytes()
        if one.thresholds is not None:
            assert one.thresholds.tobytes() == two.thresholds.tobytes()
    other = train("mnist", "tfc", 1, 8, None, progress=False, limit_train=3000)
    assert other.model.layers[0].weights.tobytes() != layers[0][0].weights.tobytes()


@pytest.mark.needs_data
def test_trained_model_equals_reference_on_all_test_images(tmp_path):
    out = tmp_path / "seed000.npz"
    result = train("mnist", "seed000", 1, 0, out, progress=False, limit_train=20_000)
    test = datasets.load("mnist", "test")
    assert test.images.shape[0] == 10_000
    floats = result.network.predict(test.images)
    model = load_model(out)
    assert model.sha256() == result.model.sha256()
    classes, scores = infer(model, test.images)
    np.testing.assert_array_equal(floats, classes)
    accuracy = float((classes == test.labels).mean())
    assert accuracy == result.float_test_accuracy
    assert accuracy > 0.85
    assert model.meta["arch"] == "seed000" and model.meta["epochs"] == 1
    assert model.meta["float_test_accuracy"] == accuracy
    assert result.curves_png.is_file() and result.curves_png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.needs_data
def test_thermometer_model_equals_reference(tmp_path):
    result = train("fashion-mnist", "tfc", 1, 0, None, progress=False, limit_train=4000,
                   thermometer_levels=3)
    test = datasets.load("fashion-mnist", "test")
    assert result.model.quantizer.levels == 3
    assert result.model.layers[0].in_features == 784 * 3
    np.testing.assert_array_equal(result.network.predict(test.images),
                                  infer(result.model, test.images)[0])


@pytest.mark.needs_data
@pytest.mark.parametrize("mode", ["W1A32", "FP32"])
def test_other_modes_train(mode):
    result = train("mnist", "tfc", 1, 0, None, mode=mode, progress=False, limit_train=5000)
    assert result.model is None
    assert result.float_test_accuracy > 0.5
    assert len(result.history) == 1 and result.history[0]["loss"] > 0




def eval_inputs_of_batchnorms(net, x):
    """The eval-mode input of every batch norm of ``net`` for encoded inputs ``x``."""
    inputs, out = [], np.asarray(x, dtype=np.float32)
    for layer in net.layers:
        if isinstance(layer, BatchNorm1d):
            inputs.append(out.reshape(-1, out.shape[-1]).astype(np.float64))
        out = layer.forward(out, training=False)
    return inputs


@pytest.mark.parametrize("conv", [False, True])
def test_calibrated_statistics_are_the_eval_inputs_exact_moments(conv):
    """After :meth:`calibrate_batchnorm` each batch norm holds the mean and unbiased variance
    of its own eval-mode input over the images (the earlier ones already calibrated), however
    the images are chunked; the parameters are untouched."""
    rng = np.random.default_rng(11)
    if conv:
        net = CNN(((3, True), (4, False)), (5,), 3, PixelInput(64), rng, rng, classes=3)
        images = rng.integers(0, 256, (37, 64), dtype=np.uint8)
    else:
        net = MLP((6, 5), "W1A1", InputQuantizer((100,), 12), rng, rng, classes=3, pixels=12)
        images = rng.integers(0, 256, (37, 12), dtype=np.uint8)
    params = {k: v.copy() for k, v in net.state().items() if "running" not in k}
    net.calibrate_batchnorm(images, chunk=10)
    norms = [layer for layer in net.layers if isinstance(layer, BatchNorm1d)]
    inputs = eval_inputs_of_batchnorms(net, net.encode(images))
    assert len(norms) == len(inputs) == (3 if conv else 2)
    for norm, z in zip(norms, inputs, strict=True):
        np.testing.assert_allclose(norm.running_mean, z.mean(axis=0), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(norm.running_var, z.var(axis=0, ddof=1), rtol=1e-5,
                                   atol=1e-6)
    state = net.state()
    assert all(np.array_equal(state[k], v) for k, v in params.items())
    one_chunk = {k: v.copy() for k, v in state.items()}
    net.calibrate_batchnorm(images, chunk=1000)
    for key, value in net.state().items():
        np.testing.assert_allclose(value, one_chunk[key], rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match=r"at least 2 images .* got shape \(1, "):
        net.calibrate_batchnorm(images[:1])


@pytest.mark.needs_data
def test_calibrated_model_equals_reference_and_records_itself(tmp_path):
    """``calibrate``: the final accuracy is the calibrated network's, the exported model still
    equals the float network image by image, and the recipe and result say what was done."""
    result = train("mnist", "tfc", 1, 3, tmp_path / "m.npz", progress=False, limit_train=3000,
                   calibrate=500)
    test = datasets.load("mnist", "test")
    floats = result.network.predict(test.images)
    np.testing.assert_array_equal(floats, infer(result.model, test.images)[0])
    assert result.float_test_accuracy == float((floats == test.labels).mean())
    assert result.calibration["images"] == 500
    assert result.calibration["test_accuracy"] == result.float_test_accuracy
    assert result.calibration["test_accuracy_before"] == result.history[-1]["test_accuracy"]
    assert load_model(tmp_path / "m.npz").meta["recipe"]["bn_calibration_images"] == 500
    for bad in (1, 3001, True, 2.5):
        with pytest.raises(ValueError, match=f"calibrate.*{bad}"):
            train("mnist", "tfc", 1, 3, None, progress=False, limit_train=3000, calibrate=bad)
