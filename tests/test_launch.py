"""gpunet's lean kernel launch (``_cuda.Kernel``) against Numba's own launch
of the same compiled kernels: the same results for float, integer and boolean
arguments in both float dtypes, Numba's path for what it does not handle, and
the launch key's reading of array layouts."""

import numpy as np
import pytest
from gpunet.kernels import _cuda, activations, dense, dropout


def both_launches(kernel, config, make_args):
    """Outputs of ``kernel[config]`` and of Numba's own launch, each on fresh arguments."""
    assert isinstance(kernel, _cuda.Kernel)
    results = []
    for launcher in (kernel, kernel.dispatcher):
        args = make_args()
        launcher[config](*args)
        results.append([a.copy_to_host() for a in args if hasattr(a, "copy_to_host")])
    return results


@pytest.mark.cuda
@pytest.mark.requires_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lean_launch_matches_numba_launch(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1000).astype(dtype)
    g, y = rng.standard_normal((2, 37, 19)).astype(dtype)
    cuda = _cuda.cuda

    def act_args():
        return cuda.to_device(x), dtype(0.1), cuda.to_device(np.full_like(x, np.nan))

    def dropout_args():
        out = cuda.to_device(np.full_like(x, np.nan))
        return (cuda.to_device(x), out, *dropout._arguments(x, 7, 8, 0.25))

    def grad_args():
        dz, db = np.full_like(g, np.nan), np.ones(19, dtype)
        return cuda.to_device(g), cuda.to_device(y), dtype(1), *map(cuda.to_device, (dz, db)), True

    cases = [
        (activations.leaky_relu._forward_cuda, (4, 256), act_args),
        (dropout._dropout_kernel, (2, 64), dropout_args),
        (dense._GRAD_CUDA["relu"], (1, 32), grad_args),
    ]
    for kernel, config, make_args in cases:
        ours, numbas = both_launches(kernel, config, make_args)
        for a, b in zip(ours, numbas, strict=True):
            assert not np.isnan(a).any()
            np.testing.assert_array_equal(a, b)


@pytest.mark.cuda
@pytest.mark.requires_gpu
def test_arguments_numba_knows_and_gpunet_does_not_take_numba_path():
    cupy = pytest.importorskip("cupy")
    x = cupy.arange(64, dtype=cupy.float32) - 32
    out = cupy.empty_like(x)
    activations.relu._forward_cuda[1, 64](x, np.float32(1), out)
    np.testing.assert_array_equal(out.get(), np.maximum(x.get(), 0))


@pytest.mark.parametrize(
    "make, c_contiguous",
    [
        (lambda a: a, True),
        (lambda a: a.T, False),
        (lambda a: a[:, ::2], False),
        (lambda a: a[1:3], True),
        (lambda a: a[:1].T, True),  # a (n, 1) column of a C row: contiguous
        (lambda a: a[:, :1], False),
        (lambda a: a.reshape(-1)[::2], False),
    ],
)
def test_launch_key_reads_contiguity_off_shape_and_strides(make, c_contiguous):
    """The lean launch's key (numpy arrays have the same shape/strides/dtype)."""
    a = make(np.zeros((4, 6), np.float32))
    assert a.flags.c_contiguous == c_contiguous
    assert _cuda._array_key(a) == (a.dtype, a.ndim, c_contiguous)


@pytest.mark.cuda
@pytest.mark.requires_gpu
def test_lean_launch_from_a_new_thread():
    """A thread that has not touched the GPU yet gets the context made current."""
    import threading

    cuda = _cuda.cuda
    x = cuda.to_device(np.arange(-4, 4, dtype=np.float32))
    out = cuda.to_device(np.full(8, np.nan, np.float32))
    errors = []

    def work():
        try:
            activations.relu._forward_cuda[1, 32](x, np.float32(1), out)
            cuda.synchronize()
        except Exception as exc:  # reported below, in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert not errors
    np.testing.assert_array_equal(out.copy_to_host(), np.maximum(np.arange(-4, 4), 0))
