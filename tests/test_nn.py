"""Layers and models: float64 gradient checks of every layer and loss (all
elements by central differences on the CPU, random directions on CUDA), a
training step on CUDA against the same step on the CPU, initialisation,
lazy zero_grad, and errors."""

import numpy as np
import pytest
from conftest import DEVICES, central_differences, count_device_allocations, put

import gpunet as gn
from gpunet import nn

ACTIVATION_LAYERS = [
    lambda: nn.ReLU(),
    lambda: nn.LeakyReLU(0.2),
    lambda: nn.Sigmoid(),
    lambda: nn.Tanh(),
    lambda: nn.Softmax(),
]
DENSE_ACTIVATIONS = [None, "relu", "leaky_relu", "sigmoid", "tanh"]
LOSSES = [
    (lambda: gn.losses.SoftmaxCrossEntropy(), "labels"),
    (lambda: gn.losses.SoftmaxCrossEntropy(), "probs"),
    (lambda: gn.losses.MSE(), "values"),
    (lambda: gn.losses.BinaryCrossEntropy(), "binary"),
    (lambda: gn.losses.BinaryCrossEntropy(from_logits=False), "binary"),
]
H = 1e-6  # the central-difference step (conftest.central_differences)


def host(x):
    return gn.to_numpy(x)


def weighted_sum(layer, x, r):
    """float(sum(layer(x) * r)): a scalar whose gradient w.r.t. the output is r."""
    return float(np.sum(host(layer.forward(x)) * r))


