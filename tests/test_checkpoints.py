"""Checkpoints and resuming: the optimizers', schedules' and generators'
state_dict / load_state_dict, ``model.save(path, optimizer=opt)``, the
ModelCheckpoint callback, and ``fit(..., resume=path)``, which continues an
interrupted run (at an epoch's end or in mid-epoch) to the same weights and
History as a run never interrupted, bit for bit on the CPU."""

import json

import numpy as np
import pytest

import gpunet as gn
from gpunet import nn
from gpunet.serialization import ARCHITECTURE
from gpunet.training import EarlyStopping, LearningRateScheduler, ModelCheckpoint

SCE = gn.losses.SoftmaxCrossEntropy


def problem(n=61, features=4, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, features)).astype(np.float32)
    return X, np.argmax(X[:, :classes], axis=1).astype(np.int64)


def mlp(dtype="float32", device="cpu"):
    return nn.Sequential(
        nn.Dense(4, 8, "relu", dtype, seed=1, device=device),
        nn.Dense(8, 3, dtype=dtype, seed=2, device=device),
    )


def noisy_model(device="cpu"):
    """Batch normalization, a seeded dropout and one drawing from the default generator."""
    return nn.Sequential(
        nn.Dense(4, 16, seed=1, device=device),
        nn.BatchNorm1d(16, device=device),
        nn.ReLU(),
        nn.Dropout(0.3, seed=5),
        nn.Dense(16, 8, "relu", seed=2, device=device),
        nn.Dropout(0.2),
        nn.Dense(8, 3, seed=3, device=device),
    )


def assert_same_arrays(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


OPTIMIZERS = {
    "sgd": lambda params: gn.optim.SGD(params, lr=0.1),
    "momentum": lambda params: gn.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3),
    "nesterov": lambda params: gn.optim.SGD(params, lr=0.1, momentum=0.8, nesterov=True),
    "adam": lambda params: gn.optim.Adam(params, lr=0.01, betas=(0.8, 0.99), eps=1e-7),
    "adamw": lambda params: gn.optim.AdamW(params, lr=0.01),
    "groups": lambda params: gn.optim.AdamW(
        [{"params": params[0::2]}, {"params": params[1::2], "lr": 0.02, "weight_decay": 0.0}],
        lr=0.01,
    ),
}


def steps(model, opt, n, seed=0):
    X, y = problem(16, seed=seed)
    loss_fn = SCE()
    for _ in range(n):
        _, grad = loss_fn(
            model.forward(gn.to_device(X, model.device)), gn.to_device(y, model.device)
        )
        model.backward(grad)
        opt.step()
        opt.zero_grad()


# --- state_dict of optimizers, schedules, generators ----------------------------------


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_state_dict_continues_bit_for_bit(name):
    model, opt = mlp(), None
    opt = OPTIMIZERS[name](model.parameters())
    steps(model, opt, 3)
    opt.lr = 0.05  # as a schedule would
    state = opt.state_dict()
    as_json = json.loads(json.dumps({k: v for k, v in state.items() if k != "state"}))
    arrays = {str(i): buffers for i, buffers in state["state"].items()}  # JSON's keys
    copy = mlp()
    copy.load_state_dict(model.state_dict())
    other = OPTIMIZERS[name](copy.parameters())
    other.load_state_dict({**as_json, "state": arrays})
    assert other.lr == opt.lr and [g["lr"] for g in other.param_groups] == [
        g["lr"] for g in opt.param_groups
    ]
    steps(model, opt, 2, seed=1)
    steps(copy, other, 2, seed=1)
    assert_same_arrays(copy.state_dict(), model.state_dict())
    other.lr = 0.5
    opt.lr = 0.5
    assert [g["lr"] for g in other.param_groups] == [g["lr"] for g in opt.param_groups]


