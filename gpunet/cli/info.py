"""``gpunet info``: versions, threads and devices, then a self-check running
every op of ``gn.ops`` (and the RNG) once on the current device against its
numpy reference; ``--kernels`` adds ptxas's registers, memory and spills for
every CUDA kernel."""

from __future__ import annotations

import inspect
import platform
import re
import sys
import time
from collections.abc import Callable

import numpy as np

from ..kernels import _cache
from ._output import format_seconds, format_table, package_version

#: Shape of the self-check's inputs: small (the CUDA simulator runs it too) and
#: not a multiple of the warp size.
CHECK_SHAPE = (4, 33)
#: Tolerances (rtol, atol) for float32 kernels against their float64-accurate references.
CHECK_TOLERANCE = (1e-5, 1e-6)
#: Architectures ``info --kernels`` assembles for.
KERNEL_ARCHS = ("sm_80", "sm_90")


def add_parser(subparsers) -> None:
    info = subparsers.add_parser(
        "info",
        help="versions, devices and a self-check of every op",
        description="Print versions and devices, then run every op once on the current "
        "device against its numpy reference. Exits non-zero if a check fails.",
    )
    info.add_argument(
        "--kernels",
        action="store_true",
        help="also compile every CUDA kernel (no GPU needed) and print ptxas's registers, "
        "shared and local memory, and spills for " + " and ".join(KERNEL_ARCHS),
    )
    info.set_defaults(run=_run_info)


def _run_info(args) -> int:
    import gpunet as gn

    _print_environment(gn)
    failures = _print_self_check(gn)
    if args.kernels:
        failures += _print_kernels()
    return 1 if failures else 0


def _cuda_toolkit() -> str:
    """The CUDA runtime's version, else the CUDA wheels' version, else "unknown"."""
    from ..kernels import _cuda

    if _cuda.HAVE_NUMBA_CUDA and not _cuda.SIMULATOR:
        try:
            from numba.cuda.cudadrv.runtime import runtime

            major, minor = runtime.getversion()
            if major > 0:
                return f"{major}.{minor} (CUDA runtime)"
        except Exception:  # no loadable runtime library: fall back to the wheels
            pass
    for dist in ("cuda-toolkit", "nvidia-cuda-runtime", "nvidia-cuda-runtime-cu12"):
        found = package_version(dist)
        if found != "not installed":
            return f"{found} ({dist} wheel)"
    return "unknown"


def _print_environment(gn) -> None:
    import numba

    count, reason = gn.cuda_status()
    ptxas = package_version("nvidia-cuda-nvcc")
    versions = [
        ("gpunet", gn.__version__),
        ("Python", f"{platform.python_version()} ({sys.executable})"),
        ("numpy", np.__version__),
        ("numba", f"{numba.__version__} ({numba.get_num_threads()} threads)"),
        ("numba-cuda", package_version("numba-cuda")),
        ("CUDA toolkit", _cuda_toolkit()),
        ("ptxas", ptxas if ptxas == "not installed" else f"{ptxas} (nvidia-cuda-nvcc wheel)"),
    ]
    print("gpunet info")
    print(format_table(("package", "version"), versions))
    print()
    print("devices")
    print(format_table(("device", "name"), [(str(d), d.name) for d in gn.devices()]))
    if count == 0:
        print(f"  CUDA is unavailable: {reason}")
    print(f"  current device: {gn.get_device()}")
    threads = gn.thread_info()
    blas = ", ".join(f"{name} x{n}" for name, n in threads["blas"]) or "none loaded"
    print(
        f"  CPU threads: numba {threads['numba']} of {threads['numba_max']}, BLAS {blas} "
        "(gn.set_num_threads or GPUNET_NUM_THREADS sets both)"
    )
    print(f"  kernel cache: {_cache.describe()} (NUMBA_CACHE_DIR moves it)")


# --- the self-check -------------------------------------------------------------------


def _references() -> dict[str, Callable]:
    """``name -> name_ref`` for every reference in the kernel modules."""
    from .. import ptxas

    refs = {}
    for module in ptxas.kernel_modules():
        for attr, value in vars(module).items():
            if attr.endswith("_ref") and callable(value):
                refs[attr[: -len("_ref")]] = value
    return refs


