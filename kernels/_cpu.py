"""What CPU kernel modules share, and the threaded copies whose speed is the
CPU's memory ceiling in ``gpunet bench``."""

import platform

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.extending import intrinsic, overload
from numba.core.imputils import impl_ret_borrowed
from numba.np import numpy_support
from numba.np.arrayobj import populate_array

from ._cache import cached

#: Options for every CPU kernel: numpy's error model (Python's raises on a zero
#: division, and its check stops LLVM vectorising any loop with a division) and
#: FMA contraction. Kernels that reduce add reassociation on top.
CPU_OPTIONS = {"error_model": "numpy", "fastmath": {"contract"}}

#: Elementwise work below this many elements runs serially: waking Numba's
#: thread pool costs more than it saves there.
#:
#: Kernels that always run next to a BLAS product (the dense layers' epilogue
#: and gradient pass, the losses after the last layer, the optimizer updates
#: after the backward products) are serial at every size: BLAS's worker
#: threads keep spinning for a while after each call, and a Numba parallel
#: region started then waits for cores they hold, so that running those
#: kernels in parallel costs more than it saves, even above this threshold.
PARALLEL_THRESHOLD = 1 << 18


@intrinsic
def wide_vectors(typingctx):
    """Call first thing in a CPU kernel: lets LLVM vectorise the kernel's
    loops with 512-bit vectors where the CPU has them. On CPUs with AVX-512
    its default tuning stops at 256 bits; on others the attribute changes
    nothing. The results are the same; the loops that vectorise (the RBM's
    flat passes among them) need half as many vector instructions."""

    def codegen(context, builder, signature, args):
        # A string attribute, which llvmlite's checked ``add`` does not know.
        set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        return context.get_dummy_value()

    return types.none(), codegen


#: x86's MXCSR bits that flush subnormal results to zero (FTZ, bit 15) and
#: read subnormal inputs as zero (DAZ, bit 6).
_FLUSH_BITS = 0x8040
_X86 = platform.machine().lower() in ("x86_64", "amd64", "x86", "i386", "i686")


def _mxcsr_functions(builder):
    """(stmxcsr, ldmxcsr): LLVM's x86 intrinsics that store and load the MXCSR."""
    fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer()])
    return tuple(
        cgutils.get_or_insert_function(builder.module, fnty, f"llvm.x86.sse.{name}")
        for name in ("stmxcsr", "ldmxcsr")
    )


@intrinsic
def flush_subnormals(typingctx):
    """In a CPU kernel: from here on, subnormal floats are read and written as
    zero (x86's FTZ and DAZ); returns the control word to hand to
    ``restore_subnormals`` before the kernel returns. Elsewhere than on x86 a
    no-op. An x86 CPU takes some hundred cycles for an operation on a
    subnormal number."""

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        if not _X86:
            return ir.Constant(i32, 0)
        stmxcsr, ldmxcsr = _mxcsr_functions(builder)
        slot = cgutils.alloca_once(builder, i32)
        address = builder.bitcast(slot, ir.IntType(8).as_pointer())
        builder.call(stmxcsr, [address])
        old = builder.load(slot)
        builder.store(builder.or_(old, ir.Constant(i32, _FLUSH_BITS)), slot)
        builder.call(ldmxcsr, [address])
        return old

    return types.int32(), codegen


@intrinsic
def restore_subnormals(typingctx, control):
    """Put back the control word ``flush_subnormals`` returned."""

    def codegen(context, builder, signature, args):
        if _X86:
            _, ldmxcsr = _mxcsr_functions(builder)
            slot = cgutils.alloca_once_value(builder, args[0])
            builder.call(ldmxcsr, [builder.bitcast(slot, ir.IntType(8).as_pointer())])
        return context.get_dummy_value()

    return types.none(types.int32), codegen


FLOAT_TYPES = (types.float32, types.float64)


