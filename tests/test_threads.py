"""gn.set_num_threads and GPUNET_NUM_THREADS set Numba's and the BLAS's
thread pools together; wrong counts are refused before anything changes."""

import numba
import pytest

import gpunet as gn
from gpunet import threads


@pytest.fixture
def restore_threads():
    before = gn.thread_info()
    yield
    threads.set_num_threads(before["numba"])


def test_set_num_threads_sets_numba_and_blas(restore_threads):
    gn.set_num_threads(1)
    info = gn.thread_info()
    assert gn.get_num_threads() == numba.get_num_threads() == info["numba"] == 1
    assert info["blas"] and all(n == 1 for _, n in info["blas"])
    assert info["numba_max"] == numba.config.NUMBA_NUM_THREADS


@pytest.mark.parametrize("bad", [0, -1, numba.config.NUMBA_NUM_THREADS + 1, "2", 2.0, True])
def test_bad_counts_are_refused_before_anything_changes(restore_threads, bad):
    before = gn.thread_info()
    with pytest.raises(ValueError, match="expected the number of threads to be an integer from 1"):
        gn.set_num_threads(bad)
    assert gn.thread_info() == before


def test_the_environment_variable_applies(restore_threads, monkeypatch):
    monkeypatch.setenv("GPUNET_NUM_THREADS", "1")
    threads._from_environment()
    assert gn.thread_info()["numba"] == 1
    assert all(n == 1 for _, n in gn.thread_info()["blas"])
    monkeypatch.setenv("GPUNET_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="expected GPUNET_NUM_THREADS='many' to be an integer"):
        threads._from_environment()
