"""Data utilities: mini-batches over host arrays, and feature scalers
(StandardScaler, MinMaxScaler) with scikit-learn's interface on host or GPU arrays."""

from __future__ import annotations

import numpy as np

from . import dispatch
from ._arrays import check_dtypes, contiguous
from ._device import to_device, to_numpy
from ._sklearn import Estimator
from .exceptions import NotFittedError, sklearn_flavoured
from .kernels import _cuda


def batches(X, y=None, batch_size=32, shuffle=False, seed=None):
    """Yield mini-batches ``(X_batch, y_batch)`` (or ``X_batch`` when ``y`` is
    None) of ``batch_size`` rows; the last one may be smaller.

    ``X`` and ``y`` are numpy arrays with the same number of rows. With
    ``shuffle``, rows are visited in a random order drawn from ``seed`` (the
    same seed, the same order); without it, in order and without copying.
    """
    X = np.asarray(X)
    if y is not None:
        y = np.asarray(y)
        if len(y) != len(X):
            raise ValueError(f"expected y with {len(X)} rows like X, got {len(y)}")
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ValueError(f"expected a positive integer batch_size, got {batch_size!r}")
    order = np.random.default_rng(seed).permutation(len(X)) if shuffle else None
    for start in range(0, len(X), batch_size):
        rows = (
            slice(start, start + batch_size) if order is None else order[start : start + batch_size]
        )
        yield X[rows] if y is None else (X[rows], y[rows])


# --- scalers --------------------------------------------------------------------------


def _host_input(op, X):
    """A host X that is not a numpy array (a list, a data frame) as one;
    sparse, complex, non-numeric and empty input refused."""
    if hasattr(X, "toarray") or type(X).__module__.startswith("scipy.sparse"):
        raise TypeError(f"{op}: sparse input is not supported; convert X with X.toarray()")
    X = np.asarray(X)
    if X.dtype.kind == "c":
        raise ValueError(f"{op}: Complex data not supported")
    if X.dtype.kind == "O":
        try:
            X = X.astype(np.float64)
        except (TypeError, ValueError) as error:
            raise TypeError(f"{op}: expected a numeric array: {error}") from None
    if X.ndim == 2 and 0 in X.shape:
        what = "sample(s)" if X.shape[0] == 0 else "feature(s)"
        raise ValueError(
            f"{op}: Found array with 0 {what} (shape={X.shape}) while a minimum of 1 is required."
        )
    return X


def _scaler_input(op, X):
    """(kind, X as a C-contiguous float array on its device, X on the host in float64)."""
    if not _cuda.is_device_array(X):
        X = _host_input(op, X)
    kind = dispatch.placement(op, X=X)
    if len(X.shape) != 2:
        raise ValueError(
            f"{op}: expected a 2-D array (samples, features), got shape {X.shape}. Reshape your "
            "data with X.reshape(-1, 1) for one feature or X.reshape(1, -1) for one sample"
        )
    if kind == "cpu":
        if X.dtype.kind not in "biuf":
            raise TypeError(f"{op}: expected a numeric array, got dtype {X.dtype}")
        X = np.ascontiguousarray(X, X.dtype if X.dtype in (np.float32, np.float64) else np.float64)
    else:
        check_dtypes(op, ("X",), (X,))
        X = contiguous(op, "X", kind, X)
    host = to_numpy(X).astype(np.float64, copy=False)
    if not np.isfinite(host).all():
        raise ValueError(f"{op}: X holds NaN or infinite values")
    return kind, X, host


def _nonzero_scale(scale):
    """``scale`` with near-zero entries (constant features) set to 1, as scikit-learn does."""
    scale = scale.copy()
    scale[scale < 10 * np.finfo(np.float64).eps] = 1.0
    return scale


class _Scaler(Estimator):
    """Shared parts: scikit-learn's parameter protocol, the feature count
    check and the column affine map."""

    def _tags(self):
        return {"preserves_dtype": ["float64", "float32"]}

    def _check_fitted(self):
        if getattr(self, "n_samples_seen_", None) is None:
            raise sklearn_flavoured(NotFittedError)(
                f"This {type(self).__name__} instance is not fitted yet; call 'fit' first"
            )

    def _check_features(self, op, X):
        self._check_fitted()
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"{op}: X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input"
            )

    def _start(self, X):
        if getattr(self, "n_samples_seen_", None) is not None and X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"{type(self).__name__}.partial_fit: X has {X.shape[1]} features, but "
                f"{type(self).__name__} is expecting {self.n_features_in_} features as input"
            )

    def _affine(self, op, X, shift, factor, offset, clip=None):
        """(X - shift) * factor + offset per column, on X's device and in its dtype."""
        kind, X, _ = _scaler_input(op, X)
        self._check_features(op, X)
        dtype = X.dtype
        device = "cpu" if kind == "cpu" else None  # None: the current GPU
        columns = [
            to_device(np.ascontiguousarray(a, dtype), device) for a in (shift, factor, offset)
        ]
        if not self.copy and (kind != "cpu" or X.flags.writeable):
            out = X  # in place; a read-only X is copied, as scikit-learn does
        elif kind == "cpu":
            out = np.empty_like(X)
        else:
            out = _cuda.cuda.device_array(X.shape, dtype)
        lo, hi = clip if clip is not None else (0.0, 1.0)
        dispatch.kernel_for("column_affine", kind)(X, *columns, out, clip is not None, lo, hi)
        return out

    def fit(self, X, y=None):
        """Compute the statistics of X (samples, features) afresh; returns self."""
        self.n_samples_seen_ = None
        return self.partial_fit(X)

    def fit_transform(self, X, y=None):
        """``fit(X).transform(X)``."""
        return self.fit(X).transform(X)


