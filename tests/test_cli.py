"""The ``gpunet`` command line: ``info`` (self-check on the current device) and
``info --kernels`` (ptxas report), in-process and as ``python -m gpunet``."""

import os
import re
import subprocess
import sys

import ptxas_halves
import pytest
from gpunet.kernels import _cuda

import gpunet as gn
from gpunet import cli, ptxas


def _row(out, name):
    """The self-check table's row for ``name``: its cells, or None."""
    for line in out.splitlines():
        cells = line.split()
        if cells and cells[0] == name:
            return cells
    return None


def test_info_passes_every_op(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for name in ("gpunet", "Python", "numpy", "numba", "numba-cuda", "CUDA toolkit"):
        assert re.search(rf"^\s+{re.escape(name)}\s+\S", out, re.M), name
    for device in gn.devices():
        assert re.search(rf"^\s+{re.escape(str(device))}\s+{re.escape(device.name)}$", out, re.M)
    if gn.cuda_status()[0] == 0:
        assert f"CUDA is unavailable: {gn.cuda_status()[1]}" in out
    assert f"self-check on {gn.get_device()}" in out
    assert f"  kernel cache: {cli.info._cache.describe()} (NUMBA_CACHE_DIR moves it)\n" in out
    ops = list(cli.info._public_ops(gn.ops)) + ["rng.uniform"]
    assert "softmax" in ops and "relu_backward" in ops
    for name in ops:
        row = _row(out, name)
        assert row is not None and row[1] == "PASS", f"{name}: {row}"


def test_info_fails_when_an_op_disagrees_or_has_no_reference(capsys, monkeypatch):
    references = cli.info._references()
    wrong_relu = {**references, "relu": lambda x: references["relu"](x) + 1e-3}
    ops = {"relu": gn.ops.relu, "tanh": gn.ops.tanh, "mystery": gn.ops.relu}
    monkeypatch.setattr(cli.info, "_public_ops", lambda module: ops)
    monkeypatch.setattr(cli.info, "_references", lambda: wrong_relu)
    assert cli.main(["info"]) == 1
    out = capsys.readouterr().out
    assert _row(out, "relu")[1:3] == ["FAIL", "1.00e-03"]
    assert _row(out, "tanh")[1] == "PASS"
    assert _row(out, "mystery")[1] == "ERROR"
    assert "mystery: LookupError: no reference mystery_ref" in out
    assert "2 of 4 checks passed" in out


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2
    assert "info" in capsys.readouterr().err


@pytest.mark.skip_on_cudasim("the simulator cannot compile to PTX")
@pytest.mark.parametrize(
    "half", [pytest.param(h, marks=pytest.mark.xdist_group(h)) for h in ptxas_halves.HALVES]
)
def test_info_kernels_lists_every_kernel(half, capsys, monkeypatch):
    # Each half of the catalogue on the worker that builds it for test_compile.
    specs = ptxas_halves.HALVES[half]
    monkeypatch.setattr(ptxas, "catalogue", lambda: specs)
    assert cli.main(["info", "--kernels"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\s+\S+\s+\S+\s+sm_\d+\s+\d+", out, re.M)
    assert len(rows) == sum(len(spec.signatures) for spec in specs) * len(cli.info.KERNEL_ARCHS)
    for spec in specs:
        for signature in spec.signatures:
            label = ptxas.signature_label(signature)
            for arch in cli.info.KERNEL_ARCHS:
                assert re.search(
                    rf"^\s+{re.escape(spec.name)}\s+{label}\s+{arch}\s+\d+\s+\d+\s+\d+\s+0\s+0$",
                    out,
                    re.M,
                ), f"{spec.name} [{label}] {arch}"


@pytest.mark.skipif(not _cuda.SIMULATOR, reason="checks the message under the CUDA simulator")
def test_info_kernels_needs_the_real_numba_cuda(capsys, monkeypatch):
    monkeypatch.setattr(cli.info, "_print_self_check", lambda gn: 0)
    assert cli.main(["info", "--kernels"]) == 1
    assert "not the CUDA simulator" in capsys.readouterr().out


def test_python_m_gpunet_info():
    proc = subprocess.run(
        [sys.executable, "-m", "gpunet", "info"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "checks passed" in proc.stdout
    assert "FAIL" not in proc.stdout
