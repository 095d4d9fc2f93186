"""Batch normalization: the kernels against the numpy references (CPU and CUDA),
stability for large means, running statistics over several steps, float64
gradient checks in both modes, PyTorch's layer (when torch is importable),
saving, and errors."""

import numpy as np
import pytest
from conftest import DEVICES, TOLERANCES, central_differences, count_device_allocations, put
from gpunet.kernels import batchnorm as kernels

import gpunet as gn
from gpunet import nn

SHAPES_CPU = [(0, 3), (1, 4), (2, 1), (5, 33), (300, 70)]
SHAPES_CUDA = [(2, 1), (5, 33)]


def host(x):
    return gn.to_numpy(x)


def _data(shape, dtype, seed=0, mean=0.0):
    rng = np.random.default_rng(seed)
    n, c = shape
    x = (rng.standard_normal(shape) * 2 + mean).astype(dtype)
    w, b = (rng.standard_normal(c).astype(dtype) for _ in range(2))
    rm, rv = rng.standard_normal(c).astype(dtype), (rng.random(c) + 0.5).astype(dtype)
    return x, w, b, rm, rv, rng.standard_normal(shape).astype(dtype)


def _close(actual, expected, dtype, scale=1):
    rtol, atol = TOLERANCES[np.dtype(dtype).type]
    np.testing.assert_allclose(host(actual), expected, rtol=scale * rtol, atol=scale * atol)


def _run_kernels(device, shape, dtype, mean=0.0):
    """Every kernel once on ``device``; returns the inputs and host outputs."""
    x, w, b, rm, rv, g = _data(shape, dtype, mean=mean)
    n, c = shape
    d = {k: put(v.copy(), device) for k, v in dict(x=x, w=w, b=b, rm=rm, rv=rv, g=g).items()}
    out = {k: put(np.zeros(s, dtype), device) for k, s in (("y", shape), ("m", c), ("i", c))}
    suffix = "cpu" if device == "cpu" else "cuda"
    forward = getattr(kernels, f"batchnorm_{suffix}")
    forward(
        d["x"], d["w"], d["b"], out["y"], out["m"], out["i"], d["rm"], d["rv"], 1e-5, 0.1, n > 1
    )
    grads = {k: put(np.zeros(s, dtype), device) for k, s in (("dx", shape), ("dw", c), ("db", c))}
    backward = getattr(kernels, f"batchnorm_backward_{suffix}")
    backward(
        d["g"], d["x"], d["w"], out["m"], out["i"], grads["dx"], grads["dw"], grads["db"], True
    )
    result = {k: host(v) for k, v in {**out, **grads, "rm": d["rm"], "rv": d["rv"]}.items()}
    return (x, w, b, rm, rv, g), result


def _check_against_references(inputs, result, dtype, scale):
    x, w, b, rm, rv, g = inputs
    n = len(x)
    y, mean, var = kernels.batchnorm_ref(x, w, b)
    _close(result["y"], y, dtype, scale)
    _close(result["m"], mean, dtype, scale)
    _close(result["i"], 1 / np.sqrt(var + 1e-5), dtype, 10 * scale)
    if n > 1:
        new_rm, new_rv = kernels.running_stats_ref(rm, rv, mean, var, n)
        _close(result["rm"], new_rm, dtype, scale)
        _close(result["rv"], new_rv, dtype, 10 * scale)
    m64, i64 = result["m"].astype(np.float64), result["i"].astype(np.float64)
    dx, dw, db = kernels.batchnorm_backward_ref(g, x, w, m64, i64)
    for name, expected in (("dx", dx), ("dw", dw), ("db", db)):
        _close(result[name], expected, dtype, 10 * scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES_CPU[1:])
def test_cpu_kernels_match_the_references(shape, dtype):
    _check_against_references(*_run_kernels("cpu", shape, dtype), dtype, scale=5)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES_CUDA)
def test_cuda_kernels_match_the_references(shape, dtype):
    _check_against_references(*_run_kernels("cuda", shape, dtype), dtype, scale=5)


