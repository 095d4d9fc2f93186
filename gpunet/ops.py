"""Functional ops, dispatched to the CPU or CUDA kernel by where the inputs live.

Every op takes float32 or float64 arrays (numpy arrays, or CUDA arrays from
Numba, CuPy or PyTorch) and returns a new array on the same device, or writes
into ``out=`` (same shape, dtype and device, C-contiguous; may be the input
itself for elementwise ops) and returns it. Inputs are checked before any
kernel runs: a wrong dtype raises TypeError, a shape mismatch ValueError, a
host/GPU mix DeviceError.

Backward ops take ``grad_out`` (d loss / d output) and what the forward op saw
or made: the input ``x`` for step, relu and leaky_relu; the output ``y`` for
sigmoid, tanh, softmax and log_softmax. They return d loss / d input.

Loss ops return ``(loss, grad)``: the mean loss as a 0-d array on the
prediction's device (``float(loss)`` reads it) and d loss / d prediction.
"""

from __future__ import annotations

import math

import numpy as np

from . import dispatch, gemm
from .kernels import _cuda, activations
from .kernels import batchnorm as _batchnorm
from .kernels import dense as _dense
from .kernels import dropout as _dropout
from .kernels import losses as _losses
from .kernels import metrics as _metrics
from .kernels import scalers as _scalers
from .kernels import softmax as _softmax

_FLOAT_DTYPES = frozenset((np.dtype(np.float32), np.dtype(np.float64)))


def _on_host(arrays, out):
    """True when every array is a numpy array: the common case, checked cheaply."""
    for x in arrays:
        if type(x) is not np.ndarray:
            return False
    return out is None or type(out) is np.ndarray


def _contiguous(op, name, kind, x):
    """``x`` as a C-contiguous array the kernels accept (a copy only on the host)."""
    if kind == "cpu":
        return np.ascontiguousarray(x)
    x = _cuda.as_device_array(x)
    if not x.is_c_contiguous():
        raise ValueError(
            f"{op}: expected {name} to be C-contiguous on the GPU, got strides {x.strides}"
        )
    return x


def _empty(kind, shape, dtype):
    if kind == "cpu":
        return np.empty(shape, dtype)
    return _cuda.cuda.device_array(shape, dtype)


def _check_dtypes(op, names, arrays):
    """All of ``arrays`` float32, or all float64."""
    first = arrays[0]
    for name, x in zip(names, arrays, strict=True):
        if x.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{op}: expected {name} of dtype float32 or float64, got {x.dtype}")
        if x.dtype != first.dtype:
            raise TypeError(
                f"{op}: expected {name} of dtype {first.dtype} like {names[0]}, got {x.dtype}"
            )


def _inputs(op, names, arrays, out=None):
    """Check ``arrays`` (same shape and float dtype, one device, with ``out``);
    return (kind, C-contiguous inputs)."""
    first = arrays[0]
    if _on_host(arrays, out):
        kind = "cpu"
    else:
        kind = dispatch.placement(op, **dict(zip(names, arrays, strict=True)), out=out)
    _check_dtypes(op, names, arrays)
    for name, x in zip(names, arrays, strict=True):
        if x.shape != first.shape:
            raise ValueError(
                f"{op}: expected {name} of shape {first.shape} like {names[0]}, got {x.shape}"
            )
    return kind, [_contiguous(op, name, kind, x) for name, x in zip(names, arrays, strict=True)]


def _output(op, kind, out, shape, dtype):
    """(array the kernel writes, object to return): a new array, or ``out`` checked."""
    if out is None:
        result = _empty(kind, shape, dtype)
        return result, result
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(
            f"{op}: expected out of shape {shape} and dtype {dtype}, "
            f"got {out.shape} and {out.dtype}"
        )
    if kind == "cpu":
        if not out.flags.c_contiguous:
            raise ValueError(f"{op}: expected out to be C-contiguous")
        if not out.flags.writeable:
            raise ValueError(f"{op}: expected a writable out, got a read-only array")
        return out, out
    return _contiguous(op, "out", kind, out), out


def _flat(kind, x):
    """``x`` as a 1-D view (C-contiguous ``x``; on a GPU the same view each call)."""
    return x.ravel() if kind == "cpu" else _cuda.flat(x)


def _operands(op, names, arrays, out):
    """``_inputs`` and ``_output``: (kind, inputs, output array, the object to return)."""
    kind, inputs = _inputs(op, names, arrays, out)
    return (kind, inputs, *_output(op, kind, out, arrays[0].shape, arrays[0].dtype))


# --- elementwise activations ----------------------------------------------------------


