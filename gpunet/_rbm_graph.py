"""gn.RBM's tiled CUDA epochs with each batch replayed from a CUDA graph
(``RBM(cuda_graph=True)``).

A model too large for the single-block epoch kernel runs 3 + 2k launches per
batch (``kernels.rbm.TiledEpoch``). Every batch of one size makes the same
launches with the same arguments (the kernels read the batch's rows and
stream words from a batch table on the device, which each epoch writes in
one copy), so the launches of one batch, captured once as a CUDA graph
(``gpunet.graphs``), replay every later batch of its size in one launch,
with the same results bit for bit. A fit has at most two batch sizes (even
batches differ by at most one row): the first batch of each size runs
eagerly (it compiles the kernels), the second is captured, and the rest
replay. An epoch that fits the single-block kernel is one launch already and
runs it. A capture that fails warns once and the fit goes on eagerly.
"""

from __future__ import annotations

import warnings

import numpy as np

from . import graphs
from .kernels import rbm as _rbm


class EpochGraphs:
    """``kernels.rbm.cd_epoch_cuda`` with its tiled batches replayed from CUDA
    graphs: called as it is, it returns the offset after the epoch's draws.
    It keeps the ``TiledEpoch`` of the last epoch and its graphs (one per
    batch size) for the next epoch with the same arrays, rule and batches."""

    def __init__(self):
        self.epoch = None  # the TiledEpoch the graphs replay
        self.graphs = {}  # batch rows -> StepGraph of one batch of that many rows
        self.warm = set()  # batch rows that ran eagerly once on self.epoch
        self.failed = False

    def __reduce__(self):
        return (type(self), ())  # graphs hold device state: a copy starts afresh

    def __call__(
        self, X, bounds, params, velocities, chain, seed, offset, lr, momentum, decay, k,
        persistent, gaussian,
    ):  # fmt: skip
        args = (X, bounds, params, velocities, chain)
        rule = (seed, lr, momentum, decay, k, persistent, gaussian)
        if self.failed or len(bounds) < 2 or not _rbm.epoch_runs_tiled(*args, persistent):
            return _rbm.cd_epoch_cuda(*args, seed, offset, *rule[1:])
        epoch = self.epoch
        if epoch is None or not epoch.fits(*args, *rule):
            epoch = self.epoch = _rbm.TiledEpoch(*args, *rule)
            self.graphs.clear()
            self.warm.clear()
        end = epoch.begin(bounds, offset)
        for n in np.diff(bounds).tolist():
            graph = self.graphs.get(n)
            if graph is None and n in self.warm and not self.failed:
                graph = self._capture(epoch, n)
            if graph is None:
                epoch.batch(n)
                self.warm.add(n)
            else:
                graph.replay()
        return end

    def _capture(self, epoch, n):
        """The graph of one batch of ``n`` rows (captured, not run), or None
        after a warning when it cannot be captured."""
        try:
            graph = graphs.StepGraph.capture(lambda: epoch.batch(n))
        except graphs.CaptureError as error:
            self.failed = True
            warnings.warn(f"cuda_graph: {error}; training eagerly", RuntimeWarning, stacklevel=5)
            return None
        self.graphs[n] = graph
        return graph
