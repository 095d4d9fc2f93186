"""Classification hits: how many predictions match their targets, counted where
the predictions live so that training can report accuracy without copying
them to the host.

- argmax_hits(scores (batch, C), target): rows whose largest score (the first
  one on ties) is the target class; targets are class indices (batch,) int64,
  or scores/one-hot rows (batch, C) whose argmax is the class.
- binary_hits(pred, target, threshold): elements where ``pred > threshold``
  agrees with ``target > 0.5`` (threshold 0 for logits, 0.5 for probabilities).

Each writes the count into ``out[0]``, a 1-element array of the prediction's
dtype (exact up to 2**24 in float32).

- count_outside(x, lo, hi): elements of x outside [lo, hi], NaN included,
  returned as a Python int (a count above 2**24 in float32 may be rounded,
  never to zero). The checked ops use it to refuse values before a kernel
  would turn them into a plausible result (binary cross-entropy of
  probabilities).

Sections: numpy references, CPU kernels, CUDA kernels, launchers.
"""

from __future__ import annotations

import numba
import numpy as np

from . import _cuda
from ._cache import cached
from ._cpu import CPU_OPTIONS
from ._cuda import cuda, float_signatures
from ._table import OpKernels
from .softmax import _block_reduce, _scratch_size

# --- references (the executable spec) -------------------------------------------------


def argmax_hits_ref(scores, target):
    classes = target if target.ndim == 1 else target.argmax(axis=1)
    return int(np.sum(scores.argmax(axis=1) == classes)) if len(scores) else 0


def binary_hits_ref(pred, target, threshold):
    return int(np.sum((pred > threshold) == (target > 0.5)))


def count_outside_ref(x, lo, hi):
    """Elements of x outside [lo, hi]; NaN is outside every interval."""
    return int(np.sum(~((x >= lo) & (x <= hi))))


# --- CPU kernels ----------------------------------------------------------------------


@numba.njit(inline="always")
def _argmax(row):
    best = 0
    for j in range(1, row.size):
        if row[j] > row[best]:
            best = j
    return best


@cached()
@numba.njit(**CPU_OPTIONS)
def _argmax_hits_labels_cpu(scores, labels):
    hits = 0
    for r in range(scores.shape[0]):
        hits += _argmax(scores[r]) == labels[r]
    return hits


@cached()
@numba.njit(**CPU_OPTIONS)
def _argmax_hits_rows_cpu(scores, target):
    hits = 0
    for r in range(scores.shape[0]):
        hits += _argmax(scores[r]) == _argmax(target[r])
    return hits


@cached()
@numba.njit(**CPU_OPTIONS)
def _binary_hits_cpu(pred, target, threshold):
    hits = 0
    half = target.dtype.type(0.5)
    for i in range(pred.size):
        hits += (pred[i] > threshold) == (target[i] > half)
    return hits


@cached()
@numba.njit(**CPU_OPTIONS)
def _count_outside_cpu(x, lo, hi):
    count = 0
    for i in range(x.size):
        count += not (lo <= x[i] <= hi)  # NaN compares false
    return count


# --- CUDA kernels ---------------------------------------------------------------------

#: The counting kernels run as one block (the counts are per mini-batch).
_THREADS = 256
_SCRATCH = _scratch_size(_THREADS)


if _cuda.HAVE_NUMBA_CUDA:

    @cuda.jit(device=True, inline="always")
    def _argmax_cuda(a, r):
        best = 0
        for j in range(1, a.shape[1]):
            if a[r, j] > a[r, best]:
                best = j
        return best


def _argmax_hits_cuda(with_labels):
    name = "labels" if with_labels else "rows"
    target_type = "int64[::1]" if with_labels else "{t}[:, ::1]"

    @_cuda.kernel(
        f"metrics.argmax_hits_{name}",
        float_signatures(f"void({{t}}[:, ::1], {target_type}, {{t}}[::1])"),
    )
    def kernel(scores, target, out):
        """One block: out[0] = rows whose argmax matches the target."""
        scratch = cuda.shared.array(_SCRATCH, scores.dtype)
        one = scores.dtype.type(1)
        hits = one - one
        for r in range(cuda.threadIdx.x, scores.shape[0], _THREADS):
            label = target[r] if with_labels else _argmax_cuda(target, r)
            if _argmax_cuda(scores, r) == label:
                hits += one
        hits = _block_reduce(hits, scratch, False)
        if cuda.threadIdx.x == 0:
            out[0] = hits

    return kernel


