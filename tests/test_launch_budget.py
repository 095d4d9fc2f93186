"""Launch budgets on CUDA, counted with gn.profile() under the simulator: a
3-layer perceptron's training step and prediction (small shapes; the counts
do not depend on them while every product fits the small tile)."""

import numpy as np
import pytest

import gpunet as gn
from gpunet import losses, nn, optim

pytestmark = pytest.mark.cuda

#: What one step of a 3-layer perceptron may launch at most.
STEP_BUDGET = 12


def perceptron():
    return nn.Sequential(
        nn.Dense(6, 5, "relu", seed=0, device="cuda"),
        nn.Dense(5, 4, "tanh", seed=1, device="cuda"),
        nn.Dense(4, 3, None, seed=2, device="cuda"),
    )


def data(rows=8):
    rng = np.random.default_rng(0)
    return rng.random((rows, 6), dtype=np.float32), rng.integers(0, 3, rows)


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
        lambda ps: optim.AdamW(ps, lr=0.01),
    ],
    ids=["sgd", "adamw"],
)
def test_training_step_launches(make_optimizer):
    """Forward (3 products with their bias and activation), softmax
    cross-entropy with its mean (1), backward (the gradient pass fused into
    each weight product: 3, and 2 input-gradient products), and the update of
    the one flat buffer (1): 10, with no zero-fill."""
    model = perceptron()
    opt = make_optimizer(model.parameters())
    loss = losses.SoftmaxCrossEntropy()
    X, y = (gn.to_device(a, "cuda") for a in data())
    record = gn.to_device(np.zeros(1, np.float32), "cuda")

    def step():
        grad = loss.into(model.forward(X), y, record)
        model.backward(grad, input_grad=False)
        opt.step()
        opt.zero_grad()

    step()  # the first step also makes the optimizer's state
    with gn.profile() as prof:
        step()
    update = "optim.adam" if isinstance(opt, optim.Adam) else "optim.sgd"
    assert prof.by_kernel == {
        "dense.forward_relu": 1,
        "dense.forward_tanh": 1,
        "dense.forward_linear": 1,
        "losses.cross_entropy_labels_32": 1,
        "dense.weight_grad_linear": 1,
        "dense.weight_grad_tanh": 1,
        "dense.weight_grad_relu": 1,
        "dense.matmul_nt": 2,
        update: 1,
    }
    assert prof.launches == 10 <= STEP_BUDGET
    assert prof.copies == []


def test_fit_steps_stay_within_the_budget():
    """A fit's steady step also counts its hits (one launch more): the
    launches of a 3-step epoch less those of a 1-step one, per step."""
    model = perceptron()
    opt = optim.SGD(model.parameters(), lr=0.1)
    loss = losses.SoftmaxCrossEntropy()
    model.fit(*data(4), loss=loss, optimizer=opt, batch_size=4, verbose=0)  # makes SGD's state
    counts = {}
    for rows in (4, 12):  # what fit launches besides its steps cancels out
        X, y = data(rows)
        with gn.profile() as prof:
            model.fit(X, y, loss=loss, optimizer=opt, batch_size=4, verbose=0, seed=0)
        counts[rows] = prof.by_kernel
    per_step = {
        name: (counts[12].get(name, 0) - counts[4].get(name, 0)) / 2
        for name in counts[12].keys() | counts[4].keys()
    }
    assert per_step["metrics.argmax_hits_labels"] == 1
    assert sum(per_step.values()) == 11 <= STEP_BUDGET, per_step


def test_predict_is_one_launch_per_layer():
    model = perceptron()
    X, _ = data()
    model.predict(X)
    with gn.profile() as prof:
        out = model.predict(X, batch_size=8)
    assert prof.by_kernel == {
        "dense.forward_relu": 1,
        "dense.forward_tanh": 1,
        "dense.forward_linear": 1,
    }
    np.testing.assert_allclose(
        gn.to_numpy(out), gn.to_numpy(model.to("cpu").predict(X)), rtol=1e-5, atol=1e-6
    )
