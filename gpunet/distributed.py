"""Data-parallel training across processes: MPI (mpi4py) between processes
and hosts, NCCL (CuPy's bindings) between GPUs.

``init()`` joins MPI's world communicator when the process was started by an
MPI launcher (``mpiexec``, ``srun``, ``mpirun``); otherwise it makes a world
of one, so that the same script runs alone. ``pip install "gpunet[mpi]"``
brings mpi4py and the MPICH wheel, whose ``mpiexec`` starts the ranks::

    mpiexec -n 2 gpunet train
    mpiexec -n 2 python script.py      # a script that calls gn.distributed.init()

After ``init()``, ``Model.fit`` trains data-parallel (see ``gpunet.training``):
rank 0's parameters are broadcast, every rank takes its share of each global
batch of ``world_size() * batch_size`` rows (the shares concatenated in rank
order make the global batch), the gradients are averaged before each
optimizer step, and only rank 0 shows progress and writes files. ``gn.RBM``'s
``fit`` averages its CD updates the same way.

Reductions run over the model's flat gradient buffers (one per dtype and
device, ``gpunet.parameter``), one message per buffer. Host buffers go
through MPI. Device buffers go through NCCL when every rank's model is on a
GPU and CuPy with NCCL is installed (``gpunet[cuda12]`` / ``gpunet[cuda13]``),
through a CUDA-aware MPI when ``GPUNET_MPI_CUDA_AWARE=1`` says that the MPI
library is one, and otherwise through pinned host buffers. On a GPU host each
rank takes the GPU of its local rank (``cuda:local_rank % gpus``).

An exception inside ``fit`` (or an uncaught one anywhere, after ``init()``)
on any rank ends the whole job through ``MPI_Abort``, with a line on stderr
naming the rank, instead of leaving the other ranks waiting in a collective.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import traceback

import numpy as np

from . import ops
from . import random as _random
from ._device import get_device, set_device
from .kernels import _cuda
from .kernels import dropout as _dropout
from .kernels import rbm as _rbm
from .kernels import rng as _rng

__all__ = [
    "allreduce_gradients",
    "barrier",
    "broadcast_parameters",
    "init",
    "is_initialized",
    "local_rank",
    "rank",
    "shutdown",
    "world_size",
]

#: Environment variables that MPI launchers set in the processes they start
#: (MPICH's and Intel MPI's hydra, Open MPI, PMIx, Slurm's srun).
LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "SLURM_PROCID")

#: Set to 1 when the MPI library accepts GPU buffers (a CUDA-aware build).
CUDA_AWARE_VARIABLE = "GPUNET_MPI_CUDA_AWARE"


class _World:
    """The processes training together: the communicator (None for a world
    of one without MPI), this process's rank and local rank, the size."""

    def __init__(self, comm=None):
        self.comm = comm
        if comm is None:
            self.rank, self.size, self.local_rank = 0, 1, 0
            return
        from mpi4py import MPI

        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank = node.Get_rank()
        node.Free()
        self.cuda_aware = os.environ.get(CUDA_AWARE_VARIABLE, "") == "1"
        self.nccl = None  # the NCCL communicator, made at the first device reduction
        self.staging = {}  # id(device buffer) -> pinned host buffer

    # --- collectives --------------------------------------------------------------

    def bcast_object(self, value, root=0):
        return self.comm.bcast(value, root=root)

    def allreduce_array(self, a):
        """Sum the host array ``a`` over the ranks, in place."""
        from mpi4py import MPI

        self.comm.Allreduce(MPI.IN_PLACE, a, op=MPI.SUM)

    def broadcast_array(self, a, root=0):
        """Make the array ``a`` (host or device) rank ``root``'s, in place."""
        if isinstance(a, np.ndarray):
            self.comm.Bcast(a, root=root)
            return
        path = self.device_path()
        if path == "nccl":
            import cupy

            view = cupy.asarray(a)
            self._nccl().bcast(view.data.ptr, view.size, _nccl_type(view.dtype), root, 0)
        elif path == "cuda-aware-mpi":
            import cupy

            cupy.cuda.Device().synchronize()
            self.comm.Bcast(cupy.asarray(a), root=root)
        else:
            host = a.copy_to_host()
            self.comm.Bcast(host, root=root)
            a.copy_to_device(host)

    def allreduce_scaled(self, a, weight: float):
        """``a`` (host or device, 1-D) becomes the sum over the ranks of
        ``weight * a``, in place: the weighted average when the weights sum to 1."""
        if isinstance(a, np.ndarray):
            np.multiply(a, a.dtype.type(weight), out=a)
            self.allreduce_array(a)
        elif self.device_path() == "host":
            host = self.staging.get(id(a))
            if host is None or host.shape != a.shape:
                host = self.staging[id(a)] = _cuda.cuda.pinned_array(a.shape, a.dtype)
            a.copy_to_host(host)
            np.multiply(host, host.dtype.type(weight), out=host)
            self.allreduce_array(host)
            a.copy_to_device(host)
        else:
            import cupy

            view = cupy.asarray(a)
            view *= view.dtype.type(weight)
            if self.device_path() == "nccl":
                from cupy.cuda import nccl

                ptr, kind = view.data.ptr, _nccl_type(view.dtype)
                self._nccl().allReduce(ptr, ptr, view.size, kind, nccl.NCCL_SUM, 0)
            else:
                cupy.cuda.Device().synchronize()
                self.allreduce_array(view)

    def device_path(self) -> str:
        """How device buffers travel: "nccl" (CuPy's NCCL on every rank),
        "cuda-aware-mpi" (CuPy on every rank and GPUNET_MPI_CUDA_AWARE=1), or
        "host" (pinned host buffers; always under the CUDA simulator). Decided
        once, collectively, at the first device reduction."""
        if not hasattr(self, "_device_path"):
            here = "host"
            if not _cuda.SIMULATOR and _cupy_available():
                here = "nccl" if _nccl_available() else "host"
                here = "cuda-aware-mpi" if self.cuda_aware else here
            everyone = set(self.comm.allgather(here))
            self._device_path = here if len(everyone) == 1 else "host"
        return self._device_path

    def _nccl(self):
        if self.nccl is None:
            from cupy.cuda import nccl

            uid = nccl.get_unique_id() if self.rank == 0 else None
            uid = self.comm.bcast(uid, root=0)
            self.nccl = nccl.NcclCommunicator(self.size, uid, self.rank)
        return self.nccl

    def abort(self, message: str, status: int = 1):
        """Write ``message`` to the process's stderr and end every rank."""
        stream = sys.__stderr__ or sys.stderr
        stream.write(message.rstrip() + "\n")
        stream.flush()
        self.comm.Abort(status)
        os._exit(status)  # MPI_Abort may return before the launcher ends the ranks

    # --- Model.fit's hooks (see gpunet.training) ----------------------------------

    def check_same(self, what: str, **facts):
        """ValueError on every rank unless every rank passed the same ``facts``."""
        everyone = self.comm.allgather(facts)
        differing = [r for r, theirs in enumerate(everyone) if theirs != everyone[0]]
        if differing:
            raise ValueError(
                f"{what}: expected every rank to pass the same arguments, got {everyone[0]} on "
                f"rank 0 and {everyone[differing[0]]} on rank {differing[0]}"
            )

    def starts(self, n: int, batch_size: int, min_rows: int) -> np.ndarray:
        """Where each global batch (``size * batch_size`` rows) of n rows
        starts, and n; a last batch that cannot give every rank ``min_rows``
        rows is folded into the one before it."""
        least = self.size * min_rows
        if n < least:
            raise ValueError(
                f"expected at least {least} training rows for {self.size} ranks "
                f"({min_rows} a rank), got {n}"
            )
        starts = list(range(0, n, batch_size * self.size)) + [n]
        if len(starts) > 2 and starts[-1] - starts[-2] < least:
            del starts[-2]
        return np.array(starts, np.int64)

    def share_bounds(self, n: int) -> tuple[int, int]:
        """[first, stop) of this rank's rows in a global batch of n rows:
        shares in rank order, their sizes differing by at most one."""
        base, extra = divmod(n, self.size)
        first = self.rank * base + min(self.rank, extra)
        return first, first + base + (self.rank < extra)

    def local_sizes(self, starts) -> np.ndarray:
        first, stop = np.array([self.share_bounds(int(n)) for n in np.diff(starts)]).T
        return (stop - first).astype(np.float64)

    def share(self, rows):
        """This rank's part of a global batch's ``rows`` (a slice or an index
        array); Dropout layers draw their masks for it as part of the global
        batch until the step's gradients are averaged."""
        global _share
        n = (rows.stop - rows.start) if isinstance(rows, slice) else len(rows)
        first, stop = self.share_bounds(n)
        _share = (first, stop - first, n)
        if isinstance(rows, slice):
            return slice(rows.start + first, rows.start + stop)
        return rows[first:stop]

    def begin(self, model, state, **facts):
        """At the start of a fit: check that every rank fits alike, then give
        every rank rank 0's parameters, buffers, random streams' positions
        and shuffling generator."""
        self.check_same("fit", **facts)
        broadcast_parameters(model)
        generators = [_random.default_generator, *_own_generators(model)]
        positions = self.bcast_object([g.state_dict() for g in generators])
        for g, position in zip(generators, positions, strict=True):
            g.load_state_dict(position)
        state.rng.bit_generator.state = self.bcast_object(state.rng.bit_generator.state)
        state.shuffle = state.rng.bit_generator.state if not state.step else state.shuffle

    def average_gradients(self, optimizer):
        """Average the step's gradients over the ranks, each rank's weighted
        by its share of the global batch."""
        global _share
        first, rows, total = _share
        _share = None
        _reduce(self, optimizer.params, rows / total)

    def epoch_metrics(self, model, loss_fn, read, steps, sizes, per_sample) -> dict:
        """The epoch's loss and accuracy over the global batches, the same on
        every rank; the layers' buffers (running statistics) become rank
        0's, so that evaluation agrees on every rank."""
        losses, hits = read(steps)
        totals = np.array([losses @ sizes, sizes.sum(), hits.sum()], np.float64)
        self.allreduce_array(totals)
        _broadcast_buffers(self, model)
        metrics = {"loss": float(totals[0] / totals[1])}
        if loss_fn.hits_kind is not None:
            metrics["accuracy"] = float(totals[2] / (totals[1] * per_sample))
        return metrics


