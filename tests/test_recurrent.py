"""Recurrent layers (RNN, LSTM, GRU, LastStep) and their kernels: each kernel
against its float64 reference on the CPU and CUDA (simulator: tiny shapes),
numerical gradients in float64, equality with torch.nn's layers, fit /
predict / save / load, clipping, and the errors."""

import numpy as np
import pytest
from conftest import DEVICES, central_differences, put
from gpunet.kernels import recurrent as R

import gpunet as gn

torch = pytest.importorskip("torch")

MODES = list(R.GATES)
#: (gn class, torch class, extra arguments) per mode.
CELLS = {
    "rnn_tanh": (gn.nn.RNN, torch.nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (gn.nn.RNN, torch.nn.RNN, {"nonlinearity": "relu"}),
    "lstm": (gn.nn.LSTM, torch.nn.LSTM, {}),
    "gru": (gn.nn.GRU, torch.nn.GRU, {}),
}
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}


def _host(a):
    return gn.to_numpy(a)


def _sequence_case(mode, H, dtype, seed=0, T=3, B=2, I=3):  # noqa: E741
    rng = np.random.default_rng(seed)
    G = R.GATES[mode]

    def r(*shape, scale=0.5):
        return (rng.standard_normal(shape) * scale).astype(dtype)

    return dict(
        x=r(T * B, I), w_ih=r(G * H, I), b_ih=r(G * H), w_hh=r(G * H, H), b_hh=r(G * H),
        h0=r(B, H), c0=r(B, H), grad=r(T, B, H + 2), dh_n=r(B, H), dc_n=r(B, H),
    )  # fmt: skip


def _run_kernels(mode, case, device, reverse):
    """The four ops run on ``device`` (host results) and their references."""
    c = {k: put(v, device) for k, v in case.items()}
    kind = "cpu" if device == "cpu" else "cuda"
    dtype = case["x"].dtype
    T, B, _ = case["grad"].shape
    H, G, S = case["w_hh"].shape[1], R.GATES[mode], R.SAVED[mode]

    def new(*shape):
        return put(np.full(shape, np.nan, dtype), device)

    kernels = {op: gn.dispatch.kernel_for(op, kind) for op in R.KERNELS}
    xw = new(T * B, G * H)
    kernels["recurrent_input"](c["x"], c["w_ih"], c["b_ih"], xw)
    hs, cs, gates, out = new(T + 1, B, H), new(T + 1, B, H), new(T, B, S * H), new(T, B, H + 2)
    kernels["recurrent_forward"](
        mode, xw.reshape(T, B, G * H), c["w_hh"], c["b_hh"], c["h0"], c["c0"], hs, cs, gates,
        out, 1, reverse,
    )  # fmt: skip
    dgx = new(T, B, G * H)
    dgh = new(T, B, G * H) if mode == "gru" else dgx
    dh0, dc0 = new(B, H), new(B, H)
    kernels["recurrent_backward"](
        mode, c["grad"], 1, c["dh_n"], c["dc_n"], c["w_hh"], hs, cs, gates, dgx, dgh, dh0, dc0,
        reverse,
    )  # fmt: skip
    hprev = (hs[1:] if reverse else hs[:T]).reshape(T * B, H)
    grads = [new(*s) for s in ((G * H, 3), (G * H,), (G * H, H), (G * H,), (T * B, 3))]
    kernels["recurrent_grads"](
        c["x"], hprev, dgx.reshape(T * B, G * H), dgh.reshape(T * B, G * H), c["w_ih"], *grads
    )
    got = [xw, hs, gates, _host(out)[:, :, 1 : H + 1], dgx, dgh, dh0, *grads]
    if mode == "lstm":
        got += [cs, dc0]

    xw_r = R.recurrent_input_ref(case["x"], case["w_ih"], case["b_ih"]).astype(np.float64)
    hs_r, cs_r, g_r = R.recurrent_forward_ref(
        mode, xw_r.reshape(T, B, G * H), case["w_hh"], case["b_hh"], case["h0"], case["c0"],
        reverse,
    )  # fmt: skip
    dgx_r, dgh_r, dh0_r, dc0_r = R.recurrent_backward_ref(
        mode, case["grad"][:, :, 1 : H + 1], case["dh_n"], case["dc_n"], case["w_hh"], hs_r,
        cs_r, g_r, reverse,
    )  # fmt: skip
    hprev_r = (hs_r[1:] if reverse else hs_r[:T]).reshape(T * B, H)
    grads_r = R.recurrent_grads_ref(
        case["x"], hprev_r, dgx_r.reshape(T * B, -1), dgh_r.reshape(T * B, -1), case["w_ih"]
    )
    out_r = hs_r[:T] if reverse else hs_r[1:]
    want = [xw_r, hs_r, g_r, out_r, dgx_r, dgh_r, dh0_r, *grads_r]
    if mode == "lstm":
        want += [cs_r, dc0_r]
    return [_host(a) for a in got], want


