"""scikit-learn's estimator protocol without a dependency on scikit-learn.

:class:`Estimator` gives a class whose constructor stores its keyword
arguments ``get_params`` / ``set_params`` (so that ``clone``, ``Pipeline``
and ``GridSearchCV`` work), a ``repr`` listing the changed arguments, and
``__sklearn_tags__`` built from scikit-learn's tag classes when scikit-learn
asks for them. :func:`check_X` validates feature matrices as scikit-learn's
``validate_data`` does (same error wording where scikit-learn's own checks
match on it), with feature names from pandas frames. :class:`ConvergenceWarning`
is scikit-learn's when it is installed.
"""

from __future__ import annotations

import inspect
import numbers
import warnings

import numpy as np

from .exceptions import NotFittedError, sklearn_flavoured
from .kernels import _cuda


class ConvergenceWarning(UserWarning):
    """A solver stopped before it converged (warned through
    ``sklearn_flavoured``: filters on scikit-learn's ``ConvergenceWarning``
    see it too)."""


class DataConversionWarning(UserWarning):
    """Input was converted to the shape expected (warned through
    ``sklearn_flavoured``, as ``ConvergenceWarning``)."""


def random_state(seed):
    """A numpy RandomState as scikit-learn's ``check_random_state`` makes it:
    the global one for None, a new one for an int, the instance itself."""
    if seed is None:
        return np.random.mtrand._rand
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return np.random.RandomState(seed)
    if isinstance(seed, np.random.RandomState):
        return seed
    raise ValueError(
        f"expected random_state to be None, an int or a numpy RandomState, got {seed!r}"
    )


