"""Optimizer updates as fused elementwise kernels: SGD (momentum, Nesterov,
weight decay) and Adam / AdamW, with PyTorch's update rules.

Each update reads a parameter, its gradient and its state once and writes the
parameter and state back, in place. All arrays are flat, C-contiguous and of
one float dtype; hyper-parameters arrive as Python floats. One call updates
several ranges of the arrays with their own learning rate and weight decay
(``segments``: a model's flat buffer with parameter groups), in one launch.

SGD (dampening 0), with g = grad + weight_decay * p:
    buf = g on the first step, else momentum * buf + g
    p -= lr * (g + momentum * buf if nesterov else buf)      (momentum > 0)
    p -= lr * g                                               (momentum = 0)
Adam (t = step, counting from 1), with g = grad + weight_decay * p for Adam,
while AdamW first scales p by (1 - lr * weight_decay):
    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

The CPU updates run with subnormal numbers flushed to zero (``_cpu.
flush_subnormals``): a moment whose gradient stopped, or a weight that weight
decay drives towards zero, decays into subnormals, each operation on which
costs an x86 CPU some hundred cycles, while the update it makes is far below
any normal weight's resolution. The CUDA kernels keep subnormals.

``zero_cpu`` and ``zero_cuda`` fill an array with zeros (``zero_grad``);
``scale`` multiplies one by a number (gradient clipping).

Sections: numpy references, scalar math, CPU kernels, CUDA kernels, launchers.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from . import _cuda
from ._cache import cached
from ._cpu import CPU_OPTIONS, flush_subnormals, restore_subnormals
from ._cuda import cuda, float_signatures, grid_1d
from ._table import OpKernels

# --- references (the executable spec) -------------------------------------------------


def sgd_ref(p, grad, buf, lr, momentum=0.0, weight_decay=0.0, nesterov=False, first=True):
    """(new p, new buf), in float64."""
    p, g = p.astype(np.float64), grad.astype(np.float64) + weight_decay * p
    if momentum == 0:
        return p - lr * g, buf.astype(np.float64)
    buf = g if first else momentum * buf.astype(np.float64) + g
    step = g + momentum * buf if nesterov else buf
    return p - lr * step, buf


def adam_ref(
    p, grad, m, v, step, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False
):
    """(new p, new m, new v), in float64; ``decoupled`` gives AdamW."""
    b1, b2 = betas
    p, g = p.astype(np.float64), grad.astype(np.float64)
    if decoupled:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    m = b1 * m.astype(np.float64) + (1 - b1) * g
    v = b2 * v.astype(np.float64) + (1 - b2) * g * g
    denom = np.sqrt(v) / math.sqrt(1 - b2**step) + eps
    return p - lr / (1 - b1**step) * m / denom, m, v


def zero_ref(a):
    """Zeros shaped like ``a``: what ``zero_cpu`` / ``zero_cuda`` leave in it."""
    return np.zeros(a.shape, np.float64)


def scale_ref(x, factor):
    """x * factor, computed in float64, in x's dtype."""
    return (x.astype(np.float64) * factor).astype(x.dtype)


# --- scalar math, shared by the CPU and CUDA kernels ----------------------------------


@numba.njit(inline="always")
def _sgd_scalar(p, g, buf, lr, momentum, weight_decay, nesterov, first):
    """(new p, new buf) for one element."""
    g = g + weight_decay * p
    if momentum == 0:
        return p - lr * g, buf
    buf = g if first else momentum * buf + g
    return p - lr * (g + momentum * buf if nesterov else buf), buf


@numba.njit(inline="always")
def _adam_scalar(p, g, m, v, b1, c1, b2, c2, eps, weight_decay, decay, step_size, sqrt_bias2):
    """(new p, new m, new v) for one element; c1 = 1 - b1, c2 = 1 - b2, and
    ``decay`` = 1 - lr * wd for AdamW, else 1 (then ``weight_decay`` is added to g)."""
    p = p * decay
    g = g + weight_decay * p
    m = b1 * m + c1 * g
    v = b2 * v + c2 * g * g
    return p - step_size * m / (math.sqrt(v) / sqrt_bias2 + eps), m, v


# --- CPU kernels ----------------------------------------------------------------------


