"""Batch normalization (``gpunet.kernels.batchnorm``) through ``gn.nn.BatchNorm1d``
in training mode, forward and backward, over device x shape.

The forward reads x and writes y (plus the (C,) statistics); the backward
reads grad_out and x and writes grad_in (plus the (C,) parameter gradients).
Both read their inputs twice (the column sums, then the outputs), so the
copy ratio, time(copy of the least bytes) / time(kernel), is at most about
2/3 where the arrays do not fit in cache. See ``common.ForwardBackward``.
"""

import functools

import gpunet as gn

from .common import DEVICES, ForwardBackward, random_array, shapes, sync


@functools.cache
def _calls(device, shape, dtype):
    x = random_array(shape, dtype, device, scale=2.0, seed=0)
    grad_out = random_array(shape, dtype, device, seed=1)
    layer = gn.nn.BatchNorm1d(shape[1], dtype=dtype, device=device)
    forward = functools.partial(layer.forward, x)
    backward = functools.partial(layer.backward, grad_out)
    forward()
    backward()
    sync(device)
    return forward, backward


class BatchNorm(ForwardBackward):
    param_names = ["device", "shape", "dtype"]
    params = [list(DEVICES), shapes((8192, 1000), (256, 1024)), ["float32"]]

    def calls(self, device, shape, dtype):
        return _calls(device, shape, dtype)
