"""Batch normalization over the rows of (batch, features) arrays, on the CPU and CUDA.

Training mode normalises each column j of x (n, C) by its batch statistics,
``mean_j`` and the biased variance ``var_j``::

    invstd_j = 1 / sqrt(var_j + eps)
    y[i, j] = (x[i, j] - mean_j) * (weight_j * invstd_j) + bias_j

and, when asked, updates the running estimates with the unbiased variance::

    running_mean = (1 - momentum) running_mean + momentum mean
    running_var  = (1 - momentum) running_var  + momentum var n / (n - 1)

Evaluation mode uses ``running_mean`` and ``running_var`` in their place.
The forward kernels write ``mean`` and ``invstd`` (C,) for the backward, which
is the closed form (with ``xhat = (x - mean) invstd``)::

    dbias_j   = sum_i g[i, j]
    dweight_j = sum_i g[i, j] xhat[i, j]
    dx[i, j]  = weight_j invstd_j (g[i, j] - dbias_j / n - xhat[i, j] dweight_j / n)

with batch statistics, and ``dx = g weight_j invstd_j`` with running ones.

Column statistics take one pass over x with sums shifted by the column's
first value (``sum(x - x[0])``, ``sum((x - x[0])**2)``), so a large mean
does not cancel the variance away; the CPU accumulates them in float64, CUDA
in the data's dtype, per thread, then across the block. Each forward and
backward then reads x (and grad_out) a second time for its output. A CUDA
block covers ``COLUMNS`` columns over all rows, so that second read comes
from its SM's cache where the block's columns fit.

Arrays are C-contiguous and of one float dtype: x, y, grad_out, dx (n, C);
weight, bias, mean, invstd, running_mean, running_var, dweight, dbias (C,).

Sections: numpy references, CPU kernels, CUDA kernels, launchers.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from . import _cuda
from ._cache import cached
from ._cpu import CPU_OPTIONS
from ._cuda import cuda, float_signatures
from ._table import OpKernels

# --- references (the executable spec) -------------------------------------------------


def batchnorm_ref(x, weight, bias, eps=1e-5):
    """Training mode: (y, mean, var) with the batch's mean and biased variance,
    computed in float64; y in x's dtype, the statistics in float64."""
    x64 = x.astype(np.float64)
    mean, var = x64.mean(axis=0), x64.var(axis=0)
    y = (x64 - mean) / np.sqrt(var + eps) * weight.astype(np.float64) + bias
    return y.astype(x.dtype), mean, var


def batchnorm_inference_ref(x, weight, bias, running_mean, running_var, eps=1e-5):
    """Evaluation mode: y normalised by the running statistics, in x's dtype."""
    x64 = x.astype(np.float64)
    invstd = 1 / np.sqrt(running_var.astype(np.float64) + eps)
    return ((x64 - running_mean) * invstd * weight + bias).astype(x.dtype)


def running_stats_ref(running_mean, running_var, mean, var, n, momentum=0.1):
    """(running_mean, running_var) after one training step on n rows, in float64."""
    unbiased = var * n / (n - 1)
    return (
        (1 - momentum) * running_mean.astype(np.float64) + momentum * mean,
        (1 - momentum) * running_var.astype(np.float64) + momentum * unbiased,
    )


def batchnorm_backward_ref(grad_out, x, weight, mean, invstd, batch_stats=True):
    """(dx, dweight, dbias) in x's dtype, computed in float64; ``mean`` and
    ``invstd`` are the forward's (batch statistics when ``batch_stats``, else
    the running ones, which do not depend on x)."""
    g, x64 = grad_out.astype(np.float64), x.astype(np.float64)
    xhat = (x64 - mean) * invstd
    dbias, dweight = g.sum(axis=0), (g * xhat).sum(axis=0)
    k = weight.astype(np.float64) * invstd
    if batch_stats:
        n = len(x)
        dx = k * (g - dbias / n - xhat * dweight / n)
    else:
        dx = k * g
    return dx.astype(x.dtype), dweight.astype(x.dtype), dbias.astype(x.dtype)


