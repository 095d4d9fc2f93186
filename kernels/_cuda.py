"""What every CUDA kernel module needs: the ``numba.cuda`` module (or a stand-in
when numba-cuda is missing), the kernel catalogue used by the compile checks,
launch-size helpers and the test for "is this a device array".

Kernels are declared with :func:`kernel`, which records the signatures they are
compiled for so that ``tests/test_compile.py`` and ``gpunet info --kernels`` can
build each one to PTX and run ptxas on it without a GPU.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

try:
    from numba import cuda

    HAVE_NUMBA_CUDA = True
except ImportError:  # numba-cuda is not installed: CUDA kernels cannot be built
    cuda = None
    HAVE_NUMBA_CUDA = False

if HAVE_NUMBA_CUDA:
    from numba.cuda.core import config as _cuda_config

    SIMULATOR = bool(_cuda_config.ENABLE_CUDASIM)
else:
    SIMULATOR = False

#: Warp shuffles exist on every GPU but not in Numba's CUDA simulator; kernels
#: that use them pick a shared-memory variant at import time when this is False.
HAS_WARP_SHUFFLE = HAVE_NUMBA_CUDA and not SIMULATOR

WARP_SIZE = 32
#: Threads per block for elementwise kernels (a multiple of the warp size).
ELEMENTWISE_THREADS = 256
#: Grid-stride kernels never launch more blocks than this; each thread loops.
MAX_BLOCKS = 8192 if not SIMULATOR else 8


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """A CUDA kernel and the signatures it is compiled for (PTX checks)."""

    name: str
    py_func: Callable
    signatures: tuple[str, ...]


#: Every CUDA kernel gpunet launches, in declaration order.
KERNELS: list[KernelSpec] = []


def _missing_numba_cuda(*args, **kwargs):
    raise RuntimeError(
        "numba-cuda is not installed, so CUDA kernels are unavailable; "
        "install gpunet[cuda12] or gpunet[cuda13], or run on the CPU"
    )


def kernel(name: str, signatures: tuple[str, ...] | list[str], **jit_options):
    """Decorate a CUDA kernel: ``cuda.jit`` (lazily typed) plus a catalogue entry.

    ``name`` is what reports show (``"softmax.rows"``); ``signatures`` are the
    Numba signatures the compile checks build, e.g.
    ``"void(float32[::1], float32[::1])"``.
    """

    def decorate(py_func):
        KERNELS.append(KernelSpec(name, py_func, tuple(signatures)))
        if not HAVE_NUMBA_CUDA:
            return _missing_numba_cuda
        return cuda.jit(**jit_options)(py_func)

    return decorate


def float_signatures(template: str) -> tuple[str, str]:
    """``template`` with ``{t}`` filled by float32 and by float64."""
    return template.format(t="float32"), template.format(t="float64")


def grid_1d(n: int, threads: int = ELEMENTWISE_THREADS) -> tuple[int, int]:
    """(blocks, threads) for a grid-stride loop over ``n`` elements."""
    return max(1, min(math.ceil(n / threads), MAX_BLOCKS)), threads


def is_device_array(x) -> bool:
    """True for arrays in GPU memory: anything exposing
    ``__cuda_array_interface__``, and the simulator's device arrays."""
    if SIMULATOR:
        return isinstance(x, cuda.devicearray.FakeCUDAArray)
    return hasattr(x, "__cuda_array_interface__")


def as_device_array(x):
    """A Numba device array viewing ``x`` (no copy)."""
    if SIMULATOR or cuda.devicearray.is_cuda_ndarray(x):
        return x
    return cuda.as_cuda_array(x)


_scratch: dict[tuple, object] = {}


def scratch(name: str, n: int, dtype):
    """A cached 1-D device array of at least ``n`` elements of ``dtype`` for
    launchers' temporaries (per-block partial sums and the like), so that a
    training step allocates no device memory after its first.

    One array per (``name``, dtype, current GPU); it grows when a larger one
    is asked for. Kernels on one stream run in order, so a launcher may reuse
    it on every call, but two temporaries live at once need two names.
    """
    key = (name, str(dtype), _current_gpu())
    found = _scratch.get(key)
    if found is None or found.size < n:
        found = cuda.device_array(max(n, 1), dtype)
        _scratch[key] = found
    return found[:n]


def _current_gpu() -> int:
    return 0 if SIMULATOR else cuda.get_current_device().id


if HAVE_NUMBA_CUDA:
    _DeviceArray = (
        cuda.devicearray.FakeCUDAArray if SIMULATOR else cuda.cudadrv.devicearray.DeviceNDArray
    )

    class DeviceScalar(_DeviceArray):
        """A 0-d device array that ``float()`` reads (a copy to the host)."""

        def __float__(self) -> float:
            return float(self.copy_to_host())

        def item(self):
            """The value as a Python scalar."""
            return self.copy_to_host().item()

        def __repr__(self) -> str:
            return f"DeviceScalar({self.copy_to_host()!r})"


def scalar_view(buffer):
    """A 0-d array viewing the 1-element array ``buffer``, on its device:
    a numpy 0-d array on the host, a :class:`DeviceScalar` on a GPU."""
    if isinstance(buffer, np.ndarray):
        return buffer.reshape(())
    if SIMULATOR:
        return DeviceScalar(buffer._ary.reshape(()))
    return DeviceScalar(shape=(), strides=(), dtype=buffer.dtype, gpu_data=buffer.gpu_data)
