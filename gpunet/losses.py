"""Loss functions as objects: ``loss, grad = loss_fn(pred, target)``.

Each call computes the mean loss and d loss / d pred in one kernel pass, on
the device ``pred`` lives on. ``loss`` is a 0-d array there (``float(loss)``
reads it); ``grad`` has ``pred``'s shape, dtype and device.

A loss object keeps the arrays it returns and refills them on its next call
with the same shapes, so a training loop allocates nothing per step (on a GPU,
no device memory either). Read or copy them before calling it again:
``float(loss)``, ``grad.copy()``.

Each loss also says how to score predictions (``hits``) so that training can
report accuracy: the number of correct rows or elements in a batch.
"""

from __future__ import annotations

import numpy as np

from . import dispatch, ops
from ._arrays import check_dtypes, empty
from .kernels import _cuda


class Loss:
    """Base class: subclasses name their gn.ops loss (``op``) and how they score."""

    #: The gn.ops loss the object runs.
    op: str
    #: "argmax" (rows), "binary" (elements) or None (regression: no accuracy).
    hits_kind: str | None = None
    #: For "binary": the prediction above which an element counts as 1.
    threshold = 0.0
    #: As ``Layer.host_replay``, for ``into`` and ``hits``.
    host_replay = False

    def __init__(self):
        self._buffers = {}

    def _op(self):
        return _LOSS_OPS[self.op]

    def __call__(self, pred, target):
        """(mean loss as a 0-d array, d loss / d pred); see the module docstring."""
        loss_buffer, loss, grad = self._outputs(pred, target)
        self._op()(pred, target, out=(loss_buffer, grad))
        return loss, grad

    def into(self, pred, target, loss_out, hits_out=None):
        """As ``__call__``, but the loss goes into ``loss_out`` (a 1-element
        array of pred's dtype on its device, such as one slot of a per-step
        record) and, when ``hits_out`` is given, the hit count (see ``hits``)
        into it; returns grad."""
        if hits_out is not None:
            self._check_classifier()
        grad = self._outputs(pred, target)[2]
        self._op()(pred, target, out=(loss_out, grad))
        if hits_out is not None:
            self.hits(pred, target, hits_out)
        return grad

    def _outputs(self, pred, target):
        """(loss buffer, its 0-d view, grad) for pred's shape, kept between calls."""
        kind = dispatch.placement(self.op, pred=pred, target=target)
        key = (kind, tuple(pred.shape), getattr(pred.dtype, "str", None))
        found = self._buffers.get(key)
        if found is None:
            check_dtypes(self.op, ("pred",), (pred,))
            self._buffers.clear()  # one batch shape at a time (the last batch may differ)
            buffer = empty(kind, (1,), pred.dtype)
            found = (buffer, _cuda.scalar_view(buffer), empty(kind, pred.shape, pred.dtype))
            self._buffers[key] = found
        return found

    def hits(self, pred, target, out):
        """Count correct predictions into ``out[0]`` (1 element, pred's dtype and
        device); the target as ``__call__`` takes it. Raises TypeError for a
        regression loss."""
        self._check_classifier()
        if self.hits_kind == "argmax":
            ops.argmax_hits(pred, target, out=out)
        else:
            ops.binary_hits(pred, target, self.threshold, out=out)

    def _check_classifier(self):
        if self.hits_kind is None:
            raise TypeError(f"{type(self).__name__} is a regression loss: it has no accuracy")

    def hits_per_sample(self, pred) -> int:
        """How many hits one sample can score (its number of outputs for binary losses)."""
        return 1 if self.hits_kind == "argmax" else int(np.prod(pred.shape[1:], dtype=np.int64))

    def config(self) -> dict:
        """The constructor's arguments (for saving and repr)."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class SoftmaxCrossEntropy(Loss):
    """Softmax and cross-entropy fused and stable, averaged over the batch.

    pred: logits (batch, C). target: class indices (batch,) (int64 on a GPU),
    or rows (batch, C) of one-hot vectors or probabilities. The gradient is
    (softmax(pred) - onehot) / batch. Accuracy: argmax of pred against the class.
    """

    host_replay = True

    op = "softmax_cross_entropy"
    hits_kind = "argmax"


class MSE(Loss):
    """Mean over all elements of 1/2 (pred - target)^2; gradient (pred - target) / n."""

    host_replay = True

    op = "mse"


class BinaryCrossEntropy(Loss):
    """Binary cross-entropy against targets in [0, 1], averaged over all elements.

    With ``from_logits=True`` (the default, and the stable choice) pred holds
    logits and the sigmoid is fused in; with False, pred holds probabilities
    (logarithms clamped at -100, as PyTorch's BCELoss). Accuracy: elementwise
    agreement of the thresholded prediction with ``target > 0.5``.
    """

    host_replay = True

    hits_kind = "binary"

    def __init__(self, from_logits: bool = True):
        super().__init__()
        if not isinstance(from_logits, bool):
            raise TypeError(f"expected from_logits to be a bool, got {from_logits!r}")
        self.from_logits = from_logits
        self.op = "binary_cross_entropy" if from_logits else "binary_cross_entropy_probs"
        self.threshold = 0.0 if from_logits else 0.5

    def config(self) -> dict:
        return {"from_logits": self.from_logits}


#: The gn.ops function of each loss op.
_LOSS_OPS = {
    "softmax_cross_entropy": ops.softmax_cross_entropy,
    "mse": ops.mse,
    "binary_cross_entropy": ops.binary_cross_entropy,
    "binary_cross_entropy_probs": ops.binary_cross_entropy_probs,
}

#: Loss names accepted where a loss object is expected (``fit(loss="mse")``).
LOSSES = {
    "softmax_cross_entropy": SoftmaxCrossEntropy,
    "mse": MSE,
    "binary_cross_entropy": BinaryCrossEntropy,
}


def get(loss) -> Loss:
    """A Loss object from a Loss or one of the names in ``LOSSES``."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str) and loss in LOSSES:
        return LOSSES[loss]()
    names = ", ".join(repr(name) for name in LOSSES)
    raise ValueError(f"expected a gn.losses.Loss or one of {names}, got {loss!r}")
