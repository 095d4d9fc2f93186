"""The CUDA kernel catalogue in two halves, one pytest-xdist group each: the
two workers of a test run then share the catalogue's ptxas builds, each
building its half once (``ptxas.build`` keeps its results per process), and
the tests that read a kernel's build run in its half's group."""

import pytest

from gpunet import ptxas

CATALOGUE = ptxas.catalogue()

#: group name -> its kernels: alternate ones in catalogue order, where
#: neighbours (one module's kernels, one factory's variants) cost alike.
HALVES = {f"ptxas-{h}": CATALOGUE[h::2] for h in range(2)}

_GROUP = {spec.name: group for group, specs in HALVES.items() for spec in specs}


def mark(spec):
    """The xdist_group mark of the half that builds ``spec``."""
    return pytest.mark.xdist_group(_GROUP[spec.name])
