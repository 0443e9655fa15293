"""Compiled elementwise kernels of the trainer (numba, float32, one pass each where possible).

The forward product of a binary layer whose inputs are signs runs on packed bits
(:func:`xnor_conv`: XOR, AND and popcount, the same integers as the float32 product); the other
matrix products of a training step run in BLAS. Everything between them (batch norm,
max-pool, sign and its straight-through gradient, the scatter of convolution windows, the Adam
update) is memory-bound. numpy spells each of those as several full-size temporaries; the
kernels here read and write each array once and reuse the caller's buffers where the data flow
allows it. They keep the dtype of their arrays (float32 in training), run on one thread each and are
deterministic: every reduction walks its array in
a fixed order, accumulating in float64.

At inference only :func:`batchnorm_eval_into` runs: it evaluates the expression of
:func:`bnnhw.passes.batchnorm_eval`, the one the fold pass reproduces exactly, one rounded
float32 operation at a time (numba emits no fused multiply-add without ``fastmath``), so the
float network and the integer model agree bit for bit.
"""

from __future__ import annotations

import numba
import numpy as np

KERNEL = numba.njit(cache=True, nogil=True, error_model="numpy")


@KERNEL
def sign_and_window(x, out, passes):
    """``out = sign(x)`` (``+1`` for ``x >= 0``) and ``passes = |x| <= 1`` in one pass.

    ``passes`` is the straight-through window of ``hardtanh``; all arrays are flat.
    """
    for i in range(x.size):
        value = x[i]
        out[i] = np.float32(1.0) if value >= 0 else np.float32(-1.0)
        passes[i] = abs(value) <= 1


@KERNEL
def mask_inplace(grad, keep):
    """``grad *= keep`` for a boolean ``keep`` (flat arrays), in place."""
    for i in range(grad.size):
        if not keep[i]:
            grad[i] = 0


@KERNEL
def sign_into(w, out):
    """``out = sign(w)`` as float32 ``+-1`` (flat arrays)."""
    for i in range(w.size):
        out[i] = np.float32(1.0) if w[i] >= 0 else np.float32(-1.0)


WORD_BITS = 64


