"""Model.fit / evaluate / predict: learning on the digits, History keys,
validation (data and split), shuffling, verbosity, callbacks (EarlyStopping,
LearningRateScheduler), regression and binary losses, input errors raised
before any parameter changes, and CUDA against the CPU."""

import numpy as np
import pytest

import gpunet as gn
from gpunet import nn
from gpunet.training import Callback, EarlyStopping, LearningRateScheduler

SCE = gn.losses.SoftmaxCrossEntropy


@pytest.fixture(scope="module")
def digits():
    X, y = gn.datasets.load_digits()
    return (X / 16).astype(np.float32), y


def mlp(n_in=64, hidden=16, n_out=10, seed=0, dtype="float32", device="cpu"):
    return nn.Sequential(
        nn.Dense(n_in, hidden, "relu", dtype, seed=seed, device=device),
        nn.Dense(hidden, n_out, dtype=dtype, seed=seed + 1, device=device),
    )


def small_problem(n=48, features=4, classes=3, seed=0):
    """Random features and labels that depend on them."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, features)).astype(np.float32)
    y = np.argmax(X[:, :classes], axis=1).astype(np.int64)
    return X, y


def weights(model):
    return model.state_dict()


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def fit_quiet(model, X, y, **kwargs):
    kwargs.setdefault("loss", SCE())
    kwargs.setdefault("optimizer", gn.optim.SGD(model.parameters(), lr=0.1))
    kwargs.setdefault("verbose", 0)
    return model.fit(X, y, **kwargs)


class Recorder(nn.Layer):
    """An identity layer that keeps the rows it sees in training mode."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        if self.training:
            self.seen.append(np.array(x))
        return x

    def backward(self, grad_out, *, input_grad=True):
        return grad_out if input_grad else None

    def rows(self):
        """The first column of every row seen, in order, as integers."""
        return np.concatenate([b[:, 0] for b in self.seen]).astype(np.int64)


def indexed_problem(n=40, seed=0):
    """Features whose first column is the row's index, so a Recorder can tell rows apart."""
    X, y = small_problem(n, seed=seed)
    X[:, 0] = np.arange(n)
    return X, y


# --- learning and History -------------------------------------------------------------


def test_fit_learns_digits(digits):
    X, y = digits
    model = mlp(hidden=32)
    before = model.evaluate(X, y, loss=SCE())
    opt = gn.optim.Adam(model.parameters(), lr=1e-2)
    history = fit_quiet(model, X, y, optimizer=opt, epochs=3, seed=0)
    h = history.history
    assert set(h) == {"loss", "accuracy", "lr"}
    assert history.epoch == [0, 1, 2]
    assert all(len(v) == 3 for v in h.values())
    assert h["loss"][0] > h["loss"][1] > h["loss"][2]
    assert h["accuracy"][-1] > 0.85
    assert h["lr"] == [1e-2] * 3
    after = model.evaluate(X, y)
    assert before["accuracy"] < 0.3
    assert after["accuracy"] > 0.85
    assert after["loss"] < before["loss"] / 3
    assert "3 epochs" in repr(history)


@pytest.mark.parametrize("how", ["data", "split"])
def test_history_has_validation_metrics(how, digits):
    X, y = digits[0][:300], digits[1][:300]
    extra = {"validation_data": (X[:60], y[:60])} if how == "data" else {"validation_split": 0.2}
    history = fit_quiet(mlp(), X, y, epochs=2, **extra)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    assert all(len(v) == 2 for v in history.history.values())
    assert all(0 <= a <= 1 for a in history.history["val_accuracy"])


def test_zero_epochs_gives_empty_history():
    X, y = small_problem()
    model = mlp(4, 8, 3)
    before = weights(model)
    history = fit_quiet(model, X, y, epochs=0, validation_split=0.25)
    assert history.history == {}
    assert history.epoch == []
    assert_same_weights(weights(model), before)
    assert repr(history) == "History(0 epochs)"


