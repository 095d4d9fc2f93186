"""LSTM forward plus backward through time (``gpunet.kernels.recurrent``).

``LSTMForwardBackward``, over device and shape (T, B, I, H) = (sequence,
batch, input, hidden), float32, times one ``gn.nn.LSTM`` forward and backward
(parameter gradients accumulated, the input's gradient computed):

- ``time_forward_backward``: one forward and backward (and a sync).
- ``track_gflops``: the products' flops (2 T B 4H (I + H) forward, twice
  that backward) over the median time.
- ``track_floor_ratio``: time of the products alone (the input projection,
  T products with w_hh forward and T backward, the three weight and input
  gradient products; numpy's BLAS on the CPU) over gpunet's time, timed
  alternately: the fraction of the products' speed the layer keeps with its
  gates, states and sequence bookkeeping. CPU only.
- ``track_ratio_vs_torch``: time(torch.nn.LSTM forward + backward) / time(gpunet),
  alternating, on the same device (torch's CUDA build for CUDA). Above 1,
  gpunet is faster.
"""

import functools

import numpy as np
from gpunet.kernels import blas

import gpunet as gn

from .common import DEVICES, Benchmark, median_ratio, median_time, random_array, shapes, sync


@functools.cache
def _lstm(device, shape):
    """Warmed-up (gpunet step, torch step or None, floor or None) for shape (T, B, I, H)."""
    T, B, I, H = shape  # noqa: E741
    layer = gn.nn.LSTM(I, H, seed=0, device=device)
    x = random_array((T, B, I), "float32", device, seed=0)
    g = random_array((T, B, H), "float32", device, seed=1)

    def step():
        layer.forward(x)
        layer.backward(g)

    step()
    torch_step = _torch_step(device, shape)
    floor = _floor(shape) if device == "cpu" else None
    return step, torch_step, floor


def _torch_step(device, shape):
    try:
        import torch
    except ImportError:
        return None
    T, B, I, H = shape  # noqa: E741
    if device == "cuda" and not torch.cuda.is_available():
        return None
    where = "cuda" if device == "cuda" else "cpu"
    layer = torch.nn.LSTM(I, H).to(where)
    x = torch.randn(T, B, I, device=where)
    g = torch.randn(T, B, H, device=where)

    def step():
        out, _ = layer(x)
        out.backward(g)
        if where == "cuda":
            torch.cuda.synchronize()

    step()
    return step


def _floor(shape):
    """The products an LSTM forward and backward needs, through numpy's BLAS."""
    T, B, I, H = shape  # noqa: E741
    rng = np.random.default_rng(0)

    def r(*s):
        return rng.random(s, dtype=np.float32)

    x, w_ih, w_hh, h, dg = r(T * B, I), r(4 * H, I), r(4 * H, H), r(B, H), r(T * B, 4 * H)
    xw, gates, dh, hs = r(T * B, 4 * H), r(B, 4 * H), r(B, H), r(T * B, H)
    dw_ih, dw_hh, dx = r(4 * H, I), r(4 * H, H), r(T * B, I)
    one, zero = np.float32(1), np.float32(0)

    def products():
        blas.gemm(False, True, one, x, w_ih, zero, xw)
        for _ in range(T):
            blas.gemm(False, True, one, h, w_hh, zero, gates)
        for _ in range(T):
            blas.gemm(False, False, one, gates, w_hh, zero, dh)
        blas.gemm(True, False, one, dg, x, zero, dw_ih)
        blas.gemm(True, False, one, dg, hs, zero, dw_hh)
        blas.gemm(False, False, one, dg, w_ih, zero, dx)

    products()
    return products


class LSTMForwardBackward(Benchmark):
    param_names = ["device", "shape"]
    params = [list(DEVICES), shapes((100, 64, 32, 128), (100, 64, 32, 512))]

    def setup(self, device, shape):
        super().setup(device, shape)
        self.device = device
        self.step, self.torch_step, self.floor = _lstm(device, tuple(shape))

    def time_forward_backward(self, device, shape):
        self.step()
        sync(device)

    def track_gflops(self, device, shape):
        T, B, I, H = shape  # noqa: E741
        flops = 3 * 2 * T * B * 4 * H * (I + H)
        return flops / median_time(self.step, device) / 1e9

    track_gflops.unit = "GFLOP/s"

    def track_floor_ratio(self, device, shape):
        if self.floor is None:
            raise NotImplementedError("the floor is measured on the CPU")
        return median_ratio(self.floor, self.step, device)

    track_floor_ratio.unit = "time(products) / time(gpunet)"

    def track_ratio_vs_torch(self, device, shape):
        if self.torch_step is None:
            raise NotImplementedError("torch is not installed for this device")
        return median_ratio(self.torch_step, self.step, device, foreign_threads=device == "cpu")

    track_ratio_vs_torch.unit = "time(torch) / time(gpunet)"
