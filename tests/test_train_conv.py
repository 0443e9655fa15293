"""The trainer's CNN (``bnnhw.train.conv``): convolution, max-pool, batch-norm and flatten
layers against their definitions, and the CNN's exact export."""

from __future__ import annotations

import numpy as np
import pytest
from bnnhw.train.conv import CNN, BatchNorm2d, BinaryConv2d, Flatten, MaxPool2d
from bnnhw.train.layers import BatchNorm1d

from bnnhw import datasets
from bnnhw.model import InputQuantizer, load_model
from bnnhw.reference import infer

F32 = np.float32


def test_conv_backward_is_the_adjoint_and_weight_gradient():
    rng = np.random.default_rng(0)
    conv = BinaryConv2d((5, 6, 2), 3, 3, rng)
    x = rng.standard_normal((2, 5, 6, 2)).astype(F32)
    g = rng.standard_normal((2, 3, 4, 3)).astype(F32)
    y = conv.forward(x, training=True)
    dx = conv.backward(g)
    assert np.isclose(np.sum(y * g, dtype=np.float64), np.sum(x * dx, dtype=np.float64),
                      rtol=1e-5)
    wb = conv.binary_weights().reshape(3, 3, 3, 2)
    direct = np.zeros((3, 3, 3, 2))
    for oy in range(3):
        for ox in range(4):
            direct += np.einsum("no,nabc->oabc", g[:, oy, ox], x[:, oy:oy + 3, ox:ox + 3])
    np.testing.assert_allclose(conv.grads["W"].reshape(3, 3, 3, 2), direct, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(y[0, 1, 2], wb.reshape(3, -1) @ x[0, 1:4, 2:5].reshape(-1),
                               rtol=1e-5, atol=1e-6)


def test_maxpool_backward_routes_to_the_first_maximum():
    pool = MaxPool2d((3, 4, 1))
    x = np.array([[1, 1, 0, 2], [0, 1, 3, 2], [9, 9, 9, 9]], F32).reshape(1, 3, 4, 1)
    assert pool.forward(x, training=True).reshape(-1).tolist() == [1, 3]
    dx = pool.backward(np.array([5, 7], F32).reshape(1, 1, 2, 1)).reshape(3, 4)
    assert dx.tolist() == [[5, 0, 0, 0], [0, 0, 7, 0], [0, 0, 0, 0]]


def test_batchnorm2d_is_batchnorm1d_over_positions():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 5, 2)).astype(F32)
    g = rng.standard_normal(x.shape).astype(F32)
    bn2, bn1 = BatchNorm2d(2), BatchNorm1d(2)
    np.testing.assert_array_equal(bn2.forward(x, True).reshape(-1, 2),
                                  bn1.forward(x.reshape(-1, 2), True))
    np.testing.assert_array_equal(bn2.backward(g).reshape(-1, 2), bn1.backward(g.reshape(-1, 2)))
    np.testing.assert_array_equal(bn2.running_var, bn1.running_var)


def test_flatten_is_channel_innermost():
    x = np.arange(2 * 3 * 4 * 5, dtype=F32).reshape(2, 3, 4, 5)
    flat = Flatten().forward(x, training=False)
    assert flat[1, (2 * 4 + 3) * 5 + 4] == x[1, 2, 3, 4]


def test_cnn_rejects_bad_shapes():
    rngs = np.random.default_rng(0), np.random.default_rng(1)
    with pytest.raises(ValueError, match="square images, got 30 pixels"):
        CNN(((4, True),), (), 3, InputQuantizer.fixed(127.5, 30), *rngs)
    with pytest.raises(ValueError, match="cannot max-pool a 1x1 map"):
        CNN(((4, True),), (), 3, InputQuantizer.fixed(127.5, 9), *rngs)
    with pytest.raises(ValueError, match="kernel must lie in \\[1, 2\\]"):
        CNN(((4, False), (4, False)), (), 3, InputQuantizer.fixed(127.5, 16), *rngs)


def test_cnn_exports_exactly_on_random_images():
    rng = np.random.default_rng(5)
    net = CNN(((3, True), (4, False)), (6,), 3, InputQuantizer.thermometer(2, 100), rng,
              np.random.default_rng(6))
    images = rng.integers(0, 256, (64, 100), dtype=np.uint8)
    for _ in range(3):  # a few training steps give non-trivial batch-norm statistics
        logits = net.forward(net.encode(images).astype(F32), training=True)
        net.backward(np.sign(logits) / 64)
    for layer in net.layers:
        if isinstance(layer, BatchNorm1d):
            layer.params["gamma"][::2] *= -1
    model = net.export({"arch": "random"})
    assert [layer.kind for layer in model.layers] == ["conv", "maxpool", "conv", "dense",
                                                      "output"]
    np.testing.assert_array_equal(infer(model, images)[0], net.predict(images))


def test_cnn_preset_trains_in_w1a1_only(tmp_path):
    from bnnhw.train import train

    with pytest.raises(ValueError, match="'cnv-tiny' is a binarized CNN and trains in mode W1A1"):
        train("mnist", "cnv-tiny", 1, 0, None, mode="FP32", data_dir=tmp_path, progress=False)


@pytest.mark.needs_data
def test_cnv_tiny_float_equals_reference_on_all_test_images(tmp_path):
    from bnnhw.train import train


    result = train("mnist", "cnv-tiny", 1, 0, tmp_path / "cnv.npz", progress=False,
                   limit_train=4000)
    test = datasets.load("mnist", "test")
    loaded = load_model(result.out)
    assert loaded.sha256() == result.model.sha256()
    assert [layer.kind for layer in loaded.layers] == ["conv", "maxpool", "conv", "maxpool",
                                                       "dense", "output"]
    classes, _ = infer(loaded, test.images)
    predicted = result.network.predict(test.images)
    np.testing.assert_array_equal(classes, predicted)
    assert result.float_test_accuracy == float((predicted == test.labels).mean())
    assert result.float_test_accuracy > 0.5  # it learned something in one short epoch