def test_validation_split_holds_out_the_last_rows():
    X, y = indexed_problem(40)
    recorder = Recorder()
    model = nn.Sequential(recorder, nn.Dense(4, 3, seed=3))
    history = fit_quiet(model, X, y, epochs=1, batch_size=8, validation_split=0.25, seed=1)
    n_val = int(len(X) * 0.25)
    cut = len(X) - n_val
    seen = recorder.rows()
    assert sorted(seen) == list(range(cut))  # every training row once, none of the last
    assert list(seen) != list(range(cut))  # shuffled
    val = model.evaluate(X[cut:], y[cut:])
    assert history.history["val_loss"] == [val["loss"]]
    assert history.history["val_accuracy"] == [val["accuracy"]]
    first = model.evaluate(X[:n_val], y[:n_val])
    assert first["loss"] != val["loss"]


def test_validation_split_trains_like_the_first_rows_alone():
    X, y = small_problem(40)
    a, b = mlp(4, 8, 3), mlp(4, 8, 3)
    fit_quiet(a, X, y, epochs=2, batch_size=8, validation_split=0.25, seed=4)
    fit_quiet(b, X[:30], y[:30], epochs=2, batch_size=8, seed=4)
    assert_same_weights(weights(a), weights(b))


# --- order of the rows ----------------------------------------------------------------


def test_shuffle_false_visits_rows_in_order():
    X, y = indexed_problem(30)
    recorder = Recorder()
    model = nn.Sequential(recorder, nn.Dense(4, 3, seed=3))
    fit_quiet(model, X, y, epochs=2, batch_size=8, shuffle=False)
    assert [len(b) for b in recorder.seen] == [8, 8, 8, 6] * 2
    assert list(recorder.rows()) == list(range(30)) * 2


def test_shuffle_visits_every_row_once_per_epoch_in_a_new_order():
    X, y = indexed_problem(30)
    recorder = Recorder()
    model = nn.Sequential(recorder, nn.Dense(4, 3, seed=3))
    fit_quiet(model, X, y, epochs=2, batch_size=8, seed=0)
    first, second = recorder.rows()[:30], recorder.rows()[30:]
    assert sorted(first) == sorted(second) == list(range(30))
    assert list(first) != list(second)


def test_shuffle_false_matches_a_hand_written_loop():
    X, y = small_problem(30)
    model, ref = mlp(4, 8, 3), mlp(4, 8, 3)
    fit_quiet(model, X, y, epochs=2, batch_size=8, shuffle=False)
    loss_fn, opt = SCE(), gn.optim.SGD(ref.parameters(), lr=0.1)
    for _ in range(2):
        for start in range(0, len(X), 8):
            _, grad = loss_fn(ref.forward(X[start : start + 8]), y[start : start + 8])
            ref.backward(grad)
            opt.step()
            opt.zero_grad()
    assert_same_weights(weights(model), weights(ref))


def test_step_records_are_kept_between_fits_and_each_epoch_reports_its_own():
    X, y = small_problem(30)
    model = mlp(4, 8, 3)
    first = fit_quiet(model, X, y, epochs=2, batch_size=8)
    records = model._step_records
    second = fit_quiet(model, X, y, epochs=1, batch_size=8)
    assert model._step_records is records
    losses = first.history["loss"] + second.history["loss"]
    assert len(set(losses)) == 3  # each epoch's mean, not a stale record
    fit_quiet(model, X, y, epochs=1, batch_size=16)  # other steps: new records
    assert model._step_records is not records


def test_seeded_shuffle_is_reproducible():
    X, y = small_problem(40)
    runs = []
    for seed in (5, 5, 6):
        model = mlp(4, 8, 3)
        fit_quiet(model, X, y, epochs=2, batch_size=8, seed=seed)
        runs.append(weights(model))
    assert_same_weights(runs[0], runs[1])
    assert not np.array_equal(runs[0]["0.weight"], runs[2]["0.weight"])


# --- output -----------------------------------------------------------------------------


def test_verbose_0_prints_nothing(capsys):
    X, y = small_problem()
    fit_quiet(mlp(4, 8, 3), X, y, epochs=2, verbose=0, validation_split=0.25)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_verbose_2_prints_one_line_per_epoch(capsys):
    X, y = small_problem()
    fit_quiet(mlp(4, 8, 3), X, y, epochs=3, verbose=2, validation_split=0.25)
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 3
    for i, line in enumerate(lines):
        assert line.startswith(f"epoch {i + 1}/3")
        for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert f" {name} " in line
    assert captured.err == ""


