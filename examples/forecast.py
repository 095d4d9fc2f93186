"""Forecast a generated time series one step ahead with a GRU and plot the
prediction against the truth.

The series is two sines and noise, generated here (no download): windows of
24 steps predict the next value; the last quarter is held out.

    python examples/forecast.py [--epochs N] [--plot forecast.png]
"""

import argparse

import numpy as np

import gpunet as gn

WINDOW = 24


def series(n=1200, seed=0):
    t = np.arange(n)
    noise = np.random.default_rng(seed).normal(0, 0.05, n)
    return (np.sin(2 * np.pi * t / 50) + 0.5 * np.sin(2 * np.pi * t / 13) + noise).astype(
        np.float32
    )


def windows(s):
    """X (samples, WINDOW, 1) and y (samples, 1): each window and the value after it."""
    X = np.lib.stride_tricks.sliding_window_view(s[:-1], WINDOW)[..., None]
    return np.ascontiguousarray(X), s[WINDOW:, None].copy()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--plot", default="forecast.png", help="PNG path ('' to skip)")
    args = parser.parse_args()
    X, y = windows(series())
    cut = len(X) * 3 // 4
    model = gn.nn.Sequential(
        gn.nn.GRU(1, 32, batch_first=True, seed=0), gn.nn.LastStep(), gn.nn.Dense(32, 1, seed=1)
    )
    model.fit(X[:cut], y[:cut], loss="mse", optimizer="adam", epochs=args.epochs, seed=0, verbose=0)
    pred = model.predict(X[cut:])
    rmse = float(np.sqrt(np.mean((pred - y[cut:]) ** 2)))
    print(f"held-out RMSE: {rmse:.4f} (the series' standard deviation: {y.std():.4f})")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(10, 3))
        ax.plot(y[cut:, 0], label="truth")
        ax.plot(pred[:, 0], label="GRU, one step ahead")
        ax.set_xlabel("step (held out)")
        ax.legend()
        fig.savefig(args.plot, dpi=100, bbox_inches="tight")
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
