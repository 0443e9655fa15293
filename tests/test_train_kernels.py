"""The trainer's compiled kernels against plain numpy, the eval kernel bit for bit, the fused
conv-block path against the separate layers, and the augmentation."""

from __future__ import annotations

import numpy as np
import pytest
from bnnhw.train import kernels
from bnnhw.train.augment import Augment, AugmentError, parse_augment
from bnnhw.train.bench import step_matmul_flops
from bnnhw.train.conv import CNN, BinaryConv2d
from bnnhw.train.layers import F32, XNOR_MIN_ROW_BITS, BatchNorm1d, BinaryDense
from bnnhw.train.losses import cross_entropy
from bnnhw.train.network import MLP
from bnnhw.train.trainer import make_quantizer
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bnnhw.passes import batchnorm_eval, batchnorm_scale
from bnnhw.reference import im2col

floats32 = st.floats(-1e4, 1e4, width=32, allow_nan=False)


def test_sign_of_zero_is_plus_one_and_the_window_is_closed():
    x = np.array([-2.0, -1.0, -0.0, 0.0, 1.0, np.nextafter(F32(1), F32(2)), 3.0], F32)
    out, passes = np.empty_like(x), np.empty(x.shape, np.bool_)
    kernels.sign_and_window(x, out, passes)
    assert out.tolist() == [-1, -1, 1, 1, 1, 1, 1]
    assert passes.tolist() == [False, True, True, True, True, False, False]
    grad = np.arange(1, 8, dtype=F32)
    kernels.mask_inplace(grad, passes)
    assert grad.tolist() == [0, 2, 3, 4, 5, 0, 0]
    signs = np.empty_like(x)
    kernels.sign_into(x, signs)
    assert np.array_equal(signs, out)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(F32, (7, 3), elements=floats32), hnp.arrays(F32, 3, elements=floats32),
       hnp.arrays(F32, 3, elements=st.floats(0, 1e4, width=32)),
       hnp.arrays(F32, 3, elements=st.floats(-10, 10, width=32)),
       hnp.arrays(F32, 3, elements=floats32))
def test_eval_batchnorm_kernel_is_bit_identical(x, mean, var, gamma, beta):
    gamma[0] = 0  # gamma = 0 and (below) gamma < 0 are the fold pass's special cases
    gamma[1] = -abs(gamma[1])
    expected = batchnorm_eval(x, mean, var, gamma, beta, 1e-4)
    out = np.empty_like(x)
    kernels.batchnorm_eval_into(x, mean, batchnorm_scale(var, gamma, 1e-4, F32), beta, out)
    assert np.array_equal(out.view(np.uint32), expected.view(np.uint32))


def test_eval_batchnorm_layer_is_the_fold_expression():
    rng = np.random.default_rng(0)
    bn = BatchNorm1d(64)
    bn.running_mean = rng.normal(0, 30, 64).astype(F32)
    bn.running_var = rng.uniform(0, 400, 64).astype(F32)
    bn.params["gamma"][...] = rng.normal(size=64)
    bn.params["beta"][...] = rng.normal(size=64)
    x = rng.integers(-200, 200, (500, 64)).astype(F32)
    expected = batchnorm_eval(x, bn.running_mean, bn.running_var, bn.params["gamma"],
                              bn.params["beta"], bn.eps)
    assert np.array_equal(bn.forward(x, False), expected)


def test_training_batchnorm_matches_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(3, 2, (300, 5)).astype(F32)
    gamma, beta = rng.normal(size=5).astype(F32), rng.normal(size=5).astype(F32)
    xhat, out = np.empty_like(x), np.empty_like(x)
    mean, var, sigma = (np.empty(5, F32) for _ in range(3))
    kernels.batchnorm_train(x, gamma, beta, F32(1e-4), xhat, out, mean, var, sigma)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mean, x64.mean(0), rtol=1e-6)
    np.testing.assert_allclose(var, x64.var(0), rtol=1e-5)
    expected = (x64 - x64.mean(0)) / np.sqrt(x64.var(0) + 1e-4)
    np.testing.assert_allclose(xhat, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out, expected * gamma + beta, rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(2, 7), st.integers(2, 7), st.integers(1, 4), st.data())
