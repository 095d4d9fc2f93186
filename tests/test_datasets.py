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


@pytest.fixture
def mnist_server(tmp_path):
    """A local HTTP server serving generated MNIST files: (url, their MD5s, the data)."""
    import functools
    import hashlib
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    written = make_mnist(served, compress=True)
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in served.iterdir()}
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", md5, written
    server.shutdown()
    server.server_close()


def test_fetch_mnist_downloads_verifies_and_caches(tmp_path, mnist_server):
    url, md5, written = mnist_server
    cache = tmp_path / "cache"
    (X, y), (_, y_test) = gn.datasets.fetch_mnist(cache, url=url, md5=md5, progress=False)
    np.testing.assert_array_equal(y, written["train"][1])
    np.testing.assert_array_equal(y_test, written["t10k"][1])
    assert sorted(p.name for p in cache.iterdir()) == sorted(md5)
    # Cached: a second call needs no server.
    (X2, _), _ = gn.datasets.fetch_mnist(cache, url="http://127.0.0.1:9/", md5=md5, progress=False)
    np.testing.assert_array_equal(X2, X)


def test_fetch_mnist_refuses_a_bad_checksum(tmp_path, mnist_server):
    url, md5, _ = mnist_server
    wrong = dict(md5, **{"t10k-labels-idx1-ubyte.gz": "0" * 32})
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="expected MD5 0{32}"):
        gn.datasets.fetch_mnist(cache, url=url, md5=wrong, progress=False)
    assert "t10k-labels-idx1-ubyte.gz" not in [p.name for p in cache.iterdir()]
    assert not [p for p in cache.iterdir() if p.suffix == ".part"]
