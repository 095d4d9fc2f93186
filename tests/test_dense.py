"""Dense kernels (CPU): forward and backward against the numpy references,
edge shapes, in-place scratch, and float64 finite-difference gradients."""

import numpy as np
import pytest
from conftest import DEVICES, put
from gpunet.kernels import dense as D

import gpunet as gn

ACTIVATIONS = list(D.EPILOGUES)
# (batch, in_features, out_features) at the edges of the tile and chunk sizes.
SHAPES = [(1, 1, 1), (31, 32, 33), (33, 31, 65), (7, 129, 3), (0, 5, 4), (64, 1, 200)]


def make(shape, dtype, seed=0):
    batch, n_in, n_out = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, n_in)).astype(dtype)
    W = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    g = rng.standard_normal((batch, n_out)).astype(dtype)
    return x, W, b, g


def tolerance(dtype, k):
    """Products of length k: float32 rounding grows with k."""
    return (1e-5, 1e-5 * np.sqrt(max(k, 1))) if dtype == np.float32 else (1e-12, 1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_backward_match_references(shape, activation, dtype):
    x, W, b, g = make(shape, dtype)
    batch, n_in, n_out = shape
    y = np.empty((batch, n_out), dtype)
    assert D.dense_cpu(x, W, b, y, activation, 0.2) is y
    rtol, atol = tolerance(dtype, n_in)
    np.testing.assert_allclose(y, D.dense_ref(x, W, b, activation, 0.2), rtol=rtol, atol=atol)

    dx, dW, db, dz = np.empty_like(x), np.empty_like(W), np.empty_like(b), np.empty_like(g)
    D.dense_backward_cpu(g, x, W, y, dx, dW, db, dz, activation, 0.2)
    want_all = D.dense_backward_ref(g, x, W, y, activation, 0.2)
    for got, want, k in zip((dx, dW, db), want_all, (n_out, batch, batch), strict=True):
        assert got.dtype == dtype
        rtol, atol = tolerance(dtype, k)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def test_grad_out_can_be_the_scratch():
    x, W, b, g = make((9, 6, 130), np.float64)
    y = D.dense_cpu(x, W, b, np.empty((9, 130)), "tanh")
    want = D.dense_backward_ref(g, x, W, y, "tanh")
    dx, dW, db = np.empty_like(x), np.empty_like(W), np.empty_like(b)
    D.dense_backward_cpu(g, x, W, y, dx, dW, db, g, "tanh")
    for got, ref in zip((dx, dW, db), want, strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradients_match_finite_differences(activation):
    """d/dp sum(g * dense(x, W, b)) by central differences, for p in x, W, b."""
    x, W, b, g = make((4, 3, 5), np.float64, seed=2)
    x[np.abs(x) < 0.05] = 0.3

    def loss(x, W, b):
        return np.sum(g * D.dense_cpu(x, W, b, np.empty((4, 5)), activation, 0.2))

    y = D.dense_cpu(x, W, b, np.empty((4, 5)), activation, 0.2)
    dx, dW, db = np.empty_like(x), np.empty_like(W), np.empty_like(b)
    D.dense_backward_cpu(g, x, W, y, dx, dW, db, np.empty_like(g), activation, 0.2)
    h = 1e-6
    for param, grad in ((x, dx), (W, dW), (b, db)):
        numeric = np.empty_like(param)
        for idx in np.ndindex(param.shape):
            saved = param[idx]
            param[idx] = saved + h
            up = loss(x, W, b)
            param[idx] = saved - h
            down = loss(x, W, b)
            param[idx] = saved
            numeric[idx] = (up - down) / (2 * h)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


# Under the simulator each block is 256 Python threads: keep to a few small shapes
# that still cross the 64-wide output tile and the 16-deep k step.
CUDA_SHAPES = [(1, 1, 1), (5, 17, 3), (66, 33, 2), (3, 4, 65)]


@pytest.mark.cuda
@pytest.mark.parametrize("activation", [None, "relu", "sigmoid"])
@pytest.mark.parametrize("shape", CUDA_SHAPES)
def test_cuda_matches_references(shape, activation):
    from numba import cuda

    x, W, b, g = make(shape, np.float32)
    batch, n_in, n_out = shape
    d = {name: cuda.to_device(v) for name, v in (("x", x), ("W", W), ("b", b), ("g", g))}
    y = cuda.device_array((batch, n_out), np.float32)
    D.dense_cuda(d["x"], d["W"], d["b"], y, activation)
    y_host = y.copy_to_host()
    rtol, atol = tolerance(np.float32, n_in)
    np.testing.assert_allclose(y_host, D.dense_ref(x, W, b, activation), rtol=rtol, atol=atol)

    dx, dW = cuda.device_array_like(d["x"]), cuda.device_array_like(d["W"])
    db, dz = cuda.device_array_like(d["b"]), cuda.device_array_like(d["g"])
    D.dense_backward_cuda(d["g"], d["x"], d["W"], y, dx, dW, db, dz, activation)
    want = D.dense_backward_ref(g, x, W, y_host, activation)
    for got, ref, k in zip((dx, dW, db), want, (n_out, batch, batch), strict=True):
        rtol, atol = tolerance(np.float32, k)
        np.testing.assert_allclose(got.copy_to_host(), ref, rtol=rtol, atol=atol)


@pytest.mark.cuda
@pytest.mark.parametrize("in_place", [False, True])
def test_cuda_backward_is_two_launches_and_one_for_the_first_layer(launches, in_place):
    """dz, db and dW come from one launch (the gradient pass fused into the
    weight product), dx from a second; dW spans two rows of tiles (70 input
    features), so with dz written over grad_out (``in_place``) the blocks of
    the second row would read what the first wrote: that case takes the
    separate gradient pass, and both give the references' values."""
    from numba import cuda

    x, W, b, g = make((3, 70, 5), np.float32)
    y = D.dense_ref(x, W, b, "leaky_relu", 0.2)
    want = D.dense_backward_ref(g, x, W, y, "leaky_relu", 0.2)
    d_x, d_W, d_y = (cuda.to_device(a) for a in (x, W, y))
    for input_grad in (True, False):
        d_g = cuda.to_device(g)
        dz = d_g if in_place else cuda.device_array_like(d_g)
        dx = cuda.device_array_like(d_x) if input_grad else None
        dW, db = cuda.device_array_like(d_W), cuda.to_device(np.full_like(b, np.nan))
        launches.clear()
        D.dense_backward_cuda(d_g, d_x, d_W, d_y, dx, dW, db, dz, "leaky_relu", 0.2)
        fused = ["weight_grad"] + (["gemm"] if input_grad else [])
        separate = ["grad", "gemm"] + (["gemm"] if input_grad else [])
        assert launches == (separate if in_place else fused)
        got = (dx.copy_to_host() if input_grad else want[0], dW.copy_to_host(), db.copy_to_host())
        for value, ref, k in zip(got, want, (5, 3, 3), strict=True):
            np.testing.assert_allclose(value, ref, *tolerance(np.float32, k))
        dz_want = np.where(y > 0, g, g * np.float32(0.2))  # d loss / d (x @ W + b)
        np.testing.assert_allclose(dz.copy_to_host(), dz_want, rtol=1e-6)


@pytest.mark.cuda
def test_cuda_large_tile_matches_references_and_the_small_tile(monkeypatch):
    """Every product on the 128 x 128 tile (forced here for all float32
    outputs): the forward equals the 64 x 64 tile's exactly (each output sums
    its k terms in the same order; sigmoid's large-tile forward is a product
    plus an elementwise pass), and all match the references, with accumulated
    parameter gradients. The shape crosses the tile's row edge and the 8-deep
    k step; x.T @ dz runs 129 deep."""
    from numba import cuda

    x, W, b, g = make((129, 17, 5), np.float32, seed=3)
    d = [cuda.to_device(v) for v in (x, W, b, g)]
    y_small = cuda.device_array(g.shape, np.float32)
    D.dense_cuda(d[0], d[1], d[2], y_small, "sigmoid")
    monkeypatch.setattr(D, "LARGE_TILE_MIN_BLOCKS", 1)
    assert D.gemm_tile(np.dtype(np.float32), 1, 1) is D.LARGE_TILE
    y = cuda.device_array(g.shape, np.float32)
    D.dense_cuda(d[0], d[1], d[2], y, "sigmoid")
    y_host = y.copy_to_host()
    np.testing.assert_array_equal(y_host, y_small.copy_to_host())
    np.testing.assert_allclose(y_host, D.dense_ref(x, W, b, "sigmoid"), rtol=1e-5, atol=1e-5)

    dx, dz = cuda.device_array_like(d[0]), cuda.device_array_like(d[3])
    dW, db = cuda.to_device(np.full_like(W, 0.5)), cuda.to_device(np.full_like(b, 0.5))
    D.dense_backward_cuda(d[3], d[0], d[1], y, dx, dW, db, dz, "sigmoid", accumulate=True)
    want = D.dense_backward_ref(g, x, W, y_host, "sigmoid")
    refs = (want[0], want[1] + 0.5, want[2] + 0.5)
    for got, ref, k in zip((dx, dW, db), refs, (5, 129, 129), strict=True):
        rtol, atol = tolerance(np.float32, k)
        np.testing.assert_allclose(got.copy_to_host(), ref, rtol=rtol, atol=atol)


def test_gemm_tile_is_large_only_for_float32_outputs_that_fill_a_gpu():
    f32, f64 = np.dtype(np.float32), np.dtype(np.float64)
    assert D.gemm_tile(f32, 4096, 4096) is D.LARGE_TILE
    assert D.gemm_tile(f64, 4096, 4096) is D.SMALL_TILE
    assert D.gemm_tile(f32, 128, 512) is D.SMALL_TILE  # an MLP layer at batch 128
    side = D.LARGE_TILE.size
    rows = D.LARGE_TILE_MIN_BLOCKS // 8
    assert D.gemm_tile(f32, rows * side, 8 * side) is D.LARGE_TILE
    assert D.gemm_tile(f32, rows * side - side, 8 * side) is D.SMALL_TILE


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("activation", ["leaky_relu", "tanh"])
def test_ops_dense_on_each_device(device, activation):
    x, W, b, g = make((5, 17, 3), np.float32)
    y = gn.ops.dense(put(x, device), put(W, device), put(b, device), activation, 0.1)
    np.testing.assert_allclose(
        gn.to_numpy(y), D.dense_ref(x, W, b, activation, 0.1), rtol=1e-5, atol=1e-5
    )
    grads = gn.ops.dense_backward(
        put(g, device), put(x, device), put(W, device), y, activation, 0.1
    )
    want = D.dense_backward_ref(g, x, W, gn.to_numpy(y), activation, 0.1)
    for got, ref in zip(grads, want, strict=True):
        np.testing.assert_allclose(gn.to_numpy(got), ref, rtol=1e-5, atol=1e-5)


def test_ops_dense_out_and_non_contiguous_weights():
    x, W, b, _ = make((4, 6, 5), np.float64)
    out = np.empty((4, 5))
    assert gn.ops.dense(x, np.asfortranarray(W), b, "relu", out=out) is out
    np.testing.assert_allclose(out, D.dense_ref(x, W, b, "relu"), rtol=1e-12)


@pytest.mark.parametrize("activation", ["leaky_relu", "tanh"])
def test_ops_dense_host_fast_path_matches_the_checked_path(activation):
    """Contiguous host arrays with every output given take the fast path;
    a strided view of the same values takes the checked one: same bits."""
    x, W, b, g = make((5, 7, 3), np.float32)
    fast_y, slow_y = np.empty((5, 3), np.float32), np.empty((5, 3), np.float32)
    gn.ops.dense(x, W, b, activation, 0.2, out=fast_y)
    gn.ops.dense(np.asfortranarray(x), W, b, activation, 0.2, out=slow_y)
    np.testing.assert_array_equal(fast_y, slow_y)
    outs = dict(dx=np.empty_like(x), dW=np.empty_like(W), db=np.empty_like(b), dz=np.empty_like(g))
    fast = gn.ops.dense_backward(g, x, W, fast_y, activation, 0.2, **outs)
    slow = gn.ops.dense_backward(np.asfortranarray(g), x, W, slow_y, activation, 0.2)
    for got, want in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(got, want)
    flat_grad = np.zeros(W.size + b.size, np.float32)  # dW and db in one buffer, apart
    dW, db = flat_grad[: W.size].reshape(W.shape), flat_grad[W.size :]
    gn.ops.dense_backward(
        g, x, W, fast_y, activation, 0.2, input_grad=False, dW=dW, db=db, dz=np.empty_like(g)
    )
    np.testing.assert_array_equal(dW, slow[1])
    np.testing.assert_array_equal(db, slow[2])
    with pytest.raises(ValueError, match="expected db not to overlap dW"):
        overlapping = dict(dW=flat_grad[:21].reshape(W.shape), db=flat_grad[20:23])
        gn.ops.dense_backward(g, x, W, fast_y, input_grad=False, dz=np.empty_like(g), **overlapping)
    with pytest.raises(ValueError, match="expected out not to overlap x"):
        gn.ops.dense(x, W, b, out=x.reshape(-1)[:15].reshape(5, 3))


def test_ops_dense_rejects_bad_input():
    x, W, b, g = make((4, 6, 5), np.float32)
    with pytest.raises(ValueError, match="expected activation in"):
        gn.ops.dense(x, W, b, "softplus")
    with pytest.raises(ValueError, match=r"expected x of shape \(batch, 6\)"):
        gn.ops.dense(x.T.copy(), W, b)
    with pytest.raises(ValueError, match=r"expected b of shape \(5,\)"):
        gn.ops.dense(x, W, b[:4])
    with pytest.raises(TypeError, match="expected W of dtype float32 like x, got float64"):
        gn.ops.dense(x, W.astype(np.float64), b)
    with pytest.raises(ValueError, match=r"expected grad_out of shape \(4, 5\)"):
        gn.ops.dense_backward(g[:3], x, W, g)


@pytest.mark.cuda
def test_ops_dense_refuses_mixed_devices():
    x, W, b, _ = make((2, 3, 4), np.float32)
    with pytest.raises(gn.DeviceError, match="x on cpu, W on cuda"):
        gn.ops.dense(x, gn.to_device(W, "cuda"), b)


@pytest.mark.parametrize("backend", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_accumulate_adds_parameter_gradients(backend):
    """Two backward passes with accumulate=True give the sum of their dW and db;
    dx is always overwritten."""
    x, W, b, g = make((5, 17, 3), np.float32)
    y = D.dense_ref(x, W, b, "sigmoid")
    g2 = g[::-1].copy()
    ref1 = D.dense_backward_ref(g, x, W, y, "sigmoid")
    ref2 = D.dense_backward_ref(g2, x, W, y, "sigmoid")
    if backend == "cpu":
        arrays = [a.copy() for a in (x, W, y)]
        dW, db = np.full_like(W, 0.5), np.full_like(b, 0.5)
        dx, dz = np.empty_like(x), np.empty_like(g)
        for grad_out in (g, g2):
            D.dense_backward_cpu(
                grad_out.copy(), *arrays, dx, dW, db, dz, "sigmoid", accumulate=True
            )
    else:
        from numba import cuda

        arrays = [cuda.to_device(a) for a in (x, W, y)]
        dW, db = cuda.to_device(np.full_like(W, 0.5)), cuda.to_device(np.full_like(b, 0.5))
        dx, dz = cuda.device_array_like(x), cuda.device_array_like(g)
        for grad_out in (g, g2):
            D.dense_backward_cuda(
                cuda.to_device(grad_out), *arrays, dx, dW, db, dz, "sigmoid", accumulate=True
            )
        dx, dW, db = dx.copy_to_host(), dW.copy_to_host(), db.copy_to_host()
    np.testing.assert_allclose(dW, 0.5 + ref1[1] + ref2[1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(db, 0.5 + ref1[2] + ref2[2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, ref2[0], rtol=1e-5, atol=1e-5)


# --- the CUDA product chosen by gn.set_gemm -------------------------------------------


def host_matmul(a, b, out, trans_a, trans_b, accumulate):
    """A stand-in for cuBLAS with its calling convention, computed on the host."""
    A, B = a.copy_to_host(), b.copy_to_host()
    product = (A.T if trans_a else A) @ (B.T if trans_b else B)
    out.copy_to_device(out.copy_to_host() + product if accumulate else product)


@pytest.mark.cuda
@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
@pytest.mark.parametrize("accumulate", [False, True])
def test_cuda_layer_with_an_outside_product(activation, accumulate):
    """The path cuBLAS takes: product, then the epilogue kernel; backward products by matmul."""
    from numba import cuda

    shape = (5, 7, 33)
    x, W, b, g = make(shape, np.float32)
    dx, dW, db, dz = (cuda.device_array(a.shape, np.float32) for a in (x, W, b, g))
    dW.copy_to_device(np.ones_like(W))
    db.copy_to_device(np.ones_like(b))
    y = cuda.device_array(g.shape, np.float32)
    d = [cuda.to_device(a) for a in (x, W, b, g)]
    D.dense_cuda(d[0], d[1], d[2], y, activation, matmul=host_matmul)
    y_host = y.copy_to_host()
    np.testing.assert_allclose(y_host, D.dense_ref(x, W, b, activation), rtol=1e-5, atol=1e-5)
    D.dense_backward_cuda(
        d[3], d[0], d[1], y, dx, dW, db, dz, activation, accumulate=accumulate, matmul=host_matmul
    )
    want = D.dense_backward_ref(g, x, W, y_host, activation)
    extra = 1.0 if accumulate else 0.0
    for got, ref in zip((dx, dW, db), (want[0], want[1] + extra, want[2] + extra), strict=True):
        np.testing.assert_allclose(got.copy_to_host(), ref, rtol=1e-5, atol=1e-5)


def test_set_gemm_validates_and_reports():
    assert gn.get_gemm() == "auto"
    with pytest.raises(ValueError, match="gemm mode"):
        gn.set_gemm("mkl")
    gn.set_gemm("numba")
    try:
        assert gn.get_gemm() == "numba"
        assert not gn.gemm._use_cublas(4096, 4096, 4096)
    finally:
        gn.set_gemm("auto")
    if not gn.gemm.cublas_available():
        with pytest.raises(RuntimeError, match="cannot use cuBLAS"):
            gn.set_gemm("cublas")
        assert not gn.gemm._use_cublas(4096, 4096, 4096)


@pytest.mark.requires_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(33, 65, 31), (256, 784, 1024)])
def test_cublas_and_numba_products_agree(shape, dtype):
    """Forward, backward (all three product layouts) and accumulated gradients."""
    pytest.importorskip("cupy")
    x, W, b, g = make(shape, dtype)
    d = [gn.to_device(a, "cuda") for a in (x, W, b, g)]
    results = []
    for mode in ("numba", "cublas"):
        gn.set_gemm(mode)
        try:
            y = gn.ops.dense(*d[:3], "tanh")
            grads = gn.ops.dense_backward(d[3], d[0], d[1], y, "tanh")
            dW, db = gn.to_device(np.ones_like(W), "cuda"), gn.to_device(np.ones_like(b), "cuda")
            gn.ops.dense_backward(
                d[3], d[0], d[1], y, "tanh", input_grad=False, accumulate=True, dW=dW, db=db
            )
            results.append([gn.to_numpy(a) for a in (y, *grads, dW, db)])
        finally:
            gn.set_gemm("auto")
    rtol, atol = tolerance(dtype, shape[1])
    for got, want in zip(results[1], results[0], strict=True):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
