"""Delay traces: a measured round-trip-time series ``t_ms, rtt_ms`` (SPEC section 8).

File format (UTF-8 text)::

    # source: CICV5G dataset, urban_n78_v20_run03.txt
    # licence: CC BY 4.0
    # units: t_ms and rtt_ms in milliseconds
    # synthetic: no
    t_ms,rtt_ms,state
    0,33,0
    55,18,0
    109,17,1

* Optional leading comment lines ``# key: value`` carry metadata (free-text
  comment lines without a colon are allowed and ignored; blank lines are
  skipped). A key may appear only once.
* Then one header line naming the columns, in any order: ``t_ms`` and
  ``rtt_ms`` are required, ``state`` (an integer channel-state label >= 0) is
  optional; no other column is allowed (use
  :func:`specstop_gym.traces.importers.import_csv_columns` for other CSVs).
* Then at least one data row. ``t_ms`` is the wall-clock time of the probe in
  milliseconds (any origin, non-decreasing), ``rtt_ms`` the round-trip time in
  milliseconds (finite, > 0). Blank lines are skipped.

The reader is strict: every problem raises :class:`TraceFormatError` naming the
file, the line and the field. Nothing in the file is evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._io import (
    PathLike,
    atomic_write_text,
    format_number,
    parse_integer,
    parse_number,
    read_text_lines,
    readonly_copy,
)
from .errors import TraceFormatError

REQUIRED_COLUMNS = ("t_ms", "rtt_ms")
OPTIONAL_COLUMNS = ("state",)


@dataclass(frozen=True, eq=False)
class DelayTrace:
    """A round-trip-time series in wall-clock time.

    Attributes:
        t_ms: probe times, ms, float64, shape (n,), finite and non-decreasing.
        rtt_ms: round-trip times, ms, float64, shape (n,), finite and > 0.
        state: optional channel-state label per sample (int64 >= 0, shape (n,)), or None.
        metadata: free-form ``key -> value`` strings (source, licence, units, synthetic, ...).
        path: the file the trace was read from, if any.

    The arrays are copied and made read-only on construction; invalid contents
    raise ``ValueError``.
    """

    t_ms: np.ndarray
    rtt_ms: np.ndarray
    state: np.ndarray | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    path: str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        t = np.asarray(self.t_ms, dtype=np.float64)
        r = np.asarray(self.rtt_ms, dtype=np.float64)
        if t.ndim != 1 or r.ndim != 1 or t.shape != r.shape:
            raise ValueError(
                f"t_ms and rtt_ms must be 1-D arrays of one length, got shapes {t.shape} and {r.shape}"
            )
        if t.size < 1:
            raise ValueError("a delay trace needs at least one sample")
        if not np.all(np.isfinite(t)):
            raise ValueError("t_ms must be finite")
        if not np.all(np.isfinite(r)) or not np.all(r > 0):
            raise ValueError("rtt_ms must be finite and > 0")
        if np.any(np.diff(t) < 0):
            raise ValueError(
                f"t_ms must be non-decreasing (first decrease at index {int(np.argmax(np.diff(t) < 0)) + 1})"
            )
        set_(self, "t_ms", readonly_copy(t))
        set_(self, "rtt_ms", readonly_copy(r))
        if self.state is not None:
            s_in = np.asarray(self.state)
            if s_in.shape != t.shape:
                raise ValueError(f"state must have shape {t.shape}, got {s_in.shape}")
            if s_in.size and not np.issubdtype(s_in.dtype, np.integer):
                if not np.all(np.isfinite(s_in)) or not np.all(np.equal(np.mod(s_in, 1), 0)):
                    raise ValueError("state must hold integers")
            s = s_in.astype(np.int64)
            if np.any(s < 0):
                raise ValueError("state labels must be >= 0")
            set_(self, "state", readonly_copy(s))
        meta = {}
        for k, v in dict(self.metadata).items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ValueError(f"metadata must map str to str, got {k!r}: {v!r}")
            meta[k] = v
        set_(self, "metadata", meta)

    def __len__(self) -> int:
        return int(self.t_ms.size)

    @property
    def n_rows(self) -> int:
        """Number of samples."""
        return int(self.t_ms.size)

    @property
    def duration_ms(self) -> float:
        """Time between the first and the last sample, ms."""
        return float(self.t_ms[-1] - self.t_ms[0])


def _parse_metadata_line(text: str, path: PathLike, line: int, meta: dict[str, str]) -> None:
    body = text.lstrip()[1:].strip()
    if ":" not in body:
        return  # a free-text comment
    key, value = body.split(":", 1)
    key, value = key.strip(), value.strip()
    if not key:
        return
    if key in meta:
        raise TraceFormatError(path, line, f"metadata key {key!r} appears twice", "metadata")
    meta[key] = value


def parse_comment_header(lines: list[str], path: PathLike) -> tuple[dict[str, str], int]:
    """Read the leading ``# key: value`` block of ``lines``.

    Returns the metadata and the index of the first line that is neither a
    comment nor blank (``len(lines)`` if there is none).
    """
    meta: dict[str, str] = {}
    i = 0
    while i < len(lines):
        s = lines[i].strip()
        if s.startswith("#"):
            _parse_metadata_line(lines[i], path, i + 1, meta)
        elif s:
            break
        i += 1
    return meta, i


def _parse_header(text: str, path: PathLike, line: int) -> list[str]:
    cols = [c.strip() for c in text.split(",")]
    if "t_ms" not in cols and "rtt_ms" not in cols:
        raise TraceFormatError(
            path, line, f"expected a header line 't_ms,rtt_ms[,state]', found {text.strip()[:60]!r}"
        )
    for name in REQUIRED_COLUMNS:
        if name not in cols:
            raise TraceFormatError(path, line, f"header lacks the required column {name!r}", name)
    seen: set[str] = set()
    for name in cols:
        if name not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
            raise TraceFormatError(
                path,
                line,
                f"unknown column {name!r} (allowed: t_ms, rtt_ms, state; import other CSVs with "
                "'python -m specstop_gym.traces convert --format csv')",
                name,
            )
        if name in seen:
            raise TraceFormatError(path, line, f"column {name!r} appears twice", name)
        seen.add(name)
    return cols


def load_delay_trace(path: PathLike) -> DelayTrace:
    """Read a delay trace CSV (format in the module docstring).

    Args:
        path: the ``.csv`` file.

    Returns:
        The trace; ``t_ms`` and ``rtt_ms`` in milliseconds as written in the file.

    Raises:
        TraceFormatError: the file is empty, binary, lacks the header or a
            required column, has a row with the wrong number of fields, a value
            that is not a finite number, ``rtt_ms <= 0``, a negative or
            non-integer ``state``, ``t_ms`` going backwards, or no data row.
        OSError: the file cannot be read.
    """
    lines = read_text_lines(path)
    meta, i = parse_comment_header(lines, path)
    if i >= len(lines):
        raise TraceFormatError(
            path, max(1, len(lines)), "no header line 't_ms,rtt_ms' (file holds only comments)"
        )
    header_line = i + 1
    cols = _parse_header(lines[i], path, header_line)
    ncol = len(cols)
    it, ir = cols.index("t_ms"), cols.index("rtt_ms")
    isx = cols.index("state") if "state" in cols else None
    t_list: list[float] = []
    r_list: list[float] = []
    s_list: list[int] = []
    prev_t = -np.inf
    for j in range(i + 1, len(lines)):
        text = lines[j]
        if not text.strip():
            continue
        line = j + 1
        parts = text.split(",")
        if len(parts) != ncol:
            raise TraceFormatError(
                path, line, f"expected {ncol} fields ({','.join(cols)}), got {len(parts)}"
            )
        t = parse_number(parts[it], path, line, "t_ms")
        r = parse_number(parts[ir], path, line, "rtt_ms")
        if r <= 0:
            raise TraceFormatError(
                path, line, f"rtt must be > 0 ms, got {parts[ir].strip()}", "rtt_ms"
            )
        if t < prev_t:
            raise TraceFormatError(
                path,
                line,
                f"time goes backwards ({parts[it].strip()} < previous {format_number(prev_t)})",
                "t_ms",
            )
        prev_t = t
        t_list.append(t)
        r_list.append(r)
        if isx is not None:
            s = parse_integer(parts[isx], path, line, "state")
            if s < 0:
                raise TraceFormatError(path, line, f"state must be >= 0, got {s}", "state")
            s_list.append(s)
    if not t_list:
        raise TraceFormatError(path, header_line, "no data rows after the header")
    return DelayTrace(
        t_ms=np.asarray(t_list, dtype=np.float64),
        rtt_ms=np.asarray(r_list, dtype=np.float64),
        state=np.asarray(s_list, dtype=np.int64) if isx is not None else None,
        metadata=meta,
        path=str(path),
    )


def _check_metadata_for_writing(metadata: dict[str, str]) -> None:
    for k, v in metadata.items():
        if not k or ":" in k or "\n" in k or "\r" in k or k != k.strip():
            raise ValueError(
                f"metadata key {k!r} cannot be written (empty, surrounding spaces, ':' or newline)"
            )
        if "\n" in v or "\r" in v or v != v.strip():
            raise ValueError(
                f"metadata value of {k!r} contains a newline or surrounding spaces "
                "(it would not read back unchanged)"
            )


def format_comment_header(metadata: dict[str, str]) -> str:
    """The ``# key: value`` lines for ``metadata`` (insertion order), each ending in a newline."""
    _check_metadata_for_writing(metadata)
    return "".join(f"# {k}: {v}\n" for k, v in metadata.items())


def write_delay_trace(path: PathLike, trace: DelayTrace) -> None:
    """Write ``trace`` as a delay trace CSV, atomically (temporary file, then ``os.replace``).

    Metadata become ``# key: value`` lines; numbers are written in the shortest
    form that reads back exactly. The ``state`` column is written when the trace has one.
    """
    header = "t_ms,rtt_ms,state" if trace.state is not None else "t_ms,rtt_ms"
    out = [format_comment_header(trace.metadata), header, "\n"]
    t = [format_number(x) for x in trace.t_ms]
    r = [format_number(x) for x in trace.rtt_ms]
    if trace.state is not None:
        out.extend(f"{a},{b},{int(s)}\n" for a, b, s in zip(t, r, trace.state))
    else:
        out.extend(f"{a},{b}\n" for a, b in zip(t, r))
    atomic_write_text(Path(path), "".join(out))
