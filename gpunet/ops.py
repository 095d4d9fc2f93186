"""Functional ops, dispatched to the CPU or CUDA kernel by where the inputs live.

Every op takes float32 or float64 arrays (numpy arrays, or CUDA arrays from
Numba, CuPy or PyTorch) and returns a new array on the same device, or writes
into ``out=`` (same shape, dtype and device, C-contiguous) and returns it.
Outputs share no memory with the inputs or with each other, except that the
elementwise and row ops (activations, softmax, dropout, scale) may write into
an input itself (the same view, not one that partly overlaps it). Inputs are
checked before any kernel runs: anything but an array (a list, a scalar) or a
wrong dtype raises TypeError naming the argument, a shape mismatch or
overlapping memory ValueError, a host/GPU mix DeviceError. A 0-d array is an
array of one element to the elementwise ops on every device.

Backward ops take ``grad_out`` (d loss / d output) and what the forward op saw
or made: the input ``x`` for step, relu and leaky_relu; the output ``y`` for
sigmoid, tanh, softmax and log_softmax. They return d loss / d input.

Loss ops return ``(loss, grad)``: the mean loss as a 0-d array on the
prediction's device (``float(loss)`` reads it) and d loss / d prediction.

Batch-norm ops return the statistics their backward takes beside y, and
write into ``out``, ``save_mean`` and ``save_invstd`` when given, so that a
layer owning those arrays allocates nothing per step.
"""

from __future__ import annotations

import math

import numpy as np

from . import dispatch, gemm
from ._arrays import (
    apart,
    check_alpha,
    check_dtypes,
    check_probability,
    contiguous,
    empty,
    flat,
    operands,
    output,
)
from .kernels import _cpu, _cuda
from .kernels import dense as _dense
from .kernels import dropout as _dropout
from .kernels import optim as _optim

# --- elementwise activations ----------------------------------------------------------


_CPU_KERNELS = dispatch._registry["cpu"]
# numpy's own float32 and float64 descriptors: an identity test is the fast
# path's cheapest dtype check (an equal descriptor made otherwise takes the
# checked path).
_FLOAT32, _FLOAT64 = np.dtype(np.float32), np.dtype(np.float64)


def _activation_checked(name, x, out, *c):
    """A forward activation's checked path: names what is wrong with the
    arguments, or runs the kernel of the device they are on."""
    kind, (x,), result, returned = operands(name, ("x",), (x,), out)
    done = dispatch.kernel_for(name, kind)(flat(kind, x), flat(kind, result), *c)
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
    kind, (g, s), result, returned = operands(op, ("grad_out", saved_name), (grad_out, saved), out)
    args = (flat(kind, g), flat(kind, s), flat(kind, result)) + (() if c is None else (c,))
    done = dispatch.kernel_for(op, kind)(*args)
    assert done is not False, f"{op}: the CPU kernel refused checked arrays"
    return returned


step = _activation_op("step", "Heaviside step: 1 where x > 0, else 0. Any shape; float32/float64.")
sigmoid = _activation_op(
    "sigmoid", "1 / (1 + exp(-x)), computed without overflow. Any shape; float32/float64."
)
tanh = _activation_op("tanh", "Hyperbolic tangent. Any shape; float32/float64.")
relu = _activation_op("relu", "max(x, 0); NaN stays NaN. Any shape; float32/float64.")


def leaky_relu(x, alpha=0.01, *, out=None):
    """x where x > 0, else alpha * x. Any shape; float32/float64."""
    alpha = check_alpha("leaky_relu", alpha)
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
    alpha = check_alpha("leaky_relu_backward", alpha)
    return _activation_backward("leaky_relu_backward", grad_out, "x", x, out, alpha)


# --- softmax over the last axis -------------------------------------------------------


def _rows(op, names, arrays, out):
    """The row ops' checked path: inputs and out checked, leading axes folded into rows."""
    kind, inputs, result, returned = operands(op, names, arrays, out)
    if inputs[0].ndim == 0:
        raise ValueError(f"{op}: expected an array with at least 1 dimension, got a 0-d array")
    *leading, n = inputs[0].shape
    rows = math.prod(leading)
    if inputs[0].ndim != 2:
        inputs, result = [a.reshape(rows, n) for a in inputs], result.reshape(rows, n)
    done = dispatch.kernel_for(op, kind)(*inputs, result)
    assert done is not False, f"{op}: the CPU kernel refused checked arrays"
    return returned


