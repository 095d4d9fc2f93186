"""Every CUDA kernel compiles to PTX and assembles with ptxas for sm_80 and
sm_90, without a GPU: no spills, and no float64 instructions in float32 kernels.

Each kernel and signature is compiled once (``ptxas.build`` keeps its results
for the process) and shared by the tests that look at it.
"""

import re

import pytest
from gpunet.kernels import _cuda
from ptxas_halves import CATALOGUE, mark

from gpunet import ptxas

ARCHS = ("sm_80", "sm_90")

CASES = [
    pytest.param(spec, sig, id=f"{spec.name}[{ptxas.signature_label(sig)}]", marks=mark(spec))
    for spec in CATALOGUE
    for sig in spec.signatures
]

needs_compiler = pytest.mark.skip_on_cudasim("the simulator cannot compile to PTX")

# Under pytest-xdist each half of the catalogue is built once, on one worker,
# for this module and for the CLI's kernel table (see ptxas_halves).


@pytest.fixture(scope="module")
def builds():
    """(kernel, signature) -> ptxas.Build, each compiled once for the module;
    a kernel that fails to build fails each test that asks for it."""
    failed = {}

    def get(spec, signature):
        key = spec.name, signature
        if key not in failed:
            try:
                return ptxas.build(spec, signature, ARCHS)  # cached by ptxas
            except Exception as exc:
                failed[key] = exc
        raise failed[key]

    return get


def test_catalogue_names_its_kernels_by_module():
    modules = {m.__name__ for m in ptxas.kernel_modules()}
    assert CATALOGUE, "the kernel catalogue is empty"
    names = [spec.name for spec in CATALOGUE]
    assert len(names) == len(set(names)), "kernel names in the catalogue repeat"
    for spec in CATALOGUE:
        module = spec.py_func.__module__
        assert module in modules, f"{spec.name} comes from {module}, not a kernel module"
        assert spec.name.startswith(module.rpartition(".")[2] + "."), spec.name
        assert spec.signatures, f"{spec.name} declares no signatures"
    assert len(_cuda.KERNELS) == len(CATALOGUE)


def _cuda_kernels(value, owner, seen, depth=0):
    """The Python functions of the CUDA kernels (not device functions) reachable
    from ``value``: itself, the items of containers, and the attributes of
    objects of classes defined in module ``owner``."""
    from numba.cuda.dispatcher import CUDADispatcher

    if id(value) in seen or depth > 3:
        return
    seen.add(id(value))
    if isinstance(value, _cuda.Kernel):
        value = value.dispatcher
    if isinstance(value, CUDADispatcher):
        if not value.targetoptions.get("device"):
            yield value.py_func
    elif isinstance(value, dict):
        for item in value.values():
            yield from _cuda_kernels(item, owner, seen, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _cuda_kernels(item, owner, seen, depth + 1)
    elif type(value).__module__ == owner and hasattr(value, "__dict__"):
        yield from _cuda_kernels(vars(value), owner, seen, depth + 1)


@needs_compiler
def test_catalogue_has_every_kernel_of_every_kernel_module():
    declared = {spec.py_func for spec in CATALOGUE}
    found = set()
    for module in ptxas.kernel_modules():
        for py_func in _cuda_kernels(vars(module), module.__name__, set()):
            found.add(py_func)
            assert py_func in declared, (
                f"{module.__name__}.{py_func.__qualname__} is a CUDA kernel missing from the "
                "catalogue: declare it with @_cuda.kernel(name, signatures)"
            )
    unseen = [spec.name for spec in CATALOGUE if spec.py_func not in found]
    assert not unseen, f"the module scan missed catalogue kernels (extend _cuda_kernels): {unseen}"


@pytest.mark.xdist_group("ptxas-0")
def test_runs_in_the_ptxas_group_under_loadgroup(request):
    # Each process builds what it is asked for once; if a half's tests spread
    # over several workers, the suite builds it once per worker (minutes each).
    option = request.config.option
    if not getattr(option, "loadgroup", False):
        pytest.skip("not a pytest-xdist worker under --dist loadgroup")
    assert request.node.nodeid.endswith("@ptxas-0"), (
        f"pytest-xdist did not group {request.node.nodeid}: check the pytest and "
        "pytest-xdist versions the test extra allows"
    )


@needs_compiler
def test_find_ptxas_uses_the_wheel():
    path = ptxas.find_ptxas()
    assert path.is_file()
    assert "site-packages" in path.parts or "dist-packages" in path.parts


def test_find_ptxas_names_the_wheel_to_install(monkeypatch):
    monkeypatch.setattr(ptxas, "PTXAS_DISTRIBUTIONS", ("no-such-distribution",))
    ptxas.find_ptxas.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match="pip install nvidia-cuda-nvcc"):
            ptxas.find_ptxas()
    finally:
        ptxas.find_ptxas.cache_clear()


@needs_compiler
@pytest.mark.parametrize("spec, signature", CASES)
def test_assembles_without_spills(builds, spec, signature):
    result = builds(spec, signature)
    assert [r.arch for r in result.resources] == list(ARCHS)
    for r in result.resources:
        assert r.registers > 0
        assert (r.spill_stores, r.spill_loads) == (0, 0), (
            f"{spec.name} [{signature}] spills on {r.arch}: "
            f"{r.spill_stores} bytes stored, {r.spill_loads} bytes loaded"
        )


FLOAT32_CASES = [p for p in CASES if "float32" in p.values[1] and "float64" not in p.values[1]]


@needs_compiler
@pytest.mark.parametrize("spec, signature", FLOAT32_CASES)
def test_float32_kernels_have_no_float64_instructions(builds, spec, signature):
    ptx = "\n".join(builds(spec, signature).ptx.values())
    f64 = [line.strip() for line in ptx.splitlines() if re.search(r"\.f64\b", line)]
    assert not f64, (
        f"{spec.name} [{signature}] promotes to float64 ({len(f64)} lines), e.g.:\n"
        + "\n".join(f64[:5])
    )


@needs_compiler
def test_compile_error_names_the_kernel():
    def broken(x):
        x[0] = undefined_name  # noqa: F821

    spec = _cuda.KernelSpec("test.broken", broken, ("void(float32[::1])",))
    with pytest.raises(ptxas.CompileError, match=r"test\.broken \[void\(float32\[::1\]\)\]"):
        ptxas.compile_ptx(spec, spec.signatures[0], (8, 0))


@needs_compiler
def test_ptxas_error_carries_its_messages():
    with pytest.raises(ptxas.CompileError, match="ptxas failed.*sm_80"):
        ptxas.assemble(".version 9.5\n.target sm_80\nthis is not ptx\n", "sm_80")