def test_maxpool_kernels_first_maximum(n, h, w, c, data):
    x = data.draw(hnp.arrays(F32, (n, h, w, c), elements=st.sampled_from([-1.0, 0.0, 2.0])))
    out = np.empty((n, h // 2, w // 2, c), F32)
    arg = np.empty(out.shape, np.uint8)
    kernels.maxpool2_forward(x, out, arg)
    windows = (x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)
               .transpose(0, 1, 3, 5, 2, 4).reshape(n, h // 2, w // 2, c, 4))
    assert np.array_equal(out, windows.max(-1))
    assert np.array_equal(arg, windows.argmax(-1))  # ties: the first in row-major order
    grad = np.arange(1, out.size + 1, dtype=F32).reshape(out.shape)
    dx = np.full(x.shape, np.nan, F32)
    kernels.maxpool2_backward(grad, arg, dx)
    assert dx.sum() == grad.sum() and np.count_nonzero(dx) == grad.size


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 2), st.integers(3, 7), st.integers(3, 7), st.integers(1, 3),
       st.integers(1, 3), st.data())
def test_im2col_and_col2im_are_adjoint(n, h, w, c, k, data):
    k = min(k, h, w)
    oh, ow = h - k + 1, w - k + 1
    x = data.draw(hnp.arrays(np.float64, (n, h, w, c), elements=st.integers(-9, 9)))
    d = data.draw(hnp.arrays(np.float64, (n, oh, ow, k, k, c), elements=st.integers(-9, 9)))
    cols = np.empty((n, oh, ow, k, k, c))
    kernels.im2col_into(x, k, cols)
    assert np.array_equal(cols.reshape(n * oh * ow, -1), im2col(x.reshape(n, -1), (h, w, c), k))
    dx = np.empty_like(x)
    kernels.col2im(d, k, dx)
    assert np.sum(cols * d) == np.sum(x * dx)


def test_adam_kernel_matches_the_formula_and_clips():
    rng = np.random.default_rng(2)
    p = rng.uniform(-1, 1, 1000).astype(F32)
    g = rng.normal(size=1000).astype(F32)
    m, v = rng.normal(size=1000).astype(F32), rng.uniform(0, 1, 1000).astype(F32)
    step, eps = 0.05, 1e-8
    em = 0.9 * m + 0.1 * g
    ev = 0.999 * v + 0.001 * g * g
    ep = np.clip(p - step * em / (np.sqrt(ev) + eps), -1, 1)
    kernels.adam_update(p, g, m, v, step, eps, 0.9, 0.999, 1.0)
    np.testing.assert_allclose(m, em, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v, ev, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(p, ep, rtol=1e-5, atol=1e-6)
    assert p.max() <= 1 and p.min() >= -1 and np.isclose(ep, 1).any()


@pytest.mark.parametrize("kind", ["bits", "pixels8"])
@pytest.mark.parametrize("conv", [((4, True), (6, True)), ((3, False), (5, True), (4, False))])
def test_fused_conv_blocks_equal_the_separate_layers(kind, conv):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (24, 784)).astype(np.uint8)
    labels = rng.integers(0, 10, 24)
    quantizer = make_quantizer("W1A1", 127.5, None, None, kind)
    nets = [CNN(conv, (16,), 3, quantizer, np.random.default_rng(0), np.random.default_rng(1))
            for _ in range(2)]
    nets[1]._fused, nets[1]._coded = {}, None
    results = []
    for net in nets:
        logits = net.forward(net.encode(images), training=True)
        net.backward(cross_entropy(logits, labels)[1])
        results.append([logits] + [g.copy() for layer in net.layers for g in layer.grads.values()]
                       + [np.asarray(getattr(layer, "running_mean", 0)) for layer in net.layers])
    for fused, plain in zip(*results, strict=True):
        np.testing.assert_allclose(fused, plain, rtol=2e-4, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(2, 6), st.integers(1, 3), st.integers(1, 3), st.data())
def test_window_codes_are_the_im2col_bits(n, size, channels, kernel, data):
    """Code bit j of a window is im2col column j of the sign map (> 0); any entry other than
    +-1 is refused."""
    kernel = min(kernel, size)
    x = data.draw(hnp.arrays(np.int8, (n, size, size, channels),
                             elements=st.sampled_from([-1, 1])))
    out = size - kernel + 1
    codes = np.empty((n, out, out), np.int64)
    assert kernels.window_codes(x, kernel, codes)
    cols = im2col(x.reshape(n, -1), (size, size, channels), kernel) > 0
    weights = 1 << np.arange(cols.shape[1], dtype=np.int64)
    assert np.array_equal(codes.reshape(-1), cols.astype(np.int64) @ weights)
    odd = x.astype(F32)
    odd[data.draw(st.integers(0, n - 1)), 0, 0, 0] = data.draw(st.sampled_from([0.0, 0.5, 2.0]))
    assert not kernels.window_codes(odd, kernel, codes)


@pytest.mark.parametrize("conv, kernel, levels", [
    (((4, True), (6, True)), 3, None),         # one input bit, pooled first block
    (((3, False), (5, True)), 3, None),        # first block without pool
    (((4, True), (5, True)), 2, 2),            # 2-level thermometer: 8 bits per window
])
def test_coded_first_block_equals_the_layers(conv, kernel, levels):
    """The window-code path gives the same logits, statistics and gradients as the fused
    layers, bit for bit, except the first convolution's weight gradient: the same sum taken per
    code in float64 instead of float32 BLAS, equal up to the float32 rounding of a sum whose
    terms cancel (batch norm's gradient sums to zero over the batch)."""
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (24, 784)).astype(np.uint8)
    labels = rng.integers(0, 10, 24)
    quantizer = make_quantizer("W1A1", 127.5, None, levels)
    nets = [CNN(conv, (16,), kernel, quantizer, np.random.default_rng(0),
                np.random.default_rng(1)) for _ in range(2)]
    nets[1]._coded = None
    results = []
    for net in nets:
        logits = net.forward(net.encode(images), training=True)
        net.backward(cross_entropy(logits, labels)[1])
        results.append((logits, [dict(layer.grads) for layer in net.layers], net.state()))
    assert nets[0]._coded_active
    assert np.array_equal(results[0][0], results[1][0])
    for index, (coded, plain) in enumerate(zip(results[0][1], results[1][1], strict=True)):
        for name in plain:
            if index == 0:
                scale = np.abs(plain[name]).max()
                assert scale > 1e-3
                np.testing.assert_allclose(coded[name], plain[name], rtol=0, atol=1e-4 * scale)
            else:
                assert np.array_equal(coded[name], plain[name]), (index, name)
    assert all(np.array_equal(results[0][2][k], results[1][2][k]) for k in results[0][2])


