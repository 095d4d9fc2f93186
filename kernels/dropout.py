"""Inverted dropout with a counter-based mask, on the CPU and CUDA.

``out[i] = x[i] / (1 - p)`` where element ``i`` is kept, else 0. The mask comes
from the Philox stream ``seed`` (``gpunet.kernels.rng``) at word ``offset``, a
multiple of 4: each 32-bit word serves two elements, 16 bits each, so a Philox
block (four words) serves eight. Element ``8 t + 2 j + h`` reads word ``j`` of
block ``offset / 4 + t``, its high half for ``h = 0`` and its low half for
``h = 1``, and is kept when that half is at least ``threshold = round(p *
2**16)``. So the mask depends only on (seed, offset, p, i): the same on both
targets and for both dtypes, and drawn again, never stored, by the backward
pass. A draw over ``n`` elements uses ``words(n) = 4 * ceil(n / 8)`` words.
``p`` is thereby rounded to a multiple of 2**-16; ``p = 0`` keeps everything
and ``p = 1`` nothing (the scale is then 0).

Two elements per word halve the Philox work, which, more than the memory
traffic, bounds the CPU kernel.

The backward of ``dropout(x)`` is ``dropout(grad_out)`` with the same seed,
offset and p, so one kernel serves both.

Arrays are flat, C-contiguous, float32 or float64.

Sections: numpy reference, CPU kernels, CUDA kernels, launchers.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import uint32, uint64

from . import _cuda, rng
from ._cache import cached
from ._cpu import CPU_OPTIONS
from ._cuda import cuda, float_signatures, grid_1d
from ._table import OpKernels

#: Each element's random value has 16 bits: p is rounded to a multiple of 2**-16.
_BITS = 16
_LEVELS = 1 << _BITS
_LOW = np.uint32(_LEVELS - 1)
_HIGH = np.uint32(_BITS)


def words(n: int) -> int:
    """Stream words a draw over ``n`` elements uses (whole Philox blocks)."""
    return 4 * ((n + 7) // 8)


def threshold(p: float) -> int:
    """The kept-word threshold for drop probability ``p`` in [0, 1]."""
    return int(round(p * _LEVELS))


def scale(p: float, dtype) -> np.floating:
    """The kept elements' factor 1 / (1 - p) in ``dtype`` (0 for p = 1)."""
    return np.dtype(dtype).type(0 if p >= 1 else 1 / (1 - p))


# --- reference (the executable spec) --------------------------------------------------


def dropout_mask_ref(n, seed, offset, p):
    """Boolean (n,): True where element i is kept."""
    block = np.uint64(offset // 4) + np.arange((n + 7) // 8, dtype=np.uint64)
    seed = np.uint64(seed)
    mask32 = np.uint64(0xFFFFFFFF)
    w = np.stack(
        rng.philox4x32_ref(
            block & mask32, block >> np.uint64(32), 0, 0, seed & mask32, seed >> np.uint64(32)
        ),
        axis=1,
    ).reshape(-1)
    halves = np.stack([w >> _HIGH, w & _LOW], axis=1).reshape(-1)[:n]
    return halves >= threshold(p)


def dropout_ref(x, seed, offset, p):
    """x * (mask / (1 - p)) for any shape of x, the factor rounded to x's dtype
    first, as the kernels multiply (so they match it exactly)."""
    keep = dropout_mask_ref(x.size, seed, offset, p).reshape(x.shape)
    return x * np.where(keep, scale(p, x.dtype), x.dtype.type(0))


# --- CPU kernels ----------------------------------------------------------------------
# As in rng's CPU kernels: a forceinline copy of philox_block, uint64 element
# indices (no wraparound branch on the stores), and whole blocks stored without
# bounds checks so that LLVM vectorises Philox across blocks; the last, partial
# block takes the checked path.

_philox_block_cpu = numba.njit(forceinline=True)(rng.philox_block.py_func)


@numba.njit(forceinline=True)
def _keep(half, limit, factor):
    return factor if half >= limit else factor - factor


@numba.njit(forceinline=True)
def _dropout_block(x, out, seed, block0, limit, factor, t, checked):
    """Elements 8 t to 8 t + 7 (only those in x if ``checked``)."""
    words = _philox_block_cpu(seed, block0 + uint64(t))
    n = uint64(x.size)
    i = uint64(8) * uint64(t)
    for j in range(4):
        w = uint32(words[j])
        hi, lo = i + uint64(2 * j), i + uint64(2 * j + 1)
        if not checked or hi < n:
            out[hi] = x[hi] * _keep(w >> _HIGH, limit, factor)
        if not checked or lo < n:
            out[lo] = x[lo] * _keep(w & _LOW, limit, factor)


@cached()
@numba.njit(**CPU_OPTIONS)
def _dropout_cpu(x, out, seed, block0, limit, factor):
    """Serial at every size: dropout sits between BLAS products (see _cpu.py)."""
    full = x.size // 8
    for t in range(full):
        _dropout_block(x, out, seed, block0, limit, factor, t, False)
    if x.size % 8:
        _dropout_block(x, out, seed, block0, limit, factor, full, True)


# --- CUDA kernels ---------------------------------------------------------------------


@_cuda.kernel(
    "dropout.apply",
    float_signatures("void({t}[::1], {t}[::1], uint64, uint64, uint32, {t})"),
)
def _dropout_kernel(x, out, seed, block0, limit, factor):
    """One thread per Philox block (grid-stride): eight elements each."""
    zero = factor - factor
    for t in range(cuda.grid(1), (x.size + 7) // 8, cuda.gridsize(1)):
        words = rng.philox_block(seed, block0 + uint64(t))
        for j in range(4):
            w = words[j]
            i = 8 * t + 2 * j
            if i < x.size:
                out[i] = x[i] * (factor if (w >> _HIGH) >= limit else zero)
            if i + 1 < x.size:
                out[i + 1] = x[i + 1] * (factor if (w & _LOW) >= limit else zero)


# --- launchers ------------------------------------------------------------------------


def _arguments(x, out, seed, offset, p):
    if out.size != x.size:  # the kernels index out by x's size
        raise ValueError(f"dropout: expected out of {x.size} elements like x, got {out.size}")
    if offset % 4:
        raise ValueError(f"dropout: expected an offset that is a multiple of 4, got {offset}")
    return (
        np.uint64(seed),
        np.uint64(offset // 4),
        np.uint32(threshold(p)),
        scale(p, x.dtype),
    )


def dropout_cpu(x, out, seed, offset, p):
    """out = dropout(x) for flat C-contiguous numpy arrays of one float dtype;
    ``seed`` and ``offset`` (a multiple of 4) are ints in [0, 2**64)."""
    _dropout_cpu(x, out, *_arguments(x, out, seed, offset, p))
    return out


def dropout_cuda(x, out, seed, offset, p):
    """dropout_cpu on device arrays."""
    arguments = _arguments(x, out, seed, offset, p)
    if x.size:
        blocks, threads = grid_1d((x.size + 7) // 8)
        _dropout_kernel[blocks, threads](x, out, *arguments)
    return out


# --- table ----------------------------------------------------------------------------

KERNELS = {"dropout": OpKernels(dropout_ref, dropout_cpu, dropout_cuda)}
