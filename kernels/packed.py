"""Matrix products against a right operand packed once and used many times:
the recurrences' per-step products with their hidden weights.

BLAS packs both operands of every product it computes. A recurrence
multiplies the same w_hh by a new (B, H) state at every step, so a BLAS call
per step repacks w_hh each time: at B 64, H 128 (w_hh (512, 128) float32)
one-threaded OpenBLAS takes about 117 us for the 8.4 MFLOP, half of it on
packing, and a call on half the rows takes about as long as one on all of
them, so splitting the rows over threads gains nothing. Here ``pack`` lays
the operand out once, in column panels of ``panel_width`` values, and
``product`` computes row blocks of up to ``ROWS`` rows against each panel
with a register tile of ROWS x ``panel_width`` accumulators (512-bit
vectors: 16 zmm registers on AVX-512), fed by one broadcast per row and one
vector load per 16 (float32) or 8 (float64) columns at each k.

Each output sums its k terms in order, one fused multiply-add each, starting
from zero; ``beta`` then adds beta * c (beta 0 ignores c, NaN included, as
BLAS does). The results do not depend on how the rows are split.

``packed_product_ref`` is the numpy reference.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.extending import intrinsic

from ._cpu import CPU_OPTIONS

#: Rows of a register tile.
ROWS = 4
#: Vectors per row of a register tile.
_VECTORS = 4
#: Bytes of one vector (512 bits).
_VECTOR_BYTES = 64


def panel_width(dtype) -> int:
    """Columns of one panel of a packed operand of ``dtype``: 64 for
    float32, 32 for float64."""
    return _VECTORS * _VECTOR_BYTES // np.dtype(dtype).itemsize


def packed_product_ref(a, b, beta, c):
    """c = a @ b + beta * c in float64 (beta 0: c ignored)."""
    product = a.astype(np.float64) @ b.astype(np.float64)
    return product if beta == 0 else product + beta * c.astype(np.float64)


@intrinsic
def _register_tile(typingctx, rows, a, i, packed, panel, tile):
    """tile[:rows] = a[i:i + rows] @ packed[panel] (packed: (panels, K,
    width)), summing over k in order with one fused multiply-add per term,
    in ``rows`` x width accumulators held in vector registers. ``rows`` is
    a literal from 1 to ROWS; a's rows are contiguous along k."""
    if not isinstance(rows, types.IntegerLiteral):
        return None
    real = packed.dtype
    n_rows = rows.literal_value
    signature = types.none(rows, a, i, packed, panel, tile)

    def codegen(context, builder, sig, args):
        _, a_value, i_value, p_value, panel_value, tile_value = args
        fp = context.get_value_type(real)
        lanes = _VECTOR_BYTES // context.get_abi_sizeof(fp)
        width = _VECTORS * lanes
        vector = ir.VectorType(fp, lanes)
        fma = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(vector, [vector] * 3),
            f"llvm.fma.v{lanes}f{8 * context.get_abi_sizeof(fp)}",
        )
        i64 = ir.IntType(64)
        a_array = context.make_array(sig.args[1])(context, builder, a_value)
        p_array = context.make_array(sig.args[3])(context, builder, p_value)
        t_array = context.make_array(sig.args[5])(context, builder, tile_value)
        a_row_bytes = cgutils.unpack_tuple(builder, a_array.strides)[0]
        inner = cgutils.unpack_tuple(builder, p_array.shape)[1]
        a_bytes = builder.bitcast(a_array.data, ir.IntType(8).as_pointer())
        first_row = builder.mul(i_value, a_row_bytes)

        def row_pointer(r):
            offset = builder.add(first_row, builder.mul(ir.Constant(i64, r), a_row_bytes))
            return builder.bitcast(builder.gep(a_bytes, [offset]), fp.as_pointer())

        a_rows = [row_pointer(r) for r in range(n_rows)]
        panel_start = builder.mul(panel_value, builder.mul(inner, ir.Constant(i64, width)))
        b_start = builder.gep(p_array.data, [panel_start])
        zero = ir.Constant(vector, [ir.Constant(fp, 0.0)] * lanes)
        accumulators = [
            [cgutils.alloca_once_value(builder, zero) for _ in range(_VECTORS)]
            for _ in range(n_rows)
        ]
        undefined = ir.Constant(vector, ir.Undefined)
        splat_mask = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
        with cgutils.for_range(builder, inner) as loop:
            k = loop.index
            b_row = builder.gep(b_start, [builder.mul(k, ir.Constant(i64, width))])
            bs = [
                builder.load(
                    builder.bitcast(
                        builder.gep(b_row, [ir.Constant(i64, v * lanes)]), vector.as_pointer()
                    ),
                    align=context.get_abi_sizeof(fp),
                )
                for v in range(_VECTORS)
            ]
            for r in range(n_rows):
                scalar = builder.load(builder.gep(a_rows[r], [k]))
                one = builder.insert_element(undefined, scalar, ir.Constant(ir.IntType(32), 0))
                splat = builder.shuffle_vector(one, undefined, splat_mask)
                for v in range(_VECTORS):
                    slot = accumulators[r][v]
                    builder.store(builder.call(fma, [splat, bs[v], builder.load(slot)]), slot)
        t_data = t_array.data
        for r in range(n_rows):
            for v in range(_VECTORS):
                at = builder.gep(t_data, [ir.Constant(i64, r * width + v * lanes)])
                builder.store(
                    builder.load(accumulators[r][v]),
                    builder.bitcast(at, vector.as_pointer()),
                    align=context.get_abi_sizeof(fp),
                )
        return context.get_dummy_value()

    return signature, codegen