def test_optimizer_state_dict_layout():
    model = mlp()
    opt = gn.optim.Adam(model.parameters(), lr=0.01)
    empty = opt.state_dict()
    assert empty["state"] == {} and empty["counters"] == {"steps": 0}
    steps(model, opt, 2)
    state = opt.state_dict()
    assert state["class"] == "Adam"
    assert state["settings"] == {"betas": [0.9, 0.999], "eps": 1e-8}
    assert state["counters"] == {"steps": 2}
    assert state["param_groups"] == [
        {"params": [0, 1, 2, 3], "lr": 0.01, "weight_decay": 0.0, "lr_scale": 1.0}
    ]
    assert sorted(state["state"]) == [0, 1, 2, 3]
    for i, p in enumerate(opt.params):
        assert state["state"][i]["m"].shape == p.shape and state["state"][i]["m"].dtype == p.dtype
    kept = state["state"][0]["m"].copy()
    steps(model, opt, 1)
    np.testing.assert_array_equal(state["state"][0]["m"], kept)  # a copy, not a view


def test_optimizer_state_survives_repacking():
    """State read after the model was packed anew (its buffers replaced) is the state
    the next step carries over."""
    model = mlp()
    opt = gn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    steps(model, opt, 2)
    before = opt.state_dict()["state"]
    gn.parameter.pack(model.parameters())
    assert_same_arrays(
        {str(i): b["buf"] for i, b in opt.state_dict()["state"].items()},
        {str(i): b["buf"] for i, b in before.items()},
    )


def _state(name="adam"):
    model = mlp()
    opt = OPTIMIZERS[name](model.parameters())
    steps(model, opt, 1)
    return opt.state_dict()


def _without(key):
    def change(state):
        del state[key]

    return change


BAD_OPTIMIZER_STATES = {
    "other class": (lambda s: _state("momentum"), "Adam optimizer"),
    "no counters": (_without("counters"), "state_dict with"),
    "other groups": (
        lambda s: s["param_groups"][0].__setitem__("params", [0, 1]),
        "parameters",
    ),
    "negative lr": (lambda s: s["param_groups"][0].__setitem__("lr", -1.0), "lr"),
    "bad betas": (lambda s: s["settings"].__setitem__("betas", [0.9, 1.5]), "betas"),
    "bad steps": (lambda s: s["counters"].__setitem__("steps", -1), "steps"),
    "parameter out of range": (lambda s: s["state"].__setitem__(7, s["state"][0]), "parameter 7"),
    "missing buffer": (lambda s: s["state"][0].pop("v"), "buffers"),
    "misshapen buffer": (
        lambda s: s["state"][1].__setitem__("m", np.zeros(3, np.float32)),
        "shape",
    ),
}


@pytest.mark.parametrize("case", list(BAD_OPTIMIZER_STATES))
def test_optimizer_load_state_dict_refuses_before_changing_anything(case):
    change, match = BAD_OPTIMIZER_STATES[case]
    model = mlp()
    opt = gn.optim.Adam(model.parameters(), lr=0.01)
    steps(model, opt, 2)
    before = opt.state_dict()
    state = _state()
    changed = change(state)
    state = changed if isinstance(changed, dict) else state
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(state)
    after = opt.state_dict()
    assert {k: v for k, v in after.items() if k != "state"} == {
        k: v for k, v in before.items() if k != "state"
    }
    for i in before["state"]:
        assert_same_arrays(after["state"][i], before["state"][i])


def test_schedule_state_dict():
    opt = gn.optim.SGD(mlp().parameters(), lr=0.1)
    schedule = gn.optim.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(3):
        schedule.step()
    state = schedule.state_dict()
    assert state == {"base_lr": 0.1, "epoch": 3}
    other = gn.optim.StepLR(gn.optim.SGD(mlp().parameters(), lr=1.0), step_size=2, gamma=0.5)
    other.load_state_dict(state)
    assert other.step() == schedule.step() == 0.1 * 0.5**2
    with pytest.raises(ValueError, match="epoch"):
        other.load_state_dict({"base_lr": 0.1, "epoch": -1})
    assert other.epoch == 4


def test_generator_state_dict():
    g = gn.random.Generator(5)
    g.uniform(7, device="cpu")
    state = g.state_dict()
    expected = g.uniform(5, device="cpu")
    other = gn.random.Generator(1)
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.uniform(5, device="cpu"), expected)
    for bad in ({"seed": 1}, {"seed": -1, "offset": 0}, {"seed": 1, "offset": 2.5}, [1, 2]):
        with pytest.raises(ValueError):
            other.load_state_dict(bad)
    assert other.state_dict() == g.state_dict()


# --- resuming ----------------------------------------------------------------------------