def test_verbose_1_shows_a_progress_bar(capsys):
    X, y = small_problem()
    fit_quiet(mlp(4, 8, 3), X, y, epochs=2, verbose=1)
    captured = capsys.readouterr()
    assert "epoch 1/2" in captured.err and "epoch 2/2" in captured.err
    assert "loss" in captured.err
    assert captured.out == ""


# --- EarlyStopping ----------------------------------------------------------------------


@pytest.mark.parametrize("patience", [0, 1, 3])
def test_early_stopping_stops_after_patience_epochs_without_improvement(patience):
    X, y = small_problem()
    model = mlp(4, 8, 3)
    stop = EarlyStopping(monitor="loss", patience=patience)
    opt = gn.optim.SGD(model.parameters(), lr=0.0)
    history = fit_quiet(model, X, y, optimizer=opt, epochs=20, shuffle=False, callbacks=[stop])
    assert len(set(history.history["loss"])) == 1  # lr 0: never improves
    without_improvement = max(patience, 1)
    assert len(history.epoch) == 1 + without_improvement
    assert stop.stopped_epoch == history.epoch[-1]
    assert stop.best_epoch == 0


def test_early_stopping_lets_an_improving_run_finish():
    X, y = small_problem()
    stop = EarlyStopping(monitor="loss", patience=0)
    history = fit_quiet(mlp(4, 8, 3), X, y, epochs=4, shuffle=False, callbacks=[stop])
    assert len(history.epoch) == 4
    assert stop.stopped_epoch is None


class Scripted(Callback):
    """Writes ``values[epoch]`` into the logs as ``score`` and keeps each epoch's weights."""

    def __init__(self, values):
        self.values, self.states = values, []

    def on_epoch_end(self, epoch, logs):
        logs["score"] = self.values[epoch]
        self.states.append(self.model.state_dict())


@pytest.mark.parametrize(
    "mode, values, epochs_run",
    [
        ("min", [3.0, 2.0, 2.5, 2.4, 1.0], 4),
        ("max", [3.0, 2.0, 2.5, 2.4, 1.0], 3),
        ("max", [1.0, 2.0, 3.0, 4.0, 5.0], 5),
        ("min", [1.0, 2.0, 3.0, 4.0, 5.0], 3),
    ],
)
def test_early_stopping_modes(mode, values, epochs_run):
    X, y = small_problem()
    script = Scripted(values)
    stop = EarlyStopping(monitor="score", mode=mode, patience=2)
    history = fit_quiet(mlp(4, 8, 3), X, y, epochs=5, callbacks=[script, stop])
    assert len(history.epoch) == epochs_run


def test_early_stopping_auto_mode_follows_the_name():
    assert EarlyStopping(monitor="val_accuracy").mode == "max"
    assert EarlyStopping(monitor="accuracy").mode == "max"
    assert EarlyStopping(monitor="val_loss").mode == "min"
    assert EarlyStopping(monitor="loss", mode="max").mode == "max"


def test_early_stopping_min_delta():
    X, y = small_problem()
    values = [1.0, 0.95, 0.9, 0.85, 0.8]
    script = Scripted(values)
    stop = EarlyStopping(monitor="score", min_delta=0.1, patience=1)
    history = fit_quiet(mlp(4, 8, 3), X, y, epochs=5, callbacks=[script, stop])
    assert len(history.epoch) == 2


@pytest.mark.parametrize("restore", [True, False])
def test_early_stopping_restore_best_weights(restore):
    X, y = small_problem()
    model = mlp(4, 8, 3)
    script = Scripted([0.5, 0.9, 0.7, 0.6, 0.8])
    stop = EarlyStopping(monitor="score", mode="max", patience=2, restore_best_weights=restore)
    history = fit_quiet(model, X, y, epochs=5, callbacks=[script, stop])
    assert len(history.epoch) == 4
    best, last = script.states[1], script.states[-1]
    assert not np.array_equal(best["0.weight"], last["0.weight"])
    assert_same_weights(weights(model), best if restore else last)
    if restore:
        fit_quiet(model, X, y, epochs=1)
        assert_same_weights(stop.best_weights, best)


def test_early_stopping_on_val_loss_without_validation_data():
    X, y = small_problem()
    model = mlp(4, 8, 3)
    before = weights(model)
    with pytest.raises(KeyError, match="val_loss.*validation"):
        fit_quiet(model, X, y, epochs=2, callbacks=[EarlyStopping()])
    assert_same_weights(weights(model), before)


