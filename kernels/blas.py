"""Matrix products through numpy's own BLAS, callable from compiled code.

``gemm(trans_a, trans_b, alpha, a, b, beta, c)`` computes c = alpha * op(a) @
op(b) + beta * c in place, op transposing its operand when asked; a, b and c
are 2-D, C-contiguous, of one dtype (float32 or float64). Beta 0 ignores c's
values (NaN included), as BLAS does. It is a compiled function: CPU kernels
call it, and so does Python.

Where numpy ships its bundled OpenBLAS (the wheels on PyPI), ``gemm`` calls
that library's cblas ``?gemm``. Compiled code calls it by a symbol name that
this module gives its address when imported (``CBLAS_SYMBOLS``), not by an
address baked into the code, so that kernels calling ``gemm`` can be cached
on disk.
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
from llvmlite import binding, ir
from numba import types
from numba.core import cgutils
from numba.core.extending import intrinsic

from ._cache import cached
from ._cpu import CPU_OPTIONS

#: cblas's CBLAS_ORDER and CBLAS_TRANSPOSE values.
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


#: The names compiled code calls numpy's cblas_sgemm and cblas_dgemm by.
CBLAS_SYMBOLS = ("gpunet_cblas_sgemm64", "gpunet_cblas_dgemm64")


def _numpy_cblas() -> bool:
    """Give ``CBLAS_SYMBOLS`` the addresses of numpy's bundled OpenBLAS
    ``cblas_sgemm`` and ``cblas_dgemm`` (64-bit integers); False where numpy
    ships no OpenBLAS."""
    root = os.path.dirname(np.__file__)
    paths = glob.glob(os.path.join(root, os.pardir, "numpy.libs", "*openblas64*"))
    paths += glob.glob(os.path.join(root, ".dylibs", "*openblas64*"))
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
            for symbol, fn in zip(CBLAS_SYMBOLS, found, strict=True):
                binding.add_symbol(symbol, ctypes.cast(fn, ctypes.c_void_p).value)
            return True
    return False


@intrinsic
def _cblas_gemm(typingctx, ta, tb, rows, cols, inner, alpha, a, lda, b, ldb, beta, c, ldc):
    """cblas ?gemm (row-major) on a, b, c, by the symbol for c's dtype."""
    real = c.dtype
    signature = types.none(ta, tb, rows, cols, inner, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, sig, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        fp, ptr = context.get_value_type(real), ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(
            ir.VoidType(), [i32, i32, i32, i64, i64, i64, fp, ptr, i64, ptr, i64, fp, ptr, i64]
        )
        symbol = CBLAS_SYMBOLS[0] if real == types.float32 else CBLAS_SYMBOLS[1]
        fn = cgutils.get_or_insert_function(builder.module, fnty, symbol)
        arg_types = sig.args

        def value(i, to):
            return context.cast(builder, args[i], arg_types[i], to)

        def data(i):
            array = context.make_array(arg_types[i])(context, builder, args[i])
            return builder.bitcast(array.data, ptr)

        builder.call(
            fn,
            [
                ir.Constant(i32, _ROW_MAJOR),
                value(0, types.int32),
                value(1, types.int32),
                value(2, types.int64),
                value(3, types.int64),
                value(4, types.int64),
                value(5, real),
                data(6),
                value(7, types.int64),
                data(8),
                value(9, types.int64),
                value(10, real),
                data(11),
                value(12, types.int64),
            ],
        )
        return context.get_dummy_value()

    return signature, codegen


@numba.njit(**CPU_OPTIONS)
def _check(a, b, c):
    """Refuse what the BLAS call cannot take (constant-folded away for arrays
    typed C-contiguous)."""
    if not (a.flags.c_contiguous and b.flags.c_contiguous and c.flags.c_contiguous):
        raise ValueError("gemm: expected C-contiguous arrays")


@cached()
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


#: Whether numpy ships an OpenBLAS that ``gemm`` calls.
HAVE_CBLAS = _numpy_cblas()

if HAVE_CBLAS:

    @cached()
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
        _cblas_gemm(ta, tb, rows, cols, inner, alpha, a, lda, b, ldb, beta, c, ldc)

else:
    gemm = gemm_dot