def _public_ops(ops) -> dict[str, Callable]:
    """The public functions of ``gn.ops``, in the order they are defined."""
    found = [
        (fn.__code__.co_firstlineno, name, fn)
        for name, fn in inspect.getmembers(ops, inspect.isfunction)
        if fn.__module__ == ops.__name__ and not name.startswith("_")
    ]
    return {name: fn for _, name, fn in sorted(found)}


def _op_case(name, op, refs, rng):
    """(positional arguments as numpy arrays and scalars, reference) for ``op``.

    Parameters without a default are arrays of CHECK_SHAPE; those with one
    (like ``alpha``) keep it. A backward op's ``y`` is its forward op's output.
    """
    if name not in refs:
        raise LookupError(f"no reference {name}_ref in gpunet.kernels")
    args = []
    for param in inspect.signature(op).parameters.values():
        if param.kind is not param.POSITIONAL_OR_KEYWORD:
            break
        if param.default is not param.empty:
            args.append(param.default)
            continue
        x = (rng.standard_normal(CHECK_SHAPE) * 3).astype(np.float32)
        forward = re.sub(r"_backward$", "", name)
        if param.name == "y" and forward != name and forward in refs:
            x = refs[forward](x)
        args.append(x)
    return args, refs[name]


def _dense_case(name, op, refs, rng):
    """Dense ops need matching shapes: x (4, 33), W (33, 10), b (10,), tanh."""
    x = rng.standard_normal(CHECK_SHAPE).astype(np.float32)
    W = (rng.standard_normal((CHECK_SHAPE[1], 10)) / 6).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    if name == "dense":
        return [x, W, b, "tanh"], refs["dense"]
    y = refs["dense"](x, W, b, "tanh")
    g = rng.standard_normal(y.shape).astype(np.float32)
    return [g, x, W, y, "tanh"], refs["dense_backward"]


def _loss_case(name, op, refs, rng):
    """Losses: scores of CHECK_SHAPE against class indices, values or 0/1 targets;
    the reference's float64 loss is rounded to float32 like the kernels'."""
    pred = (rng.standard_normal(CHECK_SHAPE) * 3).astype(np.float32)
    if name == "softmax_cross_entropy":
        target = rng.integers(0, CHECK_SHAPE[1], CHECK_SHAPE[0])
    elif name == "mse":
        target = rng.standard_normal(CHECK_SHAPE).astype(np.float32)
    else:
        target = (rng.random(CHECK_SHAPE) < 0.5).astype(np.float32)
    if name == "binary_cross_entropy_probs":
        pred = rng.uniform(0.01, 0.99, CHECK_SHAPE).astype(np.float32)

    def ref(pred, target):
        loss, grad = refs[name](pred, target)
        return np.float32(loss), grad

    return [pred, target], ref


