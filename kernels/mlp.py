"""A whole epoch of mini-batch training of a multi-layer perceptron on the
CPU, in one compiled call: what ``gn.MLPClassifier`` and ``gn.MLPRegressor``
run per epoch on the CPU.

A network of L dense layers (each y = act(x @ W + b), the last without an
activation: it gives the loss its logits) lives in one flat parameter array
``p`` with its gradients in ``g``; ``layers`` (L, 4) int64 holds each layer's
(offset of W, offset of b, fan_in, fan_out), W row-major (fan_in, fan_out).
For each batch k, the rows order[bounds[k]:bounds[k + 1]] of X (features)
and T (targets: class indices for the softmax cross-entropy, else rows of
values) are gathered, and then, in this order:

1. the forward pass through the layers;
2. the loss of the last layer's outputs against the targets, averaged over
   the batch (softmax cross-entropy, binary cross-entropy on logits, or mean
   half squared error), into ``losses[k]``; its gradient times
   ``grad_scale``;
3. the backward pass, writing every layer's W and b gradients into g (no
   input gradient for the first layer);
4. each W's squared norm ||W||^2 into ``squares[k, layer]`` (the weights the
   batch was computed with: the L2 term of the batch's loss), unless
   ``squares`` has no columns (no L2 term);
5. one optimizer step over the segments [start, stop) of p, each in a
   parameter group with a learning rate and a weight decay per row of the
   batch (the decay is ``decays[group] / rows``: scikit-learn's alpha / n),
   SGD (momentum, Nesterov) or Adam with scikit-learn's epsilon (added to
   sqrt(v) before the bias correction: PyTorch's eps is epsilon over
   sqrt(1 - beta_2^t)), by the update rules of ``kernels.optim``.

Each stage runs the kernel that ``gn.nn.Dense``, ``gn.losses`` and
``gn.optim`` run for it (``kernels.dense``, ``kernels.losses``,
``kernels.optim``), and the products are numpy's own BLAS (``blas.gemm``),
so an epoch leaves the parameters and the optimizer's state that the
layers' ops leave step by step, bit for bit, but for products with one
column (a binary classifier's output layer), which numpy's matmul computes
as matrix-vector products, rounded otherwise than gemm. A loss value may
differ in its last place: the loss kernels' sums, linked into the epoch,
are optimized again (see ``_cache``). What the epoch saves is the ops' host
cost per step (checks, dispatch, Python), which at a small network's sizes
is as long as its products. The squared norms accumulate in float64
(``squared_norm``: 16 partial sums, so the loop vectorises).

``train_epoch_ref`` is the numpy reference, in float64. There is no CUDA
kernel: on a GPU the estimators run the layers' kernels.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from . import dense as _dense
from . import losses as _losses
from . import optim as _optim
from ._cache import cached
from ._cpu import CPU_OPTIONS, flush_subnormals, restore_subnormals
from .blas import gemm

#: Hidden activations, by their codes in the kernel.
ACTIVATIONS = (None, "relu", "sigmoid", "tanh")
#: Losses, by their codes in the kernel.
LOSSES = ("softmax_cross_entropy", "binary_cross_entropy", "mse")
#: Optimizers, by their codes in the kernel.
SOLVERS = ("sgd", "adam")

_IDENTITY, _RELU, _SIGMOID, _TANH = range(4)
_SOFTMAX_CROSS_ENTROPY, _BINARY_CROSS_ENTROPY, _MSE = range(3)
_SGD, _ADAM = range(2)

# --- reference (the executable spec) ---------------------------------------------------

_LOSS_REFERENCES = {
    "softmax_cross_entropy": _losses.softmax_cross_entropy_ref,
    "binary_cross_entropy": _losses.binary_cross_entropy_ref,
    "mse": _losses.mse_ref,
}


def train_epoch_ref(
    X, T, order, bounds, layers, activation, p, state, segments, groups, rates, decays,
    solver, settings, loss, grad_scale,
):  # fmt: skip
    """The epoch in float64: (p, state, losses (batches,), squares (batches, L)).
    T: class indices (n,) for the softmax cross-entropy, else (n, outputs).

    ``state``: SGD's (momentum buffer,), Adam's (m, v), flat like p;
    ``settings``: SGD's (momentum, nesterov, first), Adam's (beta_1, beta_2,
    epsilon, steps taken before the epoch)."""
    p = p.astype(np.float64)
    state = [s.astype(np.float64) for s in state]
    X = X.astype(np.float64)
    T = T if loss == "softmax_cross_entropy" else T.astype(np.float64)
    n_batches = len(bounds) - 1
    losses, squares = np.zeros(n_batches), np.zeros((n_batches, len(layers)))
    last = len(layers) - 1
    for k in range(n_batches):
        rows = order[bounds[k] : bounds[k + 1]]
        x, t = X[rows], T[rows]
        params = [
            (p[w0 : w0 + fi * fo].reshape(fi, fo), p[b0 : b0 + fo]) for w0, b0, fi, fo in layers
        ]
        inputs, outputs = [], []
        for i, (W, b) in enumerate(params):
            inputs.append(x)
            x = _dense.dense_ref(x, W, b, activation if i < last else None)
            outputs.append(x)
        losses[k], grad = _LOSS_REFERENCES[loss](x, t)
        grad = grad * grad_scale
        g = np.zeros_like(p)
        for i in range(last, -1, -1):
            (w0, b0, fi, fo), (W, _) = layers[i], params[i]
            grad, dW, db = _dense.dense_backward_ref(
                grad, inputs[i], W, outputs[i], activation if i < last else None
            )
            g[w0 : w0 + fi * fo], g[b0 : b0 + fo] = dW.reshape(-1), db
        squares[k] = [np.sum(W * W) for W, _ in params]
        for (start, stop), group in zip(segments, groups, strict=True):
            lr, decay = rates[group], decays[group] / len(rows)
            part = slice(start, stop)
            if solver == "sgd":
                momentum, nesterov, first = settings
                p[part], state[0][part] = _optim.sgd_ref(
                    p[part], g[part], state[0][part], lr, momentum, decay, nesterov,
                    first and k == 0,
                )  # fmt: skip
            else:
                b1, b2, epsilon, steps = settings
                step = steps + k + 1
                p[part], state[0][part], state[1][part] = _optim.adam_ref(
                    p[part], g[part], state[0][part], state[1][part], step, lr, (b1, b2),
                    epsilon / math.sqrt(1 - b2**step), decay,
                )  # fmt: skip
    return p, state, losses, squares


# --- CPU kernel ------------------------------------------------------------------------

_EPILOGUE_IDENTITY, _EPILOGUE_RELU, _EPILOGUE_SIGMOID, _EPILOGUE_TANH = (
    _dense._EPILOGUE[a] for a in ACTIVATIONS
)
_GRAD_IDENTITY, _GRAD_RELU, _GRAD_SIGMOID, _GRAD_TANH = (_dense._GRAD[a] for a in ACTIVATIONS)
_CROSS_ENTROPY = _losses._cross_entropy_labels_cpu
_BCE, _HALF_SQUARES = _losses._BCE_CPU, _losses._MSE_CPU


@numba.njit(**CPU_OPTIONS)
def _activate(code, y, b, one):
    """y = act(y + b) in place, act by its code."""
    if code == _RELU:
        _EPILOGUE_RELU(y, b, one)
    elif code == _SIGMOID:
        _EPILOGUE_SIGMOID(y, b, one)
    elif code == _TANH:
        _EPILOGUE_TANH(y, b, one)
    else:
        _EPILOGUE_IDENTITY(y, b, one)


@numba.njit(**CPU_OPTIONS)
def _activation_grad(code, g, y, one, dz, db):
    """dz = g * act'(y) and db = column sums of dz, act by its code."""
    if code == _RELU:
        _GRAD_RELU(g, y, one, dz, db, False)
    elif code == _SIGMOID:
        _GRAD_SIGMOID(g, y, one, dz, db, False)
    elif code == _TANH:
        _GRAD_TANH(g, y, one, dz, db, False)
    else:
        _GRAD_IDENTITY(g, y, one, dz, db, False)


