"""Fuzzing and fault injection over every public op of ``gn.ops``.

Hypothesis draws shapes (0 to a few elements a side; 0-d arrays for the
losses, and for the elementwise ops in tests/test_safety.py), dtypes, memory
layouts (C order, transposed, strided, reversed, one element off alignment;
on a GPU only C order, off alignment or not) and extreme values (signed
zeros, subnormals, the largest finite values, and infinities and NaN where
the op defines them), and each op's result on the CPU and on CUDA (a GPU, or
the simulator with fewer examples) must match its float64 reference from
``gpunet.dispatch.TABLE``. A result may differ from the reference by the
dtype's tolerance (``conftest.TOLERANCES``) relative to the magnitude of the
terms it is computed from; NaN and infinities must be where the reference
has them.

Fault injection: each array argument of each op replaced by a list, a
scalar or an array of a non-float dtype, and each output made to partly
overlap an input, must raise the documented error naming the argument, with
nothing written.
"""

import inspect
import math

import numpy as np
import pytest
from conftest import DEVICES, TOLERANCES
from gpunet.kernels import _cuda
from gpunet.kernels import dense as _dense
from gpunet.kernels import dropout as _dropout
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gpunet as gn
from gpunet import dispatch

#: The public ops, as ``gpunet info`` finds them.
PUBLIC_OPS = {
    name: fn
    for name, fn in vars(gn.ops).items()
    if inspect.isfunction(fn) and fn.__module__ == gn.ops.__name__ and not name.startswith("_")
}

# The references overflow to infinities on extreme values, as the kernels do.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

DTYPES = st.sampled_from([np.dtype(np.float32), np.dtype(np.float64)])
HOST_LAYOUTS = ["C", "misaligned", "transposed", "strided", "reversed"]
DEVICE_LAYOUTS = ["C", "misaligned"]


def ref(op):
    return dispatch.TABLE[op].reference