@pytest.mark.parametrize("device", DEVICES)
def test_large_means_keep_the_variance(device):
    """Shifted sums: a mean of 1e4 over a spread of 2 keeps float32 accuracy."""
    shape = (64, 3) if device == "cpu" else (16, 2)
    inputs, result = _run_kernels(device, shape, np.float32, mean=1e4)
    y, _, var = kernels.batchnorm_ref(*inputs[:3])
    np.testing.assert_allclose(result["y"], y, rtol=0, atol=2e-3)
    np.testing.assert_allclose(1 / result["i"] ** 2, var, rtol=2e-3)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(0, 3), (3, 33)])
def test_inference_kernel_matches_the_reference(device, shape):
    x, w, b, rm, rv, _ = _data(shape, np.float32)
    layer = nn.BatchNorm1d(shape[1], device=device).eval()
    layer.weight.data, layer.bias.data = put(w, device), put(b, device)
    layer.running_mean, layer.running_var = put(rm, device), put(rv, device)
    expected = kernels.batchnorm_inference_ref(x, w, b, rm, rv)
    _close(layer.forward(put(x, device)), expected, np.float32, 2)


# --- the ops: gn.ops.batchnorm, batchnorm_inference and batchnorm_backward -------------


def _run_ops(device, shape, dtype, mean=0.0):
    """_run_kernels through gn.ops."""
    x, w, b, rm, rv, g = _data(shape, dtype, mean=mean)
    d = {k: put(v.copy(), device) for k, v in dict(x=x, w=w, b=b, rm=rm, rv=rv, g=g).items()}
    y, m, i = gn.ops.batchnorm(d["x"], d["w"], d["b"], d["rm"], d["rv"], 0.1, 1e-5)
    dx, dw, db = gn.ops.batchnorm_backward(d["g"], d["x"], d["w"], m, i)
    outputs = dict(y=y, m=m, i=i, dx=dx, dw=dw, db=db, rm=d["rm"], rv=d["rv"])
    return (x, w, b, rm, rv, g), {k: host(v) for k, v in outputs.items()}


OPS_CASES = [("cpu", shape) for shape in SHAPES_CPU[2:]] + [
    pytest.param("cuda", shape, marks=pytest.mark.cuda) for shape in SHAPES_CUDA
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("device, shape", OPS_CASES)
def test_ops_match_the_references_and_run_the_kernels(device, shape, dtype):
    inputs, result = _run_ops(device, shape, dtype, mean=1.0)
    for name, a in result.items():
        assert a.dtype == dtype, name
    _check_against_references(inputs, result, dtype, scale=5)
    _, direct = _run_kernels(device, shape, dtype, mean=1.0)
    for name, a in result.items():
        assert a.tobytes() == direct[name].tobytes(), name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(0, 3), (3, 33)])
def test_inference_ops_match_the_references(device, shape):
    x, w, b, rm, rv, g = _data(shape, np.float64)
    d = [put(a, device) for a in (x, w, b, rm, rv, g)]
    y, mean, invstd = gn.ops.batchnorm_inference(*d[:5], 1e-3)
    _close(y, kernels.batchnorm_inference_ref(x, w, b, rm, rv, 1e-3), np.float64)
    np.testing.assert_array_equal(host(mean), rm)
    _close(invstd, 1 / np.sqrt(rv + 1e-3), np.float64)
    grads = gn.ops.batchnorm_backward(d[5], d[0], d[1], mean, invstd, False)
    expected = kernels.batchnorm_backward_ref(g, x, w, rm, 1 / np.sqrt(rv + 1e-3), False)
    for actual, wanted in zip(grads, expected, strict=True):
        _close(actual, wanted, np.float64, 10)


