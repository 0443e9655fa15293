"""Shared builders for the gateware tests: random small models and foldings."""

import numpy as np

from bnnhw.folding import Folding
from bnnhw.model import ConvLayer, DenseLayer, InputQuantizer, MaxPoolLayer, Model
from bnnhw.packing import pixel_words
from bnnhw.passes import fold_output_affine
from bnnhw.reference import infer


def divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def random_thresholds(rng, mw, mh):
    """Thresholds mixing the extremes 0 and MW + 1, the middle and every reachable value."""
    kind = rng.integers(0, 3, mh)
    return np.where(kind == 0, rng.choice([0, mw + 1], mh),
                    np.where(kind == 1, rng.integers(0, mw + 2, mh), (mw + 1) // 2))


def random_model(rng, pixels, levels, sizes):
    """Quantizer of ``levels`` thresholds (0 and 256 allowed) and dense layers of ``sizes``."""
    thresholds = sorted(rng.choice(257, levels, replace=False).tolist())
    quantizer = InputQuantizer(tuple(int(t) for t in thresholds), pixels)
    mw, layers = pixels * levels, []
    for i, mh in enumerate(sizes):
        last = i == len(sizes) - 1
        weights = rng.integers(0, 2, (mh, mw))
        layers.append(DenseLayer(weights, None if last else random_thresholds(rng, mw, mh)))
        mw = mh
    return Model(quantizer, tuple(layers))


def random_conv_model(rng, side, levels, blocks, hidden, classes):
    """A ``side x side`` image, ``blocks`` conv layers (random ``K``, ``OC``, max-pool after
    each when the map allows), dense layers of ``hidden`` and ``classes`` outputs."""
    thresholds = sorted(rng.choice(257, levels, replace=False).tolist())
    quantizer = InputQuantizer(tuple(int(t) for t in thresholds), side * side)
    shape, layers = (side, side, levels), []
    for _ in range(blocks):
        k = int(rng.integers(1, min(3, shape[0], shape[1]) + 1))
        oc = int(rng.integers(1, 5))
        fan_in = k * k * shape[2]
        conv = ConvLayer(rng.integers(0, 2, (oc, fan_in)), random_thresholds(rng, fan_in, oc),
                         k, shape)
        layers.append(conv)
        shape = conv.out_shape
        if min(shape[:2]) >= 2 and rng.random() < 0.7:
            layers.append(MaxPoolLayer(shape))
            shape = layers[-1].out_shape
    mw = shape[0] * shape[1] * shape[2]
    for i, mh in enumerate([*hidden, classes]):
        last = i == len(hidden)
        weights = rng.integers(0, 2, (mh, mw))
        layers.append(DenseLayer(weights, None if last else random_thresholds(rng, mw, mh)))
        mw = mh
    return Model(quantizer, tuple(layers))


def random_folding(rng, model):
    """Random ``(PE, SIMD)`` dividing each layer (``None`` for max-pool) and pixels per word."""
    layers = []
    for layer in model.layers:
        if layer.kind == "maxpool":
            layers.append(None)
            continue
        mh, mw = layer.matrix_shape
        layers.append((int(rng.choice(divisors(mh))), int(rng.choice(divisors(mw)))))
    return Folding(tuple(layers), int(rng.choice(divisors(model.quantizer.pixels))))


def random_images(rng, model, n):
    """Images whose pixels often sit exactly on the quantizer thresholds."""
    edges = np.array([t for t in model.quantizer.thresholds if t < 256] + [0, 255])
    near = np.clip(rng.choice(edges, (n, model.quantizer.pixels)) + rng.integers(-1, 1, 1), 0,
                   255)
    uniform = rng.integers(0, 256, (n, model.quantizer.pixels))
    return np.where(rng.random((n, model.quantizer.pixels)) < 0.5, near, uniform).astype(np.uint8)


def batchnorm_table(rng, classes, k):
    """Scores ``y_c(P)`` (float64, shape ``(K + 1, C)``) of a random final batch norm on the
    +-1 dot product ``2P - K``: scales of both signs and zero, some classes identical."""
    gamma = rng.normal(size=classes) * rng.choice([0.0, 1.0, 1.0, 1.0], classes)
    beta, mean = rng.normal(size=classes), rng.normal(size=classes) * 2
    var = rng.random(classes) + 0.1
    twin = int(rng.integers(0, classes))
    gamma[twin], beta[twin], mean[twin], var[twin] = gamma[0], beta[0], mean[0], var[0]
    dot = (2 * np.arange(k + 1) - k)[:, None].astype(np.float64)
    return (dot - mean) * (gamma / np.sqrt(var + 1e-5)) + beta


def with_output_affine(rng, model):
    """``model`` with its output layer given the exact affine of a random final batch norm."""
    out = model.layers[-1]
    table = batchnorm_table(rng, out.out_features, out.in_features)
    layer = fold_output_affine(2 * out.weights.astype(np.int64) - 1, table)
    return Model(model.quantizer, (*model.layers[:-1], layer), model.meta)


def frame_words(folding, images):
    """The input words of ``images``, frame after frame, as the accelerator takes them."""
    return [w for image in images for w in pixel_words(image, folding.pixels_per_word)]


def reference_outputs(model, images):
    """``(class, scores)`` per image from the integer reference, as ``Accelerator.decode``."""
    classes, scores = infer(model, images)
    return [(int(c), [int(v) for v in s]) for c, s in zip(classes, scores, strict=True)]
