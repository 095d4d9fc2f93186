"""What ``fit`` reports and the hooks it calls: the ``History`` of per-epoch
metrics, and callbacks (``EarlyStopping``, ``LearningRateScheduler``,
``ModelCheckpoint``), each able to give and take its state so that a
checkpoint resumes them too. ``gn.training`` exports them all.
"""

from __future__ import annotations

import contextlib
import math
import os

from . import distributed as _distributed
from . import optim as _optim


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

    def state_dict(self) -> dict:
        """{"epoch": [...], "history": {name: [...]}}, JSON-serialisable."""
        return {
            "epoch": [int(e) for e in self.epoch],
            "history": {k: [float(v) for v in values] for k, values in self.history.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()``; checks it all before changing anything."""
        epochs = state.get("epoch") if isinstance(state, dict) else None
        history = state.get("history") if isinstance(state, dict) else None
        if (
            not isinstance(epochs, list)
            or not all(isinstance(e, int) and not isinstance(e, bool) for e in epochs)
            or not isinstance(history, dict)
            or not all(
                isinstance(v, list)
                and len(v) == len(epochs)
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
                for v in history.values()
            )
        ):
            raise ValueError(f"expected a History state {{'epoch', 'history'}}, got {state!r}")
        self.epoch = list(epochs)
        self.history = {k: [float(x) for x in v] for k, v in history.items()}

    def __repr__(self) -> str:
        if not self.epoch:
            return "History(0 epochs)"
        last = ", ".join(f"{k}={v[-1]:.4g}" for k, v in self.history.items())
        return f"History({len(self.epoch)} epochs; last: {last})"


class Callback:
    """Hooks ``fit`` calls; ``self.model`` is the model being trained, and
    ``self.params`` what ``fit`` was asked to do: ``epochs``, ``steps`` (per
    epoch), ``verbose`` and ``metrics`` (the names each epoch's logs will hold).
    Setting ``model.stop_training = True`` ends training after the current epoch.

    A callback that keeps state across epochs gives it with ``state_dict()``
    (JSON-serialisable, plus weights shaped like the model's arrays under
    "weights" as {state_dict name: array}) and takes it back with
    ``load_state_dict()``, which checkpoints use; ``fit(..., resume=...)``
    calls it after ``on_train_begin``."""

    model = None
    params: dict = {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state != {}:
            raise ValueError(f"{type(self).__name__} keeps no state, got {state!r}")

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


def _mode(monitor, mode, who) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{who}: expected mode 'auto', 'min' or 'max', got {mode!r}")
    return ("max" if "acc" in monitor else "min") if mode == "auto" else mode


def _missing(who, monitor, names):
    raise KeyError(
        f"{who}: monitors {monitor!r}, but the epoch's logs hold "
        f"{sorted(names)}; pass validation data to monitor a val_ metric"
    )


def _check_monitored(who, monitor, params):
    """Before training: a known metric that the epochs will not log (other
    callbacks may add other names)."""
    metrics = params.get("metrics")
    if metrics is not None and monitor in _KNOWN_METRICS and monitor not in metrics:
        _missing(who, monitor, metrics)


def _improved(value, best, mode, min_delta=0.0) -> bool:
    """Whether ``value`` beats ``best`` (None: nothing yet) by more than
    ``min_delta``; a NaN never does."""
    if math.isnan(value):
        return False
    if best is None:
        return True
    if mode == "min":
        return value < best - min_delta
    return value > best + min_delta


def _optional_number(value, kind, what):
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
        raise ValueError(f"expected {what} to be a number or None, got {value!r}")
    return value


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
        self.mode = _mode(monitor, mode, "EarlyStopping")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"EarlyStopping: expected an integer patience >= 0, got {patience!r}")
        self.monitor, self.min_delta, self.patience = monitor, abs(float(min_delta)), patience
        self.restore_best_weights = restore_best_weights

    def on_train_begin(self, logs):
        self.best, self.best_epoch, self.wait, self.stopped_epoch = None, None, 0, None
        self.best_weights = None
        _check_monitored("EarlyStopping", self.monitor, self.params)

    def state_dict(self) -> dict:
        state = {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "stopped_epoch": self.stopped_epoch,
        }
        if self.best_weights is not None:
            state["weights"] = self.best_weights
        return state

    def load_state_dict(self, state: dict) -> None:
        keys = {"best", "best_epoch", "wait", "stopped_epoch"}
        if not isinstance(state, dict) or not keys <= set(state) <= keys | {"weights"}:
            raise ValueError(f"expected an EarlyStopping state {sorted(keys)}, got {state!r}")
        best = _optional_number(state["best"], (int, float), "EarlyStopping's best")
        for key in ("best_epoch", "wait", "stopped_epoch"):
            _optional_number(state[key], int, f"EarlyStopping's {key}")
        if state["wait"] is None or state["wait"] < 0:
            raise ValueError(f"expected EarlyStopping's wait >= 0, got {state['wait']!r}")
        weights = state.get("weights")
        if weights is not None and not isinstance(weights, dict):
            raise ValueError(f"expected EarlyStopping's weights by name, got {weights!r}")
        self.best, self.best_epoch = best, state["best_epoch"]
        self.wait, self.stopped_epoch = state["wait"], state["stopped_epoch"]
        self.best_weights = None if weights is None else {k: v.copy() for k, v in weights.items()}

    def on_epoch_end(self, epoch, logs):
        if self.monitor not in logs:
            _missing("EarlyStopping", self.monitor, logs)
        value = float(logs[self.monitor])
        if _improved(value, self.best, self.mode, self.min_delta):
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

    def state_dict(self) -> dict:
        """The schedule object's state (a function keeps none: the optimizer holds its lr)."""
        return {} if self._scheduler is None else {"schedule": self._scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self._scheduler is None:
            super().load_state_dict(state)
        elif not isinstance(state, dict) or set(state) != {"schedule"}:
            raise ValueError(
                f"expected a LearningRateScheduler state {{'schedule'}}, got {state!r}"
            )
        else:
            self._scheduler.load_state_dict(state["schedule"])


class ModelCheckpoint(Callback):
    """Save checkpoints while ``fit`` runs: the model with its optimizer's
    state, the random streams' positions and where the fit stands (epoch,
    History, the callbacks' state), so that ``fit(..., resume=path)``
    continues from one as if never stopped.

    ``filepath`` may hold ``{epoch}`` (the epochs done, from 1) and the names
    of the epoch's logs, filled in by ``str.format``
    (``"ckpt-{epoch:03d}-{val_loss:.3f}.npz"``; ".npz" is appended when
    missing). A checkpoint is written after every ``every``-th epoch; with
    ``monitor`` only when that value improves on the best so far (``mode``
    as in EarlyStopping). ``keep`` keeps the newest ``keep`` files this
    callback wrote and deletes the older ones (None keeps them all). Writes
    are atomic (see ``gpunet.serialization``) and come after every other
    callback's ``on_epoch_end``, so that a checkpoint holds their state at the
    end of the epoch. ``saved`` lists the files kept, oldest first (from a
    checkpoint resumed, those in this callback's folder). In a data-parallel
    fit (``gn.distributed``) only rank 0 writes and deletes files."""

    def __init__(
        self,
        filepath,
        *,
        every: int = 1,
        monitor: str | None = None,
        mode: str = "auto",
        keep: int | None = None,
    ):
        self.filepath = os.fspath(filepath)
        for name, value in (("every", every), ("keep", keep)):
            if name == "keep" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"ModelCheckpoint: expected a positive integer {name}, got {value!r}"
                )
        self.every, self.monitor, self.keep = every, monitor, keep
        self.mode = None if monitor is None else _mode(monitor, mode, "ModelCheckpoint")
        self.best, self.saved = None, []

    def on_train_begin(self, logs):
        self.best, self.saved = None, []
        names = {name: 0.0 for name in self.params.get("metrics", ())}
        try:
            self.filepath.format(epoch=1, **names)
        except KeyError:
            pass  # a name another callback may log
        except (IndexError, ValueError) as exc:
            raise ValueError(f"ModelCheckpoint: cannot fill in {self.filepath!r} ({exc})") from exc
        if self.monitor is not None:
            _check_monitored("ModelCheckpoint", self.monitor, self.params)

    def on_epoch_end(self, epoch, logs):
        if (epoch + 1) % self.every:
            return
        best = self.best
        if self.monitor is not None:
            if self.monitor not in logs:
                _missing("ModelCheckpoint", self.monitor, logs)
            value = float(logs[self.monitor])
            if not _improved(value, best, self.mode):
                return
            self.best = value
        path = self.filepath.format(epoch=epoch + 1, **logs)
        path = path if path.endswith(".npz") else path + ".npz"
        saved = self.saved
        self.saved = [p for p in saved if p != path] + [path]
        stale = self.saved[: -self.keep] if self.keep else []
        self.saved = self.saved[len(stale) :]
        if _distributed.rank() != 0:  # data-parallel: rank 0 writes the files
            return
        try:  # the file holds this callback's state with itself in it
            self.model.save(path, optimizer=self.model.optimizer)
        except BaseException:
            self.best, self.saved = best, saved
            raise
        for old in stale:
            with contextlib.suppress(FileNotFoundError):
                os.remove(old)

    def state_dict(self) -> dict:
        return {"best": self.best, "saved": list(self.saved)}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or set(state) != {"best", "saved"}:
            raise ValueError(f"expected a ModelCheckpoint state {{'best', 'saved'}}, got {state!r}")
        best = _optional_number(state["best"], (int, float), "ModelCheckpoint's best")
        saved = state["saved"]
        if not isinstance(saved, list) or not all(isinstance(p, str) for p in saved):
            raise ValueError(f"expected ModelCheckpoint's saved files as a list, got {saved!r}")
        # A checkpoint may come from elsewhere: only .npz files in this
        # callback's folder are taken back (and so ever deleted by keep).
        folder = os.path.abspath(os.path.dirname(self.filepath))
        self.best = best
        self.saved = [
            p for p in saved if p.endswith(".npz") and os.path.dirname(os.path.abspath(p)) == folder
        ]
