"""Pictures of models (matplotlib, from the ``plot`` extra: ``pip install 'gpunet[plot]'``)."""

from __future__ import annotations

import math

import numpy as np


def _figure(**kwargs):
    """A matplotlib Figure drawn off-screen (no pyplot: the user's backend is left alone)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "gn.plot needs matplotlib: pip install 'gpunet[plot]' (or matplotlib)"
        ) from None
    return Figure(**kwargs)


def filter_grid(filters, shape=None, columns=None):
    """Tile ``filters`` (n, pixels) into one image: each row reshaped to
    ``shape`` (default: square), scaled to [0, 1] on its own, one pixel of gap.
    Returns a float64 array (rows * (h + 1) - 1, columns * (w + 1) - 1)."""
    filters = np.asarray(filters, np.float64)
    if filters.ndim != 2 or filters.shape[0] == 0:
        raise ValueError(f"expected filters of shape (n, pixels), got {filters.shape}")
    n, pixels = filters.shape
    if shape is None:
        side = math.isqrt(pixels)
        if side * side != pixels:
            raise ValueError(f"expected shape= for filters of {pixels} pixels (not a square)")
        shape = (side, side)
    h, w = shape
    if h * w != pixels:
        raise ValueError(f"expected shape with {pixels} pixels, got {shape}")
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.ones((rows * (h + 1) - 1, columns * (w + 1) - 1))
    low = filters.min(axis=1, keepdims=True)
    span = filters.max(axis=1, keepdims=True) - low
    scaled = (filters - low) / np.where(span > 0, span, 1.0)
    for i, image in enumerate(scaled):
        r, c = divmod(i, columns)
        grid[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = image.reshape(h, w)
    return grid


def rbm_filters(rbm, path, shape=None, columns=None, title=None):
    """Save the filters of a fitted ``gn.RBM`` (the rows of ``components_``,
    one per hidden unit) as an image grid at ``path`` (any format matplotlib
    writes: .png, .pdf, .svg). ``shape`` is a filter's (height, width),
    square by default. Returns ``path``."""
    grid = filter_grid(rbm.components_, shape, columns)
    height = 6 * grid.shape[0] / grid.shape[1]
    fig = _figure(figsize=(6, max(height, 1)))
    ax = fig.subplots()
    ax.imshow(grid, cmap="gray", interpolation="nearest", vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title(title or f"{rbm.components_.shape[0]} RBM filters")
    fig.savefig(path, bbox_inches="tight", dpi=100)
    return path


def learning_curves(history, path, title=None):
    """Save the per-epoch curves of a ``fit`` at ``path``: the loss on a log
    axis on the left, the accuracy (classification losses) on the right, each
    with its validation curve when the fit had validation data. ``history``
    is the History ``fit`` returned or its ``.history`` dict. Returns ``path``."""
    logs = getattr(history, "history", history)
    if not isinstance(logs, dict):
        raise TypeError(f"expected a History or its .history dict, got {type(history).__name__}")
    if not logs.get("loss"):
        raise ValueError("expected a History with at least one epoch")
    epochs = np.asarray(getattr(history, "epoch", range(len(logs["loss"])))) + 1
    for name, values in logs.items():
        if len(values) != len(epochs):
            raise ValueError(
                f"expected {len(epochs)} values of {name!r} (one per epoch), got {len(values)}"
            )
    panels = ["loss"] + (["accuracy"] if "accuracy" in logs else [])
    fig = _figure(figsize=(5 * len(panels), 3.5), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, name in zip(axes, panels, strict=True):
        curves = [(logs[name], "training")]
        if f"val_{name}" in logs:
            curves.append((logs[f"val_{name}"], "validation"))
        for values, label in curves:
            ax.plot(epochs, values, marker=".", label=label)
        if name == "loss" and all(v > 0 for values, _ in curves for v in values):
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return path
