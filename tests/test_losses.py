"""Loss kernels: value and gradient against the float64 references on the CPU
and CUDA, stability for large logits, and float64 finite-difference gradients."""

import numpy as np
import pytest
from gpunet.kernels import losses as L
from test_softmax import assert_within_ulps

import gpunet as gn

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


#: Logits far larger than log(sum(exp(z - max))), with class labels and soft
#: targets: each row's loss fits the dtype (the CUDA kernels add a row's
#: terms in it), while differences z - max that overflow it meet a target of 0.
HUGE_LOGITS = {
    np.float32: (
        [[1e4, 1e4, 1e4 - 1], [1e8, -1e8, 1e8], [3e38, 1e38, -3e38], [-3e38, -3e38, -2e38]],
        [2, 0, 1, 0],
        [[0.25, 0.25, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0], [0.0, 0.5, 0.5]],
    ),
    np.float64: (
        [[1e300, 1e300, 1e300 - 1e284], [1.7e308, -1.7e308, 1.7e308], [-1e300, -1e300, 0.0]],
        [2, 0, 0],
        [[0.25, 0.25, 0.5], [0.5, 0.0, 0.5], [0.5, 0.25, 0.25]],
    ),
}


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # simulator's numpy
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["labels", "soft"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_keeps_log_sum_next_to_huge_logits(dtype, kind, backend):
    """log(s) - (z - max) per class, not (max + log(s)) - z, which rounds
    log(s) to the spacing of max, and the softmax as exp(z - max) / s, not
    exp(z - (max + log(s))): loss and gradient within a few ulp of the
    float64 reference. A zero target takes nothing from its class, even
    where z - max overflows the dtype."""
    rows, labels, soft = HUGE_LOGITS[dtype]
    z = np.array(rows, dtype)
    target = np.array(labels, np.int64) if kind == "labels" else np.array(soft, dtype)
    ref_target = target if kind == "labels" else target.astype(np.float64)
    # Each row alone (a huge row's loss would hide a small row's error in
    # the mean), then the batch.
    for batch in [slice(r, r + 1) for r in range(len(z))] + [slice(None)]:
        loss, grad = run(backend, "softmax_cross_entropy", z[batch], target[batch])
        ref_loss, ref_grad = L.softmax_cross_entropy_ref(
            z[batch].astype(np.float64), ref_target[batch]
        )
        assert_within_ulps(np.array([loss], dtype), [ref_loss], dtype)
        assert_within_ulps(grad, ref_grad, dtype, scale=1 / len(grad))


@pytest.mark.parametrize("backend", BACKENDS)
def test_cross_entropy_soft_targets_skip_masked_classes(backend):
    """A logit of -inf with a target of 0 (a masked class) costs nothing:
    0 * -inf would make the loss NaN."""
    z = np.array([[0.5, -np.inf, 1.0], [2.0, 0.0, -np.inf]], np.float32)
    t = np.array([[0.5, 0.0, 0.5], [0.0, 1.0, 0.0]], np.float32)
    loss, grad = run(backend, "softmax_cross_entropy", z, t)
    check(loss, grad, *L.softmax_cross_entropy_ref(z, t), np.float32)
    assert np.isfinite(loss) and grad[0, 1] == grad[1, 2] == 0


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


#: Infinite logits, their targets, and the limits of loss and gradient there.
INFINITE_LOGITS = [
    (np.inf, 0.0, np.inf, 1.0),
    (-np.inf, 1.0, np.inf, -1.0),
    (np.inf, 1.0, 0.0, 0.0),
    (-np.inf, 0.0, 0.0, 0.0),
    (np.inf, 0.5, np.inf, 0.5),
    (-np.inf, 0.5, np.inf, -0.5),
]


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # simulator
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_cross_entropy_on_infinite_logits_gives_the_limits(dtype, backend):
    """max(z, 0) - z t as |z| times the target's distance from z's side:
    z = +inf with t = 0 costs +inf (max(z, 0) - z t was inf - inf * 0, NaN),
    a certain hit costs 0, and the gradient sigmoid(z) - t is its limit; a
    mean holding an infinite term is infinite. Kernels and reference agree."""
    for z, t, want_loss, want_grad in INFINITE_LOGITS:
        pred, target = np.array([z], dtype), np.array([t], dtype)
        for loss, grad in (
            run(backend, "binary_cross_entropy", pred, target),
            L.binary_cross_entropy_ref(pred, target),
        ):
            assert loss == want_loss and grad.dtype == dtype, (z, t, loss)
            assert grad[0] == want_grad, (z, t, grad)
    pred, target = np.array([np.inf, 0.3], dtype), np.array([0.0, 1.0], dtype)
    assert run(backend, "binary_cross_entropy", pred, target)[0] == np.inf


@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_cross_entropy_on_infinite_logits_matches_torch_where_it_is_defined(dtype):
    """PyTorch's BCEWithLogitsLoss: the same loss wherever it gives a number
    (NaN for z = -inf, and for a certain hit at z = +inf), the same gradient
    everywhere."""
    torch = pytest.importorskip("torch")
    z = np.array([row[0] for row in INFINITE_LOGITS] + [3.0, -2.5], dtype)
    t = np.array([row[1] for row in INFINITE_LOGITS] + [0.2, 0.9], dtype)
    zt = torch.from_numpy(z).requires_grad_(True)
    torch_loss = torch.nn.BCEWithLogitsLoss(reduction="none")(zt, torch.from_numpy(t))
    torch_loss.sum().backward()
    torch_loss = torch_loss.detach()
    for i in range(z.size):
        loss, grad = run("cpu", "binary_cross_entropy", z[i : i + 1], t[i : i + 1])
        if not torch.isnan(torch_loss[i]):
            assert loss == pytest.approx(float(torch_loss[i]), rel=TOL[dtype])
        assert grad[0] == pytest.approx(float(zt.grad[i]), rel=TOL[dtype])
    assert int(torch.isnan(torch_loss).sum()) == 4  # where the limits above define it


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


def test_cross_entropy_keeps_small_row_losses_beside_huge_logits():
    """Found by the fuzz suite: a row of small logits between rows of huge
    ones; each row's margin is taken before it joins the batch's total."""
    z = np.array([[1.37e11, 1.37e11], [-1.596, 0.0], [1.37e11, 1.37e11]], np.float32)
    labels = np.array([0, 0, 0])
    expected, _ = L.softmax_cross_entropy_ref(z, labels)
    for target in (labels, np.eye(2, dtype=np.float32)[labels]):
        loss, _ = gn.ops.softmax_cross_entropy(z, target)
        np.testing.assert_allclose(float(loss), expected, rtol=2e-7)
