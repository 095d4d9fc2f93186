"""The ``gpunet`` command line: ``gpunet <command> ...`` (also ``python -m gpunet``).

Commands, one module each:

- ``info``: versions, threads, devices and why CUDA is unavailable when it is,
  then a self-check running every op of ``gn.ops`` once on the current device
  against its numpy reference; ``--kernels`` adds ptxas's report.
- ``train``: trains a multilayer perceptron (the bundled digits by default),
  prints the test accuracy and saves the model.
- ``rbm``: trains a restricted Boltzmann machine on the bundled digits,
  prints the pseudo-likelihood per epoch, saves the filters (``--plot``) and
  checks the features with a logistic regression when scikit-learn is there.
- ``bench``: times every kernel and training loop against the machine's
  ceilings and against numpy, PyTorch and scikit-learn.

Each command module has ``add_parser(subparsers)``, which declares the
command's arguments and sets ``run`` to a function taking the parsed arguments
and returning the exit status.
"""

from __future__ import annotations

import argparse

from . import bench, info, rbm, train
from ._output import package_version

COMMANDS = (info, train, rbm, bench)


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = argparse.ArgumentParser(
        prog="gpunet", description="Neural networks on Numba kernels, for CUDA GPUs and CPUs."
    )
    version = f"gpunet {package_version('gpunet')}"
    parser.add_argument("--version", action="version", version=version)
    subparsers = parser.add_subparsers(title="commands", dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    args = parser.parse_args(argv)
    return args.run(args)
