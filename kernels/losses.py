"""Losses, value and gradient in one pass: softmax cross-entropy, MSE, and
binary cross-entropy on logits.

Every loss is a mean: over the batch for softmax cross-entropy, over all
elements for MSE and binary cross-entropy. Each kernel writes the gradient
d loss / d prediction (same shape as the prediction) and the loss into
``loss_out``, a 1-element array of the prediction's dtype, accumulating in
float64 on the CPU and in the data's dtype per thread on the GPU.

- softmax_cross_entropy(logits (batch, C), labels): labels are class indices
  (batch,) int32/int64, or targets (batch, C) of the logits' dtype (one-hot or
  any distribution). loss = mean(sum(t * (log(s) - (z - m)))) with m the
  row's maximum and s = sum(exp(z - m)), a class whose target is 0 adding 0;
  grad = (exp(z - m) / s * sum(t) - t) / batch. An index outside [0, C)
  gives NaN. The maximum leaves each logit before log(s) joins it, so that a
  large maximum cannot round log(s) away.
- mse(pred, target): loss = mean(1/2 (pred - target)**2), grad = (pred - target) / n.
- binary_cross_entropy(logits, target): loss = mean(max(z, 0) - z t + log1p(exp(-|z|))),
  grad = (sigmoid(z) - t) / n. max(z, 0) - z t is |z| times the target's
  distance from the side z lies on (1 - t for z >= 0, t below), a distance of
  0 taking nothing even from an infinite z: z = +inf gives +inf for t = 0
  and 0 for t = 1 (PyTorch: +inf and NaN), as the limits do.
- binary_cross_entropy_probs(probs, target), on probabilities as PyTorch's
  BCELoss: loss = -mean(t max(log p, -100) + (1 - t) max(log(1 - p), -100)),
  grad = (p - t) / max(p (1 - p), 1e-12 rounded to float32) / n.

Sections: numpy references, scalar math, CPU kernels, CUDA kernels, launchers.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from . import _cuda, vmath
from ._cache import cached
from ._cpu import CPU_OPTIONS
from ._cuda import ELEMENTWISE_THREADS, cuda, float_signatures, grid_1d
from ._table import OpKernels
from .softmax import (
    MAX_ROW_BLOCKS,
    ROW_OPTIONS,
    ROW_THREADS,
    _block_reduce,
    _exp_shifted_row,
    _row_max,
    _scratch_size,
    row_threads,
)

# --- references (the executable spec) -------------------------------------------------


def _targets_ref(labels, shape):
    if labels.ndim == 2:
        return labels.astype(np.float64)
    t = np.zeros(shape)
    inside = (labels >= 0) & (labels < shape[1])
    t[np.arange(shape[0])[inside], labels[inside]] = 1.0
    t[~inside] = np.nan
    return t


def softmax_cross_entropy_ref(logits, labels):
    """(loss as a float64 scalar, grad in the logits' dtype)."""
    z = logits.astype(np.float64)
    t = _targets_ref(labels, z.shape)
    shifted = z - z.max(axis=1, keepdims=True, initial=-np.inf)
    total = np.exp(shifted).sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):  # empty rows; 0 * inf, replaced
        terms = t * (np.log(total) - shifted)
    terms = np.where(t == 0, 0.0, terms)
    mass = t.sum(axis=1, keepdims=True)
    batch = max(z.shape[0], 1)
    loss = float(np.sum(terms) / batch)
    grad = (np.exp(shifted) / total * mass - t) / batch
    return loss, grad.astype(logits.dtype)


def mse_ref(pred, target):
    d = pred.astype(np.float64) - target.astype(np.float64)
    n = max(d.size, 1)
    return float(np.sum(0.5 * d * d) / n), (d / n).astype(pred.dtype)


