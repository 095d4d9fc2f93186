"""Loss kernels: value and gradient against the float64 references on the CPU
and CUDA, stability for large logits, and float64 finite-difference gradients."""

import numpy as np
import pytest
from gpunet.kernels import losses as L

BACKENDS = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def grid(cpu_cases, cuda_cases):
    """(backend, dtype, shape) cases: all on the CPU, a few on CUDA (the simulator is slow)."""
    return [("cpu", *c) for c in cpu_cases] + [
        pytest.param("cuda", *c, marks=pytest.mark.cuda) for c in cuda_cases
    ]


DTYPES = [np.float32, np.float64]
CE_SHAPES = [(1, 1), (7, 10), (3, 33), (2, 129)]
CE_CASES = grid(
    [(d, s) for d in DTYPES for s in CE_SHAPES],
    [(np.float32, (1, 1)), (np.float32, (3, 33)), (np.float64, (2, 129))],
)
ELEMENTWISE_SHAPES = [(1,), (5, 9), (300,), (4, 3, 2)]
ELEMENTWISE_CASES = grid(
    [(d, s) for d in DTYPES for s in ELEMENTWISE_SHAPES],
    [(np.float32, (5, 9)), (np.float64, (300,))],
)
TOL = {np.float32: 2e-6, np.float64: 1e-13}


def run(backend, name, pred, target):
    """(loss, grad) from the ``backend`` kernel of loss ``name``."""
    if backend == "cpu":
        grad, loss = np.empty_like(pred), np.empty(1, pred.dtype)
        getattr(L, f"{name}_cpu")(pred, target, grad, loss)
        return float(loss[0]), grad
    from numba import cuda

    grad, loss = cuda.device_array(pred.shape, pred.dtype), cuda.device_array(1, pred.dtype)
    getattr(L, f"{name}_cuda")(cuda.to_device(pred), cuda.to_device(target), grad, loss)
    return float(loss.copy_to_host()[0]), grad.copy_to_host()


def cases(dtype, shape, seed=0, scale=4.0):
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal(shape) * scale).astype(dtype)
    labels = rng.integers(0, shape[1], shape[0]).astype(np.int64)
    soft = rng.random(shape).astype(dtype)
    soft /= soft.sum(axis=1, keepdims=True)
    onehot = np.eye(shape[1], dtype=dtype)[labels]
    return z, {"labels": labels, "soft": soft, "onehot": onehot}


def check(loss, grad, ref_loss, ref_grad, dtype):
    tol = TOL[dtype]
    assert grad.dtype == dtype and grad.shape == ref_grad.shape
    assert loss == pytest.approx(ref_loss, rel=10 * tol, abs=10 * tol)
    np.testing.assert_allclose(grad, ref_grad, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend, dtype, shape", CE_CASES)
@pytest.mark.parametrize("kind", ["labels", "soft", "onehot"])
def test_softmax_cross_entropy(kind, backend, dtype, shape):
    z, targets = cases(dtype, shape)
    check(
        *run(backend, "softmax_cross_entropy", z, targets[kind]),
        *L.softmax_cross_entropy_ref(z, targets[kind]),
        dtype,
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_labels_and_onehot_agree_and_bad_labels_give_nan(backend):
    z, targets = cases(np.float64, (4, 5))
    loss_l, grad_l = run(backend, "softmax_cross_entropy", z, targets["labels"])
    loss_o, grad_o = run(backend, "softmax_cross_entropy", z, targets["onehot"])
    assert loss_l == pytest.approx(loss_o, rel=1e-14)
    np.testing.assert_allclose(grad_l, grad_o, atol=1e-15)
    bad = targets["labels"].copy()
    bad[2] = 5
    assert np.isnan(run(backend, "softmax_cross_entropy", z, bad)[0])


@pytest.mark.parametrize("backend, dtype", grid([(np.float32,), (np.float64,)], [(np.float32,)]))
def test_cross_entropy_is_stable_for_huge_logits(backend, dtype):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]], dtype)
    labels = np.array([1, 2], np.int64)
    loss, grad = run(backend, "softmax_cross_entropy", z, labels)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    assert loss == pytest.approx(1e4, rel=1e-6)  # row 0 pays 2e4, row 1 nothing


@pytest.mark.parametrize("backend, dtype, shape", ELEMENTWISE_CASES)
@pytest.mark.parametrize("name", ["mse", "binary_cross_entropy", "binary_cross_entropy_probs"])
def test_elementwise_losses(name, backend, dtype, shape):
    rng = np.random.default_rng(1)
    pred = (rng.standard_normal(shape) * 3).astype(dtype)
    if name == "binary_cross_entropy_probs":
        pred = rng.uniform(0.001, 0.999, shape).astype(dtype)
    target = rng.random(shape).astype(dtype)
    check(*run(backend, name, pred, target), *getattr(L, f"{name}_ref")(pred, target), dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_binary_cross_entropy_is_stable_for_huge_logits(backend):
    z = np.array([1e4, -1e4, 50.0, -50.0], np.float32)
    t = np.array([1.0, 0.0, 0.0, 1.0], np.float32)
    loss, grad = run(backend, "binary_cross_entropy", z, t)
    assert loss == pytest.approx(25.0, rel=1e-6) and np.all(np.isfinite(grad))


@pytest.mark.parametrize("backend", BACKENDS)
def test_binary_cross_entropy_probs_clamps_like_torch(backend):
    p = np.array([0.0, 1.0, 0.0, 1.0], np.float32)
    t = np.array([0.0, 1.0, 1.0, 0.0], np.float32)
    loss, grad = run(backend, "binary_cross_entropy_probs", p, t)
    assert loss == pytest.approx(50.0)  # two certain hits cost 0, two misses 100 each
    assert np.all(np.isfinite(grad)) and grad[2] < 0 < grad[3]


@pytest.mark.parametrize(
    "name", ["softmax_cross_entropy", "mse", "binary_cross_entropy", "binary_cross_entropy_probs"]
)
def test_gradient_matches_finite_differences(name):
    rng = np.random.default_rng(3)
    pred = rng.standard_normal((3, 4))
    if name == "binary_cross_entropy_probs":
        pred = rng.uniform(0.05, 0.95, (3, 4))
    target = rng.random((3, 4))
    if name == "softmax_cross_entropy":
        target /= target.sum(axis=1, keepdims=True)
    _, grad = run("cpu", name, pred, target)
    h = 1e-6
    numeric = np.empty_like(pred)
    for idx in np.ndindex(pred.shape):
        up, down = pred.copy(), pred.copy()
        up[idx] += h
        down[idx] -= h
        numeric[idx] = (run("cpu", name, up, target)[0] - run("cpu", name, down, target)[0]) / (
            2 * h
        )
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_input_gives_nan_loss(backend):
    assert np.isnan(run(backend, "mse", np.zeros(0), np.zeros(0))[0])
    assert np.isnan(
        run(backend, "softmax_cross_entropy", np.zeros((0, 3)), np.zeros(0, np.int64))[0]
    )
    assert np.isnan(
        run(backend, "softmax_cross_entropy", np.zeros((2, 0)), np.zeros(2, np.int64))[0]
    )