def _apart(x, out):
    """For the row ops' fast path: False when the numpy arrays ``x`` and
    ``out`` partly overlap, which the row launchers do not check. Two arrays
    that own their memory (no base) and are not one object share none, a
    test much cheaper than a call."""
    return (x.base is None and out.base is None) or not _cpu.overlaps_partly(x, out)


def _rows_forward(op, x, out):
    # The fast path, as in _activation_op, for 2-D arrays: the CPU
    # launchers take no others, and the checked path folds their leading axes.
    if type(x) is np.ndarray and (x.dtype is _FLOAT32 or x.dtype is _FLOAT64) and x.ndim == 2:
        result = np.empty(x.shape, x.dtype) if out is None else out
        if (
            type(result) is np.ndarray
            and (out is None or _apart(x, out))
            and _CPU_KERNELS[op](x, result)
        ):
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
        if (
            type(result) is np.ndarray
            and (out is None or (_apart(grad_out, out) and _apart(y, out)))
            and _CPU_KERNELS[op](grad_out, y, result)
        ):
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
    return check_alpha(op, alpha)


def _host_dtype(arrays):
    """The dtype of ``arrays`` when all are C-contiguous numpy arrays of one
    float dtype (numpy's own descriptor; None entries skipped), else None: the
    host fast paths' test, after which only shapes and overlaps remain to check."""
    dtype = None
    for a in arrays:
        if a is None:
            continue
        if type(a) is not np.ndarray or not a.flags.c_contiguous:
            return None
        if dtype is None:
            dtype = a.dtype
            if dtype is not _FLOAT32 and dtype is not _FLOAT64:
                return None
        elif a.dtype is not dtype:
            return None
    return dtype


def _dense_fast(x, W, activation, alpha) -> bool:
    """The dense ops' fast-path test of what ``_check_dense`` checks: a known
    activation, a finite float alpha, x (m, k) and W (k, n)."""
    return (
        activation in _dense.EPILOGUES
        and type(alpha) is float
        and math.isfinite(alpha)
        and x.ndim == 2
        and W.ndim == 2
        and x.shape[1] == W.shape[0]
    )


def dense(x, W, b, activation=None, alpha=0.01, *, out=None):
    """act(x @ W + b): x (batch, in_features), W (in_features, out_features),
    b (out_features,) -> (batch, out_features); float32/float64. ``activation``:
    None, "relu", "leaky_relu" (with ``alpha``), "sigmoid" or "tanh". On a GPU
    the product is gpunet's tiled kernel or cuBLAS, as ``gn.set_gemm`` says."""
    if (  # host fast path: what the checked path would accept, tested cheaply
        _host_dtype((x, W, b, out)) is not None
        and _dense_fast(x, W, activation, alpha)
        and b.shape == W.shape[1:]
    ):
        shape = (x.shape[0], W.shape[1])
        if out is None:
            out = np.empty(shape, x.dtype)
        elif out.shape != shape or not out.flags.writeable:
            return _dense_checked(x, W, b, activation, alpha, out)
        else:
            apart("dense", "cpu", [("out", out)], [("x", x), ("W", W), ("b", b)])
        _CPU_KERNELS["dense"](x, W, b, out, activation, alpha)
        return out
    return _dense_checked(x, W, b, activation, alpha, out)


def _dense_checked(x, W, b, activation, alpha, out):
    kind = dispatch.placement("dense", x=x, W=W, b=b, out=out)
    alpha = _check_dense("dense", x, W, activation, alpha)
    if b.shape != (W.shape[1],):
        raise ValueError(f"dense: expected b of shape ({W.shape[1]},), got {b.shape}")
    check_dtypes("dense", ("x", "W", "b"), (x, W, b))
    apart("dense", kind, [("out", out)], [("x", x), ("W", W), ("b", b)])
    x, W, b = (contiguous("dense", n, kind, a) for n, a in (("x", x), ("W", W), ("b", b)))
    result, returned = output("dense", kind, out, (x.shape[0], W.shape[1]), x.dtype)
    kernel = dispatch.kernel_for("dense", kind)
    if kind == "cuda":
        kernel(x, W, b, result, activation, alpha, matmul=gemm.cuda_matmul(*x.shape, W.shape[1]))
    else:
        kernel(x, W, b, result, activation, alpha)
    return returned


