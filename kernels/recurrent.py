"""Recurrent cells (Elman RNN with tanh or relu, LSTM, GRU) over whole
sequences, forward and backward through time, on the CPU and CUDA.

The equations and gate orders are PyTorch's. For one layer and one direction,
with gates G (1 for the RNN, 4 for the LSTM: i, f, g, o, 3 for the GRU: r, z,
n) and hidden size H:

    xw[t] = x[t] @ w_ih.T + b_ih                      (recurrent_input: one product)
    hw    = h_prev @ w_hh.T + b_hh                    (per step, fused below)
    RNN:  h = act(xw + hw)
    LSTM: i, f, g, o = sig, sig, tanh, sig of (xw + hw); c = f c_prev + i g; h = o tanh(c)
    GRU:  r, z = sig(xw + hw) on their parts; n = tanh(xw_n + r hw_n);
          h = (1 - z) n + z h_prev

Arrays, all C-contiguous float32 or float64, time-major:

- ``xw`` (T, B, G*H), ``w_ih`` (G*H, I), ``w_hh`` (G*H, H), ``b_hh`` (G*H,).
- ``hs`` (T + 1, B, H), the hidden states in time order with the initial one
  at the end where the sequence starts: forward ``hs[0] = h0`` and
  ``hs[t + 1] = h_t``; ``reverse`` ``hs[T] = h0`` and ``hs[t] = h_t``. So the
  state before step t is ``hs[t]`` forward and ``hs[t + 1]`` reversed, and the
  states before every step are one contiguous block of ``hs``.
- ``cs`` (T + 1, B, H), the LSTM's cell states, laid out as ``hs``.
- ``gates`` (T, B, S*H), what the backward pass needs: the LSTM's activated
  i, f, g, o (S = 4), the GRU's r, z, n and hw_n (S = 4); none for the RNN.
- ``out`` (T, B, W): each step writes h_t to ``out[t, :, col:col + H]`` (so
  both directions of a bidirectional layer write one output).

Backward, ``dgx`` (T, B, G*H) is d loss / d (xw + hw) for each step, and
``dgh`` the same for hw (it differs from ``dgx`` for the GRU's n gate only:
d/d hw_n = r d/d xw_n; the RNN and LSTM pass ``dgx`` itself). The weight
gradients are then one product each over all steps (``recurrent_grads``).

The CPU kernels run a whole sequence in one call, each step one product
with w_hh, packed once per call (``packed``: BLAS would pack it again at
every step), accumulated into the pre-activations, then vectorised
branch-free loops over each batch row's hidden units (the gates, then the
state update). Every CPU kernel splits its rows into parts that run at once
on threads of their own (``row_parts``): the recurrences their batch rows,
which never meet; the input projection and the gradients all T * B rows,
each part's weight gradients summed after. On CUDA,
hidden sizes up to ``PERSISTENT_HIDDEN`` run a whole sequence in one launch:
one block per batch row keeps w_hh in shared memory and the state in
registers and shared memory across the steps. Larger hidden sizes launch one
kernel per step (forward: the product with w_hh fused with the gates;
backward: the product with the step before's gate gradients fused with this
step's gate derivatives), one thread per (batch row, hidden unit).

Sections: numpy references, scalar math, CPU kernels, CUDA kernels, launchers, table.
"""

from __future__ import annotations

import threading

import numba
import numpy as np

from . import _cuda, blas, packed
from . import activations as act
from ._cache import cached
from ._cpu import CPU_OPTIONS, flat, wide_vectors
from ._cuda import cuda, float_signatures
from ._table import OpKernels

#: Cell modes and their number of gates.
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}
#: Values per hidden unit and step kept in ``gates`` for the backward pass.
SAVED = {"rnn_tanh": 0, "rnn_relu": 0, "lstm": 4, "gru": 4}
_CELL = {"rnn_tanh": 0, "rnn_relu": 1, "lstm": 2, "gru": 3}
_RNN_TANH, _RNN_RELU, _LSTM, _GRU = 0, 1, 2, 3


# --- references (the executable spec) -------------------------------------------------


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def recurrent_input_ref(x, w_ih, b_ih):
    """xw (R, G*H) = x (R, I) @ w_ih.T + b_ih, in float64, returned in x's dtype."""
    f = np.float64
    return (x.astype(f) @ w_ih.astype(f).T + b_ih.astype(f)).astype(x.dtype)


def _times(T, reverse):
    """(t, index of the state before t, index of the state after t) in the
    order the steps run."""
    for s in range(T):
        t = T - 1 - s if reverse else s
        yield (t, t + 1, t) if reverse else (t, t, t + 1)


def recurrent_forward_ref(mode, xw, w_hh, b_hh, h0, c0, reverse=False):
    """(hs, cs, gates) of one direction of one layer, in float64 (see the
    module docstring for their layout); ``c0`` is ignored except by the LSTM."""
    f = np.float64
    xw, w_hh, b_hh = xw.astype(f), w_hh.astype(f), b_hh.astype(f)
    T, B, _ = xw.shape
    H = w_hh.shape[1]
    hs, cs = np.zeros((T + 1, B, H)), np.zeros((T + 1, B, H))
    gates = np.zeros((T, B, SAVED[mode] * H))
    start = T if reverse else 0
    hs[start], cs[start] = h0, c0
    for t, p, n in _times(T, reverse):
        hw = hs[p] @ w_hh.T + b_hh
        a = xw[t] + hw
        if mode == "rnn_tanh":
            hs[n] = np.tanh(a)
        elif mode == "rnn_relu":
            hs[n] = np.maximum(a, 0)
        elif mode == "lstm":
            i, fg, g, o = (a[:, k * H : (k + 1) * H] for k in range(4))
            i, fg, g, o = _sigmoid(i), _sigmoid(fg), np.tanh(g), _sigmoid(o)
            cs[n] = fg * cs[p] + i * g
            hs[n] = o * np.tanh(cs[n])
            gates[t] = np.concatenate([i, fg, g, o], axis=1)
        else:
            r, z = _sigmoid(a[:, :H]), _sigmoid(a[:, H : 2 * H])
            hn = hw[:, 2 * H :]
            nn = np.tanh(xw[t][:, 2 * H :] + r * hn)
            hs[n] = (1 - z) * nn + z * hs[p]
            gates[t] = np.concatenate([r, z, nn, hn], axis=1)
    return hs, cs, gates


def recurrent_backward_ref(mode, grad_out, dh_n, dc_n, w_hh, hs, cs, gates, reverse=False):
    """(dgx, dgh, dh0, dc0) in float64 for ``grad_out`` (T, B, H) = d loss / d
    (this direction's outputs) and dh_n, dc_n (B, H) = d loss / d (final states)."""
    f = np.float64
    g_out, w_hh, hs, cs, gates = (a.astype(f) for a in (grad_out, w_hh, hs, cs, gates))
    T, B, H = g_out.shape
    G = GATES[mode]
    dgx, dgh = np.zeros((T, B, G * H)), np.zeros((T, B, G * H))
    dh_c, dc_c = dh_n.astype(f).copy(), dc_n.astype(f).copy()
    for t, p, n in reversed(list(_times(T, reverse))):
        dh = g_out[t] + dh_c
        direct = 0.0
        if mode == "rnn_tanh":
            dgx[t] = dh * (1 - hs[n] ** 2)
        elif mode == "rnn_relu":
            dgx[t] = np.where(hs[n] > 0, dh, 0.0)
        elif mode == "lstm":
            i, fg, g, o = (gates[t][:, k * H : (k + 1) * H] for k in range(4))
            tc = np.tanh(cs[n])
            dc = dc_c + dh * o * (1 - tc**2)
            dgx[t] = np.concatenate(
                [dc * g * i * (1 - i), dc * cs[p] * fg * (1 - fg), dc * i * (1 - g**2),
                 dh * tc * o * (1 - o)], axis=1,
            )  # fmt: skip
            dc_c = dc * fg
        else:
            r, z, nn, hn = (gates[t][:, k * H : (k + 1) * H] for k in range(4))
            dan = dh * (1 - z) * (1 - nn**2)
            dar = dan * hn * r * (1 - r)
            daz = dh * (hs[p] - nn) * z * (1 - z)
            dgx[t] = np.concatenate([dar, daz, dan], axis=1)
            direct = dh * z
        dgh[t] = dgx[t]
        if mode == "gru":
            dgh[t][:, 2 * H :] *= r
        dh_c = dgh[t] @ w_hh + direct
    return dgx, dgh, dh_c, dc_c


