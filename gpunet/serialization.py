"""Saving and loading models: one ``.npz`` file holding the architecture as
JSON and every array under its ``state_dict`` name, readable without pickle.

The JSON (the entry ``gpunet.json``) reads::

    {"format": "gpunet-model", "version": 1,
     "model": "Sequential", "layers": [{"class": "Dense", "config": {...}}, ...],
     "loss": {"class": "SoftmaxCrossEntropy", "config": {}},
     "checkpoint": {...}}

"loss" is there once the model has been fitted (it also decides the metrics:
accuracy for classification losses). "checkpoint" is there when the model
was saved with its optimizer (``model.save(path, optimizer=opt)``, and the
``ModelCheckpoint`` callback): the optimizer's ``state_dict`` without its
arrays and with "params" (the model array each of its parameters is), the
random streams' positions, and, saved during or after ``fit``, where the fit
stands ("fit": epochs and steps done, History, shuffling generator,
callbacks). Their arrays are the entries ``optimizer.<parameter
index>.<buffer>`` (the parameter's shape and dtype),
``callbacks.<index>.<model array>`` (weights a callback keeps, such as
EarlyStopping's best ones) and, for a checkpoint in mid-epoch, ``fit.losses``
and ``fit.hits`` (the records of the epoch's steps done, float64).

Writing is atomic: the archive goes to a temporary file beside the target,
is flushed to the disk, and then renamed over the target, so a reader (or a
crash) finds the old file or the new one, never a mixture.

Reading checks before allocating: the architecture is read first, and the
arrays it implies (each layer class's ``expected_arrays(config)``, found
without building the layer) are compared with the shapes and dtypes in the
arrays' npy headers, which are read without inflating the arrays. The arrays
may then add up to at most ``ALLOCATION_RATIO`` times the file's size (a
file gpunet writes holds its arrays uncompressed, so it never comes close)
unless the caller passes a larger ``max_bytes``; only then are they read and
the layers built.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import math
import os
import secrets
import stat
import struct
import zipfile
import zlib

import numpy as np

from . import losses as _losses
from . import random as _random
from ._device import _resolve, get_device

FORMAT = "gpunet-model"
VERSION = 1
#: The archive entry holding the architecture.
ARCHITECTURE = "gpunet.json"
#: ``load`` reads arrays adding up to at most this many times the file's size
#: (unless given ``max_bytes``): a file gpunet writes stores its arrays
#: uncompressed, so only a compressed or a crafted file declares more.
ALLOCATION_RATIO = 4

#: Layer classes by name, for loading saved models; layers add themselves
#: with :func:`register_layer`.
LAYERS: dict[str, type] = {}
#: Model classes by name (``Sequential``), added with :func:`register_model`.
MODELS: dict[str, type] = {}


def register_layer(cls: type) -> type:
    """Let saved models name the layer class ``cls`` (by its ``__name__``).
    Its classmethod ``expected_arrays(config)`` tells ``load`` which arrays
    a layer built from ``config`` holds, without building it."""
    LAYERS[cls.__name__] = cls
    return cls


def register_model(cls: type) -> type:
    """Let ``save`` and ``load`` take models of class ``cls``."""
    MODELS[cls.__name__] = cls
    return cls


# --- writing ---------------------------------------------------------------------------


def describe(model) -> dict:
    """The architecture entry of ``model`` (a gn.nn.Sequential of gpunet layers),
    without the loss and the checkpoint."""
    if type(model) is not MODELS.get("Sequential"):
        raise TypeError(f"expected a gn.nn.Sequential, got {type(model).__name__}")
    for i, layer in enumerate(model.layers):
        if LAYERS.get(type(layer).__name__) is not type(layer):
            raise TypeError(
                f"cannot save layer {i}: {type(layer).__module__}.{type(layer).__qualname__} "
                "is not a gpunet layer"
            )
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": "Sequential",
        "layers": [{"class": type(layer).__name__, "config": layer.config()} for layer in model],
    }


def save(model, path, *, optimizer=None) -> None:
    """Write ``model`` (a gn.nn.Sequential) to ``path`` (".npz" is appended when
    missing, as numpy does), atomically (see the module docstring), with its
    loss when it has one of gn.losses'. With ``optimizer`` (a gn.optim optimizer
    over the model's parameters) the file is a checkpoint: it also holds the
    optimizer's state, the random streams' positions and, when that optimizer
    is the one the model was last fitted with, where the fit stands, so that
    ``fit(..., resume=path)`` continues it."""
    architecture = describe(model)
    loss = getattr(model, "loss", None)
    if type(loss) in _losses.LOSSES.values():
        architecture["loss"] = {"class": type(loss).__name__, "config": loss.config()}
    arrays = model.state_dict()
    if optimizer is not None:
        architecture["checkpoint"], extra = model._checkpoint(optimizer)
        arrays.update(extra)
    if ARCHITECTURE in arrays:
        raise ValueError(f"an array may not be named {ARCHITECTURE!r}")
    name = os.fspath(path)
    _write_atomically(name if name.endswith(".npz") else name + ".npz", architecture, arrays)


def _write_atomically(name, architecture, arrays) -> None:
    """np.savez into a new file beside ``name``, flushed to the disk, then
    renamed over ``name``; the new file is removed if anything fails first."""
    target = os.path.realpath(name)  # through a symbolic link, to the file it names
    directory = os.path.dirname(target)
    while True:
        temporary = os.path.join(
            directory, f".{os.path.basename(target)}.{secrets.token_hex(4)}.tmp"
        )
        try:  # O_EXCL: never someone else's file; mode 0o666 less the umask, as open() gives
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as file:
            np.savez(file, **{ARCHITECTURE: np.array(json.dumps(architecture))}, **arrays)
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileNotFoundError):  # overwriting keeps the old file's mode
            os.chmod(temporary, stat.S_IMODE(os.stat(target).st_mode))
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory) -> None:
    """Make the rename durable where directories can be synced (not on Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


# --- reading ---------------------------------------------------------------------------


@dataclasses.dataclass
class Saved:
    """What a model file holds, checked: ``architecture`` (the JSON entry),
    the model's ``arrays`` by ``state_dict`` name, its ``loss`` (a gn.losses
    object, or None) and the ``checkpoint`` (None in a plain model file; its
    arrays, read only when asked for, put back in place: the optimizer's
    state under ``["optimizer"]["state"][index]``, a callback's weights
    under ``["fit"]["callbacks"][k]["weights"]``, the step records as
    ``["fit"]["records"]`` = (losses, hits), or () at an epoch's end)."""

    path: str
    architecture: dict
    arrays: dict
    loss: object
    checkpoint: dict | None


def load(path, device=None, *, max_bytes: int | None = None):
    """The model saved at ``path``, on ``device`` (default: the current device),
    in evaluation mode, with the loss it was fitted with (``model.loss``) so
    that ``evaluate`` needs none. As ``save`` does, ".npz" is appended to a
    ``path`` that does not exist without it.

    The file is checked before anything is allocated (see the module
    docstring): its arrays may add up to at most ``max_bytes`` (default:
    ``ALLOCATION_RATIO`` times the file's size). Raises ValueError naming the
    file for one that is not a gpunet model or is damaged (not an npz
    archive, truncated, no architecture, another format or version, unknown
    layers, missing, unexpected or misshapen arrays, object arrays, arrays
    larger than allowed); no pickle is ever loaded.
    """
    device = get_device() if device is None else _resolve(device)
    saved = read(path, max_bytes=max_bytes)
    model = build(saved, device)
    model.loss = saved.loss
    return model.eval()


def read(path, *, max_bytes: int | None = None, checkpoint_arrays: bool = False) -> Saved:
    """The checked contents of the model file at ``path`` (see :class:`Saved`
    and ``load``), the checkpoint's arrays read too with ``checkpoint_arrays``."""
    name = _existing(path)
    with open(name, "rb") as file:  # missing files and the like raise as they are
        size = os.fstat(file.fileno()).st_size
        if file.read(4) not in (b"PK\x03\x04", b"PK\x05\x06"):
            raise ValueError(f"{name}: not a gpunet model file (not an npz archive)")
        limit = _limit(max_bytes, size)
        with _reading(name):
            archive = zipfile.ZipFile(file)
        with archive:
            return _read(name, archive, size, limit, checkpoint_arrays)


def _existing(path) -> str:
    name = os.fspath(path)
    if not os.path.exists(name) and not name.endswith(".npz") and os.path.exists(name + ".npz"):
        name += ".npz"
    return name


def _limit(max_bytes, size) -> int:
    if max_bytes is None:
        return ALLOCATION_RATIO * size
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes < 0:
        raise ValueError(f"expected max_bytes to be an integer >= 0, got {max_bytes!r}")
    return int(max_bytes)


@contextlib.contextmanager
def _reading(name, key=None):
    """Turn what a damaged archive raises while being read into ValueError naming the file."""
    try:
        yield
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        OSError,
        NotImplementedError,  # an unknown compression method
        RuntimeError,  # an encrypted entry
        struct.error,
        OverflowError,
        ValueError,  # numpy's header and data checks
    ) as exc:
        where = "" if key is None else f" in array {key!r}"
        raise ValueError(f"{name}: truncated or damaged npz archive{where} ({exc})") from exc