def inputs(shape, seed=0):
    """Inputs kept away from 0 so that relu's kink is never within H."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    return x + np.where(x >= 0, 0.05, -0.05)


def dense(in_features, out_features, activation=None, device="cpu", seed=1):
    layer = nn.Dense(in_features, out_features, activation, "float64", seed=seed, device=device)
    layer.bias.data = put(np.linspace(-0.3, 0.3, out_features), device)  # not all zero
    return layer


# --- CPU: every element by central differences ----------------------------------------


@pytest.mark.parametrize("make", ACTIVATION_LAYERS)
def test_activation_layer_gradients(make):
    layer = make()
    x, r = inputs((3, 5)), np.random.default_rng(1).standard_normal((3, 5))
    layer.forward(x)
    analytic = layer.backward(r).copy()
    numeric = central_differences(lambda: weighted_sum(layer, x, r), x)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(
    "layer, forward, backward",
    [
        (nn.ReLU, gn.ops.relu, gn.ops.relu_backward),
        (nn.LeakyReLU, gn.ops.leaky_relu, gn.ops.leaky_relu_backward),
        (nn.Sigmoid, gn.ops.sigmoid, gn.ops.sigmoid_backward),
        (nn.Tanh, gn.ops.tanh, gn.ops.tanh_backward),
        (nn.Softmax, gn.ops.softmax, gn.ops.softmax_backward),
        (nn.Step, gn.ops.step, gn.ops.step_backward),
    ],
)
def test_activation_layers_name_their_ops(layer, forward, backward):
    assert layer.forward_op is forward and layer.backward_op is backward
    assert layer().forward_op is forward  # a staticmethod: not bound to the layer


def test_step_layer_has_zero_gradient():
    layer = nn.Step()
    x = inputs((2, 3))
    np.testing.assert_array_equal(layer.forward(x), (x > 0).astype(float))
    np.testing.assert_array_equal(layer.backward(np.ones((2, 3))), np.zeros((2, 3)))


@pytest.mark.parametrize("activation", DENSE_ACTIVATIONS)
def test_dense_gradients(activation):
    layer = dense(5, 4, activation)
    x, r = inputs((3, 5)), np.random.default_rng(2).standard_normal((3, 4))
    layer.forward(x)
    dx = layer.backward(r).copy()
    f = lambda: weighted_sum(layer, x, r)  # noqa: E731
    np.testing.assert_allclose(dx, central_differences(f, x), rtol=1e-6, atol=1e-8)
    for p in layer.parameters():
        np.testing.assert_allclose(p.grad, central_differences(f, p.data), rtol=1e-6, atol=1e-8)


def _target(kind, shape, seed=3):
    rng = np.random.default_rng(seed)
    if kind == "labels":
        return rng.integers(0, shape[1], shape[0])
    if kind == "probs":
        t = rng.random(shape)
        return t / t.sum(axis=1, keepdims=True)
    if kind == "binary":
        return (rng.random(shape) < 0.5).astype(np.float64)
    return rng.standard_normal(shape)


def _head(loss_fn):
    """A last layer giving outputs the loss accepts (probabilities for BCE on probs)."""
    if getattr(loss_fn, "from_logits", True):
        return []
    return [nn.Sigmoid()]


@pytest.mark.parametrize("make_loss, kind", LOSSES)
def test_model_and_loss_gradients(make_loss, kind):
    loss_fn = make_loss()
    model = nn.Sequential(dense(4, 5, "tanh"), dense(5, 3, seed=2), *_head(loss_fn))
    x, t = inputs((6, 4)), _target(kind, (6, 3))

    def loss():
        return float(loss_fn(model.forward(x), t)[0])

    _, grad = loss_fn(model.forward(x), t)
    dx = model.backward(grad).copy()
    np.testing.assert_allclose(dx, central_differences(loss, x), rtol=1e-6, atol=1e-9)
    for p in model.parameters():
        np.testing.assert_allclose(
            p.grad, central_differences(loss, p.data), rtol=1e-6, atol=1e-9, err_msg=repr(p)
        )


# --- CUDA: random directional derivatives ---------------------------------------------


def directional_check(loss, slots, grads, device, seed=4):
    """(loss(a + h v) - loss(a - h v)) / 2h == sum(grad * v), every array a
    moved at once along its own random v (two loss evaluations in all)."""
    rng = np.random.default_rng(seed)
    bases = [host(slot[0]).copy() for slot in slots]
    directions = [rng.standard_normal(base.shape) for base in bases]
    values = []
    for sign in (1, -1):
        for slot, base, v in zip(slots, bases, directions, strict=True):
            slot[0] = put(base + sign * 1e-5 * v, device)
        values.append(loss())
    for slot, base in zip(slots, bases, strict=True):
        slot[0] = put(base, device)
    expected = sum(float(np.sum(host(g) * v)) for g, v in zip(grads, directions, strict=True))
    assert (values[0] - values[1]) / 2e-5 == pytest.approx(expected, rel=1e-6)


class _Slot:
    """A settable reference: slot[0] reads and writes ``obj[name]`` for a dict,
    else the attribute ``obj.name``."""

    def __init__(self, obj, name):
        self.obj, self.name = obj, name

    def __getitem__(self, i):
        if isinstance(self.obj, dict):
            return self.obj[self.name]
        return getattr(self.obj, self.name)

    def __setitem__(self, i, value):
        if isinstance(self.obj, dict):
            self.obj[self.name] = value
        else:
            setattr(self.obj, self.name, value)


@pytest.mark.cuda
@pytest.mark.parametrize(
    "make_loss, kind, activation",
    [(*LOSSES[0], "relu"), (*LOSSES[2], "sigmoid"), (*LOSSES[3], "tanh")],
)
def test_model_and_loss_gradients_on_cuda(make_loss, kind, activation):
    loss_fn = make_loss()
    model = nn.Sequential(dense(3, 4, activation, "cuda"), dense(4, 2, device="cuda", seed=2))
    box = {"x": put(inputs((2, 3)), "cuda")}
    t = put(_target(kind, (2, 2)), "cuda")

    def loss():
        return float(loss_fn(model.forward(box["x"]), t)[0])

    _, grad = loss_fn(model.forward(box["x"]), t)
    dx = model.backward(grad)
    params = model.parameters()
    slots = [_Slot(box, "x")] + [_Slot(p, "data") for p in params]
    grads = [dx] + [p.grad for p in params]
    directional_check(loss, slots, grads, "cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("make", [ACTIVATION_LAYERS[1], ACTIVATION_LAYERS[3], ACTIVATION_LAYERS[4]])
def test_activation_layer_gradients_on_cuda(make):
    layer = make()
    box = {"x": put(inputs((2, 5)), "cuda")}
    r = np.random.default_rng(1).standard_normal((2, 5))
    layer.forward(box["x"])
    dx = host(layer.backward(put(r, "cuda"))).copy()
    directional_check(lambda: weighted_sum(layer, box["x"], r), [_Slot(box, "x")], [dx], "cuda")


@pytest.mark.cuda
def test_training_step_on_cuda_matches_the_cpu():
    x = inputs((5, 6)).astype(np.float32)
    y = np.array([0, 2, 1, 2, 0])

    def step(device):
        model = nn.Sequential(
            nn.Dense(6, 4, "relu", seed=7, device=device), nn.Dense(4, 3, seed=8, device=device)
        )
        opt = gn.optim.Adam(model.parameters(), lr=0.01)
        loss_fn = gn.losses.SoftmaxCrossEntropy()
        loss, grad = loss_fn(model.forward(put(x, device)), put(y, device))
        model.backward(grad)
        opt.step()
        opt.zero_grad()
        return float(loss), [host(p.data) for p in model.parameters()]

    cpu_loss, cpu_params = step("cpu")
    cuda_loss, cuda_params = step("cuda")
    assert cuda_loss == pytest.approx(cpu_loss, rel=1e-6)
    for a, b in zip(cuda_params, cpu_params, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# --- initialisation, parameters, modes ------------------------------------------------


@pytest.mark.parametrize(
    "activation, init, bound",
    [
        ("relu", None, np.sqrt(6 / 400)),
        ("tanh", None, np.sqrt(6 / 500)),
        (None, "he", np.sqrt(6 / 400)),
    ],
)
def test_dense_initialisation(activation, init, bound):
    layer = nn.Dense(400, 100, activation, init=init, seed=3)
    w = layer.weight.data
    assert w.dtype == np.float32 and w.shape == (400, 100)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert np.var(w) == pytest.approx(bound**2 / 3, rel=0.02)  # U(-a, a)
    np.testing.assert_array_equal(layer.bias.data, np.zeros(100, np.float32))
    np.testing.assert_array_equal(nn.Dense(400, 100, activation, init=init, seed=3).weight.data, w)
    assert not np.array_equal(nn.Dense(400, 100, activation, init=init, seed=4).weight.data, w)


def test_unseeded_dense_follows_manual_seed():
    gn.manual_seed(11)
    a = nn.Dense(3, 2).weight.data
    gn.manual_seed(11)
    np.testing.assert_array_equal(nn.Dense(3, 2).weight.data, a)


@pytest.mark.parametrize("device", DEVICES)
def test_same_seed_same_weights_on_every_device(device):
    a = nn.Dense(7, 3, seed=5, device=device)
    np.testing.assert_array_equal(host(a.weight.data), nn.Dense(7, 3, seed=5).weight.data)
    assert str(a.weight.device) == ("cpu" if device == "cpu" else "cuda:0")


def test_zero_grad_is_lazy_and_backward_accumulates():
    layer = dense(3, 2)
    x, r = inputs((4, 3)), np.ones((4, 2))
    layer.forward(x)
    layer.backward(r)
    once = layer.weight.grad.copy()
    layer.forward(x)
    layer.backward(r)
    np.testing.assert_allclose(layer.weight.grad, 2 * once)
    layer.weight.zero_grad()
    np.testing.assert_array_equal(layer.weight.grad, np.zeros((3, 2)))
    layer.bias.zero_grad()
    layer.forward(x)
    layer.backward(r)
    np.testing.assert_allclose(layer.weight.grad, once)


def test_first_layer_can_skip_the_input_gradient():
    model = nn.Sequential(dense(3, 4, "relu"), dense(4, 2))
    x = inputs((5, 3))
    model.forward(x)
    assert model.backward(np.ones((5, 2)), input_grad=False) is None
    with_dx = nn.Sequential(dense(3, 4, "relu"), dense(4, 2))
    with_dx.forward(x)
    assert with_dx.backward(np.ones((5, 2))).shape == (5, 3)
    for p, q in zip(model.parameters(), with_dx.parameters(), strict=True):
        np.testing.assert_array_equal(p.grad, q.grad)


def test_sequential_parameters_modes_and_repr():
    model = nn.Sequential(nn.Dense(4, 3, "leaky_relu", alpha=0.2), nn.Tanh(), nn.Dense(3, 2))
    assert [p.shape for p in model.parameters()] == [(4, 3), (3,), (3, 2), (2,)]
    assert len(model) == 3 and isinstance(model[1], nn.Tanh)
    assert model.eval() is model and not any(layer.training for layer in model)
    assert model.train() is model and all(layer.training for layer in model)
    text = repr(model)
    assert "(0): Dense(in_features=4, out_features=3, activation='leaky_relu'" in text
    assert "alpha=0.2" in text and "(1): Tanh()" in text and "23 parameters on cpu" in text


def test_forward_reuses_its_output_for_the_same_batch_shape():
    layer = dense(3, 2)
    a = layer.forward(inputs((4, 3)))
    assert layer.forward(inputs((4, 3), seed=1)) is a
    assert layer.forward(inputs((5, 3))).shape == (5, 2)


@pytest.mark.cuda
def test_to_moves_parameters_between_devices():
    model = nn.Sequential(nn.Dense(3, 2, seed=1), nn.ReLU())
    before = model.predict(np.ones((2, 3), np.float32))
    assert model.to("cuda") is model and str(model.device) == "cuda:0"
    assert all(str(p.device) == "cuda:0" for p in model.parameters())
    np.testing.assert_allclose(model.predict(np.ones((2, 3), np.float32)), before, rtol=1e-6)
    model.to("cpu")
    assert isinstance(model[0].weight.data, np.ndarray)


# --- errors ---------------------------------------------------------------------------


def test_bad_layers_are_rejected():
    with pytest.raises(ValueError, match="positive integer in_features"):
        nn.Dense(0, 3)
    with pytest.raises(ValueError, match="activation"):
        nn.Dense(2, 3, "gelu")
    with pytest.raises(ValueError, match="init"):
        nn.Dense(2, 3, init="orthogonal")
    with pytest.raises(TypeError, match="float32 or float64"):
        nn.Dense(2, 3, dtype="int32")
    with pytest.raises(TypeError, match="expected layers"):
        nn.Sequential(nn.Dense(2, 3), "relu")
    with pytest.raises(TypeError, match="mix dtypes"):
        nn.Sequential(nn.Dense(2, 3), nn.Dense(3, 1, dtype="float64"))


def test_bad_inputs_are_rejected():
    layer = nn.Dense(4, 2)
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, 4\), got \(3, 5\)"):
        layer.forward(np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="2-D input"):
        layer.forward(np.zeros(4, np.float32))
    with pytest.raises(TypeError, match="float32 input, got float64"):
        layer.forward(np.zeros((3, 4)))
    with pytest.raises(RuntimeError, match="before forward"):
        nn.Dense(4, 2).backward(np.zeros((3, 2), np.float32))
    layer.forward(np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"grad_out of shape \(3, 2\)"):
        layer.backward(np.zeros((3, 3), np.float32))


@pytest.mark.cuda
def test_host_input_to_a_cuda_model_names_the_devices():
    layer = nn.Dense(4, 2, device="cuda")
    with pytest.raises(gn.DeviceError, match="x on cpu, weight on cuda"):
        layer.forward(np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="different devices"):
        nn.Sequential(layer, nn.Dense(2, 2, device="cpu"))


@pytest.mark.cuda
def test_cuda_training_allocates_no_device_memory_after_the_first_step(monkeypatch):

    x = put(inputs((4, 6)).astype(np.float32), "cuda")
    y = put(np.array([0, 2, 1, 2]), "cuda")
    model = nn.Sequential(
        nn.Dense(6, 5, "relu", seed=1, device="cuda"), nn.Dense(5, 3, seed=2, device="cuda")
    )
    opt = gn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = gn.losses.SoftmaxCrossEntropy()

    def step():
        loss, grad = loss_fn(model.forward(x), y)
        model.backward(grad)
        opt.step()
        opt.zero_grad()
        return loss

    step()
    allocations = count_device_allocations(monkeypatch)
    first = float(step())
    assert float(step()) < first
    assert allocations == []
