"""Multi-layer perceptrons with scikit-learn's interface: ``gn.MLPClassifier``
and ``gn.MLPRegressor``.

Drop-ins for ``sklearn.neural_network.MLPClassifier`` / ``MLPRegressor``:
the same constructor arguments and defaults, fitted attributes, methods,
losses (log-loss or half squared error, plus alpha / (2 n) ||W||^2 over the
batch's n rows), weight initialisation (Glorot uniform drawn from
``random_state`` in scikit-learn's order), mini-batch order, learning-rate
schedules, stopping rules and warnings. So with one ``random_state`` both
libraries start from the same weights and follow the same loss curve, to the
rounding of the dtype.

The network is a :class:`gpunet.nn.Sequential` of Dense layers (``model_``)
on ``device`` in ``dtype`` (float32 by default), trained by
:class:`gpunet.optim.SGD` / :class:`gpunet.optim.Adam` over its flat
parameter buffer (the hyper-parameters mapped so that the updates are
scikit-learn's), or by scipy's L-BFGS-B on that buffer. On the CPU, a
network without dropout or batch norm trains with sgd or adam by compiled
epochs (``kernels.mlp``): one call per epoch runs the same kernels as the
layers' ops, without their per-step host cost. Beyond scikit-learn:
``device``, ``dtype``, ``dropout`` (after each hidden activation),
``batch_norm`` (a BatchNorm1d before each hidden activation) and
``validation_loss_curve_``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import warnings

import numpy as np
import threadpoolctl

from . import _mlp_epoch, nn, ops
from . import losses as _losses
from . import optim as _optim
from ._arrays import zeros
from ._device import _resolve, to_device, to_numpy
from ._sklearn import (
    ConvergenceWarning,
    DataConversionWarning,
    Estimator,
    check_X,
    check_y_length,
    random_state,
)
from .exceptions import sklearn_flavoured
from .kernels import _cuda
from .kernels import mlp as _mlp
from .replay import HostReplay, step_replayable
from .training import _Batches

__all__ = ["MLPClassifier", "MLPRegressor"]

#: scikit-learn's activation names -> gn.nn.Dense's fused activation.
ACTIVATIONS = {"identity": None, "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
_ACTIVATION_LAYERS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}
SOLVERS = ("lbfgs", "sgd", "adam")
LEARNING_RATES = ("constant", "invscaling", "adaptive")

#: On the CPU, products of fewer multiply-adds than this run on one BLAS
#: thread: for them a second BLAS thread saves less than it costs, as its
#: spinning workers then slow the Numba kernels that follow each product
#: (a 200x64 @ 64x100 dense step took 1.4 ms with two BLAS threads and
#: 50 us with one on a busy 2-core host).
SINGLE_THREAD_MACS = 1 << 23

#: Attributes rebuilt rather than pickled (see ``__getstate__``).
_TRANSIENT = ("model_", "_optimizer", "_loss_fn", "_val_loss_fn", "_l2")


@contextlib.contextmanager
def _restored_on_error(owner, names):
    """Put the attributes ``names`` of ``owner`` back as they were (present
    or absent) if the block raises: input checks that record what they read
    leave nothing behind when a later check fails."""
    saved = {name: owner.__dict__[name] for name in names if name in owner.__dict__}
    try:
        yield
    except BaseException:
        for name in names:
            owner.__dict__.pop(name, None)
        owner.__dict__.update(saved)
        raise


@functools.cache
def _blas_controller():
    """The thread pools loaded (found once: a new search costs about 0.4 ms)."""
    return threadpoolctl.ThreadpoolController()


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _to_host(x):
    return to_numpy(x)


class _BaseMLP(Estimator):
    """What the classifier and the regressor share; see the module docstring."""

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        device="auto",
        dtype="float32",
        dropout=0.0,
        batch_norm=False,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.device = device
        self.dtype = dtype
        self.dropout = dropout
        self.batch_norm = batch_norm

    # --- checks ---------------------------------------------------------------------

    def _hidden_sizes(self):
        sizes = self.hidden_layer_sizes
        sizes = list(sizes) if hasattr(sizes, "__iter__") else [sizes]
        if not all(_is_int(s) and s > 0 for s in sizes):
            raise ValueError(
                f"expected hidden_layer_sizes to be positive integers, got "
                f"{self.hidden_layer_sizes!r}"
            )
        return [int(s) for s in sizes]

    def _check_params(self):
        """Every constructor argument checked (ValueError naming it) before any work."""
        cls = type(self).__name__

        def bad(name, expected):
            raise ValueError(
                f"{cls}: expected {name} to be {expected}, got {getattr(self, name)!r}"
            )

        def integer(name, low):
            if not (_is_int(getattr(self, name)) and getattr(self, name) >= low):
                bad(name, f"an integer >= {low}")

        def real(name, low, high=math.inf, low_closed=True, high_closed=True):
            v = getattr(self, name)
            ok = _is_real(v) and math.isfinite(v)
            ok = ok and (v >= low if low_closed else v > low)
            ok = ok and (v <= high if high_closed else v < high)
            if not ok:
                left, right = "[" if low_closed else "(", "]" if high_closed else ")"
                bad(name, f"a number in {left}{low}, {high}{right}")

        self._hidden_sizes()
        if self.activation not in ACTIVATIONS:
            bad("activation", f"one of {', '.join(map(repr, ACTIVATIONS))}")
        if self.solver not in SOLVERS:
            bad("solver", f"one of {', '.join(map(repr, SOLVERS))}")
        if self.learning_rate not in LEARNING_RATES:
            bad("learning_rate", f"one of {', '.join(map(repr, LEARNING_RATES))}")
        if not (self.batch_size == "auto" or (_is_int(self.batch_size) and self.batch_size >= 1)):
            bad("batch_size", "'auto' or an integer >= 1")
        real("alpha", 0)
        real("learning_rate_init", 0, low_closed=False)
        real("power_t", 0)
        integer("max_iter", 1)
        integer("n_iter_no_change", 1)
        integer("max_fun", 1)
        real("tol", 0)
        real("momentum", 0, 1)
        real("validation_fraction", 0, 1, high_closed=False)
        real("beta_1", 0, 1, high_closed=False)
        real("beta_2", 0, 1, high_closed=False)
        real("epsilon", 0, low_closed=False)
        real("dropout", 0, 1, high_closed=False)
        for name in ("shuffle", "warm_start", "nesterovs_momentum", "early_stopping", "batch_norm"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                bad(name, "a bool")
        if not (isinstance(self.verbose, (bool, np.bool_)) or _is_int(self.verbose)):
            bad("verbose", "a bool or an int")
        try:
            dtype = np.dtype(self.dtype)
        except TypeError:
            dtype = None
        if dtype not in (np.float32, np.float64):
            bad("dtype", "'float32' or 'float64'")
        if self.solver == "lbfgs" and self.dropout > 0:
            raise ValueError(
                f"{cls}: dropout needs a stochastic solver ('sgd' or 'adam'): L-BFGS minimises "
                "a fixed function, and dropout makes it random; got solver='lbfgs', "
                f"dropout={self.dropout!r}"
            )
        _resolve(self.device)

    # --- the network ----------------------------------------------------------------

    def _architecture(self, n_features, n_outputs):
        """Everything the network's shape depends on, kept for rebuilding it."""
        return {
            "sizes": [n_features, *self._hidden_sizes(), n_outputs],
            "activation": self.activation,
            "batch_norm": bool(self.batch_norm),
            "dropout": float(self.dropout),
            "dtype": np.dtype(self.dtype).name,
            "device": str(self.device_),
        }

    def _build(self, arch, dropout_seed=0):
        """A Sequential for ``arch``: Dense [BatchNorm1d, activation] [Dropout]
        per hidden layer, then a Dense output layer giving the output's logits
        (its activation applied by the loss and by ``predict``)."""
        sizes, act = arch["sizes"], ACTIVATIONS[arch["activation"]]
        dtype, device = arch["dtype"], _resolve(arch["device"])
        layers = []
        self._dense = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            hidden = i < len(sizes) - 2
            fused = act if hidden and not arch["batch_norm"] else None
            dense = nn.Dense(n_in, n_out, fused, dtype, seed=0, device=device)
            layers.append(dense)
            self._dense.append(dense)
            if hidden and arch["batch_norm"]:
                layers.append(nn.BatchNorm1d(n_out, dtype=dtype, device=device))
                if act is not None:
                    layers.append(_ACTIVATION_LAYERS[act]())
            if hidden and arch["dropout"] > 0:
                layers.append(nn.Dropout(arch["dropout"], seed=dropout_seed + i))
        return nn.Sequential(*layers)

    def _initialize(self, X, T, n_outputs):
        """Set up a fresh network and the fitted attributes (the first fit)."""
        self.device_ = _resolve(self.device)
        self.n_features_in_ = X.shape[1]
        self.n_outputs_ = n_outputs
        self.n_iter_ = 0
        self.t_ = 0
        self._arch = self._architecture(X.shape[1], n_outputs)
        self.n_layers_ = len(self._arch["sizes"])
        self.out_activation_ = self._out_activation()
        # Glorot uniform, drawn in scikit-learn's order: each layer's weights, then its biases.
        factor = 2.0 if self.activation == "logistic" else 6.0
        initial = []
        for n_in, n_out in zip(self._arch["sizes"][:-1], self._arch["sizes"][1:], strict=True):
            bound = np.sqrt(factor / (n_in + n_out))
            w = self._random_state.uniform(-bound, bound, (n_in, n_out))
            b = self._random_state.uniform(-bound, bound, n_out)
            initial.append((w, b))
        seed = int(self._random_state.randint(2**31 - 1)) if self.dropout > 0 else 0
        self.model_ = self._build(self._arch, seed)
        dtype = np.dtype(self.dtype)
        for dense, (w, b) in zip(self._dense, initial, strict=True):
            dense.weight.data = to_device(w.astype(dtype), self.device_)
            dense.bias.data = to_device(b.astype(dtype), self.device_)
        self._best = self.model_.state_dict()
        for name in ("_optimizer", "_loss_fn", "_val_loss_fn"):
            self.__dict__.pop(name, None)
        if self.solver != "lbfgs":
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.validation_scores_ = None
                self.best_validation_score_ = None
                self.best_loss_ = np.inf
        self.validation_loss_curve_ = None

    def _check_warm(self, X):
        """A warm start or partial_fit continues the fitted network: the
        arguments that shape it must not have changed."""
        arch = self._architecture(X.shape[1], self.n_outputs_)
        changed = [k for k in arch if k != "device" and arch[k] != self._arch[k]]
        if _resolve(self.device) != _resolve(self._arch["device"]):
            changed.append("device")
        if changed:
            raise ValueError(
                f"{type(self).__name__}: warm_start and partial_fit continue the fitted network, "
                f"but {', '.join(changed)} changed since it was fitted "
                f"({', '.join(f'{k}={self._arch[k]!r}' for k in changed)}); "
                "set them back or fit afresh (warm_start=False)"
            )

    # --- fitted parameters ----------------------------------------------------------

    def _parameter_list(name):
        def get(self):
            self._check_fitted()
            params = [getattr(d, name) for d in self._dense]
            if self.device_.type == "cpu":
                return [p.data for p in params]  # live views: writing into them changes the model
            return [_to_host(p.data) for p in params]

        def set_(self, values):
            self._check_fitted()
            params = [getattr(d, name) for d in self._dense]
            values = list(values)
            if len(values) != len(params):
                raise ValueError(f"expected {len(params)} arrays, got {len(values)}")
            arrays = []
            for p, v in zip(params, values, strict=True):
                v = np.asarray(_to_host(v) if _cuda.is_device_array(v) else v, p.dtype)
                if v.shape != p.shape:
                    raise ValueError(f"expected an array of shape {p.shape}, got {v.shape}")
                arrays.append(v)
            for p, v in zip(params, arrays, strict=True):
                p.data = to_device(np.ascontiguousarray(v), self.device_)

        return get, set_

    coefs_ = property(
        *_parameter_list("weight"),
        doc="Weight matrices, one per layer: (fan_in, fan_out) arrays of ``dtype`` "
        "(on the CPU views into the model's parameters; on a GPU host copies).",
    )
    intercepts_ = property(
        *_parameter_list("bias"), doc="Bias vectors, one per layer: (fan_out,) arrays."
    )
    del _parameter_list

    # --- the training step ----------------------------------------------------------

    def _losses(self):
        """(training loss, validation loss) objects and the factor that makes
        their value and gradient scikit-learn's (see ``_scales``)."""
        if not hasattr(self, "_loss_fn"):
            self._loss_fn, self._val_loss_fn = self._new_loss(), self._new_loss()
        return self._loss_fn, self._val_loss_fn

    def _new_optimizer(self):
        weights = [d.weight for d in self._dense]
        ids = {id(p) for p in weights}
        others = [p for p in self.model_.parameters() if id(p) not in ids]
        groups = [{"params": weights}] + ([{"params": others}] if others else [])
        if self.solver == "sgd":
            self._lr = float(self.learning_rate_init)
            return _optim.SGD(
                groups, lr=self._lr, momentum=float(self.momentum),
                nesterov=bool(self.nesterovs_momentum) and self.momentum > 0,
            )  # fmt: skip
        return _optim.Adam(
            groups, lr=float(self.learning_rate_init), betas=(self.beta_1, self.beta_2),
            eps=float(self.epsilon),
        )  # fmt: skip

    def _set_lr(self, lr):
        """Change SGD's learning rate; the momentum buffer (PyTorch's, which
        holds gradients) is rescaled so that it keeps holding scikit-learn's
        velocity (which holds learning-rate-scaled steps): buf = -velocity / lr."""
        opt = self._optimizer
        if opt.momentum > 0 and lr > 0 and self._lr > 0:
            for state in opt.state.values():
                ops.scale(state["buf"], self._lr / lr, out=state["buf"])
        self._lr = lr
        opt.lr = lr

    def _l2_setup(self, n_batches):
        """Per-batch records of each weight matrix's squared norm (for the
        reported loss), kept on the device until the epoch's end."""
        n_layers = len(self._dense)
        record = zeros((n_batches, n_layers), np.dtype(self.dtype), self.device_)
        on_gpu = self.device_.type != "cpu"
        factors = np.array(
            [2.0 * d.weight.size if on_gpu else 1.0 for d in self._dense], np.float64
        )
        slots = [[record[k, i : i + 1] for i in range(n_layers)] for k in range(n_batches)]
        scratch = None
        if on_gpu:
            scratch = [
                (zeros(d.weight.shape, np.dtype(self.dtype), self.device_),
                 zeros(d.weight.shape, np.dtype(self.dtype), self.device_))
                for d in self._dense
            ]  # fmt: skip
        self._l2 = (record, factors, slots, scratch)

    def _record_l2(self, k):
        """Write each weight matrix's squared norm (on a GPU: half its mean
        square, via the MSE op against zeros) into batch k's record."""
        record, _, slots, scratch = self._l2
        if scratch is None:
            for i, d in enumerate(self._dense):
                record[k, i] = _mlp.squared_norm(d.weight.data.reshape(-1))
            return
        for d, slot, (target, grad) in zip(self._dense, slots[k], scratch, strict=True):
            ops.mse(d.weight.data, target, out=(slot, grad))

    def _step(self, xb, tb, loss_slot, k, forward_backward):
        """One mini-batch: ``forward_backward`` (from ``_forward_backward_runner``)
        with the loss into ``loss_slot``, then the update."""
        opt, alpha = self._optimizer, float(self.alpha)
        opt.zero_grad()
        forward_backward(xb, tb, loss_slot)
        n = xb.shape[0]
        if alpha:
            self._record_l2(k)
        opt.param_groups[0]["weight_decay"] = alpha / n
        if isinstance(opt, _optim.Adam):
            opt.eps = _mlp_epoch.sklearn_eps(self.epsilon, self.beta_2, opt.steps + 1)
        opt.step()

    def _forward_backward(self, xb, tb, loss_slot):
        """The forward pass, the loss into ``loss_slot`` and the backward pass."""
        grad = self._loss_fn.into(self.model_.forward(xb), tb, loss_slot)
        if self._grad_scale != 1:
            ops.scale(grad, self._grad_scale, out=grad)
        self.model_.backward(grad, input_grad=False)

    def _forward_backward_runner(self):
        """``_forward_backward``, or where the model and loss allow it on the
        CPU, the same replayed from its kernel calls (gpunet.replay) into a
        loss slot of its own, copied to the step's."""
        if not step_replayable(self.model_, self._loss_fn):
            return self._forward_backward
        slot = np.zeros(1, np.dtype(self.dtype))
        run = HostReplay(
            lambda xb, tb: self._forward_backward(xb, tb, slot), self.model_.parameters()
        )

        def replayed(xb, tb, loss_slot):
            run(xb, tb)
            loss_slot[0] = slot[0]

        return replayed

    # --- fitting --------------------------------------------------------------------

    def _threads(self, rows):
        """A context in which BLAS uses one thread when the network's largest
        product over ``rows`` rows is small (see ``SINGLE_THREAD_MACS``)."""
        sizes = self._arch["sizes"]
        macs = rows * max(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        if self.device_.type != "cpu" or macs >= SINGLE_THREAD_MACS:
            return contextlib.nullcontext()
        return _blas_controller().limit(limits=1, user_api="blas")

    def _fit(self, X, y, incremental, validation_data=None):
        self._check_params()
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None"
            )
        first = not hasattr(self, "model_") or (not self.warm_start and not incremental)
        with _restored_on_error(self, ("classes_", "_label_kind", "feature_names_in_")):
            X = check_X(self, X, reset=first, dtype=np.dtype(self.dtype))
            T, n_outputs = self._encode(y, X, first, incremental)
            if validation_data is not None:
                validation_data = self._validation_input(validation_data, first)
            self._random_state = random_state(self.random_state)
            if not first:
                self._check_warm(X)
        if first:
            self._initialize(X, T, n_outputs)
        self._value_scale, self._grad_scale = self._scales()
        rows = 200 if self.batch_size == "auto" else self.batch_size
        rows = X.shape[0] if self.solver == "lbfgs" else min(rows, X.shape[0])
        with self._threads(rows):
            if self.solver == "lbfgs":
                self._fit_lbfgs(X, T)
            else:
                self._fit_stochastic(X, T, incremental, validation_data)
        if not np.isfinite(to_numpy(self.model_.flat_parameters()[0])).all():
            raise ValueError(
                "Solver produced non-finite parameter weights. The input data may contain "
                "large values and need to be preprocessed."
            )
        return self

    def _validation_input(self, validation_data, first):
        try:
            X_val, y_val = validation_data
        except (TypeError, ValueError):
            raise ValueError("expected validation_data to be a pair (X_val, y_val)") from None
        X_val = check_X(self, X_val, reset=False, dtype=np.dtype(self.dtype), name="X_val")
        check_y_length(X_val, np.asarray(y_val), "y_val")
        return X_val, y_val, self._encode_known(y_val)

    def _fit_lbfgs(self, X, T):
        model, alpha, n = self.model_, float(self.alpha), X.shape[0]
        loss_fn = self._losses()[0]
        data, grad = model.flat_parameters()
        params = model.parameters()
        weights = {id(d.weight) for d in self._dense}
        # flat_parameters() holds the parameters in parameters() order.
        mask = np.concatenate([np.full(p.size, id(p) in weights) for p in params])
        Xd, Td = to_device(X, self.device_), to_device(T, self.device_)
        dtype = np.dtype(self.dtype)
        model.train()

        def loss_and_grad(x):
            host = np.ascontiguousarray(x, dtype)
            if isinstance(data, np.ndarray):
                np.copyto(data, host)
            else:
                data.copy_to_device(host)
            for p in params:
                p.zero_grad()
            out = model.forward(Xd)
            loss, g = loss_fn(out, Td)
            if self._grad_scale != 1:
                ops.scale(g, self._grad_scale, out=g)
            value = float(loss) * self._value_scale
            model.backward(g, input_grad=False)
            for p in params:
                p.grad  # noqa: B018 (a gradient no backward wrote reads as zeros)
            g = to_numpy(grad).astype(np.float64)
            w = x[mask]
            value += 0.5 * alpha * float(np.dot(w, w)) / n
            g[mask] += alpha * w / n
            return value, g

        x0 = to_numpy(data).astype(np.float64)
        callback = None
        if self.verbose:

            def callback(intermediate_result):
                print(f"Iteration {intermediate_result.nit}, loss = {intermediate_result.fun:.8f}")

        import scipy.optimize  # here, not with gpunet: a fifth of its import time

        result = scipy.optimize.minimize(
            loss_and_grad, x0, method="L-BFGS-B", jac=True, callback=callback,
            options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol},
        )  # fmt: skip
        if result.status != 0:
            message = result.message
            message = message.decode("latin1") if isinstance(message, bytes) else message
            warnings.warn(
                f"lbfgs failed to converge after {result.nit} iteration(s) "
                f"(status={result.status}): {message}. Increase the number of iterations "
                f"(max_iter={self.max_iter}) or of function evaluations "
                f"(max_fun={self.max_fun}), or scale the data.",
                sklearn_flavoured(ConvergenceWarning),
                stacklevel=4,
            )
        self.n_iter_ = min(int(result.nit), self.max_iter)
        loss_and_grad(result.x)  # leaves the parameters at the solution
        self.loss_ = float(result.fun)

    def _split(self, X, T):
        """(X_train, T_train, X_val, y_val): validation_fraction of the rows
        held out as scikit-learn's ``train_test_split`` holds them out (the
        same rows for one random state), stratified by class for a binary
        classifier."""
        n = X.shape[0]
        rs = self._random_state
        n_val = math.ceil(self.validation_fraction * n)
        strata = self._strata(T)
        if strata is None:
            order = rs.permutation(n)
            val, train = order[:n_val], order[n_val:]
        else:
            train, val = _stratified_split(strata, n - n_val, n_val, rs)
        if len(val) < 2:
            raise ValueError(
                "The validation set is too small. Increase 'validation_fraction' or the size of "
                f"your dataset (got {len(val)} validation rows of {n})."
            )
        if len(train) < 1:
            raise ValueError("expected at least one training row left after the validation split")
        return X[train], T[train], X[val], self._decode_targets(T[val])

    def _fit_stochastic(self, X, T, incremental, validation_data):
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        if not incremental or not hasattr(self, "_optimizer"):
            self._optimizer = self._new_optimizer()
        self._losses()
        if self.early_stopping and validation_data is None:
            X_train, T_train, X_val, y_val = self._split(X, T)
            T_val = self._encode_known(y_val)
        else:
            X_train, T_train = X, T
            X_val, y_val, T_val = validation_data or (None, None, None)
        if X_val is not None and self.validation_loss_curve_ is None:
            self.validation_loss_curve_ = []
            if self.validation_scores_ is None:
                self.validation_scores_ = []
        n = X_train.shape[0]
        if self.batch_size == "auto":
            batch_size = min(200, n)
        else:
            if self.batch_size > n:
                warnings.warn(
                    "Got `batch_size` less than 1 or larger than sample size. It is going to "
                    "be clipped",
                    UserWarning,
                    stacklevel=4,
                )
            batch_size = min(max(self.batch_size, 1), n)
        min_rows = self.model_.min_training_rows()
        if batch_size < min_rows or (n % batch_size and n % batch_size < min_rows):
            raise ValueError(
                f"{type(self).__name__}: batch_norm needs at least {min_rows} rows in every "
                f"mini-batch, got batches of {batch_size} and {n % batch_size or batch_size} "
                f"rows from {n} samples; change batch_size"
            )
        starts = list(range(0, n, batch_size))
        bounds = [(s, min(s + batch_size, n)) for s in starts]
        sizes = np.array([b - a for a, b in bounds], np.float64)
        records = zeros(len(bounds), np.dtype(self.dtype), self.device_)
        alpha = float(self.alpha)
        if alpha:
            self._l2_setup(len(bounds))
        val_device = val_target = None
        if X_val is not None:
            val_device = to_device(X_val, self.device_)
            val_target = to_device(T_val, self.device_)
        order = np.arange(n)
        run_epoch = self._epoch_runner(X_train, T_train, bounds, batch_size, records, alpha)
        early = bool(self.early_stopping)
        rs = self._random_state
        try:
            for _ in range(self.max_iter):
                if self.shuffle:
                    permutation = np.arange(n)
                    rs.shuffle(permutation)
                    order = order[permutation]
                self.model_.train()
                run_epoch(order)
                batch_losses = to_numpy(records).astype(np.float64) * self._value_scale
                if alpha:
                    record, factors = self._l2[0], self._l2[1]
                    squares = to_numpy(record).astype(np.float64) @ factors
                    batch_losses = batch_losses + 0.5 * alpha * squares / sizes
                self.n_iter_ += 1
                self.loss_ = float(np.dot(batch_losses, sizes) / n)
                self.t_ += n
                self.loss_curve_.append(self.loss_)
                if self.verbose:
                    print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
                if X_val is not None:
                    self._validate(val_device, val_target, y_val)
                self._update_no_improvement_count(early)
                if self.solver == "sgd" and self.learning_rate == "invscaling":
                    self._set_lr(self.learning_rate_init / (self.t_ + 1) ** self.power_t)
                if self._no_improvement_count > self.n_iter_no_change:
                    what = "Validation score" if early else "Training loss"
                    message = (
                        f"{what} did not improve more than tol={self.tol:f} for "
                        f"{self.n_iter_no_change} consecutive epochs."
                    )
                    if self._trigger_stopping(message):
                        break
                    self._no_improvement_count = 0
                if incremental:
                    break
                if self.n_iter_ == self.max_iter:
                    warnings.warn(
                        f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and "
                        "the optimization hasn't converged yet.",
                        sklearn_flavoured(ConvergenceWarning),
                        stacklevel=4,
                    )
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.", stacklevel=4)
        self.model_.eval()
        if early:
            self.model_.load_state_dict(self._best)

    def _epoch_runner(self, X, T, bounds, batch_size, records, alpha):
        """run(order): an epoch over the batches X[order[a:b]], T[order[a:b]]
        for (a, b) in ``bounds`` (in order without shuffling), each batch's
        loss into ``records`` and, with ``alpha``, its L2 record; by a compiled
        epoch where ``_mlp_epoch.applies``, else step by step."""
        if _mlp_epoch.applies(self.model_, self._loss_fn, self._optimizer):
            compiled = _mlp_epoch.CompiledEpoch(
                self.model_, self._loss_fn, self._optimizer, X, T, bounds, alpha, self.epsilon,
                self._grad_scale,
            )  # fmt: skip
            norms = self._l2[0] if alpha else np.zeros((len(bounds), 0), records.dtype)
            return lambda order: compiled(order, records, norms)
        batches = _Batches(self.device_, [X, T], batch_size)
        slots = [records[k : k + 1] for k in range(len(bounds))]
        forward_backward = self._forward_backward_runner()

        def run(order):
            for k, (a, b) in enumerate(bounds):
                rows = order[a:b] if self.shuffle else slice(a, b)
                xb, tb = batches.take(rows)
                self._step(xb, tb, slots[k], k, forward_backward)

        return run

    def _validate(self, val_device, val_target, y_val):
        """Record the validation loss (without the L2 term) and score."""
        self.model_.eval()
        out = self.model_.forward(val_device)
        loss, _ = self._val_loss_fn(out, val_target)
        self.validation_loss_curve_.append(float(loss) * self._value_scale)
        score = self._score_outputs(_to_host(self._activate(out)), y_val)
        self.validation_scores_.append(score)
        if self.verbose:
            print(f"Validation score: {score:f}")
        self.model_.train()

    def _update_no_improvement_count(self, early):
        if early:
            last = self.validation_scores_[-1]
            if last < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if last > self.best_validation_score_:
                self.best_validation_score_ = last
                self._best = self.model_.state_dict()
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    def _trigger_stopping(self, message):
        """True to stop; with SGD's adaptive schedule, divide the learning rate
        by 5 instead until it falls to 1e-6."""
        if self.solver != "sgd" or self.learning_rate != "adaptive":
            if self.verbose:
                print(message + " Stopping.")
            return True
        if self._lr <= 1e-6:
            if self.verbose:
                print(message + " Learning rate too small. Stopping.")
            return True
        self._set_lr(self._lr / 5.0)
        if self.verbose:
            print(message + f" Setting learning rate to {self._lr:f}")
        return False

    # --- inference ------------------------------------------------------------------

    def _outputs(self, X):
        """The network's outputs after the output activation, on the host:
        (n_samples, n_outputs) of ``dtype``."""
        self._check_fitted()
        X = check_X(self, X, reset=False, dtype=np.dtype(self._arch["dtype"]))
        self.model_.eval()
        with self._threads(X.shape[0]):
            out = self.model_.forward(to_device(X, self.device_))
        return _to_host(self._activate(out)).copy()

    def _activate(self, out):
        """The output activation applied to the network's outputs (logits)."""
        if self.out_activation_ == "softmax":
            return ops.softmax(out)
        if self.out_activation_ == "logistic":
            return ops.sigmoid(out)
        return out

    # --- pickling -------------------------------------------------------------------

    def __getstate__(self):
        state = {k: v for k, v in self.__dict__.items() if k not in _TRANSIENT and k != "_dense"}
        if "model_" in self.__dict__:
            state["_model_state"] = self.model_.state_dict()
        return state

    def __setstate__(self, state):
        arrays = state.pop("_model_state", None)
        self.__dict__.update(state)
        if arrays is not None:
            self.model_ = self._build(self._arch)
            self.model_.load_state_dict(arrays)
            self.model_.eval()