def dense_backward(
    grad_out,
    x,
    W,
    y,
    activation=None,
    alpha=0.01,
    *,
    input_grad=True,
    accumulate=False,
    dx=None,
    dW=None,
    db=None,
    dz=None,
):
    """Gradients of y = dense(x, W, b, activation) for grad_out = d loss / d y
    (batch, out_features): returns (dx, dW, db), shaped like x, W and b.

    Each result is a new array, or written into ``dx``, ``dW``, ``db`` when
    given; with ``accumulate`` the gradients are added into the ``dW`` and
    ``db`` given (summing over several backward passes). ``input_grad=False``
    skips d loss / d x and its product (dx is then None). ``dz`` is scratch
    for d loss / d (x @ W + b), shaped like grad_out; it may be grad_out
    itself, which is then overwritten.
    """
    if (  # host fast path, as in dense: outputs given, shapes as the kernel indexes them
        _host_dtype((grad_out, x, W, y, dx, dW, db, dz)) is not None
        and dW is not None
        and db is not None
        and dz is not None
        and (dx is not None or not input_grad)
        and _dense_fast(x, W, activation, alpha)
        and _dense.backward_shapes_hold(grad_out, x, W, y, dx, dW, db, dz)
        and dz.flags.writeable
        and dW.flags.writeable
        and db.flags.writeable
        and (dx is None or dx.flags.writeable)
    ):
        apart("dense_backward", "cpu", [("dz", dz), ("dx", dx), ("dW", dW), ("db", db)],
              [("grad_out", grad_out), ("y", y), ("x", x), ("W", W)],
              same={("dz", "grad_out")})  # fmt: skip
        _CPU_KERNELS["dense_backward"](
            grad_out, x, W, y, dx if input_grad else None, dW, db, dz, activation, alpha,
            bool(accumulate),
        )  # fmt: skip
        return (dx if input_grad else None), dW, db
    op = "dense_backward"
    names, arrays = ("grad_out", "y", "x", "W"), (grad_out, y, x, W)
    kind = dispatch.placement(
        op, **dict(zip(names, arrays, strict=True)), dx=dx, dW=dW, db=db, dz=dz
    )
    alpha = _check_dense(op, x, W, activation, alpha)
    if grad_out.shape != (x.shape[0], W.shape[1]):
        raise ValueError(
            f"{op}: expected grad_out of shape {(x.shape[0], W.shape[1])}, got {grad_out.shape}"
        )
    if y.shape != grad_out.shape:
        raise ValueError(f"{op}: expected y of shape {grad_out.shape}, got {y.shape}")
    if accumulate and (dW is None or db is None):
        raise ValueError(f"{op}: accumulate=True adds into dW and db: pass both")
    check_dtypes(op, names, arrays)
    apart(op, kind, [("dz", dz), ("dx", dx), ("dW", dW), ("db", db)],
          list(zip(names, arrays, strict=True)), same={("dz", "grad_out")})  # fmt: skip
    g, y, x, W = (contiguous(op, n, kind, a) for n, a in zip(names, arrays, strict=True))
    dtype = x.dtype
    dW, dW_returned = output(op, kind, dW, W.shape, dtype, "dW")
    db, db_returned = output(op, kind, db, (W.shape[1],), dtype, "db")
    dz = output(op, kind, dz, g.shape, dtype, "dz")[0]
    dx, dx_returned = output(op, kind, dx, x.shape, dtype, "dx") if input_grad else (None, None)
    kernel = dispatch.kernel_for(op, kind)
    args = (g, x, W, y, dx, dW, db, dz, activation, alpha, bool(accumulate))
    if kind == "cuda":
        kernel(*args, matmul=gemm.cuda_matmul(*x.shape, W.shape[1]))
    else:
        kernel(*args)
    return dx_returned, dW_returned, db_returned


# --- losses ---------------------------------------------------------------------------


def _float_target(op, kind, name, pred, target):
    """``target`` shaped and typed like ``pred`` (the argument ``name``; cast
    on the host, checked on a GPU)."""
    if target.shape != pred.shape:
        raise ValueError(
            f"{op}: expected target of shape {pred.shape} like {name}, got {target.shape}"
        )
    if kind == "cpu" and target.dtype != pred.dtype:
        if target.dtype.kind not in "biuf":
            raise TypeError(f"{op}: expected a numeric target, got dtype {target.dtype}")
        return np.ascontiguousarray(target, pred.dtype)
    check_dtypes(op, (name, "target"), (pred, target))
    return contiguous(op, "target", kind, target)


