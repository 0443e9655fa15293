"""Shared builders for the gateware tests: random small models and foldings."""

import numpy as np

from bnnhw.folding import Folding
from bnnhw.model import DenseLayer, InputQuantizer, Model


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


def random_folding(rng, model):
    layers = tuple((int(rng.choice(divisors(layer.out_features))),
                    int(rng.choice(divisors(layer.in_features)))) for layer in model.layers)
    return Folding(layers, int(rng.choice(divisors(model.quantizer.pixels))))


def random_images(rng, model, n):
    """Images whose pixels often sit exactly on the quantizer thresholds."""
    edges = np.array([t for t in model.quantizer.thresholds if t < 256] + [0, 255])
    near = np.clip(rng.choice(edges, (n, model.quantizer.pixels)) + rng.integers(-1, 1, 1), 0,
                   255)
    uniform = rng.integers(0, 256, (n, model.quantizer.pixels))
    return np.where(rng.random((n, model.quantizer.pixels)) < 0.5, near, uniform).astype(np.uint8)