def recurrent_grads_ref(x, hprev, dgx, dgh, w_ih):
    """(dw_ih, db_ih, dw_hh, db_hh, dx) in float64 from x (R, I), hprev (R, H)
    (the states before each step), dgx and dgh (R, G*H) and w_ih (G*H, I)."""
    f = np.float64
    x, hprev, dgx, dgh, w_ih = (a.astype(f) for a in (x, hprev, dgx, dgh, w_ih))
    return dgx.T @ x, dgx.sum(axis=0), dgh.T @ hprev, dgh.sum(axis=0), dgx @ w_ih


def swap_batch_time_ref(x):
    """x (A, B, F) -> (B, A, F), a C-contiguous copy (between batch-first and
    time-major layouts)."""
    return np.ascontiguousarray(x.swapaxes(0, 1))


def last_step_ref(x, time_axis=1):
    """The last step of x (B, T, F) (``time_axis`` 1) or (T, B, F) (0): (B, F)."""
    return np.ascontiguousarray(x[:, -1] if time_axis == 1 else x[-1])


def last_step_backward_ref(grad_out, T, time_axis=1):
    """d loss / d x of last_step for grad_out (B, F): zeros but at the last step."""
    B, F = grad_out.shape
    dx = np.zeros((B, T, F) if time_axis == 1 else (T, B, F), grad_out.dtype)
    if T:
        dx[(slice(None), -1) if time_axis == 1 else -1] = grad_out
    return dx


# --- scalar math of one hidden unit, for the CUDA kernels -----------------------------


def _cell_math(sigmoid, tanh):
    """(forward, backward) scalar functions of one hidden unit for a target's
    sigmoid and tanh (``activations``' scalar forms, taking (x, one))."""

    @numba.njit(inline="always")
    def forward(cell, a0, a1, a2, a3, hn, h_prev, c_prev, one):
        """(h, c, s0, s1, s2, s3): the new state and what backward keeps, from
        the pre-activations a0..a3 (xw + hw per gate; for the GRU a2 is xw_n
        alone and hn is hw_n)."""
        zero = one - one
        if cell == _RNN_TANH:
            h = tanh(a0, one)
            return h, zero, zero, zero, zero, zero
        if cell == _RNN_RELU:
            h = a0 if a0 > zero else zero
            return h, zero, zero, zero, zero, zero
        if cell == _LSTM:
            i, f, g, o = sigmoid(a0, one), sigmoid(a1, one), tanh(a2, one), sigmoid(a3, one)
            c = f * c_prev + i * g
            return o * tanh(c, one), c, i, f, g, o
        r, z = sigmoid(a0, one), sigmoid(a1, one)
        n = tanh(a2 + r * hn, one)
        return (one - z) * n + z * h_prev, zero, r, z, n, hn

    @numba.njit(inline="always")
    def backward(cell, dh, dc, h, c, c_prev, h_prev, s0, s1, s2, s3, one):
        """(d0, d1, d2, d3, dn_hidden, dc_prev, direct): d loss / d each gate's
        pre-activation (d0..d3), d loss / d hw_n (GRU), d loss / d c_prev
        (LSTM) and the GRU's direct d loss / d h_prev (z dh), for dh and dc =
        d loss / d (h, c) of this step."""
        zero = one - one
        if cell == _RNN_TANH:
            return dh * (one - h * h), zero, zero, zero, zero, zero, zero
        if cell == _RNN_RELU:
            return (dh if h > zero else zero), zero, zero, zero, zero, zero, zero
        if cell == _LSTM:
            i, f, g, o = s0, s1, s2, s3
            tc = tanh(c, one)
            dc = dc + dh * o * (one - tc * tc)
            return (
                dc * g * i * (one - i),
                dc * c_prev * f * (one - f),
                dc * i * (one - g * g),
                dh * tc * o * (one - o),
                zero,
                dc * f,
                zero,
            )
        r, z, n, hn = s0, s1, s2, s3
        dan = dh * (one - z) * (one - n * n)
        return (
            dan * hn * r * (one - r),
            dh * (h_prev - n) * z * (one - z),
            dan,
            zero,
            dan * r,
            zero,
            dh * z,
        )

    return forward, backward


_forward_cuda_math, _backward_cuda_math = _cell_math(act.sigmoid_scalar_cuda, act.tanh_scalar_cuda)


# --- CPU kernels ----------------------------------------------------------------------
# Per step, one packed product accumulates h_prev @ w_hh.T into the
# pre-activations (already holding xw + b_hh), then short branch-free loops
# over the hidden units of one batch row apply the gates and update the
# state. Each loop reads a few contiguous spans (a gate's H values of a row of
# (B, G*H) are contiguous) and writes one, so LLVM vectorises it (the exp and
# tanh are vmath's, through activations' scalar forms). The cell is a
# constant of each compiled kernel, so nothing is tested per element. The
# loops index flat views of the arrays, made once per call, with unsigned
# offsets: Numba adds no wraparound test to an unsigned index (the test would
# stop the vectorising), and no view is made per row.


@numba.njit(inline="always")
def _add_span(a, ia, b, ib, out, io, n):
    """out[io:io + n] = a[ia:ia + n] + b[ib:ib + n] (unsigned offsets)."""
    for j in range(n):
        out[io + j] = a[ia + j] + b[ib + j]


@numba.njit(inline="always")
def _copy_span(a, ia, out, io, n):
    for j in range(n):
        out[io + j] = a[ia + j]


@numba.njit(inline="always")
def _sigmoid_span(a, ia, out, io, n):
    one = a.dtype.type(1)
    for j in range(n):
        out[io + j] = act.sigmoid_scalar(a[ia + j], one)


@numba.njit(inline="always")
def _tanh_span(a, ia, out, io, n):
    one = a.dtype.type(1)
    for j in range(n):
        out[io + j] = act.tanh_scalar(a[ia + j], one)


