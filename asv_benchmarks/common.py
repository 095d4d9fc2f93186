"""Shared pieces of the asv suite: parameters, data builders, timers, the base class.

Every benchmark class derives from :class:`Benchmark`, whose ``params`` run over
the device (``"cpu"``, ``"cuda"``) and a size. ``setup`` raises
``NotImplementedError`` for ``"cuda"`` where no GPU is usable or where Numba's
CUDA simulator stands in for one (its timings mean nothing), which asv reports
as skipped. Subclasses call ``super().setup(device, ...)`` first, then fetch
their inputs and calls from a cached builder that made one warm-up call, so
that JIT compilation stays out of the timings. The cache matters: asv_runner
re-runs ``setup`` before every timing sample of a ``time_*`` method (each
sample is then a single call), so a setup that allocated afresh would have
every sample time a call on cold, newly mapped memory.

``time_*`` methods are timed by asv and end with :func:`sync`, so a CUDA
timing covers the kernel and not only its launch. ``track_*`` methods measure
inside themselves, in one process, with the timers below:

- :func:`median_time`: the median of several samples, each of enough calls to
  last about 2 ms (GB/s = bytes read and written / median time); the timers
  are ``gpunet.benchmarks``', the ones ``gpunet bench`` uses.
- :func:`median_ratio`: two callables timed alternately, A B A B ..., and the
  median of the per-round ratios. The machines drift between fast and slow
  states within one run, so a ratio measured this way is steadier than either
  time alone. Copy ratios (a plain copy of the same number of bytes, see
  :func:`copy_reference`) and peer ratios (numpy, torch) are measured so.

Quick mode: with ``GPUNET_BENCH_QUICK=1`` each benchmark keeps only its first
shape, shrunk to a tiny one (each dimension divided by 128, rounded up), and
the in-method timers take a few samples only, so the whole suite checks that
every benchmark runs (about a second per parameter combination, most of it
starting the process and compiling). CI runs it so, from the repository root::

    asv machine --yes
    GPUNET_BENCH_QUICK=1 asv run --python=same --quick --show-stderr --dry-run

Real numbers (full sizes; one machine's numbers are comparable only to its own)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE NUMBA_NUM_THREADS=2 \\
        asv run --python=same --show-stderr --dry-run -b bench_softmax
"""

from __future__ import annotations

import abc
import functools
import math
import os

import numba
import numpy as np

import gpunet as gn
from gpunet import benchmarks

#: True when ``GPUNET_BENCH_QUICK`` is set to anything but "" or "0".
QUICK = os.environ.get("GPUNET_BENCH_QUICK", "") not in ("", "0")

DEVICES = ("cpu", "cuda")

#: Quick mode divides every dimension by this (rounding up).
QUICK_SHRINK = 128

#: How the in-method timers sample (gpunet.benchmarks, shared with ``gpunet bench``).
SETTINGS = benchmarks.Settings(quick=QUICK)