@dataclasses.dataclass
class _Header:
    """An array entry's npy header: what reading it would allocate."""

    info: zipfile.ZipInfo
    shape: tuple
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _read(name, archive, size, limit, checkpoint_arrays) -> Saved:
    with _reading(name):
        infos = archive.infolist()
    entries = {}
    for info in infos:
        key = info.filename.removesuffix(".npy")
        if not info.filename.endswith(".npy") or key in entries:
            what = "not an npy array" if key not in entries else "a second entry of that name"
            raise ValueError(f"{name}: damaged npz archive: entry {info.filename!r} is {what}")
        if info.compress_size > size or (
            info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size
        ):
            raise ValueError(
                f"{name}: truncated or damaged npz archive: entry {info.filename!r} declares "
                f"{info.file_size:,} bytes in a {size:,}-byte file"
            )
        entries[key] = info
    if ARCHITECTURE not in entries:
        raise ValueError(
            f"{name}: not a gpunet model (no {ARCHITECTURE} entry; it holds "
            f"{', '.join(list(entries)[:5]) or 'nothing'})"
        )
    headers = {key: _header(name, archive, key, info) for key, info in entries.items()}
    entry = headers.pop(ARCHITECTURE)
    if entry.dtype.kind != "U" or entry.shape != ():
        raise ValueError(
            f"{name}: expected the {ARCHITECTURE} entry to be a JSON string, got a "
            f"{entry.dtype} array of shape {entry.shape}"
        )
    _check_size(name, entry.nbytes, limit, size)
    architecture = _architecture(name, _array(name, archive, ARCHITECTURE, entry.info))
    expected, extra = _expected(name, architecture)
    _check_headers(name, expected, headers)
    _check_size(name, entry.nbytes + sum(h.nbytes for h in headers.values()), limit, size)
    arrays = {
        key: _array(name, archive, key, header.info)
        for key, header in headers.items()
        if key not in extra or checkpoint_arrays
    }
    model_arrays = {key: value for key, value in arrays.items() if key not in extra}
    checkpoint = architecture.get("checkpoint")
    if checkpoint is not None and checkpoint_arrays:
        checkpoint = _with_arrays(checkpoint, arrays)
    loss = _loss(name, architecture.get("loss"))
    return Saved(name, architecture, model_arrays, loss, checkpoint)