_CPU_KERNELS = dispatch._registry["cpu"]
# numpy's own float32 and float64 descriptors: an identity test is the fast
# path's cheapest dtype check (an equal descriptor made otherwise takes the
# checked path).
_FLOAT32, _FLOAT64 = np.dtype(np.float32), np.dtype(np.float64)


def _activation_checked(name, x, out, *c):
    """A forward activation's checked path: names what is wrong with the
    arguments, or runs the kernel of the device they are on."""
    kind, (x,), result, returned = _operands(name, ("x",), (x,), out)
    done = dispatch.kernel_for(name, kind)(_flat(kind, x), _flat(kind, result), *c)
    assert done is not False, f"{name}: the CPU kernel refused checked arrays"
    return returned


def _activation_op(name, doc):
    """The op ``name(x, *, out=None)`` of an activation without a constant."""

    def op(x, *, out=None):
        # Fast path, the common host call: the registry's CPU kernel on the
        # arrays as they are. It checks them itself (dtypes and layouts when
        # it is compiled, shapes when it runs) and returns False, having
        # written nothing, for what it cannot take; the checked path then
        # names the problem. The dtype test keeps types Numba cannot compile
        # for away from it. It is written out here, not called: a Python call
        # is about a sixth of a small op.
        if type(x) is np.ndarray and ((dtype := x.dtype) is _FLOAT32 or dtype is _FLOAT64):
            result = np.empty(x.shape, dtype) if out is None else out  # C order
            if type(result) is np.ndarray and _CPU_KERNELS[name](x, result):
                return result
        return _activation_checked(name, x, out)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = doc
    return op


def _activation_backward(op, grad_out, saved_name, saved, out, c=None):
    if (  # as in _activation_op
        type(grad_out) is np.ndarray
        and type(saved) is np.ndarray
        and ((dtype := grad_out.dtype) is _FLOAT32 or dtype is _FLOAT64)
        and saved.dtype is dtype
    ):
        result = np.empty(grad_out.shape, dtype) if out is None else out
        kernel = _CPU_KERNELS[op]
        if type(result) is np.ndarray and (
            kernel(grad_out, saved, result) if c is None else kernel(grad_out, saved, result, c)
        ):
            return result
    kind, (g, s), result, returned = _operands(op, ("grad_out", saved_name), (grad_out, saved), out)
    args = (_flat(kind, g), _flat(kind, s), _flat(kind, result)) + (() if c is None else (c,))
    done = dispatch.kernel_for(op, kind)(*args)
    assert done is not False, f"{op}: the CPU kernel refused checked arrays"
    return returned


def _check_alpha(op, alpha):
    if not np.isfinite(alpha):
        raise ValueError(f"{op}: expected a finite alpha, got {alpha}")
    return float(alpha)


step = _activation_op("step", "Heaviside step: 1 where x > 0, else 0. Any shape; float32/float64.")
sigmoid = _activation_op(
    "sigmoid", "1 / (1 + exp(-x)), computed without overflow. Any shape; float32/float64."
)
tanh = _activation_op("tanh", "Hyperbolic tangent. Any shape; float32/float64.")
relu = _activation_op("relu", "max(x, 0); NaN stays NaN. Any shape; float32/float64.")


def leaky_relu(x, alpha=0.01, *, out=None):
    """x where x > 0, else alpha * x. Any shape; float32/float64."""
    alpha = _check_alpha("leaky_relu", alpha)
    if type(x) is np.ndarray and ((dtype := x.dtype) is _FLOAT32 or dtype is _FLOAT64):
        result = np.empty(x.shape, dtype) if out is None else out  # as in _activation_op
        if type(result) is np.ndarray and _CPU_KERNELS["leaky_relu"](x, result, alpha):
            return result
    return _activation_checked("leaky_relu", x, out, alpha)


def step_backward(grad_out, x, *, out=None):
    """Zeros shaped like grad_out: the step function's gradient is zero
    everywhere it is defined, so nothing flows back through it."""
    return _activation_backward("step_backward", grad_out, "x", x, out)


def sigmoid_backward(grad_out, y, *, out=None):
    """grad_out * y * (1 - y), where y = sigmoid(x)."""
    return _activation_backward("sigmoid_backward", grad_out, "y", y, out)


def tanh_backward(grad_out, y, *, out=None):
    """grad_out * (1 - y**2), where y = tanh(x)."""
    return _activation_backward("tanh_backward", grad_out, "y", y, out)


def relu_backward(grad_out, x, *, out=None):
    """grad_out where x > 0, else 0."""
    return _activation_backward("relu_backward", grad_out, "x", x, out)


