"""Learnable parameters and the flat buffers they live in.

A :class:`Parameter`'s ``data`` and ``grad`` are views into two 1-D buffers
of one dtype on one device (a :class:`FlatBuffers`): a parameter made alone
has buffers of its own, and :func:`pack` moves a set of parameters (a layer's,
a model's) into one pair of buffers per dtype and device, so that an
optimizer step is one kernel launch and an allreduce one message.

Assigning to ``p.data`` copies into the view; an array of another shape,
dtype or device is refused, so kernels never see an array of a size the
buffers do not hold.
"""

from __future__ import annotations

import math

import numpy as np

from . import dispatch
from ._arrays import FLOAT_DTYPES, device_of, empty, zeros
from ._device import Device, DeviceError, _resolve, to_device, to_numpy
from .kernels import _cuda


class FlatBuffers:
    """``data`` and ``grad``: two 1-D arrays of ``size`` elements of ``dtype``
    on ``device``, which the parameters packed into them view."""

    def __init__(self, size: int, dtype, device: Device):
        self.device, self.dtype = device, np.dtype(dtype)
        self.data = _on(device, lambda: empty(device.type, size, self.dtype))
        self.grad = zeros(size, self.dtype, device)

    @property
    def size(self) -> int:
        return int(self.data.shape[0])

    def views(self, offset: int, shape: tuple):
        """(data view, grad view) of ``shape`` starting at element ``offset``."""
        n = math.prod(shape)
        return tuple(
            _on(self.device, lambda a=a: a[offset : offset + n].reshape(shape))
            for a in (self.data, self.grad)
        )


def _on(device: Device, make):
    """``make()`` with ``device`` current (on a GPU)."""
    if device.type == "cpu":
        return make()
    with _cuda.cuda.gpus[device.index]:
        return make()


#: How many times a parameter was bound to buffers: a cache of where
#: parameters lie (an optimizer's update plan) holds while it is unchanged.
bindings = 0


