"""Read the provenance table of a trace folder's README (markdown).

The shared real traces come with a ``README.md`` whose table names, per file,
the link, source, licence, row count and rtt statistics. This module reads that
table so that scripts and tests quote it instead of copying it by hand.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_FILE_CELL = re.compile(r"^`?(?P<name>[^`]+?)`?$")


def _cells(line: str) -> list[str]:
    body = line.strip()
    body = body.removeprefix("|")
    body = body.removesuffix("|")
    return [c.strip() for c in body.split("|")]


def read_readme_table(path: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """Rows of the first markdown table in ``path`` whose first column is ``file``.

    Returns:
        ``{file name: {column header (lower case): cell text}}``; backticks
        around the file name are removed.

    Raises:
        FileNotFoundError: no README at ``path``.
        ValueError: no such table.
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip().startswith("|"):
            continue
        header = [c.lower() for c in _cells(line)]
        if not header or header[0] != "file" or i + 1 >= len(lines):
            continue
        rows: dict[str, dict[str, str]] = {}
        for row in lines[i + 2 :]:
            if not row.strip().startswith("|"):
                break
            cells = _cells(row)
            if len(cells) != len(header):
                continue
            m = _FILE_CELL.match(cells[0])
            name = m.group("name") if m else cells[0]
            rows[name] = dict(zip(header, cells))
        return rows
    raise ValueError(f"{path}: no markdown table with a 'file' column")


def readme_rtt_stats(row: dict[str, str]) -> tuple[float, float, float, float] | None:
    """The ``min / median / p95 / max`` rtt figures (ms) of a README row, if it has such a column."""
    for key, value in row.items():
        if "min" in key and "median" in key and "p95" in key:
            parts = [p.strip().replace(",", "") for p in value.split("/")]
            if len(parts) == 4:
                a, b, c, d = (float(p) for p in parts)
                return a, b, c, d
    return None
