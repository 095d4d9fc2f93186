"""Optimizer kernels against PyTorch's update rules (the references), over
several steps, on the CPU and CUDA."""

import numpy as np
import pytest
from gpunet.kernels import optim as O

import gpunet as gn
from gpunet.parameter import pack as pack_parameters

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


# --- optimizer and schedule classes ---------------------------------------------------


def _params(device="cpu", dtype=np.float32, seed=2):
    """Two parameters with gradients set as a backward pass would leave them."""
    rng = np.random.default_rng(seed)
    params = []
    for shape in [(3, 4), (4,)]:
        p = gn.nn.Parameter(gn.to_device(rng.standard_normal(shape).astype(dtype), device))
        p.grad  # materialise zeros, then write a gradient  # noqa: B018
        params.append(p)
    return params


def _set_grads(params, grads):
    for p, g in zip(params, grads, strict=True):
        p.zero_grad()
        g_dev = gn.to_device(g, p.device)
        if isinstance(p.grad, np.ndarray):
            p.grad[...] = g
        else:
            p.grad.copy_to_device(g_dev)


@pytest.mark.parametrize("device", BACKENDS)
@pytest.mark.parametrize(
    "make, reference",
    [
        (
            lambda ps: gn.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
            "sgd",
        ),
        (lambda ps: gn.optim.Adam(ps, lr=0.01, weight_decay=0.1), "adam"),
        (lambda ps: gn.optim.AdamW(ps, lr=0.01), "adamw"),
    ],
)
def test_optimizer_classes_follow_their_rules(make, reference, device):
    params = _params(device)
    start = [gn.to_numpy(p.data).astype(np.float64) for p in params]
    opt = make(params)
    rng = np.random.default_rng(5)
    refs = [(s, np.zeros(s.size), np.zeros(s.size)) for s in start]
    for step in range(1, 4):
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
        _set_grads(params, grads)
        opt.step()
        new = []
        for (p, m, v), g in zip(refs, grads, strict=True):
            flat = g.ravel()
            if reference == "sgd":
                p2, m2 = O.sgd_ref(
                    p.ravel(), flat, m, 0.1, 0.9, 0.01, nesterov=True, first=step == 1
                )
                new.append((p2.reshape(p.shape), m2, v))
            else:
                decoupled = reference == "adamw"
                wd = 0.01 if decoupled else 0.1
                p2, m2, v2 = O.adam_ref(
                    p.ravel(), flat, m, v, step, 0.01, (0.9, 0.999), 1e-8, wd, decoupled
                )
                new.append((p2.reshape(p.shape), m2, v2))
        refs = new
    for p, (ref, _, _) in zip(params, refs, strict=True):
        np.testing.assert_allclose(gn.to_numpy(p.data), ref, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: gn.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
        lambda ps: gn.optim.Adam(ps, lr=0.01, weight_decay=0.1),
        lambda ps: gn.optim.AdamW(ps, lr=0.01),
    ],
    ids=["sgd", "adam", "adamw"],
)
def test_cpu_steps_check_each_buffer_once_per_settings_and_match_checked_steps(make, monkeypatch):
    # Once the checked op has checked a buffer's arrays with the segments of
    # one set of group settings, later steps run its kernel alone (here the
    # learning rate alternates between two values: two plans, each checked
    # once per buffer), with the results of steps that are all checked.
    checked = []
    for name in ("sgd", "adam"):
        op = getattr(gn.ops, name)
        monkeypatch.setattr(gn.ops, name, lambda *a, op=op, **k: (checked.append(1), op(*a, **k)))
    results = []
    for always_checked in (False, True):
        checked.clear()
        params = _params()
        opt = make(params)
        rng = np.random.default_rng(5)
        for step in range(6):
            _set_grads(params, [rng.standard_normal(p.shape).astype(np.float32) for p in params])
            opt.lr = 0.01 if step % 2 else 0.02
            if always_checked:
                opt._checked.clear()
            opt.step()
        results.append([p.data.copy() for p in params])
        # SGD's first step, which starts the momentum buffers, is a setting of its own.
        settings = 3 if isinstance(opt, gn.optim.SGD) else 2
        assert len(checked) == len(opt.state) * (6 if always_checked else settings)
    for fast, slow in zip(*results, strict=True):
        np.testing.assert_array_equal(fast, slow)


def test_adam_eps_is_checked_at_every_step():
    params = _params()
    opt = gn.optim.Adam(params, lr=0.01)
    for _ in range(2):
        opt.step()
    before = [p.data.copy() for p in params]
    opt.eps = float("nan")  # as scikit-learn's rule sets eps at each step
    with pytest.raises(ValueError, match="adam: expected a finite eps >= 0, got nan"):
        opt.step()
    for p, b in zip(params, before, strict=True):
        np.testing.assert_array_equal(p.data, b)