def _hits_case(name, op, refs, rng):
    """Hit counts: scores of CHECK_SHAPE against class indices, or 0/1 targets
    thresholded at 0; the count is a 1-element float32 array like the op's."""
    pred = rng.standard_normal(CHECK_SHAPE).astype(np.float32)
    if name == "argmax_hits":
        target = rng.integers(0, CHECK_SHAPE[1], CHECK_SHAPE[0])
        target[: CHECK_SHAPE[0] // 2] = pred[: CHECK_SHAPE[0] // 2].argmax(axis=1)
    else:
        target = (rng.random(CHECK_SHAPE) < 0.5).astype(np.float32)

    def ref(pred, target):
        return np.array([refs[name](pred, target, *(() if name == "argmax_hits" else (0.0,)))],
                        np.float32)  # fmt: skip

    return [pred, target], ref


def _dropout_case(name, op, refs, rng):
    """Dropout: x of CHECK_SHAPE, p 0.25, Philox stream 1234 from word 8."""
    x = rng.standard_normal(CHECK_SHAPE).astype(np.float32)
    return [x, 0.25, 1234, 8], lambda x, p, seed, offset: refs["dropout"](x, seed, offset, p)


def _batchnorm_case(name, op, refs, rng):
    """Batch norm: x of CHECK_SHAPE, weight and bias (and running statistics)
    of its columns. The forward ops return (y, mean, invstd), the backward
    (dx, dweight, dbias) through the batch statistics, all in float32."""
    eps, columns = 1e-5, CHECK_SHAPE[1]
    x = (rng.standard_normal(CHECK_SHAPE) * 2 + 1).astype(np.float32)
    weight, bias = (rng.standard_normal(columns).astype(np.float32) for _ in range(2))

    def invstd(var):
        return (1 / np.sqrt(var.astype(np.float64) + eps)).astype(np.float32)

    if name == "batchnorm_inference":
        running_mean = rng.standard_normal(columns).astype(np.float32)
        running_var = rng.uniform(0.5, 1.5, columns).astype(np.float32)

        def ref(x, weight, bias, running_mean, running_var):
            y = refs[name](x, weight, bias, running_mean, running_var, eps)
            return y, running_mean, invstd(running_var)

        return [x, weight, bias, running_mean, running_var], ref
    _, mean, var = refs["batchnorm"](x, weight, bias, eps)
    if name == "batchnorm":

        def ref(x, weight, bias):
            y, mean, var = refs[name](x, weight, bias, eps)
            return y, mean.astype(np.float32), invstd(var)

        return [x, weight, bias], ref
    grad_out = rng.standard_normal(CHECK_SHAPE).astype(np.float32)
    return [grad_out, x, weight, mean.astype(np.float32), invstd(var)], refs[name]


def _scale_case(name, op, refs, rng):
    """Scaling: x of CHECK_SHAPE by 0.37."""
    x = rng.standard_normal(CHECK_SHAPE).astype(np.float32)
    return [x, 0.37], refs["scale"]


def _update_case(name, op, refs, rng):
    """Optimizer updates (in place): flat p, grad and zero state of 64
    values; the op runs twice from them (a warm-up, then the timed call), so
    the reference takes two steps with the same gradient."""
    p = rng.standard_normal(64).astype(np.float32)
    g = rng.standard_normal(64).astype(np.float32)
    zeros = np.zeros(64, np.float32)
    if name == "sgd":
        args = [p, g, zeros, 0.1, 0.9]

        def ref(p, g, buf, lr, momentum):
            p1, buf1 = refs["sgd"](p, g, buf, lr, momentum)
            return refs["sgd"](p1, g, buf1, lr, momentum)[0].astype(np.float32)

    else:
        args = [p, g, zeros, zeros.copy(), 1, 0.01]

        def ref(p, g, m, v, step, lr):
            p1, m1, v1 = refs["adam"](p, g, m, v, step, lr)
            return refs["adam"](p1, g, m1, v1, step, lr)[0].astype(np.float32)

    return args, ref


#: Ops whose arguments are not arrays of one shape: name -> case builder.
_SHAPED_CASES = {
    "dense": _dense_case,
    "dense_backward": _dense_case,
    "softmax_cross_entropy": _loss_case,
    "mse": _loss_case,
    "binary_cross_entropy": _loss_case,
    "binary_cross_entropy_probs": _loss_case,
    "argmax_hits": _hits_case,
    "binary_hits": _hits_case,
    "dropout": _dropout_case,
    "batchnorm": _batchnorm_case,
    "batchnorm_inference": _batchnorm_case,
    "batchnorm_backward": _batchnorm_case,
    "scale": _scale_case,
    "sgd": _update_case,
    "adam": _update_case,
}


def _flat(result):
    """An op's result as one host array; several results are raveled and joined."""
    import gpunet as gn

    if isinstance(result, tuple):
        return np.concatenate([np.ravel(gn.to_numpy(r)) for r in result])
    return result


def _timed(fn, device):
    """Call ``fn()``; return (its result, seconds), waiting for the GPU to finish."""
    from ..kernels import _cuda

    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        _cuda.cuda.synchronize()
    return result, time.perf_counter() - start


def _check(fn, expected, device):
    """Run ``fn`` twice (the first call compiles or loads the kernel); compare
    the second result with ``expected``. Returns (passed, max error, first call
    seconds, second call seconds)."""
    import gpunet as gn

    _, first = _timed(fn, device)
    result, seconds = _timed(fn, device)
    actual = gn.to_numpy(result)
    if actual.shape != expected.shape or actual.dtype != expected.dtype:
        raise AssertionError(
            f"expected shape {expected.shape} and dtype {expected.dtype}, "
            f"got {actual.shape} and {actual.dtype}"
        )
    error = float(np.max(np.abs(actual.astype(np.float64) - expected), initial=0.0))
    rtol, atol = CHECK_TOLERANCE
    passed = bool(np.allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True))
    return passed, error, first, seconds


