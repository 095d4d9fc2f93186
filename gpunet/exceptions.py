"""gpunet's own exception types, for users to catch (``gn.NotFittedError``)."""

from __future__ import annotations


class NotFittedError(ValueError, AttributeError):
    """A method that needs a fitted estimator (``gn.RBM``, a scaler) was called
    before ``fit``; a ValueError and an AttributeError, as scikit-learn's."""
