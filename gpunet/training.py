"""Training loops for models: ``fit``, ``evaluate``, ``predict``, with a
``History`` of per-epoch metrics and callbacks (``EarlyStopping``,
``LearningRateScheduler``, ``ModelCheckpoint``, from ``gpunet.callbacks``),
and checkpoints that ``fit(..., resume=path)`` continues from.

:class:`Model` gives these to :class:`gpunet.nn.Sequential` as methods.
Data arrive as host arrays (numpy); mini-batches are gathered into buffers
the model reuses, on its device: on a GPU through pinned host memory and
an asynchronous copy stream, double-buffered so the host gathers batch k + 1
while the GPU computes batch k. Per-step losses and hit counts stay on the
device until the end of the epoch (and every few tenths of a second for the
progress bar), so the host never waits on the GPU at each step.

``fit`` checks all its inputs (validation data and the checkpoint to resume
from included) before it changes anything, and a training step that raises
leaves the model as it was before that step: the running statistics and the
random streams' positions are put back, the gradients cleared, and the
optimizer's update, the step's last act, has not begun.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings

import numpy as np
from tqdm.auto import tqdm

from . import distributed as _distributed
from . import losses as _losses
from . import optim as _optim
from . import random as _random
from . import serialization
from ._arrays import device_of
from ._device import Device, to_device, to_numpy
from .callbacks import (
    Callback,
    EarlyStopping,
    History,
    LearningRateScheduler,
    ModelCheckpoint,
)
from .graphs import CaptureError, StepGraph
from .kernels import _cuda
from .replay import HostReplay, step_replayable

__all__ = [
    "Callback",
    "EarlyStopping",
    "History",
    "LearningRateScheduler",
    "Model",
    "ModelCheckpoint",
]

#: Seconds between progress-bar refreshes (each one reads the metrics so far).
REFRESH_SECONDS = 0.2


# --- data -----------------------------------------------------------------------------


def _features(X, dtype, what="X"):
    X = to_numpy(X)
    if X.ndim not in (2, 3):
        raise ValueError(
            f"expected {what} of shape (samples, features) or (samples, steps, features), "
            f"got {X.shape}"
        )
    if X.dtype.kind not in "biuf":
        raise TypeError(f"expected numeric {what}, got dtype {X.dtype}")
    X = np.ascontiguousarray(X, dtype)
    if not np.isfinite(X).all():
        raise ValueError(f"{what} holds NaN or infinite values")
    return X


def _targets(y, n, loss, dtype, what="y"):
    y = to_numpy(y)
    if y.ndim == 0 or len(y) != n:
        raise ValueError(f"expected {what} with {n} rows like X, got shape {y.shape}")
    if isinstance(loss, _losses.SoftmaxCrossEntropy) and y.ndim == 1:
        if y.dtype.kind not in "iu":
            raise TypeError(f"expected integer class labels in {what}, got dtype {y.dtype}")
        if n and y.min() < 0:
            raise ValueError(f"expected class labels >= 0 in {what}, got {y.min()}")
        return np.ascontiguousarray(y, np.int64)
    if y.dtype.kind not in "biuf":
        raise TypeError(f"expected numeric {what}, got dtype {y.dtype}")
    y = np.ascontiguousarray(y, dtype)
    if not np.isfinite(y).all():
        raise ValueError(f"{what} holds NaN or infinite values")
    return y.reshape(n, -1) if y.ndim == 1 else y


class _Batches:
    """Mini-batches of rows of ``arrays`` (X, and y when given) gathered into
    reusable buffers on ``device``.

    On the CPU each batch is one ``np.take`` per array into a buffer (with
    mode "clip": the rows are valid, and the default mode gathers into a
    temporary first so as not to leave ``out`` half-written on an error). On a GPU
    rows are gathered into one of two pinned host buffers and copied on a side
    stream; the default-stream kernels that follow wait for the copy, and a
    buffer is refilled only after its previous copy has finished.
    """

    def __init__(self, device: Device, arrays, largest: int):
        """Buffers for batches of up to ``largest`` rows."""
        self.device, self.arrays = device, arrays
        self.parts = {}  # (slot, array, rows) -> a view of its buffer
        shapes = [(largest, *a.shape[1:]) for a in arrays]
        if device.type == "cpu":
            self.host = [[np.empty(s, a.dtype) for s, a in zip(shapes, arrays, strict=True)]]
            return
        cuda = _cuda.cuda
        self.host = [
            [cuda.pinned_array(s, a.dtype) for s, a in zip(shapes, arrays, strict=True)]
            for _ in range(2)
        ]
        self.dev = [
            [cuda.device_array(s, a.dtype) for s, a in zip(shapes, arrays, strict=True)]
            for _ in range(2)
        ]
        self.stream = cuda.stream()
        self.copied = [cuda.event(), cuda.event()]
        self.used = [False, False]
        self.slot = 0

    def __len__(self) -> int:
        return len(self.arrays[0])

    def take(self, rows) -> list:
        """The arrays' ``rows`` (an index array or a slice) on the device."""
        if self.device.type == "cpu":
            if isinstance(rows, slice):
                return [a[rows] for a in self.arrays]
            # A batch of one size comes in one array object every time, as
            # a host step replay (gpunet.replay) needs.
            n = len(rows)
            return [
                np.take(a, rows, axis=0, out=self._part(0, i, n), mode="clip")
                for i, a in enumerate(self.arrays)
            ]
        slot = self.slot
        self.slot ^= 1
        if self.used[slot]:
            self.copied[slot].synchronize()
        taken = []
        for i, (a, host, dev) in enumerate(
            zip(self.arrays, self.host[slot], self.dev[slot], strict=True)
        ):
            if isinstance(rows, slice):
                part = a[rows]
                n = len(part)
                host[:n] = part
            else:
                n = len(rows)
                np.take(a, rows, axis=0, out=host[:n], mode="clip")
            # Views are made once per batch size: a new Numba view per step
            # would cost more than a small kernel's launch.
            part = self._part(slot, i, n, dev)
            part.copy_to_device(host[:n], stream=self.stream)
            taken.append(part)
        self.copied[slot].record(self.stream)
        self.used[slot] = True
        return taken

    def _part(self, slot, i, n, buffer=None):
        """The first ``n`` rows of array ``i``'s buffer ``slot`` (the host
        buffer unless ``buffer`` is given), one view kept per size."""
        buffer = self.host[slot][i] if buffer is None else buffer
        if n == len(buffer):
            return buffer
        part = self.parts.get((slot, i, n))
        if part is None:
            part = self.parts[slot, i, n] = buffer[:n]
        return part