#: float64 for every cell; float32 for the gated ones (each cell and dtype
#: is a Numba compilation of its own, the bulk of these tests' time).
MODE_DTYPES = [(m, np.float64) for m in MODES] + [("lstm", np.float32), ("gru", np.float32)]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("mode,dtype", MODE_DTYPES)
def test_kernels_match_references_cpu(mode, reverse, dtype):
    # H = 37: the CPU kernels' loops over hidden units run whole vectors
    # (16 float32 or 8 float64 lanes with AVX-512) and a remainder.
    case = _sequence_case(mode, 37, dtype)
    for got, want in zip(*_run_kernels(mode, case, "cpu", reverse), strict=True):
        assert got.shape == want.shape and got.dtype == dtype
        np.testing.assert_allclose(got, want, **TOL[dtype])


@pytest.mark.parametrize("mode,dtype", [(m, np.float64) for m in MODES] + [("lstm", np.float32)])
def test_cpu_kernels_in_row_parts_match_one_part(mode, dtype, monkeypatch):
    # The kernels split their rows into parts, one thread each (3 here). The
    # recurrences' packed products give each row the same sums in any part:
    # the same results bit for bit. The BLAS products (input projection,
    # gradients) of a part may sum in another order: equal to rounding.
    case = _sequence_case(mode, 37, dtype, B=5)
    whole, _ = _run_kernels(mode, case, "cpu", False)
    monkeypatch.setattr(R, "row_parts", lambda rows, macs: 3 if rows == 5 else 1)  # B = 5
    for got, want in zip(_run_kernels(mode, case, "cpu", False)[0], whole, strict=True):
        np.testing.assert_array_equal(got, want)
    monkeypatch.setattr(R, "row_parts", lambda rows, macs: min(3, rows))
    for got, want in zip(_run_kernels(mode, case, "cpu", False)[0], whole, strict=True):
        np.testing.assert_allclose(got, want, **TOL[dtype])


@pytest.mark.cuda
@pytest.mark.parametrize("path", ["sequence", "step"])
@pytest.mark.parametrize("mode", MODES)
def test_kernels_match_references_cuda(mode, path, monkeypatch):
    """Both CUDA paths: one launch per sequence, and (hidden sizes above
    PERSISTENT_HIDDEN, forced here) one per step."""
    if path == "step":
        monkeypatch.setattr(R, "PERSISTENT_HIDDEN", 0)
    case = _sequence_case(mode, 3, np.float64, T=2)
    for reverse in (False, True):
        for got, want in zip(*_run_kernels(mode, case, "cuda", reverse), strict=True):
            np.testing.assert_allclose(got, want, **TOL[np.float64])


@pytest.mark.parametrize("device", DEVICES)
def test_swap_and_last_step_kernels(device):
    kind = "cpu" if device == "cpu" else "cuda"
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    swap = gn.dispatch.kernel_for("swap_batch_time", kind)
    out = put(np.zeros((3, 2, 4), np.float32), device)
    np.testing.assert_array_equal(_host(swap(put(x, device), out)), R.swap_batch_time_ref(x))
    for axis in (0, 1):
        y = put(np.zeros((x.shape[1 - axis], 4), np.float32), device)
        gn.dispatch.kernel_for("last_step", kind)(put(x, device), y, axis)
        np.testing.assert_array_equal(_host(y), R.last_step_ref(x, axis))
        dx = put(np.full(x.shape, np.nan, np.float32), device)
        gn.dispatch.kernel_for("last_step_backward", kind)(y, dx, axis)
        want = R.last_step_backward_ref(_host(y), x.shape[axis], axis)
        np.testing.assert_array_equal(_host(dx), want)