def leaky_relu_backward(grad_out, x, alpha=0.01, *, out=None):
    """grad_out where x > 0, else alpha * grad_out."""
    alpha = _check_alpha("leaky_relu_backward", alpha)
    return _activation_backward("leaky_relu_backward", grad_out, "x", x, out, alpha)


for _act in activations.ACTIVATIONS.values():
    dispatch.register(_act.name, "cpu", _act.forward_cpu)
    dispatch.register(_act.name, "cuda", _act.forward_cuda)
    dispatch.register(f"{_act.name}_backward", "cpu", _act.backward_cpu)
    dispatch.register(f"{_act.name}_backward", "cuda", _act.backward_cuda)


# --- softmax over the last axis -------------------------------------------------------


def _rows(op, names, arrays, out):
    """The row ops' checked path: inputs and out checked, leading axes folded into rows."""
    if arrays[0].ndim == 0:
        raise ValueError(f"{op}: expected an array with at least 1 dimension, got a 0-d array")
    kind, inputs, result, returned = _operands(op, names, arrays, out)
    *leading, n = inputs[0].shape
    rows = math.prod(leading)
    if inputs[0].ndim != 2:
        inputs, result = [a.reshape(rows, n) for a in inputs], result.reshape(rows, n)
    done = dispatch.kernel_for(op, kind)(*inputs, result)
    assert done is not False, f"{op}: the CPU kernel refused checked arrays"
    return returned


def _rows_forward(op, x, out):
    # The fast path, as in _activation_op, for 2-D arrays: the CPU
    # launchers take no others, and the checked path folds their leading axes.
    if type(x) is np.ndarray and (x.dtype is _FLOAT32 or x.dtype is _FLOAT64) and x.ndim == 2:
        result = np.empty(x.shape, x.dtype) if out is None else out
        if type(result) is np.ndarray and _CPU_KERNELS[op](x, result):
            return result
    return _rows(op, ("x",), (x,), out)


def _rows_backward(op, grad_out, y, out):
    if (  # as in _activation_backward
        type(grad_out) is np.ndarray
        and type(y) is np.ndarray
        and (grad_out.dtype is _FLOAT32 or grad_out.dtype is _FLOAT64)
        and y.dtype is grad_out.dtype
        and grad_out.ndim == 2
    ):
        result = np.empty(grad_out.shape, grad_out.dtype) if out is None else out
        if type(result) is np.ndarray and _CPU_KERNELS[op](grad_out, y, result):
            return result
    return _rows(op, ("grad_out", "y"), (grad_out, y), out)


def softmax(x, *, out=None):
    """exp(x) / sum(exp(x)) over the last axis, stable for any finite x.
    Shape (..., n); float32/float64."""
    return _rows_forward("softmax", x, out)


def log_softmax(x, *, out=None):
    """x - log(sum(exp(x))) over the last axis, stable for any finite x.
    Shape (..., n); float32/float64."""
    return _rows_forward("log_softmax", x, out)


def softmax_backward(grad_out, y, *, out=None):
    """y * (grad_out - sum(grad_out * y)) over the last axis, where y = softmax(x)."""
    return _rows_backward("softmax_backward", grad_out, y, out)


def log_softmax_backward(grad_out, y, *, out=None):
    """grad_out - exp(y) * sum(grad_out) over the last axis, where y = log_softmax(x)."""
    return _rows_backward("log_softmax_backward", grad_out, y, out)


for _name in ("softmax", "log_softmax", "softmax_backward", "log_softmax_backward"):
    dispatch.register(_name, "cpu", getattr(_softmax, f"{_name}_cpu"))
    dispatch.register(_name, "cuda", getattr(_softmax, f"{_name}_cuda"))


# --- dense layers ---------------------------------------------------------------------


def _check_dense(op, x, W, activation, alpha):
    if activation not in _dense.EPILOGUES:
        names = ", ".join(repr(a) for a in _dense.EPILOGUES)
        raise ValueError(f"{op}: expected activation in ({names}), got {activation!r}")
    if x.ndim != 2 or W.ndim != 2:
        raise ValueError(f"{op}: expected 2-D x and W, got shapes {x.shape} and {W.shape}")
    if x.shape[1] != W.shape[0]:
        raise ValueError(
            f"{op}: expected x of shape (batch, {W.shape[0]}) for W of shape {W.shape}, "
            f"got {x.shape}"
        )
    return _check_alpha(op, alpha)


