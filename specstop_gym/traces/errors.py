"""Errors raised by the trace readers, importers and the data manifest."""

from __future__ import annotations

import os


class TraceFormatError(ValueError):
    """A trace file is malformed.

    The message names the file, the 1-based line number and, where one applies,
    the field, e.g. ``nr5g.csv line 17, field rtt_ms: 'abc' is not a number``.
    The parts are also available as attributes (``path``, ``line``, ``field``,
    ``reason``) for programs that want to point at the offending place.
    """

    def __init__(
        self, path: str | os.PathLike[str], line: int, reason: str, field: str | None = None
    ) -> None:
        self.path = os.fspath(path)
        self.line = int(line)
        self.field = field
        self.reason = reason
        where = f"{self.path} line {self.line}"
        if field is not None:
            where += f", field {field}"
        super().__init__(f"{where}: {reason}")


class ManifestError(RuntimeError):
    """The shipped data does not match ``traces/MANIFEST.json`` (missing file, checksum mismatch)."""