def run(device, cpu_examples, cuda_examples):
    """A hypothesis settings decorator: fewer examples on CUDA (the simulator
    runs each thread in Python)."""
    return settings(
        max_examples=cpu_examples if device == "cpu" else cuda_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --- values, layouts, devices ----------------------------------------------------------


def floats(dtype, *, finite=False, limit=None):
    """Elements of ``dtype``: small values, the whole range, and the edges
    (signed zeros, subnormals, the largest finite values, and infinities and
    NaN unless ``finite``), within ±``limit`` when given."""
    info = np.finfo(dtype)
    width = info.bits
    top = float(info.max if limit is None else info.dtype.type(limit))  # a value of the dtype
    edges = [0.0, -0.0, float(info.smallest_subnormal), -float(info.smallest_subnormal),
             float(info.tiny), 1.0, -1.0, top, -top]  # fmt: skip
    if not finite:
        edges += [math.inf, -math.inf, math.nan]
    wide = st.floats(-top, top, width=width) if finite else st.floats(width=width)
    return st.one_of(st.floats(-8, 8, width=width), wide, st.sampled_from(edges))


def draw_array(data, dtype, shape, elements):
    return data.draw(hnp.arrays(dtype, shape, elements=elements))


def laid_out(a, layout):
    """An array with a's values in memory laid out as ``layout`` says."""
    if layout == "misaligned":  # C order, one element past an aligned start
        buf = np.empty(a.size + 1, a.dtype)[1:]
        buf[:] = a.ravel()
        return buf.reshape(a.shape)
    if layout == "transposed" and a.ndim:  # asfortranarray makes 0-d arrays 1-D
        return np.asfortranarray(a)
    if layout == "strided":
        wide = np.zeros((*a.shape, 2), a.dtype)
        wide[..., 0] = a
        return wide[..., 0]
    if layout == "reversed" and a.ndim:
        return np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    return np.array(a, order="C")


def on(device, a, layout="C"):
    """``a`` on ``device`` in ``layout`` (a device array keeps a 0-d shape)."""
    if device == "cpu":
        return laid_out(a, layout)
    if layout == "misaligned":
        buf = _cuda.cuda.to_device(np.concatenate([np.zeros(1, a.dtype), a.ravel()]))
        return buf[1:].reshape(a.shape)
    return _cuda.cuda.to_device(np.array(a, order="C"))


def host(a):
    return gn.to_numpy(a)


def check(actual, expected, dtype, bound=None, what=""):
    """Shape, then dtype, then values: NaN where the reference has NaN, and
    elsewhere |actual - expected| <= rtol * max(bound, |expected|) + atol,
    ``bound`` being the magnitude of the terms the value is computed from
    (infinities count as the largest finite value, just beyond it for
    float32, so that an infinity is matched only by an infinity or a value
    next to it)."""
    actual, expected = host(actual), np.asarray(expected)
    assert actual.shape == expected.shape, what
    assert actual.dtype == dtype, what
    rtol, atol = TOLERANCES[dtype.type]
    top = float(np.finfo(dtype).max) * (1 + 4 * rtol if dtype == np.float32 else 1)
    a = np.clip(actual.astype(np.float64), -top, top)
    e = np.clip(expected.astype(np.float64), -top, top)
    scale = np.abs(e) if bound is None else np.maximum(np.asarray(bound, np.float64), np.abs(e))
    with np.errstate(invalid="ignore", over="ignore"):
        close = (np.abs(a - e) <= rtol * scale + atol) | (a == e)
    ok = np.where(np.isnan(e), np.isnan(a), close)
    assert ok.all(), (
        f"{what}: {np.count_nonzero(~ok)} of {ok.size} values differ: "
        f"got {a[~ok][:4]}, expected {e[~ok][:4]}"
    )


# --- elementwise ops -------------------------------------------------------------------


def _alpha(data):
    return data.draw(st.floats(-4, 4))


def _elementwise_case(data, name, dtype, shape):
    """(arrays, constants after them, expected, bound) for the elementwise op
    ``name``; a backward op's second array is x or y as it names it, drawn
    freely (its reference is defined for any)."""
    x = draw_array(data, dtype, shape, floats(dtype))
    if name in ("step", "sigmoid", "tanh", "relu"):
        return [x], [], ref(name)(x), None
    if name == "leaky_relu":
        alpha = _alpha(data)
        return [x], [alpha], ref(name)(x, alpha), None
    if name == "scale":
        factor = data.draw(floats(dtype, finite=True))
        return [x], [factor], ref(name)(x, factor), None
    if name == "dropout":
        p = data.draw(st.floats(0, 1))
        seed = data.draw(st.integers(0, 2**64 - 1))
        offset = 4 * data.draw(st.integers(0, 2**20))
        return [x], [p, seed, offset], ref(name)(x, seed, offset, p), None
    g = draw_array(data, dtype, shape, floats(dtype))
    constants = [_alpha(data)] if name == "leaky_relu_backward" else []
    expected = ref(name)(g, x, *constants)
    g64, x64 = np.abs(g.astype(np.float64)), np.abs(x.astype(np.float64))
    with np.errstate(over="ignore", invalid="ignore"):
        bound = {
            "sigmoid_backward": g64 * x64 * (1 + x64),
            "tanh_backward": g64 * (1 + x64 * x64),
        }.get(name)
    return [g, x], constants, expected, bound


ELEMENTWISE = ["step", "sigmoid", "tanh", "relu", "leaky_relu", "step_backward",
               "sigmoid_backward", "tanh_backward", "relu_backward", "leaky_relu_backward",
               "scale", "dropout"]  # fmt: skip


def _call(name, arrays, constants, out=None):
    """gn.ops.<name> on ``arrays`` (device arrays) and its constants."""
    op = PUBLIC_OPS[name]
    if name == "scale":
        return op(arrays[0], constants[0], out=out)
    return op(*arrays, *constants, out=out)


@pytest.mark.parametrize("device", DEVICES)
def test_elementwise_ops_match_their_references(device):
    layouts = HOST_LAYOUTS if device == "cpu" else DEVICE_LAYOUTS

    @run(device, 30, 16)
    @given(data=st.data())
    def check_one(data):
        name = data.draw(st.sampled_from(ELEMENTWISE))
        dtype = data.draw(DTYPES)
        # 1-D and 2-D, one layout for all arrays: each new (op, dtype, ndim,
        # layout) compiles a CPU launcher, and the kernels see a flat array
        # whatever the shape (0-d arrays: tests/test_safety.py).
        shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=8))
        arrays, constants, expected, bound = _elementwise_case(data, name, dtype, shape)
        layout = data.draw(st.sampled_from(layouts))
        given_arrays = [on(device, a, layout) for a in arrays]
        where = data.draw(st.sampled_from(["new", "out", "in place"]))
        out = None
        if where == "out":
            out = on(device, np.full(shape, 7, dtype))
        elif where == "in place":
            out = given_arrays[0] = on(device, arrays[0])  # C order: the input itself
        result = _call(name, given_arrays, constants, out=out)
        assert out is None or result is out
        check(result, expected, dtype, bound, name)

    check_one()