#: The world after init(); None before it and after shutdown().
_WORLD: _World | None = None
#: (first row, rows, global rows) of the training step in progress on this rank.
_share: tuple[int, int, int] | None = None


def _launched() -> bool:
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


def _cupy_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, or CuPy without a CUDA driver
        return False


def _nccl_available() -> bool:
    try:
        from cupy.cuda import nccl

        return nccl.available if hasattr(nccl, "available") else True
    except Exception:  # ImportError, or CuPy built without NCCL
        return False


def _nccl_type(dtype):
    from cupy.cuda import nccl

    return {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64}[
        np.dtype(dtype)
    ]


def init():
    """Join the MPI job this process was started in (by ``mpiexec``,
    ``srun``, ...), or make a world of one when it was started alone; returns
    nothing. Calling it again does nothing. In a job of several ranks on a
    GPU host, the default device becomes the GPU of this rank's local rank,
    and an uncaught exception ends every rank (``MPI_Abort``)."""
    global _WORLD
    if _WORLD is not None:
        return
    if not _launched():
        _WORLD = _World()
        return
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(
            "gpunet.distributed: this process was started by an MPI launcher, but mpi4py is "
            f'not installed ({exc}); install it with pip install "gpunet[mpi]"'
        ) from exc
    world = _World(MPI.COMM_WORLD)
    _WORLD = world
    if world.size > 1:
        device = get_device()
        if device.type == "cuda":
            set_device(f"cuda:{world.local_rank % len(_cuda.cuda.gpus)}")
        sys.excepthook = _abort_on_uncaught