@numba.njit(**CPU_OPTIONS)
def _loss(code, z, t, labels, grad):
    """The batch's mean loss (float64), and its gradient into grad, as the
    loss launchers of kernels.losses compute them: against the class
    indices ``labels`` for the softmax cross-entropy, else against t."""
    rows, n = z.shape
    if code == _SOFTMAX_CROSS_ENTROPY:
        log_sums, margins = _CROSS_ENTROPY(z, labels, grad)
        inv = z.dtype.type(1 / rows)
        for i in range(rows):
            for j in range(n):
                grad[i, j] *= inv
        return (log_sums + margins) / rows
    size = rows * n
    flat_z, flat_t, flat_grad = z.reshape(size), t.reshape(size), grad.reshape(size)
    if code == _BINARY_CROSS_ENTROPY:
        return _BCE(flat_z, flat_t, flat_grad, z.dtype.type(1 / size)) / size
    return _HALF_SQUARES(flat_z, flat_t, flat_grad, z.dtype.type(1 / size)) / size


_PARTIALS = 16


@cached()
@numba.njit(**CPU_OPTIONS)
def squared_norm(w):
    """sum(w * w) in float64, over _PARTIALS interleaved partial sums."""
    partial = np.zeros(_PARTIALS)
    whole = w.size - w.size % _PARTIALS
    for i in range(0, whole, _PARTIALS):
        for j in range(_PARTIALS):
            v = np.float64(w[i + j])
            partial[j] += v * v
    total = 0.0
    for j in range(_PARTIALS):
        total += partial[j]
    for i in range(whole, w.size):
        v = np.float64(w[i])
        total += v * v
    return total


