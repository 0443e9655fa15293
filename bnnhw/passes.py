"""Pure passes from a float model to the integer model file.

The float network (trained by :mod:`bnnhw.train`) computes, for a hidden neuron with binary
weights ``w`` (+-1) on ``K`` binary inputs ``x`` (+-1)::

    dot = sum_k w_k x_k                          # an integer in {-K, -K+2, ..., K}
    y   = batchnorm_eval(dot) = (dot - mu) * (gamma / sqrt(var + eps)) + beta
    out = sign(y),   sign(0) = +1

:func:`fold_batchnorm` turns this into the integer test on the popcount ``P = (dot + K) / 2``
used by the hardware and the reference: ``out = +1  <=>  P' >= T`` where

* ``gamma >= 0``: ``P' = P`` and ``T = min{P in 0..K : batchnorm_eval(2P - K) >= 0}``
  (``K + 1`` when there is none: the neuron is constantly -1);
* ``gamma < 0``: ``batchnorm_eval`` decreases with ``dot``, so the weight row is negated
  (the *flip*): ``P' = K - P`` and ``T = min{P' : batchnorm_eval(K - 2P') >= 0}``;
* ``gamma = 0``: ``batchnorm_eval`` is the constant ``beta``: ``T = 0`` (always +1) when
  ``beta >= 0``, else ``T = K + 1`` (always -1). This falls out of the first rule.

The minimum is found by binary search over ``P`` evaluating **the same floating-point
expression** the float model evaluates (:func:`batchnorm_eval`, same dtype). Correctly rounded
``-``, ``*``, ``+`` are monotone, so ``batchnorm_eval`` is monotone in ``dot`` in floating point
too, and the folded thresholds reproduce the float network's output bits on every input,
boundary cases included, instead of approximately reproducing the real-number threshold
``ceil((K + mu - beta * sigma / gamma) / 2)``.

Convolutions fold the same way (:func:`fold_conv`): every output position of channel ``o``
applies the same weight row ``w_o`` (the ``(OC, K * K * C)`` matrix, columns in window order
``(ky * K + kx) * C + c``) and the same per-channel batch norm, so the dense fold of that matrix
gives the channel's threshold, exact at every position.

Pixel layers (:func:`fold_pixels`, the first layer of a ``pixels8`` model) read 8-bit pixels
``x_k`` with +-1 weights: the float network evaluates ``batchnorm_eval(a / 255)`` on the exact
integer ``a = sum_k w_k x_k`` in ``[-255 K, 255 K]``, and the fold searches that range for the
least firing ``a`` (``a' = -a`` after the flip of a ``gamma < 0`` row), the same way.

Max-pool: the float network applies it **after** batch norm, before or after the sign, i.e.
``sign(max_window(BN(dot)))`` or ``max_window(sign(BN(dot)))``, which are equal because ``sign``
is monotone non-decreasing and ``max`` returns one of its arguments. Either is the OR over the
window of the folded bits ``P' >= T``, for every sign of ``gamma``: each folded bit equals the
float bit of its own position, and the OR of bits is the ``max`` of +-1. Pooling *before* batch
norm (``sign(BN(max_window(dot)))``) would not fold to an OR: with ``gamma < 0`` the batch norm
is decreasing and the result is the *minimum* over the window (an AND of the bits), so the
trainer in :mod:`bnnhw.train` never pools before batch norm.
"""

from __future__ import annotations

import numpy as np

from .model import (
    PIXEL_MAX,
    ConvLayer,
    DenseLayer,
    InputQuantizer,
    MaxPoolLayer,
    Model,
    ModelError,
    PixelInput,
)


def batchnorm_eval(x: np.ndarray, mean: np.ndarray, var: np.ndarray, gamma: np.ndarray,
                   beta: np.ndarray, eps: float) -> np.ndarray:
    """Eval-mode batch norm, ``(x - mean) * (gamma / sqrt(var + eps)) + beta``.

    This is the one definition both the float model and the fold pass evaluate; the result
    has the dtype of the parameters.
    """
    dtype = np.result_type(mean, var, gamma, beta)
    return (np.asarray(x, dtype=dtype) - mean) * batchnorm_scale(var, gamma, eps, dtype) + beta


def batchnorm_scale(var: np.ndarray, gamma: np.ndarray, eps: float,
                    dtype: np.dtype) -> np.ndarray:
    """``gamma / sqrt(var + eps)`` in ``dtype``: the per-feature factor of
    :func:`batchnorm_eval`."""
    dtype = np.dtype(dtype)
    return (gamma / np.sqrt(var + dtype.type(eps))).astype(dtype)


