"""Layers and models with explicit backpropagation.

``forward(x)`` computes a layer's output and keeps what ``backward`` needs;
``backward(grad_out)`` returns d loss / d input and adds the parameters'
gradients into their ``.grad``. No autograd tape: a training step reads

    logits = model.forward(xb)
    loss, grad = loss_fn(logits, yb)
    model.backward(grad)
    opt.step()
    opt.zero_grad()

Layers own their outputs: ``forward`` returns an array that the next
``forward`` with the same batch shape overwrites (so training allocates
nothing per step). Copy it (``gn.to_numpy``, ``.copy()``) to keep it;
``model.predict`` returns a fresh numpy array.

Arrays are (batch, features), float32 by default or float64, on the device
the layer lives on (the current device when it was made; ``to(device)``
moves it).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from . import dispatch, ops
from . import distributed as _distributed
from . import random as _random
from ._arrays import assign, check_alpha, check_dtypes, check_probability
from ._arrays import device_of as _device_of
from ._arrays import float_dtype as _float_dtype
from ._arrays import zeros as _zeros
from ._device import Device, _resolve, get_device, to_device, to_numpy
from .kernels import dense as _dense
from .kernels import dropout as _dropout
from .layer import Layer
from .parameter import Parameter, pack
from .recurrent import GRU, LSTM, RNN, LastStep
from .serialization import register_layer, register_model
from .training import Model

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "BatchNorm1d",
    "Dense",
    "Dropout",
    "LastStep",
    "Layer",
    "LeakyReLU",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Step",
    "Tanh",
]


#: Initialisations: name -> the bound of the uniform distribution U(-a, a).
INITS = {
    "he": lambda fan_in, fan_out: math.sqrt(6.0 / fan_in),
    "glorot": lambda fan_in, fan_out: math.sqrt(6.0 / (fan_in + fan_out)),
}


class Dense(Layer):
    """y = act(x @ weight + bias), the bias and activation fused into the product.

    x (batch, in_features) -> y (batch, out_features). ``weight`` is
    (in_features, out_features), ``bias`` (out_features,). ``activation``:
    None, "relu", "leaky_relu" (slope ``alpha``), "sigmoid" or "tanh".
    ``init``: "he" (uniform, bound sqrt(6 / in_features); the default for relu
    and leaky_relu) or "glorot" (uniform, bound sqrt(6 / (in + out)); the
    default otherwise); the bias starts at zero. ``seed`` draws the weights
    from gpunet's counter-based generator (the same weights on every device);
    None takes them from the default generator (``gn.manual_seed``).
    """

    host_replay = True

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation: str | None = None,
        dtype="float32",
        *,
        alpha: float = 0.01,
        init: str | None = None,
        seed: int | None = None,
        device=None,
    ):
        super().__init__()
        for name, n in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
                raise ValueError(f"Dense: expected a positive integer {name}, got {n!r}")
        if activation not in _dense.EPILOGUES:
            names = ", ".join(repr(a) for a in _dense.EPILOGUES)
            raise ValueError(f"Dense: expected activation in ({names}), got {activation!r}")
        self.alpha = check_alpha("Dense", alpha)
        if init is None:
            init = "he" if activation in ("relu", "leaky_relu") else "glorot"
        if init not in INITS:
            raise ValueError(f"Dense: expected init 'he' or 'glorot', got {init!r}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.activation, self.init = activation, init
        dtype = _float_dtype(dtype)
        device = get_device() if device is None else _resolve(device)
        generator = _random.default_generator if seed is None else _random.Generator(seed)
        bound = INITS[init](self.in_features, self.out_features)
        u = generator.uniform((self.in_features, self.out_features), dtype=np.float64, device="cpu")
        weight = ((2 * u - 1) * bound).astype(dtype)
        self.weight = Parameter(to_device(weight, device), "weight")
        self.bias = Parameter(_zeros(self.out_features, dtype, device), "bias")
        pack(self.parameters())
        self._x = self._y = None

    def parameters(self) -> list[Parameter]:
        return [self.weight, self.bias]

    def _named_parameters(self):
        return [("weight", self.weight), ("bias", self.bias)]

    def forward(self, x):
        """(batch, in_features) -> (batch, out_features), on the layer's device."""
        W = self.weight.data
        self._check_input(x, self.in_features, W.dtype)
        kind = dispatch.placement("Dense.forward", x=x, weight=W)
        y = self._output("y", kind, (x.shape[0], self.out_features), W.dtype)
        ops.dense(x, W, self.bias.data, self.activation, self.alpha, out=y)
        self._x, self._y = x, y
        return y

    def backward(self, grad_out, *, input_grad: bool = True):
        """d loss / d x for ``grad_out`` = d loss / d y of the last forward;
        adds d loss / d weight and d loss / d bias into the parameters' grad.
        With ``input_grad=False`` (the first layer) skips d loss / d x and returns None."""
        if self._y is None:
            raise RuntimeError("Dense.backward called before forward")
        x, y, W = self._x, self._y, self.weight.data
        kind = dispatch.placement("Dense.backward", grad_out=grad_out, weight=W)
        if tuple(grad_out.shape) != tuple(y.shape):
            raise ValueError(
                f"Dense.backward: expected grad_out of shape {y.shape}, got {grad_out.shape}"
            )
        if grad_out.dtype != y.dtype:
            raise TypeError(f"Dense.backward: expected a {y.dtype} grad_out, got {grad_out.dtype}")
        dx = self._output("dx", kind, tuple(x.shape), x.dtype) if input_grad else None
        dz = self._output("dz", kind, tuple(y.shape), y.dtype)
        dW, accumulate_w = self.weight._grad_for_backward()
        db, accumulate_b = self.bias._grad_for_backward()
        if accumulate_w != accumulate_b:  # one cleared, the other not: clear explicitly
            dW, db = self.weight.grad, self.bias.grad
            accumulate_w = True
        ops.dense_backward(
            grad_out, x, W, y, self.activation, self.alpha,
            input_grad=input_grad, accumulate=accumulate_w, dx=dx, dW=dW, db=db, dz=dz,
        )  # fmt: skip
        return dx

    def config(self) -> dict:
        config = {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "activation": self.activation,
            "dtype": np.dtype(self.weight.dtype).name,
        }
        if self.activation == "leaky_relu":
            config["alpha"] = self.alpha
        return config

    @classmethod
    def expected_arrays(cls, config: dict) -> dict:
        n_in, n_out = config.get("in_features"), config.get("out_features")
        for name, n in (("in_features", n_in), ("out_features", n_out)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"Dense: expected a positive integer {name}, got {n!r}")
        dtype = _float_dtype(config.get("dtype", "float32"))
        return {"weight": ((n_in, n_out), dtype), "bias": ((n_out,), dtype)}