def test_coded_first_block_only_where_it_applies():
    """8-bit pixels, or a window of more than CODE_MAX_BITS bits, keep the layers."""
    rng = np.random.default_rng(0)
    pixels = make_quantizer("W1A1", 127.5, None, None, "pixels8")
    wide = make_quantizer("W1A1", 127.5, None, 2)     # 3 x 3 x 2 = 18 bits
    bits = make_quantizer("W1A1", 127.5, None, None)
    assert CNN(((4, True),), (8,), 3, pixels, rng, rng)._coded is None
    assert CNN(((4, True),), (8,), 3, wide, rng, rng)._coded is None
    assert CNN(((4, True),), (8,), 3, bits, rng, rng)._coded is not None


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 150), st.integers(1, 9),
       st.integers(1, 3), st.sampled_from([1.0, 1.25, 1 / 0.7]), st.booleans(), st.data())
def test_xnor_product_is_the_sign_product(n, size, channels, out_channels, kernel, magnitude,
                                          dropped, data):
    """Packed XNOR-popcount convolution = the float32 product with sign(W): exactly for
    m = 1, and m times the exact integer (one rounding) after inverted dropout."""
    kernel = min(kernel, size)
    shape = (n, size, size, channels)
    signs = data.draw(hnp.arrays(np.int8, shape, elements=st.sampled_from([-1, 1])))
    keep = data.draw(hnp.arrays(np.bool_, shape)) if dropped else np.ones(shape, np.bool_)
    x = (signs * keep).astype(F32) * F32(magnitude)
    w = data.draw(hnp.arrays(F32, (out_channels, kernel * kernel * channels),
                             elements=st.floats(-1, 1, width=32)))
    words = -(-channels // kernels.WORD_BITS)
    signs_w = np.where(w >= 0, F32(1), F32(-1))
    packed_w = np.empty((kernel * kernel, words, out_channels), np.uint64)
    kernels.pack_weight_signs(w, packed_w)
    bits = np.empty((x.size // channels, words), np.uint64)
    nonzero = np.empty_like(bits)
    found = kernels.pack_uniform_signs(x.reshape(-1, channels), bits, nonzero)
    assert found == (F32(magnitude) if keep.any() else 0)
    out_size = size - kernel + 1
    out = np.empty((n, out_size, out_size, out_channels), F32)
    kernels.xnor_conv(bits.reshape(*shape[:3], words), nonzero.reshape(*shape[:3], words),
                      found, packed_w, kernel, kernel, out)
    cols = im2col((signs * keep).reshape(n, -1).astype(np.int64), shape[1:], kernel)
    exact = (cols @ signs_w.astype(np.int64).T).reshape(out.shape)
    assert np.array_equal(out, F32(found) * exact.astype(F32))
    if magnitude == 1.0:
        float_cols = im2col(x.reshape(n, -1), shape[1:], kernel)
        assert np.array_equal(out.reshape(-1, out_channels), float_cols @ signs_w.T)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 7), st.integers(1, 24), st.integers(1, 9),
       st.integers(1, 3), st.sampled_from([1.0, 1 / 0.7]), st.booleans(), st.data())
def test_binary_conv_forward_is_the_float_product(n, size, channels, out_channels, kernel,
                                                   magnitude, dropped, data):
    """A convolution's training forward, on pixel words, row words (``K C`` of 32 to 64 bits)
    or BLAS, is the float32 product with sign(W): exactly for m = 1, and m times the exact
    integer after inverted dropout."""
    kernel = min(kernel, size)
    shape = (n, size, size, channels)
    signs = data.draw(hnp.arrays(np.int8, shape, elements=st.sampled_from([-1, 1])))
    keep = data.draw(hnp.arrays(np.bool_, shape)) if dropped else np.ones(shape, np.bool_)
    x = (signs * keep).astype(F32) * F32(magnitude)
    layer = BinaryConv2d(shape[1:], out_channels, kernel, np.random.default_rng(channels))
    out = layer.forward(x, training=True).reshape(-1, out_channels)
    rows = XNOR_MIN_ROW_BITS <= kernel * channels <= kernels.WORD_BITS
    assert ("xrows" in layer._buffers) == rows
    cols = im2col((signs * keep).reshape(n, -1).astype(np.int64), shape[1:], kernel)
    exact = cols @ np.where(layer.params["W"] >= 0, 1, -1).T
    if rows or magnitude == 1.0:
        expected = F32(magnitude) * exact.astype(F32) if rows else exact.astype(F32)
        assert np.array_equal(out, expected)
    else:
        np.testing.assert_allclose(out, F32(magnitude) * exact, rtol=1e-6, atol=1e-5)


def test_pack_refuses_mixed_magnitudes_and_the_layer_falls_back():
    """Pixels, or one odd entry, make the packer return -1; the layer then multiplies in
    float and its output is the float product."""
    x = np.ones((2, 70), F32)
    x[1, 69] = 0.5
    words = np.empty((2, 2), np.uint64)
    assert kernels.pack_uniform_signs(x, words, words.copy()) == -1
    rng = np.random.default_rng(0)
    layer = BinaryDense(70, 5, rng)
    assert np.array_equal(layer.forward(x, training=True), x @ layer.binary_weights().T)
    signs = np.where(rng.random((4, 70)) < 0.5, F32(-1), F32(1))
    assert np.array_equal(layer.forward(signs, training=True),
                          signs @ layer.binary_weights().T)


@pytest.mark.parametrize("arch", ["cbcnn", "tfc", "cnv-tiny"])
def test_xnor_forward_leaves_training_bit_identical(arch, monkeypatch):
    """The same seed and batches give the same weights and statistics with the XNOR forward
    as with the float32 product (inputs of +-1: the products are the same integers)."""
    from bnnhw.train import layers  # the module whose threshold the test moves
    from bnnhw.train.bench import time_steps

    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (300, 784)).astype(np.uint8)
    labels = rng.integers(0, 10, 300)
    states, packed = [], []
    for threshold, row_bits in ((layers.XNOR_MIN_CHANNELS, layers.XNOR_MIN_ROW_BITS),
                                (10**9, 10**9)):
        monkeypatch.setattr(layers, "XNOR_MIN_CHANNELS", threshold)
        monkeypatch.setattr(layers, "XNOR_MIN_ROW_BITS", row_bits)
        net = time_steps(arch, images, labels, 2)[1]
        states.append(net.state())
        packed.append(sum("xbits" in layer._buffers for layer in net.layers))
    assert packed[0] >= 2 and packed[1] == 0
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert np.array_equal(states[0][key], states[1][key]), key