@numba.njit(**CPU_OPTIONS)
def pack(w, trans):
    """op(w) (K, N) packed for ``product``: (ceil(N / width), K, width) with
    panel p, row k holding op(w)[k, p * width:(p + 1) * width], zeros past
    N (width = ``panel_width``). op(w) is w.T when ``trans``, else w."""
    K, N = (w.shape[1], w.shape[0]) if trans else (w.shape[0], w.shape[1])
    width = _VECTORS * _VECTOR_BYTES // w.itemsize
    panels = (N + width - 1) // width
    packed = np.zeros((panels, K, width), w.dtype)
    # Each panel row is written whole, in order; transposed, its width values
    # come from as many rows of w, whose cache lines serve the next k too.
    for p in range(panels):
        j0, n = p * width, min(width, N - p * width)
        for k in range(K):
            out = packed[p, k]
            if trans:
                for j in range(n):
                    out[j] = w[j0 + j, k]
            else:
                for j in range(n):
                    out[j] = w[k, j0 + j]
    return packed


@numba.njit(inline="always")
def _tile_into(rows, a, i, packed, p, tile, beta, c):
    """c[i:i + rows, panel p's columns] = the register tile's rows (+ beta c)."""
    if rows == 4:
        _register_tile(4, a, i, packed, p, tile)
    elif rows == 3:
        _register_tile(3, a, i, packed, p, tile)
    elif rows == 2:
        _register_tile(2, a, i, packed, p, tile)
    else:
        _register_tile(1, a, i, packed, p, tile)
    width = packed.shape[2]
    j0 = p * width
    cols = min(width, c.shape[1] - j0)
    for r in range(rows):
        out = c[i + r]
        if beta == 0:
            for j in range(cols):
                out[j0 + j] = tile[r, j]
        else:
            for j in range(cols):
                out[j0 + j] = tile[r, j] + beta * out[j0 + j]


@numba.njit(**CPU_OPTIONS)
def product(a, packed, beta, c):
    """c (M, N) = a (M, K) @ op(w) + beta * c, op(w) packed by ``pack``
    (beta 0 ignores c). a's and c's rows are contiguous (C-contiguous
    arrays, or row ranges of them)."""
    M, N = c.shape
    if a.shape[0] != M or a.shape[1] != packed.shape[1] or N > packed.shape[0] * packed.shape[2]:
        raise ValueError("product: the shapes of a, the packed operand and c do not agree")
    if a.strides[1] != a.itemsize or c.strides[1] != c.itemsize:
        raise ValueError("product: expected rows of a and c contiguous")
    tile = np.empty((ROWS, packed.shape[2]), packed.dtype)
    for p in range(packed.shape[0]):
        for i in range(0, M, ROWS):
            _tile_into(min(ROWS, M - i), a, i, packed, p, tile, beta, c)
