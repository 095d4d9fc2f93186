"""The kernels' compiled code kept on disk, so that a new process loads what
an earlier one compiled instead of compiling it again: the CPU kernels'
machine code, and the CUDA kernels' code for the GPU it was compiled for.

Numba's own cache (``cache=True``) cannot serve gpunet: it keys a closure by
the pickles of its cells, which hold each dispatcher's per-process id, so the
kernels that factories make never hit; and it checks only the source file of
the function itself, not of the kernels it calls. Here each CPU kernel that
Python calls is decorated with ``@cached(*key)``, the key naming what tells it
apart from the other kernels its factory makes (the factory's arguments); a
CUDA kernel is keyed by its catalogue name (``cuda_cached``, called by
``_cuda.kernel``). An entry's key is that name with the kernel's signature,
the CPU (model and features) or the GPU (compute capability, CUDA runtime),
and a digest of every kernels module's source (the whole of what gpunet
compiles) and of gpunet's, numpy's and llvmlite's versions; Numba's index
adds its own version. So a new gpunet, Numba or numpy, or an edit to any
kernels module leaves the old entries unused.

Loaded code must compute what freshly compiled code does, bit for bit. Numba
compiles a jitted function that a kernel calls (and a parallel kernel's loop
body) on its own, and links a copy into the kernel that LLVM optimizes again.
A fresh process runs the first, a process that loaded the kernel the second;
with reassociation allowed the two can sum in another order. So a kernel
whose reassociated sums sit in such a callee either inlines it (the softmax
launchers) or is not cached (the parallel softmax kernels), and
``tests/test_kernel_cache.py`` compares cold and warm processes' results.

A process that loads cached kernels links their machine code into one
symbol table, where the first definition of a name wins. Numba names a
compiled function by its qualified name and a number counted from 1 in each
process, so two closures of one factory (two activations' launchers) compiled
in two processes could share a name, and the kernel loaded second would call
the first one's code. The numbering starts at a random 62-bit number in each
process instead (``_number_functions_apart``).

The files live where Numba keeps its cache: under ``NUMBA_CACHE_DIR`` when it
is set, else in ``__pycache__`` beside the kernels when that is writable, else
in the user's cache directory. ``GPUNET_KERNEL_CACHE=0`` turns the cache off.
Two processes may fill it at once: every file is written to a temporary name
and renamed, a data file is named by its key and written before the index
names it, so a reader finds a whole entry for its key or none (and compiles).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import os
import pathlib
import secrets
import sys
import warnings

import llvmlite
import numpy as np
from numba.core import types
from numba.core.caching import Cache, CompileResultCacheImpl, IndexDataCacheFile
from numba.core.dispatcher import Dispatcher

#: Whether ``cached`` installs the cache (``GPUNET_KERNEL_CACHE=0``: no).
ENABLED = os.environ.get("GPUNET_KERNEL_CACHE", "1") != "0"


def _number_functions_apart() -> None:
    """Number the functions this process compiles from here on from a random
    start, so that no two processes give one name to different code (see the
    module docstring). Functions numbered before (Numba's own, at its import)
    are the same functions, in the same order, in every process."""
    from numba.core.bytecode import FunctionIdentity

    FunctionIdentity._unique_ids = itertools.count(secrets.randbits(62))


if ENABLED:
    _number_functions_apart()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@functools.cache
def sources_digest() -> str:
    """sha256 of gpunet's, numpy's and llvmlite's versions and of every
    kernels module's source: a kernel's code depends on helpers across the
    package (and an install without sources still changes with its version).
    gpunet is imported before its kernels, and read here without an import."""
    gpunet_version = getattr(sys.modules.get("gpunet"), "__version__", "")
    versions = f"gpunet {gpunet_version} numpy {np.__version__} llvmlite {llvmlite.__version__}"
    digest = hashlib.sha256(versions.encode())
    for path in sorted(pathlib.Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def key_text(*key) -> str:
    """The text of a kernel's key: functions and dispatchers by their module
    and qualified name, dtypes and Numba types by name, plain values by repr.
    A function local to a factory has no name that tells its variants apart:
    name it by the factory's arguments instead (TypeError)."""
    return "(" + ", ".join(_part(value) for value in key) + ")"


def _part(value) -> str:
    if isinstance(value, Dispatcher):
        value = value.py_func
    if isinstance(value, tuple):
        return key_text(*value)
    if isinstance(value, (str, int, float, bool, type(None))):
        return repr(value)
    if isinstance(value, (np.dtype, types.Type)):
        return f"{type(value).__name__}({value})"
    qualname = getattr(value, "__qualname__", None)
    if callable(value) and qualname is not None and "<locals>" not in qualname:
        return f"{value.__module__}.{qualname}"
    raise TypeError(
        f"a kernel cache key takes module-level functions, dispatchers, dtypes, Numba types and "
        f"plain values, not {value!r}"
    )


class _Impl(CompileResultCacheImpl):
    """Numba's compile-result cache, its file names carrying the key's digest."""

    def __init__(self, py_func, key: str):
        self._key = key
        super().__init__(py_func)

    def get_filename_base(self, fullname, abiflags):
        name = fullname.replace("<", "").replace(">", "")
        python = f"py{sys.version_info[0]}{sys.version_info[1]}{abiflags}"
        return f"{name}-{self._lineno}-{_digest(self._key)[:12]}.{python}"


class _KeyNamedData:
    """For a subclass of Numba's index-and-data cache files: each data file
    named by its key, written before the index names it. Saving drops the
    index's entries for other kernel sources (keys whose sources digest, their
    fourth item, differs) and deletes their files: no process loads them
    again, and an edited kernel would otherwise pile up files."""

    def save(self, key, data):
        name = f"{self._index_name[: -len('.nbi')]}.{_digest(repr(key))[:16]}.nbc"
        self._save_data(name, data)
        overloads = self._load_index()
        stale = {k: v for k, v in overloads.items() if k[3] != key[3]}
        if overloads.get(key) != name or stale:
            overloads = {k: v for k, v in overloads.items() if k not in stale}
            overloads[key] = name
            self._save_index(overloads)
        for old in set(stale.values()) - set(overloads.values()):
            with contextlib.suppress(OSError):  # another process may have deleted it
                os.remove(os.path.join(self._cache_path, old))


class _Files(_KeyNamedData, IndexDataCacheFile):
    """Numba's index and data files, each data file named by its key."""


class KernelCache(Cache):
    """The on-disk cache of one kernel (a Numba CPU dispatcher), keyed as the
    module docstring says."""

    def __init__(self, py_func, key: str):
        self._name = repr(py_func)
        self._py_func = py_func
        self._key = key
        self._impl = _Impl(py_func, key)
        self._cache_path = self._impl.locator.get_cache_path()
        self._cache_file = _Files(
            cache_path=self._cache_path,
            filename_base=self._impl.filename_base,
            source_stamp=self._impl.locator.get_source_stamp(),
        )
        self.enable()

    def _index_key(self, sig, codegen):
        return (sig, codegen.magic_tuple(), self._key, sources_digest())


def describe() -> str:
    """Where the CPU kernels' cache lives, or that it is off (for ``gpunet info``)."""
    if not ENABLED:
        return "off (GPUNET_KERNEL_CACHE=0)"
    return CACHED[0]._cache.cache_path if CACHED else "no cached kernels"


#: Every dispatcher ``cached`` decorated, in the order decorated.
CACHED: list[Dispatcher] = []


#: Every numba-cuda dispatcher ``cuda_cached`` decorated.
CUDA_CACHED: list = []


def stats(cuda: bool = False) -> tuple[int, int]:
    """(hits, misses) so far in this process, over every cached CPU kernel
    (``cuda``: CUDA kernel): how many compilations the disk cache saved, and
    how many it could not."""
    dispatchers = CUDA_CACHED if cuda else CACHED
    hits = sum(sum(d.stats.cache_hits.values()) for d in dispatchers)
    misses = sum(sum(d.stats.cache_misses.values()) for d in dispatchers)
    return hits, misses


def cached(*key):
    """Decorate a Numba CPU dispatcher that Python calls (above ``@numba.njit``)
    so that its compiled code is kept on disk, under ``key`` (see
    ``key_text``); a module-level kernel needs none. Returns the dispatcher."""
    text = key_text(*key)

    def decorate(dispatcher: Dispatcher) -> Dispatcher:
        if ENABLED:
            dispatcher._cache = KernelCache(dispatcher.py_func, text)
        CACHED.append(dispatcher)
        return dispatcher

    return decorate


def cuda_cached(dispatcher, name: str):
    """Keep the compiled code of a numba-cuda kernel (``dispatcher``, from
    ``cuda.jit``) on disk under its catalogue ``name``. Returns the
    dispatcher. A cache that fails to load or save an entry is a miss, with
    a warning (once per message), never an error: the kernel is compiled as
    without it."""
    if ENABLED:
        dispatcher._cache = _cuda_cache_class()(dispatcher.py_func, name)
    CUDA_CACHED.append(dispatcher)
    return dispatcher


@functools.cache
def _cuda_cache_class():
    """``CudaKernelCache``, made on first use: numba-cuda's cache classes
    exist only where numba-cuda is installed."""
    from numba.cuda.core.caching import IndexDataCacheFile as CudaFiles
    from numba.cuda.dispatcher import CUDACache

    class _CudaFiles(_KeyNamedData, CudaFiles):
        pass

    class CudaKernelCache(CUDACache):
        """numba-cuda's kernel cache, its files and keys as ``KernelCache``'s."""

        def __init__(self, py_func, key: str):
            self._key = key
            super().__init__(py_func)
            base = f"{self._impl.filename_base}-{_digest(key)[:12]}"
            self._cache_file = _CudaFiles(
                cache_path=self._cache_path,
                filename_base=base,
                source_stamp=self._impl.locator.get_source_stamp(),
            )
            self._launch_config_marker_path = os.path.join(self._cache_path, f"{base}.lcs")

        def _index_key(self, sig, codegen):
            key = (sig, codegen.magic_tuple(), self._key, sources_digest())
            if self._launch_config_key is None:
                return key
            return (*key, ("launch_config", self._launch_config_key))

        def load_overload(self, sig, target_context):
            try:
                return super().load_overload(sig, target_context)
            except Exception as exc:  # a miss: the kernel compiles as without a cache
                _warn_once(f"could not load {self._key} from the kernel cache ({exc})")
                return None

        def save_overload(self, sig, data):
            try:
                super().save_overload(sig, data)
            except Exception as exc:
                _warn_once(f"could not save {self._key} to the kernel cache ({exc})")

    return CudaKernelCache


@functools.cache
def _warn_once(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)
