"""gpunet's own exception types, for users to catch (``gn.NotFittedError``)."""

from __future__ import annotations

try:
    from sklearn.exceptions import NotFittedError as _NotFitted
except ImportError:  # scikit-learn is optional

    class _NotFitted(ValueError, AttributeError):
        pass


class NotFittedError(_NotFitted):
    """A method that needs a fitted estimator (``gn.RBM``, a scaler) was called
    before ``fit``; a ValueError and an AttributeError, and a subclass of
    scikit-learn's ``NotFittedError`` when scikit-learn is installed."""
