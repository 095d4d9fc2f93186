"""Output helpers shared by the commands: versions, aligned tables, durations."""

from __future__ import annotations

import importlib.metadata


def package_version(dist: str) -> str:
    """The installed version of the distribution ``dist``, or "not installed"."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def format_table(header: tuple[str, ...], rows: list[tuple], indent: str = "  ") -> str:
    """Rows as aligned columns: text left-aligned, numbers right-aligned."""
    cells = [tuple(str(c) for c in row) for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    numeric = [
        bool(rows) and all(isinstance(row[i], (int, float)) for row in rows)
        for i in range(len(header))
    ]
    lines = []
    for row in cells:
        cells_widths = zip(row, widths, numeric, strict=True)
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in cells_widths]
        lines.append(indent + "  ".join(parts).rstrip())
    return "\n".join(lines)


def format_seconds(t: float) -> str:
    """A duration in us, ms or s."""
    if t < 1e-3:
        return f"{t * 1e6:.1f} us"
    if t < 1:
        return f"{t * 1e3:.2f} ms"
    return f"{t:.2f} s"
