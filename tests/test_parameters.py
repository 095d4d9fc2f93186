"""Parameters in flat buffers: views, packing, assignment checks, and
optimizer steps of one launch per buffer (counted under the simulator)."""

import numpy as np
import pytest
from conftest import DEVICES, put

import gpunet as gn


def mlp(device, dtype=np.float32):
    gn.manual_seed(0)
    with gn.device(device):
        return gn.nn.Sequential(
            gn.nn.Dense(6, 8, activation="relu", dtype=dtype),
            gn.nn.Dense(8, 5, activation="tanh", dtype=dtype),
            gn.nn.Dense(5, 3, dtype=dtype),
        )


def host(a):
    return gn.to_numpy(a)


@pytest.mark.parametrize("device", DEVICES)
def test_a_model_keeps_its_parameters_in_one_pair_of_flat_buffers(device):
    model = mlp(device)
    params = model.parameters()
    data, grad = model.flat_parameters()
    assert data.shape == grad.shape == (sum(p.size for p in params),)
    assert data.dtype == grad.dtype == np.float32
    assert gn.to_device(data, device) is data  # on the model's device
    joined = np.concatenate([host(p.data).ravel() for p in params])
    np.testing.assert_array_equal(host(data), joined)
    # Writing the buffer changes the parameters: they are views into it.
    put_data = put(np.arange(data.shape[0], dtype=np.float32), device)
    if device == "cpu":
        data[...] = put_data
    else:
        data.copy_to_device(put_data)
    offset = 0
    for p in params:
        want = np.arange(offset, offset + p.size, dtype=np.float32).reshape(p.shape)
        np.testing.assert_array_equal(host(p.data), want)
        offset += p.size
    # Gradients too: a backward pass writes into the flat gradient buffer.
    x = put(np.ones((4, 6), np.float32), device)
    model.forward(x)
    model.backward(put(np.ones((4, 3), np.float32), device))
    assert np.abs(host(grad)).sum() > 0
    np.testing.assert_array_equal(
        host(grad), np.concatenate([host(p.grad).ravel() for p in params])
    )


def test_a_layer_of_a_model_views_its_part_of_the_model_buffer():
    model = mlp("cpu")
    data, _ = model.flat_parameters()
    layer_data, layer_grad = model[1].flat_parameters()
    start = model[0].weight.size + model[0].bias.size
    assert layer_data.shape == (8 * 5 + 5,)
    assert np.shares_memory(layer_data, data)
    np.testing.assert_array_equal(layer_data, data[start : start + 45])
    assert layer_grad.shape == layer_data.shape


def test_moving_a_model_keeps_values_and_one_buffer():
    model = mlp("cpu")
    before = model.state_dict()
    model.to("cpu")
    data, _ = model.flat_parameters()
    assert all(np.shares_memory(p.data, data) for p in model.parameters())
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_a_model_without_parameters_has_empty_buffers():
    data, grad = gn.nn.Sequential(gn.nn.ReLU()).flat_parameters()
    assert data.shape == grad.shape == (0,)


def test_assigning_data_copies_into_the_buffer():
    model = mlp("cpu")
    data, _ = model.flat_parameters()
    w = model[2].weight
    w.data = np.full(w.shape, 0.5, np.float32)
    assert np.shares_memory(w.data, data)
    np.testing.assert_array_equal(w.data, 0.5)


def test_assigning_another_shape_dtype_or_device_is_refused():
    p = gn.nn.Parameter(np.ones(3, np.float32), "w")
    p.grad[...] = 1
    with pytest.raises(ValueError, match=r"parameter w: expected an array of shape \(3,\)"):
        p.data = np.ones(10**6, np.float32)
    with pytest.raises(TypeError, match="expected dtype float32, got float64"):
        p.data = np.ones(3)
    with pytest.raises(TypeError, match="expected an array, got list"):
        p.data = [1.0, 2.0, 3.0]
    gn.optim.SGD([p], lr=0.1).step()  # the kernel sees the 3 elements it holds
    np.testing.assert_allclose(p.data, 0.9)


@pytest.mark.cuda
def test_assigning_a_host_array_to_a_gpu_parameter_is_refused():
    p = gn.nn.Parameter(put(np.ones(3, np.float32), "cuda"), "w")
    with pytest.raises(gn.DeviceError, match="expected an array on cuda:0, got one on cpu"):
        p.data = np.ones(3, np.float32)


def test_a_parameter_must_be_float():
    with pytest.raises(TypeError, match="float32 or float64"):
        gn.nn.Parameter(np.ones(3, np.int64))


# --- optimizers over flat buffers -------------------------------------------------------


def _step_reference(make, device, groups=None):
    """(parameters after 3 steps of the optimizer over the model, and after
    3 steps over each parameter alone): the same when updates are per element."""
    results = []
    for alone in (False, True):
        model = mlp(device)
        params = model.parameters()
        if alone:
            for p in params:  # each parameter in buffers of its own
                p.to("cpu")
                p.to(device)
        opt = make(params if groups is None else groups(params))
        rng = np.random.default_rng(1)
        for _ in range(3):
            opt.zero_grad()
            for p in params:
                g, _ = p._grad_for_backward()
                value = rng.standard_normal(p.shape).astype(np.float32)
                if device == "cpu":
                    g[...] = value
                else:
                    g.copy_to_device(value)
            opt.step()
        results.append([host(p.data).copy() for p in params])
    return results