def binary_cross_entropy_ref(logits, target):
    z, t = logits.astype(np.float64), target.astype(np.float64)
    n = max(z.size, 1)
    distance = np.where(z >= 0, 1 - t, t)
    with np.errstate(invalid="ignore"):  # 0 * inf, replaced
        margin = np.where(distance == 0, 0.0, distance * np.abs(z))
    loss = margin + np.log1p(np.exp(-np.abs(z)))
    sig = np.where(
        z >= 0, 1 / (1 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1 + np.exp(-np.abs(z)))
    )
    return float(np.sum(loss) / n), ((sig - t) / n).astype(logits.dtype)


def binary_cross_entropy_probs_ref(probs, target):
    p, t = probs.astype(np.float64), target.astype(np.float64)
    n = max(p.size, 1)
    with np.errstate(divide="ignore"):
        loss = -(t * np.maximum(np.log(p), -100) + (1 - t) * np.maximum(np.log1p(-p), -100))
    grad = (p - t) / np.maximum(p * (1 - p), float(np.float32(1e-12))) / n
    return float(np.sum(loss) / n), grad.astype(probs.dtype)


# --- scalar math: (loss term, gradient term) of one element ---------------------------


@numba.njit(inline="always")
def _mse_scalar(p, t, one):
    d = p - t
    return d * d * (one / (one + one)), d


def _bce_scalar(exp):
    """The binary cross-entropy term for a target's exp (vmath.exp on the CPU)."""

    @numba.njit(inline="always")
    def bce(z, t, one):
        e = exp(-abs(z))
        distance = one - t if z >= 0 else t
        margin = distance * abs(z) if distance != 0 else one - one
        loss = margin + math.log1p(e)
        s = one / (one + e)
        return loss, (s if z >= 0 else e * s) - t

    return bce


@numba.njit(inline="always")
def _bce_probs_scalar(p, t, one):
    # float32 constants: they keep float32 math float32 and widen for float64
    floor = -one * np.float32(100)
    log_p = math.log(p) if p > 0 else floor
    log_q = math.log1p(-p) if p < one else floor
    loss = -(t * max(log_p, floor) + (one - t) * max(log_q, floor))
    return loss, (p - t) / max(p * (one - p), one * np.float32(1e-12))


# --- CPU kernels ----------------------------------------------------------------------


# Serial at every size: losses follow the last layer's BLAS product (see _cpu.py).
#
# The cross-entropy kernels sum the rows' losses as two float64 totals, of the
# log-sum terms and of the margins, and the launcher adds the two: within a
# kernel, reassociation could rewrite log(s) + (m - z) as (log(s) + m) - z,
# which rounds log(s) to the spacing of m. The margins' own differences come
# from _difference, compiled without fast-math flags: LLVM reassociates only
# instructions that carry the flag, so a margin is never merged into a total
# before it is taken.


@numba.njit(**CPU_OPTIONS)
def _difference(a, b):
    """a - b, as one rounded subtraction whatever the caller's flags."""
    return a - b


@cached()
@numba.njit(**ROW_OPTIONS)
def _cross_entropy_labels_cpu(z, labels, grad):
    """(sum of log(s), sum of m - z[label]) over the rows, in float64, and
    grad = (softmax - onehot) * 1 (scaled by the launcher); z (rows >= 1, n >= 1)."""
    rows, n = z.shape
    log_sums = margins = 0.0
    m = _row_max(z[0])
    for r in range(rows):
        s, following_max = _exp_shifted_row(z[r], m, grad[r], z[min(r + 1, rows - 1)], True)
        inv = z.dtype.type(1) / s
        for j in range(n):
            grad[r, j] *= inv
        label = labels[r]
        log_sums += math.log(s)
        if 0 <= label < n:
            margins += _difference(np.float64(m), np.float64(z[r, label]))
            grad[r, label] -= 1
        else:
            margins = np.nan
        m = following_max
    return log_sums, margins


