"""Saving and loading models: one ``.npz`` file holding the architecture as
JSON and every array under its ``state_dict`` name, readable without pickle.

The JSON (the entry ``gpunet.json``) reads::

    {"format": "gpunet-model", "version": 1,
     "model": "Sequential", "layers": [{"class": "Dense", "config": {...}}, ...]}
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from . import nn
from ._device import _resolve, get_device

FORMAT = "gpunet-model"
VERSION = 1
#: The archive entry holding the architecture.
ARCHITECTURE = "gpunet.json"


def save(model: nn.Sequential, path) -> None:
    """Write ``model`` to ``path`` (".npz" is appended when missing, as numpy does)."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"expected a gn.nn.Sequential, got {type(model).__name__}")
    for i, layer in enumerate(model.layers):
        if type(layer).__name__ not in nn.LAYERS:
            raise TypeError(f"cannot save layer {i}: {type(layer).__name__} is not a gpunet layer")
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


def load(path, device=None) -> nn.Sequential:
    """The model saved at ``path``, on ``device`` (default: the current device).

    Raises ValueError naming the problem for a file that is not a gpunet model
    (not an npz archive, truncated, no architecture, another format or version,
    missing or misshapen arrays); no pickle is ever loaded.
    """
    device = get_device() if device is None else _resolve(device)
    name = os.fspath(path)
    try:
        with np.load(name, allow_pickle=False) as archive:
            if ARCHITECTURE not in archive.files:
                raise ValueError(
                    f"{name}: not a gpunet model (no {ARCHITECTURE} entry; it holds "
                    f"{', '.join(archive.files[:5]) or 'nothing'})"
                )
            architecture = _architecture(name, archive[ARCHITECTURE])
            arrays = {k: archive[k] for k in archive.files if k != ARCHITECTURE}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ValueError(f"{name}: not a readable gpunet model file ({exc})") from exc
    layers = []
    for i, spec in enumerate(architecture["layers"]):
        cls = nn.LAYERS.get(spec.get("class"))
        if cls is None:
            raise ValueError(f"{name}: layer {i} has unknown class {spec.get('class')!r}")
        try:
            layers.append(cls(**spec.get("config", {}), **_placement(cls, device)))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}: layer {i} ({spec['class']}) cannot be built: {exc}") from exc
    model = nn.Sequential(*layers)
    model.load_state_dict(arrays)
    return model.eval()


def _placement(cls, device):
    return {"device": device, "seed": 0} if cls is nn.Dense else {}


def _architecture(name, entry) -> dict:
    try:
        architecture = json.loads(str(entry))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name}: the architecture entry is not valid JSON ({exc})") from exc
    if not isinstance(architecture, dict) or architecture.get("format") != FORMAT:
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
