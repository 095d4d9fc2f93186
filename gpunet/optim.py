"""Optimizers (SGD, Adam, AdamW) as fused update kernels, and learning-rate schedules.

An optimizer holds a list of :class:`gn.nn.Parameter`; ``step()`` updates
each one in place from its gradient with one kernel, on the device the
parameter lives on; ``zero_grad()`` clears the gradients (lazily: the next
backward pass overwrites them instead of adding). The update rules are
PyTorch's (see ``gpunet.kernels.optim``). The learning rate is the attribute
``lr``; schedules (:class:`StepLR`, :class:`CosineAnnealingLR`) set it once per
epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from . import dispatch
from ._arrays import flat, zeros
from ._device import to_device, to_numpy
from .parameter import Parameter


def _check_nonnegative(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"expected {name} to be a number >= 0, got {value!r}")
    return float(value)


class Optimizer:
    """Base class: the parameters, ``lr``, ``zero_grad`` and per-parameter state."""

    def __init__(self, params: Iterable, lr: float):
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        for i, p in enumerate(self.params):
            if not isinstance(p, Parameter):
                raise TypeError(
                    f"expected gn.nn.Parameter objects (model.parameters()), got "
                    f"{type(p).__name__} at position {i}"
                )
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError("optimizer got the same parameter twice")
        self.lr = _check_nonnegative("lr", lr)
        self.state: dict[int, dict] = {}

    def zero_grad(self) -> None:
        """Clear every parameter's gradient."""
        for p in self.params:
            p.zero_grad()

    def step(self) -> None:
        """Update every parameter in place from its gradient."""
        for p in self.params:
            self._check(p)
        for p in self.params:
            kind = p.device.type
            state = self.state.get(id(p))
            if state is None:
                state = self.state[id(p)] = self._new_state(p)
            self._update(p, flat(kind, p.data), flat(kind, p.grad), state, kind)

    def _check(self, p):
        if p.data.dtype != p.grad.dtype:
            raise TypeError(f"parameter {p.name}: data and grad differ in dtype")
        state = self.state.get(id(p))
        if state is not None and state["device"] != p.device:
            raise ValueError(
                f"parameter {p.name} moved from {state['device']} to {p.device} after the "
                "optimizer started; create the optimizer after model.to(device)"
            )

    def _buffer(self, p):
        return zeros(p.data.shape, p.data.dtype, p.device).reshape(-1)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({len(self.params)} parameters, {args})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum
    and (L2) weight decay, as ``torch.optim.SGD`` with dampening 0."""

    def __init__(
        self,
        params: Iterable,
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, lr)
        self.momentum = _check_nonnegative("momentum", momentum)
        self.weight_decay = _check_nonnegative("weight_decay", weight_decay)
        if nesterov and self.momentum == 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.nesterov = bool(nesterov)

    def _new_state(self, p):
        return {"device": p.device, "buf": self._buffer(p), "first": True}

    def _update(self, p, data, grad, state, kind):
        dispatch.kernel_for("sgd", kind)(
            data,
            grad,
            state["buf"],
            self.lr,
            self.momentum,
            self.weight_decay,
            self.nesterov,
            state["first"],
        )
        state["first"] = False

    def config(self) -> dict:
        return {
            "lr": self.lr,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
        }


class Adam(Optimizer):
    """Adam with PyTorch's defaults and rule; ``weight_decay`` adds an L2 term
    to the gradient (coupled), as ``torch.optim.Adam``."""

    decoupled = False

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, lr)
        betas = tuple(betas)
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"expected betas to be two numbers in [0, 1), got {betas!r}")
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = _check_nonnegative("eps", eps)
        self.weight_decay = _check_nonnegative("weight_decay", weight_decay)

    def _new_state(self, p):
        return {"device": p.device, "m": self._buffer(p), "v": self._buffer(p), "step": 0}

    def _update(self, p, data, grad, state, kind):
        state["step"] += 1
        dispatch.kernel_for("adam", kind)(
            data,
            grad,
            state["m"],
            state["v"],
            state["step"],
            self.lr,
            self.betas,
            self.eps,
            self.weight_decay,
            self.decoupled,
        )

    def config(self) -> dict:
        return {
            "lr": self.lr,
            "betas": self.betas,
            "eps": self.eps,
            "weight_decay": self.weight_decay,
        }


class AdamW(Adam):
    """Adam with decoupled weight decay (the parameter shrinks by
    lr * weight_decay each step), as ``torch.optim.AdamW`` (default 0.01)."""

    decoupled = True

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ):
        super().__init__(params, lr, betas, eps, weight_decay)


#: Optimizer names accepted where an optimizer class is expected.
OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def clip_grad_norm(params: Iterable, max_norm: float, eps: float = 1e-6) -> float:
    """Scale the gradients of ``params`` (gn.nn.Parameter objects) in place
    so that their total 2-norm, taken over all of them at once, is at most
    ``max_norm``; return the total norm before clipping, as
    ``torch.nn.utils.clip_grad_norm_`` does (the scale is max_norm / (norm +
    eps), applied only when below 1). A NaN or infinite norm is returned
    without touching the gradients. The norm is summed on the host, so GPU
    gradients are copied there to measure them."""
    params = list(params)
    for i, p in enumerate(params):
        if not isinstance(p, Parameter):
            raise TypeError(f"expected gn.nn.Parameter objects, got {type(p).__name__} at {i}")
    max_norm = _check_nonnegative("max_norm", max_norm)
    grads = [p.grad for p in params]
    total = math.sqrt(
        sum(
            float(np.dot(g, g)) for g in (to_numpy(g).reshape(-1).astype(np.float64) for g in grads)
        )
    )
    factor = max_norm / (total + eps)
    if factor < 1:
        for g in grads:
            kind = dispatch.placement("clip_grad_norm", grad=g)
            scale, zero = np.full(1, factor, g.dtype), np.zeros(1, g.dtype)
            if kind == "cuda":
                scale, zero = to_device(scale, None), to_device(zero, None)
            flat = g.reshape(-1, 1)  # one column: g = (g - 0) * scale + 0
            dispatch.kernel_for("column_affine", kind)(flat, zero, scale, zero, flat)
    return total


# --- learning-rate schedules ----------------------------------------------------------


class LRScheduler:
    """Base class: ``step()`` once per epoch sets ``optimizer.lr`` to
    ``lr_at(epoch)``, starting from the optimizer's learning rate at creation."""

    def __init__(self, optimizer: Optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"expected a gn.optim optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.epoch = 0

    def step(self) -> float:
        """Advance one epoch; return the new learning rate."""
        self.epoch += 1
        self.optimizer.lr = self.lr_at(self.epoch)
        return self.optimizer.lr

    def get_last_lr(self) -> float:
        """The learning rate the optimizer uses now."""
        return self.optimizer.lr


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (epoch // step_size), as ``torch.optim.lr_scheduler.StepLR``."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        super().__init__(optimizer)
        if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"expected a positive integer step_size, got {step_size!r}")
        self.step_size, self.gamma = step_size, _check_nonnegative("gamma", gamma)

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) (1 + cos(pi epoch / T_max)) / 2, held at
    eta_min after T_max epochs (``torch.optim.lr_scheduler.CosineAnnealingLR``
    for epochs up to T_max)."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0):  # noqa: N803
        super().__init__(optimizer)
        if isinstance(T_max, bool) or not isinstance(T_max, int) or T_max < 1:
            raise ValueError(f"expected a positive integer T_max, got {T_max!r}")
        self.T_max, self.eta_min = T_max, _check_nonnegative("eta_min", eta_min)

    def lr_at(self, epoch: int) -> float:
        t = min(epoch, self.T_max)
        return (
            self.eta_min
            + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2
        )
