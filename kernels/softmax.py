"""Softmax and log-softmax over the last axis, and their gradients.

Every op works on a C-contiguous 2-D float32 or float64 array of shape
``(rows, n)`` (callers fold leading axes into ``rows``). Each row is shifted by
its maximum before exponentiating, so finite inputs never overflow. The
backward ops take the forward *output* ``y``:

- softmax:     dx = y * (g - sum(g * y))
- log_softmax: dx = g - exp(y) * sum(g)

Sections: numpy references, CPU kernels, CUDA kernels, launchers.

Log-softmax is computed as (x - max) - log(sum), never as x - (max + log(sum)):
the maximum leaves each value before log(sum) joins it, so that a large max
cannot round log(sum) away, and the result is a sum of two non-positive terms
(no cancellation).

On the CPU each thread takes a block of rows, and each row is a few passes
while it sits in L1: the exponentials (and their sum) go to a scratch row,
for log-softmax the shifted values x - max, then the output is written from
it. The pass over the exponentials also finds the next row's maximum, so
that reading that row from memory overlaps this row's arithmetic instead of
waiting in a pass of its own. The forward ops write outputs of
``STREAMING_MIN_BYTES`` or more with streaming stores: memory then carries
the input once and the output once, as a copy does, instead of also reading
every output line before writing it (the bits are the same either way).

On the GPU one block works on one row: its threads stride over the row, then
combine their partial max / sum with a block reduction (warp shuffles, then one
value per warp through shared memory). Numba's CUDA simulator has no warp
shuffles, so under it the reduction is a shared-memory tree instead, chosen at
import time; the rest of each kernel is the same code.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba.extending import overload

from . import _cuda, vmath
from ._cache import cached
from ._cpu import (
    CPU_OPTIONS,
    like,
    store_affine_streaming,
    store_fence,
    wide_vectors,
    writable_like,
)
from ._cuda import WARP_SIZE, cuda, float_signatures
from ._table import OpKernels

# --- references (the executable spec) -------------------------------------------------


def softmax_ref(x):
    """exp(x - max) / sum(exp(x - max)) along the last axis, in float64."""
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(axis=-1, keepdims=True, initial=-np.inf))
    return (e / e.sum(axis=-1, keepdims=True)).astype(x.dtype)


def log_softmax_ref(x):
    """(x - max) - log(sum(exp(x - max))) along the last axis, in float64."""
    x64 = x.astype(np.float64)
    shifted = x64 - x64.max(axis=-1, keepdims=True, initial=-np.inf)
    with np.errstate(divide="ignore"):  # log(0) of empty rows, never used
        log_total = np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return (shifted - log_total).astype(x.dtype)


def softmax_backward_ref(grad_out, y):
    g, y64 = grad_out.astype(np.float64), y.astype(np.float64)
    return (y64 * (g - (g * y64).sum(axis=-1, keepdims=True))).astype(y.dtype)


def log_softmax_backward_ref(grad_out, y):
    g, y64 = grad_out.astype(np.float64), y.astype(np.float64)
    return (g - np.exp(y64) * g.sum(axis=-1, keepdims=True)).astype(y.dtype)


# --- CPU kernels ----------------------------------------------------------------------

#: Softmax does several times the work per element of an elementwise op, so
#: it goes parallel at a smaller size.
ROW_PARALLEL_MIN_SIZE = 1 << 16
#: The forward ops write outputs of at least this many bytes with streaming
#: stores: far larger than a core's L2, so little of such an output would
#: still be cached for its reader.
STREAMING_MIN_BYTES = 1 << 24

# Reassociation lets LLVM vectorise the row reductions; no 'nnan'/'ninf', so
# NaN and infinity keep their IEEE meaning. The row helpers below are inlined
# by Numba, which keeps only the calling kernel's flags: the kernels carry them.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
#: Options for kernels that reduce over rows (the CPU defaults plus reassociation).
ROW_OPTIONS = {**CPU_OPTIONS, "fastmath": _FASTMATH}


@numba.njit(inline="always")
def _row_max(x):
    """The largest entry of a non-empty row, as the largest of the entries'
    order keys (an integer maximum vectorises; a float one does not without
    'nnan'). A NaN with its sign bit clear is the largest key, so it becomes
    the row's maximum; either way a NaN poisons the sum that follows."""
    m = vmath.order_key(x[0])
    for j in range(1, x.size):
        k = vmath.order_key(x[j])
        m = k if k > m else m
    return vmath.from_order_key(m)