@pytest.mark.parametrize("kwargs", [{"mode": "up"}, {"patience": -1}, {"patience": 1.5}])
def test_early_stopping_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        EarlyStopping(**kwargs)


# --- LearningRateScheduler ---------------------------------------------------------------


def test_scheduler_with_step_lr():
    X, y = small_problem()
    model = mlp(4, 8, 3)
    opt = gn.optim.SGD(model.parameters(), lr=0.1)
    sched = LearningRateScheduler(gn.optim.StepLR, step_size=2, gamma=0.5)
    history = fit_quiet(model, X, y, optimizer=opt, epochs=5, callbacks=[sched])
    expected = [0.1 * 0.5 ** (e // 2) for e in range(5)]
    np.testing.assert_allclose(history.history["lr"], expected, rtol=1e-12)
    assert opt.lr == history.history["lr"][-1]


def test_scheduler_with_a_function():
    X, y = small_problem()
    model = mlp(4, 8, 3)
    opt = gn.optim.SGD(model.parameters(), lr=0.1)
    calls = []

    def halve(epoch, lr):
        calls.append((epoch, lr))
        return lr / 2

    history = fit_quiet(
        model, X, y, optimizer=opt, epochs=3, callbacks=[LearningRateScheduler(halve)]
    )
    assert history.history["lr"] == [0.05, 0.025, 0.0125]
    assert calls == [(0, 0.1), (1, 0.05), (2, 0.025)]
    assert opt.lr == 0.0125


def test_scheduled_learning_rate_is_the_one_used():
    X, y = small_problem()
    one, three = mlp(4, 8, 3), mlp(4, 8, 3)
    fit_quiet(one, X, y, epochs=1, seed=0)
    sched = LearningRateScheduler(lambda epoch, lr: 0.1 if epoch == 0 else 0.0)
    history = fit_quiet(three, X, y, epochs=3, seed=0, callbacks=[sched])
    assert history.history["lr"] == [0.1, 0.0, 0.0]
    assert_same_weights(weights(one), weights(three))


def test_scheduler_rejects_non_callables():
    with pytest.raises(TypeError):
        LearningRateScheduler(0.1)


# --- losses -------------------------------------------------------------------------------


def regression_problem(n=64, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4)).astype(np.float32)
    y = (X @ np.array([0.5, -1.0, 2.0, 0.25], np.float32) + 0.3).astype(np.float32)
    return X, y


def test_regression_with_mse():
    X, y = regression_problem()
    model = nn.Sequential(nn.Dense(4, 1, seed=1))
    opt = gn.optim.Adam(model.parameters(), lr=0.05)
    history = fit_quiet(model, X, y, loss=gn.losses.MSE(), optimizer=opt, epochs=10, batch_size=16)
    h = history.history
    assert set(h) == {"loss", "lr"}
    assert h["loss"][-1] < h["loss"][0] / 2
    result = model.evaluate(X, y)
    assert set(result) == {"loss"}
    pred = model.predict(X).astype(np.float64)
    assert pred.shape == (64, 1)
    expected = np.mean(0.5 * (pred[:, 0] - y) ** 2)
    np.testing.assert_allclose(result["loss"], expected, rtol=1e-5)
    assert model.evaluate(X, y[:, None]) == result


def test_mse_by_name_with_validation():
    X, y = regression_problem()
    history = fit_quiet(
        nn.Sequential(nn.Dense(4, 1, seed=1)),
        X,
        y,
        loss="mse",
        epochs=1,
        validation_split=0.25,
    )
    assert set(history.history) == {"loss", "val_loss", "lr"}


def test_binary_cross_entropy_gives_accuracy():
    X, _ = regression_problem()
    y = (X[:, 0] - X[:, 1] > 0).astype(np.float32)
    model = nn.Sequential(nn.Dense(4, 1, seed=1))
    opt = gn.optim.Adam(model.parameters(), lr=0.05)
    loss = gn.losses.BinaryCrossEntropy()
    history = fit_quiet(model, X, y, loss=loss, optimizer=opt, epochs=10, batch_size=16)
    assert set(history.history) == {"loss", "accuracy", "lr"}
    assert history.history["accuracy"][-1] > 0.8
    z = model.predict(X).astype(np.float64)[:, 0]
    result = model.evaluate(X, y)
    expected_loss = np.mean(np.logaddexp(0, z) - y * z)
    np.testing.assert_allclose(result["loss"], expected_loss, rtol=1e-5)
    assert result["accuracy"] == np.mean((z > 0) == (y > 0.5))


# --- evaluate and predict -------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 7, 256])
def test_evaluate_matches_a_hand_computation(batch_size, digits):
    X, y = digits[0][:100], digits[1][:100]
    model = mlp(seed=3)
    fit_quiet(model, X, y, epochs=1)
    result = model.evaluate(X, y, batch_size=batch_size)
    assert set(result) == {"loss", "accuracy"}
    logits = model.predict(X).astype(np.float64)
    log_p = logits - logits.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(result["loss"], -np.mean(log_p[np.arange(100), y]), rtol=1e-5)
    assert result["accuracy"] == np.mean(logits.argmax(axis=1) == y)
    ops_loss, _ = gn.ops.softmax_cross_entropy(model.predict(X), y)
    np.testing.assert_allclose(result["loss"], float(ops_loss), rtol=1e-5)


def test_evaluate_needs_a_loss_before_fit():
    X, y = small_problem()
    model = mlp(4, 8, 3)
    with pytest.raises(ValueError, match="loss"):
        model.evaluate(X, y)
    assert set(model.evaluate(X, y, loss="softmax_cross_entropy")) == {"loss", "accuracy"}


@pytest.mark.parametrize("batch_size, training", [(1, True), (7, False), (16, True), (256, False)])
def test_predict_is_a_forward_pass(batch_size, training):
    X, _ = small_problem(50)
    model = mlp(4, 8, 3).train(training)
    pred = model.predict(X, batch_size=batch_size)
    assert model.training is training
    assert all(layer.training is training for layer in model)
    assert isinstance(pred, np.ndarray)
    assert pred.shape == (50, 3) and pred.dtype == np.float32
    expected = np.array(model.forward(X))
    np.testing.assert_allclose(pred, expected, rtol=1e-5, atol=1e-6)
    kept = pred.copy()
    model.predict(X[::-1].copy(), batch_size=batch_size)
    np.testing.assert_array_equal(pred, kept)


def test_predict_and_evaluate_reject_empty_input():
    model = mlp(4, 8, 3)
    with pytest.raises(ValueError):
        model.predict(np.zeros((0, 4), np.float32))
    with pytest.raises(ValueError):
        model.evaluate(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), loss="mse")