@cached()
@numba.njit(**ROW_OPTIONS)
def _cross_entropy_targets_cpu(z, t, grad):
    """(sum of mass * log(s), sum of -sum(t * (z - m))) over the rows, in
    float64, and grad = softmax * mass - t (scaled by the launcher); z
    (rows >= 1, n >= 1)."""
    rows, n = z.shape
    log_sums = margins = 0.0
    m = _row_max(z[0])
    for r in range(rows):
        s, following_max = _exp_shifted_row(z[r], m, grad[r], z[min(r + 1, rows - 1)], True)
        mass = z.dtype.type(0)
        # sum(t * (z - m)) in float64, where float32 differences cannot
        # overflow; a zero target adds 0 even where z - m is -inf (a masked
        # class, or a float64 difference beyond the range).
        dot = 0.0
        for j in range(n):
            mass += t[r, j]
            term = t[r, j] * _difference(np.float64(z[r, j]), np.float64(m))
            dot += term if t[r, j] != 0 else 0.0
        scale = mass / s
        for j in range(n):
            grad[r, j] = grad[r, j] * scale - t[r, j]
        log_sums += mass * math.log(s)
        margins -= dot
        m = following_max
    return log_sums, margins


def _elementwise_cpu(name, scalar):
    @cached(name)
    @numba.njit(**CPU_OPTIONS)
    def kernel(p, t, grad, scale):
        """grad = d_term * scale; returns the float64 sum of the loss terms."""
        one = p.dtype.type(1)
        total = 0.0
        for i in range(p.size):
            term, d = scalar(p[i], t[i], one)
            grad[i] = d * scale
            total += term
        return total

    return kernel


_MSE_CPU = _elementwise_cpu("mse", _mse_scalar)
_BCE_CPU = _elementwise_cpu("bce", _bce_scalar(vmath.exp))
_BCE_PROBS_CPU = _elementwise_cpu("bce_probs", _bce_probs_scalar)


# --- CUDA kernels ---------------------------------------------------------------------


def _cross_entropy_cuda(threads, with_labels):
    scratch_size = _scratch_size(threads)
    name = "labels" if with_labels else "targets"
    label_type = "int64[::1]" if with_labels else "{t}[:, ::1]"

    @_cuda.kernel(
        f"losses.cross_entropy_{name}_{threads}",
        float_signatures(
            f"void({{t}}[:, ::1], {label_type}, {{t}}, {{t}}[:, ::1], {{t}}[::1], {{t}}[::1], "
            "int32[::1])"
        ),
    )
    def kernel(z, labels, scale, grad, losses, loss_out, done):
        """Block per row: grad[r] = (softmax * mass - t) * scale, losses[r] =
        row loss; the last block to finish sets loss_out[0] = sum(losses) * scale."""
        scratch = cuda.shared.array(scratch_size, z.dtype)
        last = cuda.shared.array(1, numba.int32)
        rows, n = z.shape
        tid = cuda.threadIdx.x
        zero = z.dtype.type(0)
        for r in range(cuda.blockIdx.x, rows, cuda.gridDim.x):
            m = z.dtype.type(-math.inf)
            for j in range(tid, n, threads):
                m = max(m, z[r, j])
            m = _block_reduce(m, scratch, True)
            s = zero
            for j in range(tid, n, threads):
                s += math.exp(z[r, j] - m)
            s = _block_reduce(s, scratch, False)
            log_s = math.log(s)
            if with_labels:
                label = labels[r]
                inv = z.dtype.type(1) / s
                for j in range(tid, n, threads):
                    p = math.exp(z[r, j] - m) * inv
                    grad[r, j] = (p - (z.dtype.type(1) if j == label else zero)) * scale
                if tid == 0:
                    inside = 0 <= label < n
                    losses[r] = log_s + (m - z[r, label]) if inside else z.dtype.type(math.nan)
            else:
                mass = zero
                dot = zero  # sum(t * (z - m)), a zero target adding 0 (as on the CPU)
                for j in range(tid, n, threads):
                    t = labels[r, j]
                    mass += t
                    dot += t * (z[r, j] - m) if t != 0 else zero
                mass = _block_reduce(mass, scratch, False)
                dot = _block_reduce(dot, scratch, False)
                ratio = mass / s
                for j in range(tid, n, threads):
                    grad[r, j] = (math.exp(z[r, j] - m) * ratio - labels[r, j]) * scale
                if tid == 0:
                    losses[r] = mass * log_s - dot
        _sum_in_last_block(losses, scale, loss_out, done, scratch, last)

    return kernel


