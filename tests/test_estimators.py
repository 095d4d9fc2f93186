"""gn.MLPClassifier and gn.MLPRegressor: scikit-learn's behaviour (loss
curves, initial weights, stopping rules, attributes, errors) and gpunet's
additions (device, dtype, dropout, batch_norm, validation curves)."""

import pickle
import warnings

import numpy as np
import pytest

import gpunet as gn

sk_nn = pytest.importorskip("sklearn.neural_network")


@pytest.fixture(scope="module")
def digits():
    X, y = gn.datasets.load_digits()
    return (X[:300] / 16).astype(np.float64), y[:300]


def quiet(fit, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit(*args, **kwargs)


def pair(cls, **kw):
    """(gpunet's estimator in float64, scikit-learn's) with the same arguments."""
    return getattr(gn, cls)(dtype="float64", device="cpu", **kw), getattr(sk_nn, cls)(**kw)


SOLVERS = [
    dict(solver="adam"),
    dict(solver="adam", alpha=0.01, activation="tanh", batch_size=64),
    dict(solver="sgd", learning_rate_init=0.1),
    dict(solver="sgd", learning_rate="invscaling", learning_rate_init=0.5, activation="logistic"),
    dict(solver="sgd", nesterovs_momentum=False, momentum=0.5, shuffle=False, batch_size=50),
    dict(solver="sgd", momentum=0.0, activation="identity"),
]


@pytest.mark.parametrize("settings", SOLVERS, ids=lambda s: "-".join(map(str, s.values())))
def test_loss_curve_matches_sklearn_in_float64(digits, settings):
    X, y = digits
    ours, theirs = pair(
        "MLPClassifier", hidden_layer_sizes=(16,), max_iter=4, random_state=0, **settings
    )
    quiet(ours.fit, X, y)
    quiet(theirs.fit, X, y)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-10, atol=0)
    for a, b in zip(
        ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_, strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)
    assert ours.n_iter_ == theirs.n_iter_ and ours.t_ == theirs.t_


def test_float32_follows_sklearn_to_float32_rounding(digits):
    X, y = digits
    ours = gn.MLPClassifier((16,), max_iter=4, random_state=0, device="cpu")
    theirs = sk_nn.MLPClassifier((16,), max_iter=4, random_state=0)
    quiet(ours.fit, X, y)
    quiet(theirs.fit, X, y)
    assert ours.coefs_[0].dtype == np.float32
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-5)


def test_adaptive_schedule_and_stopping_match_sklearn(digits):
    X, y = digits
    kw = dict(
        hidden_layer_sizes=(8,), solver="sgd", learning_rate="adaptive", learning_rate_init=1e-4,
        tol=0.5, n_iter_no_change=2, max_iter=30, random_state=1,
    )  # fmt: skip
    ours, theirs = pair("MLPClassifier", **kw)
    quiet(ours.fit, X, y)
    quiet(theirs.fit, X, y)
    assert ours.n_iter_ == theirs.n_iter_ < 30
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)
    assert ours.best_loss_ == pytest.approx(theirs.best_loss_, rel=1e-9)


def test_binary_multilabel_and_regression_losses_match_sklearn(digits):
    X, y = digits
    binary = (y % 2).astype(str)
    multilabel = np.stack([y % 2, y > 4, y == 0], axis=1).astype(int)
    targets = np.stack([X[:, 10] - X[:, 20], X[:, 30] * 2], axis=1)
    for cls, target in [
        ("MLPClassifier", binary),
        ("MLPClassifier", multilabel),
        ("MLPRegressor", targets),
        ("MLPRegressor", targets[:, 0]),
    ]:
        ours, theirs = pair(cls, hidden_layer_sizes=(12, 6), max_iter=3, random_state=2)
        quiet(ours.fit, X, target)
        quiet(theirs.fit, X, target)
        np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-10)
        if cls == "MLPClassifier":
            np.testing.assert_array_equal(ours.predict(X[:20]), theirs.predict(X[:20]))
            np.testing.assert_allclose(ours.predict_proba(X[:20]), theirs.predict_proba(X[:20]))
            assert list(ours.classes_) == list(theirs.classes_)
        else:
            np.testing.assert_allclose(ours.predict(X[:20]), theirs.predict(X[:20]), rtol=1e-7)
        assert ours.out_activation_ == theirs.out_activation_
        assert ours.n_outputs_ == theirs.n_outputs_ and ours.n_layers_ == theirs.n_layers_
        assert ours.score(X, target) == pytest.approx(theirs.score(X, target), abs=1e-9)