class _StepRecords:
    """Per-step loss and hit records on ``device``, with a 1-element view of
    each step's slot made once (a new Numba view costs more than a small
    kernel's launch);
    ``read(k)`` gives the first k of each as float64 host arrays."""

    def __init__(self, device: Device, steps: int, dtype):
        self.key = (device, steps, np.dtype(dtype))
        if device.type == "cpu":
            self.losses, self.hits = np.zeros(steps, dtype), np.zeros(steps, dtype)
        else:
            self.losses = _cuda.cuda.device_array(steps, dtype)
            self.hits = _cuda.cuda.device_array(steps, dtype)
        self.loss_slots = [self.losses[i : i + 1] for i in range(steps)]
        self.hit_slots = [self.hits[i : i + 1] for i in range(steps)]

    def read(self, k):
        return tuple(to_numpy(a[:k]).astype(np.float64) for a in (self.losses, self.hits))

    def write(self, losses, hits):
        """Put back the first records, as ``read`` gave them (a resumed epoch's)."""
        for records, values in ((self.losses, losses), (self.hits, hits)):
            k = len(values)
            _copy_into(records[:k], np.asarray(values, records.dtype))


def _records(model, device: Device, steps: int, dtype, train: bool) -> _StepRecords:
    """The model's step records for this many steps, kept between epochs and
    fits; training and evaluation keep theirs apart, so that validation leaves
    the records of the epoch it follows (a checkpoint may need them)."""
    name = "_step_records" if train else "_evaluation_records"
    records = getattr(model, name, None)
    if records is None or records.key != (device, steps, np.dtype(dtype)):
        records = _StepRecords(device, steps, dtype)
        setattr(model, name, records)
    return records


def _epoch_metrics(loss_fn, read, k, sizes, outputs_per_sample):
    """Mean loss (weighted by batch size) and accuracy over the first k steps."""
    step_losses, step_hits = read(k)
    n = sizes[:k].sum()
    metrics = {"loss": float(step_losses @ sizes[:k] / n)}
    if loss_fn.hits_kind is not None:
        metrics["accuracy"] = float(step_hits.sum() / (n * outputs_per_sample))
    return metrics


def _outputs_per_sample(loss_fn, out):
    return loss_fn.hits_per_sample(out) if loss_fn.hits_kind is not None else 1


def _check_labels(out, y, what="y"):
    """Class labels must index the model's outputs (else the loss would be NaN)."""
    classes = out.shape[1]
    if y.ndim == 1 and len(y) and y.max() >= classes:
        raise ValueError(
            f"expected class labels in [0, {classes}) in {what} for a model with {classes} "
            f"outputs, got label {y.max()}"
        )


def _batch_starts(n, batch_size, min_rows=1) -> np.ndarray:
    """Where each batch of n rows starts, and n: batches of ``batch_size`` rows,
    the last one folded into the one before when it has fewer than ``min_rows``."""
    starts = list(range(0, n, batch_size)) + [n]
    if len(starts) > 2 and starts[-1] - starts[-2] < min_rows:
        del starts[-2]
    return np.array(starts, np.int64)


def _leaves(model, prefix=""):
    """(path, layer) for the layers of ``model``, inside nested models too;
    a path reads as the layer's ``state_dict`` names begin ("2", "3.1")."""
    for i, layer in enumerate(getattr(model, "layers", ())):
        if hasattr(layer, "layers"):
            yield from _leaves(layer, f"{prefix}{i}.")
        else:
            yield f"{prefix}{i}", layer