def _elementwise_cuda(name, scalar):
    scratch_size = _scratch_size(ELEMENTWISE_THREADS)

    @_cuda.kernel(
        f"losses.{name}",
        float_signatures("void({t}[::1], {t}[::1], {t}, {t}[::1], {t}[::1], {t}[::1], int32[::1])"),
    )
    def kernel(p, t, scale, grad, partials, loss_out, done):
        """grad = d_term * scale; partials[block] = the block's sum of loss
        terms; the last block to finish sets loss_out[0] = sum(partials) * scale."""
        scratch = cuda.shared.array(scratch_size, p.dtype)
        last = cuda.shared.array(1, numba.int32)
        one = p.dtype.type(1)
        total = p.dtype.type(0)
        for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
            term, d = scalar(p[i], t[i], one)
            grad[i] = d * scale
            total += term
        total = _block_reduce(total, scratch, False)
        if cuda.threadIdx.x == 0:
            partials[cuda.blockIdx.x] = total
        _sum_in_last_block(partials[: cuda.gridDim.x], scale, loss_out, done, scratch, last)

    return kernel


@_cuda.device_function
def _sum_in_last_block(values, scale, out, done, scratch, last):
    """Called by every thread of every block once each block has written its
    share of ``values``: the last block to get here sets out[0] = sum(values)
    * scale and ``done`` (the count of blocks here, 0 between launches) back
    to 0, so that a loss is one launch. ``last``: a 1-element shared int32."""
    cuda.threadfence()  # this block's values are visible before it is counted
    cuda.syncthreads()
    if cuda.threadIdx.x == 0:
        last[0] = cuda.atomic.add(done, 0, 1) == cuda.gridDim.x - 1
    cuda.syncthreads()
    if last[0]:
        total = values.dtype.type(0)
        for i in range(cuda.threadIdx.x, values.size, cuda.blockDim.x):
            total += values[i]
        total = _block_reduce(total, scratch, False)
        if cuda.threadIdx.x == 0:
            out[0] = total * scale
            done[0] = 0


_SUM_THREADS = 256
_SUM_SCRATCH = _scratch_size(_SUM_THREADS)


@_cuda.kernel("losses.sum", float_signatures("void({t}[::1], {t}, {t}[::1])"))
def _sum_kernel(values, scale, out):
    """One block: out[0] = sum(values) * scale."""
    scratch = cuda.shared.array(_SUM_SCRATCH, values.dtype)
    total = values.dtype.type(0)
    for i in range(cuda.threadIdx.x, values.size, _SUM_THREADS):
        total += values[i]
    total = _block_reduce(total, scratch, False)
    if cuda.threadIdx.x == 0:
        out[0] = total * scale


_CROSS_ENTROPY_LABELS = {t: _cross_entropy_cuda(t, True) for t in ROW_THREADS}
_CROSS_ENTROPY_TARGETS = {t: _cross_entropy_cuda(t, False) for t in ROW_THREADS}
_MSE_CUDA = _elementwise_cuda("mse", _mse_scalar)
_BCE_CUDA = _elementwise_cuda("binary_cross_entropy", _bce_scalar(math.exp))
_BCE_PROBS_CUDA = _elementwise_cuda("binary_cross_entropy_probs", _bce_probs_scalar)


# --- launchers ------------------------------------------------------------------------
#
# Each fills ``grad`` (shaped like the prediction) and ``loss_out`` (1 element).


