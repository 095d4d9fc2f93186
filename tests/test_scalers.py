"""StandardScaler and MinMaxScaler: hand-computed values, scikit-learn's
attributes and results, partial_fit, constant features, devices, errors."""

import numpy as np
import pytest
from conftest import DEVICES, put
from gpunet.kernels import scalers as kernels

import gpunet as gn
from gpunet.data import MinMaxScaler, NotFittedError, StandardScaler

X = np.array([[1.0, 10.0, 5.0], [3.0, 30.0, 5.0], [5.0, 20.0, 5.0], [7.0, 40.0, 5.0]])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_standard_scaler_by_hand(device, dtype):
    scaler = StandardScaler().fit(put(X.astype(dtype), device))
    np.testing.assert_allclose(scaler.mean_, [4.0, 25.0, 5.0])
    np.testing.assert_allclose(scaler.var_, [5.0, 125.0, 0.0])
    np.testing.assert_allclose(scaler.scale_, [np.sqrt(5), np.sqrt(125), 1.0])  # constant: 1
    assert scaler.n_samples_seen_ == 4 and scaler.n_features_in_ == 3
    Z = scaler.transform(put(X.astype(dtype), device))
    assert Z.dtype == dtype and type(Z) is type(put(X.astype(dtype), device))
    expected = (X - [4, 25, 5]) / [np.sqrt(5), np.sqrt(125), 1]
    np.testing.assert_allclose(gn.to_numpy(Z), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gn.to_numpy(scaler.inverse_transform(Z)), X, rtol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_min_max_scaler_by_hand(device):
    scaler = MinMaxScaler((-1, 1)).fit(put(X, device))
    np.testing.assert_allclose(scaler.data_min_, [1, 10, 5])
    np.testing.assert_allclose(scaler.data_range_, [6, 30, 0])
    np.testing.assert_allclose(scaler.scale_, [2 / 6, 2 / 30, 2.0])
    Z = gn.to_numpy(scaler.transform(put(X, device)))
    np.testing.assert_allclose(Z[:, 0], [-1, -1 / 3, 1 / 3, 1])
    np.testing.assert_allclose(Z[:, 2], -1.0)  # a constant feature maps to the lower end
    clipped = MinMaxScaler(clip=True).fit(X).transform(put(X * 2, device))
    assert gn.to_numpy(clipped).max() == 1.0
    np.testing.assert_allclose(gn.to_numpy(scaler.inverse_transform(put(Z, device))), X)


def test_partial_fit_equals_fit_and_options():
    rng = np.random.default_rng(0)
    data = rng.standard_normal((50, 4)) * 3 + 100
    parts = StandardScaler()
    for chunk in np.array_split(data, 3):
        parts.partial_fit(chunk)
    whole = StandardScaler().fit(data)
    np.testing.assert_allclose(parts.mean_, whole.mean_, rtol=1e-12)
    np.testing.assert_allclose(parts.var_, whole.var_, rtol=1e-10)
    assert parts.n_samples_seen_ == 50
    no_std = StandardScaler(with_std=False).fit(data)
    assert no_std.var_ is None and no_std.scale_ is None
    np.testing.assert_allclose(no_std.transform(data), data - data.mean(0), atol=1e-12)
    assert StandardScaler(with_mean=False, with_std=False).fit(data).mean_ is None
    minmax = MinMaxScaler().partial_fit(data[:10]).partial_fit(data[10:])
    np.testing.assert_allclose(minmax.data_max_, data.max(0))
    inplace = data.copy()
    assert StandardScaler(copy=False).fit(inplace).transform(inplace) is inplace


def test_matches_scikit_learn():
    preprocessing = pytest.importorskip("sklearn.preprocessing")
    data = np.random.default_rng(1).standard_normal((30, 5)).astype(np.float32) * 4 + 2
    for ours, theirs in (
        (StandardScaler(), preprocessing.StandardScaler()),
        (MinMaxScaler((2, 5)), preprocessing.MinMaxScaler((2, 5))),
    ):
        np.testing.assert_allclose(
            ours.fit_transform(data), theirs.fit_transform(data), rtol=1e-5, atol=1e-5
        )
        np.testing.assert_allclose(ours.scale_, theirs.scale_, rtol=1e-6)


@pytest.mark.parametrize("shape", [(0, 3), (1, 1), (5, 33)])
def test_column_affine_kernel(shape):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(np.float32)
    shift, factor, offset = (rng.standard_normal(shape[1]).astype(np.float32) for _ in range(3))
    out = kernels.column_affine_cpu(x, shift, factor, offset, np.empty_like(x), True, -0.5, 0.5)
    expected = kernels.column_affine_ref(x, shift, factor, offset, True, -0.5, 0.5)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def test_errors():
    with pytest.raises(NotFittedError, match="not fitted"):
        StandardScaler().transform(X)
    with pytest.raises(ValueError, match="expecting 3 features"):
        StandardScaler().fit(X).transform(X[:, :2])
    with pytest.raises(ValueError, match="NaN"):
        StandardScaler().fit(np.array([[1.0], [np.nan]]))
    with pytest.raises(ValueError, match="2-D"):
        MinMaxScaler().fit(np.ones(3))
    with pytest.raises(ValueError, match="min < max"):
        MinMaxScaler((1, 0)).fit(X)  # checked at fit, as scikit-learn does
    with pytest.raises(TypeError, match="numeric"):
        StandardScaler().fit(np.array([["a"]]))
