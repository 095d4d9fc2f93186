"""The command line's handling of mistakes and interruptions: every bad
invocation is one line on stderr, ``gpunet <command>: ...``, exit status 2,
before any work (nothing on stdout); Ctrl-C during ``gpunet train``, in
training and in compilation, exits with status 130 after saving a checkpoint
that ``--resume`` continues; ``gpunet predict`` uses a saved model."""

import os
import pickle
import signal
import subprocess
import sys
import urllib.error

import numpy as np
import pytest

import gpunet as gn
from gpunet import cli, serialization
from gpunet.cli import predict, rbm, train

NO_GPU = gn.cuda_status()[0] == 0
COMMANDS = ("info", "train", "rbm", "bench", "predict")
#: A CUDA device that does not exist here.
MISSING_CUDA = "cuda" if NO_GPU else "cuda:99"


def _work_began(*args, **kwargs):
    raise AssertionError("work began before the arguments were checked")


@pytest.fixture
def no_work(monkeypatch):
    """Any command that starts its work fails the test."""
    monkeypatch.setattr(train, "load_data", _work_began)
    monkeypatch.setattr(rbm, "_split", _work_began)
    monkeypatch.setattr(predict, "_read_data", _work_began)
    monkeypatch.setattr("gpunet.benchmarks.Bench", _work_began)
    saved = gn._device._default_device
    yield
    gn._device._default_device = saved


