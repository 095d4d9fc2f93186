"""Elementwise activations (``gpunet.kernels.activations``) through ``gn.ops``.

``Activations``, over device x activation x shape x dtype; every call writes
into a preallocated ``out=``, so allocation is not timed (see
``common.ForwardBackward``):

- ``time_forward`` / ``time_backward``: asv's timing of one call (and a sync).
- ``track_{forward,backward}_gbps``: bytes of the arrays the op reads and
  writes (forward: x in, y out; backward: grad_out and the saved array in,
  grad_in out), divided by the median time of one call.
- ``track_{forward,backward}_copy_ratio``: the kernel against a plain copy
  moving the same number of bytes (``np.copyto`` on the CPU, a device-to-device
  copy on CUDA), timed alternately in one process; median of time(copy) /
  time(kernel). 1.0 means the kernel moves its bytes as fast as a copy does.
  On the CPU the copy runs on one thread and the kernels on Numba's pool, so a
  ratio above 1 is possible there.

The backward ops take what PyTorch saves: the forward output for sigmoid and
tanh, the input for step, relu and leaky_relu.
"""

import functools

import gpunet as gn

from .common import DEVICES, ForwardBackward, empty_like, random_array, shapes, sync

ACTIVATIONS = ("step", "sigmoid", "tanh", "relu", "leaky_relu")
#: Activations whose backward takes the forward output (the rest take the input).
_SAVES_OUTPUT = ("sigmoid", "tanh")


@functools.cache
def _calls(device, activation, shape, dtype):
    """(forward, backward): zero-argument calls of the op writing into
    preallocated outputs, warmed up (JIT compiled, outputs touched)."""
    x = random_array(shape, dtype, device, scale=3.0, seed=0)
    grad_out = random_array(shape, dtype, device, seed=1)
    y, grad_in = empty_like(x, device), empty_like(x, device)
    saved = y if activation in _SAVES_OUTPUT else x
    forward = functools.partial(getattr(gn.ops, activation), x, out=y)
    backward = functools.partial(
        getattr(gn.ops, f"{activation}_backward"), grad_out, saved, out=grad_in
    )
    forward()
    backward()
    sync(device)
    return forward, backward


class Activations(ForwardBackward):
    param_names = ["device", "activation", "shape", "dtype"]
    params = [
        list(DEVICES),
        list(ACTIVATIONS),
        shapes((256, 1024), (8192, 1000), (4096, 4096)),
        ["float32"],
    ]

    def calls(self, device, activation, shape, dtype):
        return _calls(device, activation, shape, dtype)