def _header(name, archive, key, info) -> _Header:
    """The npy header of entry ``info``, read without reading the array."""
    fmt = np.lib.format
    with _reading(name, key), archive.open(info) as file:
        version = fmt.read_magic(file)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(file)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(file)
        else:
            raise ValueError(f"npy format version {version[0]}.{version[1]} is not read")
        start = file.tell()
    if dtype.hasobject:
        raise ValueError(
            f"{name}: array {key!r} holds Python objects (pickled data), which gpunet never loads"
        )
    if any(n < 0 for n in shape):
        raise ValueError(f"{name}: damaged npz archive: array {key!r} of shape {shape}")
    header = _Header(info, tuple(shape), dtype)
    if info.file_size != start + header.nbytes:
        raise ValueError(
            f"{name}: truncated or damaged npz archive in array {key!r}: its entry holds "
            f"{info.file_size - start:,} bytes of data, its header declares {header.nbytes:,}"
        )
    return header


def _check_size(name, total, limit, size) -> None:
    if total > limit:
        raise ValueError(
            f"{name}: expected arrays of at most {limit:,} bytes "
            f"({ALLOCATION_RATIO} times the file's {size:,} bytes unless max_bytes= says more), "
            f"got arrays of {total:,} bytes"
        )


def _array(name, archive, key, info) -> np.ndarray:
    """Entry ``info``'s array (its header already checked, so its size is known)."""
    with _reading(name, key), archive.open(info) as file:
        array = np.lib.format.read_array(file, allow_pickle=False)
        if file.read(1):  # also makes zipfile check the entry's CRC
            raise ValueError("more data than its header declares")
    return array


