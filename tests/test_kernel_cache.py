"""The kernels' on-disk cache: a second process compiles nothing (CPU
kernels here; CUDA kernels on a GPU), two processes may fill one cache at
once, and entries are keyed so that no kernel ever loads another's code."""

import json
import os
import subprocess
import sys

import numba
import numpy as np
import pytest
from conftest import HAVE_CUDA, SIMULATOR
from gpunet.kernels import _cache, activations, dense, losses, softmax

# One small job through several kernel families, factory-made kernels among
# them (activations, dense epilogues, softmax rows, losses, Adam, a compiled
# MLP epoch calling several of them), and float64
# softmax rows whose reassociated sums would round otherwise in a warm process
# if the cache held a kernel's second compilation (see _cache); it prints the
# cache's (hits, misses) and a digest of every result.
_JOB = """
import hashlib, json
import numpy as np
import gpunet as gn
from gpunet.kernels import _cache

rng = np.random.default_rng(0)
x = rng.standard_normal((32, 6)).astype(np.float32)
labels = rng.integers(0, 3, 32)
model = gn.nn.Sequential(gn.nn.Dense(6, 5, activation="relu", seed=0), gn.nn.Dense(5, 3, seed=1))
adam = gn.optim.Adam(model.parameters())
model.fit(x, labels, loss=gn.losses.SoftmaxCrossEntropy(), optimizer=adam, epochs=2, batch_size=8,
          shuffle=False, verbose=0)
wide = rng.standard_normal((600, 1000))  # large enough for the parallel kernels
mlp = gn.MLPClassifier((5,), batch_size=8, max_iter=2, random_state=0).fit(x, labels)  # kernels.mlp
results = [gn.ops.softmax(x), gn.ops.sigmoid(x), model.predict(x), *mlp.coefs_, mlp.loss_curve_]
results += [f(a) for f in (gn.ops.softmax, gn.ops.log_softmax) for a in (x.astype(float), wide)]
digest = hashlib.sha256(b"".join(np.ascontiguousarray(r).tobytes() for r in results))
print(json.dumps({"stats": _cache.stats(), "digest": digest.hexdigest()}))
"""


# The same on a GPU: CUDA kernels of several families, their (hits, misses).
_CUDA_JOB = """
import hashlib, json
import numpy as np
import gpunet as gn
from gpunet.kernels import _cache

rng = np.random.default_rng(0)
x = rng.standard_normal((32, 6)).astype(np.float32)
W, b = rng.standard_normal((6, 5)).astype(np.float32), np.zeros(5, np.float32)
on_gpu = [gn.to_device(a, "cuda") for a in (x, W, b)]
results = [gn.ops.softmax(on_gpu[0]), gn.ops.sigmoid(on_gpu[0]), gn.ops.dense(*on_gpu, "relu")]
digest = hashlib.sha256(b"".join(gn.to_numpy(r).tobytes() for r in results))
print(json.dumps({"stats": _cache.stats(cuda=True), "digest": digest.hexdigest()}))
"""


# The least job that compiles something: one elementwise op.
_SMALL_JOB = """
import json
import numpy as np
import gpunet as gn
from gpunet.kernels import _cache

gn.ops.sigmoid(np.ones(4, np.float32))
print(json.dumps({"stats": _cache.stats()}))
"""


