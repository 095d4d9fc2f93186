"""The entry in each kernels module's ``KERNELS`` table.

Every op family module ends with ``KERNELS = {op name: OpKernels(reference,
cpu, cuda)}``, naming the functions themselves, so that grep leads from the
table to every kernel; ``gpunet.dispatch`` builds its registry from these
tables and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple


class OpKernels(NamedTuple):
    """One op: its numpy reference (the spec) and its CPU and CUDA entry points."""

    reference: Callable
    cpu: Callable
    cuda: Callable