def flat(a):
    """In a serial CPU kernel: the array a as 1-D, a view when a is
    C-contiguous (``ravel`` makes one too, through a reshape helper that
    costs about 260 instructions per call), else a copy. Not in a parallel
    kernel: parfors does not know the view aliases a, and drops loops that
    only write to it."""


@overload(flat, inline="always")
def _flat(a):
    if isinstance(a, types.Array) and a.layout == "C":
        return lambda a: _flat_view(a)
    if isinstance(a, types.Array):
        return lambda a: a.ravel()
    return None


@intrinsic
def _flat_view(typingctx, a):
    view_type = a.copy(ndim=1)

    def codegen(context, builder, signature, args):
        source = context.make_array(signature.args[0])(context, builder, args[0])
        view = context.make_array(view_type)(context, builder)
        size = context.get_constant(types.intp, 1)
        for extent in cgutils.unpack_tuple(builder, source.shape):
            size = builder.mul(size, extent)
        populate_array(
            view,
            data=source.data,
            shape=[size],
            strides=[source.itemsize],
            itemsize=source.itemsize,
            meminfo=source.meminfo,
            parent=source.parent,
        )
        return impl_ret_borrowed(context, builder, view_type, view._getvalue())

    return view_type(a), codegen


# --- streaming stores: writing outputs larger than the caches --------------------------

#: Bytes per streaming store: a cache line, and a 512-bit vector (LLVM
#: splits it into narrower stores where the CPU has no such vectors).
_LINE = 64


@intrinsic
def store_affine_streaming(typingctx, src, dst, scale, shift):
    """dst[:] = src * scale + shift (no fused multiply-add) for 1-D C-contiguous
    float32/float64 arrays of one size and dtype, scale and shift of that
    dtype, or dst[:] = src, bit for bit, when both are None; the whole cache
    lines of dst are written with non-temporal stores.
    Such a store needs no read of the line first (a normal store to a line
    not in cache fetches it): an output that only passes through the caches
    costs one memory stream, not two. Call ``store_fence`` before the output
    is handed to another thread."""
    float_array = (
        isinstance(src, types.Array)
        and src.ndim == 1
        and src.layout == "C"
        and src.dtype in FLOAT_TYPES
    )
    copy = isinstance(scale, types.NoneType) and isinstance(shift, types.NoneType)
    if not (
        float_array and dst == src.copy(readonly=False) and (copy or scale == shift == src.dtype)
    ):
        return None

    def codegen(context, builder, signature, args):
        src_type, dst_type = signature.args[:2]
        a = context.make_array(src_type)(context, builder, args[0])
        d = context.make_array(dst_type)(context, builder, args[1])
        scale, shift = args[2], args[3]
        itemsize = context.get_abi_sizeof(context.get_data_type(dst_type.dtype))
        lanes = _LINE // itemsize
        intp = context.get_value_type(types.intp)
        one = ir.Constant(intp, 1)
        n = builder.extract_value(d.shape, 0)
        # Elements before dst's first whole line, then whole lines, then the rest.
        offset = builder.and_(
            builder.neg(builder.ptrtoint(d.data, intp)), ir.Constant(intp, _LINE - 1)
        )
        head = builder.udiv(offset, ir.Constant(intp, itemsize))
        head = builder.select(builder.icmp_signed("<", head, n), head, n)
        lines = builder.sdiv(builder.sub(n, head), ir.Constant(intp, lanes))
        body_end = builder.add(head, builder.mul(lines, ir.Constant(intp, lanes)))

        def affine(value, scale, shift):
            return value if copy else builder.fadd(builder.fmul(value, scale), shift)

        def scalar_stores(start, stop):
            with cgutils.for_range_slice(builder, start, stop, one, intp) as (j, _):
                value = builder.load(builder.gep(a.data, [j]))
                builder.store(affine(value, scale, shift), builder.gep(d.data, [j]))

        scalar_stores(ir.Constant(intp, 0), head)
        vector = ir.VectorType(context.get_data_type(src_type.dtype), lanes)
        scales = shifts = None
        if not copy:
            scales, shifts = cgutils.get_null_value(vector), cgutils.get_null_value(vector)
            for lane in range(lanes):
                index = ir.Constant(ir.IntType(32), lane)
                scales = builder.insert_element(scales, scale, index)
                shifts = builder.insert_element(shifts, shift, index)
        nontemporal = builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)])
        step = ir.Constant(intp, lanes)
        with cgutils.for_range_slice(builder, head, body_end, step, intp) as (j, _):
            source = builder.bitcast(builder.gep(a.data, [j]), vector.as_pointer())
            target = builder.bitcast(builder.gep(d.data, [j]), vector.as_pointer())
            value = affine(builder.load(source, align=itemsize), scales, shifts)
            builder.store(value, target, align=_LINE).set_metadata("nontemporal", nontemporal)
        scalar_stores(body_end, n)
        return context.get_dummy_value()

    return types.none(src, dst, scale, shift), codegen