class _Activation(Layer):
    """An elementwise activation layer: ``forward_op`` and ``backward_op`` are
    its functions of gn.ops (staticmethods); ``saves`` is what the backward
    needs: the input "x" or the output "y"."""

    forward_op: Callable
    backward_op: Callable
    saves: str

    def __init__(self):
        super().__init__()
        self._saved = None

    def _args(self):
        return ()

    def forward(self, x):
        kind = dispatch.placement(f"{type(self).__name__}.forward", x=x)
        y = self._output("y", kind, tuple(x.shape), x.dtype)
        self.forward_op(x, *self._args(), out=y)
        self._saved = x if self.saves == "x" else y
        return y

    def backward(self, grad_out, *, input_grad: bool = True):
        if self._saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        if not input_grad:
            return None
        kind = dispatch.placement(f"{type(self).__name__}.backward", grad_out=grad_out)
        dx = self._output("dx", kind, tuple(self._saved.shape), self._saved.dtype)
        return self.backward_op(grad_out, self._saved, *self._args(), out=dx)


class ReLU(_Activation):
    """max(x, 0)."""

    host_replay = True

    forward_op, backward_op = staticmethod(ops.relu), staticmethod(ops.relu_backward)
    saves = "x"


class LeakyReLU(_Activation):
    """x if x > 0 else alpha * x."""

    host_replay = True

    forward_op, backward_op = staticmethod(ops.leaky_relu), staticmethod(ops.leaky_relu_backward)
    saves = "x"

    def __init__(self, alpha: float = 0.01):
        super().__init__()
        self.alpha = check_alpha("LeakyReLU", alpha)

    def _args(self):
        return (self.alpha,)

    def config(self) -> dict:
        return {"alpha": self.alpha}