@numba.njit(**CPU_OPTIONS)
def _update(p, g, first_state, second_state, segments, groups, rates, decays, rows, solver,
            momentum, nesterov, first, b1, b2, epsilon, step):  # fmt: skip
    """One optimizer step over the segments, as kernels.optim's CPU kernels take it."""
    t = p.dtype.type
    control = flush_subnormals()
    if solver == _ADAM:
        power1, power2 = math.pow(b1, np.float64(step)), math.pow(b2, np.float64(step))
        eps = t(epsilon / math.sqrt(1 - power2))
        bias1, sqrt_bias2 = t(1 - power1), t(math.sqrt(1 - power2))
        for s in range(segments.shape[0]):
            start, stop, group = segments[s, 0], segments[s, 1], groups[s]
            _optim._adam_range(
                p[start:stop], g[start:stop], first_state[start:stop], second_state[start:stop],
                t(b1), t(1 - b1), t(b2), t(1 - b2), eps, t(decays[group] / rows), t(1),
                t(rates[group]) / bias1, sqrt_bias2,
            )  # fmt: skip
    else:
        for s in range(segments.shape[0]):
            start, stop, group = segments[s, 0], segments[s, 1], groups[s]
            _optim._sgd_range(
                p[start:stop], g[start:stop], first_state[start:stop], t(rates[group]),
                t(momentum), t(decays[group] / rows), nesterov, first,
            )  # fmt: skip
    restore_subnormals(control)