@_cuda.kernel("metrics.binary_hits", float_signatures("void({t}[::1], {t}[::1], {t}, {t}[::1])"))
def _binary_hits_kernel(pred, target, threshold, out):
    """One block: out[0] = elements where pred > threshold agrees with target > 1/2."""
    scratch = cuda.shared.array(_SCRATCH, pred.dtype)
    half = pred.dtype.type(0.5)
    one = pred.dtype.type(1)
    hits = one - one
    for i in range(cuda.threadIdx.x, pred.size, _THREADS):
        if (pred[i] > threshold) == (target[i] > half):
            hits += one
    hits = _block_reduce(hits, scratch, False)
    if cuda.threadIdx.x == 0:
        out[0] = hits


@_cuda.kernel("metrics.count_outside", float_signatures("void({t}[::1], {t}, {t}, {t}[::1])"))
def _count_outside_kernel(x, lo, hi, out):
    """One block: out[0] = elements of x outside [lo, hi] or NaN."""
    scratch = cuda.shared.array(_SCRATCH, x.dtype)
    one = x.dtype.type(1)
    count = one - one
    for i in range(cuda.threadIdx.x, x.size, _THREADS):
        if not (lo <= x[i] <= hi):
            count += one
    count = _block_reduce(count, scratch, False)
    if cuda.threadIdx.x == 0:
        out[0] = count


_ARGMAX_HITS_LABELS = _argmax_hits_cuda(True)
_ARGMAX_HITS_ROWS = _argmax_hits_cuda(False)


# --- launchers ------------------------------------------------------------------------


def _check_hits(op, pred, target, out):
    """ValueError unless target has pred's rows (class indices (batch,) for
    argmax_hits) or shape, and out an element to write."""
    if op == "argmax_hits" and target.ndim == 1:
        fits = pred.ndim == 2 and tuple(target.shape) == tuple(pred.shape[:1])
    else:
        fits = tuple(target.shape) == tuple(pred.shape)
    if not fits or out.size < 1:
        raise ValueError(
            f"{op}: expected target of shape {pred.shape} (or class indices) and a 1-element "
            f"out, got {target.shape} and {out.shape}"
        )


def argmax_hits_cpu(scores, target, out):
    """scores (batch, C); target (batch,) int64 or (batch, C) like scores."""
    _check_hits("argmax_hits", scores, target, out)
    if scores.shape[1] == 0:
        out[0] = 0
    elif target.ndim == 1:
        out[0] = _argmax_hits_labels_cpu(scores, target)
    else:
        out[0] = _argmax_hits_rows_cpu(scores, target)


def binary_hits_cpu(pred, target, threshold, out):
    """pred and target of one shape; threshold a float."""
    _check_hits("binary_hits", pred, target, out)
    out[0] = _binary_hits_cpu(pred.reshape(-1), target.reshape(-1), pred.dtype.type(threshold))


def argmax_hits_cuda(scores, target, out):
    """argmax_hits_cpu on device arrays."""
    _check_hits("argmax_hits", scores, target, out)
    kernel = _ARGMAX_HITS_LABELS if target.ndim == 1 else _ARGMAX_HITS_ROWS
    kernel[1, _THREADS](scores if scores.shape[1] else scores[:0], target, out)


def binary_hits_cuda(pred, target, threshold, out):
    """binary_hits_cpu on device arrays."""
    _check_hits("binary_hits", pred, target, out)
    _binary_hits_kernel[1, _THREADS](
        _cuda.flat(pred), _cuda.flat(target), pred.dtype.type(threshold), out
    )


def count_outside_cpu(x, lo, hi) -> int:
    """Elements of the C-contiguous float array x outside [lo, hi] or NaN."""
    dtype = x.dtype.type
    return int(_count_outside_cpu(x.reshape(-1), dtype(lo), dtype(hi)))


def count_outside_cuda(x, lo, hi) -> int:
    """count_outside_cpu on a device array: one launch and a copy of the count."""
    out = _cuda.scratch("count_outside", 1, x.dtype)
    dtype = x.dtype.type
    _count_outside_kernel[1, _THREADS](_cuda.flat(x), dtype(lo), dtype(hi), out)
    return int(out.copy_to_host()[0])


# --- table ----------------------------------------------------------------------------

KERNELS = {
    "argmax_hits": OpKernels(argmax_hits_ref, argmax_hits_cpu, argmax_hits_cuda),
    "binary_hits": OpKernels(binary_hits_ref, binary_hits_cpu, binary_hits_cuda),
    "count_outside": OpKernels(count_outside_ref, count_outside_cpu, count_outside_cuda),
}
