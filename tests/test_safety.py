"""Unsafe inputs, each case of the report kept as a regression test: arrays
on objects whose sizes do not match (kernels wrote out of bounds), inputs
that gave wrong results without an error, and inputs that reached Numba's own
errors. Each is refused with the documented error before anything is
written, or computed as documented, on the CPU and on CUDA (a GPU or the
simulator)."""

import numpy as np
import pytest
from conftest import DEVICES, SIMULATOR, put
from gpunet.kernels import _cuda

import gpunet as gn
from gpunet import dispatch

F32 = np.float32


def host(x):
    return gn.to_numpy(x)


# --- arrays on objects: shapes, dtypes and devices are kept -----------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_batchnorm_running_statistics_refuse_another_shape_dtype_or_type(device):
    layer = gn.nn.BatchNorm1d(3, device=device).eval()
    mean, var = layer.running_mean, layer.running_var
    refused = [
        (put(np.zeros(1, F32), device), ValueError, r"running_mean of shape \(3,\), got \(1,\)"),
        (put(np.zeros(3), device), TypeError, "running_mean of dtype float32, got float64"),
        ([0.0, 0.0, 0.0], TypeError, "expected running_mean to be a numpy array or a CUDA"),
        (None, TypeError, "expected running_mean to be an array"),
    ]
    for value, error, message in refused:
        with pytest.raises(error, match=message):
            layer.running_mean = value
    assert layer.running_mean is mean and not host(mean).any()  # kept, and still zeros
    layer.running_mean = put(np.array([1, 2, 3], F32), device)
    layer.running_var = put(np.full(3, 4, F32), device)
    assert layer.running_mean is mean and layer.running_var is var  # copied into
    x = np.array([[1, 2, 3], [5, 6, 7]], F32)
    expected = (x - [1, 2, 3]) / np.sqrt(4 + layer.eps)
    np.testing.assert_allclose(host(layer.forward(put(x, device))), expected, rtol=1e-6)


@pytest.mark.cuda
def test_batchnorm_running_statistics_refuse_another_device_and_follow_to():
    layer = gn.nn.BatchNorm1d(3, device="cuda")
    with pytest.raises(gn.DeviceError, match="running_var on cuda:0, got an array on cpu"):
        layer.running_var = np.ones(3, F32)
    layer.to("cpu")
    assert isinstance(layer.running_var, np.ndarray)
    with pytest.raises(gn.DeviceError, match="running_var on cpu"):
        layer.running_var = put(np.ones(3, F32), "cuda")
    layer.running_var = np.full(3, 2, F32)
    layer.to("cuda")
    assert _cuda.is_device_array(layer.running_var)
    np.testing.assert_array_equal(host(layer.running_var), np.full(3, 2, F32))


def test_batchnorm_without_running_statistics_refuses_them():
    layer = gn.nn.BatchNorm1d(3, track_running_stats=False)
    assert layer.running_mean is None and layer.running_var is None
    with pytest.raises(ValueError, match="has no running_mean"):
        layer.running_mean = np.zeros(3, F32)


@pytest.mark.parametrize("device", DEVICES)
def test_a_bias_of_another_size_is_refused(device):
    layer = gn.nn.Dense(3, 2, device=device)
    with pytest.raises(ValueError, match=r"expected an array of shape \(2,\), got \(1,\)"):
        layer.bias.data = put(np.zeros(1, F32), device)
    x, W = put(np.ones((4, 3), F32), device), layer.weight.data
    with pytest.raises(ValueError, match=r"expected b of shape \(2,\), got \(1,\)"):
        gn.ops.dense(x, W, put(np.zeros(1, F32), device))