def _self_checks(gn):
    """(name, callable returning (passed, max error, first, time)) for each op."""
    from ..kernels import rng as _rng

    device = gn.get_device()
    refs = _references()
    generator = np.random.default_rng(0)
    checks = []
    for name, op in _public_ops(gn.ops).items():
        try:
            args, ref = _SHAPED_CASES.get(name, _op_case)(name, op, refs, generator)
        except LookupError as exc:
            checks.append((name, _raiser(exc)))
            continue
        on_device = [gn.to_device(a, device) if isinstance(a, np.ndarray) else a for a in args]
        expected = _flat(ref(*args))

        def run(op=op, args=on_device):
            return _flat(op(*args))

        checks.append((name, _bind(_check, run, expected, device)))

    n, seed, offset = int(np.prod(CHECK_SHAPE)), 1234, 5
    fill = _rng.uniform_cuda if device.type == "cuda" else _rng.uniform_cpu
    out = gn.to_device(np.empty(n, np.float32), device)
    expected = _rng.uniform_ref(n, seed, offset, np.float32)
    checks.append(("rng.uniform", _bind(_check, lambda: fill(out, seed, offset), expected, device)))
    return device, checks


def _bind(fn, *args):
    return lambda: fn(*args)


def _raiser(exc):
    def run():
        raise exc

    return run


def _print_self_check(gn) -> int:
    """Print the self-check's table; return the number of failed checks."""
    device, checks = _self_checks(gn)
    shape = "x".join(map(str, CHECK_SHAPE))
    print()
    print(f"self-check on {device} ({device.name}): float32 {shape} against the numpy references")
    rows, errors = [], []
    for name, check in checks:
        try:
            passed, error, first, seconds = check()
        except Exception as exc:
            errors.append(f"  {name}: {type(exc).__name__}: {exc}")
            rows.append((name, "ERROR", "-", "-", "-"))
            continue
        result = "PASS" if passed else "FAIL"
        rows.append((name, result, f"{error:.2e}", format_seconds(seconds), format_seconds(first)))
    print(format_table(("op", "result", "max error", "time", "first call"), rows))
    print("  (time: one call after a warm-up; first call: includes JIT compilation or cache load)")
    for line in errors:
        print(line)
    failures = sum(row[1] != "PASS" for row in rows)
    print(f"  {len(rows) - failures} of {len(rows)} checks passed")
    return failures


# --- info --kernels -------------------------------------------------------------------


def _print_kernels() -> int:
    """Print ptxas's report for every kernel; return the number of failures."""
    from .. import ptxas
    from ..kernels import _cuda

    print()
    print(f"CUDA kernels (ptxas for {', '.join(KERNEL_ARCHS)})")
    if _cuda.SIMULATOR:
        print(
            "  cannot compile kernels: --kernels needs the real numba-cuda, not the CUDA "
            "simulator (unset NUMBA_ENABLE_CUDASIM)"
        )
        return 1
    if not _cuda.HAVE_NUMBA_CUDA:
        print("  cannot compile kernels: numba-cuda is not installed")
        return 1
    try:
        ptxas.find_ptxas()
    except FileNotFoundError as exc:
        print(f"  {exc}")
        return 1
    rows, errors = [], []
    start = time.perf_counter()
    for spec in ptxas.catalogue():
        for signature in spec.signatures:
            dtype = ptxas.signature_label(signature)
            try:
                result = ptxas.build(spec, signature, KERNEL_ARCHS)
            except ptxas.CompileError as exc:
                errors.append(f"  {spec.name} [{dtype}]: {exc}")
                rows.append((spec.name, dtype, "-", "FAILED", "-", "-", "-", "-"))
                continue
            rows += [
                (
                    spec.name,
                    dtype,
                    r.arch,
                    r.registers,
                    r.shared_bytes,
                    r.local_bytes,
                    r.spill_stores,
                    r.spill_loads,
                )
                for r in result.resources
            ]
    header = (
        "kernel",
        "dtype",
        "arch",
        "registers",
        "smem B",
        "local B",
        "spill st B",
        "spill ld B",
    )
    print(format_table(header, rows))
    print(f"  (registers per thread; shared memory per block; {time.perf_counter() - start:.1f} s)")
    for line in errors:
        print(line)
    spilled = sum(1 for row in rows if isinstance(row[6], int) and (row[6] or row[7]))
    if spilled:
        print(f"  {spilled} kernel builds spill registers to local memory")
    return len(errors) + spilled
