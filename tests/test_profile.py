"""gn.profile(): launches, copies and the summary table, counted under the
CUDA simulator as on a GPU."""

import numpy as np
import pytest
from gpunet.kernels import _cuda

import gpunet as gn


def test_profile_without_cuda_work_records_nothing():
    with gn.profile() as prof:
        gn.ops.relu(np.ones(3, np.float32))
    assert (prof.launches, prof.by_kernel, prof.copies) == (0, {}, [])
    assert "total" in prof.table()
    assert not _cuda.observers


@pytest.mark.cuda
def test_profile_counts_the_launches_the_simulator_runs(launches):
    x = gn.to_device(np.linspace(-1, 1, 12, dtype=np.float32), "cuda")
    launches.clear()
    with gn.profile() as prof:
        y = gn.ops.relu(x)
        gn.ops.sigmoid(y, out=y)
        gn.ops.relu(y)
    assert prof.launches == len(launches) == 3
    assert prof.by_kernel == {"activations.relu": 2, "activations.sigmoid": 1}
    assert [e.name for e in prof.events] == [
        "activations.relu",
        "activations.sigmoid",
        "activations.relu",
    ]
    first = prof.events[0]
    assert first.grid == 1 and first.block == _cuda.ELEMENTWISE_THREADS
    assert first.host_seconds > 0 and first.device_seconds is None  # no GPU clock here
    table = prof.table()
    assert "activations.relu" in table and "total" in table


@pytest.mark.cuda
def test_profile_records_copies_and_puts_numba_back():
    array_class = type(_cuda.cuda.device_array(1, np.float32))
    before = (_cuda.cuda.to_device, array_class.copy_to_host, array_class.copy_to_device)
    owned = set(vars(array_class))
    host = np.arange(6, dtype=np.float64)
    with gn.profile() as prof:
        d = gn.to_device(host, "cuda")
        d.copy_to_device(host)
        d.copy_to_device(_cuda.cuda.to_device(host))
        back = gn.to_numpy(d)
    np.testing.assert_array_equal(back, host)
    assert [(c.direction, c.nbytes) for c in prof.copies] == [
        ("host_to_device", 48),
        ("host_to_device", 48),
        ("host_to_device", 48),
        ("device_to_device", 48),
        ("device_to_host", 48),
    ]
    assert prof.launches == 0
    assert "device_to_host" in prof.table()
    after = (_cuda.cuda.to_device, array_class.copy_to_host, array_class.copy_to_device)
    assert after == before and set(vars(array_class)) == owned


@pytest.mark.cuda
def test_profiles_nest_and_stop_at_the_end_of_their_block():
    x = gn.to_device(np.ones(4, np.float32), "cuda")
    with gn.profile() as outer:
        gn.ops.tanh(x)
        with gn.profile() as inner:
            gn.ops.relu(x)
        gn.ops.tanh(x)
    gn.ops.relu(x)
    assert inner.by_kernel == {"activations.relu": 1}
    assert outer.by_kernel == {"activations.tanh": 2, "activations.relu": 1}
    assert not _cuda.observers
