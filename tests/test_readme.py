"""The README's examples run, and CI runs the README's test command verbatim."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def fenced_blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


@pytest.mark.parametrize("index", range(len(fenced_blocks("python"))))
def test_python_examples_run(index):
    exec(compile(fenced_blocks("python")[index], f"README.md example {index}", "exec"), {})


def test_ci_runs_the_readme_test_command():
    test_command = next(b.strip() for b in fenced_blocks("sh") if "pytest" in b and "venv" in b)
    assert test_command in (ROOT / ".ci" / "run").read_text()
