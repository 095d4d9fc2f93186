"""Classify the bundled 8x8 digits with an LSTM that reads each image row by
row, as a sequence of 8 steps of 8 pixels, then save and reload the model.

    python examples/lstm_digits.py [--device cpu|cuda] [--epochs N] [--hidden H]
"""

import argparse
import tempfile

import numpy as np

import gpunet as gn


def digit_sequences():
    """(X (1797, 8, 8) float32 in [0, 1]: 8 steps of 8 pixels, y int64)."""
    X, y = gn.datasets.load_digits()
    return (X / 16.0).reshape(-1, 8, 8).astype(np.float32), y


def split(X, y, test_fraction=0.2, seed=0):
    order = np.random.default_rng(seed).permutation(len(X))
    cut = int(len(X) * (1 - test_fraction))
    return (X[order[:cut]], y[order[:cut]]), (X[order[cut:]], y[order[cut:]])


def make_model(hidden, seed=0):
    """LSTM over the rows, its last step's state, then a linear classifier."""
    return gn.nn.Sequential(
        gn.nn.LSTM(8, hidden, batch_first=True, seed=seed),
        gn.nn.LastStep(),
        gn.nn.Dense(hidden, 10, seed=seed + 1),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if args.device:
        gn.set_device(args.device)
    (X_train, y_train), (X_test, y_test) = split(*digit_sequences())
    model = make_model(args.hidden)
    print(model)
    model.fit(
        X_train, y_train, loss="softmax_cross_entropy", optimizer=gn.optim.Adam(
            model.parameters(), lr=3e-3), epochs=args.epochs, batch_size=args.batch_size,
        seed=0, verbose=0,
    )  # fmt: skip
    accuracy = model.evaluate(X_test, y_test)["accuracy"]
    print(f"test accuracy: {accuracy:.4f}")
    with tempfile.TemporaryDirectory() as tmp:
        model.save(f"{tmp}/lstm-digits.npz")
        loaded = gn.load(f"{tmp}/lstm-digits.npz")
        same = np.array_equal(loaded.predict(X_test), model.predict(X_test))
    print(f"reloaded model predicts the same: {same}")


if __name__ == "__main__":
    main()
