"""Proofs that folding batch norm into integer thresholds is exact, and pinned edge cases.

A hidden neuron's output depends only on its own dot product, which takes the ``K + 1`` values
``2P - K``, ``P = 0..K``. For every row the tests build inputs that hit every one of those
values (the row's weights with the first ``K - P`` bits flipped), so each check covers every
input the neuron can see; random inputs check whole layers on top.
"""

from __future__ import annotations

import numpy as np
import pytest
from bnnhw.train.layers import BatchNorm1d, BinaryDense, sign
from hypothesis import given, settings
from hypothesis import strategies as st

from bnnhw.model import DenseLayer, InputQuantizer, Model
from bnnhw.packing import pack_bits
from bnnhw.passes import batchnorm_eval, binarize, fold_batchnorm, fold_output
from bnnhw.reference import argmax_lowest, infer, popcounts

F32 = np.float32


def integer_outputs(layer: DenseLayer, x_bits: np.ndarray) -> np.ndarray:
    """Reference bits ``P >= T`` of a folded layer through packed XNOR-popcount."""
    p = popcounts(pack_bits(x_bits), pack_bits(layer.weights), layer.in_features)
    return (p >= layer.thresholds[None, :]).astype(np.uint8)


def float_outputs(w_pm1: np.ndarray, params: dict, x_bits: np.ndarray) -> np.ndarray:
    """The float network's bits: ``sign(batchnorm_eval(x @ W.T))`` evaluated in float32."""
    x = (2 * x_bits.astype(F32) - 1)
    dot = x @ w_pm1.astype(F32).T
    y = batchnorm_eval(dot, params["mean"], params["var"], params["gamma"], params["beta"],
                       params["eps"])
    return binarize(y)


def covering_inputs(w_bits: np.ndarray) -> np.ndarray:
    """For each row and each ``P`` in ``0..K``, an input agreeing with the row on ``P`` bits."""
    mh, k = w_bits.shape
    rows = []
    for r in range(mh):
        for p in range(k + 1):
            x = w_bits[r].copy()
            x[:k - p] ^= 1
            rows.append(x)
    return np.array(rows, dtype=np.uint8)


def all_inputs(k: int) -> np.ndarray:
    """Every one of the ``2**k`` bit vectors."""
    n = np.arange(2 ** k, dtype=np.int64)
    return ((n[:, None] >> np.arange(k)) & 1).astype(np.uint8)


f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@st.composite
def bn_layers(draw):
    """A small random binary layer with float32 batch-norm parameters, edge cases included."""
    k = draw(st.integers(1, 40))
    mh = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    w = np.random.default_rng(seed).integers(0, 2, (mh, k)) * 2 - 1
    dots = [k - 2 * j for j in range(k + 1)]
    gamma, beta, mean, var = [], [], [], []
    for _ in range(mh):
        g = draw(st.one_of(st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-30, -1e-30]),
                           st.floats(-8, 8, width=32)))
        kind = draw(st.sampled_from(["boundary", "random", "beta-boundary"]))
        v = draw(st.one_of(st.just(0.0), st.floats(0, 50, width=32)))
        if kind == "boundary":
            b, m = draw(st.sampled_from([0.0, -0.0])), float(draw(st.sampled_from(dots)))
        elif kind == "beta-boundary":
            b = draw(st.floats(-3, 3, width=32))
            sigma = np.sqrt(F32(v) + F32(1e-4))
            dot = F32(draw(st.sampled_from(dots)))
            with np.errstate(over="ignore", divide="ignore"):
                m = float(dot + F32(b) * sigma / F32(g or 1.0))
            m = m if np.isfinite(m) else float(dot)
        else:
            b = draw(st.one_of(st.just(0.0), st.floats(-3, 3, width=32)))
            m = draw(st.floats(-k - 3, k + 3, width=32))
        gamma.append(g)
        beta.append(b)
        mean.append(m)
        var.append(v)
    params = {"mean": np.array(mean, F32), "var": np.array(var, F32),
              "gamma": np.array(gamma, F32), "beta": np.array(beta, F32), "eps": 1e-4}
    return w, params