# Serial at every size: updates and gradient clipping follow the backward's
# BLAS products (see _cpu.py).
# ``bounds`` (S, 2) int64 holds each segment's [start, stop); ``hyper`` (S, 2)
# or (S, 3), in the arrays' dtype, its learning rate and weight decay (Adam:
# learning rate, coupled weight decay, decoupled decay factor).


@cached()
@numba.njit(**CPU_OPTIONS)
def _sgd_cpu(p, g, buf, bounds, hyper, momentum, nesterov, first):
    control = flush_subnormals()
    for s in range(bounds.shape[0]):
        _sgd_range(
            p[bounds[s, 0] : bounds[s, 1]], g[bounds[s, 0] : bounds[s, 1]],
            buf[bounds[s, 0] : bounds[s, 1]], hyper[s, 0], momentum, hyper[s, 1], nesterov, first,
        )  # fmt: skip
    restore_subnormals(control)


# Each segment is a slice looped from 0: indices Numba knows are non-negative
# need no wraparound test, which would keep LLVM from vectorising the loop.
@numba.njit(inline="always")
def _sgd_range(p, g, buf, lr, momentum, weight_decay, nesterov, first):
    for i in range(p.size):
        p[i], buf[i] = _sgd_scalar(p[i], g[i], buf[i], lr, momentum, weight_decay, nesterov, first)


@cached()
@numba.njit(**CPU_OPTIONS)
def _adam_cpu(p, g, m, v, bounds, hyper, b1, c1, b2, c2, eps, bias1, sqrt_bias2):
    control = flush_subnormals()
    for s in range(bounds.shape[0]):
        start, stop = bounds[s, 0], bounds[s, 1]
        _adam_range(
            p[start:stop], g[start:stop], m[start:stop], v[start:stop], b1, c1, b2, c2, eps,
            hyper[s, 1], hyper[s, 2], hyper[s, 0] / bias1, sqrt_bias2,
        )  # fmt: skip
    restore_subnormals(control)


@numba.njit(inline="always")
def _adam_range(p, g, m, v, b1, c1, b2, c2, eps, weight_decay, decay, step_size, sqrt_bias2):
    for i in range(p.size):
        p[i], m[i], v[i] = _adam_scalar(
            p[i], g[i], m[i], v[i], b1, c1, b2, c2, eps, weight_decay, decay, step_size, sqrt_bias2
        )


@cached()
@numba.njit(**CPU_OPTIONS)
def _scale_cpu(x, factor, out):
    for i in range(x.size):
        out[i] = x[i] * factor


# --- CUDA kernels ---------------------------------------------------------------------
# Launched on a (blocks, S) grid: row y of blocks walks segment y.


@_cuda.kernel(
    "optim.sgd",
    float_signatures(
        "void({t}[::1], {t}[::1], {t}[::1], int64[:, ::1], {t}[:, ::1], {t}, boolean, boolean)"
    ),
)
def _sgd_kernel(p, g, buf, bounds, hyper, momentum, nesterov, first):
    s = cuda.blockIdx.y
    lr, weight_decay = hyper[s, 0], hyper[s, 1]
    start = bounds[s, 0] + cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    for i in range(start, bounds[s, 1], cuda.gridDim.x * cuda.blockDim.x):
        p[i], buf[i] = _sgd_scalar(p[i], g[i], buf[i], lr, momentum, weight_decay, nesterov, first)


@_cuda.kernel(
    "optim.adam",
    float_signatures(
        "void({t}[::1], {t}[::1], {t}[::1], {t}[::1], int64[:, ::1], {t}[:, ::1], "
        "{t}, {t}, {t}, {t}, {t}, {t}, {t})"
    ),
)
def _adam_kernel(p, g, m, v, bounds, hyper, b1, c1, b2, c2, eps, bias1, sqrt_bias2):
    s = cuda.blockIdx.y
    step_size, weight_decay, decay = hyper[s, 0] / bias1, hyper[s, 1], hyper[s, 2]
    start = bounds[s, 0] + cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    for i in range(start, bounds[s, 1], cuda.gridDim.x * cuda.blockDim.x):
        p[i], m[i], v[i] = _adam_scalar(
            p[i], g[i], m[i], v[i], b1, c1, b2, c2, eps, weight_decay, decay, step_size, sqrt_bias2
        )