def _architecture(name, entry) -> dict:
    try:
        architecture = json.loads(str(entry))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{name}: the architecture entry is not valid JSON ({exc})") from exc
    if not isinstance(architecture, dict):
        raise ValueError(f"{name}: expected the architecture to be a JSON object, got {entry}")
    if architecture.get("format") != FORMAT:
        raise ValueError(f"{name}: not a gpunet model (format {architecture.get('format')!r})")
    if architecture.get("version") != VERSION:
        raise ValueError(
            f"{name}: gpunet model format version {architecture.get('version')!r}; "
            f"this gpunet reads version {VERSION}"
        )
    if architecture.get("model") != "Sequential" or not isinstance(
        architecture.get("layers"), list
    ):
        raise ValueError(f"{name}: unsupported model {architecture.get('model')!r}")
    return architecture


def _layer_specs(name, architecture):
    """[(class, config)] of the architecture's layers, each config checked
    against its constructor's signature."""
    specs = []
    for i, spec in enumerate(architecture["layers"]):
        if not isinstance(spec, dict) or not isinstance(spec.get("config", {}), dict):
            raise ValueError(f"{name}: layer {i} is not a {{'class', 'config'}} object: {spec!r}")
        cls = LAYERS.get(spec.get("class"))
        if cls is None:
            raise ValueError(f"{name}: layer {i} has unknown class {spec.get('class')!r}")
        config = spec.get("config", {})
        try:
            inspect.signature(cls).bind(**config, **_placement(cls, None))
        except TypeError as exc:
            raise ValueError(f"{name}: layer {i} ({spec['class']}) cannot be built: {exc}") from exc
        specs.append((cls, config))
    return specs


def _expected(name, architecture):
    """({array name: (shape, dtype)} for every array the architecture implies,
    the names of the checkpoint's among them)."""
    expected = {}
    for i, (cls, config) in enumerate(_layer_specs(name, architecture)):
        try:
            arrays = cls.expected_arrays(config)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}: layer {i} ({cls.__name__}) cannot be built: {exc}") from exc
        expected.update((f"{i}.{key}", value) for key, value in arrays.items())
    extra = _checkpoint_arrays(name, architecture.get("checkpoint"), expected)
    expected.update(extra)
    return expected, set(extra)


def _checkpoint_arrays(name, checkpoint, expected) -> dict:
    """{entry name: (shape, dtype)} for the checkpoint's arrays: the optimizer's
    and the callbacks' are shaped like model arrays, and the fit's step records
    hold one float64 per step done in the epoch in progress."""
    if checkpoint is None:
        return {}
    bad = f"{name}: damaged checkpoint"
    optimizer = checkpoint.get("optimizer") if isinstance(checkpoint, dict) else None
    if not isinstance(optimizer, dict):
        raise ValueError(f"{bad}: expected an optimizer state, got {optimizer!r}")
    params, state = optimizer.get("params"), optimizer.get("state")
    if not isinstance(params, list) or not all(p in expected for p in params):
        raise ValueError(f"{bad}: expected the optimizer's parameters to be model arrays")
    if not isinstance(state, dict):
        raise ValueError(f"{bad}: expected the optimizer's state to be an object")
    like = {}
    for index, buffers in state.items():
        if not index.isdigit() or int(index) >= len(params) or not isinstance(buffers, list):
            raise ValueError(f"{bad}: optimizer state for parameter {index!r}: {buffers!r}")
        for buffer in buffers:
            if not isinstance(buffer, str) or not buffer.isidentifier():
                raise ValueError(f"{bad}: optimizer state buffer {buffer!r}")
            like[f"optimizer.{index}.{buffer}"] = expected[params[int(index)]]
    fit = checkpoint.get("fit")
    if fit is None:
        return like
    callbacks = fit.get("callbacks") if isinstance(fit, dict) else None
    if not isinstance(callbacks, list) or not all(isinstance(c, dict) for c in callbacks):
        raise ValueError(f"{bad}: expected the fit's callbacks to be a list of objects")
    for k, callback in enumerate(callbacks):
        weights = callback.get("weights", [])
        if not isinstance(weights, list) or not all(w in expected for w in weights):
            raise ValueError(f"{bad}: callback {k} keeps weights that are not model arrays")
        like.update((f"callbacks.{k}.{w}", expected[w]) for w in weights)
    step = fit.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"{bad}: expected the steps done as an integer >= 0, got {step!r}")
    if step:
        like.update(
            (f"fit.{records}", ((step,), np.dtype(np.float64))) for records in ("losses", "hits")
        )
    return like


