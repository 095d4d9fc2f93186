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

Numba typing: every integer here is cast to ``uint32`` or ``uint64``
explicitly. Numba widens uint32 arithmetic to uint64, and an unsigned integer
mixed with a signed one (a plain int literal, say) gives int64 or float64. The
float32 conversion never goes through float64.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import float32, float64, uint32, uint64

from ._cache import cached
from ._cuda import as_device_array, cuda, grid_1d, is_device_array, kernel
from ._table import OpKernels

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
#: ``uniform_cpu`` runs serially: waking Numba's thread pool costs about as much
#: as the work it would share. Above it the threads clearly pay for their wake-up.
PARALLEL_MIN_BLOCKS = 2**13

_STREAM_END = 2**64
_WORDS_PER_VALUE = {np.dtype(np.float32): 1, np.dtype(np.float64): 2}


# --- references (the executable spec) -------------------------------------------------


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
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"expected n to be an int, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"expected n >= 0, got {n}")
    words = int(n) * _WORDS_PER_VALUE[dtype]
    seed, offset = _check_stream(seed, offset, words)
    index = np.uint64(offset) + np.arange(words, dtype=np.uint64)
    block = index >> np.uint64(2)
    seed = np.uint64(seed)
    words = np.stack(
        philox4x32_ref(block & _MASK32, block >> _SHIFT32, 0, 0, seed & _MASK32, seed >> _SHIFT32)
    )
    word = words[(index & np.uint64(3)).astype(np.intp), np.arange(index.size)].astype(np.uint64)
    if dtype == np.float32:
        return (word >> np.uint64(8)).astype(np.float32) * _FLOAT32_ULP
    a, b = word[0::2], word[1::2]
    return (((a >> np.uint64(5)) << np.uint64(26)) | (b >> np.uint64(6))) * _FLOAT64_ULP


# --- scalar core, shared by the CPU and CUDA kernels ----------------------------------
# inline="always" inlines these into their callers at the Numba IR level. In a
# CUDA kernel that also spares numba-cuda from compiling them as separate device
# functions, which it does for the current GPU's compute capability: without
# inlining, ``cuda.compile_ptx`` fails on a machine with no GPU.


@numba.njit(inline="always")
def _mulhilo32(a, b):
    """High and low uint32 halves of the 64-bit product ``a * b``.

    The PTX for this keeps the words in 64-bit registers and multiplies in 64
    bits, but ptxas turns each product back into 32-bit IMAD.WIDE.U32 and
    IMAD.HI.U32 instructions (checked in the SASS).
    """
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


@numba.njit(inline="always")
def _block_range(offset, words):
    """The Philox blocks a draw of ``words`` words at ``offset`` touches:
    (first block, words of it to skip, number of blocks)."""
    skip = numba.int64(uint64(offset) % uint64(4))
    return uint64(offset) // uint64(4), skip, (skip + words + 3) // 4


# --- CPU kernels ----------------------------------------------------------------------
# Blocks 1 to n_blocks - 2 of a draw lie wholly inside it, so they store without
# bounds checks; that lets LLVM vectorise Philox across blocks, which a check on
# every store prevents. The first and last blocks take the checked path.
# Value indices are uint64: Numba adds a wraparound branch to every store at a
# signed index, which also stops the vectorising. A value index "below 0" wraps
# to a huge one, which the checked path's ``< n`` test skips.
# The store functions and their copy of philox_block are inlined by LLVM
# (forceinline): Numba's IR inliner (inline="always") copies and retypes the
# callee at every call site, which makes compiling these kernels much slower.

_philox_block_cpu = numba.njit(forceinline=True)(philox_block.py_func)


@numba.njit(forceinline=True)
def _store_float32(out, seed, first_block, skip, t, checked):
    """Store the float32 values of Philox block ``first_block + t``: its word
    ``j`` is value ``4 t - skip + j`` (only those in ``out`` if ``checked``)."""
    w0, w1, w2, w3 = _philox_block_cpu(seed, first_block + uint64(t))
    n = uint64(out.size)
    i = uint64(4 * t - skip)
    if not checked or i < n:
        out[i] = uint32_to_unit_float32(w0)
    if not checked or i + uint64(1) < n:
        out[i + uint64(1)] = uint32_to_unit_float32(w1)
    if not checked or i + uint64(2) < n:
        out[i + uint64(2)] = uint32_to_unit_float32(w2)
    if not checked or i + uint64(3) < n:
        out[i + uint64(3)] = uint32_to_unit_float32(w3)


