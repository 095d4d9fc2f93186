"""Dense layers: y = act(x @ W + b) and its gradients, on the CPU and CUDA.

Shapes: x (batch, in_features), W (in_features, out_features), b
(out_features,), y (batch, out_features); all C-contiguous float32 or float64.
``activation`` is one of ``EPILOGUES``: None (identity), "relu",
"leaky_relu" (alpha), "sigmoid" or "tanh".

On the CPU the matrix products go through BLAS (numpy's matmul); the bias and
the activation are one fused pass over y (the epilogue). On CUDA a tiled
matrix product (shared-memory tiles, 4x4 outputs per thread) applies them as it
writes y. On both, the backward's first pass over grad_out applies the
activation's derivative and sums the bias gradient at once. The derivative
is taken from the output y (for relu and leaky_relu with alpha > 0, y > 0
exactly where x > 0), so the layer keeps only its output.

Sections: numpy references, CPU kernels, CUDA kernels, launchers.
"""

from __future__ import annotations

import numba
import numpy as np

from . import _cuda
from . import activations as act
from ._cpu import CPU_OPTIONS
from ._cuda import cuda, float_signatures

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


def _epilogue_kernel(forward):
    @numba.njit(**CPU_OPTIONS)
    def epilogue(y, b, c):
        """y[i, j] = forward(y[i, j] + b[j], c), in place."""
        for i in range(y.shape[0]):
            for j in range(y.shape[1]):
                y[i, j] = forward(y[i, j] + b[j], c)

    return epilogue


def _grad_kernel(backward):
    @numba.njit(**CPU_OPTIONS)
    def grad(g, y, c, dz, db, accumulate):
        """dz = backward(g, y, c) and db = (db +) column sums of dz, in one
        row-major pass (db stays in cache; the inner loop vectorises)."""
        if not accumulate:
            for j in range(g.shape[1]):
                db[j] = 0
        for i in range(g.shape[0]):
            for j in range(g.shape[1]):
                d = backward(g[i, j], y[i, j], c)
                dz[i, j] = d
                db[j] += d

    return grad


_EPILOGUE = {name: _epilogue_kernel(forward) for name, (forward, _) in EPILOGUES.items()}
_GRAD = {name: _grad_kernel(backward) for name, (_, backward) in EPILOGUES.items()}


# --- CUDA kernels ---------------------------------------------------------------------

#: Output tile per block (TILE x TILE), the depth of one shared-memory step, and
#: threads per block side: each thread owns PER x PER outputs, strided by
#: THREADS so that a warp's stores to a row are contiguous. Shared memory per
#: block: 2 * TILE * TILE_K values (8 KiB in float32).
TILE, TILE_K, THREADS = 64, 16, 16
PER = TILE // THREADS