@cached()
@numba.njit(**CPU_OPTIONS)
def _epoch_cpu(
    X, T, labels, order, bounds, layers, activation, p, g, first_state, second_state, segments,
    groups, rates, decays, solver, momentum, nesterov, first, b1, b2, epsilon, steps, loss,
    grad_scale, xb, tb, lb, ys, grad, dz, losses, squares,
):  # fmt: skip
    """The epoch of ``train_epoch`` (codes for the names; labels (n,) for the
    softmax cross-entropy, else T), on the flat scratch arrays xb (batch
    rows), tb (their targets), lb (their labels), ys (the layers' outputs),
    grad and dz (a layer's output gradient, before and after its activation)."""
    n_layers, features, outputs = layers.shape[0], X.shape[1], layers[-1, 3]
    targets = T.shape[1]
    one = p.dtype.type(1)
    zero = one - one
    for k in range(bounds.size - 1):
        start, rows = bounds[k], bounds[k + 1] - bounds[k]
        x = xb[: rows * features].reshape((rows, features))
        t = tb[: rows * targets].reshape((rows, targets))
        for i in range(rows):
            r = order[start + i]
            for j in range(features):
                x[i, j] = X[r, j]
            for j in range(targets):
                t[i, j] = T[r, j]
            if labels.size:
                lb[i] = labels[r]
        # ys holds the layers' outputs one after another: layer l's at rows * (its offset).
        inputs, offset = x, 0
        for layer in range(n_layers):
            w0, b0, fan_in, fan_out = layers[layer]
            y = ys[rows * offset : rows * (offset + fan_out)].reshape((rows, fan_out))
            W = p[w0 : w0 + fan_in * fan_out].reshape((fan_in, fan_out))
            gemm(False, False, one, inputs, W, zero, y)
            _activate(activation if layer < n_layers - 1 else _IDENTITY, y, p[b0 : b0 + fan_out],
                      one)  # fmt: skip
            inputs, offset = y, offset + fan_out
        g_out = grad[: rows * outputs].reshape((rows, outputs))
        losses[k] = _loss(loss, inputs, t, lb[:rows], g_out)
        if grad_scale != 1:
            scale = p.dtype.type(grad_scale)
            for i in range(rows):
                for j in range(outputs):
                    g_out[i, j] *= scale
        for layer in range(n_layers - 1, -1, -1):
            w0, b0, fan_in, fan_out = layers[layer]
            offset -= fan_out
            y = ys[rows * offset : rows * (offset + fan_out)].reshape((rows, fan_out))
            if layer > 0:
                inputs = ys[rows * (offset - fan_in) : rows * offset].reshape((rows, fan_in))
            else:
                inputs = x
            d = dz[: rows * fan_out].reshape((rows, fan_out))
            _activation_grad(activation if layer < n_layers - 1 else _IDENTITY, g_out, y, one, d,
                             g[b0 : b0 + fan_out])  # fmt: skip
            dW = g[w0 : w0 + fan_in * fan_out].reshape((fan_in, fan_out))
            gemm(True, False, one, inputs, d, zero, dW)
            if layer > 0:
                g_out = grad[: rows * fan_in].reshape((rows, fan_in))
                W = p[w0 : w0 + fan_in * fan_out].reshape((fan_in, fan_out))
                gemm(False, True, one, d, W, zero, g_out)
        for layer in range(squares.shape[1]):
            w0, fan_in, fan_out = layers[layer, 0], layers[layer, 2], layers[layer, 3]
            squares[k, layer] = squared_norm(p[w0 : w0 + fan_in * fan_out])
        _update(
            p, g, first_state, second_state, segments, groups, rates, decays, rows, solver,
            momentum, nesterov, first and k == 0, b1, b2, epsilon, steps + k + 1,
        )  # fmt: skip


# --- launcher --------------------------------------------------------------------------


def train_epoch(
    X, T, order, bounds, layers, activation, p, g, state, segments, groups, rates, decays,
    solver, settings, loss, grad_scale, losses, squares,
):  # fmt: skip
    """One epoch in place (see the module docstring): p, g, ``state`` (SGD's
    (momentum buffer,), Adam's (m, v)), ``losses`` (batches,) and ``squares``
    (batches, L), or (batches, 0) for none, are written; ``settings`` as in
    ``train_epoch_ref``.

    X (n, features) is C-contiguous, of p's dtype (float32 or float64), and
    so is T (n, outputs), but for the softmax cross-entropy, which takes
    class indices T (n,) int64 from 0 to outputs - 1; order (m,) and bounds
    (batches + 1,) are int64, bounds rising from 0 to at most m, order's
    values rows of X; layers (L, 4), segments (S, 2) and groups (S,) are
    int64, rates and decays (G,) float64.
    Everything is checked before anything is written."""
    args = (X, T, order, bounds, layers, activation, p, g, state, segments, groups, rates,
            decays, solver, settings, loss, grad_scale, losses, squares)  # fmt: skip
    check_epoch(*args)
    train_epoch_checked(*args)