# --- row ops: softmax and log-softmax over the last axis -------------------------------

ROWS = ["softmax", "log_softmax", "softmax_backward", "log_softmax_backward"]


@pytest.mark.parametrize("device", DEVICES)
def test_row_ops_match_their_references(device):
    layouts = HOST_LAYOUTS if device == "cpu" else DEVICE_LAYOUTS

    @run(device, 40, 10)
    @given(data=st.data())
    def check_one(data):
        name = data.draw(st.sampled_from(ROWS))
        dtype = data.draw(DTYPES)
        shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=6))
        # Any finite x ("stable for any finite x"), short of differences
        # that overflow the dtype.
        limit = np.finfo(dtype).max / 4
        x = draw_array(data, dtype, shape, floats(dtype, finite=True, limit=limit))
        x64 = np.abs(x.astype(np.float64))
        row_max = x64.max(axis=-1, keepdims=True, initial=0)
        forward = name.removesuffix("_backward")
        if name == forward:
            arrays, expected = [x], ref(name)(x)
            bound = x64 + row_max if name == "log_softmax" else None
        else:
            g = draw_array(data, dtype, shape, floats(dtype, finite=True, limit=1e6))
            y = ref(forward)(x)
            arrays, expected = [g, y], ref(name)(g, y)
            g64, y64 = np.abs(g.astype(np.float64)), y.astype(np.float64)
            if name == "softmax_backward":
                bound = y64 * (g64 + (g64 * y64).sum(axis=-1, keepdims=True))
            else:
                bound = g64 + np.exp(y64) * g64.sum(axis=-1, keepdims=True)
        given_arrays = [on(device, a, data.draw(st.sampled_from(layouts))) for a in arrays]
        out = None
        if data.draw(st.booleans()):  # in place
            out = given_arrays[0] = on(device, arrays[0])
        result = PUBLIC_OPS[name](*given_arrays, out=out)
        check(result, expected, dtype, bound, name)

    check_one()


# --- dense layers ----------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_dense_ops_match_their_references(device):
    layouts = HOST_LAYOUTS if device == "cpu" else DEVICE_LAYOUTS
    side = 7 if device == "cpu" else 4

    @run(device, 30, 6)
    @given(data=st.data())
    def check_one(data):
        dtype = data.draw(DTYPES)
        m, k, n = (data.draw(st.integers(0, side)) for _ in range(3))
        activation = data.draw(st.sampled_from(list(_dense.EPILOGUES)))
        alpha = _alpha(data)
        values = floats(dtype, finite=True, limit=100)
        x, W = draw_array(data, dtype, (m, k), values), draw_array(data, dtype, (k, n), values)
        b = draw_array(data, dtype, (n,), values)
        lay = [data.draw(st.sampled_from(layouts)) for _ in range(4)]
        x64, W64 = np.abs(x.astype(np.float64)), np.abs(W.astype(np.float64))
        y = gn.ops.dense(on(device, x, lay[0]), on(device, W, lay[1]), on(device, b, lay[2]),
                         activation, alpha)  # fmt: skip
        expected = ref("dense")(x, W, b, activation, alpha)
        check(y, expected, dtype, x64 @ W64 + np.abs(b), "dense")

        g = draw_array(data, dtype, (m, n), values)
        accumulate, input_grad = data.draw(st.booleans()), data.draw(st.booleans())
        dW0 = draw_array(data, dtype, (k, n), values) if accumulate else np.zeros((k, n), dtype)
        db0 = draw_array(data, dtype, (n,), values) if accumulate else np.zeros(n, dtype)
        dW, db = on(device, dW0), on(device, db0)
        dx, dW_, db_ = gn.ops.dense_backward(
            on(device, g, lay[3]), on(device, x), on(device, W), on(device, expected),
            activation, alpha, input_grad=input_grad, accumulate=accumulate, dW=dW, db=db,
        )  # fmt: skip
        assert dW_ is dW and db_ is db and (dx is None) == (not input_grad)
        rx, rW, rb = ref("dense_backward")(g, x, W, expected, activation, alpha)
        dz = np.abs(g.astype(np.float64)) * max(1.0, abs(alpha))
        check(dW, dW0.astype(np.float64) + rW, dtype, np.abs(dW0) + x64.T @ dz, "dW")
        check(db, db0.astype(np.float64) + rb, dtype, np.abs(db0) + dz.sum(axis=0), "db")
        if input_grad:
            check(dx, rx, dtype, dz @ W64.T, "dx")

    check_one()


