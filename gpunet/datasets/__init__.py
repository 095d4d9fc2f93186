"""Data sets: the bundled 8x8 digits, and MNIST read from (or fetched as) IDX files.

``load_digits()`` needs no network: the 1797 8x8 images of the UCI "Optical
Recognition of Handwritten Digits" data set (E. Alpaydin and C. Kaynak, 1998;
CC BY 4.0) ship with gpunet, compressed (about 45 KB).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import math
import os
import struct
import tempfile
import urllib.request
import zlib

import numpy as np
from tqdm import tqdm

#: The IDX type code for unsigned bytes (the third byte of the magic number).
_IDX_UBYTE = 0x08
#: The most dimensions an IDX file may declare (numpy's limit before 2.0).
_IDX_MAX_DIMS = 32
#: Deflate expands a byte at most 1032-fold (a 258-byte match coded in two
#: bits): a gzip file cannot hold more data than this many times its size.
_DEFLATE_MAX_RATIO = 1032
#: Bytes read at a time: what checking a gzip file's length holds at once.
_CHUNK = 1 << 18


def load_digits():
    """(X, y): X float32 (1797, 64), pixel intensities 0..16; y int64 (1797,), 0..9."""
    with importlib.resources.files(__package__).joinpath("digits.npz").open("rb") as f:
        data = np.load(f)
        return data["images"].astype(np.float32), data["labels"].astype(np.int64)


def read_idx(path) -> np.ndarray:
    """The array in an IDX file (gzip-compressed when its name ends in .gz), as uint8.

    Raises ValueError naming the file when it is not an unsigned-byte IDX
    file, its data is not exactly as long as its header declares, or its
    gzip stream is damaged or cut short. The length is checked before the
    array is allocated: against the file's size, or by inflating a gzip
    stream once chunk by chunk (stopping one byte past the declared size,
    keeping nothing) before inflating it again into the array.
    """
    compressed = str(path).endswith(".gz")
    try:
        with (gzip.open if compressed else open)(path, "rb") as f:
            shape, offset = _read_idx_header(f, path)
            expected = math.prod(shape)
            if compressed:
                if expected > _DEFLATE_MAX_RATIO * os.path.getsize(path):
                    raise ValueError(
                        f"{path}: expected at most {_DEFLATE_MAX_RATIO} bytes of data per "
                        f"compressed byte, got a header declaring {expected} for shape {shape}"
                    )
                present = _count_bytes(f, expected + 1)
                f.seek(offset)
            else:
                present = os.fstat(f.fileno()).st_size - offset
            if present != expected:
                got = f"more than {expected}" if present > expected else present
                raise ValueError(
                    f"{path}: expected {expected} bytes of data for shape {shape}, got {got}"
                )
            data = np.empty(expected, np.uint8)
            if _read_into(f, memoryview(data)) != expected or f.read(1):
                raise ValueError(f"{path}: the file changed while it was read")
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise ValueError(f"{path}: damaged or truncated gzip data ({error})") from error
    return data.reshape(shape)


def _read_idx_header(f, path):
    """(shape, data offset) from the header of the IDX file open as ``f``."""
    magic = f.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] != _IDX_UBYTE:
        raise ValueError(f"{path}: expected an unsigned-byte IDX file, got header {magic!r}")
    ndim = magic[3]
    if not 1 <= ndim <= _IDX_MAX_DIMS:
        raise ValueError(f"{path}: expected 1 to {_IDX_MAX_DIMS} dimensions, got {ndim}")
    dims = f.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header")
    return struct.unpack(f">{ndim}I", dims), 4 + 4 * ndim


def _count_bytes(f, limit):
    """How many bytes are left in ``f``, counted up to ``limit``: read a
    chunk at a time and dropped (a gzip stream inflates no more at once)."""
    count = 0
    while count < limit:
        n = len(f.read(min(_CHUNK, limit - count)))
        if not n:
            break
        count += n
    return count


def _read_into(f, out):
    """Fill the memoryview ``out`` from ``f`` a chunk at a time; the number of bytes read."""
    count = 0
    while count < len(out):
        n = f.readinto(out[count : count + _CHUNK])
        if not n:
            break
        count += n
    return count


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


#: Where fetch_mnist downloads from by default, and the MD5 of each file there.
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def _md5(path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url, target, md5, progress):
    """Download ``url`` to ``target`` through a temporary file, kept only if its MD5 is ``md5``."""
    fd, partial = tempfile.mkstemp(dir=os.path.dirname(target), suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            name = os.path.basename(target)
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=name, disable=not progress
            ) as bar:
                for chunk in iter(lambda: response.read(1 << 16), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        got = _md5(partial)
        if got != md5:
            raise ValueError(f"{url}: expected MD5 {md5}, got {got}; the download was discarded")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def fetch_mnist(cache_dir, *, url=MNIST_URL, md5=None, progress=True):
    """Download the four MNIST files into ``cache_dir`` (unless already there
    with the right checksum), then return ``load_mnist(cache_dir)``.

    ``md5`` maps file names to checksums (default: MNIST_MD5); a file whose
    checksum differs is refused with ValueError and not kept.
    """
    md5 = MNIST_MD5 if md5 is None else md5
    os.makedirs(cache_dir, exist_ok=True)
    for name, checksum in md5.items():
        target = os.path.join(cache_dir, name)
        if not (os.path.exists(target) and _md5(target) == checksum):
            _download(url.rstrip("/") + "/" + name, target, checksum, progress)
    return load_mnist(cache_dir)