def binarize(x: np.ndarray) -> np.ndarray:
    """``sign`` with ``sign(0) = +1``, returned as bits (1 for +1, 0 for -1)."""
    return (np.asarray(x) >= 0).astype(np.uint8)


def fold_batchnorm(weights_pm1: np.ndarray, mean: np.ndarray, var: np.ndarray,
                   gamma: np.ndarray, beta: np.ndarray, eps: float) -> DenseLayer:
    """Fold a binary dense layer followed by batch norm and sign into a thresholded layer.

    Parameters
    ----------
    weights_pm1 : ndarray (MH, MW)
        The binary weights as +-1 (or any reals: their sign is taken, ``sign(0) = +1``).
    mean, var, gamma, beta : ndarray (MH,)
        Batch-norm running statistics and affine parameters (all of one float dtype).
    eps : float

    Returns
    -------
    DenseLayer
        Weight bits with the rows of ``gamma < 0`` negated, and integer thresholds in
        ``[0, MW + 1]``; see the module docstring for the maths.
    """
    bits = binarize(weights_pm1)
    mh, k = bits.shape
    mean, var, gamma, beta = _check_batchnorm(mh, mean, var, gamma, beta, eps)
    flip = gamma < 0
    bits = np.where(flip[:, None], 1 - bits, bits).astype(np.uint8)

    def fires(p: np.ndarray) -> np.ndarray:
        dot = np.where(flip, k - 2 * p, 2 * p - k)
        return batchnorm_eval(dot, mean, var, gamma, beta, eps) >= 0

    return DenseLayer(bits, least_firing(fires, 0, k, mh))


def least_firing(fires, first: int, last: int, rows: int) -> np.ndarray:
    """Per row, the least integer ``v`` in ``[first, last]`` with ``fires(v)``, else ``last + 1``.

    ``fires`` maps an int64 vector ``(rows,)`` to booleans and must be monotone non-decreasing
    in ``v`` for every row; a binary search then needs ``ceil(log2(last - first + 2))`` calls.
    """
    lo = np.full(rows, first, dtype=np.int64)
    hi = np.full(rows, last + 1, dtype=np.int64)
    while (lo < hi).any():
        active = lo < hi
        mid = (lo + hi) // 2
        ok = fires(np.minimum(mid, last))
        hi = np.where(active & ok, mid, hi)
        lo = np.where(active & ~ok, mid + 1, lo)
    return lo


