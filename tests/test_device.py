"""Devices, the default-device rules, moving arrays, and dispatch by placement."""

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import HAVE_CUDA, SIMULATOR
from gpunet.kernels._table import OpKernels

import gpunet as gn
from gpunet import _device, dispatch


@pytest.fixture
def fresh_default(monkeypatch):
    """Forget the resolved default device so GPUNET_DEVICE is read again."""
    monkeypatch.setattr(_device, "_default_device", None)
    monkeypatch.delenv("GPUNET_DEVICE", raising=False)
    _device._log_cpu_fallback.cache_clear()


def test_device_strings_and_equality():
    assert str(gn.Device("cpu")) == "cpu"
    assert str(gn.Device("cuda", 1)) == "cuda:1"
    assert repr(gn.Device("cuda", 0)) == "Device('cuda:0')"
    assert gn.Device("cpu") == _device.CPU
    assert gn.devices()[0] == _device.CPU


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cpu:0", "", "cuda:-1"])
def test_bad_device_strings(spec):
    with pytest.raises(ValueError, match="expected 'cpu', 'cuda', 'cuda:N' or 'auto'"):
        gn.set_device(spec)


def test_device_spec_must_be_string_or_device():
    with pytest.raises(TypeError, match="expected a Device or a string"):
        gn.set_device(0)


@pytest.mark.skipif(HAVE_CUDA, reason="checks the fallback on a machine without CUDA")
def test_without_a_gpu_the_default_is_the_cpu_with_one_info_line(fresh_default, caplog):
    with caplog.at_level(logging.INFO, logger="gpunet"):
        assert gn.get_device() == _device.CPU
        assert gn.set_device("auto") == _device.CPU
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(messages) == 1 and "running on the CPU" in messages[0]
    assert gn.devices() == [_device.CPU]


@pytest.mark.skipif(HAVE_CUDA, reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "CUDA:1"])
def test_explicit_cuda_without_a_gpu_names_the_cause(spec):
    with pytest.raises(gn.DeviceError) as info:
        gn.set_device(spec)
    message = str(info.value)
    assert gn.cuda_status()[1] in message
    assert "gn.set_device('cpu')" in message and "GPUNET_DEVICE=cpu" in message


