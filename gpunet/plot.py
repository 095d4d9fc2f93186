"""Pictures of models (matplotlib, from the ``plot`` extra: ``pip install 'gpunet[plot]'``)."""

from __future__ import annotations

import math

import numpy as np


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "gn.plot needs matplotlib: pip install 'gpunet[plot]' (or matplotlib)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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
    plt = _pyplot()
    height = 6 * grid.shape[0] / grid.shape[1]
    fig, ax = plt.subplots(figsize=(6, max(height, 1)))
    try:
        ax.imshow(grid, cmap="gray", interpolation="nearest", vmin=0, vmax=1)
        ax.set_axis_off()
        ax.set_title(title or f"{rbm.components_.shape[0]} RBM filters")
        fig.savefig(path, bbox_inches="tight", dpi=100)
    finally:
        plt.close(fig)
    return path
