"""The framework's generator: seeding, offsets, devices, and the kernels it calls."""

import numpy as np
import pytest
from conftest import DEVICES
from gpunet.kernels import rng

import gpunet as gn


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_seeded_draws_follow_the_reference_stream(device, dtype):
    gn.manual_seed(1234)
    a = gn.to_numpy(gn.random.uniform((3, 5), dtype=dtype, device=device))
    b = gn.to_numpy(gn.random.uniform(7, dtype=dtype, device=device))
    words = 1 if dtype == "float32" else 2
    np.testing.assert_array_equal(a.ravel(), rng.uniform_ref(15, 1234, 0, np.dtype(dtype)))
    np.testing.assert_array_equal(b, rng.uniform_ref(7, 1234, 15 * words, np.dtype(dtype)))
    assert gn.random.default_generator.offset == 22 * words


@pytest.mark.cuda
def test_cpu_and_cuda_draw_the_same_numbers():
    gen_cpu, gen_cuda = gn.random.Generator(99), gn.random.Generator(99)
    np.testing.assert_array_equal(
        gen_cpu.uniform((4, 9), device="cpu"), gn.to_numpy(gen_cuda.uniform((4, 9), device="cuda"))
    )


def test_reseeding_repeats_and_generators_are_independent():
    g1 = gn.random.Generator(5)
    first = g1.uniform(10, device="cpu")
    g1.manual_seed(5)
    np.testing.assert_array_equal(g1.uniform(10, device="cpu"), first)
    assert not np.array_equal(gn.random.Generator(6).uniform(10, device="cpu"), first)
    assert repr(g1) == "Generator(seed=5, offset=10)"


def test_out_is_filled_in_place():
    out = np.zeros((2, 3), np.float64)
    assert gn.random.Generator(1).uniform(None, out=out) is out
    assert np.all((out > 0) & (out < 1))


def test_bad_arguments_leave_the_generator_untouched():
    gen = gn.random.Generator(3)
    with pytest.raises(ValueError, match=r"seed in \[0, 2\*\*64\)"):
        gen.manual_seed(-1)
    with pytest.raises(TypeError, match="int seed"):
        gen.manual_seed(1.5)
    with pytest.raises(TypeError, match="float32 or float64, got int32"):
        gen.uniform(3, dtype="int32", device="cpu")
    with pytest.raises(ValueError, match="C-contiguous"):
        gen.uniform(None, out=np.zeros((3, 4), np.float32).T)
    assert (gen.seed, gen.offset) == (3, 0)