@numba.njit(inline="always")
def _exp_shifted_row(x, m, e, following, keep_exp):
    """sum(exp(x - m)), and the maximum of ``following`` (a row of x's
    length: found in the same loop, so that its reads from memory overlap
    this row's arithmetic); e = exp(x - m) when ``keep_exp`` (a constant),
    else e = x - m."""
    s = x.dtype.type(0)
    k = vmath.order_key(following[0])
    for j in range(x.size):
        shifted = x[j] - m
        v = vmath.exp_nonpositive(shifted)
        e[j] = v if keep_exp else shifted
        s += v
        key = vmath.order_key(following[j])
        k = key if key > k else k
    return s, vmath.from_order_key(k)


@numba.njit(inline="always")
def _store_affine(src, dst, scale, shift, streaming):
    """dst = src * scale + shift, with streaming stores or through the cache
    (the same bits)."""
    if streaming:
        store_affine_streaming(src, dst, scale, shift)
    else:
        for j in range(src.size):
            dst[j] = src[j] * scale + shift


@numba.njit(inline="always")
def _softmax_row(x, m, out, scratch, following, streaming):
    """out = softmax(x), m = max(x); returns the maximum of ``following``."""
    s, following_max = _exp_shifted_row(x, m, scratch, following, True)
    one = x.dtype.type(1)
    _store_affine(scratch, out, one / s, one - one, streaming)
    return following_max


@numba.njit(inline="always")
def _log_softmax_row(x, m, out, scratch, following, streaming):
    """out = (x - m) * 1 - log(s), which is (x - m) - log(s); as
    _softmax_row. x - m reaches the output through ``scratch``: under
    reassociation LLVM may fold m and log(s) into one shift within a loop,
    not across a store and a load in two."""
    s, following_max = _exp_shifted_row(x, m, scratch, following, False)
    _store_affine(scratch, out, x.dtype.type(1), -math.log(s), streaming)
    return following_max


@numba.njit(inline="always")
def _softmax_backward_row(g, y, out):
    dot = g.dtype.type(0)
    for j in range(g.size):
        dot += g[j] * y[j]
    for j in range(g.size):
        out[j] = y[j] * (g[j] - dot)


@numba.njit(inline="always")
def _log_softmax_backward_row(g, y, out):
    total = g.dtype.type(0)
    for j in range(g.size):
        total += g[j]
    for j in range(g.size):
        out[j] = g[j] - vmath.exp(y[j]) * total


def _row_blocks_kernel(row_fn, parallel, streaming):
    """A kernel applying ``row_fn`` to every row: each thread (one when not
    ``parallel``) takes one block of rows, with a scratch row of its own, and
    finds each row's maximum while working on the row before. Not kept in the
    kernel cache (see ``_cache``): a parallel kernel loaded from disk runs a
    copy of its loop body optimized a second time, whose reassociated sums
    can round otherwise than a freshly compiled one, and results must not
    depend on whether the cache was filled."""

    @numba.njit(parallel=parallel, inline="never" if parallel else "always", **ROW_OPTIONS)
    def kernel(x, out):
        rows, n = x.shape
        blocks = numba.get_num_threads() if parallel else 1
        if n:
            for block in numba.prange(blocks):
                wide_vectors()
                scratch = np.empty(n, x.dtype)
                first, stop = block * rows // blocks, (block + 1) * rows // blocks
                if first < stop:
                    m = _row_max(x[first])
                    for r in range(first, stop):
                        following = x[min(r + 1, stop - 1)]
                        m = row_fn(x[r], m, out[r], scratch, following, streaming)
                if streaming:
                    store_fence()

    return kernel