def _own_generators(model) -> dict:
    """{layer path: its random generator} for the layers that draw from a
    generator of their own (Dropout with a seed)."""
    return {
        path: layer._generator
        for path, layer in _leaves(model)
        if getattr(layer, "_generator", _random.default_generator) is not _random.default_generator
    }


def _copy(a):
    """A new copy of the array ``a``, where it lives."""
    return a.copy() if isinstance(a, np.ndarray) else to_device(to_numpy(a), device_of(a))


def _copy_into(dst, src):
    if isinstance(dst, np.ndarray):
        np.copyto(dst, src)
    else:
        dst.copy_to_device(src)


class _StepGuard:
    """What a training step changes besides the parameters: the layers'
    buffers (running statistics) and the random streams' positions. ``save``
    copies them before a step, ``restore`` puts them back after one that
    raised and clears the gradients it wrote (lazily). The optimizer's update
    is the step's last act, one launch per flat buffer, so a step that raised
    before it has changed no parameter."""

    def __init__(self, model, optimizer):
        self.optimizer = optimizer
        self.buffers = [
            (layer, name) for _, layer in _leaves(model) for name, _ in layer._named_buffers()
        ]
        self.spares = [_copy(getattr(layer, name)) for layer, name in self.buffers]
        generators = [_random.default_generator, *_own_generators(model).values()]
        self.generators = list({id(g): g for g in generators}.values())

    def save(self):
        for (layer, name), spare in zip(self.buffers, self.spares, strict=True):
            _copy_into(spare, getattr(layer, name))
        self.positions = [(g.seed, g.offset) for g in self.generators]

    def restore(self):
        for (layer, name), spare in zip(self.buffers, self.spares, strict=True):
            _copy_into(getattr(layer, name), spare)
        for g, (seed, offset) in zip(self.generators, self.positions, strict=True):
            g.seed, g.offset = seed, offset
        self.optimizer.zero_grad()


def _run_epoch(model, loss_fn, batches, order, starts, train, progress, state=None, graphs=None):
    """One pass over ``order`` (indices, or None for in order), in the batches
    that ``starts`` bounds; returns the metrics. In training, a step that
    raises is undone (see _StepGuard) before the error goes on. With a fit's
    ``state``, the pass begins at its ``step`` (a resumed epoch, whose
    ``records`` are put back) and keeps ``step`` up to date. ``graphs``
    (a _GraphSteps) runs the steps it can as CUDA graph replays; on the CPU,
    training steps are replayed from their kernel calls where the model and
    loss allow it (_HostSteps)."""
    steps = len(starts) - 1
    sizes = np.diff(starts).astype(np.float64)
    world = _distributed.fit_world() if train else None  # None unless data-parallel
    if world is not None:
        sizes = world.local_sizes(starts)
    records = _records(model, batches.device, steps, model.dtype, train)
    read = records.read
    optimizer = model.optimizer if train else None
    guard = _StepGuard(model, optimizer) if train else None
    last_refresh, per_sample = time.perf_counter(), 1
    classifier = loss_fn.hits_kind is not None
    if train and graphs is None and step_replayable(model, loss_fn):
        # Recorded afresh each epoch: callbacks may change layers between epochs.
        graphs = _HostSteps(model, loss_fn)
    first = 0
    if state is not None and state.step:
        first = state.step
        records.write(*state.records)
        per_sample = state.per_sample
    for step in range(first, steps):
        start, stop = starts[step], starts[step + 1]
        rows = slice(start, stop) if order is None else order[start:stop]
        if world is not None:
            rows = world.share(rows)
        xb, yb = batches.take(rows)
        if train:
            guard.save()
        try:
            if graphs is not None and graphs.run(xb, yb, records, step, guard):
                out = graphs.out
            else:
                out = model.forward(xb)
                hits = records.hit_slots[step] if classifier else None
                grad = loss_fn.into(out, yb, records.loss_slots[step], hits)
                if train:
                    model.backward(grad, input_grad=False)
            if train:
                if world is not None:
                    world.average_gradients(optimizer)
                optimizer.step()
                optimizer.zero_grad()
        except BaseException:
            if train:
                guard.restore()
            raise
        if classifier:
            per_sample = _outputs_per_sample(loss_fn, out)
        if state is not None:
            state.step, state.per_sample = step + 1, per_sample
        if progress is not None and not progress.disable:
            progress.update(1)
            now = time.perf_counter()
            if now - last_refresh > REFRESH_SECONDS or step == steps - 1:
                last_refresh = now
                metrics = _epoch_metrics(loss_fn, read, step + 1, sizes, per_sample)
                progress.set_postfix({k: f"{v:.4f}" for k, v in metrics.items()}, refresh=False)
    if world is not None:
        return world.epoch_metrics(model, loss_fn, read, steps, sizes, per_sample)
    return _epoch_metrics(loss_fn, read, steps, sizes, per_sample)


