"""fit(..., cuda_graph=True): steps replayed from captured CUDA graphs give
the weights, history and running statistics of eager steps, bit for bit.
Under the simulator a graph is the recorded launches replayed in order (see
gpunet.graphs), so these tests check what is captured without a GPU; on a
GPU the same tests run on real graphs."""

import numpy as np
import pytest
from gpunet.kernels import _cuda

import gpunet as gn
from gpunet import graphs, losses, nn, optim

pytestmark = pytest.mark.cuda


def model(dropout=False):
    layers = [nn.Dense(5, 6, "relu", seed=0), nn.BatchNorm1d(6)]
    if dropout:
        layers.append(nn.Dropout(0.25, seed=3))
    layers.append(nn.Dense(6, 3, None, seed=1))
    return nn.Sequential(*layers).to("cuda")


def data(rows=18):
    rng = np.random.default_rng(0)
    return rng.random((rows, 5), dtype=np.float32), rng.integers(0, 3, rows)


def fit(cuda_graph, make_optimizer, dropout=False, rows=18):
    m = model(dropout)
    X, y = data(rows)
    opt = make_optimizer(m.parameters())
    with gn.profile() as prof:
        history = m.fit(
            X, y, loss=losses.SoftmaxCrossEntropy(), optimizer=opt, epochs=1, batch_size=4,
            verbose=0, seed=5, cuda_graph=cuda_graph,
        )  # fmt: skip
    return m, history, prof


def test_replayed_steps_equal_eager_steps_bit_for_bit():
    def sgd(ps):
        return optim.SGD(ps, lr=0.1, momentum=0.9)

    eager, eager_history, _ = fit(False, sgd)
    graphed, graph_history, prof = fit(True, sgd)
    for name, value in eager.state_dict().items():
        np.testing.assert_array_equal(graphed.state_dict()[name], value, err_msg=name)
    assert graph_history.history == eager_history.history
    # Batches of 4, 4, 4, 4 and 2 rows, alternating between two buffers: the
    # first full batch runs eagerly, the next two are captured (a graph per
    # buffer) and replayed, the fourth replays the second's graph on new
    # rows, and the short last one runs eagerly.
    assert prof.by_kernel["graph"] == 3
    assert prof.by_kernel["optim.sgd"] == 5  # the update stays outside the graph


def test_a_step_that_draws_random_numbers_warns_and_trains_eagerly():
    def sgd(ps):
        return optim.SGD(ps, lr=0.1)

    eager, eager_history, _ = fit(False, sgd, dropout=True, rows=8)
    with pytest.warns(RuntimeWarning, match="cuda_graph: the step draws random numbers"):
        graphed, graph_history, prof = fit(True, sgd, dropout=True, rows=8)
    assert "graph" not in prof.by_kernel
    for name, value in eager.state_dict().items():
        np.testing.assert_array_equal(graphed.state_dict()[name], value, err_msg=name)
    assert graph_history.history == eager_history.history


def test_capture_refuses_copies_and_leaves_numba_as_it_was():
    x = gn.to_device(np.ones(4, np.float32), "cuda")
    to_device = _cuda.cuda.to_device
    with pytest.raises(graphs.CaptureError, match="host-device copy"):
        graphs.StepGraph.capture(lambda: gn.to_numpy(gn.ops.relu(x)))
    assert _cuda.cuda.to_device is to_device and not _cuda.observers
    out = gn.to_device(np.zeros(4, np.float32), "cuda")
    graph = graphs.StepGraph.capture(lambda: gn.ops.tanh(x, out=out))
    np.testing.assert_array_equal(gn.to_numpy(out), 0)  # captured, not run
    graph.replay()
    np.testing.assert_allclose(gn.to_numpy(out), np.tanh(1.0), rtol=1e-6)
    assert graph.launches == 1


def test_cuda_graph_argument_is_checked():
    X, y = data()
    cpu = nn.Sequential(nn.Dense(5, 3, device="cpu"))
    with pytest.raises(ValueError, match="cuda_graph=True needs a model on a GPU"):
        cpu.fit(X, y, loss="softmax_cross_entropy", optimizer="sgd", verbose=0, cuda_graph=True)
    with pytest.raises(ValueError, match="expected cuda_graph True, False or 'auto'"):
        cpu.fit(X, y, loss="softmax_cross_entropy", optimizer="sgd", verbose=0, cuda_graph=1)
