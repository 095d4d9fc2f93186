"""``gpunet train``: the default digits run's pieces, a short run end to end
(saved model, learning curves), options, and argument errors."""

import re

import numpy as np
import pytest

import gpunet as gn
from gpunet import cli
from gpunet.cli import train


def test_short_run_saves_a_model_that_scores_like_the_report(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    model_path, plot_path = tmp_path / "digits.npz", tmp_path / "curves.png"
    plotted = []
    draw = gn.plot.learning_curves
    monkeypatch.setattr(gn.plot, "learning_curves", lambda h, p: plotted.append(h) or draw(h, p))
    argv = ["train", "--epochs", "3", "--hidden", "32", "--lr", "0.01", "--verbose", "0"]
    assert cli.main([*argv, "-o", str(model_path), "--plot", str(plot_path), "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "digits, 1438 training and 359 test samples" in out
    accuracy = float(re.search(r"test accuracy: ([0-9.]+)", out).group(1))
    assert accuracy > 0.8
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Without --validation-split the curves' validation is the test set's.
    assert plotted[0].history["val_accuracy"][-1] == pytest.approx(accuracy, abs=1e-4)
    model = gn.load(model_path)
    assert [type(layer).__name__ for layer in model] == ["Dense", "Dense"]
    assert model[0].weight.shape == (64, 32)
    args = _parse(["--seed", "3"])
    _, (X_test, y_test) = train.load_data(args)
    assert np.mean(model.predict(X_test).argmax(axis=1) == y_test) == pytest.approx(
        accuracy, abs=1e-4
    )


def _parse(argv):
    import argparse

    parser = argparse.ArgumentParser()
    train.add_parser(parser.add_subparsers())
    return parser.parse_args(["train", *argv])


def test_digits_split_is_stratified_and_seeded():
    (X_train, y_train), (X_test, y_test) = train.load_data(_parse([]))
    assert X_train.dtype == np.float32 and 0 <= X_train.min() and X_train.max() <= 1
    assert len(X_train) + len(X_test) == 1797 and len(X_test) == 359
    train_counts, test_counts = np.bincount(y_train), np.bincount(y_test)
    np.testing.assert_allclose(test_counts / (train_counts + test_counts), 0.2, atol=0.01)
    (_, y_again), _ = train.load_data(_parse([]))
    np.testing.assert_array_equal(y_again, y_train)
    (_, y_other), _ = train.load_data(_parse(["--seed", "1"]))
    assert not np.array_equal(y_other, y_train)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("schedule", ["none", "step", "cosine"])
def test_options_build_what_they_name(optimizer, schedule):
    args = _parse(
        [
            "--hidden",
            "16",
            "8",
            "--activation",
            "tanh",
            "--optimizer",
            optimizer,
            "--lr",
            "0.05",
            "--schedule",
            schedule,
            "--dtype",
            "float64",
        ]
    )
    model = train.build_model(args, 64, 10)
    assert [layer.config()["out_features"] for layer in model] == [16, 8, 10]
    assert [layer.activation for layer in model] == ["tanh", "tanh", None]
    assert model.dtype == np.float64
    opt = train._optimizer(args, model.parameters())
    assert type(opt).__name__ == {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}[optimizer]
    assert opt.lr == 0.05
    assert len(train._callbacks(args)) == (0 if schedule == "none" else 1)


def test_dropout_and_batch_norm_build_what_they_name():
    args = _parse(
        ["--hidden", "16", "8", "--dropout", "0.2", "--batch-norm", "--activation", "tanh"]
    )
    model = train.build_model(args, 64, 10)
    names = [type(layer).__name__ for layer in model]
    hidden = ["Dense", "BatchNorm1d", "Tanh", "Dropout"]
    assert names == [*hidden, *hidden, "Dense"]
    assert model[0].activation is None and model[3].p == 0.2
    plain = train.build_model(_parse(["--hidden", "16"]), 64, 10)
    assert [type(layer).__name__ for layer in plain] == ["Dense", "Dense"]


def test_lstm_model_reads_each_image_row_by_row():
    args = _parse(["--model", "lstm"])
    train.apply_defaults(args)
    assert (args.hidden, args.epochs, args.lr) == ([64], 30, 0.003)
    model = train.build_model(args, 8, 10)
    assert [type(layer).__name__ for layer in model] == ["LSTM", "LastStep", "Dense"]
    assert model[0].batch_first and model[0].hidden_size == 64
    stacked = train.build_model(
        _parse(["--model", "lstm", "--hidden", "16", "8", "--dropout", "0.1"]), 8, 10
    )
    assert [type(layer).__name__ for layer in stacked] == [
        "LSTM",
        "Dropout",
        "LSTM",
        "LastStep",
        "Dense",
    ]
    assert stacked[2].input_size == 16 and stacked[4].config()["in_features"] == 8
    X = np.arange(2 * 64, dtype=np.float32).reshape(2, 64)
    steps = train.sequences(X, "lstm")
    assert steps.shape == (2, 8, 8)
    np.testing.assert_array_equal(steps[1, 3], X[1, 24:32])  # step 3: the image's row 3
    assert train.sequences(X, "mlp") is X
    mlp = _parse([])
    train.apply_defaults(mlp)
    assert (mlp.hidden, mlp.epochs, mlp.lr, mlp.activation) == ([512], 40, 1e-3, "relu")
    for flag in (["--activation", "tanh"], ["--batch-norm"], ["--hidden"]):
        with pytest.raises(cli.UsageError, match=flag[0]):
            train.apply_defaults(_parse(["--model", "lstm", *flag]))


def test_dbn_pretrains_the_hidden_layers_then_fine_tunes(monkeypatch, capsys):
    """--dbn puts a DBN's weights, fitted on the training rows, into sigmoid
    hidden layers before fit starts; the output layer keeps its initialisation."""
    seen = {}
    fit = gn.nn.Sequential.fit

    def recording_fit(model, *args, **kwargs):
        seen["weights"] = [gn.to_numpy(p.data).copy() for p in model.parameters()]
        seen["layers"] = [type(layer).__name__ for layer in model.layers]
        return fit(model, *args, **kwargs)

    monkeypatch.setattr(gn.nn.Sequential, "fit", recording_fit)
    argv = ["train", "--dbn", "16", "8", "--pretrain-epochs", "2", "--epochs", "1"]
    assert cli.main([*argv, "--device", "cpu", "-o", "", "--verbose", "0"]) == 0
    assert "pretrained a deep belief network 64-16-8 (2 epochs a layer)" in capsys.readouterr().out
    X, y = gn.datasets.load_digits()
    train_rows, _ = train._stratified_split(y, 0.2, 0)
    dbn = gn.DBN((16, 8), n_iter=2, random_state=0, device="cpu")
    dbn.fit(X[train_rows] / np.float32(16))
    for i, rbm in enumerate(dbn.rbms_):
        np.testing.assert_array_equal(seen["weights"][2 * i], rbm.components_.T)
        np.testing.assert_array_equal(seen["weights"][2 * i + 1], rbm.intercept_hidden_)
    assert seen["layers"] == ["Dense", "Dense", "Dense"]
    head = gn.nn.Dense(8, 10, None, seed=1000)
    np.testing.assert_array_equal(seen["weights"][4], head.weight.data)
