"""gn.optim.clip_grad_norm: the total norm returned, gradients scaled only when
above max_norm, on both devices, and PyTorch's result when torch is importable."""

import numpy as np
import pytest
from conftest import DEVICES

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
