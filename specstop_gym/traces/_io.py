"""Shared helpers for the strict trace readers and the atomic writers (internal)."""

from __future__ import annotations

import math
import os
import re

import numpy as np

from .errors import TraceFormatError

PathLike = str | os.PathLike[str]

# A plain decimal number: optional sign, digits with an optional fraction, optional exponent.
# Stricter than float(): no "nan", "inf", "1_000", hex or surrounding junk.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_NON_FINITE = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}


MAX_TRACE_BYTES = 64 << 20
"""Largest trace or measurement log the readers accept (64 MiB: months of 1 Hz probes); larger
files are refused before they are read, so a reader's memory stays within a few hundred MiB."""
MAX_LINE_CHARS = 1 << 16
"""Longest line of a trace file (64 Ki characters: an acceptance round with 1024 confidences
needs about 25 Ki)."""


def read_text_lines(path: PathLike, *, max_bytes: int = MAX_TRACE_BYTES,
                    max_line: int = MAX_LINE_CHARS) -> list[str]:
    """Read a UTF-8 text file and return its lines without line terminators.

    Line ``i`` of the result (0-based) is line ``i + 1`` of the file. A leading
    UTF-8 byte-order mark is dropped; ``\\r\\n`` endings are accepted. The final
    newline does not produce an extra empty line. At most ``max_bytes`` are read (a larger
    file, or an endless one such as ``/dev/zero``, is refused) and no line may exceed
    ``max_line`` characters: memory and time stay bounded whatever the input.

    Raises:
        TraceFormatError: the file is empty, too large, contains a NUL byte, a line that is too
            long, or is not valid UTF-8 (the message gives the line of the first offending byte).
        OSError: the file cannot be read (e.g. ``FileNotFoundError``).
    """
    import stat

    if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block, a device never end
        raise TraceFormatError(path, 1, "not a regular file")
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise TraceFormatError(path, 1, f"file is larger than {max_bytes >> 20} MiB; split or thin it first")
    if not data:
        raise TraceFormatError(path, 1, "file is empty")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise TraceFormatError(
            path, data.count(b"\n", 0, nul) + 1, "binary data (NUL byte); not a text trace"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TraceFormatError(
            path, line, f"binary data (byte {data[exc.start]:#04x} is not valid UTF-8)"
        ) from None
    del data
    text = text.removeprefix("\ufeff")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for i, ln in enumerate(lines):
        if len(ln) > max_line:
            raise TraceFormatError(path, i + 1, f"line of {len(ln)} characters; at most {max_line}")
    return [ln.removesuffix("\r") for ln in lines]


def readonly_copy(a: np.ndarray) -> np.ndarray:
    """A copy of ``a`` that cannot be written to (for the frozen trace dataclasses)."""
    out = np.array(a, copy=True)
    out.setflags(write=False)
    return out


def parse_number(text: str, path: PathLike, line: int, field: str) -> float:
    """Parse a finite decimal number, or raise a ``TraceFormatError`` naming file, line and field."""
    s = text.strip()
    if s.lower() in _NON_FINITE:
        raise TraceFormatError(path, line, f"{s!r} is not a finite number", field)
    if not _NUMBER.fullmatch(s):
        raise TraceFormatError(path, line, f"{s[:40]!r} is not a number", field)
    value = float(s)
    if not math.isfinite(value):
        raise TraceFormatError(path, line, f"{s!r} is not a finite number (overflow)", field)
    return value


def parse_integer(text: str, path: PathLike, line: int, field: str) -> int:
    """Parse a decimal integer, or raise a ``TraceFormatError`` naming file, line and field."""
    s = text.strip()
    if not _INTEGER.fullmatch(s):
        raise TraceFormatError(path, line, f"{s[:40]!r} is not an integer", field)
    if len(s.lstrip("+-")) > 18:  # beyond int64: refused here, not as an overflow later
        raise TraceFormatError(path, line, f"{s[:20]!r}... has more than 18 digits", field)
    return int(s)


def format_number(x: float) -> str:
    """Shortest text that reads back as exactly ``x`` (integers without a trailing ``.0``)."""
    x = float(x)
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(x)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8, ``\\n`` line endings) to ``path`` atomically.

    The project's one atomic writer (:func:`specstop_gym.fileio.atomic_write_text`): the text
    goes to a temporary file in the same directory, is flushed to disk, and then replaces
    ``path`` with ``os.replace``: readers see either the old file or the complete new one,
    never a partial write.
    """
    from ..fileio import atomic_write_text as _write

    _write(path, text)
