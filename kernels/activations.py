"""Elementwise activations and their gradients: step, sigmoid, tanh, relu, leaky_relu.

Every op works on a flat, C-contiguous float32 or float64 array (callers flatten
any shape). Forward ops map ``x -> out``; backward ops map
``(grad_out, saved) -> grad_in``, where ``saved`` is the forward *output* for
sigmoid and tanh (their derivative is cheapest from it) and the forward *input*
for step, relu and leaky_relu, as in PyTorch.

Sections: numpy references, scalar math (one definition for both targets), CPU
kernels, CUDA kernels, launchers.

The scalar functions take a constant ``c`` of the data's dtype (``1`` for most
ops, ``alpha`` for leaky_relu) so that no float64 literal promotes float32 math
to float64 on either target.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba.extending import overload

from . import _cuda, vmath
from ._cache import cached
from ._cpu import (
    CPU_OPTIONS,
    PARALLEL_THRESHOLD,
    flat,
    in_dtype_of,
    like,
    overlaps_partly,
    wide_vectors,
    writable_like,
)
from ._cuda import cuda, float_signatures, grid_1d
from ._table import OpKernels

# --- references (the executable spec) -------------------------------------------------


def step_ref(x):
    """Heaviside step: 1 where x > 0, else 0 (so step(0) = 0 and step(nan) = 0)."""
    return (x > 0).astype(x.dtype)


def sigmoid_ref(x):
    """1 / (1 + exp(-x)), evaluated in float64 without overflow."""
    x64 = x.astype(np.float64)
    z = np.exp(-np.abs(x64))
    return np.where(x64 >= 0, 1 / (1 + z), z / (1 + z)).astype(x.dtype)


def tanh_ref(x):
    return np.tanh(x.astype(np.float64)).astype(x.dtype)


def relu_ref(x):
    """max(x, 0), propagating NaN like PyTorch."""
    return np.where(x <= 0, np.zeros_like(x), x)


def leaky_relu_ref(x, alpha):
    return np.where(x > 0, x, x * x.dtype.type(alpha))


def step_backward_ref(grad_out, x):
    """The step function's derivative is zero wherever it exists: no gradient flows."""
    return np.zeros_like(grad_out)


def sigmoid_backward_ref(grad_out, y):
    """grad_out * y * (1 - y), with y = sigmoid(x)."""
    return grad_out * y * (1 - y)


def tanh_backward_ref(grad_out, y):
    """grad_out * (1 - y**2), with y = tanh(x)."""
    return grad_out * (1 - y * y)


def relu_backward_ref(grad_out, x):
    return np.where(x > 0, grad_out, np.zeros_like(grad_out))


def leaky_relu_backward_ref(grad_out, x, alpha):
    return np.where(x > 0, grad_out, grad_out * grad_out.dtype.type(alpha))


# --- scalar math, shared by the CPU and CUDA kernels ----------------------------------


@numba.njit(inline="always")
def step_scalar(x, one):
    return one if x > 0 else one - one


def _sigmoid_scalar(exp):
    """sigmoid for a target's exp of x <= 0 (vmath.exp_nonpositive on the CPU,
    math.exp on CUDA)."""

    @numba.njit(inline="always")
    def sigmoid(x, one):
        # exp(-|x|) never overflows; the two branches are the same function.
        z = exp(-abs(x))
        s = one / (one + z)
        return s if x >= 0 else z * s

    return sigmoid


def _tanh_scalar(tanh):
    @numba.njit(inline="always")
    def tanh_(x, one):
        return tanh(x)

    return tanh_


#: The CPU versions use vmath (vectorisable); the CUDA ones the GPU's own functions.
sigmoid_scalar = _sigmoid_scalar(vmath.exp_nonpositive)
sigmoid_scalar_cuda = _sigmoid_scalar(math.exp)
tanh_scalar, tanh_scalar_cuda = _tanh_scalar(vmath.tanh), _tanh_scalar(math.tanh)


@numba.njit(inline="always")
def relu_scalar(x, one):
    return one - one if x <= 0 else x


@numba.njit(inline="always")
def leaky_relu_scalar(x, alpha):
    return x if x > 0 else alpha * x


@numba.njit(inline="always")
def step_backward_scalar(g, x, one):
    return one - one


@numba.njit(inline="always")
def sigmoid_backward_scalar(g, y, one):
    return g * y * (one - y)


@numba.njit(inline="always")
def tanh_backward_scalar(g, y, one):
    return g * (one - y * y)


