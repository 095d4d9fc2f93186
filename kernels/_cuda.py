"""What every CUDA kernel module needs: the ``numba.cuda`` module (or a stand-in
when numba-cuda is missing), the kernel catalogue used by the compile checks,
launch-size helpers and the test for "is this a device array".

Kernels are declared with :func:`kernel`, which records the signatures they are
compiled for so that ``tests/test_compile.py`` and ``gpunet info --kernels`` can
build each one to PTX and run ptxas on it without a GPU.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import math
import threading
import weakref
from collections.abc import Callable

import numpy as np

from . import _cache

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

if HAVE_NUMBA_CUDA and not SIMULATOR:
    from numba.cuda.cudadrv.devicearray import DeviceNDArrayBase as _NUMBA_DEVICE_ARRAYS
else:
    _NUMBA_DEVICE_ARRAYS = ()

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
    """Decorate a CUDA kernel: ``cuda.jit`` (lazily typed, its code kept in the
    kernel cache under ``name``) plus a catalogue entry.

    ``name`` is what reports show (``"softmax.rows"``); ``signatures`` are the
    Numba signatures the compile checks build, e.g.
    ``"void(float32[::1], float32[::1])"``.
    """

    def decorate(py_func):
        KERNELS.append(KernelSpec(name, py_func, tuple(signatures)))
        if not HAVE_NUMBA_CUDA:
            return _missing_numba_cuda
        dispatcher = cuda.jit(**jit_options)(py_func)
        if not SIMULATOR:  # the simulator compiles nothing
            dispatcher = _cache.cuda_cached(dispatcher, name)
        return Kernel(dispatcher, name)

    return decorate


#: What watches every launch while it is not empty (``gn.profile``): each
#: observer is called as ``observer(name, griddim, blockdim, run)`` and
#: returns what ``run()`` (the launch) returns.
observers: list[Callable] = []


def observe(name: str, griddim, blockdim, run: Callable):
    """``run()``, a launch named ``name``, seen by every observer (the
    first one registered outermost)."""
    for observer in reversed(observers):
        run = functools.partial(observer, name, griddim, blockdim, run)
    return run()


class Kernel:
    """A Numba CUDA kernel with a lean launch path, used as Numba's own:
    ``kernel[blocks, threads](*args)``; ``name`` is its catalogue name.

    Numba types every argument, picks the compiled overload and marshals the
    arguments on each launch, Python work that outlasts the run of a small
    kernel. Here the overload is looked up by each array's (dtype, ndim,
    C-contiguous), read off its shape and strides, and the launch goes
    straight to ``cuda.core``'s ``launch`` on the default stream, with the
    arguments flattened as Numba's kernel ABI expects. Anything else (other
    streams, shared memory sizes, arguments that are not Numba device arrays
    or scalars, several GPUs, a numba-cuda whose internals differ) takes
    Numba's path. Under the simulator every launch takes Numba's path.
    While ``observers`` is not empty, each launch is handed to them.
    """

    __slots__ = ("dispatcher", "name", "_overloads")

    def __init__(self, dispatcher, name: str):
        self.dispatcher, self.name = dispatcher, name
        self._overloads = {}

    def __getattr__(self, name):
        return getattr(self.dispatcher, name)

    def __getitem__(self, config):
        if observers:
            return _Observed(self, config)
        return self._launcher(config)

    def _launcher(self, config):
        if _fast_launch is not None and len(config) == 2:
            return _Launch(self, config[0], config[1])
        return self._numba_launch(config)

    def _numba_launch(self, config):
        """Numba's own launch, which on a GPU goes to the legacy default stream:
        a CUDA graph being captured would miss it, so it raises CaptureError
        then. (The simulator's stand-in for a graph records every launch.)"""
        if getattr(_thread, "capturing", False) and not SIMULATOR:
            raise CaptureError(
                f"kernel {self.name} takes Numba's launch path, which a CUDA graph cannot capture"
            )
        return self.dispatcher[config]


class CaptureError(RuntimeError):
    """Work that a CUDA graph being captured cannot record."""


@contextlib.contextmanager
def replaced_copies(replace: Callable):
    """While open, Numba's host-device copy entry points (``cuda.to_device``
    and the device arrays' ``copy_to_host`` and ``copy_to_device``) are
    ``replace(name, original)``; they are put back after."""
    if SIMULATOR:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray as array_class
    else:
        from numba.cuda.cudadrv.devicearray import DeviceNDArrayBase as array_class
    patches = []
    try:
        for owner, name in (
            (cuda, "to_device"),
            (array_class, "copy_to_host"),
            (array_class, "copy_to_device"),
        ):
            own = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name)
            patches.append((owner, name, own))
            setattr(owner, name, replace(name, getattr(owner, name)))
        yield
    finally:
        for owner, name, own in reversed(patches):
            if own is None:
                delattr(owner, name)  # the inherited method again
            else:
                setattr(owner, name, own)

    def _packers(self, args):
        """(cuda.core kernel, per-argument converters) for ``args``' types, or
        None when this launch must take Numba's path."""
        key = tuple(_array_key(a) if type(a) in _ARRAY_TYPES else type(a) for a in args)
        try:
            return self._overloads[key]
        except KeyError:
            found = self._overloads[key] = _compile_launch(self.dispatcher, args, key)
            return found


