"""Array and argument checks shared by ``gn.ops``, the layers, losses,
optimizers and scalers: where arrays live, their dtypes and layouts, and new
arrays on a device. Each check raises before any kernel runs, with a message
naming the op and the argument ("expected ..., got ...").
"""

from __future__ import annotations

import numpy as np

from . import dispatch
from ._device import CPU, Device, DeviceError
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
    """``x`` as a C-contiguous array the kernels accept, of x's shape (a copy
    only on the host)."""
    if kind == "cpu":
        return np.asarray(x, order="C")  # not ascontiguousarray: it makes 0-d arrays 1-D
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
    """``inputs`` and ``output``: (kind, inputs, output array, the object to return).
    ``out`` may be an input itself, not partly overlap one."""
    kind, checked = inputs(op, names, arrays, out)
    if out is not None:
        apart(op, kind, [("out", out)], list(zip(names, arrays, strict=True)), same=True)
    return (kind, checked, *output(op, kind, out, arrays[0].shape, arrays[0].dtype))


def _span(kind, x):
    """(first, end, shape, strides): the byte addresses that the elements of
    ``x`` (a numpy or Numba device array) span, and its view of them; None
    when it has no elements."""
    if 0 in x.shape:
        return None
    first = x.__array_interface__["data"][0] if kind == "cpu" else _cuda.address(x)
    end = first
    for n, stride in zip(x.shape, x.strides, strict=True):
        if stride > 0:
            end += stride * (n - 1)
        else:
            first += stride * (n - 1)
    return first, end + x.dtype.itemsize, tuple(x.shape), tuple(x.strides)


def _relation(a, b):
    """None (apart), "same" or "partial" for two ``_span``s."""
    if a is None or b is None or a[1] <= b[0] or b[1] <= a[0]:
        return None
    return "same" if (a[0], a[2], a[3]) == (b[0], b[2], b[3]) else "partial"


def overlap(kind, a, b):
    """How the arrays ``a`` and ``b`` on device kind ``kind`` share memory:
    None (apart), "same" (one address, shape and strides: the same view) or
    "partial". By the spans of memory they cover, as ``np.may_share_memory``
    and the CPU launchers (``kernels._cpu.overlaps_partly``) judge."""
    if kind == "cuda":
        a, b = _cuda.as_device_array(a), _cuda.as_device_array(b)
    elif not np.may_share_memory(a, b):  # the same test on spans, done in C
        return None
    return _relation(_span(kind, a), _span(kind, b))


#: The owner of host memory that no numpy array owns (a buffer, a mapped file).
_UNKNOWN = id(None)


def _owner(x):
    """The id of the numpy array whose memory the host array ``x`` views (x
    itself when it owns its memory), or _UNKNOWN."""
    while x.base is not None:
        if not isinstance(x.base, np.ndarray):
            return _UNKNOWN
        x = x.base
    return id(x)


def apart(op, kind, outputs, inputs, same=False):
    """Check that the kernel's ``outputs`` ((name, array or None) pairs)
    share no memory with its ``inputs`` (pairs likewise) or with each other:
    a kernel that writes an array while it reads another from the same
    memory reads values it has already changed. With ``same`` (True, or a
    set of (output name, input name) pairs), an output may be exactly an
    input (the same view: an elementwise kernel reads each element before it
    writes it). ValueError otherwise.

    On the host only arrays in the memory of one numpy array are compared
    (np.may_share_memory, then their spans): layers pass buffers of their
    own, so that most calls compare nothing. On a GPU every pair is compared,
    each array's span read once."""
    if kind != "cpu":
        _apart_on_device(op, kind, outputs, inputs, same)
        return
    # This runs on every host op, hence the two loops written out. numpy
    # points a view's base at the array that owns the memory, so that one or
    # two attribute reads find most arrays' owner.
    ndarray = np.ndarray
    seen = {}  # owner -> ((name, array, is an input), ...)
    for name, a in inputs:
        if a is not None:
            base = a.base
            if base is None:
                key = id(a)
            else:
                key = id(base) if base.__class__ is ndarray and base.base is None else _owner(a)
            seen[key] = seen[key] + ((name, a, True),) if key in seen else ((name, a, True),)
    unknown = seen.get(_UNKNOWN, ())
    for name, out in outputs:
        if out is None:
            continue
        base = out.base
        if base is None:
            key = id(out)
        else:
            key = id(base) if base.__class__ is ndarray and base.base is None else _owner(out)
        group = seen.get(key, ())
        if group or unknown or key == _UNKNOWN:
            if key == _UNKNOWN:
                group = tuple(entry for entries in seen.values() for entry in entries)
            for other, x, is_input in group + unknown:
                if np.may_share_memory(out, x):  # the span test, in C
                    relation = _relation(_span(kind, out), _span(kind, x))
                    _check_pair(op, name, other, relation, _may_be(same, name, other, is_input))
        seen[key] = seen.get(key, ()) + ((name, out, False),)


def _may_be(same, name, other, is_input):
    """Whether ``apart``'s output ``name`` may be exactly the array ``other``."""
    return is_input and (same is True or (name, other) in (same or ()))


def _apart_on_device(op, kind, outputs, inputs, same):
    """``apart`` for device arrays: every pair, by spans read once."""
    seen = []  # (name, span, is an input)
    for name, a in inputs:
        if a is not None:
            seen.append((name, _span(kind, _cuda.as_device_array(a)), True))
    for name, out in outputs:
        if out is None:
            continue
        span = _span(kind, _cuda.as_device_array(out))
        for other, x_span, is_input in seen:
            _check_pair(
                op, name, other, _relation(span, x_span), _may_be(same, name, other, is_input)
            )
        seen.append((name, span, False))


def _check_pair(op, name, other, found, may_be_same):
    """ValueError when the output ``name`` and the array ``other`` share memory
    (``found``: what ``_relation`` found), unless the output is exactly that
    array and ``may_be_same``."""
    if found is None or (found == "same" and may_be_same):
        return
    allowed = f" (or to be {other} itself)" if may_be_same else ""
    raise ValueError(
        f"{op}: expected {name} not to overlap {other} in memory{allowed}, "
        f"got arrays that share memory"
    )


def assign(owner, name, buffer, value) -> None:
    """Copy ``value`` into ``buffer``, the array ``owner`` (a class name, for
    errors) keeps as ``name``: an array of another shape (ValueError), dtype
    (TypeError) or device (DeviceError) than the buffer is refused, and so
    is anything but an array (TypeError), so that kernels are never handed
    an array of a size the object's others do not match."""
    if value is None:
        raise TypeError(f"{owner}: expected {name} to be an array, got None")
    kind = dispatch.placement(owner, **{name: value})
    if tuple(value.shape) != tuple(buffer.shape):
        raise ValueError(
            f"{owner}: expected {name} of shape {tuple(buffer.shape)}, got {tuple(value.shape)}"
        )
    if value.dtype != buffer.dtype:
        raise TypeError(f"{owner}: expected {name} of dtype {buffer.dtype}, got {value.dtype}")
    where = device_of(buffer)
    if kind != where.type:
        raise DeviceError(
            f"{owner}: expected {name} on {where}, got an array on {device_of(value)}; "
            f"move it with gn.to_device(x, {str(where)!r})"
        )
    if kind == "cpu":
        np.copyto(buffer, value)
    else:
        with _cuda.cuda.gpus[where.index]:
            buffer.copy_to_device(_cuda.as_device_array(value))


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