# --- the classifier -------------------------------------------------------------------


def _stratified_split(strata, n_train, n_test, rs):
    """(train rows, test rows) drawn per stratum in proportion to its size,
    by the rules of scikit-learn's ``StratifiedShuffleSplit``: each stratum's
    share rounded down, the rows left over given to the strata with the
    largest remainders (ties broken at random), then each stratum's rows
    permuted and dealt out, and both sets permuted."""
    codes, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
    if counts.min() < 2:
        raise ValueError(
            "The least populated classes in y have only 1 member, which is too few for a "
            f"stratified validation split; classes with too few members: {codes[counts < 2]}"
        )
    if min(n_train, n_test) < len(codes):
        raise ValueError(
            f"expected a validation split of at least {len(codes)} rows on each side (one per "
            f"class), got {n_train} and {n_test}; change validation_fraction"
        )
    members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    n_i = _largest_remainders(counts, n_train, rs)
    t_i = _largest_remainders(counts - n_i, n_test, rs)
    train, test = [], []
    for rows, count, a, b in zip(members, counts, n_i, t_i, strict=True):
        rows = rows[rs.permutation(count)]
        train.extend(rows[:a])
        test.extend(rows[a : a + b])
    return rs.permutation(train), rs.permutation(test)


def _largest_remainders(counts, draws, rs):
    """``draws`` shared among ``counts`` in proportion: shares rounded down,
    then one more to each of the largest remainders (ties at random)."""
    exact = counts / counts.sum() * draws
    shares = np.floor(exact)
    missing = int(draws - shares.sum())
    remainder = exact - shares
    for value in np.unique(remainder)[::-1]:
        if missing == 0:
            break
        (tied,) = np.where(remainder == value)
        chosen = rs.choice(tied, size=min(len(tied), missing), replace=False)
        shares[chosen] += 1
        missing -= len(chosen)
    return shares.astype(int)


