"""Train a 784-512-256-10 perceptron on MNIST, downloaded (with checksums) into
a cache directory on first use, and report the test accuracy and throughput.

    python examples/train_mnist.py [--data-dir DIR] [--device cpu|cuda] [--epochs N]
"""

import argparse
import sys
import time
import urllib.error

import gpunet as gn


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="mnist", help="where the IDX files are cached")
    parser.add_argument("--device", default=None)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--output", default="mnist-mlp.npz")
    args = parser.parse_args()
    if args.device:
        gn.set_device(args.device)

    try:
        (X_train, y_train), (X_test, y_test) = gn.datasets.fetch_mnist(args.data_dir)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        sys.exit(
            f"train_mnist.py: cannot download MNIST from {gn.datasets.MNIST_URL} ({reason}); "
            f"fetch its four .gz files by hand into a folder and pass it with --data-dir"
        )
    model = gn.nn.Sequential(
        gn.nn.Dense(784, 512, "relu", seed=0),
        gn.nn.Dense(512, 256, "relu", seed=1),
        gn.nn.Dense(256, 10, seed=2),
    )
    print(model)
    started = time.perf_counter()
    model.fit(
        X_train,
        y_train,
        loss=gn.losses.SoftmaxCrossEntropy(),
        optimizer=gn.optim.AdamW(model.parameters(), lr=1e-3),
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_split=1 / 12,
        callbacks=[
            gn.training.LearningRateScheduler(gn.optim.CosineAnnealingLR, T_max=args.epochs)
        ],
    )
    seconds = time.perf_counter() - started
    test = model.evaluate(X_test, y_test)
    samples = len(X_train) * (11 / 12) * args.epochs
    throughput = f"{samples / seconds:,.0f} samples/s on {model.device}"
    print(f"test accuracy {test['accuracy']:.4f}, {throughput}")
    model.save(args.output)
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()