@pytest.mark.skipif(HAVE_CUDA, reason="checks the error on a machine without CUDA")
def test_gpunet_device_variable_asking_for_cuda_fails_clearly():
    env = dict(os.environ, GPUNET_DEVICE="cuda")
    result = subprocess.run(
        [sys.executable, "-c", "import gpunet as gn; gn.get_device()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "DeviceError" in result.stderr and "CUDA was requested" in result.stderr


def test_gpunet_device_variable_selects_the_cpu(fresh_default, monkeypatch):
    monkeypatch.setenv("GPUNET_DEVICE", "cpu")
    assert gn.get_device() == _device.CPU


def test_context_manager_nests_and_restores(fresh_default):
    before = gn.get_device()
    with gn.device("cpu") as dev:
        assert dev == _device.CPU and gn.get_device() == _device.CPU
        with gn.device("auto"):
            assert gn.get_device() == before
        assert gn.get_device() == _device.CPU
    assert gn.get_device() == before


def test_to_device_and_back_on_the_cpu():
    x = np.arange(6.0).reshape(2, 3)
    assert gn.to_device(x, "cpu") is x
    assert gn.to_numpy(x) is x
    np.testing.assert_array_equal(gn.to_device([1.0, 2.0], "cpu"), [1.0, 2.0])


def test_dispatch_refuses_unknown_ops_and_missing_kernels(monkeypatch):
    with pytest.raises(NotImplementedError, match="no op named 'nope'"):
        dispatch.kernel_for("nope", "cpu")
    monkeypatch.setitem(dispatch._registry["cpu"], "only_cpu", lambda: None)
    with pytest.raises(NotImplementedError, match=r"no cuda kernel for 'only_cpu' \(it has: cpu\)"):
        dispatch.kernel_for("only_cpu", "cuda")
    with pytest.raises(ValueError, match="device kind"):
        dispatch.kernel_for("relu", "tpu")


def test_every_op_has_both_kernels():
    ops = {op for op, _ in dispatch.registered()}
    assert {"relu", "softmax", "log_softmax_backward", "leaky_relu_backward"} <= ops
    for op in ops:
        assert (op, "cpu") in dispatch.registered() and (op, "cuda") in dispatch.registered()


def test_every_table_entry_names_a_reference_and_both_kernels():
    for module in dispatch.MODULES:
        for op, entry in module.KERNELS.items():
            assert isinstance(entry, OpKernels), op
            reference, cpu, cuda = entry
            assert reference.__name__.endswith("_ref"), (op, reference)
            assert reference.__module__ == module.__name__, (op, reference)
            assert callable(cpu) and callable(cuda), op
            assert cpu is not cuda, op
            assert dispatch.kernel_for(op, "cpu") is cpu
            assert dispatch.kernel_for(op, "cuda") is cuda


def test_every_kernels_module_with_entry_points_has_a_table_in_the_registry():
    from gpunet import ptxas

    for module in ptxas.kernel_modules():
        names = vars(module)
        entry_points = [  # op_cpu / op_cuda beside a reference op_ref
            name
            for name in names
            if name.endswith(("_cpu", "_cuda")) and name.rsplit("_", 1)[0] + "_ref" in names
        ]
        if entry_points or hasattr(module, "KERNELS"):
            assert module in dispatch.MODULES, module.__name__
            tabled = {f for entry in module.KERNELS.values() for f in entry[1:]}
            for name in entry_points:
                assert vars(module)[name] in tabled, f"{module.__name__}.{name} is in no table"


def spy_on(monkeypatch, op, kind):
    """Wrap the registered (op, kind) kernel; return the list of calls it records."""
    calls = []
    real = dispatch.kernel_for(op, kind)

    def spy(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setitem(dispatch._registry[kind], op, spy)
    return calls


def test_host_inputs_run_the_cpu_kernel(monkeypatch):
    cpu_calls = spy_on(monkeypatch, "sigmoid", "cpu")
    cuda_calls = spy_on(monkeypatch, "sigmoid", "cuda")
    y = gn.ops.sigmoid(np.zeros(3, np.float32))
    assert isinstance(y, np.ndarray) and len(cpu_calls) == 1 and not cuda_calls


@pytest.mark.cuda
def test_on_cuda_the_default_device_is_cuda_and_ops_run_cuda_kernels(fresh_default, monkeypatch):
    assert gn.get_device() == gn.Device("cuda", 0)
    cpu_calls = spy_on(monkeypatch, "softmax", "cpu")
    cuda_calls = spy_on(monkeypatch, "softmax", "cuda")
    x = gn.to_device(np.zeros((2, 3), np.float32))
    y = gn.ops.softmax(x)
    assert len(cuda_calls) == 1 and not cpu_calls
    assert not isinstance(y, np.ndarray)
    np.testing.assert_allclose(gn.to_numpy(y), 1 / 3, rtol=1e-6)


@pytest.mark.cuda
def test_devices_lists_the_gpu_and_says_when_it_is_the_simulator():
    cuda_devices = [d for d in gn.devices() if d.type == "cuda"]
    assert cuda_devices
    assert cuda_devices[0].is_simulator == SIMULATOR
    assert ("simulator" in cuda_devices[0].name.lower()) == SIMULATOR


@pytest.mark.cuda
def test_to_device_round_trip_and_no_copy_for_device_arrays():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    d = gn.to_device(x, "cuda")
    assert gn.to_device(d, "cuda") is d
    np.testing.assert_array_equal(gn.to_numpy(d), x)
    np.testing.assert_array_equal(gn.to_device(d, "cpu"), x)


@pytest.mark.cuda
def test_out_on_another_device_is_refused():
    x = gn.to_device(np.ones(4, np.float32), "cuda")
    with pytest.raises(gn.DeviceError, match="x on cuda, out on cpu"):
        gn.ops.relu(x, out=np.empty(4, np.float32))


@pytest.mark.cuda
def test_cuda_index_out_of_range():
    count = gn.cuda_status()[0]
    with pytest.raises(gn.DeviceError, match=f"only {count} CUDA device"):
        gn.set_device(f"cuda:{count}")


@pytest.mark.requires_gpu
@pytest.mark.parametrize("library", ["cupy", "torch"])
def test_foreign_cuda_arrays_are_used_without_copies(library):
    lib = pytest.importorskip(library)
    if library == "torch":
        x = lib.linspace(-3, 3, 64, device="cuda", dtype=lib.float32)
        pointer = x.data_ptr()
    else:
        x = lib.linspace(-3, 3, 64, dtype=lib.float32)
        pointer = x.data.ptr
    wrapped = gn.to_device(x, "cuda")
    assert wrapped.__cuda_array_interface__["data"][0] == pointer
    out = lib.empty_like(x)
    assert gn.ops.relu(x, out=out) is out
    np.testing.assert_array_equal(gn.to_numpy(out), np.maximum(gn.to_numpy(x), 0))
