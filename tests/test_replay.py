"""Host step replay (gpunet.replay): fit's CPU training steps run from their
recorded kernel calls give the weights, history and running statistics of
eager steps, bit for bit; steps a replay could not reproduce run eagerly."""

import numpy as np
import pytest

import gpunet as gn
from gpunet import losses, nn, optim, replay


def data(rows=18, features=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((rows, features), dtype=np.float32), rng.integers(0, classes, rows)


def classifier():
    return nn.Sequential(nn.Dense(5, 6, "relu", seed=0), nn.BatchNorm1d(6), nn.Dense(6, 3, seed=1))


def regressor():
    return nn.Sequential(
        nn.Dense(5, 6, seed=0), nn.Tanh(), nn.Dense(6, 4, seed=1), nn.LeakyReLU(0.2),
        nn.Dense(4, 3, seed=2), nn.Sigmoid(),
    )  # fmt: skip


def binary():
    return nn.Sequential(nn.Dense(5, 6, seed=0), nn.ReLU(), nn.Dense(6, 3, seed=1))


CASES = {
    "batch norm, cross-entropy, SGD": (
        classifier, losses.SoftmaxCrossEntropy, lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
        lambda X, y: y,
    ),
    "activation layers, MSE, Adam": (
        regressor, losses.MSE, lambda ps: optim.Adam(ps, lr=0.01),
        lambda X, y: np.eye(3, dtype=np.float32)[y],
    ),
    "binary cross-entropy, AdamW": (
        binary, losses.BinaryCrossEntropy, lambda ps: optim.AdamW(ps, lr=0.01, weight_decay=0.1),
        lambda X, y: (X[:, :3] > 0.5).astype(np.float32),
    ),
}  # fmt: skip


def counted_forwards(monkeypatch, cls=nn.Dense):
    """A list that grows by one at each call of cls.forward."""
    calls, forward = [], cls.forward

    def counting(self, x):
        calls.append(1)
        return forward(self, x)

    monkeypatch.setattr(cls, "forward", counting)
    return calls


def fit(make_model, make_loss, make_optimizer, target, epochs=2, rows=18, **kw):
    model = make_model()
    X, y = data(rows)
    history = model.fit(
        X, target(X, y), loss=make_loss(), optimizer=make_optimizer(model.parameters()),
        epochs=epochs, batch_size=4, verbose=0, seed=5, **kw,
    )  # fmt: skip
    return model, history


@pytest.mark.parametrize("case", CASES)
def test_replayed_steps_equal_eager_steps_bit_for_bit(case, monkeypatch):
    make_model, make_loss, make_optimizer, target = CASES[case]
    with monkeypatch.context() as eager:
        eager.setattr(replay, "MAX_RECORDS", 0)  # no record: every step eager
        expected, expected_history = fit(make_model, make_loss, make_optimizer, target)
    forwards = counted_forwards(monkeypatch)
    model, history = fit(make_model, make_loss, make_optimizer, target)
    for name, value in expected.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[name], value, err_msg=name)
    assert history.history == expected_history.history
    # fit checks the targets against one row's outputs first. Then batches
    # of 4, 4, 4, 4 and 2 rows in each of 2 epochs: the first two full
    # batches run eagerly and are recorded, the next two are replayed, and
    # the short last one runs eagerly (a batch view of another size).
    dense_layers = sum(isinstance(layer, nn.Dense) for layer in model.layers)
    assert len(forwards) == (1 + 2 * 3) * dense_layers


def test_steps_that_draw_random_numbers_run_eagerly(monkeypatch):
    def make():
        return nn.Sequential(nn.Dense(5, 6, "relu", seed=0), nn.Dropout(0.25, seed=3),
                             nn.Dense(6, 3, seed=1))  # fmt: skip

    forwards = counted_forwards(monkeypatch)
    fit(make, losses.SoftmaxCrossEntropy, lambda ps: optim.SGD(ps, lr=0.1), lambda X, y: y)
    assert len(forwards) == (1 + 2 * 5) * 2  # the check, then every step, both layers


def test_a_step_that_branches_on_a_kernels_result_runs_eagerly(monkeypatch):
    """Binary cross-entropy on probabilities counts the values outside [0, 1]
    and raises on any: a replay, which does not branch, must not skip that."""
    forwards = counted_forwards(monkeypatch)

    def probabilities():
        return nn.Sequential(nn.Dense(5, 3, seed=0), nn.Sigmoid())

    def bce():
        return losses.BinaryCrossEntropy(from_logits=False)

    def target(X, y):
        return (X[:, :3] > 0.5).astype(np.float32)

    fit(probabilities, bce, lambda ps: optim.SGD(ps, lr=0.1), target)
    assert len(forwards) == 1 + 2 * 5

    def identity():  # outputs outside [0, 1] from some step on
        return nn.Sequential(nn.Dense(5, 3, seed=0), nn.ReLU())

    with pytest.raises(ValueError, match="expected probabilities in \\[0, 1\\]"):
        fit(identity, bce, lambda ps: optim.SGD(ps, lr=0.1), target)


