"""Training loops for models: ``fit``, ``evaluate``, ``predict``, with a
``History`` of per-epoch metrics and callbacks (``EarlyStopping``,
``LearningRateScheduler``).

:class:`Model` gives these to :class:`gpunet.nn.Sequential` as methods.
Data arrive as host arrays (numpy); mini-batches are gathered into buffers
the model reuses, on its device: on a GPU through pinned host memory and
an asynchronous copy stream, double-buffered so the host gathers batch k + 1
while the GPU computes batch k. Per-step losses and hit counts stay on the
device until the end of the epoch (and every few tenths of a second for the
progress bar), so the host never waits on the GPU at each step.
"""

from __future__ import annotations

import math
import time

import numpy as np
from tqdm.auto import tqdm

from . import losses as _losses
from . import optim as _optim
from . import serialization
from ._device import Device, to_numpy
from .kernels import _cuda

#: Seconds between progress-bar refreshes (each one reads the metrics so far).
REFRESH_SECONDS = 0.2


class History:
    """What ``fit`` returns: ``history[name]`` is the list of per-epoch values
    of ``loss``, ``accuracy`` (classification losses) and their ``val_`` forms,
    plus ``lr``; ``epoch`` lists the epoch numbers (from 0)."""

    def __init__(self):
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def append(self, epoch: int, logs: dict) -> None:
        self.epoch.append(epoch)
        for name, value in logs.items():
            self.history.setdefault(name, []).append(value)

    def __repr__(self) -> str:
        if not self.epoch:
            return "History(0 epochs)"
        last = ", ".join(f"{k}={v[-1]:.4g}" for k, v in self.history.items())
        return f"History({len(self.epoch)} epochs; last: {last})"


class Callback:
    """Hooks ``fit`` calls; ``self.model`` is the model being trained, and
    ``self.params`` what ``fit`` was asked to do: ``epochs``, ``steps`` (per
    epoch), ``verbose`` and ``metrics`` (the names each epoch's logs will hold).
    Setting ``model.stop_training = True`` ends training after the current epoch."""

    model = None
    params: dict = {}

    def on_train_begin(self, logs: dict) -> None:
        pass

    def on_epoch_begin(self, epoch: int, logs: dict) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        pass

    def on_train_end(self, logs: dict) -> None:
        pass