# What an op calls checks the arrays in a compiled launcher, as for the
# activations (see activations._cpu_forward): their types when Numba compiles
# it for them, their shapes when it runs. It returns True, or False having
# written nothing, so that the caller can raise the error that names what was
# wrong (or fold leading axes into rows and call again). The launcher runs the
# serial kernel itself, both inlined into one compiled function (see _cache:
# a kernel compiled on its own, then again inside its caller, can round its
# reassociated sums otherwise) and leaves arrays of ROW_PARALLEL_MIN_SIZE elements or more
# to the parallel (or streaming) kernel, called from Python: those compile only
# once a large array comes (linked into the launcher, all three would compile
# on its first call, whatever the size), for one more Python call, small beside
# a kernel's run at those sizes. Each launcher takes 2-D arrays only: every
# other array type would be another slow compilation.

#: What a launcher returns: nothing written, for arrays it cannot take; done;
#: checked, and large enough for the caller to run the parallel kernel.
_REFUSED, _DONE, _LARGE = 0, 1, 2


def _forward_rows(row_fn):
    """The forward op of ``row_fn`` on (rows, n) arrays: serial below
    ROW_PARALLEL_MIN_SIZE elements, row-parallel above, and outputs of
    STREAMING_MIN_BYTES or more written with streaming stores."""
    serial = _row_blocks_kernel(row_fn, parallel=False, streaming=False)
    parallel = _row_blocks_kernel(row_fn, parallel=True, streaming=False)
    streaming = _row_blocks_kernel(row_fn, parallel=True, streaming=True)

    def launch(x, out):
        """out = op(x) below ROW_PARALLEL_MIN_SIZE elements: _DONE, _LARGE or _REFUSED."""

    @overload(launch, jit_options=ROW_OPTIONS, inline="always")
    def _launch(x, out):
        if not (writable_like(out, x) and x.layout == "C" and x.ndim == 2):
            return lambda x, out: _REFUSED

        def impl(x, out):
            if out.shape != x.shape:
                return _REFUSED
            if x.size >= ROW_PARALLEL_MIN_SIZE:
                return _LARGE
            serial(x, out)
            return _DONE

        return impl

    @cached(row_fn)
    @numba.njit(**ROW_OPTIONS)
    def checked(x, out):
        return launch(x, out)

    def forward(x, out):
        code = checked(x, out)
        if code == _LARGE:
            (streaming if out.nbytes >= STREAMING_MIN_BYTES else parallel)(x, out)
        return code != _REFUSED

    forward.streaming = streaming  # for tests: the kernel only large outputs reach
    return forward


def _backward_rows(row_fn):
    """The backward op of ``row_fn(g, y, out)`` on (rows, n) arrays: serial and
    row-parallel kernels, with 512-bit vectors where the CPU has them (see
    activations._cpu_forward), behind a launcher like ``_forward_rows``'s."""

    @numba.njit(inline="always", **ROW_OPTIONS)
    def serial(g, y, out):
        wide_vectors()
        for r in range(g.shape[0]):
            row_fn(g[r], y[r], out[r])

    @numba.njit(parallel=True, **ROW_OPTIONS)  # not cached: see _row_blocks_kernel
    def parallel(g, y, out):
        for r in numba.prange(g.shape[0]):
            wide_vectors()
            row_fn(g[r], y[r], out[r])

    def launch(g, y, out):
        """out = op(g, y) below ROW_PARALLEL_MIN_SIZE elements: _DONE, _LARGE or _REFUSED."""

    @overload(launch, jit_options=ROW_OPTIONS, inline="always")
    def _launch(g, y, out):
        if not (
            writable_like(out, g)
            and like(y, g)
            and g.layout == "C"
            and y.layout == "C"
            and g.ndim == 2
        ):
            return lambda g, y, out: _REFUSED

        def impl(g, y, out):
            if out.shape != g.shape or y.shape != g.shape:
                return _REFUSED
            if g.size >= ROW_PARALLEL_MIN_SIZE:
                return _LARGE
            serial(g, y, out)
            return _DONE

        return impl

    @cached(row_fn)
    @numba.njit(**ROW_OPTIONS)
    def checked(g, y, out):
        return launch(g, y, out)

    def backward(g, y, out):
        code = checked(g, y, out)
        if code == _LARGE:
            parallel(g, y, out)
        return code != _REFUSED

    return backward


