"""exp and tanh for CPU kernels, written so that LLVM vectorises them, and
order keys that turn a float maximum into a vectorisable integer one.

``math.exp`` inside an ``@njit`` loop is a call into libm for every element:
no SIMD, and far slower than the memory traffic around it. The float32
versions here are straight-line arithmetic (Cody-Waite reduction by ln 2, a
polynomial, and an exponent built from integer bits), which LLVM turns into
vector code. exp is written in LLVM IR, so that it computes the same in
every kernel whatever fast-math flags the kernel has. float64 keeps libm (its
accuracy matters more there than its speed: float64 is for gradient checks).
CPU kernels only: CUDA kernels use the GPU's own ``math.exp`` and ``math.tanh``.

float32 accuracy, against float64 numpy (``tests/test_vmath.py``): within
1 ulp for exp on [-87.3, 88.7], and 1.34 ulp for tanh (1.33 at most,
reached near 0.628, just above 0.625 where the polynomial hands over to the
exp form; every float32 in [0.5, 1) checked).
exp flushes results that would be subnormal (x < -87.34) to zero, gives inf
above 88.72, and keeps NaN.

The polynomials are Cephes' (S. L. Moshier) ``expf`` and ``tanhf``.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic, overload

# --- order keys ---------------------------------------------------------------------


@intrinsic
def order_key(typingctx, x):
    """The bits of a float32/float64 as an int32/int64 that orders like the
    float: the sign bit kept, the other bits flipped for negative values. A
    maximum over keys is an integer maximum, which LLVM vectorises (a float
    maximum it does not, short of 'nnan'). NaN keys lie beyond the infinities
    (above +inf for a positive sign bit). ``from_order_key`` inverts it."""
    if x not in (types.float32, types.float64):
        return None
    width = x.bitwidth
    key = types.int32 if width == 32 else types.int64

    def codegen(context, builder, signature, args):
        return _flip_negative(builder, builder.bitcast(args[0], ir.IntType(width)), width)

    return key(x), codegen


@intrinsic
def from_order_key(typingctx, key):
    """The float32/float64 whose ``order_key`` is ``key`` (int32/int64)."""
    if key not in (types.int32, types.int64):
        return None
    width = key.bitwidth
    value, float_type = (
        (types.float32, ir.FloatType()) if width == 32 else (types.float64, ir.DoubleType())
    )

    def codegen(context, builder, signature, args):
        return builder.bitcast(_flip_negative(builder, args[0], width), float_type)

    return value(key), codegen


def _flip_negative(builder, bits, width):
    """bits ^ ((bits >> (width - 1)) & (2**(width - 1) - 1)), its own inverse."""
    int_type = ir.IntType(width)
    sign = builder.ashr(bits, ir.Constant(int_type, width - 1))
    return builder.xor(bits, builder.and_(sign, ir.Constant(int_type, (1 << (width - 1)) - 1)))


# --- float32 --------------------------------------------------------------------------
#
# exp is written in LLVM IR, each instruction carrying its own fast-math flags:
# Numba gives an instruction that has none its kernel's flags, and under
# reassociation LLVM would fold the Cody-Waite split of ln 2 back into one
# constant (errors of several ulp) or the rounding constant away. "contract"
# lets a multiply and an add fuse; "arcp" (only about division) keeps the last
# steps of the polynomial unfused, which holds the error under 1 ulp.

_F32 = np.float32
_LOG2E_F32 = _F32(1.44269504088896341)
_LN2_HI_F32 = _F32(0.693359375)
_LN2_LO_F32 = _F32(-2.12194440e-4)
_EXP_MAX_F32 = _F32(88.72283935546875)  # above: inf
_EXP_MIN_F32 = _F32(-87.33654022216797)  # below: the result would be subnormal, so 0
_EXPF_P = tuple(
    _F32(c)
    for c in (
        1.9875691500e-4,
        1.3981999507e-3,
        8.3334519073e-3,
        4.1665795894e-2,
        1.6666665459e-1,
        5.0000001201e-1,
    )
)
#: Adding 1.5 * 2**23 rounds a float32 of magnitude below 2**22 to an integer
#: n, which then sits in the sum's low mantissa bits; with 127 more, the sum's
#: bits shifted left by 23 are those of 2**n (for n in [-126, 127]).
_ROUND_F32 = _F32(1.5 * 2**23)
_ROUND_BIASED_F32 = _ROUND_F32 + _F32(127)
_ONE_F32, _TWO_F32 = _F32(1.0), _F32(2.0)
_TANH_SMALL_F32 = _F32(0.625)
_TANHF_P = tuple(
    _F32(c)
    for c in (
        -5.70498872745e-3,
        2.06390887954e-2,
        -5.37397155531e-2,
        1.33314422036e-1,
        -3.33332819422e-1,
    )
)

_FLOAT, _INT32 = ir.FloatType(), ir.IntType(32)
_FUSED, _UNFUSED = ("contract",), ("arcp",)


def _f32(value):
    return ir.Constant(_FLOAT, float(value))


def _multiply_add(builder, a, b, c):
    return builder.fadd(builder.fmul(a, b, flags=_FUSED), c, flags=_FUSED)


def _exp_parts(builder, c, rounding):
    """IR for (p, t) with e**c = p * 2**n: n = c * log2(e) rounded to an
    integer, held in t = n + ``rounding`` (see _ROUND_F32); Cody-Waite
    reduction by ln 2, then Cephes' polynomial. c within [_EXP_MIN_F32,
    _EXP_MAX_F32] for a meaningful result; NaN gives a NaN p."""
    t = _multiply_add(builder, c, _f32(_LOG2E_F32), _f32(rounding))
    minus_n = builder.fsub(_f32(rounding), t, flags=_FUSED)
    r = _multiply_add(builder, minus_n, _f32(_LN2_HI_F32), c)
    r = _multiply_add(builder, minus_n, _f32(_LN2_LO_F32), r)
    p = _f32(_EXPF_P[0])
    for coefficient in _EXPF_P[1:]:
        p = _multiply_add(builder, p, r, _f32(coefficient))
    p = builder.fmul(p, builder.fmul(r, r, flags=_UNFUSED), flags=_UNFUSED)
    p = builder.fadd(builder.fadd(p, r, flags=_UNFUSED), _f32(1.0), flags=_UNFUSED)
    return p, t


def _pow2_bits(builder, k):
    """IR for the float32 2**k of an i32 k in [-126, 127]."""
    return builder.bitcast(
        builder.shl(builder.add(k, ir.Constant(_INT32, 127)), ir.Constant(_INT32, 23)), _FLOAT
    )


@intrinsic
def _exp_f32(typingctx, x):
    """e**x: 2**n as two factors, so that n = 128 (x near the top) stays finite."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        (x,) = args
        low = builder.fcmp_ordered("<", x, _f32(_EXP_MIN_F32))
        high = builder.fcmp_ordered(">", x, _f32(_EXP_MAX_F32))
        # Only the top is clamped: below it the result is replaced by 0,
        # whatever the reduction made of x; NaN passes through to p.
        p, t = _exp_parts(builder, builder.select(high, _f32(_EXP_MAX_F32), x), _ROUND_F32)
        n = builder.sub(
            builder.bitcast(t, _INT32), ir.Constant(_INT32, int(_ROUND_F32.view(np.int32)))
        )
        half = builder.ashr(n, ir.Constant(_INT32, 1))
        y = builder.fmul(p, _pow2_bits(builder, half), flags=_FUSED)
        y = builder.fmul(y, _pow2_bits(builder, builder.sub(n, half)), flags=_FUSED)
        y = builder.select(high, _f32(np.inf), y)
        return builder.select(low, _f32(0.0), y)

    return types.float32(types.float32), codegen


