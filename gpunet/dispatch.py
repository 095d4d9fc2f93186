"""The kernel registry: one implementation per (op, device kind), built from
the ``KERNELS`` tables that end each kernels module.

``kernel_for(op, kind)`` finds a kernel or raises NotImplementedError naming
both; ``placement(...)`` tells which device kind a set of input arrays lives
on, refusing a mix of host and GPU arrays.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ._device import DeviceError
from .kernels import (
    _cuda,
    activations,
    batchnorm,
    dense,
    dropout,
    losses,
    metrics,
    optim,
    rbm,
    recurrent,
    rng,
    scalers,
    softmax,
)
from .kernels._table import OpKernels

#: Device kinds in order of preference.
KINDS = ("cuda", "cpu")

#: The kernels modules whose tables make the registry.
MODULES = (
    activations,
    softmax,
    dense,
    losses,
    metrics,
    dropout,
    batchnorm,
    scalers,
    optim,
    rng,
    rbm,
    recurrent,
)


def _table() -> dict[str, OpKernels]:
    ops = {}
    for module in MODULES:
        for op, entry in module.KERNELS.items():
            assert op not in ops, f"op {op!r} is in two kernel tables"
            ops[op] = entry
    return ops


#: op -> its reference and entry points, from every module's table.
TABLE = _table()

#: kind -> op -> kernel. Keyed by kind first, so that the ops' fast paths
#: find a CPU kernel with one string key.
_registry: dict[str, dict[str, Callable]] = {
    "cpu": {op: entry.cpu for op, entry in TABLE.items()},
    "cuda": {op: entry.cuda for op, entry in TABLE.items()},
}


def kernel_for(op: str, kind: str) -> Callable:
    """The ``kind`` ("cpu" or "cuda") implementation of ``op``."""
    try:
        return _registry[kind][op]
    except KeyError:
        if kind not in _registry:
            raise ValueError(f"expected a device kind in {KINDS}, got {kind!r}") from None
        have = sorted(k for k, kernels in _registry.items() if op in kernels)
        if not have:
            raise NotImplementedError(f"gpunet has no op named {op!r}") from None
        raise NotImplementedError(
            f"gpunet has no {kind} kernel for {op!r} (it has: {', '.join(have)})"
        ) from None


def registered() -> list[tuple[str, str]]:
    """All (op, kind) pairs with a kernel, sorted."""
    return sorted((op, kind) for kind, kernels in _registry.items() for op in kernels)


def placement(op: str, **arrays) -> str:
    """The device kind ("cpu" or "cuda") that all of ``arrays`` live on.

    ``arrays`` maps argument names to arrays (``None`` entries are skipped).
    Raises TypeError for non-arrays and DeviceError for a host/GPU mix.
    """
    host = False  # the common case first: numpy arrays only
    for x in arrays.values():
        if type(x) is np.ndarray:
            host = True
        elif x is not None:
            break
    else:
        if host:
            return "cpu"
    kinds = {}
    for name, x in arrays.items():
        if x is None:
            continue
        if isinstance(x, np.ndarray):
            kinds[name] = "cpu"
        elif _cuda.is_device_array(x):
            kinds[name] = "cuda"
        else:
            raise TypeError(
                f"{op}: expected {name} to be a numpy array or a CUDA array, got {type(x).__name__}"
            )
    found = set(kinds.values())
    if len(found) > 1:
        where = ", ".join(f"{name} on {kind}" for name, kind in kinds.items())
        raise DeviceError(
            f"{op}: expected all arrays on one device, got {where}; "
            "move them with gn.to_device(x, device) first"
        )
    return found.pop()