@pytest.mark.parametrize("device", DEVICES)
def test_ops_write_their_outputs_and_accumulate(device):
    x, w, b, _, _, g = (put(a, device) for a in _data((6, 4), np.float64, mean=1.0))
    y, m, i = (put(np.empty(s), device) for s in ((6, 4), (4,), (4,)))
    assert gn.ops.batchnorm(x, w, b, out=y, save_mean=m, save_invstd=i) == (y, m, i)
    for given, fresh in zip((y, m, i), gn.ops.batchnorm(x, w, b), strict=True):
        assert host(given).tobytes() == host(fresh).tobytes()
    dw, db = put(np.ones(4), device), put(np.full(4, 2.0), device)
    grads = gn.ops.batchnorm_backward(
        g, x, w, m, i, input_grad=False, accumulate=True, dweight=dw, dbias=db
    )
    assert grads == (None, dw, db)
    _, fresh_dw, fresh_db = gn.ops.batchnorm_backward(g, x, w, m, i)
    np.testing.assert_array_equal(host(dw), 1 + host(fresh_dw))
    np.testing.assert_array_equal(host(db), 2 + host(fresh_db))


@pytest.mark.parametrize("device", DEVICES)
def test_ops_take_zero_rows(device):
    x, w, b, rm, rv, _ = (put(a, device) for a in _data((0, 3), np.float32))
    y, mean, invstd = gn.ops.batchnorm(x, w, b)
    assert host(y).shape == (0, 3)
    assert np.isnan(host(mean)).all() and np.isnan(host(invstd)).all()  # no statistics
    _, running, _ = gn.ops.batchnorm_inference(x, w, b, rm, rv)
    np.testing.assert_array_equal(host(running), host(rm))
    dw, db = put(np.full(3, 5, np.float32), device), put(np.full(3, 6, np.float32), device)
    dx, _, _ = gn.ops.batchnorm_backward(
        x, x, w, mean, invstd, accumulate=True, dweight=dw, dbias=db
    )
    assert host(dx).shape == (0, 3)
    np.testing.assert_array_equal(host(dw), 5)  # nothing added
    gn.ops.batchnorm_backward(x, x, w, mean, invstd, dweight=dw, dbias=db)
    np.testing.assert_array_equal(host(dw), 0)  # sums over no rows
    np.testing.assert_array_equal(host(db), 0)
    for rows in (0, 1):
        with pytest.raises(ValueError, match="at least 2 rows to update the running statistics"):
            gn.ops.batchnorm(put(np.ones((rows, 3), np.float32), device), w, b, rm, rv)