def _check_headers(name, expected, headers) -> None:
    unexpected = sorted(set(headers) - set(expected))
    if unexpected:
        raise ValueError(f"{name}: arrays that no layer holds: {', '.join(unexpected)}")
    for key, (shape, dtype) in expected.items():
        if key not in headers:
            raise ValueError(f"{name}: missing array {key!r}")
        found = headers[key]
        if found.dtype.kind not in "biuf":
            raise ValueError(f"{name}: expected a numeric array {key!r}, got dtype {found.dtype}")
        if found.shape != tuple(shape):
            raise ValueError(
                f"{name}: expected array {key!r} of shape {tuple(shape)}, got {found.shape}"
            )
        if found.dtype.newbyteorder("=") != np.dtype(dtype):
            raise ValueError(
                f"{name}: expected array {key!r} of dtype {np.dtype(dtype)}, got {found.dtype}"
            )


def _with_arrays(checkpoint, arrays) -> dict:
    """The checkpoint with its arrays in place (see :class:`Saved`)."""
    optimizer = dict(checkpoint["optimizer"])
    optimizer["state"] = {
        int(index): {b: arrays[f"optimizer.{index}.{b}"] for b in buffers}
        for index, buffers in optimizer["state"].items()
    }
    result = {**checkpoint, "optimizer": optimizer}
    if checkpoint.get("fit") is not None:
        callbacks = [
            {**c, "weights": {w: arrays[f"callbacks.{k}.{w}"] for w in c["weights"]}}
            if "weights" in c
            else c
            for k, c in enumerate(checkpoint["fit"]["callbacks"])
        ]
        fit = checkpoint["fit"]
        records = (arrays["fit.losses"], arrays["fit.hits"]) if fit["step"] else ()
        result["fit"] = {**fit, "callbacks": callbacks, "records": records}
    return result


def _loss(name, spec):
    if spec is None:
        return None
    classes = {cls.__name__: cls for cls in _losses.LOSSES.values()}
    if not isinstance(spec, dict) or spec.get("class") not in classes:
        raise ValueError(f"{name}: unknown loss {spec!r}")
    try:
        return classes[spec["class"]](**spec.get("config", {}))
    except TypeError as exc:
        raise ValueError(f"{name}: the loss {spec!r} cannot be built: {exc}") from exc


def build(saved: Saved, device):
    """The model ``saved`` describes, on ``device``, with its arrays."""
    layers = []
    for i, (cls, config) in enumerate(_layer_specs(saved.path, saved.architecture)):
        try:
            with _default_generator_kept():
                layers.append(cls(**config, **_placement(cls, device)))
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"{saved.path}: layer {i} ({cls.__name__}) cannot be built: {exc}"
            ) from exc
    model = MODELS["Sequential"](*layers)
    model.load_state_dict(saved.arrays)
    return model


def _placement(cls, device):
    """Where a layer is built: ``device`` for layers with arrays; Dense draws
    its (overwritten) initial weights from a fixed seed."""
    params = inspect.signature(cls).parameters
    placement = {"device": device} if "device" in params else {}
    if cls is LAYERS["Dense"]:
        placement["seed"] = 0
    return placement


@contextlib.contextmanager
def _default_generator_kept():
    """Loading leaves the default generator where it was: a layer whose config
    has no seed draws its (overwritten) initial weights from it while built,
    and keeps using it afterwards (for dropout masks, as the saved layer did);
    a layer whose config has its seed draws from that seed's stream, so its
    own generator stands where the saved layer's stood when it was built."""
    state = _random.default_generator.state_dict()
    try:
        yield
    finally:
        _random.default_generator.load_state_dict(state)