# --- losses and hit counts -------------------------------------------------------------


def _loss_case(data, name, dtype):
    """(pred, target, expected loss, expected grad, loss bound, grad bound)."""
    if name == "softmax_cross_entropy":
        # At least one row: the kernels give a NaN mean over no rows, which
        # the references do not model (tests/test_losses.py checks it).
        rows, classes = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 6))
        # Logits up to 1e30: a batch mean of row losses near that size still
        # fits float32, and the rows' margins are taken before they are summed.
        limit = 1e30
        pred = draw_array(data, dtype, (rows, classes), floats(dtype, finite=True, limit=limit))
        kind = data.draw(st.sampled_from(["labels", "rows"]))
        if kind == "labels":
            target = np.array(
                data.draw(st.lists(st.integers(0, classes - 1), min_size=rows, max_size=rows)),
                np.int64,
            )
            t = np.eye(classes)[target]
        else:
            unit = st.floats(0, 1, width=np.finfo(dtype).bits)
            w = draw_array(data, dtype, (rows, classes), unit)
            target = (w / np.maximum(w.sum(axis=1, keepdims=True), 1)).astype(dtype)
            t = target.astype(np.float64)
        z = pred.astype(np.float64)
        shifted = np.abs(z - z.max(axis=1, keepdims=True, initial=-np.inf)) + np.log(classes)
        loss_bound = float((t * shifted).sum()) / max(rows, 1)
        grad_bound = (1 + t) / max(rows, 1)
    else:
        shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=6))
        width = np.finfo(dtype).bits
        n = math.prod(shape)
        target = draw_array(data, dtype, shape, st.floats(0, 1, width=width))
        if name == "mse":  # no squares beyond the dtype's range
            limit = math.sqrt(float(np.finfo(dtype).max)) / 4
            pred = draw_array(data, dtype, shape, floats(dtype, finite=True, limit=limit))
            d = np.abs(pred.astype(np.float64) - target)
            loss_bound, grad_bound = float((d * d).sum()) / n, d / n
        elif name == "binary_cross_entropy":
            pred = draw_array(data, dtype, shape, floats(dtype))
            pred[np.isnan(pred)] = 0
            z = np.abs(pred.astype(np.float64))
            loss_bound, grad_bound = float(np.sum(z + 1)) / n, np.full(shape, 1 / n)
        else:
            edges = st.sampled_from([0.0, 1.0, float(np.finfo(dtype).smallest_subnormal),
                                     1 - float(np.finfo(dtype).eps)])  # fmt: skip
            pred = draw_array(data, dtype, shape, st.one_of(st.floats(0, 1, width=width), edges))
            loss_bound, grad_bound = 200.0, None
    loss, grad = ref(name)(pred, target)
    return pred, target, loss, grad, loss_bound, grad_bound


LOSSES = ["softmax_cross_entropy", "mse", "binary_cross_entropy", "binary_cross_entropy_probs"]


@pytest.mark.parametrize("device", DEVICES)
def test_losses_match_their_references(device):
    @run(device, 40, 8)
    @given(data=st.data())
    def check_one(data):
        name = data.draw(st.sampled_from(LOSSES))
        dtype = data.draw(DTYPES)
        pred, target, loss, grad, loss_bound, grad_bound = _loss_case(data, name, dtype)
        layout = data.draw(st.sampled_from(HOST_LAYOUTS if device == "cpu" else DEVICE_LAYOUTS))
        got_loss, got_grad = PUBLIC_OPS[name](on(device, pred, layout), on(device, target))
        assert tuple(got_loss.shape) == ()
        check(np.array(float(got_loss), dtype), np.array(loss), dtype, loss_bound, name)
        check(got_grad, grad, dtype, grad_bound, name)

    check_one()


