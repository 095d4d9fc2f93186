"""Bundled digits and the MNIST IDX reader (on generated files)."""

import gzip
import struct

import numpy as np
import pytest

import gpunet as gn


def test_load_digits():
    X, y = gn.datasets.load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0 and X.max() == 16 and np.all(X == np.round(X))
    np.testing.assert_array_equal(
        np.bincount(y), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    )
    np.testing.assert_array_equal(y[:10], np.arange(10))


def write_idx(path, array, compress):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(data)


def make_mnist(directory, compress, n_train=5, n_test=3):
    rng = np.random.default_rng(0)
    split_data = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        suffix = ".gz" if compress else ""
        write_idx(directory / f"{split}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(directory / f"{split}-labels-idx1-ubyte{suffix}", labels, compress)
        split_data[split] = (images, labels)
    return split_data


@pytest.mark.parametrize("compress", [False, True])
def test_load_mnist_reads_idx_files(tmp_path, compress):
    written = make_mnist(tmp_path, compress)
    (X, y), (X_test, y_test) = gn.datasets.load_mnist(tmp_path)
    assert X.shape == (5, 784) and X.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(X * 255, written["train"][0].reshape(5, -1))
    np.testing.assert_array_equal(y, written["train"][1])
    np.testing.assert_array_equal(y_test, written["t10k"][1])
    assert X_test.shape == (3, 784)


def test_truncated_or_foreign_files_are_refused(tmp_path):
    make_mnist(tmp_path, compress=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="expected 3920 bytes of data"):
        gn.datasets.load_mnist(tmp_path)
    path.write_bytes(b"PK\x03\x04 not an idx file")
    with pytest.raises(ValueError, match="expected an unsigned-byte IDX file"):
        gn.datasets.read_idx(path)


def test_missing_files_are_named(tmp_path):
    make_mnist(tmp_path, compress=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        gn.datasets.load_mnist(tmp_path)