class Parameter:
    """A learnable array: ``data``, and ``grad`` (d loss / d data) of the same
    shape, dtype and device, both views into flat buffers (see the module).

    ``zero_grad()`` is lazy: it marks the gradient as zero, the next backward
    pass writes it instead of adding to it, and reading ``grad`` before then
    gives zeros.
    """

    def __init__(self, data, name: str = ""):
        self.name = name
        if not (isinstance(data, np.ndarray) or _cuda.is_device_array(data)):
            data = np.asarray(data)
        if data.dtype not in FLOAT_DTYPES:
            raise TypeError(f"Parameter: expected dtype float32 or float64, got {data.dtype}")
        device = device_of(data)
        flat = FlatBuffers(math.prod(data.shape), data.dtype, device)
        self._bind(flat, 0, tuple(data.shape))
        self._copy_in(data)

    def _bind(self, flat: FlatBuffers, offset: int, shape: tuple) -> None:
        """Make the parameter view ``flat`` at ``offset``; its gradient counts as zero."""
        global bindings
        bindings += 1
        self._flat, self._offset, self._shape = flat, offset, shape
        self._data, self._grad = flat.views(offset, shape)
        self._grad_is_zero = True

    def _copy_in(self, value) -> None:
        if self._flat.device.type == "cpu":
            np.copyto(self._data, value)
        else:
            with _cuda.cuda.gpus[self._flat.device.index]:
                self._data.copy_to_device(_cuda.as_device_array(value))

    @property
    def data(self):
        """The values: a view into the flat data buffer."""
        return self._data

    @data.setter
    def data(self, value) -> None:
        """Copy ``value`` (same shape, dtype and device) into the parameter."""
        where = self._flat.device
        if not (isinstance(value, np.ndarray) or _cuda.is_device_array(value)):
            raise TypeError(
                f"parameter {self.name or 'unnamed'}: expected an array, got {type(value).__name__}"
            )
        if tuple(value.shape) != self._shape:
            raise ValueError(
                f"parameter {self.name or 'unnamed'}: expected an array of shape {self._shape}, "
                f"got {tuple(value.shape)}"
            )
        if value.dtype != self._flat.dtype:
            raise TypeError(
                f"parameter {self.name or 'unnamed'}: expected dtype {self._flat.dtype}, "
                f"got {value.dtype}"
            )
        if device_of(value).type != where.type:
            raise DeviceError(
                f"parameter {self.name or 'unnamed'}: expected an array on {where}, got one on "
                f"{device_of(value)}; move it with gn.to_device(x, {str(where)!r})"
            )
        self._copy_in(value)

    @property
    def device(self) -> Device:
        return self._flat.device

    @property
    def shape(self) -> tuple:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return self._flat.dtype

    @property
    def size(self) -> int:
        return math.prod(self._shape)

    @property
    def grad(self):
        """d loss / d data, summed over backward passes since ``zero_grad()``."""
        if self._grad_is_zero:
            dispatch.kernel_for("zero", self.device.type)(self._grad)
            self._grad_is_zero = False
        return self._grad

    def zero_grad(self) -> None:
        """Make the gradient zero (lazily, see the class docstring)."""
        self._grad_is_zero = True

    def _grad_for_backward(self):
        """(gradient array, accumulate?) for a backward pass that then owns it."""
        accumulate = not self._grad_is_zero
        self._grad_is_zero = False
        return self._grad, accumulate

    def to(self, device) -> Parameter:
        """Move data and gradient to ``device`` (in place, into buffers of its
        own there); returns self."""
        device = _resolve(device)
        if device != self.device:
            grad = None if self._grad_is_zero else to_numpy(self._grad)
            data = to_device(to_numpy(self._data), device)
            self._bind(FlatBuffers(self.size, self.dtype, device), 0, self._shape)
            self._copy_in(data)
            if grad is not None:
                self._grad_is_zero = False
                _on(device, lambda: _copy_into(self._grad, to_device(grad, device)))
        return self

    def __repr__(self) -> str:
        dtype = np.dtype(self.dtype).name
        return f"Parameter({self.name or 'unnamed'}, shape={self.shape}, {dtype}, {self.device})"


def _copy_into(dst, src) -> None:
    if isinstance(dst, np.ndarray):
        np.copyto(dst, src)
    else:
        dst.copy_to_device(src)


def pack(params) -> dict[tuple[Device, np.dtype], FlatBuffers]:
    """Move ``params`` into one pair of flat buffers per (device, dtype), in
    order, keeping their values and gradients; returns the buffers."""
    groups: dict[tuple[Device, np.dtype], list[Parameter]] = {}
    for p in params:
        groups.setdefault((p.device, p.dtype), []).append(p)
    packed = {}
    for (device, dtype), members in groups.items():
        if len(members) == 1 and members[0]._flat.size == members[0].size:
            packed[device, dtype] = members[0]._flat  # already alone in its buffers
            continue
        flat = FlatBuffers(sum(p.size for p in members), dtype, device)
        offset = 0
        for p in members:
            data, grad, grad_is_zero = p._data, p._grad, p._grad_is_zero
            p._bind(flat, offset, p.shape)
            _on(device, lambda p=p, data=data: _copy_into(p._data, data))
            if not grad_is_zero:
                _on(device, lambda p=p, grad=grad: _copy_into(p._grad, grad))
                p._grad_is_zero = False
            offset += p.size
        packed[device, dtype] = flat
    return packed


def flat_buffers(params) -> FlatBuffers | None:
    """The one pair of buffers that ``params`` fill exactly, in order, or None."""
    params = list(params)
    if not params:
        return None
    flat, offset = params[0]._flat, 0
    for p in params:
        if p._flat is not flat or p._offset != offset:
            return None
        offset += p.size
    return flat if offset == flat.size else None
