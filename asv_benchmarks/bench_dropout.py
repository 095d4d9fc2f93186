"""Dropout (``gpunet.kernels.dropout``), forward and backward, over device x shape.

``Dropout`` times ``gn.ops.dropout`` into a preallocated output (the forward:
x in, y out) and the same kernel on grad_out (the backward draws the mask
again from the counter, so it moves the same bytes: grad_out in, grad_in
out). See ``common.ForwardBackward`` for the ``time_``, ``track_*_gbps`` and
``track_*_copy_ratio`` methods; the copy ratio is time(copy of the same
bytes) / time(kernel), so 1 means copy speed.
"""

import functools

import gpunet as gn

from .common import DEVICES, ForwardBackward, empty_like, random_array, shapes, sync

P, SEED = 0.2, 1234


@functools.cache
def _calls(device, shape, dtype):
    x = random_array(shape, dtype, device, seed=0)
    grad_out = random_array(shape, dtype, device, seed=1)
    out, grad_in = empty_like(x, device), empty_like(x, device)
    forward = functools.partial(gn.ops.dropout, x, P, SEED, 0, out=out)
    backward = functools.partial(gn.ops.dropout, grad_out, P, SEED, 0, out=grad_in)
    forward()
    backward()
    sync(device)
    return forward, backward


class Dropout(ForwardBackward):
    param_names = ["device", "shape", "dtype"]
    params = [list(DEVICES), shapes((8192, 1000), (256, 1024)), ["float32"]]
    backward_traffic = (1, 1)

    def calls(self, device, shape, dtype):
        return _calls(device, shape, dtype)
