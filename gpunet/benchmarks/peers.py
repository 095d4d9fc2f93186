"""The peers gpunet is timed against: what a user would otherwise reach for,
written as such a user writes it (plain numpy, PyTorch eager mode, CuPy), and
the optional libraries' modules, or None where they are absent."""

from __future__ import annotations

import functools

import numpy as np


@functools.cache
def torch_module():
    """torch, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


@functools.cache
def cupy_module():
    """cupy, or None when it is not installed or cannot reach a GPU."""
    from .. import gemm

    return gemm._cupy_status()[0]


def torch_device(device) -> str:
    """torch's name for the gpunet Device ``device``."""
    return "cpu" if device.type == "cpu" else f"cuda:{device.index or 0}"


def torch_sync(torch, device) -> None:
    """Wait for torch's work queued on ``device`` (a gpunet Device)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


# --- elementwise ops --------------------------------------------------------------------


def _numpy_softmax(a):
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


#: The elementwise workloads (gn.ops names) and their plain numpy forms, each
#: of one float32 array, softmax over the last axis.
NUMPY_ELEMENTWISE = {
    "softmax": _numpy_softmax,
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "relu": lambda a: np.maximum(a, 0),
    "leaky_relu": lambda a: np.where(a > 0, a, np.float32(0.01) * a),
    "step": lambda a: (a > 0).astype(a.dtype),
}


def torch_elementwise(torch, name):
    """The torch form of the elementwise op ``name`` (a key of NUMPY_ELEMENTWISE)."""
    if name == "softmax":
        return lambda t: torch.softmax(t, -1)
    if name == "leaky_relu":
        return lambda t: torch.nn.functional.leaky_relu(t, 0.01)
    if name == "step":
        return lambda t: (t > 0).to(t.dtype)
    return getattr(torch, name)


def cupy_elementwise(cupy, name):
    """The CuPy form of the elementwise op ``name`` (a key of NUMPY_ELEMENTWISE)."""
    if name == "softmax":

        def softmax(a):
            e = cupy.exp(a - a.max(axis=-1, keepdims=True))
            return e / e.sum(axis=-1, keepdims=True)

        return softmax
    return {
        "sigmoid": lambda a: 1 / (1 + cupy.exp(-a)),
        "tanh": cupy.tanh,
        "relu": lambda a: cupy.maximum(a, 0),
        "leaky_relu": lambda a: cupy.where(a > 0, a, a.dtype.type(0.01) * a),
        "step": lambda a: (a > 0).astype(a.dtype),
    }[name]


# --- layers and training ----------------------------------------------------------------


def numpy_dense_layer(x, W, b, g):
    """A ReLU dense layer's forward and backward in plain numpy, as one writes
    it by hand: x (batch, in), W (in, out), b (out,), g (batch, out) the grad
    of the output; returns (dx, dW, db) in their dtype."""
    y = np.maximum(x @ W + b, 0)
    dz = np.where(y > 0, g, 0)
    return dz @ W.T, x.T @ dz, dz.sum(axis=0)


class NumpyMLP:
    """The same training step in plain numpy, as one writes it by hand:
    matmuls, np.maximum, a stable softmax, np.where, in-place momentum updates.
    ``weights``: W (in, out), b (out,) per layer in turn (copied); X (n, in)
    float32, y (n,) int class labels; ``epoch()`` runs one shuffled epoch."""

    def __init__(self, weights, X, y, batch, lr=0.01, momentum=0.9):
        self.Ws, self.bs = [w.copy() for w in weights[0::2]], [b.copy() for b in weights[1::2]]
        self.vW, self.vb = [np.zeros_like(w) for w in self.Ws], [np.zeros_like(b) for b in self.bs]
        self.X, self.y, self.batch, self.lr, self.momentum = X, y, batch, lr, momentum
        self.seed = 0

    def step(self, xb, yb):
        Ws, bs = self.Ws, self.bs
        acts = [xb]
        for i, (W, b) in enumerate(zip(Ws, bs, strict=True)):
            z = acts[-1] @ W + b
            acts.append(np.maximum(z, 0) if i < len(Ws) - 1 else z)
        p = _numpy_softmax(acts[-1])
        p[np.arange(len(yb)), yb] -= 1
        g = p / len(yb)
        for i in range(len(Ws) - 1, -1, -1):
            gW, gb = acts[i].T @ g, g.sum(axis=0)
            if i > 0:
                g = np.where(acts[i] > 0, g @ Ws[i].T, 0)
            for w, v, grad in ((Ws[i], self.vW[i], gW), (bs[i], self.vb[i], gb)):
                v *= self.momentum
                v += grad
                w -= self.lr * v

    def epoch(self):
        order = np.random.default_rng(self.seed).permutation(len(self.X))
        self.seed += 1
        for start in range(0, len(self.X), self.batch):
            rows = order[start : start + self.batch]
            self.step(self.X[rows], self.y[rows])


class TorchMLP:
    """The same network and step in PyTorch eager mode (Linear, ReLU,
    cross_entropy, torch.optim.SGD), from the same weights as NumpyMLP's, on
    the gpunet Device ``device``."""

    def __init__(self, torch, weights, X, y, batch, device, lr=0.01, momentum=0.9):
        dev = torch_device(device)
        self.torch, self.device = torch, device
        layers = []
        for i in range(0, len(weights), 2):
            W, b = weights[i], weights[i + 1]
            linear = torch.nn.Linear(*W.shape)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(W.T.copy()))
                linear.bias.copy_(torch.from_numpy(b))
            layers += [linear, torch.nn.ReLU()]
        self.model = torch.nn.Sequential(*layers[:-1]).to(dev)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=momentum)
        self.X, self.y = torch.from_numpy(X).to(dev), torch.from_numpy(y).to(dev)
        self.batch, self.seed = batch, 0

    def epoch(self):
        torch = self.torch
        order = torch.from_numpy(np.random.default_rng(self.seed).permutation(len(self.X)))
        order = order.to(self.X.device)
        self.seed += 1
        for start in range(0, len(self.X), self.batch):
            rows = order[start : start + self.batch]
            loss = torch.nn.functional.cross_entropy(self.model(self.X[rows]), self.y[rows])
            loss.backward()
            self.opt.step()
            self.opt.zero_grad()
        torch_sync(torch, self.device)


# --- restricted Boltzmann machines ------------------------------------------------------


class NumpyCD1:
    """One persistent CD-1 update written plainly in numpy (float32), the bar
    a hand-written RBM sets: v (batch, visible), W (hidden, visible), b
    visible, c hidden biases, chain (batch, hidden) the persistent hidden states."""

    def __init__(self, v, W, b, c, chain, lr):
        self.v, self.W, self.b, self.c, self.chain = v, W.copy(), b.copy(), c.copy(), chain.copy()
        self.lr = np.float32(lr)
        self.rng = np.random.default_rng(0)

    def __call__(self):
        v, W, chain, rng = self.v, self.W, self.chain, self.rng
        hp = _sigmoid(v @ W.T + self.c)
        vp = _sigmoid(chain @ W + self.b)
        vn = (rng.random(vp.shape, np.float32) < vp).astype(np.float32)
        hn = _sigmoid(vn @ W.T + self.c)
        chain[...] = rng.random(hn.shape, np.float32) < hn
        W += self.lr * (hp.T @ v / np.float32(len(v)) - hn.T @ vn / np.float32(len(vn)))
        self.b += self.lr * (v.mean(axis=0) - vn.mean(axis=0))
        self.c += self.lr * (hp.mean(axis=0) - hn.mean(axis=0))