class Interrupt(SCE):
    """The softmax cross-entropy, raising KeyboardInterrupt at its ``at``-th training call
    (after the step's forward: running statistics and dropout streams have moved)."""

    def __init__(self, at):
        super().__init__()
        self.at, self.calls = at, 0

    def into(self, *args):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return super().into(*args)


def run(model, epochs, *, loss=None, callbacks=(), resume=None, optimizer="adam", **kwargs):
    """A fit with every kind of state: shuffling, a schedule, early stopping that
    keeps the best weights, validation, and the optimizer named."""
    X, y = problem()
    make = {
        "adam": lambda p: gn.optim.Adam(p, lr=0.01),
        "sgd": lambda p: gn.optim.SGD(p, lr=0.05, momentum=0.9),
    }[optimizer]
    callbacks = [
        LearningRateScheduler(gn.optim.StepLR, step_size=1, gamma=0.7),
        EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True),
        *callbacks,
    ]
    kwargs = {"batch_size": 6, "validation_split": 0.2, "verbose": 0, "seed": 3, **kwargs}
    return model.fit(
        X, y, loss=loss or SCE(), optimizer=make(model.parameters()), epochs=epochs,
        callbacks=callbacks, resume=resume, **kwargs,
    )  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted():
    """Weights and History of a 4-epoch run of the noisy model, per optimizer."""
    results = {}
    for optimizer in ("adam", "sgd"):
        gn.manual_seed(7)
        model = noisy_model()
        history = run(model, 4, optimizer=optimizer)
        results[optimizer] = (model.state_dict(), history)
    return results


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_resume_from_an_epoch_checkpoint_matches_an_uninterrupted_run(
    tmp_path, uninterrupted, optimizer
):
    gn.manual_seed(7)
    checkpoint = ModelCheckpoint(tmp_path / "ckpt-{epoch}")
    run(noisy_model(), 2, callbacks=[checkpoint], optimizer=optimizer)
    assert checkpoint.saved == [str(tmp_path / "ckpt-1.npz"), str(tmp_path / "ckpt-2.npz")]
    gn.manual_seed(123)  # the checkpoint holds the default generator's position
    resumed = noisy_model()
    history = run(resumed, 4, resume=tmp_path / "ckpt-2.npz", optimizer=optimizer)
    weights, expected = uninterrupted[optimizer]
    assert_same_arrays(resumed.state_dict(), weights)
    assert history.epoch == expected.epoch == [0, 1, 2, 3]
    assert history.history == expected.history
    assert resumed.training is False


def test_resume_after_an_interrupt_in_mid_epoch_matches_an_uninterrupted_run(
    tmp_path, uninterrupted
):
    gn.manual_seed(7)
    model = noisy_model()
    with pytest.raises(KeyboardInterrupt):
        run(model, 4, loss=Interrupt(at=17))  # 8 steps and a validation an epoch
    model.save(tmp_path / "interrupted", optimizer=model.optimizer)
    saved = json.loads(str(np.load(tmp_path / "interrupted.npz")[ARCHITECTURE]))
    assert saved["checkpoint"]["fit"]["epoch"] == 1 and saved["checkpoint"]["fit"]["step"] == 7
    gn.manual_seed(99)
    resumed = noisy_model()
    history = run(resumed, 4, resume=tmp_path / "interrupted.npz")
    weights, expected = uninterrupted["adam"]
    assert_same_arrays(resumed.state_dict(), weights)
    assert history.history == expected.history


