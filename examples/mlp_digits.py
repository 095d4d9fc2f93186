"""scikit-learn's MLPClassifier and gn.MLPClassifier side by side on the
bundled digits, a grid search over a gn estimator, and a deep belief
network's pretraining against random initialisation.

1. The swap: the same arguments (one hidden layer of 100 relu units, adam,
   batch 200, ``--epochs`` epochs, random_state 0, so the same initial
   weights) to both classes; prints each one's test accuracy and fit time,
   timed alternately (``--repeats`` of each; the median ratio), with
   scikit-learn both as it comes and on one BLAS thread (its best setting
   for products this small), and how closely gn's loss curve (float32, and
   float64) follows scikit-learn's.
2. ``GridSearchCV`` over ``gn.MLPClassifier``'s alpha.
3. ``gn.DBNClassifier`` (``--dbn``: two hidden layers of 256 and 128
   logistic units by default, pretrained as a DBN) against the same
   network from random initialisation, both fine-tuned by SGD, over
   ``--seeds`` seeds; with ``--plot`` the test accuracies and the loss
   curves go to an image (needs matplotlib).

The digits are scaled to [0, 1] and split: the first 1,200 to train, the
other 597 to test (different writers). With ``--mnist DIR`` (the four MNIST
IDX files, as ``gn.datasets.load_mnist`` reads them) the side-by-side fit
runs on MNIST too. Needs scikit-learn.

    python examples/mlp_digits.py --plot mlp_digits.png
"""

import argparse
import statistics
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

import gpunet as gn


def timed(fit, *args):
    begin = time.perf_counter()
    model = fit(*args)
    return model, time.perf_counter() - begin


def side_by_side(X, y, X_test, y_test, epochs, repeats, name="digits"):
    settings = dict(hidden_layer_sizes=(100,), solver="adam", batch_size=200, max_iter=epochs,
                    random_state=0)  # fmt: skip
    gn.MLPClassifier(**settings).fit(X, y)  # compiles the kernels outside the timing
    times = {"gn": [], "sklearn": [], "sklearn, 1 BLAS thread": []}
    for _ in range(repeats):  # alternating, so that a slow spell of the machine hits all
        ours, t = timed(gn.MLPClassifier(**settings).fit, X, y)
        times["gn"].append(t)
        theirs, t = timed(MLPClassifier(**settings).fit, X, y)
        times["sklearn"].append(t)
        with threadpool_limits(1, user_api="blas"):
            _, t = timed(MLPClassifier(**settings).fit, X, y)
        times["sklearn, 1 BLAS thread"].append(t)
    print(f"MLPClassifier on {name}, {epochs} epochs (adam, batch 200, 100 relu units):")
    print(f"  scikit-learn  test accuracy {theirs.score(X_test, y_test):.4f}")
    print(f"  gpunet        test accuracy {ours.score(X_test, y_test):.4f}")
    for name, values in times.items():
        print(f"  fit time {name}: median {statistics.median(values):.3f} s")
    for name in ("sklearn", "sklearn, 1 BLAS thread"):
        ratios = [a / b for a, b in zip(times[name], times["gn"], strict=True)]
        print(f"  {name} / gn: median ratio {statistics.median(ratios):.1f}x")
    # scikit-learn computes in the dtype of X: float32 here, float64 for the float64 check
    X64 = X.astype(np.float64)
    pairs = {
        "float32": (ours, theirs),
        "float64": (gn.MLPClassifier(dtype="float64", **settings).fit(X64, y),
                    MLPClassifier(**settings).fit(X64, y)),
    }  # fmt: skip
    for name, (a, b) in pairs.items():
        n = min(10, len(b.loss_curve_))
        reference = np.asarray(b.loss_curve_[:n])
        gap = np.max(np.abs(np.asarray(a.loss_curve_[:n]) - reference) / reference)
        print(f"  {name}: loss curves, first {n} epochs: largest relative difference {gap:.1e}")
    return ours, theirs