def test_only_classes_that_declare_it_are_replayed(monkeypatch):
    class Scaled(nn.Dense):  # inherits host_replay, but must declare it itself
        def forward(self, x):
            return super().forward(x * 2)

    assert replay.replayable(nn.Sequential(nn.Dense(5, 3)))
    assert not replay.replayable(nn.Sequential(nn.Dense(5, 3), Scaled(3, 3)))
    assert not replay.replayable(Scaled(5, 3))

    class Doubled(losses.MSE):
        pass

    assert replay.replayable(losses.MSE()) and not replay.replayable(Doubled())
    forwards = counted_forwards(monkeypatch, Scaled)
    model = nn.Sequential(Scaled(5, 3, seed=0))
    X, y = data()
    model.fit(X, np.eye(3, dtype=np.float32)[y], loss="mse", optimizer="sgd", epochs=1,
              batch_size=4, verbose=0, seed=5)  # fmt: skip
    assert len(forwards) == 1 + 5


def test_host_replay_runs_recorded_calls_only_on_the_recorded_inputs():
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    y = np.empty_like(x)
    steps = []

    def step(a):
        steps.append(1)
        return gn.ops.relu(a, out=y)

    run = replay.HostReplay(step, [])
    for _ in range(4):
        assert run(x) is y
    assert len(steps) == 2  # two records agreed; the next two calls replayed
    x[...] = -x
    run(x)  # a replay reads the arrays as they are now
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    assert len(steps) == 2
    other = x.copy()
    run(other)  # another input array: recorded, not replayed
    assert len(steps) == 3


def test_host_replay_gives_up_on_a_step_that_allocates():
    x = np.ones((2, 3), np.float32)
    steps = []

    def step(a):
        steps.append(1)
        return gn.ops.relu(a)  # a new output array each call

    run = replay.HostReplay(step, [])
    for _ in range(replay.MAX_RECORDS + 3):
        np.testing.assert_array_equal(run(x), 1)
    assert len(steps) == replay.MAX_RECORDS + 3


def test_an_optimizer_step_inside_a_recorded_step_is_recorded():
    # The CPU optimizers run their kernel alone once a buffer is checked, but
    # inside a recorded step through the registry, so that replays update too.
    def run(replayed):
        p = gn.nn.Parameter(np.linspace(-1, 1, 6, dtype=np.float32))
        opt = optim.SGD([p], lr=0.1, momentum=0.9)
        grad = np.linspace(1, 2, 6, dtype=np.float32)

        def step(g):
            p.grad[...] = g
            opt.step()

        call = replay.HostReplay(step, [p]) if replayed else step
        for _ in range(6):
            call(grad)
        return p.data.copy(), opt._first

    eager, replayed = run(False), run(True)
    np.testing.assert_array_equal(replayed[0], eager[0])
    assert replayed[1] is eager[1] is False


def test_mlp_classifier_replays_its_steps_bit_for_bit(monkeypatch):
    X, y = data(rows=50, features=5, classes=3, seed=1)

    def fitted():  # batch norm: a network that compiled epochs (kernels.mlp) do not train
        return gn.MLPClassifier(
            (6,), batch_size=8, max_iter=3, random_state=0, batch_norm=True
        ).fit(X, y)

    with monkeypatch.context() as eager:
        eager.setattr(replay, "MAX_RECORDS", 0)
        with pytest.warns(gn.ConvergenceWarning):
            expected = fitted()
    forwards = counted_forwards(monkeypatch)
    with pytest.warns(gn.ConvergenceWarning):
        clf = fitted()
    for got, want in zip(clf.coefs_ + clf.intercepts_, expected.coefs_ + expected.intercepts_,
                         strict=True):  # fmt: skip
        np.testing.assert_array_equal(got, want)
    assert clf.loss_curve_ == expected.loss_curve_
    # 3 epochs of six batches of 8 rows and one of 2, through 2 Dense layers:
    # each batch size is recorded twice (the full batch in the first epoch,
    # the short one in the first two epochs); the rest is replayed.
    assert len(forwards) == (2 + 2) * 2


def test_a_replay_inside_a_recorded_step_runs_its_kernels_through_the_record():
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    y, z = np.empty_like(x), np.empty_like(x)
    inner = replay.HostReplay(lambda a: gn.ops.relu(a, out=y), [])
    for _ in range(3):
        inner(x)  # recorded twice, then replayed

    def outer_step(a):
        inner(a)
        return gn.ops.tanh(y, out=z)

    outer = replay.HostReplay(outer_step, [])
    for _ in range(3):
        outer(x)
    x[...] = -x
    outer(x)  # replayed: the relu must be in the outer record
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    np.testing.assert_allclose(z, np.tanh(np.maximum(x, 0)), rtol=1e-6)