# --- bad input ---------------------------------------------------------------------------


def _nan_x(X, y):
    X = X.copy()
    X[3, 1] = np.nan
    return {"X": X}


def _nan_y(X, y):
    y = y.astype(np.float32)
    y[2] = np.nan
    return {"y": y, "loss": gn.losses.MSE()}


def _other_optimizer(X, y):
    return {"optimizer": gn.optim.SGD(mlp(4, 8, 3).parameters(), lr=0.1)}


BAD_FIT = {
    "nan in X": (_nan_x, ValueError, "NaN"),
    "nan in y": (_nan_y, ValueError, "NaN"),
    "inf in X_val": (
        lambda X, y: {"validation_data": (np.full_like(X[:4], np.inf), y[:4])},
        ValueError,
        "X_val",
    ),
    "y length": (lambda X, y: {"y": y[:-1]}, ValueError, "rows"),
    "1-D X": (lambda X, y: {"X": X[:, 0]}, ValueError, "shape"),
    "3-D X": (lambda X, y: {"X": X[:, :, None]}, ValueError, "expected a 2-D input"),
    "float labels": (lambda X, y: {"y": y.astype(np.float32)}, TypeError, "integer"),
    "negative label": (lambda X, y: {"y": np.where(y == 0, -1, y)}, ValueError, "label"),
    "label too large": (lambda X, y: {"y": np.where(y == 0, 3, y)}, ValueError, "label"),
    "both validations": (
        lambda X, y: {"validation_data": (X, y), "validation_split": 0.2},
        ValueError,
        "not both",
    ),
    "split 1": (lambda X, y: {"validation_split": 1.0}, ValueError, "validation_split"),
    "split tiny": (lambda X, y: {"validation_split": 0.001}, ValueError, "validation_split"),
    "validation triple": (
        lambda X, y: {"validation_data": (X, y, y)},
        ValueError,
        "validation_data",
    ),
    "verbose 3": (lambda X, y: {"verbose": 3}, ValueError, "verbose"),
    "batch_size 0": (lambda X, y: {"batch_size": 0}, ValueError, "batch_size"),
    "batch_size float": (lambda X, y: {"batch_size": 2.5}, ValueError, "batch_size"),
    "batch_size bool": (lambda X, y: {"batch_size": True}, ValueError, "batch_size"),
    "epochs -1": (lambda X, y: {"epochs": -1}, ValueError, "epochs"),
    "epochs float": (lambda X, y: {"epochs": 2.0}, ValueError, "epochs"),
    "unknown optimizer": (lambda X, y: {"optimizer": "rmsprop"}, ValueError, "'sgd'"),
    "foreign optimizer": (_other_optimizer, ValueError, "parameters"),
    "unknown loss": (lambda X, y: {"loss": "hinge"}, ValueError, "mse"),
    "bad callback": (lambda X, y: {"callbacks": [print]}, TypeError, "Callback"),
    "wrong target width": (
        lambda X, y: {"y": np.zeros((len(y), 5), np.float32), "loss": gn.losses.MSE()},
        ValueError,
        "target of shape",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FIT))