softmax_cpu = _forward_rows(_softmax_row)
softmax_cpu.__doc__ = "softmax_cpu(x, out) -> bool: x, out (rows, n) float32/float64, C order."
log_softmax_cpu = _forward_rows(_log_softmax_row)
log_softmax_cpu.__doc__ = "log_softmax_cpu(x, out) -> bool: as softmax_cpu."
softmax_backward_cpu = _backward_rows(_softmax_backward_row)
softmax_backward_cpu.__doc__ = "softmax_backward_cpu(grad_out, y, out) -> bool: (rows, n) each."
log_softmax_backward_cpu = _backward_rows(_log_softmax_backward_row)
log_softmax_backward_cpu.__doc__ = "log_softmax_backward_cpu(grad_out, y, out) -> bool: as above."


# --- CUDA kernels ---------------------------------------------------------------------

#: Threads per row (= per block) for the row kernels: a warp for short rows,
#: 128 threads for longer ones (small blocks keep many rows in flight on each
#: multiprocessor, which hides memory latency; with blocks of 512 too few rows
#: are in flight, and the kernels wait on it). Each must be a power of two and a
#: multiple of the warp size (the tree reduction halves, the shuffle reduction
#: works per warp).
ROW_THREADS = (32, 128)
#: The row kernels stride over rows when there are more rows than this.
MAX_ROW_BLOCKS = 65535 if not _cuda.SIMULATOR else 4


@numba.njit(inline="always")
def _combine(a, b, is_max):
    return max(a, b) if is_max else a + b


