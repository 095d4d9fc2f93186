"""Array and argument checks shared by ``gn.ops``, the layers, losses,
optimizers and scalers: where arrays live, their dtypes and layouts, and new
arrays on a device. Each check raises before any kernel runs, with a message
naming the op and the argument ("expected ..., got ...").
"""

from __future__ import annotations

import numpy as np

from . import dispatch
from ._device import CPU, Device
from .kernels import _cuda

FLOAT_DTYPES = frozenset((np.dtype(np.float32), np.dtype(np.float64)))


def float_dtype(dtype) -> np.dtype:
    """``dtype`` as a numpy dtype, float32 or float64; TypeError otherwise."""
    dtype = np.dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"expected dtype float32 or float64, got {dtype}")
    return dtype


def on_host(arrays, out=None) -> bool:
    """True when every array (and ``out``, unless None) is a numpy array: the
    common case, checked cheaply."""
    for x in arrays:
        if type(x) is not np.ndarray:
            return False
    return out is None or type(out) is np.ndarray


def device_of(x) -> Device:
    """The device an array lives on (its current GPU for a CUDA array)."""
    if isinstance(x, np.ndarray):
        return CPU
    return Device("cuda", 0 if _cuda.SIMULATOR else _cuda.cuda.get_current_device().id)


def contiguous(op, name, kind, x):
    """``x`` as a C-contiguous array the kernels accept (a copy only on the host)."""
    if kind == "cpu":
        return np.ascontiguousarray(x)
    x = _cuda.as_device_array(x)
    if not x.is_c_contiguous():
        raise ValueError(
            f"{op}: expected {name} to be C-contiguous on the GPU, got strides {x.strides}"
        )
    return x


def empty(kind, shape, dtype):
    """A new uninitialised array on the host ("cpu") or the current GPU ("cuda")."""
    if kind == "cpu":
        return np.empty(shape, dtype)
    return _cuda.cuda.device_array(shape, dtype)


def zeros(shape, dtype, device: Device):
    """A new array of zeros on ``device``."""
    if device.type == "cpu":
        return np.zeros(shape, dtype)
    with _cuda.cuda.gpus[device.index]:
        a = _cuda.cuda.device_array(shape, dtype)
        dispatch.kernel_for("zero", "cuda")(a)
    return a


def flat(kind, x):
    """``x`` as a 1-D view (C-contiguous ``x``; on a GPU the same view each call)."""
    return x.ravel() if kind == "cpu" else _cuda.flat(x)


def check_dtypes(op, names, arrays):
    """All of ``arrays`` float32, or all float64."""
    first = arrays[0]
    for name, x in zip(names, arrays, strict=True):
        if x.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{op}: expected {name} of dtype float32 or float64, got {x.dtype}")
        if x.dtype != first.dtype:
            raise TypeError(
                f"{op}: expected {name} of dtype {first.dtype} like {names[0]}, got {x.dtype}"
            )


def inputs(op, names, arrays, out=None):
    """Check ``arrays`` (same shape and float dtype, one device, with ``out``);
    return (kind, C-contiguous inputs)."""
    first = arrays[0]
    if on_host(arrays, out):
        kind = "cpu"
    else:
        kind = dispatch.placement(op, **dict(zip(names, arrays, strict=True)), out=out)
    check_dtypes(op, names, arrays)
    for name, x in zip(names, arrays, strict=True):
        if x.shape != first.shape:
            raise ValueError(
                f"{op}: expected {name} of shape {first.shape} like {names[0]}, got {x.shape}"
            )
    return kind, [contiguous(op, name, kind, x) for name, x in zip(names, arrays, strict=True)]


def output(op, kind, out, shape, dtype, name="out"):
    """(array the kernel writes, object to return): a new array, or ``out`` checked
    (shape, dtype, C order, writable; its device was checked with the inputs)."""
    if out is None:
        result = empty(kind, shape, dtype)
        return result, result
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype:
        raise ValueError(
            f"{op}: expected {name} of shape {tuple(shape)} and dtype {np.dtype(dtype)}, "
            f"got {tuple(out.shape)} and {out.dtype}"
        )
    if kind == "cpu":
        if not out.flags.c_contiguous:
            raise ValueError(f"{op}: expected {name} to be C-contiguous")
        if not out.flags.writeable:
            raise ValueError(f"{op}: expected a writable {name}, got a read-only array")
        return out, out
    return contiguous(op, name, kind, out), out


def operands(op, names, arrays, out):
    """``inputs`` and ``output``: (kind, inputs, output array, the object to return)."""
    kind, checked = inputs(op, names, arrays, out)
    return (kind, checked, *output(op, kind, out, arrays[0].shape, arrays[0].dtype))


def check_alpha(op, alpha) -> float:
    """A leaky ReLU slope: any finite number."""
    if not np.isfinite(alpha):
        raise ValueError(f"{op}: expected a finite alpha, got {alpha}")
    return float(alpha)


def check_probability(op, p) -> float:
    """``p`` as a float in [0, 1]; TypeError or ValueError otherwise."""
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise TypeError(f"{op}: expected a number p, got {type(p).__name__}")
    if not 0 <= p <= 1:
        raise ValueError(f"{op}: expected a dropout probability p in [0, 1], got {p}")
    return float(p)
