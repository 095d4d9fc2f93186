"""Hit counts behind training accuracy: argmax against class indices or rows,
and thresholded binary predictions, on the CPU and CUDA."""

import numpy as np
import pytest
from conftest import put
from gpunet.kernels import metrics as M

from gpunet import dispatch

BACKENDS = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def hits(backend, name, *args):
    out = put(np.full(1, -1.0, args[0].dtype), backend)
    arrays = [put(a, backend) if isinstance(a, np.ndarray) else a for a in args]
    dispatch.kernel_for(name, backend)(*arrays, out)
    return float(np.asarray(out.copy_to_host() if backend == "cuda" else out)[0])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (9, 10), (300, 3)])
def test_argmax_hits(backend, dtype, shape):
    rng = np.random.default_rng(0)
    scores = rng.standard_normal(shape).astype(dtype)
    labels = rng.integers(0, shape[1], shape[0])
    rows = rng.random(shape).astype(dtype)
    assert hits(backend, "argmax_hits", scores, labels) == M.argmax_hits_ref(scores, labels)
    assert hits(backend, "argmax_hits", scores, rows) == M.argmax_hits_ref(scores, rows)


@pytest.mark.parametrize("backend", BACKENDS)
def test_argmax_takes_the_first_of_ties(backend):
    scores = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0]], np.float32)
    assert hits(backend, "argmax_hits", scores, np.array([0, 1])) == 2
    assert hits(backend, "argmax_hits", scores, np.array([1, 2])) == 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("threshold", [0.0, 0.5])
def test_binary_hits(backend, threshold):
    rng = np.random.default_rng(1)
    pred = rng.standard_normal((7, 5)).astype(np.float32)
    target = (rng.random((7, 5)) < 0.5).astype(np.float32)
    expected = M.binary_hits_ref(pred, target, threshold)
    assert 0 < expected < pred.size
    assert hits(backend, "binary_hits", pred, target, threshold) == expected