@pytest.mark.parametrize("device", DEVICES)
def test_hit_counts_match_their_references(device):
    @run(device, 30, 8)
    @given(data=st.data())
    def check_one(data):
        dtype = data.draw(DTYPES)
        rows, classes = data.draw(st.integers(0, 6)), data.draw(st.integers(1, 5))
        ties = st.sampled_from([-1.0, 0.0, 0.5, 2.0])  # equal scores: the first one counts
        values = st.one_of(ties, floats(dtype, finite=True))
        scores = draw_array(data, dtype, (rows, classes), values)
        labels = np.array(
            data.draw(st.lists(st.integers(0, classes - 1), min_size=rows, max_size=rows)),
            np.int64,
        )
        target = labels if data.draw(st.booleans()) else np.eye(classes, dtype=dtype)[labels]
        hits = gn.ops.argmax_hits(on(device, scores), on(device, target))
        assert host(hits).tolist() == [ref("argmax_hits")(scores, target)]
        pred = draw_array(data, dtype, (rows, classes), floats(dtype))
        truth = draw_array(data, dtype, (rows, classes), st.sampled_from([0.0, 0.5, 1.0]))
        threshold = data.draw(st.floats(-2, 2))
        hits = gn.ops.binary_hits(on(device, pred), on(device, truth), threshold)
        assert host(hits).tolist() == [ref("binary_hits")(pred, truth, threshold)]

    check_one()


# --- batch normalization ---------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_batchnorm_ops_match_their_references(device):
    layouts = HOST_LAYOUTS if device == "cpu" else DEVICE_LAYOUTS

    @run(device, 30, 6)
    @given(data=st.data())
    def check_one(data):
        dtype = data.draw(DTYPES)
        n, c = data.draw(st.integers(2, 6)), data.draw(st.integers(0, 4))
        width = np.finfo(dtype).bits
        offset = data.draw(st.sampled_from([0.0, 1e3]))  # a large mean must not cancel
        x = draw_array(data, dtype, (n, c), floats(dtype, finite=True, limit=100)) + offset
        x = x.astype(dtype)
        weight, bias = (draw_array(data, dtype, (c,), st.floats(-10, 10, width=width))
                        for _ in range(2))  # fmt: skip
        eps = 1e-5
        x_dev = on(device, x, data.draw(st.sampled_from(layouts)))
        y, mean, invstd = gn.ops.batchnorm(x_dev, on(device, weight), on(device, bias), eps=eps)
        ry, rmean, rvar = ref("batchnorm")(x, weight, bias, eps)
        rinvstd = 1 / np.sqrt(rvar + eps)
        spread = np.abs(x - rmean).max(axis=0, initial=0)
        scale = n * (np.abs(x) + np.abs(rmean)) * rinvstd * np.abs(weight) + np.abs(bias)
        check(y, ry, dtype, scale * (1 + spread * spread * rinvstd**2), "y")
        check(mean, rmean, dtype, n * (np.abs(x).max(axis=0, initial=0)), "mean")
        check(invstd, rinvstd, dtype, n * rinvstd * (1 + spread * spread * rinvstd**2), "invstd")

        running_mean = draw_array(data, dtype, (c,), st.floats(-10, 10, width=width))
        running_var = draw_array(data, dtype, (c,), st.floats(0, 10, width=width))
        y = gn.ops.batchnorm_inference(
            x_dev, *(on(device, a) for a in (weight, bias, running_mean, running_var)), eps
        )[0]
        r_inv = 1 / np.sqrt(running_var.astype(np.float64) + eps)
        bound = (np.abs(x) + np.abs(running_mean)) * r_inv * np.abs(weight) + np.abs(bias)
        check(y, ref("batchnorm_inference")(x, weight, bias, running_mean, running_var, eps),
              dtype, 4 * bound, "y (inference)")  # fmt: skip

        g = draw_array(data, dtype, (n, c), floats(dtype, finite=True, limit=100))
        batch_stats = data.draw(st.booleans())
        stats = (rmean, rinvstd) if batch_stats else (running_mean.astype(np.float64), r_inv)
        stats_dev = [on(device, a.astype(dtype)) for a in stats]
        dx, dweight, dbias = gn.ops.batchnorm_backward(
            on(device, g), x_dev, on(device, weight), *stats_dev, batch_stats
        )
        mean32, invstd32 = (a.astype(dtype) for a in stats)
        rdx, rdw, rdb = ref("batchnorm_backward")(g, x, weight, mean32, invstd32, batch_stats)
        g64 = np.abs(g.astype(np.float64))
        xhat = np.abs(x - mean32.astype(np.float64)) * invstd32
        dw_bound = (g64 * (xhat + 1)).sum(axis=0)
        check(dbias, rdb, dtype, g64.sum(axis=0), "dbias")
        check(dweight, rdw, dtype, n * dw_bound, "dweight")
        k = np.abs(weight) * invstd32
        check(dx, rdx, dtype, n * k * (g64 + g64.sum(axis=0) + (xhat + 1) * dw_bound), "dx")

    check_one()