# --- CPU kernels ----------------------------------------------------------------------
# Two sweeps over whole rows (row views, so that the inner loops vectorise): the
# float64 column sums into ``acc``, then the outputs. Serial at every size:
# batch norm sits between BLAS products in a model (see _cpu.py).
# Sweeping blocks of columns instead, to reread them from cache, costs more
# than it saves: a view per row and block, and a stride of a whole row
# between them.


#: Rows per block of the statistics' sums in the data's dtype (float32 sums of
#: up to 32 shifted values lose at most a few ulps before going into float64).
STAT_BLOCK = 32


@cached()
@numba.njit(**CPU_OPTIONS)
def _forward_cpu(
    x, weight, bias, y, mean, invstd, running_mean, running_var, acc, coef, eps, momentum, update
):
    """Training mode; ``acc`` (2, C) float64 and ``coef`` (2, C) are scratch.

    The shifted sums run in x's dtype over blocks of STAT_BLOCK rows (in
    ``coef``), each block's sums then added into float64: the inner loop stays
    in one precision and vectorises fully."""
    n, c = x.shape
    x0 = x[0]
    s1, s2 = acc[0], acc[1]
    b1, b2 = coef[0], coef[1]
    for j in range(c):
        s1[j] = 0.0
        s2[j] = 0.0
    for start in range(0, n, STAT_BLOCK):
        for j in range(c):
            b1[j] = 0
            b2[j] = 0
        for i in range(start, min(start + STAT_BLOCK, n)):
            xi = x[i]
            for j in range(c):
                d = xi[j] - x0[j]
                b1[j] += d
                b2[j] += d * d
        for j in range(c):
            s1[j] += b1[j]
            s2[j] += b2[j]
    k = coef[0]
    for j in range(c):
        shifted_mean = s1[j] / n
        var = max(s2[j] / n - shifted_mean * shifted_mean, 0.0)
        m = np.float64(x0[j]) + shifted_mean
        mean[j] = m
        invstd[j] = 1.0 / math.sqrt(var + eps)
        k[j] = weight[j] * invstd[j]
        if update:
            running_mean[j] = (1 - momentum) * running_mean[j] + momentum * m
            running_var[j] = (1 - momentum) * running_var[j] + momentum * var * n / (n - 1)
    for i in range(n):
        xi, yi = x[i], y[i]
        for j in range(c):
            yi[j] = (xi[j] - mean[j]) * k[j] + bias[j]


@cached()
@numba.njit(**CPU_OPTIONS)
def _inference_cpu(x, weight, bias, running_mean, running_var, eps, y, mean, invstd):
    """Evaluation mode; also writes mean and invstd."""
    for j in range(x.shape[1]):
        mean[j] = running_mean[j]
        invstd[j] = 1 / math.sqrt(running_var[j] + eps)
    for i in range(x.shape[0]):
        xi, yi = x[i], y[i]
        for j in range(x.shape[1]):
            yi[j] = (xi[j] - mean[j]) * (weight[j] * invstd[j]) + bias[j]


@cached()
@numba.njit(**CPU_OPTIONS)
def _backward_cpu(
    g, x, weight, mean, invstd, dx, dweight, dbias, acc, coef, batch_stats, compute_dx, accumulate
):
    """The sums, then dx (when ``compute_dx``); scratch as in the forward."""
    n, c = x.shape
    sg, sgx = acc[0], acc[1]
    for j in range(c):
        sg[j] = 0.0
        sgx[j] = 0.0
    for i in range(n):
        gi, xi = g[i], x[i]
        for j in range(c):
            gij = np.float64(gi[j])
            sg[j] += gij
            sgx[j] += gij * (np.float64(xi[j]) - np.float64(mean[j]))
    mg, q = coef[0], coef[1]
    for j in range(c):
        a, b = sg[j], sgx[j] * invstd[j]
        if accumulate:
            dbias[j] += a
            dweight[j] += b
        else:
            dbias[j] = a
            dweight[j] = b
        # dx = (g - mg - (x - mean) q) weight invstd
        mg[j] = a / n if batch_stats else 0
        q[j] = invstd[j] * b / n if batch_stats else 0
    if compute_dx:
        for i in range(n):
            gi, xi, dxi = g[i], x[i], dx[i]
            for j in range(c):
                dxi[j] = (gi[j] - mg[j] - (xi[j] - mean[j]) * q[j]) * (weight[j] * invstd[j])


