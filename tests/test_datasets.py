"""Bundled digits and the MNIST IDX reader (on generated files)."""

import gzip
import re
import struct
import tracemalloc

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


def write_gzip_idx(path, shape, data):
    """A gzip IDX file whose header declares ``shape`` over the bytes ``data``."""
    header = bytes([0, 0, 0x08, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
    with gzip.open(path, "wb") as f:
        f.write(header + data)


def assert_refused_cheaply(path, message):
    """read_idx(path) raises ValueError naming the file and matching
    ``message``, while Python allocates at most a few chunks of the stream."""

    def read():
        with pytest.raises(ValueError, match=f"{re.escape(str(path))}: .*{message}"):
            gn.datasets.read_idx(path)

    tracemalloc.start()
    try:
        read()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


@pytest.mark.parametrize(
    "declared, present, message",
    [
        # Far more than deflate can hold in the file: refused from the header.
        ((1 << 16, 1 << 16), 1 << 20, "bytes of data per compressed byte"),
        # Possible for the file's size, one byte more than it holds.
        (((32 << 20) + 1,), 32 << 20, r"expected 33554433 bytes of data .*, got 33554432"),
        # A bomb: a few bytes declared, far more inflated (stops one byte past).
        ((10,), 32 << 20, "expected 10 bytes of data .*, got more than 10"),
    ],
)
def test_gzip_lengths_are_checked_before_allocating(tmp_path, declared, present, message):
    """The declared size is checked against what the gzip stream holds
    without holding it: Python's allocations stay at a few chunks of the
    stream, far below what is declared or inflated (32 MiB or more)."""
    path = tmp_path / "bomb-idx1-ubyte.gz"
    write_gzip_idx(path, declared, bytes(present))
    assert path.stat().st_size < present / 100
    assert_refused_cheaply(path, message)


def test_damaged_gzip_files_are_refused_naming_the_file(tmp_path):
    good = tmp_path / "good-idx3-ubyte.gz"
    images = np.random.default_rng(1).integers(0, 256, (40, 28, 28), dtype=np.uint8)
    write_idx(good, images, compress=True)
    np.testing.assert_array_equal(gn.datasets.read_idx(good), images)
    raw = good.read_bytes()
    damaged = {
        "truncated": raw[: len(raw) // 2],
        "no trailer": raw[:-8],
        "flipped byte": raw[:100] + bytes([raw[100] ^ 0xFF]) + raw[101:],
        "bad checksum": raw[:-8] + bytes([raw[-8] ^ 0xFF]) + raw[-7:],
        "not gzip": b"BZh91AY&SY" + raw[10:],
    }
    for name, content in damaged.items():
        path = tmp_path / f"{name.replace(' ', '-')}-idx3-ubyte.gz"
        path.write_bytes(content)
        with pytest.raises(ValueError, match=f"{re.escape(str(path))}: damaged or truncated gzip"):
            gn.datasets.read_idx(path)


def test_headers_without_a_sensible_shape_are_refused(tmp_path):
    path = tmp_path / "odd-idx-ubyte"
    path.write_bytes(bytes([0, 0, 0x08, 0]))
    with pytest.raises(ValueError, match="expected 1 to 32 dimensions, got 0"):
        gn.datasets.read_idx(path)
    path.write_bytes(bytes([0, 0, 0x08, 200]) + bytes(800))
    with pytest.raises(ValueError, match="got 200"):
        gn.datasets.read_idx(path)
    path.write_bytes(bytes([0, 0, 0x08, 3, 0, 0, 0, 2]))
    with pytest.raises(ValueError, match="truncated IDX header"):
        gn.datasets.read_idx(path)
    # A plain file is measured, not read: a huge declaration costs nothing.
    path.write_bytes(bytes([0, 0, 0x08, 2]) + struct.pack(">2I", 1 << 31, 1 << 31) + bytes(5))
    assert_refused_cheaply(path, r"expected 4611686018427387904 bytes .*, got 5$")


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