def test_cpu_updates_flush_subnormal_numbers_to_zero_and_leave_numpy_as_it_was():
    """A moment whose gradient stopped decays into subnormal floats, which cost
    an x86 CPU some hundred cycles an operation: the CPU updates flush them
    to zero (the update they would make is far below the weight's resolution)
    and give the floating-point control back as they found it."""
    tiny = np.finfo(np.float32).tiny
    p, g = np.ones(64, np.float32), np.zeros(64, np.float32)
    m, v = np.full(64, tiny, np.float32), np.full(64, tiny, np.float32)
    gn.ops.adam(p, g, m, v, 10, lr=1e-3)
    assert (m == 0).all() and (v == 0).all()  # 0.9 * tiny and 0.999 * tiny are subnormal
    np.testing.assert_array_equal(p, 1)
    buf = np.full(64, tiny, np.float32)
    gn.ops.sgd(p, g, buf, lr=0.1, momentum=0.5, first=False)
    assert (buf == 0).all()
    np.testing.assert_array_equal(p, 1)
    half = np.float32(tiny) * np.float32(0.5)  # numpy's own arithmetic still keeps subnormals
    assert 0 < half < tiny


def test_zero_grad_clears_every_gradient():
    params = _params()
    _set_grads(params, [np.ones(p.shape, np.float32) for p in params])
    gn.optim.SGD(params, lr=0.1).zero_grad()
    for p in params:
        np.testing.assert_array_equal(p.grad, np.zeros(p.shape, np.float32))


def test_a_zeroed_gradient_leaves_sgd_parameters_alone():
    params = _params()
    before = [p.data.copy() for p in params]
    opt = gn.optim.SGD(params, lr=0.1)
    opt.zero_grad()
    opt.step()
    for p, b in zip(params, before, strict=True):
        np.testing.assert_array_equal(p.data, b)


def test_a_step_follows_group_settings_and_packing_changed_after_the_first():
    """The update plan a step keeps is made anew when a group's settings or
    the parameters' buffers change: each step uses what holds at its time."""
    params = _params()
    opt = gn.optim.SGD([{"params": params[:1]}, {"params": params[1:]}], lr=0.1, momentum=0.5)
    for lr, pack in ((0.1, False), (0.3, False), (0.3, True), (0.05, False)):
        _set_grads(params, [np.ones(p.shape, np.float32) for p in params])
        before = [p.data.copy() for p in params]
        bufs = [opt.state_dict()["state"].get(i, {}).get("buf") for i in range(2)]
        opt.param_groups[1]["lr"] = lr
        if pack:  # into one pair of buffers, from one per parameter
            pack_parameters(params)
        opt.step()
        for i, (p, b, buf) in enumerate(zip(params, before, bufs, strict=True)):
            new_buf = 1.0 if buf is None else 0.5 * buf + 1.0
            np.testing.assert_allclose(p.data, b - (0.1 if i == 0 else lr) * new_buf, rtol=1e-6)


def test_adamw_defaults_match_pytorch():
    opt = gn.optim.AdamW(_params())
    assert (opt.lr, opt.betas, opt.eps, opt.weight_decay) == (1e-3, (0.9, 0.999), 1e-8, 1e-2)
    adam = gn.optim.Adam(_params())
    assert (adam.lr, adam.weight_decay) == (1e-3, 0.0)
    assert "Adam(2 parameters, lr=0.001" in repr(adam)


def test_schedules_set_the_learning_rate_each_epoch():
    opt = gn.optim.SGD(_params(), lr=1.0)
    step = gn.optim.StepLR(opt, step_size=2, gamma=0.5)
    assert [step.step() for _ in range(5)] == [1.0, 0.5, 0.5, 0.25, 0.25]
    assert opt.lr == step.get_last_lr() == 0.25
    opt = gn.optim.SGD(_params(), lr=1.0)
    cosine = gn.optim.CosineAnnealingLR(opt, T_max=4, eta_min=0.1)
    lrs = [cosine.step() for _ in range(5)]
    half = 0.1 + 0.9 * (1 + np.cos(np.pi / 4)) / 2
    np.testing.assert_allclose(lrs, [half, 0.55, 0.1 + 0.9 - (half - 0.1), 0.1, 0.1])


def test_bad_optimizer_arguments_are_rejected():
    with pytest.raises(ValueError, match="empty parameter list"):
        gn.optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="gn.nn.Parameter"):
        gn.optim.SGD([np.zeros(3)], lr=0.1)
    params = _params()
    with pytest.raises(ValueError, match="same parameter twice"):
        gn.optim.SGD([params[0], params[0]], lr=0.1)
    with pytest.raises(ValueError, match="lr to be a number >= 0"):
        gn.optim.SGD(params, lr=-1)
    with pytest.raises(ValueError, match="Nesterov momentum needs momentum > 0"):
        gn.optim.SGD(params, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        gn.optim.Adam(params, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="step_size"):
        gn.optim.StepLR(gn.optim.SGD(params, lr=0.1), step_size=0)


@pytest.mark.cuda
def test_moving_a_parameter_after_the_first_step_is_an_error():
    params = _params("cuda")
    opt = gn.optim.SGD(params, lr=0.1, momentum=0.9)
    opt.step()
    params[0].to("cpu")
    before = gn.to_numpy(params[1].data).copy()
    with pytest.raises(ValueError, match="moved from cuda:0 to cpu"):
        opt.step()
    np.testing.assert_array_equal(gn.to_numpy(params[1].data), before)  # nothing half-updated


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(0,), (5,), (3, 700)])
def test_zero_fills_with_zeros(backend, shape):
    (a,) = device_arrays(backend, np.full(shape, 7.0, np.float32))
    (O.zero_cpu if backend == "cpu" else O.zero_cuda)(a)
    np.testing.assert_array_equal(host(backend, a), np.zeros(shape, np.float32))


