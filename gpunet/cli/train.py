"""``gpunet train``: train a multilayer perceptron (or, with ``--model lstm``,
an LSTM that reads each image row by row), print its test accuracy and save
it. The default trains on the bundled 8x8 digits (no download), holding out
a seeded, stratified fifth of them for the test.

Every argument, path and optional library is checked before any work. Ctrl-C
stops the run, saves a checkpoint beside the output (``<output>-interrupted.npz``)
that ``--resume`` continues from, and exits with status 130."""

from __future__ import annotations

import os
import time
import urllib.error

import numpy as np

from . import _checks
from ._checks import UsageError
from ._parallel import data_parallel

#: Defaults of the digits run per --model: a short run that still reaches a
#: high test accuracy (the LSTM's: 96.4% on the digits in 30 epochs).
DEFAULTS = {
    "mlp": dict(hidden=[512], epochs=40, batch_size=32, optimizer="adam", lr=1e-3),
    "lstm": dict(hidden=[64], epochs=30, batch_size=32, optimizer="adam", lr=3e-3),
}


def add_parser(subparsers) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a multilayer perceptron or an LSTM (digits by default)",
        description="Train a multilayer perceptron (or an LSTM reading each image row "
        "by row) by backpropagation, print the test accuracy and save the model. "
        "Defaults: the bundled 8x8 digits, hidden layers "
        f"{' '.join(map(str, DEFAULTS['mlp']['hidden']))}, Adam.",
    )
    train.add_argument(
        "--model",
        choices=tuple(DEFAULTS),
        default="mlp",
        help="mlp: a multilayer perceptron on the flat pixels; lstm: an LSTM over the "
        "image's rows as a sequence (8 steps of 8 pixels for the digits), its last "
        "state into a linear classifier (default: mlp)",
    )
    train.add_argument(
        "--dataset",
        choices=("digits", "mnist"),
        default="digits",
        help="digits: the bundled 8x8 digits (1797 images); mnist: the IDX files in "
        "--data-dir, downloaded there first with --download (default: digits)",
    )
    train.add_argument("--data-dir", default="mnist", help="MNIST directory (default: ./mnist)")
    train.add_argument("--download", action="store_true", help="fetch MNIST into --data-dir")
    train.add_argument(
        "--hidden",
        type=_checks.at_least(1),
        nargs="*",
        default=None,
        metavar="N",
        help="hidden layer widths (default: 512; none gives a linear classifier); with "
        "--model lstm, the stacked LSTM layers' hidden sizes (default: 64)",
    )
    train.add_argument(
        "--dbn",
        type=_checks.at_least(1),
        nargs="+",
        default=None,
        metavar="N",
        help="hidden layer widths pretrained first as a deep belief network (gn.DBN: one "
        "RBM a layer, trained greedily on the training rows, unsupervised), then fine-tuned "
        "with the output layer; sigmoid units, in place of --hidden and --activation",
    )
    train.add_argument(
        "--pretrain-epochs",
        type=_checks.at_least(1),
        default=10,
        help="epochs of each RBM of --dbn's pretraining (default 10)",
    )
    train.add_argument(
        "--activation",
        choices=("relu", "leaky_relu", "sigmoid", "tanh"),
        default=None,
        help="hidden activation of the mlp (default: relu)",
    )
    train.add_argument(
        "--dropout",
        type=_checks.fraction,
        default=0.0,
        metavar="P",
        help="dropout probability after each hidden activation (with --model lstm: "
        "between stacked LSTM layers) (default: 0, none)",
    )
    train.add_argument(
        "--batch-norm",
        action="store_true",
        help="batch normalization between each hidden layer's product and its activation",
    )
    train.add_argument(
        "--epochs", type=_checks.at_least(1), default=None, help="(default: 40; lstm: 30)"
    )
    train.add_argument("--batch-size", type=_checks.at_least(1), default=32)
    train.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default="adam")
    train.add_argument(
        "--lr",
        type=_checks.positive,
        default=None,
        help="learning rate (> 0; default: 0.001, lstm: 0.003)",
    )
    train.add_argument(
        "--momentum", type=_checks.fraction, default=0.9, help="SGD momentum (default 0.9)"
    )
    train.add_argument("--weight-decay", type=_checks.non_negative, default=0.0)
    train.add_argument(
        "--schedule",
        choices=("none", "cosine", "step"),
        default="cosine",
        help="learning-rate schedule over the epochs (default: cosine)",
    )
    train.add_argument(
        "--validation-split",
        type=_checks.real(0.0, 1.0, high_open=True),
        default=0.0,
        help="fraction of the training rows held out to report val_ metrics each epoch",
    )
    train.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto")
    train.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    train.add_argument(
        "--seed", type=_checks.at_least(0), default=0, help="seed for weights, split and order"
    )
    train.add_argument(
        "--output",
        "-o",
        default=None,
        help="where to save the model (default: gpunet-<dataset>.npz, with --model lstm "
        "gpunet-<dataset>-lstm.npz; '' to skip saving)",
    )
    train.add_argument(
        "--plot",
        metavar="PATH",
        help="save the learning curves to PATH (PNG); their validation curve is the "
        "--validation-split's, else the test set's, evaluated every epoch",
    )
    train.add_argument(
        "--resume",
        metavar="PATH",
        help="continue from a checkpoint (one that Ctrl-C saved), with the same arguments",
    )
    train.add_argument(
        "--verbose", type=int, choices=(0, 1, 2), default=1, help="0 silent, 1 bars, 2 lines"
    )
    train.set_defaults(run=run)