# --- layers against torch -------------------------------------------------------------


def _pair(mode, dtype="float64", device="cpu", **kwargs):
    cls, tcls, extra = CELLS[mode]
    t = tcls(3, 4, **extra, **kwargs).to(torch.float64 if dtype == "float64" else torch.float32)
    g = cls(3, 4, **extra, **kwargs, dtype=dtype, device="cpu")
    for name, p in t.named_parameters():
        getattr(g, name).data[...] = p.detach().numpy()
    assert [n for n, _ in t.named_parameters()] == [n for n, _ in g._named_parameters()]
    return g.to(device), t


def _compare_with_torch(mode, dtype, device, states, x_shape, **kwargs):
    g, t = _pair(mode, dtype, device, **kwargs)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape).astype(dtype)
    L = kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
    state_shape = (
        (L, 4) if len(x_shape) == 2 else (L, x_shape[0 if kwargs.get("batch_first") else 1], 4)
    )
    lstm = mode == "lstm"
    xt = torch.tensor(x, requires_grad=True)
    if states:
        h0 = [rng.standard_normal(state_shape).astype(dtype) for _ in range(2 if lstm else 1)]
        h0t = [torch.tensor(a, requires_grad=True) for a in h0]
        out_t, st_t = t(xt, tuple(h0t) if lstm else h0t[0])
        out, st = g.forward(
            put(x, device), tuple(put(a, device) for a in h0) if lstm else put(h0[0], device)
        )
    else:
        out_t, st_t = t(xt)
        out, st = g.forward(put(x, device))
    st_t = list(st_t) if lstm else [st_t]
    st = list(st) if lstm else [st]
    go = rng.standard_normal(tuple(out_t.shape)).astype(dtype)
    gh = [rng.standard_normal(state_shape).astype(dtype) for _ in st_t]
    loss = (out_t * torch.tensor(go)).sum() + sum(
        (s * torch.tensor(a)).sum() for s, a in zip(st_t, gh, strict=True)
    )
    loss.backward()
    result = g.backward(
        put(go, device), tuple(put(a, device) for a in gh) if lstm else put(gh[0], device)
    )
    tol = TOL[np.dtype(dtype).type] if dtype == "float64" else dict(rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_host(out), out_t.detach().numpy(), **tol)
    for a, b in zip(st, st_t, strict=True):
        np.testing.assert_allclose(_host(a), b.detach().numpy(), **tol)
    dx = result[0] if states else result
    np.testing.assert_allclose(_host(dx), xt.grad.numpy(), **tol)
    if states:
        dstates = list(result[1]) if lstm else [result[1]]
        for a, b in zip(dstates, h0t, strict=True):
            np.testing.assert_allclose(_host(a), b.grad.numpy(), **tol)
    for name, p in t.named_parameters():
        np.testing.assert_allclose(
            _host(getattr(g, name).grad), p.grad.numpy(), **tol, err_msg=name
        )


TORCH_CASES = [
    pytest.param(
        dict(num_layers=2, bidirectional=True, batch_first=True),
        True,
        (2, 5, 3),
        id="stacked-bi-bf-states",
    ),
    pytest.param(dict(num_layers=2, bidirectional=True), False, (5, 2, 3), id="stacked-bi"),
    pytest.param(dict(bias=False), True, (4, 3, 3), id="nobias-states"),
    pytest.param(dict(bidirectional=True), True, (4, 3), id="unbatched-bi"),
]


@pytest.mark.parametrize("kwargs,states,x_shape", TORCH_CASES)
@pytest.mark.parametrize("mode", MODES)
def test_layers_equal_torch_cpu(mode, kwargs, states, x_shape):
    _compare_with_torch(mode, "float64", "cpu", states, x_shape, **kwargs)


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_layers_equal_torch_cpu_float32(mode):
    """To float32 rounding, torch's float32 layer against gpunet's."""
    kwargs, states, x_shape = TORCH_CASES[0].values
    _compare_with_torch(mode, "float32", "cpu", states, x_shape, **kwargs)