def _array_key(a):
    """(dtype, ndim, C-contiguous) of a device array, read off its shape and
    strides (Numba's typeof of each new array view costs more than a small
    kernel's launch)."""
    expected = a.dtype.itemsize
    for size, stride in zip(reversed(a.shape), reversed(a.strides), strict=True):
        if size > 1 and stride != expected:
            return a.dtype, a.ndim, False
        expected *= size
    return a.dtype, a.ndim, True


def _compile_launch(dispatcher, args, key):
    """Compile for the argument types ``key`` names: arrays as C-contiguous or
    any layout ("A"), so that one key always means one compiled kernel."""
    argtypes = tuple(
        _numba_types.Array(_from_dtype(k[0]), k[1], "C" if k[2] else "A")
        if type(a) in _ARRAY_TYPES
        else dispatcher.typeof_pyval(a)
        for a, k in zip(args, key, strict=True)
    )
    compiled = dispatcher.compile(argtypes)
    if compiled.debug or compiled.extensions:
        return None
    converters = []
    for ty, a in zip(argtypes, args, strict=True):
        if type(a) in _ARRAY_TYPES:
            converters.append(None)
        elif ty in _SCALARS:
            converters.append(_SCALARS[ty])
        else:
            return None
    return compiled._codelibrary.get_cufunc().kernel, converters


class _Observed:
    """A launch of ``kernel`` with ``config`` that the observers see."""

    __slots__ = ("kernel", "config")

    def __init__(self, kernel, config):
        self.kernel, self.config = kernel, config

    def __call__(self, *args):
        launch = self.kernel._launcher(self.config)
        return observe(self.kernel.name, self.config[0], self.config[1], lambda: launch(*args))


class _Launch:
    __slots__ = ("kernel", "griddim", "blockdim")

    def __init__(self, kernel, griddim, blockdim):
        self.kernel, self.griddim, self.blockdim = kernel, griddim, blockdim

    def __call__(self, *args):
        packers = self.kernel._packers(args)
        stream = getattr(_thread, "stream", None) or _default_stream()
        if packers is None or stream is None:
            return self.kernel._numba_launch((self.griddim, self.blockdim))(*args)
        cukernel, converters = packers
        flat = []
        for a, convert in zip(args, converters, strict=True):
            if convert is None:
                flat += (0, 0, a.size, a.dtype.itemsize, a.device_ctypes_pointer.value)
                flat += a.shape
                flat += a.strides
            else:
                flat.append(convert(a))
        config = _launch_config(self.griddim, self.blockdim)
        _fast_launch(stream, config, cukernel, *flat)
        return None


#: Per thread: ``stream``, the default stream as cuda.core sees it, once this
#: thread holds the GPU's context (a graph builder while a CUDA graph is
#: captured, with ``capturing`` True). With several GPUs it is never set, and
#: launches take Numba's path (it picks each one's context).
_thread = threading.local()
_several_gpus = False


def _default_stream():
    """The default stream for this thread's lean launches, or None."""
    global _several_gpus
    if _several_gpus:
        return None
    if len(cuda.gpus) != 1:
        _several_gpus = True
        return None
    from numba.cuda.cudadrv import driver

    cuda.current_context()  # this thread's launches need the context current
    _thread.stream = driver._to_core_stream(0)
    return _thread.stream


@functools.cache
def _launch_config(griddim, blockdim):
    return _LaunchConfig(grid=griddim, block=blockdim, **_NOT_COOPERATIVE)


