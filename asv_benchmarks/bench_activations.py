"""Elementwise activations (``gpunet.kernels.activations``) through ``gn.ops``.

One class, ``Activations``, over device x activation x shape x dtype. Every
call writes into a preallocated ``out=``, so allocation is not timed.

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

from .common import (
    DEVICES,
    Benchmark,
    copy_reference,
    empty_like,
    gbps,
    median_ratio,
    median_time,
    random_array,
    shapes,
    sync,
    traffic_bytes,
)

ACTIVATIONS = ("step", "sigmoid", "tanh", "relu", "leaky_relu")
#: Activations whose backward takes the forward output (the rest take the input).
_SAVES_OUTPUT = ("sigmoid", "tanh")


@functools.lru_cache(maxsize=None)
def _calls(device, activation, shape, dtype):
    """(forward, backward): zero-argument calls of the op writing into
    preallocated outputs, warmed up (JIT compiled, outputs touched)."""
    x = random_array(shape, dtype, device, scale=3.0, seed=0)
    grad_out = random_array(shape, dtype, device, seed=1)
    y, grad_in = empty_like(x, device), empty_like(x, device)
    saved = y if activation in _SAVES_OUTPUT else x
    forward = functools.partial(getattr(gn.ops, activation), x, out=y)
    backward = functools.partial(getattr(gn.ops, f"{activation}_backward"), grad_out, saved, out=grad_in)
    forward()
    backward()
    sync(device)
    return forward, backward


class Activations(Benchmark):
    param_names = ["device", "activation", "shape", "dtype"]
    params = [
        list(DEVICES),
        list(ACTIVATIONS),
        shapes((256, 1024), (8192, 1000), (4096, 4096)),
        ["float32"],
    ]

    def setup(self, device, activation, shape, dtype):
        super().setup(device)
        self.device = device
        self.forward, self.backward = _calls(device, activation, shape, dtype)
        self.forward_bytes = traffic_bytes(shape, dtype, reads=1, writes=1)
        self.backward_bytes = traffic_bytes(shape, dtype, reads=2, writes=1)

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
