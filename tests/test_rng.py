"""gpunet.kernels.rng: Philox4x32-10 against Random123's known answers, the CPU
and CUDA kernels against the numpy reference bit for bit, the statistics of the
stream, and the launchers' input checks."""

import math

import numba
import numpy as np
import pytest
from gpunet.kernels import rng
from numba import cuda

# Random123 tests/kat_vectors, "philox4x32 10" lines: counter, key, output.
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (
        (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF),
        (0xFFFFFFFF, 0xFFFFFFFF),
        (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD),
    ),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]
KAT_IDS = ["zeros", "ones", "pi"]

DTYPES = [np.float32, np.float64]
#: Word offsets: aligned, unaligned by 1 to 3 words, and one past 2**34 words,
#: where the block number (offset // 4) has a non-zero high 32-bit word.
OFFSETS = [0, 1, 2, 3, 2**34 + 5]
SIZES = [0, 1, 3, 4, 5, 127, 1025]

#: A false-alarm probability this small makes a failure mean a broken
#: generator, not bad luck; the seeds are fixed, so the tests are deterministic.
FALSE_ALARM = 1e-9


def bits(x):
    """The bit patterns of a float array, to compare values exactly."""
    return x.view(np.uint32 if x.dtype == np.float32 else np.uint64)


def assert_bit_equal(actual, expected):
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    np.testing.assert_array_equal(bits(actual), bits(expected))


def words_per_value(dtype):
    return 1 if np.dtype(dtype) == np.float32 else 2


# --- Philox4x32-10 and the scalar helpers ---------------------------------------------


@pytest.mark.parametrize("counter, key, expected", PHILOX_KAT, ids=KAT_IDS)
def test_philox4x32_matches_random123_known_answers(counter, key, expected):
    assert tuple(int(w) for w in rng.philox4x32(*counter, *key)) == expected
    assert tuple(int(w) for w in rng.philox4x32_ref(*counter, *key)) == expected


def test_scalar_core_stays_in_uint32_and_float32():
    rng.philox4x32(1, 2, 3, 4, 5, 6)
    rng.uint32_to_unit_float32(np.uint32(7))
    rng.uint32_pair_to_unit_float64(np.uint32(7), np.uint32(8))
    words = numba.types.UniTuple(numba.uint32, 4)
    assert [s.return_type for s in rng.philox4x32.nopython_signatures] == [words]
    assert [s.return_type for s in rng.uint32_to_unit_float32.nopython_signatures] == [
        numba.float32
    ]
    assert [s.return_type for s in rng.uint32_pair_to_unit_float64.nopython_signatures] == [
        numba.float64
    ]


def test_philox_block_uses_both_halves_of_seed_and_block():
    seed, block = 0x0123456789ABCDEF, 0xFEDCBA9876543210
    expected = rng.philox4x32(0x76543210, 0xFEDCBA98, 0, 0, 0x89ABCDEF, 0x01234567)
    assert rng.philox_block(np.uint64(seed), np.uint64(block)) == expected


def test_unit_float_conversions_at_the_ends():
    assert rng.uint32_to_unit_float32(np.uint32(0)) == 0.0
    assert rng.uint32_to_unit_float32(np.uint32(0xFFFFFFFF)) == 1.0 - 2.0**-24
    assert rng.uint32_to_unit_float32(np.uint32(0x100)) == 2.0**-24
    assert rng.uint32_pair_to_unit_float64(np.uint32(0), np.uint32(0)) == 0.0
    top = np.uint32(0xFFFFFFFF)
    assert rng.uint32_pair_to_unit_float64(top, top) == 1.0 - 2.0**-53
    assert rng.uint32_pair_to_unit_float64(np.uint32(0), np.uint32(0x40)) == 2.0**-53


# --- the reference follows the documented stream ----------------------------------------


@pytest.mark.parametrize("offset", [0, 3, 2**34 + 5, 2**64 - 9])
def test_reference_takes_the_documented_words(offset):
    seed = 2**63 + 12345

    def word(n):
        block = n // 4
        return rng.philox4x32(block % 2**32, block >> 32, 0, 0, seed % 2**32, seed >> 32)[n % 4]

    f32 = rng.uniform_ref(4, seed, offset, np.float32)
    f64 = rng.uniform_ref(4, seed, offset, np.float64)
    for i in range(4):
        assert f32[i] == rng.uint32_to_unit_float32(word(offset + i))
        pair = word(offset + 2 * i), word(offset + 2 * i + 1)
        assert f64[i] == rng.uint32_pair_to_unit_float64(*pair)


