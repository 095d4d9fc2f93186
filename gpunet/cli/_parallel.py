"""Data-parallel commands: ``mpiexec -n N gpunet train`` (or ``rbm``) runs
the command on N ranks that train together through ``gpunet.distributed``."""

from __future__ import annotations

import functools


def data_parallel(run):
    """Decorate a command's ``run(args)`` with ``gpunet.distributed.command``
    (joins the MPI job when there is one; rank 0 alone prints and writes
    files; an error on any rank ends every rank), importing gpunet only
    when the command runs."""

    @functools.wraps(run)
    def wrapper(args):
        from gpunet import distributed

        return distributed.command(run)(args)

    return wrapper
