"""The workloads behind ``gpunet bench``: each gpunet kernel or training loop
on one device, timed against the machine's ceilings and against the peers a
user would otherwise reach for, in the same process, on the same data.

Timing: every callable is warmed up first (JIT compilation stays out); a
time is the median of several samples, each of enough calls to last about
``SAMPLE_SECONDS``; a peer ratio is the median, over rounds that run the peer
and gpunet alternately, of time(peer) / time(gpunet), so that the machine's
drift between fast and slow states cancels. Above 1, gpunet is faster.

Ceilings, measured at the start of a run: a large float32 matrix product
(GFLOP/s: numpy's BLAS on the CPU, cuBLAS through CuPy on a GPU, or gpunet's
tiled kernel without CuPy) and a large copy (GB/s), the limits of
compute-bound and memory-bound work. A memory-bound row's fraction of the
copy ceiling is timed alternately with that large copy, as peers are (the
CPU's dense layer, likewise, against its own three products); the other
rows divide by the ceiling measured at the start.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
import time
from collections.abc import Callable

import numba
import numpy as np

from . import _device, nn, ops
from . import losses as _losses
from . import optim as _optim
from .kernels import _cuda
from .kernels import dense as _dense
from .kernels._cpu import store_affine_streaming, store_fence

#: Pause for a thread pool to go idle: OpenBLAS's workers spin about 0.1 s
#: after a product, and a peer whose threads start meanwhile shares its cores
#: with them.
BLAS_IDLE_SECONDS = 0.3


@dataclasses.dataclass
class Settings:
    """How long to time. A time is the median of at least ``min_samples``
    samples, more while ``budget`` seconds last, at most ``max_samples``;
    each sample runs enough calls to last ``sample_seconds``. ``quick``
    shrinks the sizes and keeps a few short samples."""

    quick: bool = False

    @property
    def min_samples(self) -> int:
        return 3 if self.quick else 7

    @property
    def max_samples(self) -> int:
        return 5 if self.quick else 101

    @property
    def budget(self) -> float:
        return 0.0 if self.quick else 0.5

    @property
    def sample_seconds(self) -> float:
        # 20 ms: long enough that a peer's threads still spinning when a sample
        # starts (OpenMP's, OpenBLAS's) cost a few percent, not a third.
        return 1e-4 if self.quick else 2e-2

    @property
    def idle_seconds(self) -> float:
        """The pause before each sample of a ratio between thread pools."""
        return 0.0 if self.quick else BLAS_IDLE_SECONDS

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full


def _sync(device):
    if device.type == "cuda":
        _cuda.cuda.synchronize()


def _per_sample(fn, device, seconds):
    start = time.perf_counter()
    fn()
    _sync(device)
    once = time.perf_counter() - start
    return max(1, math.ceil(seconds / max(once, 1e-9)))


def _sample(fn, device, number):
    start = time.perf_counter()
    for _ in range(number):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / number


def _rounds(settings: Settings):
    """Round numbers while the sample counts and the time budget allow."""
    deadline = time.perf_counter() + settings.budget
    done = 0
    while done < settings.min_samples or (
        done < settings.max_samples and time.perf_counter() < deadline
    ):
        yield done
        done += 1


def median_time(fn: Callable, device, settings: Settings) -> float:
    """Median seconds per call of ``fn()`` (called once first, to warm up)."""
    number = _per_sample(fn, device, settings.sample_seconds)
    return statistics.median(_sample(fn, device, number) for _ in _rounds(settings))


def median_ratio(
    peer: Callable, gpunet: Callable, device, settings: Settings, foreign_threads=False
) -> float:
    """Median over alternating rounds of time(peer) / time(gpunet).

    ``foreign_threads``: the peer runs a CPU thread pool of its own (torch's),
    so each sample waits ``settings.idle_seconds`` first for the other side's
    workers to stop spinning. Without the pause torch's MLP epoch ran 1.35x
    slower straight after gpunet's (whose OpenBLAS workers still spun) than
    after one of its own, and the ratio credited gpunet with the difference."""
    idle = settings.idle_seconds if foreign_threads and device.type == "cpu" else 0.0
    n_peer = _per_sample(peer, device, settings.sample_seconds)
    n_ours = _per_sample(gpunet, device, settings.sample_seconds)
    ratios = []
    for _ in _rounds(settings):
        time.sleep(idle)
        ours = _sample(gpunet, device, n_ours)
        time.sleep(idle)
        ratios.append(_sample(peer, device, n_peer) / ours)
    return statistics.median(ratios)


# --- ceilings -------------------------------------------------------------------------


def copies(device, nbytes: int) -> list[Callable]:
    """Plain copies of an ``nbytes`` buffer into another on ``device``: on the
    CPU numpy's (one core), a threaded one (the limit parallel kernels meet on
    many cores) and a threaded one with streaming stores (the limit of
    kernels that write so; a plain store first reads the line it writes:
    on a 2-core AMD EPYC, 28-35 GB/s against 38 for gpunet's streaming
    activations); on a GPU Numba's device copy and CuPy's, whose speeds
    differ (Numba's alone has varied between 1.1 and 2.0 TB/s on an H100
    that copies 2.9)."""
    if device.type == "cpu":
        src = np.ones(nbytes, np.uint8)
        dst = np.empty_like(src)
        found = [functools.partial(np.copyto, dst, src), functools.partial(_copy, src, dst)]
        if nbytes % _STREAMING_CHUNK == 0:
            rows = (-1, _STREAMING_CHUNK // 4)
            found.append(
                functools.partial(
                    _streaming_copy,
                    src.view(np.float32).reshape(rows),
                    dst.view(np.float32).reshape(rows),
                )
            )
        return found
    src = _cuda.cuda.to_device(np.ones(nbytes, np.uint8))
    dst = _cuda.cuda.device_array(nbytes, np.uint8)
    found = [functools.partial(dst.copy_to_device, src)]
    cupy = cupy_module()
    if cupy is not None:
        csrc, cdst = cupy.asarray(src), cupy.asarray(dst)
        found.append(functools.partial(cupy.copyto, cdst, csrc))
    return found


def fastest(fns: list[Callable], device, settings: Settings) -> tuple[Callable, float]:
    """(the fastest of ``fns``, its median seconds per call)."""
    timed = []
    for fn in fns:
        fn()
        timed.append((median_time(fn, device, settings), fn))
    seconds, fn = min(timed, key=lambda pair: pair[0])
    return fn, seconds


def large_copy(device, settings: Settings) -> tuple[Callable, int, float]:
    """(the fastest plain copy of a large buffer, the bytes it moves (read
    plus written), its GB/s)."""
    n = settings.size(1 << 28, 1 << 16)
    fn, seconds = fastest(copies(device, n // 2), device, settings)
    return fn, n, n / seconds / 1e9


@numba.njit(parallel=True, cache=False)
def _copy(src, dst):
    """dst[:] = src over all of Numba's threads, in 64 KiB chunks."""
    chunk = 1 << 16
    for c in numba.prange((src.size + chunk - 1) // chunk):
        dst[c * chunk : (c + 1) * chunk] = src[c * chunk : (c + 1) * chunk]


#: Bytes per row of the streaming copy (a quick run's buffer holds two).
_STREAMING_CHUNK = 1 << 14


@numba.njit(parallel=True, cache=False)
def _streaming_copy(src, dst):
    """dst[:] = src, (rows, 4096) float32 arrays (a byte buffer viewed so), a
    row per step over all of Numba's threads, written with streaming stores."""
    for r in numba.prange(src.shape[0]):
        store_affine_streaming(src[r], dst[r], None, None)
        store_fence()


def matmul_gflops(device, settings: Settings) -> tuple[float, str]:
    """(GFLOP/s, what ran) for a square float32 product: numpy's BLAS on the
    CPU; on a GPU cuBLAS (through CuPy), or gpunet's tiled kernel without it."""
    n = settings.size(2048 if device.type == "cpu" else 4096, 64)
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    flops = 2 * n**3
    if device.type == "cpu":
        out = np.empty((n, n), np.float32)
        fn = functools.partial(np.matmul, a, b, out=out)
        fn()
        return flops / median_time(fn, device, settings) / 1e9, "numpy matmul"
    from . import gemm

    da, db = _cuda.cuda.to_device(a), _cuda.cuda.to_device(b)
    out = _cuda.cuda.device_array((n, n), np.float32)
    if gemm.cublas_available():
        fn, name = functools.partial(gemm.cublas_matmul, da, db, out, False, False, False), "cuBLAS"
    else:
        bias = _cuda.cuda.to_device(np.zeros(n, np.float32))
        fn, name = functools.partial(_dense.dense_cuda, da, db, bias, out), "gpunet tiled"
    fn()
    return flops / median_time(fn, device, settings) / 1e9, name


# --- peers ----------------------------------------------------------------------------


@functools.cache
def torch_module():
    """torch, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


@functools.cache
def cupy_module():
    """cupy, or None when it is not installed or cannot reach a GPU."""
    from . import gemm

    return gemm._cupy_status()[0]


def _torch_device(device):
    return "cpu" if device.type == "cpu" else f"cuda:{device.index or 0}"


def _torch_sync(torch, device):
    if device.type == "cuda":
        torch.cuda.synchronize()


@dataclasses.dataclass
class Row:
    """One line of the report."""

    name: str
    seconds: float
    rate: float
    unit: str
    ceiling: float | None
    peers: dict[str, float] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)


class Bench:
    """Runs the workloads on one device and collects :class:`Row` objects."""

    def __init__(self, device, settings: Settings, peers=("numpy", "torch", "sklearn", "cupy")):
        self.device = _device._resolve(device)
        self.settings = settings
        self.peers = set(peers)
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self._copy, self._copy_bytes, self.copy_gbps = large_copy(self.device, settings)
        self.matmul_gflops, self.matmul_kind = matmul_gflops(self.device, settings)
        # BLAS's worker threads spin for a while after a product; let them go
        # idle before timing kernels that start threads of their own.
        time.sleep(0 if settings.quick else BLAS_IDLE_SECONDS)

    def _time(self, fn):
        return median_time(fn, self.device, self.settings)

    def _ratio(self, peer, ours, device=None, foreign_threads=False):
        return median_ratio(peer, ours, device or self.device, self.settings, foreign_threads)

    def _torch(self):
        torch = torch_module() if "torch" in self.peers else None
        if torch is None and "torch" in self.peers:
            self._note("torch is not installed: no torch peer")
        if torch is not None and self.device.type == "cuda" and not torch.cuda.is_available():
            self._note("torch has no CUDA here: no torch peer on the GPU")
            return None
        if torch is not None:
            import numba

            torch.set_num_threads(numba.get_num_threads())
            # float32 products in full float32, as gpunet's and CuPy's are.
            torch.backends.cuda.matmul.allow_tf32 = False
        return torch

    def _cupy(self):
        """cupy for GPU peers, or None (with a note when it was asked for)."""
        if self.device.type != "cuda" or "cupy" not in self.peers:
            return None
        cupy = cupy_module()
        if cupy is None:
            self._note("CuPy is not installed or has no GPU: no CuPy peer")
        return cupy

    def _note(self, text):
        if text not in self.notes:
            self.notes.append(text)

    def _put(self, a):
        return _device.to_device(a, self.device)

    # --- memory-bound kernels ----------------------------------------------------------

    def elementwise(self):
        """softmax and each activation, forward, on (8192, 1000) float32."""
        self._memory_bound((self.settings.size(8192, 64), 1000), _NUMPY_ELEMENTWISE)

    def softmax_wide(self):
        """softmax on (8192, 4096) float32 on a GPU, where rows are long enough
        for one block per row to stream at the copy bandwidth (GPU only)."""
        if self.device.type != "cuda":
            self._note("softmax_wide and matmul run on a GPU only")
            return
        self._memory_bound((self.settings.size(8192, 64), 4096), ["softmax"])

    def _memory_bound(self, shape, names):
        """A row per op of ``names`` (gn.ops functions of one array) on ``shape``,
        in GB/s of input read plus output written, against numpy (on the CPU),
        torch and CuPy (on a GPU)."""
        x_host = np.random.default_rng(0).standard_normal(shape, dtype=np.float32) * 3
        x = self._put(x_host)
        out = self._put(np.empty_like(x_host))
        nbytes = 2 * x_host.nbytes
        # Of the copy ceiling: the large copy timed alternately with the op,
        # as peers are (the machine drifts between fast and slow states).
        self._note("memory-bound rows: of ceiling = of the large copy's GB/s, timed alternately")
        torch, cupy = self._torch(), self._cupy()
        for name in names:
            fn = functools.partial(getattr(ops, name), x, out=out)
            fn()
            seconds = self._time(fn)
            gbps = nbytes / seconds / 1e9
            of_copy = self._ratio(self._copy, fn) * nbytes / self._copy_bytes
            row = Row(f"{name} {shape[0]}x{shape[1]}", seconds, gbps, "GB/s", of_copy)
            if self.device.type == "cpu" and "numpy" in self.peers:
                numpy_op = _NUMPY_ELEMENTWISE[name]
                row.peers["numpy"] = self._ratio(functools.partial(numpy_op, x_host), fn)
            if torch is not None:
                t = torch.from_numpy(x_host).to(_torch_device(self.device))
                torch_op = _torch_elementwise(torch, name)

                def peer(t=t, torch_op=torch_op):
                    torch_op(t)
                    _torch_sync(torch, self.device)

                peer()
                row.peers["torch"] = self._ratio(peer, fn, foreign_threads=True)
            if cupy is not None:
                xc = cupy.asarray(x)
                cupy_op = _cupy_elementwise(cupy, name)

                def cupy_peer(xc=xc, cupy_op=cupy_op):
                    cupy_op(xc)
                    cupy.cuda.runtime.deviceSynchronize()

                cupy_peer()
                row.peers["cupy"] = self._ratio(cupy_peer, fn)
            self.rows.append(row)

    def matmul(self):
        """gpunet's tiled float32 product at 4096x4096x4096 on a GPU, against
        cuBLAS through CuPy and torch, both without TF32 (GPU only)."""
        if self.device.type != "cuda":
            self._note("softmax_wide and matmul run on a GPU only")
            return
        n = self.settings.size(4096, 64)
        rng = np.random.default_rng(0)
        a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
        da, db = self._put(a), self._put(b)
        out = self._put(np.empty((n, n), np.float32))
        bias = self._put(np.zeros(n, np.float32))
        fn = functools.partial(_dense.dense_cuda, da, db, bias, out)
        fn()
        seconds = self._time(fn)
        gflops = 2 * n**3 / seconds / 1e9
        row = Row(
            f"matmul {n}x{n}x{n} (tiled)",
            seconds,
            gflops,
            "GFLOP/s",
            gflops / self.matmul_gflops,
        )
        torch = self._torch()
        if torch is not None:
            ta, tb = (torch.from_numpy(m).to(_torch_device(self.device)) for m in (a, b))
            tout = torch.empty((n, n), device=ta.device)

            def peer():
                torch.matmul(ta, tb, out=tout)
                torch.cuda.synchronize()

            peer()
            row.peers["torch"] = self._ratio(peer, fn, foreign_threads=True)
        cupy = self._cupy()
        if cupy is not None:
            ca, cb, cout = cupy.asarray(da), cupy.asarray(db), cupy.empty((n, n), np.float32)

            def cupy_peer():
                cupy.matmul(ca, cb, out=cout)
                cupy.cuda.runtime.deviceSynchronize()

            cupy_peer()
            row.peers["cupy"] = self._ratio(cupy_peer, fn)
        self.rows.append(row)

    def dispatch(self):
        """The fixed cost of a gn.ops call: relu on a (1, 10) array."""
        x_host = np.ones((1, 10), np.float32)
        x = self._put(x_host)
        out = self._put(np.empty_like(x_host))

        # Both sides are timed through a plain function, as user code calls
        # them: a functools.partial with a keyword merges dictionaries on
        # every call, about 0.2 us here, a fifth of what it would time.
        def fn():
            ops.relu(x, out=out)

        fn()
        seconds = self._time(fn)
        row = Row("dispatch: relu 1x10", seconds, seconds * 1e6, "us/call", None)
        torch = self._torch()
        if torch is not None:
            t = torch.from_numpy(x_host).to(_torch_device(self.device))

            def peer():
                torch.relu(t)

            peer()
            row.peers["torch"] = self._ratio(peer, fn, foreign_threads=True)
        self.rows.append(row)

    # --- dense layers and training ---------------------------------------------------

    def dense(self):
        """Dense forward + backward, batch 256, 784 -> 1024, relu, float32."""
        batch, n_in, n_out = self.settings.size(256, 16), 784, 1024
        rng = np.random.default_rng(0)
        host = [
            rng.standard_normal((batch, n_in), dtype=np.float32),
            (rng.standard_normal((n_in, n_out)) * np.sqrt(2 / n_in)).astype(np.float32),
            rng.standard_normal(n_out, dtype=np.float32),
            rng.standard_normal((batch, n_out), dtype=np.float32),
        ]
        x, W, b, g = (self._put(a) for a in host)
        y = self._put(np.empty((batch, n_out), np.float32))
        dz = self._put(np.empty((batch, n_out), np.float32))
        dx, dW = self._put(np.empty_like(host[0])), self._put(np.empty_like(host[1]))
        db = self._put(np.empty_like(host[2]))
        from .dispatch import kernel_for

        forward, backward = (
            kernel_for("dense", self.device.type),
            kernel_for("dense_backward", self.device.type),
        )

        def ours():
            forward(x, W, b, y, "relu")
            backward(g, x, W, y, dx, dW, db, dz, "relu")

        ours()
        seconds = self._time(ours)
        gflops = 6 * batch * n_in * n_out / seconds / 1e9
        ceiling = gflops / self.matmul_gflops
        if self.device.type == "cpu":
            # The layer's own ceiling: its three products alone through numpy's
            # BLAS (a 2048^3 product runs faster than these shapes can).
            ceiling = self._ratio(functools.partial(_bare_products, *host, y, dx, dW), ours)
            self._note("dense on the CPU: of ceiling = of its three products alone in numpy's BLAS")
        row = Row(f"dense fwd+bwd {batch}x{n_in}->{n_out}", seconds, gflops, "GFLOP/s", ceiling)
        if self.device.type == "cpu" and "numpy" in self.peers:
            row.peers["numpy"] = self._ratio(functools.partial(numpy_dense_layer, *host), ours)
        torch = self._torch()
        if torch is not None:
            dev = _torch_device(self.device)
            xt = torch.from_numpy(host[0]).to(dev)
            linear = torch.nn.Linear(n_in, n_out).to(dev)
            gt = torch.from_numpy(host[3]).to(dev)

            def torch_layer():
                linear.zero_grad(set_to_none=True)
                out = torch.relu(linear(xt.requires_grad_(True)))
                out.backward(gt)
                _torch_sync(torch, self.device)

            torch_layer()
            row.peers["torch"] = self._ratio(torch_layer, ours, foreign_threads=True)
        cupy = self._cupy()
        if cupy is not None:
            xc, Wc, bc, gc = (cupy.asarray(a) for a in (x, W, b, g))

            def cupy_layer():
                yc = cupy.maximum(xc @ Wc + bc, 0)
                dzc = cupy.where(yc > 0, gc, 0)
                dzc @ Wc.T, xc.T @ dzc, dzc.sum(axis=0)
                cupy.cuda.runtime.deviceSynchronize()

            cupy_layer()
            row.peers["cupy"] = self._ratio(cupy_layer, ours)
        self.rows.append(row)

    def mlp_epoch(self):
        """One training epoch of 784-512-256-10 (SGD, momentum 0.9), batch 128, 8192 samples."""
        widths = (784, 512, 256, 10)
        n, batch = self.settings.size(8192, 512), 128
        rng = np.random.default_rng(0)
        X = rng.random((n, widths[0]), dtype=np.float32)
        y = rng.integers(0, widths[-1], n)
        model = mlp(widths, self.device)
        opt = _optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loss = _losses.SoftmaxCrossEntropy()
        seeds = iter(range(1 << 30))

        def ours():
            model.fit(X, y, loss=loss, optimizer=opt, batch_size=batch, verbose=0, seed=next(seeds))
            _sync(self.device)

        ours()
        seconds = self._time(ours)
        row = Row(f"MLP epoch 784-512-256-10 b{batch}", seconds, n / seconds, "samples/s", None)
        weights = [_device.to_numpy(p.data) for p in model.parameters()]
        if self.device.type == "cpu" and "numpy" in self.peers:
            row.peers["numpy"] = self._ratio(NumpyMLP(weights, X, y, batch).epoch, ours)
        torch = self._torch()
        if torch is not None:
            row.peers["torch"] = self._ratio(
                TorchMLP(torch, weights, X, y, batch, self.device).epoch, ours, foreign_threads=True
            )
        if self.device.type == "cpu" and "sklearn" in self.peers:
            try:
                from sklearn.neural_network import MLPClassifier
            except ImportError:
                self._note("scikit-learn is not installed: no MLPClassifier peer")
            else:
                clf = MLPClassifier(
                    widths[1:-1],
                    solver="sgd",
                    learning_rate_init=0.01,
                    momentum=0.9,
                    nesterovs_momentum=False,
                    batch_size=batch,
                    alpha=0.0,
                )
                classes = np.arange(widths[-1])
                clf.partial_fit(X[:batch], y[:batch], classes=classes)
                row.peers["sklearn"] = self._ratio(lambda: clf.partial_fit(X, y), ours)
        self.rows.append(row)

    # --- restricted Boltzmann machines ------------------------------------------------

    def rbm_update(self):
        """One CD-1 update (persistent chain) of a 784x500 RBM on a batch of 100."""
        from .rbm import RBM

        batch, visible, hidden = self.settings.size(100, 10), 784, self.settings.size(500, 50)
        rng = np.random.default_rng(0)
        v = (rng.random((batch, visible)) < 0.3).astype(np.float32)
        rbm = RBM(hidden, batch_size=batch, random_state=0, device=str(self.device))
        rbm.partial_fit(v)
        ours = functools.partial(rbm.partial_fit, v)
        seconds = self._time(ours)
        gflops = 10 * batch * visible * hidden / seconds / 1e9
        row = Row(
            f"RBM CD-1 {visible}x{hidden} b{batch}",
            seconds,
            gflops,
            "GFLOP/s",
            gflops / self.matmul_gflops,
        )
        if self.device.type == "cpu" and "numpy" in self.peers:
            W = rbm.components_.astype(np.float32)
            b, c = (
                rbm.intercept_visible_.astype(np.float32),
                rbm.intercept_hidden_.astype(np.float32),
            )
            chain = (rng.random((batch, hidden)) < 0.5).astype(np.float32)
            row.peers["numpy"] = self._ratio(NumpyCD1(v, W, b, c, chain, 0.1), ours)
        if self.device.type == "cpu" and "sklearn" in self.peers:
            try:
                from sklearn.neural_network import BernoulliRBM
            except ImportError:
                self._note("scikit-learn is not installed: no BernoulliRBM peer")
            else:
                peer = BernoulliRBM(hidden, batch_size=batch, random_state=0)
                peer.partial_fit(v)
                row.peers["sklearn"] = self._ratio(functools.partial(peer.partial_fit, v), ours)
        self.rows.append(row)

    def rbm_fit(self):
        """gn.RBM.fit on the bundled digits (1797 x 64 scaled to [0, 1]): 100
        components, learning rate 0.06, batch 10, 10 epochs."""
        from .datasets import load_digits
        from .rbm import RBM

        X = load_digits()[0] / np.float32(16)
        n_iter = self.settings.size(10, 1)
        kwargs = dict(
            n_components=100, learning_rate=0.06, batch_size=10, n_iter=n_iter, random_state=0
        )
        ours = functools.partial(RBM(**kwargs, device=str(self.device)).fit, X)
        ours()
        seconds = self._time(ours)
        row = Row(
            f"RBM fit digits ({n_iter} epochs)",
            seconds,
            len(X) * n_iter / seconds,
            "samples/s",
            None,
        )
        if self.device.type == "cpu" and "sklearn" in self.peers:
            try:
                from sklearn.neural_network import BernoulliRBM
            except ImportError:
                self._note("scikit-learn is not installed: no BernoulliRBM peer")
            else:
                peer = functools.partial(BernoulliRBM(**kwargs).fit, X.astype(np.float64))
                row.peers["sklearn"] = self._ratio(peer, ours)
        self.rows.append(row)

    def run(self, workloads=None):
        for name in workloads or WORKLOADS:
            getattr(self, name)()
        return self.rows


#: The workloads in report order (methods of Bench).
WORKLOADS = (
    "elementwise",
    "softmax_wide",
    "matmul",
    "dispatch",
    "dense",
    "mlp_epoch",
    "rbm_update",
    "rbm_fit",
)


def mlp(widths, device, dtype="float32"):
    """A ReLU perceptron with the given layer widths, seeded, on ``device``."""
    return nn.Sequential(
        *[
            nn.Dense(a, b, "relu" if i < len(widths) - 2 else None, dtype, seed=i, device=device)
            for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True))
        ]
    )


def numpy_dense_layer(x, W, b, g):
    """A ReLU dense layer's forward and backward in plain numpy, as one writes
    it by hand: returns (dx, dW, db) for grad_out g."""
    y = np.maximum(x @ W + b, 0)
    dz = np.where(y > 0, g, 0)
    return dz @ W.T, x.T @ dz, dz.sum(axis=0)


def _bare_products(x, W, b, g, y, dx, dW):
    """The three matrix products of a dense layer's forward and backward, alone."""
    np.matmul(x, W, out=y)
    np.matmul(g, W.T, out=dx)
    np.matmul(x.T, g, out=dW)


def _numpy_softmax(a):
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


#: The elementwise workloads and their plain numpy forms.
_NUMPY_ELEMENTWISE = {
    "softmax": lambda a: _numpy_softmax(a),
    "sigmoid": lambda a: 1 / (1 + np.exp(-a)),
    "tanh": np.tanh,
    "relu": lambda a: np.maximum(a, 0),
    "leaky_relu": lambda a: np.where(a > 0, a, np.float32(0.01) * a),
    "step": lambda a: (a > 0).astype(a.dtype),
}


def _torch_elementwise(torch, name):
    if name == "softmax":
        return lambda t: torch.softmax(t, -1)
    if name == "leaky_relu":
        return lambda t: torch.nn.functional.leaky_relu(t, 0.01)
    if name == "step":
        return lambda t: (t > 0).to(t.dtype)
    return getattr(torch, name)


def _cupy_elementwise(cupy, name):
    if name == "softmax":

        def softmax(a):
            e = cupy.exp(a - a.max(axis=-1, keepdims=True))
            return e / e.sum(axis=-1, keepdims=True)

        return softmax
    return {
        "sigmoid": lambda a: 1 / (1 + cupy.exp(-a)),
        "tanh": cupy.tanh,
        "relu": lambda a: cupy.maximum(a, 0),
        "leaky_relu": lambda a: cupy.where(a > 0, a, a.dtype.type(0.01) * a),
        "step": lambda a: (a > 0).astype(a.dtype),
    }[name]


class NumpyMLP:
    """The same training step in plain numpy, as one writes it by hand:
    matmuls, np.maximum, a stable softmax, np.where, in-place momentum updates."""

    def __init__(self, weights, X, y, batch, lr=0.01, momentum=0.9):
        self.Ws, self.bs = [w.copy() for w in weights[0::2]], [b.copy() for b in weights[1::2]]
        self.vW, self.vb = [np.zeros_like(w) for w in self.Ws], [np.zeros_like(b) for b in self.bs]
        self.X, self.y, self.batch, self.lr, self.momentum = X, y, batch, lr, momentum
        self.seed = 0

    def step(self, xb, yb):
        Ws, bs = self.Ws, self.bs
        acts = [xb]
        for i, (W, b) in enumerate(zip(Ws, bs, strict=True)):
            z = acts[-1] @ W + b
            acts.append(np.maximum(z, 0) if i < len(Ws) - 1 else z)
        p = _numpy_softmax(acts[-1])
        p[np.arange(len(yb)), yb] -= 1
        g = p / len(yb)
        for i in range(len(Ws) - 1, -1, -1):
            gW, gb = acts[i].T @ g, g.sum(axis=0)
            if i > 0:
                g = np.where(acts[i] > 0, g @ Ws[i].T, 0)
            for w, v, grad in ((Ws[i], self.vW[i], gW), (bs[i], self.vb[i], gb)):
                v *= self.momentum
                v += grad
                w -= self.lr * v

    def epoch(self):
        order = np.random.default_rng(self.seed).permutation(len(self.X))
        self.seed += 1
        for start in range(0, len(self.X), self.batch):
            rows = order[start : start + self.batch]
            self.step(self.X[rows], self.y[rows])


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


class NumpyCD1:
    """One persistent CD-1 update written plainly in numpy (float32), the bar
    a hand-written RBM sets: v (batch, visible), W (hidden, visible), b
    visible, c hidden biases, chain (batch, hidden) the persistent hidden states."""

    def __init__(self, v, W, b, c, chain, lr):
        self.v, self.W, self.b, self.c, self.chain = v, W.copy(), b.copy(), c.copy(), chain.copy()
        self.lr = np.float32(lr)
        self.rng = np.random.default_rng(0)

    def __call__(self):
        v, W, chain, rng = self.v, self.W, self.chain, self.rng
        hp = _sigmoid(v @ W.T + self.c)
        vp = _sigmoid(chain @ W + self.b)
        vn = (rng.random(vp.shape, np.float32) < vp).astype(np.float32)
        hn = _sigmoid(vn @ W.T + self.c)
        chain[...] = rng.random(hn.shape, np.float32) < hn
        W += self.lr * (hp.T @ v / np.float32(len(v)) - hn.T @ vn / np.float32(len(vn)))
        self.b += self.lr * (v.mean(axis=0) - vn.mean(axis=0))
        self.c += self.lr * (hp.mean(axis=0) - hn.mean(axis=0))


class TorchMLP:
    """The same network and step in PyTorch eager mode (Linear, ReLU,
    cross_entropy, torch.optim.SGD), from the same weights."""

    def __init__(self, torch, weights, X, y, batch, device, lr=0.01, momentum=0.9):
        dev = _torch_device(device)
        self.torch, self.device = torch, device
        layers = []
        for i in range(0, len(weights), 2):
            W, b = weights[i], weights[i + 1]
            linear = torch.nn.Linear(*W.shape)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(W.T.copy()))
                linear.bias.copy_(torch.from_numpy(b))
            layers += [linear, torch.nn.ReLU()]
        self.model = torch.nn.Sequential(*layers[:-1]).to(dev)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=momentum)
        self.X, self.y = torch.from_numpy(X).to(dev), torch.from_numpy(y).to(dev)
        self.batch, self.seed = batch, 0

    def epoch(self):
        torch = self.torch
        order = torch.from_numpy(np.random.default_rng(self.seed).permutation(len(self.X)))
        order = order.to(self.X.device)
        self.seed += 1
        for start in range(0, len(self.X), self.batch):
            rows = order[start : start + self.batch]
            loss = torch.nn.functional.cross_entropy(self.model(self.X[rows]), self.y[rows])
            loss.backward()
            self.opt.step()
            self.opt.zero_grad()
        _torch_sync(torch, self.device)