def dense(x, W, b, activation=None, alpha=0.01, *, out=None):
    """act(x @ W + b): x (batch, in_features), W (in_features, out_features),
    b (out_features,) -> (batch, out_features); float32/float64. ``activation``:
    None, "relu", "leaky_relu" (with ``alpha``), "sigmoid" or "tanh"."""
    alpha = _check_dense("dense", x, W, activation, alpha)
    if b.shape != (W.shape[1],):
        raise ValueError(f"dense: expected b of shape ({W.shape[1]},), got {b.shape}")
    kind = dispatch.placement("dense", x=x, W=W, b=b, out=out)
    _check_dtypes("dense", ("x", "W", "b"), (x, W, b))
    x, W, b = (_contiguous("dense", n, kind, a) for n, a in (("x", x), ("W", W), ("b", b)))
    result, returned = _output("dense", kind, out, (x.shape[0], W.shape[1]), x.dtype)
    dispatch.kernel_for("dense", kind)(x, W, b, result, activation, alpha)
    return returned


def dense_backward(grad_out, x, W, y, activation=None, alpha=0.01):
    """Gradients of y = dense(x, W, b, activation): returns (dx, dW, db), shaped
    like x, W and b, for grad_out = d loss / d y of shape (batch, out_features)."""
    alpha = _check_dense("dense_backward", x, W, activation, alpha)
    if grad_out.shape != (x.shape[0], W.shape[1]):
        raise ValueError(
            f"dense_backward: expected grad_out of shape {(x.shape[0], W.shape[1])}, "
            f"got {grad_out.shape}"
        )
    if y.shape != grad_out.shape:
        raise ValueError(f"dense_backward: expected y of shape {grad_out.shape}, got {y.shape}")
    names, arrays = ("grad_out", "y", "x", "W"), (grad_out, y, x, W)
    kind = dispatch.placement("dense_backward", **dict(zip(names, arrays, strict=True)))
    _check_dtypes("dense_backward", names, arrays)
    g, y, x, W = (
        _contiguous("dense_backward", n, kind, a) for n, a in zip(names, arrays, strict=True)
    )
    dx, dW = _empty(kind, x.shape, x.dtype), _empty(kind, W.shape, W.dtype)
    db, dz = _empty(kind, (W.shape[1],), W.dtype), _empty(kind, g.shape, g.dtype)
    dispatch.kernel_for("dense_backward", kind)(g, x, W, y, dx, dW, db, dz, activation, alpha)
    return dx, dW, db


dispatch.register("dense", "cpu", _dense.dense_cpu)
dispatch.register("dense", "cuda", gemm.dense_cuda)
dispatch.register("dense_backward", "cpu", _dense.dense_backward_cpu)
dispatch.register("dense_backward", "cuda", gemm.dense_backward_cuda)


# --- losses ---------------------------------------------------------------------------


def _float_target(op, kind, pred, target):
    """``target`` shaped and typed like ``pred`` (cast on the host, checked on a GPU)."""
    if target.shape != pred.shape:
        raise ValueError(
            f"{op}: expected target of shape {pred.shape} like pred, got {target.shape}"
        )
    if kind == "cpu" and target.dtype != pred.dtype:
        if target.dtype.kind not in "biuf":
            raise TypeError(f"{op}: expected a numeric target, got dtype {target.dtype}")
        return np.ascontiguousarray(target, pred.dtype)
    _check_dtypes(op, ("pred", "target"), (pred, target))
    return _contiguous(op, "target", kind, target)


def _class_target(op, kind, logits, target):
    """Class indices (batch,) as int64, or rows (batch, C) like ``logits``."""
    if target.ndim == 2:
        return _float_target(op, kind, logits, target)
    if target.shape != logits.shape[:1]:
        raise ValueError(
            f"{op}: expected target of shape ({logits.shape[0]},) (class indices) or "
            f"{logits.shape} (one-hot or probabilities), got {target.shape}"
        )
    if target.dtype.kind not in "iu":
        raise TypeError(f"{op}: expected integer class indices, got dtype {target.dtype}")
    if kind == "cpu":
        return np.ascontiguousarray(target, np.int64)
    if target.dtype != np.int64:
        raise TypeError(
            f"{op}: expected class indices of dtype int64 on the GPU, got {target.dtype}"
        )
    return _contiguous(op, "target", kind, target)


def _loss_operands(op, pred, target):
    """Check a loss's inputs before any kernel runs; return (kind, pred, target)
    as the kernels take them. Used by the ops below and by ``gn.losses``."""
    kind = dispatch.placement(op, pred=pred, target=target)
    _check_dtypes(op, ("pred",), (pred,))
    if op == "softmax_cross_entropy":
        if pred.ndim != 2:
            raise ValueError(f"{op}: expected 2-D logits (batch, classes), got shape {pred.shape}")
        target = _class_target(op, kind, pred, target)
    else:
        target = _float_target(op, kind, pred, target)
    return kind, _contiguous(op, "pred", kind, pred), target