def _forward_cpu_kernel(cell, gates):
    @cached(cell, gates)
    @numba.njit(nogil=True, **CPU_OPTIONS)
    def forward(xw, w_packed, b_hh, h0, c0, hs, cs, saved, out, col, reverse, r0, r1):
        """The whole sequence for batch rows r0 to r1: per step the
        pre-activations xw + b_hh, the product h_prev @ w_hh.T added to them
        (w_hh.T packed), then the gate passes."""
        wide_vectors()
        T, B, GH = xw.shape
        H = hs.shape[2]
        one = xw.dtype.type(1)
        zero = one - one
        start = T if reverse else 0
        hs[start, r0:r1] = h0[r0:r1]
        if cell == _LSTM:
            cs[start, r0:r1] = c0[r0:r1]
        # The pre-activations of a step: the LSTM's are its saved gates,
        # activated in place; the RNN's the new state, activated in place;
        # the GRU's (r, z, then hw_n alone) a scratch array.
        hw = np.empty((B if cell == _GRU else 0, GH), xw.dtype)
        u = np.uint64
        uB, uH, uG, u0, u1 = u(B), u(H), u(GH), u(r0), u(r1)
        H2, H3 = uH + uH, uH + uH + uH
        uS, uW, ucol = u(saved.shape[2]), u(out.shape[2]), u(col)
        split = H2 if cell == _GRU else uG  # columns of xw + b_hh; b_hh alone after
        X, BH, HS, CS, SV, OUT = flat(xw), flat(b_hh), flat(hs), flat(cs), flat(saved), flat(out)
        for s in range(T):
            t = T - 1 - s if reverse else s
            p = t + 1 if reverse else t
            n = t if reverse else t + 1
            if cell == _LSTM:
                a2 = saved[t]
            elif cell == _GRU:
                a2 = hw
            else:
                a2 = hs[n]
            A = flat(a2)
            ut, up, un = u(t), u(p), u(n)
            for b in range(u0, u1):
                ia, ix = b * uG, (ut * uB + b) * uG
                _add_span(X, ix, BH, u(0), A, ia, split)
                _copy_span(BH, split, A, ia + split, uG - split)
            packed.product(hs[p, r0:r1], w_packed, one, a2[r0:r1])
            for b in range(u0, u1):
                ia, ix = b * uG, (ut * uB + b) * uG
                ih, ip = (un * uB + b) * uH, (up * uB + b) * uH
                io = (ut * uB + b) * uW + ucol
                if cell == _RNN_TANH:
                    _tanh_span(A, ia, A, ia, uH)
                elif cell == _RNN_RELU:
                    for j in range(uH):
                        A[ia + j] = max(A[ia + j], zero)
                elif cell == _LSTM:
                    _sigmoid_span(A, ia, A, ia, H2)  # i, f
                    _tanh_span(A, ia + H2, A, ia + H2, uH)  # g
                    _sigmoid_span(A, ia + H3, A, ia + H3, uH)  # o
                    for j in range(uH):
                        CS[ih + j] = A[ia + uH + j] * CS[ip + j] + A[ia + j] * A[ia + H2 + j]
                    _tanh_span(CS, ih, HS, ih, uH)
                    for j in range(uH):
                        HS[ih + j] *= A[ia + H3 + j]
                else:
                    iv = (ut * uB + b) * uS  # saved r, z, n, hn
                    _sigmoid_span(A, ia, SV, iv, H2)
                    _copy_span(A, ia + H2, SV, iv + H3, uH)
                    for j in range(uH):
                        SV[iv + H2 + j] = X[ix + H2 + j] + SV[iv + j] * SV[iv + H3 + j]
                    _tanh_span(SV, iv + H2, SV, iv + H2, uH)
                    for j in range(uH):
                        n_j = SV[iv + H2 + j]
                        HS[ih + j] = n_j + SV[iv + uH + j] * (HS[ip + j] - n_j)
                _copy_span(HS, ih, OUT, io, uH)

    return forward


def _backward_cpu_kernel(cell, gates):
    @cached(cell, gates)
    @numba.njit(nogil=True, **CPU_OPTIONS)
    def backward(
        grad_out, col, dh_n, dc_n, w_packed, hs, cs, saved, dgx, dgh, dh0, dc0, reverse, r0, r1
    ):
        """The whole sequence backwards for batch rows r0 to r1: per step the
        gate derivatives, row by row, then d loss / d h_prev = dgh[t] @ w_hh
        (w_hh packed; added to the GRU's direct term z dh)."""
        wide_vectors()
        T, B, H = grad_out.shape[0], grad_out.shape[1], hs.shape[2]
        one = hs.dtype.type(1)
        zero = one - one
        dh_c = dh_n.copy()  # d loss / d h of the step, then the next step's
        dc_c = dc_n.copy()
        u = np.uint64
        uB, uH, uG, u0, u1 = u(B), u(H), u(dgx.shape[2]), u(r0), u(r1)
        H2, H3 = uH + uH, uH + uH + uH
        uS, uW, ucol = u(saved.shape[2]), u(grad_out.shape[2]), u(col)
        GO, HS, CS, SV = flat(grad_out), flat(hs), flat(cs), flat(saved)
        D, E, DH, DC = flat(dgx), flat(dgh), flat(dh_c), flat(dc_c)
        for s in range(T):
            t = s if reverse else T - 1 - s
            p = t + 1 if reverse else t
            n = t if reverse else t + 1
            ut, up, un = u(t), u(p), u(n)
            for b in range(u0, u1):
                ib = b * uH  # dh_c, dc_c
                ih, ip = (un * uB + b) * uH, (up * uB + b) * uH
                idg, iv = (ut * uB + b) * uG, (ut * uB + b) * uS
                _add_span(GO, (ut * uB + b) * uW + ucol, DH, ib, DH, ib, uH)  # dh
                if cell == _RNN_TANH:
                    for j in range(uH):
                        h = HS[ih + j]
                        D[idg + j] = DH[ib + j] * (one - h * h)
                elif cell == _RNN_RELU:
                    for j in range(uH):
                        D[idg + j] = DH[ib + j] if HS[ih + j] > zero else zero
                elif cell == _LSTM:
                    i_, f_, g_, o_ = iv, iv + uH, iv + H2, iv + H3  # saved i, f, g, o
                    di, df, dg, do = idg, idg + uH, idg + H2, idg + H3
                    _tanh_span(CS, ih, D, do, uH)  # tanh(c), until do is written below
                    for j in range(uH):
                        tc = D[do + j]
                        DC[ib + j] += DH[ib + j] * SV[o_ + j] * (one - tc * tc)
                    for j in range(uH):
                        o = SV[o_ + j]
                        D[do + j] = DH[ib + j] * D[do + j] * o * (one - o)
                    for j in range(uH):
                        i = SV[i_ + j]
                        D[di + j] = DC[ib + j] * SV[g_ + j] * i * (one - i)
                    for j in range(uH):
                        f = SV[f_ + j]
                        D[df + j] = DC[ib + j] * CS[ip + j] * f * (one - f)
                    for j in range(uH):
                        g = SV[g_ + j]
                        D[dg + j] = DC[ib + j] * SV[i_ + j] * (one - g * g)
                    for j in range(uH):
                        DC[ib + j] *= SV[f_ + j]
                else:
                    r_, z_, n_, hn_ = iv, iv + uH, iv + H2, iv + H3  # saved r, z, n, hn
                    dr, dz, dn = idg, idg + uH, idg + H2
                    for j in range(uH):
                        z, nn = SV[z_ + j], SV[n_ + j]
                        D[dn + j] = DH[ib + j] * (one - z) * (one - nn * nn)
                    for j in range(uH):
                        r = SV[r_ + j]
                        D[dr + j] = D[dn + j] * SV[hn_ + j] * r * (one - r)
                    for j in range(uH):
                        z = SV[z_ + j]
                        D[dz + j] = DH[ib + j] * (HS[ip + j] - SV[n_ + j]) * z * (one - z)
                    _copy_span(D, idg, E, idg, H2)
                    for j in range(uH):
                        E[dn + j] = D[dn + j] * SV[r_ + j]
                    for j in range(uH):
                        DH[ib + j] *= SV[z_ + j]  # the direct term, to which the product adds
            beta = one if cell == _GRU else zero
            packed.product(dgh[t, r0:r1], w_packed, beta, dh_c[r0:r1])
        dh0[r0:r1] = dh_c[r0:r1]
        if cell == _LSTM:
            dc0[r0:r1] = dc_c[r0:r1]

    return backward


#: A CPU recurrence splits its batch rows into parts that run at once, one
#: thread each (the rows of a batch never meet), up to Numba's thread count
#: (``numba.get_num_threads()``), when each part gets at least this many rows
#: (``row_parts``)...
ROW_PART_MIN_ROWS = 8
#: ... and its products hold at least this many multiply-adds (starting and
#: joining a thread costs about 60 us, the time of about 3 million of them on
#: one core).
ROW_PARTS_MIN_MACS = 1 << 24


