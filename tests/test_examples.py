"""The example scripts run end to end (short settings; MNIST replaced by a
small synthetic set of the same shapes, since the tests work offline)."""

import pathlib
import runpy
import sys
import urllib.error

import numpy as np
import pytest

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


def test_train_mnist_offline_names_the_address_and_the_fix(monkeypatch, tmp_path):
    def offline(cache_dir):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(gn.datasets, "fetch_mnist", offline)
    with pytest.raises(SystemExit) as exit_info:
        run_example("train_mnist.py", ["--data-dir", str(tmp_path)], monkeypatch)
    message = str(exit_info.value.code)
    assert "\n" not in message
    assert message.startswith(f"train_mnist.py: cannot download MNIST from {gn.datasets.MNIST_URL}")
    assert "Temporary failure in name resolution" in message and "--data-dir" in message
