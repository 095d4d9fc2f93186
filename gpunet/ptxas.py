"""Compile checks without a GPU: every CUDA kernel to PTX (NVVM), then to SASS (ptxas).

For each entry of the kernel catalogue (``gpunet.kernels._cuda.KERNELS``) and
each of its signatures, :func:`compile_ptx` builds PTX once and :func:`assemble`
runs ``ptxas -v`` on it for each target architecture, reading back registers
per thread, shared and local memory, and spills as :class:`KernelResources`.
:func:`report` does this for the whole catalogue; ``tests/test_compile.py`` and
``gpunet info --kernels`` use it.

ptxas comes from the ``nvidia-cuda-nvcc`` wheel (:func:`find_ptxas`), never the
PATH: NVVM from the wheels emits PTX of a newer ISA version than an older
system toolkit's ptxas accepts ("Unsupported .version").

Numba's CUDA simulator cannot compile anything, so everything here raises
RuntimeError under ``NUMBA_ENABLE_CUDASIM=1``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.metadata
import pkgutil
import re
import subprocess
import tempfile
import types
from collections.abc import Iterable, Iterator
from pathlib import Path

from .kernels import _cuda
from .kernels._cuda import KernelSpec

#: Architectures checked by default: Ampere (A100) and Hopper (H100).
DEFAULT_ARCHS = ("sm_80", "sm_90")

#: The wheels that ship ptxas, newest toolkit first.
PTXAS_DISTRIBUTIONS = ("nvidia-cuda-nvcc", "nvidia-cuda-nvcc-cu12")

_ARCH_RE = re.compile(r"^sm_(\d+)(\d)[af]?$")


class CompileError(RuntimeError):
    """A kernel did not compile to PTX, or ptxas rejected its PTX."""


@dataclasses.dataclass(frozen=True)
class KernelResources:
    """What ptxas reports for one kernel, signature and architecture.

    ``registers`` are per thread; ``shared_bytes`` is static shared memory per
    block; ``local_bytes`` is per-thread local memory (the stack frame);
    ``spill_stores`` / ``spill_loads`` are bytes of registers spilled to it.
    """

    name: str
    signature: str
    arch: str
    registers: int
    shared_bytes: int
    local_bytes: int
    spill_stores: int
    spill_loads: int

    @property
    def spills(self) -> bool:
        return bool(self.spill_stores or self.spill_loads)


@dataclasses.dataclass(frozen=True)
class Build:
    """One kernel and signature: its PTX for each architecture, and ptxas's report."""

    spec: KernelSpec
    signature: str
    ptx: dict[str, str]
    resources: tuple[KernelResources, ...]


# --- the catalogue ---------------------------------------------------------------------


def kernel_modules() -> list[types.ModuleType]:
    """Import and return every public module of ``gpunet.kernels`` (so that all
    their kernels are in the catalogue), in name order."""
    package = importlib.import_module("gpunet.kernels")
    return [
        importlib.import_module(f"{package.__name__}.{info.name}")
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name)
        if not info.name.startswith("_")
    ]


def catalogue() -> list[KernelSpec]:
    """Every CUDA kernel gpunet declares, after importing all kernel modules."""
    kernel_modules()
    return list(_cuda.KERNELS)


# --- tools ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def find_ptxas() -> Path:
    """The ptxas executable inside the installed ``nvidia-cuda-nvcc`` wheel.

    Raises FileNotFoundError, naming the package to install, when there is none.
    """
    for dist_name in PTXAS_DISTRIBUTIONS:
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            continue
        for file in dist.files or ():
            if file.name in ("ptxas", "ptxas.exe") and file.parent.name == "bin":
                path = Path(dist.locate_file(file))
                if path.is_file():
                    return path
    raise FileNotFoundError(
        "ptxas was not found in an installed nvidia-cuda-nvcc wheel: "
        "pip install nvidia-cuda-nvcc (or gpunet[test]). A ptxas on the PATH is not "
        "used: an older CUDA toolkit's ptxas rejects the PTX that numba-cuda's NVVM emits."
    )


def _require_compiler() -> None:
    if not _cuda.HAVE_NUMBA_CUDA:
        raise RuntimeError("compiling CUDA kernels needs numba-cuda: pip install 'gpunet[cuda13]'")
    if _cuda.SIMULATOR:
        raise RuntimeError(
            "compiling CUDA kernels needs the real numba-cuda, not its simulator: "
            "unset NUMBA_ENABLE_CUDASIM"
        )


def signature_label(signature: str) -> str:
    """A short label for a kernel signature: its first float type, else its
    first type (``"void(float32[:, ::1], float32[:, ::1])"`` -> ``"float32"``)."""
    names = re.findall(r"\b([a-z]+\d+)\b", signature)
    floats = [t for t in names if t.startswith("float")]
    return (floats or names or [signature])[0]


def arch_cc(arch: str) -> tuple[int, int]:
    """``"sm_90"`` -> ``(9, 0)``; ``"sm_100a"`` -> ``(10, 0)``."""
    match = _ARCH_RE.match(arch)
    if match is None:
        raise ValueError(f"expected an architecture like 'sm_80' or 'sm_90a', got {arch!r}")
    return int(match[1]), int(match[2])


def compile_ptx(spec: KernelSpec, signature: str, cc: tuple[int, int]) -> str:
    """The PTX of ``spec``'s kernel compiled for ``signature`` and compute capability ``cc``.

    Raises CompileError (chained to Numba's error) when it does not compile.
    """
    return compile_ptxs(spec, signature, (cc,))[0]


