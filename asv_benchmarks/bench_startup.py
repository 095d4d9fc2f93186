"""Start-up: what a new process pays before its first result, with the
kernel cache (``gpunet.kernels._cache``) filled by an earlier process.

Each ``timeraw_`` benchmark runs its statement once in a fresh Python (asv
times only the statement, after the setup code): ``setup`` first runs the
same work in asv's own process, so the on-disk cache holds every kernel the
statement needs, as after one warm run.

- ``timeraw_import``: ``import gpunet``.
- ``timeraw_first_softmax``: the first ``gn.ops.softmax`` after the import.
- ``timeraw_first_training_epoch``: the first epoch of a small MLP on the
  digits (Dense, ReLU, softmax cross-entropy, Adam).
"""

import textwrap

import numpy as np

import gpunet as gn

_IMPORTS = "import numpy as np; import gpunet as gn"

_DATA = _IMPORTS + "; X, y = gn.datasets.load_digits(); X = (X / 16.0).astype(np.float32)"

_EPOCH = textwrap.dedent(
    """
    model = gn.nn.Sequential(
        gn.nn.Dense(64, 32, activation="relu", seed=0), gn.nn.Dense(32, 10, seed=1)
    )
    model.fit(X, y, loss=gn.losses.SoftmaxCrossEntropy(),
              optimizer=gn.optim.Adam(model.parameters()), epochs=1, batch_size=32, verbose=0)
    """
)


class StartUp:
    repeat = (3, 5, 30.0)
    number = 1

    def setup(self):
        gn.ops.softmax(np.ones((4, 10), np.float32))
        X, y = gn.datasets.load_digits()
        X = (X / 16.0).astype(np.float32)
        exec(_EPOCH, {"gn": gn, "X": X, "y": y})

    def timeraw_import(self):
        return "import gpunet"

    def timeraw_first_softmax(self):
        return "gn.ops.softmax(x)", _IMPORTS + "; x = np.ones((4, 10), np.float32)"

    def timeraw_first_training_epoch(self):
        return _EPOCH, _DATA