def _setup_fast_launch():
    """cuda.core's launch function for :class:`Kernel`, or None where Numba's
    path must be used (the simulator, unfamiliar numba-cuda internals)."""
    global _LaunchConfig, _NOT_COOPERATIVE, _ARRAY_TYPES, _SCALARS, _numba_types, _from_dtype
    if SIMULATOR or not HAVE_NUMBA_CUDA:
        return None
    try:
        import ctypes

        from cuda.core import LaunchConfig, launch
        from numba.cuda import types as _numba_types
        from numba.cuda._compat import CUDA_CORE_GE_1_0
        from numba.cuda.cudadrv import devicearray
        from numba.cuda.np.numpy_support import from_dtype as _from_dtype
        from numba.cuda.types import boolean, float32, float64, int32, int64, uint32, uint64
    except ImportError:
        return None
    _LaunchConfig = LaunchConfig
    _NOT_COOPERATIVE = {"is_cooperative" if CUDA_CORE_GE_1_0 else "cooperative_launch": False}
    _ARRAY_TYPES = (devicearray.DeviceNDArray, DeviceScalar)
    _SCALARS = {
        float32: ctypes.c_float,
        float64: ctypes.c_double,
        int32: ctypes.c_int32,
        int64: ctypes.c_int64,
        uint32: ctypes.c_uint32,
        uint64: ctypes.c_uint64,
        boolean: bool,
    }
    return launch


def device_function(py_func):
    """A helper called from CUDA kernels, inlined into them: ``numba.njit(inline="always")``,
    or ``py_func`` itself under the simulator, whose device arrays Numba's CPU
    target cannot take."""
    if SIMULATOR:
        return py_func
    import numba

    return numba.njit(inline="always")(py_func)


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
    # Numba's own first: their __cuda_array_interface__ is a property that
    # builds its dict (a ctypes pointer, the strides, the stream) on every
    # access, and hasattr() evaluates it.
    return isinstance(x, _NUMBA_DEVICE_ARRAYS) or hasattr(x, "__cuda_array_interface__")


def as_device_array(x):
    """A Numba device array viewing ``x`` (no copy)."""
    if SIMULATOR or cuda.devicearray.is_cuda_ndarray(x):
        return x
    return cuda.as_cuda_array(x)


def address(x) -> int:
    """The address of the first element of the Numba device array ``x`` (of
    its host buffer under the simulator)."""
    if SIMULATOR:
        return x._ary.__array_interface__["data"][0]
    return x.device_ctypes_pointer.value or 0


#: (name, dtype, GPU) -> (the array, {length: a view of that length}).
_scratch: dict[tuple, tuple] = {}


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
    if found is None or found[0].size < n:
        found = _scratch[key] = (cuda.device_array(max(n, 1), dtype), {})
    array, views = found
    view = views.get(n)
    if view is None:  # one view per length: a slice costs more than a small launch
        view = views[n] = array[:n]
    return view


_counters: dict[tuple, object] = {}


def counter(name: str):
    """A cached 1-element int32 device array per (``name``, current GPU),
    zero when made: a count that the kernels using it leave at zero when
    they finish (blocks counting themselves done, say)."""
    key = (name, _current_gpu())
    found = _counters.get(key)
    if found is None:
        found = _counters[key] = cuda.to_device(np.zeros(1, np.int32))
    return found


#: (bytes, dtype, shape, GPU) -> the device copy, most recently used last.
_tables: collections.OrderedDict = collections.OrderedDict()
#: How many small tables ``constant_table`` keeps on the device.
TABLES_KEPT = 64


def constant_table(host: np.ndarray):
    """A device copy of the small host array ``host`` that kernels only read
    (a segment table, say), copied once per distinct content and current GPU,
    so that a step that launches with the same table copies nothing."""
    key = (host.tobytes(), host.dtype.str, host.shape, _current_gpu())
    found = _tables.get(key)
    if found is None:
        found = _tables[key] = cuda.to_device(host)
        if len(_tables) > TABLES_KEPT:
            _tables.popitem(last=False)
    else:
        _tables.move_to_end(key)
    return found


_flat_views = weakref.WeakKeyDictionary()


def flat(x):
    """``x.ravel()`` for a C-contiguous device array, made once per array
    (a new Numba view costs more than a small kernel's launch)."""
    if x.ndim == 1:
        return x
    try:
        return _flat_views[x]
    except KeyError:
        view = _flat_views[x] = x.ravel()
        return view
    except TypeError:  # not weakly referenceable (the simulator's arrays)
        return x.ravel()


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


_fast_launch = _setup_fast_launch()
