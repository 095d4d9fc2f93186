"""The base class of every layer: ``forward``, ``backward``, ``parameters``
and their flat buffers, ``train``/``eval``, ``to``, ``state_dict`` and the
layer's own reused output arrays. Layers live in :mod:`gpunet.nn` and
:mod:`gpunet.recurrent`, which both build on this module.
"""

from __future__ import annotations

import numpy as np

from ._arrays import device_of as _device_of
from ._arrays import empty
from ._arrays import zeros as _zeros
from ._device import _resolve, get_device, to_device, to_numpy
from .parameter import Parameter, pack


class Layer:
    """Base class: ``forward``, ``backward``, ``parameters``, ``train``/``eval``, ``to``."""

    #: Declared True in a class's own body when its forward and backward do
    #: all their array work through registry kernels on arrays the layer
    #: keeps, and change no Python state a later step reads: ``fit`` may then
    #: replay its training steps on the CPU (gpunet.replay). Not inherited.
    host_replay = False

    def __init__(self):
        self.training = True
        self._outputs = {}

    def forward(self, x):
        raise NotImplementedError

    def backward(self, grad_out, *, input_grad: bool = True):
        raise NotImplementedError

    __call__ = forward

    def parameters(self) -> list[Parameter]:
        """The layer's learnable parameters (none for activations)."""
        return []

    def flat_parameters(self):
        """(data, grad): the 1-D buffers, on the layer's device, that hold all
        its parameters' values and gradients in ``parameters()`` order; each
        Parameter's ``data`` and ``grad`` is a view into them. Writing into
        them changes the parameters. Parameters of several dtypes or devices
        have no one pair of buffers (ValueError)."""
        params = self.parameters()
        kinds = {(p.device, p.dtype) for p in params}
        if len(kinds) > 1:
            found = ", ".join(sorted(f"{np.dtype(t).name} on {d}" for d, t in kinds))
            raise ValueError(f"{type(self).__name__}: parameters of several kinds ({found})")
        if not params:
            device = getattr(self, "device", None) or get_device()
            dtype = getattr(self, "dtype", np.float32)
            return tuple(_zeros(0, dtype, device) for _ in range(2))
        flat, start = params[0]._flat, params[0]._offset
        end, contiguous_run = start, True
        for p in params:
            contiguous_run = contiguous_run and p._flat is flat and p._offset == end
            end += p.size
        if not contiguous_run:
            flat = pack(params)[params[0].device, params[0].dtype]
            start, end = 0, flat.size
        if start == 0 and end == flat.size:
            return flat.data, flat.grad
        return flat.views(start, (end - start,))

    def state_dict(self) -> dict[str, np.ndarray]:
        """Every array the layer needs to be rebuilt (name -> host copy):
        its parameters, then its buffers."""
        arrays = {name: to_numpy(p.data).copy() for name, p in self._named_parameters()}
        arrays.update((name, to_numpy(b).copy()) for name, b in self._named_buffers())
        return arrays

    def load_state_dict(self, arrays: dict) -> None:
        """Set the layer's arrays from ``state_dict()``-shaped host arrays."""
        for name, p in self._named_parameters():
            p.data = self._loaded(arrays, name, p.data)
        for name, buffer in self._named_buffers():
            setattr(self, name, self._loaded(arrays, name, buffer))

    def _loaded(self, arrays, name, current):
        """``arrays[name]`` checked against ``current``, in its dtype and on its device."""
        if name not in arrays:
            raise ValueError(f"{type(self).__name__}: missing array {name!r}")
        value = np.asarray(arrays[name])
        if value.shape != tuple(current.shape):
            raise ValueError(
                f"{type(self).__name__}: expected {name} of shape {tuple(current.shape)}, "
                f"got {value.shape}"
            )
        return to_device(np.array(value, current.dtype, order="C"), _device_of(current))

    def _named_parameters(self) -> list[tuple[str, Parameter]]:
        return []

    def _named_buffers(self) -> list[tuple[str, object]]:
        """Arrays saved and moved with the parameters but not learned (running
        statistics), as (attribute name, array)."""
        return []

    def train(self, mode: bool = True) -> Layer:
        """Training mode (True) or evaluation mode (False); returns self."""
        self.training = bool(mode)
        return self

    def eval(self) -> Layer:
        """Evaluation mode; returns self."""
        return self.train(False)

    def to(self, device) -> Layer:
        """Move the layer's arrays to ``device``; returns self."""
        for p in self.parameters():
            p.to(device)
        pack(self.parameters())
        device = _resolve(device)
        for name, buffer in self._named_buffers():
            if _device_of(buffer) != device:
                setattr(self, name, to_device(to_numpy(buffer), device))
        self._outputs.clear()
        return self

    def config(self) -> dict:
        """The constructor's arguments, JSON-serialisable (for saving and repr)."""
        return {}

    def _output(self, name, kind, shape, dtype):
        """The layer's own array ``name`` of this shape, reused while the shape holds."""
        key = (name, kind, shape, dtype)
        found = self._outputs.get(key)
        if found is None:
            for old in [k for k in self._outputs if k[0] == name]:
                del self._outputs[old]
            found = self._outputs[key] = empty(kind, shape, dtype)
        return found

    def _check_input(self, x, features, dtype):
        if not hasattr(x, "shape") or len(x.shape) != 2:
            raise ValueError(
                f"{type(self).__name__}: expected a 2-D input (batch, {features}), "
                f"got {getattr(x, 'shape', type(x).__name__)}"
            )
        if x.shape[1] != features:
            raise ValueError(
                f"{type(self).__name__}: expected input of shape (batch, {features}), got {x.shape}"
            )
        if x.dtype != dtype:
            raise TypeError(f"{type(self).__name__}: expected a {dtype} input, got {x.dtype}")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    @classmethod
    def expected_arrays(cls, config: dict) -> dict:
        """{name: (shape, dtype)} of the arrays in ``state_dict()`` of a layer
        built from ``config``, found without building it (``gn.load`` checks a
        file against them before allocating anything). Layers with arrays
        override it; ValueError or TypeError for a config that cannot be built."""
        return {}

    def min_training_rows(self) -> int:
        """The fewest rows a training-mode forward takes (``fit`` folds a
        smaller last batch into the one before it)."""
        return 1