def _abort_on_uncaught(kind, value, tb):
    sys.__excepthook__(kind, value, tb)
    world = _WORLD
    if world is not None and world.comm is not None:
        world.abort(_failure(world, "the script", value), _status(value))


def _failure(world, what, exc) -> str:
    """The line naming the rank and the error that ends the job."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    text = " ".join(str(exc).split())
    error = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return (
        f"gpunet.distributed: rank {world.rank} of {world.size} failed in {what}: "
        f"{error}{where}; stopping all ranks"
    )


def _status(exc) -> int:
    return 130 if isinstance(exc, KeyboardInterrupt) else 1


def is_initialized() -> bool:
    """Whether init() has run (and shutdown() has not since)."""
    return _WORLD is not None


def rank() -> int:
    """This process's rank in the world (0 in a world of one or before init())."""
    return 0 if _WORLD is None else _WORLD.rank


def world_size() -> int:
    """The number of processes in the world (1 alone or before init())."""
    return 1 if _WORLD is None else _WORLD.size


def local_rank() -> int:
    """This process's rank among those on its host (0 alone)."""
    return 0 if _WORLD is None else _WORLD.local_rank


def _multi() -> _World | None:
    """The world when it has several ranks, else None."""
    return _WORLD if _WORLD is not None and _WORLD.size > 1 else None