class _HostSteps:
    """fit's training steps on the CPU replayed from the kernel calls they
    make (gpunet.replay): the forward pass, the loss with its hit count into
    fixed slots, copied to the step's records after, and the backward pass.
    The optimizer's update runs as usual."""

    def __init__(self, model, loss_fn):
        self.loss_slot, self.hit_slot = np.zeros(1, model.dtype), np.zeros(1, model.dtype)
        self.classifier = loss_fn.hits_kind is not None
        hits = self.hit_slot if self.classifier else None

        def step(xb, yb):
            out = model.forward(xb)
            model.backward(loss_fn.into(out, yb, self.loss_slot, hits), input_grad=False)
            return out

        self.replay = HostReplay(step, model.parameters())
        self.out = None

    def run(self, xb, yb, records, step, guard) -> bool:
        """Run the step on batch (xb, yb), its loss and hits into ``records`` at ``step``."""
        self.out = self.replay(xb, yb)
        records.losses[step] = self.loss_slot[0]
        if self.classifier:
            records.hits[step] = self.hit_slot[0]
        return True


class _GraphSteps:
    """fit's training steps on a GPU as replays of CUDA graphs
    (``cuda_graph=True``): the forward pass, the loss with its hit count and
    the backward pass of a full batch, captured once per batch buffer (the
    batches alternate between two) and replayed into fixed loss and hit
    slots, copied to the step's records after; the optimizer's update runs
    as usual, so that learning-rate changes and step counts apply. The
    first full batch runs eagerly (it makes every buffer a step uses); a
    shorter last batch runs eagerly. A capture that fails (a step that draws
    random numbers, as dropout does; a kernel or product a graph cannot
    record) warns once and the fit goes on eagerly."""

    def __init__(self, model, loss_fn, batch_rows: int):
        self.model, self.loss_fn, self.batch_rows = model, loss_fn, batch_rows
        self.classifier = loss_fn.hits_kind is not None
        self.graphs = {}  # id(batch buffer) -> (the buffer, its StepGraph, parameters it writes)
        self.warm = False
        self.failed = False
        dtype = model.dtype
        self.loss_slot = _cuda.cuda.device_array(1, dtype)
        self.hit_slot = _cuda.cuda.device_array(1, dtype)
        self.out = None

    def run(self, xb, yb, records, step, guard) -> bool:
        """Run the step on batch (xb, yb) through a graph, its loss and hits
        into ``records`` at ``step``; False (nothing done) when it must run eagerly."""
        if self.failed or xb.shape[0] != self.batch_rows:
            return False
        if not self.warm:
            self.warm = True
            return False
        found = self.graphs.get(id(xb))
        if found is None:
            found = self._capture(xb, yb, guard)
            if found is None:
                return False
        _, graph, written = found
        graph.replay()
        for p in written:
            p._grad_is_zero = False
        records.loss_slots[step].copy_to_device(self.loss_slot)
        if self.classifier:
            records.hit_slots[step].copy_to_device(self.hit_slot)
        return True

    def _capture(self, xb, yb, guard):
        model, params = self.model, self.model.parameters()
        positions = [(g.seed, g.offset) for g in guard.generators]
        hits = self.hit_slot if self.classifier else None

        def step():
            self.out = model.forward(xb)
            grad = self.loss_fn.into(self.out, yb, self.loss_slot, hits)
            model.backward(grad, input_grad=False)

        try:
            graph = StepGraph.capture(step)
            if [(g.seed, g.offset) for g in guard.generators] != positions:
                raise CaptureError(
                    "the step draws random numbers (dropout), which a replay would repeat"
                )
        except CaptureError as error:
            for g, (seed, offset) in zip(guard.generators, positions, strict=True):
                g.seed, g.offset = seed, offset
            model.optimizer.zero_grad()
            self.failed = True
            warnings.warn(f"cuda_graph: {error}; training eagerly", RuntimeWarning, stacklevel=4)
            return None
        written = [p for p in params if not p._grad_is_zero]
        model.optimizer.zero_grad()
        found = self.graphs[id(xb)] = (xb, graph, written)
        return found


def _check_batch_size(batch_size):
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ValueError(f"expected a positive integer batch_size, got {batch_size!r}")
    return int(batch_size)


@dataclasses.dataclass
class _FitState:
    """Where a fit stands, for checkpoints: ``epoch`` epochs done with
    ``optimizer`` and ``step`` steps of the next (of ``steps`` per epoch),
    the ``history`` of the epochs done, the shuffling generator ``rng`` and
    its ``shuffle`` state before it drew the order of the epoch in progress
    (or the next), the ``callbacks``, and for a resumed epoch the
    ``records`` (losses, hits) of its steps done and the hits a sample can
    score (``per_sample``)."""

    optimizer: object
    history: History
    rng: np.random.Generator
    callbacks: list
    steps: int
    epoch: int = 0
    step: int = 0
    shuffle: dict | None = None
    records: tuple = ()
    per_sample: int = 1

    def __post_init__(self):
        self.shuffle = self.rng.bit_generator.state