def test_resume_continues_the_callbacks(tmp_path):
    checkpoint = ModelCheckpoint(tmp_path / "ckpt-{epoch}", keep=2)
    stop = EarlyStopping(monitor="loss", patience=1)
    run(mlp(), 3, callbacks=[checkpoint, stop])
    assert checkpoint.saved == [str(tmp_path / f"ckpt-{e}.npz") for e in (2, 3)]
    checkpoint, stop = ModelCheckpoint(tmp_path / "ckpt-{epoch}", keep=2), EarlyStopping("loss")
    run(mlp(), 5, callbacks=[checkpoint, stop], resume=tmp_path / "ckpt-3.npz")
    assert checkpoint.saved == [str(tmp_path / f"ckpt-{e}.npz") for e in (4, 5)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-4.npz", "ckpt-5.npz"]
    assert stop.best is not None


def test_a_run_that_stopped_early_resumes_as_stopped(tmp_path):
    X, y = problem()
    model = mlp()
    opt = gn.optim.SGD(model.parameters(), lr=0.0)  # in one order, never improves
    stop = EarlyStopping(monitor="loss", patience=1)
    checkpoint = ModelCheckpoint(tmp_path / "last")
    history = model.fit(
        X, y, loss=SCE(), optimizer=opt, epochs=10, verbose=0, shuffle=False,
        callbacks=[stop, checkpoint],
    )  # fmt: skip
    assert len(history.epoch) == 2
    again = mlp()
    opt = gn.optim.SGD(again.parameters(), lr=0.0)
    resumed = again.fit(
        X, y, loss=SCE(), optimizer=opt, epochs=10, verbose=0, shuffle=False,
        resume=tmp_path / "last.npz",
    )  # fmt: skip
    assert resumed.epoch == [0, 1]


def test_resume_from_a_checkpoint_saved_outside_fit(tmp_path):
    """Without a fit's state: the weights, optimizer and streams, from epoch 0."""
    model = mlp()
    opt = gn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    steps(model, opt, 3)
    model.save(tmp_path / "manual", optimizer=opt)
    X, y = problem()
    copy = mlp()
    history = copy.fit(
        X, y, loss=SCE(), optimizer=gn.optim.SGD(copy.parameters(), lr=0.1, momentum=0.9),
        epochs=1, verbose=0, shuffle=False, resume=tmp_path / "manual.npz",
    )  # fmt: skip
    model.fit(X, y, loss=SCE(), optimizer=opt, epochs=1, verbose=0, shuffle=False)
    assert history.epoch == [0]
    assert_same_arrays(copy.state_dict(), model.state_dict())


def test_model_checkpoint_every_and_best(tmp_path):
    scores = iter([3.0, 1.0, 2.0, 0.5, 0.7, 0.2])

    class Score(gn.training.Callback):
        def on_epoch_end(self, epoch, logs):
            logs["score"] = next(scores)

    every = ModelCheckpoint(tmp_path / "every-{epoch}", every=2)
    best = ModelCheckpoint(tmp_path / "best-{epoch}-{score:.1f}.npz", monitor="score")
    run(mlp(), 6, callbacks=[best, Score(), every])  # best writes after Score logs
    assert [p.rsplit("/", 1)[1] for p in every.saved] == [
        "every-2.npz",
        "every-4.npz",
        "every-6.npz",
    ]
    assert [p.rsplit("/", 1)[1] for p in best.saved] == [
        "best-1-3.0.npz", "best-2-1.0.npz", "best-4-0.5.npz", "best-6-0.2.npz",
    ]  # fmt: skip
    assert best.best == 0.2
    loaded = gn.load(best.saved[-1])
    assert isinstance(loaded.loss, SCE)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"every": 0}, ValueError),
        ({"keep": 0}, ValueError),
        ({"monitor": "loss", "mode": "up"}, ValueError),
    ],
)
def test_model_checkpoint_bad_arguments(tmp_path, kwargs, error):
    with pytest.raises(error):
        ModelCheckpoint(tmp_path / "x", **kwargs)


def test_model_checkpoint_checks_before_training(tmp_path):
    model = mlp()
    before = model.state_dict()
    with pytest.raises(KeyError, match="val_loss"):
        run(model, 2, callbacks=[ModelCheckpoint(tmp_path / "x", monitor="val_loss")],
            validation_split=0.0)  # fmt: skip
    with pytest.raises(ValueError, match="fill in"):
        run(model, 2, callbacks=[ModelCheckpoint(tmp_path / "x-{epoch:q}")])
    assert_same_arrays(model.state_dict(), before)
    assert model.loss is None and list(tmp_path.iterdir()) == []


def test_a_checkpoint_loads_as_a_model_that_evaluates(tmp_path):
    X, y = problem()
    model = mlp()
    run(model, 1, callbacks=[ModelCheckpoint(tmp_path / "ckpt")])
    loaded = gn.load(tmp_path / "ckpt.npz")
    assert loaded.evaluate(X, y) == model.evaluate(X, y)


def _checkpoint(tmp_path):
    model = mlp()
    run(model, 1, callbacks=[ModelCheckpoint(tmp_path / "ckpt")])
    return tmp_path / "ckpt.npz"


