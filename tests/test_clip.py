"""gn.optim.clip_grad_norm: the total norm returned, gradients scaled only when
above max_norm (and never for a NaN or infinite norm), on both devices, one
launch per flat buffer, and PyTorch's result when torch is importable; and
gn.ops.scale, which scales them, against its reference."""

import numpy as np
import pytest
from conftest import DEVICES, TOLERANCES, put, refused_outputs
from gpunet.kernels import optim as O

import gpunet as gn
from gpunet import nn


def _model_with_grads(device):
    model = nn.Sequential(
        nn.Dense(3, 4, seed=1, device=device), nn.Dense(4, 2, seed=2, device=device)
    )
    model.forward(gn.to_device(np.ones((5, 3), np.float32), device))
    model.backward(gn.to_device(np.ones((5, 2), np.float32), device))
    return model


@pytest.mark.parametrize("device", DEVICES)
def test_clips_to_max_norm_and_returns_the_norm(device):
    model = _model_with_grads(device)
    before = [gn.to_numpy(p.grad).copy() for p in model.parameters()]
    norm = np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in before))
    assert gn.optim.clip_grad_norm(model.parameters(), 1.0) == pytest.approx(norm)
    after = [gn.to_numpy(p.grad) for p in model.parameters()]
    assert np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in after)) == pytest.approx(
        1.0, rel=1e-5
    )
    for a, b in zip(after, before, strict=True):
        np.testing.assert_allclose(a, b / (norm + 1e-6), rtol=1e-6)
    assert gn.optim.clip_grad_norm(model.parameters(), 10.0) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_array_equal(gn.to_numpy(model.parameters()[0].grad), after[0])


def test_matches_torch():
    torch = pytest.importorskip("torch")
    model = _model_with_grads("cpu")
    tensors = [torch.zeros(p.shape, requires_grad=True) for p in model.parameters()]
    for t, p in zip(tensors, model.parameters(), strict=True):
        t.grad = torch.from_numpy(p.grad.copy())
    expected = float(torch.nn.utils.clip_grad_norm_(tensors, 0.5))
    assert gn.optim.clip_grad_norm(model.parameters(), 0.5) == pytest.approx(expected, rel=1e-6)
    for t, p in zip(tensors, model.parameters(), strict=True):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-6)


def test_errors():
    with pytest.raises(TypeError, match="Parameter"):
        gn.optim.clip_grad_norm([np.ones(3)], 1.0)
    with pytest.raises(ValueError, match="max_norm"):
        gn.optim.clip_grad_norm(_model_with_grads("cpu").parameters(), -1.0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_nan_or_infinite_norm_leaves_the_gradients_alone(device, bad):
    model = _model_with_grads(device)
    grad = model.parameters()[0].grad
    values = gn.to_numpy(grad).copy()
    values[1, 2] = bad
    if device == "cpu":
        grad[...] = values
    else:
        grad.copy_to_device(values)
    before = [gn.to_numpy(p.grad).tobytes() for p in model.parameters()]
    norm = gn.optim.clip_grad_norm(model.parameters(), 1e-3)
    assert np.isnan(norm) if np.isnan(bad) else norm == np.inf
    assert [gn.to_numpy(p.grad).tobytes() for p in model.parameters()] == before


def test_a_cleared_gradient_counts_as_zero():
    model = _model_with_grads("cpu")
    weight, *others = model.parameters()
    assert np.abs(weight.grad).max() > 0
    norm = np.sqrt(sum(float(np.sum(p.grad.astype(np.float64) ** 2)) for p in others))
    weight.zero_grad()  # lazily: its old values stay in the flat buffer
    assert gn.optim.clip_grad_norm(model.parameters(), 1e-3) == pytest.approx(norm)
    np.testing.assert_array_equal(weight.grad, 0)


@pytest.mark.cuda
def test_clipping_is_one_launch_per_flat_buffer(launches):
    model = _model_with_grads("cuda")
    params = model.parameters()
    expected = [gn.to_numpy(p.grad).copy() for p in params]
    launches.clear()
    gn.optim.clip_grad_norm(params, 1e-3)
    assert launches == ["_scale_kernel"]
    alone = _model_with_grads("cuda").parameters()
    launches.clear()
    gn.optim.clip_grad_norm(alone[1:], 1e-3)  # not the whole buffer: one per parameter
    assert launches == ["_scale_kernel"] * 3
    norm = np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in expected))
    for p, g in zip(params, expected, strict=True):
        np.testing.assert_allclose(gn.to_numpy(p.grad), g * (1e-3 / (norm + 1e-6)), rtol=1e-6)