# --- CUDA kernels ---------------------------------------------------------------------

#: A block covers COLUMNS adjacent columns (a warp reads a row's columns
#: together) with ROWS threads down each, which sum every ROWS-th row and then
#: combine through shared memory: 32 x 16 = 512 threads.
COLUMNS, ROWS = 32, 16


@_cuda.kernel(
    "batchnorm.forward",
    float_signatures(
        "void({t}[:, ::1], {t}[::1], {t}[::1], {t}[:, ::1], {t}[::1], {t}[::1], {t}[::1], "
        "{t}[::1], {t}, {t}, boolean)"
    ),
)
def _forward_cuda_kernel(
    x, weight, bias, y, mean, invstd, running_mean, running_var, eps, momentum, update
):
    """Training mode: block b normalises columns [COLUMNS b, COLUMNS (b + 1))."""
    n, c = x.shape
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    j = cuda.blockIdx.x * COLUMNS + tx
    zero, one = x.dtype.type(0), x.dtype.type(1)
    s1 = cuda.shared.array((ROWS, COLUMNS), x.dtype)
    s2 = cuda.shared.array((ROWS, COLUMNS), x.dtype)
    coef = cuda.shared.array((2, COLUMNS), x.dtype)
    a, b = zero, zero
    if j < c:
        shift = x[0, j]
        for i in range(ty, n, ROWS):
            d = x[i, j] - shift
            a += d
            b += d * d
    s1[ty, tx] = a
    s2[ty, tx] = b
    cuda.syncthreads()
    if ty == 0 and j < c:
        for r in range(1, ROWS):
            a += s1[r, tx]
            b += s2[r, tx]
        nf = x.dtype.type(n)
        shifted_mean = a / nf
        var = max(b / nf - shifted_mean * shifted_mean, zero)
        m = x[0, j] + shifted_mean
        inv = one / math.sqrt(var + eps)
        mean[j] = m
        invstd[j] = inv
        coef[0, tx] = m
        coef[1, tx] = weight[j] * inv
        if update:
            running_mean[j] = (one - momentum) * running_mean[j] + momentum * m
            running_var[j] = (one - momentum) * running_var[j] + momentum * var * nf / (nf - one)
    cuda.syncthreads()
    if j < c:
        m, k, shift = coef[0, tx], coef[1, tx], bias[j]
        for i in range(ty, n, ROWS):
            y[i, j] = (x[i, j] - m) * k + shift


@_cuda.kernel(
    "batchnorm.inference",
    float_signatures(
        "void({t}[:, ::1], {t}[::1], {t}[::1], {t}[::1], {t}[::1], {t}, {t}[:, ::1], {t}[::1], "
        "{t}[::1])"
    ),
)
def _inference_cuda_kernel(x, weight, bias, running_mean, running_var, eps, y, mean, invstd):
    """Evaluation mode, grid-stride over max(n C, C) elements; the first C
    threads also write mean and invstd."""
    n, c = x.shape
    one = x.dtype.type(1)
    for e in range(cuda.grid(1), max(n * c, c), cuda.gridsize(1)):
        j = e % c
        inv = one / math.sqrt(running_var[j] + eps)
        if e < c:
            mean[j] = running_mean[j]
            invstd[j] = inv
        if e < n * c:
            i = e // c
            y[i, j] = (x[i, j] - running_mean[j]) * (weight[j] * inv) + bias[j]


