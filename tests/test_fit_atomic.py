"""``fit`` changes nothing until every input has been checked, a step that
raises leaves the model as it was before that step, and a last batch too
small for batch normalization is folded into the one before it."""

import numpy as np
import pytest

import gpunet as gn
from gpunet import cli, nn

SCE = gn.losses.SoftmaxCrossEntropy


def problem(n=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4)).astype(np.float32)
    return X, np.argmax(X[:, :3], axis=1).astype(np.int64)


def noisy_model():
    return nn.Sequential(
        nn.Dense(4, 8, seed=1),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Dropout(0.3, seed=5),
        nn.Dropout(0.2),
        nn.Dense(8, 3, seed=2),
    )


def everything(model, opt):
    """All that training may change: arrays (running statistics included), the
    random streams' positions, the mode, the optimizer's state and the attributes fit sets."""
    seeded = [layer._generator for layer in model if isinstance(layer, nn.Dropout) and layer.seed]
    return {
        "arrays": model.state_dict(),
        "streams": [g.state_dict() for g in [*seeded, gn.random.default_generator]],
        "training": model.training,
        "optimizer": opt.state_dict(),
        "fitted": (model.loss, model.optimizer),
    }


def assert_unchanged(after, before):
    for name in ("arrays",):
        assert after[name].keys() == before[name].keys()
        for k in before[name]:
            np.testing.assert_array_equal(after[name][k], before[name][k], err_msg=k)
    assert after["streams"] == before["streams"]
    assert after["training"] == before["training"]
    a, b = after["optimizer"], before["optimizer"]
    assert {k: v for k, v in a.items() if k != "state"} == {
        k: v for k, v in b.items() if k != "state"
    }
    assert a["state"].keys() == b["state"].keys()
    for i in b["state"]:
        for name in b["state"][i]:
            np.testing.assert_array_equal(a["state"][i][name], b["state"][i][name])
    assert after["fitted"][0] is before["fitted"][0]
    assert after["fitted"][1] is before["fitted"][1]


