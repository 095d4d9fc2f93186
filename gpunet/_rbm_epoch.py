"""The CPU RBM epoch as ``gn.RBM`` runs it: the compiled chunks of
``kernels.rbm.CPUEpoch``, each chunk's uniforms drawn on a worker thread
while the chunk before it runs, so that Philox leaves the critical path.

The results are those of the kernel ``kernels.rbm.cd_epoch_cpu`` (each chunk
drawn just before it runs), bit for bit: a draw reads nothing the batches
write. Drawing ahead is a choice of how to use the machine, made here: it
pays on a second core that is free, and costs when that core is busy
elsewhere (another process, BLAS's spinning threads), where joining the
worker waits for a time slice. So the driver times each chunk drawn ahead
against the epoch's first chunk, run on one thread, and backs off from
drawing ahead when one falls behind (see :class:`DrawAhead`).
"""

from __future__ import annotations

import concurrent.futures
import functools
import time

import numba
import numpy as np

from .kernels import rbm as _rbm

#: Epochs of at least this many batches draw ahead, where Numba may use more
#: than one thread: shorter ones have few chunks to overlap (the first runs
#: on one thread, to set the pace the others are held to).
DRAW_AHEAD_MIN_BATCHES = 256
#: A chunk drawn ahead that takes this many times the per-batch time of the
#: epoch's first chunk (run on one thread) means the second core is busy
#: elsewhere: the epoch goes on on one thread, and later epochs back off.
DRAW_AHEAD_SLOWDOWN = 1.5
#: Back-offs double from 4 epochs up to this many.
DRAW_AHEAD_MAX_BACKOFF = 1024


class DrawAhead:
    """Whether epochs draw ahead: after an epoch that fell behind drawing
    ahead, the next 4 skip it; if the next that draws ahead falls behind too,
    the 8 after it, and so on up to DRAW_AHEAD_MAX_BACKOFF; an epoch that
    draws ahead to its end resets the back-off."""

    def __init__(self):
        self.skip = 0  # epochs left that skip drawing ahead
        self.backoff = 0  # the last back-off; 0 once an epoch kept up

    def allows(self, n_batches: int) -> bool:
        """Whether an epoch of ``n_batches`` batches starts drawing ahead (a
        refusal for the back-off counts as a skipped epoch)."""
        if n_batches < DRAW_AHEAD_MIN_BATCHES or numba.get_num_threads() < 2:
            return False
        if self.skip > 0:
            self.skip -= 1
            return False
        return True

    def fell_behind(self) -> None:
        self.backoff = min(max(2 * self.backoff, 4), DRAW_AHEAD_MAX_BACKOFF)
        self.skip = self.backoff

    def kept_up(self) -> None:
        self.backoff = 0


#: The back-off that gn.RBM's CPU epochs share: one process, one set of cores.
DRAW_AHEAD = DrawAhead()


def cd_epoch_threaded(
    X, bounds, params, velocities, chain, seed, offset, lr, momentum, decay, k, persistent,
    gaussian, draw_ahead=DRAW_AHEAD,
):  # fmt: skip
    """``kernels.rbm.cd_epoch_cpu`` (same arguments, same result bit for bit),
    drawing each chunk's uniforms on a worker thread while the chunk before
    it runs, as far as ``draw_ahead`` allows."""
    epoch = _rbm.CPUEpoch(
        X, bounds, params, velocities, chain, seed, offset, lr, momentum, decay, k, persistent,
        gaussian,
    )  # fmt: skip
    if not draw_ahead.allows(epoch.n_batches):
        return epoch.run_serially()
    ahead = True
    buffers = np.empty((2, epoch.longest), np.float32)
    per_batch = 0.0  # seconds per batch of the first chunk, on one thread
    u = epoch.draw(0, buffers[0])
    for i in range(epoch.chunks):
        following, later = i + 1, buffers[(i + 1) % 2]
        batches = len(epoch.batches(i))
        began = time.perf_counter()
        if ahead and following < epoch.chunks and per_batch > 0:
            drawn = _drawing_thread().submit(epoch.draw, following, later)
            epoch.run(i, u)
            u = drawn.result()
            if time.perf_counter() - began > DRAW_AHEAD_SLOWDOWN * per_batch * batches:
                ahead = False
                draw_ahead.fell_behind()
        else:
            epoch.run(i, u)
            if following < epoch.chunks:
                u = epoch.draw(following, later)
            if per_batch == 0:
                per_batch = (time.perf_counter() - began) / batches
    if ahead:
        draw_ahead.kept_up()
    return epoch.finish()


@functools.cache
def _drawing_thread():
    """The one worker thread that draws a chunk's uniforms ahead."""
    return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gpunet-rbm-draw")
