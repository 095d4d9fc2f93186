"""kernels.packed: products against an operand packed once (the recurrences'
per-step products) against the float64 reference, for every row count a
register tile takes, panels cut short, beta 0 / 1/2 / 1, both packings,
float32 and float64, row ranges of larger arrays, and the shape errors."""

import numpy as np
import pytest
from gpunet.kernels import packed as P

TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def operands(m, k, n, trans, dtype, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)).astype(dtype)
    w = rng.standard_normal((n, k) if trans else (k, n)).astype(dtype)
    c = rng.standard_normal((m, n)).astype(dtype)
    return a, w, c


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans", [False, True])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_product_matches_the_reference(dtype, trans, beta):
    width = P.panel_width(dtype)
    # Rows 1 to 9: every register tile height and remainder; columns below,
    # at and past one panel; k of 1 and more.
    for m, k, n in [(1, 1, 1), (2, 3, width - 1), (3, 5, width), (9, 17, width + 3), (4, 2, 3)]:
        a, w, c = operands(m, k, n, trans, dtype)
        want = P.packed_product_ref(a, w.T if trans else w, beta, c)
        packed = P.pack(w, trans)
        assert packed.shape == (-(-n // width), k, width) and packed.dtype == dtype
        if beta == 0:
            c[0, 0] = np.nan  # beta 0 ignores c
        P.product(a, packed, dtype(beta), c)
        np.testing.assert_allclose(c, want, **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_ranges_give_the_rows_of_the_whole_product_bit_for_bit(dtype):
    a, w, c = operands(11, 40, 70, True, dtype)
    packed = P.pack(w, True)
    whole = np.zeros_like(c)
    P.product(a, packed, dtype(0), whole)
    parts = np.zeros_like(c)
    for r0, r1 in [(0, 3), (3, 5), (5, 10), (10, 11)]:
        P.product(a[r0:r1], packed, dtype(0), parts[r0:r1])
    np.testing.assert_array_equal(parts, whole)


def test_shape_errors():
    a, w, c = operands(3, 4, 5, False, np.float32)
    packed = P.pack(w, False)
    with pytest.raises(ValueError, match="do not agree"):
        P.product(a[:, :3], packed, np.float32(0), c)
    with pytest.raises(ValueError, match="do not agree"):
        P.product(a, packed, np.float32(0), np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="rows of a and c contiguous"):
        P.product(np.asfortranarray(a), packed, np.float32(0), c)
