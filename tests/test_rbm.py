"""RBM kernels and gn.RBM: CD-k gradients against the numpy reference driven by
the same random numbers, CPU against CUDA (same samples, same parameters),
free energy and pseudo-likelihood, Gaussian visible units, input checks, and
scikit-learn's Pipeline and GridSearchCV."""

import functools
import pickle

import numpy as np
import pytest
from conftest import DEVICES, SIMULATOR, put
from gpunet.kernels import rbm as R

import gpunet as gn
from gpunet import _rbm_epoch as E

# (n, m, V, H): batch rows, chain rows, visible and hidden units; small, not
# multiples of 4 (draws end mid-block) or of the tile sizes.
SHAPES = [(4, 3, 7, 5), (1, 2, 3, 1), (10, 10, 65, 9)]


def problem(shape, dtype, gaussian, seed=0):
    n, m, V, H = shape
    rng = np.random.default_rng(seed)
    if gaussian:
        v = rng.standard_normal((n, V))
    else:
        v = (rng.random((n, V)) < 0.4) * rng.random((n, V))
    W = rng.standard_normal((H, V)) * 0.5
    b, c = rng.standard_normal(V) * 0.2, rng.standard_normal(H) * 0.2
    chain = (rng.random((m, H)) < 0.5).astype(float)
    return [a.astype(dtype) for a in (v, W, b, c, chain)]


