"""Deep belief networks: ``gn.DBN`` (a stack of RBMs trained greedily, layer
by layer, as a scikit-learn transformer) and ``gn.DBNClassifier`` (a DBN's
weights as the hidden layers of an MLP with a softmax or logistic output,
fine-tuned by :class:`gpunet.MLPClassifier`'s solvers).

Each layer is a :class:`gpunet.RBM` trained on the hidden probabilities of
the layer below (the first on the data: Bernoulli visible units for data in
[0, 1], Gaussian ones for standardised real data); the RBMs train on the CPU
or a CUDA GPU with contrastive divergence (CD-k or PCD-k).
"""

from __future__ import annotations

import numbers

import numpy as np

from . import nn
from ._device import _resolve, to_device
from ._sklearn import Estimator, check_X, random_state
from .estimators import MLPClassifier
from .rbm import RBM

__all__ = ["DBN", "DBNClassifier"]


def _check_sizes(owner, sizes):
    sizes = list(sizes) if hasattr(sizes, "__iter__") else [sizes]
    ok = all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in sizes)
    if not sizes or not ok:
        raise ValueError(
            f"{owner}: expected hidden_layer_sizes to be positive integers, got {sizes!r}"
        )
    return [int(s) for s in sizes]


class DBN(Estimator):
    """A deep belief network: RBMs of ``hidden_layer_sizes`` units stacked
    and trained greedily from the bottom up.

    Parameters: ``hidden_layer_sizes``; ``visible``: the first layer's
    visible units, "bernoulli" (X in [0, 1]) or "gaussian" (standardised
    real X); the others are Bernoulli. ``learning_rate``, ``batch_size``,
    ``n_iter`` (epochs per layer), ``k``, ``persistent``, ``momentum``,
    ``weight_decay``, ``verbose``, ``device`` and ``dtype`` are each RBM's
    (see :class:`gpunet.RBM`); ``random_state`` draws every layer's
    initial weights and sampling seed in turn.

    Fitted attributes: ``rbms_`` (the fitted RBMs, bottom first),
    ``n_features_in_``, ``feature_names_in_`` (for a data frame with string
    column names), ``device_``.
    """

    def __init__(
        self,
        hidden_layer_sizes=(256,),
        *,
        visible="bernoulli",
        learning_rate=0.1,
        batch_size=10,
        n_iter=10,
        k=1,
        persistent=True,
        momentum=0.0,
        weight_decay=0.0,
        verbose=0,
        random_state=None,
        device="auto",
        dtype="float32",
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.visible = visible
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.n_iter = n_iter
        self.k = k
        self.persistent = persistent
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.verbose = verbose
        self.random_state = random_state
        self.device = device
        self.dtype = dtype

    def _tags(self):
        return {"preserves_dtype": [np.dtype(self.dtype).name]}

    def _rbms(self, rs):
        """Unfitted RBMs for the layers, checked (ValueError) before any training."""
        sizes = _check_sizes("DBN", self.hidden_layer_sizes)
        rbms = [
            RBM(
                size,
                learning_rate=self.learning_rate,
                batch_size=self.batch_size,
                n_iter=self.n_iter,
                verbose=self.verbose,
                random_state=rs,
                k=self.k,
                persistent=self.persistent,
                momentum=self.momentum,
                weight_decay=self.weight_decay,
                visible=self.visible if i == 0 else "bernoulli",
                device=self.device,
                dtype=self.dtype,
            )  # fmt: skip
            for i, size in enumerate(sizes)
        ]
        for rbm in rbms:
            rbm._check_arguments()
        return rbms

    def fit(self, X, y=None):
        """Train the RBMs on X (n_samples, n_features), each on the hidden
        probabilities of the one below. Returns self."""
        rs = random_state(self.random_state)
        rbms = self._rbms(rs)
        dtype = np.dtype(self.dtype)
        X = check_X(self, X, reset=True, dtype=dtype)
        if self.visible == "bernoulli":
            rbms[0]._check_X(X, reset=True)  # the [0, 1] range, before any training
        device = _resolve(self.device)
        data = to_device(X, device)
        for i, rbm in enumerate(rbms):
            if self.verbose:
                print(f"[DBN] layer {i + 1} of {len(rbms)}: {rbm.n_components} hidden units")
            rbm.fit(data)
            if i < len(rbms) - 1:
                data = rbm.transform(data)
        self.rbms_, self.device_ = rbms, device
        self.n_features_in_ = X.shape[1]
        return self

    def __sklearn_is_fitted__(self):
        return hasattr(self, "rbms_")

    def transform(self, X):
        """The top layer's hidden probabilities: (n_samples, n_features) ->
        (n_samples, hidden_layer_sizes[-1]), a numpy array of ``dtype``."""
        self._check_fitted()
        data = check_X(self, X, reset=False, dtype=np.dtype(self.rbms_[0]._dtype))
        for rbm in self.rbms_:
            data = rbm.transform(data)
        return data

    def fit_transform(self, X, y=None):
        """fit(X), then transform(X)."""
        return self.fit(X).transform(X)

    def to_sequential(self):
        """A gn.nn.Sequential of sigmoid Dense layers, one per RBM, with
        weight = components_.T and bias = intercept_hidden_, on the DBN's
        device and in its dtype: ``model(X)`` equals ``transform(X)``."""
        self._check_fitted()
        layers = []
        for rbm in self.rbms_:
            dense = nn.Dense(
                rbm.n_features_in_, rbm.n_components, "sigmoid", rbm._dtype, seed=0,
                device=self.device_,
            )  # fmt: skip
            dense.weight.data = to_device(np.ascontiguousarray(rbm.components_.T), self.device_)
            dense.bias.data = to_device(rbm.intercept_hidden_, self.device_)
            layers.append(dense)
        return nn.Sequential(*layers)


class DBNClassifier(MLPClassifier):
    """A classifier pretrained as a deep belief network and fine-tuned as an MLP.

    ``fit`` first draws the MLP's initial weights (as :class:`MLPClassifier`
    does), then trains a :class:`DBN` of ``hidden_layer_sizes`` on X
    (``visible``, ``k``, ``persistent`` and the ``pretrain_*`` arguments are
    its learning_rate, batch_size, n_iter, momentum and weight_decay) and
    puts its weights into the hidden layers (logistic units); the output
    layer keeps its Glorot initialisation. The network is then trained with
    the supervised arguments, which are :class:`MLPClassifier`'s (its
    ``activation`` is always "logistic"). A warm start or ``partial_fit``
    continues without pretraining again.

    Fitted attributes: :class:`MLPClassifier`'s, and ``dbn_`` (the pretrained DBN).
    """

    activation = "logistic"

    def __init__(
        self,
        hidden_layer_sizes=(256,),
        *,
        visible="bernoulli",
        pretrain_learning_rate=0.1,
        pretrain_batch_size=10,
        pretrain_n_iter=10,
        k=1,
        persistent=True,
        pretrain_momentum=0.0,
        pretrain_weight_decay=0.0,
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
        self.visible = visible
        self.pretrain_learning_rate = pretrain_learning_rate
        self.pretrain_batch_size = pretrain_batch_size
        self.pretrain_n_iter = pretrain_n_iter
        self.k = k
        self.persistent = persistent
        self.pretrain_momentum = pretrain_momentum
        self.pretrain_weight_decay = pretrain_weight_decay
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

    def _dbn(self, rs):
        return DBN(
            self.hidden_layer_sizes, visible=self.visible,
            learning_rate=self.pretrain_learning_rate, batch_size=self.pretrain_batch_size,
            n_iter=self.pretrain_n_iter, k=self.k, persistent=self.persistent,
            momentum=self.pretrain_momentum, weight_decay=self.pretrain_weight_decay,
            verbose=self.verbose, random_state=rs, device=self.device, dtype=self.dtype,
        )  # fmt: skip

    def _check_params(self):
        super()._check_params()
        self._dbn(None)._rbms(None)

    def _initialize(self, X, T, n_outputs):
        dbn = self._dbn(self._random_state)
        if self.visible == "bernoulli":
            dbn._rbms(None)[0]._check_X(X, reset=True)  # the [0, 1] range, before any work
        super()._initialize(X, T, n_outputs)
        self.dbn_ = dbn.fit(X)
        for dense, pretrained in zip(self._dense, self.dbn_.to_sequential().layers, strict=False):
            dense.weight.data = pretrained.weight.data
            dense.bias.data = pretrained.bias.data
        self._best = self.model_.state_dict()