def _start(cache_dir, job=_JOB, **env):
    return subprocess.Popen(
        [sys.executable, "-c", job],
        env={**os.environ, "NUMBA_CACHE_DIR": str(cache_dir), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(process):
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_processes_filling_one_cache_at_once_then_a_third_compiles_nothing(tmp_path):
    first, second = [_start(tmp_path) for _ in range(2)]
    cold = [_result(first), _result(second)]
    warm = _result(_start(tmp_path))
    for result in cold:
        assert result["stats"][1] > 0, "a cold cache must compile"
    hits, misses = warm["stats"]
    # Fewer hits than cold misses: a kernel that only the compiled MLP epoch
    # calls is linked into the epoch's code, which the warm process loads whole.
    assert misses == 0 and hits >= 10
    assert {r["digest"] for r in cold} == {warm["digest"]}
    assert not [name for name in os.listdir(next(tmp_path.iterdir())) if ".tmp." in name]


@pytest.mark.cuda
@pytest.mark.skipif(
    SIMULATOR or not HAVE_CUDA, reason="needs a GPU (the CUDA simulator compiles nothing)"
)
def test_a_second_process_loads_the_cuda_kernels_a_first_compiled(tmp_path):
    cold = _result(_start(tmp_path, _CUDA_JOB))
    warm = _result(_start(tmp_path, _CUDA_JOB))
    assert cold["stats"][1] > 0 and warm["stats"] == [cold["stats"][1], 0]
    assert warm["digest"] == cold["digest"]


# Elementwise gradients (OPS: names of gn.ops) on fixed arrays: their results.
_GRADIENTS_JOB = """
import json, os
import numpy as np
import gpunet as gn

rng = np.random.default_rng(1)
g = rng.standard_normal((4, 33)).astype(np.float32)
y = rng.random((4, 33)).astype(np.float32)
print(json.dumps({op: getattr(gn.ops, op)(g, y).tolist() for op in os.environ["OPS"].split()}))
"""


def test_kernels_compiled_by_different_processes_load_side_by_side(tmp_path):
    """Two factory-made kernels hold functions of one name (the factory's
    closures): compiled in two processes that number functions alike, then
    loaded into one, each must still call its own."""
    ops = ("step_backward", "sigmoid_backward", "tanh_backward")
    cold = {}
    for op in ops:  # one process each, so that the same closures get the same numbers
        cold.update(_result(_start(tmp_path, _GRADIENTS_JOB, OPS=op)))
    warm = _result(_start(tmp_path, _GRADIENTS_JOB, OPS=" ".join(ops)))
    assert warm == cold
    rng = np.random.default_rng(1)
    g = rng.standard_normal((4, 33)).astype(np.float32)
    y = rng.random((4, 33)).astype(np.float32)
    np.testing.assert_array_equal(warm["step_backward"], 0)
    np.testing.assert_allclose(warm["sigmoid_backward"], g * y * (1 - y), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(warm["tanh_backward"], g * (1 - y * y), rtol=1e-6, atol=1e-7)


def test_turned_off_it_writes_nothing(tmp_path):
    result = _result(_start(tmp_path, _SMALL_JOB, GPUNET_KERNEL_CACHE="0"))
    assert result["stats"][0] == 0 and result["stats"][1] > 0
    assert not [files for _, _, files in os.walk(tmp_path) if files]


def test_each_factory_made_kernel_has_files_of_its_own():
    kernels = [
        activations.relu.forward_cpu,
        activations.sigmoid.forward_cpu,
        activations.relu.backward_cpu,
        dense._EPILOGUE["relu"],
        dense._EPILOGUE["tanh"],
        losses._MSE_CPU,
        losses._BCE_CPU,
    ]
    paths = {k._cache._cache_file._index_path for k in kernels}
    assert len(paths) == len(kernels)
    assert all(k in _cache.CACHED for k in kernels)


def test_the_key_holds_the_kernel_sources_signature_and_cpu(monkeypatch):
    kernel = dense._EPILOGUE["relu"]
    codegen = kernel.targetctx.codegen()
    f32, f64 = (numba.typeof(np.ones((2, 2), t)) for t in ("float32", "float64"))
    signature = (f32, f32.copy(ndim=1), numba.float32)
    key = kernel._cache._index_key(signature, codegen)
    assert key[1] == codegen.magic_tuple()
    assert kernel._cache._index_key((f64, f64.copy(ndim=1), numba.float64), codegen) != key
    assert dense._EPILOGUE["tanh"]._cache._index_key(signature, codegen) != key
    _cache.sources_digest.cache_clear()
    monkeypatch.setattr(_cache.pathlib.Path, "read_bytes", lambda self: b"an edited kernel")
    try:
        assert kernel._cache._index_key(signature, codegen) != key
    finally:
        _cache.sources_digest.cache_clear()


def test_a_key_names_functions_not_closures():
    assert _cache.key_text("relu", 2, None, (True, 0.5)) == "('relu', 2, None, (True, 0.5))"
    assert _cache.key_text(softmax._softmax_row) == "(gpunet.kernels.softmax._softmax_row)"

    def local():
        pass

    with pytest.raises(TypeError, match="not <function"):
        _cache.key_text(local)
    with pytest.raises(TypeError, match="not \\[1\\]"):
        _cache.key_text([1])


def test_saving_drops_the_entries_of_other_kernel_sources(tmp_path):
    files = _cache._Files(str(tmp_path), "kernel-1-abc.py311", ("stamp", 1))
    old, new = ("sig", "cpu", "(name)", "digest-1"), ("sig", "cpu", "(name)", "digest-2")
    files.save(old, b"old code")
    files.save(("sig2", "cpu", "(name)", "digest-1"), b"old code 2")
    assert len(list(tmp_path.glob("*.nbc"))) == 2
    files.save(new, b"new code")
    assert files.load(new) == b"new code" and files.load(old) is None
    assert [p.name for p in tmp_path.glob("*.nbc")] == [files._load_index()[new]]
