"""The workloads of ``gpunet bench``: each gpunet kernel or training loop on
one device, timed against the machine's ceilings (:mod:`.ceilings`) and
against the peers a user would otherwise reach for (:mod:`.peers`), in the
same process, on the same data, with the timers of :mod:`.timing`.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import time
import warnings

import numba
import numpy as np

from .. import _device, nn, ops
from .. import losses as _losses
from .. import optim as _optim
from ..kernels import dense as _dense
from ..profiler import profile
from .ceilings import copies, dense_products, large_copy, lstm_products, matmul_gflops
from .load import SPREAD_LIMIT
from .peers import (
    NUMPY_ELEMENTWISE,
    NumpyCD1,
    NumpyMLP,
    TorchMLP,
    cupy_elementwise,
    cupy_module,
    numpy_dense_layer,
    torch_device,
    torch_elementwise,
    torch_module,
    torch_sync,
)
from .timing import BLAS_IDLE_SECONDS, Settings, median_ratio, sample_times, sync


@dataclasses.dataclass
class Row:
    """One line of the report: median seconds per call, the rate achieved in
    ``unit``, its fraction of the ceiling (None where none applies), and
    time(peer) / time(gpunet) by peer name; ``low`` and ``high`` are the
    fastest and slowest samples' seconds per call; ``launches``: CUDA kernel
    launches per training step (None off a GPU, and for rows that are not
    training)."""

    name: str
    seconds: float
    rate: float
    unit: str
    ceiling: float | None
    peers: dict[str, float] = dataclasses.field(default_factory=dict)
    low: float | None = None
    high: float | None = None
    launches: float | None = None

    @property
    def unsteady(self) -> bool:
        """Whether the samples spread by more than SPREAD_LIMIT of the median
        (the machine was busy, or its speed changed)."""
        if self.low is None or self.high is None:
            return False
        return (self.high - self.low) / self.seconds > SPREAD_LIMIT


class Bench:
    """Runs the workloads on one device and collects :class:`Row` objects."""

    def __init__(self, device, settings: Settings, peers=("numpy", "torch", "sklearn", "cupy")):
        self.device = _device._resolve(device)
        self.settings = settings
        self.peers = set(peers)
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.copy_gbps = large_copy(self.device, settings)[2]
        self.matmul_gflops, self.matmul_kind = matmul_gflops(self.device, settings)
        # BLAS's worker threads spin for a while after a product; let them go
        # idle before timing kernels that start threads of their own.
        time.sleep(0 if settings.quick else BLAS_IDLE_SECONDS)

    def _time(self, fn):
        """Median seconds per call of ``fn``; the next row added gets its spread."""
        samples = sample_times(fn, self.device, self.settings)
        self._spread = (min(samples), max(samples))
        return statistics.median(samples)

    def _add(self, row):
        row.low, row.high = self._spread
        self.rows.append(row)

    def _launches(self, fn, steps):
        """CUDA kernel launches per step in one call of ``fn`` (``steps``
        training steps), counted with gn.profile; None off a GPU."""
        if self.device.type != "cuda":
            return None
        with profile() as prof:
            fn()
        return prof.launches / steps

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
        self._memory_bound((self.settings.size(8192, 64), 1000), NUMPY_ELEMENTWISE)

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
        # The ceiling of each row: the fastest copy of the same bytes (read
        # plus written) by any method, each timed alternately with the op.
        self._note(
            "memory-bound rows: of ceiling = of the fastest copy of the same bytes, timed "
            "alternately with the op; an op faster than every copy is its own ceiling (100%)"
        )
        same_bytes = copies(self.device, x_host.nbytes)
        for copy in same_bytes:
            copy()
        torch, cupy = self._torch(), self._cupy()
        for name in names:
            fn = functools.partial(getattr(ops, name), x, out=out)
            fn()
            seconds = self._time(fn)
            gbps = nbytes / seconds / 1e9
            of_copy = min(1.0, *(self._ratio(copy, fn) for copy in same_bytes))
            row = Row(f"{name} {shape[0]}x{shape[1]}", seconds, gbps, "GB/s", of_copy)
            if self.device.type == "cpu" and "numpy" in self.peers:
                numpy_op = NUMPY_ELEMENTWISE[name]
                row.peers["numpy"] = self._ratio(functools.partial(numpy_op, x_host), fn)
            if torch is not None:
                t = torch.from_numpy(x_host).to(torch_device(self.device))
                torch_op = torch_elementwise(torch, name)

                def peer(t=t, torch_op=torch_op):
                    torch_op(t)
                    torch_sync(torch, self.device)

                peer()
                row.peers["torch"] = self._ratio(peer, fn, foreign_threads=True)
            if cupy is not None:
                xc = cupy.asarray(x)
                cupy_op = cupy_elementwise(cupy, name)

                def cupy_peer(xc=xc, cupy_op=cupy_op):
                    cupy_op(xc)
                    cupy.cuda.runtime.deviceSynchronize()

                cupy_peer()
                row.peers["cupy"] = self._ratio(cupy_peer, fn)
            self._add(row)

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
            ta, tb = (torch.from_numpy(m).to(torch_device(self.device)) for m in (a, b))
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
        self._add(row)

    def dispatch(self):
        """The fixed cost of a gn.ops call: relu on a (1, 10) array."""
        x_host = np.ones((1, 10), np.float32)
        x = self._put(x_host)
        out = self._put(np.empty_like(x_host))

        # Both sides are timed through a plain function, as user code calls
        # them: a functools.partial with a keyword merges dictionaries on
        # every call, a sizeable share of the call it would time.
        def fn():
            ops.relu(x, out=out)

        fn()
        seconds = self._time(fn)
        row = Row("dispatch: relu 1x10", seconds, seconds * 1e6, "us/call", None)
        torch = self._torch()
        if torch is not None:
            t = torch.from_numpy(x_host).to(torch_device(self.device))

            def peer():
                torch.relu(t)

            peer()
            row.peers["torch"] = self._ratio(peer, fn, foreign_threads=True)
        self._add(row)

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

        def ours():
            ops.dense(x, W, b, "relu", out=y)
            ops.dense_backward(g, x, W, y, "relu", dx=dx, dW=dW, db=db, dz=dz)

        ours()
        seconds = self._time(ours)
        gflops = 6 * batch * n_in * n_out / seconds / 1e9
        ceiling = gflops / self.matmul_gflops
        if self.device.type == "cpu":
            # The layer's own ceiling: its three products alone through numpy's
            # BLAS (a 2048^3 product runs faster than these shapes can).
            ceiling = self._ratio(functools.partial(dense_products, *host, y, dx, dW), ours)
            self._note("dense on the CPU: of ceiling = of its three products alone in numpy's BLAS")
        row = Row(f"dense fwd+bwd {batch}x{n_in}->{n_out}", seconds, gflops, "GFLOP/s", ceiling)
        if self.device.type == "cpu" and "numpy" in self.peers:
            row.peers["numpy"] = self._ratio(functools.partial(numpy_dense_layer, *host), ours)
        torch = self._torch()
        if torch is not None:
            dev = torch_device(self.device)
            xt = torch.from_numpy(host[0]).to(dev)
            linear = torch.nn.Linear(n_in, n_out).to(dev)
            gt = torch.from_numpy(host[3]).to(dev)

            def torch_layer():
                linear.zero_grad(set_to_none=True)
                out = torch.relu(linear(xt.requires_grad_(True)))
                out.backward(gt)
                torch_sync(torch, self.device)

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
        self._add(row)

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
            sync(self.device)

        ours()
        seconds = self._time(ours)
        row = Row(f"MLP epoch 784-512-256-10 b{batch}", seconds, n / seconds, "samples/s", None)
        row.launches = self._launches(ours, -(-n // batch))
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
        self._add(row)
        if self.device.type == "cuda":
            self._mlp_epoch_graphed(model, opt, loss, X, y, batch, ours, seeds)

    def _mlp_epoch_graphed(self, model, opt, loss, X, y, batch, eager, seeds):
        """The MLP epoch with fit's CUDA graph replays, against the eager epoch."""

        def graphed():
            model.fit(
                X, y, loss=loss, optimizer=opt, batch_size=batch, verbose=0, seed=next(seeds),
                cuda_graph=True,
            )  # fmt: skip
            sync(self.device)

        graphed()
        seconds = self._time(graphed)
        n = len(X)
        row = Row(f"MLP epoch b{batch}, CUDA graph", seconds, n / seconds, "samples/s", None)
        row.launches = self._launches(graphed, -(-n // batch))
        row.peers["eager"] = self._ratio(eager, graphed)
        self._add(row)

    # --- recurrent layers -------------------------------------------------------------

    def lstm(self):
        """gn.nn.LSTM forward + backward (parameter and input gradients),
        sequence 100, batch 64, input 32, hidden 128 and 512, float32,
        against torch.nn.LSTM on the same device."""
        T, B, I = self.settings.size(100, 5), self.settings.size(64, 4), 32  # noqa: E741
        torch = self._torch()
        for H in (128, 512) if not self.settings.quick else (16,):
            rng = np.random.default_rng(0)
            x_host = rng.standard_normal((T, B, I), dtype=np.float32)
            g_host = rng.standard_normal((T, B, H), dtype=np.float32)
            layer = nn.LSTM(I, H, seed=0, device=self.device)
            x, g = self._put(x_host), self._put(g_host)

            def ours(layer=layer, x=x, g=g):
                layer.forward(x)
                layer.backward(g)
                sync(self.device)

            ours()
            seconds = self._time(ours)
            gflops = 3 * 2 * T * B * 4 * H * (I + H) / seconds / 1e9
            ceiling = gflops / self.matmul_gflops
            if self.device.type == "cpu":
                ceiling = self._ratio(lstm_products(T, B, I, H), ours)
                self._note(
                    "LSTM on the CPU: of ceiling = of its matrix products alone in numpy's BLAS"
                )
            row = Row(f"LSTM fwd+bwd T{T} b{B} i{I} h{H}", seconds, gflops, "GFLOP/s", ceiling)
            if torch is not None:
                dev = torch_device(self.device)
                peer_layer = torch.nn.LSTM(I, H).to(dev)
                xt, gt = torch.from_numpy(x_host).to(dev), torch.from_numpy(g_host).to(dev)

                def peer(peer_layer=peer_layer, xt=xt, gt=gt):
                    out, _ = peer_layer(xt)
                    out.backward(gt)
                    torch_sync(torch, self.device)

                peer()
                row.peers["torch"] = self._ratio(peer, ours, foreign_threads=True)
            self._add(row)

    # --- restricted Boltzmann machines ------------------------------------------------

    def mlp_classifier(self):
        """gn.MLPClassifier.fit on the bundled digits (adam, batch 200, 200
        iterations, tol 0 so both run them all) against scikit-learn's."""
        from ..datasets import load_digits
        from ..estimators import MLPClassifier

        X, y = load_digits()
        X = (X / 16).astype(np.float32)
        kwargs = dict(
            solver="adam", batch_size=200, max_iter=self.settings.size(200, 5), tol=0.0,
            random_state=0,
        )  # fmt: skip
        ours = functools.partial(
            MLPClassifier(**kwargs, device=str(self.device)).fit, X, y
        )  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # not converged in the quick run's few iterations
            ours()
            seconds = self._time(ours)
            row = Row(
                f"MLPClassifier fit digits ({kwargs['max_iter']} iter)", seconds,
                len(X) * kwargs["max_iter"] / seconds, "samples/s", None,
            )  # fmt: skip
            if "sklearn" in self.peers:
                try:
                    from sklearn.neural_network import MLPClassifier as SklearnMLP
                except ImportError:
                    self._note("scikit-learn is not installed: no MLPClassifier peer")
                else:
                    peer = functools.partial(SklearnMLP(**kwargs).fit, X, y)
                    row.peers["sklearn"] = self._ratio(peer, ours, foreign_threads=True)
        self._add(row)

    def rbm_update(self):
        """One CD-1 update (persistent chain) of a 784x500 RBM on a batch of 100."""
        from ..rbm import RBM

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
        row.launches = self._launches(ours, 1)
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
        self._add(row)

    def rbm_fit(self):
        """gn.RBM.fit on the bundled digits (1797 x 64 scaled to [0, 1]): 100
        components, learning rate 0.06, batch 10, 10 epochs."""
        from ..datasets import load_digits
        from ..rbm import RBM

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
        row.launches = self._launches(ours, -(-len(X) // kwargs["batch_size"]) * n_iter)
        if self.device.type == "cpu" and "sklearn" in self.peers:
            try:
                from sklearn.neural_network import BernoulliRBM
            except ImportError:
                self._note("scikit-learn is not installed: no BernoulliRBM peer")
            else:
                peer = functools.partial(BernoulliRBM(**kwargs).fit, X.astype(np.float64))
                row.peers["sklearn"] = self._ratio(peer, ours)
        self._add(row)

    def dbn_pretrain(self):
        """gn.DBN.fit on the bundled digits scaled to [0, 1]: hidden layers 256
        and 128 trained greedily, learning rate 0.06, batch 10, 10 epochs
        each, against scikit-learn's nearest thing, a Pipeline of two
        BernoulliRBMs with the same settings (it fits them one after the
        other in the same way, but cannot fine-tune the stack)."""
        from ..datasets import load_digits
        from ..dbn import DBN

        X = load_digits()[0] / np.float32(16)
        n_iter, sizes = self.settings.size(10, 1), (256, 128)
        kwargs = dict(learning_rate=0.06, batch_size=10, n_iter=n_iter, random_state=0)
        ours = functools.partial(DBN(sizes, **kwargs, device=str(self.device)).fit, X)
        ours()
        seconds = self._time(ours)
        row = Row(
            f"DBN pretrain digits 64-256-128 ({n_iter} epochs/layer)",
            seconds,
            len(X) * n_iter * len(sizes) / seconds,
            "samples/s",
            None,
        )
        if self.device.type == "cpu" and "sklearn" in self.peers:
            try:
                from sklearn.neural_network import BernoulliRBM
                from sklearn.pipeline import make_pipeline
            except ImportError:
                self._note("scikit-learn is not installed: no BernoulliRBM pipeline peer")
            else:
                stack = make_pipeline(*(BernoulliRBM(size, **kwargs) for size in sizes))
                peer = functools.partial(stack.fit, X.astype(np.float64))
                row.peers["sklearn"] = self._ratio(peer, ours)
        self._add(row)

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
    "mlp_classifier",
    "lstm",
    "rbm_update",
    "rbm_fit",
    "dbn_pretrain",
)


def mlp(widths, device, dtype="float32"):
    """A ReLU perceptron with the given layer widths, seeded, on ``device``."""
    return nn.Sequential(
        *[
            nn.Dense(a, b, "relu" if i < len(widths) - 2 else None, dtype, seed=i, device=device)
            for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True))
        ]
    )
