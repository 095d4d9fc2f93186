"""Restricted Boltzmann machines: contrastive divergence, free energy, pseudo-likelihood.

Shapes: W (H, V), the weights as scikit-learn's ``components_`` (hidden units
by visible units); b (V,) visible and c (H,) hidden biases; data v (n, V);
hidden states h (m, H). Arrays are C-contiguous float32 or float64, one dtype
throughout. Visible units are Bernoulli (p(v=1|h) = sigmoid(h @ W + b)) or
Gaussian with unit variance (v | h ~ N(h @ W + b, 1)); hidden units are
Bernoulli (p(h=1|v) = sigmoid(v @ W.T + c)).

One CD-k update of a batch v (n rows) with a chain of m hidden rows:

- positive phase: hp = sigmoid(v @ W.T + c);
- chain start: the persistent chain h (m = its rows, PCD), or a sample of hp
  (m = n, CD-k);
- k Gibbs steps: v- ~ p(v | h), hn = sigmoid(v- @ W.T + c), and h ~ hn
  except after the last step of CD-k (PCD samples there too: the new chain);
- gradients: dW = hp.T @ v / n - hn.T @ v- / m, db = mean(v) - mean(v-),
  dc = mean(hp) - mean(hn);
- update with momentum and weight decay (on W only): vel = momentum * vel +
  lr * (grad - decay * W), then W += vel; biases alike without decay.

Random numbers come from the Philox stream of ``rng`` at ``(seed, offset)``,
so the same seed gives the same samples on CPU and CUDA. A draw of ``count``
values uses words ``offset .. offset + count - 1`` (Gaussian values take two
words each, ``2 * count``) and moves ``offset`` on to the next multiple of 4.
Value ``i`` of a draw uses word ``offset + i`` (``offset + 2i`` and
``offset + 2i + 1`` for a Gaussian: Box-Muller from the two uniforms), with
row-major ``i`` over the sampled matrix. One update draws, in order: (CD-k
only) the chain start (n, H); then per Gibbs step the visible sample (m, V)
and, where the chain is sampled, the hidden sample (m, H).

Sections: numpy references, scalar and row math, CPU kernels, CUDA kernels,
launchers.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import uint64

from . import _cuda
from . import activations as act
from ._cache import cached
from ._cpu import CPU_OPTIONS, wide_vectors
from ._cuda import cuda, float_signatures
from ._table import OpKernels
from .blas import gemm
from .rng import philox_block, uint32_to_unit_float32, uniform_ref

#: Activations and sampling of the conditional kernels.
IDENTITY, SIGMOID = 0, 1
NO_SAMPLE, BERNOULLI, GAUSSIAN = 0, 1, 2

# --- references (the executable spec) -------------------------------------------------


def aligned_words(words):
    """Words a draw of ``words`` words moves the offset by: rounded up to 4."""
    return (int(words) + 3) // 4 * 4


def cd_words(n, m, n_visible, n_hidden, k, persistent, gaussian):
    """Stream words one CD-k update of ``n`` rows with an ``m``-row chain draws."""
    visible = aligned_words(m * n_visible * (2 if gaussian else 1))
    hidden = aligned_words(m * n_hidden)
    samples = k if persistent else k - 1
    return (0 if persistent else aligned_words(n * n_hidden)) + k * visible + samples * hidden


def draw_ref(shape, seed, offset, gaussian=False):
    """Uniform float32 values for sampling a matrix of ``shape`` at ``offset``:
    (array of shape ``shape``, or ``shape + (2,)`` for a Gaussian; next offset)."""
    count = int(np.prod(shape)) * (2 if gaussian else 1)
    u = uniform_ref(count, seed, offset, np.float32)
    return u.reshape(tuple(shape) + ((2,) if gaussian else ())), offset + aligned_words(count)


def _sigmoid64(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _softplus64(z):
    return np.logaddexp(0.0, z)


def sample_ref(mean, u, sampling):
    """Samples from uniforms ``u`` (from :func:`draw_ref`): Bernoulli, 1 where
    u < mean; Gaussian, mean + sqrt(-2 log(1 - u0)) cos(2 pi u1)."""
    if sampling == BERNOULLI:
        return (u < mean).astype(np.float64)
    u = u.astype(np.float64)
    return mean + np.sqrt(-2.0 * np.log1p(-u[..., 0])) * np.cos(2.0 * np.pi * u[..., 1])


def hidden_ref(v, W, c):
    """p(h=1 | v) = sigmoid(v @ W.T + c), in float64: (n, V) -> (n, H)."""
    return _sigmoid64(v.astype(np.float64) @ W.astype(np.float64).T + c)


def visible_ref(h, W, b, gaussian=False):
    """The mean of p(v | h): sigmoid(h @ W + b), or h @ W + b for Gaussian units."""
    z = h.astype(np.float64) @ W.astype(np.float64) + b
    return z if gaussian else _sigmoid64(z)


def conditional_ref(a, W, bias, hidden, activation, scale=1.0):
    """``scale * activation(a @ W.T + bias)`` (``hidden``: (n, V) -> (n, H)) or of
    ``a @ W + bias`` ((n, H) -> (n, V)), in float64, before any sampling
    (:func:`sample_ref`); ``activation`` SIGMOID or IDENTITY."""
    z = a.astype(np.float64) @ (W.T if hidden else W).astype(np.float64) + bias
    return scale * (_sigmoid64(z) if activation == SIGMOID else z)


def cd_gradient_ref(v, W, b, c, chain, seed, offset, k=1, persistent=True, gaussian=False):
    """The CD-k (``persistent`` False) or PCD-k gradient for batch ``v`` (n, V).

    ``chain`` (m, H) is the persistent chain (ignored by CD-k). Returns
    ``(dW, db, dc, new_chain, next_offset)`` in float64; ``new_chain`` is the
    sampled chain for PCD and ``chain`` unchanged for CD-k.
    """
    n = v.shape[0]
    v = v.astype(np.float64)
    hp = hidden_ref(v, W, c)
    if persistent:
        h = chain.astype(np.float64)
    else:
        u, offset = draw_ref(hp.shape, seed, offset)
        h = sample_ref(hp, u, BERNOULLI)
    m = h.shape[0]
    sampling = GAUSSIAN if gaussian else BERNOULLI
    for step in range(k):
        u, offset = draw_ref((m, W.shape[1]), seed, offset, gaussian)
        vn = sample_ref(visible_ref(h, W, b, gaussian), u, sampling)
        hn = hidden_ref(vn, W, c)
        if persistent or step < k - 1:
            u, offset = draw_ref(hn.shape, seed, offset)
            h = sample_ref(hn, u, BERNOULLI)
    dW = hp.T @ v / n - hn.T @ vn / m
    db = v.mean(axis=0) - vn.mean(axis=0)
    dc = hp.mean(axis=0) - hn.mean(axis=0)
    return dW, db, dc, (h if persistent else chain), offset


def update_ref(params, velocities, grads, lr, momentum=0.0, decay=0.0):
    """New (params, velocities) after one step: vel = momentum * vel + lr *
    (grad - decay * param), param += vel; the decay applies to the first
    parameter (the weights) only. Float64."""
    new_params, new_velocities = [], []
    for i, (p, vel, g) in enumerate(zip(params, velocities, grads, strict=True)):
        p = p.astype(np.float64)
        vel = momentum * vel.astype(np.float64) + lr * (g - (decay * p if i == 0 else 0.0))
        new_params.append(p + vel)
        new_velocities.append(vel)
    return new_params, new_velocities


def free_energy_ref(v, W, b, c, gaussian=False):
    """F(v) = -v . b - sum softplus(v @ W.T + c) (Bernoulli visible units), or
    |v - b|^2 / 2 - sum softplus(...) (Gaussian); (n, V) -> (n,), float64."""
    v = v.astype(np.float64)
    hidden = _softplus64(v @ W.astype(np.float64).T + c).sum(axis=1)
    visible = 0.5 * ((v - b) ** 2).sum(axis=1) if gaussian else -(v @ b.astype(np.float64))
    return visible - hidden


def pseudo_likelihood_ref(v, W, b, c, index):
    """scikit-learn's pseudo-likelihood: with v' = v but unit ``index[i]`` of
    row i replaced by 1 - v, -V * softplus(F(v) - F(v')); (n, V) -> (n,)."""
    flipped = v.astype(np.float64).copy()
    rows = np.arange(v.shape[0])
    flipped[rows, index] = 1.0 - flipped[rows, index]
    delta = free_energy_ref(flipped, W, b, c) - free_energy_ref(v, W, b, c)
    return -v.shape[1] * _softplus64(-delta)


# --- scalar and row math, shared by the CPU and CUDA kernels --------------------------


@numba.njit(inline="always")
def softplus(x, one):
    """log(1 + exp(x)) without overflow."""
    return max(x, one - one) + math.log1p(math.exp(-abs(x)))


@numba.njit(inline="always")
def cos_2pi(u, one, two_pi):
    """cos(2 pi u) for u in [0, 1), in u's dtype: reduced by symmetry to
    cos(t) with t in [0, pi/2], then its Taylor series to t**20 (error below
    1e-16). Plain arithmetic: libdevice's cosf would pull a float64 slow path
    for huge arguments into float32 kernels."""
    half = one / (one + one)
    y = abs(u if u < half else u - one)
    sign = one
    if y > half * half:
        y = half - y
        sign = -one
    t = two_pi * y
    t2 = t * t
    term = one
    total = one
    k = one - one
    for _ in range(10):
        k += one + one
        term = -term * t2 / ((k - one) * k)
        total += term
    return sign * total


@numba.njit(inline="always")
def box_muller(u0, u1, one, two_pi):
    """A standard normal value from two uniforms in [0, 1) (Box-Muller);
    ``one`` and ``two_pi`` carry the dtype."""
    return math.sqrt(-(one + one) * math.log(one - u0)) * cos_2pi(u1, one, two_pi)


def _cpu_and_cuda(py_func):
    """(CPU, CUDA) forms of row math written once: ``numba.njit(inline="always")``
    for the CPU kernels, and ``_cuda.device_function`` for the CUDA kernels,
    which under the simulator is ``py_func`` itself (the simulator's device
    arrays are nothing Numba's CPU target can take)."""
    return numba.njit(inline="always")(py_func), _cuda.device_function(py_func)


def free_energy_row(v, z, b, i, gaussian, one):
    """F(v[i]) from z[i] = v[i] @ W.T + c (see free_energy_ref): the visible
    units' term, less the softplus sum over the hidden units; ``one`` carries
    the dtype."""
    half = one / (one + one)
    visible = one - one
    for j in range(v.shape[1]):
        if gaussian:
            d = v[i, j] - b[j]
            visible += half * d * d
        else:
            visible -= v[i, j] * b[j]
    hidden = one - one
    for j in range(z.shape[1]):
        hidden += softplus(z[i, j], one)
    return visible - hidden


def pseudo_likelihood_row(v, z, W, b, i, f, one):
    """The pseudo-likelihood of v[i] with unit ``f`` flipped, from z[i] = v[i]
    @ W.T + c (see pseudo_likelihood_ref). F(v') - F(v) is summed term by
    term, each hidden unit's softplus change at once: the difference of two
    whole free energies would cancel most of their digits."""
    d = one - (v[i, f] + v[i, f])
    delta = -d * b[f]  # F(v') - F(v)
    for j in range(z.shape[1]):
        delta -= softplus(z[i, j] + d * W[j, f], one) - softplus(z[i, j], one)
    return -z.dtype.type(v.shape[1]) * softplus(-delta, one)


_free_energy_row_cpu, _free_energy_row_cuda = _cpu_and_cuda(free_energy_row)
_pseudo_likelihood_row_cpu, _pseudo_likelihood_row_cuda = _cpu_and_cuda(pseudo_likelihood_row)


# --- CPU kernels ----------------------------------------------------------------------
# The epoch runs a chunk of batches inside one compiled function: at batch size
# 10 a call from Python would cost more than the batch's work. Its matrix
# products go to numpy's own BLAS (``blas.gemm``): alpha and beta fold the
# learning rate and the momentum into the weight-gradient product. Between
# products: fused flat passes.

_philox_block_cpu = numba.njit(forceinline=True)(philox_block.py_func)


_TWO_PI = 2.0 * math.pi


@cached()
@numba.njit(nogil=True, **CPU_OPTIONS)
def _draw_cpu(u, seed, offset):
    """Fill ``u`` (float32, 1-D) with the draw at ``offset`` (a multiple of 4);
    return the offset after it."""
    first = uint64(offset) // uint64(4)
    full = u.size // 4
    for t in range(full):
        w0, w1, w2, w3 = _philox_block_cpu(seed, first + uint64(t))
        u[4 * t] = uint32_to_unit_float32(w0)
        u[4 * t + 1] = uint32_to_unit_float32(w1)
        u[4 * t + 2] = uint32_to_unit_float32(w2)
        u[4 * t + 3] = uint32_to_unit_float32(w3)
    rest = u.size - 4 * full
    if rest:
        w0, w1, w2, _ = _philox_block_cpu(seed, first + uint64(full))
        u[4 * full] = uint32_to_unit_float32(w0)
        if rest > 1:
            u[4 * full + 1] = uint32_to_unit_float32(w1)
        if rest > 2:
            u[4 * full + 2] = uint32_to_unit_float32(w2)
    return uint64(offset) + uint64(4 * ((u.size + 3) // 4))


def _epilogue_kernel(activation, store, sampling):
    """An epilogue compiled for one (activation, store, sampling). With the
    choices fixed, and no two arguments that may overlap (LLVM's overlap check
    would fail for an in-place call and pick its scalar loop), LLVM vectorises
    the loop, far faster than one testing the choices per element. The loop
    runs over whole tiles of rows, not row by row, so that a row length that
    is no multiple of the vector width leaves no scalar remainder in every
    row."""

    @cached(activation, store, sampling)
    @numba.njit(**CPU_OPTIONS)
    def epilogue(z, bias, scale, samples, u):
        """x = activation(z + bias) over flat arrays, in place: ``bias`` is
        the bias repeated over whole rows (a tile), applied tile by tile; z =
        scale * x when ``store``, and samples drawn from x with the uniforms
        ``u`` (see the module docstring) into ``samples``, or into z when not
        ``store``."""
        wide_vectors()
        one = z.dtype.type(1)
        zero = one - one
        two_pi = z.dtype.type(_TWO_PI)
        tile = bias.size
        words = 2 if sampling == GAUSSIAN else 1
        for start in range(0, z.size, tile):
            stop = min(start + tile, z.size)
            zt, st = z[start:stop], samples[start:stop] if store else z[:0]
            ut = u[words * start : words * stop] if sampling != NO_SAMPLE else u[:0]
            for j in range(zt.size):
                x = zt[j] + bias[j]
                if activation == SIGMOID:
                    x = act.sigmoid_scalar(x, one)
                draw = x
                if sampling == BERNOULLI:
                    draw = one if ut[j] < x else zero
                elif sampling == GAUSSIAN:
                    draw = x + box_muller(ut[2 * j], ut[2 * j + 1], one, two_pi)
                if store:
                    zt[j] = scale * x
                    if sampling != NO_SAMPLE:
                        st[j] = draw
                else:
                    zt[j] = draw

    return epilogue


#: (activation, store, sampling) -> epilogue(z, bias, scale, samples, u).
_EPILOGUE_CPU = {
    (activation, store, sampling): _epilogue_kernel(activation, store, sampling)
    for activation in (IDENTITY, SIGMOID)
    for store in (False, True)
    for sampling in (NO_SAMPLE, BERNOULLI, GAUSSIAN)
}
_HIDDEN_STATS = _EPILOGUE_CPU[SIGMOID, True, NO_SAMPLE]
_HIDDEN_STATS_SAMPLE = _EPILOGUE_CPU[SIGMOID, True, BERNOULLI]
_VISIBLE_BERNOULLI = _EPILOGUE_CPU[SIGMOID, False, BERNOULLI]
_VISIBLE_GAUSSIAN = _EPILOGUE_CPU[IDENTITY, False, GAUSSIAN]

#: Epochs of at least this many batches work on the transposed weights (see
#: ``CPUEpoch``).
TRANSPOSED_MIN_BATCHES = 8

#: Batches per compiled call of the CPU epoch (``_cd_batches``), their uniforms
#: drawn before the call: enough that the call from Python costs little beside
#: its batches, few enough that a chunk's uniforms stay small.
DRAW_CHUNK = 64


#: A bias tile for the epilogue holds at least this many values (whole rows)
#: when it is made once per call.
_TILE_VALUES = 1024
#: The epoch refreshes its tiles after every batch, so they are kept short:
#: the fewest whole rows that make a multiple of this many values (the widest
#: vector), so that the epilogue's vector loop leaves no remainder.
_TILE_ALIGN = 16


def _bias_tile(bias, rows):
    """``bias`` repeated over ``rows`` rows, or fewer when that already holds
    ``_TILE_VALUES`` values: the epilogue's tile."""
    return np.tile(bias, max(1, min(rows, -(-_TILE_VALUES // max(1, bias.size)))))


def _tile_rows(cols):
    """The fewest rows of ``cols`` values that make a multiple of _TILE_ALIGN."""
    return _TILE_ALIGN // math.gcd(cols, _TILE_ALIGN)


@cached()
@numba.njit(**CPU_OPTIONS)
def _fill_tile(bias, tile):
    """tile (a whole number of rows, flat) = bias in every row."""
    cols = bias.size
    for r in range(tile.size // cols):
        row = tile[r * cols : (r + 1) * cols]
        for j in range(cols):
            row[j] = bias[j]


@numba.njit(**CPU_OPTIONS)
def _bias_step_cpu(bias, velocity, grad, lr, momentum, tile):
    """velocity = momentum * velocity + lr * grad; bias += velocity; then
    ``tile`` (the bias repeated over whole rows) refreshed."""
    wide_vectors()
    for j in range(bias.size):
        d = momentum * velocity[j] + lr * grad[j]
        velocity[j] = d
        bias[j] += d
    _fill_tile(bias, tile)


@numba.njit(**CPU_OPTIONS)
def _copy_flat(src, dst):
    """dst = src, 1-D: a batch's rows copied as one flat run, where a 2-D
    slice assignment's shape checks and per-row strides cost more than the
    copy of a small batch."""
    for e in range(src.size):
        dst[e] = src[e]


@numba.njit(**CPU_OPTIONS)
def _column_sums(a, scale, out):
    """out += scale * the column sums of a (rows, cols), row after row; four
    rows per pass over ``out`` (the same sums, a quarter of its loads and
    stores)."""
    wide_vectors()
    rows = a.shape[0]
    full = rows - rows % 4
    for r in range(0, full, 4):
        a0, a1, a2, a3 = a[r], a[r + 1], a[r + 2], a[r + 3]
        for j in range(out.size):
            out[j] = out[j] + scale * a0[j] + scale * a1[j] + scale * a2[j] + scale * a3[j]
    for r in range(full, rows):
        row = a[r]
        for j in range(row.size):
            out[j] += scale * row[j]


@numba.njit(**CPU_OPTIONS)
def _weight_step_cpu(WT, vWT, S, T, lr, momentum, decay, keep_velocity):
    """vWT = momentum * vWT + lr * (S.T @ T - decay * WT); WT += vWT, with
    S.T @ T one BLAS product whose alpha and beta apply lr and the momentum
    (WT is W.T with S, T the hidden statistics and visible states, or W with
    them swapped). Without momentum and decay, and unless ``keep_velocity``,
    the product adds lr * S.T @ T to WT directly and leaves vWT alone (a step
    that needs no velocity)."""
    if momentum == 0 and decay == 0 and not keep_velocity:
        gemm(True, False, lr, S, T, lr - lr + 1, WT)
        return
    w, v = WT.reshape(WT.size), vWT.reshape(vWT.size)
    beta = momentum
    if decay != 0:
        for e in range(w.size):
            v[e] = momentum * v[e] - lr * decay * w[e]
        beta = momentum - momentum + 1
    gemm(True, False, lr, S, T, beta, vWT)
    for e in range(w.size):
        w[e] += v[e]


@cached()
@numba.njit(nogil=True, **CPU_OPTIONS)
def _cd_batches(
    first, stop, u, base, X, bounds, WT, vWT, b, c, vb, vc, chain, hs, T, S, gb, gc, ct, bt,
    seed, offset, lr, momentum, decay, k, persistent, gaussian, transposed,
):  # fmt: skip
    """Batches ``first`` to ``stop - 1`` of ``cd_epoch_cpu``, their uniforms
    drawn already: ``u`` holds the stream words from ``base`` on."""
    n_hidden, n_visible = c.size, b.size
    dtype = T.dtype
    one = dtype.type(1)
    zero = one - one
    words = 2 if gaussian else 1
    t_flat, s_flat, h_flat, x_flat = (
        T.reshape(T.size),
        S.reshape(S.size),
        hs.reshape(hs.size),
        X.reshape(X.size),
    )
    for t in range(first, stop):
        n = bounds[t + 1] - bounds[t]
        m = chain.shape[0] if persistent else n
        inv_n, inv_m = one / dtype.type(n), one / dtype.type(m)
        Tp, Tn, Sp, Sn, h = T[:n], T[n : n + m], S[:n], S[n : n + m], hs[:m]
        # Flat views as slices of flat views made once (a reshape per batch
        # costs more here).
        tp, tn = t_flat[: n * n_hidden], t_flat[n * n_hidden : (n + m) * n_hidden]
        sn, hf = s_flat[n * n_visible : (n + m) * n_visible], h_flat[: m * n_hidden]
        _copy_flat(
            x_flat[bounds[t] * n_visible : bounds[t + 1] * n_visible], s_flat[: n * n_visible]
        )
        if not persistent:  # the chain starts from a sample of the positive phase
            gemm(False, not transposed, one, Sp, WT, zero, Tp)
            draw = u[offset - base : offset - base + n * n_hidden]
            offset += uint64((n * n_hidden + 3) // 4 * 4)
            _HIDDEN_STATS_SAMPLE(tp, ct, inv_n, hf, draw)
        for step in range(k):
            gemm(False, transposed, one, h, WT, zero, Sn)
            draw = u[offset - base : offset - base + m * n_visible * words]
            offset += uint64((m * n_visible * words + 3) // 4 * 4)
            if gaussian:
                _VISIBLE_GAUSSIAN(sn, bt, one, sn, draw)
            else:
                _VISIBLE_BERNOULLI(sn, bt, one, sn, draw)
            if persistent and step == 0:
                # PCD: the positive phase needs nothing from the chain, so its
                # product and the first step's are one BLAS call over n + m
                # rows, which costs less than two small ones.
                gemm(False, not transposed, one, S[: n + m], WT, zero, T[: n + m])
                _HIDDEN_STATS(tp, ct, inv_n, hf, u[:0])
            else:
                gemm(False, not transposed, one, Sn, WT, zero, Tn)
            scale = -inv_m if step == k - 1 else one
            if persistent or step < k - 1:
                draw = u[offset - base : offset - base + m * n_hidden]
                offset += uint64((m * n_hidden + 3) // 4 * 4)
                _HIDDEN_STATS_SAMPLE(tn, ct, scale, hf, draw)
            else:
                _HIDDEN_STATS(tn, ct, scale, hf, draw)
        gc[:] = zero
        gb[:] = zero
        _column_sums(T[: n + m], one, gc)
        _column_sums(Sp, inv_n, gb)
        _column_sums(Sn, -inv_m, gb)
        last = t == bounds.size - 2  # the velocity after the epoch is the last step's
        Sa, Ta = S[: n + m], T[: n + m]
        if transposed:
            _weight_step_cpu(WT, vWT, Sa, Ta, lr, momentum, decay, last)
        else:
            _weight_step_cpu(WT, vWT, Ta, Sa, lr, momentum, decay, last)
        _bias_step_cpu(b, vb, gb, lr, momentum, bt)
        _bias_step_cpu(c, vc, gc, lr, momentum, ct)
    return offset


@cached()
@numba.njit(**CPU_OPTIONS)
def _epoch_plan(bounds, chunk, m_chain, n_visible, n_hidden, k, persistent, words, offset):
    """(starts, rows, longest): the stream offsets at which each run of
    ``chunk`` batches starts drawing, from ``offset`` on, and the offset
    after the last (uint64, runs + 1 of them; see ``cd_words``); the most
    rows in a batch; the most words a run draws."""
    n_batches = bounds.size - 1
    runs = (n_batches + chunk - 1) // chunk
    total = np.zeros(runs, np.int64)
    rows = 0
    for t in range(n_batches):
        n = bounds[t + 1] - bounds[t]
        rows = max(rows, n)
        m = m_chain if persistent else n
        visible = (m * n_visible * words + 3) // 4 * 4
        hidden = (m * n_hidden + 3) // 4 * 4
        start = 0 if persistent else (n * n_hidden + 3) // 4 * 4
        total[t // chunk] += start + k * visible + (k if persistent else k - 1) * hidden
    starts = np.empty(runs + 1, np.uint64)
    starts[0] = offset
    longest = 0
    for r in range(runs):
        starts[r + 1] = starts[r] + uint64(total[r])
        longest = max(longest, total[r])
    return starts, rows, longest


@cached()
@numba.njit(**CPU_OPTIONS)
def _free_energy_cpu(v, z, b, gaussian, out):
    """out[i] = F(v[i]) from z = v @ W.T + c."""
    one = z.dtype.type(1)
    for i in range(v.shape[0]):
        out[i] = _free_energy_row_cpu(v, z, b, i, gaussian, one)


@cached()
@numba.njit(**CPU_OPTIONS)
def _pseudo_likelihood_cpu(v, z, W, b, index, out):
    """out[i] = pseudo-likelihood of v[i] with unit index[i] flipped, from
    z = v @ W.T + c."""
    one = z.dtype.type(1)
    for i in range(v.shape[0]):
        out[i] = _pseudo_likelihood_row_cpu(v, z, W, b, i, index[i], one)


# --- CUDA kernels ---------------------------------------------------------------------
# The conditionals and the weight update are tiled products like dense.py's,
# through one device function (``_tile_product``): each block computes a TILE
# x TILE output tile from shared-memory tiles TILE_K deep, each thread PER x
# PER outputs strided by THREADS (contiguous stores across a warp). Shared
# memory per block: 2 * TILE * TILE_K values (8 KiB in float32). Each output
# draws its own random words, so no thread waits on another.

TILE, TILE_K, THREADS = 64, 16, 16
PER = TILE // THREADS


@_cuda.device_function
def _stage(tile, ti, tk, first, second, row0, split, k_rows, line, k, lines, k_total, zero):
    """tile[ti, tk] = element (line, k) of a product's operand, ``lines`` x
    ``k_total``, or zero past its edges. With ``k_rows`` k runs down the
    source's rows: first[row0 + k, line] for k < split, then second[k - split,
    line] (two sources stacked along k); otherwise first[row0 + line, k]
    (``second`` and ``split`` unused). Written as a store in each branch:
    selecting a value and storing it once made ptxas keep far more registers."""
    if line < lines and k < k_total:
        if not k_rows:
            tile[ti, tk] = first[row0 + line, k]
        elif k < split:
            tile[ti, tk] = first[row0 + k, line]
        else:
            tile[ti, tk] = second[k - split, line]
    else:
        tile[ti, tk] = zero


@_cuda.device_function
def _tile_product(
    a, a2, a_row0, a_split, a_k_rows, b, b2, b_row0, b_split, b_k_rows, rows, cols, k_total,
    tile_a, tile_b, acc,
):  # fmt: skip
    """acc[p, q] = output (i0 + ty + p * THREADS, j0 + tx + q * THREADS) of
    op(a) @ op(b), (rows, k_total) @ (k_total, cols), for this block's tile
    (i0, j0) and this thread (tx, ty); op(a) and op(b) as ``_stage`` reads
    them from (a, a2, a_row0, a_split, a_k_rows) and the same for b.
    ``tile_a`` (TILE, TILE_K) and ``tile_b`` (TILE_K, TILE) are the block's
    shared tiles; each k sums its terms in order."""
    zero = acc.dtype.type(0)
    for p in range(PER):
        for q in range(PER):
            acc[p, q] = zero
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    tid = ty * THREADS + tx
    i0, j0 = cuda.blockIdx.y * TILE, cuda.blockIdx.x * TILE
    for k0 in range(0, k_total, TILE_K):
        for e in range(tid, TILE * TILE_K, THREADS * THREADS):
            i, kk = e // TILE_K, e % TILE_K
            _stage(tile_a, i, kk, a, a2, a_row0, a_split, a_k_rows, i0 + i, k0 + kk, rows,
                   k_total, zero)  # fmt: skip
        for e in range(tid, TILE_K * TILE, THREADS * THREADS):
            kk, j = e // TILE, e % TILE
            _stage(tile_b, kk, j, b, b2, b_row0, b_split, b_k_rows, j0 + j, k0 + kk, cols,
                   k_total, zero)  # fmt: skip
        cuda.syncthreads()
        for kk in range(TILE_K):
            for p in range(PER):
                av = tile_a[ty + p * THREADS, kk]
                for q in range(PER):
                    acc[p, q] += av * tile_b[kk, tx + q * THREADS]
        cuda.syncthreads()


@numba.njit(inline="always")
def _uniform_at(seed, word):
    """The float32 uniform of stream word ``word`` (uint64)."""
    w0, w1, w2, w3 = philox_block(seed, word // uint64(4))
    lane = word % uint64(4)
    w = w0 if lane == 0 else (w1 if lane == 1 else (w2 if lane == 2 else w3))
    return uint32_to_unit_float32(w)


@numba.njit(inline="always")
def _uniform_pair_at(seed, word):
    """The float32 uniforms of the even stream word ``word`` and the next one."""
    w0, w1, w2, w3 = philox_block(seed, word // uint64(4))
    if word % uint64(4) == 0:
        return uint32_to_unit_float32(w0), uint32_to_unit_float32(w1)
    return uint32_to_unit_float32(w2), uint32_to_unit_float32(w3)


@_cuda.device_function
def _batch_at(batches):
    """(first row in X, first stream word) of the batch that the batch table
    ``batches`` names (see ``TiledEpoch``): its row 1 + batches[0, 0]."""
    row = batches[0, 0] + 1
    return batches[row, 0], uint64(batches[row, 1])


def _conditional_kernel(name, transpose_w):
    """z = a[row0 : row0 + rows] @ (w.T if transpose_w else w) + bias, then the
    epilogue of ``_epilogue_cpu`` (activation, scaled store, sampling). The
    batch table ``batches`` (see ``TiledEpoch``) gives the batch's first row
    in X, row0 when ``batch_rows`` (else row0 is 0), and its first stream
    word, to which the draw's ``offset`` is added."""

    @_cuda.kernel(
        f"rbm.{name}",
        float_signatures(
            "void({t}[:, ::1], boolean, int64, {t}[:, ::1], {t}[::1], int64, {t}, "
            "{t}[:, ::1], boolean, int64, {t}[:, ::1], uint64, int64[:, ::1], uint64)"
        ),
    )
    def conditional(
        a, batch_rows, rows, w, bias, activation, scale, out, store, sampling, samples, seed,
        batches, offset,
    ):  # fmt: skip
        row0, word0 = _batch_at(batches)
        if not batch_rows:
            row0 = 0
        offset += word0
        n = bias.size
        k_total = a.shape[1]
        tile_a = cuda.shared.array((TILE, TILE_K), a.dtype)
        tile_b = cuda.shared.array((TILE_K, TILE), a.dtype)
        acc = cuda.local.array((PER, PER), a.dtype)
        one = a.dtype.type(1)
        zero = a.dtype.type(0)
        two_pi = a.dtype.type(_TWO_PI)
        _tile_product(
            a, a, row0, k_total, False, w, w, 0, k_total, not transpose_w, rows, n, k_total,
            tile_a, tile_b, acc,
        )  # fmt: skip
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        i0, j0 = cuda.blockIdx.y * TILE, cuda.blockIdx.x * TILE
        for p in range(PER):
            i = i0 + ty + p * THREADS
            for q in range(PER):
                j = j0 + tx + q * THREADS
                if i < rows and j < n:
                    x = acc[p, q] + bias[j]
                    if activation == SIGMOID:
                        x = act.sigmoid_scalar_cuda(x, one)
                    if store:
                        out[i, j] = scale * x
                    index = uint64(i * n + j)
                    if sampling == BERNOULLI:
                        samples[i, j] = one if _uniform_at(seed, offset + index) < x else zero
                    elif sampling == GAUSSIAN:
                        u0, u1 = _uniform_pair_at(seed, offset + uint64(2) * index)
                        samples[i, j] = x + box_muller(u0, u1, one, two_pi)

    return conditional


_HIDDEN_CUDA = _conditional_kernel("hidden", True)  # a (rows, V) @ W.T
_VISIBLE_CUDA = _conditional_kernel("visible", False)  # a (rows, H) @ W


@_cuda.kernel(
    "rbm.update_weights",
    float_signatures(
        "void({t}[:, ::1], {t}[:, ::1], int64[:, ::1], int64, {t}[:, ::1], {t}[:, ::1], int64, "
        "{t}[:, ::1], {t}[:, ::1], {t}, {t}, {t})"
    ),
)
def _update_weights_kernel(tp, x, batches, n, tn, sn, m, w, vel, lr, momentum, decay):
    """g = tp[:n].T @ x[row0 : row0 + n] + tn[:m].T @ sn[:m] (the scaled
    statistics give the mean gradient; row0 the batch's first row, from the
    batch table ``batches``), then vel = momentum * vel + lr * (g - decay *
    w) and w += vel, as each output is written. The last of a batch's
    launches: its last block to finish moves the table's cursor on to the
    next batch."""
    row0, _ = _batch_at(batches)
    n_hidden, n_visible = w.shape
    tile_a = cuda.shared.array((TILE, TILE_K), w.dtype)
    tile_b = cuda.shared.array((TILE_K, TILE), w.dtype)
    acc = cuda.local.array((PER, PER), w.dtype)
    _tile_product(
        tp, tn, 0, n, True, x, sn, row0, n, True, n_hidden, n_visible, n + m, tile_a, tile_b,
        acc,
    )  # fmt: skip
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    i0, j0 = cuda.blockIdx.y * TILE, cuda.blockIdx.x * TILE
    for p in range(PER):
        i = i0 + ty + p * THREADS
        for q in range(PER):
            j = j0 + tx + q * THREADS
            if i < n_hidden and j < n_visible:
                d = momentum * vel[i, j] + lr * (acc[p, q] - decay * w[i, j])
                vel[i, j] = d
                w[i, j] += d
    # Every block read the cursor before counting itself done, so the last
    # one to count may move it (and set the count back to 0).
    cuda.syncthreads()
    if tx == 0 and ty == 0:
        blocks = numba.int64(cuda.gridDim.x) * numba.int64(cuda.gridDim.y)
        if cuda.atomic.add(batches, (0, 1), 1) == blocks - 1:
            batches[0, 1] = 0
            batches[0, 0] += 1


@_cuda.kernel(
    "rbm.update_biases",
    float_signatures(
        "void({t}[:, ::1], {t}[:, ::1], int64[:, ::1], int64, {t}[:, ::1], {t}[:, ::1], int64, "
        "{t}[::1], {t}[::1], {t}[::1], {t}[::1], {t}, {t})"
    ),
)
def _update_biases_kernel(tp, x, batches, n, tn, sn, m, b, c, vb, vc, lr, momentum):
    """One thread per bias: dc = column sums of tp[:n] and tn[:m] (scaled
    statistics), db = mean of x[row0 : row0 + n] - mean of sn[:m] (row0 the
    batch's first row, from the batch table ``batches``); then the momentum
    step (no decay)."""
    row0, _ = _batch_at(batches)
    n_hidden = c.size
    zero = b.dtype.type(0)
    for col in range(cuda.grid(1), n_hidden + b.size, cuda.gridsize(1)):
        if col < n_hidden:
            g = zero
            for r in range(n):
                g += tp[r, col]
            for r in range(m):
                g += tn[r, col]
            d = momentum * vc[col] + lr * g
            vc[col] = d
            c[col] += d
        else:
            j = col - n_hidden
            pos = zero
            for r in range(n):
                pos += x[row0 + r, j]
            neg = zero
            for r in range(m):
                neg += sn[r, j]
            g = pos / b.dtype.type(n) - neg / b.dtype.type(m)
            d = momentum * vb[j] + lr * g
            vb[j] = d
            b[j] += d


# --- CUDA: the whole epoch in one block -----------------------------------------------
# When W, the biases, one batch and the chain's states fit in one block's shared
# memory (``fits_one_block``), one launch of one block runs every batch of the
# epoch: W and the biases stay in shared memory from the first batch to the
# last, each phase of a batch ends at a block barrier, and the velocities stay
# in global memory, each element read and written by the one thread that owns
# it. A Gibbs product gives each thread EPOCH_ROWS rows of one output column
# (each weight it loads from shared memory serves that many rows) and sums
# over k in order, as the tiled kernels do; outputs draw their stream words as
# the tiled kernels' do, so the two paths sample alike.

#: Static shared memory of the single-block epoch, in bytes: the 48 KiB that
#: every CUDA GPU gives a block without opting in to more.
EPOCH_SHARED_BYTES = 48 * 1024
#: Threads of the single-block epoch (the simulator runs each as a Python
#: thread, hence fewer there; the kernel is correct for any count).
EPOCH_THREADS = 32 if _cuda.SIMULATOR else 256
#: Rows of one output column a thread of the single-block epoch accumulates
#: at once, in its products and its weight update (both written for 4).
EPOCH_ROWS = 4


@_cuda.device_function
def _block_output(s, i, j, z, rows, cols, bias0, activation, scale, out0, store, sampling,
                  samples0, seed, offset):  # fmt: skip
    """Output (i, j) of ``_block_conditional`` from its sum ``z``, if i < rows."""
    if i < rows:
        one = s.dtype.type(1)
        x = z + s[bias0 + j]
        if activation == SIGMOID:
            x = act.sigmoid_scalar_cuda(x, one)
        if store:
            s[out0 + i * cols + j] = scale * x
        index = uint64(i * cols + j)
        if sampling == BERNOULLI:
            u = _uniform_at(seed, offset + index)
            s[samples0 + i * cols + j] = one if u < x else one - one
        elif sampling == GAUSSIAN:
            u0, u1 = _uniform_pair_at(seed, offset + uint64(2) * index)
            s[samples0 + i * cols + j] = x + box_muller(u0, u1, one, s.dtype.type(_TWO_PI))


@_cuda.device_function
def _block_conditional(
    s, a0, a_stride, rows, k_total, w_k, w_j, bias0, cols, activation, scale, out0, store,
    sampling, samples0, seed, offset,
):  # fmt: skip
    """In the flat shared array ``s``: for each output (i, j) of rows x cols,
    x = activation(sum over k of s[a0 + i * a_stride + k] * s[w_k * k + w_j *
    j], plus s[bias0 + j]); s[out0 + i * cols + j] = scale * x when
    ``store``; s[samples0 + i * cols + j] = a sample from x with stream word
    offset + i * cols + j (two words from offset + 2 (i * cols + j) for a
    Gaussian) unless ``sampling`` is NO_SAMPLE. A thread takes EPOCH_ROWS (4)
    rows of one column at a time, in four accumulators (registers, where a
    local array stays in local memory)."""
    zero = s.dtype.type(0)
    last = rows - 1
    groups = (rows + EPOCH_ROWS - 1) // EPOCH_ROWS
    for e in range(cuda.threadIdx.x, groups * cols, cuda.blockDim.x):
        i0, j = (e // cols) * EPOCH_ROWS, e % cols
        # Rows past the last read the last row again; their sums go unused.
        p0, p1 = a0 + i0 * a_stride, a0 + min(i0 + 1, last) * a_stride
        p2, p3 = a0 + min(i0 + 2, last) * a_stride, a0 + min(i0 + 3, last) * a_stride
        z0 = z1 = z2 = z3 = zero
        for kk in range(k_total):
            w = s[w_k * kk + w_j * j]
            z0 += s[p0 + kk] * w
            z1 += s[p1 + kk] * w
            z2 += s[p2 + kk] * w
            z3 += s[p3 + kk] * w
        for r, z in ((0, z0), (1, z1), (2, z2), (3, z3)):
            _block_output(s, i0 + r, j, z, rows, cols, bias0, activation, scale, out0, store,
                          sampling, samples0, seed, offset)  # fmt: skip


_EPOCH_BLOCK_SIGNATURE = (
    "void({t}[:, ::1], int64[::1], int64, {t}[:, ::1], {t}[::1], {t}[::1], {t}[:, ::1], "
    "{t}[::1], {t}[::1], {t}[:, ::1], uint64, uint64, {t}, {t}, {t}, int64, boolean, boolean)"
)


def _epoch_block_kernel(dtype):
    """The single-block epoch kernel for ``dtype``, its shared array
    EPOCH_SHARED_BYTES long."""
    values = EPOCH_SHARED_BYTES // dtype.itemsize
    shared_type = numba.from_dtype(dtype)

    @_cuda.kernel(f"rbm.epoch_block_{dtype.name}", (_EPOCH_BLOCK_SIGNATURE.format(t=dtype.name),))
    def epoch_block(
        x, bounds, rows, w, b, c, vel_w, vel_b, vel_c, chain, seed, offset, lr, momentum,
        decay, k, persistent, gaussian,
    ):  # fmt: skip
        """cd_epoch_cpu's batches in one block (see ``cd_epoch_block_cuda``);
        ``rows`` is the longest batch's."""
        s = cuda.shared.array(values, shared_type)
        tid, threads = cuda.threadIdx.x, cuda.blockDim.x
        n_hidden, n_visible = w.shape
        one = w.dtype.type(1)
        zero = one - one
        # Shared layout: W with an odd row stride (a warp reading down a column
        # of W touches 32 different banks), b, c, the batch (rows, V), its
        # scaled hidden probabilities (rows, H), then over the chain's rows:
        # hidden states, visible samples and scaled hidden probabilities.
        stride = n_visible | 1
        chain_rows = chain.shape[0] if persistent else rows
        b0 = n_hidden * stride
        c0 = b0 + n_visible
        x0 = c0 + n_hidden
        tp0 = x0 + rows * n_visible
        h0 = tp0 + rows * n_hidden
        sn0 = h0 + chain_rows * n_hidden
        tn0 = sn0 + chain_rows * n_visible
        for e in range(tid, n_hidden * n_visible, threads):
            s[(e // n_visible) * stride + e % n_visible] = w[e // n_visible, e % n_visible]
        for e in range(tid, n_visible, threads):
            s[b0 + e] = b[e]
        for e in range(tid, n_hidden, threads):
            s[c0 + e] = c[e]
        if persistent:
            for e in range(tid, chain_rows * n_hidden, threads):
                s[h0 + e] = chain[e // n_hidden, e % n_hidden]
        vis_activation = IDENTITY if gaussian else SIGMOID
        vis_sampling = GAUSSIAN if gaussian else BERNOULLI
        vis_words = 2 if gaussian else 1
        for t in range(bounds.size - 1):
            start, n = bounds[t], bounds[t + 1] - bounds[t]
            m = chain_rows if persistent else n
            inv_n, inv_m = one / w.dtype.type(n), one / w.dtype.type(m)
            cuda.syncthreads()  # the loads above, or the last batch's update, are done
            for e in range(tid, n * n_visible, threads):
                s[x0 + e] = x[start + e // n_visible, e % n_visible]
            cuda.syncthreads()
            # Positive phase (and CD-k's chain start): v @ W.T + c.
            _block_conditional(
                s, x0, n_visible, n, n_visible, 1, stride, c0, n_hidden, SIGMOID, inv_n, tp0,
                True, NO_SAMPLE if persistent else BERNOULLI, h0, seed, offset,
            )  # fmt: skip
            if not persistent:
                offset += uint64((n * n_hidden + 3) // 4 * 4)
            for step in range(k):
                cuda.syncthreads()
                _block_conditional(
                    s, h0, n_hidden, m, n_hidden, stride, 1, b0, n_visible, vis_activation,
                    one, sn0, False, vis_sampling, sn0, seed, offset,
                )  # fmt: skip
                offset += uint64((m * n_visible * vis_words + 3) // 4 * 4)
                cuda.syncthreads()
                last = step == k - 1
                sample = persistent or not last
                _block_conditional(
                    s, sn0, n_visible, m, n_visible, 1, stride, c0, n_hidden, SIGMOID,
                    -inv_m if last else one, tn0, last, BERNOULLI if sample else NO_SAMPLE,
                    h0, seed, offset,
                )  # fmt: skip
                if sample:
                    offset += uint64((m * n_hidden + 3) // 4 * 4)
            cuda.syncthreads()
            # Updates, each sum in the order the tiled kernels take: a thread
            # takes EPOCH_ROWS (4) weights of one column at a time (each
            # visible value it loads serves four), then the biases.
            last_row = n_hidden - 1
            groups = (n_hidden + EPOCH_ROWS - 1) // EPOCH_ROWS
            for e in range(tid, groups * n_visible, threads):
                i0, j = (e // n_visible) * EPOCH_ROWS, e % n_visible
                # Rows past the last read the last row again; their sums go unused.
                i1, i2 = min(i0 + 1, last_row), min(i0 + 2, last_row)
                i3 = min(i0 + 3, last_row)
                g0 = g1 = g2 = g3 = zero
                for r in range(n):
                    xv, p = s[x0 + r * n_visible + j], tp0 + r * n_hidden
                    g0 += s[p + i0] * xv
                    g1 += s[p + i1] * xv
                    g2 += s[p + i2] * xv
                    g3 += s[p + i3] * xv
                for r in range(m):
                    xv, p = s[sn0 + r * n_visible + j], tn0 + r * n_hidden
                    g0 += s[p + i0] * xv
                    g1 += s[p + i1] * xv
                    g2 += s[p + i2] * xv
                    g3 += s[p + i3] * xv
                for r, g in ((0, g0), (1, g1), (2, g2), (3, g3)):
                    i = i0 + r
                    if i < n_hidden:
                        wij = s[i * stride + j]
                        d = momentum * vel_w[i, j] + lr * (g - decay * wij)
                        vel_w[i, j] = d
                        s[i * stride + j] = wij + d
            for e in range(tid, n_hidden + n_visible, threads):
                if e < n_hidden:
                    g = zero
                    for r in range(n):
                        g += s[tp0 + r * n_hidden + e]
                    for r in range(m):
                        g += s[tn0 + r * n_hidden + e]
                    d = momentum * vel_c[e] + lr * g
                    vel_c[e] = d
                    s[c0 + e] += d
                else:
                    j = e - n_hidden
                    pos = zero
                    for r in range(n):
                        pos += s[x0 + r * n_visible + j]
                    neg = zero
                    for r in range(m):
                        neg += s[sn0 + r * n_visible + j]
                    g = pos / w.dtype.type(n) - neg / w.dtype.type(m)
                    d = momentum * vel_b[j] + lr * g
                    vel_b[j] = d
                    s[b0 + j] += d
        cuda.syncthreads()
        for e in range(tid, n_hidden * n_visible, threads):
            w[e // n_visible, e % n_visible] = s[(e // n_visible) * stride + e % n_visible]
        for e in range(tid, n_visible, threads):
            b[e] = s[b0 + e]
        for e in range(tid, n_hidden, threads):
            c[e] = s[c0 + e]
        if persistent:
            for e in range(tid, chain_rows * n_hidden, threads):
                chain[e // n_hidden, e % n_hidden] = s[h0 + e]

    return epoch_block


#: dtype -> the single-block epoch kernel.
_EPOCH_BLOCK_CUDA = {
    np.dtype(t): _epoch_block_kernel(np.dtype(t)) for t in (np.float32, np.float64)
}


@_cuda.kernel(
    "rbm.free_energy",
    float_signatures("void({t}[:, ::1], {t}[:, ::1], {t}[::1], boolean, {t}[::1])"),
)
def _free_energy_kernel(v, z, b, gaussian, out):
    """One thread per row: out[i] = F(v[i]) from z = v @ W.T + c."""
    one = z.dtype.type(1)
    for i in range(cuda.grid(1), v.shape[0], cuda.gridsize(1)):
        out[i] = _free_energy_row_cuda(v, z, b, i, gaussian, one)


@_cuda.kernel(
    "rbm.pseudo_likelihood",
    float_signatures("void({t}[:, ::1], {t}[:, ::1], {t}[:, ::1], {t}[::1], int64[::1], {t}[::1])"),
)
def _pseudo_likelihood_kernel(v, z, w, b, index, out):
    """One thread per row: the pseudo-likelihood of v[i] with unit index[i]
    flipped, from z = v @ W.T + c."""
    one = z.dtype.type(1)
    for i in range(cuda.grid(1), v.shape[0], cuda.gridsize(1)):
        out[i] = _pseudo_likelihood_row_cuda(v, z, w, b, i, index[i], one)


# --- launchers ------------------------------------------------------------------------
# Shared arguments: ``hidden`` picks p(h | v) (a (rows, V) -> (rows, H)) or the
# visible side (a (rows, H) -> (rows, V)); ``out`` receives ``scale *
# activation(z)``, ``samples`` the draw from it (either may be None); ``seed``
# and ``offset`` (a multiple of 4) place the draw in the stream. Each returns
# the offset after its draw. Callers check shapes and dtypes.


def _draw_words(rows, cols, sampling):
    if sampling == NO_SAMPLE:
        return 0
    return aligned_words(rows * cols * (2 if sampling == GAUSSIAN else 1))


def check_shapes(op, **arrays):
    """Each ``name=(array, shape)``: ValueError naming the array unless it has
    that shape (None arrays are skipped). The launchers check the arrays an
    RBM hands them against each other before any kernel reads them."""
    for name, (a, shape) in arrays.items():
        if a is not None and tuple(a.shape) != tuple(shape):
            raise ValueError(f"{op}: expected {name} of shape {tuple(shape)}, got {tuple(a.shape)}")


def _check_conditional(op, a, W, bias, hidden, out, samples):
    n_out, n_in = W.shape if hidden else W.shape[::-1]
    rows = a.shape[0]
    check_shapes(op, a=(a, (rows, n_in)), bias=(bias, (n_out,)), out=(out, (rows, n_out)),
                 samples=(samples, (rows, n_out)))  # fmt: skip


def _check_epoch(op, X, bounds, params, velocities, chain, persistent):
    W, b, c = params
    n_hidden, n_visible = W.shape
    shapes = {"b": (b, (n_visible,)), "c": (c, (n_hidden,)), "X": (X, (X.shape[0], n_visible))}
    for name, v, p in zip(("W", "b", "c"), velocities, params, strict=True):
        shapes[f"velocity of {name}"] = (v, p.shape)
    if persistent:
        shapes["chain"] = (chain, (chain.shape[0], n_hidden))
    check_shapes(op, **shapes)
    bounds = np.asarray(bounds)
    if (
        bounds.ndim != 1 or bounds.size == 0 or bounds[0] != 0 or bounds[-1] > X.shape[0]
        or (bounds.size > 1 and np.diff(bounds).min() < 1)
    ):  # fmt: skip
        raise ValueError(
            f"{op}: expected bounds rising from 0 to at most X's {X.shape[0]} rows, got {bounds}"
        )


def _check_pseudo_likelihood(v, z, W, b, index, out):
    n, (n_hidden, n_visible) = v.shape[0], W.shape
    check_shapes("rbm.pseudo_likelihood", v=(v, (n, n_visible)), z=(z, (n, n_hidden)),
                 b=(b, (n_visible,)), index=(index, (n,)), out=(out, (n,)))  # fmt: skip


def conditional_cpu(
    a, W, bias, hidden, activation, out=None, scale=1.0, sampling=NO_SAMPLE, samples=None,
    seed=0, offset=0,
):  # fmt: skip
    """activation(a @ W.T + bias) or activation(a @ W + bias): a BLAS product
    into ``out`` (or ``samples``), then one fused pass in place for the bias,
    activation, scaled store and sampling."""
    _check_conditional("rbm.conditional", a, W, bias, hidden, out, samples)
    store = out is not None
    z = out if store else samples
    np.matmul(a, W.T if hidden else W, out=z)
    words = _draw_words(z.shape[0], z.shape[1], sampling)
    u = np.empty(words, np.float32)
    if words:
        _draw_cpu(u, np.uint64(seed), np.uint64(offset))
    epilogue = _EPILOGUE_CPU[activation, store, sampling]
    flat = z.reshape(-1)
    epilogue(flat, _bias_tile(bias, z.shape[0]), z.dtype.type(scale),
             flat if samples is None else samples.reshape(-1), u)  # fmt: skip
    return offset + words


class CPUEpoch:
    """One CPU epoch of CD-k updates (the arguments of ``cd_epoch_cpu``), set
    up to run DRAW_CHUNK batches to a compiled call.

    ``run_serially()`` runs it all. Or, for each chunk ``i`` in
    ``range(chunks)``, in order: ``draw(i, u)`` fills ``u`` (float32, 1-D, at
    least ``longest`` values) with the chunk's uniforms and returns the part
    it filled, and ``run(i, that part)`` runs the chunk's batches
    (``batches(i)``); then ``finish()`` returns the offset after the epoch's
    draws. A chunk's draw reads nothing that the runs
    write, so it may come any time before its run, into a buffer that no
    running chunk reads, and on another thread while the chunk before it
    runs: both calls are compiled without the GIL. The uniforms are the same
    stream words whenever they are drawn, and the results the same bit for
    bit.

    The chunk loop is left to Python rather than compiled into one epoch:
    Numba optimises a compiled caller again with everything it calls, which
    makes the first epoch in a process compile several times as long.

    With at least TRANSPOSED_MIN_BATCHES batches the epoch works on a copy of
    the weights transposed, WT (V, H), copied back by ``finish``: the k + 1
    hidden products per batch (v @ WT) are then in the layout that small BLAS
    products run fastest in, against k visible products (h @ WT.T) in the
    slower one; the two transposes are paid once per epoch, so only epochs of
    several batches gain.
    """

    def __init__(
        self, X, bounds, params, velocities, chain, seed, offset, lr, momentum, decay, k,
        persistent, gaussian,
    ):  # fmt: skip
        _check_epoch("rbm.cd_epoch", X, bounds, params, velocities, chain, persistent)
        W, b, c = params
        vW, vb, vc = velocities
        assert all(a.flags.c_contiguous for a in (*params, *velocities, chain))
        X = np.ascontiguousarray(X)  # the products take rows of contiguous values
        dtype = W.dtype
        t = dtype.type
        n_hidden, n_visible = W.shape
        self.n_batches = len(bounds) - 1
        transposed = self.n_batches >= TRANSPOSED_MIN_BATCHES
        m_chain = chain.shape[0]
        self._seed = np.uint64(seed)
        # Chunk i draws the stream words _starts[i] to _starts[i + 1] - 1.
        self._starts, rows, self.longest = _epoch_plan(
            bounds, DRAW_CHUNK, m_chain, n_visible, n_hidden, int(k), bool(persistent),
            2 if gaussian else 1, np.uint64(offset),
        )  # fmt: skip
        self.chunks = self._starts.size - 1
        WT = np.ascontiguousarray(W.T) if transposed else W
        vWT = np.ascontiguousarray(vW.T) if transposed else vW
        self._copy_back = ((W, WT), (vW, vWT)) if transposed else ()
        T = np.empty((rows + (m_chain if persistent else rows), n_hidden), dtype)  # hidden stats
        S = np.empty((T.shape[0], n_visible), dtype)  # visible states
        hs = chain if persistent else np.empty((rows, n_hidden), dtype)
        ct = np.empty(_tile_rows(n_hidden) * n_hidden, dtype)  # c over whole rows
        bt = np.empty(_tile_rows(n_visible) * n_visible, dtype)  # b over whole rows
        _fill_tile(c, ct)
        _fill_tile(b, bt)
        self._work = (
            X, bounds, WT, vWT, b, c, vb, vc, chain, hs, T, S, np.empty(n_visible, dtype),
            np.empty(n_hidden, dtype), ct, bt, self._seed,
        )  # fmt: skip
        self._rule = (
            t(lr), t(momentum), t(decay), int(k), bool(persistent), bool(gaussian), transposed,
        )  # fmt: skip

    def batches(self, i):
        """The batches of chunk ``i``, a range."""
        return range(i * DRAW_CHUNK, min(self.n_batches, (i + 1) * DRAW_CHUNK))

    def draw(self, i, u):
        """Fill the start of ``u`` with chunk ``i``'s uniforms; return that part."""
        start, stop = self._starts[i], self._starts[i + 1]
        u = u[: stop - start]
        _draw_cpu(u, self._seed, start)
        return u

    def run(self, i, u):
        """Run chunk ``i``'s batches with its uniforms ``u`` (from ``draw``)."""
        batches, start = self.batches(i), self._starts[i]
        end = _cd_batches(batches.start, batches.stop, u, start, *self._work, start, *self._rule)
        assert end == self._starts[i + 1]

    def finish(self):
        """The offset after the epoch's draws, once the weights are in place."""
        for W, WT in self._copy_back:
            np.copyto(W, WT.T)
        return int(self._starts[-1])

    def run_serially(self):
        """Draw and run each chunk in turn, on this thread; return ``finish()``."""
        u = np.empty(self.longest, np.float32)
        for i in range(self.chunks):
            self.run(i, self.draw(i, u))
        return self.finish()


def cd_epoch_cpu(
    X, bounds, params, velocities, chain, seed, offset, lr, momentum, decay, k, persistent,
    gaussian,
):  # fmt: skip
    """CD-k (PCD-k when ``persistent``) updates over the batches
    X[bounds[t]:bounds[t + 1]], a chunk of DRAW_CHUNK batches at a time, each
    chunk's uniforms drawn just before it (see ``CPUEpoch``).

    ``params`` (W, b, c) and ``velocities`` (same shapes, C-contiguous) are
    updated in place, ``chain`` (m, H) too when ``persistent``; ``bounds`` is
    int64, starting at 0, batches no longer than ``chain``'s rows for PCD.
    The velocities after the call are those of its last step (without
    momentum and decay the steps before it skip them). Returns the offset
    after the epoch's draws.
    """
    return CPUEpoch(
        X, bounds, params, velocities, chain, seed, offset, lr, momentum, decay, k, persistent,
        gaussian,
    ).run_serially()  # fmt: skip


def free_energy_cpu(v, z, b, gaussian, out):
    """out (n,) = free energies of v (n, V) given z = v @ W.T + c (n, H)."""
    n = v.shape[0]
    check_shapes("rbm.free_energy", z=(z, (n, z.shape[1])), b=(b, v.shape[1:]), out=(out, (n,)))
    _free_energy_cpu(v, z, b, bool(gaussian), out)
    return out


def pseudo_likelihood_cpu(v, z, W, b, index, out):
    """out (n,) = pseudo-likelihoods of v (n, V), unit index[i] (int64) of row
    i flipped, given z = v @ W.T + c (n, H)."""
    _check_pseudo_likelihood(v, z, W, b, index, out)
    _pseudo_likelihood_cpu(v, z, W, b, index, out)
    return out


def _launch_conditional(kernel, a, batch_rows, rows, W, bias, activation, scale, out, sampling,
                        samples, seed, batches, offset, dummy):  # fmt: skip
    """``offset``: the draw's first stream word after the batch's (the batch
    table ``batches`` gives that); a's rows start at the batch's first row
    when ``batch_rows``, else at 0."""
    if rows and bias.size:
        grid = ((bias.size + TILE - 1) // TILE, (rows + TILE - 1) // TILE)
        kernel[grid, (THREADS, THREADS)](
            a, batch_rows, rows, W, bias, activation, scale, dummy if out is None else out,
            out is not None, sampling, dummy if samples is None else samples, np.uint64(seed),
            batches, np.uint64(offset),
        )  # fmt: skip
    return offset + _draw_words(rows, bias.size, sampling)


def _dummy(dtype):
    return cuda.device_array((1, 1), dtype)


def _no_batches():
    """The batch table of a conditional outside an epoch: one batch at row 0
    and stream word 0 (a device copy made once)."""
    return _cuda.constant_table(np.zeros((2, 2), np.int64))


def conditional_cuda(
    a, W, bias, hidden, activation, out=None, scale=1.0, sampling=NO_SAMPLE, samples=None,
    seed=0, offset=0,
):  # fmt: skip
    """conditional_cpu on device arrays: one tiled product with the bias,
    activation, scaled store and sampling applied as each output is written."""
    _check_conditional("rbm.conditional", a, W, bias, hidden, out, samples)
    kernel = _HIDDEN_CUDA if hidden else _VISIBLE_CUDA
    dtype = np.dtype(W.dtype)
    return _launch_conditional(
        kernel, a, False, a.shape[0], W, bias, activation, dtype.type(scale), out, sampling,
        samples, seed, _no_batches(), offset, _dummy(dtype),
    )  # fmt: skip


def fits_one_block(n_visible, n_hidden, rows, chain_rows, dtype):
    """Whether an epoch fits the single-block kernel: its shared array, of
    EPOCH_SHARED_BYTES bytes per block (48 KiB of static shared memory, which
    every CUDA GPU gives a block), holds W (H, V) with rows padded to an odd
    length, b (V,), c (H,), a batch (``rows``, V, the longest batch) and its
    hidden probabilities (rows, H), and over ``chain_rows`` (the persistent
    chain's rows, or ``rows`` for CD-k) the hidden states, visible samples
    and hidden probabilities, all of ``dtype``. The digits model (V 64, H
    100, batches of 10, float32) takes 43,776 bytes."""
    values = (
        n_hidden * (n_visible | 1) + n_visible + n_hidden + rows * (n_visible + n_hidden)
        + chain_rows * (2 * n_hidden + n_visible)
    )  # fmt: skip
    return values * np.dtype(dtype).itemsize <= EPOCH_SHARED_BYTES


def _epoch_rows(X, bounds, chain, persistent):
    """(the longest batch's rows, the rows of the chain's states)."""
    rows = int(np.max(np.diff(bounds))) if len(bounds) > 1 else 0
    return rows, chain.shape[0] if persistent else rows


def epoch_runs_tiled(X, bounds, params, velocities, chain, persistent):
    """Whether ``cd_epoch_cuda`` runs an epoch with these arguments on the
    tiled kernels (it does not fit one block: ``fits_one_block``), after
    checking them as it does (ValueError)."""
    _check_epoch("rbm.cd_epoch", X, bounds, params, velocities, chain, persistent)
    rows, chain_rows = _epoch_rows(X, bounds, chain, persistent)
    W = params[0]
    return not fits_one_block(W.shape[1], W.shape[0], rows, chain_rows, W.dtype)


def cd_epoch_cuda(
    X, bounds, params, velocities, chain, seed, offset, lr, momentum, decay, k, persistent,
    gaussian,
):  # fmt: skip
    """cd_epoch_cpu on device arrays (``bounds`` stays a host array): the whole
    epoch in one launch (``cd_epoch_block_cuda``) when it fits one block's
    shared memory (``fits_one_block``), else 3 + 2k launches per batch
    (``cd_epoch_tiled_cuda``)."""
    tiled = epoch_runs_tiled(X, bounds, params, velocities, chain, persistent)
    epoch = _cd_epoch_tiled if tiled else _cd_epoch_block
    return epoch(X, bounds, params, velocities, chain, seed, offset, lr, momentum, decay, k,
                 persistent, gaussian)  # fmt: skip


def cd_epoch_block_cuda(
    X, bounds, params, velocities, chain, seed, offset, lr, momentum, decay, k, persistent,
    gaussian,
):  # fmt: skip
    """cd_epoch_cpu on device arrays in one launch of one block, for an epoch
    that ``fits_one_block`` (ValueError otherwise): W and the biases stay in
    shared memory through every batch and go back to global memory at the
    end. The same stream words and Bernoulli thresholds as the CPU path;
    ``bounds`` stays a host array (copied to the GPU once per content)."""
    _check_epoch("rbm.cd_epoch", X, bounds, params, velocities, chain, persistent)
    rows, chain_rows = _epoch_rows(X, bounds, chain, persistent)
    W = params[0]
    if not fits_one_block(W.shape[1], W.shape[0], rows, chain_rows, W.dtype):
        raise ValueError(
            f"rbm.cd_epoch: expected an epoch that fits one block's {EPOCH_SHARED_BYTES} bytes "
            f"of shared memory, got W {tuple(W.shape)} {np.dtype(W.dtype)} with batches of "
            f"{rows} rows and a chain of {chain_rows}"
        )
    return _cd_epoch_block(X, bounds, params, velocities, chain, seed, offset, lr, momentum,
                           decay, k, persistent, gaussian)  # fmt: skip


def _cd_epoch_block(
    X, bounds, params, velocities, chain, seed, offset, lr, momentum, decay, k, persistent,
    gaussian,
):  # fmt: skip
    W, b, c = params
    vW, vb, vc = velocities
    n_hidden, n_visible = W.shape
    dtype = np.dtype(W.dtype)
    t = dtype.type
    bounds = np.ascontiguousarray(bounds, np.int64)
    rows, chain_rows = _epoch_rows(X, bounds, chain, persistent)
    if rows == 0:
        return offset
    starts, _, _ = _epoch_plan(
        bounds, bounds.size - 1, chain_rows, n_visible, n_hidden, int(k), bool(persistent),
        2 if gaussian else 1, np.uint64(offset),
    )  # fmt: skip
    _EPOCH_BLOCK_CUDA[dtype][1, EPOCH_THREADS](
        X, _cuda.constant_table(bounds), rows, W, b, c, vW, vb, vc, chain, np.uint64(seed),
        np.uint64(offset), t(lr), t(momentum), t(decay), int(k), bool(persistent),
        bool(gaussian),
    )  # fmt: skip
    return int(starts[-1])


def cd_epoch_tiled_cuda(
    X, bounds, params, velocities, chain, seed, offset, lr, momentum, decay, k, persistent,
    gaussian,
):  # fmt: skip
    """cd_epoch_cpu on device arrays (``bounds`` stays a host array) for a
    model of any size: per batch, the positive phase, two tiled products per
    Gibbs step, and the fused weight and bias updates, all on the GPU (3 + 2k
    launches; see ``TiledEpoch``)."""
    _check_epoch("rbm.cd_epoch", X, bounds, params, velocities, chain, persistent)
    return _cd_epoch_tiled(X, bounds, params, velocities, chain, seed, offset, lr, momentum,
                           decay, k, persistent, gaussian)  # fmt: skip


def _cd_epoch_tiled(
    X, bounds, params, velocities, chain, seed, offset, lr, momentum, decay, k, persistent,
    gaussian,
):  # fmt: skip
    if len(bounds) < 2:
        return offset
    epoch = TiledEpoch(X, bounds, params, velocities, chain, seed, lr, momentum, decay, k,
                       persistent, gaussian)  # fmt: skip
    end = epoch.begin(bounds, offset)
    for n in np.diff(bounds).tolist():
        epoch.batch(n)
    return end


class TiledEpoch:
    """The tiled CUDA epoch (``cd_epoch_tiled_cuda``) of one model: its
    arrays and rule (the arguments of ``cd_epoch_cpu`` but the offset),
    work buffers for batches of up to the longest of ``bounds``' rows, and
    a batch table on the device, for epochs of as many batches as
    ``bounds`` has.

    Each epoch: ``begin(bounds, offset)`` writes the batch table (one copy
    to the device) and returns the offset after the epoch's draws; then
    ``batch(n)`` for each batch in turn, ``n`` its rows, launches it (3 + 2k
    launches). The batch table (int64, 1 + batches rows of 2) holds in row 0
    the cursor (the index of the batch the launches run) and the count of
    the weight update's blocks that have finished, and in row 1 + t batch
    t's first row in X and its first stream word. The kernels read the
    batch's row and words from the table, and the weight update, the last
    launch of a batch, moves the cursor on: so every batch of ``n`` rows
    makes the same launches with the same arguments, and the launches of
    one, captured as a CUDA graph, replay any other of its size."""

    def __init__(
        self, X, bounds, params, velocities, chain, seed, lr, momentum, decay, k, persistent,
        gaussian,
    ):  # fmt: skip
        W = params[0]
        n_hidden, n_visible = W.shape
        dtype = np.dtype(W.dtype)
        t = dtype.type
        rows = int(np.max(np.diff(bounds)))
        self.rows, self.batches = rows, len(bounds) - 1
        self.chain_rows = chain.shape[0] if persistent else rows
        self.arrays = (X, *params, *velocities, chain)
        self.rule = (int(seed), t(lr), t(momentum), t(decay), int(k), bool(persistent),
                     bool(gaussian))  # fmt: skip
        self.tp = cuda.device_array((rows, n_hidden), dtype)
        self.tn = cuda.device_array((max(self.chain_rows, 1), n_hidden), dtype)
        self.sn = cuda.device_array((max(self.chain_rows, 1), n_visible), dtype)
        self.hs = chain if persistent else cuda.device_array((rows, n_hidden), dtype)
        self.dummy = _dummy(dtype)
        self.table = cuda.device_array((1 + self.batches, 2), np.int64)

    def fits(
        self, X, bounds, params, velocities, chain, seed, lr, momentum, decay, k, persistent,
        gaussian,
    ):  # fmt: skip
        """Whether an epoch with these arguments may run on this one: the
        same arrays, the same rule, as many batches and the same longest."""
        t = self.tp.dtype.type
        rule = (int(seed), t(lr), t(momentum), t(decay), int(k), bool(persistent),
                bool(gaussian))  # fmt: skip
        return (
            len(bounds) - 1 == self.batches and int(np.max(np.diff(bounds))) == self.rows
            and rule == self.rule
            and all(a is b for a, b in zip((X, *params, *velocities, chain), self.arrays,
                                           strict=True))
        )  # fmt: skip

    def begin(self, bounds, offset):
        """Write the batch table of an epoch over ``bounds`` whose draws start
        at ``offset``, its cursor on the first batch; return the offset after
        the epoch's draws."""
        W = self.arrays[1]
        n_hidden, n_visible = W.shape
        _, _, _, k, persistent, gaussian = self.rule[1:]
        bounds = np.ascontiguousarray(bounds, np.int64)
        starts, _, _ = _epoch_plan(
            bounds, 1, self.chain_rows, n_visible, n_hidden, k, persistent, 2 if gaussian else 1,
            np.uint64(offset),
        )  # fmt: skip
        table = np.zeros((1 + self.batches, 2), np.int64)
        table[1:, 0] = bounds[:-1]
        table[1:, 1] = starts[:-1]
        self.table.copy_to_device(table)
        return int(starts[-1])

    def batch(self, n):
        """Launch the batch at the table's cursor, of ``n`` rows."""
        X, W, b, c, vW, vb, vc, _ = self.arrays
        seed, lr, momentum, decay, k, persistent, gaussian = self.rule
        t = self.tp.dtype.type
        tp, tn, sn, hs, table, dummy = self.tp, self.tn, self.sn, self.hs, self.table, self.dummy
        n_hidden, n_visible = W.shape
        m = self.chain_rows if persistent else n
        vis_activation = IDENTITY if gaussian else SIGMOID
        vis_sampling = GAUSSIAN if gaussian else BERNOULLI
        offset = _launch_conditional(
            _HIDDEN_CUDA, X, True, n, W, c, SIGMOID, t(1) / t(n), tp,
            NO_SAMPLE if persistent else BERNOULLI, hs, seed, table, 0, dummy,
        )  # fmt: skip
        for step in range(k):
            offset = _launch_conditional(
                _VISIBLE_CUDA, hs, False, m, W, b, vis_activation, t(1), None, vis_sampling, sn,
                seed, table, offset, dummy,
            )  # fmt: skip
            sample = persistent or step < k - 1
            offset = _launch_conditional(
                _HIDDEN_CUDA, sn, False, m, W, c, SIGMOID,
                -t(1) / t(m) if step == k - 1 else t(1), tn, BERNOULLI if sample else NO_SAMPLE,
                hs, seed, table, offset, dummy,
            )  # fmt: skip
        bias_blocks, bias_threads = _cuda.grid_1d(n_hidden + n_visible)
        _update_biases_kernel[bias_blocks, bias_threads](
            tp, X, table, n, tn, sn, m, b, c, vb, vc, lr, momentum
        )
        weight_grid = ((n_visible + TILE - 1) // TILE, (n_hidden + TILE - 1) // TILE)
        _update_weights_kernel[weight_grid, (THREADS, THREADS)](
            tp, X, table, n, tn, sn, m, W, vW, lr, momentum, decay
        )


def free_energy_cuda(v, z, b, gaussian, out):
    """free_energy_cpu on device arrays: one thread per row."""
    n = v.shape[0]
    check_shapes("rbm.free_energy", z=(z, (n, z.shape[1])), b=(b, v.shape[1:]), out=(out, (n,)))
    if v.shape[0]:
        blocks, threads = _cuda.grid_1d(v.shape[0])
        _free_energy_kernel[blocks, threads](v, z, b, bool(gaussian), out)
    return out


def pseudo_likelihood_cuda(v, z, W, b, index, out):
    """pseudo_likelihood_cpu on device arrays (``index`` a device int64 array)."""
    _check_pseudo_likelihood(v, z, W, b, index, out)
    if v.shape[0]:
        blocks, threads = _cuda.grid_1d(v.shape[0])
        _pseudo_likelihood_kernel[blocks, threads](v, z, W, b, index, out)
    return out


# --- table ----------------------------------------------------------------------------

KERNELS = {
    "rbm.conditional": OpKernels(conditional_ref, conditional_cpu, conditional_cuda),
    "rbm.cd_epoch": OpKernels(cd_gradient_ref, cd_epoch_cpu, cd_epoch_cuda),
    "rbm.free_energy": OpKernels(free_energy_ref, free_energy_cpu, free_energy_cuda),
    "rbm.pseudo_likelihood": OpKernels(
        pseudo_likelihood_ref, pseudo_likelihood_cpu, pseudo_likelihood_cuda
    ),
}