OPTIMIZERS = [
    lambda ps: gn.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    lambda ps: gn.optim.Adam(ps, lr=0.01, weight_decay=0.1),
    lambda ps: gn.optim.AdamW(ps, lr=0.01),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("make", OPTIMIZERS, ids=["sgd", "adam", "adamw"])
def test_one_buffer_steps_as_each_parameter_alone(make, device):
    packed, alone = _step_reference(make, device)
    for a, b in zip(packed, alone, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("make", OPTIMIZERS, ids=["sgd", "adam", "adamw"])
def test_parameter_groups_set_their_own_weight_decay_and_lr(make, device):
    def groups(params):
        return [
            {"params": params[0::2]},  # weights
            {"params": params[1::2], "weight_decay": 0.0, "lr": 0.05},  # biases
        ]

    packed, alone = _step_reference(make, device, groups)
    for a, b in zip(packed, alone, strict=True):
        np.testing.assert_array_equal(a, b)
    opt = make(groups(mlp(device).parameters()))
    assert [g["weight_decay"] for g in opt.param_groups][1] == 0.0
    assert opt.param_groups[1]["lr"] == 0.05


def test_groups_differ_from_one_setting_for_all():
    """The bias group's settings take effect: not the same as one group."""
    make = OPTIMIZERS[0]
    grouped, _ = _step_reference(
        make, "cpu", lambda ps: [{"params": ps[0::2]}, {"params": ps[1::2], "lr": 0.5}]
    )
    plain, _ = _step_reference(make, "cpu")
    np.testing.assert_array_equal(grouped[0], plain[0])  # a weight
    assert not np.array_equal(grouped[1], plain[1])  # a bias


def test_setting_lr_scales_every_group():
    params = mlp("cpu").parameters()
    opt = gn.optim.SGD([{"params": params[:2]}, {"params": params[2:], "lr": 0.5}], lr=0.1)
    opt.lr = 0.01
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.05])


def test_groups_refuse_settings_they_cannot_carry():
    params = mlp("cpu").parameters()
    with pytest.raises(ValueError, match="may set lr, weight_decay; got 'momentum'"):
        gn.optim.SGD([{"params": params, "momentum": 0.5}], lr=0.1)
    with pytest.raises(TypeError, match="dict with 'params'"):
        gn.optim.SGD([{"params": params[:2]}, {"lr": 0.1}], lr=0.1)
    with pytest.raises(ValueError, match="same parameter twice"):
        gn.optim.SGD([{"params": params}, {"params": params[:1]}], lr=0.1)


@pytest.mark.cuda
@pytest.mark.parametrize("make", OPTIMIZERS, ids=["sgd", "adam", "adamw"])
def test_an_optimizer_step_on_a_model_is_one_launch(make, launches):
    model = mlp("cuda")
    opt = make(model.parameters())
    for step in range(3):
        for p in model.parameters():
            p._grad_for_backward()  # as a backward pass claims its gradient to write
        launches.clear()
        opt.step()
        state = launches[:-1] if step == 0 else []  # the first step zero-fills its state
        assert set(state) <= {"_zero_kernel"} and len(launches) - len(state) == 1, launches
        launches.clear()
        opt.zero_grad()
        assert launches == []


@pytest.mark.cuda
def test_parameter_groups_still_step_in_one_launch(launches):
    params = mlp("cuda").parameters()
    opt = gn.optim.AdamW([{"params": params[0::2]}, {"params": params[1::2], "weight_decay": 0}])
    for p in params:
        p._grad_for_backward()
    opt.step()  # makes the state
    launches.clear()
    opt.step()
    assert len(launches) == 1, launches


def test_a_step_after_the_model_is_packed_anew_keeps_the_state():
    """Momentum lives with the buffers; packing the layers into a model carries it over."""
    layers = [gn.nn.Dense(3, 2, seed=0), gn.nn.Dense(2, 2, seed=1)]
    twin = [gn.nn.Dense(3, 2, seed=0), gn.nn.Dense(2, 2, seed=1)]
    opts = [
        gn.optim.SGD([p for layer in ls for p in layer.parameters()], lr=0.1, momentum=0.9)
        for ls in (layers, twin)
    ]
    for step in range(3):
        if step == 1:
            gn.nn.Sequential(*layers)  # repacks their parameters into new buffers
        for ls, opt in zip((layers, twin), opts, strict=True):
            for i, p in enumerate(p for layer in ls for p in layer.parameters()):
                g, _ = p._grad_for_backward()
                g[...] = i + step
            opt.step()
    for a, b in zip(layers, twin, strict=True):
        np.testing.assert_array_equal(a.weight.data, b.weight.data)