def _label_type(y):
    """scikit-learn's target types that a classifier takes: "binary",
    "multiclass" or "multilabel-indicator"; ValueError for the others."""
    if y.ndim == 2 and y.shape[1] > 1:
        if y.dtype.kind in "biuf" and np.isin(y, (0, 1)).all():
            return "multilabel-indicator"
        raise ValueError(
            "Multioutput target data is not supported with label binarization: expected y of "
            f"shape (n_samples,) or a 0/1 indicator matrix, got shape {y.shape}"
        )
    if y.ndim != 1:
        raise ValueError(f"expected y of shape (n_samples,), got shape {y.shape}")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise ValueError("Input y contains NaN or infinity")
        if (y != np.round(y)).any():
            raise ValueError(
                "Unknown label type: continuous. A classifier needs class labels; use "
                "MLPRegressor for continuous targets"
            )
    if y.dtype.kind == "c":
        raise ValueError("Unknown label type: complex")
    return "multiclass" if len(np.unique(y)) > 2 else "binary"


def _column(y, warn=True):
    """y of shape (n,) or (n, 1) as (n,), warning for the column as scikit-learn does."""
    if y.ndim == 2 and y.shape[1] == 1:
        if warn:
            warnings.warn(
                "A column-vector y was passed when a 1d array was expected. Please change the "
                "shape of y to (n_samples,), for example using ravel().",
                sklearn_flavoured(DataConversionWarning),
                stacklevel=5,
            )
        return y.ravel()
    return y