def test_clipping_part_of_a_buffer_scales_only_that_part():
    params = _model_with_grads("cpu").parameters()
    before = [p.grad.copy() for p in params]
    norm = np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in before[1:3]))
    assert gn.optim.clip_grad_norm(params[1:3], 1e-3) == pytest.approx(norm)
    np.testing.assert_array_equal(params[0].grad, before[0])
    np.testing.assert_array_equal(params[3].grad, before[3])
    for p, g in zip(params[1:3], before[1:3], strict=True):
        np.testing.assert_allclose(p.grad, g * (1e-3 / (norm + 1e-6)), rtol=1e-6)


# --- gn.ops.scale ---------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(0,), (1,), (255,), (256,), (257,), (1025,), (3, 33)])
def test_scale_matches_the_reference(shape, dtype, device):
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype) * 100
    result = gn.ops.scale(put(x, device), 0.37)
    actual = gn.to_numpy(result)
    expected = O.scale_ref(x, 0.37)
    assert actual.shape == shape and actual.dtype == dtype
    rtol, atol = TOLERANCES[dtype]
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)
    assert actual.tobytes() == (x * dtype(0.37)).tobytes()  # in x's dtype


@pytest.mark.parametrize("device", DEVICES)
def test_scale_in_place_and_into_out(device):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    a = put(x.copy(), device)
    assert gn.ops.scale(a, -2, out=a) is a
    np.testing.assert_array_equal(gn.to_numpy(a), -2 * x)
    out = put(np.zeros((3, 4), np.float32), device)
    assert gn.ops.scale(put(x, device), 0.5, out=out) is out
    np.testing.assert_array_equal(gn.to_numpy(out), 0.5 * x)


def test_scale_takes_non_contiguous_input_on_the_cpu():
    x = np.arange(20, dtype=np.float64).reshape(4, 5)
    np.testing.assert_array_equal(gn.ops.scale(x.T, 3.0), 3 * x.T)


def test_scale_refuses_bad_arguments_before_writing():
    x = np.ones((2, 3), np.float32)
    for out in refused_outputs():
        with pytest.raises(ValueError, match="out"):
            gn.ops.scale(x, 2.0, out=out)
        np.testing.assert_array_equal(out, 0)
    out = np.zeros((2, 3), np.float32)
    cases = [
        (lambda: gn.ops.scale(x, np.nan, out=out), ValueError, "finite factor"),
        (lambda: gn.ops.scale(x, np.inf, out=out), ValueError, "finite factor"),
        (lambda: gn.ops.scale(x, True, out=out), TypeError, "number factor"),
        (lambda: gn.ops.scale(x, "2", out=out), TypeError, "number factor"),
        (lambda: gn.ops.scale(x.astype(np.int32), 2.0), TypeError, "float32 or float64"),
        (lambda: gn.ops.scale(x.tolist(), 2.0), TypeError, "numpy array or a CUDA array"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
        np.testing.assert_array_equal(out, 0)


@pytest.mark.cuda
def test_scale_refuses_arrays_on_two_devices():
    out = put(np.zeros((2, 3), np.float32), "cuda")
    with pytest.raises(gn.DeviceError, match="x on cpu, out on cuda"):
        gn.ops.scale(np.ones((2, 3), np.float32), 2.0, out=out)
    np.testing.assert_array_equal(gn.to_numpy(out), 0)
