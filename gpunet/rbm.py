"""Restricted Boltzmann machines trained by contrastive divergence: ``gn.RBM``.

A drop-in for scikit-learn's ``BernoulliRBM`` (same constructor arguments,
defaults, methods and fitted attributes, and ``get_params``/``set_params`` so
that it works inside a ``Pipeline`` or ``GridSearchCV``) that trains on the CPU
or a CUDA GPU, and adds CD-k, momentum, weight decay and Gaussian visible units.
The kernels are in ``gpunet.kernels.rbm``; random numbers come from the Philox
stream, so one seed gives the same samples on every device.
"""

from __future__ import annotations

import inspect
import numbers
import time

import numpy as np

from . import _rbm_epoch, _rbm_graph, _sklearn, dispatch
from . import distributed as _distributed
from ._device import _resolve
from .exceptions import NotFittedError, sklearn_flavoured
from .kernels import _cuda
from .kernels import rbm as _rbm

_VISIBLE = ("bernoulli", "gaussian")


def _random_state(random_state):
    """A numpy RandomState as scikit-learn's ``check_random_state`` makes it:
    the global one for None, a new one for an int, the instance itself."""
    if random_state is None:
        return np.random.mtrand._rand
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return np.random.RandomState(random_state)
    if isinstance(random_state, np.random.RandomState):
        return random_state
    raise TypeError(
        f"expected random_state to be None, an int or a numpy RandomState, got {random_state!r}"
    )