def _class_target(op, kind, name, logits, target):
    """Class indices (batch,) as int64, or rows (batch, C) like ``logits``."""
    if target.ndim == 2:
        return _float_target(op, kind, name, logits, target)
    if target.shape != logits.shape[:1]:
        raise ValueError(
            f"{op}: expected target of shape ({logits.shape[0]},) (class indices) or "
            f"{logits.shape} (one-hot or probabilities), got {target.shape}"
        )
    if target.dtype.kind not in "iu":
        raise TypeError(
            f"{op}: expected a target of integer class indices, got dtype {target.dtype}"
        )
    if kind == "cpu":
        return np.ascontiguousarray(target, np.int64)
    if target.dtype != np.int64:
        raise TypeError(
            f"{op}: expected a target of class indices of dtype int64 on the GPU, "
            f"got {target.dtype}"
        )
    return contiguous(op, "target", kind, target)


def _loss_operands(op, name, pred, target, out=None):
    """Check a loss's inputs (the prediction, the argument ``name``, and
    target) and a hit count's ``out`` with them, before any kernel runs;
    return (kind, pred, target) as the kernels take them (``op``: a loss op
    or a hit count)."""
    kind = dispatch.placement(op, **{name: pred}, target=target, out=out)
    check_dtypes(op, (name,), (pred,))
    if op in ("softmax_cross_entropy", "argmax_hits"):
        if pred.ndim != 2:
            raise ValueError(f"{op}: expected 2-D {name} (batch, classes), got shape {pred.shape}")
        target = _class_target(op, kind, name, pred, target)
    else:
        target = _float_target(op, kind, name, pred, target)
    return kind, contiguous(op, name, kind, pred), target


_CLASS_OPS = ("softmax_cross_entropy", "argmax_hits")
_INT64 = np.dtype(np.int64)


def _host_operands(op, pred, target, outputs):
    """True when ``pred``, ``target`` and the 1-element ``outputs`` of a loss
    or hit count are host arrays the kernels take as they are (the checked
    path would pass them unchanged): the fast path's test."""
    dtype = _host_dtype((pred, *outputs))
    if dtype is None or type(target) is not np.ndarray or not target.flags.c_contiguous:
        return False
    for out in outputs:
        if out.shape != (1,) or not out.flags.writeable:
            return False
    if op in _CLASS_OPS and pred.ndim != 2:
        return False
    if op in _CLASS_OPS and target.ndim == 1:
        return target.dtype is _INT64 and target.shape == pred.shape[:1]
    return target.dtype is dtype and target.shape == pred.shape


def _loss(op, name, pred, target, out):
    if (  # host fast path
        type(out) is tuple
        and len(out) == 2
        and type(out[1]) is np.ndarray
        and out[1].shape == getattr(pred, "shape", None)
        and out[1].flags.writeable
        and _host_operands(op, pred, target, out[:1])
        and _host_dtype(out[1:]) is pred.dtype
    ):
        loss, grad = out
        apart(op, "cpu", [("the loss out", loss), ("the grad out", grad)],
              [(name, pred), ("target", target)])  # fmt: skip
        _check_probabilities(op, "cpu", pred)
        _CPU_KERNELS[op](pred, target, grad, loss)
        return out
    kind, pred, target = _loss_operands(op, name, pred, target)
    if out is None:
        loss, grad = empty(kind, (1,), pred.dtype), empty(kind, pred.shape, pred.dtype)
        returned = _cuda.scalar_view(loss), grad
    else:
        if not isinstance(out, tuple) or len(out) != 2:
            raise TypeError(f"{op}: expected out=(loss, grad), got {type(out).__name__}")
        dispatch.placement(op, **{name: pred}, loss=out[0], grad=out[1])
        loss = output(op, kind, out[0], (1,), pred.dtype, "the loss out")[0]
        grad = output(op, kind, out[1], pred.shape, pred.dtype, "the grad out")[0]
        apart(op, kind, [("the loss out", loss), ("the grad out", grad)],
              [(name, pred), ("target", target)])  # fmt: skip
        returned = out
    _check_probabilities(op, kind, pred)
    dispatch.kernel_for(op, kind)(pred, target, grad, loss)
    return returned


def _check_probabilities(op, kind, pred):
    """binary_cross_entropy_probs's kernel clamps each log at -100, which
    turns NaN and values outside [0, 1] into a finite, plausible loss: refuse
    them, as PyTorch's BCELoss does (on a GPU this reads one count back)."""
    if op != "binary_cross_entropy_probs":
        return
    outside = dispatch.kernel_for("count_outside", kind)(pred, 0.0, 1.0)
    if outside:
        raise ValueError(
            f"{op}: expected probabilities in [0, 1], got {outside} "
            f"{'value' if outside == 1 else 'values'} outside [0, 1] or NaN"
        )


