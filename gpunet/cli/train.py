"""``gpunet train``: train a multilayer perceptron, print its test accuracy and
save it. The default trains on the bundled 8x8 digits (no download), holding
out a seeded, stratified fifth of them for the test."""

from __future__ import annotations

import time

import numpy as np

#: Defaults of the digits run: a short run that still reaches a high test accuracy.
DEFAULTS = dict(hidden=[512], epochs=40, batch_size=32, optimizer="adam", lr=1e-3)


def add_parser(subparsers) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a multilayer perceptron (digits by default)",
        description="Train a multilayer perceptron by backpropagation, print the test "
        "accuracy and save the model. Defaults: the bundled 8x8 digits, hidden layers "
        f"{' '.join(map(str, DEFAULTS['hidden']))}, Adam.",
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
        type=int,
        nargs="*",
        default=DEFAULTS["hidden"],
        metavar="N",
        help="hidden layer widths (default: %(default)s); none gives a linear classifier",
    )
    train.add_argument(
        "--activation",
        choices=("relu", "leaky_relu", "sigmoid", "tanh"),
        default="relu",
        help="hidden activation (default: relu)",
    )
    train.add_argument(
        "--dropout",
        type=float,
        default=0.0,
        metavar="P",
        help="dropout probability after each hidden activation (default: 0, none)",
    )
    train.add_argument(
        "--batch-norm",
        action="store_true",
        help="batch normalization between each hidden layer's product and its activation",
    )
    train.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    train.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    train.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default="adam")
    train.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="learning rate")
    train.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    train.add_argument("--weight-decay", type=float, default=0.0)
    train.add_argument(
        "--schedule",
        choices=("none", "cosine", "step"),
        default="cosine",
        help="learning-rate schedule over the epochs (default: cosine)",
    )
    train.add_argument(
        "--validation-split",
        type=float,
        default=0.0,
        help="fraction of the training rows held out to report val_ metrics each epoch",
    )
    train.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto")
    train.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    train.add_argument("--seed", type=int, default=0, help="seed for weights, split and order")
    train.add_argument(
        "--output",
        "-o",
        default=None,
        help="where to save the model (default: gpunet-<dataset>.npz; '' to skip saving)",
    )
    train.add_argument("--plot", metavar="PATH", help="save the learning curves to PATH (PNG)")
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
        return gn.datasets.fetch_mnist(args.data_dir)
    return gn.datasets.load_mnist(args.data_dir)


#: Hidden activation layer classes (in gn.nn) by --activation, used after batch normalization.
ACTIVATION_LAYERS = {
    "relu": "ReLU",
    "leaky_relu": "LeakyReLU",
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
}


def build_model(args, n_features, n_classes):
    import gpunet as gn

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


def _optimizer(args, params):
    import gpunet as gn

    if args.optimizer == "sgd":
        return gn.optim.SGD(
            params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay
        )
    cls = gn.optim.Adam if args.optimizer == "adam" else gn.optim.AdamW
    return cls(params, lr=args.lr, weight_decay=args.weight_decay)


def _callbacks(args):
    import gpunet as gn

    if args.schedule == "cosine":
        return [
            gn.training.LearningRateScheduler(gn.optim.CosineAnnealingLR, T_max=max(args.epochs, 1))
        ]
    if args.schedule == "step":
        step = max(args.epochs // 3, 1)
        return [gn.training.LearningRateScheduler(gn.optim.StepLR, step_size=step, gamma=0.1)]
    return []


def run(args) -> int:
    import gpunet as gn

    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise SystemExit(f"gpunet train: --{name.replace('_', '-')} must be at least 1")
    if not 0 <= args.dropout < 1:
        raise SystemExit(f"gpunet train: --dropout must be in [0, 1), got {args.dropout}")
    if any(h < 1 for h in args.hidden):
        raise SystemExit("gpunet train: --hidden widths must be at least 1")
    if args.device is not None:
        gn.set_device(args.device)
    (X_train, y_train), (X_test, y_test) = load_data(args)
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    model = build_model(args, X_train.shape[1], n_classes)
    optimizer = _optimizer(args, model.parameters())
    print(f"gpunet train: {args.dataset}, {len(X_train)} training and {len(X_test)} test samples")
    print(f"device: {model.device} ({model.device.name})")
    print(model)
    print(optimizer)
    started = time.perf_counter()
    history = model.fit(
        X_train,
        y_train,
        loss=gn.losses.SoftmaxCrossEntropy(),
        optimizer=optimizer,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_split=args.validation_split,
        verbose=args.verbose,
        callbacks=_callbacks(args),
        seed=args.seed,
    )
    seconds = time.perf_counter() - started
    test = model.evaluate(X_test, y_test)
    samples = len(X_train) * (1 - args.validation_split) * len(history.epoch)
    print(
        f"trained {len(history.epoch)} epochs in {seconds:.1f} s "
        f"({samples / seconds:,.0f} samples/s, first epoch includes compilation)"
    )
    print(f"test accuracy: {test['accuracy']:.4f}  test loss: {test['loss']:.4f}")
    output = f"gpunet-{args.dataset}.npz" if args.output is None else args.output
    if output:
        model.save(output)
        print(f"saved the model to {output if output.endswith('.npz') else output + '.npz'}")
    if args.plot:
        gn.plot.learning_curves(history, args.plot)
        print(f"saved the learning curves to {args.plot}")
    return 0