def compile_ptxs(spec: KernelSpec, signature: str, ccs: tuple[tuple[int, int], ...]) -> list[str]:
    """:func:`compile_ptx` for each compute capability of ``ccs``, from one
    compilation: Numba types and lowers the kernel once (for the first), and
    its code library has NVVM generate each PTX from that LLVM IR, as it does
    for a kernel launched on GPUs of several capabilities.
    """
    _require_compiler()
    from numba.cuda import compiler

    try:
        library, _ = compiler._compile_pyfunc_with_fixup(
            spec.py_func, signature, device=False, abi="numba", cc=ccs[0]
        )
        ptxs = []
        for cc in ccs:
            (ptx,) = library.get_asm_strs(cc=cc)
            ptxs.append(ptx)
    except Exception as exc:
        targets = ", ".join(f"{cc[0]}.{cc[1]}" for cc in ccs)
        raise CompileError(
            f"{spec.name} [{signature}] did not compile to PTX for cc {targets}: {exc}"
        ) from exc
    return ptxs


# --- ptxas ----------------------------------------------------------------------------

_ENTRY_RE = re.compile(r"Compiling entry function '([^']+)' for '(\w+)'")
_PROPERTIES_RE = re.compile(
    r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads"
)
_USED_RE = re.compile(r"Used (\d+) registers")
_SMEM_RE = re.compile(r"(\d+) bytes smem")
_LMEM_RE = re.compile(r"(\d+) bytes lmem")


def assemble(ptx: str, arch: str, *, name: str = "", signature: str = "") -> KernelResources:
    """Run ``ptxas -arch=<arch> -v`` on ``ptx`` (one kernel) and parse its report.

    ``name`` and ``signature`` label the result (default: the PTX entry's
    mangled name and ""). Raises CompileError with ptxas's messages when it
    fails, FileNotFoundError when ptxas is not installed.
    """
    arch_cc(arch)
    ptxas = find_ptxas()
    with tempfile.TemporaryDirectory(prefix="gpunet-ptxas-") as tmp:
        source = Path(tmp, "kernel.ptx")
        source.write_text(ptx)
        proc = subprocess.run(
            [str(ptxas), f"-arch={arch}", "-v", str(source), "-o", str(Path(tmp, "kernel.cubin"))],
            capture_output=True,
            text=True,
        )
    label = f"{name} [{signature}]" if name else "kernel"
    if proc.returncode != 0:
        raise CompileError(
            f"ptxas failed on {label} for {arch} (exit {proc.returncode}):\n{proc.stderr.strip()}"
        )
    return _parse(proc.stderr, arch, name, signature, label)


def _parse(info: str, arch: str, name: str, signature: str, label: str) -> KernelResources:
    """Registers and memory of the one entry function in ptxas's ``-v`` output;
    spills and stack summed over every function it reports (device functions
    that were not inlined have their own)."""
    entries = _ENTRY_RE.findall(info)
    used = _USED_RE.findall(info)
    if len(entries) != 1 or len(used) != 1:
        raise CompileError(
            f"expected ptxas to report one entry function for {label} on {arch}, got:\n{info}"
        )
    properties = [tuple(map(int, p)) for p in _PROPERTIES_RE.findall(info)]
    usage_line = next(line for line in info.splitlines() if "Used " in line)
    smem = _SMEM_RE.search(usage_line)
    lmem = _LMEM_RE.search(usage_line)
    return KernelResources(
        name=name or entries[0][0],
        signature=signature,
        arch=arch,
        registers=int(used[0]),
        shared_bytes=int(smem[1]) if smem else 0,
        local_bytes=max(sum(p[0] for p in properties), int(lmem[1]) if lmem else 0),
        spill_stores=sum(p[1] for p in properties),
        spill_loads=sum(p[2] for p in properties),
    )


# --- whole catalogue ------------------------------------------------------------------


def build(spec: KernelSpec, signature: str, archs: Iterable[str] = DEFAULT_ARCHS) -> Build:
    """Compile ``spec`` for ``signature`` to PTX for each of ``archs`` and
    assemble it. Results are kept for the process: building the same kernel,
    signature and archs again is free."""
    return _build(spec, signature, tuple(archs))


@functools.cache
def _build(spec: KernelSpec, signature: str, archs: tuple[str, ...]) -> Build:
    if not archs:
        raise ValueError("expected at least one architecture, got none")
    ptx = dict(zip(archs, compile_ptxs(spec, signature, tuple(map(arch_cc, archs))), strict=True))
    resources = tuple(
        assemble(ptx[arch], arch, name=spec.name, signature=signature) for arch in archs
    )
    return Build(spec, signature, ptx, resources)


def _select(kernels) -> list[KernelSpec]:
    every = catalogue()
    if kernels is None:
        return every
    by_name = {spec.name: spec for spec in every}
    chosen = []
    for k in kernels:
        if isinstance(k, KernelSpec):
            chosen.append(k)
        elif k in by_name:
            chosen.append(by_name[k])
        else:
            raise ValueError(f"expected a kernel name from the catalogue, got {k!r}")
    return chosen


def report(archs: Iterable[str] = DEFAULT_ARCHS, kernels=None) -> Iterator[KernelResources]:
    """ptxas's resources for each kernel × signature × architecture, in
    catalogue order. ``kernels``: names or KernelSpecs (default: the whole
    catalogue). Raises CompileError at the first kernel that fails.

    One build at a time: Numba's compilation is serialised, and running
    ptxas in a thread pool beside it does not shorten the whole catalogue's
    build on a machine of few cores.
    """
    _require_compiler()
    find_ptxas()
    archs = tuple(archs)
    for spec in _select(kernels):
        for signature in spec.signatures:
            yield from build(spec, signature, archs).resources
