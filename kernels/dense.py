"""Dense layers: y = act(x @ W + b) and its gradients (CPU so far).

Shapes: x (batch, in_features), W (in_features, out_features), b
(out_features,), y (batch, out_features); all C-contiguous float32 or float64.
``activation`` is one of ``EPILOGUES``: None (identity), "relu",
"leaky_relu" (alpha), "sigmoid" or "tanh".

The matrix products go through BLAS (numpy's matmul); the bias and the
activation are one fused pass over y (the epilogue), and the backward's first
pass over grad_out applies the activation's derivative and sums the bias
gradient at once. The derivative is taken from the output y (for relu and
leaky_relu with alpha > 0, y > 0 exactly where x > 0), so the layer keeps only
its output.

Sections: numpy references, CPU kernels, launchers.
"""

from __future__ import annotations

import numba
import numpy as np

from . import activations as act

# --- references (the executable spec) -------------------------------------------------

_REFERENCES = {
    None: lambda z, alpha: z,
    "relu": lambda z, alpha: act.relu_ref(z),
    "leaky_relu": lambda z, alpha: act.leaky_relu_ref(z, alpha),
    "sigmoid": lambda z, alpha: act.sigmoid_ref(z),
    "tanh": lambda z, alpha: act.tanh_ref(z),
}


def dense_ref(x, W, b, activation=None, alpha=0.01):
    """act(x @ W + b), computed in float64 and returned in x's dtype."""
    z = x.astype(np.float64) @ W.astype(np.float64) + b.astype(np.float64)
    return _REFERENCES[activation](z, alpha).astype(x.dtype)


def dense_backward_ref(grad_out, x, W, y, activation=None, alpha=0.01):
    """(dx, dW, db) for y = dense(x, W, b, activation), in float64, returned in x's dtype."""
    g, y64 = grad_out.astype(np.float64), y.astype(np.float64)
    if activation is None:
        dz = g
    elif activation == "relu":
        dz = np.where(y64 > 0, g, 0.0)
    elif activation == "leaky_relu":
        dz = np.where(y64 > 0, g, alpha * g)
    elif activation == "sigmoid":
        dz = g * y64 * (1 - y64)
    else:
        dz = g * (1 - y64 * y64)
    dx = dz @ W.astype(np.float64).T
    dW = x.astype(np.float64).T @ dz
    return dx.astype(x.dtype), dW.astype(x.dtype), dz.sum(axis=0).astype(x.dtype)


# --- CPU kernels ----------------------------------------------------------------------


@numba.njit(inline="always")
def _identity(z, c):
    return z


@numba.njit(inline="always")
def _identity_backward(g, y, c):
    return g


#: activation -> (forward scalar f(z, c), backward scalar f(g, y, c)); c is alpha
#: for leaky_relu and 1 otherwise.
EPILOGUES = {
    None: (_identity, _identity_backward),
    "relu": (act.relu_scalar, act.relu_backward_scalar),
    "leaky_relu": (act.leaky_relu_scalar, act.leaky_relu_backward_scalar),
    "sigmoid": (act.sigmoid_scalar, act.sigmoid_backward_scalar),
    "tanh": (act.tanh_scalar, act.tanh_backward_scalar),
}

_CPU_OPTIONS = {"error_model": "numpy", "fastmath": {"contract"}}


def _epilogue_kernel(forward):
    @numba.njit(parallel=True, **_CPU_OPTIONS)
    def epilogue(y, b, c):
        """y[i, j] = forward(y[i, j] + b[j], c), in place, rows in parallel."""
        for i in numba.prange(y.shape[0]):
            for j in range(y.shape[1]):
                y[i, j] = forward(y[i, j] + b[j], c)

    return epilogue


def _grad_kernel(backward):
    @numba.njit(parallel=True, **_CPU_OPTIONS)
    def grad(g, y, c, dz, db, chunk):
        """dz = backward(g, y, c) and db = column sums of dz, in one pass:
        each parallel task owns ``chunk`` columns over all rows."""
        n_chunks = (g.shape[1] + chunk - 1) // chunk
        for t in numba.prange(n_chunks):
            lo = t * chunk
            hi = min(lo + chunk, g.shape[1])
            for j in range(lo, hi):
                db[j] = 0
            for i in range(g.shape[0]):
                for j in range(lo, hi):
                    d = backward(g[i, j], y[i, j], c)
                    dz[i, j] = d
                    db[j] += d

    return grad


_EPILOGUE = {name: _epilogue_kernel(forward) for name, (forward, _) in EPILOGUES.items()}
_GRAD = {name: _grad_kernel(backward) for name, (_, backward) in EPILOGUES.items()}

#: Columns per parallel task in the backward's first pass: a few cache lines
#: of each row, so that the tasks' writes to dz and db never share a line.
GRAD_CHUNK = 64


# --- launchers ------------------------------------------------------------------------


def _constant(dtype, activation, alpha):
    return dtype.type(alpha if activation == "leaky_relu" else 1)


def dense_cpu(x, W, b, out, activation=None, alpha=0.01):
    """out (batch, out_features) = act(x @ W + b): a BLAS product into ``out``,
    then the bias and activation in one fused pass. Returns ``out``."""
    np.matmul(x, W, out=out)
    _EPILOGUE[activation](out, b, _constant(out.dtype, activation, alpha))
    return out


def dense_backward_cpu(grad_out, x, W, y, dx, dW, db, dz, activation=None, alpha=0.01):
    """Gradients of y = dense_cpu(x, W, b, activation) for ``grad_out`` = d loss / d y.

    Fills dx (batch, in_features), dW (in_features, out_features) and db
    (out_features,). ``dz`` (batch, out_features) is scratch for d loss / d
    (x @ W + b) and may be ``grad_out`` itself (overwritten).
    """
    _GRAD[activation](grad_out, y, _constant(y.dtype, activation, alpha), dz, db, GRAD_CHUNK)
    np.matmul(x.T, dz, out=dW)
    np.matmul(dz, W.T, out=dx)
