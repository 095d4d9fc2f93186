"""Which matrix product the CUDA dense kernels use.

``gn.set_gemm("numba")`` keeps gpunet's own tiled kernel, which applies the
bias and activation as it writes each output. ``gn.set_gemm("cublas")`` calls
cuBLAS through CuPy (installed with the ``cuda12``/``cuda13`` extras) for the
product, followed by one elementwise pass for the bias and activation.
``"auto"`` (the default) takes cuBLAS when CuPy can reach the GPU and the
product has at least ``AUTO_MIN_MACS`` multiply-adds, and the Numba kernel
otherwise. The CPU always uses BLAS through numpy.

cuBLAS runs in float32 without TF32 (CuPy's default), on the legacy default
stream that Numba's kernels also use, so the two order correctly.
"""

from __future__ import annotations

import functools

import numpy as np

from .kernels import _cuda

MODES = ("auto", "numba", "cublas")
#: ``auto`` hands products of at least this many multiply-adds to cuBLAS. Below
#: it the Numba kernels, which fuse the bias and activation into the product,
#: come out ahead: cuBLAS's faster product does not make up for its separate
#: elementwise pass. Above it the product's own time dominates. So a
#: 784-512-256-10 MLP at batch 128 (products of up to 51M) keeps the Numba
#: kernels, and a 256x784->1024 layer (205M) goes to cuBLAS.
AUTO_MIN_MACS = 1 << 27

_mode = "auto"


def set_gemm(mode: str) -> None:
    """Choose the CUDA matrix product: "auto", "numba" or "cublas" (see the module)."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"expected a gemm mode in {MODES}, got {mode!r}")
    if mode == "cublas" and not cublas_available():
        raise RuntimeError(f"cannot use cuBLAS: {_cupy_status()[1]}")
    _mode = mode


def get_gemm() -> str:
    """The current mode set by :func:`set_gemm`."""
    return _mode


@functools.cache
def _cupy_status() -> tuple[object, str]:
    """(the cupy module, "") when CuPy can reach a GPU, else (None, why not)."""
    if _cuda.SIMULATOR:
        return None, "the CUDA simulator has no cuBLAS"
    try:
        import cupy
    except ImportError:
        return None, "CuPy is not installed (pip install 'gpunet[cuda12]' or 'gpunet[cuda13]')"
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CuPy present, but no driver or device
        return None, f"CuPy cannot reach a GPU ({exc})"
    return cupy, ""


def cublas_available() -> bool:
    """True when cuBLAS can be used through CuPy here."""
    return _cupy_status()[0] is not None


def _use_cublas(m: int, n: int, k: int) -> bool:
    if _mode == "numba":
        return False
    if _mode == "cublas":
        return True
    return m * n * k >= AUTO_MIN_MACS and cublas_available()


def cublas_matmul(a, b, out, trans_a, trans_b, accumulate):
    """out (=|+=) op(a) @ op(b) with cuBLAS, on C-contiguous device arrays (no copies).

    cuBLAS is column-major: a row-major (r, c) buffer is its (c, r) matrix with
    leading dimension c, so out.T = op(b).T @ op(a).T is one call on the
    buffers as they are, with b first."""
    if getattr(_cuda._thread, "capturing", False):
        raise _cuda.CaptureError("cuBLAS runs on CuPy's stream, which a CUDA graph cannot capture")
    if _cuda.observers:
        _cuda.observe(
            "cublas.gemm", None, None,
            lambda: _cublas_gemm(a, b, out, trans_a, trans_b, accumulate),
        )  # fmt: skip
    else:
        _cublas_gemm(a, b, out, trans_a, trans_b, accumulate)


def _cublas_gemm(a, b, out, trans_a, trans_b, accumulate):
    cublas, device = _cupy_cublas()
    m, n = out.shape
    k = a.shape[0] if trans_a else a.shape[1]
    gemm = cublas.sgemm if out.dtype.char == "f" else cublas.dgemm
    scalars = _SCALARS[out.dtype.char]  # 1, 1, 0: alpha, then beta to add or not
    alpha = scalars.ctypes.data
    beta = alpha + scalars.itemsize * (1 if accumulate else 2)
    gemm(
        device.get_cublas_handle(),
        cublas.CUBLAS_OP_T if trans_b else cublas.CUBLAS_OP_N,
        cublas.CUBLAS_OP_T if trans_a else cublas.CUBLAS_OP_N,
        n,
        m,
        k,
        alpha,
        _pointer(b),
        b.shape[1],
        _pointer(a),
        a.shape[1],
        beta,
        _pointer(out),
        n,
    )


#: Host scalars for cuBLAS (host pointer mode), by dtype char.
_SCALARS = {c: np.array([1, 1, 0], dtype=c) for c in "fd"}


@functools.cache
def _cupy_cublas():
    from cupy.cuda import cublas, device

    return cublas, device


def _pointer(x) -> int:
    """The device address of a Numba device array (or of any CUDA array)."""
    try:
        return x.device_ctypes_pointer.value
    except AttributeError:
        return x.__cuda_array_interface__["data"][0]


def cuda_matmul(m: int, k: int, n: int):
    """The product the CUDA dense kernels use for an (m, k) @ (k, n) layer:
    ``cublas_matmul`` where the mode picks cuBLAS, else None (gpunet's own
    tiled kernel, with the bias and activation fused)."""
    return cublas_matmul if _use_cublas(m, n, k) else None