#: The names ``fit`` can log (``lr`` aside).
_KNOWN_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for
    ``patience`` epochs in a row (the first epoch without improvement when
    ``patience`` is 0); a NaN never counts as an improvement. ``mode``: "min",
    "max" or "auto" (max for names with "acc", else min). With
    ``restore_best_weights`` the model ends training with the best epoch's weights."""

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0.0,
        patience: int = 0,
        mode: str = "auto",
        restore_best_weights: bool = False,
    ):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"EarlyStopping: expected mode 'auto', 'min' or 'max', got {mode!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"EarlyStopping: expected an integer patience >= 0, got {patience!r}")
        self.monitor, self.min_delta, self.patience = monitor, abs(float(min_delta)), patience
        self.mode = ("max" if "acc" in monitor else "min") if mode == "auto" else mode
        self.restore_best_weights = restore_best_weights

    def on_train_begin(self, logs):
        self.best, self.best_epoch, self.wait, self.stopped_epoch = None, None, 0, None
        self.best_weights = None
        metrics = self.params.get("metrics")
        if metrics is not None and self.monitor in _KNOWN_METRICS and self.monitor not in metrics:
            self._missing(metrics)  # before training; other callbacks may add other names

    def _missing(self, names):
        raise KeyError(
            f"EarlyStopping: monitors {self.monitor!r}, but the epoch's logs hold "
            f"{sorted(names)}; pass validation data to monitor a val_ metric"
        )

    def _improved(self, value):
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch, logs):
        if self.monitor not in logs:
            self._missing(logs)
        value = float(logs[self.monitor])
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.state_dict()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs):
        if self.restore_best_weights and self.best_weights is not None:
            self.model.load_state_dict({k: v.copy() for k, v in self.best_weights.items()})


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate before each epoch: ``schedule`` is a
    gn.optim schedule class (StepLR, CosineAnnealingLR) with its arguments
    given as ``**kwargs``, or a function ``(epoch, lr) -> lr``."""

    def __init__(self, schedule, **kwargs):
        self.schedule, self.kwargs = schedule, kwargs
        if not callable(schedule):
            raise TypeError(f"expected a schedule class or a function, got {schedule!r}")

    def on_train_begin(self, logs):
        optimizer = self.model.optimizer
        if isinstance(self.schedule, type) and issubclass(self.schedule, _optim.LRScheduler):
            self._scheduler = self.schedule(optimizer, **self.kwargs)
        else:
            self._scheduler = None

    def on_epoch_begin(self, epoch, logs):
        optimizer = self.model.optimizer
        if self._scheduler is not None:
            optimizer.lr = self._scheduler.lr_at(epoch)
        else:
            optimizer.lr = float(self.schedule(epoch, optimizer.lr))


# --- data -----------------------------------------------------------------------------


def _features(X, dtype, what="X"):
    X = to_numpy(X)
    if X.ndim != 2:
        raise ValueError(f"expected {what} of shape (samples, features), got {X.shape}")
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

    def __init__(self, device: Device, arrays, batch_size: int):
        self.device, self.arrays = device, arrays
        shapes = [(batch_size, *a.shape[1:]) for a in arrays]
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
            n = len(rows)
            return [
                np.take(a, rows, axis=0, out=buf[:n], mode="clip")
                for a, buf in zip(self.arrays, self.host[0], strict=True)
            ]
        slot = self.slot
        self.slot ^= 1
        if self.used[slot]:
            self.copied[slot].synchronize()
        taken = []
        for a, host, dev in zip(self.arrays, self.host[slot], self.dev[slot], strict=True):
            if isinstance(rows, slice):
                part = a[rows]
                n = len(part)
                host[:n] = part
            else:
                n = len(rows)
                np.take(a, rows, axis=0, out=host[:n], mode="clip")
            # Whole batches use the buffer itself: a new Numba view per step
            # would cost more than a small kernel's launch.
            part = dev if n == len(dev) else dev[:n]
            part.copy_to_device(host[:n], stream=self.stream)
            taken.append(part)
        self.copied[slot].record(self.stream)
        self.used[slot] = True
        return taken


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


def _records(model, device: Device, steps: int, dtype) -> _StepRecords:
    """The model's step records for this many steps, kept between epochs and fits."""
    records = getattr(model, "_step_records", None)
    if records is None or records.key != (device, steps, np.dtype(dtype)):
        records = model._step_records = _StepRecords(device, steps, dtype)
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


def _check_labels(out, y):
    """Class labels must index the model's outputs (else the loss would be NaN)."""
    classes = out.shape[1]
    if y.ndim == 1 and len(y) and y.max() >= classes:
        raise ValueError(
            f"expected class labels in [0, {classes}) for a model with {classes} outputs, "
            f"got label {y.max()}"
        )


def _run_epoch(model, loss_fn, batches, order, batch_size, train, progress):
    """One pass over ``order`` (indices, or None for in order); returns the metrics.
    Labels are checked against the first batch's output before any update."""
    n = len(batches)
    steps = math.ceil(n / batch_size)
    sizes = np.array([min(batch_size, n - s * batch_size) for s in range(steps)], np.float64)
    records = _records(model, batches.device, steps, model.dtype)
    read = records.read
    optimizer = model.optimizer if train else None
    last_refresh, per_sample = time.perf_counter(), 1
    classifier = loss_fn.hits_kind is not None
    for step in range(steps):
        start = step * batch_size
        rows = (
            slice(start, start + batch_size) if order is None else order[start : start + batch_size]
        )
        xb, yb = batches.take(rows)
        out = model.forward(xb)
        if step == 0:
            _check_labels(out, batches.arrays[1])
        grad = loss_fn.into(
            out, yb, records.loss_slots[step], records.hit_slots[step] if classifier else None
        )
        if classifier:
            per_sample = _outputs_per_sample(loss_fn, out)
        if train:
            model.backward(grad, input_grad=False)
            optimizer.step()
            optimizer.zero_grad()
        if progress is not None and not progress.disable:
            progress.update(1)
            now = time.perf_counter()
            if now - last_refresh > REFRESH_SECONDS or step == steps - 1:
                last_refresh = now
                metrics = _epoch_metrics(loss_fn, read, step + 1, sizes, per_sample)
                progress.set_postfix({k: f"{v:.4f}" for k, v in metrics.items()}, refresh=False)
    return _epoch_metrics(loss_fn, read, steps, sizes, per_sample)


