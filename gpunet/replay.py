"""Training steps on the CPU run again from the kernel calls they made.

On a small network the Python around the kernels costs more than the
kernels: each layer checks its input, each op checks its arrays and their
overlaps, each launcher its shapes. A training step whose layers keep their
arrays from one step to the next (their outputs, scratch, the parameters'
flat buffers) and whose batch arrives in the same buffer each time makes
the same registry kernel calls, with the same arrays and scalars, at every
step: :class:`HostReplay` records those calls and, once two consecutive
steps have made the very same calls, runs later steps as the recorded calls
alone. It is the host's counterpart of a CUDA graph (``gpunet.graphs``).

What a replay cannot see it refuses, so that a replay always does what the
step would have done:

- Only work that goes through the kernel registry is recorded. Layers and
  losses declare ``host_replay = True`` in their own class body when their
  forward and backward do all their array work there and change no Python
  state a later step reads; a subclass that does not declare it again, or
  a model with one such layer, is never replayed.
- Two records must agree call by call: the same kernel, the same array
  objects, equal scalars. A step that allocates an array, draws random
  numbers (a new offset each step) or feeds a new batch view records
  differently each time, and runs eagerly.
- A kernel that returns something other than None, a bool or one of the
  arrays it was given (a count the step branches on, such as the
  probabilities check of binary cross-entropy) makes the step eager: a
  replay does not branch.
"""

from __future__ import annotations

import threading

import numpy as np

from . import dispatch, parameter

__all__ = ["HostReplay", "replayable", "step_replayable"]

#: Records a HostReplay makes in all, after which inputs without a replay run eagerly.
MAX_RECORDS = 6

_lock = threading.Lock()  # one recording at a time: it swaps the registry's entries
_recording = set()  # ids of the threads recording now


def replayable(obj) -> bool:
    """Whether ``obj`` (a layer, model or loss) declares ``host_replay`` in
    its own class body, and so does each of its ``layers``."""
    if not type(obj).__dict__.get("host_replay", False):
        return False
    return all(replayable(layer) for layer in getattr(obj, "layers", ()))


def step_replayable(model, loss_fn) -> bool:
    """Whether training steps of ``model`` with ``loss_fn`` may be replayed:
    the model on the CPU, and both declaring ``host_replay``."""
    return model.device.type == "cpu" and replayable(model) and replayable(loss_fn)


def recording() -> bool:
    """Whether this thread is recording a step: its kernel calls must then go
    through the registry, where the record sees them."""
    return bool(_recording) and threading.get_ident() in _recording


def _record(function, args):
    """(function(*args), [(kernel, args, kwargs), ...]): the registry CPU
    kernel calls the call made from this thread, outermost only; the list is
    None when one returned what a replay could not reproduce."""
    thread = threading.get_ident()
    if thread in _recording:  # a step inside a recorded step: the outer record has its calls
        return function(*args), None
    registry = dispatch._registry["cpu"]
    calls, depth, refused = [], [0], []

    def recording(kernel):
        def call(*a, **kw):
            if depth[0] or threading.get_ident() != thread:
                return kernel(*a, **kw)
            depth[0] += 1
            try:
                result = kernel(*a, **kw)
            finally:
                depth[0] -= 1
            if not _reproducible(result, a, kw):
                refused.append(kernel)
            calls.append((kernel, a, kw))
            return result

        return call

    with _lock:
        originals = dict(registry)
        registry.update({op: recording(kernel) for op, kernel in originals.items()})
        _recording.add(thread)
        try:
            result = function(*args)
        finally:
            _recording.discard(thread)
            registry.update(originals)
    return result, (None if refused else calls)


def _reproducible(result, args, kwargs) -> bool:
    """Whether a replay, which drops results, loses nothing by dropping
    ``result``: None, a bool (a launcher saying it took its arrays) or one
    of the arrays it was given."""
    if result is None or type(result) is bool:
        return True
    if type(result) is tuple:
        return all(_reproducible(r, args, kwargs) for r in result)
    return any(result is a for a in (*args, *kwargs.values()))


def _same(a, b) -> bool:
    """Whether two recorded arguments are the same to a kernel: one array
    object, or equal values of one type."""
    if type(a) is not type(b):
        return False
    if type(a) is tuple or type(a) is list:
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or not isinstance(a, (int, float, str, bytes, np.generic)):
        return a is b
    return bool(a == b)


class HostReplay:
    """``step(*inputs)`` replayed from its recorded kernel calls.

    ``step`` reads its arrays from ``inputs`` and the objects it closes
    over, and writes its results to arrays it keeps; ``parameters`` are the
    parameters whose gradients it writes. Call the object as the step: the
    first calls with a set of input arrays run it eagerly and record; once
    two records of one set agree, later calls with the very same arrays
    (and the same gradient state of the parameters) replay the record and
    return what the recorded call returned. Each set of inputs (a full
    batch, a shorter last one) has a record of its own; after
    ``MAX_RECORDS`` records in all, calls that find none run eagerly."""

    def __init__(self, step, parameters):
        self.step, self.parameters = step, list(parameters)
        self.records = 0
        # ids of the inputs -> (key, calls, result, flags after): the last
        # record of those inputs, and the one that two records agreed on
        self.candidates, self.replays = {}, {}

    def _key(self, inputs):
        return (inputs, tuple(p._grad_is_zero for p in self.parameters), parameter.bindings)

    def __call__(self, *inputs):
        if recording():
            return self.step(*inputs)  # inside a recorded step: run its kernels through it
        ids = tuple(map(id, inputs))
        found = self.replays.get(ids)
        if found is not None and self._matches(found[0], inputs):
            _, calls, result, flags = found
            for kernel, args, kwargs in calls:
                kernel(*args, **kwargs)
            for p, flag in zip(self.parameters, flags, strict=True):
                p._grad_is_zero = flag
            return result
        if self.records >= MAX_RECORDS:
            return self.step(*inputs)
        self.records += 1
        key = self._key(inputs)
        result, calls = _record(self.step, inputs)
        flags = tuple(p._grad_is_zero for p in self.parameters)
        record = (key, calls, result, flags)
        previous, self.candidates[ids] = self.candidates.get(ids), record
        if calls is not None and previous is not None and self._agree(previous, record):
            self.replays[ids] = record
        return result

    def _matches(self, key, inputs) -> bool:
        recorded, flags, bindings = key
        return (
            all(a is b for a, b in zip(inputs, recorded, strict=True))
            and bindings == parameter.bindings
            and all(p._grad_is_zero is f for p, f in zip(self.parameters, flags, strict=True))
        )

    @staticmethod
    def _agree(a, b) -> bool:
        (key_a, calls_a, result_a, flags_a), (key_b, calls_b, result_b, flags_b) = a, b
        if calls_a is None or len(calls_a) != len(calls_b) or flags_a != flags_b:
            return False
        if not (_same(key_a, key_b) and _same(result_a, result_b)):
            return False
        return all(
            ka is kb and _same(args_a, args_b) and _same(kw_a, kw_b)
            for (ka, args_a, kw_a), (kb, args_b, kw_b) in zip(calls_a, calls_b, strict=True)
        )