@intrinsic
def store_fence(typingctx):
    """A full memory fence: the streaming stores before it are visible to
    other threads before any memory access after it (they are weakly ordered
    otherwise)."""

    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.none(), codegen


# --- copies: the memory ceilings of parallel kernels -----------------------------------


@cached()
@numba.njit(parallel=True)
def parallel_copy(src, dst):
    """dst[:] = src for 1-D arrays of one size and dtype, over all of Numba's
    threads in chunks of 65536 elements: the limit that parallel kernels
    with plain stores meet."""
    chunk = 1 << 16
    for c in numba.prange((src.size + chunk - 1) // chunk):
        dst[c * chunk : (c + 1) * chunk] = src[c * chunk : (c + 1) * chunk]


@cached()
@numba.njit(parallel=True)
def streaming_copy(src, dst):
    """dst[:] = src for C-contiguous (rows, n) float32/float64 arrays of one
    shape, a row per step over all of Numba's threads, written with streaming
    stores: the limit of kernels that write so (a plain store first reads the
    line it writes, a streaming one does not)."""
    for r in numba.prange(src.shape[0]):
        store_affine_streaming(src[r], dst[r], None, None)
        store_fence()


# --- checks on Numba types, for launchers that refuse what they cannot take ---------


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


@intrinsic
def _address(typingctx, a):
    """The address of the array a's first element, as an intp."""

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.ptrtoint(data, context.get_value_type(types.intp))

    return types.intp(a), codegen


def _extent(a):
    """[first, end) byte addresses that the elements of the array a span
    (first == end when a is empty), whatever its strides."""


@overload(_extent)
def _extent_impl(a):
    if a.layout == "C":  # the common case, without a loop over the axes

        def contiguous(a):
            first = _address(a)
            return first, first + a.size * a.itemsize

        return contiguous

    def strided(a):
        first = _address(a)
        end = first + a.itemsize
        for d in range(a.ndim):
            span = a.strides[d] * (a.shape[d] - 1)
            if span > 0:
                end += span
            else:
                first += span
        return (first, end) if a.size else (first, first)

    return strided


@cached()
@numba.njit(inline="always")
def overlaps_partly(a, b):
    """In a CPU kernel: True when the memory that the arrays a and b span
    overlaps (an output written while an input is read would then change
    values still to be read) and they are not exactly the same view (same
    address, shape and strides: an elementwise kernel may write in place).
    Spans, not elements: interleaved views that share no element count as
    overlapping, as ``np.may_share_memory`` counts them."""
    a_first, a_end = _extent(a)
    b_first, b_end = _extent(b)
    if a_end <= b_first or b_end <= a_first or a_first == a_end or b_first == b_end:
        return False
    return not (a_first == b_first and a.shape == b.shape and a.strides == b.strides)


def in_dtype_of(x, c):
    """The scalar c (1 when c is None) in the dtype of the array x, in a CPU kernel."""


@overload(in_dtype_of, inline="always")
def _in_dtype_of(x, c):
    scalar = numpy_support.as_dtype(x.dtype).type
    if isinstance(c, types.NoneType):
        return lambda x, c: scalar(1)
    return lambda x, c: scalar(c)
