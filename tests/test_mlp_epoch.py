"""Compiled MLP training epochs (kernels.mlp): the kernel against its numpy
reference, the estimators' CPU fits by compiled epochs against their fits
by the layers' ops, and the checks."""

import functools
import warnings

import numpy as np
import pytest
from gpunet.kernels import mlp

import gpunet as gn
from gpunet import _mlp_epoch, nn

SIZES = (5, 7, 6, 3)  # two hidden layers
ROWS, BATCH = 23, 8  # batches of 8, 8 and 7 rows


def epoch_args(dtype, loss, solver, activation, seed=0):
    """Arguments of an epoch of a SIZES network on ROWS random rows; each
    layer's W and b in one parameter group, W decayed."""
    rng = np.random.default_rng(seed)
    outputs = SIZES[-1]
    X = rng.standard_normal((ROWS, SIZES[0])).astype(dtype)
    if loss == "softmax_cross_entropy":
        T = rng.integers(0, outputs, ROWS)
    elif loss == "binary_cross_entropy":
        T = (rng.random((ROWS, outputs)) < 0.5).astype(dtype)
    else:
        T = rng.standard_normal((ROWS, outputs)).astype(dtype)
    layers, segments, offset = [], [], 0
    for fan_in, fan_out in zip(SIZES[:-1], SIZES[1:], strict=True):
        w = fan_in * fan_out
        layers.append((offset, offset + w, fan_in, fan_out))
        segments += [(offset, offset + w), (offset + w, offset + w + fan_out)]
        offset += w + fan_out
    p = (rng.standard_normal(offset) * 0.5).astype(dtype)
    if solver == "sgd":
        state, settings = (rng.standard_normal(offset).astype(dtype),), (0.9, True, False)
    else:
        state = (rng.standard_normal(offset).astype(dtype) * 0.1, rng.random(offset).astype(dtype))
        settings = (0.9, 0.999, 1e-8, 3)
    return dict(
        X=X, T=T, order=rng.permutation(ROWS), bounds=np.array([0, 8, 16, 23]),
        layers=np.array(layers), activation=activation, p=p, state=state,
        segments=np.array(segments), groups=np.array([0, 1] * len(layers)),
        rates=np.array([0.05, 0.02]), decays=np.array([0.3, 0.0]), solver=solver,
        settings=settings, loss=loss, grad_scale=2.0 if loss == "mse" else 1.0,
    )  # fmt: skip


def run(args):
    """train_epoch on copies of ``args``: (p, state, losses, squares)."""
    dtype = args["p"].dtype
    batches = len(args["bounds"]) - 1
    p, state = args["p"].copy(), tuple(s.copy() for s in args["state"])
    losses, squares = np.zeros(batches, dtype), np.zeros((batches, len(args["layers"])), dtype)
    mlp.train_epoch(**{**args, "p": p, "state": state}, g=np.zeros_like(p), losses=losses,
                      squares=squares)  # fmt: skip
    return p, state, losses, squares


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_epoch_follows_its_reference(dtype):
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    for loss in mlp.LOSSES:
        for solver in mlp.SOLVERS:
            for activation in mlp.ACTIVATIONS:
                args = epoch_args(dtype, loss, solver, activation)
                p, state, losses, squares = run(args)
                want = mlp.train_epoch_ref(**args)
                case = f"{loss}, {solver}, {activation}"
                np.testing.assert_allclose(p, want[0], rtol=rtol, atol=rtol, err_msg=case)
                for got, expected in zip(state, want[1], strict=True):
                    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol, err_msg=case)
                np.testing.assert_allclose(losses, want[2], rtol=rtol, err_msg=case)
                np.testing.assert_allclose(squares, want[3], rtol=rtol, err_msg=case)
                assert not np.array_equal(p, args["p"])


def test_squares_without_columns_skip_the_norms_and_nothing_else():
    args = epoch_args(np.float32, "softmax_cross_entropy", "adam", "relu")
    p, state, losses, _ = run(args)
    batches = len(args["bounds"]) - 1
    p_, state_, losses_ = (
        args["p"].copy(),
        tuple(s.copy() for s in args["state"]),
        np.zeros(batches, np.float32),
    )
    mlp.train_epoch(**{**args, "p": p_, "state": state_}, g=np.zeros_like(p_), losses=losses_,
                    squares=np.zeros((batches, 0), np.float32))  # fmt: skip
    np.testing.assert_array_equal(p_, p)
    np.testing.assert_array_equal(losses_, losses)
    for got, want in zip(state_, state, strict=True):
        np.testing.assert_array_equal(got, want)


def test_squared_norm_sums_in_float64():
    w = np.full(37, 3.0, np.float32) + np.float32(2**-20)
    assert mlp.squared_norm(w) == 37 * (3.0 + 2**-20) ** 2
    assert mlp.squared_norm(w[:0]) == 0.0


BAD = {
    "order": (lambda a: a.update(order=np.arange(ROWS) + 1), ValueError, "order to hold rows"),
    "a class index": (
        lambda a: a["T"].__setitem__(0, 3), ValueError, "class indices T from 0 to 2",
    ),
    "X's dtype": (lambda a: a.update(X=a["X"].astype(np.float32)), TypeError, "X of p's dtype"),
    "bounds": (lambda a: a.update(bounds=np.array([0, 8, 8, 23])), ValueError, "bounds rising"),
    "layers": (
        lambda a: a["layers"].__setitem__((1, 2), 6), ValueError, "layer 1 to take 7 inputs",
    ),
    "state": (lambda a: a.update(state=a["state"][:1]), ValueError, "adam's state"),
    "segments": (
        lambda a: a["segments"].__setitem__((1, 0), 0), ValueError, "non-overlapping segments",
    ),
    "a rate": (lambda a: a["rates"].__setitem__(1, np.nan), ValueError, "finite rates"),
    "a contiguous X": (lambda a: a.update(X=np.asfortranarray(a["X"])), ValueError, "X C-cont"),
}  # fmt: skip


