"""``gpunet rbm``: train a restricted Boltzmann machine on the bundled digits,
printing the pseudo-likelihood per epoch; ``--plot`` saves the learned filters,
and with scikit-learn installed a logistic regression on the RBM's features
reports their test accuracy."""

from __future__ import annotations

import argparse
import time

import numpy as np
from tqdm import tqdm

from . import _checks
from ._output import format_seconds
from ._parallel import data_parallel

#: Share of the digits held out for the accuracy check.
TEST_FRACTION = 0.2


def add_parser(subparsers) -> None:
    rbm = subparsers.add_parser(
        "rbm",
        help="train an RBM on the bundled digits",
        description="Train a restricted Boltzmann machine (gn.RBM) on the bundled 8x8 digits, "
        "scaled to [0, 1], and print the pseudo-likelihood after each epoch.",
    )
    rbm.add_argument(
        "--components", type=_checks.at_least(1), default=100, help="hidden units (default 100)"
    )
    rbm.add_argument("--learning-rate", type=_checks.positive, default=0.06, help="default 0.06")
    rbm.add_argument(
        "--epochs", type=_checks.at_least(1), default=10, help="passes over the data (default 10)"
    )
    rbm.add_argument("--batch-size", type=_checks.at_least(1), default=10, help="default 10")
    rbm.add_argument(
        "-k", type=_checks.at_least(1), default=1, help="Gibbs steps per update (default 1)"
    )
    rbm.add_argument(
        "--persistent",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="persistent chain (PCD, the default) or --no-persistent (CD-k)",
    )
    rbm.add_argument("--momentum", type=_checks.fraction, default=0.0, help="default 0")
    rbm.add_argument("--weight-decay", type=_checks.non_negative, default=0.0, help="default 0")
    rbm.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    rbm.add_argument("--seed", type=_checks.at_least(0), default=0, help="random seed (default 0)")
    rbm.add_argument("--plot", metavar="PATH", help="save the learned filters as an image")
    rbm.set_defaults(run=_run_rbm)


def _split(X, y, seed):
    order = np.random.default_rng(seed).permutation(len(X))
    n_test = int(len(X) * TEST_FRACTION)
    test, train = order[:n_test], order[n_test:]
    return X[train], X[test], y[train], y[test]


@data_parallel
def _run_rbm(args) -> int:
    import gpunet as gn

    _checks.device(args.device)
    if args.plot:
        _checks.writable(args.plot, "--plot")
        _checks.plotting("--plot")
    X, y = gn.datasets.load_digits()
    X_train, X_test, y_train, y_test = _split(X / 16.0, y, args.seed)
    rbm = gn.RBM(
        args.components,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        n_iter=args.epochs,
        random_state=args.seed,
        k=args.k,
        persistent=args.persistent,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        device=args.device,
    )
    epochs = rbm.fit_epochs(X_train)
    print(
        f"gpunet rbm: {args.components} hidden units on {rbm.device_}, "
        f"{len(X_train)} training digits"
    )
    start = time.perf_counter()
    with tqdm(epochs, total=args.epochs, unit="epoch", leave=False) as bar:
        for epoch in bar:
            score = float(np.mean(rbm.score_samples(X_train)))
            bar.set_postfix(pseudo_likelihood=f"{score:.2f}")
            tqdm.write(f"  epoch {epoch:>3}  pseudo-likelihood {score:9.3f}")
    seconds = format_seconds(time.perf_counter() - start)
    print(f"  trained in {seconds} (the first run of a session includes JIT compilation)")
    if args.plot:
        gn.plot.rbm_filters(rbm, args.plot)
        print(f"  filters saved to {args.plot}")
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        print("  (install scikit-learn to check the features with a logistic regression)")
        return 0
    classifier = LogisticRegression(max_iter=2000).fit(rbm.transform(X_train), y_train)
    accuracy = classifier.score(rbm.transform(X_test), y_test)
    print(f"  logistic regression on the RBM's features: test accuracy {accuracy:.3f}")
    return 0