def softmax_cross_entropy(logits, target, *, out=None):
    """Mean cross-entropy of softmax(logits) over the batch, and its gradient.

    logits (batch, C) float32/float64; target: class indices (batch,) of an
    integer dtype (int64 on a GPU), or rows (batch, C) of one-hot vectors or
    probabilities. Returns (loss 0-d, grad (batch, C)); an index outside
    [0, C) makes the loss NaN.
    """
    return _loss("softmax_cross_entropy", "logits", logits, target, out)


def mse(pred, target, *, out=None):
    """Mean over all elements of 1/2 (pred - target)^2, and its gradient
    (pred - target) / n. Returns (loss 0-d, grad shaped like pred)."""
    return _loss("mse", "pred", pred, target, out)


def binary_cross_entropy(logits, target, *, out=None):
    """Mean binary cross-entropy of sigmoid(logits) against targets in [0, 1],
    computed stably from the logits, and its gradient (sigmoid(z) - t) / n."""
    return _loss("binary_cross_entropy", "logits", logits, target, out)


def binary_cross_entropy_probs(probs, target, *, out=None):
    """Binary cross-entropy of probabilities in [0, 1], as PyTorch's BCELoss
    (logarithms clamped at -100). Probabilities outside [0, 1] or NaN raise
    ValueError, before anything is written. Prefer binary_cross_entropy on
    logits."""
    return _loss("binary_cross_entropy_probs", "probs", probs, target, out)


def argmax_hits(scores, target, *, out=None):
    """How many rows of ``scores`` (batch, C) have their largest entry at the
    target class (class indices (batch,), or rows (batch, C) whose argmax is
    the class): a 1-element array of scores' dtype, or ``out`` filled."""
    if out is not None and _host_operands("argmax_hits", scores, target, (out,)):
        apart("argmax_hits", "cpu", [("out", out)], [("scores", scores), ("target", target)])
        _CPU_KERNELS["argmax_hits"](scores, target, out)
        return out
    kind, scores, target = _loss_operands("argmax_hits", "scores", scores, target, out)
    result, returned = output("argmax_hits", kind, out, (1,), scores.dtype)
    apart("argmax_hits", kind, [("out", result)], [("scores", scores), ("target", target)])
    dispatch.kernel_for("argmax_hits", kind)(scores, target, result)
    return returned


def binary_hits(pred, target, threshold=0.0, *, out=None):
    """How many elements agree: ``pred > threshold`` against ``target > 0.5``
    (same shape): a 1-element array of pred's dtype, or ``out`` filled."""
    if out is not None and _host_operands("binary_hits", pred, target, (out,)):
        apart("binary_hits", "cpu", [("out", out)], [("pred", pred), ("target", target)])
        _CPU_KERNELS["binary_hits"](pred, target, float(threshold), out)
        return out
    kind, pred, target = _loss_operands("binary_hits", "pred", pred, target, out)
    result, returned = output("binary_hits", kind, out, (1,), pred.dtype)
    apart("binary_hits", kind, [("out", result)], [("pred", pred), ("target", target)])
    dispatch.kernel_for("binary_hits", kind)(pred, target, float(threshold), result)
    return returned


# --- dropout ---------------------------------------------------------------------------


def dropout(x, p, seed, offset, *, out=None):
    """Inverted dropout of ``x`` (any shape, float32/float64): each element
    zeroed with probability ``p``, the rest scaled by 1 / (1 - p), the mask
    drawn from Philox stream ``seed`` at word ``offset`` (a multiple of 4; a
    call uses ``gpunet.kernels.dropout.words(x.size)`` words). The same
    (seed, offset, p) give the same mask on every device, so the backward is
    ``dropout(grad_out, p, seed, offset)``."""
    p = check_probability("dropout", p)
    for name, value in (("seed", seed), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"dropout: expected an int {name}, got {type(value).__name__}")
        if not 0 <= value < 2**64:
            raise ValueError(f"dropout: expected {name} in [0, 2**64), got {value}")
    kind, (x,), result, returned = operands("dropout", ("x",), (x,), out)
    if offset % 4 or offset + _dropout.words(math.prod(x.shape)) > 2**64:
        raise ValueError(
            f"dropout: expected an offset that is a multiple of 4 with room for the draw, "
            f"got {offset}"
        )
    dispatch.kernel_for("dropout", kind)(
        flat(kind, x), flat(kind, result), int(seed), int(offset), p
    )
    return returned


# --- batch normalization --------------------------------------------------------------


