"""The CPU epochs of ``gn.MLPClassifier`` and ``gn.MLPRegressor`` as one
compiled call each (``kernels.mlp``), where the network allows it: Dense
layers only (no dropout, no batch norm), on the CPU, with the sgd or adam
solver. The call computes what the layers' ops compute step by step
(``_BaseMLP._step``) and leaves the optimizer where those steps leave it.
"""

from __future__ import annotations

import math

import numpy as np

from . import losses as _losses
from . import nn
from . import optim as _optim
from .kernels import mlp as _mlp


def sklearn_eps(epsilon, beta_2, step):
    """PyTorch's Adam eps for scikit-learn's ``epsilon`` at ``step`` (from 1):
    scikit-learn adds epsilon to sqrt(v), PyTorch its eps to sqrt(v_hat)."""
    return epsilon / math.sqrt(1 - beta_2**step)


def _loss_name(loss_fn) -> str | None:
    """The kernel's name for ``loss_fn``, or None where it has none."""
    if type(loss_fn) is _losses.SoftmaxCrossEntropy:
        return "softmax_cross_entropy"
    if type(loss_fn) is _losses.BinaryCrossEntropy and loss_fn.from_logits:
        return "binary_cross_entropy"
    if type(loss_fn) is _losses.MSE:
        return "mse"
    return None


def applies(model, loss_fn, optimizer) -> bool:
    """Whether ``model`` (a Sequential), ``loss_fn`` and ``optimizer`` train
    by compiled epochs: Dense layers on the CPU, hidden ones sharing an
    activation the kernel has, the last without one, one flat buffer, and
    SGD or Adam (not AdamW)."""
    layers = model.layers
    if not layers or not all(type(layer) is nn.Dense for layer in layers):
        return False
    hidden = {layer.activation for layer in layers[:-1]}
    return (
        len(hidden) <= 1
        and hidden <= set(_mlp.ACTIVATIONS)
        and layers[-1].activation is None
        and layers[0].weight.device.type == "cpu"
        and len({id(p._flat) for p in model.parameters()}) == 1
        and _loss_name(loss_fn) is not None
        and type(optimizer) in (_optim.SGD, _optim.Adam)
    )


class CompiledEpoch:
    """Epochs over the batches X[order[a:b]] for (a, b) in ``bounds`` of a
    network that ``applies``, its weights (the first parameter group) decayed
    by ``alpha`` / rows per step, its Adam steps with scikit-learn's
    ``epsilon``; T as the loss takes it (class indices for softmax
    cross-entropy)."""

    def __init__(self, model, loss_fn, optimizer, X, T, bounds, alpha, epsilon, grad_scale):
        self.layers, self.optimizer = model.layers, optimizer
        self.loss = _loss_name(loss_fn)
        dtype = self.layers[0].weight.dtype
        labels = self.loss == "softmax_cross_entropy"
        self.X = np.ascontiguousarray(X, dtype)
        self.T = np.ascontiguousarray(T, np.int64 if labels else dtype)
        self.starts = np.array([0] + [b for _, b in bounds], np.int64)
        self.table = np.array(
            [(d.weight._offset, d.bias._offset, d.in_features, d.out_features)
             for d in self.layers],
            np.int64,
        )  # fmt: skip
        self.activation = self.layers[0].activation if len(self.layers) > 1 else None
        self.alpha, self.epsilon, self.grad_scale = float(alpha), float(epsilon), grad_scale
        group_of = {
            id(p): i for i, group in enumerate(optimizer.param_groups) for p in group["params"]
        }
        self.members = members = sorted(model.parameters(), key=lambda p: p._offset)
        self.segments = np.array([(p._offset, p._offset + p.size) for p in members], np.int64)
        self.groups = np.array([group_of[id(p)] for p in members], np.int64)
        self.decays = np.zeros(len(optimizer.param_groups))
        self.decays[0] = self.alpha
        self._checked = None  # the arrays check_epoch last passed
        self.scratch = _mlp.epoch_scratch(self.X, self.T, self.starts, self.table, self.loss)

    def __call__(self, order, losses, squares):
        """One epoch in the batch order ``order`` (a permutation of X's rows,
        int64): each batch's loss into ``losses`` (batches,) and its weights'
        squared norms into ``squares`` (batches, layers), of the network's
        dtype. The arguments are checked the first time and whenever an
        array differs from the last checked one."""
        opt = self.optimizer
        ((flat, state, _, _),) = opt._plan()
        rates = np.array([group["lr"] for group in opt.param_groups], np.float64)
        if isinstance(opt, _optim.Adam):
            solver, buffers = "adam", (state["m"], state["v"])
            settings = (*opt.betas, self.epsilon, opt.steps)
        else:
            solver, buffers = "sgd", (state["buf"],)
            settings = (opt.momentum, opt.nesterov, opt._first)
        args = (
            self.X, self.T, order, self.starts, self.table, self.activation, flat.data,
            flat.grad, buffers, self.segments, self.groups, rates, self.decays, solver,
            settings, self.loss, self.grad_scale, losses, squares,
        )  # fmt: skip
        arrays = (flat.data, flat.grad, *buffers, losses, squares)
        if self._checked is None or not all(
            a is b for a, b in zip(self._checked, arrays, strict=True)
        ):
            _mlp.check_epoch(*args)
            self._checked = arrays
        elif order.shape != self.X.shape[:1] or order.dtype != np.int64:
            raise ValueError(f"expected a permutation of {len(self.X)} rows, got {order.shape}")
        _mlp.train_epoch_checked(*args, self.scratch)
        for p in self.members:
            p._grad_for_backward()  # the epoch's last backward wrote every gradient
        for _ in range(len(self.starts) - 1):
            opt._stepped()
        # Where the steps one by one leave the optimizer's settings.
        opt.param_groups[0]["weight_decay"] = self.alpha / int(self.starts[-1] - self.starts[-2])
        if solver == "adam":
            opt.eps = sklearn_eps(self.epsilon, opt.betas[1], opt.steps)