def test_matmul_flops_of_a_step():
    quantizer = make_quantizer("W1A1", 127.5, None, None)
    rng = np.random.default_rng(0)
    net = MLP((8, 4), "W1A1", quantizer, rng, rng)
    # first layer: forward and weight gradient only; the others also the input gradient
    assert step_matmul_flops(net, 10) == 2 * 10 * (784 * 8 * 2 + 8 * 4 * 3 + 4 * 10 * 3)
    cnn = CNN(((2, True),), (3,), 3, quantizer, rng, rng)
    rows = 5 * 26 * 26
    assert step_matmul_flops(cnn, 5) == (2 * rows * 9 * 2 * 2
                                         + 2 * 5 * (13 * 13 * 2 * 3 * 3 + 3 * 10 * 3))


def test_augment_shift_and_flip():
    image = np.zeros((1, 784), np.uint8)
    image[0, 10 * 28 + 20] = 255
    rng = np.random.default_rng(0)
    shifted = Augment(shift=3).apply(np.repeat(image, 200, 0), 28, rng)
    rows, cols = np.divmod(shifted.argmax(1), 28)
    assert set(rows) == set(range(7, 14)) and set(cols) == set(range(17, 24))
    assert (shifted.sum(1) == 255).all()
    flipped = Augment(flip=True).apply(np.repeat(image, 200, 0), 28, rng)
    assert set(flipped.argmax(1) % 28) == {20, 7}
    edge = np.zeros((1, 784), np.uint8)
    edge[0, 0] = 9
    moved = Augment(shift=1).apply(np.repeat(edge, 100, 0), 28, rng)
    assert set(moved.sum(1)) == {0, 9}  # shifted out of the frame: background


