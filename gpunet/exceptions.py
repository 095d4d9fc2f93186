"""gpunet's own exception types, for users to catch (``gn.NotFittedError``)."""

from __future__ import annotations

import functools
import importlib


class NotFittedError(ValueError, AttributeError):
    """A method that needs a fitted estimator (``gn.RBM``, a scaler) was called
    before ``fit``; a ValueError and an AttributeError. Raised through
    ``sklearn_flavoured``, so that code catching scikit-learn's
    ``NotFittedError`` catches it too."""


@functools.cache
def sklearn_flavoured(cls: type) -> type:
    """What to raise or warn for ``cls``: where scikit-learn is installed, a
    subclass of ``cls`` and of scikit-learn's class of the same name in
    ``sklearn.exceptions`` (so that code catching or filtering either sees
    it); ``cls`` itself otherwise. scikit-learn is imported here, by the first
    such error or warning, not with gpunet: it takes most of a second."""
    try:
        theirs = getattr(importlib.import_module("sklearn.exceptions"), cls.__name__)
    except ImportError:
        return cls
    return type(
        cls.__name__,
        (cls, theirs),
        {
            "__module__": cls.__module__,
            "__doc__": cls.__doc__,
            "__reduce__": lambda self: (cls, self.args),  # pickles as gpunet's own
        },
    )
