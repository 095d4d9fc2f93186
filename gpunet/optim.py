"""Optimizers (SGD, Adam, AdamW) as fused update kernels, and learning-rate schedules.

An optimizer holds :class:`gn.nn.Parameter` objects, in parameter groups as
in PyTorch (``[{"params": [...], "weight_decay": 0.0}, ...]``, where a group
may set its own ``lr`` and ``weight_decay``). The parameters live in flat
buffers (``gpunet.parameter``), so ``step()`` updates all those of one
buffer, whatever their groups, with one kernel launch (``gn.ops.sgd`` /
``gn.ops.adam`` over a small table of [start, stop) ranges and their
settings), on the device they live on. ``zero_grad()`` clears the gradients
lazily: nothing runs, and the next backward pass writes them instead of
adding. The update rules are PyTorch's (see ``gpunet.kernels.optim``). On
the CPU the op checks a buffer's arrays once per plan (see ``_update``).

The learning rate is the attribute ``lr`` (the first group's); setting it,
as the schedules (:class:`StepLR`, :class:`CosineAnnealingLR`) do once per
epoch, scales every group's learning rate alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from . import ops, parameter, replay
from ._arrays import zeros
from ._device import to_numpy
from .kernels import optim as _kernels
from .parameter import Parameter, flat_buffers


def _check_nonnegative(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"expected {name} to be a number >= 0, got {value!r}")
    return float(value)


#: Update plans an optimizer keeps, for as many settings (see ``Optimizer._plan``).
MAX_PLANS = 4

#: What a parameter group may set besides its "params".
GROUP_SETTINGS = ("lr", "weight_decay")


class Optimizer:
    """Base class: parameter groups, ``lr``, ``zero_grad``, and the state
    buffers, which mirror the parameters' flat buffers."""

    def __init__(self, params: Iterable, lr: float, weight_decay: float):
        self.param_groups = self._groups(params, lr, weight_decay)
        self.params = [p for group in self.param_groups for p in group["params"]]
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError("optimizer got the same parameter twice")
        #: Each group's learning rate relative to the first group's, at creation.
        first = self.param_groups[0]["lr"]
        self._lr_ratios = [g["lr"] / first if first else 1.0 for g in self.param_groups]
        #: (id of a parameter's flat buffers) -> that buffer's state.
        self.state: dict[int, dict] = {}
        #: id(parameter) -> (state key, offset) where its state lies.
        self._placed: dict[int, tuple[int, int]] = {}
        #: (bindings, settings) -> the update plan for them: see ``_plan``.
        self._plans: dict[tuple, list] = {}
        #: (id(state), id(segments)) -> (segments, arrays, settings, table) of
        #: the last checked CPU update of that buffer with those segments: see
        #: ``_update``.
        self._checked: dict[tuple[int, int], tuple] = {}

    @staticmethod
    def _groups(params, lr, weight_decay) -> list[dict]:
        params = list(params)
        groups = params if params and isinstance(params[0], dict) else [{"params": params}]
        checked = []
        for i, group in enumerate(groups):
            if not isinstance(group, dict) or "params" not in group:
                raise TypeError(f"expected parameter group {i} to be a dict with 'params'")
            unknown = sorted(set(group) - {"params", *GROUP_SETTINGS})
            if unknown:
                raise ValueError(
                    f"parameter group {i}: gpunet's groups may set {', '.join(GROUP_SETTINGS)}; "
                    f"got {', '.join(map(repr, unknown))}"
                )
            members = list(group["params"])
            for j, p in enumerate(members):
                if not isinstance(p, Parameter):
                    raise TypeError(
                        f"expected gn.nn.Parameter objects (model.parameters()), got "
                        f"{type(p).__name__} at position {j}"
                        + (f" of group {i}" if len(groups) > 1 else "")
                    )
            checked.append(
                {
                    "params": members,
                    "lr": _check_nonnegative("lr", group.get("lr", lr)),
                    "weight_decay": _check_nonnegative(
                        "weight_decay", group.get("weight_decay", weight_decay)
                    ),
                }
            )
        return checked

    @property
    def lr(self) -> float:
        """The first parameter group's learning rate."""
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        value = _check_nonnegative("lr", value)
        for group, ratio in zip(self.param_groups, self._lr_ratios, strict=True):
            group["lr"] = value * ratio

    @property
    def weight_decay(self) -> float:
        """The first parameter group's weight decay."""
        return self.param_groups[0]["weight_decay"]

    def zero_grad(self) -> None:
        """Clear every parameter's gradient (lazily: no kernel runs)."""
        for p in self.params:
            p.zero_grad()

    def step(self) -> None:
        """Update every parameter in place from its gradient: one launch per
        flat buffer (one per dtype and device for a model's parameters)."""
        for flat, state, members, segments in self._plan():
            for p in members:
                if p._grad_is_zero:  # no backward wrote it since zero_grad
                    p.grad  # noqa: B018 (fills it with zeros)
            self._update(flat, state, segments)
        self._stepped()

    def _update(self, flat, state, segments) -> None:
        """One buffer's update through the checked op (``_checked_update``).
        On the CPU, once that op has checked these very arrays, segments and
        settings, later updates run its kernel alone with the segment table
        it made (``_kernel_update``): the checks cost four times the update of
        a small network. The segments are the plan's, made anew whenever a
        group's settings change, so they hold what was checked. A step that
        a host replay records runs the op, whose kernel call the record sees."""
        arrays = (flat.data, flat.grad, *(state[name] for name in self._state_buffers))
        settings = self._update_settings()
        known = self._checked.get((id(state), id(segments)))
        if (
            known is not None
            and not replay.recording()
            and known[0] is segments
            and known[2] == settings
            and all(a is b for a, b in zip(known[1], arrays, strict=True))
        ):
            self._kernel_update(arrays, known[3])
            return
        self._checked_update(arrays, segments)
        if flat.device.type == "cpu":
            table = self._table(arrays[0], segments)
            self._checked[id(state), id(segments)] = (segments, arrays, settings, table)

    def _plan(self) -> list:
        """[(flat buffers, their state, their parameters, segments)], one entry
        per buffer, made anew when a parameter was bound to other buffers
        (``parameter.bindings`` moved) or a group's settings changed; making
        it checks every parameter before any state changes, and carries each
        parameter's state to where it lies now. Plans for a few settings are
        kept while the bindings stay: scikit-learn's rule scales the weight
        decay by the batch size, which differs for an epoch's last batch."""
        settings = tuple((group["lr"], group["weight_decay"]) for group in self.param_groups)
        key = (parameter.bindings, settings)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        if len(self._plans) >= MAX_PLANS or any(k[0] != key[0] for k in self._plans):
            self._plans.clear()
            self._checked.clear()
        buffers = self._buffers()
        for key_, (_, members) in buffers.items():
            for p, _ in members:
                self._check_placement(p, key_)
        plan = []
        for key_, (flat, members) in buffers.items():
            state = self.state.get(key_)
            if state is None:
                state = self.state[key_] = self._new_state(flat)
            for p, _ in members:
                self._place_state(p, key_, state)
            params = [p for p, _ in members]
            plan.append((flat, state, params, self._segments(key_, members)))
        for stale in [k for k in self.state if k not in buffers]:
            del self.state[stale]  # buffers no parameter of ours lives in any more
        self._plans[key] = plan
        return plan

    def _buffers(self) -> dict:
        """id(flat buffers) -> (the buffers, [(parameter, group index)] by offset)."""
        found: dict = {}
        for index, group in enumerate(self.param_groups):
            for p in group["params"]:
                found.setdefault(id(p._flat), (p._flat, []))[1].append((p, index))
        for _, members in found.values():
            members.sort(key=lambda member: member[0]._offset)
        return found

    def _check_placement(self, p, key):
        placed = self._placed.get(id(p))
        if placed is None or placed[0] == key:
            return
        old = self.state[placed[0]]
        if old["device"] != p.device:
            raise ValueError(
                f"parameter {p.name} moved from {old['device']} to {p.device} after the "
                "optimizer started; create the optimizer after model.to(device)"
            )

    def _place_state(self, p, key, state):
        """Record where ``p``'s state lies; when its buffers changed since the
        last step (the model was packed anew), carry its state over."""
        placed = self._placed.get(id(p))
        here = (key, p._offset)
        if placed == here:
            return
        if placed is not None:
            old = self.state[placed[0]]
            for name in self._state_buffers:
                source = old[name][placed[1] : placed[1] + p.size]
                target = state[name][p._offset : p._offset + p.size]
                if isinstance(target, np.ndarray):
                    np.copyto(target, source)
                else:
                    target.copy_to_device(source)
        self._placed[id(p)] = here

    def _segments(self, key, members):
        """(bounds, settings) host arrays: the ranges of the buffer to update
        (adjacent parameters of one group merged) and each one's (lr, weight_decay)."""
        bounds, groups = [], []
        for p, index in members:
            if bounds and groups[-1] == index and bounds[-1][1] == p._offset:
                bounds[-1][1] += p.size
            else:
                bounds.append([p._offset, p._offset + p.size])
                groups.append(index)
        settings = [
            (self.param_groups[i]["lr"], self.param_groups[i]["weight_decay"]) for i in groups
        ]
        return np.array(bounds, np.int64).reshape(-1, 2), np.array(settings, np.float64)

    def _new_state(self, flat) -> dict:
        state = {"device": flat.device, "buffers": flat}  # holds the id key alive
        for name in self._state_buffers:
            state[name] = zeros(flat.size, flat.dtype, flat.device)
        return state

    def _stepped(self) -> None:
        pass

    def state_dict(self) -> dict:
        """The optimizer's state in the spirit of PyTorch's ``state_dict()``, with
        host numpy arrays (a copy: later steps do not change it):

        - "state": {index in ``params``: {buffer name: array of the parameter's
          shape}} for the parameters stepped so far ("buf", SGD's momentum;
          "m" and "v", Adam's moments);
        - "param_groups": per group, {"params": [indices in ``params``], "lr",
          "weight_decay", "lr_scale"} ("lr_scale": the group's lr over the
          first group's, which setting ``lr`` keeps);
        - "class", "settings" (the optimizer-wide ones: momentum, nesterov;
          betas, eps) and "counters" (SGD's "first" step to come, Adam's "steps").

        All but the arrays is JSON-serialisable."""
        index = {id(p): i for i, p in enumerate(self.params)}
        state = {}
        for i, p in enumerate(self.params):
            placed = self._placed.get(id(p))
            if placed is None:
                continue
            key, offset = placed
            state[i] = {
                name: to_numpy(self.state[key][name][offset : offset + p.size])
                .reshape(p.shape)
                .copy()
                for name in self._state_buffers
            }
        groups = [
            {
                "params": [index[id(p)] for p in group["params"]],
                "lr": group["lr"],
                "weight_decay": group["weight_decay"],
                "lr_scale": ratio,
            }
            for group, ratio in zip(self.param_groups, self._lr_ratios, strict=True)
        ]
        return {
            "class": type(self).__name__,
            "settings": self._settings(),
            "counters": self._counters(),
            "param_groups": groups,
            "state": state,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()`` of an optimizer of the same class over
        parameters of the same shapes in the same groups; its settings
        (learning rates, momentum, betas, ...) replace this optimizer's.
        Everything is checked before anything changes (ValueError)."""
        self._apply_state(self._checked_state(state))

    def _checked_state(self, state) -> dict:
        """``state`` (a ``state_dict()``, its int keys possibly strings, as JSON
        leaves them) checked against this optimizer and normalised."""
        name = type(self).__name__
        expected_keys = {"class", "settings", "counters", "param_groups", "state"}
        if not isinstance(state, dict) or set(state) != expected_keys:
            found = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(
                f"expected an optimizer state_dict with {sorted(expected_keys)}, got {found}"
            )
        if state["class"] != name:
            raise ValueError(f"expected the state of a {name} optimizer, got {state['class']!r}'s")
        groups = state["param_groups"]
        if not isinstance(groups, list) or len(groups) != len(self.param_groups):
            raise ValueError(
                f"expected {len(self.param_groups)} parameter groups in the state, got "
                f"{len(groups) if isinstance(groups, list) else groups!r}"
            )
        index = {id(p): i for i, p in enumerate(self.params)}
        checked_groups = []
        for g, (group, mine) in enumerate(zip(groups, self.param_groups, strict=True)):
            if not isinstance(group, dict) or set(group) != {
                "params",
                "lr",
                "weight_decay",
                "lr_scale",
            }:
                raise ValueError(f"parameter group {g} of the state is not a group: {group!r}")
            members = [index[id(p)] for p in mine["params"]]
            if group["params"] != members:
                raise ValueError(
                    f"parameter group {g}: the state holds parameters {group['params']}, "
                    f"this optimizer {members}"
                )
            checked_groups.append(
                {
                    key: _check_nonnegative(f"{key} of parameter group {g}", group[key])
                    for key in ("lr", "weight_decay", "lr_scale")
                }
            )
        if not isinstance(state["settings"], dict) or not isinstance(state["counters"], dict):
            raise ValueError("expected the state's settings and counters to be dicts")
        settings = self._checked_settings(state["settings"])
        counters = self._checked_counters(state["counters"])
        buffers = {}
        per_param = state["state"]
        if not isinstance(per_param, dict):
            raise ValueError(
                f"expected the state's per-parameter state to be a dict, got {per_param!r}"
            )
        for key, found in per_param.items():
            i = int(key) if isinstance(key, str) and key.isdigit() else key
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(self.params):
                raise ValueError(
                    f"state for parameter {key!r}: this optimizer has {len(self.params)}"
                )
            p = self.params[i]
            if not isinstance(found, dict) or set(found) != set(self._state_buffers):
                raise ValueError(
                    f"state for parameter {i}: expected buffers {list(self._state_buffers)}, "
                    f"got {sorted(found) if isinstance(found, dict) else found!r}"
                )
            for buffer, value in found.items():
                value = np.asarray(value)
                if value.dtype.kind not in "biuf" or value.shape != p.shape:
                    raise ValueError(
                        f"state {buffer!r} of parameter {i}: expected numbers of shape "
                        f"{p.shape}, got {value.dtype} of shape {value.shape}"
                    )
            buffers[i] = found
        return {
            "groups": checked_groups,
            "settings": settings,
            "counters": counters,
            "state": buffers,
        }

    def _apply_state(self, checked: dict) -> None:
        """Set the state ``_checked_state`` gave; the parameters without state
        in it start from zeros."""
        for group, values in zip(self.param_groups, checked["groups"], strict=True):
            group["lr"], group["weight_decay"] = values["lr"], values["weight_decay"]
        self._lr_ratios = [values["lr_scale"] for values in checked["groups"]]
        for attribute, value in {**checked["settings"], **checked["counters"]}.items():
            setattr(self, attribute, value)
        self.state, self._placed, self._plans, self._checked = {}, {}, {}, {}
        if not checked["state"]:
            return
        index = {id(p): i for i, p in enumerate(self.params)}
        for key, (flat, members) in self._buffers().items():
            state = self.state[key] = self._new_state(flat)
            for p, _ in members:
                self._placed[id(p)] = (key, p._offset)
                found = checked["state"].get(index[id(p)])
                for name in () if found is None else self._state_buffers:
                    target = state[name][p._offset : p._offset + p.size]
                    value = np.ascontiguousarray(np.asarray(found[name]).reshape(-1), flat.dtype)
                    if isinstance(target, np.ndarray):
                        np.copyto(target, value)
                    else:
                        target.copy_to_device(value)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        groups = f", {len(self.param_groups)} groups" if len(self.param_groups) > 1 else ""
        return f"{type(self).__name__}({len(self.params)} parameters{groups}, {args})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum
    and (L2) weight decay, as ``torch.optim.SGD`` with dampening 0."""

    _state_buffers = ("buf",)

    def __init__(
        self,
        params: Iterable,
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, lr, weight_decay)
        self.momentum = _check_nonnegative("momentum", momentum)
        if nesterov and self.momentum == 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.nesterov = bool(nesterov)
        self._first = True

    def _update_settings(self):
        return self.momentum, self.nesterov, self._first

    def _checked_update(self, arrays, segments):
        ops.sgd(
            *arrays, None, self.momentum, 0.0, self.nesterov, self._first, segments=segments
        )  # fmt: skip

    def _table(self, p, segments):
        return _kernels.sgd_table(p, segments)

    def _kernel_update(self, arrays, table):
        _kernels.sgd_cpu_tabled(*arrays, table, self.momentum, self.nesterov, self._first)

    def _stepped(self):
        self._first = False

    def _settings(self) -> dict:
        return {"momentum": self.momentum, "nesterov": self.nesterov}

    def _checked_settings(self, settings) -> dict:
        if set(settings) != {"momentum", "nesterov"} or not isinstance(settings["nesterov"], bool):
            raise ValueError(f"expected SGD settings momentum and nesterov, got {settings!r}")
        momentum = _check_nonnegative("momentum", settings["momentum"])
        if settings["nesterov"] and momentum == 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        return {"momentum": momentum, "nesterov": settings["nesterov"]}

    def _counters(self) -> dict:
        return {"first": self._first}

    def _checked_counters(self, counters) -> dict:
        if set(counters) != {"first"} or not isinstance(counters["first"], bool):
            raise ValueError(f"expected SGD counters {{'first': bool}}, got {counters!r}")
        return {"_first": counters["first"]}

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
    _state_buffers = ("m", "v")

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, lr, weight_decay)
        betas = tuple(betas)
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"expected betas to be two numbers in [0, 1), got {betas!r}")
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = _check_nonnegative("eps", eps)
        #: Steps taken (Adam's t, from 1 in the first step).
        self.steps = 0

    def _update_settings(self):
        return self.betas  # eps, which scikit-learn's rule changes every step, is checked in each

    def _checked_update(self, arrays, segments):
        ops.adam(
            *arrays, self.steps + 1, None, self.betas, self.eps, 0.0, self.decoupled,
            segments=segments,
        )  # fmt: skip

    def _table(self, p, segments):
        return _kernels.adam_table(p, segments, self.decoupled)

    def _kernel_update(self, arrays, table):
        eps = ops._check_setting("adam", "eps", self.eps)  # as the checked op does
        _kernels.adam_cpu_tabled(*arrays, table, self.steps + 1, self.betas, eps)

    def _stepped(self):
        self.steps += 1

    def _settings(self) -> dict:
        return {"betas": list(self.betas), "eps": self.eps}

    def _checked_settings(self, settings) -> dict:
        betas = settings.get("betas")
        if (
            set(settings) != {"betas", "eps"}
            or not isinstance(betas, (list, tuple))
            or len(betas) != 2
            or not all(
                isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1
                for b in betas
            )
        ):
            raise ValueError(
                f"expected Adam settings betas (two in [0, 1)) and eps, got {settings!r}"
            )
        return {
            "betas": (float(betas[0]), float(betas[1])),
            "eps": _check_nonnegative("eps", settings["eps"]),
        }

    def _counters(self) -> dict:
        return {"steps": self.steps}

    def _checked_counters(self, counters) -> dict:
        steps = counters.get("steps")
        if (
            set(counters) != {"steps"}
            or isinstance(steps, bool)
            or not isinstance(steps, int)
            or steps < 0
        ):
            raise ValueError(f"expected Adam counters {{'steps': int >= 0}}, got {counters!r}")
        return {"steps": steps}

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
    without touching the gradients.

    The norm is summed on the host in float64, so GPU gradients are copied
    there to measure them: a whole flat gradient buffer at once where
    ``params`` fill it (a model's parameters), else each parameter's. The
    scaling is one ``gn.ops.scale`` launch per such buffer, else per parameter."""
    params = list(params)
    for i, p in enumerate(params):
        if not isinstance(p, Parameter):
            raise TypeError(f"expected gn.nn.Parameter objects, got {type(p).__name__} at {i}")
    max_norm = _check_nonnegative("max_norm", max_norm)
    by_buffer: dict[int, list[Parameter]] = {}
    for p in params:
        by_buffer.setdefault(id(p._flat), []).append(p)
    grads = []
    for members in by_buffer.values():
        views = [p.grad for p in members]  # reading a cleared grad writes its zeros
        flat = flat_buffers(members)
        grads += views if flat is None else [flat.grad]
    total = 0.0
    for g in grads:
        g = np.asarray(to_numpy(g), np.float64).reshape(-1)
        total += float(np.dot(g, g))
    total = math.sqrt(total)
    factor = max_norm / (total + eps)
    if math.isfinite(total) and factor < 1:
        for g in grads:
            ops.scale(g, factor, out=g)
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

    def state_dict(self) -> dict:
        """{"base_lr", "epoch"}: where the schedule stands (its arguments are the constructor's)."""
        return {"base_lr": self.base_lr, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()``; checks it all before changing anything."""
        if not isinstance(state, dict) or set(state) != {"base_lr", "epoch"}:
            raise ValueError(f"expected a schedule state {{'base_lr', 'epoch'}}, got {state!r}")
        epoch = state["epoch"]
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"expected an integer epoch >= 0 in a schedule state, got {epoch!r}")
        self.base_lr, self.epoch = _check_nonnegative("base_lr", state["base_lr"]), epoch


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
