"""Dense layers: y = act(x @ W + b) and its gradients, on the CPU and CUDA.

Shapes: x (batch, in_features), W (in_features, out_features), b
(out_features,), y (batch, out_features); all C-contiguous float32 or float64.
``activation`` is one of ``EPILOGUES``: None (identity), "relu",
"leaky_relu" (alpha), "sigmoid" or "tanh".

On the CPU the matrix products go through BLAS (numpy's matmul); the bias and
the activation are one fused pass over y (the epilogue). On CUDA a tiled
matrix product (double-buffered shared-memory tiles, 4x4 outputs per thread,
or 8x8 for large float32 outputs, see ``gemm_tile``) applies them as it writes
y (the large tile the bias only, an elementwise pass then the activation). On
both, the backward's first pass over grad_out applies the activation's
derivative and sums the bias gradient at once. The derivative
is taken from the output y (for relu and leaky_relu with alpha > 0, y > 0
exactly where x > 0), so the layer keeps only its output.

Sections: numpy references, CPU kernels, CUDA kernels, launchers.
"""

from __future__ import annotations

import dataclasses

import numba
import numpy as np

from . import _cuda, blas
from . import activations as act
from ._cache import cached
from ._cpu import CPU_OPTIONS
from ._cuda import cuda, float_signatures
from ._table import OpKernels

# --- references (the executable spec) -------------------------------------------------

_REFERENCES = {
    None: lambda z, alpha: z,
    "relu": lambda z, alpha: act.relu_ref(z),
    "leaky_relu": lambda z, alpha: act.leaky_relu_ref(z, alpha),
    "sigmoid": lambda z, alpha: act.sigmoid_ref(z),
    "tanh": lambda z, alpha: act.tanh_ref(z),
}


def dense_ref(x, W, b, activation=None, alpha=0.01):
    """act(x @ W + b), computed in float64 and returned in x's dtype."""
    z = x.astype(np.float64) @ W.astype(np.float64) + b.astype(np.float64)
    return _REFERENCES[activation](z, alpha).astype(x.dtype)


def dense_backward_ref(grad_out, x, W, y, activation=None, alpha=0.01):
    """(dx, dW, db) for y = dense(x, W, b, activation), in float64, returned in x's dtype."""
    g, y64 = grad_out.astype(np.float64), y.astype(np.float64)
    if activation is None:
        dz = g
    elif activation == "relu":
        dz = np.where(y64 > 0, g, 0.0)
    elif activation == "leaky_relu":
        dz = np.where(y64 > 0, g, alpha * g)
    elif activation == "sigmoid":
        dz = g * y64 * (1 - y64)
    else:
        dz = g * (1 - y64 * y64)
    dx = dz @ W.astype(np.float64).T
    dW = x.astype(np.float64).T @ dz
    return dx.astype(x.dtype), dW.astype(x.dtype), dz.sum(axis=0).astype(x.dtype)


# --- CPU kernels ----------------------------------------------------------------------


@numba.njit(inline="always")
def _identity(z, c):
    return z


@numba.njit(inline="always")
def _identity_backward(g, y, c):
    return g


#: activation -> (forward scalar f(z, c), backward scalar f(g, y, c)); c is alpha
#: for leaky_relu and 1 otherwise.
EPILOGUES = {
    None: (_identity, _identity_backward),
    "relu": (act.relu_scalar, act.relu_backward_scalar),
    "leaky_relu": (act.leaky_relu_scalar, act.leaky_relu_backward_scalar),
    "sigmoid": (act.sigmoid_scalar, act.sigmoid_backward_scalar),
    "tanh": (act.tanh_scalar, act.tanh_backward_scalar),
}


# Serial at every size: these passes sit between BLAS products (see _cpu.py).


def _epilogue_kernel(name, forward):
    @cached(name)
    @numba.njit(**CPU_OPTIONS)
    def epilogue(y, b, c):
        """y[i, j] = forward(y[i, j] + b[j], c), in place."""
        for i in range(y.shape[0]):
            for j in range(y.shape[1]):
                y[i, j] = forward(y[i, j] + b[j], c)

    return epilogue


