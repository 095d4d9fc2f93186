"""Whether the machine was busy while ``gpunet bench`` ran.

Two signs: the 1-minute load average when the run starts (other processes
waiting for or holding the cores), and the share of the CPUs' time that other
processes used during the run, from the system's busy time (``/proc/stat``,
Linux) less this process's own CPU time. Rows whose samples spread widely
(:data:`SPREAD_LIMIT`) are flagged on their own.
"""

from __future__ import annotations

import dataclasses
import os
import time

#: A row is flagged when (slowest - fastest) / median of its samples exceeds this.
SPREAD_LIMIT = 0.25
#: The run is flagged when the load average at its start reaches this many per core.
LOAD_PER_CORE = 0.5
#: The run is flagged when other processes used more than this share of the CPUs' time.
OTHERS_LIMIT = 0.1


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _busy_seconds() -> float | None:
    """CPU seconds the whole system has spent busy since boot (None where
    ``/proc/stat`` is absent)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal ...
    values = [int(v) for v in fields[1:]]
    busy = sum(values[:8]) - values[3] - values[4]
    return busy / os.sysconf("SC_CLK_TCK")


def spread(samples: list[float]) -> float:
    """(slowest - fastest) / median of ``samples``."""
    ordered = sorted(samples)
    return (ordered[-1] - ordered[0]) / ordered[len(ordered) // 2]


@dataclasses.dataclass
class LoadMonitor:
    """Call ``start()`` before the run and ``stop()`` after; then
    ``load_average`` (at the start, None where unknown), ``others`` (the
    share of the CPUs' time other processes used, None where unknown) and
    ``busy`` (either above its limit)."""

    load_average: float | None = None
    others: float | None = None
    cores: int = dataclasses.field(default_factory=cores)

    def start(self) -> None:
        try:
            self.load_average = os.getloadavg()[0]
        except (AttributeError, OSError):
            self.load_average = None
        self._wall, self._own, self._busy = (
            time.perf_counter(),
            time.process_time(),
            _busy_seconds(),
        )

    def stop(self) -> None:
        busy = _busy_seconds()
        if busy is None or self._busy is None:
            return
        wall = time.perf_counter() - self._wall
        own = time.process_time() - self._own
        self.others = max(0.0, (busy - self._busy - own) / (wall * self.cores))

    @property
    def busy(self) -> bool:
        loaded = self.load_average is not None and self.load_average >= LOAD_PER_CORE * self.cores
        return loaded or (self.others is not None and self.others > OTHERS_LIMIT)

    def describe(self) -> str:
        """One line on the machine's load."""
        parts = []
        if self.load_average is not None:
            parts.append(f"load average {self.load_average:.2f} on {self.cores} cores at the start")
        if self.others is not None:
            parts.append(f"other processes used {self.others:.0%} of the CPUs during the run")
        verdict = "BUSY, times are unreliable" if self.busy else "quiet"
        return f"{verdict} ({'; '.join(parts) or 'no load figures on this system'})"
