"""CUDA graphs of training steps: the kernel launches of one call of a
function, captured once and replayed at the cost of one launch.

A replay runs the captured kernels on the arrays and scalars they were
captured with, so a function worth capturing reads its inputs from, and
writes its results to, the same device arrays every time, and changes no
host state that later launches depend on. :meth:`StepGraph.capture` refuses
(CaptureError) what it can tell would not replay: a kernel that takes
Numba's launch path, a cuBLAS product, or a host-device copy inside the
function.

On a GPU the graph is built by stream capture through ``cuda.core``: while
the function runs, gpunet's launches go into a graph builder instead of
running, and the finished graph is replayed on the default stream, after
and before the work queued there. Under the CUDA simulator, which has no
graphs, the launches are recorded in order instead and replayed one after
the other, the same semantics, so that what is captured can be tested
without a GPU.
"""

from __future__ import annotations

import contextlib

from .kernels import _cuda
from .kernels._cuda import CaptureError

__all__ = ["CaptureError", "StepGraph"]


class StepGraph:
    """The launches of one call of a function; ``replay()`` runs them again."""

    def __init__(self, graph, launches: int):
        self._graph, self.launches = graph, launches

    @classmethod
    def capture(cls, function) -> StepGraph:
        """Capture ``function()``'s launches without running them; CaptureError
        (and nothing captured) when any of them cannot be."""
        if _cuda.SIMULATOR:
            return cls._record(function)
        return cls._stream_capture(function)

    def replay(self) -> None:
        """Run the captured launches, in order, on the default stream."""
        _cuda.observe("graph", None, None, self._launch)

    def _launch(self):
        if _cuda.SIMULATOR:
            for run in self._graph:
                run()
        else:
            self._graph.launch(_cuda._default_stream())

    @classmethod
    def _record(cls, function) -> StepGraph:
        launches = []

        def record(name, griddim, blockdim, run):
            launches.append(run)

        with _capturing(record):
            function()
        return cls(launches, len(launches))

    @classmethod
    def _stream_capture(cls, function) -> StepGraph:
        from cuda.core import Device

        if _cuda._default_stream() is None:
            raise CaptureError("CUDA graphs are captured on one GPU only")
        stream = Device().create_stream()
        builder = stream.create_graph_builder().begin_building("thread_local")
        counted = []

        def count(name, griddim, blockdim, run):
            counted.append(name)
            return run()

        saved = _cuda._thread.stream
        _cuda._thread.stream = builder
        try:
            with _capturing(count):
                function()
        except BaseException:
            _cuda._thread.stream = saved
            try:
                builder.end_building()
            except Exception:  # the capture is already invalid: what raised says why
                pass
            raise
        _cuda._thread.stream = saved
        try:
            graph = builder.end_building().complete()
        except Exception as error:
            raise CaptureError(f"the CUDA graph could not be built: {error}") from error
        graph.upload(_cuda._default_stream())
        return cls(graph, len(counted))


@contextlib.contextmanager
def _capturing(observer):
    """While open: ``observer`` sees every launch, and the launch paths that
    cannot be captured raise, and so do Numba's host-device copies."""

    def refuse(name, original):
        def refused(*args, **kwargs):
            raise CaptureError(f"a host-device copy ({name}) inside a CUDA graph's function")

        return refused

    _cuda._thread.capturing = True
    _cuda.observers.append(observer)
    try:
        with _cuda.replaced_copies(refuse):
            yield
    finally:
        _cuda.observers.remove(observer)
        _cuda._thread.capturing = False