# --- optimizer updates -----------------------------------------------------------------


def _segments(data, size):
    """Ordered, non-overlapping [start, stop) ranges within size, or None."""
    if not data.draw(st.booleans()):
        return None
    cuts = sorted(data.draw(st.lists(st.integers(0, size), min_size=0, max_size=6)))
    bounds = np.array([cuts[i : i + 2] for i in range(0, len(cuts) - 1, 2)], np.int64)
    return bounds.reshape(-1, 2)


@pytest.mark.parametrize("device", DEVICES)
def test_updates_match_their_references(device):
    @run(device, 30, 6)
    @given(data=st.data())
    def check_one(data):
        dtype = data.draw(DTYPES)
        size = data.draw(st.integers(0, 20))
        values = floats(dtype, finite=True, limit=100)
        p, g = (draw_array(data, dtype, (size,), values) for _ in range(2))
        bounds = _segments(data, size)
        rows = [(0, size)] if bounds is None else bounds.tolist()
        settings_ = np.array([[data.draw(st.floats(0, 1)), data.draw(st.floats(0, 0.1))]
                              for _ in rows]).reshape(-1, 2)  # fmt: skip
        segments = None if bounds is None else (bounds, settings_)
        lr, wd = (None, 0.0) if segments else settings_[0]
        expected = p.astype(np.float64)
        lrs, wds = np.zeros(size), np.zeros(size)  # each element's settings (0: not updated)
        for (start, stop), (lr_s, wd_s) in zip(rows, settings_, strict=True):
            lrs[start:stop], wds[start:stop] = lr_s, wd_s
        p64, g64 = np.abs(p.astype(np.float64)), np.abs(g.astype(np.float64))
        if data.draw(st.booleans()):
            buf = draw_array(data, dtype, (size,), values)
            momentum = data.draw(st.floats(0, 0.99))
            nesterov = momentum > 0 and data.draw(st.booleans())
            first = data.draw(st.booleans())
            args = [on(device, a) for a in (p, g, buf)]
            gn.ops.sgd(*args, lr, momentum, wd, nesterov, first, segments=segments)
            for (start, stop), (lr_s, wd_s) in zip(rows, settings_, strict=True):
                s = slice(start, stop)
                expected[s] = ref("sgd")(p[s], g[s], buf[s], lr_s, momentum, wd_s, nesterov,
                                         first)[0]  # fmt: skip
            step_bound = g64 + wds * p64 + momentum * np.abs(buf)
            bound = p64 + 2 * lrs * step_bound * (1 + momentum)
        else:
            m = draw_array(data, dtype, (size,), values)
            v = draw_array(data, dtype, (size,), st.floats(0, 100, width=np.finfo(dtype).bits))
            step = data.draw(st.integers(1, 5))
            betas = (data.draw(st.floats(0, 0.99)), data.draw(st.floats(0, 0.999)))
            decoupled = data.draw(st.booleans())
            args = [on(device, a) for a in (p, g, m, v)]
            gn.ops.adam(*args, step, lr, betas, 1e-8, wd, decoupled, segments=segments)
            for (start, stop), (lr_s, wd_s) in zip(rows, settings_, strict=True):
                s = slice(start, stop)
                expected[s] = ref("adam")(p[s], g[s], m[s], v[s], step, lr_s, betas, 1e-8, wd_s,
                                          decoupled)[0]  # fmt: skip
            # The first moment sums terms that may cancel; the update divides
            # it by the second's root.
            b1, b2 = betas
            g_all = g64 + (0 if decoupled else wds * p64)
            m_bound = b1 * np.abs(m) + (1 - b1) * g_all
            v_new = b2 * v + (1 - b2) * (g.astype(np.float64) + (0 if decoupled else wds * p)) ** 2
            denominator = np.sqrt(v_new) / math.sqrt(1 - b2**step) + 1e-8
            bound = p64 + 4 * lrs / (1 - b1**step) * m_bound / denominator
        check(args[0], expected, dtype, bound, "p")

    check_one()