def _launcher_cases(kind):
    """(op, arguments with one array of a size the others do not match,
    message) for the launchers of the kernel table."""

    def a(*shape, value=0.0, dtype=F32):
        return put(np.full(shape, value, dtype), kind)

    x, W, y = a(2, 3), a(3, 4), a(2, 4)
    seg = (np.array([[0, 3]]), np.array([[0.1, 0.0]]))
    return [
        ("dense", (x, W, a(1), y), r"b of shape \(4,\)"),
        ("dense", (x, W, a(4), a(2, 5)), r"out of shape \(2, 4\)"),
        ("dense", (x, a(2, 4), a(4), y), r"x \(m, k\) and W \(k, n\)"),
        ("dense_backward", (y, x, W, y, a(2, 3), a(3, 4), a(1), a(2, 4)), r"db of shape \(4,\)"),
        ("dense_backward", (y, x, W, y, a(2, 2), a(3, 4), a(4), a(2, 4)), r"dx of shape \(2, 3\)"),
        ("dense_backward", (y, x, W, y, None, a(4, 4), a(4), a(2, 4)), r"dW of shape \(3, 4\)"),
        ("batchnorm", (x, a(3), a(3), x, a(3), a(3), a(1), a(3), 1e-5, 0.1, True),
         r"running_mean of shape \(3,\)"),
        ("batchnorm_inference", (x, a(3), a(3), a(3), a(1), 1e-5, x, a(3), a(3)),
         r"running_var of shape \(3,\)"),
        ("batchnorm_backward", (x, x, a(3), a(3), a(3), x, a(1), a(3), True),
         r"dweight of shape \(3,\)"),
        ("dropout", (a(8), a(4), 1, 0, 0.5), "out of 8 elements"),
        ("sgd", (a(3), a(2), a(3), 0.1), r"arrays of one shape \(3,\)"),
        ("sgd", (a(3), a(3), a(3), None, 0.0, 0.0, False, True, (np.array([[0, 4]]), seg[1])),
         "segments within"),
        ("adam", (a(3), a(3), a(3), a(1), 1, 0.1), r"arrays of one shape \(3,\)"),
        ("adam", (a(3), a(3), a(3), a(3), 1, None, (0.9, 0.999), 1e-8, 0.0, False,
                  (np.array([[0, 2], [1, 3]]), np.array([[0.1, 0.0], [0.1, 0.0]]))),
         "non-overlapping segments"),
        ("scale", (a(3), 2.0, a(2)), r"arrays of one shape \(3,\)"),
        ("column_affine", (x, a(3), a(2), a(3), x), r"factor of shape \(3,\)"),
        ("argmax_hits", (x, a(3, dtype=np.int64), a(1)), "target of shape"),
        ("binary_hits", (x, a(3, 2), 0.0, a(1)), "target of shape"),
        ("relu", (a(4), a(3)) if kind == "cuda" else None, "arrays of 4 elements"),
        ("sigmoid_backward", (a(4), a(3), a(4)) if kind == "cuda" else None, "of 4 elements"),
    ]  # fmt: skip


@pytest.mark.parametrize("device", DEVICES)
def test_launchers_check_sizes_before_writing(device):
    for op, args, message in _launcher_cases(device):
        if args is None:
            continue
        before = [host(a).copy() if hasattr(a, "shape") else None for a in args]
        with pytest.raises(ValueError, match=message):
            dispatch.kernel_for(op, device)(*args)
        for a, old in zip(args, before, strict=True):
            if old is not None:
                np.testing.assert_array_equal(host(a), old, err_msg=op)


def test_cpu_activation_launchers_refuse_other_sizes_and_overlaps():
    buf = np.arange(-4, 5, dtype=F32)
    before = buf.copy()
    assert dispatch.kernel_for("relu", "cpu")(buf[:4], np.zeros(3, F32)) is False
    assert dispatch.kernel_for("relu", "cpu")(buf[:-1], buf[1:]) is False
    assert dispatch.kernel_for("tanh_backward", "cpu")(buf[1:], buf[1:], buf[:-1]) is False
    assert dispatch.kernel_for("leaky_relu", "cpu")(buf[::2], buf[:5], 0.1) is False
    np.testing.assert_array_equal(buf, before)
    assert dispatch.kernel_for("relu", "cpu")(buf, buf) is True  # exactly the input
    np.testing.assert_array_equal(buf, np.maximum(before, 0))