BAD_INPUTS = {
    "label too large": (lambda X, y: {"y": np.where(y == 0, 3, y)}, "label"),
    "label too large in y_val": (
        lambda X, y: {"validation_data": (X[:5], np.full(5, 7))},
        "y_val",
    ),
    "features of X_val": (lambda X, y: {"validation_data": (X[:5, :3], y[:5])}, "shape"),
    "target width of y_val": (
        lambda X, y: {"validation_data": (X[:5], np.zeros((5, 4), np.float32))},
        "shape",
    ),
    "empty validation": (lambda X, y: {"validation_data": (X[:0], y[:0])}, "at least one"),
    "batch_size 1 with batch norm": (lambda X, y: {"batch_size": 1}, "at least 2 rows"),
    "one row with batch norm": (lambda X, y: {"X": X[:1], "y": y[:1]}, "at least 2 rows"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
@pytest.mark.parametrize("mode", [True, False])
def test_bad_input_changes_nothing(case, mode):
    make, match = BAD_INPUTS[case]
    X, y = problem()
    model = noisy_model().train(mode)
    opt = gn.optim.Adam(model.parameters(), lr=0.01)
    before = everything(model, opt)
    kwargs = {"X": X, "y": y, **make(X, y)}
    with pytest.raises(ValueError, match=match):
        model.fit(
            kwargs.pop("X"), kwargs.pop("y"), loss=SCE(), optimizer=opt, epochs=2, verbose=0,
            **kwargs,
        )  # fmt: skip
    assert_unchanged(everything(model, opt), before)


class Watch(nn.Layer):
    """An identity layer counting training forwards; as a model's first layer it
    notes what the model and its optimizer hold as training step ``at`` begins."""

    def __init__(self, at=0):
        super().__init__()
        self.at, self.calls, self.model, self.opt, self.began = at, 0, None, None, None

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                self.began = everything(self.model, self.opt)
        return x

    def backward(self, grad_out, *, input_grad=True):
        return grad_out if input_grad else None


class Failing(nn.Layer):
    """An identity layer whose forward or backward raises ``error`` at training step ``at``."""

    def __init__(self, at, where, error):
        super().__init__()
        self.at, self.where, self.error, self.calls = at, where, error, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.where == "forward" and self.calls == self.at:
                raise self.error("failing forward")
        return x

    def backward(self, grad_out, *, input_grad=True):
        if self.where == "backward" and self.calls == self.at:
            raise self.error("failing backward")
        return grad_out if input_grad else None


@pytest.mark.parametrize("where", ["forward", "backward"])
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_failing_step_leaves_the_model_as_it_was_before_that_step(where, error):
    X, y = problem()
    watch = Watch(at=7)
    # The failure comes after batch norm and both dropouts moved in the step's forward.
    model = nn.Sequential(watch, *noisy_model(), Failing(at=7, where=where, error=error))
    model.eval()
    opt = gn.optim.Adam(model.parameters(), lr=0.01)
    watch.model, watch.opt = model, opt
    with pytest.raises(error, match=f"failing {where}"):
        model.fit(X, y, loss=SCE(), optimizer=opt, epochs=3, batch_size=8, verbose=0)
    after = everything(model, opt)
    assert type(after["fitted"][0]) is SCE and after["fitted"][1] is opt
    assert after["training"] is False  # the mode it had before fit
    began = {**watch.began, "training": False, "fitted": after["fitted"]}
    assert_unchanged(after, began)
    assert opt.steps == 6
    assert all(p._grad_is_zero for p in model.parameters())


def test_the_first_forward_does_not_run_before_the_labels_are_checked():
    X, y = problem()
    watch = Watch()
    model = nn.Sequential(watch, nn.Dense(4, 3, seed=0))
    with pytest.raises(ValueError, match="label"):
        model.fit(X, np.where(y == 0, 5, y), loss=SCE(), optimizer="sgd", verbose=0)
    assert watch.calls == 0  # the labels were checked on an evaluation-mode forward


class Recorder(nn.Layer):
    """An identity layer that keeps the number of rows of each training batch
    and the rows' first column."""

    def __init__(self):
        super().__init__()
        self.sizes, self.rows = [], []

    def forward(self, x):
        if self.training:
            self.sizes.append(x.shape[0])
            self.rows.extend(np.asarray(x)[:, 0].astype(int))
        return x

    def backward(self, grad_out, *, input_grad=True):
        return grad_out if input_grad else None


@pytest.mark.parametrize("n, batch_size, sizes", [(10, 3, [3, 3, 4]), (9, 4, [4, 5]), (3, 2, [3])])
def test_a_last_batch_of_one_row_is_folded_into_the_one_before_with_batch_norm(
    n, batch_size, sizes
):
    X, y = problem(n)
    X[:, 0] = np.arange(n)
    recorder = Recorder()
    model = nn.Sequential(
        recorder, nn.Dense(4, 6, seed=0), nn.BatchNorm1d(6), nn.Dense(6, 3, seed=1)
    )
    history = model.fit(
        X, y, loss=SCE(), optimizer="adam", epochs=2, batch_size=batch_size, verbose=0, seed=0
    )
    assert recorder.sizes == sizes * 2
    assert sorted(recorder.rows[:n]) == sorted(recorder.rows[n:]) == list(range(n))
    assert len(history.epoch) == 2
    expected = model.evaluate(X, y)  # the epoch's loss is a mean over rows, not over steps
    assert np.isfinite(history.history["loss"]).all() and np.isfinite(expected["loss"])


def test_without_batch_norm_a_last_batch_of_one_row_trains_alone():
    X, y = problem(10)
    recorder = Recorder()
    model = nn.Sequential(recorder, nn.Dense(4, 3, seed=0))
    model.fit(X, y, loss=SCE(), optimizer="sgd", batch_size=3, verbose=0, shuffle=False)
    assert recorder.sizes == [3, 3, 3, 1]


def test_cli_trains_with_batch_norm_and_a_last_batch_of_one_row(capsys):
    """1438 training rows, batches of 3: the last one would hold one row."""
    argv = ["train", "--batch-norm", "--batch-size", "3", "--epochs", "1", "--hidden", "8"]
    assert cli.main([*argv, "--verbose", "0", "--schedule", "none", "-o", ""]) == 0
    assert "test accuracy" in capsys.readouterr().out
