"""No import circles among gpunet's modules, each module imports alone, and
``import gpunet`` leaves the heavy optional libraries out.

Imports inside functions count too: they are how circles used to hide.
"""

import ast
import concurrent.futures
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import gpunet


def _modules() -> dict[str, Path]:
    """gpunet's module names -> their files (gpunet.kernels lives elsewhere in the tree)."""
    found = {}
    for package in ("gpunet", "gpunet.kernels"):
        root = Path(importlib.util.find_spec(package).submodule_search_locations[0])
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[0] == "kernels" and package == "gpunet":
                continue  # an installed copy of gpunet.kernels, found under its own name
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


MODULES = _modules()


def _imported(name: str, path: Path) -> set[str]:
    """The gpunet modules that module ``name`` imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        # A module's own packages are already being imported when it runs
        # (importing gpunet.x runs gpunet/__init__.py first): no edge to them.
        found.update(t for t in targets if t in MODULES and not (name + ".").startswith(t + "."))
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle in ``graph`` (as a path back to its start), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_module_list_is_whole():
    assert {"gpunet.nn", "gpunet.parameter", "gpunet.kernels.softmax", "gpunet.cli.info"} <= set(
        MODULES
    )


def test_no_import_circle_among_gpunet_modules():
    graph = {name: _imported(name, path) for name, path in MODULES.items()}
    assert "gpunet.nn" in graph["gpunet"] and "gpunet.nn" not in graph["gpunet.parameter"]
    cycle = _cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_circle_finder_finds_circles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


#: Imports each module in a fresh interpreter, with the package's __init__
#: replaced by an empty package, so that nothing else is imported first.
_ALONE = """
import importlib, sys, types
package = types.ModuleType("gpunet")
package.__path__ = [{root!r}]
sys.modules["gpunet"] = package
importlib.import_module({name!r})
"""


def _import_alone(name: str) -> tuple[str, int, str]:
    root = str(Path(gpunet.__file__).parent)
    code = _ALONE.format(root=root, name=name)
    env = {**os.environ, "PYTHONWARNINGS": "error::ImportWarning"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    return name, done.returncode, done.stderr[-2000:]


@pytest.mark.xdist_group("imports")
def test_every_module_imports_alone_in_a_fresh_interpreter():
    names = [name for name in MODULES if name != "gpunet" and not name.endswith("__main__")]
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        failed = [r for r in pool.map(_import_alone, names) if r[1] != 0]
    assert not failed, "\n\n".join(f"{name}:\n{err}" for name, _, err in failed)


def test_import_gpunet_leaves_the_heavy_optional_libraries_out():
    """scikit-learn, scipy.optimize, matplotlib and torch are imported where
    they are used (the first error raised through ``sklearn_flavoured``, an
    L-BFGS fit, a plot, a benchmark peer), not by ``import gpunet``: together
    they would take several times its own import time."""
    heavy = ("sklearn", "scipy.optimize", "matplotlib", "torch")
    code = f"import sys, gpunet; print([m for m in {heavy!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
