"""``gn.profile()``: what the CUDA work in a block of code launched and copied.

::

    with gn.profile() as prof:
        model.fit(X, y, loss=loss, optimizer=opt, epochs=1)
    print(prof.launches, prof.by_kernel)
    print(prof.table())

Every kernel launch gpunet makes is recorded, with its catalogue name
("dense.gemm", "losses.softmax_cross_entropy", ...; cuBLAS products as
"cublas.gemm"), grid and block, and the host time the launch call took; on
a GPU also its run time, from CUDA events recorded around it on the default
stream and read when the block ends. Copies between host and device memory
through Numba (``to_device``, ``copy_to_host``, ``copy_to_device``) are
recorded with their direction and size. Under the CUDA simulator the counts
are the same as on a GPU (there are no device times), so tests can hold
launch budgets without one. Profiles nest: an inner one sees its own block,
an outer one everything.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import time

import numpy as np

from .kernels import _cuda


@dataclasses.dataclass
class Launch:
    """One kernel launch: ``name``, ``grid`` and ``block`` (None for cuBLAS),
    ``host_seconds`` (the launch call), ``device_seconds`` (its run on the
    GPU; None without one)."""

    name: str
    grid: object
    block: object
    host_seconds: float
    device_seconds: float | None = None


@dataclasses.dataclass
class Copy:
    """One copy: ``direction`` "host_to_device", "device_to_host" or
    "device_to_device", ``nbytes``, and ``host_seconds`` (the call, which
    waits for the copy where Numba's copies are synchronous)."""

    direction: str
    nbytes: int
    host_seconds: float


class Profile:
    """A context manager recording CUDA launches and copies (see the module)."""

    def __init__(self):
        self.events: list[Launch] = []
        self.copies: list[Copy] = []
        self._timers: list = []  # (Launch, start event, end event) until the block ends

    # --- results ---------------------------------------------------------------------

    @property
    def launches(self) -> int:
        """How many kernels were launched."""
        return len(self.events)

    @property
    def by_kernel(self) -> dict[str, int]:
        """Kernel name -> launches, most launched first."""
        return dict(collections.Counter(e.name for e in self.events).most_common())

    def table(self) -> str:
        """Launches per kernel with host (and GPU) times, then copies per
        direction, as text: the summary to read first."""
        rows = collections.defaultdict(list)
        for e in self.events:
            rows[e.name].append(e)
        timed = any(e.device_seconds is not None for e in self.events)
        head = ["kernel", "launches", "host us (total)", "host us (mean)"]
        if timed:
            head += ["GPU us (total)", "GPU us (mean)"]
        head.append("grid x block")
        lines = []
        for name, group in sorted(rows.items(), key=lambda kv: -len(kv[1])):
            host = sum(e.host_seconds for e in group) * 1e6
            line = [name, str(len(group)), f"{host:.1f}", f"{host / len(group):.1f}"]
            if timed:
                gpu = sum(e.device_seconds or 0.0 for e in group) * 1e6
                line += [f"{gpu:.1f}", f"{gpu / len(group):.1f}"]
            shapes = collections.Counter(
                f"{_dims(e.grid)} x {_dims(e.block)}" if e.grid is not None else "-" for e in group
            )
            line.append(shapes.most_common(1)[0][0] + (" ..." if len(shapes) > 1 else ""))
            lines.append(line)
        host_total = sum(e.host_seconds for e in self.events) * 1e6
        total = ["total", str(self.launches), f"{host_total:.1f}", ""]
        if timed:
            total += [f"{sum(e.device_seconds or 0.0 for e in self.events) * 1e6:.1f}", ""]
        lines.append(total + [""])
        text = _columns([head, *lines])
        if self.copies:
            by_direction = collections.defaultdict(list)
            for c in self.copies:
                by_direction[c.direction].append(c)
            copy_lines = [["copy", "count", "bytes", "host us (total)"]]
            for direction, group in sorted(by_direction.items()):
                copy_lines.append(
                    [
                        direction,
                        str(len(group)),
                        str(sum(c.nbytes for c in group)),
                        f"{sum(c.host_seconds for c in group) * 1e6:.1f}",
                    ]
                )
            text += "\n\n" + _columns(copy_lines)
        return text

    def __repr__(self) -> str:
        return f"Profile({self.launches} launches, {len(self.copies)} copies)"

    # --- recording -------------------------------------------------------------------

    def __enter__(self) -> Profile:
        _cuda.observers.append(self._launch)
        self._copies = contextlib.ExitStack()
        if _cuda.HAVE_NUMBA_CUDA:
            self._copies.enter_context(_cuda.replaced_copies(self._recorded_copy))
        return self

    def __exit__(self, *exc) -> None:
        _cuda.observers.remove(self._launch)
        self._copies.close()
        if self._timers:
            _cuda.cuda.synchronize()
            for launch, start, end in self._timers:
                launch.device_seconds = _cuda.cuda.event_elapsed_time(start, end) / 1e3
            self._timers.clear()

    def _launch(self, name, griddim, blockdim, run):
        timed = not _cuda.SIMULATOR
        if timed:
            start = _cuda.cuda.event()
            start.record()
        began = time.perf_counter()
        result = run()
        launch = Launch(name, griddim, blockdim, time.perf_counter() - began)
        if timed:
            end = _cuda.cuda.event()
            end.record()
            self._timers.append((launch, start, end))
        self.events.append(launch)
        return result

    def _recorded_copy(self, name, original):
        """``original`` (a Numba copy entry point), recording each copy it makes."""
        copies = self.copies

        def copy(*args, **kwargs):
            began = time.perf_counter()
            result = original(*args, **kwargs)
            if name == "to_device":
                direction, nbytes = "host_to_device", np.asarray(args[0]).nbytes
            elif name == "copy_to_host":
                direction, nbytes = "device_to_host", args[0].nbytes
            else:
                source = args[1]
                on_device = _cuda.is_device_array(source)
                direction = "device_to_device" if on_device else "host_to_device"
                nbytes = args[0].nbytes
            copies.append(Copy(direction, int(nbytes), time.perf_counter() - began))
            return result

        return copy


def profile() -> Profile:
    """Record the CUDA launches and copies of a ``with`` block (see the module)."""
    return Profile()


def _dims(d) -> str:
    return "x".join(str(v) for v in d) if isinstance(d, tuple) else str(d)


def _columns(rows) -> str:
    """``rows`` of strings as aligned text: the first column to the left, the rest right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