@pytest.mark.parametrize("what", BAD)
def test_bad_arguments_are_named_before_anything_is_written(what):
    args = epoch_args(np.float64, "softmax_cross_entropy", "adam", "relu")
    spoil, error, message = BAD[what]
    spoil(args)
    p, state = args["p"].copy(), tuple(s.copy() for s in args["state"])
    with pytest.raises(error, match=message):
        run(args)
    np.testing.assert_array_equal(args["p"], p)
    for got, before in zip(args["state"], state, strict=True):
        np.testing.assert_array_equal(got, before)


# --- the estimators ----------------------------------------------------------------------

rng = np.random.default_rng(1)
X = rng.standard_normal((70, 6))
TARGETS = {
    "multiclass": rng.integers(0, 3, 70),
    "binary": rng.integers(0, 2, 70),
    "multilabel": (rng.random((70, 3)) < 0.5).astype(int),
    "regression": rng.standard_normal((70, 2)),
}
FITS = {
    "multiclass, adam": ("multiclass", dict(solver="adam")),
    "binary, sgd, invscaling, tanh": (
        "binary", dict(solver="sgd", learning_rate="invscaling", activation="tanh"),
    ),
    "multilabel, sgd, adaptive, logistic": (
        "multilabel", dict(solver="sgd", learning_rate="adaptive", activation="logistic",
                           nesterovs_momentum=False, alpha=0.01, tol=0.5, n_iter_no_change=1),
    ),
    "regression, adam, identity, early stopping": (
        "regression", dict(solver="adam", activation="identity", early_stopping=True),
    ),
}  # fmt: skip


def fitted(what, dtype, compiled, monkeypatch):
    kind, kwargs = FITS[what]
    cls = gn.MLPRegressor if kind == "regression" else gn.MLPClassifier
    with monkeypatch.context() as patch:
        if not compiled:
            patch.setattr(_mlp_epoch, "applies", lambda *args: False)
        epochs = []
        patch.setattr(mlp, "train_epoch_checked", lambda *a: epochs.append(a[2].copy()) or
                      RUN_CHECKED(*a))  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", gn.ConvergenceWarning)
            model = cls(hidden_layer_sizes=(7, 5), batch_size=16, max_iter=4, random_state=0,
                        dtype=dtype, **kwargs).fit(X, TARGETS[kind])  # fmt: skip
            if not model.early_stopping:
                model.partial_fit(X, TARGETS[kind])
    return model, epochs


RUN_CHECKED = mlp.train_epoch_checked


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("what", FITS)
def test_estimators_train_by_compiled_epochs_as_by_their_layers(what, dtype, monkeypatch):
    (model, epochs), (layered, none) = (
        fitted(what, dtype, compiled, monkeypatch) for compiled in (True, False)
    )
    assert len(epochs) == model.n_iter_ > 2 and none == []
    if FITS[what][0] == "binary":
        # numpy's matmul takes the output layer's one-column products as
        # matrix-vector ones, which may round otherwise than gemm.
        rtol = 1e-14 if dtype == "float64" else 1e-6
        same = functools.partial(np.testing.assert_allclose, rtol=rtol, atol=rtol)
    else:
        same = np.testing.assert_array_equal
    for got, want in zip(model.coefs_ + model.intercepts_, layered.coefs_ + layered.intercepts_,
                         strict=True):  # fmt: skip
        same(got, want)
    # The losses' linked copies in the compiled epoch may round a sum differently (kernels._cache).
    np.testing.assert_allclose(model.loss_curve_, layered.loss_curve_, rtol=1e-6)
    assert (model.n_iter_, model.t_) == (layered.n_iter_, layered.t_)
    state, layered_state = model._optimizer.state_dict(), layered._optimizer.state_dict()
    for key in ("settings", "counters", "param_groups"):
        assert state[key] == layered_state[key]
    assert state["state"].keys() == layered_state["state"].keys()
    for i, buffers in state["state"].items():
        for name, got in buffers.items():
            same(got, layered_state["state"][i][name])


def test_networks_the_kernel_does_not_cover_train_by_their_layers():
    model = nn.Sequential(nn.Dense(3, 4, "relu"), nn.Dropout(0.5), nn.Dense(4, 2))
    opt = gn.optim.Adam(model.parameters())
    assert not _mlp_epoch.applies(model, gn.losses.SoftmaxCrossEntropy(), opt)
    model = nn.Sequential(nn.Dense(3, 4, "relu"), nn.Dense(4, 2))
    assert _mlp_epoch.applies(model, gn.losses.SoftmaxCrossEntropy(), opt)
    assert not _mlp_epoch.applies(model, gn.losses.BinaryCrossEntropy(from_logits=False), opt)
    assert not _mlp_epoch.applies(model, gn.losses.MSE(), gn.optim.AdamW(model.parameters()))
    model = nn.Sequential(nn.Dense(3, 4, "relu"), nn.Dense(4, 2, "relu"))
    assert not _mlp_epoch.applies(model, gn.losses.MSE(), opt)
