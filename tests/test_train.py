"""The numpy trainer: gradients, determinism, errors, and float == integer on real data."""

from __future__ import annotations

import numpy as np
import pytest
from bnnhw.train import MLP, train
from bnnhw.train.layers import BatchNorm1d, BinaryDense, Dense, Scale, SignActivation
from bnnhw.train.losses import cross_entropy, get_loss, squared_hinge
from bnnhw.train.optim import Adam, decayed_lr

from bnnhw import datasets
from bnnhw.model import load_model
from bnnhw.reference import infer


def numeric_grad(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar ``f()`` with respect to ``x`` (changed in place)."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        up = f()
        x[i] = old - h
        down = f()
        x[i] = old
        grad[i] = (up - down) / (2 * h)
    return grad


def test_batchnorm_backward_matches_numeric_gradient():
    rng = np.random.default_rng(1)
    bn = BatchNorm1d(3)
    bn.params["gamma"] = rng.normal(size=3)
    bn.params["beta"] = rng.normal(size=3)
    x = rng.normal(size=(5, 3))
    r = rng.normal(size=(5, 3))

    def loss():
        return float(np.sum(bn.forward(x, True) * r))

    loss()
    dx = bn.backward(r.copy())  # backward overwrites the gradient it is given
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=1e-5, atol=1e-7)
    bn.forward(x, True)
    bn.backward(r.copy())
    for name in ("gamma", "beta"):
        np.testing.assert_allclose(bn.grads[name], numeric_grad(loss, bn.params[name]),
                                   rtol=1e-5, atol=1e-7)


def test_dense_backward_matches_numeric_gradient():
    rng = np.random.default_rng(2)
    dense = Dense(4, 3, rng)
    dense.params = {k: v.astype(np.float64) for k, v in dense.params.items()}
    x = rng.normal(size=(6, 4))
    r = rng.normal(size=(6, 3))

    def loss():
        return float(np.sum(dense.forward(x, True) * r))

    loss()
    dx = dense.backward(r)
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=1e-5, atol=1e-7)
    for name in ("W", "b"):
        np.testing.assert_allclose(dense.grads[name], numeric_grad(loss, dense.params[name]),
                                   rtol=1e-5, atol=1e-7)


def test_binary_dense_is_straight_through_and_exact():
    rng = np.random.default_rng(3)
    layer = BinaryDense(5, 2, rng)
    x = np.where(rng.random((4, 5)) < 0.5, -1.0, 1.0).astype(np.float32)
    y = layer.forward(x, True)
    wb = np.where(layer.params["W"] >= 0, 1, -1)
    np.testing.assert_array_equal(y, x.astype(np.int64) @ wb.T)
    g = rng.normal(size=(4, 2)).astype(np.float32)
    dx = layer.backward(g)
    np.testing.assert_allclose(layer.grads["W"], g.T @ x, rtol=1e-6)
    np.testing.assert_allclose(dx, g @ wb, rtol=1e-6)
    layer.grads["W"][...] = -1e3
    opt = Adam([(layer.params, layer.grads, layer.bounds)], lr=10.0)
    opt.step()
    assert layer.params["W"].max() == 1 and layer.params["W"].min() >= -1


def test_sign_activation_straight_through_hardtanh():
    act = SignActivation()
    out = act.forward(np.array([[-2.0, -1.0, -0.0, 0.5, 1.0, 1.5]], np.float32), True)
    assert out.tolist() == [[-1, -1, 1, 1, 1, 1]]
    assert act.backward(np.ones((1, 6), np.float32)).tolist() == [[0, 1, 1, 1, 1, 0]]


def test_scale_backward_matches_numeric_gradient():
    scale = Scale(0.3)
    scale.params["s"] = scale.params["s"].astype(np.float64)
    x = np.array([[1.0, -3.0], [2.0, 5.0]])
    r = np.array([[0.5, -1.0], [2.0, 0.25]])

    def loss():
        return float(np.sum(scale.forward(x, True) * r))

    loss()
    scale.backward(r)
    np.testing.assert_allclose(scale.grads["s"], numeric_grad(loss, scale.params["s"]),
                               rtol=1e-5)
    with pytest.raises(ValueError, match="positive, got 0"):
        Scale(0.0)


@pytest.mark.parametrize("loss_fn", [cross_entropy, squared_hinge])
def test_loss_gradients_match_numeric(loss_fn):
    rng = np.random.default_rng(4)
    z = rng.normal(size=(5, 4))
    y = np.array([0, 3, 1, 1, 2])
    value, grad = loss_fn(z, y)
    np.testing.assert_allclose(grad, numeric_grad(lambda: loss_fn(z, y)[0], z),
                               rtol=1e-5, atol=1e-8)
    assert value > 0


def test_loss_values():
    z = np.array([[2.0, -1.0], [0.0, 0.0]])
    y = np.array([0, 1])
    assert squared_hinge(z, y)[0] == pytest.approx((0 + 0 + 1 + 1) / 2)
    expected = (np.log(1 + np.exp(-3.0)) + np.log(2.0)) / 2
    assert cross_entropy(z, y)[0] == pytest.approx(expected)


def test_decayed_lr_is_geometric():
    assert decayed_lr(1e-2, 1e-4, 0, 3) == pytest.approx(1e-2)
    assert decayed_lr(1e-2, 1e-4, 1, 3) == pytest.approx(1e-3)
    assert decayed_lr(1e-2, 1e-4, 2, 3) == pytest.approx(1e-4)
    assert decayed_lr(1e-2, 1e-4, 0, 1) == 1e-2


def test_output_argmax_tie_goes_to_lowest_index_in_float_network():
    """Equal output rows give equal float logits; predict picks the lowest class like infer."""
    from bnnhw.model import InputQuantizer

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


def test_get_loss_names_choices():
    with pytest.raises(ValueError, match="'hinge'"):
        get_loss("hinge")


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


def test_seed000_rejects_bad_epochs(tmp_path):
    from bnnhw.train import seed000

    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        seed000.run(epochs=0, out_dir=tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.needs_data
@pytest.mark.slow
def test_seed000_table_one_epoch(tmp_path):
    import json

    from bnnhw.train import seed000

    report = seed000.run(epochs=1, out_dir=tmp_path, repeats=1, progress=False,
                         datasets_=("mnist",))
    assert [r["model"] for r in report["rows"]] == [label for label, _, _ in seed000.ROWS]
    assert json.loads((tmp_path / "seed000.json").read_text())["rows"] == report["rows"]
    text = (tmp_path / "seed000.md").read_text()
    assert "| mnist | W1A1, threshold 127.5 |" in text and "80.82" in text
    w1a1 = report["rows"][0]
    assert w1a1["weight_bits"] == 784 * 512 + 512 * 10
    assert w1a1["footprint_kib"] == (784 * 512 + 512 * 10) / 8 / 1024 + 512 * 2 / 1024
    assert w1a1["packed_ms_per_image"] > 0 and w1a1["accuracy"] > 85
