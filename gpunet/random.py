"""Random numbers for gpunet: one counter-based stream, the same on CPU and GPU.

A :class:`Generator` is a seed and an offset into the Philox4x32-10 stream
(``gpunet.kernels.rng``). Every draw takes the next words of the stream and
advances the offset, so a seeded program draws the same numbers whichever
device it runs on, and ``state_dict()`` / ``load_state_dict()`` save and
restore a position (checkpoints do, so that a resumed run draws on).
``gn.manual_seed(seed)`` reseeds the default generator; until then it starts
from a random seed, like numpy's.
"""

from __future__ import annotations

import secrets

import numpy as np

from . import dispatch
from ._device import _resolve, get_device
from .kernels import _cuda


class Generator:
    """A (seed, offset) position in the Philox stream."""

    def __init__(self, seed: int | None = None):
        self.manual_seed(secrets.randbits(64) if seed is None else seed)

    def manual_seed(self, seed: int) -> Generator:
        """Restart at word 0 of stream ``seed`` (an int in [0, 2**64))."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"expected an int seed, got {type(seed).__name__}")
        if not 0 <= seed < 2**64:
            raise ValueError(f"expected a seed in [0, 2**64), got {seed}")
        self.seed, self.offset = int(seed), 0
        return self

    def take(self, words: int) -> int:
        """Reserve the next ``words`` words; return the offset they start at."""
        start = self.offset
        self.offset += words
        return start

    def uniform(self, shape, *, dtype="float32", device=None, out=None):
        """Uniform values in [0, 1): a new array of ``shape`` on ``device``
        (default: the current device), or ``out`` filled in place.
        float32 draws use 24 random bits per value, float64 53."""
        if out is None:
            dtype = np.dtype(dtype)
            if dtype not in (np.float32, np.float64):
                raise TypeError(f"expected dtype float32 or float64, got {dtype}")
            target = get_device() if device is None else _resolve(device)
            if target.type == "cpu":
                out = np.empty(shape, dtype)
            else:
                with _cuda.cuda.gpus[target.index]:
                    out = _cuda.cuda.device_array(shape, dtype)
        kind = dispatch.placement("uniform", out=out)
        if kind == "cpu" and not out.flags.c_contiguous:
            raise ValueError("uniform: expected out to be C-contiguous")
        flat = out.reshape(-1) if kind == "cpu" else _cuda.as_device_array(out).ravel()
        words = flat.size * (1 if flat.dtype == np.float32 else 2)
        offset = self.offset
        dispatch.kernel_for("uniform", kind)(flat, self.seed, offset)
        self.take(words)
        return out

    def state_dict(self) -> dict:
        """The position in the stream, {"seed": int, "offset": int}, JSON-serialisable."""
        return {"seed": self.seed, "offset": self.offset}

    def load_state_dict(self, state: dict) -> None:
        """Move to a position ``state_dict()`` gave; checks it all before changing anything."""
        if not isinstance(state, dict) or set(state) != {"seed", "offset"}:
            raise ValueError(f"expected a generator state {{'seed', 'offset'}}, got {state!r}")
        seed, offset = state["seed"], state["offset"]
        for name, value in (("seed", seed), ("offset", offset)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"expected an int {name} in a generator state, got {value!r}")
        if not 0 <= seed < 2**64 or offset < 0:
            raise ValueError(
                f"expected a seed in [0, 2**64) and an offset >= 0, got {seed} and {offset}"
            )
        self.seed, self.offset = int(seed), int(offset)

    def __repr__(self) -> str:
        return f"Generator(seed={self.seed}, offset={self.offset})"


default_generator = Generator()


def manual_seed(seed: int) -> Generator:
    """Reseed the default generator: the same seed gives the same numbers on
    every device."""
    return default_generator.manual_seed(seed)


def uniform(shape, *, dtype="float32", device=None, out=None):
    """Uniform values in [0, 1) from the default generator (see Generator.uniform)."""
    return default_generator.uniform(shape, dtype=dtype, device=device, out=out)
