"""gn.RBM(cuda_graph=True): the tiled CUDA epoch's batches replayed from CUDA
graphs give the parameters, chain, velocities and stream offset of eager
batches, bit for bit, in one launch per batch; a model that fits the
single-block kernel keeps it. Models are forced onto the tiled kernels by
giving the single-block rule no shared memory. Under the simulator a graph
is the recorded launches replayed in order (see gpunet.graphs), so these
tests check what is captured without a GPU; on a GPU the same tests run on
real graphs."""

import numpy as np
import pytest
from conftest import SIMULATOR
from gpunet.kernels import rbm as R

import gpunet as gn
from gpunet import graphs

pytestmark = pytest.mark.cuda

FEATURES, BATCH = 5, 2


def data(rows):
    return (np.random.default_rng(4).random((rows, FEATURES)) < 0.5).astype(np.float32)


def fitted(cuda_graph, rows, epochs):
    """A PCD-1 RBM fitted ``epochs`` epochs to ``rows`` rows in batches of
    2, and a profile of its last epoch."""
    rbm = gn.RBM(
        3, batch_size=BATCH, n_iter=epochs, random_state=2, momentum=0.5, weight_decay=0.01,
        learning_rate=0.05, device="cuda", cuda_graph=cuda_graph,
    )  # fmt: skip
    steps = rbm.fit_epochs(data(rows))
    for _ in range(epochs - 1):
        next(steps)
    with gn.profile() as prof:
        next(steps)
    return rbm, prof


def state(rbm):
    arrays = [rbm.components_, rbm.intercept_hidden_, rbm.intercept_visible_, rbm.h_samples_]
    return arrays + [gn.to_numpy(v) for v in rbm._velocities], rbm._offset


def assert_same(graphed, eager):
    got, got_offset = state(graphed)
    want, want_offset = state(eager)
    assert got_offset == want_offset
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


#: The launches of one PCD-1 batch, by kernel (eager: 3 + 2k).
BATCH_LAUNCHES = {"rbm.hidden": 2, "rbm.visible": 1, "rbm.update_biases": 1,
                  "rbm.update_weights": 1}  # fmt: skip


def test_replayed_batches_equal_eager_batches_bit_for_bit(monkeypatch, request):
    """Two epochs of batches of 2, 2 and 1 rows. The first epoch runs the
    first batch of 2 rows eagerly, captures the second and replays it and the
    third; the second epoch replays them, writes its batch table in one
    copy, and captures the 1-row batch (run eagerly in the first) on its way
    to replaying it. Under the simulator: every batch's kernels run once, in
    order."""
    monkeypatch.setattr(R, "EPOCH_SHARED_BYTES", 0)
    ran = request.getfixturevalue("launches") if SIMULATOR else None  # kernels run, in order
    per_batch = ["conditional"] * 3 + ["_update_biases_kernel", "_update_weights_kernel"]
    eager, eager_prof = fitted("auto", 5, 2)  # "auto" is eager for now
    assert eager_prof.by_kernel == {name: 3 * count for name, count in BATCH_LAUNCHES.items()}
    if ran is not None:
        assert ran == per_batch * 6
        ran.clear()
    graphed, prof = fitted(True, 5, 2)
    assert_same(graphed, eager)
    if ran is not None:
        assert ran == per_batch * 6
    assert prof.by_kernel == {"graph": 3, **BATCH_LAUNCHES}  # the capture counts, not runs
    assert [c.direction for c in prof.copies] == ["host_to_device"]
    assert sorted(graphed._graphs.graphs) == [1, 2]


def test_a_capture_that_fails_warns_once_and_trains_eagerly(monkeypatch):
    monkeypatch.setattr(R, "EPOCH_SHARED_BYTES", 0)
    eager, _ = fitted(False, 4, 1)

    def refuse(function):
        raise graphs.CaptureError("no graph here")

    monkeypatch.setattr(graphs.StepGraph, "capture", refuse)
    with pytest.warns(RuntimeWarning, match="cuda_graph: no graph here; training eagerly") as seen:
        graphed, prof = fitted(True, 4, 1)
    assert len(seen) == 1
    assert prof.by_kernel == {name: 2 * count for name, count in BATCH_LAUNCHES.items()}
    assert_same(graphed, eager)


def test_a_model_that_fits_one_block_keeps_its_one_launch():
    rbm, prof = fitted(True, 5, 2)
    assert prof.by_kernel == {"rbm.epoch_block_float32": 1}
    assert not rbm._graphs.graphs


def test_cuda_graph_argument_is_checked():
    X = data(4)
    with pytest.raises(ValueError, match="cuda_graph=True needs an RBM on a GPU, not on cpu"):
        gn.RBM(3, n_iter=1, device="cpu", cuda_graph=True).fit(X)
    with pytest.raises(ValueError, match="expected cuda_graph True, False or 'auto', got 1"):
        gn.RBM(3, n_iter=1, device="cpu", cuda_graph=1).fit(X)
    assert gn.RBM(3, cuda_graph="auto").get_params()["cuda_graph"] == "auto"