@KERNEL
def popcount64(word):
    """Set bits of a uint64, as int64 (the shift-and-mask count; LLVM emits ``popcnt`` for it).

    int64, not uint64: numba adds int64 and uint64 in float64."""
    word = word - ((word >> np.uint64(1)) & np.uint64(0x5555555555555555))
    word = ((word & np.uint64(0x3333333333333333))
            + ((word >> np.uint64(2)) & np.uint64(0x3333333333333333)))
    word = (word + (word >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((word * np.uint64(0x0101010101010101)) >> np.uint64(56))


@KERNEL
def pack_uniform_signs(x, bits, nonzero):
    """Pack the rows of ``x`` (P, C), whose entries must all lie in ``{-m, 0, +m}``, into bits.

    Bit ``j`` of word ``w`` stands for column ``64 w + j``: in ``bits`` it is set for
    ``x > 0``, in ``nonzero`` for ``x != 0`` (``bits``, ``nonzero``: (P, ceil(C / 64)) uint64;
    padding bits are 0). Returns ``m`` (0 for an all-zero ``x``), or -1 when an entry breaks
    the pattern, with the arrays then only partly written: the caller falls back to a float
    product. The binary layers' inputs are signs (``m = 1``), or signs after inverted dropout
    (``m = 1 / (1 - rate)``, dropped entries 0).
    """
    p, c = x.shape
    magnitude = np.float32(0.0)
    for row in range(p):
        for col in range(c):
            if x[row, col] != 0:
                magnitude = np.float32(abs(x[row, col]))
                break
        if magnitude != 0:
            break
    for row in range(p):
        bad = False
        for word in range(bits.shape[1]):
            base = word * WORD_BITS
            packed = np.uint64(0)
            present = np.uint64(0)
            for j in range(min(WORD_BITS, c - base)):
                value = np.float32(x[row, base + j])
                positive = value > 0
                nonzero_value = positive or value < 0
                packed |= np.uint64(positive) << np.uint64(j)
                present |= np.uint64(nonzero_value) << np.uint64(j)
                bad |= nonzero_value and abs(value) != magnitude
            bits[row, word] = packed
            nonzero[row, word] = present
        if bad:
            return np.float32(-1.0)
    return magnitude


@KERNEL
def pack_weight_signs(w, bits):
    """Pack ``sign(w)`` (``+1`` for ``w >= 0``) into bits for :func:`xnor_conv`.

    ``w`` is (OC, G * C) with column ``g * C + c``; ``bits`` is (G, ceil(C / 64), OC) uint64
    (output channel last, the order :func:`xnor_conv` walks), bit set for ``+1``, padding bits
    0. A dense layer is ``G = 1``; a convolution has one group per window position
    (``G = K * K``).
    """
    groups, words, oc = bits.shape
    c = w.shape[1] // groups
    for o in range(oc):
        for g in range(groups):
            for word in range(words):
                base = g * c + word * WORD_BITS
                packed = np.uint64(0)
                if c - word * WORD_BITS >= WORD_BITS:  # a full word: a fixed count vectorises
                    for j in range(WORD_BITS):
                        packed |= np.uint64(w[o, base + j] >= 0) << np.uint64(j)
                else:
                    for j in range(c - word * WORD_BITS):
                        packed |= np.uint64(w[o, base + j] >= 0) << np.uint64(j)
                bits[g, word, o] = packed


@KERNEL
def join_window_rows(bits, kernel, c, rows):
    """Join the packed bits of ``kernel`` neighbouring pixels into one word per window row.

    ``bits`` (N, H, W, 1) holds each pixel's ``c`` channel bits (:func:`pack_uniform_signs`,
    ``kernel * c <= 64``); ``rows`` (N, H, W - kernel + 1, 1) gets bit ``kx * c + ch`` from bit
    ``ch`` of pixel ``x + kx``: the ``(kx, c)`` order of a window row in the convolution's
    weight columns, so a ``kernel x kernel`` window is ``kernel`` words instead of
    ``kernel^2``.
    """
    n, h, ow = rows.shape[0], rows.shape[1], rows.shape[2]
    for b in range(n):
        for y in range(h):
            for xo in range(ow):
                rows[b, y, xo, 0] = bits[b, y, xo, 0]
            for kx in range(1, kernel):
                shift = np.uint64(kx * c)
                for xo in range(ow):
                    rows[b, y, xo, 0] |= bits[b, y, xo + kx, 0] << shift


@KERNEL
def xnor_conv(bits, nonzero, magnitude, weights, kernel_height, kernel_width, out):
    """Binary convolution by XNOR and popcount, stride 1, no padding.

    ``bits``, ``nonzero`` (N, H, W, Cw) are the packed input (:func:`pack_uniform_signs`, one
    row per pixel, or :func:`join_window_rows`, one word per window row), ``weights``
    (KH * KW, Cw, OC) the packed ``sign(W)`` (:func:`pack_weight_signs`). For each output
    position, with ``d`` the window's XOR of input and weight bits restricted to the nonzero
    inputs::

        out[n, y, x, o] = m * (nonzero count of the window - 2 * popcount(d))

    which is ``sum_k x_k sign(W)_ok`` exactly: for ``m = 1`` the float32 matrix product gives
    the same integers. A ``K x K`` convolution is ``KH = KW = K`` on pixel words or
    ``KH = K, KW = 1`` on row words; a dense layer is ``H = W = KH = KW = 1``. The innermost
    loop runs over the output channels, so it compiles to vector XOR, AND and popcount.
    """
    n, h, w, cw = bits.shape
    oc = weights.shape[2]
    oh, ow = h - kernel_height + 1, w - kernel_width + 1
    flat = weights.reshape(kernel_height * kernel_width * cw, oc)
    differ = np.empty(oc, np.int64)
    for b in range(n):
        for y in range(oh):
            for xo in range(ow):
                count = 0
                differ[:] = 0
                for ky in range(kernel_height):
                    for kx in range(kernel_width):
                        for word in range(cw):
                            x_bits = bits[b, y + ky, xo + kx, word]
                            x_nonzero = nonzero[b, y + ky, xo + kx, word]
                            count += popcount64(x_nonzero)
                            row = flat[(ky * kernel_width + kx) * cw + word]
                            for o in range(oc):
                                differ[o] += popcount64(x_nonzero & (x_bits ^ row[o]))
                for o in range(oc):
                    out[b, y, xo, o] = magnitude * np.float32(count - 2 * differ[o])


@KERNEL
def batch_statistics(x, prescale, eps, mean, var, sigma):
    """Per-column statistics of ``v = prescale * x`` for ``x`` (M, C), in one read::

        mean = sum v / M,   var = sum v^2 / M - mean^2  (float64 sums, biased),
        sigma = sqrt(var + eps)

    written to ``mean``, ``var`` and ``sigma`` (C,) in the caller's dtype.
    """
    m, c = x.shape
    total = np.zeros(c, np.float64)
    squares = np.zeros(c, np.float64)
    for i in range(m):
        for j in range(c):
            value = np.float64(x[i, j] * prescale)
            total[j] += value
            squares[j] += value * value
    finish_statistics(total, squares, m, eps, mean, var, sigma)


@KERNEL
def finish_statistics(total, squares, m, eps, mean, var, sigma):
    """``mean = total / m``, biased ``var = squares / m - mean^2`` (at least 0) and
    ``sigma = sqrt(var + eps)`` per channel, from float64 sums over ``m`` values."""
    for j in range(total.size):
        mu = total[j] / m
        mean[j] = mu
        var[j] = max(squares[j] / m - mu * mu, 0.0)
        sigma[j] = np.sqrt(var[j] + eps)


@KERNEL
def batchnorm_train(x, gamma, beta, eps, xhat, out, mean, var, sigma):
    """Training-mode batch norm of ``x`` (M, C) over its M rows: one read of ``x`` for the
    statistics (:func:`batch_statistics`) and one for the output,
    ``xhat = (x - mean) / sigma`` and ``out = gamma xhat + beta``.
    """
    batch_statistics(x, 1.0, eps, mean, var, sigma)
    m, c = x.shape
    inverse = 1 / sigma
    for i in range(m):
        for j in range(c):
            normal = (x[i, j] - mean[j]) * inverse[j]
            xhat[i, j] = normal
            out[i, j] = gamma[j] * normal + beta[j]


@KERNEL
def batchnorm_backward(grad, xhat, gamma, sigma, dgamma, dbeta):
    """Batch-norm backward on ``grad`` (M, C), in place.

    ``dbeta = sum g``, ``dgamma = sum g xhat`` (float64 sums, written to the given arrays),
    then ``grad <- gamma / (M sigma) * (M g - dbeta - xhat dgamma)``.
    """
    m, c = grad.shape
    sum_g = np.zeros(c, np.float64)
    sum_gx = np.zeros(c, np.float64)
    for i in range(m):
        for j in range(c):
            g = np.float64(grad[i, j])
            sum_g[j] += g
            sum_gx[j] += g * xhat[i, j]
    for j in range(c):
        dbeta[j] = sum_g[j]
        dgamma[j] = sum_gx[j]
    scale = gamma / (m * sigma)
    for i in range(m):
        for j in range(c):
            grad[i, j] = scale[j] * (m * grad[i, j] - dbeta[j] - xhat[i, j] * dgamma[j])


@KERNEL
def maxpool2_forward(x, out, arg):
    """``2 x 2`` max-pool, stride 2, of ``x`` (N, H, W, C) into ``out`` (N, H//2, W//2, C).

    ``arg`` (uint8, shape of ``out``) records the window position ``dy * 2 + dx`` of the first
    maximum in row-major order; an odd last row or column is not read.
    """
    n, oh, ow, c = out.shape
    for b in range(n):
        for y in range(oh):
            for xo in range(ow):
                for ch in range(c):
                    best = x[b, 2 * y, 2 * xo, ch]
                    where = 0
                    for k in range(1, 4):
                        value = x[b, 2 * y + k // 2, 2 * xo + k % 2, ch]
                        if value > best:
                            best = value
                            where = k
                    out[b, y, xo, ch] = best
                    arg[b, y, xo, ch] = where


@KERNEL
def maxpool2_backward(grad, arg, dx):
    """Route ``grad`` (N, OH, OW, C) to the recorded maxima; every other element of ``dx``
    (N, H, W, C), a dropped odd edge included, becomes 0."""
    n, oh, ow, c = grad.shape
    h, w = dx.shape[1], dx.shape[2]
    for b in range(n):
        for y in range(h):
            for xi in range(w):
                for ch in range(c):
                    dx[b, y, xi, ch] = 0
        for y in range(oh):
            for xo in range(ow):
                for ch in range(c):
                    k = arg[b, y, xo, ch]
                    dx[b, 2 * y + k // 2, 2 * xo + k % 2, ch] = grad[b, y, xo, ch]


@KERNEL
def im2col_into(x, kernel, cols):
    """Copy the sliding windows of ``x`` (N, H, W, C) into ``cols`` (N, OH, OW, K, K, C):
    ``cols[n, oy, ox, ky, kx, c] = x[n, oy + ky, ox + kx, c]`` (stride 1, no padding), the
    layout of :func:`bnnhw.reference.im2col` reshaped to ``(N * OH * OW, K * K * C)``."""
    n, oh, ow = cols.shape[0], cols.shape[1], cols.shape[2]
    c = cols.shape[5]
    for b in range(n):
        for y in range(oh):
            for xo in range(ow):
                for ky in range(kernel):
                    for kx in range(kernel):
                        for ch in range(c):
                            cols[b, y, xo, ky, kx, ch] = x[b, y + ky, xo + kx, ch]


@KERNEL
def batchnorm_eval_into(x, mean, scale, beta, out):
    """``out = (x - mean) * scale + beta`` per channel on ``x`` (M, C), float32, each
    operation rounded on its own (no fused multiply-add): the same values as
    :func:`bnnhw.passes.batchnorm_eval` given its ``scale = gamma / sqrt(var + eps)``."""
    m, c = x.shape
    for i in range(m):
        for j in range(c):
            centred = x[i, j] - mean[j]
            scaled = centred * scale[j]
            out[i, j] = scaled + beta[j]


@KERNEL
def col2im(dcols, kernel, dx):
    """Scatter window gradients back onto the maps: the adjoint of
    :func:`bnnhw.reference.im2col`.

    ``dcols`` is (N, OH, OW, K, K, C); ``dx`` (N, H, W, C) is overwritten with
    ``dx[n, oy + ky, ox + kx, c] = sum dcols[n, oy, ox, ky, kx, c]``.
    """
    n, oh, ow = dcols.shape[0], dcols.shape[1], dcols.shape[2]
    c = dcols.shape[5]
    dx[:] = 0
    for b in range(n):
        for y in range(oh):
            for xo in range(ow):
                for ky in range(kernel):
                    for kx in range(kernel):
                        for ch in range(c):
                            dx[b, y + ky, xo + kx, ch] += dcols[b, y, xo, ky, kx, ch]


@KERNEL
def adam_update(p, g, m, v, step, eps, beta1, beta2, bound):
    """One Adam update of a flat parameter ``p`` in place, in a single pass::

        m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2
        p <- p - step * m / (sqrt(v) + eps)
        p <- clip(p, -bound, bound)            (only if bound > 0)

    ``step`` and ``eps`` carry the bias corrections (see :class:`bnnhw.train.optim.Adam`).
    """
    b1 = np.float32(beta1)
    b2 = np.float32(beta2)
    c1 = np.float32(1.0) - b1
    c2 = np.float32(1.0) - b2
    s = np.float32(step)
    e = np.float32(eps)
    clip = bound > 0
    hi = np.float32(bound)
    for i in range(p.size):
        gi = g[i]
        mi = b1 * m[i] + c1 * gi
        vi = b2 * v[i] + c2 * (gi * gi)
        m[i] = mi
        v[i] = vi
        pi = p[i] - s * mi / (np.sqrt(vi) + e)
        if clip:
            if pi > hi:
                pi = hi
            elif pi < -hi:
                pi = -hi
        p[i] = pi


@KERNEL
def block_forward(x, prescale, gamma, beta, eps, pool, out, passes, arg, mean, var, sigma):
    """A conv block's training-mode ``sign(maxpool?(BN(prescale * x)))`` in two reads of ``x``.

    ``x`` is the convolution output (N, H, W, C); batch norm takes its statistics
    (:func:`batch_statistics`) over all ``N H W`` positions of ``v = prescale * x``. With
    ``pool``, each ``2 x 2`` window's first maximum of ``BN(v)`` is kept (its position in
    ``arg``), as in :func:`maxpool2_forward`; ``out`` gets ``sign`` of the kept value and
    ``passes`` its straight-through window ``|y| <= 1``. Only ``out``, ``passes`` and ``arg``
    (pooled size) are written, and ``mean``, ``var``, ``sigma`` (C,).
    """
    n, h, w, c = x.shape
    batch_statistics(x.reshape(n * h * w, c), prescale, eps, mean, var, sigma)
    scale = gamma / sigma
    shift = beta - mean * scale
    oh, ow = out.shape[1], out.shape[2]
    for b in range(n):
        for y in range(oh):
            for xo in range(ow):
                for ch in range(c):
                    if pool:
                        best = scale[ch] * (x[b, 2 * y, 2 * xo, ch] * prescale) + shift[ch]
                        where = 0
                        for k in range(1, 4):
                            value = (scale[ch] * (x[b, 2 * y + k // 2, 2 * xo + k % 2, ch]
                                                  * prescale) + shift[ch])
                            if value > best:
                                best = value
                                where = k
                        arg[b, y, xo, ch] = where
                    else:
                        best = scale[ch] * (x[b, y, xo, ch] * prescale) + shift[ch]
                    out[b, y, xo, ch] = 1.0 if best >= 0 else -1.0
                    passes[b, y, xo, ch] = abs(best) <= 1


@KERNEL
def block_backward(grad, passes, arg, x, prescale, pool, mean, sigma, gamma, dx, dgamma, dbeta):
    """The gradient of :func:`block_forward` with respect to ``x``, written to ``dx`` (N, H, W, C).

    With ``g`` the incoming gradient masked by ``passes`` and routed to the kept window position
    (0 elsewhere), ``xhat = (prescale x - mean) / sigma`` recomputed from ``x`` and ``M = N H W``::

        dbeta = sum g,   dgamma = sum g xhat
        dx = prescale * gamma / (M sigma) * (M g - dbeta - xhat dgamma)

    The loops over channels are branch-free (masks and the kept position are selects; a
    masked-out term adds an exact 0 to the float64 sums), so they vectorise; the sums keep their
    order and the results are bit for bit those of the branching loops.
    """
    n, h, w, c = x.shape
    oh, ow = grad.shape[1], grad.shape[2]
    sum_g = np.zeros(c, np.float64)
    sum_gx = np.zeros(c, np.float64)
    masked = np.empty(c, np.float64)
    kept = np.empty(c, x.dtype)
    for b in range(n):
        for y in range(oh):
            for xo in range(ow):
                for ch in range(c):
                    masked[ch] = np.float64(grad[b, y, xo, ch]) if passes[b, y, xo, ch] else 0.0
                if pool:
                    for ch in range(c):
                        k = np.int32(arg[b, y, xo, ch])
                        value = x[b, 2 * y, 2 * xo, ch]
                        value = x[b, 2 * y, 2 * xo + 1, ch] if k == 1 else value
                        value = x[b, 2 * y + 1, 2 * xo, ch] if k == 2 else value
                        kept[ch] = x[b, 2 * y + 1, 2 * xo + 1, ch] if k == 3 else value
                else:
                    for ch in range(c):
                        kept[ch] = x[b, y, xo, ch]
                for ch in range(c):
                    xhat = (kept[ch] * prescale - mean[ch]) / sigma[ch]
                    sum_g[ch] += masked[ch]
                    sum_gx[ch] += masked[ch] * xhat
    for ch in range(c):
        dbeta[ch] = sum_g[ch]
        dgamma[ch] = sum_gx[ch]
    count = n * h * w
    factor = prescale * gamma / (count * sigma)
    inverse = 1 / sigma
    windows = 4 if pool else 1
    for b in range(n):
        for y in range(h):
            for xi in range(w):
                for ch in range(c):
                    xhat = (x[b, y, xi, ch] * prescale - mean[ch]) * inverse[ch]
                    dx[b, y, xi, ch] = factor[ch] * (-dbeta[ch] - xhat * dgamma[ch])
        for y in range(oh):
            for xo in range(ow):
                for j in range(windows):
                    yi = 2 * y + j // 2 if pool else y
                    xi = 2 * xo + j % 2 if pool else xo
                    for ch in range(c):
                        hit = passes[b, y, xo, ch] and (not pool
                                                        or np.int32(arg[b, y, xo, ch]) == j)
                        current = dx[b, yi, xi, ch]
                        routed = current + factor[ch] * count * grad[b, y, xo, ch]
                        dx[b, yi, xi, ch] = routed if hit else current


@KERNEL
def window_codes(x, kernel, codes):
    """The bits of each sliding window of a sign map as one integer, or ``False``.

    ``x`` is (N, H, W, C) with every entry ``+1`` or ``-1``; ``codes`` (N, OH, OW) gets
    ``sum_j [v_j > 0] 2^j`` over the window's entries ``v_j``, ``j = (ky K + kx) C + c`` (the
    column order of :func:`bnnhw.reference.im2col` and of the convolution's weights). Returns
    ``True``, or ``False`` (``codes`` untouched) if an entry is neither ``+1`` nor ``-1``.
    Each window bit ORs one shifted row of the map into a row of codes, a branch-free loop
    along ``x`` that the compiler vectorises.
    """
    n, h, w, c = x.shape
    oh, ow = codes.shape[1], codes.shape[2]
    flat = x.reshape(-1)
    bad = False
    for i in range(flat.size):
        bad |= flat[i] * flat[i] != 1
    if bad:
        return False
    zero = codes.dtype.type(0)
    for b in range(n):
        for y in range(oh):
            for xo in range(ow):
                codes[b, y, xo] = zero
            for ky in range(kernel):
                for kx in range(kernel):
                    for ch in range(c):
                        bit = codes.dtype.type(1) << ((ky * kernel + kx) * c + ch)
                        for xo in range(ow):
                            codes[b, y, xo] |= bit if x[b, y + ky, xo + kx, ch] > 0 else zero
    return True


@KERNEL
def output_window(codes, b, y, xo, pool):
    """The codes behind output ``(b, y, xo)``: its ``2 x 2`` window in ``k = dy * 2 + dx`` order
    (the max-pool's ``arg`` order) with ``pool``, else ``(code, 0, 0, 0)``."""
    if pool:
        return (codes[b, 2 * y, 2 * xo], codes[b, 2 * y, 2 * xo + 1],
                codes[b, 2 * y + 1, 2 * xo], codes[b, 2 * y + 1, 2 * xo + 1])
    return (codes[b, y, xo], codes[b, y, xo], codes[b, y, xo], codes[b, y, xo])


@KERNEL
def code_histogram(codes, counts):
    """``counts[v]`` = how often code ``v`` occurs in ``codes`` (any shape), in four interleaved
    partial histograms: a run of equal codes (the background of an image) then updates four
    counters in turn instead of waiting on one."""
    flat = codes.reshape(-1)
    parts = np.zeros((4, counts.shape[0]), np.int64)
    whole = flat.size // 4
    for i in range(whole):
        parts[0, flat[4 * i]] += 1
        parts[1, flat[4 * i + 1]] += 1
        parts[2, flat[4 * i + 2]] += 1
        parts[3, flat[4 * i + 3]] += 1
    for i in range(4 * whole, flat.size):
        parts[0, flat[i]] += 1
    for v in range(counts.shape[0]):
        counts[v] = parts[0, v] + parts[1, v] + parts[2, v] + parts[3, v]


@KERNEL
def coded_block_forward(codes, table, gamma, beta, eps, pool, counts, out, passes, arg, mean,
                        var, sigma):
    """:func:`block_forward` of a convolution whose output at each position is
    ``table[code]`` for the position's window code (:func:`window_codes`), without the output.

    ``counts`` (rows of ``table``) gets how often each code occurs; the batch-norm statistics
    over the ``M = N OH OW`` positions come from it (``sum_c counts_c table_c`` and the same of
    the squares, float64: the integer sums of :func:`batch_statistics`, the same values), then
    each output (pooled or not) is ``sign`` of the first maximum of
    ``scale table[code] + shift`` over its window, with ``passes`` and ``arg`` as in
    :func:`block_forward`. The maximum and its position are selects (a later value replaces
    the best only if strictly greater, so the first maximum wins), which vectorise over the
    channels.
    """
    n, h, w = codes.shape
    c = table.shape[1]
    code_histogram(codes, counts)
    total = np.zeros(c, np.float64)
    squares = np.zeros(c, np.float64)
    for code in range(table.shape[0]):
        if counts[code]:
            for ch in range(c):
                value = np.float64(table[code, ch])
                total[ch] += counts[code] * value
                squares[ch] += counts[code] * (value * value)
    finish_statistics(total, squares, n * h * w, eps, mean, var, sigma)
    scale = gamma / sigma
    shift = beta - mean * scale
    normed = np.empty(table.shape, table.dtype)
    for code in range(table.shape[0]):
        for ch in range(c):
            normed[code, ch] = scale[ch] * table[code, ch] + shift[ch]
    oh, ow = out.shape[1], out.shape[2]
    for b in range(n):
        for y in range(oh):
            for xo in range(ow):
                w0, w1, w2, w3 = output_window(codes, b, y, xo, pool)
                if pool:
                    for ch in range(c):
                        best, where = normed[w0, ch], np.int32(0)
                        value = normed[w1, ch]
                        where = np.int32(1) if value > best else where
                        best = value if value > best else best
                        value = normed[w2, ch]
                        where = np.int32(2) if value > best else where
                        best = value if value > best else best
                        value = normed[w3, ch]
                        where = np.int32(3) if value > best else where
                        best = value if value > best else best
                        arg[b, y, xo, ch] = where
                        out[b, y, xo, ch] = best
                else:
                    for ch in range(c):
                        out[b, y, xo, ch] = normed[w0, ch]
                for ch in range(c):
                    best = out[b, y, xo, ch]
                    passes[b, y, xo, ch] = abs(best) <= 1
                    out[b, y, xo, ch] = 1.0 if best >= 0 else -1.0


@KERNEL
def coded_block_backward(grad, passes, arg, codes, table, counts, pool, mean, sigma, gamma,
                         sums, dgamma, dbeta):
    """:func:`block_backward` for :func:`coded_block_forward`, summed per window code.

    ``dbeta`` and ``dgamma`` are those of :func:`block_backward` (the same sums in the same
    order). Instead of ``dx`` it writes ``sums[code] = sum of dx over the positions with that
    code`` (float64), so that the weight gradient ``dx^T im2col(x)`` of the convolution is
    ``sums^T S`` with ``S[code, j] = +1`` if bit ``j`` is set, else ``-1``. Per position
    ``dx = base[code] + (gamma / sigma) g``, the second term only where the position was kept
    and passed, so one pass over ``grad`` collects both the batch-norm sums and the routed
    terms, and ``counts * base`` is added per code at the end.
    """
    n, h, w = codes.shape
    c = table.shape[1]
    oh, ow = grad.shape[1], grad.shape[2]
    normalised = np.empty(table.shape, table.dtype)
    for code in range(table.shape[0]):
        for ch in range(c):
            normalised[code, ch] = (table[code, ch] - mean[ch]) / sigma[ch]
    routed = np.empty(c, np.float64)
    for ch in range(c):
        routed[ch] = np.float64(gamma[ch]) / np.float64(sigma[ch])
    sums[:] = 0
    sum_g = np.zeros(c, np.float64)
    sum_gx = np.zeros(c, np.float64)
    for b in range(n):
        for y in range(oh):
            for xo in range(ow):
                window = output_window(codes, b, y, xo, pool)
                for ch in range(c):
                    if passes[b, y, xo, ch]:
                        g = np.float64(grad[b, y, xo, ch])
                        code = window[arg[b, y, xo, ch]] if pool else window[0]
                        sum_g[ch] += g
                        sum_gx[ch] += g * normalised[code, ch]
                        sums[code, ch] += routed[ch] * g
    for ch in range(c):
        dbeta[ch] = sum_g[ch]
        dgamma[ch] = sum_gx[ch]
    count = n * h * w
    for code in range(table.shape[0]):
        if counts[code]:
            for ch in range(c):
                factor = routed[ch] / count
                xhat = (np.float64(table[code, ch]) - mean[ch]) / np.float64(sigma[ch])
                sums[code, ch] += counts[code] * factor * (-np.float64(dbeta[ch])
                                                           - xhat * np.float64(dgamma[ch]))


@KERNEL
def dropout_forward(x, uniform, rate, scale, out, keep):
    """Inverted dropout in one pass over flat arrays: ``keep = uniform >= rate`` and
    ``out = x * scale`` where kept, 0 elsewhere (``scale = 1 / (1 - rate)``)."""
    for i in range(x.size):
        kept = uniform[i] >= rate
        keep[i] = kept
        out[i] = x[i] * scale if kept else 0


@KERNEL
def dropout_backward(grad, keep, scale):
    """``grad <- grad * scale`` where kept, 0 elsewhere, in place (flat arrays)."""
    for i in range(grad.size):
        grad[i] = grad[i] * scale if keep[i] else 0
