"""The vectorisable float32 exp and tanh of the CPU kernels against float64
numpy, exp_nonpositive bit for bit against exp where it applies, exp the
same under every kernel's fast-math flags, and the order keys that make a
float maximum an integer one."""

import warnings

import numba
import numpy as np
import pytest
from gpunet.kernels import vmath
from numba.core.errors import NumbaIRAssumptionWarning


@numba.njit
def _apply(fn_id, x, out):
    for i in range(x.size):
        if fn_id == 0:
            out[i] = vmath.exp(x[i])
        elif fn_id == 1:
            out[i] = vmath.exp_nonpositive(x[i])
        else:
            out[i] = vmath.tanh(x[i])


def apply(fn_id, x):
    out = np.empty_like(x)
    _apply(fn_id, x, out)
    return out


def ulps(got, want):
    """Distance in float32 units in the last place from the float64 value."""
    spacing = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - want) / spacing


def test_exp_is_within_one_ulp_over_its_normal_range():
    x = np.linspace(-87.3, 88.7, 200_001, dtype=np.float32)
    assert ulps(apply(0, x), np.exp(x.astype(np.float64))).max() <= 1


def test_exp_edges():
    x = np.array([-np.inf, -100, -87.4, 88.8, np.inf, np.nan, 0], np.float32)
    got = apply(0, x)
    np.testing.assert_array_equal(got[:5], [0, 0, 0, np.inf, np.inf])
    assert np.isnan(got[5]) and got[6] == 1


def test_exp_nonpositive_is_exp_bit_for_bit():
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            -rng.exponential(10, 100_000).astype(np.float32),
            np.linspace(-88, 0, 100_001, dtype=np.float32),
            np.array([0, -0.0, -np.inf, np.nan, -87.33654, -87.33655], np.float32),
        ]
    )
    np.testing.assert_array_equal(apply(1, x).view(np.int32), apply(0, x).view(np.int32))


@numba.njit(fastmath={"reassoc", "contract", "nsz", "arcp"})
def _exp_under_row_flags(x, out, nonpositive):
    for i in range(x.size):
        out[i] = vmath.exp_nonpositive(x[i]) if nonpositive else vmath.exp(x[i])


def test_exp_is_the_same_under_the_row_kernels_fast_math_flags():
    """Softmax's kernels reassociate (to vectorise their sums); exp, inlined
    there, must not: reassociated, its reduction by ln 2 loses up to 4.5 ulp
    and its rounding constant cancels."""
    from gpunet.kernels.softmax import ROW_OPTIONS

    assert ROW_OPTIONS["fastmath"] <= {"reassoc", "contract", "nsz", "arcp"}
    x = np.concatenate(
        [
            np.linspace(-100, 100, 400_001, dtype=np.float32),
            np.array([-np.inf, np.inf, np.nan, -0.0, -87.33654, -87.33655, 88.72284], np.float32),
        ]
    )
    for fn_id, nonpositive in ((0, False), (1, True)):
        values = x[x <= 0] if nonpositive else x
        out = np.empty_like(values)
        _exp_under_row_flags(values, out, nonpositive)
        np.testing.assert_array_equal(out.view(np.int32), apply(fn_id, values).view(np.int32))


def test_tanh_is_within_a_third_of_an_ulp_more_than_one():
    x = np.linspace(-10, 10, 200_001, dtype=np.float32)
    assert ulps(apply(2, x), np.tanh(x.astype(np.float64))).max() <= 1.34
    # Every float32 of the binade where the polynomial hands over to the exp
    # form, and where the largest error lies (1.33 ulp near 0.628).
    half = np.float32(0.5).view(np.int32)
    x = np.arange(half, np.float32(1.0).view(np.int32), dtype=np.int32).view(np.float32)
    errors = ulps(apply(2, x), np.tanh(x.astype(np.float64)))
    assert 1.3 < errors.max() <= 1.34


def test_tanh_inlined_into_branched_code_compiles_cleanly():
    """Numba inlines tanh into its callers' IR: it must leave no variable out
    of scope there (a conditional expression in it did, inside branched code:
    NumbaIRAssumptionWarning)."""

    @numba.njit
    def branched(x, flag):
        y = x
        if flag > 0:
            y = vmath.tanh(x)
        elif flag < 0:
            y = vmath.tanh(x) * x
        return y

    with warnings.catch_warnings():
        warnings.simplefilter("error", NumbaIRAssumptionWarning)
        got = branched(np.float32(0.5), 1), branched(np.float32(0.5), -1)
    np.testing.assert_allclose(got, [np.tanh(0.5), 0.5 * np.tanh(0.5)], rtol=1e-6)


@numba.njit
def _keys(x, keys, back):
    for i in range(x.size):
        keys[i] = vmath.order_key(x[i])
        back[i] = vmath.from_order_key(keys[i])


@pytest.mark.parametrize("dtype, key_dtype", [(np.float32, np.int32), (np.float64, np.int64)])
def test_order_keys_order_like_the_floats_and_invert(dtype, key_dtype):
    finite = np.random.default_rng(0).standard_normal(2000) * 10.0 ** np.arange(-20, 20, 0.02)
    special = [0.0, -0.0, np.inf, -np.inf, np.finfo(dtype).max, -np.finfo(dtype).max]
    special += [np.finfo(dtype).tiny, -np.finfo(dtype).tiny, np.finfo(dtype).smallest_subnormal]
    x = np.concatenate([finite, special]).astype(dtype)
    keys, back = np.empty(x.size, key_dtype), np.empty_like(x)
    _keys(x, keys, back)
    np.testing.assert_array_equal(back.view(key_dtype), x.view(key_dtype))  # bit for bit
    order = np.argsort(keys, kind="stable")
    assert np.all(np.diff(x[order]) >= 0)  # the keys sort the floats
    assert keys[x.size - len(special) + 1] < keys[x.size - len(special)]  # -0.0 below +0.0
    nan = np.array([np.nan, -np.nan], dtype)
    nan_keys, nan_back = np.empty(2, key_dtype), np.empty_like(nan)
    _keys(nan, nan_keys, nan_back)
    np.testing.assert_array_equal(nan_back.view(key_dtype), nan.view(key_dtype))
    assert nan_keys[0] > keys.max() and nan_keys[1] < keys.min()  # beyond the infinities
