"""scikit-learn's "RBM features for digit classification", side by side:
BernoulliRBM and gn.RBM as the feature extractor before a logistic regression.

The digits are nudged one pixel in four directions (five times the data),
scaled to [0, 1] and split 80/20; the RBM has 100 components, learning rate
0.06 and 10 epochs; the logistic regression (newton-cg, C=6000) runs at its
default tolerance so that it converges. Prints each model's macro F1 and the
fit times of the two RBMs, timed alternately (median of five). Needs
scikit-learn and scipy.

    python examples/rbm_digits.py
"""

import statistics
import time

import numpy as np
from scipy.ndimage import convolve
from sklearn import datasets
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split
from sklearn.neural_network import BernoulliRBM
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import minmax_scale

import gpunet as gn

SHIFTS = [
    [[0, 1, 0], [0, 0, 0], [0, 0, 0]],
    [[0, 0, 0], [1, 0, 0], [0, 0, 0]],
    [[0, 0, 0], [0, 0, 1], [0, 0, 0]],
    [[0, 0, 0], [0, 0, 0], [0, 1, 0]],
]


def nudged_digits():
    X, y = datasets.load_digits(return_X_y=True)
    X = np.asarray(X, np.float32)
    moved = [
        np.array([convolve(x.reshape(8, 8), w, mode="constant").ravel() for x in X]) for w in SHIFTS
    ]
    X = minmax_scale(np.concatenate([X, *moved]), feature_range=(0, 1))
    return train_test_split(X, np.tile(y, 5), test_size=0.2, random_state=0)


def rbm(cls, **extra):
    return cls(n_components=100, learning_rate=0.06, n_iter=10, random_state=0, **extra)


def main():
    X_train, X_test, y_train, y_test = nudged_digits()
    models = {
        "BernoulliRBM": rbm(BernoulliRBM),
        "gn.RBM": rbm(gn.RBM, device="cpu"),
        "raw pixels": None,
    }
    for name, features in models.items():
        steps = [("rbm", features)] if features is not None else []
        C = 6000.0 if features is not None else 100.0
        classifier = Pipeline(steps + [("logistic", LogisticRegression(solver="newton-cg", C=C))])
        classifier.fit(X_train, y_train)
        f1 = f1_score(y_test, classifier.predict(X_test), average="macro")
        print(f"{name:>12}: macro F1 {f1:.4f}")

    times = {"BernoulliRBM": [], "gn.RBM": []}
    for _ in range(5):
        for name, cls, extra in (
            ("BernoulliRBM", BernoulliRBM, {}),
            ("gn.RBM", gn.RBM, {"device": "cpu"}),
        ):
            start = time.perf_counter()
            rbm(cls, **extra).fit(X_train)
            times[name].append(time.perf_counter() - start)
    ratios = [a / b for a, b in zip(times["BernoulliRBM"], times["gn.RBM"], strict=True)]
    for name, samples in times.items():
        print(f"{name:>12}: fit {statistics.median(samples):.3f} s (median of 5)")
    print(f"gn.RBM is {statistics.median(ratios):.1f}x faster (median of the paired ratios)")


if __name__ == "__main__":
    main()