class Sigmoid(_Activation):
    """1 / (1 + exp(-x))."""

    host_replay = True

    forward_op, backward_op = staticmethod(ops.sigmoid), staticmethod(ops.sigmoid_backward)
    saves = "y"


class Tanh(_Activation):
    """tanh(x)."""

    host_replay = True

    forward_op, backward_op = staticmethod(ops.tanh), staticmethod(ops.tanh_backward)
    saves = "y"


class Softmax(_Activation):
    """softmax over the last axis. To train a classifier, prefer logits with
    gn.losses.SoftmaxCrossEntropy, which fuses and stabilises the pair."""

    host_replay = True

    forward_op, backward_op = staticmethod(ops.softmax), staticmethod(ops.softmax_backward)
    saves = "y"


class Step(_Activation):
    """1 where x > 0, else 0; its gradient is zero everywhere."""

    host_replay = True

    forward_op, backward_op = staticmethod(ops.step), staticmethod(ops.step_backward)
    saves = "x"


class Dropout(Layer):
    """Inverted dropout: in training mode each element is zeroed with
    probability ``p`` and the others scaled by 1 / (1 - p); the identity in
    evaluation mode (and for ``p = 0``). ``p = 1`` zeroes everything, and its
    gradient. Any input shape, float32 or float64, on the input's device.

    The mask comes from gpunet's counter-based generator: each training
    forward reserves the next words of ``seed``'s stream (a generator of the
    layer's own), or of the default generator (``gn.manual_seed``) without a
    seed, so one seed gives the same masks on every device. The backward
    draws the mask again from the same words instead of storing it. In a
    data-parallel fit (``gn.distributed``) each rank draws its rows' part of
    the global batch's mask, so the masks are a function of (seed, global
    row) and match those of one process training on the global batch.
    """

    def __init__(self, p: float = 0.5, *, seed: int | None = None):
        super().__init__()
        self.p = check_probability("Dropout", p)
        self.seed = seed
        self._generator = _random.default_generator if seed is None else _random.Generator(seed)
        self._draw = None  # (seed, offset) of the last training forward, None for identity
        self._shape = None

    def forward(self, x):
        """x (any shape) -> the same shape: dropped out in training, else x itself."""
        kind = dispatch.placement("Dropout.forward", x=x)
        check_dtypes("Dropout.forward", ("x",), (x,))
        self._shape = tuple(x.shape)
        if not self.training or self.p == 0:
            self._draw = None
            return x
        generator = self._generator
        generator.take(-generator.offset % 4)  # masks start at a Philox block
        share = _distributed.batch_share()
        if share is not None and share[1] == self._shape[0]:  # a rank's rows of a global batch
            y, self._draw = _distributed.dropout_share(self, x, kind, share)
            return y
        offset = generator.take(_dropout.words(math.prod(self._shape)))
        y = self._output("y", kind, self._shape, x.dtype)
        ops.dropout(x, self.p, generator.seed, offset, out=y)
        self._draw = (generator.seed, offset)
        return y

    def backward(self, grad_out, *, input_grad: bool = True):
        """d loss / d x: grad_out through the last forward's mask and scale."""
        if self._shape is None:
            raise RuntimeError("Dropout.backward called before forward")
        kind = dispatch.placement("Dropout.backward", grad_out=grad_out)
        if tuple(grad_out.shape) != self._shape:
            raise ValueError(
                f"Dropout.backward: expected grad_out of shape {self._shape}, got {grad_out.shape}"
            )
        if not input_grad:
            return None
        if self._draw is None:
            return grad_out
        if len(self._draw) == 3:  # drawn for a rank's share of a global batch
            return _distributed.dropout_shared(self, grad_out, kind, self._draw, "dx")
        dx = self._output("dx", kind, self._shape, grad_out.dtype)
        return ops.dropout(grad_out, self.p, *self._draw, out=dx)

    def config(self) -> dict:
        return {"p": self.p} if self.seed is None else {"p": self.p, "seed": self.seed}