class Estimator:
    """Base class: the constructor's arguments are the parameters.

    Subclasses set ``_estimator_type`` ("classifier", "regressor" or None for
    a transformer) and may extend ``_tags`` (a dict of tag overrides)."""

    _estimator_type: str | None = None

    @classmethod
    def _get_param_names(cls):
        params = inspect.signature(cls.__init__).parameters.values()
        return sorted(p.name for p in params if p.name != "self")

    def get_params(self, deep=True):
        """The constructor arguments as a dict (``deep`` changes nothing: no
        argument is an estimator)."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        """Set constructor arguments by name; returns self."""
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for estimator {type(self).__name__}: "
                    f"expected one of {', '.join(valid)}"
                )
            setattr(self, name, value)
        return self

    def __repr__(self):
        defaults = {
            p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()
        }
        changed = []
        for name, value in self.get_params().items():
            default = defaults[name]
            same = type(value) is type(default) and _equal(value, default)
            if not same:
                changed.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(changed)})"

    def _check_fitted(self):
        if not self.__sklearn_is_fitted__():
            raise sklearn_flavoured(NotFittedError)(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator."
            )

    def __sklearn_is_fitted__(self):
        return hasattr(self, "n_features_in_")

    def _tags(self) -> dict:
        return {}

    def __sklearn_tags__(self):
        return sklearn_tags(self._estimator_type, **self._tags())


def sklearn_tags(kind, **extra):
    """scikit-learn's ``Tags`` for an estimator of ``kind`` ("classifier",
    "regressor", or None for a transformer) that takes dense, finite input;
    ``extra``: multi_output, multi_label, preserves_dtype, non_deterministic.
    Imports scikit-learn, so only scikit-learn calls it."""
    from sklearn.utils import (
        ClassifierTags,
        InputTags,
        RegressorTags,
        Tags,
        TargetTags,
        TransformerTags,
    )

    return Tags(
        estimator_type=kind,
        target_tags=TargetTags(
            required=kind is not None,
            multi_output=extra.get("multi_output", False),
            single_output=True,
        ),
        transformer_tags=TransformerTags(preserves_dtype=extra.get("preserves_dtype", []))
        if kind is None
        else None,
        classifier_tags=ClassifierTags(multi_label=extra.get("multi_label", False))
        if kind == "classifier"
        else None,
        regressor_tags=RegressorTags() if kind == "regressor" else None,
        input_tags=InputTags(allow_nan=False, sparse=False),
        non_deterministic=extra.get("non_deterministic", False),
    )


def _equal(a, b):
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return a is b


def _feature_names(X):
    """The column names of a data frame when they are all strings, else None."""
    columns = getattr(X, "columns", None)
    if columns is None or not hasattr(X, "iloc"):
        return None
    names = np.asarray(columns, dtype=object)
    if len(names) and all(isinstance(n, str) for n in names):
        return names
    return None


def check_feature_names(est, X, reset):
    """Record (``reset``) or compare the feature names of ``X`` as scikit-learn does."""
    names = _feature_names(X)
    if reset:
        if names is not None:
            est.feature_names_in_ = names
        elif hasattr(est, "feature_names_in_"):
            del est.feature_names_in_
        return
    fitted = getattr(est, "feature_names_in_", None)
    cls = type(est).__name__
    if fitted is None and names is not None:
        warnings.warn(
            f"X has feature names, but {cls} was fitted without feature names",
            UserWarning,
            stacklevel=3,
        )
    elif fitted is not None and names is None:
        warnings.warn(
            f"X does not have valid feature names, but {cls} was fitted with feature names",
            UserWarning,
            stacklevel=3,
        )
    elif fitted is not None and (len(fitted) != len(names) or (fitted != names).any()):
        raise ValueError(
            "The feature names should match those that were passed during fit: "
            f"expected {list(fitted)}, got {list(names)}"
        )


def check_X(est, X, *, reset, dtype, name="X"):
    """``X`` as a C-contiguous 2-D host array of ``dtype``, checked before any
    work: dense, numeric (not complex), 2-D with at least one row and one
    column, finite, and (unless ``reset``) of the fitted width; feature names
    recorded or compared. A device array is copied to the host for the check."""
    cls = type(est).__name__
    if hasattr(X, "toarray") or type(X).__module__.startswith("scipy.sparse"):
        raise TypeError(
            f"{cls}: sparse input is not supported: expected a dense {name}, got "
            f"{type(X).__name__}; convert it with {name}.toarray()"
        )
    if reset or hasattr(est, "n_features_in_"):
        check_feature_names(est, X, reset)
    host = _cuda.as_device_array(X).copy_to_host() if _cuda.is_device_array(X) else X
    try:
        host = np.asarray(host)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{cls}: expected {name} to be an array of numbers: {error}") from None
    if host.dtype.kind == "c":
        raise ValueError(f"{cls}: Complex data not supported in {name}")
    if host.dtype.kind in "US":
        raise TypeError(f"{cls}: expected {name} to hold numbers, got dtype {host.dtype}")
    if host.dtype.kind == "O":
        try:
            host = host.astype(np.float64)
        except (TypeError, ValueError) as error:
            raise TypeError(f"{cls}: expected {name} to hold numbers: {error}") from None
    if host.dtype.kind not in "biuf":
        raise TypeError(f"{cls}: expected {name} to hold numbers, got dtype {host.dtype}")
    if host.ndim != 2:
        raise ValueError(
            f"{cls}: Expected 2D array, got {host.ndim}D array instead: expected {name} of shape "
            "(n_samples, n_features). Reshape your data either using array.reshape(-1, 1) if "
            "your data has a single feature or array.reshape(1, -1) if it contains a single sample."
        )
    if host.shape[0] == 0:
        raise ValueError(
            f"{cls}: Found array with 0 sample(s) (shape={host.shape}) while a minimum of 1 "
            f"is required (expected {name} with at least one row and column)."
        )
    if host.shape[1] == 0:
        raise ValueError(
            f"{cls}: Found array with 0 feature(s) (shape={host.shape}) while a minimum of 1 "
            f"is required (expected {name} with at least one row and column)."
        )
    if not reset and hasattr(est, "n_features_in_") and host.shape[1] != est.n_features_in_:
        raise ValueError(
            f"X has {host.shape[1]} features, but {cls} is expecting {est.n_features_in_} "
            f"features as input (expected {name} with {est.n_features_in_} features, as fitted)"
        )
    out = np.ascontiguousarray(host, dtype=dtype)
    if not np.isfinite(out).all():
        raise ValueError(f"{cls}: Input {name} contains NaN or infinity (expected finite values)")
    return out


def check_y_length(X, y, name="y"):
    if y.shape[0] != X.shape[0]:
        raise ValueError(
            f"Found input variables with inconsistent numbers of samples: expected {name} with "
            f"{X.shape[0]} rows like X, got {y.shape[0]}"
        )