def test_ops_refuse_bad_arguments_before_writing():
    x, w, b, rm, rv, g = _data((4, 3), np.float32)
    saved = [a.copy() for a in (rm, rv)]
    y, m, i, dx, dw, db = (np.full(s, 7, np.float32) for s in [(4, 3), 3, 3, (4, 3), 3, 3])
    frozen = np.zeros(3, np.float32)
    frozen.flags.writeable = False
    outs = dict(out=y, save_mean=m, save_invstd=i)
    grads = dict(dx=dx, dweight=dw, dbias=db)
    mean, invstd = np.zeros(3, np.float32), np.ones(3, np.float32)
    cases = [
        (lambda: gn.ops.batchnorm(x[0], w, b, **outs), ValueError, r"x of shape \(batch, features"),
        (lambda: gn.ops.batchnorm(x, w[:2], b, **outs), ValueError, r"weight of shape \(3,\)"),
        (lambda: gn.ops.batchnorm(x, w, b.astype(np.float64), **outs), TypeError, "bias of dtype"),
        (lambda: gn.ops.batchnorm(x.astype(int), w, b, **outs), TypeError, "float32 or float64"),
        (lambda: gn.ops.batchnorm(list(x), w, b), TypeError, "numpy array or a CUDA array"),
        (lambda: gn.ops.batchnorm(x, w, b, rm, **outs), ValueError, "together"),
        (lambda: gn.ops.batchnorm(x, w, b, rm, rv[:2], **outs), ValueError, "running_var of shape"),
        (lambda: gn.ops.batchnorm(x, w, b, rm, frozen, **outs), ValueError, "writable running_var"),
        (lambda: gn.ops.batchnorm(x, w, b, rm, rv, 1.5, **outs), ValueError, r"momentum in \[0, 1"),
        (lambda: gn.ops.batchnorm(x, w, b, rm, rv, True, **outs), TypeError, "number momentum"),
        (lambda: gn.ops.batchnorm(x, w, b, eps=0.0, **outs), ValueError, "finite eps > 0"),
        (lambda: gn.ops.batchnorm(x[:1], w, b, rm, rv), ValueError, "at least 2 rows"),
        (lambda: gn.ops.batchnorm(x, w, b, out=y[:2]), ValueError, r"out of shape \(4, 3\)"),
        (lambda: gn.ops.batchnorm(x, w, b, save_mean=m[:2]), ValueError, "save_mean of shape"),
        (lambda: gn.ops.batchnorm(x, w, b, save_invstd=frozen), ValueError, "writable save_invstd"),
        (lambda: gn.ops.batchnorm(x, w, b, out=np.zeros((3, 4), np.float32).T), ValueError,
         "C-contiguous"),
        (lambda: gn.ops.batchnorm_inference(x, w, b, rm[:2], rv, **outs), ValueError,
         "running_mean of shape"),
        (lambda: gn.ops.batchnorm_inference(x, w, b, rm, rv, -1.0, **outs), ValueError, "eps > 0"),
        (lambda: gn.ops.batchnorm_backward(g[:2], x, w, mean, invstd, **grads), ValueError,
         r"grad_out of shape \(4, 3\) like x"),
        (lambda: gn.ops.batchnorm_backward(g, x, w, mean[:2], invstd, **grads), ValueError,
         "mean of shape"),
        (lambda: gn.ops.batchnorm_backward(g, x, w, mean, invstd.astype(np.float64), **grads),
         TypeError, "invstd of dtype float32 like x"),
        (lambda: gn.ops.batchnorm_backward(g, x, w, mean, invstd, accumulate=True, dweight=dw),
         ValueError, "pass both"),
        (lambda: gn.ops.batchnorm_backward(g, x, w, mean, invstd, dx=dx[:2], dweight=dw),
         ValueError, "dx of shape"),
        (lambda: gn.ops.batchnorm_backward(g, x, w, mean, invstd, dx=dx, dbias=frozen),
         ValueError, "writable dbias"),
    ]  # fmt: skip
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
        for a in (y, m, i, dx, dw, db):
            np.testing.assert_array_equal(a, 7)
        for a, before in zip((rm, rv), saved, strict=True):
            np.testing.assert_array_equal(a, before)


@pytest.mark.cuda
def test_ops_refuse_arrays_on_two_devices_before_writing():
    x, w, b, rm, rv, _ = _data((4, 3), np.float32)
    on_gpu = [put(a, "cuda") for a in (x, w, b, rm, rv)]
    y = put(np.full((4, 3), 7, np.float32), "cuda")
    with pytest.raises(gn.DeviceError, match="x on cpu, weight on cuda"):
        gn.ops.batchnorm(x, on_gpu[1], on_gpu[2])
    with pytest.raises(gn.DeviceError, match="running_var on cpu"):
        gn.ops.batchnorm(*on_gpu[:4], rv, out=y)
    with pytest.raises(gn.DeviceError, match="out on cuda"):
        gn.ops.batchnorm_inference(x, w, b, rm, rv, out=y)
    with pytest.raises(gn.DeviceError, match="dweight on cpu"):
        gn.ops.batchnorm_backward(y, *on_gpu[:2], *on_gpu[3:], dweight=np.zeros(3, np.float32))
    np.testing.assert_array_equal(host(y), 7)
    np.testing.assert_array_equal(host(on_gpu[3]), rm)


# --- the layer ------------------------------------------------------------------------