class BatchNorm1d(Layer):
    """Batch normalization over the batch of (batch, num_features) inputs, as
    ``torch.nn.BatchNorm1d``: y = (x - mean) / sqrt(var + eps) * weight + bias.

    In training mode mean and var are the batch's (var biased), and the
    running estimates move towards them by ``momentum``: running = (1 -
    momentum) running + momentum batch, with the unbiased variance for
    ``running_var``. In evaluation mode the running estimates are used. With
    ``track_running_stats=False`` there are none and the batch's statistics
    are used in both modes. ``weight`` (ones) and ``bias`` (zeros) are
    learnable Parameters of shape (num_features,) when ``affine``.
    ``running_mean`` (zeros) and ``running_var`` (ones) are saved with the
    model; assigning to them copies into them, refusing an array of another
    shape, dtype or device (as a Parameter's ``data`` does).

    In a data-parallel fit (``gn.distributed``) each rank normalizes its
    share of the global batch with its share's own statistics, as PyTorch's
    DistributedDataParallel does by default (no synchronized batch norm), so
    such a model does not take exactly the steps of one process on the
    global batch; the running estimates become rank 0's at the end of each
    epoch, so that every rank evaluates alike.
    """

    host_replay = True

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        dtype="float32",
        *,
        device=None,
    ):
        super().__init__()
        n = num_features
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"BatchNorm1d: expected a positive integer num_features, got {n!r}")
        for name, value, low, high in (("eps", eps, 0, math.inf), ("momentum", momentum, 0, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"BatchNorm1d: expected a number {name}, got {value!r}")
            if not (low < value < high if name == "eps" else low <= value <= high):
                bounds = "eps > 0" if name == "eps" else "momentum in [0, 1]"
                raise ValueError(f"BatchNorm1d: expected {bounds}, got {value!r}")
        self.num_features, self.eps, self.momentum = int(n), float(eps), float(momentum)
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        dtype = _float_dtype(dtype)
        device = get_device() if device is None else _resolve(device)

        def ones():  # a new array each time: to_device does not copy on the host
            return to_device(np.ones(self.num_features, dtype), device)

        if self.affine:
            self.weight = Parameter(ones(), "weight")
            self.bias = Parameter(_zeros(self.num_features, dtype, device), "bias")
            pack(self.parameters())
        else:
            self._fixed = (ones(), _zeros(self.num_features, dtype, device))
        if self.track_running_stats:
            self._running_mean = _zeros(self.num_features, dtype, device)
            self._running_var = ones()
        else:
            self._running_mean = self._running_var = None
        self._x = None

    def parameters(self) -> list[Parameter]:
        return [self.weight, self.bias] if self.affine else []

    def _named_parameters(self):
        return [("weight", self.weight), ("bias", self.bias)] if self.affine else []

    def _named_buffers(self):
        if not self.track_running_stats:
            return []
        return [("running_mean", self.running_mean), ("running_var", self.running_var)]

    @property
    def running_mean(self):
        """The running mean (num_features,) on the layer's device; None
        without ``track_running_stats``."""
        return self._running_mean

    @running_mean.setter
    def running_mean(self, value):
        self._set_running("running_mean", value)

    @property
    def running_var(self):
        """The running variance (num_features,), as ``running_mean``."""
        return self._running_var

    @running_var.setter
    def running_var(self, value):
        self._set_running("running_var", value)

    def _set_running(self, name, value):
        """Copy ``value`` into the running statistic ``name`` (see ``assign``)."""
        buffer = getattr(self, f"_{name}")
        if buffer is None:
            raise ValueError(f"BatchNorm1d: has no {name} (made with track_running_stats=False)")
        assign("BatchNorm1d", name, buffer, value)

    def _affine(self):
        """(weight, bias) arrays: the parameters, or fixed ones and zeros."""
        return (self.weight.data, self.bias.data) if self.affine else self._fixed

    def to(self, device) -> BatchNorm1d:
        if self.track_running_stats:  # new buffers there (the setters copy on one device)
            target = _resolve(device)
            for name in ("_running_mean", "_running_var"):
                if _device_of(getattr(self, name)) != target:
                    setattr(self, name, to_device(to_numpy(getattr(self, name)), target))
        super().to(device)
        if not self.affine:
            self._fixed = tuple(to_device(to_numpy(a), _resolve(device)) for a in self._fixed)
        return self

    def forward(self, x):
        """(batch, num_features) -> the same shape, on the layer's device.
        Training mode needs at least 2 rows (a variance), as in PyTorch."""
        weight, bias = self._affine()
        self._check_input(x, self.num_features, weight.dtype)
        kind = dispatch.placement("BatchNorm1d.forward", x=x, weight=weight)
        n, c = x.shape
        if self.training and n < 2:
            raise ValueError(
                f"BatchNorm1d: expected more than 1 row per feature in training mode, "
                f"got input of shape {tuple(x.shape)}"
            )
        y = self._output("y", kind, (n, c), x.dtype)
        outputs = {
            "out": y,
            "save_mean": self._output("mean", kind, (c,), x.dtype),
            "save_invstd": self._output("invstd", kind, (c,), x.dtype),
        }
        batch_stats = self.training or not self.track_running_stats
        running = (self.running_mean, self.running_var)
        if not batch_stats:
            _, *stats = ops.batchnorm_inference(x, weight, bias, *running, self.eps, **outputs)
        else:
            update = self.training and self.track_running_stats
            _, *stats = ops.batchnorm(
                x, weight, bias, *(running if update else (None, None)), self.momentum, self.eps,
                **outputs,
            )  # fmt: skip
        self._x, self._stats, self._batch_stats = x, stats, batch_stats
        return y

    def backward(self, grad_out, *, input_grad: bool = True):
        """d loss / d x for ``grad_out`` = d loss / d y of the last forward
        (through the batch statistics when it used them); adds d loss / d
        weight and d loss / d bias into the parameters' grad."""
        if self._x is None:
            raise RuntimeError("BatchNorm1d.backward called before forward")
        x = self._x
        weight, _ = self._affine()
        kind = dispatch.placement("BatchNorm1d.backward", grad_out=grad_out, weight=weight)
        if tuple(grad_out.shape) != tuple(x.shape):
            raise ValueError(
                f"BatchNorm1d.backward: expected grad_out of shape {tuple(x.shape)}, "
                f"got {tuple(grad_out.shape)}"
            )
        if grad_out.dtype != x.dtype:
            raise TypeError(
                f"BatchNorm1d.backward: expected a {x.dtype} grad_out, got {grad_out.dtype}"
            )
        c = self.num_features
        if self.affine:
            dweight, accumulate = self.weight._grad_for_backward()
            dbias, accumulate_b = self.bias._grad_for_backward()
            if accumulate != accumulate_b:  # one cleared, the other not: clear explicitly
                dweight, dbias, accumulate = self.weight.grad, self.bias.grad, True
        else:  # computed beside dx, and dropped
            dweight = self._output("dweight", kind, (c,), x.dtype)
            dbias, accumulate = self._output("dbias", kind, (c,), x.dtype), False
        dx = self._output("dx", kind, tuple(x.shape), x.dtype) if input_grad else None
        ops.batchnorm_backward(
            grad_out, x, weight, *self._stats, self._batch_stats,
            input_grad=input_grad, accumulate=accumulate, dx=dx, dweight=dweight, dbias=dbias,
        )  # fmt: skip
        return dx

    def config(self) -> dict:
        return {
            "num_features": self.num_features,
            "eps": self.eps,
            "momentum": self.momentum,
            "affine": self.affine,
            "track_running_stats": self.track_running_stats,
            "dtype": np.dtype(self._affine()[0].dtype).name,
        }

    @classmethod
    def expected_arrays(cls, config: dict) -> dict:
        n = config.get("num_features")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"BatchNorm1d: expected a positive integer num_features, got {n!r}")
        dtype = _float_dtype(config.get("dtype", "float32"))
        names = ["weight", "bias"] if bool(config.get("affine", True)) else []
        if bool(config.get("track_running_stats", True)):
            names += ["running_mean", "running_var"]
        return {name: ((n,), dtype) for name in names}

    def min_training_rows(self) -> int:
        return 2  # a variance over the batch


