"""Restricted Boltzmann machines (``gpunet.kernels.rbm`` and ``gn.RBM``).

``CDUpdate``, over device x shape (batch, visible, hidden), float32: one PCD-1
update (positive phase, one Gibbs step with Bernoulli sampling, the fused
parameter update) of a batch against its chain, through the kernel launcher.

- ``time_update``: asv's timing of one update (and a sync).
- ``track_gflops``: the five matrix products' 10 * batch * visible * hidden
  floating-point operations over the median time of one update.
- ``track_numpy_ratio`` (CPU): a plain numpy implementation of the same update
  (numpy's random numbers, ``1 / (1 + exp(-x))``) timed alternately with
  gpunet's; median of time(numpy) / time(gpunet). gpunet's CPU products call
  numpy's own BLAS, so both sides run in one BLAS thread pool: set its size
  for both with ``OPENBLAS_NUM_THREADS`` (or threadpoolctl).

``DigitsFit``, over device: ``gn.RBM.fit`` on the 8x8 digits nudged five
ways (scikit-learn's "RBM features for digit classification" example: 7188
training rows, 100 components, learning rate 0.06, batch size 10, 10 epochs).

- ``time_fit``: one fit.
- ``track_sklearn_ratio`` (CPU): scikit-learn's ``BernoulliRBM`` with the same
  arguments, timed alternately with gpunet; median of time(sklearn) /
  time(gpunet) (NaN when scikit-learn is not installed).
"""

import functools
import statistics
import time

import numpy as np
from gpunet.kernels import rbm as R

import gpunet as gn
from gpunet import benchmarks

from .common import (
    DEVICES,
    QUICK,
    Benchmark,
    median_ratio,
    median_time,
    require_device,
    shapes,
    sync,
)


@functools.cache
def _update_call(device, shape):
    """A warmed-up zero-argument call of one PCD-1 update on ``device``, and
    the host arrays it started from."""
    batch, visible, hidden = shape
    rng = np.random.default_rng(0)
    v = rng.random((batch, visible), dtype=np.float32)
    W = (rng.standard_normal((hidden, visible)) * 0.01).astype(np.float32)
    b, c = np.zeros(visible, np.float32), np.zeros(hidden, np.float32)
    chain = (rng.random((batch, hidden)) < 0.5).astype(np.float32)
    put = functools.partial(gn.to_device, device=device)
    params = [put(a.copy()) for a in (W, b, c)]
    velocities = [put(np.zeros_like(a)) for a in (W, b, c)]
    v_dev, chain_dev = put(v), put(chain.copy())
    bounds = np.array([0, batch], np.int64)
    epoch = R.cd_epoch_cpu if device == "cpu" else R.cd_epoch_cuda
    offset = [0]

    def update():
        offset[0] = epoch(v_dev, bounds, params, velocities, chain_dev, 1, offset[0], 0.01,
                          0.0, 0.0, 1, True, False)  # fmt: skip

    update()
    sync(device)
    return update, (v, W, b, c, chain)


class CDUpdate(Benchmark):
    param_names = ["device", "shape"]
    params = [list(DEVICES), shapes((100, 784, 500), (10, 64, 100))]

    def setup(self, device, shape):
        super().setup(device, shape)
        self.device = device
        self.update, self.start = _update_call(device, tuple(shape))
        batch, visible, hidden = shape
        self.flops = 10 * batch * visible * hidden

    def time_update(self, device, shape):
        self.update()
        sync(device)

    def track_gflops(self, device, shape):
        return self.flops / median_time(self.update, device) / 1e9

    track_gflops.unit = "GFLOP/s"

    def track_numpy_ratio(self, device, shape):
        if device != "cpu":
            raise NotImplementedError("the numpy peer runs on the CPU")
        reference = benchmarks.NumpyCD1(*self.start, lr=0.01)
        reference()
        return median_ratio(reference, self.update, device)

    track_numpy_ratio.unit = "numpy time / gpunet time"


@functools.cache
def nudged_digits():
    """scikit-learn's example data: the digits and their four one-pixel shifts,
    scaled to [0, 1] per feature, 80% of them (7188 rows) as float32."""
    X, _ = gn.datasets.load_digits()
    images = X.reshape(-1, 8, 8)
    shifted = [images]
    for axis, step in ((1, -1), (2, 1), (2, -1), (1, 1)):
        moved = np.roll(images, step, axis=axis)
        index = [slice(None)] * 3
        index[axis] = 0 if step == 1 else -1
        moved[tuple(index)] = 0
        shifted.append(moved)
    X = np.concatenate(shifted).reshape(-1, 64)
    low, high = X.min(axis=0), X.max(axis=0)
    X = (X - low) / np.where(high > low, high - low, 1)
    order = np.random.default_rng(0).permutation(len(X))
    return np.ascontiguousarray(X[order[: int(0.8 * len(X))]], np.float32)


def _digits_rbm(cls, **extra):
    return cls(n_components=100, learning_rate=0.06, batch_size=10, n_iter=1 if QUICK else 10,
               random_state=0, **extra)  # fmt: skip


class DigitsFit:
    param_names = ["device"]
    params = [list(DEVICES)]
    timeout = 600

    def setup(self, device):
        require_device(device)
        self.device = device
        self.X = nudged_digits()
        _digits_rbm(gn.RBM, device=device).fit(self.X[:20])

    def time_fit(self, device):
        _digits_rbm(gn.RBM, device=device).fit(self.X)
        sync(device)

    def track_sklearn_ratio(self, device):
        if device != "cpu":
            raise NotImplementedError("scikit-learn runs on the CPU")
        try:
            from sklearn.neural_network import BernoulliRBM
        except ImportError:
            return float("nan")
        ratios = []
        for _ in range(3 if QUICK else 5):
            start = time.perf_counter()
            _digits_rbm(gn.RBM, device=device).fit(self.X)
            mid = time.perf_counter()
            _digits_rbm(BernoulliRBM).fit(self.X)
            ratios.append((time.perf_counter() - mid) / (mid - start))
        return statistics.median(ratios)

    track_sklearn_ratio.unit = "sklearn time / gpunet time"
