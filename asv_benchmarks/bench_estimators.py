"""scikit-learn-style estimators: ``gn.MLPClassifier`` and ``gn.DBN``.

``MLPDigitsFit``, over device: ``gn.MLPClassifier.fit`` on the bundled
digits scaled to [0, 1] (1797 rows, 64 features) with scikit-learn's defaults
(one hidden layer of 100 relu units, adam, batch 200) for 200 epochs (5 in
quick mode) or until tol, random_state 0, float32.

- ``time_fit``: one fit.
- ``track_accuracy``: the fitted model's accuracy on the training digits.
- ``track_sklearn_ratio`` (CPU): scikit-learn's ``MLPClassifier`` with the
  same arguments on the same float32 data (so it computes in float32 too),
  timed alternately with gpunet; median of time(sklearn) / time(gpunet)
  (NaN without scikit-learn). scikit-learn runs with its BLAS threads as it
  finds them.
- ``track_sklearn_one_thread_ratio`` (CPU): the same with scikit-learn's BLAS
  limited to one thread, its fastest setting for products this small on a
  busy machine.

``DBNPretrain``, over device: ``gn.DBN((256, 128)).fit`` on the digits (batch
10, learning rate 0.05, 10 epochs per layer; 1 in quick mode).

- ``time_fit``: one fit.
"""

import functools
import statistics
import time

import numpy as np

import gpunet as gn

from .common import DEVICES, QUICK, require_device, sync

EPOCHS = 5 if QUICK else 200


@functools.cache
def digits():
    X, y = gn.datasets.load_digits()
    return np.ascontiguousarray(X / 16, np.float32), y


def _settings():
    return dict(hidden_layer_sizes=(100,), solver="adam", batch_size=200, max_iter=EPOCHS,
                random_state=0)  # fmt: skip


def _quiet(fit, *args):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the maximum-iterations ConvergenceWarning
        return fit(*args)


class MLPDigitsFit:
    param_names = ["device"]
    params = [list(DEVICES)]
    timeout = 900

    def setup(self, device):
        require_device(device)
        self.X, self.y = digits()
        _quiet(gn.MLPClassifier(max_iter=1, device=device).fit, self.X, self.y)

    def _fit(self, device):
        model = _quiet(gn.MLPClassifier(device=device, **_settings()).fit, self.X, self.y)
        sync(device)
        return model

    def time_fit(self, device):
        self._fit(device)

    def track_accuracy(self, device):
        return self._fit(device).score(self.X, self.y)

    track_accuracy.unit = "accuracy"

    def _ratio(self, device, one_thread):
        if device != "cpu":
            raise NotImplementedError("scikit-learn runs on the CPU")
        try:
            from sklearn.neural_network import MLPClassifier
        except ImportError:
            return float("nan")
        from threadpoolctl import threadpool_limits

        ratios = []
        for _ in range(3 if QUICK else 5):
            start = time.perf_counter()
            self._fit(device)
            mid = time.perf_counter()
            if one_thread:
                with threadpool_limits(1, user_api="blas"):
                    _quiet(MLPClassifier(**_settings()).fit, self.X, self.y)
            else:
                _quiet(MLPClassifier(**_settings()).fit, self.X, self.y)
            ratios.append((time.perf_counter() - mid) / (mid - start))
        return statistics.median(ratios)

    def track_sklearn_ratio(self, device):
        return self._ratio(device, one_thread=False)

    track_sklearn_ratio.unit = "sklearn time / gpunet time"

    def track_sklearn_one_thread_ratio(self, device):
        return self._ratio(device, one_thread=True)

    track_sklearn_one_thread_ratio.unit = "sklearn (1 BLAS thread) time / gpunet time"


class DBNPretrain:
    param_names = ["device"]
    params = [list(DEVICES)]
    timeout = 900

    def setup(self, device):
        require_device(device)
        self.X, _ = digits()
        gn.DBN((8, 4), n_iter=1, device=device).fit(self.X[:20])

    def time_fit(self, device):
        gn.DBN((256, 128), learning_rate=0.05, n_iter=1 if QUICK else 10, random_state=0,
               device=device).fit(self.X)  # fmt: skip
        sync(device)
