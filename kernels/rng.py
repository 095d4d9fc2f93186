"""Counter-based random numbers: Philox4x32-10, the same stream on CPU and GPU.

Philox4x32-10 (Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as
easy as 1, 2, 3", SC 2011; the Random123 library) maps a 128-bit counter and
a 64-bit key through ten rounds to four 32-bit words. Nothing is stored
between calls, so any part of a stream can be computed on its own, by any
thread, on any device.

The stream
----------
A generator is a ``(seed, offset)`` pair of unsigned 64-bit integers. Word
``n`` of the stream for ``seed`` is word ``n % 4`` of::

    philox4x32(lo32(n // 4), hi32(n // 4), 0, 0, lo32(seed), hi32(seed))

so the Philox block ``b = n // 4`` holds words ``4b`` to ``4b + 3``.

Draws and how offsets advance
-----------------------------
A draw of ``n`` uniform values in ``[0, 1)`` starting at ``offset``:

- float32: value ``i`` is ``uint32_to_unit_float32(word(offset + i))``, the
  top 24 bits of the word; the draw consumes ``n`` words.
- float64: value ``i`` is ``uint32_pair_to_unit_float64(word(offset + 2i),
  word(offset + 2i + 1))``, 53 bits; the draw consumes ``2n`` words.

A caller that draws again continues at ``offset + words consumed``: drawing
``n`` values then ``m`` values gives the same numbers as one draw of ``n + m``.
Word indices must stay below ``2**64``; the launchers check it.

Inside
------
- scalar core, ``@numba.njit`` and callable from CPU and CUDA kernels alike:
  :func:`philox4x32`, :func:`philox_block`, :func:`uint32_to_unit_float32`,
  :func:`uint32_pair_to_unit_float64`;
- :func:`philox4x32_ref` and :func:`uniform_ref`, the plain-numpy spec;
- :func:`uniform_cpu`, filling a host array (``@njit``, parallel when large);
- :func:`uniform_cuda`, filling a device array.

Each kernel iteration (CPU) or thread (CUDA) computes one Philox block and
stores the values whose words, or whose last word, lie in it. A float64 draw
at an odd offset splits a value across two blocks, so it computes the block
before as well: it costs twice the Philox work of an even-offset draw.

Numba typing: every integer here is held in an explicit ``uint32`` or
``uint64``, because Numba types an unsigned integer mixed with a plain int
literal as int64 or float64. The float32 conversion never goes through float64.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import float32, float64, uint32, uint64

from ._cuda import cuda, grid_1d, is_device_array, kernel

# Philox4x32 multipliers and Weyl key increments (Random123, philox.h).
_M0 = np.uint32(0xD2511F53)
_M1 = np.uint32(0xCD9E8D57)
_W0 = np.uint32(0x9E3779B9)
_W1 = np.uint32(0xBB67AE85)
_ROUNDS = 10

_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
#: 2**-24 and 2**-53: the spacing of the float32 and float64 values drawn.
_FLOAT32_ULP = np.float32(2.0**-24)
_FLOAT64_ULP = np.float64(2.0**-53)

#: Below this many Philox blocks (4 float32 or 2 float64 values each),
#: ``uniform_cpu`` runs serially: starting Numba's thread pool costs more than
#: the work. Measured on 2 cores: parallel wins from about 2**12 blocks.
PARALLEL_MIN_BLOCKS = 4096

_STREAM_END = 2**64


# --------------------------------------------------------------------------
# Reference (plain numpy)
# --------------------------------------------------------------------------


def philox4x32_ref(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 of counters ``(c0, c1, c2, c3)`` under keys ``(k0, k1)``.

    Each argument is an integer or array of integers in ``[0, 2**32)``; they
    broadcast together. Returns four uint32 arrays of the broadcast shape.
    """
    c0, c1, c2, c3, k0, k1 = (np.asarray(x, dtype=np.uint64) for x in (c0, c1, c2, c3, k0, k1))
    m0, m1 = np.uint64(_M0), np.uint64(_M1)
    for _ in range(_ROUNDS):
        p0 = m0 * c0
        p1 = m1 * c2
        c0, c1, c2, c3 = (
            (p1 >> _SHIFT32) ^ c1 ^ k0,
            p1 & _MASK32,
            (p0 >> _SHIFT32) ^ c3 ^ k1,
            p0 & _MASK32,
        )
        k0 = (k0 + np.uint64(_W0)) & _MASK32
        k1 = (k1 + np.uint64(_W1)) & _MASK32
    return tuple(c.astype(np.uint32) for c in (c0, c1, c2, c3))


