"""Argument checks shared by the commands, run before any work.

Argparse ``type=`` converters (a bad value ends in argparse's one-line error)
and checks of what argparse cannot see on its own (devices, paths, optional
libraries), which raise :class:`UsageError`; ``gpunet.cli.main`` prints
either as one line, ``gpunet <command>: ...``, and exits with status 2.
"""

from __future__ import annotations

import argparse
import math
import os


class UsageError(Exception):
    """A mistake in the command line, found before any work: one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr,
    ``<prog>: <message>``, exit status 2 (argparse's usage text is left to ``--help``)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: {message}\n")


def _number(text, kind):
    try:
        return kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def at_least(low: int):
    """An argparse type: an integer >= ``low``."""

    def convert(text):
        value = _number(text, int)
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
        return value

    convert.__name__ = f"integer >= {low}"
    return convert


def real(low=None, high=None, low_open=False, high_open=False):
    """An argparse type: a finite float in the interval from ``low`` to
    ``high`` (either may be None), each end open or closed."""
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    span = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"

    def convert(text):
        value = _number(text, float)
        ok = math.isfinite(value)
        if ok and low is not None:
            ok = value > low if low_open else value >= low
        if ok and high is not None:
            ok = value < high if high_open else value <= high
        if not ok:
            raise argparse.ArgumentTypeError(f"expected a finite number in {span}, got {text!r}")
        return value

    convert.__name__ = f"number in {span}"
    return convert


#: Learning rates: finite and positive.
positive = real(0.0, low_open=True)
#: Probabilities of dropping a unit, momenta: [0, 1).
fraction = real(0.0, 1.0, high_open=True)
#: Weight decay: finite and >= 0.
non_negative = real(0.0)


def device(spec):
    """The gpunet Device that ``spec`` names (None: ``GPUNET_DEVICE``, else
    "auto"); UsageError when it is malformed or CUDA is unavailable,
    suggesting ``--device cpu``."""
    import gpunet as gn

    where = "--device "
    if spec is None:
        spec, where = os.environ.get("GPUNET_DEVICE", "auto"), "GPUNET_DEVICE="
    try:
        return gn.set_device(spec)
    except ValueError:
        raise UsageError(f"{where}{spec}: expected cpu, cuda, cuda:N or auto") from None
    except gn.DeviceError:
        count, reason = gn.cuda_status()
        found = reason if not count else f"only {count} CUDA device(s) exist"
        raise UsageError(
            f"{where}{spec}: CUDA is unavailable ({found}); run on the CPU with --device cpu"
        ) from None


def writable(path, option) -> str:
    """``path`` if a file can be written there: its folder exists and is
    writable, and it is not itself a folder; UsageError naming ``option`` otherwise."""
    full = os.path.abspath(path)
    folder = os.path.dirname(full)
    if os.path.isdir(full):
        raise UsageError(f"{option} {path}: is a directory, expected a file name")
    if not os.path.isdir(folder):
        raise UsageError(f"{option} {path}: the directory {folder} does not exist")
    if not os.access(folder, os.W_OK) or (os.path.exists(full) and not os.access(full, os.W_OK)):
        raise UsageError(f"{option} {path}: not writable")
    return path


def readable(path, option) -> str:
    """``path`` if it is a file that can be read; UsageError naming ``option`` otherwise."""
    if not os.path.isfile(path):
        raise UsageError(f"{option} {path}: no such file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{option} {path}: not readable")
    return path


def plotting(option) -> None:
    """UsageError unless matplotlib, which ``option`` needs, can be imported."""
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError:
        raise UsageError(
            f"{option} needs matplotlib: pip install 'gpunet[plot]' (or matplotlib)"
        ) from None
