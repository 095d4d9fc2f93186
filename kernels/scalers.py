"""Per-column affine maps for the data scalers, on the CPU and CUDA:
``out[i, j] = (x[i, j] - shift[j]) * factor[j] + offset[j]``, clipped to
[lo, hi] when ``clip``.

StandardScaler's transform is (x - mean) * (1 / scale) + 0, its inverse
(x - 0) * scale + mean; MinMaxScaler's is (x - 0) * scale + min, its inverse
(x - min) * (1 / scale) + 0. x and out are (n, C), C-contiguous, of one float
dtype; shift, factor and offset (C,) of that dtype.

Sections: numpy reference, CPU kernels, CUDA kernels, launchers.
"""

from __future__ import annotations

import numba
import numpy as np

from . import _cuda
from ._cache import cached
from ._cpu import CPU_OPTIONS, PARALLEL_THRESHOLD
from ._cuda import cuda, float_signatures, grid_1d
from ._table import OpKernels

# --- reference (the executable spec) --------------------------------------------------


def column_affine_ref(x, shift, factor, offset, clip=False, lo=0.0, hi=1.0):
    """(x - shift) * factor + offset per column, clipped to [lo, hi] when ``clip``."""
    out = (x - shift) * factor + offset
    return np.clip(out, lo, hi).astype(x.dtype) if clip else out.astype(x.dtype)


# --- CPU kernels ----------------------------------------------------------------------


def _cpu_kernel(parallel):
    @cached(parallel)
    @numba.njit(parallel=parallel, **CPU_OPTIONS)
    def affine(x, shift, factor, offset, clip, lo, hi, out):
        for i in numba.prange(x.shape[0]):
            xi, oi = x[i], out[i]  # row views: the loop below vectorises
            for j in range(x.shape[1]):
                v = (xi[j] - shift[j]) * factor[j] + offset[j]
                if clip:
                    v = min(max(v, lo), hi)
                oi[j] = v

    return affine


_CPU = (_cpu_kernel(False), _cpu_kernel(True))


# --- CUDA kernels ---------------------------------------------------------------------


@_cuda.kernel(
    "scalers.column_affine",
    float_signatures(
        "void({t}[:, ::1], {t}[::1], {t}[::1], {t}[::1], boolean, {t}, {t}, {t}[:, ::1])"
    ),
)
def _affine_kernel(x, shift, factor, offset, clip, lo, hi, out):
    """Grid-stride over the n C elements."""
    n, c = x.shape
    for e in range(cuda.grid(1), n * c, cuda.gridsize(1)):
        i, j = e // c, e % c
        v = (x[i, j] - shift[j]) * factor[j] + offset[j]
        if clip:
            v = min(max(v, lo), hi)
        out[i, j] = v


# --- launchers ------------------------------------------------------------------------


def _check_columns(x, shift, factor, offset, out):
    """ValueError unless x and out are (n, C) and the columns' arrays (C,):
    the kernels index them all by x's shape."""
    if x.ndim != 2 or tuple(out.shape) != tuple(x.shape):
        raise ValueError(
            f"column_affine: expected x and out of one (n, C) shape, got {x.shape} and {out.shape}"
        )
    for name, a in (("shift", shift), ("factor", factor), ("offset", offset)):
        if tuple(a.shape) != x.shape[1:]:
            raise ValueError(
                f"column_affine: expected {name} of shape {x.shape[1:]} for x of shape "
                f"{x.shape}, got {a.shape}"
            )


def column_affine_cpu(x, shift, factor, offset, out, clip=False, lo=0.0, hi=1.0):
    """out = column_affine_ref(...) for numpy arrays; returns out."""
    _check_columns(x, shift, factor, offset, out)
    dtype = x.dtype.type
    _CPU[x.size >= PARALLEL_THRESHOLD](x, shift, factor, offset, clip, dtype(lo), dtype(hi), out)
    return out


def column_affine_cuda(x, shift, factor, offset, out, clip=False, lo=0.0, hi=1.0):
    """column_affine_cpu on device arrays."""
    _check_columns(x, shift, factor, offset, out)
    if x.size:
        dtype = x.dtype.type
        blocks, threads = grid_1d(x.size)
        _affine_kernel[blocks, threads](x, shift, factor, offset, clip, dtype(lo), dtype(hi), out)
    return out


# --- table ----------------------------------------------------------------------------

KERNELS = {"column_affine": OpKernels(column_affine_ref, column_affine_cpu, column_affine_cuda)}