def fit_world() -> _World | None:
    """The world that ``Model.fit`` trains in, None for a world of one."""
    return _multi()


def barrier() -> None:
    """Wait until every rank gets here (nothing in a world of one)."""
    world = _multi()
    if world is not None:
        world.comm.Barrier()


def _model_params(model):
    if not hasattr(model, "parameters"):
        raise TypeError(f"expected a model with parameters(), got {type(model).__name__}")
    return list(model.parameters())


def _flats(params):
    """The distinct flat buffers that ``params`` live in, in order."""
    return list({id(p._flat): p._flat for p in params}.values())


def _check_root(root, world):
    size = 1 if world is None else world.size
    if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or not 0 <= root < size:
        raise ValueError(f"expected a root rank in [0, {size}), got {root!r}")


def broadcast_parameters(model, root: int = 0) -> None:
    """Give every rank rank ``root``'s parameter values (one message per
    flat buffer) and layer buffers (BatchNorm's running statistics)."""
    params = _model_params(model)
    world = _multi()
    _check_root(root, world)
    if world is None:
        return
    for flat in _flats(params):
        world.broadcast_array(flat.data, root)
    _broadcast_buffers(world, model, root)


def _broadcast_buffers(world, model, root=0):
    for layer in _layers(model):
        for _, buffer in layer._named_buffers():
            world.broadcast_array(buffer, root)


def _layers(model):
    layers = getattr(model, "layers", None)
    if layers is None:
        return [model] if hasattr(model, "_named_buffers") else []
    return [leaf for layer in layers for leaf in _layers(layer)]


def _own_generators(model):
    return [
        layer._generator
        for layer in _layers(model)
        if getattr(layer, "_generator", _random.default_generator) is not _random.default_generator
    ]


def allreduce_gradients(model) -> None:
    """Average the parameters' gradients over the ranks: each flat gradient
    buffer (one per dtype and device) is one message, summed and divided by
    the world size. Nothing happens in a world of one."""
    params = _model_params(model)
    world = _multi()
    if world is not None:
        _reduce(world, params, 1.0 / world.size)


def _reduce(world, params, weight):
    for p in params:
        if p._grad_is_zero:
            p.grad  # noqa: B018 (reading a lazily zeroed gradient writes its zeros)
    for flat in _flats(params):
        world.allreduce_scaled(flat.grad, weight)


def shutdown() -> None:
    """Leave the world: free the NCCL communicator and put back the
    exception hook; MPI itself is finalized when the interpreter exits
    (mpi4py does it). ``init()`` may join again."""
    global _WORLD, _share
    world = _WORLD
    if world is None:
        return
    if world.comm is not None and world.size > 1:
        world.comm.Barrier()
        if sys.excepthook is _abort_on_uncaught:
            sys.excepthook = sys.__excepthook__
    _WORLD, _share = None, None


