"""Recurrent layers with PyTorch's semantics: ``RNN``, ``LSTM`` and ``GRU``,
and ``LastStep``, which keeps a sequence's last step for a classifier head.

Parameters are named and shaped as PyTorch's (``weight_ih_l0`` (gates * H,
I), ``weight_hh_l0`` (gates * H, H), ``bias_ih_l0``, ``bias_hh_l0``, and
``..._reverse`` for the second direction; LSTM gates i, f, g, o, GRU r, z,
n) and drawn as PyTorch draws them (uniform in +-1/sqrt(H)), so copying a
torch layer's weights into one makes the two compute the same, and
``state_dict()`` keys match torch's.

``forward(x, hx=None)`` returns ``(output, h_n)`` (LSTM: ``(output, (h_n,
c_n))``); ``backward(grad_output, grad_h_n=None)`` returns d loss / d x (and
d loss / d the initial state when forward was given one) and adds into the
parameters' gradients, backpropagating through time. Inside ``Sequential``
a recurrent layer passes on its output sequence.

Truncated backpropagation through time: cut a long sequence into chunks and
feed each chunk's final state, detached (it is a plain array: no gradient
flows back through it), as the next chunk's initial state::

    h = None
    for chunk in np.split(x, 10, axis=1):          # x (batch, steps, features)
        out, h = lstm.forward(chunk, h)            # batch_first=True
        loss, grad = loss_fn(head.forward(out), target)
        lstm.backward(head.backward(grad))         # gradient stops at this chunk's h0
        opt.step(); opt.zero_grad()
        h = tuple(a.copy() for a in h)             # the layer reuses its outputs

The layer reuses its output arrays from one forward to the next (as every
gpunet layer does), hence the copy of the state before the next forward.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from . import dispatch, ops
from . import random as _random
from . import threads as _threads
from ._arrays import check_probability, contiguous
from ._arrays import float_dtype as _float_dtype
from ._arrays import zeros as _zeros
from ._device import _resolve, get_device, to_device
from .kernels import _cuda
from .kernels import dropout as _dropout
from .kernels import recurrent as _kernels
from .layer import Layer
from .parameter import Parameter, pack
from .serialization import register_layer

__all__ = ["GRU", "LSTM", "RNN", "LastStep"]

#: On the CPU, products of fewer multiply-adds than this (the recurrence's
#: per-step products, batch x gates*H x H each; the projections and
#: gradients over all steps of short sequences) run on one BLAS thread: a
#: second thread woken for each small product costs more than it saves, and
#: far more on a busy host (a training step of an LSTM with hidden size 64 on
#: 32 digits, 8 steps, took 53 ms of wall time with two BLAS threads and 1.2 ms
#: with one on a loaded 2-core host).
SINGLE_THREAD_MACS = 1 << 23


def _positive(cls, name, n):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{cls}: expected a positive integer {name}, got {n!r}")
    return int(n)


class _Recurrent(Layer):
    """What RNN, LSTM and GRU share; ``mode`` picks the cell."""

    mode: str

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        dtype="float32",
        *,
        seed: int | None = None,
        device=None,
    ):
        super().__init__()
        name = type(self).__name__
        self.input_size = _positive(name, "input_size", input_size)
        self.hidden_size = _positive(name, "hidden_size", hidden_size)
        self.num_layers = _positive(name, "num_layers", num_layers)
        self.bias, self.batch_first = bool(bias), bool(batch_first)
        self.bidirectional = bool(bidirectional)
        self.dropout = check_probability(name, dropout)
        self.seed = seed
        dtype = _float_dtype(dtype)
        device = get_device() if device is None else _resolve(device)
        self._generator = _random.default_generator if seed is None else _random.Generator(seed)
        H, G = self.hidden_size, _kernels.GATES[self.mode]
        bound = 1.0 / math.sqrt(H)
        self._names = []
        for layer, suffix, inputs in self._directions():
            shapes = [(f"weight_ih_l{layer}{suffix}", (G * H, inputs)),
                      (f"weight_hh_l{layer}{suffix}", (G * H, H))]  # fmt: skip
            if self.bias:
                shapes += [(f"bias_ih_l{layer}{suffix}", (G * H,)),
                           (f"bias_hh_l{layer}{suffix}", (G * H,))]  # fmt: skip
            for pname, shape in shapes:
                u = self._generator.uniform(shape, dtype=np.float64, device="cpu")
                value = ((2 * u - 1) * bound).astype(dtype)
                setattr(self, pname, Parameter(to_device(value, device), pname))
                self._names.append(pname)
        pack(self.parameters())
        self._zero_cache = {}
        self._saved = None

    # --- structure ---------------------------------------------------------------------

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _directions(self):
        """(layer, name suffix, input features) for each direction of each
        layer, in PyTorch's order."""
        D, H = self.num_directions, self.hidden_size
        for layer in range(self.num_layers):
            for d in range(D):
                yield layer, "_reverse" if d else "", self.input_size if layer == 0 else D * H

    def _weights(self, layer, d):
        """(w_ih, w_hh, b_ih, b_hh) Parameters of one direction (biases None without bias)."""
        suffix = "_reverse" if d else ""
        get = lambda n: getattr(self, f"{n}_l{layer}{suffix}", None)  # noqa: E731
        return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")

    def parameters(self) -> list[Parameter]:
        return [getattr(self, n) for n in self._names]

    def _named_parameters(self):
        return [(n, getattr(self, n)) for n in self._names]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.weight_ih_l0.dtype)

    @property
    def device(self):
        return self.weight_ih_l0.device

    def to(self, device) -> _Recurrent:
        super().to(device)
        self._zero_cache.clear()
        self._saved = None
        return self

    def _blas_threads(self, kind, rows, macs):
        """The context for a kernel over ``rows`` rows whose products hold
        ``macs`` multiply-adds: on the CPU, one BLAS thread when its rows run
        in parts on threads of their own (``kernels.recurrent.row_parts``),
        or its products are small (``SINGLE_THREAD_MACS``)."""
        if kind != "cpu" or (_kernels.row_parts(rows, macs) == 1 and macs >= SINGLE_THREAD_MACS):
            return contextlib.nullcontext()
        return _threads.single_blas_thread()

    def _zeros(self, shape):
        """A cached array of zeros on the layer's device (never written)."""
        key = tuple(shape)
        found = self._zero_cache.get(key)
        if found is None:
            found = self._zero_cache[key] = _zeros(key, self.dtype, self.device)
        return found

    # --- checks ------------------------------------------------------------------------

    def _check_array(self, op, name, a, shape, kind):
        """``a`` checked against ``shape`` (None entries: any size), the
        layer's dtype and device kind; returned C-contiguous."""
        if not (isinstance(a, np.ndarray) or _cuda.is_device_array(a)):
            raise TypeError(f"{op}: expected {name} to be an array, got {type(a).__name__}")
        if len(a.shape) != len(shape) or any(
            s is not None and s != n for s, n in zip(shape, a.shape, strict=True)
        ):
            want = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{op}: expected {name} of shape {want}, got {tuple(a.shape)}")
        if a.dtype != self.dtype:
            raise TypeError(f"{op}: expected a {self.dtype} {name}, got {a.dtype}")
        dispatch.placement(op, **{name: a, "weights": self.weight_ih_l0.data})
        return contiguous(op, name, kind, a)

    # --- forward -----------------------------------------------------------------------

    def forward(self, x, hx=None):
        """x (T, B, input_size), or (B, T, input_size) with ``batch_first``,
        or (T, input_size) unbatched -> (output, h_n): output (T, B, D * H)
        (batch-first or unbatched like x), h_n (num_layers * D, B, H) (D = 2
        when bidirectional). ``hx``: the initial state h0 of h_n's shape
        (LSTM: the pair (h0, c0)), zeros when None. The arrays returned are
        the layer's own, overwritten by the next forward."""
        op = f"{type(self).__name__}.forward"
        w = self.weight_ih_l0.data
        if not hasattr(x, "shape"):
            raise TypeError(f"{op}: expected x to be an array, got {type(x).__name__}")
        kind = dispatch.placement(op, x=x, weights=w)
        if len(x.shape) not in (2, 3):
            raise ValueError(
                f"{op}: expected x of shape (T, B, {self.input_size}), (B, T, {self.input_size}) "
                f"with batch_first, or (T, {self.input_size}), got {tuple(x.shape)}"
            )
        unbatched = len(x.shape) == 2
        shape = (None, self.input_size) if unbatched else (None, None, self.input_size)
        x = self._check_array(op, "x", x, shape, kind)
        if unbatched:
            T, B = x.shape[0], 1
        else:
            T, B = (x.shape[1], x.shape[0]) if self.batch_first else x.shape[:2]
        L, D, H = self.num_layers, self.num_directions, self.hidden_size
        h0, c0 = self._initial_states(op, hx, kind, unbatched, B)
        if unbatched:
            seq = x.reshape(T, 1, self.input_size)
        elif self.batch_first:
            seq = self._output("x_tm", kind, (T, B, self.input_size), self.dtype)
            dispatch.kernel_for("swap_batch_time", kind)(x, seq)
        else:
            seq = x
        h_n = self._output("h_n", kind, (L * D, B, H), self.dtype)
        c_n = self._output("c_n", kind, (L * D, B, H), self.dtype) if self.mode == "lstm" else None
        layers = []
        for layer in range(L):
            saved = self._layer_forward(kind, layer, seq, h0, c0, h_n, c_n)
            layers.append(saved)
            seq = saved["out"]
            if self.training and self.dropout and layer < L - 1:
                generator = self._generator
                generator.take(-generator.offset % 4)  # masks start at a Philox block
                offset = generator.take(_dropout.words(math.prod(seq.shape)))
                dropped = self._output(f"drop{layer}", kind, tuple(seq.shape), self.dtype)
                ops.dropout(seq, self.dropout, generator.seed, offset, out=dropped)
                saved["draw"] = (generator.seed, offset)
                seq = dropped
        if unbatched:
            output = seq.reshape(T, D * H)
        elif self.batch_first:
            output = self._output("output", kind, (B, T, D * H), self.dtype)
            dispatch.kernel_for("swap_batch_time", kind)(seq, output)
        else:
            output = seq
        self._saved = {
            "kind": kind, "layers": layers, "T": T, "B": B, "unbatched": unbatched,
            "x_shape": tuple(x.shape), "given_state": hx is not None,
        }  # fmt: skip
        states = [s.reshape(L * D, H) if unbatched else s for s in (h_n, c_n) if s is not None]
        return output, (tuple(states) if self.mode == "lstm" else states[0])

    def _initial_states(self, op, hx, kind, unbatched, B):
        """(h0, c0) as (L * D, B, H) arrays (c0 None but for the LSTM)."""
        L, D, H = self.num_layers, self.num_directions, self.hidden_size
        shape = (L * D, H) if unbatched else (L * D, B, H)
        names = ("h0", "c0") if self.mode == "lstm" else ("h0",)
        if hx is None:
            states = [self._zeros((L * D, B, H)) for _ in names]
        else:
            if self.mode == "lstm":
                if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                    raise TypeError(f"{op}: expected hx to be a pair (h0, c0), got {hx!r:.80}")
                given = list(hx)
            else:
                given = [hx]
            states = [
                self._check_array(op, n, a, shape, kind).reshape(L * D, B, H)
                for n, a in zip(names, given, strict=True)
            ]
        return states[0], (states[1] if self.mode == "lstm" else None)

    def _layer_forward(self, kind, layer, seq, h0, c0, h_n, c_n):
        """Both directions of one layer over ``seq`` (T, B, features); returns
        what backward needs."""
        T, B, features = seq.shape
        H, D, G = self.hidden_size, self.num_directions, _kernels.GATES[self.mode]
        mode, dtype = self.mode, self.dtype
        out = self._output(f"out{layer}", kind, (T, B, D * H), dtype)
        saved = {"input": seq, "out": out, "dirs": []}
        flat_in = seq.reshape(T * B, features)
        for d in range(D):
            w_ih, w_hh, b_ih, b_hh = self._weights(layer, d)
            k = layer * D + d
            tag = f"{layer}.{d}"
            xw = self._output(f"xw{tag}", kind, (T * B, G * H), dtype)
            with self._blas_threads(kind, T * B, T * B * G * H * features):
                dispatch.kernel_for("recurrent_input", kind)(
                    flat_in, w_ih.data, None if b_ih is None else b_ih.data, xw
                )
            hs = self._output(f"hs{tag}", kind, (T + 1, B, H), dtype)
            lstm = mode == "lstm"
            cs = self._output(f"cs{tag}", kind, (T + 1, B, H), dtype) if lstm else hs
            gates = self._output(f"gates{tag}", kind, (T, B, _kernels.SAVED[mode] * H), dtype)
            bias_hh = self._zeros((G * H,)) if b_hh is None else b_hh.data
            dispatch.kernel_for("recurrent_forward", kind)(
                mode, xw.reshape(T, B, G * H), w_hh.data, bias_hh, h0[k],
                c0[k] if lstm else h0[k], hs, cs, gates, out, d * H, d == 1,
            )  # fmt: skip
            last = 0 if d == 1 else T
            _copy(kind, h_n[k], hs[last])
            if lstm:
                _copy(kind, c_n[k], cs[last])
            saved["dirs"].append((hs, cs, gates))
        return saved

    # --- backward ----------------------------------------------------------------------

    def backward(self, grad_output, grad_h_n=None, *, input_grad: bool = True):
        """Backpropagation through time for the last forward: ``grad_output`` =
        d loss / d output (output's shape; None: zeros), ``grad_h_n`` = d loss
        / d h_n (LSTM: the pair for (h_n, c_n), either may be None; None:
        zeros). Adds into every parameter's grad. Returns d loss / d x (None
        with ``input_grad=False``), or, when forward was given an initial
        state, (d loss / d x, d loss / d h0) (LSTM: (dx, (dh0, dc0)))."""
        op = f"{type(self).__name__}.backward"
        if self._saved is None:
            raise RuntimeError(f"{op} called before forward")
        saved = self._saved
        kind, T, B, unbatched = saved["kind"], saved["T"], saved["B"], saved["unbatched"]
        L, D, H = self.num_layers, self.num_directions, self.hidden_size
        G = _kernels.GATES[self.mode]
        lstm = self.mode == "lstm"
        out_shape = (B, T, D * H) if self.batch_first else (T, B, D * H)
        out_shape = (T, D * H) if unbatched else out_shape
        state_shape = (L * D, H) if unbatched else (L * D, B, H)
        if grad_output is None:
            g = self._zeros((T, B, D * H))
        else:
            g = self._check_array(op, "grad_output", grad_output, out_shape, kind)
            if unbatched:
                g = g.reshape(T, 1, D * H)
            elif self.batch_first:
                g_tm = self._output("g_tm", kind, (T, B, D * H), self.dtype)
                g = dispatch.kernel_for("swap_batch_time", kind)(g, g_tm)
        dh_n, dc_n = self._state_grads(op, grad_h_n, kind, state_shape, B)
        dh0 = self._output("dh0", kind, (L * D, B, H), self.dtype)
        dc0 = self._output("dc0", kind, (L * D, B, H), self.dtype) if lstm else None
        grads = self._grad_arrays()
        dx = None
        for layer in range(L - 1, -1, -1):
            info = saved["layers"][layer]
            seq = info["input"]
            features = seq.shape[2]
            want_dx = layer > 0 or input_grad
            dx = self._output(f"dx{layer}", kind, (T, B, features), self.dtype) if want_dx else None
            for d in range(D):
                k = layer * D + d
                tag = f"{layer}.{d}"
                hs, cs, gates = info["dirs"][d]
                w_ih, w_hh, _, _ = self._weights(layer, d)
                dgx = self._output(f"dgx{tag}", kind, (T, B, G * H), self.dtype)
                dgh = self._output(f"dgh{tag}", kind, (T, B, G * H), self.dtype)
                dgh = dgh if self.mode == "gru" else dgx
                dispatch.kernel_for("recurrent_backward", kind)(
                    self.mode, g, d * H, dh_n[k], dc_n[k] if lstm else dh_n[k], w_hh.data,
                    hs, cs, gates, dgx, dgh, dh0[k], dc0[k] if lstm else dh0[k], d == 1,
                )  # fmt: skip
                hprev = hs[1:] if d == 1 else hs[:T]
                dw_ih, dw_hh, db_ih, db_hh, accumulate = grads[k]
                macs = _kernels.grads_macs(T * B, G * H, features, H, dx is not None)
                with self._blas_threads(kind, T * B, macs):
                    dispatch.kernel_for("recurrent_grads", kind)(
                        seq.reshape(T * B, features), hprev.reshape(T * B, H),
                        dgx.reshape(T * B, G * H), dgh.reshape(T * B, G * H), w_ih.data,
                        dw_ih, db_ih, dw_hh, db_hh,
                        None if dx is None else dx.reshape(T * B, features), accumulate, d == 1,
                    )  # fmt: skip
            if layer > 0:
                draw = saved["layers"][layer - 1].get("draw")
                g = dx
                if draw is not None:
                    g = self._output(f"gdrop{layer}", kind, tuple(dx.shape), self.dtype)
                    ops.dropout(dx, self.dropout, *draw, out=g)
        if input_grad:
            if unbatched:
                dx = dx.reshape(saved["x_shape"])
            elif self.batch_first:
                dx_bf = self._output("dx_bf", kind, saved["x_shape"], self.dtype)
                dx = dispatch.kernel_for("swap_batch_time", kind)(dx, dx_bf)
        else:
            dx = None
        if not saved["given_state"]:
            return dx
        states = [s.reshape(L * D, H) if unbatched else s for s in (dh0, dc0) if s is not None]
        return dx, (tuple(states) if lstm else states[0])

    def _state_grads(self, op, grad_h_n, kind, shape, B):
        """(dh_n, dc_n) as (L * D, B, H) arrays, zeros for the ones not given."""
        L, D, H = self.num_layers, self.num_directions, self.hidden_size
        lstm = self.mode == "lstm"
        if grad_h_n is None:
            given = [None, None]
        elif lstm:
            if not isinstance(grad_h_n, (tuple, list)) or len(grad_h_n) != 2:
                raise TypeError(
                    f"{op}: expected grad_h_n to be a pair (for h_n, c_n), got {grad_h_n!r:.80}"
                )
            given = list(grad_h_n)
        else:
            given = [grad_h_n, None]
        states = [
            self._zeros((L * D, B, H))
            if a is None
            else self._check_array(op, name, a, shape, kind).reshape(L * D, B, H)
            for name, a in zip(("grad_h_n", "grad_c_n"), given, strict=True)
        ]
        return states[0], states[1]

    def _grad_arrays(self):
        """Per direction: (dw_ih, dw_hh, db_ih, db_hh, accumulate?) of its
        parameters for this backward pass (the biases None without bias)."""
        found = []
        for layer in range(self.num_layers):
            for d in range(self.num_directions):
                params = [p for p in self._weights(layer, d) if p is not None]
                taken = [p._grad_for_backward() for p in params]
                if len({acc for _, acc in taken}) > 1:  # some cleared, some not
                    taken = [(p.grad, True) for p in params]
                arrays = [a for a, _ in taken] + [None] * (4 - len(taken))
                dw_ih, dw_hh, db_ih, db_hh = arrays
                found.append((dw_ih, dw_hh, db_ih, db_hh, taken[0][1]))
        return found

    # --- saving ------------------------------------------------------------------------

    def config(self) -> dict:
        config = {
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "bias": self.bias,
            "batch_first": self.batch_first,
            "dropout": self.dropout,
            "bidirectional": self.bidirectional,
            "dtype": self.dtype.name,
        }
        if self.seed is not None:  # the dropout stream's, so that gn.load keeps it
            config["seed"] = self.seed
        return config

    @classmethod
    def expected_arrays(cls, config: dict) -> dict:
        name = cls.__name__
        I = _positive(name, "input_size", config.get("input_size"))  # noqa: E741
        H = _positive(name, "hidden_size", config.get("hidden_size"))
        L = _positive(name, "num_layers", config.get("num_layers", 1))
        D = 2 if config.get("bidirectional", False) else 1
        G = _kernels.GATES[cls._mode_for(config)]
        dtype = _float_dtype(config.get("dtype", "float32"))
        arrays = {}
        for layer in range(L):
            for d in range(D):
                suffix = f"_l{layer}" + ("_reverse" if d else "")
                arrays[f"weight_ih{suffix}"] = ((G * H, I if layer == 0 else D * H), dtype)
                arrays[f"weight_hh{suffix}"] = ((G * H, H), dtype)
                if config.get("bias", True):
                    arrays[f"bias_ih{suffix}"] = ((G * H,), dtype)
                    arrays[f"bias_hh{suffix}"] = ((G * H,), dtype)
        return arrays

    @classmethod
    def _mode_for(cls, config: dict) -> str:
        return cls.mode

    def __repr__(self) -> str:
        args = [f"{self.input_size}", f"{self.hidden_size}"]
        defaults = {"num_layers": 1, "bias": True, "batch_first": False, "dropout": 0.0,
                    "bidirectional": False, "dtype": "float32"}  # fmt: skip
        config = self.config()
        args += [f"{k}={v!r}" for k, v in config.items() if k in defaults and defaults[k] != v]
        args += [f"{k}={v!r}" for k, v in config.items() if k not in defaults and k not in
                 ("input_size", "hidden_size", "seed")]  # fmt: skip
        return f"{type(self).__name__}({', '.join(args)})"