def pixel_preactivation(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The batch-norm input of a pixel layer, ``a / 255`` in ``dtype``.

    ``a = sum_k w_k x_k`` is the exact integer accumulator of +-1 weights and pixels
    ``x_k`` in ``[0, 255]``; the float network computes it in float32 (exact: every partial
    sum is an integer of magnitude at most ``255 K < 2**24`` for ``K <= 65793``) and then
    divides, which equals feeding the layer ``x / 255``. Correctly rounded division by a
    positive constant is monotone, so :func:`fold_pixels` can search on this expression.
    """
    dtype = np.dtype(dtype)
    return np.asarray(a, dtype=dtype) / dtype.type(PIXEL_MAX)


def _check_batchnorm(mh: int, mean: np.ndarray, var: np.ndarray, gamma: np.ndarray,
                     beta: np.ndarray, eps: float) -> tuple[np.ndarray, ...]:
    """The four batch-norm arrays, checked for shape ``(MH,)``, finiteness and ``var + eps > 0``."""
    params = [np.asarray(p) for p in (mean, var, gamma, beta)]
    for name, p in zip(("mean", "var", "gamma", "beta"), params, strict=True):
        if p.shape != (mh,):
            raise ModelError(f"batch-norm {name} must have shape ({mh},), got {p.shape}")
        if not np.isfinite(p).all():
            raise ModelError(f"batch-norm {name} holds non-finite values")
    if (params[1] + eps <= 0).any():
        raise ModelError("batch-norm var + eps must be positive")
    return tuple(params)


def fold_pixels(weights_pm1: np.ndarray, mean: np.ndarray, var: np.ndarray, gamma: np.ndarray,
                beta: np.ndarray, eps: float) -> DenseLayer:
    """Fold an 8-bit-input dense layer, batch norm and sign into a pixel layer.

    The float network computes ``out = sign(batchnorm_eval(a / 255))`` with
    ``a = sum_k w_k x_k`` (``w`` in {-1, +1}, pixels ``x`` in [0, 255], so
    ``a`` in ``[-255 K, 255 K]``), the ``a / 255`` being :func:`pixel_preactivation`.

    * ``gamma >= 0``: the expression is non-decreasing in ``a``;
      ``T = min{a in [-255 K, 255 K] : batchnorm_eval(a / 255) >= 0}``, ``255 K + 1`` if none.
    * ``gamma < 0``: it decreases with ``a``, so the row is negated, which negates the
      accumulator: the hardware sees ``a' = -a`` and the neuron fires iff ``a <= bound``, i.e.
      ``a' >= T`` with ``T = min{a' : batchnorm_eval(-a' / 255) >= 0}``.
    * ``gamma = 0``: the constant ``beta``; ``T = -255 K`` (always +1) when ``beta >= 0``, else
      ``255 K + 1`` (always -1).

    The minimum is a binary search (:func:`least_firing`) on the float network's own
    floating-point expression, so the integer test ``a' >= T`` reproduces its output bit on
    every input, ties at the threshold included.

    Parameters
    ----------
    weights_pm1 : ndarray (MH, K)
        Weights as +-1 (their sign is taken, ``sign(0) = +1``).
    mean, var, gamma, beta : ndarray (MH,)
    eps : float

    Returns
    -------
    DenseLayer
        ``pixels8=True``, rows of ``gamma < 0`` negated, thresholds in ``[-255 K, 255 K + 1]``.
    """
    bits = binarize(weights_pm1)
    mh, k = bits.shape
    mean, var, gamma, beta = _check_batchnorm(mh, mean, var, gamma, beta, eps)
    flip = gamma < 0
    bits = np.where(flip[:, None], 1 - bits, bits).astype(np.uint8)
    dtype = np.result_type(mean, var, gamma, beta)

    def fires(a: np.ndarray) -> np.ndarray:
        pre = pixel_preactivation(np.where(flip, -a, a), dtype)
        return batchnorm_eval(pre, mean, var, gamma, beta, eps) >= 0

    return DenseLayer(bits, least_firing(fires, -PIXEL_MAX * k, PIXEL_MAX * k, mh), pixels8=True)


def fold_conv(weights_pm1: np.ndarray, mean: np.ndarray, var: np.ndarray, gamma: np.ndarray,
              beta: np.ndarray, eps: float, kernel: int,
              in_shape: tuple[int, int, int], pixels8: bool = False) -> ConvLayer:
    """Fold a binary convolution followed by per-channel batch norm and sign.

    Parameters
    ----------
    weights_pm1 : ndarray (OC, K * K * C)
        Binary weights as +-1, column ``(ky * K + kx) * C + c``.
    mean, var, gamma, beta : ndarray (OC,)
    eps : float
    kernel : int
    in_shape : tuple of int
        ``(H, W, C)``.
    pixels8 : bool
        The first layer of a ``pixels8`` model (``C = 1``, 8-bit pixel maps): folded by
        :func:`fold_pixels` instead.

    Returns
    -------
    ConvLayer
        :func:`fold_batchnorm` (or :func:`fold_pixels`) of the ``(OC, K * K * C)`` matrix: rows
        of ``gamma < 0`` negated, thresholds in ``[0, K * K * C + 1]`` (pixel layer:
        ``[-255 K K C, 255 K K C + 1]``).
    """
    fold = fold_pixels if pixels8 else fold_batchnorm
    dense = fold(weights_pm1, mean, var, gamma, beta, eps)
    return ConvLayer(dense.weights, dense.thresholds, kernel, in_shape, pixels8)


def fold_output(weights_pm1: np.ndarray) -> DenseLayer:
    """The output layer: weight bits only; its popcounts ``P = (dot + K) / 2`` are the scores.

    The float model's logits must be ``alpha * dot`` with a scalar ``alpha > 0`` so that the
    argmax (lowest index on ties) is the same on ``P``.
    """
    return DenseLayer(binarize(weights_pm1), None)


AFFINE_BITS = 41
"""The output affine's scales are searched with ``b = 0 .. AFFINE_BITS - 1`` fractional bits."""


def fold_output_affine(weights_pm1: np.ndarray, table: np.ndarray) -> DenseLayer:
    """The output layer with an exact integer affine on its popcounts.

    The float network's score of class ``c`` is an affine function ``y_c(P) = a_c P + y_c(0)``
    of its popcount ``P = (dot + K) / 2`` (a final batch norm, TensorNorm or ``Mul``/``Add``:
    per-class scales of any sign, zero included, and per-class offsets). ``table[P, c]`` holds
    ``y_c(P)`` for every ``P`` in ``0..K``, evaluated in float64 so that rounding does not bend
    the lines. The integer scores are ``s_c(P) = m_c P + o_c`` with

        m_c = round(2**b a_c / A),   o_c = round(2**b y_c(0) / A) - min_{c, P} (...),
        a_c = (y_c(K) - y_c(0)) / K,  A = max_c |a_c|,

    for the least ``b`` in ``0 .. AFFINE_BITS - 1`` at which the integer scores order every
    pair ``(c, P)``, ``(d, Q)`` exactly as the table does, ties included (equal dense ranks
    over the whole table). Then the argmax with the lowest index winning ties is the table's on
    every input, not only on the images tried. Scores lie in ``[0, 2**SCORE_BITS_MAX)``.

    A float32 network rounds its scores: two of them whose real values differ by less than a
    float32 step can tie or swap there and not in the table. No integer form can follow that
    rounding in general; the importer's check on test images reports any image where it
    matters.

    Raises
    ------
    ModelError
        When no ``b`` orders the table exactly (the scores are not affine in ``P``), naming
        the first class and popcount whose order differs.
    """
    bits = binarize(weights_pm1)
    y = np.asarray(table, dtype=np.float64)
    k = bits.shape[1]
    if y.shape != (k + 1, bits.shape[0]) or not np.isfinite(y).all():
        raise ModelError(f"the output score table must be finite with shape "
                         f"{(k + 1, bits.shape[0])} (popcounts 0..K by classes), got {y.shape}")
    truth = np.unique(y.ravel(), return_inverse=True)[1]
    slope, base = (y[-1] - y[0]) / k, y[0]
    norm = np.abs(slope).max()
    if norm == 0:
        norm = max(float(np.abs(base).max()), 1.0)
    p = np.arange(k + 1, dtype=np.int64)[:, None]
    for b in range(AFFINE_BITS):
        m = np.round(slope / norm * 2.0 ** b).astype(np.int64)
        o = np.round(base / norm * 2.0 ** b)
        if np.abs(o).max() >= 2.0 ** 56:
            break
        scores = p * m + o.astype(np.int64)
        got = np.unique(scores.ravel(), return_inverse=True)[1]
        if np.array_equal(got, truth):
            offset = o.astype(np.int64) - int(scores.min())
            return DenseLayer(bits, None, scale=m, offset=offset)
    bad = int(np.argmax(got != truth))
    raise ModelError(f"the output scores have no exact integer affine form within "
                     f"{AFFINE_BITS} bits: "
                     f"class {bad % bits.shape[0]} at popcount {bad // bits.shape[0]} "
                     f"(score {y.ravel()[bad]!r}) falls out of order")


def fold_model(quantizer: InputQuantizer | PixelInput, hidden: list[dict],
               output_weights: np.ndarray, meta: dict,
               output_table: np.ndarray | None = None) -> Model:
    """Fold a whole float network into an integer :class:`Model`.

    Parameters
    ----------
    quantizer : InputQuantizer or PixelInput
        With :class:`PixelInput` the first hidden layer (dense or conv) is folded as a pixel
        layer (:func:`fold_pixels`): its float network feeds batch norm with
        :func:`pixel_preactivation`.
    hidden : list of dict
        One dict per hidden layer. Dense (no ``kind`` key, or ``kind="dense"``): ``weights``
        (MH, MW), ``mean``, ``var``, ``gamma``, ``beta`` (MH,) and ``eps``. Convolution
        (``kind="conv"``): the same with ``weights`` (OC, K * K * C), plus ``kernel`` and
        ``in_shape`` (H, W, C). Max-pool (``kind="maxpool"``): ``in_shape``.
    output_weights : ndarray (C, MW)
    meta : dict
    output_table : ndarray (MW + 1, C), optional
        The float scores of every popcount when the network ends in a per-class affine (a
        final batch norm): the output layer gets the exact integer affine of
        :func:`fold_output_affine`. Without it the popcounts are the scores
        (:func:`fold_output`).
    """
    layers: list[DenseLayer | ConvLayer | MaxPoolLayer] = []
    for i, h in enumerate(hidden):
        kind = h.get("kind", "dense")
        if kind == "maxpool":
            layers.append(MaxPoolLayer(tuple(h["in_shape"])))
            continue
        if kind not in ("dense", "conv"):
            raise ModelError(f"hidden layer {i} has unknown kind {kind!r}; "
                             f"choose dense, conv or maxpool")
        bn = (h["mean"], h["var"], h["gamma"], h["beta"], h["eps"])
        pixels8 = i == 0 and quantizer.kind == "pixels8"
        if kind == "conv":
            layers.append(fold_conv(h["weights"], *bn, h["kernel"], tuple(h["in_shape"]),
                                    pixels8))
        elif pixels8:
            layers.append(fold_pixels(h["weights"], *bn))
        else:
            layers.append(fold_batchnorm(h["weights"], *bn))
    layers.append(fold_output(output_weights) if output_table is None
                  else fold_output_affine(output_weights, output_table))
    return Model(quantizer, tuple(layers), meta)