def _loss(op, pred, target):
    kind, pred, target = _loss_operands(op, pred, target)
    grad, loss = _empty(kind, pred.shape, pred.dtype), _empty(kind, (1,), pred.dtype)
    dispatch.kernel_for(op, kind)(pred, target, grad, loss)
    return _cuda.scalar_view(loss), grad


def softmax_cross_entropy(logits, target):
    """Mean cross-entropy of softmax(logits) over the batch, and its gradient.

    logits (batch, C) float32/float64; target: class indices (batch,) of an
    integer dtype (int64 on a GPU), or rows (batch, C) of one-hot vectors or
    probabilities. Returns (loss 0-d, grad (batch, C)); an index outside
    [0, C) makes the loss NaN.
    """
    return _loss("softmax_cross_entropy", logits, target)


def mse(pred, target):
    """Mean over all elements of 1/2 (pred - target)^2, and its gradient
    (pred - target) / n. Returns (loss 0-d, grad shaped like pred)."""
    return _loss("mse", pred, target)


def binary_cross_entropy(logits, target):
    """Mean binary cross-entropy of sigmoid(logits) against targets in [0, 1],
    computed stably from the logits, and its gradient (sigmoid(z) - t) / n."""
    return _loss("binary_cross_entropy", logits, target)


def binary_cross_entropy_probs(probs, target):
    """Binary cross-entropy of probabilities in [0, 1], as PyTorch's BCELoss
    (logarithms clamped at -100). Prefer binary_cross_entropy on logits."""
    return _loss("binary_cross_entropy_probs", probs, target)


for _name in ("softmax_cross_entropy", "mse", "binary_cross_entropy", "binary_cross_entropy_probs"):
    dispatch.register(_name, "cpu", getattr(_losses, f"{_name}_cpu"))
    dispatch.register(_name, "cuda", getattr(_losses, f"{_name}_cuda"))

for _name in ("argmax_hits", "binary_hits"):
    dispatch.register(_name, "cpu", getattr(_metrics, f"{_name}_cpu"))
    dispatch.register(_name, "cuda", getattr(_metrics, f"{_name}_cuda"))


# --- dropout and batch normalization --------------------------------------------------


def _check_dropout_p(op, p):
    """``p`` as a float in [0, 1]; TypeError or ValueError otherwise."""
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise TypeError(f"{op}: expected a number p, got {type(p).__name__}")
    if not 0 <= p <= 1:
        raise ValueError(f"{op}: expected a dropout probability p in [0, 1], got {p}")
    return float(p)


def dropout(x, p, seed, offset, *, out=None):
    """Inverted dropout of ``x`` (any shape, float32/float64): each element
    zeroed with probability ``p``, the rest scaled by 1 / (1 - p), the mask
    drawn from Philox stream ``seed`` at word ``offset`` (a multiple of 4; a
    call uses ``gpunet.kernels.dropout.words(x.size)`` words). The same
    (seed, offset, p) give the same mask on every device, so the backward is
    ``dropout(grad_out, p, seed, offset)``."""
    p = _check_dropout_p("dropout", p)
    for name, value in (("seed", seed), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"dropout: expected an int {name}, got {type(value).__name__}")
        if not 0 <= value < 2**64:
            raise ValueError(f"dropout: expected {name} in [0, 2**64), got {value}")
    if offset % 4 or offset + _dropout.words(math.prod(x.shape)) > 2**64:
        raise ValueError(
            f"dropout: expected an offset that is a multiple of 4 with room for the draw, "
            f"got {offset}"
        )
    kind, (x,), result, returned = _operands("dropout", ("x",), (x,), out)
    dispatch.kernel_for("dropout", kind)(
        _flat(kind, x), _flat(kind, result), int(seed), int(offset), p
    )
    return returned


dispatch.register("dropout", "cpu", _dropout.dropout_cpu)
dispatch.register("dropout", "cuda", _dropout.dropout_cuda)
for _name in ("batchnorm", "batchnorm_inference", "batchnorm_backward"):
    dispatch.register(_name, "cpu", getattr(_batchnorm, f"{_name}_cpu"))
    dispatch.register(_name, "cuda", getattr(_batchnorm, f"{_name}_cuda"))
dispatch.register("column_affine", "cpu", _scalers.column_affine_cpu)
dispatch.register("column_affine", "cuda", _scalers.column_affine_cuda)
