"""Training a multilayer perceptron: one epoch of 784-512-256-10 (ReLU hidden
layers, softmax cross-entropy, SGD with momentum 0.9) on batch 128 over 8192
random samples, and digits accuracy.

``TrainingEpoch``, over device:

- ``time_epoch``: ``model.fit(..., epochs=1, verbose=0)``, shuffled.
- ``track_samples_per_second``: samples over the median time of one epoch.

Peers on the CPU, each training the same network from the same weights on
batches shuffled the same way, timed alternately with gpunet's epoch (median of
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
from gpunet import cli

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


def _model(device):
    layers = [
        gn.nn.Dense(a, b, "relu" if i < len(WIDTHS) - 2 else None, seed=i, device=device)
        for i, (a, b) in enumerate(zip(WIDTHS[:-1], WIDTHS[1:], strict=True))
    ]
    return gn.nn.Sequential(*layers)


def _gpunet_epoch(device):
    X, y = _data()
    model = _model(device)
    opt = gn.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss = gn.losses.SoftmaxCrossEntropy()
    seeds = iter(range(1 << 30))

    def epoch():
        model.fit(X, y, loss=loss, optimizer=opt, batch_size=BATCH, verbose=0, seed=next(seeds))
        sync(device)

    epoch()
    return epoch, model


def _orders():
    """Shuffled orders, one per epoch, drawn as fit draws them (seed = epoch number)."""
    seed = 0
    while True:
        yield np.random.default_rng(seed).permutation(SAMPLES)
        seed += 1


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


def _numpy_epoch(weights):
    """An epoch of the same training step in plain numpy, from ``weights``."""
    X, y = _data()
    Ws = [w.copy() for w in weights[0::2]]
    bs = [b.copy() for b in weights[1::2]]
    vW = [np.zeros_like(w) for w in Ws]
    vb = [np.zeros_like(b) for b in bs]
    orders = _orders()

    def step(xb, yb):
        acts = [xb]
        for i, (W, b) in enumerate(zip(Ws, bs, strict=True)):
            z = acts[-1] @ W + b
            acts.append(np.maximum(z, 0) if i < len(Ws) - 1 else z)
        z = acts[-1]
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(yb)), yb] -= 1
        g = p / len(yb)
        for i in range(len(Ws) - 1, -1, -1):
            gW, gb = acts[i].T @ g, g.sum(axis=0)
            if i > 0:
                g = np.where(acts[i] > 0, g @ Ws[i].T, 0)
            for w, v, grad in ((Ws[i], vW[i], gW), (bs[i], vb[i], gb)):
                v *= MOMENTUM
                v += grad
                w -= LR * v

    def epoch():
        order = next(orders)
        for start in range(0, SAMPLES, BATCH):
            rows = order[start : start + BATCH]
            step(X[rows], y[rows])

    epoch()
    return epoch


def _torch_epoch(weights):
    import torch

    torch.set_num_threads(numba.get_num_threads())
    X, y = _data()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    layers = []
    for i in range(len(WIDTHS) - 1):
        linear = torch.nn.Linear(WIDTHS[i], WIDTHS[i + 1])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(weights[2 * i].T.copy()))
            linear.bias.copy_(torch.from_numpy(weights[2 * i + 1]))
        layers.append(linear)
        if i < len(WIDTHS) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    orders = _orders()

    def epoch():
        order = torch.from_numpy(next(orders))
        for start in range(0, SAMPLES, BATCH):
            rows = order[start : start + BATCH]
            loss = torch.nn.functional.cross_entropy(model(Xt[rows]), yt[rows])
            loss.backward()
            opt.step()
            opt.zero_grad()

    epoch()
    return epoch


class _TrainingPeer(Benchmark):
    param_names = ["peer"]

    def setup(self, peer):
        self.gpunet, model = _gpunet_epoch("cpu")
        weights = [gn.to_numpy(p.data) for p in model.parameters()]
        self.peer = self.make_peer(weights)


class TrainingVsNumpy(_TrainingPeer):
    params = [["numpy"]]
    make_peer = staticmethod(_numpy_epoch)

    def track_ratio_vs_numpy(self, peer):
        return median_ratio(self.peer, self.gpunet, "cpu")

    track_ratio_vs_numpy.unit = "numpy time / gpunet time"


class TrainingVsTorch(_TrainingPeer):
    params = [["torch"]]

    @staticmethod
    def make_peer(weights):
        try:
            import torch  # noqa: F401
        except ImportError:
            raise NotImplementedError("torch is not installed") from None
        return _torch_epoch(weights)

    def track_ratio_vs_torch(self, peer):
        return median_ratio(self.peer, self.gpunet, "cpu")

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