# --- wrong results without an error ----------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bad", [np.nan, 1.5, -0.25, np.inf])
def test_binary_cross_entropy_of_probabilities_refuses_values_outside_0_1(device, bad):
    probs = put(np.array([0.0, 0.5, bad, 1.0], F32), device)
    target = put(np.array([0.0, 1.0, 1.0, 1.0], F32), device)
    loss, grad = put(np.full(1, 7, F32), device), put(np.full(4, 7, F32), device)
    with pytest.raises(ValueError, match=r"expected probabilities in \[0, 1\], got 1 value"):
        gn.ops.binary_cross_entropy_probs(probs, target, out=(loss, grad))
    assert (host(loss) == 7).all() and (host(grad) == 7).all()
    loss_fn = gn.losses.BinaryCrossEntropy(from_logits=False)
    with pytest.raises(ValueError, match="probabilities"):
        loss_fn(probs, target)
    probs = put(np.array([0.0, 0.5, 1.0, 1.0], F32), device)  # the ends are probabilities
    assert np.isfinite(float(gn.ops.binary_cross_entropy_probs(probs, target)[0]))


def _row_views(buf, shift):
    """Two (3, 4) C-contiguous views of the flat ``buf``, ``shift`` elements apart."""
    return buf[:12].reshape(3, 4), buf[shift : 12 + shift].reshape(3, 4)


ELEMENTWISE_AND_ROWS = {
    "relu": lambda x, out: gn.ops.relu(x, out=out),
    "sigmoid": lambda x, out: gn.ops.sigmoid(x, out=out),
    "tanh": lambda x, out: gn.ops.tanh(x, out=out),
    "step": lambda x, out: gn.ops.step(x, out=out),
    "leaky_relu": lambda x, out: gn.ops.leaky_relu(x, 0.1, out=out),
    "relu_backward": lambda x, out: gn.ops.relu_backward(x, x, out=out),
    "sigmoid_backward": lambda x, out: gn.ops.sigmoid_backward(x, x, out=out),
    "tanh_backward": lambda x, out: gn.ops.tanh_backward(x, x, out=out),
    "step_backward": lambda x, out: gn.ops.step_backward(x, x, out=out),
    "leaky_relu_backward": lambda x, out: gn.ops.leaky_relu_backward(x, x, 0.1, out=out),
    "softmax": lambda x, out: gn.ops.softmax(x, out=out),
    "log_softmax": lambda x, out: gn.ops.log_softmax(x, out=out),
    "softmax_backward": lambda x, out: gn.ops.softmax_backward(x, x, out=out),
    "log_softmax_backward": lambda x, out: gn.ops.log_softmax_backward(x, x, out=out),
    "dropout": lambda x, out: gn.ops.dropout(x, 0.5, 3, 0, out=out),
    "scale": lambda x, out: gn.ops.scale(x, 3.0, out=out),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ELEMENTWISE_AND_ROWS)
def test_partly_overlapping_out_is_refused_and_the_input_itself_allowed(device, name):
    op = ELEMENTWISE_AND_ROWS[name]
    values = np.linspace(-3, 3, 16).astype(F32)
    buf = put(values, device)
    for shift in (1, 4):  # within a row, and a whole row apart
        x, out = _row_views(buf, shift)
        with pytest.raises(ValueError, match="expected out not to overlap .* itself"):
            op(x, out)
        with pytest.raises(ValueError, match="expected out not to overlap"):
            op(out, x)
        np.testing.assert_array_equal(host(buf), values)
    expected = host(op(put(values[:12].reshape(3, 4), device), None))
    x = buf[:12].reshape(3, 4)
    assert op(x, x) is x
    np.testing.assert_allclose(host(x), expected, rtol=1e-6, atol=1e-7)


def test_strided_input_over_out_is_refused_on_the_host():
    buf = np.arange(10, dtype=F32)
    with pytest.raises(ValueError, match="overlap"):
        gn.ops.relu(buf[::2], out=buf[:5])  # same first element, other strides
    with pytest.raises(ValueError, match="overlap"):
        gn.ops.softmax(buf[::2].reshape(1, 5), out=buf[:5].reshape(1, 5))
    np.testing.assert_array_equal(buf, np.arange(10, dtype=F32))


