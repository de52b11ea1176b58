"""Helpers shared by the tests of the scripts' command lines."""

from __future__ import annotations


def one_line_error(err: str, prog: str) -> str:
    """The single ``PROG: error: ...`` line of a refused command's stderr (no traceback)."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    assert "Traceback" not in err
    return lines[0]
