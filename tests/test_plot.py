"""gn.plot.learning_curves: a History or its dict, validation curves when
the fit had validation data, the loss on a log axis; errors for what it cannot draw."""

import pytest

import gpunet as gn
from gpunet import plot

pytest.importorskip("matplotlib")


def _drawn(monkeypatch, history, tmp_path):
    """The Figure learning_curves drew for ``history``, after saving it."""
    figures = []
    make = plot._figure
    monkeypatch.setattr(plot, "_figure", lambda **kw: figures.append(make(**kw)) or figures[-1])
    path = tmp_path / "curves.png"
    assert plot.learning_curves(history, path) == path
    assert path.read_bytes()[:4] == b"\x89PNG"
    return figures[0]


def _history(validation):
    history = gn.training.History()
    for epoch in range(4):
        logs = {"loss": 2.0 / (epoch + 1) ** 3, "accuracy": 0.5 + epoch / 10, "lr": 1e-3}
        if validation:
            logs.update(val_loss=2.5 / (epoch + 1) ** 2, val_accuracy=0.4 + epoch / 10)
        history.append(epoch, logs)
    return history


@pytest.mark.parametrize("as_dict", [False, True])
def test_curves_show_validation_and_the_loss_on_a_log_axis(monkeypatch, tmp_path, as_dict):
    history = _history(validation=True)
    figure = _drawn(monkeypatch, history.history if as_dict else history, tmp_path)
    loss, accuracy = figure.axes
    assert loss.get_ylabel() == "loss" and loss.get_yscale() == "log"
    assert accuracy.get_ylabel() == "accuracy" and accuracy.get_yscale() == "linear"
    for ax, name in ((loss, "loss"), (accuracy, "accuracy")):
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert set(lines) == {"training", "validation"}
        assert list(lines["training"].get_xdata()) == [1, 2, 3, 4]
        assert list(lines["validation"].get_ydata()) == history.history[f"val_{name}"]


def test_curves_without_validation_have_one_line(monkeypatch, tmp_path):
    figure = _drawn(monkeypatch, _history(validation=False), tmp_path)
    assert [line.get_label() for line in figure.axes[0].get_lines()] == ["training"]


def test_what_cannot_be_drawn_is_refused(tmp_path):
    with pytest.raises(TypeError, match="expected a History or its .history dict, got list"):
        plot.learning_curves([1.0, 0.5], tmp_path / "a.png")
    with pytest.raises(ValueError, match="at least one epoch"):
        plot.learning_curves({"loss": []}, tmp_path / "a.png")
    with pytest.raises(ValueError, match="expected 2 values of 'accuracy'"):
        plot.learning_curves({"loss": [1.0, 0.5], "accuracy": [0.1]}, tmp_path / "a.png")
    assert not (tmp_path / "a.png").exists()
