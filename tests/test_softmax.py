"""Softmax and log-softmax over the last axis: kernels against the references,
numerical gradients, stability, and each CUDA block size."""

import math

import numpy as np
import pytest
from conftest import DEVICES, put, refused_outputs
from gpunet.kernels import softmax as S
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gpunet as gn

FORWARD = {
    "softmax": (gn.ops.softmax, S.softmax_ref, gn.ops.softmax_backward, S.softmax_backward_ref),
    "log_softmax": (
        gn.ops.log_softmax,
        S.log_softmax_ref,
        gn.ops.log_softmax_backward,
        S.log_softmax_backward_ref,
    ),
}

#: The row ops and how many arrays each takes.
ROW_OPS = {"softmax": 1, "log_softmax": 1, "softmax_backward": 2, "log_softmax_backward": 2}

# Row lengths around a warp and each CUDA block size (32 and 128 threads per row).
CUDA_SHAPES = [(3, 1), (2, 31), (2, 33), (5, 7), (2, 129), (1, 513), (0, 4), (3, 0), (2, 2, 5)]
CPU_SHAPES = CUDA_SHAPES + [(7, 1000), (64, 1025), (S.ROW_PARALLEL_MIN_SIZE // 100 + 1, 100)]


def random_input(shape, dtype, seed=0, scale=5.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def tolerance_scale(x):
    """log-softmax values grow with |x|; compare them relative to the row's range."""
    return max(1.0, float(np.abs(x).max(initial=0)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", FORWARD)
def test_forward_and_backward_match_references(name, dtype, device):
    op, ref, backward, backward_ref = FORWARD[name]
    for shape in CPU_SHAPES if device == "cpu" else CUDA_SHAPES:
        x = random_input(shape, dtype)
        y = op(put(x, device))
        expected = ref(x)
        assert gn.to_numpy(y).shape == expected.shape
        rtol = 2e-6 if dtype == np.float32 else 1e-13
        np.testing.assert_allclose(
            gn.to_numpy(y), expected, rtol=rtol, atol=rtol * tolerance_scale(x)
        )
        g = random_input(shape, dtype, seed=1, scale=1.0)
        y_host = gn.to_numpy(y)
        dx = gn.to_numpy(backward(put(g, device), y))
        # The backward subtracts a row sum of grad_out: its rounding sets the scale.
        row_sum = float(np.abs(g).sum(axis=-1).max(initial=0))
        np.testing.assert_allclose(
            dx, backward_ref(g, y_host), rtol=rtol, atol=rtol * max(1.0, row_sum)
        )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", FORWARD)
def test_gradient_matches_finite_differences(name, device):
    op, _, backward, _ = FORWARD[name]
    rows, n = 3, 6
    x = random_input((rows, n), np.float64, scale=2.0)
    g = random_input((rows, n), np.float64, seed=3, scale=1.0)
    h = 1e-6
    # Row i of x nudged at column j, up and down: every perturbation in one call.
    nudged = np.repeat(x, n, axis=0)[None].repeat(2, axis=0)
    cols = np.tile(np.arange(n), rows)
    nudged[0, np.arange(rows * n), cols] += h
    nudged[1, np.arange(rows * n), cols] -= h
    y = gn.to_numpy(op(put(nudged, device)))
    g_rows = np.repeat(g, n, axis=0)
    numeric = (np.sum(g_rows * (y[0] - y[1]), axis=-1) / (2 * h)).reshape(rows, n)
    analytic = backward(put(g, device), op(put(x, device)))
    np.testing.assert_allclose(gn.to_numpy(analytic), numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", FORWARD)
def test_stable_for_inputs_up_to_1e4(name, dtype, device):
    op, ref, _, _ = FORWARD[name]
    x = np.array([[1e4, -1e4, 0.0, 9999.0], [-1e4, -1e4, -1e4, -1e4], [1e4, 1e4, 1e4, 1e4]], dtype)
    y = gn.to_numpy(op(put(x, device)))
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(
        y, ref(x), rtol=1e-6, atol=1e-6 * 1e4 if name == "log_softmax" else 1e-7
    )


#: Rows whose maximum is far larger than log(sum(exp(x - max))), per dtype:
#: equal maxima, differences of order one next to huge values, differences
#: that overflow the dtype (the reference's float64 rounds them to -inf too).
EXTREME_ROWS = {
    np.float32: [
        [1e8, 1e8, -1e8, 1e8 - 8],
        [1e4, 1e4, 1e4 - 1, -1e4],
        [1e4, 9999.5, 9999.0, 1e4],
        [3e38, -3e38, 0.0, 3e38],
        [3.4e38, 3e38, 3.4e38 - 2e31, 1.0],
        [-3e38, -3e38, -3e38, -3.4e38],
    ],
    np.float64: [
        [1e8, 1e8, -1e8, 1e8 - 1e-8],
        [1e300, 1e300, 1e300 - 1e284, -1e300],
        [-1e300, -1e300, -1e300 * (1 + 1e-15), -1e300],
        [1.7e308, -1.7e308, 0.0, 1.7e308],
    ],
}


def assert_within_ulps(actual, expected, dtype, scale=1.0, ulps=4):
    """|actual - expected| <= ulps * eps * (|expected| + scale), eps the
    dtype's and ``expected`` a float64 reference: a few units in the last
    place of the value, and of ``scale``, the size of the terms it is
    computed from (log(s) is of order one and carries the rounding of the
    sum). Where the reference rounds to an infinity in the dtype, that
    infinity exactly."""
    actual, expected = np.asarray(actual), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape and actual.dtype == np.dtype(dtype)
    with np.errstate(over="ignore"):
        rounded = expected.astype(dtype)
    eps = float(np.finfo(dtype).eps)
    with np.errstate(invalid="ignore"):
        error = np.abs(actual.astype(np.float64) - expected)
    limit = ulps * eps * (np.abs(expected) + scale)
    ok = np.where(np.isinf(rounded), actual == rounded, error <= limit)
    assert ok.all(), (actual[~ok], expected[~ok])


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # simulator's numpy
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_softmax_keeps_log_sum_next_to_huge_logits(dtype, device):
    """(x - max) - log(s), not x - (max + log(s)), which rounds log(s) to
    the spacing of max (at 1e8: 0 for -log 2). Within a few ulp of the
    float64 reference, from each CPU kernel (serial, row-parallel,
    streaming) and on CUDA; the backward of the result too."""
    y = gn.to_numpy(gn.ops.log_softmax(put(np.array([[1e8, 1e8]], dtype), device)))
    np.testing.assert_allclose(y, -math.log(2), rtol=float(np.finfo(dtype).eps))
    x = np.array(EXTREME_ROWS[dtype], dtype)
    with np.errstate(over="ignore"):  # float64 differences overflow (to -inf, as they should)
        expected = S.log_softmax_ref(x.astype(np.float64))
    assert_within_ulps(gn.to_numpy(gn.ops.log_softmax(put(x, device))), expected, dtype)
    if device == "cpu":
        tiled = np.tile(x, (S.ROW_PARALLEL_MIN_SIZE // x.size + 1, 1))
        for kernel in (S.log_softmax_cpu, S.log_softmax_cpu.streaming):
            out = np.empty_like(tiled)
            kernel(tiled, out)
            assert_within_ulps(out, np.tile(expected, (len(tiled) // len(x), 1)), dtype)
    y = gn.ops.log_softmax(put(x, device))
    g = random_input(x.shape, dtype, seed=2, scale=1.0)
    dx = gn.to_numpy(gn.ops.log_softmax_backward(put(g, device), y))
    want = S.log_softmax_backward_ref(g.astype(np.float64), gn.to_numpy(y).astype(np.float64))
    assert_within_ulps(dx, want, dtype, scale=float(np.abs(g).sum(axis=-1).max()))


def test_softmax_rows_sum_to_one_and_log_softmax_is_its_log():
    x = random_input((50, 37), np.float64)
    np.testing.assert_allclose(gn.ops.softmax(x).sum(axis=-1), 1.0, rtol=1e-14)
    np.testing.assert_allclose(gn.ops.log_softmax(x), np.log(gn.ops.softmax(x)), rtol=1e-12)


def test_infinities_mask_entries_like_pytorch():
    x = np.array([[0.0, -np.inf, 0.0], [-np.inf, -np.inf, -np.inf]], np.float32)
    y = gn.ops.softmax(x)
    np.testing.assert_array_equal(y[0], [0.5, 0.0, 0.5])
    assert np.all(np.isnan(y[1]))  # a fully masked row has no distribution


@settings(max_examples=50, deadline=None)
@given(
    name=st.sampled_from(sorted(FORWARD)),
    x=hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float64]),
        shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=40),
        elements=st.floats(-1e4, 1e4, width=32),
    ),
)
def test_cpu_matches_reference_on_generated_inputs(name, x):
    op, ref, _, _ = FORWARD[name]
    rtol = 2e-6 if x.dtype == np.float32 else 1e-13
    np.testing.assert_allclose(op(x), ref(x), rtol=rtol, atol=rtol * tolerance_scale(x))


@pytest.mark.parametrize("device", DEVICES)
def test_out_argument_and_in_place(device):
    x = random_input((4, 9), np.float32)
    buf = put(x.copy(), device)
    assert gn.ops.softmax(buf, out=buf) is buf
    np.testing.assert_allclose(gn.to_numpy(buf), S.softmax_ref(x), rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize(
    "n, threads", [(1, 32), (128, 32), (129, 128), (512, 128), (513, 128), (10**5, 128)]
)
def test_cuda_threads_per_row(n, threads):
    assert S.row_threads(n) == threads


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_staged_rows_match_three_pass_rows_bit_for_bit(dtype):
    """A row of STAGED_ROW values, staged in shared memory, and the same row
    with one -inf more, too long to stage and read three times, give the same
    maxima, sums, exps and outputs: staging changes where values are reread
    from, not what is computed (also on a row holding a NaN)."""
    x = random_input((2, S.STAGED_ROW), dtype)
    x[1, 7] = np.nan
    padded = np.concatenate([x, np.full((2, 1), -np.inf, dtype)], axis=1)
    for op in (gn.ops.softmax, gn.ops.log_softmax):
        staged = gn.to_numpy(op(put(x, "cuda")))
        three_pass = gn.to_numpy(op(put(padded, "cuda")))
        np.testing.assert_array_equal(staged, three_pass[:, :-1])


@pytest.mark.skip_on_cudasim("the simulator cannot compile to PTX")
def test_cuda_widest_forward_kernels_keep_a_whole_staged_row_in_shared_memory():
    """NVVM drops a shared array nothing reads: a kernel that stopped staging
    would show only its reduction scratch here."""
    from gpunet import ptxas

    names = {f"softmax.{op}_rows_{S.ROW_THREADS[-1]}" for op in ("softmax", "log_softmax")}
    specs = [spec for spec in ptxas.catalogue() if spec.name in names]
    assert len(specs) == 2
    for spec in specs:
        for signature, itemsize in zip(spec.signatures, (4, 8), strict=True):
            (resources,) = ptxas.build(spec, signature, ("sm_90",)).resources
            assert resources.shared_bytes >= S.STAGED_ROW * itemsize, (spec.name, signature)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="at least 1 dimension"):
        gn.ops.softmax(np.array(1.0))
    with pytest.raises(TypeError, match="got int32"):
        gn.ops.log_softmax(np.ones((2, 2), np.int32))
    with pytest.raises(ValueError, match=r"shape \(2, 3\) like grad_out"):
        gn.ops.softmax_backward(np.ones((2, 3)), np.ones((3, 2)))


def test_bad_out_and_second_input_are_named_and_nothing_is_written():
    x = random_input((2, 3), np.float32)
    out = np.full((2, 3), 7.0, np.float64)
    with pytest.raises(ValueError, match="expected out of shape"):
        gn.ops.softmax(x, out=out)
    with pytest.raises(ValueError, match="C-contiguous"):
        gn.ops.log_softmax(x, out=np.empty((3, 2), np.float32).T)
    frozen = np.zeros((2, 3), np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="writable out"):
        gn.ops.softmax_backward(x, x, out=frozen)
    with pytest.raises(TypeError, match="dtype"):
        gn.ops.log_softmax_backward(x, x.astype(np.float64), out=out)
    assert np.all(out == 7.0) and not frozen.any()


# The forward launchers come from one factory, the backward ones from another:
# one of each is checked (each new argument type is a compilation).
@pytest.mark.parametrize("name", ["softmax_cpu", "softmax_backward_cpu"])
def test_cpu_launchers_refuse_what_they_cannot_take_and_write_nothing(name):
    launcher = getattr(S, name)
    inputs = 1 if name == "softmax_cpu" else 2
    x = random_input((2, 3), np.float32)
    for out in refused_outputs():
        assert launcher(*[x] * inputs, out) is False
        assert not out.any()
    bad_inputs = [
        np.asfortranarray(x),  # not C-contiguous
        np.ones((), np.float32),  # 0-d
        np.ones((1, 2, 3), np.float32),  # not 2-D: the caller folds it
        x.astype(np.int64),  # not a float dtype
    ]
    if inputs == 2:
        bad_inputs += [(x, x.astype(np.float64)), (x, np.ones((3, 2), np.float32))]
    for bad in bad_inputs:
        args = bad if isinstance(bad, tuple) else (bad,) * inputs
        out = np.zeros(args[0].shape, np.float32)
        assert launcher(*args, out) is False
        assert not out.any()
    out = np.zeros((2, 3), np.float32)
    assert launcher(*[x] * inputs, out) is True and out.any()
    large = random_input((S.ROW_PARALLEL_MIN_SIZE // 8, 8), np.float32)  # the parallel kernel
    out = np.zeros_like(large)
    assert launcher(*[large] * inputs, out) is True and out.all()


@pytest.mark.parametrize("shape", [(10,), (2, 3, 7), (2, 0, 4), (3, 0)])
@pytest.mark.parametrize("name", ROW_OPS)
def test_any_leading_axes_match_the_same_rows_as_a_matrix(name, shape):
    """Leading axes fold into rows, and a non-contiguous input is copied:
    the same bits every way."""
    op = getattr(gn.ops, name)
    arrays = [random_input(shape, np.float32, seed=s) for s in range(ROW_OPS[name])]
    flat = [a.reshape(math.prod(shape[:-1]), shape[-1]) for a in arrays]
    want = op(*flat).reshape(shape)
    assert same_bits(op(*arrays), want)
    strided = [np.repeat(a, 2, axis=-1)[..., ::2] for a in arrays]
    assert not strided[0].flags.c_contiguous or strided[0].size == 0
    assert same_bits(op(*strided), want)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("col", [0, 5, 39])
def test_nan_poisons_only_its_row(device, col):
    x = random_input((3, 40), np.float32)
    x[1, col] = np.nan
    y = gn.to_numpy(gn.ops.softmax(put(x, device)))
    assert np.isnan(y[1]).all()
    assert np.isfinite(y[[0, 2]]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("form", ["affine", "copy"])
def test_streaming_store_writes_exactly_its_slice(dtype, form):
    """dst = src * scale + shift, rounded twice as numpy does, or with scale
    and shift None a copy of the bits, whatever they hold (NaN payloads,
    signalling NaNs, -0.0, subnormals: arithmetic would change some of them);
    for slices that start anywhere in a cache line and end anywhere (a head
    before the first whole line, whole lines, a tail), from a read-only
    source; nothing outside dst is touched."""
    import numba
    from gpunet.kernels._cpu import store_affine_streaming, store_fence

    @numba.njit
    def store(src, dst, scale, shift):
        store_affine_streaming(src, dst, scale, shift)
        store_fence()

    if form == "affine":
        source, scale, shift = random_input(300, dtype), dtype(0.3), dtype(-1.7)
    else:
        bits = np.random.default_rng(0).integers(0, 256, 300 * np.dtype(dtype).itemsize, np.uint8)
        source, scale, shift = bits.view(dtype), None, None
    source.flags.writeable = False
    for start in range(17):
        for size in (0, 1, 5, 16, 17, 40, 200):
            out = np.full(300, np.inf, dtype)
            store(source[start : start + size], out[start + 3 : start + 3 + size], scale, shift)
            want = np.full(300, np.inf, dtype)
            part = source[start : start + size]
            want[start + 3 : start + 3 + size] = part if scale is None else part * scale + shift
            assert out.tobytes() == want.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(FORWARD))
def test_streamed_outputs_match_cached_ones_bit_for_bit(name, dtype):
    """Outputs of STREAMING_MIN_BYTES or more are written with streaming
    stores by a kernel of their own; on small arrays, rows of lengths around
    a cache line come out of it as they do through the cache, bit for bit
    (NaN for NaN), infinities, a NaN and in-place calls included (through
    the cache, an in-place row's exponentials alias its input, which can
    keep LLVM from vectorising their sum: another order of additions)."""
    op = FORWARD[name][0]
    streaming = getattr(S, f"{name}_cpu").streaming
    for n in (1, 3, 15, 16, 17, 33, 1000):
        x = random_input((37, n), dtype, seed=n)
        x[1, 0], x[2, -1] = -np.inf, np.nan
        cached, streamed, in_place = op(x), np.empty_like(x), x.copy()
        streaming(x, streamed)
        streaming(in_place, in_place)
        assert same_bits(streamed, cached) and same_bits(in_place, cached)


def same_bits(a, b):
    """a and b bit for bit, but that a NaN matches any NaN (its sign and
    payload depend on the order of an instruction's operands)."""
    bits = f"u{a.itemsize}"
    return bool(np.all((a.view(bits) == b.view(bits)) | (np.isnan(a) & np.isnan(b))))


@pytest.mark.parametrize("name", sorted(FORWARD))
def test_output_large_enough_to_stream_matches_reference(name):
    op, ref, _, _ = FORWARD[name]
    x = random_input((S.STREAMING_MIN_BYTES // 4096 + 3, 1024), np.float32)
    np.testing.assert_allclose(op(x), ref(x), rtol=2e-6, atol=2e-6 * tolerance_scale(x))