# --- fault injection: every op, every argument -----------------------------------------

#: Array arguments each op writes (outputs, and arrays updated in place).
WRITTEN = {"out", "dx", "dW", "db", "dz", "save_mean", "save_invstd", "dweight", "dbias"}
UPDATED = {
    "sgd": ("p", "buf"),
    "adam": ("p", "m", "v"),
    "batchnorm": ("running_mean", "running_var"),
}


def _valid_arguments(name, device):
    """{parameter: value}: arguments every op takes (outputs included), small,
    float32, on ``device``."""
    rng = np.random.default_rng(0)

    def a(*shape):
        return on(device, rng.uniform(0.1, 0.9, shape).astype(np.float32))

    x, W = a(2, 3), a(3, 4)
    elementwise = {"x": x, "out": a(2, 3)}
    cases = {
        "dense": {"x": x, "W": W, "b": a(4), "out": a(2, 4)},
        "dense_backward": {"grad_out": a(2, 4), "x": x, "W": W, "y": a(2, 4), "dx": a(2, 3),
                           "dW": a(3, 4), "db": a(4), "dz": a(2, 4)},
        "softmax_cross_entropy": {"logits": x, "target": on(device, np.array([0, 2]))},
        "argmax_hits": {"scores": x, "target": on(device, np.array([0, 2])), "out": a(1)},
        "binary_hits": {"pred": x, "target": a(2, 3), "out": a(1)},
        "dropout": {"x": x, "p": 0.5, "seed": 1, "offset": 0, "out": a(2, 3)},
        "batchnorm": {"x": x, "weight": a(3), "bias": a(3), "running_mean": a(3),
                      "running_var": a(3), "out": a(2, 3), "save_mean": a(3),
                      "save_invstd": a(3)},
        "batchnorm_inference": {"x": x, "weight": a(3), "bias": a(3), "running_mean": a(3),
                                "running_var": a(3), "out": a(2, 3), "save_mean": a(3),
                                "save_invstd": a(3)},
        "batchnorm_backward": {"grad_out": x, "x": a(2, 3), "weight": a(3), "mean": a(3),
                               "invstd": a(3), "dx": a(2, 3), "dweight": a(3), "dbias": a(3)},
        "scale": {"x": x, "factor": 2.0, "out": a(2, 3)},
        "sgd": {"p": a(6), "grad": a(6), "buf": a(6), "lr": 0.1},
        "adam": {"p": a(6), "grad": a(6), "m": a(6), "v": a(6), "step": 1, "lr": 0.1},
    }  # fmt: skip
    if name in cases:
        return cases[name]
    params = inspect.signature(PUBLIC_OPS[name]).parameters
    if name in LOSSES:
        first = next(iter(params))
        return {first: x, "target": a(2, 3)}
    if "grad_out" in params:
        second = list(params)[1]
        return {"grad_out": a(2, 3), second: a(2, 3), "out": a(2, 3)}
    return elementwise


def _invoke(name, arguments):
    """Call op ``name`` with ``arguments`` by parameter name (losses take out=(loss, grad))."""
    op = PUBLIC_OPS[name]
    params = inspect.signature(op).parameters
    positional = [arguments[p] for p in params if p in arguments and
                  params[p].kind is params[p].POSITIONAL_OR_KEYWORD]  # fmt: skip
    keywords = {p: v for p, v in arguments.items() if params[p].kind is params[p].KEYWORD_ONLY}
    return op(*positional, **keywords)


