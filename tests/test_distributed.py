"""gn.distributed: a world of one in this process, and two real MPI jobs of
2 ranks (``mpiexec -n 2``, from the MPICH wheel of the ``mpi`` extra) running
tests/distributed_worker.py: one trains (an MLP with dropout, an RBM with
PCD and with CD, then ``gpunet train`` and ``gpunet rbm``) and is compared
here across ranks and with one process at twice the batch; in the other a
rank raises, which must end the job with a line naming it.

The NCCL and CUDA-aware MPI paths need GPUs on several ranks and are not run
here; the pinned-host path of device buffers runs under the CUDA simulator.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import gpunet as gn
from gpunet import distributed

sys.path.insert(0, os.path.dirname(__file__))
import distributed_worker as worker  # noqa: E402

#: One xdist worker runs this file (``--dist loadgroup``), so the MPI jobs run once.
pytestmark = pytest.mark.xdist_group("mpi")

WORKER = os.path.join(os.path.dirname(__file__), "distributed_worker.py")
#: Seconds after which a job counts as hung (it takes about 20 s on a busy 2-core host).
HANG = 300


def _mpiexec():
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else "mpiexec"


def _job(mode, out):
    env = {**os.environ, "GPUNET_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    return subprocess.run(
        [_mpiexec(), "-n", "2", sys.executable, WORKER, mode, str(out)],
        capture_output=True, text=True, timeout=HANG, env=env,
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The train job's files: (out folder, per-rank arrays, per-rank facts)."""
    out = tmp_path_factory.mktemp("mpi")
    done = _job("train", out)
    assert done.returncode == 0, done.stdout + done.stderr
    arrays = [dict(np.load(out / f"rank{r}.npz")) for r in (0, 1)]
    facts = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    return out, arrays, facts


# --- a world of one ---------------------------------------------------------------------


def test_world_of_one_without_a_launcher(monkeypatch):
    for name in distributed.LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    distributed.shutdown()
    assert not distributed.is_initialized()
    assert (distributed.rank(), distributed.world_size()) == (0, 1)
    distributed.init()
    try:
        assert distributed.is_initialized()
        assert (distributed.rank(), distributed.world_size(), distributed.local_rank()) == (0, 1, 0)
        assert distributed.fit_world() is None
        model = gn.nn.Sequential(gn.nn.Dense(3, 2, seed=0))
        before = gn.to_numpy(model.layers[0].weight.data).copy()
        model.layers[0].weight.grad[...] = 2.0
        distributed.broadcast_parameters(model)
        distributed.allreduce_gradients(model)
        distributed.barrier()
        np.testing.assert_array_equal(gn.to_numpy(model.layers[0].weight.data), before)
        np.testing.assert_array_equal(gn.to_numpy(model.layers[0].weight.grad), 2.0)
    finally:
        distributed.shutdown()
    assert not distributed.is_initialized()


def test_bad_arguments():
    with pytest.raises(TypeError, match="expected a model with parameters"):
        distributed.broadcast_parameters(object())
    with pytest.raises(TypeError, match="expected a model with parameters"):
        distributed.allreduce_gradients(3)
    model = gn.nn.Sequential(gn.nn.Dense(3, 2, seed=0))
    with pytest.raises(ValueError, match=r"expected a root rank in \[0, 1\), got 1"):
        distributed.broadcast_parameters(model, root=1)


def _world(rank, size):
    world = distributed._World()
    world.rank, world.size = rank, size
    return world


def test_shares_and_global_batches():
    # 7 rows over 3 ranks: shares of 3, 2, 2 in rank order
    assert [_world(r, 3).share_bounds(7) for r in range(3)] == [(0, 3), (3, 5), (5, 7)]
    # global batches of 2 x 4 rows; a last batch of 1 row cannot feed 2 ranks: folded
    np.testing.assert_array_equal(_world(0, 2).starts(17, 4, 1), [0, 8, 17])
    np.testing.assert_array_equal(_world(0, 2).starts(18, 4, 1), [0, 8, 16, 18])
    # batch normalization needs 2 rows a rank
    np.testing.assert_array_equal(_world(1, 2).starts(19, 4, 2), [0, 8, 19])
    with pytest.raises(ValueError, match="expected at least 4 training rows for 2 ranks"):
        _world(0, 2).starts(3, 4, 2)
    np.testing.assert_array_equal(_world(1, 2).local_sizes(np.array([0, 8, 17])), [4, 4])
    assert _world(1, 2).share(slice(10, 15)) == slice(13, 15)
    np.testing.assert_array_equal(_world(1, 2).share(np.arange(20, 25)), [23, 24])
    assert distributed.batch_share() == (3, 2, 5)
    distributed._share = None


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_dropout_shares_make_the_global_mask(device):
    """Each share's mask is its rows of the global batch's, also where a
    share starts inside a Philox block (rows of 12 elements: 60 % 8 = 4)."""
    x = np.random.default_rng(0).normal(size=(11, 12)).astype(np.float32)
    g = np.random.default_rng(1).normal(size=(11, 12)).astype(np.float32)
    whole = gn.nn.Dropout(0.4, seed=5)
    expected = gn.to_numpy(whole.forward(gn.to_device(x, device))).copy()
    expected_dx = gn.to_numpy(whole.backward(gn.to_device(g, device))).copy()
    parts, grads = [], []
    for rank in (0, 1):
        layer = gn.nn.Dropout(0.4, seed=5)
        first, stop = _world(rank, 2).share_bounds(11)
        distributed._share = (first, stop - first, 11)
        try:
            parts.append(gn.to_numpy(layer.forward(gn.to_device(x[first:stop], device))).copy())
            grads.append(gn.to_numpy(layer.backward(gn.to_device(g[first:stop], device))).copy())
        finally:
            distributed._share = None
        assert layer._generator.offset == whole._generator.offset
    np.testing.assert_array_equal(np.concatenate(parts), expected)
    np.testing.assert_array_equal(np.concatenate(grads), expected_dx)