@_cuda.kernel("optim.zero", float_signatures("void({t}[::1])"))
def _zero_kernel(a):
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        a[i] = 0


@_cuda.kernel("optim.scale", float_signatures("void({t}[::1], {t}, {t}[::1])"))
def _scale_kernel(x, factor, out):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        out[i] = x[i] * factor


# --- launchers ------------------------------------------------------------------------


def segment_table(bounds, hyper, dtype):
    """(bounds (S, 2) int64, hyper (S, k) of ``dtype``) as C-contiguous host
    arrays: the ranges [start, stop) one call updates and their settings."""
    bounds = np.ascontiguousarray(bounds, np.int64).reshape(-1, 2)
    hyper = np.ascontiguousarray(hyper, dtype)
    # No segments: nothing to update (reshape cannot infer an axis of no rows).
    hyper = hyper.reshape(len(bounds), -1) if len(bounds) else hyper.reshape(0, 0)
    return bounds, hyper


def _segments(p, segments, *settings):
    """``segments`` as a table, or one segment over all of p with ``settings``."""
    if segments is None:
        return segment_table([(0, p.size)], [settings], p.dtype)
    return segment_table(*segments, p.dtype)


def _check_sizes(op, p, *others):
    """ValueError unless p is 1-D and the ``others`` of its shape (the kernels
    index them all by p's size or segments)."""
    for a in (p, *others):
        if a.ndim != 1 or a.shape != p.shape:
            raise ValueError(f"{op}: expected 1-D arrays of one shape {p.shape}, got {a.shape}")


def _check_update(op, bounds, p, *others):
    """ValueError unless the ``others`` have p's size (``_check_sizes``) and
    the segments ``bounds`` are ordered ranges within p: the kernels index
    every array by the segments, and two segments that overlap would update
    one element from two threads at once on a GPU."""
    _check_sizes(op, p, *others)
    check_segments(op, bounds, p.size)


def check_segments(op, bounds, size):
    """ValueError unless the rows [start, stop) of ``bounds`` (S, 2) are
    ordered, apart and within [0, size]. On lists: a table has a few rows,
    checked every step, where numpy's reductions would cost more."""
    end = 0
    for start, stop in bounds.tolist():
        if not end <= start <= stop <= size:
            raise ValueError(
                f"{op}: expected ordered, non-overlapping segments within [0, {size}], "
                f"got {bounds.tolist()}"
            )
        end = stop


def _adam_settings(lr, weight_decay, decoupled):
    """A segment's (learning rate, coupled weight decay, decoupled decay factor)."""
    if decoupled:
        return lr, 0.0, 1 - lr * weight_decay
    return lr, weight_decay, 1.0


def _adam_scalars(dtype, step, betas, eps):
    """The step's scalars in ``dtype``, bias corrections folded in float64."""
    t = np.dtype(dtype).type
    b1, b2 = betas
    return t(b1), t(1 - b1), t(b2), t(1 - b2), t(eps), t(1 - b1**step), t(math.sqrt(1 - b2**step))


def sgd_cpu(
    p, grad, buf, lr=None, momentum=0.0, weight_decay=0.0, nesterov=False, first=True,
    segments=None,
):  # fmt: skip
    """One SGD step in place on flat numpy arrays (``buf``: momentum buffer).

    ``segments`` = (bounds (S, 2), settings (S, 2)): update only the ranges
    [start, stop) of ``bounds``, each with its own (lr, weight_decay), instead
    of all of p with ``lr`` and ``weight_decay``."""
    bounds, hyper = _segments(p, segments, lr, weight_decay)
    _check_update("sgd", bounds, p, grad, buf)
    sgd_cpu_tabled(p, grad, buf, (bounds, hyper), momentum, nesterov, first)


def sgd_cpu_tabled(p, grad, buf, table, momentum, nesterov, first):
    """sgd_cpu with its segment ``table`` (bounds, hyper) made and checked
    before, for the arrays it was checked with: the kernel alone."""
    t = p.dtype.type
    _sgd_cpu(p, grad, buf, *table, t(momentum), bool(nesterov), bool(first))