@numba.njit(forceinline=True)
def _store_float64_even(out, seed, first_block, skip, t, checked):
    """Store the float64 values of Philox block ``first_block + t`` for an
    even ``skip``: words (0, 1) and (2, 3) are values ``i`` and ``i + 1``,
    ``i = 2 t - skip // 2`` (only those in ``out`` if ``checked``)."""
    w0, w1, w2, w3 = _philox_block_cpu(seed, first_block + uint64(t))
    n = uint64(out.size)
    i = uint64(2 * t - skip // 2)
    if not checked or i < n:
        out[i] = uint32_pair_to_unit_float64(w0, w1)
    if not checked or i + uint64(1) < n:
        out[i + uint64(1)] = uint32_pair_to_unit_float64(w2, w3)


@numba.njit(forceinline=True)
def _store_float64_odd(out, seed, first_block, skip, t, checked):
    """Store the float64 values whose second word lies in Philox block
    ``first_block + t`` for an odd ``skip``: word 3 of the block before and
    word 0 are value ``i - 1``, words (1, 2) value ``i``, ``i = 2 t - skip // 2``;
    word 3 starts the value the next block completes (only values in ``out``
    if ``checked``)."""
    block = first_block + uint64(t)
    w0, w1, w2, w3 = _philox_block_cpu(seed, block)
    n = uint64(out.size)
    i = uint64(2 * t - skip // 2)
    if not checked or i - uint64(1) < n:
        w_before = _philox_block_cpu(seed, block - uint64(1))[3]
        out[i - uint64(1)] = uint32_pair_to_unit_float64(w_before, w0)
    if not checked or i < n:
        out[i] = uint32_pair_to_unit_float64(w1, w2)


def _cpu_uniform(store_block, words_per_value):
    """Serial and parallel CPU kernels ``(out, seed, offset)`` that fill
    ``out`` block by block with ``store_block``."""

    @numba.njit(forceinline=True)
    def store_edges(out, seed, offset):
        first_block, skip, n_blocks = _block_range(offset, words_per_value * out.size)
        if n_blocks > 0:
            store_block(out, seed, first_block, skip, 0, True)
        if n_blocks > 1:
            store_block(out, seed, first_block, skip, n_blocks - 1, True)
        return first_block, skip, n_blocks

    @cached(store_block, words_per_value)
    @numba.njit
    def serial(out, seed, offset):
        first_block, skip, n_blocks = store_edges(out, seed, offset)
        for t in range(1, n_blocks - 1):
            store_block(out, seed, first_block, skip, t, False)

    @cached(store_block, words_per_value)
    @numba.njit(parallel=True)
    def parallel(out, seed, offset):
        first_block, skip, n_blocks = store_edges(out, seed, offset)
        for t in numba.prange(1, n_blocks - 1):
            store_block(out, seed, first_block, skip, t, False)

    return serial, parallel


#: (serial, parallel) kernels by (dtype, parity of the offset).
_CPU_UNIFORM = {
    (np.dtype(np.float32), 0): _cpu_uniform(_store_float32, 1),
    (np.dtype(np.float64), 0): _cpu_uniform(_store_float64_even, 2),
    (np.dtype(np.float64), 1): _cpu_uniform(_store_float64_odd, 2),
}
_CPU_UNIFORM[np.dtype(np.float32), 1] = _CPU_UNIFORM[np.dtype(np.float32), 0]


# --- CUDA kernels ---------------------------------------------------------------------
# One thread per Philox block (grid-stride), storing what the CPU store functions
# store on their checked path. Indices stay signed here: the CUDA simulator runs
# this code as Python, where uint64(-1) is an error.


@kernel("rng.uniform_float32", ("void(float32[::1], uint64, uint64)",))
def _uniform_float32_kernel(out, seed, offset):
    first_block, skip, n_blocks = _block_range(offset, out.size)
    for t in range(cuda.grid(1), n_blocks, cuda.gridsize(1)):
        w0, w1, w2, w3 = philox_block(seed, first_block + uint64(t))
        i = 4 * t - skip
        if 0 <= i < out.size:
            out[i] = uint32_to_unit_float32(w0)
        if 0 <= i + 1 < out.size:
            out[i + 1] = uint32_to_unit_float32(w1)
        if 0 <= i + 2 < out.size:
            out[i + 2] = uint32_to_unit_float32(w2)
        if 0 <= i + 3 < out.size:
            out[i + 3] = uint32_to_unit_float32(w3)


@kernel("rng.uniform_float64", ("void(float64[::1], uint64, uint64)",))
def _uniform_float64_kernel(out, seed, offset):
    first_block, skip, n_blocks = _block_range(offset, 2 * out.size)
    for t in range(cuda.grid(1), n_blocks, cuda.gridsize(1)):
        block = first_block + uint64(t)
        w0, w1, w2, w3 = philox_block(seed, block)
        i = 2 * t - skip // 2
        if skip % 2 == 0:
            if 0 <= i < out.size:
                out[i] = uint32_pair_to_unit_float64(w0, w1)
            if 0 <= i + 1 < out.size:
                out[i + 1] = uint32_pair_to_unit_float64(w2, w3)
        else:
            if 0 <= i - 1 < out.size:
                w_before = philox_block(seed, block - uint64(1))[3]
                out[i - 1] = uint32_pair_to_unit_float64(w_before, w0)
            if 0 <= i < out.size:
                out[i] = uint32_pair_to_unit_float64(w1, w2)


_CUDA_UNIFORM = {
    np.dtype(np.float32): _uniform_float32_kernel,
    np.dtype(np.float64): _uniform_float64_kernel,
}


# --- launchers ------------------------------------------------------------------------


def _check_dtype(dtype):
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"expected dtype float32 or float64, got {dtype}")
    return dtype


def _check_stream(seed, offset, words):
    """Check that ``seed`` and ``offset`` are ints in [0, 2**64) and that a
    draw of ``words`` words at ``offset`` ends within the stream; return them
    as ints."""
    checked = []
    for name, value in (("seed", seed), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"expected {name} to be an int, got {type(value).__name__}")
        if not 0 <= value < _STREAM_END:
            raise ValueError(f"expected {name} in [0, 2**64), got {value}")
        checked.append(int(value))
    seed, offset = checked
    if offset + words > _STREAM_END:
        raise ValueError(
            f"expected offset + words drawn <= 2**64, got offset {offset} and {words} words"
        )
    return seed, offset


def _block_count(offset, words):
    """How many Philox blocks a draw of ``words`` words at ``offset`` touches."""
    return (offset % 4 + words + 3) // 4


def _check_out(out):
    if out.ndim != 1:
        raise ValueError(f"expected a 1-D array, got shape {tuple(out.shape)}")
    if not out.flags["C_CONTIGUOUS"]:
        raise ValueError(f"expected a C-contiguous array, got strides {tuple(out.strides)}")
    return _check_dtype(np.dtype(out.dtype))


def uniform_cpu(out, seed, offset):
    """Fill ``out`` with uniform values in [0, 1) from stream ``seed`` at word
    ``offset`` and return it.

    ``out``: writeable 1-D C-contiguous numpy array, float32 (consumes
    ``out.size`` words) or float64 (``2 * out.size`` words).
    """
    if not isinstance(out, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(out).__name__}")
    if not out.flags.writeable:
        raise ValueError("expected a writeable array, got a read-only one")
    dtype = _check_out(out)
    words = _WORDS_PER_VALUE[dtype] * out.size
    seed, offset = _check_stream(seed, offset, words)
    serial, parallel = _CPU_UNIFORM[dtype, offset % 2]
    fill = parallel if _block_count(offset, words) >= PARALLEL_MIN_BLOCKS else serial
    fill(out, np.uint64(seed), np.uint64(offset))
    return out


def uniform_cuda(out, seed, offset):
    """Fill the device array ``out`` with uniform values in [0, 1) from stream
    ``seed`` at word ``offset`` and return it; the same values as
    :func:`uniform_cpu`.

    ``out``: 1-D C-contiguous float32 or float64 CUDA device array (anything
    with ``__cuda_array_interface__``).
    """
    if not is_device_array(out):
        raise TypeError(f"expected a CUDA device array, got {type(out).__name__}")
    device_out = as_device_array(out)
    dtype = _check_out(device_out)
    words = _WORDS_PER_VALUE[dtype] * device_out.size
    seed, offset = _check_stream(seed, offset, words)
    if words:
        blocks, threads = grid_1d(_block_count(offset, words))
        _CUDA_UNIFORM[dtype][blocks, threads](device_out, np.uint64(seed), np.uint64(offset))
    return out


# --- table ----------------------------------------------------------------------------

KERNELS = {"uniform": OpKernels(uniform_ref, uniform_cpu, uniform_cuda)}