@numba.njit(inline="always")
def relu_backward_scalar(g, x, one):
    return g if x > 0 else one - one


@numba.njit(inline="always")
def leaky_relu_backward_scalar(g, x, alpha):
    return g if x > 0 else alpha * g


# --- CPU kernels ----------------------------------------------------------------------


# Each kernel asks for 512-bit vectors (wide_vectors); a parallel kernel asks
# inside its loop, which Numba compiles as a function of its own.
#
# What an op calls is a compiled launcher: it checks the arrays (their types
# when Numba compiles it for them; when it runs, their shapes, and that out
# is an input itself or apart from the inputs in memory), picks the serial or
# the parallel loop by size and returns True, or returns False having done
# nothing, so that the caller can raise the error that names what was
# wrong. Checks in Python cost more than the whole launch on a small
# array. A launcher takes the op's constant only when the op has one
# (leaky_relu's alpha): every argument costs Numba's dispatcher time, even a
# None or a numpy scalar. The launcher is the registered kernel itself, with
# no Python wrapper.


def _cpu_forward(name, f, constant):
    # The arrays are of any shape; flat() and ravel() view a C-contiguous
    # array as 1-D (and copy x when it is not), so callers need not.
    @numba.njit(**CPU_OPTIONS)
    def serial(x, c, out):
        wide_vectors()
        x, out = flat(x), flat(out)
        for i in range(x.size):
            out[i] = f(x[i], c)

    @numba.njit(parallel=True, **CPU_OPTIONS)
    def parallel(x, c, out):
        x, out = x.ravel(), out.ravel()  # not flat(): see its docstring
        for i in numba.prange(x.size):
            wide_vectors()
            out[i] = f(x[i], c)

    def launch(x, out, c):
        """out = f(x, c): True, or False (nothing written) for arrays it cannot take."""

    @overload(launch, jit_options=CPU_OPTIONS)
    def _launch(x, out, c):
        if not writable_like(out, x):
            return lambda x, out, c: False

        def impl(x, out, c):
            if out.shape != x.shape or overlaps_partly(x, out):
                return False
            k = in_dtype_of(x, c)
            if x.size >= PARALLEL_THRESHOLD:
                parallel(x, k, out)
            else:
                serial(x, k, out)
            return True

        return impl

    if constant:

        @cached(name)
        @numba.njit
        def forward(x, out, c):
            return launch(x, out, c)

    else:

        @cached(name)
        @numba.njit
        def forward(x, out):
            return launch(x, out, None)

    return forward


def _cpu_backward(name, f, constant):
    @numba.njit(**CPU_OPTIONS)
    def serial(g, s, c, out):
        wide_vectors()
        g, s, out = flat(g), flat(s), flat(out)
        for i in range(g.size):
            out[i] = f(g[i], s[i], c)

    @numba.njit(parallel=True, **CPU_OPTIONS)
    def parallel(g, s, c, out):
        g, s, out = g.ravel(), s.ravel(), out.ravel()  # as in _cpu_forward
        for i in numba.prange(g.size):
            wide_vectors()
            out[i] = f(g[i], s[i], c)

    def launch(g, s, out, c):
        """out = f(g, s, c): True, or False (nothing written) for arrays it cannot take."""

    @overload(launch, jit_options=CPU_OPTIONS)
    def _launch(g, s, out, c):
        if not (writable_like(out, g) and like(s, g)):
            return lambda g, s, out, c: False

        def impl(g, s, out, c):
            if (
                out.shape != g.shape
                or s.shape != g.shape
                or overlaps_partly(g, out)
                or overlaps_partly(s, out)
            ):
                return False
            k = in_dtype_of(g, c)
            if g.size >= PARALLEL_THRESHOLD:
                parallel(g, s, k, out)
            else:
                serial(g, s, k, out)
            return True

        return impl

    if constant:

        @cached(name)
        @numba.njit
        def backward(g, s, out, c):
            return launch(g, s, out, c)

    else:

        @cached(name)
        @numba.njit
        def backward(g, s, out):
            return launch(g, s, out, None)

    return backward


# --- CUDA kernels ---------------------------------------------------------------------


def _cuda_forward(name, f):
    @_cuda.kernel(f"activations.{name}", float_signatures("void({t}[::1], {t}, {t}[::1])"))
    def forward(x, c, out):
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            out[i] = f(x[i], c)

    return forward