@intrinsic
def _exp_nonpositive_f32(typingctx, x):
    """_exp_f32 for x <= 0 (or NaN): 2**n is one normal float (n >= -126
    wherever the result is kept), built from the rounding sum's bits alone;
    bit for bit the same."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        (x,) = args
        p, t = _exp_parts(builder, x, _ROUND_BIASED_F32)
        bits = builder.shl(builder.bitcast(t, _INT32), ir.Constant(_INT32, 23))
        y = builder.fmul(p, builder.bitcast(bits, _FLOAT), flags=_FUSED)
        return builder.select(builder.fcmp_ordered("<", x, _f32(_EXP_MIN_F32)), _f32(0.0), y)

    return types.float32(types.float32), codegen


@intrinsic
def _select(typingctx, condition, a, b):
    """``a if condition else b`` as one LLVM select, with no branch in Numba's
    IR: a conditional expression in a function that Numba inlines into
    branched code trips its SSA check (NumbaIRAssumptionWarning)."""
    if not isinstance(condition, types.Boolean) or a != b:
        return None

    def codegen(context, builder, signature, args):
        return builder.select(*args)

    return a(condition, a, b), codegen


@numba.njit(inline="always", fastmath={"contract"})
def _tanh_f32(x):
    a = abs(x)
    z = x * x
    p = _TANHF_P[0]
    p = p * z + _TANHF_P[1]
    p = p * z + _TANHF_P[2]
    p = p * z + _TANHF_P[3]
    p = p * z + _TANHF_P[4]
    small = p * z * x + x
    large = _ONE_F32 - _TWO_F32 / (_exp_f32(_TWO_F32 * a) + _ONE_F32)
    large = _select(x >= 0, large, -large)
    return _select(a < _TANH_SMALL_F32, small, large)


# --- generic entry points -------------------------------------------------------------


def exp(x):
    """e**x for a float32 or float64 scalar, vectorisable in ``@njit`` loops."""
    return math.exp(x)


def exp_nonpositive(x):
    """exp(x) for x <= 0 (shifted softmax rows, exp(-|x|)): as ``exp``, with
    less work in float32. Larger x gives wrong results."""
    return math.exp(x)


def tanh(x):
    """tanh(x) for a float32 or float64 scalar, vectorisable in ``@njit`` loops."""
    return math.tanh(x)


def _by_dtype(generic, float32_impl, float64_impl):
    """Compile ``generic`` in @njit code as ``float32_impl`` or ``float64_impl``."""

    @overload(generic, inline="always")
    def _overload(x):
        if x == types.float32:
            return lambda x: float32_impl(x)
        if x == types.float64:
            return lambda x: float64_impl(x)
        return None


_by_dtype(exp, _exp_f32, math.exp)
_by_dtype(exp_nonpositive, _exp_nonpositive_f32, math.exp)
_by_dtype(tanh, _tanh_f32, math.tanh)