@dataclasses.dataclass
class _Resume:
    """A checkpoint checked against the fit that resumes it, to apply."""

    arrays: dict
    optimizer: dict
    generators: dict
    fit: dict | None


class Model:
    """``fit``, ``evaluate``, ``predict`` and ``save`` for a model with
    ``forward``, ``backward``, ``parameters``, ``train``/``eval`` and ``state_dict``."""

    optimizer = None
    loss = None
    stop_training = False
    _fit_state = None

    @_distributed.collective("fit")
    def fit(
        self,
        X,
        y,
        *,
        loss,
        optimizer,
        epochs: int = 1,
        batch_size: int = 32,
        validation_data=None,
        validation_split: float = 0.0,
        shuffle: bool = True,
        verbose: int = 1,
        callbacks=(),
        seed: int | None = None,
        resume=None,
        cuda_graph: bool | str = False,
    ) -> History:
        """Train on (X, y) until ``epochs`` epochs are done; return the History.

        X (samples, features) and y (samples,) class labels or (samples, outputs)
        targets, as host arrays. ``loss``: a gn.losses object or name.
        ``optimizer``: a gn.optim optimizer over ``model.parameters()``, or a name
        ("sgd" with lr 0.01, "adam", "adamw" with their defaults).
        ``validation_data`` = (X_val, y_val), or ``validation_split``: the last
        fraction of the rows, held out before shuffling. ``shuffle`` draws a new
        order each epoch from ``seed``. ``verbose``: 0 silent, 1 a progress bar
        per epoch, 2 one line per epoch.

        Batches hold ``batch_size`` rows, the last one what is left, except
        that a model with batch normalization (which needs 2 rows per batch
        in training) folds a last batch of a single row into the one before
        it, so every row is trained on in every epoch; such a model refuses
        ``batch_size=1`` and a single training row.

        ``resume``: the path of a checkpoint (``model.save(path,
        optimizer=opt)``, ``ModelCheckpoint``) of this architecture to
        continue from: the weights, the optimizer's state (into
        ``optimizer``, which must be of its class over the same parameters),
        the epochs done and their History (the History returned holds them
        too), the shuffling and dropout random streams (gn.random's default
        generator included) and the state of the callbacks (matched by class,
        in order) are restored, so that an interrupted and resumed run ends
        with the same weights as one never interrupted, bit for bit on the
        CPU, given the same arguments. A checkpoint saved by a fit that
        stopped early resumes as stopped.

        ``cuda_graph``: on a GPU, True runs each full batch's forward pass,
        loss and backward pass as the replay of a CUDA graph captured at the
        second step (one launch instead of one per kernel; the optimizer's
        update stays a launch of its own), with the same results as eager
        steps; a step that cannot be captured (dropout draws new masks each
        step) warns and trains eagerly. "auto" is eager for now, and False
        always is. True on a CPU model is an error.

        Every argument is checked, the labels against the model's outputs and
        the checkpoint against the model and the optimizer included, before
        anything changes; a step that raises leaves the model as it was before
        that step, and the model in the mode it had before ``fit``.
        """
        loss_fn = _losses.get(loss)
        optimizer = self._optimizer(optimizer)
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"expected a non-negative integer epochs, got {epochs!r}")
        batch_size = _check_batch_size(batch_size)
        if verbose not in (0, 1, 2):
            raise ValueError(f"expected verbose 0, 1 or 2, got {verbose!r}")
        if cuda_graph not in (False, True, "auto") or not isinstance(cuda_graph, (bool, str)):
            raise ValueError(f"expected cuda_graph True, False or 'auto', got {cuda_graph!r}")
        if cuda_graph is True and self.device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs a model on a GPU, not on {self.device}")
        if not 0 <= validation_split < 1:
            raise ValueError(f"expected validation_split in [0, 1), got {validation_split!r}")
        if validation_data is not None and validation_split:
            raise ValueError("pass validation_data or validation_split, not both")
        dtype = self.dtype
        X = _features(X, dtype)
        y = _targets(y, len(X), loss_fn, dtype)
        if validation_split:
            cut = len(X) - int(len(X) * validation_split)
            if cut == 0 or cut == len(X):
                raise ValueError(
                    f"validation_split={validation_split} leaves no rows for training or validation"
                )
            validation_data = (X[cut:], y[cut:])
            X, y = X[:cut], y[:cut]
        if validation_data is not None:
            if len(validation_data) != 2:
                raise ValueError("expected validation_data = (X_val, y_val)")
            Xv = _features(validation_data[0], dtype, "X_val")
            validation_data = (Xv, _targets(validation_data[1], len(Xv), loss_fn, dtype, "y_val"))
            if len(Xv) == 0:
                raise ValueError("expected validation_data with at least one sample")
        if len(X) == 0:
            raise ValueError("fit needs at least one training sample")
        min_rows = self.min_training_rows() if hasattr(self, "min_training_rows") else 1
        if min(batch_size, len(X)) < min_rows:
            raise ValueError(
                f"expected batches of at least {min_rows} rows for this model's batch "
                f"normalization, got batch_size={batch_size} and {len(X)} training rows"
            )
        callbacks = [] if callbacks is None else list(callbacks)
        for callback in callbacks:
            if not isinstance(callback, Callback):
                raise TypeError(f"expected gn.training.Callback objects, got {callback!r}")
        self._check_outputs(
            loss_fn, [(X, y, "y"), *([(*validation_data, "y_val")] if validation_data else [])]
        )
        world = _distributed.fit_world()  # None unless data-parallel (gn.distributed)
        if world is None:
            starts = _batch_starts(len(X), batch_size, min_rows)
        else:
            starts = world.starts(len(X), batch_size, min_rows)
            verbose = verbose if world.rank == 0 else 0
        steps = len(starts) - 1
        resumed = None if resume is None else self._checked_resume(resume, optimizer, steps)
        metrics = ["loss"] + (["accuracy"] if loss_fn.hits_kind is not None else [])
        if validation_data is not None:
            metrics += [f"val_{name}" for name in metrics]
        params = {"epochs": epochs, "steps": steps, "verbose": verbose, "metrics": metrics + ["lr"]}
        for callback in callbacks:
            callback.model, callback.params = self, params

        mode, before = self.training, (self.optimizer, self.loss)
        self.optimizer, self.loss = optimizer, loss_fn
        state = _FitState(optimizer, History(), np.random.default_rng(seed), callbacks, steps)
        self.stop_training = False
        try:
            for callback in callbacks:
                callback.on_train_begin({})
        except BaseException:
            self.optimizer, self.loss = before
            raise
        # ModelCheckpoint writes last, so that its files hold the others' state.
        ordered = sorted(callbacks, key=lambda c: isinstance(c, ModelCheckpoint))
        try:
            if resumed is not None:
                self._resume(resumed, state)
            self._fit_state = state
            if world is not None:
                world.begin(self, state, X=X.shape, batch_size=batch_size, epochs=epochs,
                            shuffle=shuffle, at=(state.epoch, state.step))  # fmt: skip
            largest = int(np.diff(starts).max())
            batches = _Batches(self.device, [X, y], largest)
            graphs = _GraphSteps(self, loss_fn, largest) if cuda_graph is True else None
            self._epochs(
                state, loss_fn, batches, starts, validation_data, epochs, shuffle, verbose, ordered,
                graphs,
            )  # fmt: skip
            for callback in callbacks:
                callback.on_train_end({})
        except BaseException:
            self.train(mode)
            raise
        self.eval()
        return state.history

    def _epochs(
        self, state, loss_fn, batches, starts, validation_data, epochs, shuffle, verbose, callbacks,
        graphs=None,
    ):  # fmt: skip
        """Run epochs from ``state.epoch`` to ``epochs``, updating ``state``
        (``graphs``: a _GraphSteps, or None for eager steps)."""
        steps, batch_size = len(starts) - 1, int(starts[1] - starts[0])
        for epoch in range(state.epoch, epochs):
            if self.stop_training:
                break
            if not state.step:  # a resumed epoch has begun already
                for callback in callbacks:
                    callback.on_epoch_begin(epoch, {})
            started = time.perf_counter()
            state.shuffle = state.rng.bit_generator.state
            order = state.rng.permutation(len(batches)) if shuffle else None
            with tqdm(
                total=steps,
                initial=state.step,
                desc=f"epoch {epoch + 1}/{epochs}",
                unit="batch",
                disable=verbose != 1,
                leave=True,
            ) as progress:
                self.train()
                logs = _run_epoch(
                    self, loss_fn, batches, order, starts, True, progress, state, graphs
                )
                if validation_data is not None:
                    val = self.evaluate(*validation_data, batch_size=max(batch_size, 256))
                    logs.update({f"val_{k}": v for k, v in val.items()})
                    progress.set_postfix({k: f"{v:.4f}" for k, v in logs.items()})
            logs["lr"] = self.optimizer.lr
            state.history.append(epoch, logs)
            state.epoch, state.step = epoch + 1, 0
            state.shuffle = state.rng.bit_generator.state
            if verbose == 2:
                seconds = time.perf_counter() - started
                shown = " - ".join(f"{k} {v:.4f}" for k, v in logs.items() if k != "lr")
                print(f"epoch {epoch + 1}/{epochs} - {seconds:.2f} s - {shown}")
            for callback in callbacks:
                callback.on_epoch_end(epoch, logs)

    def _check_outputs(self, loss_fn, targets):
        """Check each (X, y, name)'s targets against the model's outputs for
        X's first row, computed in evaluation mode, which moves no running
        statistics and draws no random numbers."""
        mode = self.training
        self.eval()
        try:
            for X, y, what in targets:
                out = self.forward(to_device(X[:1], self.device))
                _check_labels(out, y, what)
                loss_fn(out, to_device(y[:1], self.device))  # raises for targets of another shape
        finally:
            self.train(mode)

    def _parameter_names(self) -> dict:
        """id(parameter) -> its name in ``state_dict()``."""
        return {
            id(p): f"{path}.{name}"
            for path, layer in _leaves(self)
            for name, p in layer._named_parameters()
        }

    def _checkpoint(self, optimizer):
        """(JSON part, arrays) of a checkpoint with ``optimizer`` (see gpunet.serialization)."""
        if not isinstance(optimizer, _optim.Optimizer):
            raise TypeError(f"expected a gn.optim optimizer, got {type(optimizer).__name__}")
        names = self._parameter_names()
        if not all(id(p) in names for p in optimizer.params):
            raise ValueError("the optimizer holds parameters that are not this model's")
        state = optimizer.state_dict()
        arrays = {
            f"optimizer.{i}.{buffer}": value
            for i, buffers in state["state"].items()
            for buffer, value in buffers.items()
        }
        state["state"] = {str(i): sorted(buffers) for i, buffers in state["state"].items()}
        state["params"] = [names[id(p)] for p in optimizer.params]
        checkpoint = {
            "optimizer": state,
            "generators": {
                "default": _random.default_generator.state_dict(),
                "layers": {path: g.state_dict() for path, g in _own_generators(self).items()},
            },
            "fit": None,
        }
        fit = self._fit_state
        if fit is not None and fit.optimizer is optimizer:
            callbacks = []
            for k, callback in enumerate(fit.callbacks):
                entry = {"class": type(callback).__name__, "state": dict(callback.state_dict())}
                weights = entry["state"].pop("weights", None)
                if weights is not None:
                    entry["weights"] = sorted(weights)
                    arrays.update((f"callbacks.{k}.{n}", np.asarray(w)) for n, w in weights.items())
                callbacks.append(entry)
            checkpoint["fit"] = {
                "epoch": fit.epoch,
                "step": fit.step,
                "steps": fit.steps,
                "per_sample": fit.per_sample,
                "history": fit.history.state_dict(),
                "shuffle": fit.shuffle,
                "stop_training": bool(self.stop_training),
                "callbacks": callbacks,
            }
            if fit.step:
                losses, hits = self._step_records.read(fit.step)
                arrays.update({"fit.losses": losses, "fit.hits": hits})
        return json.loads(json.dumps(checkpoint)), arrays

    def _checked_resume(self, path, optimizer, steps) -> _Resume:
        """The checkpoint at ``path``, checked against this model, ``optimizer``
        and the ``steps`` per epoch of the fit resuming it."""
        saved = serialization.read(path, checkpoint_arrays=True)
        name = saved.path
        mine = json.loads(json.dumps(serialization.describe(self)["layers"]))
        if saved.architecture["layers"] != mine:
            raise ValueError(
                f"{name}: expected a checkpoint of this model's architecture {mine}, "
                f"got {saved.architecture['layers']}"
            )
        checkpoint = saved.checkpoint
        if checkpoint is None:
            raise ValueError(
                f"{name}: a model without its optimizer's state; resume needs a checkpoint "
                "(model.save(path, optimizer=opt) or gn.training.ModelCheckpoint)"
            )
        state = dict(checkpoint["optimizer"])
        names = self._parameter_names()
        params = state.pop("params")
        if params != [names.get(id(p)) for p in optimizer.params]:
            raise ValueError(
                f"{name}: expected the checkpoint's optimizer to hold the optimizer's "
                f"parameters, got {params}"
            )
        try:
            optimizer_state = optimizer._checked_state(state)
            generators = checkpoint.get("generators")
            if not isinstance(generators, dict) or set(generators) != {"default", "layers"}:
                raise ValueError(f"expected the random streams' positions, got {generators!r}")
            own = _own_generators(self)
            if not isinstance(generators["layers"], dict) or set(generators["layers"]) != set(own):
                raise ValueError(
                    f"expected the positions of the streams of layers {sorted(own)}, "
                    f"got {generators['layers']!r}"
                )
            for position in [generators["default"], *generators["layers"].values()]:
                _random.Generator(0).load_state_dict(position)
            fit = checkpoint.get("fit")
            if fit is not None:
                self._check_fit_state(fit, steps)
        except ValueError as exc:
            raise ValueError(f"{name}: cannot resume from this checkpoint: {exc}") from exc
        return _Resume(saved.arrays, optimizer_state, generators, fit)

    @staticmethod
    def _check_fit_state(fit, steps):
        keys = {"epoch", "step", "steps", "per_sample", "history", "shuffle", "stop_training"}
        keys |= {"callbacks", "records"}
        if not isinstance(fit, dict) or set(fit) != keys:
            raise ValueError(f"expected the fit's state {sorted(keys)}, got {fit!r}")
        for key in ("epoch", "step", "steps", "per_sample"):
            value = fit[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"expected {key} to be an integer >= 0, got {value!r}")
        if fit["step"] and fit["steps"] != steps:
            raise ValueError(
                f"saved {fit['step']} steps into an epoch of {fit['steps']}; this fit's epochs "
                f"have {steps} steps: resume in mid-epoch with the same data and batch_size"
            )
        History().load_state_dict(fit["history"])
        try:
            np.random.default_rng(0).bit_generator.state = fit["shuffle"]
        except (TypeError, KeyError, ValueError) as exc:
            raise ValueError(
                f"expected the shuffling generator's state, got {fit['shuffle']!r}"
            ) from exc
        if not isinstance(fit["stop_training"], bool):
            raise ValueError(f"expected stop_training to be a bool, got {fit['stop_training']!r}")
        for callback in fit["callbacks"]:
            if not isinstance(callback.get("class"), str) or not isinstance(
                callback.get("state"), dict
            ):
                raise ValueError(f"expected a callback's class and state, got {callback!r}")

    def _resume(self, resumed: _Resume, state: _FitState):
        """Apply a checked checkpoint: the callbacks' state first (each checks
        its own before changing), then the model's, the optimizer's, the
        random streams' and the fit's."""
        fit = resumed.fit
        if fit is not None:
            saved = list(fit["callbacks"])
            for callback in state.callbacks:
                found = next((c for c in saved if c["class"] == type(callback).__name__), None)
                if found is not None:
                    saved.remove(found)
                    weights = found.get("weights")
                    callback.load_state_dict(
                        found["state"]
                        if weights is None
                        else {**found["state"], "weights": weights}
                    )
        self.load_state_dict(resumed.arrays)
        state.optimizer._apply_state(resumed.optimizer)
        _random.default_generator.load_state_dict(resumed.generators["default"])
        own = _own_generators(self)
        for path, position in resumed.generators["layers"].items():
            own[path].load_state_dict(position)
        if fit is not None:
            state.history.load_state_dict(fit["history"])
            state.rng.bit_generator.state = fit["shuffle"]
            state.epoch, state.step, state.per_sample = fit["epoch"], fit["step"], fit["per_sample"]
            state.records = fit["records"]
            self.stop_training = fit["stop_training"]

    def _optimizer(self, optimizer):
        if isinstance(optimizer, _optim.Optimizer):
            ours = {id(p) for p in self.parameters()}
            if not ours <= {id(p) for p in optimizer.params}:
                raise ValueError("the optimizer does not hold this model's parameters")
            return optimizer
        if isinstance(optimizer, str) and optimizer.lower() in _optim.OPTIMIZERS:
            cls = _optim.OPTIMIZERS[optimizer.lower()]
            return cls(self.parameters(), lr=0.01) if cls is _optim.SGD else cls(self.parameters())
        names = ", ".join(repr(n) for n in _optim.OPTIMIZERS)
        raise ValueError(f"expected a gn.optim optimizer or one of {names}, got {optimizer!r}")

    def evaluate(self, X, y, *, loss=None, batch_size: int = 256) -> dict:
        """{"loss": mean loss, "accuracy": ...} on (X, y) in evaluation mode;
        ``loss`` defaults to the one the model was fitted with."""
        loss_fn = self.loss if loss is None else _losses.get(loss)
        if loss_fn is None:
            raise ValueError("evaluate needs a loss: pass loss=..., or fit the model first")
        batch_size = _check_batch_size(batch_size)
        X = _features(X, self.dtype)
        y = _targets(y, len(X), loss_fn, self.dtype)
        if len(X) == 0:
            raise ValueError("evaluate needs at least one sample")
        mode = self.training
        self.eval()
        try:
            starts = _batch_starts(len(X), batch_size)
            batches = _Batches(self.device, [X, y], min(batch_size, len(X)))
            return _run_epoch(self, loss_fn, batches, None, starts, False, None)
        finally:
            self.train(mode)

    def predict(self, X, *, batch_size: int = 256) -> np.ndarray:
        """The model's outputs for X (samples, features), in evaluation mode,
        as a new numpy array (whatever the device)."""
        batch_size = _check_batch_size(batch_size)
        X = _features(X, self.dtype)
        mode = self.training
        self.eval()
        try:
            parts = []
            batches = _Batches(self.device, [X], min(batch_size, max(len(X), 1)))
            for start in range(0, len(X), batch_size):
                (xb,) = batches.take(slice(start, start + batch_size))
                parts.append(to_numpy(self.forward(xb)).copy())
        finally:
            self.train(mode)
        if not parts:
            raise ValueError("predict needs at least one sample")
        return np.concatenate(parts)

    def save(self, path, *, optimizer=None) -> None:
        """Write the architecture (JSON), the loss and the arrays to one
        ``.npz`` file that ``gn.load`` reads back without pickle, atomically
        (a crash leaves the old file or the new one). With ``optimizer`` the
        file is a checkpoint that ``fit(..., resume=path)`` continues from:
        it also holds the optimizer's state, the random streams' positions
        and, when the model was last fitted with that optimizer, the epochs
        done, their History and the callbacks' state."""
        serialization.save(self, path, optimizer=optimizer)