def sgd_cuda(
    p, grad, buf, lr=None, momentum=0.0, weight_decay=0.0, nesterov=False, first=True,
    segments=None,
):  # fmt: skip
    """sgd_cpu on device arrays (``segments`` as host arrays)."""
    bounds, hyper = _segments(p, segments, lr, weight_decay)
    _check_update("sgd", bounds, p, grad, buf)
    grid = _segment_grid(bounds)
    if grid is not None:
        t = p.dtype.type
        _sgd_kernel[grid](
            p, grad, buf, _cuda.constant_table(bounds), _cuda.constant_table(hyper),
            t(momentum), bool(nesterov), bool(first),
        )  # fmt: skip


def adam_cpu(
    p, grad, m, v, step, lr=None, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
    decoupled=False, segments=None,
):  # fmt: skip
    """One Adam (AdamW with ``decoupled``) step in place; ``step`` counts from 1.
    ``segments`` = (bounds (S, 2), settings (S, 2) of (lr, weight_decay)), as
    in sgd_cpu."""
    bounds, hyper = _adam_table(p, segments, lr, weight_decay, decoupled)
    _check_update("adam", bounds, p, grad, m, v)
    adam_cpu_tabled(p, grad, m, v, (bounds, hyper), step, betas, eps)


def adam_cpu_tabled(p, grad, m, v, table, step, betas, eps):
    """adam_cpu with its segment ``table`` (bounds, hyper) made and checked
    before, for the arrays it was checked with: the kernel alone."""
    _adam_cpu(p, grad, m, v, *table, *_adam_scalars(p.dtype, step, betas, eps))


def adam_cuda(
    p, grad, m, v, step, lr=None, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
    decoupled=False, segments=None,
):  # fmt: skip
    """adam_cpu on device arrays (``segments`` as host arrays)."""
    bounds, hyper = _adam_table(p, segments, lr, weight_decay, decoupled)
    _check_update("adam", bounds, p, grad, m, v)
    grid = _segment_grid(bounds)
    if grid is not None:
        _adam_kernel[grid](
            p, grad, m, v, _cuda.constant_table(bounds), _cuda.constant_table(hyper),
            *_adam_scalars(p.dtype, step, betas, eps),
        )  # fmt: skip


def sgd_table(p, segments):
    """The (bounds, hyper) table sgd_cpu makes of ``segments``."""
    return _segments(p, segments)


def adam_table(p, segments, decoupled):
    """The (bounds, hyper) table adam_cpu makes of ``segments``."""
    return _adam_table(p, segments, None, 0.0, decoupled)


def _adam_table(p, segments, lr, weight_decay, decoupled):
    if segments is None:
        bounds, settings = [(0, p.size)], [(lr, weight_decay)]
    else:
        bounds, settings = segments
    hyper = [
        _adam_settings(float(a), float(b), decoupled) for a, b in np.reshape(settings, (-1, 2))
    ]
    return segment_table(bounds, hyper, p.dtype)


def _segment_grid(bounds):
    """((blocks, S), threads) for a segmented launch, or None when nothing to update."""
    longest = int((bounds[:, 1] - bounds[:, 0]).max(initial=0))
    if longest <= 0:
        return None
    blocks, threads = grid_1d(longest)
    return (blocks, len(bounds)), threads


def zero_cpu(a):
    """a[...] = 0 for a float numpy array."""
    a.fill(0)


def zero_cuda(a):
    """a[...] = 0 for a C-contiguous float device array."""
    flat = _cuda.flat(a)
    if flat.size:
        blocks, threads = grid_1d(flat.size)
        _zero_kernel[blocks, threads](flat)


def scale_cpu(x, factor, out):
    """out = x * factor for 1-D numpy arrays of one size and float dtype (out
    may be x), factor rounded to their dtype."""
    _check_sizes("scale", x, out)
    _scale_cpu(x, x.dtype.type(factor), out)


def scale_cuda(x, factor, out):
    """scale_cpu on device arrays."""
    _check_sizes("scale", x, out)
    if x.size:
        blocks, threads = grid_1d(x.size)
        _scale_kernel[blocks, threads](x, x.dtype.type(factor), out)


# --- table ----------------------------------------------------------------------------

KERNELS = {
    "sgd": OpKernels(sgd_ref, sgd_cpu, sgd_cuda),
    "adam": OpKernels(adam_ref, adam_cpu, adam_cuda),
    "zero": OpKernels(zero_ref, zero_cpu, zero_cuda),
    "scale": OpKernels(scale_ref, scale_cpu, scale_cuda),
}