def _run(argv):
    """The exit status of ``gpunet argv`` run in this process."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return exc.code


def _bad_invocations(folder):
    """(argv, text the one-line message must hold) for each kind of mistake."""
    missing = os.path.join(folder, "missing")
    text_file = os.path.join(folder, "notes.txt")
    return [
        ([], "required"),
        (["fly"], "invalid choice"),
        (["train", "--device", MISSING_CUDA], "--device cpu"),
        (["train", "--device", "gpu"], "--device gpu: expected cpu, cuda, cuda:N or auto"),
        (["train", "--lr", "-1"], "argument --lr: expected a finite number in (0.0, inf]"),
        (["train", "--lr", "0"], "argument --lr"),
        (["train", "--lr", "inf"], "argument --lr"),
        (["train", "--lr", "nan"], "argument --lr"),
        (["train", "--lr", "fast"], "argument --lr: expected a number, got 'fast'"),
        (["train", "--seed", "-1"], "argument --seed: expected an integer >= 0, got '-1'"),
        (["train", "--validation-split", "1.5"], "argument --validation-split"),
        (["train", "--validation-split", "-0.1"], "argument --validation-split"),
        (["train", "--epochs", "0"], "argument --epochs: expected an integer >= 1"),
        (["train", "--batch-size", "0"], "argument --batch-size"),
        (["train", "--hidden", "64", "0"], "argument --hidden"),
        (["train", "--dropout", "1"], "argument --dropout"),
        (["train", "--momentum", "-0.5"], "argument --momentum"),
        (["train", "--weight-decay", "-1"], "argument --weight-decay"),
        (["train", "--optimizer", "lbfgs"], "argument --optimizer: invalid choice"),
        (["train", "--epochs"], "argument --epochs: expected one argument"),
        (["train", "--colour"], "unrecognized arguments: --colour"),
        (["train", "--dataset", "mnist", "--data-dir", folder], "--download"),
        (["train", "--dataset", "mnist", "--data-dir", missing], "train-images-idx3-ubyte"),
        (
            ["train", "--dataset", "mnist", "--download", "--data-dir", f"{missing}/mnist"],
            "cannot create or write",
        ),
        (["train", "--output", f"{missing}/model.npz"], "does not exist"),
        (["train", "--plot", folder], "is a directory"),
        (["train", "--plot", f"{missing}/curves.png"], "--plot"),
        (["train", "--resume", f"{missing}.npz"], "--resume"),
        (["train", "--resume", text_file], "not a gpunet model file"),
        (["train", "--dbn", "16", "--hidden", "8"], "leave out --hidden"),
        (["train", "--dbn", "16", "--model", "lstm"], "--dbn: an option of --model mlp"),
        (["train", "--dbn", "16", "--activation", "relu"], "leave out --activation"),
        (["train", "--dbn", "16", "--batch-norm"], "--batch-norm"),
        (["train", "--dbn", "0"], "argument --dbn"),
        (["train", "--pretrain-epochs", "0"], "argument --pretrain-epochs"),
        (["rbm", "--components", "0"], "argument --components"),
        (["rbm", "--learning-rate", "0"], "argument --learning-rate"),
        (["rbm", "--epochs", "-2"], "argument --epochs"),
        (["rbm", "--batch-size", "0"], "argument --batch-size"),
        (["rbm", "-k", "0"], "argument -k"),
        (["rbm", "--momentum", "1"], "argument --momentum"),
        (["rbm", "--seed", "-1"], "argument --seed"),
        (["rbm", "--device", "gpu"], "--device gpu"),
        (["rbm", "--device", MISSING_CUDA], "--device cpu"),
        (["rbm", "--plot", f"{missing}/filters.png"], "--plot"),
        (["rbm", "--output", f"{missing}/rbm.pkl"], "--output"),
        (["rbm", "--resume", f"{missing}.pkl"], "--resume"),
        (["rbm", "--resume", text_file], "not a checkpoint of gpunet rbm"),
        (["bench", "--device", "tpu"], "--device tpu"),
        (["bench", "--json", f"{missing}/bench.json"], "--json"),
        (["bench", "--only", "everything"], "argument --only: invalid choice"),
        (["predict"], "required: MODEL, DATA"),
        (["predict", f"{missing}.npz", text_file], "MODEL"),
        (["predict", text_file, text_file], "not a gpunet model file"),
        (["predict", "--batch-size", "0", text_file, text_file], "argument --batch-size"),
    ]


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "notes.txt").write_text("1 2 3\n")
    return str(tmp_path)


def test_bad_invocations_are_one_line_and_exit_2_before_any_work(no_work, folder, capsys):
    for argv, message in _bad_invocations(folder):
        status = _run(argv)
        out, err = capsys.readouterr()
        command = f"gpunet {argv[0]}" if argv and argv[0] in COMMANDS else "gpunet"
        assert status == 2, (argv, out, err)
        assert out == "", (argv, out)
        assert err.count("\n") == 1 and err.startswith(f"{command}: "), (argv, err)
        assert message in err, (argv, err)


def test_environment_device_and_missing_matplotlib_are_usage_errors(
    no_work, folder, monkeypatch, capsys
):
    monkeypatch.setenv("GPUNET_DEVICE", "gpu")
    assert _run(["train"]) == 2
    assert (
        capsys.readouterr().err
        == "gpunet train: GPUNET_DEVICE=gpu: expected cpu, cuda, cuda:N or auto\n"
    )
    monkeypatch.delenv("GPUNET_DEVICE")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    for argv in (["train"], ["rbm"]):
        assert _run([*argv, "--device", "cpu", "--plot", os.path.join(folder, "p.png")]) == 2
        assert "--plot needs matplotlib: pip install 'gpunet[plot]'" in capsys.readouterr().err


def test_ctrl_c_in_rbm_saves_the_last_epoch_and_resume_ends_where_a_whole_run_does(tmp_path):
    argv = ["rbm", "--components", "8", "--device", "cpu"]
    status, out, err = _interrupted(
        tmp_path, "  epoch   2", [*argv, "--epochs", "100000", "-o", "rbm.pkl"]
    )
    assert status == 130, out + err
    assert "Traceback" not in err and "Traceback" not in out
    checkpoint = tmp_path / "rbm-interrupted.pkl"
    assert f"--resume {checkpoint.name}" in out
    done = rbm._read_checkpoint(checkpoint)["epochs"]
    assert done >= 2 and f"stopped after epoch {done} of 100000" in out
    total = str(done + 2)
    resumed, whole = tmp_path / "resumed.pkl", tmp_path / "whole.pkl"
    resume = ["--resume", str(checkpoint)]
    assert cli.main([*argv, "--epochs", total, *resume, "-o", str(resumed)]) == 0
    assert cli.main([*argv, "--epochs", total, "-o", str(whole)]) == 0
    a, b = (pickle.loads(path.read_bytes()) for path in (resumed, whole))
    np.testing.assert_array_equal(a.components_, b.components_)
    np.testing.assert_array_equal(a.h_samples_, b.h_samples_)
    assert _run([*argv, "--epochs", str(done), "--resume", str(checkpoint)]) == 2


def test_download_failure_names_the_address_and_the_fix(monkeypatch, tmp_path, capsys):
    def offline(cache_dir):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(gn.datasets, "fetch_mnist", offline)
    argv = ["train", "--dataset", "mnist", "--download", "--data-dir", str(tmp_path)]
    assert _run([*argv, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"gpunet train: cannot download MNIST from {gn.datasets.MNIST_URL} (")
    assert "pass it with --data-dir (without --download)" in err


def test_errors_during_work_are_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("the data\nwent missing")

    monkeypatch.setattr(train, "load_data", broken)
    assert _run(["train", "--device", "cpu", "--output", ""]) == 1
    err = capsys.readouterr().err
    assert err == (
        "gpunet train: RuntimeError: the data went missing (--debug shows the traceback)\n"
    )
    with pytest.raises(RuntimeError, match="went missing"):
        cli.main(["train", "--device", "cpu", "--output", "", "--debug"])


def test_predict_prints_classes_and_writes_probabilities(tmp_path, capsys):
    X, y = gn.datasets.load_digits()
    X = X[:40] / np.float32(16)
    with gn.device("cpu"):
        model = gn.nn.Sequential(gn.nn.Dense(64, 16, "relu", seed=0), gn.nn.Dense(16, 10, seed=1))
    model_path = tmp_path / "model.npz"
    model.save(model_path)
    np.save(tmp_path / "x.npy", X)
    np.savetxt(tmp_path / "x.csv", X, delimiter=",")
    expected = model.predict(X)
    for data in ("x.npy", "x.csv"):
        argv = ["predict", str(model_path), str(tmp_path / data), "--device", "cpu"]
        assert cli.main(argv) == 0
        classes = [int(line) for line in capsys.readouterr().out.split()]
        assert classes == expected.argmax(axis=1).tolist()
    out = tmp_path / "p.npy"
    assert cli.main([*argv, "--proba", "-o", str(out)]) == 0
    proba = np.load(out)
    assert proba.shape == (40, 10)
    np.testing.assert_allclose(proba, gn.ops.softmax(expected), rtol=1e-5)
    np.save(tmp_path / "narrow.npy", X[:, :10])
    assert _run(["predict", str(model_path), str(tmp_path / "narrow.npy")]) == 2
    err = capsys.readouterr().err
    assert err.endswith("expected 64 features a row (the model's input), got 10\n")


def _interrupted(folder, wait_for, argv, **env):
    """Start ``gpunet argv`` in ``folder``, send SIGINT once a line starting
    with ``wait_for`` is printed; (exit status, stdout, stderr)."""
    command = [sys.executable, "-m", "gpunet", *argv]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore", **env}
    proc = subprocess.Popen(
        command,
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A process started in the background ignores SIGINT, and so would the child.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(wait_for):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, "".join(seen) + out, err


def _interrupted_train(folder, wait_for, argv=(), **env):
    """``_interrupted`` for a small ``gpunet train`` on the CPU saving model.npz."""
    command = ["train", "--hidden", "16", "--schedule", "none"]
    command += ["--verbose", "2", "--device", "cpu", "-o", "model.npz", *argv]
    return _interrupted(folder, wait_for, command, **env)


def test_ctrl_c_in_training_saves_a_checkpoint_that_resume_continues(tmp_path, capsys):
    status, out, err = _interrupted_train(tmp_path, "epoch 2/", ["--epochs", "100000"])
    assert status == 130, out + err
    assert "Traceback" not in err and "Traceback" not in out
    checkpoint = tmp_path / "model-interrupted.npz"
    assert "stopped at epoch " in out and " of 100000\n" in out
    assert f"--resume {checkpoint.name}" in out
    done = serialization.read(checkpoint).checkpoint["fit"]["epoch"]
    assert done >= 2 and f"stopped at epoch {done + 1} of 100000" in out
    argv = ["train", "--hidden", "16", "--schedule", "none", "--verbose", "0", "--device", "cpu"]
    output = tmp_path / "resumed.npz"
    argv += ["--epochs", str(done + 1), "--resume", str(checkpoint), "-o", str(output)]
    assert cli.main(argv) == 0
    assert f"trained {done + 1} epochs" in capsys.readouterr().out
    assert gn.load(output)[0].weight.shape == (64, 16)


def test_ctrl_c_in_compilation_saves_a_checkpoint(tmp_path):
    # With the kernel cache off, the first epoch compiles when the signal comes.
    argv = ["--epochs", "5", "--batch-norm"]
    status, out, err = _interrupted_train(tmp_path, "Adam(", argv, GPUNET_KERNEL_CACHE="0")
    assert status == 130, out + err
    assert "Traceback" not in err and "Traceback" not in out
    assert "stopped at epoch 1 of 5" in out
    saved = serialization.read(tmp_path / "model-interrupted.npz")
    assert saved.checkpoint is not None