def test_running_statistics_over_several_steps():
    layer = nn.BatchNorm1d(4, momentum=0.3, dtype="float64")
    rm, rv = np.zeros(4), np.ones(4)
    for step in range(4):
        x = _data((7, 4), np.float64, seed=step, mean=step)[0]
        layer.forward(x)
        _, mean, var = kernels.batchnorm_ref(x, np.ones(4), np.zeros(4))
        rm, rv = kernels.running_stats_ref(rm, rv, mean, var, 7, 0.3)
    np.testing.assert_allclose(layer.running_mean, rm, rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, rv, rtol=1e-12)
    layer.eval().forward(np.ones((2, 4)))
    np.testing.assert_allclose(layer.running_mean, rm, rtol=1e-12)  # eval leaves them


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_gradients_by_central_differences(training, affine):
    x, w, b, rm, rv, r = _data((5, 3), np.float64, seed=1, mean=1.0)
    layer = nn.BatchNorm1d(3, affine=affine, dtype="float64").train(training)
    layer.running_mean, layer.running_var = rm, rv
    if affine:
        layer.weight.data, layer.bias.data = w, b
    layer.momentum = 0.0  # the running statistics stay put while differencing

    def f():
        return float(np.sum(layer.forward(x) * r))

    layer.forward(x)
    dx = layer.backward(r).copy()
    np.testing.assert_allclose(dx, central_differences(f, x), rtol=1e-6, atol=1e-8)
    for p in layer.parameters():
        np.testing.assert_allclose(p.grad, central_differences(f, p.data), rtol=1e-6, atol=1e-8)


@pytest.mark.cuda
def test_gradients_on_cuda_along_a_random_direction():
    x, w, b, _, _, r = _data((3, 2), np.float64, seed=2)
    layer = nn.BatchNorm1d(2, dtype="float64", device="cuda")
    layer.weight.data, layer.bias.data = put(w, "cuda"), put(b, "cuda")
    layer.momentum = 0.0
    slots = {"x": x, "weight": w, "bias": b}

    def loss():
        layer.weight.data, layer.bias.data = (
            put(slots["weight"], "cuda"),
            put(slots["bias"], "cuda"),
        )
        return float(np.sum(host(layer.forward(put(slots["x"], "cuda"))) * r))

    loss()
    dx = host(layer.backward(put(r, "cuda")))
    grads = {"x": dx, "weight": host(layer.weight.grad), "bias": host(layer.bias.grad)}
    rng = np.random.default_rng(3)
    directions = {k: rng.standard_normal(v.shape) for k, v in slots.items()}
    bases = {k: v.copy() for k, v in slots.items()}
    values = []
    for sign in (1, -1):
        for k in slots:
            slots[k] = bases[k] + sign * 1e-5 * directions[k]
        values.append(loss())
    expected = sum(float(np.sum(grads[k] * directions[k])) for k in slots)
    assert (values[0] - values[1]) / 2e-5 == pytest.approx(expected, rel=1e-6)


@pytest.mark.cuda
def test_layer_steps_launch_one_kernel_each_and_allocate_nothing(launches, monkeypatch):

    x, _, _, _, _, g = (put(a, "cuda") for a in _data((6, 3), np.float32, mean=1.0))
    layer = nn.BatchNorm1d(3, device="cuda")
    layer.forward(x)
    layer.backward(g)  # the first step makes the layer's outputs
    allocations = count_device_allocations(monkeypatch)
    launches.clear()
    layer.forward(x)
    layer.backward(g)
    layer.eval().forward(x)
    assert launches == ["_forward_cuda_kernel", "_backward_cuda_kernel", "_inference_cuda_kernel"]
    assert allocations == []


@pytest.mark.parametrize("device", DEVICES)
def test_layer_takes_zero_rows_in_evaluation(device):
    empty = put(np.zeros((0, 3), np.float32), device)
    for layer in (nn.BatchNorm1d(3, device=device), nn.BatchNorm1d(3, track_running_stats=False)):
        layer.to(device).eval()
        assert host(layer.forward(empty)).shape == (0, 3)
        assert host(layer.backward(empty)).shape == (0, 3)
        for p in layer.parameters():
            np.testing.assert_array_equal(host(p.grad), 0)


def test_backward_accumulates_until_zero_grad_and_can_skip_dx():
    layer = nn.BatchNorm1d(3, dtype="float64")
    x, _, _, _, _, g = _data((4, 3), np.float64)
    layer.forward(x)
    layer.backward(g)
    once = layer.weight.grad.copy()
    layer.forward(x)
    assert layer.backward(g, input_grad=False) is None
    np.testing.assert_allclose(layer.weight.grad, 2 * once)
    layer.weight.zero_grad()
    layer.bias.zero_grad()
    layer.forward(x)
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, once)