@_cuda.kernel(
    "batchnorm.backward",
    float_signatures(
        "void({t}[:, ::1], {t}[:, ::1], {t}[::1], {t}[::1], {t}[::1], {t}[:, ::1], {t}[::1], "
        "{t}[::1], boolean, boolean, boolean)"
    ),
)
def _backward_cuda_kernel(
    g, x, weight, mean, invstd, dx, dweight, dbias, batch_stats, compute_dx, accumulate
):
    """Block b: the sums for columns [COLUMNS b, COLUMNS (b + 1)), then their dx."""
    n, c = x.shape
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    j = cuda.blockIdx.x * COLUMNS + tx
    zero = g.dtype.type(0)
    s1 = cuda.shared.array((ROWS, COLUMNS), g.dtype)
    s2 = cuda.shared.array((ROWS, COLUMNS), g.dtype)
    coef = cuda.shared.array((2, COLUMNS), g.dtype)
    a, b = zero, zero
    if j < c:
        m = mean[j]
        for i in range(ty, n, ROWS):
            gij = g[i, j]
            a += gij
            b += gij * (x[i, j] - m)
    s1[ty, tx] = a
    s2[ty, tx] = b
    cuda.syncthreads()
    if ty == 0 and j < c:
        for r in range(1, ROWS):
            a += s1[r, tx]
            b += s2[r, tx]
        sgx = b * invstd[j]
        if accumulate:
            dbias[j] += a
            dweight[j] += sgx
        else:
            dbias[j] = a
            dweight[j] = sgx
        nf = g.dtype.type(n)
        coef[0, tx] = a / nf if batch_stats else zero
        coef[1, tx] = invstd[j] * sgx / nf if batch_stats else zero
    cuda.syncthreads()
    if compute_dx and j < c:
        m, k, mg, q = mean[j], weight[j] * invstd[j], coef[0, tx], coef[1, tx]
        for i in range(ty, n, ROWS):
            dx[i, j] = (g[i, j] - mg - (x[i, j] - m) * q) * k


# --- launchers ------------------------------------------------------------------------
# Inputs are checked by the callers (gn.ops, gn.nn.BatchNorm1d): shapes (n, C)
# and (C,), one float dtype, C-contiguous, n >= 2 in training mode. The
# launchers check the shapes again, cheaply, since the kernels index every
# array by x's: an array of another size would be read or written past its end.


def _check_shapes(op, x, rows, columns):
    """ValueError unless x is (n, C), ``rows`` ((name, array or None) pairs)
    (n, C) and ``columns`` (pairs likewise) (C,)."""
    if x.ndim != 2:
        raise ValueError(f"{op}: expected x of shape (n, C), got {x.shape}")
    for names, shape in ((rows, tuple(x.shape)), (columns, tuple(x.shape[1:]))):
        for name, a in names:
            if a is not None and tuple(a.shape) != shape:
                raise ValueError(f"{op}: expected {name} of shape {shape}, got {a.shape}")


def _check_forward(op, x, y, weight, bias, mean, invstd, running_mean, running_var):
    columns = {"weight": weight, "bias": bias, "mean": mean, "invstd": invstd,
               "running_mean": running_mean, "running_var": running_var}  # fmt: skip
    _check_shapes(op, x, [("y", y)], list(columns.items()))


def _check_backward(g, x, dx, weight, mean, invstd, dweight, dbias):
    _check_shapes(
        "batchnorm_backward", x, [("grad_out", g), ("dx", dx)],
        [("weight", weight), ("mean", mean), ("invstd", invstd), ("dweight", dweight),
         ("dbias", dbias)],
    )  # fmt: skip


_scratch: dict[tuple, np.ndarray] = {}


def _scratch_array(name, shape, dtype):
    """The CPU kernels' scratch array ``name``, reused between calls."""
    key = (name, shape, np.dtype(dtype))
    found = _scratch.get(key)
    if found is None:
        found = _scratch[key] = np.empty(shape, dtype)
    return found


def _scratch_for(x):
    """(acc, coef) for x: (2, C) float64 column sums, and (2, C) in x's dtype."""
    c = x.shape[1]
    return _scratch_array("acc", (2, c), np.float64), _scratch_array("coef", (2, c), x.dtype)


