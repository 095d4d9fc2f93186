"""Training a multilayer perceptron: one epoch of 784-512-256-10 (ReLU hidden
layers, softmax cross-entropy, SGD with momentum 0.9) on batch 128 over 8192
random samples, and digits accuracy.

``TrainingEpoch``, over device:

- ``time_epoch``: ``model.fit(..., epochs=1, verbose=0)``, shuffled.
- ``track_samples_per_second``: samples over the median time of one epoch.

Peers on the CPU (``gpunet.benchmarks.NumpyMLP`` and ``TorchMLP``, the ones
``gpunet bench`` runs), each training the same network from the same weights
on batches shuffled the same way, timed alternately with gpunet's epoch (median of
time(peer) / time(gpunet), above 1 when gpunet is faster):

- ``TrainingVsNumpy.track_ratio_vs_numpy``: the step in plain numpy, as one
  writes it by hand (matmuls, np.maximum, a stable softmax, np.where, in-place
  momentum updates).
- ``TrainingVsTorch.track_ratio_vs_torch``: ``torch.nn.Sequential`` of Linear
  and ReLU, ``cross_entropy``, ``torch.optim.SGD``, eager, with as many
  threads as Numba's pool (skipped without torch; it is not a dependency).

``DigitsAccuracy.track_test_accuracy``: the test accuracy of ``gpunet train``
with its defaults (the bundled digits), a number that must not fall.
"""

import contextlib
import functools
import io
import re

import numba
import numpy as np

import gpunet as gn
from gpunet import benchmarks, cli

from .common import QUICK, Benchmark, median_ratio, median_time, sync

WIDTHS = (784, 512, 256, 10) if not QUICK else (64, 32, 16, 10)
SAMPLES = 8192 if not QUICK else 256
BATCH = 128 if not QUICK else 32
LR, MOMENTUM = 0.01, 0.9


@functools.cache
def _data():
    rng = np.random.default_rng(0)
    X = rng.random((SAMPLES, WIDTHS[0]), dtype=np.float32)
    y = rng.integers(0, WIDTHS[-1], SAMPLES)
    return X, y


def _gpunet_epoch(device):
    X, y = _data()
    model = benchmarks.mlp(WIDTHS, device)
    opt = gn.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss = gn.losses.SoftmaxCrossEntropy()
    seeds = iter(range(1 << 30))

    def epoch():
        model.fit(X, y, loss=loss, optimizer=opt, batch_size=BATCH, verbose=0, seed=next(seeds))
        sync(device)

    epoch()
    return epoch, model


class TrainingEpoch(Benchmark):
    param_names = ["device"]
    params = [["cpu", "cuda"]]

    def setup(self, device):
        super().setup(device)
        self.device = device
        self.epoch, _ = _gpunet_epoch(device)

    def time_epoch(self, device):
        self.epoch()

    def track_samples_per_second(self, device):
        return SAMPLES / median_time(self.epoch, device)

    track_samples_per_second.unit = "samples/s"


class _TrainingPeer(Benchmark):
    param_names = ["peer"]

    def setup(self, peer):
        self.gpunet, model = _gpunet_epoch("cpu")
        weights = [gn.to_numpy(p.data) for p in model.parameters()]
        self.peer = self.make_peer(weights, *_data())
        self.peer()


class TrainingVsNumpy(_TrainingPeer):
    params = [["numpy"]]

    @staticmethod
    def make_peer(weights, X, y):
        return benchmarks.NumpyMLP(weights, X, y, BATCH, LR, MOMENTUM).epoch

    def track_ratio_vs_numpy(self, peer):
        return median_ratio(self.peer, self.gpunet, "cpu")

    track_ratio_vs_numpy.unit = "numpy time / gpunet time"


class TrainingVsTorch(_TrainingPeer):
    params = [["torch"]]

    @staticmethod
    def make_peer(weights, X, y):
        torch = benchmarks.torch_module()
        if torch is None:
            raise NotImplementedError("torch is not installed")
        torch.set_num_threads(numba.get_num_threads())
        cpu = gn.Device("cpu")
        return benchmarks.TorchMLP(torch, weights, X, y, BATCH, cpu, LR, MOMENTUM).epoch

    def track_ratio_vs_torch(self, peer):
        return median_ratio(self.peer, self.gpunet, "cpu", foreign_threads=True)

    track_ratio_vs_torch.unit = "torch time / gpunet time"


class DigitsAccuracy:
    timeout = 300

    def track_test_accuracy(self):
        argv = ["train", "--verbose", "0", "--output", ""]
        if QUICK:
            argv += ["--epochs", "2", "--hidden", "32"]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            cli.main(argv)
        return float(re.search(r"test accuracy: ([0-9.]+)", out.getvalue()).group(1))

    track_test_accuracy.unit = "accuracy"