def _gemm_kernel(name, trans_a, trans_b, epilogue, accumulate=False):
    """out (M, N) = epilogue(op(a) @ op(b) + bias, c), op transposing when asked.

    With ``epilogue`` None, the bias and ``c`` are ignored: a plain product,
    added to ``out`` when ``accumulate``.
    """
    has_epilogue = epilogue is not None
    epilogue = epilogue or _identity

    @_cuda.kernel(
        f"dense.{name}",
        float_signatures("void({t}[:, ::1], {t}[:, ::1], {t}[::1], {t}, {t}[:, ::1])"),
    )
    def gemm(a, b, bias, c, out):
        m, n = out.shape
        k_total = a.shape[0] if trans_a else a.shape[1]
        tile_a = cuda.shared.array((TILE, TILE_K), a.dtype)
        tile_b = cuda.shared.array((TILE_K, TILE), a.dtype)
        acc = cuda.local.array((PER, PER), a.dtype)
        zero = a.dtype.type(0)
        for p in range(PER):
            for q in range(PER):
                acc[p, q] = zero
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        tid = ty * THREADS + tx
        row0, col0 = cuda.blockIdx.y * TILE, cuda.blockIdx.x * TILE
        for k0 in range(0, k_total, TILE_K):
            for e in range(tid, TILE * TILE_K, THREADS * THREADS):
                i, k = e // TILE_K, e % TILE_K
                gi, gk = row0 + i, k0 + k
                if gi < m and gk < k_total:
                    tile_a[i, k] = a[gk, gi] if trans_a else a[gi, gk]
                else:
                    tile_a[i, k] = zero
            for e in range(tid, TILE_K * TILE, THREADS * THREADS):
                k, j = e // TILE, e % TILE
                gk, gj = k0 + k, col0 + j
                if gk < k_total and gj < n:
                    tile_b[k, j] = b[gj, gk] if trans_b else b[gk, gj]
                else:
                    tile_b[k, j] = zero
            cuda.syncthreads()
            for k in range(TILE_K):
                for p in range(PER):
                    av = tile_a[ty + p * THREADS, k]
                    for q in range(PER):
                        acc[p, q] += av * tile_b[k, tx + q * THREADS]
            cuda.syncthreads()
        for p in range(PER):
            i = row0 + ty + p * THREADS
            for q in range(PER):
                j = col0 + tx + q * THREADS
                if i < m and j < n:
                    if has_epilogue:
                        out[i, j] = epilogue(acc[p, q] + bias[j], c)
                    elif accumulate:
                        out[i, j] += acc[p, q]
                    else:
                        out[i, j] = acc[p, q]

    return gemm


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
_FORWARD_CUDA = {
    name: _gemm_kernel(f"forward_{name or 'linear'}", False, False, forward)
    for name, (forward, _) in _CUDA_EPILOGUES.items()
}
_GRAD_CUDA = {
    name: _grad_cuda_kernel(name or "linear", backward)
    for name, (_, backward) in _CUDA_EPILOGUES.items()
}
_EPILOGUE_CUDA = {
    name: _epilogue_cuda_kernel(name or "linear", forward)
    for name, (forward, _) in _CUDA_EPILOGUES.items()
}
_WEIGHT_GRAD_CUDA = _gemm_kernel("matmul_tn", True, False, None)  # x.T @ dz
_WEIGHT_GRAD_ADD_CUDA = _gemm_kernel("matmul_tn_add", True, False, None, accumulate=True)
_INPUT_GRAD_CUDA = _gemm_kernel("matmul_nt", False, True, None)  # dz @ W.T


# --- launchers ------------------------------------------------------------------------


def _constant(dtype, activation, alpha):
    return dtype.type(alpha if activation == "leaky_relu" else 1)


def dense_cpu(x, W, b, out, activation=None, alpha=0.01):
    """out (batch, out_features) = act(x @ W + b): a BLAS product into ``out``,
    then the bias and activation in one fused pass. Returns ``out``."""
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
    itself (overwritten).
    """
    c = _constant(y.dtype, activation, alpha)
    _GRAD[activation](grad_out, y, c, dz, db, accumulate)
    if accumulate:
        dW += x.T @ dz
    else:
        np.matmul(x.T, dz, out=dW)
    if dx is not None:
        np.matmul(dz, W.T, out=dx)


def _launch_gemm(kernel, a, b, bias, c, out):
    m, n = out.shape
    if m and n:
        grid = ((n + TILE - 1) // TILE, (m + TILE - 1) // TILE)
        kernel[grid, (THREADS, THREADS)](a, b, bias, c, out)


def dense_cuda(x, W, b, out, activation=None, alpha=0.01, *, matmul=None):
    """dense_cpu on device arrays: one tiled product with the bias and
    activation applied as each output is written. Returns ``out``.

    ``matmul(a, b, out, trans_a, trans_b, accumulate)``, when given, computes
    the product instead (cuBLAS, say); the bias and activation then follow in
    one elementwise pass."""
    c = _constant(out.dtype, activation, alpha)
    if matmul is None:
        _launch_gemm(_FORWARD_CUDA[activation], x, W, b, c, out)
    elif out.size:
        matmul(x, W, out, False, False, False)
        blocks, threads = _cuda.grid_1d(out.size)
        _EPILOGUE_CUDA[activation][blocks, threads](out, b, c)
    return out


def dense_backward_cuda(
    grad_out, x, W, y, dx, dW, db, dz, activation=None, alpha=0.01, accumulate=False, *, matmul=None
):
    """dense_backward_cpu on device arrays (same arguments); ``matmul`` as in dense_cuda."""
    c = _constant(y.dtype, activation, alpha)
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