@pytest.mark.cuda
@pytest.mark.parametrize("mode", MODES)
def test_layers_equal_torch_cuda(mode):
    layers = 2 if mode == "lstm" else 1  # stacked once: the simulator is slow
    _compare_with_torch(
        mode, "float64", "cuda", True, (2, 2, 3), num_layers=layers, bidirectional=True,
        batch_first=True,
    )  # fmt: skip


@pytest.mark.cuda
def test_layers_equal_torch_cuda_step_path(monkeypatch):
    monkeypatch.setattr(R, "PERSISTENT_HIDDEN", 0)
    _compare_with_torch(
        "lstm", "float64", "cuda", True, (2, 2, 3), bidirectional=True, batch_first=True
    )


@pytest.mark.cuda
def test_lstm_sequence_runs_in_one_launch_per_direction(launches):
    g = gn.nn.LSTM(3, 4, bidirectional=True, dtype="float64", device="cuda")
    g.forward(put(np.ones((3, 2, 3)), "cuda"))
    assert launches.count("forward") == 2  # the recurrence: one launch per direction
    del launches[:]
    out, _ = g.forward(put(np.ones((3, 2, 3)), "cuda"))
    g.backward(out)
    assert launches.count("backward") == 2


def test_dropout_between_layers_as_torch():
    g, t = _pair("lstm", num_layers=3, dropout=0.5)
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    t.eval(), g.eval()
    np.testing.assert_allclose(
        g.forward(x)[0], t(torch.tensor(x))[0].detach().numpy(), **TOL[np.float64]
    )
    g.train()
    a = g.forward(x)[0].copy()
    b = g.forward(x)[0].copy()
    assert not np.allclose(a, b)  # new masks each forward
    out = g.forward(x)[0]
    dx = g.backward(np.ones_like(out))
    assert dx.shape == x.shape and np.isfinite(dx).all()


# --- numerical gradients --------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_numerical_gradients(mode):
    """Every parameter, the input and the initial states of a stacked,
    bidirectional float64 layer, by central differences."""
    cls, _, extra = CELLS[mode]
    g = cls(
        2,
        2,
        num_layers=2,
        bidirectional=True,
        batch_first=True,
        dtype="float64",
        seed=3,
        device="cpu",
        **extra,
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 2))
    states = [rng.standard_normal((4, 2, 2)) for _ in range(2 if mode == "lstm" else 1)]
    go = rng.standard_normal((2, 3, 4))
    gs = [rng.standard_normal((4, 2, 2)) for _ in states]
    lstm = mode == "lstm"

    def loss():
        out, st = g.forward(x, tuple(states) if lstm else states[0])
        st = st if lstm else (st,)
        return float((out * go).sum() + sum((s * w).sum() for s, w in zip(st, gs, strict=True)))

    loss()
    for p in g.parameters():
        p.zero_grad()
    dx, dst = g.backward(go, tuple(gs) if lstm else gs[0])
    dst = dst if lstm else (dst,)
    dx, dst = dx.copy(), [a.copy() for a in dst]
    np.testing.assert_allclose(dx, central_differences(loss, x), rtol=1e-6, atol=1e-8)
    for a, s in zip(dst, states, strict=True):
        np.testing.assert_allclose(a, central_differences(loss, s), rtol=1e-6, atol=1e-8)
    for name, p in g._named_parameters():
        np.testing.assert_allclose(
            p.grad, central_differences(loss, p.data), rtol=1e-6, atol=1e-8, err_msg=name
        )


def test_gradients_accumulate_over_backward_passes():
    g = gn.nn.GRU(3, 4, dtype="float64", device="cpu", seed=0)
    x = np.random.default_rng(0).standard_normal((3, 2, 3))
    out, _ = g.forward(x)
    g.backward(np.ones_like(out))
    once = [p.grad.copy() for p in g.parameters()]
    g.backward(np.ones_like(out))
    for p, a in zip(g.parameters(), once, strict=True):
        np.testing.assert_allclose(p.grad, 2 * a)


def test_truncated_bptt_chunks_continue_the_sequence():
    """Feeding each chunk's final state into the next gives the output of the whole sequence."""
    g = gn.nn.LSTM(3, 4, batch_first=True, dtype="float64", seed=0, device="cpu")
    x = np.random.default_rng(0).standard_normal((2, 6, 3))
    whole = g.forward(x)[0].copy()
    h, parts = None, []
    for chunk in np.split(x, 3, axis=1):
        out, h = g.forward(chunk, h)
        g.backward(out)
        parts.append(out.copy())
        h = tuple(a.copy() for a in h)
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole, rtol=1e-13)