def _copy(kind, dst, src):
    """dst[...] = src for two C-contiguous arrays of one shape on ``kind``."""
    if kind == "cpu":
        np.copyto(dst, src)
    else:
        dst.copy_to_device(src)


class RNN(_Recurrent):
    """Elman RNN, as ``torch.nn.RNN``: h_t = act(x_t @ W_ih.T + b_ih + h_(t-1)
    @ W_hh.T + b_hh), act tanh or relu (``nonlinearity``). Stacked
    (``num_layers``, with ``dropout`` between layers in training mode),
    bidirectional, batch-first; see the module docstring."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        dtype="float32",
        *,
        seed: int | None = None,
        device=None,
    ):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: expected nonlinearity 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.mode = f"rnn_{nonlinearity}"
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            dtype, seed=seed, device=device,
        )  # fmt: skip

    def config(self) -> dict:
        return {**super().config(), "nonlinearity": self.nonlinearity}

    @classmethod
    def _mode_for(cls, config: dict) -> str:
        nonlinearity = config.get("nonlinearity", "tanh")
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: expected nonlinearity 'tanh' or 'relu', got {nonlinearity!r}")
        return f"rnn_{nonlinearity}"


class LSTM(_Recurrent):
    """Long short-term memory, as ``torch.nn.LSTM``: gates i, f, g, o from
    x_t @ W_ih.T + b_ih + h_(t-1) @ W_hh.T + b_hh (sigmoid, sigmoid, tanh,
    sigmoid), c_t = f c_(t-1) + i g, h_t = o tanh(c_t). ``forward(x, (h0,
    c0))`` returns ``(output, (h_n, c_n))``; see the module docstring."""

    mode = "lstm"


class GRU(_Recurrent):
    """Gated recurrent unit, as ``torch.nn.GRU``: r, z = sigmoid(x_t W_i.T +
    b_i + h_(t-1) W_h.T + b_h) on their parts, n = tanh(x_t W_in.T + b_in + r
    (h_(t-1) W_hn.T + b_hn)) (the reset gate applied after the hidden
    product, as PyTorch does), h_t = (1 - z) n + z h_(t-1); see the module
    docstring."""

    mode = "gru"


class LastStep(Layer):
    """The last time step of a sequence: x (B, T, F) -> (B, F) (batch-first,
    the default, as a recurrent layer with ``batch_first=True`` and ``fit``'s
    (samples, steps, features) batches give it), or x (T, B, F) -> (B, F)
    with ``batch_first=False``. Puts a classifier or regression head on a
    recurrent layer's output sequence in a ``Sequential``."""

    def __init__(self, batch_first: bool = True):
        super().__init__()
        self.batch_first = bool(batch_first)
        self._shape = None

    def forward(self, x):
        op = "LastStep.forward"
        if not hasattr(x, "shape"):
            raise TypeError(f"{op}: expected x to be an array, got {type(x).__name__}")
        kind = dispatch.placement(op, x=x)
        axis = 1 if self.batch_first else 0
        if len(x.shape) != 3 or x.shape[axis] == 0:
            layout = "(B, T, F)" if self.batch_first else "(T, B, F)"
            raise ValueError(f"{op}: expected x {layout} with T >= 1, got {tuple(x.shape)}")
        x = contiguous(op, "x", kind, x)
        y = self._output("y", kind, (x.shape[1 - axis], x.shape[2]), x.dtype)
        dispatch.kernel_for("last_step", kind)(x, y, axis)
        self._shape, self._dtype, self._kind = tuple(x.shape), x.dtype, kind
        return y

    def backward(self, grad_out, *, input_grad: bool = True):
        """d loss / d x: zeros except at the last step, which is grad_out."""
        op = "LastStep.backward"
        if self._shape is None:
            raise RuntimeError(f"{op} called before forward")
        if not hasattr(grad_out, "shape"):
            got = type(grad_out).__name__
            raise TypeError(f"{op}: expected grad_out to be an array, got {got}")
        kind = dispatch.placement(op, grad_out=grad_out)
        axis = 1 if self.batch_first else 0
        want = (self._shape[1 - axis], self._shape[2])
        if tuple(grad_out.shape) != want:
            got = tuple(grad_out.shape)
            raise ValueError(f"{op}: expected grad_out of shape {want}, got {got}")
        if grad_out.dtype != self._dtype:
            raise TypeError(f"{op}: expected a {self._dtype} grad_out, got {grad_out.dtype}")
        if kind != self._kind:
            raise ValueError(f"{op}: expected grad_out on {self._kind} like x, got {kind}")
        if not input_grad:
            return None
        grad_out = contiguous(op, "grad_out", kind, grad_out)
        dx = self._output("dx", kind, self._shape, self._dtype)
        return dispatch.kernel_for("last_step_backward", kind)(grad_out, dx, axis)

    def config(self) -> dict:
        return {"batch_first": self.batch_first}


for _cls in (RNN, LSTM, GRU, LastStep):
    register_layer(_cls)