def grid_search(X, y, epochs):
    search = GridSearchCV(
        gn.MLPClassifier((64,), max_iter=epochs, random_state=0),
        {"alpha": [1e-4, 1e-2, 1.0], "learning_rate_init": [1e-3, 1e-2]},
        cv=3,
    )
    search.fit(X, y)
    print(f"GridSearchCV over gn.MLPClassifier: best {search.best_params_}, "
          f"cross-validated accuracy {search.best_score_:.4f}")  # fmt: skip


def pretraining(X, y, X_test, y_test, sizes, epochs, seeds):
    fine_tuning = dict(solver="sgd", learning_rate_init=0.1, max_iter=epochs)
    runs = {"DBN pretraining": [], "random initialisation": []}
    for seed in range(seeds):
        dbn = gn.DBNClassifier(sizes, pretrain_n_iter=20, pretrain_learning_rate=0.05,
                               random_state=seed, **fine_tuning).fit(X, y)  # fmt: skip
        plain = gn.MLPClassifier(sizes, activation="logistic", random_state=seed,
                                 **fine_tuning).fit(X, y)  # fmt: skip
        runs["DBN pretraining"].append(dbn)
        runs["random initialisation"].append(plain)
    shape = "-".join(map(str, sizes))
    print(f"{shape} logistic network, SGD fine-tuning for {epochs} epochs, {seeds} seeds:")
    for name, models in runs.items():
        scores = [m.score(X_test, y_test) for m in models]
        print(f"  {name}: test accuracy {np.mean(scores):.4f} "
              f"({', '.join(f'{s:.4f}' for s in scores)})")  # fmt: skip
    return runs


def plot(runs, X_test, y_test, sizes, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curves, bars) = plt.subplots(1, 2, figsize=(9, 3.4))
    for (name, models), color in zip(runs.items(), ("tab:blue", "tab:orange"), strict=True):
        for i, model in enumerate(models):
            curves.plot(model.loss_curve_, color=color, alpha=0.8, label=name if i == 0 else None)
        scores = [m.score(X_test, y_test) for m in models]
        bars.bar(name, np.mean(scores), color=color, yerr=np.std(scores), capsize=4)
    curves.set(xlabel="epoch", ylabel="training log-loss", yscale="log",
               title=f"Fine-tuning a {'-'.join(map(str, sizes))} network")  # fmt: skip
    curves.legend()
    bars.set(ylabel="test accuracy (mean of seeds)", ylim=(0.6, 1.0),
             title="Digits, last 597 samples")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    print(f"wrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200, help="epochs of the side-by-side fit")
    parser.add_argument("--repeats", type=int, default=5, help="timed fits of each library")
    parser.add_argument("--dbn-epochs", type=int, default=30, help="epochs of fine-tuning")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the DBN comparison")
    parser.add_argument("--dbn", default="256,128", help="hidden layer sizes of the DBN comparison")
    parser.add_argument("--plot", help="write the DBN comparison to this image")
    parser.add_argument("--mnist", help="directory of the MNIST files: also compare on MNIST")
    args = parser.parse_args()
    X, y = gn.datasets.load_digits()
    X = X / 16
    X_train, y_train, X_test, y_test = X[:1200], y[:1200], X[1200:], y[1200:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # gn's is a subclass
        side_by_side(X_train, y_train, X_test, y_test, args.epochs, args.repeats)
        if args.mnist:
            (X_m, y_m), (X_mt, y_mt) = gn.datasets.load_mnist(args.mnist)
            side_by_side(X_m, y_m, X_mt, y_mt, args.epochs, args.repeats, "MNIST")
        grid_search(X_train, y_train, min(args.epochs, 30))
        sizes = tuple(int(n) for n in args.dbn.split(","))
        runs = pretraining(X_train, y_train, X_test, y_test, sizes, args.dbn_epochs, args.seeds)
    if args.plot:
        plot(runs, X_test, y_test, sizes, args.plot)


if __name__ == "__main__":
    main()
