"""Devices: what exists, which one is current, and moving arrays between them.

The current device decides where new arrays are made (``to_device`` with no
device, layers' parameters); ops themselves run wherever their inputs live.
It is, in order of precedence: the innermost ``with gn.device(...)`` block, the
last ``gn.set_device(...)``, the ``GPUNET_DEVICE`` environment variable, and
``"auto"`` (CUDA when present, else the CPU).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import logging
import os
import re

import numpy as np

from .kernels import _cuda

log = logging.getLogger("gpunet")


class DeviceError(RuntimeError):
    """A device was asked for that does not exist, or arrays live on different devices."""


@dataclasses.dataclass(frozen=True)
class Device:
    """A place where arrays live: ``type`` is ``"cpu"`` or ``"cuda"``; ``index``
    is the GPU ordinal (``None`` for the CPU). ``str()`` gives ``"cpu"`` or ``"cuda:0"``."""

    type: str
    index: int | None = None

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self) -> str:
        return f"Device('{self}')"

    @property
    def name(self) -> str:
        """A human-readable description: the GPU's name, or "CUDA simulator"."""
        if self.type == "cpu":
            return "CPU"
        if _cuda.SIMULATOR:
            return "CUDA simulator (NUMBA_ENABLE_CUDASIM=1)"
        name = _cuda.cuda.gpus[self.index].name
        return name.decode() if isinstance(name, bytes) else name

    @property
    def is_simulator(self) -> bool:
        return self.type == "cuda" and _cuda.SIMULATOR


CPU = Device("cpu")


@functools.lru_cache(maxsize=1)
def cuda_status() -> tuple[int, str]:
    """(number of usable CUDA devices, why there are none when it is 0).

    The simulator counts as one device.
    """
    if not _cuda.HAVE_NUMBA_CUDA:
        return 0, "numba-cuda is not installed (pip install 'gpunet[cuda12]' or '[cuda13]')"
    if _cuda.SIMULATOR:
        return 1, ""
    from numba.cuda.cudadrv import driver

    try:
        count = driver.driver.get_device_count()
    except Exception as exc:  # the driver library is missing or failed to initialise
        reason = " ".join(str(exc).split())
        if "cannot be found" in reason:
            return 0, "no NVIDIA driver was found (the CUDA driver library is not installed)"
        return 0, f"the CUDA driver could not be initialised: {reason}"
    if count == 0:
        return 0, "the NVIDIA driver is installed but reports no CUDA device"
    if not _cuda.cuda.is_available():
        return 0, "CUDA devices were found but none is usable by numba-cuda"
    return count, ""


def devices() -> list[Device]:
    """Every device gpunet can use: the CPU, then each CUDA GPU (or the simulator)."""
    count, _ = cuda_status()
    return [CPU] + [Device("cuda", i) for i in range(count)]


_DEVICE_RE = re.compile(r"^(cpu|cuda|auto)(?::(\d+))?$")


def _resolve(spec) -> Device:
    """Turn a Device, "cpu", "cuda", "cuda:N" or "auto" into a usable Device."""
    if isinstance(spec, Device):
        spec = str(spec)
    if not isinstance(spec, str):
        raise TypeError(
            f"expected a Device or a string like 'cpu', 'cuda:0' or 'auto', got {spec!r}"
        )
    match = _DEVICE_RE.match(spec.strip().lower())
    if match is None or (match[1] != "cuda" and match[2] is not None):
        raise ValueError(f"expected 'cpu', 'cuda', 'cuda:N' or 'auto', got {spec!r}")
    kind, index = match[1], match[2]
    count, reason = cuda_status()
    if kind == "cpu":
        return CPU
    if kind == "auto":
        if count:
            return Device("cuda", 0)
        _log_cpu_fallback(reason)
        return CPU
    if count == 0:
        raise DeviceError(
            f"CUDA was requested ({spec!r}) but is unavailable: {reason}. "
            "Run on the CPU with gn.set_device('cpu') or GPUNET_DEVICE=cpu, or simulate "
            "a GPU (slowly) with NUMBA_ENABLE_CUDASIM=1."
        )
    index = int(index or 0)
    if index >= count:
        raise DeviceError(f"cuda:{index} was requested but only {count} CUDA device(s) exist")
    return Device("cuda", index)


@functools.lru_cache(maxsize=1)
def _log_cpu_fallback(reason: str) -> None:
    log.info("gpunet: running on the CPU: %s", reason)


_context_device: contextvars.ContextVar[Device | None] = contextvars.ContextVar(
    "gpunet_device", default=None
)
_default_device: Device | None = None


def get_device() -> Device:
    """The current device (see the module docstring for how it is chosen)."""
    global _default_device
    current = _context_device.get()
    if current is not None:
        return current
    if _default_device is None:
        _default_device = _resolve(os.environ.get("GPUNET_DEVICE", "auto"))
    return _default_device


def set_device(spec="auto") -> Device:
    """Make ``spec`` ("cpu", "cuda", "cuda:N", "auto" or a Device) the default device.

    Raises DeviceError when CUDA is asked for and none is usable.
    """
    global _default_device
    _default_device = _resolve(spec)
    return _default_device


@contextlib.contextmanager
def device(spec):
    """``with gn.device("cpu"): ...`` makes ``spec`` current inside the block."""
    token = _context_device.set(_resolve(spec))
    try:
        yield _context_device.get()
    finally:
        _context_device.reset(token)


def to_device(x, device=None):
    """``x`` on ``device`` (default: the current device).

    On the CPU the result is a numpy array; on a GPU a Numba device array.
    An array already there is returned without a copy (CUDA arrays from CuPy or
    PyTorch are wrapped, not copied). Lists and scalars become arrays.
    """
    target = get_device() if device is None else _resolve(device)
    if target.type == "cpu":
        return to_numpy(x)
    if _cuda.is_device_array(x):
        return _cuda.as_device_array(x)
    with _cuda.cuda.gpus[target.index]:
        return _cuda.cuda.to_device(np.asarray(x, order="C"))  # keeps 0-d arrays 0-d


def to_numpy(x) -> np.ndarray:
    """``x`` as a numpy array, copied from the GPU if it lives there."""
    if _cuda.is_device_array(x):
        return _cuda.as_device_array(x).copy_to_host()
    return np.asarray(x)