@pytest.mark.parametrize("device", DEVICES)
def test_outputs_of_the_other_ops_share_no_memory_with_their_inputs(device):
    def a(*shape):
        return put(np.ones(shape, F32), device)

    x, W, b = a(2, 3), a(3, 3), a(3)
    g, y = a(2, 3), gn.ops.dense(x, W, b)
    flat = a(6)
    calls = [
        (lambda: gn.ops.dense(x, W, b, out=x), "out not to overlap x"),
        (lambda: gn.ops.dense_backward(g, x, W, y, dx=flat[:6].reshape(2, 3),
                                       dW=a(3, 3), dz=flat.reshape(2, 3)), "dx not to overlap dz"),
        (lambda: gn.ops.dense_backward(g, x, W, y, dz=y), "dz not to overlap y"),
        (lambda: gn.ops.mse(x, g, out=(a(1), x)), "the grad out not to overlap pred"),
        (lambda: gn.ops.argmax_hits(x, g, out=x[0, :1]), "out not to overlap scores"),
        (lambda: gn.ops.batchnorm(x, b, b, out=x), "out not to overlap x"),
        (lambda: gn.ops.batchnorm(x, a(3), a(3), b, b), "running_var not to overlap running_mean"),
        (lambda: gn.ops.batchnorm_backward(g, x, b, b, b, dx=g), "dx not to overlap grad_out"),
        (lambda: gn.ops.sgd(flat, flat, a(6), 0.1), "p not to overlap grad"),
        (lambda: gn.ops.adam(flat, a(6), flat, a(6), 1, 0.1), "m not to overlap p"),
    ]  # fmt: skip
    for call, message in calls:
        with pytest.raises(ValueError, match=message):
            call()
    dz = put(host(g), device)  # dz may be grad_out itself, as documented
    dx, dW, db = gn.ops.dense_backward(dz, x, W, y, dz=dz)
    np.testing.assert_allclose(host(dW), np.full((3, 3), 2, F32))


def test_parameters_and_optimizer_ops_refuse_non_float_dtypes():
    for dtype in (np.int64, np.complex128, np.float16):
        with pytest.raises(TypeError, match="expected dtype float32 or float64"):
            gn.nn.Parameter(np.arange(3).astype(dtype))
        p = np.arange(3).astype(dtype)
        state = [np.zeros(3, dtype) for _ in range(3)]
        with pytest.raises(TypeError, match="expected p of dtype float32 or float64"):
            gn.ops.adam(p, *state, 1, 0.1)
        with pytest.raises(TypeError, match="expected p of dtype float32 or float64"):
            gn.ops.sgd(p, *state[:2], 0.1)
        assert (p == np.arange(3)).all()


ZERO_D = {  # op on a 0-d x: (its result, the reference)
    "relu": (gn.ops.relu, lambda x: np.maximum(x, 0)),
    "sigmoid": (gn.ops.sigmoid, lambda x: 1 / (1 + np.exp(-x))),
    "tanh": (gn.ops.tanh, np.tanh),
    "step": (gn.ops.step, lambda x: (x > 0).astype(F32)),
    "leaky_relu": (lambda x: gn.ops.leaky_relu(x, 0.5), lambda x: np.where(x > 0, x, 0.5 * x)),
    "relu_backward": (lambda x: gn.ops.relu_backward(x, x), lambda x: np.where(x > 0, x, 0)),
    "sigmoid_backward": (lambda x: gn.ops.sigmoid_backward(x, x), lambda x: x * x * (1 - x)),
    "tanh_backward": (lambda x: gn.ops.tanh_backward(x, x), lambda x: x * (1 - x * x)),
    "step_backward": (lambda x: gn.ops.step_backward(x, x), np.zeros_like),
    "leaky_relu_backward": (
        lambda x: gn.ops.leaky_relu_backward(x, x, 0.5),
        lambda x: np.where(x > 0, x, 0.5 * x),
    ),
    "scale": (lambda x: gn.ops.scale(x, 3.0), lambda x: 3 * x),
    "dropout": (lambda x: gn.ops.dropout(x, 0.0, 1, 0), lambda x: x),
}
CPU_ZERO_D = ["relu", "leaky_relu", "relu_backward", "leaky_relu_backward", "scale", "dropout"]