@pytest.mark.parametrize("persistent,k,gaussian", [(True, 1, False), (False, 2, True)])
def test_cpu_epoch_drawing_ahead_changes_nothing(persistent, k, gaussian):
    """An epoch long enough for gn.RBM's driver to draw its uniforms ahead on a
    second thread gives, bit for bit, what it gives drawing them on its own,
    and what the serial kernel gives; the same batches in calls too short to
    draw ahead continue the stream where the epoch does, to the same
    parameters (within rounding: each call's last step updates through the
    velocity, the others add the gradient directly, and BLAS may fuse that
    add)."""
    import numba

    if numba.get_num_threads() < 2:
        pytest.skip("drawing ahead needs a second thread")
    n_batches = E.DRAW_AHEAD_MIN_BATCHES + 2 * R.DRAW_CHUNK + 3
    v, W, b, c, chain = problem((3 * n_batches, 3, 7, 5), np.float32, gaussian, seed=5)
    bounds = np.arange(0, 3 * n_batches + 1, 3, dtype=np.int64)
    kw = dict(k=k, persistent=persistent, gaussian=gaussian)
    args = (v, W, b, c, chain, bounds, 7, 8, 0.05, 0.0, 0.0)
    draw_ahead = E.DrawAhead()
    ahead = epoch("cpu", *args, fn=functools.partial(E.cd_epoch_threaded, draw_ahead=draw_ahead),
                  **kw)  # fmt: skip
    draw_ahead.skip = 1  # the next call skips drawing ahead
    alone = epoch("cpu", *args, fn=functools.partial(E.cd_epoch_threaded, draw_ahead=draw_ahead),
                  **kw)  # fmt: skip
    assert draw_ahead.skip == 0
    serial = epoch("cpu", *args, **kw)
    for other in (alone, serial):
        for got, want in zip(
            [*ahead[0], *ahead[1], ahead[2]], [*other[0], *other[1], other[2]], strict=True
        ):
            np.testing.assert_array_equal(got, want)
        assert ahead[3] == other[3]
    params = [a.copy() for a in (W, b, c)]
    velocities = [np.zeros_like(a) for a in params]
    chain_parts, offset = chain.copy(), 8
    step = E.DRAW_AHEAD_MIN_BATCHES - 1
    for first in range(0, n_batches, step):
        part = bounds[first : first + step + 1]
        rows = v[part[0] : part[-1]]
        offset = E.cd_epoch_threaded(
            rows, part - part[0], params, velocities, chain_parts, 7, offset, 0.05, 0.0, 0.0,
            k, persistent, gaussian,
        )  # fmt: skip
    assert ahead[3] == offset
    for got, want in zip(ahead[0], params, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_draw_ahead_backs_off_after_falling_behind():
    """4, 8, ... epochs skip drawing ahead after each that fell behind, up to
    DRAW_AHEAD_MAX_BACKOFF; an epoch that kept up resets the back-off; short
    epochs neither draw ahead nor count as skipped."""
    import numba

    if numba.get_num_threads() < 2:
        pytest.skip("drawing ahead needs a second thread")
    policy, long = E.DrawAhead(), E.DRAW_AHEAD_MIN_BATCHES
    assert policy.allows(long) and not policy.allows(long - 1)
    for backoff in (4, 8, 16):
        policy.fell_behind()
        assert [policy.allows(long) for _ in range(backoff + 1)] == [False] * backoff + [True]
    for _ in range(10):
        policy.fell_behind()
    assert policy.skip == E.DRAW_AHEAD_MAX_BACKOFF
    policy.kept_up()
    policy.fell_behind()
    assert policy.skip == 4


def epoch(device, v, W, b, c, chain, bounds, seed, offset, lr, momentum, decay, fn=None, **kw):
    """Run one epoch on ``device`` from copies, with ``fn`` or the device's
    kernel; return host (params, velocities, chain, offset)."""
    params = [put(a.copy(), device) for a in (W, b, c)]
    velocities = [put(np.zeros_like(a), device) for a in (W, b, c)]
    chain = put(chain.copy(), device)
    fn = fn or (R.cd_epoch_cpu if device == "cpu" else R.cd_epoch_cuda)
    end = fn(put(v, device), bounds, params, velocities, chain, seed, offset, lr, momentum, decay,
             kw["k"], kw["persistent"], kw["gaussian"])  # fmt: skip
    host = [gn.to_numpy(a) for a in (*params, *velocities, chain)]
    return host[:3], host[3:6], host[6], end


# --- kernels against the references ---------------------------------------------------


@pytest.mark.parametrize("gaussian", [False, True])
@pytest.mark.parametrize("persistent", [True, False])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("shape", SHAPES)
def test_cd_update_matches_the_reference_gradient(shape, k, persistent, gaussian):
    """With lr 1 and no momentum, one update adds exactly the reference gradient."""
    v, W, b, c, chain = problem(shape, np.float64, gaussian)
    n, m = shape[:2]
    dW, db, dc, new_chain, end = R.cd_gradient_ref(
        v, W, b, c, chain, 11, 8, k, persistent, gaussian
    )
    chain_rows = m if persistent else n
    assert end - 8 == R.cd_words(n, chain_rows, shape[2], shape[3], k, persistent, gaussian)
    params, _, got_chain, got_end = epoch(
        "cpu", v, W, b, c, chain, np.array([0, n]), 11, 8, 1.0, 0.0, 0.0,
        k=k, persistent=persistent, gaussian=gaussian,
    )  # fmt: skip
    assert got_end == end
    for got, start, grad in zip(params, (W, b, c), (dW, db, dc), strict=True):
        np.testing.assert_allclose(got - start, grad, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(got_chain, new_chain)


def test_momentum_and_weight_decay_follow_the_reference_over_batches():
    shape = (6, 4, 9, 5)
    v, W, b, c, chain = problem(shape, np.float64, False, seed=3)
    bounds = np.array([0, 3, 6])
    params, velocities = [W, b, c], [np.zeros_like(a) for a in (W, b, c)]
    offset, ref_chain = 0, chain
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        *grads, ref_chain, offset = R.cd_gradient_ref(
            v[start:stop], *params, ref_chain, 5, offset, 2, True, False
        )
        params, velocities = R.update_ref(params, velocities, grads, 0.3, 0.8, 0.01)
    got_params, got_velocities, got_chain, end = epoch(
        "cpu", v, W, b, c, chain, bounds, 5, 0, 0.3, 0.8, 0.01, k=2, persistent=True,
        gaussian=False,
    )  # fmt: skip
    assert end == offset
    for got, want in zip(got_params + got_velocities, params + velocities, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-12)
    np.testing.assert_array_equal(got_chain, ref_chain)


def reference_epoch(v, W, b, c, chain, bounds, seed, lr, momentum, decay, k):
    """PCD-k updates batch by batch with the references: (params, velocities, chain, offset)."""
    params, velocities = [W, b, c], [np.zeros_like(a) for a in (W, b, c)]
    offset = 0
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        *grads, chain, offset = R.cd_gradient_ref(
            v[start:stop], *params, chain, seed, offset, k, True, False
        )
        params, velocities = R.update_ref(params, velocities, grads, lr, momentum, decay)
    return params, velocities, chain, offset


@pytest.mark.parametrize("transposed_from", [1, 10**9])
@pytest.mark.parametrize("momentum, decay", [(0.0, 0.0), (0.5, 0.01)])
def test_epoch_of_many_batches_follows_the_reference(monkeypatch, transposed_from, momentum,
                                                     decay):  # fmt: skip
    """Both weight layouts of the CPU epoch, with and without momentum: the
    velocities after the epoch are the last step's even when momentum is 0."""
    monkeypatch.setattr(R, "TRANSPOSED_MIN_BATCHES", transposed_from)
    v, W, b, c, chain = problem((30, 3, 9, 6), np.float64, False, seed=7)
    bounds = np.arange(0, 31, 3)
    want = reference_epoch(v, W, b, c, chain, bounds, 4, 0.2, momentum, decay, 1)
    got = epoch("cpu", v, W, b, c, chain, bounds, 4, 0, 0.2, momentum, decay, k=1,
                persistent=True, gaussian=False)  # fmt: skip
    assert got[3] == want[3]
    for g, w in zip(got[0] + got[1], want[0] + want[1], strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(got[2], want[2])


@pytest.mark.parametrize("device", DEVICES)
def test_free_energy_and_pseudo_likelihood_match_references(device):
    v, W, b, c, _ = problem((9, 1, 13, 6), np.float32, False, seed=4)
    v = (v > 0.2).astype(np.float32)
    index = np.random.default_rng(1).integers(0, 13, 9)
    z = (v.astype(np.float64) @ W.T + c).astype(np.float32)
    fe_fn = R.free_energy_cpu if device == "cpu" else R.free_energy_cuda
    pl_fn = R.pseudo_likelihood_cpu if device == "cpu" else R.pseudo_likelihood_cuda
    for gaussian in (False, True):
        out = put(np.empty(9, np.float32), device)
        fe_fn(put(v, device), put(z, device), put(b, device), gaussian, out)
        want = R.free_energy_ref(v, W, b, c, gaussian)
        np.testing.assert_allclose(gn.to_numpy(out), want, rtol=1e-5, atol=1e-5)
    out = put(np.empty(9, np.float32), device)
    pl_fn(*(put(a, device) for a in (v, z, W, b, index)), out)
    want = R.pseudo_likelihood_ref(v, W, b, c, index)
    np.testing.assert_allclose(gn.to_numpy(out), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sampling", [R.BERNOULLI, R.GAUSSIAN])
def test_conditionals_sample_from_the_stream(device, sampling):
    """Means within float32 rounding of the reference, samples from the same
    uniforms: Bernoulli ones exactly (no uniform lies within rounding of its p)."""
    v, W, b, c, chain = problem((5, 6, 11, 7), np.float32, False, seed=5)
    fn = R.conditional_cpu if device == "cpu" else R.conditional_cuda
    gaussian = sampling == R.GAUSSIAN
    activation = R.IDENTITY if gaussian else R.SIGMOID
    mean, samples = (
        put(np.empty((6, 11), np.float32), device),
        put(np.empty((6, 11), np.float32), device),
    )
    args = (put(chain, device), put(W, device), put(b, device), False, activation)
    end = fn(*args, mean, 0.5, sampling, samples, 3, 12)
    want = R.visible_ref(chain, W, b, gaussian)
    u, want_end = R.draw_ref(want.shape, 3, 12, gaussian)
    assert end == want_end
    np.testing.assert_allclose(gn.to_numpy(mean), 0.5 * want, rtol=1e-5, atol=1e-6)
    want_samples = R.sample_ref(want, u, sampling)
    if gaussian:
        np.testing.assert_allclose(gn.to_numpy(samples), want_samples, rtol=1e-5, atol=1e-5)
    else:
        np.testing.assert_array_equal(gn.to_numpy(samples), want_samples)


@pytest.mark.cuda
@pytest.mark.parametrize("persistent, gaussian, k", [(True, False, 2), (False, True, 1)])
def test_cuda_epoch_matches_cpu(persistent, gaussian, k):
    """The tiled kernels (3 + 2k launches per batch), two batches with
    momentum and decay: the same chain bit for bit and the same parameters to
    float32 rounding on both devices."""
    v, W, b, c, chain = problem((8, 4, 7, 5), np.float32, gaussian, seed=6)
    if not gaussian:
        v = (v > 0.1).astype(np.float32)
    bounds = np.array([0, 4, 8])
    kw = dict(k=k, persistent=persistent, gaussian=gaussian)
    cpu = epoch("cpu", v, W, b, c, chain, bounds, 9, 4, 0.1, 0.5, 0.01, **kw)
    cuda = epoch("cuda", v, W, b, c, chain, bounds, 9, 4, 0.1, 0.5, 0.01,
                 fn=R.cd_epoch_tiled_cuda, **kw)  # fmt: skip
    assert cpu[3] == cuda[3]
    for got, want in zip(cuda[0] + cuda[1], cpu[0] + cpu[1], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(cuda[2], cpu[2])


# The single-block epoch: 6 visible x 4 hidden units, 3 batches of 3 rows.
BLOCK_CASES = [  # persistent, gaussian, k, momentum, decay
    (True, False, 1, 0.5, 0.01),
    (False, False, 2, 0.5, 0.01),
    (True, True, 2, 0.0, 0.0),
    (False, True, 1, 0.9, 0.001),
]


def block_problem(gaussian, dtype=np.float32):
    v, W, b, c, chain = problem((9, 3, 6, 4), dtype, gaussian, seed=6)
    if not gaussian:
        v = (v > 0.1).astype(dtype)
    return v, W, b, c, chain, np.array([0, 3, 6, 9])


@pytest.mark.cuda
@pytest.mark.parametrize("persistent, gaussian, k, momentum, decay", BLOCK_CASES)
def test_single_block_epoch_matches_cpu_in_one_launch(persistent, gaussian, k, momentum,
                                                      decay, launches):  # fmt: skip
    """One launch for the epoch; the chain (PCD's samples) bit for bit as on
    the CPU, and the parameters and velocities within rtol 1e-5, atol 1e-6 of
    the CPU's (they differ in the last bits, as BLAS sums in its own order; a
    sample drawn otherwise would move them by about lr / 3)."""
    v, W, b, c, chain, bounds = block_problem(gaussian)
    kw = dict(k=k, persistent=persistent, gaussian=gaussian)
    args = (v, W, b, c, chain, bounds, 9, 4, 0.1, momentum, decay)
    cpu = epoch("cpu", *args, **kw)
    block = epoch("cuda", *args, fn=R.cd_epoch_cuda, **kw)
    assert launches == ["epoch_block"]
    assert block[3] == cpu[3]
    np.testing.assert_array_equal(block[2], cpu[2])
    for got, want in zip(block[0] + block[1], cpu[0] + cpu[1], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_fits_one_block_counts_the_shared_memory():
    """The digits model fits in float32, not in float64; an MNIST-sized one
    does not; the rule counts every value the kernel keeps in shared memory."""
    assert R.fits_one_block(64, 100, 10, 10, np.float32)
    assert not R.fits_one_block(64, 100, 10, 10, np.float64)
    assert not R.fits_one_block(784, 500, 100, 100, np.float32)
    # V 5 (an odd row stride already), H 681, one row: 6144 float64 values, 48 KiB.
    assert R.fits_one_block(5, 681, 1, 1, np.float64)
    assert not R.fits_one_block(5, 682, 1, 1, np.float64)
    assert not R.fits_one_block(5, 681, 1, 2, np.float64)


@pytest.mark.cuda
def test_single_block_epoch_fills_its_shared_memory_exactly():
    """A model that takes all of the float64 shared array (see the test
    above) runs a PCD-1 update to the end, as the reference does (the
    simulator's shared array is a numpy array: a value past its end would
    raise)."""
    v, W, b, c, chain = problem((1, 1, 5, 681), np.float64, False, seed=1)
    dW, db, dc, ref_chain, end = R.cd_gradient_ref(v, W, b, c, chain, 3, 0)
    want, _ = R.update_ref([W, b, c], [np.zeros_like(a) for a in (W, b, c)], [dW, db, dc], 0.1)
    got = epoch("cuda", v, W, b, c, chain, np.array([0, 1]), 3, 0, 0.1, 0.0, 0.0,
                fn=R.cd_epoch_block_cuda, k=1, persistent=True, gaussian=False)  # fmt: skip
    assert got[3] == end
    np.testing.assert_array_equal(got[2], ref_chain)
    for g, w in zip(got[0], want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)


@pytest.mark.cuda
def test_single_block_epoch_refuses_a_model_that_does_not_fit(monkeypatch, launches):
    v, W, b, c, chain, bounds = block_problem(False)
    monkeypatch.setattr(R, "EPOCH_SHARED_BYTES", 256)
    with pytest.raises(ValueError, match=r"expected an epoch that fits one block's 256 bytes"):
        epoch("cuda", v, W, b, c, chain, bounds, 9, 4, 0.1, 0.0, 0.0, fn=R.cd_epoch_block_cuda,
              k=1, persistent=True, gaussian=False)  # fmt: skip
    assert launches == []


# --- gn.RBM ---------------------------------------------------------------------------


def binary_data(n=60, V=16, seed=0):
    """Two prototypes with flipped bits: structure an RBM can learn quickly."""
    rng = np.random.default_rng(seed)
    protos = (rng.random((2, V)) < 0.5).astype(np.float32)
    X = protos[rng.integers(0, 2, n)]
    flip = rng.random(X.shape) < 0.05
    return np.where(flip, 1 - X, X).astype(np.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_rbm_api_shapes_and_dtypes(device):
    X = binary_data(n=12, V=10)
    rbm = gn.RBM(6, batch_size=6, n_iter=1, random_state=0, device=device)
    assert rbm.fit(X) is rbm
    assert rbm.components_.shape == (6, 10) and rbm.components_.dtype == np.float32
    assert rbm.intercept_hidden_.shape == (6,) and rbm.intercept_visible_.shape == (10,)
    assert rbm.h_samples_.shape == (6, 6) and set(np.unique(rbm.h_samples_)) <= {0.0, 1.0}
    assert rbm.device_.type == device and rbm.n_features_in_ == 10
    H = rbm.transform(X)
    assert H.shape == (12, 6) and H.dtype == np.float32 and ((H > 0) & (H < 1)).all()
    np.testing.assert_allclose(
        H, R.hidden_ref(X, rbm.components_, rbm.intercept_hidden_), atol=1e-5
    )
    V = rbm.gibbs(X)
    assert V.shape == X.shape and set(np.unique(V)) <= {0.0, 1.0}
    assert rbm.sample(3, n_gibbs=1).shape == (3, 10)
    fe = rbm.free_energy(X)
    want = R.free_energy_ref(X, rbm.components_, rbm.intercept_visible_, rbm.intercept_hidden_)
    np.testing.assert_allclose(fe, want, rtol=1e-5, atol=1e-4)
    assert rbm.reconstruct(X).shape == X.shape
    assert 0 <= rbm.reconstruction_error(X) < 1
    scores = rbm.score_samples(X)
    np.testing.assert_array_equal(scores, rbm.score_samples(X))  # int random_state: same units
    assert scores.shape == (12,) and (scores <= 0).all()
    rbm.partial_fit(X[:7])
    assert rbm.components_.shape == (6, 10)


@pytest.mark.cuda
def test_rbm_fits_the_same_model_on_cpu_and_cuda():
    X = binary_data(n=12, V=6)
    kw = dict(n_components=4, batch_size=6, n_iter=1, random_state=3, momentum=0.5, k=2)
    cpu, cuda = gn.RBM(device="cpu", **kw).fit(X), gn.RBM(device="cuda", **kw).fit(X)
    np.testing.assert_allclose(cuda.components_, cpu.components_, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(cuda.h_samples_, cpu.h_samples_)
    np.testing.assert_array_equal(cuda.gibbs(X), cpu.gibbs(X))
    np.testing.assert_allclose(cuda.score_samples(X), cpu.score_samples(X), rtol=1e-5, atol=1e-5)


@pytest.mark.cuda
def test_rbm_fit_takes_one_launch_per_epoch_when_the_model_fits(monkeypatch, launches):
    """gn.RBM picks the single-block epoch by itself; a model that does not
    fit (here: with the rule given no shared memory) keeps the tiled
    kernels' 3 + 2k launches per batch. Under the simulator the two give the
    same model bit for bit: the same sums in the same order."""
    X = binary_data(n=6, V=6)
    kw = dict(n_components=4, batch_size=3, n_iter=2, random_state=3, momentum=0.5, k=2,
              weight_decay=0.01, device="cuda")  # fmt: skip
    block = gn.RBM(**kw).fit(X)
    assert launches == ["epoch_block"] * 2
    launches.clear()
    monkeypatch.setattr(R, "EPOCH_SHARED_BYTES", 0)
    tiled = gn.RBM(**kw).fit(X)
    per_batch = ["conditional"] * 5 + ["_update_biases_kernel", "_update_weights_kernel"]
    assert launches == per_batch * 2 * 2
    for name in ("components_", "intercept_hidden_", "intercept_visible_", "h_samples_"):
        got, want = getattr(block, name), getattr(tiled, name)
        if SIMULATOR:
            np.testing.assert_array_equal(got, want)
        else:  # the compiler may fuse multiplies and adds differently in the two
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_rbm_starts_where_bernoulli_rbm_starts_and_learns():
    X = binary_data()
    rbm = gn.RBM(8, n_iter=0, random_state=0, device="cpu", dtype="float64").fit(X)
    want = np.random.RandomState(0).normal(0, 0.01, (8, 16))
    np.testing.assert_array_equal(rbm.components_, want)
    assert not rbm.intercept_hidden_.any() and not rbm.intercept_visible_.any()
    before, error = rbm.score_samples(X).mean(), rbm.reconstruction_error(X)
    rbm.set_params(n_iter=20, learning_rate=0.05).fit(X)
    assert rbm.score_samples(X).mean() > before + 1
    assert rbm.reconstruction_error(X) < 0.6 * error


def test_seed_reproduces_and_persistence_changes_the_chain():
    X = binary_data()
    a = gn.RBM(8, n_iter=3, random_state=1, device="cpu").fit(X)
    b = gn.RBM(8, n_iter=3, random_state=1, device="cpu").fit(X)
    np.testing.assert_array_equal(a.components_, b.components_)
    cd = gn.RBM(8, n_iter=3, random_state=1, persistent=False, device="cpu").fit(X)
    assert not np.array_equal(cd.components_, a.components_)
    assert not cd.h_samples_.any()


def test_gaussian_visible_units_learn_real_valued_data():
    rng = np.random.default_rng(2)
    protos = rng.standard_normal((2, 12))
    X = (protos[rng.integers(0, 2, 200)] + 0.3 * rng.standard_normal((200, 12))).astype(np.float32)
    rbm = gn.RBM(6, visible="gaussian", learning_rate=0.01, n_iter=15, random_state=0,
                 momentum=0.5, device="cpu")  # fmt: skip
    untrained = gn.RBM(6, visible="gaussian", n_iter=0, random_state=0, device="cpu").fit(X)
    rbm.fit(X)
    assert rbm.reconstruction_error(X) < 0.5 * untrained.reconstruction_error(X)
    samples = rbm.sample(50, n_gibbs=20)
    assert samples.shape == (50, 12) and np.isfinite(samples).all() and samples.std() > 0.1
    fe = rbm.free_energy(X)
    want = R.free_energy_ref(
        X, rbm.components_, rbm.intercept_visible_, rbm.intercept_hidden_, True
    )
    np.testing.assert_allclose(fe, want, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="Bernoulli visible units"):
        rbm.score_samples(X)


BAD_INPUTS = [
    (np.full((3, 4), 1.5), ValueError, r"in \[0, 1\] for Bernoulli"),
    (np.full((3, 4), -0.1), ValueError, r"in \[0, 1\] for Bernoulli"),
    (np.array([[0.5, np.nan, 0, 1]] * 3), ValueError, "NaN or infinity"),
    (np.zeros((3, 5)), ValueError, "with 4 features"),
    (np.zeros(4), ValueError, r"shape \(n_samples, n_features\)"),
    (np.zeros((0, 4)), ValueError, "at least one row"),
    (np.array([["a", "b", "c", "d"]]), TypeError, "to hold numbers"),
]


@pytest.mark.parametrize("X, error, message", BAD_INPUTS)
def test_bad_input_is_refused_before_any_work(X, error, message):
    rbm = gn.RBM(3, n_iter=1, random_state=0, device="cpu").fit(np.eye(4, dtype=np.float32))
    before = [rbm.components_.copy(), rbm.intercept_visible_.copy(), rbm.h_samples_.copy()]
    for method in (rbm.partial_fit, rbm.transform, rbm.score_samples, rbm.gibbs):
        with pytest.raises(error, match=message):
            method(X)
    after = [rbm.components_, rbm.intercept_visible_, rbm.h_samples_]
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(n_components=0), "n_components"),
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(batch_size=2.5), "batch_size"),
        (dict(k=0), "k to be"),
        (dict(momentum=1.0), "momentum"),
        (dict(visible="binary"), "visible"),
    ],
)
def test_bad_arguments_are_refused(params, message):
    with pytest.raises(ValueError, match=message):
        gn.RBM(device="cpu", **params).fit(np.eye(3))


def test_unfitted_and_params_protocol():
    rbm = gn.RBM(5, learning_rate=0.06)
    with pytest.raises(gn.rbm.NotFittedError, match="not fitted"):
        rbm.transform(np.eye(3))
    assert not hasattr(rbm, "components_")
    assert repr(rbm) == "RBM(n_components=5, learning_rate=0.06)"
    params = rbm.get_params()
    assert params["n_components"] == 5 and params["batch_size"] == 10 and params["k"] == 1
    assert rbm.set_params(k=2, momentum=0.5) is rbm and rbm.k == 2
    with pytest.raises(ValueError, match="expected a parameter of RBM"):
        rbm.set_params(n_hidden=3)


def test_works_in_sklearn_pipeline_and_grid_search():
    pytest.importorskip("sklearn")
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline

    X = binary_data(n=80)
    y = (X[:, 0] > 0.5).astype(int)
    pipe = Pipeline([("rbm", gn.RBM(8, n_iter=3, random_state=0, device="cpu")),
                     ("clf", LogisticRegression())])  # fmt: skip
    assert clone(pipe).fit(X, y).score(X, y) > 0.8
    search = GridSearchCV(pipe, {"rbm__n_components": [4, 8], "rbm__learning_rate": [0.05]}, cv=2)
    search.fit(X, y)
    assert search.best_params_["rbm__n_components"] in (4, 8)
    assert search.best_estimator_.named_steps["rbm"].components_.shape[1] == 16


def test_rbm_filters_image(tmp_path):
    pytest.importorskip("matplotlib")
    rbm = gn.RBM(6, n_iter=1, random_state=0, device="cpu").fit(binary_data(n=20, V=16))
    path = gn.plot.rbm_filters(rbm, tmp_path / "filters.png")
    assert path.stat().st_size > 100


def test_filter_grid_tiles_scaled_filters():
    grid = gn.plot.filter_grid(np.arange(5 * 4).reshape(5, 4), columns=3)
    assert grid.shape == (2 * 3 - 1, 3 * 3 - 1)
    np.testing.assert_allclose(grid[:2, :2], [[0, 1 / 3], [2 / 3, 1]])
    with pytest.raises(ValueError, match="not a square"):
        gn.plot.filter_grid(np.zeros((2, 5)))


@pytest.mark.parametrize("backend", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_rbm_launchers_refuse_arrays_of_mismatched_sizes(backend):
    """The launchers check the arrays an RBM hands them against each other."""
    import gpunet as gn
    from gpunet import dispatch

    rng = np.random.default_rng(0)
    W = rng.random((3, 4)).astype(np.float32)
    put = lambda a: gn.to_device(a, backend)  # noqa: E731
    v, bad_b = put(rng.random((2, 4)).astype(np.float32)), put(np.zeros(1, np.float32))
    out = put(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"rbm.conditional: expected bias of shape \(3,\)"):
        dispatch.kernel_for("rbm.conditional", backend)(v, put(W), bad_b, True, 1, out)
    params = [put(W), put(np.zeros(4, np.float32)), put(np.zeros(2, np.float32))]
    velocities = [put(np.zeros_like(W)), put(np.zeros(4, np.float32)), put(np.zeros(3, np.float32))]
    with pytest.raises(ValueError, match=r"rbm.cd_epoch: expected c of shape \(3,\)"):
        dispatch.kernel_for("rbm.cd_epoch", backend)(
            v, np.array([0, 2]), params, velocities, put(np.zeros((2, 3), np.float32)),
            0, 0, 0.1, 0.0, 0.0, 1, True, False,
        )  # fmt: skip
    if backend == "cuda":
        with pytest.raises(ValueError, match=r"rbm.cd_epoch: expected c of shape \(3,\)"):
            R.cd_epoch_block_cuda(
                v, np.array([0, 2]), params, velocities, put(np.zeros((2, 3), np.float32)),
                0, 0, 0.1, 0.0, 0.0, 1, True, False,
            )  # fmt: skip
    params[2] = put(np.zeros(3, np.float32))
    for bounds in ([0, 3], [1, 2], [0, 2, 2], [[0, 2]]):
        with pytest.raises(ValueError, match=r"rbm.cd_epoch: expected bounds rising from 0"):
            dispatch.kernel_for("rbm.cd_epoch", backend)(
                v, np.array(bounds), params, velocities, put(np.zeros((2, 3), np.float32)),
                0, 0, 0.1, 0.0, 0.0, 1, True, False,
            )  # fmt: skip
    np.testing.assert_array_equal(gn.to_numpy(params[0]), W)
    z = put(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"rbm.free_energy: expected out of shape \(2,\)"):
        dispatch.kernel_for("rbm.free_energy", backend)(
            v, z, put(np.zeros(4, np.float32)), False, put(np.zeros(3, np.float32))
        )


def test_fit_epochs_continues_a_pickled_rbm_to_the_uninterrupted_result():
    X = np.random.default_rng(3).random((40, 12))
    options = dict(n_iter=4, random_state=0, momentum=0.5, batch_size=8)
    whole = gn.RBM(6, **options).fit(X)
    part = gn.RBM(6, **options)
    for epoch in part.fit_epochs(X):
        if epoch == 2:
            break
    resumed = pickle.loads(pickle.dumps(part))
    assert list(resumed.fit_epochs(X, start=3)) == [3, 4]
    np.testing.assert_array_equal(resumed.components_, whole.components_)
    np.testing.assert_array_equal(resumed.h_samples_, whole.h_samples_)
    for start in (0, 1.5, True):
        with pytest.raises(ValueError, match="expected start to be an int >= 1"):
            part.fit_epochs(X, start=start)
    with pytest.raises(gn.NotFittedError):
        gn.RBM(6).fit_epochs(X, start=2)
