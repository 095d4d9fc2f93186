"""Softmax and log-softmax over the last axis (``gpunet.kernels.softmax``).

``Softmax``, over device x op x shape x dtype, times ``gn.ops.<op>`` and
``gn.ops.<op>_backward`` writing into a preallocated ``out=`` (see
``common.ForwardBackward``):

- ``time_forward`` / ``time_backward``: asv's timing of one call (and a sync).
- ``track_{forward,backward}_gbps``: the least traffic the op needs (forward:
  x in, y out; backward: grad_out and y in, grad_in out; each array once)
  divided by the median time of one call. The kernels read x more than once
  (max, sum, write passes), so this is the useful rate, not the bus's.
- ``track_{forward,backward}_copy_ratio``: median of time(copy) / time(kernel)
  for a plain copy of the same number of bytes, timed alternately.

(8192, 4096) runs on CUDA only; (128, 10) is a classifier's logits, where the
call overhead is what is measured.

Peers, on the CPU only, timed alternately with gpunet in the same process:
``SoftmaxVsNumpy.track_ratio_vs_numpy`` against numpy written the usual
stable way, and ``SoftmaxVsTorch.track_ratio_vs_torch`` against
``torch.softmax`` / ``torch.log_softmax`` and torch's fused backward kernels
(skipped when torch is not importable; torch is not a dependency). Each side
is called the way a user calls it, returning a new array, so both pay for the
allocation. The ratio is time(peer) / time(gpunet): above 1, gpunet is faster.
torch is given as many threads as Numba's pool has, numpy uses one thread.
"""

import functools

import numba
import numpy as np

import gpunet as gn

from .common import (
    DEVICES,
    Benchmark,
    ForwardBackward,
    empty_like,
    median_ratio,
    random_array,
    shapes,
    sync,
)

OPS = ("softmax", "log_softmax")
#: Shapes too large to be worth the CPU's time in every run.
CUDA_ONLY = ((8192, 4096),)


def _inputs(op, shape, dtype, device):
    """x, grad_out and y = op(x) for ``op`` ("softmax" or "log_softmax")."""
    x = random_array(shape, dtype, device, scale=3.0, seed=0)
    grad_out = random_array(shape, dtype, device, seed=1)
    y = getattr(gn.ops, op)(x)
    return x, grad_out, y


@functools.cache
def _calls(device, op, shape, dtype):
    """(forward, backward): zero-argument calls of ``op`` and its backward
    writing into preallocated outputs, warmed up (JIT compiled, outputs touched)."""
    x, grad_out, y = _inputs(op, shape, dtype, device)
    out, grad_in = empty_like(x, device), empty_like(x, device)
    forward = functools.partial(getattr(gn.ops, op), x, out=out)
    backward = functools.partial(getattr(gn.ops, f"{op}_backward"), grad_out, y, out=grad_in)
    forward()
    backward()
    sync(device)
    return forward, backward


class Softmax(ForwardBackward):
    param_names = ["device", "op", "shape", "dtype"]
    params = [list(DEVICES), list(OPS), shapes((8192, 1000), (128, 10), *CUDA_ONLY), ["float32"]]

    def setup(self, device, op, shape, dtype):
        if device == "cpu" and shape in CUDA_ONLY:
            raise NotImplementedError(f"{shape} is benchmarked on CUDA only")
        super().setup(device, op, shape, dtype)

    def calls(self, device, op, shape, dtype):
        return _calls(device, op, shape, dtype)


# --- peers on the CPU -----------------------------------------------------------------


def _numpy_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _numpy_log_softmax(x):
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _numpy_softmax_backward(grad_out, y):
    return y * (grad_out - (grad_out * y).sum(-1, keepdims=True))


def _numpy_log_softmax_backward(grad_out, y):
    return grad_out - np.exp(y) * grad_out.sum(-1, keepdims=True)


NUMPY_PEERS = {
    "softmax": _numpy_softmax,
    "log_softmax": _numpy_log_softmax,
    "softmax_backward": _numpy_softmax_backward,
    "log_softmax_backward": _numpy_log_softmax_backward,
}


class _SoftmaxPeer(Benchmark):
    """gpunet's ``op`` on the CPU, called as a user would, ready to race a peer."""

    param_names = ["device", "op", "shape", "dtype"]
    params = [["cpu"], list(NUMPY_PEERS), shapes((8192, 1000), (128, 10)), ["float32"]]

    def setup(self, device, op, shape, dtype):
        super().setup(device)
        x, grad_out, y = _inputs(op.removesuffix("_backward"), shape, dtype, device)
        self.args = (grad_out, y) if op.endswith("_backward") else (x,)
        self.gpunet = functools.partial(getattr(gn.ops, op), *self.args)
        self.gpunet()  # warm-up: JIT compilation


class SoftmaxVsNumpy(_SoftmaxPeer):
    def setup(self, device, op, shape, dtype):
        super().setup(device, op, shape, dtype)
        self.numpy = functools.partial(NUMPY_PEERS[op], *self.args)
        self.numpy()

    def track_ratio_vs_numpy(self, *params):
        return median_ratio(self.numpy, self.gpunet, "cpu")

    track_ratio_vs_numpy.unit = "numpy time / gpunet time"


class SoftmaxVsTorch(_SoftmaxPeer):
    def setup(self, device, op, shape, dtype):
        try:
            import torch
        except ImportError:
            raise NotImplementedError("torch is not installed") from None
        super().setup(device, op, shape, dtype)
        torch.set_num_threads(numba.get_num_threads())
        tensors = [torch.from_numpy(a) for a in self.args]
        if op.endswith("_backward"):
            fn = getattr(torch, f"_{op}_data")  # torch's fused kernel, as autograd calls it
            self.torch = functools.partial(fn, *tensors, -1, tensors[0].dtype)
        else:
            self.torch = functools.partial(getattr(torch, op), *tensors, -1)
        self.torch()

    def track_ratio_vs_torch(self, *params):
        return median_ratio(self.torch, self.gpunet, "cpu", foreign_threads=True)

    track_ratio_vs_torch.unit = "torch time / gpunet time"