@pytest.mark.parametrize("device", DEVICES)
def test_zero_d_inputs_behave_alike_on_every_device(device):
    def zero_d(value):  # built directly: gn.to_device's own handling is tested below
        if device == "cpu":
            return np.array(value, F32)
        return _cuda.cuda.to_device(np.array(value, F32))

    # On the CPU one op of each launcher form (forward and backward, with and
    # without a constant; scale; dropout): each compiles anew for 0-d arrays.
    names = ZERO_D if device == "cuda" else CPU_ZERO_D
    for value in (-2.0, 0.5):
        for name in names:
            op, reference = ZERO_D[name]
            result = op(zero_d(value))
            assert tuple(result.shape) == (), name
            np.testing.assert_allclose(host(result), reference(F32(value)), rtol=1e-6, err_msg=name)
    for op in (gn.ops.softmax, gn.ops.log_softmax):
        with pytest.raises(ValueError, match="at least 1 dimension, got a 0-d array"):
            op(zero_d(1.0))
    loss, grad = gn.ops.mse(zero_d(-2.0), zero_d(1.0))
    assert tuple(grad.shape) == () and float(loss) == pytest.approx(4.5)


@pytest.mark.cuda
def test_to_device_keeps_zero_d_arrays():
    assert tuple(gn.to_device(np.array(1.0, F32), "cuda").shape) == ()


# --- Numba's own errors no longer reach users ------------------------------------------


@pytest.mark.parametrize("scaler", [gn.data.StandardScaler, gn.data.MinMaxScaler])
def test_scalers_without_copy_copy_a_read_only_input(scaler):
    X = np.arange(12, dtype=F32).reshape(4, 3)
    X.flags.writeable = False
    expected = scaler().fit(X).transform(X)
    result = scaler(copy=False).fit(X).transform(X)
    assert result is not X
    np.testing.assert_array_equal(result, expected)
    np.testing.assert_array_equal(X, np.arange(12, dtype=F32).reshape(4, 3))
    writable = X.copy()
    assert scaler(copy=False).fit(writable).transform(writable) is writable  # in place


@pytest.mark.parametrize("device", DEVICES)
def test_lists_and_scalars_raise_type_error_naming_the_argument(device):
    x = put(np.ones((2, 3), F32), device)
    W, b = put(np.ones((3, 2), F32), device), put(np.ones(2, F32), device)
    calls = [
        (lambda: gn.ops.softmax([[1.0, 2.0]]), "softmax: expected x"),
        (lambda: gn.ops.log_softmax([[1.0, 2.0]]), "log_softmax: expected x"),
        (lambda: gn.ops.softmax_backward(x, [[1.0] * 3] * 2), "softmax_backward: expected y"),
        (lambda: gn.ops.dense([[1.0, 2.0, 3.0]], W, b), "dense: expected x"),
        (lambda: gn.ops.dense(x, W, [1.0, 2.0]), "dense: expected b"),
        (lambda: gn.ops.dense_backward([[1.0, 2.0]] * 2, x, W, x), "expected grad_out"),
        (lambda: gn.ops.dropout([1.0, 2.0], 0.5, 1, 0), "dropout: expected x"),
        (lambda: gn.ops.relu(1.5), "relu: expected x .* got float"),
        (lambda: gn.ops.relu(np.float32(1.5)), "relu: expected x .* got float32"),
        (lambda: gn.ops.mse(x, 1.0), "mse: expected target"),
        (lambda: gn.ops.relu(x, out=[0.0] * 6), "relu: expected out"),
    ]
    for call, message in calls:
        with pytest.raises(TypeError, match=message):
            call()


@pytest.mark.skipif(not SIMULATOR, reason="the simulator's arrays have their own type")
def test_simulator_arrays_count_as_device_arrays_in_overlap_checks():
    buf = put(np.arange(8, dtype=F32), "cuda")
    assert gn._arrays.overlap("cuda", buf[1:], buf[:-1]) == "partial"
    assert gn._arrays.overlap("cuda", buf[:4], buf[:4]) == "same"
    assert gn._arrays.overlap("cuda", buf[:4], buf[4:]) is None


@pytest.mark.parametrize(
    "layer",
    [
        lambda: gn.nn.Dense(3, 2, seed=0),
        lambda: gn.nn.Dropout(0.5, seed=0),
        lambda: gn.nn.BatchNorm1d(3),
        lambda: gn.nn.ReLU(),
    ],
    ids=["Dense", "Dropout", "BatchNorm1d", "ReLU"],
)
def test_layer_backward_names_a_list_grad_out(layer):
    layer = layer()
    y = layer.forward(np.arange(12, dtype=F32).reshape(4, 3))
    with pytest.raises(TypeError, match="expected grad_out to be a numpy array or a CUDA array"):
        layer.backward(gn.to_numpy(y).tolist())
