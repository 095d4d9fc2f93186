"""``gpunet predict MODEL DATA``: a saved model's predictions for the rows of a
data file: the class of each row (the largest output), or with ``--proba``
the softmax probabilities, or with ``--raw`` the outputs themselves; printed
one row a line, or written to ``--output`` (.npy; .csv comma-separated; other
names as text).

DATA is a 2-D float array: ``.npy``, or text (``.csv`` comma-separated, other
names whitespace-separated), one sample a row, features scaled as in training
(``gpunet train`` scales the digits' pixels to [0, 1], dividing by 16)."""

from __future__ import annotations

import os
import sys

import numpy as np

from . import _checks
from ._checks import UsageError


def add_parser(subparsers) -> None:
    predict = subparsers.add_parser(
        "predict",
        help="a saved model's predictions for the rows of a data file",
        description="Load a model saved by gpunet train (or model.save) and print the "
        "predicted class of each row of DATA (.npy, .csv or whitespace-separated text).",
    )
    predict.add_argument("model", metavar="MODEL", help="a model file (.npz)")
    predict.add_argument("data", metavar="DATA", help="samples, one a row (.npy, .csv, .txt)")
    shown = predict.add_mutually_exclusive_group()
    shown.add_argument("--proba", action="store_true", help="softmax probabilities per class")
    shown.add_argument("--raw", action="store_true", help="the model's outputs as they are")
    predict.add_argument("--output", "-o", metavar="PATH", help="write to PATH instead")
    predict.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto")
    predict.add_argument(
        "--batch-size", type=_checks.at_least(1), default=1024, help="rows per batch"
    )
    predict.set_defaults(run=run)


def _read_data(path):
    """DATA as a 2-D float array; UsageError naming what is wrong."""
    try:
        if path.endswith(".npy"):
            X = np.load(path, allow_pickle=False)
        else:
            X = np.loadtxt(path, delimiter="," if path.endswith(".csv") else None, ndmin=2)
    except ValueError as exc:
        raise UsageError(f"{path}: cannot read it as a numeric array: {exc}") from None
    if X.ndim != 2 or X.shape[0] == 0:
        raise UsageError(f"{path}: expected rows of samples (n, features), got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
        raise UsageError(f"{path}: expected real numbers, got dtype {X.dtype}")
    return X


def run(args) -> int:
    import gpunet as gn

    device = _checks.device(args.device)
    _checks.readable(args.model, "MODEL")
    _checks.readable(args.data, "DATA")
    if args.output:
        _checks.writable(args.output, "--output")
    try:
        model = gn.load(args.model, device)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    X = _read_data(args.data)
    n_features = model[0].weight.shape[0] if hasattr(model[0], "weight") else None
    if n_features is not None and X.shape[1] != n_features:
        raise UsageError(
            f"{args.data}: expected {n_features} features a row (the model's input), "
            f"got {X.shape[1]}"
        )
    outputs = model.predict(X.astype(model.dtype, copy=False), batch_size=args.batch_size)
    if args.raw:
        result = outputs
    elif args.proba:
        result = gn.ops.softmax(outputs)
    else:
        result = outputs.argmax(axis=1)
    if args.output and args.output.endswith(".npy"):
        np.save(args.output, result)
    else:
        fmt = "%d" if result.dtype.kind == "i" else "%.6g"
        comma = args.output is not None and args.output.endswith(".csv")
        np.savetxt(args.output or sys.stdout, result, fmt=fmt, delimiter="," if comma else " ")
    if args.output:
        print(f"wrote {len(result)} predictions to {os.fspath(args.output)}")
    return 0