def train_epoch_checked(
    X, T, order, bounds, layers, activation, p, g, state, segments, groups, rates, decays,
    solver, settings, loss, grad_scale, losses, squares, scratch=None,
):  # fmt: skip
    """train_epoch for arguments that ``check_epoch`` passed: the kernel
    alone. Once its arrays passed, a caller may pass them again with
    another order (a permutation of the same rows), other rates and other
    settings of the same solver. ``scratch``: ``epoch_scratch``'s arrays for
    these X, T, bounds, layers and loss, kept from call to call (new ones
    cost their first touch of memory each call), or None for new ones."""
    if scratch is None:
        scratch = epoch_scratch(X, T, bounds, layers, loss)
    if solver == "sgd":
        (buf,), (momentum, nesterov, first) = state, settings
        first_state, second_state, b1, b2, epsilon, steps = buf, buf[:0], 0.0, 0.0, 0.0, 0
    else:
        (first_state, second_state), (b1, b2, epsilon, steps) = state, settings
        momentum, nesterov, first = 0.0, False, False
    if loss == "softmax_cross_entropy":
        T, labels = scratch[0], T
    else:
        labels = scratch[1]
    _epoch_cpu(
        X, T, labels, order, bounds, layers, ACTIVATIONS.index(activation), p, g, first_state,
        second_state, segments, groups, rates, decays, SOLVERS.index(solver), float(momentum),
        bool(nesterov), bool(first), float(b1), float(b2), float(epsilon), int(steps),
        LOSSES.index(loss), float(grad_scale), *scratch[2:], losses, squares,
    )  # fmt: skip


def epoch_scratch(X, T, bounds, layers, loss):
    """The scratch arrays of an epoch: (no targets, no labels, then the
    kernel's xb, tb, lb, ys, grad, dz)."""
    dtype = X.dtype
    rows = int((bounds[1:] - bounds[:-1]).max())
    widest = int(layers[:, 2:].max())
    labels = loss == "softmax_cross_entropy"
    targets = 0 if labels else T.shape[1]
    return (
        np.empty((len(X), 0), dtype), np.empty(0, np.int64), np.empty(rows * X.shape[1], dtype),
        np.empty(rows * targets, dtype), np.empty(rows if labels else 0, np.int64),
        np.empty(rows * int(layers[:, 3].sum()), dtype), np.empty(rows * widest, dtype),
        np.empty(rows * widest, dtype),
    )  # fmt: skip


