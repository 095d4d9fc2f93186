"""Data sets: the bundled 8x8 digits, and MNIST read from its IDX files.

``load_digits()`` needs no network: the 1797 8x8 images of the UCI "Optical
Recognition of Handwritten Digits" data set (E. Alpaydin and C. Kaynak, 1998;
CC BY 4.0) ship with gpunet, compressed (about 45 KB).
"""

from __future__ import annotations

import gzip
import importlib.resources
import os
import struct

import numpy as np

#: The IDX type code for unsigned bytes (the third byte of the magic number).
_IDX_UBYTE = 0x08


def load_digits():
    """(X, y): X float32 (1797, 64), pixel intensities 0..16; y int64 (1797,), 0..9."""
    with importlib.resources.files(__package__).joinpath("digits.npz").open("rb") as f:
        data = np.load(f)
        return data["images"].astype(np.float32), data["labels"].astype(np.int64)


def read_idx(path) -> np.ndarray:
    """The array in an IDX file (gzip-compressed or not), as uint8.

    Raises ValueError naming the file when it is not an unsigned-byte IDX file
    or is shorter than its header says.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE:
        raise ValueError(f"{path}: expected an unsigned-byte IDX file, got header {raw[:4]!r}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: expected {expected} bytes of data for shape {shape}, got {len(raw) - header}"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def _find(directory, stem):
    for name in (stem, stem + ".gz"):
        candidate = os.path.join(directory, name)
        if os.path.exists(candidate):
            return candidate
    raise FileNotFoundError(f"expected {stem} or {stem}.gz in {directory}")


def load_mnist(path):
    """((X_train, y_train), (X_test, y_test)) from the four standard MNIST IDX
    files in directory ``path`` (``train-images-idx3-ubyte`` and so on, each
    optionally ``.gz``). X: float32 (n, 784) scaled to [0, 1]; y: int64."""
    splits = []
    for split in ("train", "t10k"):
        images = read_idx(_find(path, f"{split}-images-idx3-ubyte"))
        labels = read_idx(_find(path, f"{split}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{path}: expected {split} images (n, rows, cols) and labels (n,), "
                f"got {images.shape} and {labels.shape}"
            )
        X = images.reshape(images.shape[0], -1).astype(np.float32) / np.float32(255)
        splits.append((X, labels.astype(np.int64)))
    return tuple(splits)