@pytest.mark.cuda
def test_device_buffers_through_pinned_host_buffers():
    """A world over MPI's COMM_SELF: a device buffer's weighted reduction and
    broadcast go through host buffers (always under the simulator)."""
    from mpi4py import MPI

    world = distributed._World(MPI.COMM_SELF)
    values = np.arange(6, dtype=np.float32)
    a = gn.to_device(values, "cuda")
    if gn.kernels._cuda.SIMULATOR:
        assert world.device_path() == "host"
    world.allreduce_scaled(a, 0.5)
    np.testing.assert_array_equal(gn.to_numpy(a), values * 0.5)
    world.broadcast_array(a)
    np.testing.assert_array_equal(gn.to_numpy(a), values * 0.5)


# --- two ranks --------------------------------------------------------------------------


def test_two_ranks_know_the_world_and_reduce(trained):
    _, _, facts = trained
    assert [(f["rank"], f["size"], f["initialized"]) for f in facts] == [(0, 2, True), (1, 2, True)]
    assert facts[0]["broadcast"] == facts[1]["broadcast"]  # rank 0's weights on both
    assert facts[0]["averaged"] == facts[1]["averaged"] == [1.5]


def test_two_ranks_end_with_identical_weights(trained):
    _, arrays, facts = trained
    assert sorted(arrays[0]) == sorted(arrays[1])
    for name in arrays[0]:
        np.testing.assert_array_equal(arrays[0][name], arrays[1][name], err_msg=name)
    assert facts[0]["history"] == facts[1]["history"]


def test_two_ranks_equal_one_process_at_twice_the_batch(trained):
    """The MLP (with dropout) to float32 rounding, its History too; the
    float64 RBM, PCD and CD, to float64 rounding."""
    _, arrays, facts = trained
    gn.set_device("cpu")
    model = worker.mlp()
    history = worker.fit_mlp(model, 2 * worker.BATCH)
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(arrays[0][f"mlp.{name}"], value, rtol=1e-5, atol=1e-6)
    for key, values in history.history.items():
        np.testing.assert_allclose(facts[0]["history"][key], values, rtol=1e-5, err_msg=key)
    for name, persistent in (("pcd", True), ("cd", False)):
        rbm = worker.fit_rbm(2 * worker.BATCH, persistent)
        for attr, key in (("components_", "W"), ("intercept_visible_", "b")):
            np.testing.assert_allclose(
                arrays[0][f"{name}.{key}"], getattr(rbm, attr), rtol=1e-10, atol=1e-12
            )
        np.testing.assert_allclose(arrays[0][f"{name}.c"], rbm.intercept_hidden_, atol=1e-12)


def test_two_ranks_write_files_from_rank_0(trained):
    out, _, facts = trained
    assert facts[0]["train_status"] == facts[0]["rbm_status"] == 0
    assert facts[1]["train_status"] == facts[1]["rbm_status"] == 0
    # ModelCheckpoint: each rank named its own files; rank 0 alone wrote
    assert sorted(p.name for p in out.glob("ckpt-*")) == ["ckpt-rank0-1.npz", "ckpt-rank0-2.npz"]
    assert (out / "model.npz").exists() and (out / "model-checkpoint.npz").exists()
    printed = [(out / f"cli-rank{r}.txt").read_text() for r in (0, 1)]
    assert "gpunet train: data-parallel on 2 ranks" in printed[0]
    assert "test accuracy" in printed[0] and "pseudo-likelihood" in printed[0]
    assert printed[1] == ""


def test_the_epoch_checkpoint_of_two_ranks_resumes_in_one_process(trained, tmp_path, capsys):
    out, _, _ = trained
    from gpunet.cli import main

    output = tmp_path / "resumed"
    args = ["train", "--epochs", "2", "--hidden", "8", "--verbose", "0", "--output", str(output)]
    assert main([*args, "--resume", str(out / "model-checkpoint.npz")]) == 0
    assert "trained 2 epochs" in capsys.readouterr().out
    ours, theirs = gn.load(out / "model.npz"), gn.load(output.with_suffix(".npz"))
    for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_shutdown_leaves_the_world(trained):
    out, _, _ = trained
    assert [json.loads((out / f"rank{r}-end.json").read_text()) for r in (0, 1)] == [
        {"initialized_after_shutdown": False}
    ] * 2


def test_a_failing_rank_ends_the_job_with_its_name(tmp_path):
    done = _job("fail", tmp_path)
    assert done.returncode != 0
    assert (
        "gpunet.distributed: rank 1 of 2 failed in fit: RuntimeError: rank 1 broke on purpose"
        in (done.stderr + done.stdout)
    )
    assert "fit returned" not in done.stdout
