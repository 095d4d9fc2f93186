"""The example scripts run end to end (short settings; MNIST replaced by a
small synthetic set of the same shapes, since the tests work offline)."""

import pathlib
import runpy
import sys

import numpy as np

import gpunet as gn

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def run_example(name, argv, monkeypatch):
    monkeypatch.setattr(sys, "argv", [name, *argv])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")


def test_train_digits(monkeypatch, capsys):
    run_example("train_digits.py", ["--epochs", "2"], monkeypatch)
    out = capsys.readouterr().out
    assert "hand-written loop: test accuracy" in out and "fit (2 epochs)" in out


def test_train_mnist(monkeypatch, capsys, tmp_path):
    rng = np.random.default_rng(0)

    def fake_mnist(cache_dir):
        assert cache_dir == str(tmp_path)
        split = [(rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)) for n in (96, 32)]
        return tuple(split)

    monkeypatch.setattr(gn.datasets, "fetch_mnist", fake_mnist)
    output = tmp_path / "mlp.npz"
    argv = ["--data-dir", str(tmp_path), "--epochs", "1", "--output", str(output)]
    run_example("train_mnist.py", argv, monkeypatch)
    assert "test accuracy" in capsys.readouterr().out
    assert gn.load(output)[0].weight.shape == (784, 512)