def _host_labels(y):
    if _cuda.is_device_array(y):
        y = _to_host(y)
    y = np.asarray(y)
    if y.dtype == object:
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError):
            y = y.astype(str)
    return y


class MLPClassifier(_BaseMLP):
    """A multi-layer perceptron classifier: scikit-learn's ``MLPClassifier``
    (see the module docstring) on gpunet's kernels.

    Targets: class labels (n_samples,) of any sortable type (two classes:
    one logistic output; more: softmax outputs), or a 0/1 indicator matrix
    (n_samples, n_labels) for multi-label problems (logistic outputs).

    Fitted attributes as scikit-learn's: ``classes_``, ``loss_``,
    ``best_loss_``, ``loss_curve_``, ``validation_scores_``,
    ``best_validation_score_``, ``t_``, ``coefs_``, ``intercepts_``,
    ``n_features_in_``, ``feature_names_in_`` (fitted on a data frame with
    string column names), ``n_iter_``, ``n_layers_``, ``n_outputs_``,
    ``out_activation_``; and ``validation_loss_curve_`` (the validation
    log-loss per epoch, without the L2 term, when early stopping or
    ``validation_data`` is used, else None), ``model_`` (the network: a
    gn.nn.Sequential giving logits) and ``device_``.
    """

    _estimator_type = "classifier"

    def _tags(self):
        return {"multi_label": True}

    def _out_activation(self):
        return "softmax" if self._label_kind == "multiclass" else "logistic"

    def _new_loss(self):
        if self._label_kind == "multiclass":
            return _losses.SoftmaxCrossEntropy()
        return _losses.BinaryCrossEntropy(from_logits=True)

    def _scales(self):
        """(factor on gn's loss value, factor on its gradient) giving scikit-learn's:
        its log-loss sums over labels, where gn's binary cross-entropy averages."""
        k = float(self.n_outputs_) if self._label_kind != "multiclass" else 1.0
        return k, k

    def _encode(self, y, X, first, incremental, classes=None):
        """Targets for the loss: class indices (n,) int64 for softmax, else
        (n, n_outputs) 0/1 in ``dtype``; and n_outputs."""
        y = _column(_host_labels(y))
        check_y_length(X, y)
        kind = _label_type(y)
        if first and not incremental:
            if kind == "multilabel-indicator":
                classes_ = np.arange(y.shape[1])
            else:
                classes_ = np.unique(y)
            self.classes_ = classes_
            self._label_kind = (
                "multilabel" if kind == "multilabel-indicator"
                else "multiclass" if len(classes_) > 2 else "binary"
            )  # fmt: skip
        else:
            if kind == "multilabel-indicator" or self._label_kind == "multilabel":
                if kind != "multilabel-indicator" or self._label_kind != "multilabel":
                    raise ValueError(
                        "expected y of the same kind as in the first fit (a multi-label "
                        "indicator matrix or class labels), got another"
                    )
                if y.shape[1] != len(self.classes_):
                    raise ValueError(
                        f"expected y with {len(self.classes_)} labels, got {y.shape[1]}"
                    )
            else:
                found = np.unique(y)
                if self.warm_start and not incremental:
                    if set(found.tolist()) != set(self.classes_.tolist()):
                        raise ValueError(
                            "warm_start can only be used where `y` has the same classes as in "
                            f"the previous call to fit. Previously got {self.classes_}, `y` "
                            f"has {found}"
                        )
                elif len(np.setdiff1d(found, self.classes_)):
                    raise ValueError(
                        f"`y` has classes not in `self.classes_`. `self.classes_` has "
                        f"{self.classes_}. 'y' has {found}."
                    )
        T = self._encode_known(y)
        n_outputs = 1 if T.ndim == 1 else T.shape[1]
        if self._label_kind == "multiclass":
            n_outputs = len(self.classes_)
        return T, n_outputs

    def _encode_known(self, y):
        """Labels of the fitted classes as the loss's targets."""
        y = _column(_host_labels(y), warn=False)
        if self._label_kind != "multilabel" and not np.isin(y, self.classes_).all():
            unknown = np.setdiff1d(y, self.classes_)
            raise ValueError(
                f"`y` has classes not in `self.classes_`. `self.classes_` has {self.classes_}. "
                f"'y' has {unknown}."
            )
        if self._label_kind == "multiclass":
            return np.searchsorted(self.classes_, y).astype(np.int64)
        if self._label_kind == "multilabel":
            return np.ascontiguousarray(y, np.dtype(self.dtype))
        positive = self.classes_[-1] if len(self.classes_) == 2 else None
        column = (y == positive) if positive is not None else np.zeros(len(y), bool)
        return column.astype(np.dtype(self.dtype)).reshape(-1, 1)

    def _decode_targets(self, T):
        if self._label_kind == "multiclass":
            return self.classes_[T]
        if self._label_kind == "multilabel":
            return T.astype(np.int64)
        if len(self.classes_) == 1:
            return np.full(len(T), self.classes_[0])
        return self.classes_[T[:, 0].astype(np.int64)]

    def _strata(self, T):
        """The classes to stratify the validation split by: scikit-learn
        stratifies single-output targets only, so a binary problem's."""
        return T[:, 0].astype(np.int64) if self._label_kind == "binary" else None

    def _labels(self, outputs):
        if self._label_kind == "multiclass":
            return self.classes_[np.argmax(outputs, axis=1)]
        if self._label_kind == "multilabel":
            return (outputs > 0.5).astype(np.int64)
        if len(self.classes_) == 1:
            return np.full(outputs.shape[0], self.classes_[0])
        return self.classes_[(outputs[:, 0] > 0.5).astype(np.int64)]

    def _score_outputs(self, outputs, y):
        y = _column(_host_labels(y), warn=False)
        predicted = self._labels(outputs)
        if predicted.ndim == 2:
            return float(np.mean(np.all(predicted == y, axis=1)))
        return float(np.mean(predicted == y))

    def fit(self, X, y, *, validation_data=None):
        """Fit to X (n_samples, n_features) and labels y; returns self.

        ``validation_data=(X_val, y_val)``: evaluated after each epoch into
        ``validation_scores_`` and ``validation_loss_curve_`` (stochastic
        solvers); with ``early_stopping`` it replaces the held-out split."""
        return self._fit(X, y, incremental=False, validation_data=validation_data)

    @property
    def partial_fit(self):
        """One epoch over X, y (``classes`` required at the first call);
        stochastic solvers only (an AttributeError for lbfgs, as scikit-learn)."""
        if self.solver not in ("sgd", "adam"):
            raise AttributeError(
                f"partial_fit is only available for stochastic optimizers. {self.solver} is "
                "not stochastic."
            )
        return self._partial_fit

    def _partial_fit(self, X, y, classes=None):
        first = not hasattr(self, "classes_")
        fresh = ("classes_", "_label_kind", "model_", "n_features_in_") if first else ()
        with _restored_on_error(self, fresh):  # a failed first call leaves it unfitted
            y_host = _host_labels(y)
            if first:
                if classes is None:
                    raise ValueError("classes must be passed on the first call to partial_fit.")
                y_col = _column(y_host, warn=False)
                if y_col.ndim == 2:
                    kind, classes_ = "multilabel", np.arange(y_col.shape[1])
                else:
                    classes_ = np.unique(_host_labels(classes))
                    kind = "multiclass" if len(classes_) > 2 else "binary"
                self.classes_, self._label_kind = classes_, kind
                self.__dict__.pop("model_", None)
            elif classes is not None:
                given = np.unique(_host_labels(classes))
                if not np.array_equal(given, self.classes_):
                    raise ValueError(
                        f"`classes={given!r}` is not the same as on last call to partial_fit, "
                        f"was: {self.classes_!r}"
                    )
            return self._fit(X, y_host, incremental=True)

    def predict(self, X):
        """Class labels (n_samples,), or an indicator matrix (n_samples, n_labels)
        for a multi-label model."""
        return self._labels(self._outputs(X))

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes) in ``classes_`` order
        (for a multi-label model each label's probability)."""
        p = self._outputs(X)
        if self._label_kind == "binary":
            return np.hstack([1 - p, p])
        return p

    def predict_log_proba(self, X):
        """log(predict_proba(X))."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def score(self, X, y, sample_weight=None):
        """Mean accuracy of predict(X) against y (subset accuracy for multi-label),
        weighted by ``sample_weight`` when given."""
        predicted = self.predict(X)
        y = _column(_host_labels(y), warn=False)
        right = np.all(predicted == y, axis=1) if predicted.ndim == 2 else predicted == y
        return float(np.average(right, weights=sample_weight))


# --- the regressor --------------------------------------------------------------------


class MLPRegressor(_BaseMLP):
    """A multi-layer perceptron regressor: scikit-learn's ``MLPRegressor``
    (see the module docstring) on gpunet's kernels; the loss is half the
    squared error (``loss="squared_error"``, the only one).

    Targets y (n_samples,) or (n_samples, n_outputs). Fitted attributes as
    :class:`MLPClassifier`'s, without ``classes_``; ``validation_loss_curve_``
    holds the validation loss and ``validation_scores_`` the R^2.
    """

    _estimator_type = "regressor"

    def __init__(
        self,
        loss="squared_error",
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        device="auto",
        dtype="float32",
        dropout=0.0,
        batch_norm=False,
    ):
        super().__init__(
            hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
            learning_rate=learning_rate, learning_rate_init=learning_rate_init, power_t=power_t,
            max_iter=max_iter, shuffle=shuffle, random_state=random_state, tol=tol,
            verbose=verbose, warm_start=warm_start, momentum=momentum,
            nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun, device=device,
            dtype=dtype, dropout=dropout, batch_norm=batch_norm,
        )  # fmt: skip
        self.loss = loss

    def _tags(self):
        return {"multi_output": True}

    def _check_params(self):
        if self.loss != "squared_error":
            raise ValueError(
                f"MLPRegressor: expected loss='squared_error' (gpunet has no Poisson loss), "
                f"got {self.loss!r}"
            )
        super()._check_params()

    def _out_activation(self):
        return "identity"

    def _new_loss(self):
        return _losses.MSE()

    def _scales(self):
        """(factor on gn's loss value, factor on its gradient) giving scikit-learn's:
        its loss averages over the outputs as gn's does, but its gradient is
        that of the sum over the outputs."""
        return 1.0, float(self.n_outputs_)

    def _encode(self, y, X, first, incremental):
        T = self._encode_known(y, warn=True)
        check_y_length(X, T)
        return T, T.shape[1]

    def _encode_known(self, y, warn=False):
        y = _to_host(y) if _cuda.is_device_array(y) else np.asarray(y)
        if y.dtype == object:
            y = y.astype(np.float64)
        if y.dtype.kind not in "biuf":
            raise ValueError(f"expected numeric targets y, got dtype {y.dtype}")
        y = _column(y, warn)
        if y.ndim not in (1, 2):
            raise ValueError(
                f"expected y of shape (n_samples,) or (n_samples, n_outputs), got {y.shape}"
            )
        T = np.ascontiguousarray(y.reshape(y.shape[0], -1), np.dtype(self.dtype))
        if not np.isfinite(T).all():
            raise ValueError("Input y contains NaN or infinity (expected finite targets)")
        return T

    def _decode_targets(self, T):
        return T

    def _strata(self, T):
        return None

    def _score_outputs(self, outputs, y):
        return _r2(self._encode_known(y).astype(np.float64), outputs.astype(np.float64))

    def fit(self, X, y, *, validation_data=None):
        """Fit to X (n_samples, n_features) and targets y; returns self.
        ``validation_data`` as for :meth:`MLPClassifier.fit`."""
        return self._fit(X, y, incremental=False, validation_data=validation_data)

    @property
    def partial_fit(self):
        """One epoch over X, y; stochastic solvers only (an AttributeError for lbfgs)."""
        if self.solver not in ("sgd", "adam"):
            raise AttributeError(
                f"partial_fit is only available for stochastic optimizers. {self.solver} is "
                "not stochastic."
            )
        return self._partial_fit

    def _partial_fit(self, X, y):
        return self._fit(X, y, incremental=True)

    def predict(self, X):
        """Predictions (n_samples,), or (n_samples, n_outputs) for several outputs."""
        out = self._outputs(X)
        return out.ravel() if out.shape[1] == 1 else out

    def score(self, X, y, sample_weight=None):
        """R^2 of predict(X) against y (averaged uniformly over outputs)."""
        predicted = self.predict(X).astype(np.float64)
        y = self._encode_known(y).astype(np.float64)
        return _r2(y, predicted.reshape(y.shape), sample_weight)


def _r2(y, predicted, sample_weight=None):
    """The coefficient of determination, averaged over columns; a constant
    column scores 1 when predicted exactly, else 0 (scikit-learn's rule)."""
    y = y.reshape(y.shape[0], -1)
    predicted = predicted.reshape(y.shape)
    w = np.ones(y.shape[0]) if sample_weight is None else np.asarray(sample_weight, np.float64)
    w = w[:, None]
    residual = (w * (y - predicted) ** 2).sum(axis=0)
    mean = (w * y).sum(axis=0) / w.sum()
    total = (w * (y - mean) ** 2).sum(axis=0)
    scores = np.where(total > 0, 1 - residual / np.where(total > 0, total, 1), 0.0)
    scores = np.where((total == 0) & (residual == 0), 1.0, scores)
    return float(scores.mean())