def _even_bounds(n_samples, batch_size):
    """Batch boundaries as scikit-learn's ``gen_even_slices`` makes them:
    ceil(n / batch_size) batches whose sizes differ by at most one."""
    n_batches = -(-n_samples // batch_size)
    sizes = np.full(n_batches, n_samples // n_batches, np.int64)
    sizes[: n_samples % n_batches] += 1
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


class RBM:
    """A restricted Boltzmann machine with Bernoulli hidden units, trained by
    persistent (PCD-k) or plain (CD-k) contrastive divergence.

    Parameters (scikit-learn's ``BernoulliRBM`` first, with its defaults):

    - ``n_components``: number of hidden units.
    - ``learning_rate``: step size; the gradient is the batch mean, as
      ``BernoulliRBM``'s learning rate divided by the batch size.
    - ``batch_size``: rows per mini-batch (batches of even sizes, in order).
    - ``n_iter``: epochs over the data in ``fit``.
    - ``verbose``: print the pseudo-likelihood and time after each epoch.
    - ``random_state``: None, an int or a numpy RandomState; draws the initial
      weights N(0, 0.01), the seed of the sampling stream, and the units
      ``score_samples`` corrupts (as scikit-learn does).
    - ``k``: Gibbs steps per update.
    - ``persistent``: keep the negative chain between updates (PCD, as
      ``BernoulliRBM``); False restarts it from the data (CD-k).
    - ``momentum``, ``weight_decay``: vel = momentum * vel + learning_rate *
      (grad - weight_decay * W), W += vel (no decay on the biases).
    - ``visible``: "bernoulli" (data in [0, 1]) or "gaussian" (unit-variance
      Gaussian units for real-valued, standardised data).
    - ``device``: "auto", "cpu", "cuda" or "cuda:N", resolved at the first fit.
    - ``dtype``: "float32" (default) or "float64".
    - ``cuda_graph``: on a GPU, for a model too large for the single-block
      epoch kernel, True replays each batch's 3 + 2k launches from a CUDA
      graph captured at the second batch of its size (one launch per batch),
      with the same results as eager batches (``gpunet._rbm_graph``); a
      capture that fails warns and trains eagerly. "auto" is eager for now,
      and False always is. True with an RBM on the CPU is an error at fit.

    Fitted attributes: ``components_`` (n_components, n_features),
    ``intercept_hidden_`` (n_components,), ``intercept_visible_``
    (n_features,), ``h_samples_`` (batch_size, n_components): the persistent
    chain (left at zeros by CD-k), ``n_features_in_``, ``device_``. They are
    numpy arrays of ``dtype``; assigning one copies it to the device.
    """

    def __init__(
        self,
        n_components=256,
        *,
        learning_rate=0.1,
        batch_size=10,
        n_iter=10,
        verbose=0,
        random_state=None,
        k=1,
        persistent=True,
        momentum=0.0,
        weight_decay=0.0,
        visible="bernoulli",
        device="auto",
        dtype="float32",
        cuda_graph=False,
    ):
        self.n_components = n_components
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.n_iter = n_iter
        self.verbose = verbose
        self.random_state = random_state
        self.k = k
        self.persistent = persistent
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.visible = visible
        self.device = device
        self.dtype = dtype
        self.cuda_graph = cuda_graph

    # --- scikit-learn's estimator protocol ------------------------------------------

    @classmethod
    def _param_names(cls):
        params = inspect.signature(cls.__init__).parameters.values()
        return [p.name for p in params if p.name != "self"]

    def get_params(self, deep=True):
        """The constructor arguments as a dict (``deep`` is accepted for
        scikit-learn and changes nothing: no argument is an estimator)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        """Set constructor arguments by name; returns self."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"expected a parameter of RBM ({', '.join(valid)}), got {name!r}")
            setattr(self, name, value)
        return self

    def __sklearn_tags__(self):
        return _sklearn.sklearn_tags(None, preserves_dtype=[np.dtype(self.dtype).name])

    def __repr__(self):
        defaults = {
            p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()
        }
        changed = [
            f"{name}={value!r}"
            for name, value in self.get_params().items()
            if not (isinstance(value, type(defaults[name])) and value == defaults[name])
        ]
        return f"RBM({', '.join(changed)})"

    # --- checks ---------------------------------------------------------------------

    def _check_arguments(self):
        def integer(name, low):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"expected {name} to be an integer >= {low}, got {value!r}")

        def real(name, low, closed):
            value = getattr(self, name)
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
            if not ok or not np.isfinite(value) or value < low or (value == low and not closed):
                bound = ">=" if closed else ">"
                raise ValueError(
                    f"expected {name} to be a finite number {bound} {low}, got {value!r}"
                )

        integer("n_components", 1)
        integer("batch_size", 1)
        integer("n_iter", 0)
        integer("k", 1)
        real("learning_rate", 0, False)
        real("momentum", 0, True)
        real("weight_decay", 0, True)
        if not 0 <= self.momentum < 1:
            raise ValueError(f"expected momentum in [0, 1), got {self.momentum!r}")
        if self.visible not in _VISIBLE:
            raise ValueError(
                f"expected visible to be 'bernoulli' or 'gaussian', got {self.visible!r}"
            )
        if np.dtype(self.dtype) not in (np.float32, np.float64):
            raise TypeError(f"expected dtype float32 or float64, got {self.dtype!r}")
        if not isinstance(self.cuda_graph, (bool, str)) or self.cuda_graph not in (
            False, True, "auto",
        ):  # fmt: skip
            raise ValueError(f"expected cuda_graph True, False or 'auto', got {self.cuda_graph!r}")

    def _check_fitted(self):
        if not hasattr(self, "_W"):
            raise sklearn_flavoured(NotFittedError)(
                "this RBM is not fitted yet: call fit or partial_fit before using it"
            )

    def _check_X(self, X, reset, name="X"):
        """X as a C-contiguous host array of the model's dtype, checked:
        2-D, numeric, finite, the fitted width, in [0, 1] for Bernoulli units."""
        dtype = np.dtype(self.dtype) if reset else self._dtype
        host = _sklearn.check_X(self, X, reset=reset, dtype=dtype, name=name)
        visible = self.visible if reset else self._visible
        if visible == "bernoulli":
            low, high = host.min(), host.max()
            if low < 0 or high > 1:
                raise ValueError(
                    f"expected {name} in [0, 1] for Bernoulli visible units, got values from "
                    f"{low} to {high}; scale the data to [0, 1] or use visible='gaussian'"
                )
        return host

    # --- parameters on the device ---------------------------------------------------

    def _put(self, host):
        if self.device_.type == "cpu":
            return np.ascontiguousarray(host, self._dtype)
        with _cuda.cuda.gpus[self.device_.index]:
            return _cuda.cuda.to_device(np.ascontiguousarray(host, self._dtype))

    def _zeros(self, shape):
        return self._put(np.zeros(shape, self._dtype))

    def _host(self, x):
        return x if isinstance(x, np.ndarray) else x.copy_to_host()

    def _initialise(self, n_features):
        self._check_arguments()
        self.device_ = _resolve(self.device)
        self._kind = self.device_.type
        if self.cuda_graph is True and self._kind != "cuda":
            raise ValueError(f"cuda_graph=True needs an RBM on a GPU, not on {self.device_}")
        self._graphs = _rbm_graph.EpochGraphs() if self.cuda_graph is True else None
        self._dtype = np.dtype(self.dtype)
        self._visible = self.visible
        self.random_state_ = _random_state(self.random_state)
        weights = self.random_state_.normal(0, 0.01, (self.n_components, n_features))
        self._seed = int(self.random_state_.randint(0, 2**63 - 1, dtype=np.int64))
        self._offset = 0
        self.n_features_in_ = n_features
        self._W = self._put(weights)
        self._b = self._zeros(n_features)
        self._c = self._zeros(self.n_components)
        self._velocities = [
            self._zeros(self._W.shape),
            self._zeros(n_features),
            self._zeros(self.n_components),
        ]
        self._chain = self._zeros((self.batch_size, self.n_components))

    #: The fitted arrays, kept on the model's device.
    _ARRAYS = ("_W", "_b", "_c", "_chain")

    def __getstate__(self):
        """Pickled with its arrays on the host (a fitted RBM on a GPU too)."""
        state = dict(self.__dict__)
        state.pop("_graphs", None)
        for name in self._ARRAYS:
            if name in state:
                state[name] = self._host(state[name])
        if "_velocities" in state:
            state["_velocities"] = [self._host(a) for a in state["_velocities"]]
        return state

    def __setstate__(self, state):
        """Unpickled with its arrays back on the device it was fitted on."""
        self.__dict__.update(state)
        if "_W" not in state:
            return
        self._graphs = _rbm_graph.EpochGraphs() if self.cuda_graph is True else None
        for name in self._ARRAYS:
            setattr(self, name, self._put(state[name]))
        self._velocities = [self._put(a) for a in state["_velocities"]]

    def _parameter(name, doc):
        def get(self):
            self._check_fitted()
            return self._host(getattr(self, name))

        def set_(self, value):
            self._check_fitted()
            current = getattr(self, name)
            value = np.asarray(value, self._dtype)
            if value.shape != current.shape:
                raise ValueError(f"expected an array of shape {current.shape}, got {value.shape}")
            setattr(self, name, self._put(value))

        return property(get, set_, doc=doc)

    components_ = _parameter("_W", "Weights (n_components, n_features).")
    intercept_hidden_ = _parameter("_c", "Hidden biases (n_components,).")
    intercept_visible_ = _parameter("_b", "Visible biases (n_features,).")
    h_samples_ = _parameter(
        "_chain", "The persistent chain's hidden states (batch_size, n_components)."
    )
    del _parameter

    def _kernel(self, op):
        return dispatch.kernel_for(op, self._kind)

    def _draw_offset(self, words):
        start = self._offset
        self._offset += words
        return start

    # --- training -------------------------------------------------------------------

    def _update(self, X, bounds):
        """CD updates over the batches X[bounds[t]:bounds[t + 1]] of the
        device array X: on the CPU, the kernel's epoch drawing its random
        numbers ahead on a second thread (``gpunet._rbm_epoch``); on a GPU,
        one launch for the epoch where the model fits one block's shared
        memory (``kernels.rbm.fits_one_block``: the digits model does in
        float32), else 3 + 2k launches per batch. In a data-parallel world
        (``gn.distributed``) each batch is a global batch, of which each rank
        takes its share (``gpunet.distributed.rbm_update``)."""
        if _distributed.world_size() > 1:  # data-parallel: batches are global batches
            self._offset = _distributed.rbm_update(self, X, bounds)
            return
        k, persistent, gaussian = self.k, self.persistent, self._visible == "gaussian"
        cpu = self._kind == "cpu"
        epoch = _rbm_epoch.cd_epoch_threaded if cpu else self._kernel("rbm.cd_epoch")
        if not cpu and getattr(self, "_graphs", None) is not None:
            epoch = self._graphs  # the tiled epoch's batches replayed from CUDA graphs
        self._offset = epoch(
            X, bounds, (self._W, self._b, self._c), self._velocities, self._chain, self._seed,
            self._offset, self.learning_rate, self.momentum, self.weight_decay, k, persistent,
            gaussian,
        )  # fmt: skip

    def fit_epochs(self, X, *, start=1):
        """Fit like :meth:`fit`, yielding the epoch number (1, 2, ...) after
        each epoch; the input is checked before this returns. ``start`` > 1
        continues a fitted RBM that has done ``start - 1`` epochs on X (one
        unpickled from a checkpoint, say) with epochs ``start`` to
        ``n_iter``: its weights, velocities, persistent chain and random
        stream carry on, so that the result is the uninterrupted fit's."""
        if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 1:
            raise ValueError(f"expected start to be an int >= 1, got {start!r}")
        if start > 1:
            self._check_fitted()
        X = self._check_X(X, reset=start == 1)
        if start == 1:
            self._initialise(X.shape[1])
        else:
            self._check_arguments()
        bounds = _even_bounds(X.shape[0], self.batch_size * _distributed.world_size())
        return self._epochs(self._put(X), bounds, start)

    def _epochs(self, X, bounds, start):
        for epoch in range(start, self.n_iter + 1):
            self._update(X, bounds)
            yield epoch

    def fit(self, X, y=None):
        """Fit to X (n_samples, n_features): ``n_iter`` epochs of mini-batch
        updates from a fresh initialisation. Returns self."""
        begin = time.perf_counter()
        for epoch in self.fit_epochs(X):
            if self.verbose:
                end = time.perf_counter()
                score = self.score_samples(X).mean() if self._visible == "bernoulli" else None
                what = (
                    f"pseudo-likelihood = {score:.2f}"
                    if score is not None
                    else f"reconstruction error = {self.reconstruction_error(X):.4f}"
                )
                print(f"[RBM] Iteration {epoch}, {what}, time = {end - begin:.2f}s")
                begin = end
        return self

    def partial_fit(self, X, y=None):
        """One update with all of X (n_samples, n_features) as the batch,
        initialising the model first if it is not fitted. Returns self."""
        first = not hasattr(self, "_W")
        X = self._check_X(X, reset=first)
        if first:
            self._initialise(X.shape[1])
        else:
            self._check_arguments()
        self._update(self._put(X), np.array([0, X.shape[0]], np.int64))
        return self

    # --- inference ------------------------------------------------------------------

    def _input(self, X):
        """(X checked and on the model's device, whether X came as a device array)."""
        self._check_fitted()
        return self._put(self._check_X(X, reset=False)), _cuda.is_device_array(X)

    def _output(self, x, on_device):
        return x if on_device and self._kind == "cuda" else self._host(x)

    def _empty(self, shape):
        if self._kind == "cpu":
            return np.empty(shape, self._dtype)
        return _cuda.cuda.device_array(shape, self._dtype)

    def _hidden(self, v, sampling=_rbm.NO_SAMPLE):
        """(probabilities, samples or None) of the hidden units given v."""
        probs = self._empty((v.shape[0], self.n_components))
        samples = self._empty(probs.shape) if sampling else None
        self._conditional(v, True, _rbm.SIGMOID, probs, sampling, samples)
        return probs, samples

    def _visible_given(self, h, sample):
        """The mean of p(v | h), or a sample from it."""
        gaussian = self._visible == "gaussian"
        activation = _rbm.IDENTITY if gaussian else _rbm.SIGMOID
        out = self._empty((h.shape[0], self.n_features_in_))
        if not sample:
            self._conditional(h, False, activation, out, _rbm.NO_SAMPLE, None)
            return out
        sampling = _rbm.GAUSSIAN if gaussian else _rbm.BERNOULLI
        self._conditional(h, False, activation, None, sampling, out)
        return out

    def _conditional(self, a, hidden, activation, out, sampling, samples):
        rows = a.shape[0]
        cols = self.n_components if hidden else self.n_features_in_
        words = _rbm.aligned_words(rows * cols * (2 if sampling == _rbm.GAUSSIAN else 1))
        offset = self._draw_offset(words if sampling else 0)
        bias = self._c if hidden else self._b
        self._kernel("rbm.conditional")(
            a, self._W, bias, hidden, activation, out, 1.0, sampling, samples, self._seed, offset
        )

    def transform(self, X):
        """P(h = 1 | v = X): (n_samples, n_features) -> (n_samples, n_components)."""
        v, on_device = self._input(X)
        return self._output(self._hidden(v)[0], on_device)

    def fit_transform(self, X, y=None):
        """fit(X), then transform(X)."""
        return self.fit(X).transform(X)

    def gibbs(self, v):
        """One Gibbs step from visible states v: sample h ~ p(h | v), then
        return a sample of p(v | h), shaped like v."""
        v, on_device = self._input(v)
        _, h = self._hidden(v, _rbm.BERNOULLI)
        return self._output(self._visible_given(h, sample=True), on_device)

    def sample(self, n_samples, n_gibbs=1000):
        """``n_samples`` fantasies: hidden states drawn uniformly at random,
        then ``n_gibbs`` Gibbs steps; returns the last visible samples
        (n_samples, n_features) as a numpy array."""
        self._check_fitted()
        for name, value in (("n_samples", n_samples), ("n_gibbs", n_gibbs)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"expected {name} to be a positive integer, got {value!r}")
        h = self._empty((n_samples, self.n_components))
        offset = self._draw_offset(_rbm.aligned_words(h.size))
        zeros = self._zeros(self.n_components)
        self._kernel("rbm.conditional")(
            self._zeros((n_samples, self.n_features_in_)), self._W, zeros, True, _rbm.SIGMOID,
            None, 1.0, _rbm.BERNOULLI, h, self._seed, offset,
        )  # fmt: skip
        for step in range(n_gibbs):
            v = self._visible_given(h, sample=True)
            if step < n_gibbs - 1:
                _, h = self._hidden(v, _rbm.BERNOULLI)
        return self._host(v)

    def free_energy(self, X):
        """F(v) = -log sum_h exp(-E(v, h)) per row: (n_samples,)."""
        v, on_device = self._input(X)
        z = self._empty((v.shape[0], self.n_components))
        self._conditional(v, True, _rbm.IDENTITY, z, _rbm.NO_SAMPLE, None)
        out = self._empty(v.shape[0])
        gaussian = self._visible == "gaussian"
        self._kernel("rbm.free_energy")(v, z, self._b, gaussian, out)
        return self._output(out, on_device)

    def reconstruct(self, X):
        """The mean-field reconstruction: the mean of p(v | h) at h = P(h = 1 | X)."""
        v, on_device = self._input(X)
        return self._output(self._visible_given(self._hidden(v)[0], sample=False), on_device)

    def reconstruction_error(self, X):
        """Mean squared difference between X and reconstruct(X), over all entries."""
        self._check_fitted()
        X = self._check_X(X, reset=False)
        diff = self._host(self.reconstruct(X)).astype(np.float64) - X
        return float(np.mean(diff**2))

    def score_samples(self, X):
        """scikit-learn's pseudo-likelihood per row (n_samples,): for each row
        one unit, drawn from ``random_state`` anew at each call, is flipped
        (v -> 1 - v), and the score is n_features * log sigmoid(F(v') - F(v)).
        Defined for Bernoulli visible units."""
        self._check_fitted()
        if self._visible != "bernoulli":
            raise ValueError(
                "score_samples (the pseudo-likelihood) is defined for Bernoulli visible units; "
                "use free_energy or reconstruction_error for visible='gaussian'"
            )
        v, on_device = self._input(X)
        index = _random_state(self.random_state).randint(0, v.shape[1], v.shape[0])
        index = self._put_index(index.astype(np.int64))
        z = self._empty((v.shape[0], self.n_components))
        self._conditional(v, True, _rbm.IDENTITY, z, _rbm.NO_SAMPLE, None)
        out = self._empty(v.shape[0])
        self._kernel("rbm.pseudo_likelihood")(v, z, self._W, self._b, index, out)
        return self._output(out, on_device)

    def _put_index(self, index):
        if self._kind == "cpu":
            return index
        with _cuda.cuda.gpus[self.device_.index]:
            return _cuda.cuda.to_device(index)