def batchnorm_cpu(
    x, weight, bias, y, mean, invstd, running_mean, running_var, eps, momentum, update
):
    """Training mode: y, mean and invstd from x; with ``update``, also
    running_mean and running_var (in place). Returns y."""
    _check_forward("batchnorm", x, y, weight, bias, mean, invstd, running_mean, running_var)
    dtype = x.dtype.type
    _forward_cpu(
        x,
        weight,
        bias,
        y,
        mean,
        invstd,
        running_mean,
        running_var,
        *_scratch_for(x),
        dtype(eps),
        dtype(momentum),
        update,
    )
    return y


def batchnorm_inference_cpu(x, weight, bias, running_mean, running_var, eps, y, mean, invstd):
    """Evaluation mode: y from x and the running statistics; mean and invstd
    are written for the backward. Returns y."""
    _check_forward(
        "batchnorm_inference", x, y, weight, bias, mean, invstd, running_mean, running_var
    )
    _inference_cpu(x, weight, bias, running_mean, running_var, x.dtype.type(eps), y, mean, invstd)
    return y


def batchnorm_backward_cpu(
    g, x, weight, mean, invstd, dx, dweight, dbias, batch_stats, accumulate=False
):
    """dweight and dbias (written, or added to with ``accumulate``) and dx
    (skipped when None) for grad_out ``g``."""
    _check_backward(g, x, dx, weight, mean, invstd, dweight, dbias)
    _backward_cpu(
        g,
        x,
        weight,
        mean,
        invstd,
        g if dx is None else dx,
        dweight,
        dbias,
        *_scratch_for(x),
        batch_stats,
        dx is not None,
        accumulate,
    )


def _column_blocks(c):
    return (c + COLUMNS - 1) // COLUMNS, (COLUMNS, ROWS)


def batchnorm_cuda(
    x, weight, bias, y, mean, invstd, running_mean, running_var, eps, momentum, update
):
    """batchnorm_cpu on device arrays."""
    _check_forward("batchnorm", x, y, weight, bias, mean, invstd, running_mean, running_var)
    if x.shape[1]:
        dtype = x.dtype.type
        _forward_cuda_kernel[_column_blocks(x.shape[1])](
            x,
            weight,
            bias,
            y,
            mean,
            invstd,
            running_mean,
            running_var,
            dtype(eps),
            dtype(momentum),
            update,
        )
    return y


def batchnorm_inference_cuda(x, weight, bias, running_mean, running_var, eps, y, mean, invstd):
    """batchnorm_inference_cpu on device arrays."""
    _check_forward(
        "batchnorm_inference", x, y, weight, bias, mean, invstd, running_mean, running_var
    )
    n, c = x.shape
    if c:
        blocks, threads = _cuda.grid_1d(max(n * c, c))
        _inference_cuda_kernel[blocks, threads](
            x, weight, bias, running_mean, running_var, x.dtype.type(eps), y, mean, invstd
        )
    return y


def batchnorm_backward_cuda(
    g, x, weight, mean, invstd, dx, dweight, dbias, batch_stats, accumulate=False
):
    """batchnorm_backward_cpu on device arrays."""
    _check_backward(g, x, dx, weight, mean, invstd, dweight, dbias)
    if x.shape[1]:
        _backward_cuda_kernel[_column_blocks(x.shape[1])](
            g,
            x,
            weight,
            mean,
            invstd,
            g if dx is None else dx,
            dweight,
            dbias,
            batch_stats,
            dx is not None,
            accumulate,
        )


# --- table ----------------------------------------------------------------------------

KERNELS = {
    "batchnorm": OpKernels(batchnorm_ref, batchnorm_cpu, batchnorm_cuda),
    "batchnorm_inference": OpKernels(
        batchnorm_inference_ref, batchnorm_inference_cpu, batchnorm_inference_cuda
    ),
    "batchnorm_backward": OpKernels(
        batchnorm_backward_ref, batchnorm_backward_cpu, batchnorm_backward_cuda
    ),
}