def shapes(*full):
    """The shapes to benchmark: ``full`` as given, or in quick mode only the
    first, shrunk to a tiny one (asv runs every parameter combination in a
    process of its own, so quick mode keeps the combinations few)."""
    if not QUICK:
        return list(full)
    return [tuple(max(1, -(-d // QUICK_SHRINK)) for d in full[0])]


def cuda_unavailable() -> str | None:
    """Why CUDA benchmarks cannot run here, or None when a real GPU is usable."""
    count, reason = gn.cuda_status()
    if count == 0:
        return f"no CUDA device: {reason}"
    if any(d.is_simulator for d in gn.devices()):
        return "the CUDA simulator (NUMBA_ENABLE_CUDASIM=1) is not timed"
    return None


def require_device(device: str) -> None:
    """Raise NotImplementedError (asv: skipped) when ``device`` cannot be benchmarked."""
    if device == "cuda":
        reason = cuda_unavailable()
        if reason is not None:
            raise NotImplementedError(reason)
    elif device != "cpu":
        raise ValueError(f"expected device 'cpu' or 'cuda', got {device!r}")


@functools.cache
def _host_array(shape, dtype, scale, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape, dtype=np.dtype(dtype)) * np.dtype(dtype).type(scale)


@functools.cache
def random_array(shape, dtype="float32", device="cpu", scale=1.0, seed=0):
    """Normal(0, scale) values of ``shape`` and ``dtype``: a numpy array for
    ``"cpu"``, a Numba device array for ``"cuda"``. Seeded and cached: the same
    arguments return the same array object, so never write into it."""
    host = _host_array(tuple(shape), str(dtype), float(scale), int(seed))
    return host if device == "cpu" else gn.to_device(host, device)


def empty_like(x, device):
    """An uninitialised array like ``x`` on ``device`` (for ``out=``)."""
    if device == "cpu":
        return np.empty(x.shape, x.dtype)
    return numba.cuda.device_array(x.shape, x.dtype)


def sync(device: str) -> None:
    """Wait for the GPU to finish queued work (nothing to do on the CPU)."""
    if device == "cuda":
        numba.cuda.synchronize()


def traffic_bytes(shape, dtype, reads: int, writes: int) -> int:
    """Bytes an op must move at least: ``reads`` input arrays and ``writes``
    output arrays of ``shape`` and ``dtype``, each touched once."""
    return math.prod(shape) * np.dtype(dtype).itemsize * (reads + writes)


def copy_reference(device: str, nbytes: int):
    """A callable doing a plain memory copy that moves ``nbytes`` in all (half
    read, half written): ``np.copyto`` on the CPU, a device-to-device copy on
    CUDA. Time it against a kernel moving the same bytes to get the fraction of
    copy bandwidth the kernel reaches."""
    half = max(1, nbytes // 2)
    src = np.arange(half, dtype=np.uint8)
    if device == "cpu":
        dst = np.empty_like(src)
        copy = functools.partial(np.copyto, dst, src)
    else:
        src, dst = numba.cuda.to_device(src), numba.cuda.device_array(half, np.uint8)
        copy = functools.partial(dst.copy_to_device, src)
    copy()
    sync(device)
    return copy


def median_time(fn, device: str) -> float:
    """Median seconds per call of ``fn()`` (already warmed up) on ``device``."""
    return benchmarks.median_time(fn, gn.Device(device), SETTINGS)


def median_ratio(reference, candidate, device: str, foreign_threads=False) -> float:
    """Median over alternating rounds (candidate, then reference) of
    time(reference) / time(candidate): above 1 means the candidate is faster.
    ``foreign_threads``: the reference runs a thread pool of its own (torch on
    the CPU), and each sample first waits for the other side's to go idle."""
    return benchmarks.median_ratio(
        reference, candidate, gn.Device(device), SETTINGS, foreign_threads
    )


def gbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e9


class Benchmark:
    """Base class: ``params`` over device and shape; ``setup`` skips CUDA where
    it cannot be timed. Subclasses extend ``params``/``param_names`` (device
    first) and call ``super().setup(device, ...)`` before building inputs."""

    param_names = ["device", "shape"]
    params = [list(DEVICES), shapes((256, 1024), (8192, 1000))]
    timeout = 600

    def setup(self, device, *params):
        require_device(device)


class ForwardBackward(Benchmark, abc.ABC):
    """An op and its backward, each writing into a preallocated output.

    Subclasses have "shape" and "dtype" among their ``param_names`` and
    implement ``calls(device, *params) -> (forward, backward)``: zero-argument
    callables, warmed up, from a cache (see the module docstring). Bytes moved
    count each array the op takes or returns once: ``forward_traffic`` and
    ``backward_traffic`` give (arrays read, arrays written).
    """

    forward_traffic = (1, 1)
    backward_traffic = (2, 1)

    @abc.abstractmethod
    def calls(self, device, *params):
        """(forward, backward) for these parameters."""

    def setup(self, device, *params):
        super().setup(device, *params)
        self.device = device
        self.forward, self.backward = self.calls(device, *params)
        named = dict(zip(self.param_names, (device, *params), strict=True))
        shape, dtype = named["shape"], named["dtype"]
        self.forward_bytes = traffic_bytes(shape, dtype, *self.forward_traffic)
        self.backward_bytes = traffic_bytes(shape, dtype, *self.backward_traffic)

    def time_forward(self, *params):
        self.forward()
        sync(self.device)

    def time_backward(self, *params):
        self.backward()
        sync(self.device)

    def track_forward_gbps(self, *params):
        return gbps(self.forward_bytes, median_time(self.forward, self.device))

    track_forward_gbps.unit = "GB/s"

    def track_backward_gbps(self, *params):
        return gbps(self.backward_bytes, median_time(self.backward, self.device))

    track_backward_gbps.unit = "GB/s"

    def track_forward_copy_ratio(self, *params):
        copy = copy_reference(self.device, self.forward_bytes)
        return median_ratio(copy, self.forward, self.device)

    track_forward_copy_ratio.unit = "copy time / kernel time"

    def track_backward_copy_ratio(self, *params):
        copy = copy_reference(self.device, self.backward_bytes)
        return median_ratio(copy, self.backward, self.device)

    track_backward_copy_ratio.unit = "copy time / kernel time"