def test_resume_refusals_change_nothing(tmp_path):
    path = _checkpoint(tmp_path)
    X, y = problem()
    mlp().save(tmp_path / "plain")
    wider = nn.Sequential(nn.Dense(4, 9, "relu", seed=1), nn.Dense(9, 3, seed=2))
    cases = [
        (mlp(), "adam", tmp_path / "plain.npz", "optimizer's state"),
        (wider, "adam", path, "architecture"),
        (mlp(), "sgd", path, "Adam"),
        (mlp(), "adam", tmp_path / "none.npz", None),
    ]
    for model, optimizer, resume, match in cases:
        before = model.state_dict()
        opt = {"adam": gn.optim.Adam, "sgd": gn.optim.SGD}[optimizer](model.parameters(), lr=0.1)
        error = FileNotFoundError if match is None else ValueError
        with pytest.raises(error, match=match):
            model.fit(X, y, loss=SCE(), optimizer=opt, epochs=2, verbose=0, resume=resume)
        assert_same_arrays(model.state_dict(), before)
        assert opt.state_dict()["state"] == {} and model.loss is None


def test_resume_in_mid_epoch_needs_the_same_batches(tmp_path):
    model = mlp()
    with pytest.raises(KeyboardInterrupt):
        run(model, 2, loss=Interrupt(at=4))
    model.save(tmp_path / "mid", optimizer=model.optimizer)
    with pytest.raises(ValueError, match="batch_size"):
        run(mlp(), 2, resume=tmp_path / "mid.npz", batch_size=5)


def dropout_model(device):
    """A seeded dropout and one drawing from the default generator, no batch
    normalization: the CUDA resume test's model (batch normalization's CUDA
    kernels cost the simulator seconds a step; its state resumes through
    ``state_dict`` as the weights do, checked on the CPU above)."""
    return nn.Sequential(
        nn.Dense(4, 8, "relu", seed=1, device=device),
        nn.Dropout(0.3, seed=5),
        nn.Dropout(0.2),
        nn.Dense(8, 3, seed=3, device=device),
    )


@pytest.mark.cuda
def test_resume_on_cuda(tmp_path):
    X, y = problem(16)  # 2 steps an epoch: the interruption falls in the second epoch's second
    results = []
    for interrupt in (False, True):
        gn.manual_seed(7)
        model = dropout_model("cuda")
        kwargs = {"batch_size": 8, "verbose": 0, "seed": 1, "epochs": 2}
        if interrupt:
            with pytest.raises(KeyboardInterrupt):
                model.fit(X, y, loss=Interrupt(at=4), optimizer="adam", **kwargs)
            model.save(tmp_path / "mid", optimizer=model.optimizer)
            model = dropout_model("cuda")
            gn.manual_seed(1)
            model.fit(X, y, loss=SCE(), optimizer="adam", resume=tmp_path / "mid", **kwargs)
        else:
            model.fit(X, y, loss=SCE(), optimizer="adam", **kwargs)
        results.append(model.state_dict())
    for k in results[0]:
        np.testing.assert_allclose(results[1][k], results[0][k], rtol=1e-6, atol=1e-7, err_msg=k)


def test_a_resumed_model_checkpoint_deletes_only_its_own_files(tmp_path):
    """The files a checkpoint says it kept come from the file: those outside the
    callback's folder are never deleted."""
    (tmp_path / "run").mkdir()
    precious = tmp_path / "precious.npz"
    precious.write_bytes(b"not yours")
    path = tmp_path / "run" / "ckpt-1.npz"
    run(mlp(), 1, callbacks=[ModelCheckpoint(tmp_path / "run" / "ckpt-{epoch}")])
    with np.load(path) as archive:
        entries = {k: archive[k] for k in archive.files}
    architecture = json.loads(str(entries[ARCHITECTURE]))
    for callback in architecture["checkpoint"]["fit"]["callbacks"]:
        if callback["class"] == "ModelCheckpoint":
            callback["state"]["saved"] = [str(precious), str(path)]
    entries[ARCHITECTURE] = np.array(json.dumps(architecture))
    np.savez(path, **entries)
    checkpoint = ModelCheckpoint(tmp_path / "run" / "ckpt-{epoch}", keep=1)
    run(mlp(), 3, callbacks=[checkpoint], resume=path)
    assert precious.read_bytes() == b"not yours"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["ckpt-3.npz"]