def _check_batch_size(batch_size):
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ValueError(f"expected a positive integer batch_size, got {batch_size!r}")
    return int(batch_size)


class Model:
    """``fit``, ``evaluate``, ``predict`` and ``save`` for a model with
    ``forward``, ``backward``, ``parameters``, ``train``/``eval`` and ``state_dict``."""

    optimizer = None
    loss = None
    stop_training = False

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
    ) -> History:
        """Train on (X, y) for ``epochs`` passes of mini-batches; return the History.

        X (samples, features) and y (samples,) class labels or (samples, outputs)
        targets, as host arrays. ``loss``: a gn.losses object or name.
        ``optimizer``: a gn.optim optimizer over ``model.parameters()``, or a name
        ("sgd" with lr 0.01, "adam", "adamw" with their defaults).
        ``validation_data`` = (X_val, y_val), or ``validation_split``: the last
        fraction of the rows, held out before shuffling. ``shuffle`` draws a new
        order each epoch from ``seed``. ``verbose``: 0 silent, 1 a progress bar
        per epoch, 2 one line per epoch.
        """
        loss_fn = _losses.get(loss)
        optimizer = self._optimizer(optimizer)
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"expected a non-negative integer epochs, got {epochs!r}")
        batch_size = _check_batch_size(batch_size)
        if verbose not in (0, 1, 2):
            raise ValueError(f"expected verbose 0, 1 or 2, got {verbose!r}")
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
        if len(X) == 0:
            raise ValueError("fit needs at least one training sample")
        callbacks = [] if callbacks is None else list(callbacks)
        for callback in callbacks:
            if not isinstance(callback, Callback):
                raise TypeError(f"expected gn.training.Callback objects, got {callback!r}")
        steps = math.ceil(len(X) / batch_size)
        metrics = ["loss"] + (["accuracy"] if loss_fn.hits_kind is not None else [])
        if validation_data is not None:
            metrics += [f"val_{name}" for name in metrics]
        params = {"epochs": epochs, "steps": steps, "verbose": verbose, "metrics": metrics + ["lr"]}
        for callback in callbacks:
            callback.model, callback.params = self, params

        self.optimizer, self.loss = optimizer, loss_fn
        history = History()
        batches = _Batches(self.device, [X, y], batch_size)
        rng = np.random.default_rng(seed)
        self.stop_training = False
        for callback in callbacks:
            callback.on_train_begin({})
        for epoch in range(epochs):
            for callback in callbacks:
                callback.on_epoch_begin(epoch, {})
            started = time.perf_counter()
            order = rng.permutation(len(X)) if shuffle else None
            with tqdm(
                total=steps,
                desc=f"epoch {epoch + 1}/{epochs}",
                unit="batch",
                disable=verbose != 1,
                leave=True,
            ) as progress:
                self.train()
                logs = _run_epoch(self, loss_fn, batches, order, batch_size, True, progress)
                if validation_data is not None:
                    val = self.evaluate(*validation_data, batch_size=max(batch_size, 256))
                    logs.update({f"val_{k}": v for k, v in val.items()})
                    progress.set_postfix({k: f"{v:.4f}" for k, v in logs.items()})
            logs["lr"] = self.optimizer.lr
            history.append(epoch, logs)
            if verbose == 2:
                seconds = time.perf_counter() - started
                shown = " - ".join(f"{k} {v:.4f}" for k, v in logs.items() if k != "lr")
                print(f"epoch {epoch + 1}/{epochs} - {seconds:.2f} s - {shown}")
            for callback in callbacks:
                callback.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        for callback in callbacks:
            callback.on_train_end({})
        self.eval()
        return history

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
            batches = _Batches(self.device, [X, y], min(batch_size, len(X)))
            return _run_epoch(self, loss_fn, batches, None, min(batch_size, len(X)), False, None)
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

    def save(self, path) -> None:
        """Write the architecture (JSON) and the arrays to one ``.npz`` file
        that ``gn.load`` reads back without pickle."""
        serialization.save(self, path)