def test_lbfgs_matches_sklearn(digits):
    X, y = digits
    ours, theirs = pair("MLPClassifier", hidden_layer_sizes=(10,), solver="lbfgs", max_iter=15,
                        random_state=0)  # fmt: skip
    with pytest.warns(gn.ConvergenceWarning, match="lbfgs failed to converge"):
        ours.fit(X, y)
    quiet(theirs.fit, X, y)
    assert ours.n_iter_ == theirs.n_iter_ == 15
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-6)
    assert not hasattr(ours, "loss_curve_") and not hasattr(theirs, "loss_curve_")


def test_fitted_attributes_and_methods(digits):
    X, y = digits
    clf = quiet(gn.MLPClassifier((20, 10), max_iter=3, random_state=0).fit, X, y)
    assert [c.shape for c in clf.coefs_] == [(64, 20), (20, 10), (10, 10)]
    assert [b.shape for b in clf.intercepts_] == [(20,), (10,), (10,)]
    assert clf.n_features_in_ == 64 and clf.n_layers_ == 4 and clf.n_outputs_ == 10
    assert clf.out_activation_ == "softmax" and list(clf.classes_) == list(range(10))
    assert len(clf.loss_curve_) == clf.n_iter_ == 3 and clf.t_ == 3 * len(X)
    assert clf.best_loss_ == min(clf.loss_curve_) and clf.loss_ == clf.loss_curve_[-1]
    assert clf.validation_scores_ is None and clf.validation_loss_curve_ is None
    proba = clf.predict_proba(X[:5])
    assert proba.shape == (5, 10) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(clf.predict_log_proba(X[:5]), np.log(proba), rtol=1e-6)
    np.testing.assert_array_equal(clf.predict(X[:5]), proba.argmax(axis=1))
    assert 0 <= clf.score(X, y) <= 1
    assert clf.device_.type == "cpu"


def test_coefs_are_live_views_and_assignable(digits):
    X, y = digits
    clf = quiet(gn.MLPClassifier((5,), max_iter=1, random_state=0, device="cpu").fit, X, y)
    clf.coefs_[1][:] = 0
    clf.intercepts_ = [np.zeros(5), np.arange(10.0)]
    np.testing.assert_array_equal(clf.predict(X[:3]), [9, 9, 9])
    with pytest.raises(ValueError, match="shape"):
        clf.coefs_ = [np.zeros((3, 3)), np.zeros((5, 10))]


def test_early_stopping_matches_sklearn(digits):
    # the same held-out rows (stratified for a binary target), scores and restored weights
    X, y = digits
    multilabel = np.stack([y % 2, y > 3], axis=1).astype(int)
    for cls, target in [
        ("MLPClassifier", y),
        ("MLPClassifier", y % 2),
        ("MLPClassifier", multilabel),
        ("MLPRegressor", X[:, 20] - X[:, 30]),
    ]:
        ours, theirs = pair(cls, hidden_layer_sizes=(8,), early_stopping=True, max_iter=6,
                            n_iter_no_change=2, random_state=0)  # fmt: skip
        quiet(ours.fit, X, target)
        quiet(theirs.fit, X, target)
        np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_, rtol=1e-12)
        np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-10)
        assert ours.best_validation_score_ == pytest.approx(theirs.best_validation_score_)
        for a, b in zip(ours.coefs_, theirs.coefs_, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)


def test_early_stopping_and_validation_curves(digits):
    X, y = digits
    clf = gn.MLPClassifier((16,), early_stopping=True, max_iter=40, n_iter_no_change=3,
                           random_state=0, learning_rate_init=0.01)  # fmt: skip
    quiet(clf.fit, X, y)
    assert clf.best_loss_ is None
    assert len(clf.validation_scores_) == len(clf.validation_loss_curve_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert clf.n_iter_ < 40
    # the best epoch's weights are restored: the held-out score at the end is the best one
    reg = gn.MLPRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0)
    quiet(reg.fit, X[:200], X[:200, 20], validation_data=(X[200:], X[200:, 20]))
    assert len(reg.validation_loss_curve_) == len(reg.validation_scores_) == 5
    assert reg.validation_loss_curve_[-1] < reg.validation_loss_curve_[0]
    assert reg.best_validation_score_ is None  # stopping still follows the training loss
    fitted = quiet(gn.MLPClassifier((4,), max_iter=1).fit, X, y)
    with pytest.raises(ValueError, match="classes not in"):
        fitted.fit(X[:200], y[:200] % 5, validation_data=(X[200:], y[200:]))
    assert list(fitted.classes_) == list(range(10))  # the failed fit changed nothing
    fresh = gn.MLPClassifier((4,))
    with pytest.raises(ValueError, match="NaN"):
        fresh.partial_fit(np.full((3, 64), np.nan), [0, 1, 2], classes=[0, 1, 2])
    with pytest.raises(ValueError, match="classes must be passed"):
        fresh.partial_fit(X[:3], [0, 1, 2])  # still unfitted


