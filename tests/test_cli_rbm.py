"""``gpunet rbm``: a tiny training run on the bundled digits, its per-epoch
pseudo-likelihood, the filters image and the logistic-regression check."""

import re

import pytest

from gpunet import cli


def test_rbm_trains_and_reports(capsys, tmp_path):
    argv = ["rbm", "--components", "8", "--epochs", "2", "--batch-size", "50", "--device", "cpu"]
    assert cli.main(argv + ["--momentum", "0.5", "-k", "2", "--no-persistent"]) == 0
    out = capsys.readouterr().out
    assert "8 hidden units on cpu, 1438 training digits" in out
    scores = [float(s) for s in re.findall(r"epoch\s+\d+\s+pseudo-likelihood\s+(\S+)", out)]
    assert len(scores) == 2 and all(s < 0 for s in scores)
    assert "trained in" in out


def test_rbm_plot_and_accuracy(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    path = tmp_path / "filters.png"
    argv = ["rbm", "--components", "16", "--epochs", "3", "--device", "cpu", "--plot", str(path)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert path.stat().st_size > 100 and f"filters saved to {path}" in out
    accuracy = float(re.search(r"test accuracy (\S+)", out)[1])
    assert accuracy > 0.5
