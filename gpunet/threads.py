"""The CPU thread pools gpunet's work runs on, set together.

gpunet's CPU kernels alternate between two pools: Numba's (the parallel
``@njit`` kernels) and the BLAS behind numpy's matrix products (OpenBLAS,
MKL...). ``set_num_threads(n)`` gives both ``n`` threads, Numba's through
``numba.set_num_threads`` (which applies to launches from the calling thread)
and the BLAS's through threadpoolctl; ``GPUNET_NUM_THREADS=n`` does the same
when gpunet is imported. ``thread_info()`` reports what is in effect.

Both pools split each kernel evenly over their threads, so a kernel waits for
its slowest thread: with a core taken by another process, a pool of as many
threads as cores runs at that core's share. On a shared machine fewer threads
than cores (``GPUNET_NUM_THREADS=1`` on two) hold up better; the README has
the measurements.
"""

from __future__ import annotations

import functools
import os

import numba
import threadpoolctl

#: The variable read when gpunet is imported.
ENVIRONMENT = "GPUNET_NUM_THREADS"


def _checked(n, what: str) -> int:
    limit = numba.config.NUMBA_NUM_THREADS
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= limit:
        raise ValueError(
            f"expected {what} to be an integer from 1 to {limit} (NUMBA_NUM_THREADS), got {n!r}"
        )
    return n


def set_num_threads(n: int) -> None:
    """Run gpunet's CPU work on ``n`` threads: Numba's parallel kernels
    (launched from this thread) and the BLAS that numpy's products call.
    ``n`` is from 1 to ``NUMBA_NUM_THREADS`` (the cores, unless set)."""
    n = _checked(n, "the number of threads")
    numba.set_num_threads(n)
    threadpoolctl.threadpool_limits(n, user_api="blas")


def single_blas_thread():
    """A context in which the BLAS runs on one thread (entering and leaving
    cost about 10 us): for a run of small products between serial kernels,
    where waking a second BLAS thread per product costs more than it saves
    (and far more on a busy host, where that thread waits for a core)."""
    return _controller().limit(limits=1, user_api="blas")


@functools.cache
def _controller():
    """The thread pools loaded (found once: a new search costs about 0.4 ms)."""
    return threadpoolctl.ThreadpoolController()


def get_num_threads() -> int:
    """The threads Numba's parallel kernels launched from this thread run on."""
    return numba.get_num_threads()


def thread_info() -> dict:
    """{"numba": threads, "numba_max": NUMBA_NUM_THREADS, "blas": [(library,
    threads), ...]} for the pools in this process."""
    blas = [
        (info["internal_api"], info["num_threads"])
        for info in threadpoolctl.threadpool_info()
        if info.get("user_api") == "blas"
    ]
    return {
        "numba": numba.get_num_threads(),
        "numba_max": numba.config.NUMBA_NUM_THREADS,
        "blas": blas,
    }


def _from_environment() -> None:
    """Apply ``GPUNET_NUM_THREADS`` when it is set (ValueError naming it when it is wrong)."""
    value = os.environ.get(ENVIRONMENT)
    if value is None or value.strip() == "":
        return
    try:
        n = int(value)
    except ValueError:
        n = value
    set_num_threads(_checked(n, f"{ENVIRONMENT}={value!r}"))


_from_environment()