def row_parts(rows, macs):
    """How many parts a CPU recurrence over ``rows`` batch rows, whose
    products with w_hh hold ``macs`` multiply-adds, splits into."""
    if macs < ROW_PARTS_MIN_MACS:
        return 1
    return max(1, min(numba.get_num_threads(), rows // ROW_PART_MIN_ROWS))


def _in_parts(run, rows, parts):
    """run(p, r0, r1) for the ``parts`` row ranges p of [0, rows) at once:
    each but the last on a thread of its own, the last on the calling thread.
    Returns when all are done (raising the first error)."""
    bounds = [rows * p // parts for p in range(parts + 1)]
    errors = []

    def part(p):
        try:
            run(p, bounds[p], bounds[p + 1])
        except BaseException as error:  # raised in the caller below
            errors.append(error)

    threads = [threading.Thread(target=part, args=(p,)) for p in range(parts - 1)]
    for thread in threads:
        thread.start()
    part(parts - 1)
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def _in_row_parts(kernel, rows, macs, *args):
    """kernel(*args, r0, r1) over the rows [0, rows) in ``row_parts(rows,
    macs)`` parts at once (``kernel`` releases the GIL). Parts that call BLAS
    each make calls of their own, so the BLAS should run on one thread
    meanwhile."""
    _in_parts(lambda p, r0, r1: kernel(*args, r0, r1), rows, row_parts(rows, macs))


_FORWARD_CPU = {mode: _forward_cpu_kernel(_CELL[mode], GATES[mode]) for mode in GATES}
_BACKWARD_CPU = {mode: _backward_cpu_kernel(_CELL[mode], GATES[mode]) for mode in GATES}


# --- CUDA kernels ---------------------------------------------------------------------

#: Largest hidden size the whole-sequence kernels take: each block keeps w_hh
#: (up to 4 * 32 x 32 values, 32 KiB in float64, within the 48 KiB of static
#: shared memory a block may have) in shared memory.
PERSISTENT_HIDDEN = 32
#: Threads per block of the per-step kernels (one per (batch row, hidden unit)).
STEP_THREADS = 128

_SEQUENCE_SIGNATURES = float_signatures(
    "void({t}[:, :, ::1], {t}[:, ::1], {t}[::1], {t}[:, ::1], {t}[:, ::1], {t}[:, :, ::1],"
    " {t}[:, :, ::1], {t}[:, :, ::1], {t}[:, :, ::1], int64, boolean)"
)
_STEP_SIGNATURES = float_signatures(
    "void({t}[:, :, ::1], {t}[:, ::1], {t}[::1], {t}[:, ::1], {t}[:, ::1], {t}[:, :, ::1],"
    " {t}[:, :, ::1], {t}[:, :, ::1], {t}[:, :, ::1], int64, boolean, int64)"
)
_BACKWARD_SEQUENCE_SIGNATURES = float_signatures(
    "void({t}[:, :, ::1], int64, {t}[:, ::1], {t}[:, ::1], {t}[:, ::1], {t}[:, :, ::1],"
    " {t}[:, :, ::1], {t}[:, :, ::1], {t}[:, :, ::1], {t}[:, :, ::1], {t}[:, ::1], {t}[:, ::1],"
    " boolean)"
)
_BACKWARD_STEP_SIGNATURES = float_signatures(
    "void({t}[:, :, ::1], int64, {t}[:, ::1], {t}[:, ::1], {t}[:, ::1], {t}[:, :, ::1],"
    " {t}[:, :, ::1], {t}[:, :, ::1], {t}[:, :, ::1], {t}[:, :, ::1], {t}[:, ::1], {t}[:, ::1],"
    " boolean, int64, {t}[:, ::1], {t}[:, ::1])"
)


@_cuda.device_function
def _preactivations(cell, gates, xw, t, b, j, H, hw0, hw1, hw2, hw3):
    """(a0, a1, a2, a3, hn) for unit j from xw and hw per gate (hw with b_hh)."""
    zero = hw0 - hw0
    a0 = xw[t, b, j] + hw0
    a1 = a2 = a3 = hn = zero
    if gates > 1:
        a1 = xw[t, b, H + j] + hw1
        a2 = xw[t, b, 2 * H + j]
        hn = hw2
        if cell == _LSTM:
            a2 += hn
            a3 = xw[t, b, 3 * H + j] + hw3
    return a0, a1, a2, a3, hn


@_cuda.device_function
def _store_forward(cell, H, t, b, j, n, col, h, c, s0, s1, s2, s3, hs, cs, saved, out):
    hs[n, b, j] = h
    out[t, b, col + j] = h
    if cell >= _LSTM:
        saved[t, b, j] = s0
        saved[t, b, H + j] = s1
        saved[t, b, 2 * H + j] = s2
        saved[t, b, 3 * H + j] = s3
    if cell == _LSTM:
        cs[n, b, j] = c


@_cuda.device_function
def _unit_backward(cell, gates, t, b, j, n, p, H, dh, dc, hs, cs, saved, dgx, dgh, one):
    """Gate derivatives of unit j at step t written to dgx and dgh; returns
    (d loss / d c_prev, the direct d loss / d h_prev, d loss / d hw per gate)."""
    zero = one - one
    s0 = s1 = s2 = s3 = c = c_prev = zero
    if cell >= _LSTM:
        s0, s1 = saved[t, b, j], saved[t, b, H + j]
        s2, s3 = saved[t, b, 2 * H + j], saved[t, b, 3 * H + j]
    if cell == _LSTM:
        c, c_prev = cs[n, b, j], cs[p, b, j]
    d0, d1, d2, d3, dhn, dcp, direct = _backward_cuda_math(
        cell, dh, dc, hs[n, b, j], c, c_prev, hs[p, b, j], s0, s1, s2, s3, one
    )
    dgx[t, b, j] = d0
    if gates > 1:
        dgx[t, b, H + j] = d1
        dgx[t, b, 2 * H + j] = d2
    if cell == _LSTM:
        dgx[t, b, 3 * H + j] = d3
    if cell == _GRU:
        dgh[t, b, j] = d0
        dgh[t, b, H + j] = d1
        dgh[t, b, 2 * H + j] = dhn
        d2 = dhn
    return dcp, direct, d0, d1, d2, d3


def _forward_sequence_cuda_kernel(mode, cell, gates):
    rows = gates * PERSISTENT_HIDDEN

    @_cuda.kernel(f"recurrent.{mode}_forward_sequence", _SEQUENCE_SIGNATURES)
    def forward(xw, w_hh, b_hh, h0, c0, hs, cs, saved, out, col, reverse):
        """One block per batch row, gates * H threads (one per row of w_hh),
        the whole sequence: w_hh.T and the state stay in shared memory."""
        T = xw.shape[0]
        H = hs.shape[2]
        GH = gates * H
        b = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        w = cuda.shared.array((PERSISTENT_HIDDEN, rows), xw.dtype)
        h = cuda.shared.array(PERSISTENT_HIDDEN, xw.dtype)
        hw = cuda.shared.array(rows, xw.dtype)
        one = xw.dtype.type(1)
        zero = one - one
        for e in range(tid, GH * H, cuda.blockDim.x):
            r, k = e // H, e % H
            w[k, r] = w_hh[r, k]
        bias = b_hh[tid] if tid < GH else zero
        start = T if reverse else 0
        c_reg = zero
        if tid < H:
            h[tid] = h0[b, tid]
            hs[start, b, tid] = h0[b, tid]
            if cell == _LSTM:
                c_reg = c0[b, tid]
                cs[start, b, tid] = c_reg
        cuda.syncthreads()
        for s in range(T):
            t = T - 1 - s if reverse else s
            n = t if reverse else t + 1
            if tid < GH:
                acc = bias
                for k in range(H):
                    acc += w[k, tid] * h[k]
                hw[tid] = acc
            cuda.syncthreads()
            if tid < H:
                hw3 = hw[3 * H + tid] if gates > 3 else zero
                hw1 = hw[H + tid] if gates > 1 else zero
                hw2 = hw[2 * H + tid] if gates > 1 else zero
                a0, a1, a2, a3, hn = _preactivations(
                    cell, gates, xw, t, b, tid, H, hw[tid], hw1, hw2, hw3
                )
                h_new, c_reg, s0, s1, s2, s3 = _forward_cuda_math(
                    cell, a0, a1, a2, a3, hn, h[tid], c_reg, one
                )
                _store_forward(cell, H, t, b, tid, n, col, h_new, c_reg, s0, s1, s2, s3,
                               hs, cs, saved, out)  # fmt: skip
                h[tid] = h_new
            cuda.syncthreads()

    return forward


def _forward_step_cuda_kernel(mode, cell, gates):
    @_cuda.kernel(f"recurrent.{mode}_forward_step", _STEP_SIGNATURES)
    def forward(xw, w_hh, b_hh, h0, c0, hs, cs, saved, out, col, reverse, s):
        """Step s of the sequence, one thread per (batch row, hidden unit):
        its gates' rows of w_hh times h_prev (read from global memory), fused
        with the gates and the state update."""
        T, B = xw.shape[0], xw.shape[1]
        H = hs.shape[2]
        e = cuda.grid(1)
        if e >= B * H:
            return
        b, j = e // H, e % H
        t = T - 1 - s if reverse else s
        p = t + 1 if reverse else t
        n = t if reverse else t + 1
        one = xw.dtype.type(1)
        zero = one - one
        hw0 = b_hh[j]
        hw1 = b_hh[H + j] if gates > 1 else zero
        hw2 = b_hh[2 * H + j] if gates > 1 else zero
        hw3 = b_hh[3 * H + j] if gates > 3 else zero
        for k in range(H):
            hk = h0[b, k] if s == 0 else hs[p, b, k]
            hw0 += w_hh[j, k] * hk
            if gates > 1:
                hw1 += w_hh[H + j, k] * hk
                hw2 += w_hh[2 * H + j, k] * hk
            if gates > 3:
                hw3 += w_hh[3 * H + j, k] * hk
        h_prev = h0[b, j] if s == 0 else hs[p, b, j]
        c_prev = zero
        if cell == _LSTM:
            c_prev = c0[b, j] if s == 0 else cs[p, b, j]
        if s == 0:
            hs[p, b, j] = h_prev
            if cell == _LSTM:
                cs[p, b, j] = c_prev
        a0, a1, a2, a3, hn = _preactivations(cell, gates, xw, t, b, j, H, hw0, hw1, hw2, hw3)
        h, c, s0, s1, s2, s3 = _forward_cuda_math(cell, a0, a1, a2, a3, hn, h_prev, c_prev, one)
        _store_forward(cell, H, t, b, j, n, col, h, c, s0, s1, s2, s3, hs, cs, saved, out)

    return forward


def _backward_sequence_cuda_kernel(mode, cell, gates):
    rows = gates * PERSISTENT_HIDDEN

    @_cuda.kernel(f"recurrent.{mode}_backward_sequence", _BACKWARD_SEQUENCE_SIGNATURES)
    def backward(grad_out, col, dh_n, dc_n, w_hh, hs, cs, saved, dgx, dgh, dh0, dc0, reverse):
        """One block per batch row, the whole sequence backwards: thread j < H
        takes unit j's gate derivatives, then d loss / d h_prev[j] from the
        step's gate gradients (shared) and w_hh (shared)."""
        T = grad_out.shape[0]
        H = hs.shape[2]
        GH = gates * H
        b = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        w = cuda.shared.array((rows, PERSISTENT_HIDDEN), hs.dtype)
        dg = cuda.shared.array(rows, hs.dtype)
        for e in range(tid, GH * H, cuda.blockDim.x):
            r, k = e // H, e % H
            w[r, k] = w_hh[r, k]
        one = hs.dtype.type(1)
        zero = one - one
        dh_c = dc_c = zero
        if tid < H:
            dh_c = dh_n[b, tid]
            if cell == _LSTM:
                dc_c = dc_n[b, tid]
        cuda.syncthreads()
        for s in range(T):
            t = s if reverse else T - 1 - s
            p = t + 1 if reverse else t
            n = t if reverse else t + 1
            direct = zero
            if tid < H:
                dh = grad_out[t, b, col + tid] + dh_c
                dc_c, direct, d0, d1, d2, d3 = _unit_backward(
                    cell, gates, t, b, tid, n, p, H, dh, dc_c, hs, cs, saved, dgx, dgh, one
                )
                dg[tid] = d0
                if gates > 1:
                    dg[H + tid] = d1
                    dg[2 * H + tid] = d2
                if gates > 3:
                    dg[3 * H + tid] = d3
            cuda.syncthreads()
            if tid < H:
                acc = direct
                for r in range(GH):
                    acc += dg[r] * w[r, tid]
                dh_c = acc
            cuda.syncthreads()
        if tid < H:
            dh0[b, tid] = dh_c
            if cell == _LSTM:
                dc0[b, tid] = dc_c

    return backward


def _backward_step_cuda_kernel(mode, cell, gates):
    @_cuda.kernel(f"recurrent.{mode}_backward_step", _BACKWARD_STEP_SIGNATURES)
    def backward(
        grad_out, col, dh_n, dc_n, w_hh, hs, cs, saved, dgx, dgh, dh0, dc0, reverse, s,
        direct, dc_c,
    ):  # fmt: skip
        """Backward step s (s = T finishes), one thread per (batch row, hidden
        unit j): d loss / d h at this step from the step before's gate
        gradients times column j of w_hh (plus the direct term), then unit
        j's gate derivatives. ``direct`` and ``dc_c`` (B, H) carry each
        unit's own terms from one step to the next."""
        T = grad_out.shape[0]
        B, H = dh0.shape
        e = cuda.grid(1)
        if e >= B * H:
            return
        b, j = e // H, e % H
        GH = gates * H
        one = hs.dtype.type(1)
        if s == 0:
            dh_c = dh_n[b, j]
            if cell == _LSTM:
                dc_c[b, j] = dc_n[b, j]
        else:
            last = s - 1 if reverse else T - s  # the step handled by launch s - 1
            dh_c = direct[b, j]
            for r in range(GH):
                dh_c += dgh[last, b, r] * w_hh[r, j]
        if s == T:
            dh0[b, j] = dh_c
            if cell == _LSTM:
                dc0[b, j] = dc_c[b, j]
            return
        t = s if reverse else T - 1 - s
        p = t + 1 if reverse else t
        n = t if reverse else t + 1
        dh = grad_out[t, b, col + j] + dh_c
        dcp, d, _, _, _, _ = _unit_backward(
            cell, gates, t, b, j, n, p, H, dh, dc_c[b, j], hs, cs, saved, dgx, dgh, one
        )
        direct[b, j] = d
        if cell == _LSTM:
            dc_c[b, j] = dcp

    return backward


_FORWARD_SEQUENCE_CUDA = {m: _forward_sequence_cuda_kernel(m, _CELL[m], GATES[m]) for m in GATES}
_FORWARD_STEP_CUDA = {m: _forward_step_cuda_kernel(m, _CELL[m], GATES[m]) for m in GATES}
_BACKWARD_SEQUENCE_CUDA = {m: _backward_sequence_cuda_kernel(m, _CELL[m], GATES[m]) for m in GATES}
_BACKWARD_STEP_CUDA = {m: _backward_step_cuda_kernel(m, _CELL[m], GATES[m]) for m in GATES}

#: Side of the matmul kernel's square tiles (TILE x TILE threads per block).
TILE = 16


def _matmul_cuda_kernel(name, trans_a, trans_b):
    @_cuda.kernel(
        f"recurrent.{name}",
        float_signatures("void({t}[:, ::1], {t}[:, ::1], {t}[::1], {t}, {t}[:, ::1])"),
    )
    def matmul(a, b, bias, beta, c):
        """c (M, N) = op(a) @ op(b) + bias + beta * c, op transposing when
        asked (bias of size 0: none; beta 0 ignores c): TILE x TILE tiles of
        both operands staged in shared memory, guarded at the edges."""
        m, n = c.shape
        k_total = a.shape[0] if trans_a else a.shape[1]
        tile_a = cuda.shared.array((TILE, TILE), a.dtype)
        tile_b = cuda.shared.array((TILE, TILE), a.dtype)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        i = cuda.blockIdx.y * TILE + ty
        j = cuda.blockIdx.x * TILE + tx
        zero = a.dtype.type(0)
        acc = zero
        for k0 in range(0, k_total, TILE):
            ka, kb = k0 + tx, k0 + ty
            va = vb = zero
            if i < m and ka < k_total:
                va = a[ka, i] if trans_a else a[i, ka]
            if j < n and kb < k_total:
                vb = b[j, kb] if trans_b else b[kb, j]
            tile_a[ty, tx] = va
            tile_b[ty, tx] = vb
            cuda.syncthreads()
            for k in range(TILE):
                acc += tile_a[ty, k] * tile_b[k, tx]
            cuda.syncthreads()
        if i < m and j < n:
            if bias.shape[0]:
                acc += bias[j]
            if beta != zero:
                acc += beta * c[i, j]
            c[i, j] = acc

    return matmul


_MATMUL_NT = _matmul_cuda_kernel("matmul_nt", False, True)  # x @ w_ih.T
_MATMUL_TN = _matmul_cuda_kernel("matmul_tn", True, False)  # dg.T @ x
_MATMUL_NN = _matmul_cuda_kernel("matmul_nn", False, False)  # dg @ w_ih


@_cuda.kernel("recurrent.column_sums", float_signatures("void({t}[:, ::1], {t}, {t}[::1])"))
def _column_sums_kernel(g, beta, out):
    """out[j] = sum of column j of g + beta * out[j], one thread per column."""
    for j in range(cuda.grid(1), g.shape[1], cuda.gridsize(1)):
        total = g.dtype.type(0)
        for i in range(g.shape[0]):
            total += g[i, j]
        out[j] = total + beta * out[j] if beta != 0 else total


@_cuda.kernel("recurrent.swap_batch_time", float_signatures("void({t}[:, :, ::1], {t}[:, :, ::1])"))
def _swap_kernel(x, out):
    """out[i, j, f] = x[j, i, f], one thread per output element (grid-stride)."""
    A, B, F = out.shape
    for e in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        i, rest = e // (B * F), e % (B * F)
        j, f = rest // F, rest % F
        out[i, j, f] = x[j, i, f]


@_cuda.kernel(
    "recurrent.last_step", float_signatures("void({t}[:, :, ::1], int64, {t}[:, ::1], boolean)")
)
def _last_step_kernel(x, time_axis, y, backward):
    """y (B, F) = the last step of x, or with ``backward`` x = zeros but the
    last step, which is y; one thread per element of x (grid-stride)."""
    n1, F = x.shape[1], x.shape[2]
    last = (x.shape[1] if time_axis == 1 else x.shape[0]) - 1
    for e in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        i, rest = e // (n1 * F), e % (n1 * F)
        j, f = rest // F, rest % F
        t, b = (j, i) if time_axis == 1 else (i, j)
        if backward:
            x[i, j, f] = y[b, f] if t == last else x.dtype.type(0)
        elif t == last:
            y[b, f] = x[i, j, f]


# --- launchers ------------------------------------------------------------------------


def _check_mode(op, mode):
    if mode not in GATES:
        raise ValueError(f"{op}: expected mode in {tuple(GATES)}, got {mode!r}")


def _expect(op, name, a, shape):
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{op}: expected {name} of shape {tuple(shape)}, got {tuple(a.shape)}")


def _check_dtypes(op, **arrays):
    """All the arrays (None: absent) of one dtype, float32 or float64: the
    kernels and BLAS read them so, and a product of mixed dtypes would read
    past an array's end."""
    given = {name: a for name, a in arrays.items() if a is not None}
    first, a = next(iter(given.items()))
    dtype = np.dtype(a.dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: expected float32 or float64 arrays, got a {dtype} {first}")
    for name, a in given.items():
        if np.dtype(a.dtype) != dtype:
            raise TypeError(f"{op}: expected {name} of {first}'s dtype {dtype}, got {a.dtype}")


def _check_forward(mode, xw, w_hh, b_hh, h0, c0, hs, cs, saved, out, col):
    op = "recurrent_forward"
    _check_mode(op, mode)
    _check_dtypes(op, xw=xw, w_hh=w_hh, b_hh=b_hh, h0=h0, c0=c0, hs=hs, cs=cs, gates=saved,
                  out=out)  # fmt: skip
    if xw.ndim != 3 or w_hh.ndim != 2:
        raise ValueError(f"{op}: expected xw (T, B, G*H) and w_hh (G*H, H), got "
                         f"{tuple(xw.shape)} and {tuple(w_hh.shape)}")  # fmt: skip
    T, B, GH = xw.shape
    H = w_hh.shape[1]
    _expect(op, "w_hh", w_hh, (GATES[mode] * H, H))
    _expect(op, "xw", xw, (T, B, GATES[mode] * H))
    _expect(op, "b_hh", b_hh, (GH,))
    _expect(op, "h0", h0, (B, H))
    _expect(op, "hs", hs, (T + 1, B, H))
    if mode == "lstm":
        _expect(op, "c0", c0, (B, H))
        _expect(op, "cs", cs, (T + 1, B, H))
    _expect(op, "gates", saved, (T, B, SAVED[mode] * H))
    if out.ndim != 3 or tuple(out.shape[:2]) != (T, B) or not 0 <= col <= out.shape[2] - H:
        raise ValueError(f"{op}: expected out (T, B, >= col + H) = ({T}, {B}, >= {col + H}), "
                         f"got {tuple(out.shape)}")  # fmt: skip


def recurrent_forward_cpu(mode, xw, w_hh, b_hh, h0, c0, hs, cs, gates, out, col=0, reverse=False):
    """Run one direction of one layer over the sequence (see the module
    docstring): fills hs, cs (LSTM), gates and out[:, :, col:col + H] from xw
    (the input projection with b_ih), w_hh, b_hh and the initial states h0,
    c0 (B, H). ``cs`` and ``c0`` are only read for the LSTM, ``gates`` only
    written for the LSTM and GRU (shape (T, B, 0) for the RNN)."""
    _check_forward(mode, xw, w_hh, b_hh, h0, c0, hs, cs, gates, out, col)
    T, B, GH = xw.shape
    _in_row_parts(
        _FORWARD_CPU[mode], B, T * B * GH * hs.shape[2],
        xw, packed.pack(w_hh, True), b_hh, h0, c0, hs, cs, gates, out, col, reverse,
    )  # fmt: skip


def _check_backward(mode, grad_out, col, dh_n, dc_n, w_hh, hs, cs, saved, dgx, dgh, dh0, dc0):
    op = "recurrent_backward"
    _check_mode(op, mode)
    _check_dtypes(op, grad_out=grad_out, dh_n=dh_n, dc_n=dc_n, w_hh=w_hh, hs=hs, cs=cs,
                  gates=saved, dgx=dgx, dgh=dgh, dh0=dh0, dc0=dc0)  # fmt: skip
    Tp, B, H = hs.shape
    T = Tp - 1
    _expect(op, "w_hh", w_hh, (GATES[mode] * H, H))
    if (
        grad_out.ndim != 3
        or tuple(grad_out.shape[:2]) != (T, B)
        or not (0 <= col <= grad_out.shape[2] - H)
    ):
        raise ValueError(f"{op}: expected grad_out (T, B, >= col + H) = ({T}, {B}, >= {col + H}),"
                         f" got {tuple(grad_out.shape)}")  # fmt: skip
    for name, a in (("dh_n", dh_n), ("dh0", dh0)):
        _expect(op, name, a, (B, H))
    if mode == "lstm":
        for name, a in (("dc_n", dc_n), ("dc0", dc0)):
            _expect(op, name, a, (B, H))
        _expect(op, "cs", cs, (T + 1, B, H))
    _expect(op, "gates", saved, (T, B, SAVED[mode] * H))
    for name, a in (("dgx", dgx), ("dgh", dgh)):
        _expect(op, name, a, (T, B, GATES[mode] * H))


def recurrent_backward_cpu(
    mode, grad_out, col, dh_n, dc_n, w_hh, hs, cs, gates, dgx, dgh, dh0, dc0, reverse=False
):
    """Backward through time for one direction of one layer: from grad_out
    (T, B, W) (this direction's columns start at ``col``) and dh_n, dc_n (B,
    H) = d loss / d final states, fills dgx, dgh (T, B, G*H) (``dgh`` may be
    ``dgx`` itself except for the GRU) and dh0, dc0 (B, H) = d loss / d
    initial states. ``dc_n`` and ``dc0`` are only used by the LSTM."""
    _check_backward(mode, grad_out, col, dh_n, dc_n, w_hh, hs, cs, gates, dgx, dgh, dh0, dc0)
    T, B, GH = dgx.shape
    _in_row_parts(
        _BACKWARD_CPU[mode], B, T * B * GH * hs.shape[2],
        grad_out, col, dh_n, dc_n, packed.pack(w_hh, False), hs, cs, gates, dgx, dgh, dh0, dc0,
        reverse,
    )  # fmt: skip


def _check_input(x, w_ih, b_ih, out):
    op = "recurrent_input"
    _check_dtypes(op, x=x, w_ih=w_ih, b_ih=b_ih, out=out)
    if x.ndim != 2 or w_ih.ndim != 2 or x.shape[1] != w_ih.shape[1]:
        raise ValueError(f"{op}: expected x (R, I) and w_ih (G*H, I), got "
                         f"{tuple(x.shape)} and {tuple(w_ih.shape)}")  # fmt: skip
    if b_ih is not None:
        _expect(op, "b_ih", b_ih, (w_ih.shape[0],))
    _expect(op, "out", out, (x.shape[0], w_ih.shape[0]))


@cached()
@numba.njit(nogil=True, **CPU_OPTIONS)
def _input_rows(x, w_ih, b_ih, out, r0, r1):
    """out[r0:r1] = x[r0:r1] @ w_ih.T + b_ih (b_ih of length 0: no bias)."""
    one = out.dtype.type(1)
    if b_ih.size:
        for r in range(r0, r1):
            out[r] = b_ih
    blas.gemm(False, True, one, x[r0:r1], w_ih, one if b_ih.size else one - one, out[r0:r1])


def recurrent_input_cpu(x, w_ih, b_ih, out):
    """out (R, G*H) = x (R, I) @ w_ih.T + b_ih (None: no bias): BLAS products
    over the rows in ``row_parts`` parts at once."""
    _check_input(x, w_ih, b_ih, out)
    bias = out[0, :0] if b_ih is None else b_ih
    R, GH = out.shape
    _in_row_parts(_input_rows, R, R * GH * x.shape[1], x, w_ih, bias, out)
    return out


def _check_grads(x, hprev, dgx, dgh, w_ih, dw_ih, db_ih, dw_hh, db_hh, dx):
    op = "recurrent_grads"
    _check_dtypes(op, x=x, hprev=hprev, dgx=dgx, dgh=dgh, w_ih=w_ih, dw_ih=dw_ih, db_ih=db_ih,
                  dw_hh=dw_hh, db_hh=db_hh, dx=dx)  # fmt: skip
    R, GH = dgx.shape
    _expect(op, "dgh", dgh, (R, GH))
    _expect(op, "x", x, (R, w_ih.shape[1]))
    _expect(op, "w_ih", w_ih, (GH, x.shape[1]))
    _expect(op, "hprev", hprev, (R, hprev.shape[1]))
    _expect(op, "dw_ih", dw_ih, tuple(w_ih.shape))
    _expect(op, "dw_hh", dw_hh, (GH, hprev.shape[1]))
    for name, a in (("db_ih", db_ih), ("db_hh", db_hh)):
        if a is not None:
            _expect(op, name, a, (GH,))
    if dx is not None:
        _expect(op, "dx", dx, tuple(x.shape))


def grads_macs(rows, gates_h, inputs, hidden, input_grad):
    """The multiply-adds of ``recurrent_grads``' products over ``rows`` rows
    (the weight gradients, and dx with ``input_grad``)."""
    return rows * gates_h * (inputs + hidden + (inputs if input_grad else 0))


@cached()
@numba.njit(nogil=True, **CPU_OPTIONS)
def _grads_rows(
    x, hprev, dgx, dgh, w_ih, beta, dw_ih, dw_hh, sums_x, sums_h, dx, beta_dx, r0, r1
):  # fmt: skip
    """What rows r0 to r1 give: dw_ih = dgx.T @ x (+ beta dw_ih), dw_hh =
    dgh.T @ hprev (+ beta dw_hh), the column sums of dgx and dgh (into
    the float64 sums_x, sums_h; skipped when of length 0) and dx[r0:r1] = dgx @ w_ih (+
    beta_dx dx; skipped when dx has no rows)."""
    one = dw_ih.dtype.type(1)
    blas.gemm(True, False, one, dgx[r0:r1], x[r0:r1], beta, dw_ih)
    blas.gemm(True, False, one, dgh[r0:r1], hprev[r0:r1], beta, dw_hh)
    for sums, d in ((sums_x, dgx), (sums_h, dgh)):
        if sums.size:
            sums[:] = 0
            for r in range(r0, r1):
                for j in range(sums.size):
                    sums[j] += d[r, j]
    if dx.shape[0]:
        blas.gemm(False, False, one, dgx[r0:r1], w_ih, beta_dx, dx[r0:r1])


def recurrent_grads_cpu(
    x, hprev, dgx, dgh, w_ih, dw_ih, db_ih, dw_hh, db_hh, dx, accumulate=False, accumulate_dx=False
):
    """The parameter and input gradients of one direction of one layer, each
    one product over all steps: dw_ih = dgx.T @ x, db_ih = column sums of dgx,
    dw_hh = dgh.T @ hprev, db_hh = column sums of dgh (added to the arrays
    with ``accumulate``), dx = dgx @ w_ih (added with ``accumulate_dx``).
    x (R, I), hprev (R, H) (the state before each step), dgx and dgh (R, G*H),
    R = T * B rows in time order. db_ih, db_hh and dx may be None (skipped).

    The rows run in ``row_parts`` parts at once, each with products of its
    own; the first part adds into dw_ih and dw_hh, the others into arrays of
    their own, added after (so the sums' order depends on the parts)."""
    _check_grads(x, hprev, dgx, dgh, w_ih, dw_ih, db_ih, dw_hh, db_hh, dx)
    R, GH = dgx.shape
    dtype = dw_ih.dtype
    one = dtype.type(1)
    beta = one if accumulate else one - one
    parts = row_parts(R, grads_macs(R, GH, x.shape[1], hprev.shape[1], dx is not None))
    # dgh is dgx itself but for the GRU: one pass of column sums then serves both.
    same = dgh.ctypes.data == dgx.ctypes.data and dgh.strides == dgx.strides
    want_x = db_ih is not None or (same and db_hh is not None)
    want_h = db_hh is not None and not same
    # Column sums of up to T * B rows, accumulated one row after another in
    # float64: float32 columns of 6400 rows sum to within 4e-8 of exact,
    # where numpy's float32 sums along axis 0 came within 4e-6.
    sums_x = np.zeros((parts, GH if want_x else 0), np.float64)
    sums_h = np.zeros((parts, GH if want_h else 0), np.float64)
    ih = [dw_ih] + [np.empty_like(dw_ih) for _ in range(parts - 1)]
    hh = [dw_hh] + [np.empty_like(dw_hh) for _ in range(parts - 1)]
    no_dx = np.empty((0, x.shape[1]), dtype)
    beta_dx = one if accumulate_dx else one - one

    def part(p, r0, r1):
        _grads_rows(
            x, hprev, dgx, dgh, w_ih, beta if p == 0 else one - one, ih[p], hh[p],
            sums_x[p], sums_h[p], no_dx if dx is None else dx, beta_dx, r0, r1,
        )  # fmt: skip

    _in_parts(part, R, parts)
    for p in range(1, parts):
        dw_ih += ih[p]
        dw_hh += hh[p]
    totals = {"x": sums_x.sum(axis=0), "h": sums_h.sum(axis=0)}
    for db, sums in ((db_ih, totals["x"]), (db_hh, totals["x" if same else "h"])):
        if db is not None:
            if accumulate:
                db += sums
            else:
                db[...] = sums


def recurrent_forward_cuda(mode, xw, w_hh, b_hh, h0, c0, hs, cs, gates, out, col=0, reverse=False):
    """recurrent_forward_cpu on device arrays: one launch for the whole
    sequence when H <= PERSISTENT_HIDDEN, else one per step."""
    _check_forward(mode, xw, w_hh, b_hh, h0, c0, hs, cs, gates, out, col)
    T, B, _ = xw.shape
    H = hs.shape[2]
    if B == 0 or H == 0:
        return
    if T == 0:
        start = T if reverse else 0
        hs[start].copy_to_device(h0)
        if mode == "lstm":
            cs[start].copy_to_device(c0)
        return
    args = (xw, w_hh, b_hh, h0, c0, hs, cs, gates, out, col, reverse)
    if H <= PERSISTENT_HIDDEN:
        threads = -(-GATES[mode] * H // _cuda.WARP_SIZE) * _cuda.WARP_SIZE
        _FORWARD_SEQUENCE_CUDA[mode][B, threads](*args)
        return
    blocks = -(-B * H // STEP_THREADS)
    for s in range(T):
        _FORWARD_STEP_CUDA[mode][blocks, STEP_THREADS](*args, s)


def recurrent_backward_cuda(
    mode, grad_out, col, dh_n, dc_n, w_hh, hs, cs, gates, dgx, dgh, dh0, dc0, reverse=False
):
    """recurrent_backward_cpu on device arrays: one launch for the whole
    sequence when H <= PERSISTENT_HIDDEN, else T + 1 launches."""
    _check_backward(mode, grad_out, col, dh_n, dc_n, w_hh, hs, cs, gates, dgx, dgh, dh0, dc0)
    T, B, H = grad_out.shape[0], hs.shape[1], hs.shape[2]
    if B == 0 or H == 0:
        return
    args = (grad_out, col, dh_n, dc_n, w_hh, hs, cs, gates, dgx, dgh, dh0, dc0, reverse)
    if H <= PERSISTENT_HIDDEN:
        threads = -(-GATES[mode] * H // _cuda.WARP_SIZE) * _cuda.WARP_SIZE
        _BACKWARD_SEQUENCE_CUDA[mode][B, threads](*args)
        return
    direct = _cuda.scratch("recurrent.direct", B * H, hs.dtype).reshape(B, H)
    dc_c = _cuda.scratch("recurrent.dc", B * H, hs.dtype).reshape(B, H)
    blocks = -(-B * H // STEP_THREADS)
    for s in range(T + 1):
        _BACKWARD_STEP_CUDA[mode][blocks, STEP_THREADS](*args, s, direct, dc_c)


def _launch_matmul(kernel, a, b, bias, beta, c):
    m, n = c.shape
    if m and n:
        kernel[(-(-n // TILE), -(-m // TILE)), (TILE, TILE)](a, b, bias, c.dtype.type(beta), c)


def _no_bias(dtype):
    return _cuda.scratch("recurrent.no_bias", 0, dtype)


def recurrent_input_cuda(x, w_ih, b_ih, out):
    """recurrent_input_cpu on device arrays: one tiled product with the bias."""
    _check_input(x, w_ih, b_ih, out)
    bias = _no_bias(out.dtype) if b_ih is None else b_ih
    _launch_matmul(_MATMUL_NT, x, w_ih, bias, 0, out)
    return out


def _column_sums(g, beta, out):
    if out.shape[0]:
        blocks, threads = _cuda.grid_1d(out.shape[0])
        _column_sums_kernel[blocks, threads](g, out.dtype.type(beta), out)


def recurrent_grads_cuda(
    x, hprev, dgx, dgh, w_ih, dw_ih, db_ih, dw_hh, db_hh, dx, accumulate=False, accumulate_dx=False
):
    """recurrent_grads_cpu on device arrays (same arguments)."""
    _check_grads(x, hprev, dgx, dgh, w_ih, dw_ih, db_ih, dw_hh, db_hh, dx)
    beta = 1 if accumulate else 0
    none = _no_bias(dw_ih.dtype)
    _launch_matmul(_MATMUL_TN, dgx, x, none, beta, dw_ih)
    _launch_matmul(_MATMUL_TN, dgh, hprev, none, beta, dw_hh)
    if db_ih is not None:
        _column_sums(dgx, beta, db_ih)
    if db_hh is not None:
        _column_sums(dgh, beta, db_hh)
    if dx is not None:
        _launch_matmul(_MATMUL_NN, dgx, w_ih, none, 1 if accumulate_dx else 0, dx)


def _check_swap(x, out):
    if x.ndim != 3 or tuple(out.shape) != (x.shape[1], x.shape[0], x.shape[2]):
        raise ValueError(
            f"swap_batch_time: expected x (A, B, F) and out (B, A, F), got "
            f"{tuple(x.shape)} and {tuple(out.shape)}"
        )


def swap_batch_time_cpu(x, out):
    """out (B, A, F) = x (A, B, F) with its first two axes swapped. Returns out."""
    _check_swap(x, out)
    np.copyto(out, x.swapaxes(0, 1))
    return out


def swap_batch_time_cuda(x, out):
    """swap_batch_time_cpu on device arrays."""
    _check_swap(x, out)
    if out.size:
        blocks, threads = _cuda.grid_1d(out.size)
        _swap_kernel[blocks, threads](x, out)
    return out


def _check_last_step(op, x, y, time_axis):
    if time_axis not in (0, 1):
        raise ValueError(f"{op}: expected time_axis 0 or 1, got {time_axis!r}")
    if x.ndim != 3 or x.shape[time_axis] == 0:
        raise ValueError(f"{op}: expected a 3-D x with at least one step, got {tuple(x.shape)}")
    _expect(op, "y", y, (x.shape[1 - time_axis], x.shape[2]))


def last_step_cpu(x, out, time_axis=1):
    """out (B, F) = the last step of x (B, T, F) (``time_axis`` 1) or (T, B, F) (0)."""
    _check_last_step("last_step", x, out, time_axis)
    np.copyto(out, x[:, -1] if time_axis == 1 else x[-1])
    return out


def last_step_backward_cpu(grad_out, dx, time_axis=1):
    """dx (x's shape) = zeros but the last step, which is grad_out (B, F)."""
    _check_last_step("last_step_backward", dx, grad_out, time_axis)
    dx[...] = 0
    dx[(slice(None), -1) if time_axis == 1 else -1] = grad_out
    return dx


def last_step_cuda(x, out, time_axis=1):
    """last_step_cpu on device arrays."""
    _check_last_step("last_step", x, out, time_axis)
    if x.size:
        blocks, threads = _cuda.grid_1d(x.size)
        _last_step_kernel[blocks, threads](x, time_axis, out, False)
    return out


def last_step_backward_cuda(grad_out, dx, time_axis=1):
    """last_step_backward_cpu on device arrays."""
    _check_last_step("last_step_backward", dx, grad_out, time_axis)
    if dx.size:
        blocks, threads = _cuda.grid_1d(dx.size)
        _last_step_kernel[blocks, threads](dx, time_axis, grad_out, True)
    return dx


# --- table ----------------------------------------------------------------------------

KERNELS = {
    "recurrent_input": OpKernels(recurrent_input_ref, recurrent_input_cpu, recurrent_input_cuda),
    "recurrent_forward": OpKernels(
        recurrent_forward_ref, recurrent_forward_cpu, recurrent_forward_cuda
    ),
    "recurrent_backward": OpKernels(
        recurrent_backward_ref, recurrent_backward_cpu, recurrent_backward_cuda
    ),
    "recurrent_grads": OpKernels(recurrent_grads_ref, recurrent_grads_cpu, recurrent_grads_cuda),
    "swap_batch_time": OpKernels(swap_batch_time_ref, swap_batch_time_cpu, swap_batch_time_cuda),
    "last_step": OpKernels(last_step_ref, last_step_cpu, last_step_cuda),
    "last_step_backward": OpKernels(
        last_step_backward_ref, last_step_backward_cpu, last_step_backward_cuda
    ),
}