for _cls in (Dense, ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, Step, Dropout, BatchNorm1d):
    register_layer(_cls)


@register_model
class Sequential(Model, Layer):
    """Layers applied in order; backward runs them in reverse.

    Also the model: ``fit``, ``evaluate``, ``predict`` and ``save`` come from
    :class:`gpunet.training.Model`; ``gn.load`` reads a saved model back.
    """

    host_replay = True

    def __init__(self, *layers: Layer):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: expected layers, got {type(layer).__name__} at {i}")
        self.layers = list(layers)
        devices = {str(p.device) for p in self.parameters()}
        if len(devices) > 1:
            raise ValueError(
                f"Sequential: layers live on different devices ({', '.join(sorted(devices))}); "
                "move them with .to(device)"
            )
        dtypes = {np.dtype(p.dtype).name for p in self.parameters()}
        if len(dtypes) > 1:
            raise TypeError(f"Sequential: layers mix dtypes ({', '.join(sorted(dtypes))})")
        pack(self.parameters())

    def forward(self, x):
        """The last layer's output for ``x`` (owned by the model: see the module docstring)."""
        for layer in self.layers:
            x = layer.forward(x)
            if type(x) is tuple:  # a recurrent layer's (output, state): pass the output on
                x = x[0]
        return x

    __call__ = forward

    def backward(self, grad_out, *, input_grad: bool = True):
        """Backpropagate ``grad_out`` = d loss / d output through every layer,
        adding into each parameter's grad; returns d loss / d input (None with
        ``input_grad=False``, which also skips the first layer's input product)."""
        g = grad_out
        for i in range(len(self.layers) - 1, -1, -1):
            g = self.layers[i].backward(g, input_grad=input_grad or i > 0)
        return g

    def parameters(self) -> list[Parameter]:
        return [p for layer in self.layers for p in layer.parameters()]

    def state_dict(self) -> dict[str, np.ndarray]:
        return {
            f"{i}.{name}": value
            for i, layer in enumerate(self.layers)
            for name, value in layer.state_dict().items()
        }

    def load_state_dict(self, arrays: dict) -> None:
        for i, layer in enumerate(self.layers):
            prefix = f"{i}."
            layer.load_state_dict(
                {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            )

    def train(self, mode: bool = True) -> Sequential:
        self.training = bool(mode)
        for layer in self.layers:
            layer.train(mode)
        return self

    def to(self, device) -> Sequential:
        for layer in self.layers:
            layer.to(device)
        pack(self.parameters())
        return self

    @property
    def device(self) -> Device:
        """Where the parameters live (the current device for a model without any)."""
        params = self.parameters()
        return params[0].device if params else get_device()

    @property
    def dtype(self) -> np.dtype:
        params = self.parameters()
        return np.dtype(params[0].dtype) if params else np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self) -> str:
        lines = [f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers)]
        count = sum(int(np.prod(p.shape)) for p in self.parameters())
        return "Sequential(\n" + "\n".join(lines) + f"\n)  # {count:,} parameters on {self.device}"

    def min_training_rows(self) -> int:
        return max((layer.min_training_rows() for layer in self.layers), default=1)
