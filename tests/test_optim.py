"""Optimizer kernels against PyTorch's update rules (the references), over
several steps, on the CPU and CUDA."""

import numpy as np
import pytest
from gpunet.kernels import optim as O

BACKENDS = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
SGD_SETTINGS = [
    dict(momentum=0.0, weight_decay=0.0, nesterov=False),
    dict(momentum=0.9, weight_decay=0.0, nesterov=False),
    dict(momentum=0.9, weight_decay=1e-2, nesterov=True),
]
ADAM_SETTINGS = [
    dict(weight_decay=0.0, decoupled=False),
    dict(weight_decay=0.1, decoupled=False),
    dict(weight_decay=0.1, decoupled=True),
]


def device_arrays(backend, *arrays):
    if backend == "cpu":
        return [a.copy() for a in arrays]
    from numba import cuda

    return [cuda.to_device(a) for a in arrays]


def host(backend, a):
    return a if backend == "cpu" else a.copy_to_host()


def steps(n, size, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(size).astype(dtype), [
        rng.standard_normal(size).astype(dtype) for _ in range(n)
    ]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("settings", SGD_SETTINGS)
def test_sgd_follows_pytorch_rule(settings, dtype, backend):
    p0, grads = steps(4, 257, dtype)
    p, buf = device_arrays(backend, p0, np.zeros_like(p0))
    ref_p, ref_buf = p0.astype(np.float64), np.zeros(p0.size)
    for i, g in enumerate(grads):
        (dg,) = device_arrays(backend, g)
        kernel = O.sgd_cpu if backend == "cpu" else O.sgd_cuda
        kernel(p, dg, buf, 0.1, first=i == 0, **settings)
        ref_p, ref_buf = O.sgd_ref(ref_p, g, ref_buf, 0.1, first=i == 0, **settings)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(host(backend, p), ref_p, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("settings", ADAM_SETTINGS)
def test_adam_follows_pytorch_rule(settings, dtype, backend):
    p0, grads = steps(4, 257, dtype, seed=1)
    p, m, v = device_arrays(backend, p0, np.zeros_like(p0), np.zeros_like(p0))
    ref = (p0.astype(np.float64), np.zeros(p0.size), np.zeros(p0.size))
    for step, g in enumerate(grads, start=1):
        (dg,) = device_arrays(backend, g)
        kernel = O.adam_cpu if backend == "cpu" else O.adam_cuda
        kernel(p, dg, m, v, step, 1e-2, **settings)
        ref = O.adam_ref(*ref[:1], g, *ref[1:], step, 1e-2, **settings)
    tol = 2e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(host(backend, p), ref[0], rtol=tol, atol=tol)
    np.testing.assert_allclose(host(backend, v), ref[2], rtol=tol, atol=tol)


def test_adam_first_step_moves_every_weight_by_lr():
    """With bias correction, Adam's first step is lr * sign(g) (up to eps)."""
    p = np.zeros(5)
    g = np.array([3.0, -2.0, 0.5, -1e-3, 7.0])
    O.adam_cpu(p, g, np.zeros(5), np.zeros(5), 1, 0.01)
    np.testing.assert_allclose(p, -0.01 * np.sign(g), rtol=1e-4)


def test_large_updates_use_the_parallel_kernel():
    p0, (g,) = steps(1, O.PARALLEL_THRESHOLD + 3, np.float32)
    p, buf = p0.copy(), np.zeros_like(p0)
    O.sgd_cpu(p, g, buf, 0.5, momentum=0.9)
    np.testing.assert_allclose(
        p, O.sgd_ref(p0, g, np.zeros_like(p0), 0.5, momentum=0.9)[0], rtol=1e-6
    )