def _cuda_backward(name, f):
    @_cuda.kernel(
        f"activations.{name}_backward",
        float_signatures("void({t}[::1], {t}[::1], {t}, {t}[::1])"),
    )
    def backward(g, s, c, out):
        for i in range(cuda.grid(1), g.size, cuda.gridsize(1)):
            out[i] = f(g[i], s[i], c)

    return backward


# --- launchers ------------------------------------------------------------------------


class Activation:
    """One elementwise activation on both targets.

    ``forward_cpu(x, out)`` / ``forward_cuda(x, out)`` and the matching
    ``backward_*(grad_out, saved, out)`` take arrays of one float dtype and
    the same size: flat and C-contiguous on CUDA; on the CPU of any shape, the
    inputs of any layout and ``out`` C-contiguous. ``out`` may be an input
    itself (the same view) but must not otherwise overlap one: each element
    is read before that element, and no other, is written. An activation
    with a ``constant`` (leaky_relu's alpha) takes it as a last argument ``c``, which
    the CPU launchers require and the CUDA ones default to 1. The CPU ones
    return True, or False having written nothing when the arrays do not fit
    that description (the caller then says what was wrong).
    ``cuda_forward`` replaces ``forward`` on the GPU where the CPU version uses vmath.
    """

    def __init__(self, name, forward, backward, cuda_forward=None, *, constant=False):
        self.name = name
        self.constant = constant
        # Compiled entry points themselves, not methods: the launch is on
        # every small op's path.
        self.forward_cpu = _cpu_forward(name, forward, constant)
        self.backward_cpu = _cpu_backward(name, backward, constant)
        self._forward_cuda = _cuda_forward(name, cuda_forward or forward)
        self._backward_cuda = _cuda_backward(name, backward)

    def forward_cuda(self, x, out, c=None):
        _same_size(self.name, x, out)
        if x.size:
            blocks, threads = grid_1d(x.size)
            self._forward_cuda[blocks, threads](x, _constant(x, c), out)

    def backward_cuda(self, grad_out, saved, out, c=None):
        _same_size(f"{self.name}_backward", grad_out, saved, out)
        if grad_out.size:
            blocks, threads = grid_1d(grad_out.size)
            self._backward_cuda[blocks, threads](grad_out, saved, _constant(grad_out, c), out)


def _same_size(op, *arrays):
    """ValueError unless the flat ``arrays`` hold as many elements as the first
    (the kernels index them all by the first's size)."""
    for a in arrays[1:]:
        if a.size != arrays[0].size:
            raise ValueError(f"{op}: expected arrays of {arrays[0].size} elements, got {a.size}")


def _constant(x, c):
    """c (1 when None) in x's dtype."""
    return x.dtype.type(1 if c is None else c)


step = Activation("step", step_scalar, step_backward_scalar)
sigmoid = Activation("sigmoid", sigmoid_scalar, sigmoid_backward_scalar, sigmoid_scalar_cuda)
tanh = Activation("tanh", tanh_scalar, tanh_backward_scalar, tanh_scalar_cuda)
relu = Activation("relu", relu_scalar, relu_backward_scalar)
leaky_relu = Activation("leaky_relu", leaky_relu_scalar, leaky_relu_backward_scalar, constant=True)

ACTIVATIONS = {a.name: a for a in (step, sigmoid, tanh, relu, leaky_relu)}


# --- table ----------------------------------------------------------------------------

KERNELS = {
    "step": OpKernels(step_ref, step.forward_cpu, step.forward_cuda),
    "sigmoid": OpKernels(sigmoid_ref, sigmoid.forward_cpu, sigmoid.forward_cuda),
    "tanh": OpKernels(tanh_ref, tanh.forward_cpu, tanh.forward_cuda),
    "relu": OpKernels(relu_ref, relu.forward_cpu, relu.forward_cuda),
    "leaky_relu": OpKernels(leaky_relu_ref, leaky_relu.forward_cpu, leaky_relu.forward_cuda),
    "step_backward": OpKernels(step_backward_ref, step.backward_cpu, step.backward_cuda),
    "sigmoid_backward": OpKernels(
        sigmoid_backward_ref, sigmoid.backward_cpu, sigmoid.backward_cuda
    ),
    "tanh_backward": OpKernels(tanh_backward_ref, tanh.backward_cpu, tanh.backward_cuda),
    "relu_backward": OpKernels(relu_backward_ref, relu.backward_cpu, relu.backward_cuda),
    "leaky_relu_backward": OpKernels(
        leaky_relu_backward_ref, leaky_relu.backward_cpu, leaky_relu.backward_cuda
    ),
}
