"""Elementwise activations: CPU and CUDA kernels against the numpy references,
numerical gradients, stability at large magnitudes, and input checks."""

import numpy as np
import pytest
from conftest import DEVICES, SIMULATOR, assert_close, put, refused_outputs
from gpunet.kernels import activations as A
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gpunet as gn

FORWARD = {
    "step": (gn.ops.step, A.step_ref),
    "sigmoid": (gn.ops.sigmoid, A.sigmoid_ref),
    "tanh": (gn.ops.tanh, A.tanh_ref),
    "relu": (gn.ops.relu, A.relu_ref),
    "leaky_relu": (
        lambda x, **kw: gn.ops.leaky_relu(x, 0.2, **kw),
        lambda x: A.leaky_relu_ref(x, 0.2),
    ),
}

# (backward op, its reference, whether it takes the forward output rather than the input)
BACKWARD = {
    "step": (gn.ops.step_backward, A.step_backward_ref, False),
    "sigmoid": (gn.ops.sigmoid_backward, A.sigmoid_backward_ref, True),
    "tanh": (gn.ops.tanh_backward, A.tanh_backward_ref, True),
    "relu": (gn.ops.relu_backward, A.relu_backward_ref, False),
    "leaky_relu": (
        lambda g, x, **kw: gn.ops.leaky_relu_backward(g, x, 0.2, **kw),
        lambda g, x: A.leaky_relu_backward_ref(g, x, 0.2),
        False,
    ),
}

# Sizes at the edges of a CUDA block (256 threads) and of the CPU's parallel threshold.
SIZES = [0, 1, 255, 256, 257, 1025]
CPU_ONLY_SIZES = [A.PARALLEL_THRESHOLD - 1, A.PARALLEL_THRESHOLD + 1]
SHAPES = [(3, 33), (0, 7), (129, 1)]