def _batchnorm_operands(op, rows, columns, outputs):
    """Check the (n, C) arrays ``rows`` and the (C,) arrays ``columns``
    ((name, array) pairs, x first): on one device with ``outputs`` (name ->
    array or None), of one float dtype, the outputs apart from the inputs and
    from each other in memory. Returns (kind, rows, columns) as C-contiguous
    arrays the kernels take."""
    named = dict(rows + columns)
    kind = dispatch.placement(op, **named, **outputs)
    check_dtypes(op, tuple(named), tuple(named.values()))
    apart(op, kind, list(outputs.items()), rows + columns)
    (_, x), *others = rows
    shape = tuple(x.shape)
    if len(shape) != 2:
        raise ValueError(f"{op}: expected x of shape (batch, features), got {shape}")
    for name, a in others:
        if tuple(a.shape) != shape:
            raise ValueError(f"{op}: expected {name} of shape {shape} like x, got {tuple(a.shape)}")
    for name, a in columns:
        if tuple(a.shape) != shape[1:]:
            raise ValueError(
                f"{op}: expected {name} of shape {shape[1:]} for x of shape {shape}, "
                f"got {tuple(a.shape)}"
            )
    return (
        kind,
        [contiguous(op, name, kind, a) for name, a in rows],
        [contiguous(op, name, kind, a) for name, a in columns],
    )


def _number(op, name, value) -> float:
    """``value`` as a float: a real number, not a bool; TypeError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{op}: expected a number {name}, got {type(value).__name__}")
    return float(value)


def _check_eps(op, eps) -> float:
    eps = _number(op, "eps", eps)
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"{op}: expected a finite eps > 0, got {eps}")
    return eps


def _statistics(op, kind, x, out, save_mean, save_invstd):
    """The forward ops' outputs: ((y, mean, invstd) to write, the objects to return)."""
    n, c = x.shape
    written = (
        output(op, kind, out, (n, c), x.dtype),
        output(op, kind, save_mean, (c,), x.dtype, "save_mean"),
        output(op, kind, save_invstd, (c,), x.dtype, "save_invstd"),
    )
    return tuple(w[0] for w in written), tuple(w[1] for w in written)


def batchnorm(x, weight, bias, running_mean=None, running_var=None, momentum=0.1, eps=1e-5, *,
              out=None, save_mean=None, save_invstd=None):  # fmt: skip
    """Batch normalization by the batch's statistics (training mode), as
    ``torch.nn.functional.batch_norm(..., training=True)``: column j of x (n,
    C) becomes (x - mean_j) * invstd_j * weight_j + bias_j, with the column's
    mean and biased variance var_j, and invstd_j = 1 / sqrt(var_j + eps).
    weight and bias (C,); float32/float64.

    Given ``running_mean`` and ``running_var`` (C,), updates them in place:
    running = (1 - momentum) running + momentum batch, with the unbiased
    variance for ``running_var`` (so x needs 2 rows or more). Returns (y (n,
    C), mean (C,), invstd (C,)), the statistics being what
    :func:`batchnorm_backward` takes: new arrays, or ``out``, ``save_mean``
    and ``save_invstd`` written. Zero rows give an empty y and NaN statistics.
    """
    op = "batchnorm"
    eps = _check_eps(op, eps)
    momentum = _number(op, "momentum", momentum)
    if not 0 <= momentum <= 1:
        raise ValueError(f"{op}: expected momentum in [0, 1], got {momentum}")
    update = running_mean is not None or running_var is not None
    if update and (running_mean is None or running_var is None):
        raise ValueError(f"{op}: expected running_mean and running_var together, got one of them")
    running = {"running_mean": running_mean, "running_var": running_var}
    kind, (x,), (weight, bias) = _batchnorm_operands(
        op, [("x", x)], [("weight", weight), ("bias", bias)],
        dict(running, out=out, save_mean=save_mean, save_invstd=save_invstd),
    )  # fmt: skip
    n, c = x.shape
    if update and n < 2:
        raise ValueError(
            f"{op}: expected at least 2 rows to update the running statistics (the variance "
            f"is unbiased), got x of shape {x.shape}"
        )
    if update:
        running = [output(op, kind, a, (c,), x.dtype, name)[0] for name, a in running.items()]
    (y, mean, invstd), returned = _statistics(op, kind, x, out, save_mean, save_invstd)
    if n:
        dispatch.kernel_for(op, kind)(
            x, weight, bias, y, mean, invstd,
            *(running if update else (mean, invstd)),  # not read without an update
            eps, momentum, update,
        )  # fmt: skip
    elif c:  # the statistics of no rows
        for a in (mean, invstd):
            if kind == "cpu":
                a.fill(np.nan)
            else:
                a.copy_to_device(np.full(c, np.nan, x.dtype))
    return returned