def test_every_public_op_is_fuzzed_and_injected():
    fuzzed = set(ELEMENTWISE) | set(ROWS) | set(LOSSES)
    fuzzed |= {"dense", "dense_backward", "argmax_hits", "binary_hits", "batchnorm",
               "batchnorm_inference", "batchnorm_backward", "sgd", "adam"}  # fmt: skip
    assert fuzzed == set(PUBLIC_OPS)


def _array_parameters(arguments):
    return [p for p, v in arguments.items() if hasattr(v, "shape")]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(PUBLIC_OPS))
def test_non_arrays_and_non_float_arrays_are_refused_by_name(device, name):
    arguments = _valid_arguments(name, device)
    _invoke(name, arguments)  # valid as they are
    for param in _array_parameters(arguments):
        original = arguments[param]
        values = host(original)
        others = {p: host(v).copy() for p, v in arguments.items() if hasattr(v, "shape")}
        bad_values = [values.tolist(), 1.5, np.float32(1.5)]
        written = param in WRITTEN or param in UPDATED.get(name, ())
        if not written and param != "target":  # outputs of another dtype: ValueError
            bad_values.append(on(device, values.astype(np.int32)))
        for bad in bad_values:
            with pytest.raises(TypeError, match=rf"{name}: expected (a |an )?.*{param}"):
                _invoke(name, {**arguments, param: bad})
        for p, before in others.items():
            np.testing.assert_array_equal(host(arguments[p]), before, err_msg=f"{name}.{p}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(PUBLIC_OPS))
def test_outputs_that_partly_overlap_an_input_are_refused(device, name):
    arguments = _valid_arguments(name, device)
    updated = UPDATED.get(name, ())
    written = [p for p in _array_parameters(arguments) if p in WRITTEN or p in updated]
    if name in LOSSES:
        written = []  # out=(loss, grad): checked below
    read = [p for p in _array_parameters(arguments) if p not in written]
    for out_param in written:
        for in_param in read:
            out, x = host(arguments[out_param]), host(arguments[in_param])
            if x.dtype != out.dtype:
                continue
            buf = np.zeros(max(x.size, out.size) + 1, x.dtype)
            buf[: x.size] = x.ravel()
            shared = on(device, buf)
            views = {in_param: shared[: x.size].reshape(x.shape),
                     out_param: shared[1 : 1 + out.size].reshape(out.shape)}  # fmt: skip
            with pytest.raises(ValueError, match=rf"{name}: expected \w+ not to overlap \w+"):
                _invoke(name, {**arguments, **views})
            np.testing.assert_array_equal(host(shared), buf, err_msg=f"{out_param}/{in_param}")
    if name in LOSSES:
        pred_param = next(iter(arguments))
        pred = host(arguments[pred_param])
        buf = np.zeros(pred.size + 1, pred.dtype)
        buf[: pred.size] = pred.ravel()
        shared = on(device, buf)
        loss = on(device, np.zeros(1, np.float32))
        with pytest.raises(ValueError, match="the grad out not to overlap"):
            PUBLIC_OPS[name](shared[: pred.size].reshape(pred.shape), arguments["target"],
                             out=(loss, shared[1:].reshape(pred.shape)))  # fmt: skip
        np.testing.assert_array_equal(host(shared), buf)


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=pytest.mark.cuda)])
def test_device_arrays_that_are_not_c_contiguous_are_refused(device):
    x = _cuda.cuda.to_device(np.ones((4, 6), np.float32))[:, ::2]
    for op in (gn.ops.relu, gn.ops.softmax, lambda v: gn.ops.dropout(v, 0.5, 1, 0)):
        with pytest.raises(ValueError, match="C-contiguous on the GPU"):
            op(x)


def test_the_dropout_offset_leaves_room_for_the_draw():
    x = np.ones(9, np.float32)
    words = _dropout.words(x.size)
    with pytest.raises(ValueError, match="room for the draw"):
        gn.ops.dropout(x, 0.5, 1, 2**64 - 4)
    gn.ops.dropout(x, 0.5, 1, 2**64 - 4 * -(-words // 4))  # just room
