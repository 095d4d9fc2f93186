"""kernels.blas: ``gemm`` (numpy's OpenBLAS through ctypes) and its ``np.dot``
fallback against numpy's matmul, for every transpose pair, beta 0, 1/2 and 1,
float32 and float64, and empty operands."""

import numpy as np
import pytest
from gpunet.kernels import blas

GEMMS = [pytest.param(blas.gemm, id="gemm"), pytest.param(blas.gemm_dot, id="gemm_dot")]
TRANSPOSES = [(False, False), (False, True), (True, False), (True, True)]


def operands(m, n, k, trans_a, trans_b, dtype, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    c = rng.standard_normal((m, n)).astype(dtype)
    return a, b, c


def expected(alpha, a, b, beta, c, trans_a, trans_b):
    product = (a.T if trans_a else a) @ (b.T if trans_b else b)
    return alpha * product + (beta * c if beta else 0)


@pytest.mark.parametrize("gemm", GEMMS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_gemm_matches_numpy(gemm, dtype, trans_a, trans_b, beta):
    a, b, c = operands(7, 5, 3, trans_a, trans_b, dtype)
    want = expected(1.5, a, b, beta, c, trans_a, trans_b)
    if beta == 0:
        c[0, 0] = np.nan  # beta 0 ignores c
    gemm(trans_a, trans_b, dtype(1.5), a, b, dtype(beta), c)
    assert c.shape == want.shape and c.dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(c, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("gemm", GEMMS)
@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
@pytest.mark.parametrize("m, n, k", [(0, 4, 3), (4, 0, 3), (4, 3, 0)])
def test_gemm_with_empty_operands(gemm, trans_a, trans_b, m, n, k):
    """An empty output is left alone; an empty inner dimension leaves beta * c."""
    for beta in (0.0, 1.0):
        a, b, c = operands(m, n, k, trans_a, trans_b, np.float64)
        want = expected(2.0, a, b, beta, c, trans_a, trans_b)
        gemm(trans_a, trans_b, 2.0, a, b, beta, c)
        np.testing.assert_array_equal(c, want)


@pytest.mark.filterwarnings("ignore:np.dot\\(\\) is faster on contiguous arrays")
@pytest.mark.parametrize("gemm", GEMMS)
def test_gemm_refuses_arrays_that_are_not_c_contiguous(gemm):
    a, b, c = operands(4, 4, 4, False, False, np.float64)
    for x, y, z in ((a.T, b, c), (a, b[:, ::2], c[:, :2]), (a, b, np.asfortranarray(c))):
        with pytest.raises(ValueError, match="C-contiguous"):
            gemm(False, False, 1.0, x, y, 0.0, z)