def _grad_kernel(name, backward):
    @cached(name)
    @numba.njit(**CPU_OPTIONS)
    def grad(g, y, c, dz, db, accumulate):
        """dz = backward(g, y, c) and db = (db +) column sums of dz, row by
        row (db stays in cache): the row of dz, then its sum into db, in two
        loops, which vectorise better than one that writes both."""
        if not accumulate:
            for j in range(g.shape[1]):
                db[j] = 0
        for i in range(g.shape[0]):
            for j in range(g.shape[1]):
                dz[i, j] = backward(g[i, j], y[i, j], c)
            for j in range(g.shape[1]):
                db[j] += dz[i, j]

    return grad


_EPILOGUE = {name: _epilogue_kernel(name, forward) for name, (forward, _) in EPILOGUES.items()}
_GRAD = {name: _grad_kernel(name, backward) for name, (_, backward) in EPILOGUES.items()}


# --- CUDA kernels ---------------------------------------------------------------------

#: Threads per block side (16 x 16 = 256 threads). Each thread owns an
#: (OUT x OUT) block of outputs: OUT // 4 runs of 4 adjacent rows by as many
#: runs of 4 adjacent columns, the runs 4 * THREADS apart, so that it reads
#: each k's operands from shared memory as 4-wide vectors (LDS.128) and a
#: warp's loads hit distinct banks.
THREADS = 16


@dataclasses.dataclass(frozen=True)
class GemmTile:
    """A block's output tile (size x size) and k step (depth): the block stages
    a (size x depth) slice of each operand in shared memory, twice (while one
    is read the next is written: one barrier per step). Every thread stages 4
    values of each operand per step, so size * depth is 4 * THREADS**2."""

    size: int
    depth: int

    def __post_init__(self):
        if self.size * self.depth != 4 * THREADS**2 or self.size % (4 * THREADS):
            raise ValueError(f"a {self.size} x {self.depth} tile does not fit {THREADS**2} threads")

    @property
    def out(self) -> int:
        """Outputs per thread along each side."""
        return self.size // THREADS


#: Small products (batch-sized layers) need many blocks to fill a GPU: 64 x 64
#: tiles, 4 x 4 outputs per thread. Large ones the most arithmetic per value
#: read: 128 x 128 tiles, 8 x 8 outputs per thread (float32 only; 64 float64
#: accumulators would not fit in registers).
SMALL_TILE, LARGE_TILE = GemmTile(64, 16), GemmTile(128, 8)
#: A float32 product takes the large tile when that still makes this many
#: blocks: an H100's 132 SMs hold two of its 256-thread blocks each.
LARGE_TILE_MIN_BLOCKS = 264