def random_input(shape, dtype, seed=0, scale=4.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def sizes_for(device):
    return SIZES + (CPU_ONLY_SIZES if device == "cpu" else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", FORWARD)
def test_forward_matches_reference(name, dtype, device):
    op, ref = FORWARD[name]
    for shape in [(n,) for n in sizes_for(device)] + SHAPES:
        x = random_input(shape, dtype)
        assert_close(op(put(x, device)), ref(x), dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", BACKWARD)
def test_backward_matches_reference(name, dtype, device):
    op, ref, takes_output = BACKWARD[name]
    forward = FORWARD[name][1]
    for shape in [(n,) for n in sizes_for(device)] + SHAPES:
        x = random_input(shape, dtype)
        saved = forward(x) if takes_output else x
        g = random_input(shape, dtype, seed=1, scale=1.0)
        assert_close(op(put(g, device), put(saved, device)), ref(g, saved), dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", FORWARD)
def test_gradient_matches_finite_differences(name, device):
    """d/dx sum(g * f(x)) by central differences in float64 equals the backward op."""
    op, _ = FORWARD[name]
    backward, _, takes_output = BACKWARD[name]
    x = random_input((4, 5), np.float64, scale=2.0)
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the kinks of step, relu, leaky_relu
    g = random_input((4, 5), np.float64, seed=2, scale=1.0)
    h = 1e-6
    numeric = (
        (gn.to_numpy(op(put(x + h, device))) - gn.to_numpy(op(put(x - h, device)))) * g / (2 * h)
    )
    y = op(put(x, device))
    analytic = backward(put(g, device), y if takes_output else put(x, device))
    np.testing.assert_allclose(gn.to_numpy(analytic), numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", FORWARD)
def test_stable_at_large_magnitudes(name, dtype, device):
    """No overflow, NaN or inf for finite inputs up to 1e4 in magnitude."""
    op, ref = FORWARD[name]
    x = np.array(
        [-1e4, -710.0, -89.0, -88.0, -20.0, -1e-30, 0.0, 1e-30, 20.0, 88.0, 89.0, 710.0, 1e4], dtype
    )
    y = gn.to_numpy(op(put(x, device)))
    assert np.all(np.isfinite(y))
    assert_close(y, ref(x), dtype)


def test_sigmoid_and_tanh_saturate_exactly():
    x = np.array([-1e4, 1e4], np.float32)
    np.testing.assert_array_equal(gn.ops.sigmoid(x), [0.0, 1.0])
    np.testing.assert_array_equal(gn.ops.tanh(x), [-1.0, 1.0])


def test_special_values_follow_pytorch():
    x = np.array([np.nan, -np.inf, np.inf, -0.0, 0.0], np.float32)
    np.testing.assert_array_equal(gn.ops.relu(x), [np.nan, 0, np.inf, 0, 0])
    np.testing.assert_array_equal(gn.ops.sigmoid(x), [np.nan, 0, 1, 0.5, 0.5])
    np.testing.assert_array_equal(gn.ops.step(x), [0, 0, 1, 0, 0])


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(sorted(FORWARD)),
    x=hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float64]),
        shape=hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=70),
        elements=st.floats(-1e4, 1e4, width=32),
    ),
)
def test_cpu_forward_and_backward_on_generated_inputs(name, x):
    op, ref = FORWARD[name]
    assert_close(op(x), ref(x), x.dtype)
    backward, backward_ref, takes_output = BACKWARD[name]
    saved = ref(x) if takes_output else x
    g = np.ones_like(x)
    assert_close(backward(g, saved), backward_ref(g, saved), x.dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_out_argument_and_in_place(device):
    x = random_input((6, 7), np.float32)
    out = put(np.empty_like(x), device)
    assert gn.ops.tanh(put(x, device), out=out) is out
    assert_close(out, A.tanh_ref(x), np.float32)
    buf = put(x.copy(), device)
    gn.ops.relu(buf, out=buf)
    assert_close(buf, A.relu_ref(x), np.float32)


def test_cpu_accepts_non_contiguous_input():
    x = random_input((5, 8), np.float64)
    assert_close(gn.ops.sigmoid(x.T), A.sigmoid_ref(x.T), np.float64)
    assert_close(gn.ops.relu(x[:, ::2]), A.relu_ref(x[:, ::2]), np.float64)


def test_zero_dimensional_input():
    x = np.array(-3.0)
    assert_close(gn.ops.leaky_relu(x, 0.5), np.array(-1.5), np.float64)


def test_leaky_relu_alpha_is_used_and_checked():
    x = np.array([-2.0, 3.0], np.float32)
    np.testing.assert_array_equal(gn.ops.leaky_relu(x, 0.25), [-0.5, 3.0])
    np.testing.assert_array_equal(
        gn.ops.leaky_relu_backward(np.ones(2, np.float32), x, 0.25), [0.25, 1.0]
    )
    with pytest.raises(ValueError, match="finite alpha"):
        gn.ops.leaky_relu(x, float("nan"))


def test_bad_inputs_are_rejected_before_any_work():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(TypeError, match="float32 or float64, got int64"):
        gn.ops.relu(np.ones(3, np.int64))
    with pytest.raises(TypeError, match="numpy array or a CUDA array, got list"):
        gn.ops.sigmoid([1.0, 2.0])
    with pytest.raises(ValueError, match=r"shape \(2, 3\) like grad_out, got \(3, 2\)"):
        gn.ops.relu_backward(x, np.ones((3, 2), np.float32))
    with pytest.raises(TypeError, match="dtype float32 like grad_out, got float64"):
        gn.ops.tanh_backward(x, np.ones((2, 3)))
    out = np.full((3, 2), 7.0, np.float32)
    with pytest.raises(ValueError, match="expected out of shape"):
        gn.ops.relu(x, out=out)
    assert np.all(out == 7.0)
    with pytest.raises(ValueError, match="C-contiguous"):
        gn.ops.relu(x, out=np.empty((3, 2), np.float32).T)
    frozen = np.zeros((2, 3), np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="writable out, got a read-only array"):
        gn.ops.sigmoid(x, out=frozen)
    with pytest.raises(ValueError, match="writable out"):
        gn.ops.relu_backward(x, x, out=frozen)
    with pytest.raises(TypeError, match="float32 or float64, got float16"):
        gn.ops.tanh(x.astype(np.float16))


@pytest.mark.parametrize("name", ["relu", "leaky_relu"])
def test_cpu_launchers_refuse_what_they_cannot_take_and_write_nothing(name):
    # Every activation's launchers come from one factory, in two forms: with
    # the op's constant as a last argument (leaky_relu) and without.
    act = A.ACTIVATIONS[name]
    c = (0.2,) if act.constant else ()  # the constant FORWARD's references use
    x = random_input((2, 3), np.float32)
    for out in refused_outputs():
        assert act.forward_cpu(x, out, *c) is False
        assert act.backward_cpu(x, x, out, *c) is False
        assert not out.any()
    out = np.zeros((2, 3), np.float32)
    assert act.forward_cpu(x.astype(np.int64), out.astype(np.int64), *c) is False
    assert act.backward_cpu(x, x.astype(np.float64), out, *c) is False
    assert act.backward_cpu(x, np.ones((3, 2), np.float32), out, *c) is False
    assert not out.any()
    y = np.zeros((3, 2), np.float32)
    assert act.forward_cpu(x.T, y, *c) is True  # any input layout
    assert_close(y, FORWARD[name][1](x.T), np.float32)


def test_only_leaky_relu_launchers_take_a_constant():
    for act in A.ACTIVATIONS.values():
        assert act.constant == (act.name == "leaky_relu")
    x, out = np.ones(4, np.float32), np.empty(4, np.float32)
    with pytest.raises(TypeError):
        A.relu.forward_cpu(x, out, 0.5)
    with pytest.raises(TypeError):
        A.leaky_relu.forward_cpu(x, out)


@pytest.mark.cuda
def test_mixed_host_and_device_inputs_are_refused():
    g = np.ones(4, np.float32)
    with pytest.raises(gn.DeviceError, match="grad_out on cpu, x on cuda"):
        gn.ops.relu_backward(g, gn.to_device(g, "cuda"))


@pytest.mark.cuda
@pytest.mark.skipif(SIMULATOR, reason="the simulator's arrays are always contiguous views of numpy")
def test_cuda_refuses_non_contiguous_input():
    x = gn.to_device(np.ones((4, 6), np.float32), "cuda")
    with pytest.raises(ValueError, match="C-contiguous"):
        gn.ops.relu(x[:, ::2])


def test_flat_views_c_contiguous_arrays_and_copies_others():
    """kernels._cpu.flat: a 1-D view that writes through for C-contiguous
    arrays of any ndim (the serial launchers' arrays), a copy otherwise."""
    import numba
    from gpunet.kernels._cpu import flat

    @numba.njit
    def fill(a):
        v = flat(a)
        for i in range(v.size):
            v[i] = i
        return v.size

    for shape in [(7,), (3, 5), (2, 3, 4), (0, 3)]:
        a = np.zeros(shape)
        assert fill(a) == a.size
        np.testing.assert_array_equal(a.ravel(), np.arange(a.size))
    strided = np.zeros((4, 6))[:, ::2]
    assert fill(strided) == strided.size
    assert not strided.any()