def check_epoch(
    X, T, order, bounds, layers, activation, p, g, state, segments, groups, rates, decays,
    solver, settings, loss, grad_scale, losses, squares,
):  # fmt: skip
    """ValueError naming what ``train_epoch`` cannot take (TypeError for a dtype)."""

    def fail(what):
        raise ValueError(f"train_epoch: expected {what}")

    if activation not in ACTIVATIONS:
        fail(f"activation one of {ACTIVATIONS}, got {activation!r}")
    if loss not in LOSSES:
        fail(f"loss one of {LOSSES}, got {loss!r}")
    if solver not in SOLVERS:
        fail(f"solver one of {SOLVERS}, got {solver!r}")
    dtype = p.dtype
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"train_epoch: expected float32 or float64 parameters, got {dtype}")
    labels = loss == "softmax_cross_entropy"
    floats = {"X": X, "g": g, "losses": losses, "squares": squares}
    if not labels:
        floats["T"] = T
    floats.update({f"state[{i}]": s for i, s in enumerate(state)})
    for name, a in floats.items():
        if a.dtype != dtype:
            raise TypeError(f"train_epoch: expected {name} of p's dtype {dtype}, got {a.dtype}")
    integers = {"order": order, "bounds": bounds, "layers": layers, "segments": segments,
                "groups": groups}  # fmt: skip
    if labels:
        integers["T"] = T
    for name, a in integers.items():
        if a.dtype != np.int64:
            raise TypeError(f"train_epoch: expected {name} of dtype int64, got {a.dtype}")
    arrays = {**floats, **integers, "p": p, "rates": rates, "decays": decays}
    for name, a in arrays.items():
        if not a.flags.c_contiguous:
            fail(f"{name} C-contiguous")
    if len(state) != (1 if solver == "sgd" else 2) or len(settings) != (
        3 if solver == "sgd" else 4
    ):
        fail(f"{solver}'s state and settings, got {len(state)} and {len(settings)} of them")
    if X.ndim != 2 or T.ndim != (1 if labels else 2) or len(T) != len(X):
        shape = "(n,)" if labels else "(n, outputs)"
        fail(f"X (n, features) and T {shape}, got {X.shape} and {T.shape}")
    if p.ndim != 1 or any(a.shape != p.shape for a in (g, *state)):
        fail(f"p, g and the state flat, of one shape, got {[a.shape for a in (p, g, *state)]}")
    if order.ndim != 1 or (order.size and not 0 <= order.min() <= order.max() < len(X)):
        fail(f"order to hold rows of X (0 to {len(X) - 1})")
    if bounds.ndim != 1 or bounds.size < 1 or bounds[0] != 0 or np.any(np.diff(bounds) < 1):
        fail(f"bounds rising from 0, got {bounds.tolist()}")
    if bounds[-1] > order.size:
        fail(f"bounds within order's {order.size} rows, got up to {bounds[-1]}")
    if layers.ndim != 2 or layers.shape[1] != 4 or len(layers) < 1:
        fail(f"layers (L >= 1, 4), got {layers.shape}")
    fan_in = X.shape[1]
    for i, (w0, b0, fi, fo) in enumerate(layers.tolist()):
        if fi != fan_in or fo < 1 or not (0 <= w0 and w0 + fi * fo <= p.size and
                                          0 <= b0 and b0 + fo <= p.size):  # fmt: skip
            fail(f"layer {i} to take {fan_in} inputs within p's {p.size} values, "
                 f"got {layers[i].tolist()}")  # fmt: skip
        fan_in = fo
    if labels and T.size and not 0 <= T.min() <= T.max() < fan_in:
        fail(f"class indices T from 0 to {fan_in - 1}, got {T.min()} to {T.max()}")
    if not labels and fan_in != T.shape[1]:
        fail(f"the last layer to give T's {T.shape[1]} outputs, got {fan_in}")
    if segments.ndim != 2 or segments.shape[1] != 2 or groups.shape != segments.shape[:1]:
        fail(f"segments (S, 2) and groups (S,), got {segments.shape} and {groups.shape}")
    _optim.check_segments("train_epoch", segments, p.size)
    if rates.shape != decays.shape or rates.ndim != 1 or rates.dtype != np.float64:
        fail(f"rates and decays (G,) float64, got {rates.shape} and {decays.shape}")
    if not (np.isfinite(rates).all() and np.isfinite(decays).all()):
        fail(f"finite rates and decays, got {rates.tolist()} and {decays.tolist()}")
    if groups.size and not 0 <= groups.min() <= groups.max() < rates.size:
        fail(f"groups to index the {rates.size} rates")
    batches = bounds.size - 1
    if losses.shape != (batches,) or squares.shape not in ((batches, len(layers)), (batches, 0)):
        fail(f"losses ({batches},) and squares ({batches}, {len(layers)}) or ({batches}, 0), "
             f"got {losses.shape} and {squares.shape}")  # fmt: skip