def softmax_cross_entropy_cpu(logits, labels, grad, loss_out):
    """logits (batch, C); labels (batch,) int64 or (batch, C) like logits."""
    batch, n = logits.shape
    if batch == 0 or n == 0:
        loss_out[0] = np.nan
        return
    kernel = _cross_entropy_labels_cpu if labels.ndim == 1 else _cross_entropy_targets_cpu
    log_sums, margins = kernel(logits, labels, grad)
    grad *= grad.dtype.type(1 / batch)
    loss_out[0] = (log_sums + margins) / batch


def _elementwise_cpu_launch(kernel, p, t, grad, loss_out):
    n = p.size
    if n == 0:
        loss_out[0] = np.nan
        return
    loss_out[0] = kernel(p.ravel(), t.ravel(), grad.reshape(-1), p.dtype.type(1 / n)) / n


def mse_cpu(pred, target, grad, loss_out):
    _elementwise_cpu_launch(_MSE_CPU, pred, target, grad, loss_out)


def binary_cross_entropy_cpu(logits, target, grad, loss_out):
    _elementwise_cpu_launch(_BCE_CPU, logits, target, grad, loss_out)


def binary_cross_entropy_probs_cpu(probs, target, grad, loss_out):
    _elementwise_cpu_launch(_BCE_PROBS_CPU, probs, target, grad, loss_out)


def softmax_cross_entropy_cuda(logits, labels, grad, loss_out):
    """As softmax_cross_entropy_cpu, on device arrays."""
    batch, n = logits.shape
    if batch == 0 or n == 0:
        _sum_kernel[1, _SUM_THREADS](_cuda.flat(logits), logits.dtype.type(math.nan), loss_out)
        return
    threads = row_threads(n)
    kernels = _CROSS_ENTROPY_LABELS if labels.ndim == 1 else _CROSS_ENTROPY_TARGETS
    losses = _cuda.scratch("losses.rows", batch, logits.dtype)
    scale = logits.dtype.type(1 / batch)
    kernels[threads][min(batch, MAX_ROW_BLOCKS), threads](
        logits, labels, scale, grad, losses, loss_out, _cuda.counter("losses.done")
    )


def _elementwise_cuda_launch(kernel, p, t, grad, loss_out):
    n = p.size
    scale = p.dtype.type(1 / n) if n else p.dtype.type(math.nan)
    blocks, threads = grid_1d(max(n, 1))
    partials = _cuda.scratch("losses.partials", blocks, p.dtype)
    kernel[blocks, threads](
        _cuda.flat(p), _cuda.flat(t), scale, _cuda.flat(grad), partials, loss_out,
        _cuda.counter("losses.done"),
    )  # fmt: skip


def mse_cuda(pred, target, grad, loss_out):
    _elementwise_cuda_launch(_MSE_CUDA, pred, target, grad, loss_out)


def binary_cross_entropy_cuda(logits, target, grad, loss_out):
    _elementwise_cuda_launch(_BCE_CUDA, logits, target, grad, loss_out)


def binary_cross_entropy_probs_cuda(probs, target, grad, loss_out):
    _elementwise_cuda_launch(_BCE_PROBS_CUDA, probs, target, grad, loss_out)


# --- table ----------------------------------------------------------------------------

KERNELS = {
    "softmax_cross_entropy": OpKernels(
        softmax_cross_entropy_ref, softmax_cross_entropy_cpu, softmax_cross_entropy_cuda
    ),
    "mse": OpKernels(mse_ref, mse_cpu, mse_cuda),
    "binary_cross_entropy": OpKernels(
        binary_cross_entropy_ref, binary_cross_entropy_cpu, binary_cross_entropy_cuda
    ),
    "binary_cross_entropy_probs": OpKernels(
        binary_cross_entropy_probs_ref,
        binary_cross_entropy_probs_cpu,
        binary_cross_entropy_probs_cuda,
    ),
}