def _gemm_kernel(name, trans_a, trans_b, epilogue, accumulate=False, tile=SMALL_TILE):
    """out (M, N) = epilogue(op(a) @ op(b) + bias, c), op transposing when asked.

    With ``epilogue`` None, the bias and ``c`` are ignored: a plain product,
    added to ``out`` when ``accumulate``. Each output sums its k terms in
    order with one fused multiply-add each, whatever the tile.
    """
    has_epilogue = epilogue is not None
    epilogue = epilogue or _identity
    size, depth, out_per = tile.size, tile.depth, tile.out
    # Shared tiles are (stage, k, run group, thread, place in the run): a
    # thread's 4-runs are whole rows of the last axis. Indexing them with a
    # constant group and place keeps the address math to one base per k
    # (Numba normalises each index on its own) and lets ptxas merge the 4
    # loads of a run into one LDS.128.
    shape = (2, depth, size // (4 * THREADS), THREADS, 4)
    # Staging: when k runs along the source's rows (op(a) of a transposed a,
    # op(b) of a plain b), a thread copies 4 adjacent values of one source row;
    # otherwise 4 adjacent values along k of one tile line.
    across, along = _staging(size), _staging(depth)
    a_k_rows, b_k_rows = trans_a, not trans_b
    signatures = float_signatures("void({t}[:, ::1], {t}[:, ::1], {t}[::1], {t}, {t}[:, ::1])")
    if tile != SMALL_TILE:
        signatures = signatures[:1]

    @_cuda.kernel(f"dense.{name}" + ("" if tile == SMALL_TILE else "_large"), signatures)
    def gemm(a, b, bias, c, out):
        m, n = out.shape
        k_total = a.shape[0] if trans_a else a.shape[1]
        tile_a = cuda.shared.array(shape, a.dtype)
        tile_b = cuda.shared.array(shape, a.dtype)
        staged_a = cuda.local.array(4, a.dtype)
        staged_b = cuda.local.array(4, a.dtype)
        col_a = cuda.local.array(out_per, a.dtype)
        row_b = cuda.local.array(out_per, a.dtype)
        acc = cuda.local.array((out_per, out_per), a.dtype)
        zero = a.dtype.type(0)
        for p in range(out_per):
            for q in range(out_per):
                acc[p, q] = zero
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        tid = ty * THREADS + tx
        row0, col0 = cuda.blockIdx.y * size, cuda.blockIdx.x * size
        a_line, a_k = _staging_slot(tid, a_k_rows, across, along)
        b_line, b_k = _staging_slot(tid, b_k_rows, across, along)

        _fetch(a, a_k_rows, row0 + a_line, a_k, m, k_total, staged_a, zero)
        _fetch(b, b_k_rows, col0 + b_line, b_k, n, k_total, staged_b, zero)
        _stage(staged_a, a_k_rows, tile_a, 0, a_k, a_line)
        _stage(staged_b, b_k_rows, tile_b, 0, b_k, b_line)
        cuda.syncthreads()
        now = 0
        for k0 in range(0, k_total, depth):
            later = k0 + depth < k_total
            if later:  # the next step's loads are in flight during this one's arithmetic
                _fetch(a, a_k_rows, row0 + a_line, k0 + depth + a_k, m, k_total, staged_a, zero)
                _fetch(b, b_k_rows, col0 + b_line, k0 + depth + b_k, n, k_total, staged_b, zero)
            for k in range(0, depth, 8):
                _rank_eight(tile_a, tile_b, now, k, ty, tx, out_per, col_a, row_b, acc)
            if later:
                _stage(staged_a, a_k_rows, tile_a, 1 - now, a_k, a_line)
                _stage(staged_b, b_k_rows, tile_b, 1 - now, b_k, b_line)
            cuda.syncthreads()
            now = 1 - now
        for p in range(out_per):
            i = row0 + _owned(p, ty)
            for q in range(out_per):
                j = col0 + _owned(q, tx)
                if i < m and j < n:
                    if has_epilogue:
                        out[i, j] = epilogue(acc[p, q] + bias[j], c)
                    elif accumulate:
                        out[i, j] += acc[p, q]
                    else:
                        out[i, j] = acc[p, q]

    return gemm


def _staging(extent):
    """(shift, mask) splitting a thread index over runs of 4 along ``extent``."""
    runs = extent // 4
    return runs.bit_length() - 1, runs - 1


@_cuda.device_function
def _staging_slot(tid, k_rows, across, along):
    """(line, k) of the first of the 4 values thread ``tid`` stages per step:
    its run lies along the line (the source row) when ``k_rows``, along k otherwise."""
    if k_rows:
        return (tid & across[1]) << 2, tid >> across[0]
    return tid >> along[0], (tid & along[1]) << 2


@_cuda.device_function
def _fetch(src, k_rows, line, k, lines, k_total, staged, zero):
    """staged[r] = the r-th value of the run at (line, k) of op(src), zero
    past its edges; op(src) is src.T when ``k_rows``."""
    for r in range(4):
        if k_rows:
            i, kk = line + r, k
        else:
            i, kk = line, k + r
        if (i < lines) & (kk < k_total):
            # Unsigned indices: no negative-index wraparound to compute.
            staged[r] = (
                src[numba.uint64(kk), numba.uint64(i)]
                if k_rows
                else src[numba.uint64(i), numba.uint64(kk)]
            )
        else:
            staged[r] = zero


@_cuda.device_function
def _stage(staged, k_rows, tile, now, k, line):
    """Write a thread's fetched run, starting at (k, line), into shared stage ``now``."""
    group, thread, place = line >> 6, (line >> 2) & (THREADS - 1), line & 3
    for r in range(4):
        if k_rows:
            tile[now, k, group, thread, place + r] = staged[r]
        else:
            tile[now, k + r, group, thread, place] = staged[r]


@_cuda.device_function
def _rank_one(tile_a, tile_b, now, k, ty, tx, out_per, col_a, row_b, acc):
    """acc += (this thread's rows of op(a))[:, k] outer (its columns of op(b))[k, :],
    read from shared stage ``now``."""
    k = numba.uint64(k)  # no negative-index wraparound to compute
    for p in range(out_per):
        col_a[p] = tile_a[now, k, p >> 2, ty, p & 3]
        row_b[p] = tile_b[now, k, p >> 2, tx, p & 3]
    for p in range(out_per):
        for q in range(out_per):
            acc[p, q] += col_a[p] * row_b[q]


@_cuda.device_function
def _rank_eight(tile_a, tile_b, now, k, ty, tx, out_per, col_a, row_b, acc):
    """_rank_one for k to k + 7, written out: NVVM leaves a loop over them
    rolled, and the unrolled k offsets fold into the shared loads' addresses."""
    _rank_one(tile_a, tile_b, now, k, ty, tx, out_per, col_a, row_b, acc)
    _rank_one(tile_a, tile_b, now, k + 1, ty, tx, out_per, col_a, row_b, acc)
    _rank_one(tile_a, tile_b, now, k + 2, ty, tx, out_per, col_a, row_b, acc)
    _rank_one(tile_a, tile_b, now, k + 3, ty, tx, out_per, col_a, row_b, acc)
    _rank_one(tile_a, tile_b, now, k + 4, ty, tx, out_per, col_a, row_b, acc)
    _rank_one(tile_a, tile_b, now, k + 5, ty, tx, out_per, col_a, row_b, acc)
    _rank_one(tile_a, tile_b, now, k + 6, ty, tx, out_per, col_a, row_b, acc)
    _rank_one(tile_a, tile_b, now, k + 7, ty, tx, out_per, col_a, row_b, acc)


@_cuda.device_function
def _owned(p, t):
    """Tile line of the p-th output along a side of the thread with index t there."""
    return (p >> 2) * (4 * THREADS) + (t << 2) + (p & 3)


def _grad_cuda_kernel(name, backward):
    @_cuda.kernel(
        f"dense.{name}_grad",
        float_signatures("void({t}[:, ::1], {t}[:, ::1], {t}, {t}[:, ::1], {t}[::1], boolean)"),
    )
    def grad(g, y, c, dz, db, accumulate):
        """One thread per column: dz = backward(g, y, c) down the column, and
        its sum into db, or added to it (a warp's reads of a row are contiguous)."""
        for j in range(cuda.grid(1), g.shape[1], cuda.gridsize(1)):
            total = g.dtype.type(0)
            for i in range(g.shape[0]):
                d = backward(g[i, j], y[i, j], c)
                dz[i, j] = d
                total += d
            db[j] = db[j] + total if accumulate else total

    return grad


def _weight_grad_cuda_kernel(name, backward):
    """dW (=|+=) x.T @ dz with dz = backward(g, y, c) computed as the product
    stages it, and, in the blocks of dW's first row of tiles (which between
    them stage every element of dz once), dz written out and db (=|+=) its
    column sums: the gradient pass and the weight product in one launch.
    The small tile's product, with ``_gemm_kernel``'s arithmetic and order."""
    tile = SMALL_TILE
    size, depth, out_per = tile.size, tile.depth, tile.out
    shape = (2, depth, size // (4 * THREADS), THREADS, 4)
    across, along = _staging(size), _staging(depth)
    # Threads that stage the same 4 columns of dz (at different k): their
    # column sums are added in shared memory, in order of k.
    sharing = THREADS * THREADS * 4 // size

    @_cuda.device_function
    def fetch_grad(g, y, c, line, k, lines, k_total, staged, zero):
        """staged[r] = dz[k, line + r] = backward(g, y, c) there, zero past the edges."""
        for r in range(4):
            i = line + r
            if (i < lines) & (k < k_total):
                kk, ii = numba.uint64(k), numba.uint64(i)
                staged[r] = backward(g[kk, ii], y[kk, ii], c)
            else:
                staged[r] = zero

    @_cuda.kernel(
        f"dense.weight_grad_{name}",
        float_signatures(
            "void({t}[:, ::1], {t}[:, ::1], {t}[:, ::1], {t}, {t}[:, ::1], {t}[::1], boolean, "
            "{t}[:, ::1])"
        ),
    )
    def weight_grad(x, g, y, c, dz, db, accumulate, dW):
        m, n = dW.shape
        k_total = x.shape[0]
        tile_a = cuda.shared.array(shape, x.dtype)
        tile_b = cuda.shared.array(shape, x.dtype)
        sums = cuda.shared.array((sharing, size), x.dtype)
        staged_a = cuda.local.array(4, x.dtype)
        staged_b = cuda.local.array(4, x.dtype)
        column_sums = cuda.local.array(4, x.dtype)
        col_a = cuda.local.array(out_per, x.dtype)
        row_b = cuda.local.array(out_per, x.dtype)
        acc = cuda.local.array((out_per, out_per), x.dtype)
        zero = x.dtype.type(0)
        for p in range(out_per):
            for q in range(out_per):
                acc[p, q] = zero
        for r in range(4):
            column_sums[r] = zero
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        tid = ty * THREADS + tx
        row0, col0 = cuda.blockIdx.y * size, cuda.blockIdx.x * size
        writes = cuda.blockIdx.y == 0  # this block writes dz and sums db
        a_line, a_k = _staging_slot(tid, True, across, along)
        b_line, b_k = _staging_slot(tid, True, across, along)

        _fetch(x, True, row0 + a_line, a_k, m, k_total, staged_a, zero)
        fetch_grad(g, y, c, col0 + b_line, b_k, n, k_total, staged_b, zero)
        _stage(staged_a, True, tile_a, 0, a_k, a_line)
        _stage(staged_b, True, tile_b, 0, b_k, b_line)
        if writes:
            _write_dz(staged_b, dz, b_k, col0 + b_line, n, k_total, column_sums)
        cuda.syncthreads()
        now = 0
        for k0 in range(0, k_total, depth):
            later = k0 + depth < k_total
            if later:
                _fetch(x, True, row0 + a_line, k0 + depth + a_k, m, k_total, staged_a, zero)
                fetch_grad(g, y, c, col0 + b_line, k0 + depth + b_k, n, k_total, staged_b, zero)
            for k in range(0, depth, 8):
                _rank_eight(tile_a, tile_b, now, k, ty, tx, out_per, col_a, row_b, acc)
            if later:
                _stage(staged_a, True, tile_a, 1 - now, a_k, a_line)
                _stage(staged_b, True, tile_b, 1 - now, b_k, b_line)
                if writes:
                    _write_dz(staged_b, dz, k0 + depth + b_k, col0 + b_line, n, k_total,
                              column_sums)  # fmt: skip
            cuda.syncthreads()
            now = 1 - now
        for p in range(out_per):
            i = row0 + _owned(p, ty)
            for q in range(out_per):
                j = col0 + _owned(q, tx)
                if i < m and j < n:
                    if accumulate:
                        dW[i, j] += acc[p, q]
                    else:
                        dW[i, j] = acc[p, q]
        if writes:
            for r in range(4):
                sums[b_k, b_line + r] = column_sums[r]
            cuda.syncthreads()
            j = col0 + tid
            if tid < size and j < n:
                total = sums[0, tid]
                for s in range(1, sharing):
                    total += sums[s, tid]
                db[j] = db[j] + total if accumulate else total

    return weight_grad


@_cuda.device_function
def _write_dz(staged, dz, k, line, lines, k_total, column_sums):
    """Store a thread's staged run of dz (row k, columns line..line + 3) and
    add it to the thread's column sums."""
    for r in range(4):
        i = line + r
        if (i < lines) & (k < k_total):
            dz[numba.uint64(k), numba.uint64(i)] = staged[r]
            column_sums[r] += staged[r]


def _epilogue_cuda_kernel(name, forward):
    @_cuda.kernel(
        f"dense.epilogue_{name}",
        float_signatures("void({t}[:, ::1], {t}[::1], {t})"),
    )
    def epilogue(y, b, c):
        """y[i, j] = forward(y[i, j] + b[j], c) in place, one thread per element
        (for products computed elsewhere, e.g. by cuBLAS)."""
        n = y.shape[1]
        for e in range(cuda.grid(1), y.size, cuda.gridsize(1)):
            i, j = e // n, e % n
            y[i, j] = forward(y[i, j] + b[j], c)

    return epilogue


_CUDA_EPILOGUES = dict(
    EPILOGUES,
    sigmoid=(act.sigmoid_scalar_cuda, act.sigmoid_backward_scalar),
    tanh=(act.tanh_scalar_cuda, act.tanh_backward_scalar),
)


def _gemm_kernels(name, trans_a, trans_b, epilogue=None, accumulate=False, tiles=None):
    """{tile: kernel} of one product, for each of ``tiles`` (default both)."""
    return {
        tile: _gemm_kernel(name, trans_a, trans_b, epilogue, accumulate, tile)
        for tile in tiles or (SMALL_TILE, LARGE_TILE)
    }


#: The large tile fuses the bias only: with an activation, its 64 outputs per
#: thread are applied by a second, elementwise pass (costly activations, such
#: as sigmoid's IEEE division, would keep the output loop rolled and the
#: accumulators in local memory; the pass costs little beside a product that
#: large).
_FORWARD_CUDA = {
    name: _gemm_kernels(
        f"forward_{name or 'linear'}",
        False,
        False,
        forward,
        tiles=None if name is None else (SMALL_TILE,),
    )
    for name, (forward, _) in _CUDA_EPILOGUES.items()
}
_ACTIVATIONS_CUDA = {
    "relu": act.relu,
    "leaky_relu": act.leaky_relu,
    "sigmoid": act.sigmoid,
    "tanh": act.tanh,
}
_GRAD_CUDA = {
    name: _grad_cuda_kernel(name or "linear", backward)
    for name, (_, backward) in _CUDA_EPILOGUES.items()
}
_WEIGHT_GRAD_FUSED_CUDA = {
    name: _weight_grad_cuda_kernel(name or "linear", backward)
    for name, (_, backward) in _CUDA_EPILOGUES.items()
}
_EPILOGUE_CUDA = {
    name: _epilogue_cuda_kernel(name or "linear", forward)
    for name, (forward, _) in _CUDA_EPILOGUES.items()
}
_WEIGHT_GRAD_CUDA = _gemm_kernels("matmul_tn", True, False)  # x.T @ dz
_WEIGHT_GRAD_ADD_CUDA = _gemm_kernels("matmul_tn_add", True, False, accumulate=True)
_INPUT_GRAD_CUDA = _gemm_kernels("matmul_nt", False, True)  # dz @ W.T


# --- launchers ------------------------------------------------------------------------


def _constant(dtype, activation, alpha):
    return dtype.type(alpha if activation == "leaky_relu" else 1)


def _check_shapes(op, x, W, others):
    """ValueError unless x is (m, k), W (k, n) and each of ``others`` ((name,
    array or None, role) triples) has its role's shape: "out" (m, n), "in"
    (m, k), "W" (k, n), "bias" (n,). The kernels index them all by these
    extents."""
    if x.ndim != 2 or W.ndim != 2 or x.shape[1] != W.shape[0]:
        raise ValueError(f"{op}: expected x (m, k) and W (k, n), got {x.shape} and {W.shape}")
    (m, k), n = x.shape, W.shape[1]
    shapes = {"out": (m, n), "in": (m, k), "W": (k, n), "bias": (n,)}
    for name, a, role in others:
        if a is not None and tuple(a.shape) != shapes[role]:
            raise ValueError(f"{op}: expected {name} of shape {shapes[role]}, got {a.shape}")


def dense_cpu(x, W, b, out, activation=None, alpha=0.01):
    """out (batch, out_features) = act(x @ W + b): a BLAS product into ``out``,
    then the bias and activation in one fused pass. Returns ``out``."""
    _check_forward(x, W, b, out)
    np.matmul(x, W, out=out)
    _EPILOGUE[activation](out, b, _constant(out.dtype, activation, alpha))
    return out


def dense_backward_cpu(
    grad_out, x, W, y, dx, dW, db, dz, activation=None, alpha=0.01, accumulate=False
):
    """Gradients of y = dense_cpu(x, W, b, activation) for ``grad_out`` = d loss / d y.

    Fills dx (batch, in_features), dW (in_features, out_features) and db
    (out_features,), or with ``accumulate`` adds to dW and db (parameter
    gradients summed over several backward passes). ``dx`` may be None (the
    first layer needs no input gradient), which skips its product. ``dz`` (batch,
    out_features) is scratch for d loss / d (x @ W + b) and may be ``grad_out``
    itself (overwritten). Accumulating, dW += x.T @ dz is one BLAS product
    with beta 1 (no temporary).
    """
    _check_backward(grad_out, x, W, y, dx, dW, db, dz)
    c = _constant(y.dtype, activation, alpha)
    _GRAD[activation](grad_out, y, c, dz, db, accumulate)
    if accumulate:
        one = dW.dtype.type(1)
        blas.gemm(True, False, one, x, dz, one, dW)
    else:
        np.matmul(x.T, dz, out=dW)
    if dx is not None:
        np.matmul(dz, W.T, out=dx)


def _check_forward(x, W, b, out):
    """dense's shapes, tested with plain comparisons (this runs on every
    call), and named by _check_shapes when one is wrong."""
    if not (
        x.ndim == 2
        and W.ndim == 2
        and x.shape[1] == W.shape[0]
        and out.shape == (x.shape[0], W.shape[1])
        and b.shape == W.shape[1:]
    ):
        _check_shapes("dense", x, W, [("out", out, "out"), ("b", b, "bias")])


def backward_shapes_hold(grad_out, x, W, y, dx, dW, db, dz) -> bool:
    """Whether dense_backward's arrays have the shapes its kernels index them
    by (dx may be None), in plain comparisons: this runs on every call."""
    return (
        x.ndim == 2
        and W.ndim == 2
        and x.shape[1] == W.shape[0]
        and grad_out.shape == y.shape == dz.shape == (x.shape[0], W.shape[1])
        and dW.shape == W.shape
        and db.shape == W.shape[1:]
        and (dx is None or dx.shape == x.shape)
    )


def _check_backward(grad_out, x, W, y, dx, dW, db, dz):
    """dense_backward's shapes, named by _check_shapes when one is wrong."""
    if backward_shapes_hold(grad_out, x, W, y, dx, dW, db, dz):
        return
    _check_shapes(
        "dense_backward", x, W,
        [("grad_out", grad_out, "out"), ("y", y, "out"), ("dz", dz, "out"), ("dx", dx, "in"),
         ("dW", dW, "W"), ("db", db, "bias")],
    )  # fmt: skip


def gemm_tile(dtype, m: int, n: int) -> GemmTile:
    """The tile a CUDA product with an (m, n) output of ``dtype`` runs with."""
    blocks = -(-m // LARGE_TILE.size) * -(-n // LARGE_TILE.size)
    large = dtype == np.float32 and blocks >= LARGE_TILE_MIN_BLOCKS
    return LARGE_TILE if large else SMALL_TILE


def _launch_gemm(kernels, a, b, bias, c, out):
    m, n = out.shape
    if m and n:
        tile = gemm_tile(out.dtype, m, n)
        grid = (-(-n // tile.size), -(-m // tile.size))
        kernels[tile][grid, (THREADS, THREADS)](a, b, bias, c, out)


def dense_cuda(x, W, b, out, activation=None, alpha=0.01, *, matmul=None):
    """dense_cpu on device arrays: one tiled product with the bias and
    activation applied as each output is written. Returns ``out``.

    ``matmul(a, b, out, trans_a, trans_b, accumulate)``, when given, computes
    the product instead (cuBLAS, say); the bias and activation then follow in
    one elementwise pass."""
    _check_forward(x, W, b, out)
    c = _constant(out.dtype, activation, alpha)
    if matmul is None:
        forward = _FORWARD_CUDA[activation]
        if gemm_tile(out.dtype, *out.shape) in forward:
            _launch_gemm(forward, x, W, b, c, out)
        else:
            _launch_gemm(_FORWARD_CUDA[None], x, W, b, c, out)
            flat = out.reshape(out.size)
            _ACTIVATIONS_CUDA[activation].forward_cuda(flat, flat, c)
    elif out.size:
        matmul(x, W, out, False, False, False)
        blocks, threads = _cuda.grid_1d(out.size)
        _EPILOGUE_CUDA[activation][blocks, threads](out, b, c)
    return out


def dense_backward_cuda(
    grad_out, x, W, y, dx, dW, db, dz, activation=None, alpha=0.01, accumulate=False, *, matmul=None
):
    """dense_backward_cpu on device arrays (same arguments); ``matmul`` as in dense_cuda."""
    _check_backward(grad_out, x, W, y, dx, dW, db, dz)
    c = _constant(y.dtype, activation, alpha)
    k, n = dW.shape
    if (
        matmul is None
        and dW.size
        and gemm_tile(dW.dtype, k, n) == SMALL_TILE
        # dz written over grad_out while blocks of dW's other rows of tiles
        # still read grad_out would race: those take the separate pass.
        and (k <= SMALL_TILE.size or _cuda.address(dz) != _cuda.address(grad_out))
    ):
        # One launch for dz, db and dW (see _weight_grad_cuda_kernel), one for dx.
        grid = (-(-n // SMALL_TILE.size), -(-k // SMALL_TILE.size))
        _WEIGHT_GRAD_FUSED_CUDA[activation][grid, (THREADS, THREADS)](
            x, grad_out, y, c, dz, db, bool(accumulate), dW
        )
        if dx is not None:
            _launch_gemm(_INPUT_GRAD_CUDA, dz, W, db, c, dx)
        return
    if grad_out.shape[1]:
        blocks, threads = _cuda.grid_1d(grad_out.shape[1])
        _GRAD_CUDA[activation][blocks, threads](grad_out, y, c, dz, db, accumulate)
    if matmul is not None:
        if dW.size:
            matmul(x, dz, dW, True, False, accumulate)
        if dx is not None and dx.size:
            matmul(dz, W, dx, False, True, False)
        return
    weight_grad = _WEIGHT_GRAD_ADD_CUDA if accumulate else _WEIGHT_GRAD_CUDA
    _launch_gemm(weight_grad, x, dz, db, c, dW)
    if dx is not None:
        _launch_gemm(_INPUT_GRAD_CUDA, dz, W, db, c, dx)


# --- table ----------------------------------------------------------------------------

KERNELS = {
    "dense": OpKernels(dense_ref, dense_cpu, dense_cuda),
    "dense_backward": OpKernels(dense_backward_ref, dense_backward_cpu, dense_backward_cuda),
}
