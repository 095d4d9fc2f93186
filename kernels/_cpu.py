"""What CPU kernel modules share."""

from numba import types
from numba.core.extending import intrinsic, overload
from numba.np import numpy_support

#: Options for every CPU kernel: numpy's error model (Python's raises on a zero
#: division, and its check stops LLVM vectorising any loop with a division) and
#: FMA contraction. Kernels that reduce add reassociation on top.
CPU_OPTIONS = {"error_model": "numpy", "fastmath": {"contract"}}

#: Elementwise work below this many elements runs serially: waking Numba's
#: thread pool costs more than it saves there (2 cores, measured with asv).
#:
#: Kernels that always run next to a BLAS product (the dense layers' epilogue
#: and gradient pass, the losses after the last layer, the optimizer updates
#: after the backward products) are serial at every size: BLAS's worker
#: threads keep spinning for a while after each call, and a Numba parallel
#: region started then waits for cores they hold. Measured on 2 cores, an
#: MLP training epoch (784-512-256-10, batch 128) took 443 ms with those
#: kernels parallel above this threshold and 138 ms with them serial.
PARALLEL_THRESHOLD = 1 << 18


@intrinsic
def wide_vectors(typingctx):
    """Call first thing in a CPU kernel: lets LLVM vectorise the kernel's
    loops with 512-bit vectors where the CPU has them. On CPUs with AVX-512
    its default tuning stops at 256 bits; on others the attribute changes
    nothing. The results are the same; the RBM's flat passes ran about 10%
    faster with it."""

    def codegen(context, builder, signature, args):
        # A string attribute, which llvmlite's checked ``add`` does not know.
        set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        return context.get_dummy_value()

    return types.none(), codegen


# --- checks on Numba types, for launchers that refuse what they cannot take ---------

FLOAT_TYPES = (types.float32, types.float64)


def like(a, x) -> bool:
    """Numba types: x a float32/float64 array and a an array of its dtype and ndim."""
    return (
        isinstance(x, types.Array)
        and x.dtype in FLOAT_TYPES
        and isinstance(a, types.Array)
        and a.dtype == x.dtype
        and a.ndim == x.ndim
    )


def writable_like(out, x) -> bool:
    """Numba types: ``like(out, x)``, with out C-contiguous and writable."""
    return like(out, x) and out.layout == "C" and out.mutable


def in_dtype_of(x, c):
    """The scalar c (1 when c is None) in the dtype of the array x, in a CPU kernel."""


@overload(in_dtype_of, inline="always")
def _in_dtype_of(x, c):
    scalar = numpy_support.as_dtype(x.dtype).type
    if isinstance(c, types.NoneType):
        return lambda x, c: scalar(1)
    return lambda x, c: scalar(c)
