"""Train a multilayer perceptron on the bundled 8x8 digits with a hand-written
loop, then the same model with ``fit``, and compare their test accuracy.

    python examples/train_digits.py [--device cpu|cuda] [--epochs N]
"""

import argparse
import time

import numpy as np

import gpunet as gn


def split(X, y, test_fraction=0.2, seed=0):
    order = np.random.default_rng(seed).permutation(len(X))
    cut = int(len(X) * (1 - test_fraction))
    return (X[order[:cut]], y[order[:cut]]), (X[order[cut:]], y[order[cut:]])


def make_model(seed):
    return gn.nn.Sequential(
        gn.nn.Dense(64, 256, "relu", seed=seed),
        gn.nn.Dense(256, 10, seed=seed + 1),
    )


def hand_written(X, y, epochs, batch_size):
    """The training step spelled out: forward, loss, backward, update."""
    model = make_model(seed=0)
    loss_fn = gn.losses.SoftmaxCrossEntropy()
    opt = gn.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(epochs):
        total, seen = 0.0, 0
        for xb, yb in gn.data.batches(X, y, batch_size, shuffle=True, seed=epoch):
            logits = model.forward(gn.to_device(xb, model.device))
            loss, grad = loss_fn(logits, gn.to_device(yb, model.device))
            model.backward(grad, input_grad=False)  # the data needs no gradient
            opt.step()
            opt.zero_grad()
            total, seen = total + float(loss) * len(xb), seen + len(xb)
        print(f"epoch {epoch + 1}/{epochs}: loss {total / seen:.4f}")
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if args.device:
        gn.set_device(args.device)

    X, y = gn.datasets.load_digits()
    (X_train, y_train), (X_test, y_test) = split(X / np.float32(16), y)

    started = time.perf_counter()
    model = hand_written(X_train, y_train, args.epochs, args.batch_size)
    loop_seconds = time.perf_counter() - started
    loop_accuracy = np.mean(model.predict(X_test).argmax(axis=1) == y_test)

    model = make_model(seed=0)
    started = time.perf_counter()
    history = model.fit(
        X_train,
        y_train,
        loss=gn.losses.SoftmaxCrossEntropy(),
        optimizer=gn.optim.Adam(model.parameters(), lr=1e-3),
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_split=0.1,
        verbose=2,
        callbacks=[gn.training.EarlyStopping("val_loss", patience=5, restore_best_weights=True)],
    )
    fit_seconds = time.perf_counter() - started
    test = model.evaluate(X_test, y_test)

    print(f"hand-written loop: test accuracy {loop_accuracy:.4f} ({loop_seconds:.1f} s)")
    print(
        f"fit ({len(history.epoch)} epochs): test accuracy {test['accuracy']:.4f} "
        f"({fit_seconds:.1f} s)"
    )


if __name__ == "__main__":
    main()