def batchnorm_inference(x, weight, bias, running_mean, running_var, eps=1e-5, *, out=None,
                        save_mean=None, save_invstd=None):  # fmt: skip
    """Batch normalization by running statistics (evaluation mode), as
    ``torch.nn.functional.batch_norm(..., training=False)``: column j of x
    (n, C) becomes (x - running_mean_j) * invstd_j * weight_j + bias_j, with
    invstd_j = 1 / sqrt(running_var_j + eps). weight, bias and the running
    statistics (C,); float32/float64. Returns (y (n, C), mean (C,), invstd
    (C,)) as :func:`batchnorm` does (mean a copy of running_mean)."""
    op = "batchnorm_inference"
    eps = _check_eps(op, eps)
    columns = [("weight", weight), ("bias", bias), ("running_mean", running_mean),
               ("running_var", running_var)]  # fmt: skip
    kind, (x,), columns = _batchnorm_operands(
        op, [("x", x)], columns, dict(out=out, save_mean=save_mean, save_invstd=save_invstd)
    )
    (y, mean, invstd), returned = _statistics(op, kind, x, out, save_mean, save_invstd)
    dispatch.kernel_for(op, kind)(x, *columns, eps, y, mean, invstd)
    return returned


def batchnorm_backward(grad_out, x, weight, mean, invstd, batch_stats=True, *, input_grad=True,
                       accumulate=False, dx=None, dweight=None, dbias=None):  # fmt: skip
    """Gradients of y = batchnorm(x, weight, bias) (``batch_stats``) or of
    batchnorm_inference (not ``batch_stats``) for grad_out = d loss / d y
    (n, C); ``mean`` and ``invstd`` (C,) are the statistics the forward op
    returned. Returns (dx, dweight, dbias), shaped like x, weight and weight.

    Each result is a new array, or written into ``dx``, ``dweight``,
    ``dbias`` when given; with ``accumulate`` the gradients are added into
    the ``dweight`` and ``dbias`` given. ``input_grad=False`` skips d loss /
    d x (dx is then None). With zero rows the weight and bias gradients are
    zero (sums over no rows).
    """
    op = "batchnorm_backward"
    if accumulate and (dweight is None or dbias is None):
        raise ValueError(f"{op}: accumulate=True adds into dweight and dbias: pass both")
    kind, (x, g), (weight, mean, invstd) = _batchnorm_operands(
        op, [("x", x), ("grad_out", grad_out)],
        [("weight", weight), ("mean", mean), ("invstd", invstd)],
        dict(dx=dx, dweight=dweight, dbias=dbias),
    )  # fmt: skip
    n, c = x.shape
    dweight, dweight_returned = output(op, kind, dweight, (c,), x.dtype, "dweight")
    dbias, dbias_returned = output(op, kind, dbias, (c,), x.dtype, "dbias")
    dx, dx_returned = output(op, kind, dx, (n, c), x.dtype, "dx") if input_grad else (None, None)
    if n:
        dispatch.kernel_for(op, kind)(
            g, x, weight, mean, invstd, dx, dweight, dbias, bool(batch_stats), bool(accumulate)
        )
    elif not accumulate:
        zero = dispatch.kernel_for("zero", kind)
        zero(dweight)
        zero(dbias)
    return dx_returned, dweight_returned, dbias_returned


# --- optimizer updates ----------------------------------------------------------------


def _updated(op, names, arrays):
    """Check the arrays an update reads (``grad``, the second) and writes in
    place (the others): 1-D, one size, float dtype and device, C-contiguous,
    writable and apart in memory; return their device kind."""
    first = arrays[0]
    if _host_dtype(arrays) is not None and first.ndim == 1:  # host fast path
        for x in arrays:
            if x.shape != first.shape or not x.flags.writeable:
                break
        else:
            named = list(zip(names, arrays, strict=True))
            apart(op, "cpu", named[:1] + named[2:], named[1:2])
            return "cpu"
    kind = dispatch.placement(op, **dict(zip(names, arrays, strict=True)))
    check_dtypes(op, names, arrays)
    for name, x in zip(names, arrays, strict=True):
        if x.ndim != 1 or x.shape != arrays[0].shape:
            raise ValueError(
                f"{op}: expected {name} 1-D of shape {arrays[0].shape} like {names[0]}, "
                f"got {x.shape}"
            )
        contiguous(op, name, kind, x)
        if kind == "cpu" and not (x.flags.c_contiguous and x.flags.writeable):
            raise ValueError(f"{op}: expected {name} to be C-contiguous and writable")
    named = list(zip(names, arrays, strict=True))
    apart(op, kind, named[:1] + named[2:], named[1:2])
    return kind