def test_bad_fit_input_raises_before_any_change(case):
    """Those that need the model's output too (labels, target width): they are
    checked on an evaluation-mode forward before training begins."""
    make, error, match = BAD_FIT[case]
    X, y = small_problem()
    model = mlp(4, 8, 3).train()
    before = weights(model)
    kwargs = {"X": X, "y": y, "epochs": 2, **make(X, y)}
    with pytest.raises(error, match=match):
        fit_quiet(model, kwargs.pop("X"), kwargs.pop("y"), **kwargs)
    assert_same_weights(weights(model), before)
    assert model.loss is None and model.optimizer is None
    assert model.training


@pytest.mark.parametrize(
    "name, cls", [("sgd", gn.optim.SGD), ("adam", gn.optim.Adam), ("AdamW", gn.optim.AdamW)]
)
def test_optimizer_by_name(name, cls):
    X, y = small_problem()
    model = mlp(4, 8, 3)
    before = weights(model)
    history = fit_quiet(model, X, y, optimizer=name, epochs=2)
    assert type(model.optimizer) is cls
    assert model.optimizer.params == model.parameters()
    assert history.history["lr"] == [0.01 if cls is gn.optim.SGD else 1e-3] * 2
    assert history.history["loss"][1] < history.history["loss"][0]
    assert not np.array_equal(weights(model)["0.weight"], before["0.weight"])


def test_fit_accepts_lists_and_no_callbacks():
    X, y = small_problem(16)
    history = fit_quiet(mlp(4, 8, 3), X.tolist(), y.tolist(), epochs=1, callbacks=None)
    assert len(history.epoch) == 1


# --- CUDA -----------------------------------------------------------------------------------


@pytest.mark.cuda
def test_fit_on_cuda_matches_cpu():
    X, y = small_problem(16)
    results = {}
    for device in ("cpu", "cuda"):
        model = mlp(4, 8, 3, seed=2, device=device)
        opt = gn.optim.Adam(model.parameters(), lr=0.01)
        history = fit_quiet(
            model, X, y, optimizer=opt, epochs=1, batch_size=8, seed=0, validation_split=0.25
        )
        results[device] = (weights(model), history.history)
    (w_cpu, h_cpu), (w_cuda, h_cuda) = results["cpu"], results["cuda"]
    assert w_cpu.keys() == w_cuda.keys()
    for k in w_cpu:
        np.testing.assert_allclose(w_cuda[k], w_cpu[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert h_cpu.keys() == h_cuda.keys()
    for k in h_cpu:
        np.testing.assert_allclose(h_cuda[k], h_cpu[k], rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.cuda
def test_predict_on_cuda_returns_numpy():
    X, _ = small_problem(10)
    cpu, cuda = mlp(4, 8, 3, seed=2), mlp(4, 8, 3, seed=2, device="cuda")
    pred = cuda.predict(X, batch_size=4)
    assert type(pred) is np.ndarray
    assert pred.shape == (10, 3) and pred.dtype == np.float32
    np.testing.assert_allclose(pred, cpu.predict(X), rtol=1e-5, atol=1e-6)
