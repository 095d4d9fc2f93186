"""What the machine allows, measured at the start of a ``gpunet bench`` run.

A large float32 matrix product (GFLOP/s: numpy's BLAS on the CPU, cuBLAS
through CuPy on a GPU, or gpunet's tiled kernel without CuPy) and a large copy
(GB/s): the limits of compute-bound and memory-bound work. A memory-bound
row's fraction of the copy ceiling is timed alternately with that large copy,
as peers are (the CPU's dense layer, likewise, against its own three products
alone, :func:`dense_products`); the other rows divide by the ceiling measured
at the start.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from ..kernels import _cuda
from ..kernels import dense as _dense
from ..kernels._cpu import parallel_copy, streaming_copy
from .peers import cupy_module
from .timing import Settings, median_time

#: Bytes per row of the streaming copy (a quick run's buffer holds two).
_STREAMING_CHUNK = 1 << 14


def copies(device, nbytes: int) -> list[Callable]:
    """Plain copies of an ``nbytes`` buffer into another on ``device``: on the
    CPU numpy's (one core), a threaded one (the limit parallel kernels meet on
    many cores) and, when rows of ``_STREAMING_CHUNK`` divide the buffer, a
    threaded one with streaming stores (the limit of kernels that write so: a
    plain store first reads the line it writes); on a GPU Numba's device copy
    and CuPy's, whose speeds differ."""
    if device.type == "cpu":
        src = np.ones(nbytes, np.uint8)
        dst = np.empty_like(src)
        found = [
            functools.partial(np.copyto, dst, src),
            functools.partial(parallel_copy, src, dst),
        ]
        if nbytes % _STREAMING_CHUNK == 0:
            rows = (-1, _STREAMING_CHUNK // 4)
            found.append(
                functools.partial(
                    streaming_copy,
                    src.view(np.float32).reshape(rows),
                    dst.view(np.float32).reshape(rows),
                )
            )
        return found
    src = _cuda.cuda.to_device(np.ones(nbytes, np.uint8))
    dst = _cuda.cuda.device_array(nbytes, np.uint8)
    found = [functools.partial(dst.copy_to_device, src)]
    cupy = cupy_module()
    if cupy is not None:
        csrc, cdst = cupy.asarray(src), cupy.asarray(dst)
        found.append(functools.partial(cupy.copyto, cdst, csrc))
    return found


def fastest(fns: list[Callable], device, settings: Settings) -> tuple[Callable, float]:
    """(the fastest of ``fns``, its median seconds per call)."""
    timed = []
    for fn in fns:
        fn()
        timed.append((median_time(fn, device, settings), fn))
    seconds, fn = min(timed, key=lambda pair: pair[0])
    return fn, seconds


def large_copy(device, settings: Settings) -> tuple[Callable, int, float]:
    """(the fastest plain copy of a large buffer, the bytes it moves (read
    plus written), its GB/s)."""
    n = settings.size(1 << 28, 1 << 16)
    fn, seconds = fastest(copies(device, n // 2), device, settings)
    return fn, n, n / seconds / 1e9


def matmul_gflops(device, settings: Settings) -> tuple[float, str]:
    """(GFLOP/s, what ran) for a square float32 product: numpy's BLAS on the
    CPU; on a GPU cuBLAS (through CuPy), or gpunet's tiled kernel without it."""
    n = settings.size(2048 if device.type == "cpu" else 4096, 64)
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    flops = 2 * n**3
    if device.type == "cpu":
        out = np.empty((n, n), np.float32)
        fn = functools.partial(np.matmul, a, b, out=out)
        fn()
        return flops / median_time(fn, device, settings) / 1e9, "numpy matmul"
    from .. import gemm

    da, db = _cuda.cuda.to_device(a), _cuda.cuda.to_device(b)
    out = _cuda.cuda.device_array((n, n), np.float32)
    if gemm.cublas_available():
        fn, name = functools.partial(gemm.cublas_matmul, da, db, out, False, False, False), "cuBLAS"
    else:
        bias = _cuda.cuda.to_device(np.zeros(n, np.float32))
        fn, name = functools.partial(_dense.dense_cuda, da, db, bias, out), "gpunet tiled"
    fn()
    return flops / median_time(fn, device, settings) / 1e9, name


def dense_products(x, W, b, g, y, dx, dW):
    """The three matrix products of a dense layer's forward and backward,
    alone, in numpy's BLAS: y = x @ W, dx = g @ W.T, dW = x.T @ g (float32;
    x (batch, in), W (in, out), g and y (batch, out); b unused)."""
    np.matmul(x, W, out=y)
    np.matmul(g, W.T, out=dx)
    np.matmul(x.T, g, out=dW)


def lstm_products(T, B, I, H):  # noqa: E741
    """The matrix products of an LSTM's forward and backward (sequence T,
    batch B, input I, hidden H), alone, in numpy's BLAS: the input
    projection, T products with w_hh forward and T backward, and the weight
    and input gradients over all steps. Returns a function that runs them."""
    rng = np.random.default_rng(0)

    def r(*shape):
        return rng.random(shape, dtype=np.float32)

    x, w_ih, w_hh, h, dg = r(T * B, I), r(4 * H, I), r(4 * H, H), r(B, H), r(T * B, 4 * H)
    xw, gates, dh, hs = r(T * B, 4 * H), r(B, 4 * H), r(B, H), r(T * B, H)
    dw_ih, dw_hh, dx = r(4 * H, I), r(4 * H, H), r(T * B, I)

    def products():
        np.matmul(x, w_ih.T, out=xw)
        for _ in range(T):
            np.matmul(h, w_hh.T, out=gates)
        for _ in range(T):
            np.matmul(gates, w_hh, out=dh)
        np.matmul(dg.T, x, out=dw_ih)
        np.matmul(dg.T, hs, out=dw_hh)
        np.matmul(dg, w_ih, out=dx)

    return products