def test_convergence_warning_and_stopping_on_tol(digits):
    X, y = digits
    with pytest.warns(gn.ConvergenceWarning, match=r"Maximum iterations \(2\)"):
        gn.MLPClassifier((4,), max_iter=2, random_state=0).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", gn.ConvergenceWarning)
        clf = gn.MLPClassifier((4,), max_iter=50, tol=10.0, n_iter_no_change=2).fit(X, y)
    assert clf.n_iter_ == 4  # the first epoch sets best_loss_, three more fail to beat it


def test_warnings_and_errors_are_sklearns_too(digits):
    from sklearn.exceptions import ConvergenceWarning, NotFittedError

    X, y = digits
    with pytest.warns(ConvergenceWarning) as caught:
        gn.MLPClassifier((4,), max_iter=1, random_state=0).fit(X[:50], y[:50])
    assert all(isinstance(w.message, gn.ConvergenceWarning) for w in caught)
    for estimator in (gn.MLPClassifier(), gn.RBM(), gn.data.StandardScaler()):
        with pytest.raises(NotFittedError) as raised:
            estimator.transform(X) if hasattr(estimator, "transform") else estimator.predict(X)
        assert isinstance(raised.value, gn.NotFittedError)
        assert pickle.loads(pickle.dumps(raised.value)).args == raised.value.args


def test_partial_fit_and_warm_start(digits):
    X, y = digits
    clf = gn.MLPClassifier((8,), random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X, y)
    clf.partial_fit(X[:100], y[:100], classes=np.arange(10))
    clf.partial_fit(X[100:], y[100:])
    assert clf.n_iter_ == 2 and len(clf.loss_curve_) == 2
    with pytest.raises(ValueError, match="not the same as on last call"):
        clf.partial_fit(X, y, classes=np.arange(5))
    assert not hasattr(gn.MLPClassifier(solver="lbfgs"), "partial_fit")
    with pytest.raises(ValueError, match="early_stopping"):
        gn.MLPRegressor(early_stopping=True).partial_fit(X, X[:, 0])
    warm = gn.MLPClassifier((8,), max_iter=2, warm_start=True, random_state=0)
    quiet(warm.fit, X, y)
    first = warm.coefs_[0].copy()
    quiet(warm.fit, X, y)
    assert warm.n_iter_ == 4 and len(warm.loss_curve_) == 4
    assert not np.array_equal(first, warm.coefs_[0])
    warm.set_params(hidden_layer_sizes=(9,))
    with pytest.raises(ValueError, match="sizes changed"):
        warm.fit(X, y)


def test_dropout_and_batch_norm_train(digits):
    X, y = digits
    clf = gn.MLPClassifier((32,), dropout=0.2, batch_norm=True, max_iter=15, random_state=0,
                           learning_rate_init=0.01)  # fmt: skip
    quiet(clf.fit, X, y)
    layers = [type(layer).__name__ for layer in clf.model_]
    assert layers == ["Dense", "BatchNorm1d", "ReLU", "Dropout", "Dense"]
    assert clf.score(X, y) > 0.9
    np.testing.assert_array_equal(clf.predict(X), clf.predict(X))  # evaluation mode
    again = quiet(clf.fit, X, y)
    np.testing.assert_allclose(again.loss_curve_, clf.loss_curve_)  # seeded by random_state
    with pytest.raises(ValueError, match="dropout needs a stochastic solver"):
        gn.MLPClassifier(solver="lbfgs", dropout=0.1).fit(X, y)


def test_batch_norm_with_lbfgs(digits):
    X, y = digits
    clf = quiet(
        gn.MLPRegressor(hidden_layer_sizes=(6,), solver="lbfgs", batch_norm=True, max_iter=20).fit,
        X,
        y,
    )
    assert clf.score(X, y) > 0.3