def test_clip_grad_norm_bounds_exploding_gradients():
    g = gn.nn.RNN(3, 4, nonlinearity="relu", dtype="float64", seed=0, device="cpu")
    for p in g.parameters():
        p.data[...] *= 20  # weights this large make the gradients explode
    x = np.ones((20, 2, 3))
    out, _ = g.forward(x)
    g.backward(np.ones_like(out))
    norm = gn.optim.clip_grad_norm(g.parameters(), 1.0)
    assert norm > 1e6
    total = np.sqrt(sum((p.grad**2).sum() for p in g.parameters()))
    np.testing.assert_allclose(total, 1.0, rtol=1e-5)


# --- models ---------------------------------------------------------------------------


def _sequence_model(cls=gn.nn.LSTM, **kwargs):
    return gn.nn.Sequential(
        cls(3, 8, batch_first=True, seed=0, **kwargs),
        gn.nn.LastStep(),
        gn.nn.Dense(8 * (2 if kwargs.get("bidirectional") else 1), 2, seed=1),
    )


@pytest.mark.parametrize("cls", [gn.nn.LSTM, gn.nn.GRU])
def test_fit_predict_save_load(cls, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 5, 3)).astype(np.float32)
    y = (X[:, :, 0].sum(axis=1) > 0).astype(np.int64)  # needs the whole sequence
    model = _sequence_model(cls, bidirectional=True)
    with gn.device("cpu"):
        model.to("cpu")
        history = model.fit(
            X,
            y,
            loss="softmax_cross_entropy",
            optimizer="adam",
            epochs=15,
            batch_size=16,
            verbose=0,
            seed=0,
        )
        assert history.history["loss"][-1] < history.history["loss"][0]
        assert model.evaluate(X, y)["accuracy"] > 0.6
        model.save(tmp_path / "m.npz")
        loaded = gn.load(tmp_path / "m.npz", device="cpu")
    assert repr(loaded[0]) == repr(model[0])
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert set(loaded.state_dict()) >= {"0.weight_ih_l0", "0.weight_hh_l0_reverse", "0.bias_hh_l0"}


@pytest.mark.parametrize("seed", [7, None])
def test_reloaded_layer_draws_the_dropout_masks_of_the_saved_one(seed, tmp_path):
    """gn.load keeps the layer's seed (and, without one, the default generator,
    which it leaves where it was): in training mode both draw the same masks."""
    gn.manual_seed(3)
    model = gn.nn.Sequential(gn.nn.GRU(2, 3, num_layers=2, dropout=0.5, seed=seed, device="cpu"))
    model.save(tmp_path / "m.npz")
    state = gn.random.default_generator.state_dict()
    loaded = gn.load(tmp_path / "m.npz", device="cpu")
    assert gn.random.default_generator.state_dict() == state
    x = np.random.default_rng(0).standard_normal((4, 5, 2)).astype(np.float32)
    outputs = []
    for m in (model, loaded):
        gn.manual_seed(11)
        m.train()
        outputs.append([m.forward(x).copy() for _ in range(2)])
    np.testing.assert_array_equal(outputs[1], outputs[0])
    assert not np.array_equal(outputs[0][0], outputs[0][1])  # dropout is on


@pytest.mark.cuda
def test_sequential_on_cuda_matches_cpu():
    X = np.random.default_rng(0).standard_normal((2, 3, 3)).astype(np.float64)
    models = [
        gn.nn.Sequential(
            gn.nn.GRU(3, 4, batch_first=True, dtype="float64", seed=0, device=device),
            gn.nn.LastStep(),
        )
        for device in ("cpu", "cuda")
    ]
    want = models[0].forward(X)
    np.testing.assert_allclose(_host(models[1].forward(put(X, "cuda"))), want, **TOL[np.float64])
    g = np.ones_like(want)
    np.testing.assert_allclose(
        _host(models[1].backward(put(g, "cuda"))), models[0].backward(g), **TOL[np.float64]
    )
    for a, b in zip(models[1].parameters(), models[0].parameters(), strict=True):
        np.testing.assert_allclose(_host(a.grad), b.grad, **TOL[np.float64])


