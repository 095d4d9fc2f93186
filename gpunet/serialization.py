"""Saving and loading models: one ``.npz`` file holding the architecture as
JSON and every array under its ``state_dict`` name, readable without pickle.

The JSON (the entry ``gpunet.json``) reads::

    {"format": "gpunet-model", "version": 1,
     "model": "Sequential", "layers": [{"class": "Dense", "config": {...}}, ...]}
"""

from __future__ import annotations

import inspect
import json
import os
import zipfile
import zlib

import numpy as np

from ._device import _resolve, get_device

FORMAT = "gpunet-model"
VERSION = 1
#: The archive entry holding the architecture.
ARCHITECTURE = "gpunet.json"

#: Layer classes by name, for loading saved models; layers add themselves
#: with :func:`register_layer`.
LAYERS: dict[str, type] = {}
#: Model classes by name (``Sequential``), added with :func:`register_model`.
MODELS: dict[str, type] = {}


def register_layer(cls: type) -> type:
    """Let saved models name the layer class ``cls`` (by its ``__name__``)."""
    LAYERS[cls.__name__] = cls
    return cls


def register_model(cls: type) -> type:
    """Let ``save`` and ``load`` take models of class ``cls``."""
    MODELS[cls.__name__] = cls
    return cls


def save(model, path) -> None:
    """Write ``model`` (a gn.nn.Sequential) to ``path`` (".npz" is appended when
    missing, as numpy does)."""
    if type(model) is not MODELS.get("Sequential"):
        raise TypeError(f"expected a gn.nn.Sequential, got {type(model).__name__}")
    for i, layer in enumerate(model.layers):
        if LAYERS.get(type(layer).__name__) is not type(layer):
            raise TypeError(
                f"cannot save layer {i}: {type(layer).__module__}.{type(layer).__qualname__} "
                "is not a gpunet layer"
            )
    architecture = {
        "format": FORMAT,
        "version": VERSION,
        "model": "Sequential",
        "layers": [{"class": type(layer).__name__, "config": layer.config()} for layer in model],
    }
    arrays = model.state_dict()
    if ARCHITECTURE in arrays:
        raise ValueError(f"an array may not be named {ARCHITECTURE!r}")
    np.savez(path, **{ARCHITECTURE: np.array(json.dumps(architecture))}, **arrays)


def load(path, device=None):
    """The model saved at ``path``, on ``device`` (default: the current device),
    in evaluation mode. As ``save`` does, ".npz" is appended to a ``path``
    that does not exist without it.

    Raises ValueError naming the problem for a file that is not a gpunet model
    (not an npz archive, truncated, no architecture, another format or version,
    unknown layers, missing, unexpected or misshapen arrays, object arrays);
    no pickle is ever loaded.
    """
    device = get_device() if device is None else _resolve(device)
    name = os.fspath(path)
    if not os.path.exists(name) and not name.endswith(".npz") and os.path.exists(name + ".npz"):
        name += ".npz"
    entry, arrays = _read(name)
    architecture = _architecture(name, entry)
    layers = []
    for i, spec in enumerate(architecture["layers"]):
        if not isinstance(spec, dict) or not isinstance(spec.get("config", {}), dict):
            raise ValueError(f"{name}: layer {i} is not a {{'class', 'config'}} object: {spec!r}")
        cls = LAYERS.get(spec.get("class"))
        if cls is None:
            raise ValueError(f"{name}: layer {i} has unknown class {spec.get('class')!r}")
        try:
            layers.append(cls(**spec.get("config", {}), **_placement(cls, device)))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}: layer {i} ({spec['class']}) cannot be built: {exc}") from exc
    model = MODELS["Sequential"](*layers)
    expected = model.state_dict()
    unexpected = sorted(set(arrays) - set(expected))
    if unexpected:
        raise ValueError(f"{name}: arrays that no layer holds: {', '.join(unexpected)}")
    for key, value in expected.items():
        if key not in arrays:
            raise ValueError(f"{name}: missing array {key!r}")
        found = arrays[key]
        if found.shape != value.shape:
            raise ValueError(
                f"{name}: expected array {key!r} of shape {value.shape}, got {found.shape}"
            )
        if found.dtype.kind not in "biuf":
            raise ValueError(f"{name}: expected a numeric array {key!r}, got dtype {found.dtype}")
    model.load_state_dict(arrays)
    return model.eval()


def _read(name):
    """(architecture entry, {name: array}) from the archive at ``name``."""
    with open(name, "rb") as file:  # missing files and the like raise as they are
        magic = file.read(4)
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise ValueError(f"{name}: not a gpunet model file (not an npz archive)")
    key = None
    try:
        with np.load(name, allow_pickle=False) as archive:
            if ARCHITECTURE not in archive.files:
                raise _NotAModel(
                    f"{name}: not a gpunet model (no {ARCHITECTURE} entry; it holds "
                    f"{', '.join(archive.files[:5]) or 'nothing'})"
                )
            arrays = {}
            for key in archive.files:
                arrays[key] = archive[key]
    except _NotAModel as exc:
        raise ValueError(str(exc)) from None
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
        where = "" if key is None else f" in array {key!r}"
        raise ValueError(f"{name}: truncated or damaged npz archive{where} ({exc})") from exc
    except ValueError as exc:
        if key is not None and "pickle" in str(exc):
            raise ValueError(
                f"{name}: array {key!r} holds Python objects (pickled data), which gpunet "
                "never loads"
            ) from None
        where = "" if key is None else f" in array {key!r}"
        raise ValueError(f"{name}: truncated or damaged npz archive{where} ({exc})") from exc
    return arrays.pop(ARCHITECTURE), arrays


class _NotAModel(Exception):
    """A readable archive that holds no gpunet model."""


def _placement(cls, device):
    """Where a layer is built: ``device`` for layers with arrays; Dense draws
    its (overwritten) initial weights from a fixed seed, so that loading
    leaves the default generator alone."""
    params = inspect.signature(cls).parameters
    placement = {"device": device} if "device" in params else {}
    if cls is LAYERS["Dense"]:
        placement["seed"] = 0
    return placement


def _architecture(name, entry) -> dict:
    if entry.dtype.kind != "U" or entry.ndim != 0:
        raise ValueError(
            f"{name}: expected the {ARCHITECTURE} entry to be a JSON string, got a "
            f"{entry.dtype} array of shape {entry.shape}"
        )
    try:
        architecture = json.loads(str(entry))
    except json.JSONDecodeError as exc:
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
