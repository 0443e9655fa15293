"""The integer reference against a plain +-1 arithmetic model, and its pinned edge cases."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bnnhw import reference
from bnnhw.model import DenseLayer, InputQuantizer, Model
from bnnhw.packing import pack_bits, unpack_bits


def naive_infer(model: Model, images: np.ndarray):
    """Textbook +-1 arithmetic: dot products, P = (dot + K) / 2, compare, argmax."""
    x = model.quantizer.quantize(images).astype(np.int64) * 2 - 1
    for layer in model.layers:
        w = layer.weights.astype(np.int64) * 2 - 1
        p = (x @ w.T + layer.in_features) // 2
        if layer.thresholds is None:
            scores = p
        else:
            x = np.where(p >= layer.thresholds, 1, -1)
    classes = [max(range(scores.shape[1]), key=lambda c, r=row: (r[c], -c)) for row in scores]
    return np.array(classes), scores


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 3), st.integers(1, 3))
def test_reference_equals_plain_arithmetic(seed, depth, levels):
    rng = np.random.default_rng(seed)
    pixels = int(rng.integers(1, 50))
    sizes = [pixels * levels] + [int(v) for v in rng.integers(1, 90, depth - 1)]
    sizes.append(int(rng.integers(2, 11)))
    layers = []
    for i, (mw, mh) in enumerate(zip(sizes, sizes[1:], strict=False)):
        t = None if i == len(sizes) - 2 else rng.integers(0, mw + 2, mh)
        layers.append(DenseLayer(rng.integers(0, 2, (mh, mw)), t))
    q = InputQuantizer(tuple(sorted(rng.choice(257, levels, replace=False).tolist())), pixels)
    model = Model(q, tuple(layers))
    images = rng.integers(0, 256, (37, pixels)).astype(np.uint8)
    classes, scores = reference.infer(model, images)
    want_classes, want_scores = naive_infer(model, images)
    np.testing.assert_array_equal(scores, want_scores)
    np.testing.assert_array_equal(classes, want_classes)
    outputs = reference.layer_outputs(model, images)
    np.testing.assert_array_equal(outputs[-1], scores)
    assert len(outputs) == len(model.layers) + 1


@given(st.integers(1, 300), st.integers(0, 2**32 - 1))
def test_pack_unpack_round_trip(k, seed):
    bits = np.random.default_rng(seed).integers(0, 2, (3, k)).astype(np.uint8)
    words = pack_bits(bits)
    assert words.shape == (3, -(-k // 64))
    np.testing.assert_array_equal(unpack_bits(words, k), bits)
    assert int(words[0, 0]) & 1 == bits[0, 0]


def test_threshold_tie_fires():
    """P == T gives +1 (the comparison is >=)."""
    w = np.array([[1, 1, 0, 0]])
    model = Model(InputQuantizer((128,), 4),
                  (DenseLayer(w, np.array([2])), DenseLayer(np.array([[1], [0]]))))
    # input bits 1,0,1,0 -> XNOR with 1,1,0,0 = 1,0,0,1 -> P = 2 == T
    outputs = reference.layer_outputs(model, np.array([[200, 0, 200, 0]], dtype=np.uint8))
    assert outputs[1].tolist() == [[1]]
    assert outputs[2].tolist() == [[1, 0]]


def test_argmax_tie_goes_to_lowest_index():
    assert reference.argmax_lowest(np.array([[3, 7, 7, 1], [5, 5, 5, 5]])).tolist() == [1, 0]
    model = Model(InputQuantizer((128,), 2), (DenseLayer(np.array([[1, 0], [0, 1], [1, 0]])),))
    classes, scores = reference.infer(model, np.array([[255, 255]], dtype=np.uint8))
    assert scores.tolist() == [[1, 1, 1]]
    assert classes.tolist() == [0]


def test_sign_of_zero_pixel_is_plus_one_at_threshold():
    model = Model(InputQuantizer.fixed(0.0, 1), (DenseLayer(np.array([[1], [0]])),))
    classes, scores = reference.infer(model, np.array([[0]], dtype=np.uint8))
    assert scores.tolist() == [[1, 0]] and classes.tolist() == [0]


def test_constant_neurons():
    """T = 0 always fires and T = K + 1 never does, whatever the input."""
    rng = np.random.default_rng(0)
    w = rng.integers(0, 2, (2, 8))
    model = Model(InputQuantizer((128,), 8),
                  (DenseLayer(w, np.array([0, 9])), DenseLayer(np.array([[1, 0], [0, 1]]))))
    images = rng.integers(0, 256, (50, 8)).astype(np.uint8)
    bits = reference.layer_outputs(model, images)[1]
    assert (bits[:, 0] == 1).all() and (bits[:, 1] == 0).all()