def test_initialisation_and_repr():
    g = gn.nn.LSTM(3, 16, num_layers=2, bidirectional=True, seed=0, device="cpu")
    assert g.weight_ih_l1_reverse.shape == (64, 32) and g.weight_hh_l0.shape == (64, 16)
    for p in g.parameters():
        assert np.abs(p.data).max() <= 0.25 and p.data.std() > 0.1  # uniform(-1/4, 1/4)
    assert repr(g) == "LSTM(3, 16, num_layers=2, bidirectional=True)"
    assert len(g.flat_parameters()[0]) == sum(p.size for p in g.parameters())


# --- errors ---------------------------------------------------------------------------


def test_constructor_errors():
    with pytest.raises(ValueError, match="nonlinearity"):
        gn.nn.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="hidden_size"):
        gn.nn.GRU(3, 0)
    with pytest.raises(ValueError):
        gn.nn.LSTM(3, 4, dropout=1.5)
    with pytest.raises(TypeError, match="dtype"):
        gn.nn.LSTM(3, 4, dtype="int32")


def test_input_errors_raise_before_any_work():
    g = gn.nn.LSTM(3, 4, device="cpu")
    x = np.zeros((5, 2, 3), np.float32)
    with pytest.raises(ValueError, match=r"expected x of shape \(\?, \?, 3\)"):
        g.forward(np.zeros((5, 2, 4), np.float32))
    with pytest.raises(ValueError, match="expected x of shape"):
        g.forward(np.zeros((5, 2, 3, 1), np.float32))
    with pytest.raises(TypeError, match="float32 x, got float64"):
        g.forward(x.astype(np.float64))
    with pytest.raises(TypeError, match="pair"):
        g.forward(x, np.zeros((1, 2, 4), np.float32))
    with pytest.raises(ValueError, match=r"h0 of shape \(1, 2, 4\)"):
        g.forward(x, (np.zeros((1, 3, 4), np.float32), np.zeros((1, 2, 4), np.float32)))
    with pytest.raises(TypeError, match="x to be an array"):
        g.forward([[1.0, 2.0, 3.0]])
    with pytest.raises(RuntimeError, match="before forward"):
        g.backward(np.zeros((5, 2, 4), np.float32))
    out, _ = g.forward(x)
    with pytest.raises(ValueError, match="grad_output of shape"):
        g.backward(np.zeros((5, 2, 5), np.float32))
    with pytest.raises(TypeError, match="grad_h_n to be a pair"):
        g.backward(out, np.zeros((1, 2, 4), np.float32))
    with pytest.raises(ValueError, match="LastStep"):
        gn.nn.LastStep().forward(np.zeros((2, 3), np.float32))


def test_kernels_refuse_mixed_dtypes():
    """A float64 array among float32 ones is refused before any work (BLAS would
    read it as float32 and past its end)."""
    T, B, I, H = 2, 1, 3, 2  # noqa: E741
    f32 = np.float32
    x, w_ih, dw_ih = np.zeros((T * B, I), f32), np.zeros((4 * H, I), f32), np.zeros((4 * H, I))
    dgx, hprev, dw_hh = (
        np.zeros((T * B, 4 * H), f32),
        np.zeros((T * B, H), f32),
        np.zeros((4 * H, H), f32),
    )
    with pytest.raises(TypeError, match="expected dw_ih of x's dtype float32, got float64"):
        R.recurrent_grads_cpu(x, hprev, dgx, dgx, w_ih, dw_ih, None, dw_hh, None, None)
    with pytest.raises(TypeError, match="expected out of x's dtype float32, got float64"):
        R.recurrent_input_cpu(x, w_ih, None, np.zeros((T * B, 4 * H)))
    with pytest.raises(TypeError, match="float32 or float64 arrays, got a int64 x"):
        R.recurrent_input_cpu(x.astype(np.int64), w_ih, None, dgx)


@pytest.mark.cuda
def test_device_mix_is_refused():
    g = gn.nn.GRU(3, 4, device="cuda")
    with pytest.raises(gn.DeviceError, match="x on cpu"):
        g.forward(np.zeros((2, 2, 3), np.float32))
