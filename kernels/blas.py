"""Matrix products through numpy's own BLAS, callable from compiled code.

``gemm(trans_a, trans_b, alpha, a, b, beta, c)`` computes c = alpha * op(a) @
op(b) + beta * c in place, op transposing its operand when asked; a, b and c
are 2-D, C-contiguous, of one dtype (float32 or float64). Beta 0 ignores c's
values (NaN included), as BLAS does. It is a compiled function: CPU kernels
call it, and so does Python.

Where numpy ships its bundled OpenBLAS (the wheels on PyPI), ``gemm`` calls
that library's cblas ``?gemm`` through ctypes, which compiled code can call.
So gpunet's products and numpy's matmul run in one BLAS thread pool, and
alpha and beta fold a scale and an accumulation into the product (one pass
over c, no temporary). Numba's own ``np.dot`` calls scipy's OpenBLAS instead:
a second pool, whose spinning threads fight numpy's on few cores. Where numpy
ships no OpenBLAS, ``gemm`` is ``gemm_dot``, the same product through
``np.dot`` and a pass over c.
"""

from __future__ import annotations

import ctypes
import glob
import os

import numba
import numpy as np

from ._cpu import CPU_OPTIONS

#: cblas's CBLAS_ORDER and CBLAS_TRANSPOSE values.
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


def _numpy_cblas():
    """numpy's bundled OpenBLAS ``cblas_sgemm`` and ``cblas_dgemm`` (64-bit
    integers) as ctypes functions, or None where numpy ships no OpenBLAS."""
    root = os.path.dirname(np.__file__)
    paths = glob.glob(os.path.join(root, os.pardir, "numpy.libs", "*openblas64*"))
    paths += glob.glob(os.path.join(root, ".dylibs", "*openblas64*"))
    i32, i64, ptr = ctypes.c_int, ctypes.c_int64, ctypes.c_void_p
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_cblas_", "cblas_"):
            try:
                found = [getattr(lib, f"{prefix}{t}gemm64_") for t in "sd"]
            except AttributeError:
                continue
            for fn, real in zip(found, (ctypes.c_float, ctypes.c_double), strict=True):
                fn.argtypes = [i32, i32, i32, i64, i64, i64, real, ptr, i64, ptr, i64, real, ptr,
                               i64]  # fmt: skip
                fn.restype = None
            return found
    return None


@numba.njit(**CPU_OPTIONS)
def _check(a, b, c):
    """Refuse what the BLAS call cannot take (constant-folded away for arrays
    typed C-contiguous)."""
    if not (a.flags.c_contiguous and b.flags.c_contiguous and c.flags.c_contiguous):
        raise ValueError("gemm: expected C-contiguous arrays")


@numba.njit(**CPU_OPTIONS)
def gemm_dot(trans_a, trans_b, alpha, a, b, beta, c):
    """``gemm`` through ``np.dot`` (a temporary product, then one pass over c):
    the fallback where numpy ships no OpenBLAS."""
    _check(a, b, c)
    if trans_a and trans_b:
        p = np.dot(a.T, b.T)
    elif trans_a:
        p = np.dot(a.T, b)
    elif trans_b:
        p = np.dot(a, b.T)
    else:
        p = np.dot(a, b)
    for i in range(c.shape[0]):
        for j in range(c.shape[1]):
            c[i, j] = alpha * p[i, j] + (beta * c[i, j] if beta != 0 else 0)


#: numpy's OpenBLAS (cblas_sgemm, cblas_dgemm) as ctypes functions, or None.
CBLAS = _numpy_cblas()

if CBLAS is not None:
    _sgemm, _dgemm = CBLAS

    @numba.njit(**CPU_OPTIONS)
    def gemm(trans_a, trans_b, alpha, a, b, beta, c):
        """c = alpha * op(a) @ op(b) + beta * c (op transposes when asked;
        beta 0 ignores c); a, b, c C-contiguous, 2-D, one dtype."""
        _check(a, b, c)
        rows, cols = c.shape
        inner = a.shape[0] if trans_a else a.shape[1]
        if rows == 0 or cols == 0:
            return
        ta = _TRANS if trans_a else _NO_TRANS
        tb = _TRANS if trans_b else _NO_TRANS
        lda, ldb, ldc = max(1, a.shape[1]), max(1, b.shape[1]), cols
        if c.itemsize == 4:
            _sgemm(_ROW_MAJOR, ta, tb, rows, cols, inner, alpha, a.ctypes, lda, b.ctypes, ldb,
                   beta, c.ctypes, ldc)  # fmt: skip
        else:
            _dgemm(_ROW_MAJOR, ta, tb, rows, cols, inner, alpha, a.ctypes, lda, b.ctypes, ldb,
                   beta, c.ctypes, ldc)  # fmt: skip

else:
    gemm = gemm_dot