@pytest.mark.parametrize("device", DEVICES)
def test_state_dict_and_to_carry_the_running_statistics(device, tmp_path):
    layer = nn.BatchNorm1d(3, device="cpu")
    layer.forward(_data((6, 3), np.float32, mean=2.0)[0])
    state = layer.state_dict()
    assert sorted(state) == ["bias", "running_mean", "running_var", "weight"]
    layer.to(device)
    assert isinstance(layer.running_mean, np.ndarray) == (device == "cpu")
    np.testing.assert_array_equal(host(layer.running_mean), state["running_mean"])
    other = nn.BatchNorm1d(3, device=device)
    other.load_state_dict(state)
    np.testing.assert_array_equal(host(other.running_var), state["running_var"])
    assert nn.BatchNorm1d(3, track_running_stats=False, affine=False).state_dict() == {}


def test_model_with_both_layers_saves_and_loads(tmp_path):
    model = nn.Sequential(
        nn.Dense(4, 6, seed=1),
        nn.BatchNorm1d(6),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Dense(6, 2, seed=2),
    )
    model.forward(_data((8, 4), np.float32, mean=1.0)[0])
    model.save(tmp_path / "m.npz")
    loaded = gn.load(tmp_path / "m.npz")
    x = _data((5, 4), np.float32, seed=3)[0]
    np.testing.assert_allclose(loaded.predict(x), model.predict(x), rtol=1e-6)
    np.testing.assert_array_equal(loaded[1].running_mean, model[1].running_mean)
    assert loaded[3].p == 0.3 and not loaded[3].training


def test_matches_torch_in_training_and_evaluation():
    torch = pytest.importorskip("torch")
    ours = nn.BatchNorm1d(5, momentum=0.2)
    theirs = torch.nn.BatchNorm1d(5, momentum=0.2)
    _, w, b, _, _, _ = _data((2, 5), np.float32)
    ours.weight.data, ours.bias.data = w.copy(), b.copy()
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(w))
        theirs.bias.copy_(torch.from_numpy(b))
    for step in range(3):
        x, _, _, _, _, g = _data((8, 5), np.float32, seed=10 + step, mean=3.0)
        ours.weight.zero_grad()
        ours.bias.zero_grad()
        y, dx = ours.forward(x).copy(), ours.backward(g).copy()
        theirs.zero_grad()
        tx = torch.from_numpy(x).requires_grad_()
        ty = theirs(tx)
        ty.backward(torch.from_numpy(g))
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), atol=1e-5)
        np.testing.assert_allclose(ours.bias.grad, theirs.bias.grad.numpy(), atol=1e-5)
        np.testing.assert_allclose(ours.running_mean, theirs.running_mean.numpy(), rtol=1e-6)
        np.testing.assert_allclose(ours.running_var, theirs.running_var.numpy(), rtol=1e-6)
    ours.eval()
    theirs.eval()
    x = _data((4, 5), np.float32, seed=20)[0]
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours.forward(x), expected, rtol=1e-5, atol=1e-6)


def test_bad_arguments_and_inputs_are_rejected():
    with pytest.raises(ValueError, match="positive integer num_features"):
        nn.BatchNorm1d(0)
    with pytest.raises(ValueError, match="eps > 0"):
        nn.BatchNorm1d(3, eps=0)
    with pytest.raises(ValueError, match=r"momentum in \[0, 1\]"):
        nn.BatchNorm1d(3, momentum=1.5)
    layer = nn.BatchNorm1d(3)
    with pytest.raises(ValueError, match="more than 1 row"):
        layer.forward(np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match=r"shape \(batch, 3\)"):
        layer.forward(np.ones((4, 2), np.float32))
    with pytest.raises(TypeError, match="float32 input"):
        layer.forward(np.ones((4, 3)))
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((4, 3), np.float32))
    layer.forward(np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match="grad_out of shape"):
        layer.backward(np.ones((4, 2), np.float32))
    np.testing.assert_array_equal(layer.eval().forward(np.ones((1, 3), np.float32)).shape, (1, 3))