class StandardScaler(_Scaler):
    """Standardise features: (x - mean_) / scale_, as scikit-learn's
    StandardScaler. ``mean_``, ``var_`` (biased) and ``scale_`` (sqrt(var_),
    with 1 for constant features) are float64 host arrays (``mean_`` None
    without centring or scaling, ``var_`` and ``scale_`` None without
    scaling); ``n_samples_seen_`` and ``n_features_in_`` count what was seen.
    X is a numpy array or a CUDA array (float32 or float64 on the GPU):
    statistics are computed on the host, the transforms on X's device, in
    X's dtype (float64 for integer input). With ``copy=False`` a transform
    writes into X itself when it can (a writable, C-contiguous float X);
    other inputs are copied first, as scikit-learn does.
    """

    def __init__(self, *, copy: bool = True, with_mean: bool = True, with_std: bool = True):
        self.copy, self.with_mean, self.with_std = copy, with_mean, with_std

    def partial_fit(self, X, y=None):
        """Update the statistics with the rows of X (Chan et al.'s pairwise
        combination of means and variances); returns self."""
        _, X, host = _scaler_input("StandardScaler.partial_fit", X)
        self._start(X)
        n = len(host)
        mean = host.mean(axis=0) if n else np.zeros(host.shape[1])
        m2 = ((host - mean) ** 2).sum(axis=0)
        if getattr(self, "n_samples_seen_", None) is None:
            self.n_features_in_, self.n_samples_seen_ = host.shape[1], n
            self._mean, self._m2 = mean, m2
        else:
            seen = self.n_samples_seen_
            total = seen + n
            delta = mean - self._mean
            if total:
                self._mean = self._mean + delta * n / total
                self._m2 = self._m2 + m2 + delta**2 * seen * n / total
            self.n_samples_seen_ = total
        total = max(self.n_samples_seen_, 1)
        self.mean_ = self._mean.copy() if self.with_mean or self.with_std else None
        self.var_ = self._m2 / total if self.with_std else None
        self.scale_ = _nonzero_scale(np.sqrt(self.var_)) if self.with_std else None
        return self

    def _center_and_scale(self):
        n = self.n_features_in_
        mean = self.mean_ if self.with_mean else np.zeros(n)
        scale = self.scale_ if self.with_std else np.ones(n)
        return mean, scale

    def transform(self, X):
        """(X - mean_) / scale_ (each part only where asked for), X (samples, n_features_in_)."""
        self._check_fitted()
        mean, scale = self._center_and_scale()
        return self._affine("StandardScaler.transform", X, mean, 1 / scale, np.zeros_like(mean))

    def inverse_transform(self, X):
        """X * scale_ + mean_: back to the original units."""
        self._check_fitted()
        mean, scale = self._center_and_scale()
        return self._affine("StandardScaler.inverse_transform", X, np.zeros_like(mean), scale, mean)


class MinMaxScaler(_Scaler):
    """Scale each feature to ``feature_range``: X * scale_ + min_, as
    scikit-learn's MinMaxScaler, with ``data_min_``, ``data_max_``,
    ``data_range_``, ``scale_`` and ``min_`` as float64 host arrays (a
    constant feature has range 1, so it maps to the range's lower end) and
    ``n_samples_seen_``, ``n_features_in_``. ``clip`` clips transformed values
    to the range. Devices and dtypes as for :class:`StandardScaler`.
    """

    def __init__(self, feature_range=(0, 1), *, copy: bool = True, clip: bool = False):
        self.feature_range, self.copy, self.clip = feature_range, copy, clip

    def _range(self):
        """feature_range as (min, max), checked (ValueError)."""
        try:
            lo, hi = self.feature_range
            ok = lo < hi
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(
                f"MinMaxScaler: expected feature_range (min, max) with min < max, got "
                f"{self.feature_range!r}"
            )
        return lo, hi

    def partial_fit(self, X, y=None):
        """Widen the minima and maxima with the rows of X; returns self."""
        self._range()
        _, X, host = _scaler_input("MinMaxScaler.partial_fit", X)
        self._start(X)
        if len(host) == 0:
            raise ValueError("MinMaxScaler.partial_fit: expected at least one sample, got 0")
        low, high = host.min(axis=0), host.max(axis=0)
        if getattr(self, "n_samples_seen_", None) is None:
            self.n_features_in_, self.n_samples_seen_ = host.shape[1], 0
        else:
            low, high = np.minimum(low, self.data_min_), np.maximum(high, self.data_max_)
        self.n_samples_seen_ += len(host)
        lo, hi = self._range()
        self.data_min_, self.data_max_, self.data_range_ = low, high, high - low
        self.scale_ = (hi - lo) / _nonzero_scale(self.data_range_)
        self.min_ = lo - low * self.scale_
        return self

    def transform(self, X):
        """X * scale_ + min_, clipped to feature_range with ``clip``."""
        self._check_fitted()
        clip = self._range() if self.clip else None
        return self._affine(
            "MinMaxScaler.transform", X, np.zeros_like(self.min_), self.scale_, self.min_, clip
        )

    def inverse_transform(self, X):
        """(X - min_) / scale_: back to the original units."""
        self._check_fitted()
        return self._affine(
            "MinMaxScaler.inverse_transform",
            X,
            self.min_,
            1 / self.scale_,
            np.zeros_like(self.min_),
        )
