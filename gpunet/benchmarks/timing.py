"""How ``gpunet bench`` and the asv suite time a callable.

Every callable is warmed up first (JIT compilation stays out); a time is the
median of several samples, each of enough calls to last about
``Settings.sample_seconds``; a peer ratio is the median, over rounds that run
the peer and gpunet alternately, of time(peer) / time(gpunet), so that the
machine's drift between fast and slow states cancels. Above 1, gpunet is
faster.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable

from ..kernels import _cuda

#: Pause for a thread pool to go idle, longer than OpenBLAS's workers keep
#: spinning after a product: a peer whose threads start meanwhile shares its
#: cores with them.
BLAS_IDLE_SECONDS = 0.3


@dataclasses.dataclass
class Settings:
    """How long to time. A time is the median of at least ``min_samples``
    samples, more while ``budget`` seconds last, at most ``max_samples``;
    each sample runs enough calls to last ``sample_seconds``. ``quick``
    shrinks the sizes and keeps a few short samples."""

    quick: bool = False

    @property
    def min_samples(self) -> int:
        return 3 if self.quick else 7

    @property
    def max_samples(self) -> int:
        return 5 if self.quick else 101

    @property
    def budget(self) -> float:
        return 0.0 if self.quick else 0.5

    @property
    def sample_seconds(self) -> float:
        # Long enough that a peer's threads still spinning when a sample
        # starts (OpenMP's, OpenBLAS's) take a small share of it.
        return 1e-4 if self.quick else 2e-2

    @property
    def idle_seconds(self) -> float:
        """The pause before each sample of a ratio between thread pools."""
        return 0.0 if self.quick else BLAS_IDLE_SECONDS

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full


def sync(device) -> None:
    """Wait for the work queued on ``device`` (a gpunet Device) to finish."""
    if device.type == "cuda":
        _cuda.cuda.synchronize()


def _per_sample(fn, device, seconds):
    """Calls of ``fn`` per sample of about ``seconds`` (timing one call)."""
    start = time.perf_counter()
    fn()
    sync(device)
    once = time.perf_counter() - start
    return max(1, math.ceil(seconds / max(once, 1e-9)))


def _sample(fn, device, number):
    """Seconds per call of ``fn`` over ``number`` calls."""
    start = time.perf_counter()
    for _ in range(number):
        fn()
    sync(device)
    return (time.perf_counter() - start) / number


def _rounds(settings: Settings):
    """Round numbers while the sample counts and the time budget allow."""
    deadline = time.perf_counter() + settings.budget
    done = 0
    while done < settings.min_samples or (
        done < settings.max_samples and time.perf_counter() < deadline
    ):
        yield done
        done += 1


def sample_times(fn: Callable, device, settings: Settings) -> list[float]:
    """Seconds per call of ``fn()`` in each sample (``fn`` called once first, to warm up)."""
    number = _per_sample(fn, device, settings.sample_seconds)
    return [_sample(fn, device, number) for _ in _rounds(settings)]


def median_time(fn: Callable, device, settings: Settings) -> float:
    """Median seconds per call of ``fn()`` (called once first, to warm up)."""
    return statistics.median(sample_times(fn, device, settings))


def median_ratio(
    peer: Callable, gpunet: Callable, device, settings: Settings, foreign_threads=False
) -> float:
    """Median over alternating rounds of time(peer) / time(gpunet).

    ``foreign_threads``: the peer runs a CPU thread pool of its own (torch's),
    so each sample waits ``settings.idle_seconds`` first for the other side's
    workers to stop spinning. Without the pause the peer, started while
    gpunet's OpenBLAS workers still spin, runs slower than after one of its
    own calls, and the ratio would credit gpunet with the difference."""
    idle = settings.idle_seconds if foreign_threads and device.type == "cpu" else 0.0
    n_peer = _per_sample(peer, device, settings.sample_seconds)
    n_ours = _per_sample(gpunet, device, settings.sample_seconds)
    ratios = []
    for _ in _rounds(settings):
        time.sleep(idle)
        ours = _sample(gpunet, device, n_ours)
        time.sleep(idle)
        ratios.append(_sample(peer, device, n_peer) / ours)
    return statistics.median(ratios)
