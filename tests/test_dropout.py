"""Dropout: the kernels against the numpy reference (CPU and CUDA), the same mask
on both for one seed, its statistics, p = 0 and p = 1, the layer's modes,
gradients and seeding, and errors."""

import numpy as np
import pytest
from conftest import DEVICES, put
from gpunet.kernels import dropout as kernels

import gpunet as gn
from gpunet import nn

SIZES_CPU = [0, 1, 7, 8, 9, 33, 1000]
SIZES_CUDA = [1, 9, 33]


def host(x):
    return gn.to_numpy(x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", SIZES_CPU)
@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_cpu_kernel_matches_the_reference(dtype, n, p):
    x = np.random.default_rng(n).standard_normal(n).astype(dtype)
    out = kernels.dropout_cpu(x, np.empty_like(x), 5, 12, p)
    expected = kernels.dropout_ref(x, 5, 12, p)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, expected)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", SIZES_CUDA)
def test_cuda_kernel_gives_the_cpu_mask(dtype, n):
    x = np.random.default_rng(n).standard_normal(n).astype(dtype)
    out = gn.ops.dropout(put(x, "cuda"), 0.4, 9, 8)
    np.testing.assert_array_equal(host(out), kernels.dropout_cpu(x, np.empty_like(x), 9, 8, 0.4))
    np.testing.assert_array_equal(host(out), kernels.dropout_ref(x, 9, 8, 0.4))


def test_mask_statistics():
    x = np.ones(200_000, np.float32)
    for p in (0.1, 0.5, 0.9):
        y = gn.ops.dropout(x, p, 3, 0)
        dropped = np.mean(y == 0)
        assert dropped == pytest.approx(p, abs=0.005)
        assert y.mean() == pytest.approx(1.0, abs=0.02)  # inverted scaling keeps the mean
        assert np.all((y == 0) | (y == np.float32(1 / (1 - p))))


def test_masks_differ_by_seed_and_offset():
    x = np.ones(64, np.float32)
    a = gn.ops.dropout(x, 0.5, 1, 0)
    assert not np.array_equal(a, gn.ops.dropout(x, 0.5, 2, 0))
    assert not np.array_equal(a, gn.ops.dropout(x, 0.5, 1, 32))
    np.testing.assert_array_equal(a, gn.ops.dropout(x, 0.5, 1, 0))


def test_layer_training_eval_and_gradient():
    layer = nn.Dropout(0.25, seed=4)
    x = np.random.default_rng(0).standard_normal((6, 5))
    y = layer.forward(x).copy()
    g = np.random.default_rng(1).standard_normal((6, 5))
    dx = layer.backward(g)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / 0.75)
    np.testing.assert_allclose(dx, np.where(kept, g / 0.75, 0.0))  # the same mask, drawn again
    layer.eval()
    assert layer.forward(x) is x and layer.backward(g) is g
    assert layer.train().forward(x) is not x


def test_p_zero_is_identity_and_p_one_zeroes_values_and_gradients():
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    zero = nn.Dropout(0.0)
    assert zero.forward(x) is x
    one = nn.Dropout(1.0, seed=1)
    np.testing.assert_array_equal(one.forward(x), np.zeros_like(x))
    np.testing.assert_array_equal(one.backward(np.ones_like(x)), np.zeros_like(x))


def test_layer_draws_new_masks_and_follows_seeds():
    x = np.ones((4, 16), np.float32)
    layer = nn.Dropout(0.5, seed=7)
    first, second = layer.forward(x).copy(), layer.forward(x).copy()
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(nn.Dropout(0.5, seed=7).forward(x), first)
    gn.manual_seed(3)
    a = nn.Dropout(0.5).forward(x).copy()
    gn.manual_seed(3)
    np.testing.assert_array_equal(nn.Dropout(0.5).forward(x), a)


@pytest.mark.parametrize("device", DEVICES)
def test_one_seed_gives_one_mask_on_every_device(device):
    x = np.random.default_rng(2).standard_normal((3, 11)).astype(np.float32)
    layer = nn.Dropout(0.5, seed=11)
    y = host(layer.forward(put(x, device)))
    dx = host(layer.backward(put(np.ones_like(x), device)))
    np.testing.assert_array_equal(y, nn.Dropout(0.5, seed=11).forward(x))
    np.testing.assert_array_equal(dx != 0, y != 0)


def test_bad_arguments_are_rejected():
    for p in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"p in \[0, 1\]"):
            nn.Dropout(p)
    with pytest.raises(TypeError, match="number p"):
        nn.Dropout("0.5")
    with pytest.raises(TypeError, match="float32 or float64"):
        nn.Dropout(0.5).forward(np.ones((2, 2), np.int32))
    with pytest.raises(RuntimeError, match="before forward"):
        nn.Dropout(0.5).backward(np.ones((2, 2)))
    layer = nn.Dropout(0.5)
    layer.forward(np.ones((2, 2)))
    with pytest.raises(ValueError, match="grad_out of shape"):
        layer.backward(np.ones((2, 3)))
    with pytest.raises(ValueError, match="multiple of 4"):
        gn.ops.dropout(np.ones(3), 0.5, 1, 2)
    with pytest.raises(TypeError, match="int seed"):
        gn.ops.dropout(np.ones(3), 0.5, 1.5, 0)
