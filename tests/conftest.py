"""Shared test set-up: CUDA markers and the device list tests run over.

CUDA tests carry ``@pytest.mark.cuda``; they run on a real GPU, or on the CPU
under Numba's simulator (``NUMBA_ENABLE_CUDASIM=1``), and are skipped when
neither is present. ``requires_gpu`` and ``skip_on_cudasim`` narrow that
further; each skip says why.
"""

import sys
import threading
import time

import numpy as np
import pytest
from gpunet.kernels import _cuda

import gpunet as gn

HAVE_CUDA = gn.cuda_status()[0] > 0
SIMULATOR = _cuda.SIMULATOR


def _quicken_simulator():
    """Two changes to Numba's simulator (which runs a block as one Python
    thread per CUDA thread) that halve the CUDA tests' time under it:

    - It finds a block's shared array by the line that asks for it, found
      from a whole traceback (reading every frame's source line) once per
      thread. This takes the line from the caller's frame, under a lock, so
      that two threads never make two arrays for one line (the simulator's
      own lookup has no lock).
    - The thread that manages a block polls its threads' liveness in a loop
      that holds the GIL for the whole switch interval (5 ms), keeping the
      block's threads from running; each poll now yields the GIL first.
    """
    from numba.cuda import types
    from numba.cuda.np import numpy_support
    from numba.cuda.simulator.kernel import BlockThread
    from numba.cuda.simulator.kernelapi import FakeCUDAShared

    dynamic = FakeCUDAShared.array
    lock = threading.Lock()

    def array(self, shape, dtype, alignment=None):
        if shape == 0 or alignment is not None:
            return dynamic(self, shape, dtype, alignment)
        caller = sys._getframe(1)
        key = (caller.f_code.co_filename, caller.f_lineno)
        with lock:
            found = self._allocations.get(key)
            if found is None:
                if isinstance(dtype, types.Type):
                    dtype = numpy_support.as_dtype(dtype)
                found = self._allocations[key] = np.empty(shape, dtype)
        return found

    alive = threading.Thread.is_alive

    def is_alive(self):
        time.sleep(0)  # releases the GIL
        return alive(self)

    FakeCUDAShared.array = array
    BlockThread.is_alive = is_alive


if SIMULATOR:
    _quicken_simulator()

#: Device kinds the ops tests run on: the CPU, and CUDA where it runs.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]

#: Per-dtype tolerances (rtol, atol) for kernels against float64 references.
TOLERANCES = {np.float32: (2e-6, 1e-6), np.float64: (1e-13, 1e-14)}


def pytest_collection_modifyitems(config, items):
    no_cuda = pytest.mark.skip(
        reason="no CUDA GPU: "
        + gn.cuda_status()[1]
        + " (run under NUMBA_ENABLE_CUDASIM=1 to simulate one)"
    )
    no_gpu = pytest.mark.skip(reason="needs a real CUDA GPU, not the simulator")
    on_sim = pytest.mark.skip(reason="cannot run under the CUDA simulator")
    for item in items:
        if "cuda" in item.keywords and not HAVE_CUDA:
            item.add_marker(no_cuda)
        if "requires_gpu" in item.keywords and (SIMULATOR or not HAVE_CUDA):
            item.add_marker(no_gpu)
        if "skip_on_cudasim" in item.keywords and SIMULATOR:
            item.add_marker(on_sim)


def put(x, device):
    """``x`` on ``device`` ("cpu" or "cuda")."""
    return gn.to_device(x, device)


def refused_outputs():
    """Zero float32 arrays a CPU launcher must refuse as ``out`` for a (2, 3)
    float32 input, each for one reason: shape, dtype, layout, ndim, read-only."""
    frozen = np.zeros((2, 3), np.float32)
    frozen.flags.writeable = False
    return [
        np.zeros((3, 2), np.float32),  # another shape
        np.zeros((2, 3), np.float64),  # another dtype
        np.zeros((3, 2), np.float32).T,  # not C-contiguous
        np.zeros(6, np.float32),  # another ndim
        frozen,
    ]


def assert_close(actual, expected, dtype):
    """Shape, then dtype, then values within the dtype's tolerance."""
    actual = gn.to_numpy(actual)
    assert actual.shape == expected.shape
    assert actual.dtype == np.dtype(dtype)
    rtol, atol = TOLERANCES[np.dtype(dtype).type]
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def central_differences(f, a, h=1e-6):
    """d f / d a by central differences, for a float64 host array ``a``
    (perturbed in place, one element at a time, and restored)."""
    grad = np.empty_like(a)
    for idx in np.ndindex(a.shape):
        saved = a[idx]
        a[idx] = saved + h
        up = f()
        a[idx] = saved - h
        down = f()
        a[idx] = saved
        grad[idx] = (up - down) / (2 * h)
    return grad


@pytest.fixture
def launches(monkeypatch):
    """The names of the CUDA kernels launched while the test runs, in order
    (counted under the simulator, whose kernel objects all go through one call)."""
    if not SIMULATOR:
        pytest.skip("launches are counted under the CUDA simulator")
    from numba.cuda.simulator import kernel as simulated

    names = []
    call = simulated.FakeCUDAKernel.__call__

    def counted(self, *args):
        if not (self._device or simulated._kernel_context):
            names.append(self.fn.__name__)
        return call(self, *args)

    monkeypatch.setattr(simulated.FakeCUDAKernel, "__call__", counted)
    return names


def count_device_allocations(monkeypatch):
    """From now on, the names of Numba's device-memory allocators called
    (device_array, device_array_like, to_device, pinned_array), in order."""
    from numba import cuda

    allocations = []
    for name in ("device_array", "device_array_like", "to_device", "pinned_array"):
        real = getattr(cuda, name)
        monkeypatch.setattr(
            cuda,
            name,
            lambda *a, _real=real, _name=name, **k: allocations.append(_name) or _real(*a, **k),
        )
    return allocations
