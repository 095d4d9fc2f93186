"""Optimizer updates as fused elementwise kernels: SGD (momentum, Nesterov,
weight decay) and Adam / AdamW, with PyTorch's update rules.

Each update reads a parameter, its gradient and its state once and writes the
parameter and state back, in place. All arrays are flat, C-contiguous and of
one float dtype; hyper-parameters arrive as Python floats.

SGD (dampening 0), with g = grad + weight_decay * p:
    buf = g on the first step, else momentum * buf + g
    p -= lr * (g + momentum * buf if nesterov else buf)      (momentum > 0)
    p -= lr * g                                               (momentum = 0)
Adam (t = step, counting from 1), with g = grad + weight_decay * p for Adam,
while AdamW first scales p by (1 - lr * weight_decay):
    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

``zero_cpu`` and ``zero_cuda`` fill an array with zeros (``zero_grad``).

Sections: numpy references, scalar math, CPU kernels, CUDA kernels, launchers.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from . import _cuda
from ._cpu import CPU_OPTIONS
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


# Serial at every size: updates follow the backward's BLAS products (see _cpu.py).


@numba.njit(**CPU_OPTIONS)
def _sgd_cpu(p, g, buf, lr, momentum, weight_decay, nesterov, first):
    for i in range(p.size):
        p[i], buf[i] = _sgd_scalar(p[i], g[i], buf[i], lr, momentum, weight_decay, nesterov, first)


@numba.njit(**CPU_OPTIONS)
def _adam_cpu(p, g, m, v, b1, c1, b2, c2, eps, weight_decay, decay, step_size, sqrt_bias2):
    for i in range(p.size):
        p[i], m[i], v[i] = _adam_scalar(
            p[i], g[i], m[i], v[i], b1, c1, b2, c2, eps, weight_decay, decay, step_size, sqrt_bias2
        )


# --- CUDA kernels ---------------------------------------------------------------------


@_cuda.kernel(
    "optim.sgd",
    float_signatures("void({t}[::1], {t}[::1], {t}[::1], {t}, {t}, {t}, boolean, boolean)"),
)
def _sgd_kernel(p, g, buf, lr, momentum, weight_decay, nesterov, first):
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        p[i], buf[i] = _sgd_scalar(p[i], g[i], buf[i], lr, momentum, weight_decay, nesterov, first)


@_cuda.kernel(
    "optim.adam",
    float_signatures(
        "void({t}[::1], {t}[::1], {t}[::1], {t}[::1], {t}, {t}, {t}, {t}, {t}, {t}, {t}, {t}, {t})"
    ),
)
def _adam_kernel(p, g, m, v, b1, c1, b2, c2, eps, weight_decay, decay, step_size, sqrt_bias2):
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        p[i], m[i], v[i] = _adam_scalar(
            p[i], g[i], m[i], v[i], b1, c1, b2, c2, eps, weight_decay, decay, step_size, sqrt_bias2
        )


@_cuda.kernel("optim.zero", float_signatures("void({t}[::1])"))
def _zero_kernel(a):
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        a[i] = 0


# --- launchers ------------------------------------------------------------------------


def _sgd_args(p, lr, momentum, weight_decay, nesterov, first):
    t = p.dtype.type
    return t(lr), t(momentum), t(weight_decay), bool(nesterov), bool(first)


def _adam_args(p, step, lr, betas, eps, weight_decay, decoupled):
    """Hyper-parameters in p's dtype, with the bias corrections folded in (float64 on the host)."""
    t = p.dtype.type
    b1, b2 = betas
    decay = 1 - lr * weight_decay if decoupled else 1.0
    coupled_wd = 0.0 if decoupled else weight_decay
    step_size = lr / (1 - b1**step)
    return (
        t(b1),
        t(1 - b1),
        t(b2),
        t(1 - b2),
        t(eps),
        t(coupled_wd),
        t(decay),
        t(step_size),
        t(math.sqrt(1 - b2**step)),
    )


def sgd_cpu(p, grad, buf, lr, momentum=0.0, weight_decay=0.0, nesterov=False, first=True):
    """One SGD step in place on flat numpy arrays (``buf``: momentum buffer)."""
    _sgd_cpu(p, grad, buf, *_sgd_args(p, lr, momentum, weight_decay, nesterov, first))


def sgd_cuda(p, grad, buf, lr, momentum=0.0, weight_decay=0.0, nesterov=False, first=True):
    """sgd_cpu on device arrays."""
    if p.size:
        blocks, threads = grid_1d(p.size)
        _sgd_kernel[blocks, threads](
            p, grad, buf, *_sgd_args(p, lr, momentum, weight_decay, nesterov, first)
        )


def adam_cpu(
    p, grad, m, v, step, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False
):
    """One Adam (AdamW with ``decoupled``) step in place; ``step`` counts from 1."""
    _adam_cpu(p, grad, m, v, *_adam_args(p, step, lr, betas, eps, weight_decay, decoupled))


def adam_cuda(
    p, grad, m, v, step, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False
):
    """adam_cpu on device arrays."""
    if p.size:
        blocks, threads = grid_1d(p.size)
        _adam_kernel[blocks, threads](
            p, grad, m, v, *_adam_args(p, step, lr, betas, eps, weight_decay, decoupled)
        )


def zero_cpu(a):
    """a[...] = 0 for a float numpy array."""
    a.fill(0)


def zero_cuda(a):
    """a[...] = 0 for a C-contiguous float device array."""
    flat = _cuda.flat(a)
    if flat.size:
        blocks, threads = grid_1d(flat.size)
        _zero_kernel[blocks, threads](flat)


# --- table ----------------------------------------------------------------------------

KERNELS = {
    "sgd": OpKernels(sgd_ref, sgd_cpu, sgd_cuda),
    "adam": OpKernels(adam_ref, adam_cpu, adam_cuda),
    "zero": OpKernels(zero_ref, zero_cpu, zero_cuda),
}