def uniform_ref(n, seed, offset, dtype=np.float32):
    """``n`` uniform values in [0, 1) from stream ``seed`` at word ``offset``.

    Returns a 1-D array of shape ``(n,)`` and dtype float32 or float64 (see
    the module docstring for which words each value uses).
    """
    dtype = _check_dtype(np.dtype(dtype))
    words_per_value = 1 if dtype == np.float32 else 2
    _check_stream(seed, offset, n * words_per_value)
    index = np.uint64(offset) + np.arange(n * words_per_value, dtype=np.uint64)
    block = index >> np.uint64(2)
    seed = np.uint64(seed)
    words = np.stack(
        philox4x32_ref(block & _MASK32, block >> _SHIFT32, 0, 0, seed & _MASK32, seed >> _SHIFT32)
    )
    word = words[(index & np.uint64(3)).astype(np.intp), np.arange(index.size)].astype(np.uint64)
    if dtype == np.float32:
        return ((word >> np.uint64(8)).astype(np.float32) * _FLOAT32_ULP).astype(np.float32)
    a, b = word[0::2], word[1::2]
    return (((a >> np.uint64(5)) << np.uint64(26)) | (b >> np.uint64(6))) * _FLOAT64_ULP


# --------------------------------------------------------------------------
# Scalar core, shared by the CPU and CUDA kernels
# --------------------------------------------------------------------------
# inline="always" inlines these into their callers at the Numba IR level. In a
# CUDA kernel that also spares numba-cuda from compiling them as separate device
# functions, which it does for the current GPU's compute capability: without
# inlining, ``cuda.compile_ptx`` fails on a machine with no GPU.


@numba.njit(inline="always")
def _mulhilo32(a, b):
    """High and low uint32 halves of the 64-bit product ``a * b``."""
    product = uint64(a) * uint64(b)
    return uint32(product >> _SHIFT32), uint32(product & _MASK32)


@numba.njit(inline="always")
def philox4x32(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10: four uint32 counter words and two uint32 key words to
    four uint32 random words."""
    c0, c1, c2, c3 = uint32(c0), uint32(c1), uint32(c2), uint32(c3)
    k0, k1 = uint32(k0), uint32(k1)
    for _ in range(_ROUNDS):
        hi0, lo0 = _mulhilo32(_M0, c0)
        hi1, lo1 = _mulhilo32(_M1, c2)
        c0, c1, c2, c3 = uint32(hi1 ^ c1 ^ k0), lo1, uint32(hi0 ^ c3 ^ k1), lo0
        k0 = uint32(k0 + _W0)
        k1 = uint32(k1 + _W1)
    return c0, c1, c2, c3


@numba.njit(inline="always")
def philox_block(seed, block):
    """Philox block ``block`` (uint64) of stream ``seed`` (uint64): its four
    uint32 words, stream words ``4 * block`` to ``4 * block + 3``."""
    seed, block = uint64(seed), uint64(block)
    return philox4x32(
        uint32(block & _MASK32),
        uint32(block >> _SHIFT32),
        uint32(0),
        uint32(0),
        uint32(seed & _MASK32),
        uint32(seed >> _SHIFT32),
    )


@numba.njit(inline="always")
def uint32_to_unit_float32(u):
    """A uint32 word to a float32 in [0, 1): its top 24 bits times 2**-24."""
    return float32(uint32(uint32(u) >> uint32(8))) * _FLOAT32_ULP


@numba.njit(inline="always")
def uint32_pair_to_unit_float64(a, b):
    """Two uint32 words to a float64 in [0, 1): the top 27 bits of ``a`` and
    the top 26 bits of ``b`` form 53 bits, times 2**-53."""
    bits = ((uint64(a) >> uint64(5)) << uint64(26)) | (uint64(b) >> uint64(6))
    return float64(bits) * _FLOAT64_ULP