def collective(what: str):
    """Decorate a function that every rank calls together (``Model.fit``):
    in a world of several ranks, an exception in it on any rank ends the job
    (``MPI_Abort``) with a line naming the rank, so that no rank waits for
    ever in a collective that the failed one will not join."""

    def decorate(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            world = _multi()
            if world is None:
                return function(*args, **kwargs)
            try:
                return function(*args, **kwargs)
            except BaseException as exc:
                world.abort(_failure(world, what, exc), _status(exc))

        return wrapper

    return decorate


def command(run):
    """Decorate a command-line ``run(args)`` so that it trains data-parallel
    under ``mpiexec``: init() first; then, with several ranks, ranks other than
    0 print nothing and write no files (``args.output`` and ``args.plot``
    cleared), and an error or a non-zero status on any rank ends the job
    with a line naming the rank."""

    @functools.wraps(run)
    def wrapper(args):
        init()
        world = _multi()
        if world is None:
            return run(args)
        quiet = world.rank != 0
        if quiet:
            for name, value in (("output", ""), ("plot", None)):
                if hasattr(args, name):
                    setattr(args, name, value)
        if not quiet:
            print(
                f"gpunet {args.command}: data-parallel on {world.size} ranks (MPI); each takes "
                f"its share of every global batch of {world.size} x --batch-size rows",
                flush=True,
            )
        streams = sys.stdout, sys.stderr
        try:
            with open(os.devnull, "w") as devnull:
                if quiet:
                    sys.stdout = sys.stderr = devnull
                try:
                    status = run(args)
                finally:
                    sys.stdout, sys.stderr = streams
        except BaseException as exc:
            world.abort(_failure(world, f"gpunet {args.command}", exc), _status(exc))
        if status:
            world.abort(
                f"gpunet.distributed: rank {world.rank} of {world.size} ended gpunet "
                f"{args.command} with status {status}; stopping all ranks",
                status,
            )
        return status

    return wrapper


# --- Dropout's masks in a share of a global batch --------------------------------------


def batch_share():
    """(first row, rows, global rows) of this rank's share of the training
    step in progress, or None outside a data-parallel step."""
    return _share


# --- gn.RBM's data-parallel epoch ------------------------------------------------------


def _host(a):
    return a if isinstance(a, np.ndarray) else a.copy_to_host()


def _draw_part(seed, offset, count, first, stop, gaussian):
    """The values [first, stop) of a sampling draw of ``count`` values at
    ``offset`` (``kernels.rbm``'s layout: value i reads word offset + i, or
    words offset + 2i and + 2i + 1 for a Gaussian); returns (values as
    float32, shape (stop - first,) or (stop - first, 2); the next offset)."""
    per = 2 if gaussian else 1
    u = np.empty((stop - first) * per, np.float32)
    if u.size:
        _rng.uniform_cpu(u, seed, offset + per * first)
    u = u.reshape(-1, 2) if gaussian else u
    return u, offset + _rbm.aligned_words(count * per)


def _sample(mean, u, gaussian, dtype):
    if not gaussian:
        return (u < mean).astype(dtype)
    u = u.astype(np.float64)
    noise = np.sqrt(-2.0 * np.log1p(-u[:, 0])) * np.cos(2.0 * np.pi * u[:, 1])
    return (mean + noise.reshape(mean.shape)).astype(dtype)


@collective("RBM.fit")
def rbm_update(rbm, X, bounds) -> int:
    """CD-k or PCD-k updates of ``rbm`` (a fitted ``gn.RBM``) over the global
    batches X[bounds[t]:bounds[t + 1]], each rank taking its share of every
    batch and of the chain, the gradient sums added over the ranks in one
    message per batch. The samples are those one process draws for the
    whole batch, so N ranks take the steps one process takes with N times
    the batch size (to rounding). The products run on the CPU kernels, on
    the host. Returns the stream offset after the epoch."""
    world = _WORLD
    world.check_same("RBM.fit", X=tuple(X.shape), bounds=[int(t) for t in bounds],
                     chain=tuple(rbm._chain.shape))  # fmt: skip
    conditional = _rbm.conditional_cpu
    device = rbm.device_.type != "cpu"
    params = [_host(a) for a in (rbm._W, rbm._b, rbm._c)]
    velocities = [_host(a) for a in rbm._velocities]
    chain = _host(rbm._chain)
    for a in params + velocities:
        world.comm.Bcast(a, root=0)
    seed, offset = world.bcast_object((rbm._seed, rbm._offset))
    W, b, c = params
    n_hidden, n_visible = W.shape
    dtype = W.dtype
    data = _host(X)
    k, persistent = rbm.k, rbm.persistent
    gaussian = rbm._visible == "gaussian"
    lr, momentum, decay = rbm.learning_rate, rbm.momentum, rbm.weight_decay
    visible_activation = _rbm.IDENTITY if gaussian else _rbm.SIGMOID
    chain_rows = chain.shape[0]
    message = np.empty(W.size + n_visible + n_hidden, dtype)
    dW = message[: W.size].reshape(W.shape)
    db, dc = message[W.size : W.size + n_visible], message[W.size + n_visible :]
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        n = int(stop - start)
        first, last = world.share_bounds(n)
        v = data[start + first : start + last]
        hp = np.empty((len(v), n_hidden), dtype)
        conditional(v, W, c, True, _rbm.SIGMOID, out=hp)
        if persistent:
            h, m, row0 = chain, chain_rows * world.size, chain_rows * world.rank
        else:
            u, offset = _draw_part(seed, offset, n * n_hidden, first * n_hidden,
                                   last * n_hidden, False)  # fmt: skip
            h, m, row0 = _sample(hp, u.reshape(hp.shape), False, dtype), n, first
        rows = len(h)
        for step in range(k):
            mean = np.empty((rows, n_visible), dtype)
            conditional(h, W, b, False, visible_activation, out=mean)
            u, offset = _draw_part(seed, offset, m * n_visible, row0 * n_visible,
                                   (row0 + rows) * n_visible, gaussian)  # fmt: skip
            vn = _sample(mean.reshape(-1), u, gaussian, dtype).reshape(mean.shape)
            hn = np.empty((rows, n_hidden), dtype)
            conditional(vn, W, c, True, _rbm.SIGMOID, out=hn)
            if persistent or step < k - 1:
                u, offset = _draw_part(seed, offset, m * n_hidden, row0 * n_hidden,
                                       (row0 + rows) * n_hidden, False)  # fmt: skip
                h = _sample(hn.reshape(-1), u, False, dtype).reshape(hn.shape)
        np.subtract(hp.T @ v / dtype.type(n), hn.T @ vn / dtype.type(m), out=dW)
        np.subtract(v.sum(axis=0) / dtype.type(n), vn.sum(axis=0) / dtype.type(m), out=db)
        np.subtract(hp.sum(axis=0) / dtype.type(n), hn.sum(axis=0) / dtype.type(m), out=dc)
        world.allreduce_array(message)
        for i, (p, vel, g) in enumerate(zip(params, velocities, (dW, db, dc), strict=True)):
            step_ = g - dtype.type(decay) * p if i == 0 and decay else g
            vel *= dtype.type(momentum)
            vel += dtype.type(lr) * step_
            p += vel
        if persistent:
            chain[...] = h
    if device:
        rbm._W, rbm._b, rbm._c = (rbm._put(a) for a in params)
        rbm._velocities = [rbm._put(a) for a in velocities]
        rbm._chain = rbm._put(chain)
    return offset


def dropout_share(layer, x, kind, share):
    """A Dropout ``layer``'s training forward of ``x``, this rank's ``share``
    (first row, rows, global rows) of a global batch: the layer's stream
    moves on by the global batch's draw, and x gets its rows' part of that
    mask. Returns (output, the draw (seed, word, lead) for the backward)."""
    first, _, total = share
    row = math.prod(x.shape[1:])
    generator = layer._generator
    offset = generator.take(_dropout.words(total * row))
    lead = first * row  # x's first element in the global batch's mask
    draw = (generator.seed, offset + 4 * (lead // 8), lead % 8)
    return dropout_shared(layer, x, kind, draw, "y"), draw


def dropout_shared(layer, x, kind, draw, name):
    """``x`` through the mask of ``draw`` (seed, word, lead): the mask of a
    draw at ``word`` without its first ``lead`` elements (fewer than the 8
    that one Philox block serves). With a lead, x is copied in after
    ``lead`` elements of padding, so that each element meets its word."""
    seed, word, lead = draw
    shape, dtype = tuple(x.shape), x.dtype
    if not lead:
        return ops.dropout(x, layer.p, seed, word, out=layer._output(name, kind, shape, dtype))
    n = math.prod(shape)
    padded = layer._output(f"{name}_padded", kind, (lead + n,), dtype)
    out = layer._output(f"{name}_padded_out", kind, (lead + n,), dtype)
    if kind == "cpu":
        padded[lead:] = x.reshape(-1)
    else:
        padded[lead:].copy_to_device(_cuda.as_device_array(x).reshape(n))
    ops.dropout(padded, layer.p, seed, word, out=out)
    return out[lead:].reshape(shape)