@settings(max_examples=300, deadline=None)
@given(bn_layers(), st.integers(0, 2 ** 32 - 1))
def test_fold_batchnorm_matches_float_on_every_dot_value(layer_and_params, seed):
    w, params = layer_and_params
    folded = fold_batchnorm(w, params["mean"], params["var"], params["gamma"], params["beta"],
                            params["eps"])
    k = w.shape[1]
    assert folded.thresholds.min() >= 0 and folded.thresholds.max() <= k + 1
    rng = np.random.default_rng(seed)
    inputs = [covering_inputs(binarize(w)), rng.integers(0, 2, (64, k), dtype=np.uint8)]
    if k <= 10:
        inputs.append(all_inputs(k))
    x = np.concatenate(inputs)
    np.testing.assert_array_equal(integer_outputs(folded, x), float_outputs(w, params, x))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 12), st.integers(0, 2 ** 32 - 1))
def test_training_layers_in_eval_mode_match_the_fold(k, seed):
    """The trainer's own BinaryDense + BatchNorm1d (eval) equal the folded layer exhaustively."""
    rng = np.random.default_rng(seed)
    mh = 5
    dense = BinaryDense(k, mh, rng)
    bn = BatchNorm1d(mh)
    bn.params["gamma"] = rng.normal(size=mh).astype(F32)
    bn.params["gamma"][0] = 0.0
    bn.params["beta"] = rng.normal(size=mh).astype(F32)
    bn.params["beta"][1] = 0.0
    bn.running_mean = rng.uniform(-k, k, mh).astype(F32)
    bn.running_mean[1] = float(k - 2 * rng.integers(0, k + 1))
    bn.running_var = rng.uniform(0, 4, mh).astype(F32)
    x_bits = all_inputs(k) if k <= 10 else rng.integers(0, 2, (2048, k), dtype=np.uint8)
    y = bn.forward(dense.forward(2 * x_bits.astype(F32) - 1, False), False)
    folded = fold_batchnorm(dense.binary_weights(), bn.running_mean, bn.running_var,
                            bn.params["gamma"], bn.params["beta"], bn.eps)
    np.testing.assert_array_equal(integer_outputs(folded, x_bits), binarize(sign(y)))


def test_sign_of_zero_is_plus_one():
    assert binarize(np.array([0.0, -0.0, -1e-30, 1e-30])).tolist() == [1, 1, 0, 1]
    assert sign(np.array([0.0, -0.0, -2.0], F32)).tolist() == [1.0, 1.0, -1.0]


def test_threshold_tie_fires():
    """``beta = 0`` and ``mu`` on a dot value: the neuron fires exactly from ``P = T`` on."""
    k = 8
    w = np.ones((1, k))
    for dot in range(-k, k + 1, 2):
        layer = fold_batchnorm(w, np.array([dot], F32), np.array([1.0], F32),
                               np.array([1.0], F32), np.array([0.0], F32), 1e-4)
        t = (k + dot) // 2
        assert layer.thresholds.tolist() == [t]
        x = np.zeros((1, k), np.uint8)
        x[0, :t] = 1  # agrees with the all-ones row on exactly T bits: P == T
        assert integer_outputs(layer, x).tolist() == [[1]]
        if t > 0:
            x[0, t - 1] = 0
            assert integer_outputs(layer, x).tolist() == [[0]]


@pytest.mark.parametrize(("beta", "threshold"), [(0.5, 0), (0.0, 0), (-0.0, 0), (-0.5, 7)])
def test_gamma_zero_is_constant(beta, threshold):
    """``gamma = 0``: the output is ``sign(beta)`` for every input (``T = 0`` or ``K + 1``)."""
    k = 6
    layer = fold_batchnorm(np.ones((1, k)), np.array([2.0], F32), np.array([1.0], F32),
                           np.array([0.0], F32), np.array([beta], F32), 1e-4)
    assert layer.thresholds.tolist() == [threshold]
    assert set(integer_outputs(layer, all_inputs(k)).ravel().tolist()) == {int(beta >= 0)}


def test_negative_gamma_flips_the_row():
    w = np.array([[1, -1, 1, 1]])
    layer = fold_batchnorm(w, np.array([0.0], F32), np.array([1.0], F32),
                           np.array([-1.0], F32), np.array([0.0], F32), 1e-4)
    assert layer.weights.tolist() == [[0, 1, 0, 0]]


def test_argmax_tie_goes_to_lowest_index():
    assert argmax_lowest(np.array([[3, 5, 5, 1], [2, 2, 2, 2]])).tolist() == [1, 0]
    rows = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]) * 2 - 1
    model = Model(InputQuantizer((128,), 4), (fold_output(rows),), {})
    classes, scores = infer(model, np.full((1, 4), 255, np.uint8))
    assert scores.tolist() == [[2, 4, 4]]
    assert classes.tolist() == [1]