# --- gn.ops.sgd and gn.ops.adam over segments -----------------------------------------

SEGMENTS = (
    np.array([[0, 100], [100, 101], [150, 257]]),
    np.array([[0.1, 0.0], [0.5, 0.1], [0.02, 1.0]]),
)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_op_updates_each_segment_with_its_settings(dtype, backend):
    p0, grads = steps(3, 257, dtype, seed=3)
    p, buf = device_arrays(backend, p0, np.zeros_like(p0))
    ref_p, ref_buf = p0.astype(np.float64), np.zeros(p0.size)
    bounds, settings = SEGMENTS
    for i, g in enumerate(grads):
        (dg,) = device_arrays(backend, g)
        assert gn.ops.sgd(p, dg, buf, momentum=0.9, first=i == 0, segments=SEGMENTS) is p
        for (start, stop), (lr, wd) in zip(bounds, settings, strict=True):
            part = slice(start, stop)
            ref_p[part], ref_buf[part] = O.sgd_ref(
                ref_p[part], g[part], ref_buf[part], lr, 0.9, wd, first=i == 0
            )
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(host(backend, p), ref_p, rtol=tol, atol=tol)
    np.testing.assert_array_equal(host(backend, p)[101:150], p0[101:150])  # outside: untouched


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_op_updates_each_segment_with_its_settings(decoupled, backend):
    p0, grads = steps(3, 257, np.float64, seed=4)
    p, m, v = device_arrays(backend, p0, np.zeros_like(p0), np.zeros_like(p0))
    ref = [p0.copy(), np.zeros(p0.size), np.zeros(p0.size)]
    bounds, settings = SEGMENTS
    for step, g in enumerate(grads, start=1):
        (dg,) = device_arrays(backend, g)
        gn.ops.adam(p, dg, m, v, step, decoupled=decoupled, segments=SEGMENTS)
        for (start, stop), (lr, wd) in zip(bounds, settings, strict=True):
            part = slice(start, stop)
            new = O.adam_ref(
                ref[0][part], g[part], ref[1][part], ref[2][part], step, lr,
                weight_decay=wd, decoupled=decoupled,
            )  # fmt: skip
            for a, b in zip(ref, new, strict=True):
                a[part] = b
    np.testing.assert_allclose(host(backend, p), ref[0], rtol=1e-13, atol=1e-14)
    np.testing.assert_array_equal(host(backend, p)[101:150], p0[101:150])


def test_update_ops_refuse_bad_arguments_before_writing():
    p, g, buf = np.ones(8, np.float32), np.ones(8, np.float32), np.zeros(8, np.float32)
    cases = [
        (lambda: gn.ops.sgd(p, g, buf), TypeError, "expected a learning rate"),
        (lambda: gn.ops.sgd(p, g, buf, lr=-1.0), ValueError, "lr >= 0"),
        (lambda: gn.ops.sgd(p, g, np.zeros(7, np.float32), 0.1), ValueError, "buf 1-D of shape"),
        (lambda: gn.ops.sgd(p, g.astype(np.float64), buf, 0.1), TypeError, "grad of dtype"),
        (lambda: gn.ops.sgd(p.reshape(2, 4), g, buf, 0.1), ValueError, "1-D"),
        (lambda: gn.ops.sgd(p[::2], g[::2], buf[::2], 0.1), ValueError, "C-contiguous"),
        (lambda: gn.ops.sgd(p, g, buf, 0.1, nesterov=True), ValueError, "Nesterov"),
        (
            lambda: gn.ops.sgd(p, g, buf, 0.1, segments=([[0, 8]], [[0.1, 0]])),
            TypeError,
            "pass lr=None",
        ),
        (
            lambda: gn.ops.sgd(p, g, buf, segments=([[0, 9]], [[0.1, 0]])),
            ValueError,
            r"within \[0, 8\]",
        ),
        (
            lambda: gn.ops.sgd(p, g, buf, segments=([[0, 4], [3, 8]], [[0.1, 0], [0.1, 0]])),
            ValueError,
            "non-overlapping",
        ),
        (
            lambda: gn.ops.sgd(p, g, buf, segments=([[0, 8]], [[np.nan, 0]])),
            ValueError,
            "finite settings",
        ),
        (lambda: gn.ops.adam(p, g, buf, buf.copy(), 0, 0.1), ValueError, "step >= 1"),
        (lambda: gn.ops.adam(p, g, buf, buf.copy(), 1, 0.1, betas=(0.9, 1)), ValueError, "betas"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
        np.testing.assert_array_equal(p, 1.0)
        np.testing.assert_array_equal(buf, 0.0)