def test_bad_input_is_refused_before_any_work(digits):
    X, y = digits
    for params, match in [
        (dict(solver="newton"), "solver"),
        (dict(hidden_layer_sizes=(0,)), "hidden_layer_sizes"),
        (dict(alpha=-1.0), "alpha"),
        (dict(batch_size=0), "batch_size"),
        (dict(momentum=1.5), "momentum"),
        (dict(validation_fraction=1.0), "validation_fraction"),
        (dict(dtype="float16"), "dtype"),
        (dict(dropout=1.0), "dropout"),
        (dict(max_iter=0), "max_iter"),
    ]:
        with pytest.raises(ValueError, match=match):
            gn.MLPClassifier(**params).fit(X, y)
    clf = quiet(gn.MLPClassifier((4,), max_iter=1, random_state=0).fit, X, y)
    before = [c.copy() for c in clf.coefs_]
    bad = X.copy()
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clf.partial_fit(bad, y)
    with pytest.raises(ValueError, match="X has 63 features, but MLPClassifier is expecting 64"):
        clf.predict(X[:, 1:])
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        clf.partial_fit(X, y[:-1])
    with pytest.raises(ValueError, match="classes not in"):
        clf.partial_fit(X[:3], [0, 1, 11])
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        gn.MLPClassifier().fit(X, X[:, 5])
    with pytest.raises(ValueError, match="y contains NaN"):
        gn.MLPRegressor().fit(X, np.full(len(X), np.nan))
    with pytest.raises(TypeError, match="sparse"):
        gn.MLPRegressor().fit(__import__("scipy.sparse").sparse.csr_matrix(X), y)
    for a, b in zip(before, clf.coefs_, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(gn.NotFittedError):
        gn.MLPRegressor().predict(X)


def test_clone_pickle_pipeline_and_grid_search(digits):
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    X, y = digits
    clf = gn.MLPClassifier((8,), max_iter=5, random_state=0, dtype="float64")
    assert repr(clf) == "MLPClassifier(dtype='float64', hidden_layer_sizes=(8,), max_iter=5, " \
        "random_state=0)"  # fmt: skip
    assert clone(clf).get_params() == clf.get_params()
    quiet(clf.fit, X, y)
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))
    restored.coefs_[0][:] = 0  # its parameters are its own, and still live views
    assert not np.array_equal(restored.predict_proba(X), clf.predict_proba(X))
    pipe = make_pipeline(
        gn.data.StandardScaler(), gn.MLPRegressor(hidden_layer_sizes=(4,), max_iter=3)
    )
    quiet(pipe.fit, X, X[:, 30])
    search = GridSearchCV(clf, {"alpha": [1e-4, 1e-1]}, cv=2)
    quiet(search.fit, X, y)
    assert set(search.cv_results_["param_alpha"]) == {1e-4, 1e-1}


def test_feature_names_from_data_frames(digits):
    pd = pytest.importorskip("pandas")
    X, y = digits
    frame = pd.DataFrame(X, columns=[f"pixel{i}" for i in range(64)])
    clf = quiet(gn.MLPClassifier((4,), max_iter=1).fit, frame, y)
    assert list(clf.feature_names_in_) == list(frame.columns)
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        clf.predict(X)
    with pytest.raises(ValueError, match="feature names should match"):
        clf.predict(frame.rename(columns={"pixel0": "other"}))


@pytest.mark.cuda
def test_cuda_follows_the_cpu():
    # One mini-batch per epoch and few launches: the simulator runs each thread in Python.
    X, y = gn.datasets.load_digits()
    X, y = X[:6, 20:24] / 16, y[:6] % 3
    kw = dict(hidden_layer_sizes=(3,), max_iter=1, random_state=0, dtype="float64")
    for cls, target, extra in [
        (gn.MLPClassifier, y, {"alpha": 0.01, "batch_norm": True, "dropout": 0.25}),
        (gn.MLPRegressor, X[:, :2], {"solver": "sgd", "alpha": 0.0}),
        (gn.MLPClassifier, y, {"solver": "lbfgs", "alpha": 0.0}),
    ]:
        settings = {**kw, **extra}
        cpu = quiet(cls(device="cpu", **settings).fit, X, target)
        gpu = quiet(cls(device="cuda", **settings).fit, X, target)
        assert gpu.device_.type == "cuda"
        assert gpu.loss_ == pytest.approx(cpu.loss_, rel=1e-9)
        for a, b in zip(gpu.coefs_, cpu.coefs_, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(gpu.predict(X), cpu.predict(X))
