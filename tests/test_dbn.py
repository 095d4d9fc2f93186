"""gn.DBN and gn.DBNClassifier: greedy layer-wise training, the transform
and to_sequential agree, pretrained weights seed the classifier, errors."""

import pickle
import warnings

import numpy as np
import pytest

import gpunet as gn


@pytest.fixture(scope="module")
def digits():
    X, y = gn.datasets.load_digits()
    return X[:200] / 16, y[:200]


def test_layers_train_greedily_and_transform_chains_them(digits):
    X, _ = digits
    dbn = gn.DBN((12, 5), n_iter=2, random_state=0, device="cpu").fit(X)
    first, second = dbn.rbms_
    assert (first.n_components, second.n_components) == (12, 5)
    assert first.visible == "bernoulli" and second.visible == "bernoulli"
    assert second.n_features_in_ == 12 and dbn.n_features_in_ == 64
    # the second layer is an RBM trained on the first layer's hidden probabilities
    alone = gn.RBM(5, n_iter=2, random_state=np.random.RandomState(0), device="cpu")
    rs = np.random.RandomState(0)
    gn.RBM(12, n_iter=2, random_state=rs, device="cpu").fit(X)
    alone.set_params(random_state=rs).fit(first.transform(X))
    np.testing.assert_array_equal(alone.components_, second.components_)
    out = dbn.transform(X)
    assert out.shape == (200, 5) and out.dtype == np.float32
    np.testing.assert_array_equal(out, second.transform(first.transform(X)))
    model = dbn.to_sequential().eval()
    assert [layer.activation for layer in model] == ["sigmoid", "sigmoid"]
    np.testing.assert_allclose(gn.to_numpy(model(X.astype(np.float32))), out, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(dbn.fit_transform(X), out)


def test_gaussian_first_layer(digits):
    X, _ = digits
    X = gn.data.StandardScaler().fit_transform(X.astype(np.float32))
    dbn = gn.DBN((6, 3), visible="gaussian", n_iter=1, random_state=0).fit(X)
    assert [r.visible for r in dbn.rbms_] == ["gaussian", "bernoulli"]
    assert dbn.transform(X).shape == (200, 3)


def test_classifier_starts_from_the_pretrained_weights(digits):
    X, y = digits
    kw = dict(pretrain_n_iter=2, random_state=0, device="cpu")
    untrained = gn.DBNClassifier((10, 6), max_iter=1, learning_rate_init=1e-12, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        untrained.fit(X, y)
    for dense, rbm in zip(untrained.coefs_[:2], untrained.dbn_.rbms_, strict=True):
        np.testing.assert_allclose(dense, rbm.components_.T, atol=1e-7)
    assert untrained.coefs_[2].shape == (6, 10)
    assert untrained.out_activation_ == "softmax" and untrained.activation == "logistic"
    clf = gn.DBNClassifier((10,), max_iter=30, learning_rate_init=0.05, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, y)
    assert clf.score(X, y) > 0.8
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(clf)).predict(X), clf.predict(X))
    assert "activation" not in clf.get_params() and clf.get_params()["pretrain_n_iter"] == 2


def test_errors_before_any_work(digits):
    X, y = digits
    with pytest.raises(ValueError, match=r"in \[0, 1\] for Bernoulli"):
        gn.DBN((3,)).fit(X * 16)
    clf = gn.DBNClassifier((3,))
    with pytest.raises(ValueError, match=r"in \[0, 1\] for Bernoulli"):
        clf.fit(X * 16, y)
    assert not hasattr(clf, "model_") and not hasattr(clf, "dbn_")
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        gn.DBN((0,)).fit(X)
    with pytest.raises(ValueError, match="n_iter"):
        gn.DBN((3,), n_iter=-1).fit(X)
    with pytest.raises(ValueError, match="visible"):
        gn.DBNClassifier((3,), visible="binary").fit(X, y)
    with pytest.raises(gn.NotFittedError):
        gn.DBN().transform(X)
    dbn = gn.DBN((3,), n_iter=1).fit(X)
    with pytest.raises(ValueError, match="expecting 64 features"):
        dbn.transform(X[:, :5])


def test_mlp_digits_example_runs(monkeypatch, capsys):
    import runpy
    import sys
    from pathlib import Path

    pytest.importorskip("sklearn")
    script = Path(__file__).resolve().parent.parent / "examples" / "mlp_digits.py"
    argv = ["--epochs", "2", "--repeats", "1", "--dbn-epochs", "1", "--seeds", "1", "--dbn", "8"]
    monkeypatch.setattr(sys, "argv", [script.name, *argv])
    monkeypatch.setattr(gn.DBNClassifier, "__init__", _short_pretraining(gn.DBNClassifier.__init__))
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert "median ratio" in out and "GridSearchCV" in out and "DBN pretraining" in out


def _short_pretraining(init):
    def short(self, *args, **kwargs):
        init(self, *args, **{**kwargs, "pretrain_n_iter": 1})

    return short


@pytest.mark.cuda
def test_cuda_follows_the_cpu():
    X, y = gn.datasets.load_digits()
    X, y = X[:6, 20:25] / 16, y[:6] % 2
    kw = dict(n_iter=1, batch_size=6, random_state=0, dtype="float64")
    cpu = gn.DBN((3, 2), device="cpu", **kw).fit(X)
    gpu = gn.DBN((3, 2), device="cuda", **kw).fit(X)
    np.testing.assert_allclose(gpu.transform(X), cpu.transform(X), rtol=1e-9)
    kw = dict(pretrain_n_iter=1, pretrain_batch_size=6, max_iter=1, random_state=0, dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cpu = gn.DBNClassifier((3,), device="cpu", **kw).fit(X, y)
        gpu = gn.DBNClassifier((3,), device="cuda", **kw).fit(X, y)
    assert gpu.loss_ == pytest.approx(cpu.loss_, rel=1e-9)
    np.testing.assert_allclose(gpu.predict_proba(X), cpu.predict_proba(X), rtol=1e-9)