if _cuda.HAVE_NUMBA_CUDA:

    @cuda.jit(device=True, inline="always")
    def _block_reduce_shuffle(v, scratch, is_max):
        """Reduce ``v`` over the block: butterfly shuffles within each warp,
        then every thread folds the per-warp results from shared memory."""
        offset = WARP_SIZE // 2
        while offset > 0:
            v = _combine(v, cuda.shfl_xor_sync(0xFFFFFFFF, v, offset), is_max)
            offset //= 2
        tid = cuda.threadIdx.x
        if tid % WARP_SIZE == 0:
            scratch[tid // WARP_SIZE] = v
        cuda.syncthreads()
        v = scratch[0]
        for w in range(1, cuda.blockDim.x // WARP_SIZE):
            v = _combine(v, scratch[w], is_max)
        cuda.syncthreads()  # scratch is reused by the next reduction
        return v

    @cuda.jit(device=True, inline="always")
    def _block_reduce_tree(v, scratch, is_max):
        """Reduce ``v`` over the block in shared memory (the simulator, which
        has no warp shuffles): every thread folds all the values in thread
        order, behind two barriers only, since each of the simulator's
        barriers costs far more than the arithmetic."""
        scratch[cuda.threadIdx.x] = v
        cuda.syncthreads()
        v = scratch[0]
        for t in range(1, cuda.blockDim.x):
            v = _combine(v, scratch[t], is_max)
        cuda.syncthreads()  # scratch is reused by the next reduction
        return v

    _block_reduce = _block_reduce_shuffle if _cuda.HAS_WARP_SHUFFLE else _block_reduce_tree


def _scratch_size(threads):
    return threads // WARP_SIZE if _cuda.HAS_WARP_SHUFFLE else threads


#: The forward kernels keep each row in shared memory as they read it, when
#: it fits: x then leaves global memory once instead of three times (its
#: re-reads had come from L1 or L2), and softmax takes each exp once. The
#: narrower kernels hold the longest row they are given (4 values per thread);
#: the widest holds up to STAGED_ROW and reads longer rows three times. 4096
#: float32 values are 16 KiB per block: an H100 multiprocessor's shared memory
#: holds 13 such blocks of 128 threads, more than their registers allow
#: (about 70 per thread, ptxas for sm_90: 7 blocks), so shared memory does not
#: bound occupancy.
STAGED_ROW = 4096


def _forward_kernel(threads, log):
    scratch_size = _scratch_size(threads)
    name = "log_softmax" if log else "softmax"
    row_size = STAGED_ROW if threads == ROW_THREADS[-1] else 4 * threads

    @_cuda.kernel(
        f"softmax.{name}_rows_{threads}", float_signatures("void({t}[:, ::1], {t}[:, ::1])")
    )
    def kernel(x, out):
        scratch = cuda.shared.array(scratch_size, x.dtype)
        # Each thread stages and rereads only its own values: no barriers.
        row = cuda.shared.array(row_size, x.dtype)
        rows, n = x.shape
        staged = n <= row_size
        tid = cuda.threadIdx.x
        for r in range(cuda.blockIdx.x, rows, cuda.gridDim.x):
            m = x.dtype.type(-math.inf)
            for j in range(tid, n, threads):
                v = x[r, j]
                if staged:
                    row[j] = v
                m = max(m, v)
            m = _block_reduce(m, scratch, True)
            s = x.dtype.type(0)
            for j in range(tid, n, threads):
                e = math.exp((row[j] if staged else x[r, j]) - m)
                if staged and not log:
                    row[j] = e
                s += e
            s = _block_reduce(s, scratch, False)
            if log:
                log_s = math.log(s)
                for j in range(tid, n, threads):
                    out[r, j] = ((row[j] if staged else x[r, j]) - m) - log_s
            else:
                inv = x.dtype.type(1) / s
                for j in range(tid, n, threads):
                    out[r, j] = (row[j] if staged else math.exp(x[r, j] - m)) * inv

    return kernel


def _backward_kernel(threads, log):
    scratch_size = _scratch_size(threads)
    name = "log_softmax" if log else "softmax"

    @_cuda.kernel(
        f"softmax.{name}_backward_rows_{threads}",
        float_signatures("void({t}[:, ::1], {t}[:, ::1], {t}[:, ::1])"),
    )
    def kernel(g, y, out):
        scratch = cuda.shared.array(scratch_size, g.dtype)
        rows, n = g.shape
        tid = cuda.threadIdx.x
        for r in range(cuda.blockIdx.x, rows, cuda.gridDim.x):
            s = g.dtype.type(0)
            for j in range(tid, n, threads):
                s += g[r, j] if log else g[r, j] * y[r, j]
            s = _block_reduce(s, scratch, False)
            for j in range(tid, n, threads):
                if log:
                    out[r, j] = g[r, j] - math.exp(y[r, j]) * s
                else:
                    out[r, j] = y[r, j] * (g[r, j] - s)

    return kernel


_SOFTMAX = {t: _forward_kernel(t, False) for t in ROW_THREADS}
_LOG_SOFTMAX = {t: _forward_kernel(t, True) for t in ROW_THREADS}
_SOFTMAX_BACKWARD = {t: _backward_kernel(t, False) for t in ROW_THREADS}
_LOG_SOFTMAX_BACKWARD = {t: _backward_kernel(t, True) for t in ROW_THREADS}


# --- launchers ------------------------------------------------------------------------


def row_threads(n):
    """Threads per row for rows of length ``n``: about 4+ elements per thread."""
    for threads in ROW_THREADS:
        if n <= 4 * threads:
            return threads
    return ROW_THREADS[-1]


def _launch_rows(kernels, first, *arrays):
    rows, n = first.shape
    if rows and n:
        threads = row_threads(n)
        kernels[threads][min(rows, MAX_ROW_BLOCKS), threads](first, *arrays)


def softmax_cuda(x, out):
    """softmax_cuda(x, out): x, out (rows, n) float32/float64 device arrays."""
    _launch_rows(_SOFTMAX, x, out)


def log_softmax_cuda(x, out):
    """log_softmax_cuda(x, out): x, out (rows, n) float32/float64 device arrays."""
    _launch_rows(_LOG_SOFTMAX, x, out)


def softmax_backward_cuda(grad_out, y, out):
    """softmax_backward_cuda(grad_out, y, out): (rows, n) device arrays."""
    _launch_rows(_SOFTMAX_BACKWARD, grad_out, y, out)


def log_softmax_backward_cuda(grad_out, y, out):
    """log_softmax_backward_cuda(grad_out, y, out): (rows, n) device arrays."""
    _launch_rows(_LOG_SOFTMAX_BACKWARD, grad_out, y, out)


# --- table ----------------------------------------------------------------------------

KERNELS = {
    "softmax": OpKernels(softmax_ref, softmax_cpu, softmax_cuda),
    "log_softmax": OpKernels(log_softmax_ref, log_softmax_cpu, log_softmax_cuda),
    "softmax_backward": OpKernels(
        softmax_backward_ref, softmax_backward_cpu, softmax_backward_cuda
    ),
    "log_softmax_backward": OpKernels(
        log_softmax_backward_ref, log_softmax_backward_cpu, log_softmax_backward_cuda
    ),
}
