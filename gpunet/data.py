"""Data utilities: mini-batches over host arrays."""

from __future__ import annotations

import numpy as np


def batches(X, y=None, batch_size=32, shuffle=False, seed=None):
    """Yield mini-batches ``(X_batch, y_batch)`` (or ``X_batch`` when ``y`` is
    None) of ``batch_size`` rows; the last one may be smaller.

    ``X`` and ``y`` are numpy arrays with the same number of rows. With
    ``shuffle``, rows are visited in a random order drawn from ``seed`` (the
    same seed, the same order); without it, in order and without copying.
    """
    X = np.asarray(X)
    if y is not None:
        y = np.asarray(y)
        if len(y) != len(X):
            raise ValueError(f"expected y with {len(X)} rows like X, got {len(y)}")
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ValueError(f"expected a positive integer batch_size, got {batch_size!r}")
    order = np.random.default_rng(seed).permutation(len(X)) if shuffle else None
    for start in range(0, len(X), batch_size):
        rows = (
            slice(start, start + batch_size) if order is None else order[start : start + batch_size]
        )
        yield X[rows] if y is None else (X[rows], y[rows])