# --- CPU kernels against the reference ------------------------------------------------


@pytest.mark.parametrize("path", ["serial", "parallel"])
@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_uniform_cpu_matches_reference(dtype, offset, path, monkeypatch):
    monkeypatch.setattr(rng, "PARALLEL_MIN_BLOCKS", 1 if path == "parallel" else 2**62)
    for n in SIZES:
        out = np.full(n, -1.0, dtype)
        assert rng.uniform_cpu(out, 2024, offset) is out
        assert_bit_equal(out, rng.uniform_ref(n, 2024, offset, dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_uniform_cpu_above_the_parallel_threshold(dtype):
    n = 4 * rng.PARALLEL_MIN_BLOCKS // words_per_value(dtype) + 3
    out = rng.uniform_cpu(np.empty(n, dtype), 7, 5)
    assert_bit_equal(out, rng.uniform_ref(n, 7, 5, dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_uniform_cpu_reaches_the_end_of_the_stream(dtype):
    n = 5
    offset = 2**64 - n * words_per_value(dtype)
    out = rng.uniform_cpu(np.empty(n, dtype), 1, offset)
    assert_bit_equal(out, rng.uniform_ref(n, 1, offset, dtype))


# --- the stream's statistics and its offsets ------------------------------------------


def chi_square_quantile(dof, z):
    """The chi-square quantile at standard-normal quantile ``z`` (Wilson-Hilferty)."""
    c = 2.0 / (9.0 * dof)
    return dof * (1.0 - c + z * math.sqrt(c)) ** 3


#: Standard-normal quantile of FALSE_ALARM / 2 (two-sided), about 6.1.
Z = 6.109


@pytest.fixture(scope="module")
def million_float32():
    return rng.uniform_cpu(np.empty(1_000_000, np.float32), 20240601, 0)


def test_values_lie_in_unit_interval_on_a_24_bit_grid(million_float32):
    x = million_float32
    assert x.min() >= 0.0 and x.max() < 1.0
    scaled = x.astype(np.float64) * 2.0**24
    np.testing.assert_array_equal(scaled, np.floor(scaled))
    y = rng.uniform_cpu(np.empty(100_000, np.float64), 20240601, 0)
    assert y.min() >= 0.0 and y.max() < 1.0


def test_chi_square_over_bins(million_float32):
    bins = 1000
    counts = np.bincount((million_float32 * bins).astype(np.intp), minlength=bins)
    expected = million_float32.size / bins
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    dof = bins - 1
    assert chi_square_quantile(dof, -Z) < chi2 < chi_square_quantile(dof, Z)


def kolmogorov_smirnov(x):
    """The largest distance between the empirical CDF of ``x`` and U(0, 1)'s."""
    x = np.sort(x.astype(np.float64))
    n = x.size
    i = np.arange(1, n + 1)
    return max(float((i / n - x).max()), float((x - (i - 1) / n).max()))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_kolmogorov_smirnov_against_uniform(dtype, million_float32):
    x = million_float32 if dtype == np.float32 else rng.uniform_cpu(np.empty(200_000), 99, 1)
    # P(sqrt(n) D > t) <= 2 exp(-2 t**2) (Dvoretzky-Kiefer-Wolfowitz, Massart).
    t = math.sqrt(math.log(2.0 / FALSE_ALARM) / 2.0)
    assert kolmogorov_smirnov(x) < t / math.sqrt(x.size)


def test_consecutive_values_are_uncorrelated(million_float32):
    x = million_float32.astype(np.float64) - 0.5
    for lag in (1, 2, 3, 4):
        r = float((x[:-lag] * x[lag:]).mean() / x.var())
        assert abs(r) < Z / math.sqrt(x.size - lag)


def test_different_seeds_and_blocks_give_different_streams():
    seeds = [0, 1, 2**32, 2**32 + 1, 2**63]
    draws = [rng.uniform_cpu(np.empty(64, np.float32), s, 0) for s in seeds]
    draws.append(rng.uniform_cpu(np.empty(64, np.float32), 0, 2**34))
    for a in range(len(draws)):
        for b in range(a):
            assert np.mean(draws[a] == draws[b]) < 0.1


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("sizes", [(5, 7), (1, 1, 1), (1024, 3)])
def test_draws_continue_where_the_last_one_stopped(dtype, sizes):
    offset = 3
    parts = []
    for n in sizes:
        parts.append(rng.uniform_cpu(np.empty(n, dtype), 11, offset))
        offset += n * words_per_value(dtype)
    whole = rng.uniform_cpu(np.empty(sum(sizes), dtype), 11, 3)
    assert_bit_equal(np.concatenate(parts), whole)


# --- CUDA kernels against the CPU -----------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("offset", [0, 3, 2**34 + 6])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_uniform_cuda_matches_cpu(dtype, offset):
    for n in (0, 1, 5, 130, 1025):
        device_out = cuda.to_device(np.full(n, -1.0, dtype))
        assert rng.uniform_cuda(device_out, 2**64 - 1, offset) is device_out
        expected = rng.uniform_cpu(np.empty(n, dtype), 2**64 - 1, offset)
        assert_bit_equal(device_out.copy_to_host(), expected)


@pytest.mark.cuda
def test_uniform_cuda_rejects_bad_arrays():
    with pytest.raises(ValueError, match="expected a 1-D array, got shape"):
        rng.uniform_cuda(cuda.to_device(np.zeros((2, 3), np.float32)), 0, 0)
    with pytest.raises(ValueError, match="expected a C-contiguous array"):
        rng.uniform_cuda(cuda.to_device(np.zeros(8, np.float32))[::2], 0, 0)
    with pytest.raises(TypeError, match="expected dtype float32 or float64, got int32"):
        rng.uniform_cuda(cuda.to_device(np.zeros(8, np.int32)), 0, 0)
    with pytest.raises(ValueError, match=r"expected seed in \[0, 2\*\*64\)"):
        rng.uniform_cuda(cuda.to_device(np.zeros(8, np.float32)), -1, 0)


# --- input checks ---------------------------------------------------------------------


def test_uniform_cuda_rejects_host_arrays():
    with pytest.raises(TypeError, match="expected a CUDA device array, got ndarray"):
        rng.uniform_cuda(np.zeros(4, np.float32), 0, 0)


def test_uniform_cpu_rejects_bad_arrays():
    with pytest.raises(TypeError, match="expected a numpy array, got list"):
        rng.uniform_cpu([0.0, 0.0], 0, 0)
    with pytest.raises(ValueError, match=r"expected a 1-D array, got shape \(2, 3\)"):
        rng.uniform_cpu(np.zeros((2, 3), np.float32), 0, 0)
    with pytest.raises(ValueError, match="expected a C-contiguous array"):
        rng.uniform_cpu(np.zeros(8, np.float32)[::2], 0, 0)
    with pytest.raises(TypeError, match="expected dtype float32 or float64, got int64"):
        rng.uniform_cpu(np.zeros(4, np.int64), 0, 0)
    read_only = np.zeros(4, np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="expected a writeable array"):
        rng.uniform_cpu(read_only, 0, 0)


@pytest.mark.parametrize(
    "seed, offset, error, message",
    [
        (-1, 0, ValueError, r"expected seed in \[0, 2\*\*64\), got -1"),
        (2**64, 0, ValueError, r"expected seed in \[0, 2\*\*64\)"),
        (0, -3, ValueError, r"expected offset in \[0, 2\*\*64\), got -3"),
        (0, 2**64 - 3, ValueError, r"expected offset \+ words drawn <= 2\*\*64"),
        (1.5, 0, TypeError, "expected seed to be an int, got float"),
        (True, 0, TypeError, "expected seed to be an int, got bool"),
        (0, "1", TypeError, "expected offset to be an int, got str"),
    ],
)
def test_seed_and_offset_are_checked(seed, offset, error, message):
    out = np.zeros(4, np.float32)
    with pytest.raises(error, match=message):
        rng.uniform_cpu(out, seed, offset)
    with pytest.raises(error, match=message):
        rng.uniform_ref(4, seed, offset)
    np.testing.assert_array_equal(out, 0.0)


def test_numpy_integer_seeds_and_offsets_are_accepted():
    expected = rng.uniform_ref(6, 2**64 - 1, 2**40)
    out = rng.uniform_cpu(np.empty(6, np.float32), np.uint64(2**64 - 1), np.int64(2**40))
    assert_bit_equal(out, expected)


def test_uniform_ref_checks_count_and_dtype():
    with pytest.raises(ValueError, match="expected n >= 0, got -1"):
        rng.uniform_ref(-1, 0, 0)
    with pytest.raises(TypeError, match="expected dtype float32 or float64, got float16"):
        rng.uniform_ref(3, 0, 0, np.float16)