def _check_setting(op, name, value):
    value = _number(op, name, value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{op}: expected a finite {name} >= 0, got {value}")
    return value


def _update_segments(op, size, lr, weight_decay, segments):
    """``segments`` checked as (bounds (S, 2), settings (S, 2) of (lr,
    weight_decay)) host arrays, or one segment over all ``size`` elements."""
    if segments is None:
        if lr is None:
            raise TypeError(f"{op}: expected a learning rate lr (or segments)")
        return (
            np.array([[0, size]], np.int64),
            np.array(
                [[_check_setting(op, "lr", lr), _check_setting(op, "weight_decay", weight_decay)]]
            ),
        )
    if lr is not None:
        raise TypeError(f"{op}: segments carry each range's lr: pass lr=None with them")
    try:
        bounds, settings = segments
        bounds, settings = np.asarray(bounds), np.asarray(settings, np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: expected segments = (bounds (S, 2), settings (S, 2))") from None
    if bounds.ndim != 2 or bounds.shape[1] != 2 or settings.shape != bounds.shape:
        raise ValueError(
            f"{op}: expected segments of shapes (S, 2) and (S, 2), "
            f"got {bounds.shape} and {settings.shape}"
        )
    if bounds.dtype.kind not in "iu":
        raise TypeError(f"{op}: expected integer segment bounds, got dtype {bounds.dtype}")
    _optim.check_segments(op, bounds, size)
    # Lists, not numpy reductions: a table has a few rows, checked every step.
    for row in settings.tolist():
        for value in row:
            if not 0 <= value < math.inf:
                raise ValueError(
                    f"{op}: expected finite settings >= 0 in segments, got {settings.tolist()}"
                )
    return (bounds if bounds.dtype == np.int64 else bounds.astype(np.int64)), settings


def scale(x, factor, *, out=None):
    """x * factor: x of any shape, float32/float64; ``factor`` a finite
    number, rounded to x's dtype. ``out`` may be x itself (scaling in place,
    as gradient clipping does)."""
    factor = _number("scale", "factor", factor)
    if not math.isfinite(factor):
        raise ValueError(f"scale: expected a finite factor, got {factor}")
    kind, (x,), result, returned = operands("scale", ("x",), (x,), out)
    dispatch.kernel_for("scale", kind)(flat(kind, x), factor, flat(kind, result))
    return returned


def sgd(p, grad, buf, lr=None, momentum=0.0, weight_decay=0.0, nesterov=False, first=True, *,
        segments=None):  # fmt: skip
    """One SGD step in place, as ``torch.optim.SGD`` (dampening 0): ``p``,
    ``grad`` and the momentum buffer ``buf`` are 1-D, of one size, float dtype
    and device. ``first``: the step that starts the momentum buffer.
    ``segments`` = (bounds (S, 2), settings (S, 2)) updates only the ranges
    [start, stop) of ``bounds``, each with its (lr, weight_decay) row of
    ``settings``, in one launch. Returns ``p``."""
    kind = _updated("sgd", ("p", "grad", "buf"), (p, grad, buf))
    segments = _update_segments("sgd", p.shape[0], lr, weight_decay, segments)
    momentum = _check_setting("sgd", "momentum", momentum)
    if nesterov and momentum == 0:
        raise ValueError("sgd: Nesterov momentum needs momentum > 0")
    kernel = dispatch.kernel_for("sgd", kind)
    kernel(p, grad, buf, None, momentum, 0.0, bool(nesterov), bool(first), segments=segments)
    return p


def adam(p, grad, m, v, step, lr=None, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
         decoupled=False, *, segments=None):  # fmt: skip
    """One Adam step in place (AdamW with ``decoupled``), as ``torch.optim.Adam``:
    ``p``, ``grad`` and the moment buffers ``m`` and ``v`` are 1-D, of one size,
    float dtype and device; ``step`` counts from 1. ``segments`` as in
    :func:`sgd`. Returns ``p``."""
    kind = _updated("adam", ("p", "grad", "m", "v"), (p, grad, m, v))
    segments = _update_segments("adam", p.shape[0], lr, weight_decay, segments)
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"adam: expected an integer step >= 1, got {step!r}")
    betas = tuple(betas)
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ValueError(f"adam: expected betas to be two numbers in [0, 1), got {betas!r}")
    eps = _check_setting("adam", "eps", eps)
    dispatch.kernel_for("adam", kind)(
        p, grad, m, v, int(step), None, betas, eps, 0.0, bool(decoupled), segments=segments
    )
    return p