def _stratified_split(y, test_fraction, seed):
    """Indices (train, test): ``test_fraction`` of every class in the test part."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        cut = int(round(len(rows) * test_fraction))
        test.append(rows[:cut])
        train.append(rows[cut:])
    return rng.permutation(np.concatenate(train)), np.sort(np.concatenate(test))


def load_data(args):
    """((X_train, y_train), (X_test, y_test)), features scaled to [0, 1]."""
    import gpunet as gn

    if args.dataset == "digits":
        X, y = gn.datasets.load_digits()
        X = X / np.float32(16)
        train, test = _stratified_split(y, 0.2, args.seed)
        return (X[train], y[train]), (X[test], y[test])
    if args.download:
        try:
            return gn.datasets.fetch_mnist(args.data_dir)
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise UsageError(
                f"cannot download MNIST from {gn.datasets.MNIST_URL} "
                f"({getattr(exc, 'reason', exc)}); fetch its four .gz files by hand into "
                f"a folder and pass it with --data-dir (without --download)"
            ) from None
    return gn.datasets.load_mnist(args.data_dir)


#: Hidden activation layer classes (in gn.nn) by --activation, used after batch normalization.
ACTIVATION_LAYERS = {
    "relu": "ReLU",
    "leaky_relu": "LeakyReLU",
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
}


def apply_defaults(args) -> None:
    """Fill the options left unset with --model's defaults (idempotent: the
    functions that read them call it); UsageError for the mlp's options given
    to the lstm."""
    if args.dbn is not None:  # idempotent: sets hidden and activation as they must be
        if args.model == "lstm":
            raise UsageError("--dbn: an option of --model mlp, not of --model lstm")
        if args.hidden is not None and args.hidden != args.dbn:
            raise UsageError("--dbn gives the hidden widths: leave out --hidden")
        if args.activation not in (None, "sigmoid"):
            raise UsageError("--dbn layers are sigmoid units: leave out --activation")
        if args.batch_norm:
            raise UsageError("--batch-norm: --dbn pretrains plain sigmoid layers")
        args.hidden, args.activation = list(args.dbn), "sigmoid"
    if args.model == "lstm":
        if args.activation is not None or args.batch_norm:
            flag = "--batch-norm" if args.batch_norm else "--activation"
            raise UsageError(f"{flag}: an option of --model mlp, not of --model lstm")
        if args.hidden == []:
            raise UsageError("--hidden: --model lstm needs at least one hidden size")
    defaults = DEFAULTS[args.model]
    for name in ("hidden", "epochs", "lr"):
        if getattr(args, name) is None:
            setattr(args, name, defaults[name])
    if args.model == "mlp" and args.activation is None:
        args.activation = "relu"


def sequences(X, model):
    """X (samples, features) as --model reads it: unchanged for the mlp; for
    the lstm (samples, rows, row pixels), each square image a sequence of
    its rows."""
    if model != "lstm":
        return X
    side = int(round(np.sqrt(X.shape[1])))
    return X.reshape(len(X), side, X.shape[1] // side)


def build_model(args, n_features, n_classes):
    """The --model for ``n_features`` inputs (the lstm's: per step)."""
    import gpunet as gn

    apply_defaults(args)
    if args.model == "lstm":
        layers, inputs = [], n_features
        for i, width in enumerate(args.hidden):
            if i and args.dropout:
                layers.append(gn.nn.Dropout(args.dropout, seed=args.seed + 2000 + i))
            lstm = gn.nn.LSTM(inputs, width, batch_first=True, dtype=args.dtype, seed=args.seed + i)
            layers.append(lstm)
            inputs = width
        head = gn.nn.Dense(args.hidden[-1], n_classes, None, args.dtype, seed=args.seed + 1000)
        return gn.nn.Sequential(*layers, gn.nn.LastStep(), head)
    widths = [n_features, *args.hidden]
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        if args.batch_norm:  # Dense -> BatchNorm1d -> activation
            layers.append(gn.nn.Dense(a, b, None, args.dtype, seed=args.seed + i))
            layers.append(gn.nn.BatchNorm1d(b, dtype=args.dtype))
            layers.append(getattr(gn.nn, ACTIVATION_LAYERS[args.activation])())
        else:
            layers.append(gn.nn.Dense(a, b, args.activation, args.dtype, seed=args.seed + i))
        if args.dropout:
            layers.append(gn.nn.Dropout(args.dropout, seed=args.seed + 2000 + i))
    layers.append(gn.nn.Dense(widths[-1], n_classes, None, args.dtype, seed=args.seed + 1000))
    return gn.nn.Sequential(*layers)


def pretrain(args, X, model) -> None:
    """Train ``args.dbn``'s deep belief network on the rows X (unsupervised)
    and put its weights into the model's hidden Dense layers, as
    ``DBN.to_sequential`` lays them out."""
    import gpunet as gn

    started = time.perf_counter()
    dbn = gn.DBN(
        args.dbn, n_iter=args.pretrain_epochs, random_state=args.seed, device=str(model.device),
        dtype=args.dtype,
    ).fit(X)  # fmt: skip
    hidden = [layer for layer in model.layers if isinstance(layer, gn.nn.Dense)][:-1]
    for dense, pretrained in zip(hidden, dbn.to_sequential().layers, strict=True):
        dense.weight.data = pretrained.weight.data
        dense.bias.data = pretrained.bias.data
    widths = "-".join(map(str, [X.shape[1], *args.dbn]))
    print(
        f"pretrained a deep belief network {widths} ({args.pretrain_epochs} epochs a layer) "
        f"in {time.perf_counter() - started:.1f} s"
    )


def _optimizer(args, params):
    import gpunet as gn

    apply_defaults(args)
    if args.optimizer == "sgd":
        return gn.optim.SGD(
            params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay
        )
    cls = gn.optim.Adam if args.optimizer == "adam" else gn.optim.AdamW
    return cls(params, lr=args.lr, weight_decay=args.weight_decay)


def _callbacks(args):
    import gpunet as gn

    apply_defaults(args)
    if args.schedule == "cosine":
        return [
            gn.training.LearningRateScheduler(gn.optim.CosineAnnealingLR, T_max=max(args.epochs, 1))
        ]
    if args.schedule == "step":
        step = max(args.epochs // 3, 1)
        return [gn.training.LearningRateScheduler(gn.optim.StepLR, step_size=step, gamma=0.1)]
    return []


def _epoch_checkpoint(args):
    """Data-parallel runs (``mpiexec``) save a checkpoint after each epoch,
    beside the output (``<output>-checkpoint.npz``, from rank 0), which
    ``--resume`` continues from after a failure."""
    import gpunet as gn

    if gn.distributed.world_size() == 1:
        return []
    output = args.output or _default_output(args)
    path = _model_path(output).removesuffix(".npz") + "-checkpoint.npz"
    return [gn.training.ModelCheckpoint(path)]


def _check_data(args) -> None:
    """UsageError unless --dataset mnist finds its files in --data-dir, or
    with --download can write there."""
    import gpunet as gn

    if args.dataset != "mnist":
        return
    folder = args.data_dir
    if args.download:
        parent = os.path.dirname(os.path.abspath(folder))
        target = folder if os.path.isdir(folder) else parent
        if not os.path.isdir(target) or not os.access(target, os.W_OK):
            raise UsageError(f"--data-dir {folder}: cannot create or write to this directory")
        return
    for name in gn.datasets.MNIST_MD5:
        stem = name.removesuffix(".gz")
        if not any(os.path.isfile(os.path.join(folder, n)) for n in (stem, name)):
            raise UsageError(
                f"--data-dir {folder}: expected {stem} or {name} there; "
                "fetch MNIST into it with --download"
            )


def _model_path(path: str) -> str:
    return path if path.endswith(".npz") else path + ".npz"


def _default_output(args) -> str:
    return f"gpunet-{args.dataset}{'-lstm' if args.model == 'lstm' else ''}.npz"


def _checkpoint_path(args) -> str:
    """Where Ctrl-C saves its checkpoint: beside the output, ``-interrupted`` added."""
    output = args.output or _default_output(args)
    return _model_path(output).removesuffix(".npz") + "-interrupted.npz"


def check(args):
    """Everything checkable before work: the device, the data, the paths to
    write and read, matplotlib for --plot. Returns the Device."""
    from gpunet import serialization

    apply_defaults(args)
    device = _checks.device(args.device)
    _check_data(args)
    if args.output:
        _checks.writable(_model_path(args.output), "--output")
    _checks.writable(_checkpoint_path(args), "--output")
    if args.plot:
        _checks.writable(args.plot, "--plot")
        _checks.plotting("--plot")
    if args.resume:
        _checks.readable(args.resume, "--resume")
        try:
            saved = serialization.read(args.resume)
        except ValueError as exc:
            raise UsageError(f"--resume {args.resume}: {exc}") from None
        if saved.checkpoint is None:
            raise UsageError(
                f"--resume {args.resume}: a model without its optimizer's state, not a checkpoint"
            )
    return device


def _stop(args, model, optimizer) -> int:
    """After Ctrl-C: save a checkpoint of the run so far, say where it
    stopped and how to resume; exit status 130."""
    from gpunet import serialization

    path = _checkpoint_path(args)
    model.save(path, optimizer=optimizer)
    fit = serialization.read(path).checkpoint.get("fit") or {}
    epoch = min(fit.get("epoch", 0), args.epochs - 1)
    print(f"\ngpunet train: stopped at epoch {epoch + 1} of {args.epochs}", flush=True)
    print(f"saved a checkpoint to {path}; continue with the same arguments and --resume {path}")
    return 130


@data_parallel
def run(args) -> int:
    import gpunet as gn

    check(args)
    (X_train, y_train), (X_test, y_test) = load_data(args)
    X_train, X_test = sequences(X_train, args.model), sequences(X_test, args.model)
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    model = build_model(args, X_train.shape[-1], n_classes)
    print(f"gpunet train: {args.dataset}, {len(X_train)} training and {len(X_test)} test samples")
    print(f"device: {model.device} ({model.device.name})", flush=True)
    if args.dbn is not None and not args.resume:  # resuming, the checkpoint has the weights
        pretrain(args, X_train, model)
    optimizer = _optimizer(args, model.parameters())
    # The learning curves' validation: the held-out split, else the test set.
    validation = (X_test, y_test) if args.plot and not args.validation_split else None
    try:  # from here on, Ctrl-C saves a checkpoint
        print(model)
        print(optimizer, flush=True)
        started = time.perf_counter()
        history = model.fit(
            X_train,
            y_train,
            loss=gn.losses.SoftmaxCrossEntropy(),
            optimizer=optimizer,
            epochs=args.epochs,
            batch_size=args.batch_size,
            validation_split=args.validation_split,
            validation_data=validation,
            verbose=args.verbose,
            callbacks=_callbacks(args) + _epoch_checkpoint(args),
            seed=args.seed,
            resume=args.resume,
        )
    except KeyboardInterrupt:
        return _stop(args, model, optimizer)
    seconds = time.perf_counter() - started
    test = model.evaluate(X_test, y_test)
    samples = len(X_train) * (1 - args.validation_split) * len(history.epoch)
    print(
        f"trained {len(history.epoch)} epochs in {seconds:.1f} s "
        f"({samples / seconds:,.0f} samples/s, first epoch includes compilation)"
    )
    print(f"test accuracy: {test['accuracy']:.4f}  test loss: {test['loss']:.4f}")
    output = _default_output(args) if args.output is None else args.output
    if output:
        model.save(output)
        print(f"saved the model to {_model_path(output)}")
    if args.plot:
        gn.plot.learning_curves(history, args.plot)
        print(f"saved the learning curves to {args.plot}")
    return 0
