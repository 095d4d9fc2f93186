"""Dense layers: y = act(x @ W + b) and its backward (``gpunet.kernels.dense``).

``Dense``, over device x (batch, in_features, out_features) x activation, in
float32, times the kernels the layers call, writing into preallocated arrays:

- ``time_forward`` / ``time_backward``: one call (and a sync); the backward
  computes dx, dW and db.
- ``track_{forward,backward}_gflops``: 2 B I O flops for the forward, 4 B I O
  for the backward (its two products), over the median time of one call.
- ``track_matmul_ratio``: time of the bare matrix products a dense layer
  needs (x @ W, dz @ W.T, x.T @ dz, numpy's matmul on the CPU, the same tiled
  kernels without epilogues on CUDA) over the time of gpunet's forward plus
  backward, timed alternately: the fraction of the matrix product's GFLOP/s
  the layer reaches with its bias, activation and reductions included.

``DenseVsNumpy.track_ratio_vs_numpy`` (CPU): a dense layer written in plain
numpy, as one would by hand (matmul, + b, np.maximum; the backward with
np.where, a column sum and two matmuls), over gpunet's forward plus backward.
Above 1, gpunet is faster.
"""

import functools

import numpy as np
from gpunet.kernels import dense as _dense

import gpunet as gn
from gpunet import benchmarks

from .common import DEVICES, Benchmark, median_ratio, median_time, random_array, shapes, sync

ACTIVATION = "relu"


@functools.cache
def _layer(device, shape, dtype):
    """Inputs, outputs and warmed-up (forward, backward) calls for shape (B, I, O)."""
    batch, n_in, n_out = shape
    x = random_array((batch, n_in), dtype, device, seed=0)
    W = random_array((n_in, n_out), dtype, device, scale=(2 / n_in) ** 0.5, seed=1)
    b = random_array((n_out,), dtype, device, scale=0.1, seed=2)
    g = random_array((batch, n_out), dtype, device, seed=3)
    empty = np.empty if device == "cpu" else gn.kernels._cuda.cuda.device_array
    y, dz = empty((batch, n_out), dtype), empty((batch, n_out), dtype)
    dx, dW, db = empty((batch, n_in), dtype), empty((n_in, n_out), dtype), empty(n_out, dtype)
    if device == "cpu":
        forward = functools.partial(_dense.dense_cpu, x, W, b, y, ACTIVATION)
        backward = functools.partial(
            _dense.dense_backward_cpu, g, x, W, y, dx, dW, db, dz, ACTIVATION
        )

        def products():
            np.matmul(x, W, out=y)
            np.matmul(dz, W.T, out=dx)
            np.matmul(x.T, dz, out=dW)

    else:
        forward = functools.partial(_dense.dense_cuda, x, W, b, y, ACTIVATION)
        backward = functools.partial(
            _dense.dense_backward_cuda, g, x, W, y, dx, dW, db, dz, ACTIVATION
        )
        c = np.dtype(dtype).type(1)

        def products():
            _dense._launch_gemm(_dense._FORWARD_CUDA[None], x, W, b, c, y)
            _dense._launch_gemm(_dense._INPUT_GRAD_CUDA, dz, W, db, c, dx)
            _dense._launch_gemm(_dense._WEIGHT_GRAD_CUDA, x, dz, db, c, dW)

    for call in (forward, backward, products):
        call()
    sync(device)
    return forward, backward, products, (x, W, b, g)


class Dense(Benchmark):
    param_names = ["device", "shape", "dtype"]
    params = [
        list(DEVICES),
        shapes((256, 784, 1024), (128, 512, 256), (2048, 2048, 2048)),
        ["float32"],
    ]

    def setup(self, device, shape, dtype):
        super().setup(device, shape, dtype)
        self.device = device
        self.forward, self.backward, self.products, _ = _layer(device, shape, dtype)
        batch, n_in, n_out = shape
        self.flops = 2 * batch * n_in * n_out

    def _both(self):
        self.forward()
        self.backward()

    def time_forward(self, *params):
        self.forward()
        sync(self.device)

    def time_backward(self, *params):
        self.backward()
        sync(self.device)

    def track_forward_gflops(self, *params):
        return self.flops / median_time(self.forward, self.device) / 1e9

    track_forward_gflops.unit = "GFLOP/s"

    def track_backward_gflops(self, *params):
        return 2 * self.flops / median_time(self.backward, self.device) / 1e9

    track_backward_gflops.unit = "GFLOP/s"

    def track_matmul_ratio(self, *params):
        return median_ratio(self.products, self._both, self.device)

    track_matmul_ratio.unit = "matmul time / layer time"


class DenseVsNumpy(Benchmark):
    param_names = ["shape", "dtype"]
    params = [shapes((256, 784, 1024), (2048, 2048, 2048)), ["float32"]]

    def setup(self, shape, dtype):
        forward, backward, _, (x, W, b, g) = _layer("cpu", shape, dtype)

        numpy_layer = functools.partial(benchmarks.numpy_dense_layer, x, W, b, g)

        def gpunet_layer():
            forward()
            backward()

        self.numpy_layer, self.gpunet_layer = numpy_layer, gpunet_layer

    def track_ratio_vs_numpy(self, *params):
        return median_ratio(self.numpy_layer, self.gpunet_layer, "cpu")

    track_ratio_vs_numpy.unit = "numpy time / gpunet time"
