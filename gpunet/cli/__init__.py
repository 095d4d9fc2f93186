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
- ``predict``: a saved model's predictions for the rows of a data file.

Each command module has ``add_parser(subparsers)``, which declares the
command's arguments and sets ``run`` to a function taking the parsed arguments
and returning the exit status.

A user's mistake is one line on stderr, ``gpunet <command>: ...``, and exit
status 2, found before any work (:mod:`._checks`); an error during the work is
one line and status 1; Ctrl-C is status 130. ``--debug`` shows the traceback
instead.
"""

from __future__ import annotations

import sys

from . import bench, info, predict, rbm, train
from ._checks import Parser, UsageError
from ._output import package_version

COMMANDS = (info, train, rbm, bench, predict)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = Parser(
        prog="gpunet", description="Neural networks on Numba kernels, for CUDA GPUs and CPUs."
    )
    version = f"gpunet {package_version('gpunet')}"
    parser.add_argument("--version", action="version", version=version)
    subparsers = parser.add_subparsers(
        title="commands",
        dest="command",
        required=True,
        metavar="{" + ",".join(c.__name__.rsplit(".", 1)[1] for c in COMMANDS) + "}",
    )
    for command in COMMANDS:
        command.add_parser(subparsers)
    for command_parser in subparsers.choices.values():
        command_parser.add_argument(
            "--debug", action="store_true", help="show Python tracebacks of errors"
        )
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported by the command's parser, so that the message names the command
        subparsers.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    prog = f"gpunet {args.command}"
    try:
        return args.run(args)
    except UsageError as exc:
        if args.debug:
            raise
        print(f"{prog}: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"{prog}: {type(exc).__name__}: {_one_line(exc)} (--debug shows the traceback)",
            file=sys.stderr,
        )
        return 1
