"""``gpunet rbm``: train a restricted Boltzmann machine on the bundled digits,
printing the pseudo-likelihood per epoch; ``--plot`` saves the learned filters,
``--output`` the trained RBM (a pickle of ``gn.RBM``), and with scikit-learn
installed a logistic regression on the RBM's features reports their test
accuracy.

Ctrl-C stops the run after the epoch in progress, saves a checkpoint of it
beside the output (``<output>-interrupted.pkl``) that ``--resume`` continues
from, to the same result as an uninterrupted run, and exits with status 130; a
second Ctrl-C stops at once, saving nothing."""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import signal
import sys
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
    rbm.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="save the trained RBM there (a pickle); Ctrl-C saves PATH-interrupted.pkl "
        f"(default {DEFAULT_OUTPUT}-interrupted.pkl)",
    )
    rbm.add_argument(
        "--resume",
        metavar="PATH",
        help="continue the run a Ctrl-C saved: its RBM options, data split and epochs done come "
        "from the file, --epochs is the total",
    )
    rbm.set_defaults(run=_run_rbm)


#: The name ``--output`` defaults to, for the checkpoint Ctrl-C saves.
DEFAULT_OUTPUT = "gpunet-rbm"

#: What a checkpoint file holds under this key: the format's version.
CHECKPOINT_FORMAT = "gpunet rbm checkpoint"


def _checkpoint_path(args) -> str:
    return (args.output or DEFAULT_OUTPUT).removesuffix(".pkl") + "-interrupted.pkl"


def _read_checkpoint(path) -> dict:
    """The checkpoint at ``path`` (a pickle this command wrote: load only your own)."""
    _checks.readable(path, "--resume")
    try:
        with open(path, "rb") as f:
            saved = pickle.load(f)
    except Exception as exc:
        message = f"--resume {path}: not a checkpoint of gpunet rbm ({exc})"
        raise _checks.UsageError(message) from None
    if not isinstance(saved, dict) or saved.get(CHECKPOINT_FORMAT) != 1:
        raise _checks.UsageError(f"--resume {path}: not a checkpoint of gpunet rbm")
    return saved


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
    if args.output:
        _checks.writable(args.output, "--output")
    _checks.writable(_checkpoint_path(args), "--output")
    saved = _read_checkpoint(args.resume) if args.resume else None
    if saved is not None and saved["epochs"] >= args.epochs:
        raise _checks.UsageError(
            f"--resume {args.resume}: {saved['epochs']} epochs are done; ask for more with --epochs"
        )
    seed = saved["seed"] if saved else args.seed
    X, y = gn.datasets.load_digits()
    X_train, X_test, y_train, y_test = _split(X / 16.0, y, seed)
    if saved:
        rbm = pickle.loads(saved["rbm"])
        rbm.n_iter = args.epochs
    else:
        rbm = gn.RBM(
            args.components,
            learning_rate=args.learning_rate,
            batch_size=args.batch_size,
            n_iter=args.epochs,
            random_state=seed,
            k=args.k,
            persistent=args.persistent,
            momentum=args.momentum,
            weight_decay=args.weight_decay,
            device=args.device,
        )
    done = saved["epochs"] if saved else 0
    epochs = rbm.fit_epochs(X_train, start=done + 1)
    print(
        f"gpunet rbm: {rbm.n_components} hidden units on {rbm.device_}, "
        f"{len(X_train)} training digits"
    )
    start = time.perf_counter()
    bar = tqdm(epochs, total=args.epochs, initial=done, unit="epoch", leave=False)
    with _stop_after_epoch() as stop, bar:
        for epoch in bar:
            score = float(np.mean(rbm.score_samples(X_train)))
            bar.set_postfix(pseudo_likelihood=f"{score:.2f}")
            tqdm.write(f"  epoch {epoch:>3}  pseudo-likelihood {score:9.3f}")
            if stop:
                return _stop(args, rbm, epoch, seed)
    seconds = format_seconds(time.perf_counter() - start)
    print(f"  trained in {seconds} (the first run of a session includes JIT compilation)")
    if args.plot:
        gn.plot.rbm_filters(rbm, args.plot)
        print(f"  filters saved to {args.plot}")
    if args.output:
        with open(args.output, "wb") as f:
            pickle.dump(rbm, f)
        print(f"  RBM saved to {args.output}")
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        print("  (install scikit-learn to check the features with a logistic regression)")
        return 0
    classifier = LogisticRegression(max_iter=2000).fit(rbm.transform(X_train), y_train)
    accuracy = classifier.score(rbm.transform(X_test), y_test)
    print(f"  logistic regression on the RBM's features: test accuracy {accuracy:.3f}")
    return 0


@contextlib.contextmanager
def _stop_after_epoch():
    """While open, a first Ctrl-C asks the run to stop after the epoch in
    progress (the list yielded becomes non-empty), so that the checkpoint
    holds a whole epoch and nothing is copied for it before; a second Ctrl-C
    stops at once, saving nothing (KeyboardInterrupt)."""
    requested = []

    def ask(signum, frame):
        requested.append(signum)
        signal.signal(signal.SIGINT, previous)
        print(
            "\ngpunet rbm: stopping after this epoch (Ctrl-C again to stop now, saving nothing)",
            file=sys.stderr,
            flush=True,
        )

    previous = signal.signal(signal.SIGINT, ask)
    try:
        yield requested
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop(args, rbm, epoch, seed) -> int:
    """After Ctrl-C: save the checkpoint of ``rbm`` after ``epoch`` (written
    to a temporary name, then renamed; in a data-parallel run by rank 0
    alone, whose RBM the ranks keep equal), say how to resume; exit status 130."""
    from gpunet import distributed

    if distributed.rank() != 0:
        return 130
    path = _checkpoint_path(args)
    with open(path + ".tmp", "wb") as f:
        rbm_bytes = pickle.dumps(rbm)
        pickle.dump({CHECKPOINT_FORMAT: 1, "epochs": epoch, "seed": seed, "rbm": rbm_bytes}, f)
    os.replace(path + ".tmp", path)
    print(f"\ngpunet rbm: stopped after epoch {epoch} of {args.epochs}", flush=True)
    print(f"saved a checkpoint to {path}; continue with --epochs {args.epochs} --resume {path}")
    return 130