@pytest.mark.parametrize("text, expected", [
    (None, Augment()), ("none", Augment()), ("flip", Augment(0, True)),
    ("shift:2", Augment(2, False)), ("shift:2,flip", Augment(2, True)),
])
def test_parse_augment_round_trips(text, expected):
    assert parse_augment(text) == expected
    assert parse_augment(expected.spec) == expected


@pytest.mark.parametrize("text, message", [
    ("shift:x", "'shift:x'"), ("shift:9", "0..8, got 9"), ("rotate", "'rotate'"),
])
def test_parse_augment_names_the_bad_value(text, message):
    with pytest.raises(AugmentError, match=message):
        parse_augment(text)


def test_dropout_layer_keeps_scales_and_routes_the_gradient():
    from bnnhw.train.layers import Dropout

    layer = Dropout(0.25, np.random.default_rng(4))
    x = np.ones((400, 50), F32)
    out = layer.forward(x, True)
    kept = out != 0
    assert set(np.unique(out)) == {0, F32(1 / 0.75)}
    assert abs(kept.mean() - 0.75) < 0.01
    grad = layer.backward(np.full(x.shape, 3, F32))
    assert np.array_equal(grad, np.where(kept, F32(3) * F32(1 / 0.75), 0))
    assert layer.forward(x, False) is x


@pytest.mark.needs_data
def test_efficiency_bench_reports_a_ratio_per_arch_and_thread_count(tmp_path):
    from bnnhw.train.bench import efficiency, format_efficiency

    report = efficiency(threads=(1,), archs=("tfc", "cnv-micro"), steps=3)
    rows = report["rows"]
    assert [(r["arch"], r["threads"]) for r in rows] == [("tfc", 1), ("cnv-micro", 1)]
    for r in rows:
        assert r["step_ms"] > 0 and r["gemm_gflops"] > 0
        assert r["ratio"] == pytest.approx(r["train_gflops"] / r["gemm_gflops"])
    assert "| tfc | 1 |" in format_efficiency(report)
