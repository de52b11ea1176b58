"""Physical bounds of trace contents, checked where traces enter a simulation or a converted file.

The readers check the format (every value a finite number, rtt > 0, time non-decreasing); these
limits keep what a valid file may hold within what the simulator represents exactly:

=================  ===========================  ====================================================
quantity           limit                        why
=================  ===========================  ====================================================
rtt                <= 600000 ms (10 minutes)    the scenarios' delay bound (``MAX_DELAY_MS``)
time span          <= 1e11 ms (about 3 years)   times stay exact in float64 and far below the
                                                episode clock's range
state label        0 .. 31                      the scenarios' channel-state bound (``MAX_STATES``)
draft length       1 .. 1024 tokens             no drafter speculates that far
rounds             <= 2,000,000 per file        (an acceptance trace; with the file-size bound)
confidence cells   <= 16,777,216 (rounds x K)   the per-position matrix stays below 128 MiB
probe interval     0.001 ms .. 1 hour           a measurement log's stated interval
file               <= 64 MiB, lines <= 64 Ki    :data:`specstop_gym.traces._io.MAX_TRACE_BYTES`
=================  ===========================  ====================================================
"""

from __future__ import annotations

import numpy as np

from ..core.config import MAX_DELAY_MS, MAX_STATES
from ._io import PathLike, read_text_lines
from .errors import TraceFormatError

MAX_RTT_MS = MAX_DELAY_MS
MAX_SPAN_MS = 1e11
MAX_STATE = MAX_STATES - 1
MAX_DRAFT_LENGTH = 1024
MAX_ROUNDS = 2_000_000
MAX_CONFIDENCE_CELLS = 1 << 24
MIN_INTERVAL_MS = 1e-3
MAX_INTERVAL_MS = 3_600_000.0


def check_delay_trace(trace: object) -> None:
    """Raise :class:`TraceFormatError` (file and line of the first offending sample) when a
    :class:`~specstop_gym.traces.delay.DelayTrace` exceeds the bounds of the module docstring."""
    t = np.asarray(trace.t_ms)
    r = np.asarray(trace.rtt_ms)
    s = getattr(trace, "state", None)
    path = getattr(trace, "path", None) or "<delay trace>"
    bad = np.flatnonzero(r > MAX_RTT_MS)
    if bad.size:
        raise TraceFormatError(path, _line_of_row(path, int(bad[0])),
                               f"rtt {r[bad[0]]:g} ms is above {MAX_RTT_MS:g} ms (10 minutes)", "rtt_ms")
    span = t - t[0]
    bad = np.flatnonzero(span > MAX_SPAN_MS)
    if bad.size:
        raise TraceFormatError(path, _line_of_row(path, int(bad[0])),
                               f"the trace spans more than {MAX_SPAN_MS:g} ms (about 3 years)", "t_ms")
    if s is not None:
        bad = np.flatnonzero(np.asarray(s) > MAX_STATE)
        if bad.size:
            raise TraceFormatError(path, _line_of_row(path, int(bad[0])),
                                   f"state {int(np.asarray(s)[bad[0]])} is above {MAX_STATE} "
                                   f"(at most {MAX_STATE + 1} channel states)", "state")


def _line_of_row(path: PathLike, row: int) -> int:
    """The file line of data row ``row`` (0-based) of a delay trace CSV (comments, the header and
    blank lines skipped); 1 if the file cannot be read again."""
    try:
        lines = read_text_lines(path)
    except (OSError, TraceFormatError):
        return 1
    seen_header = False
    n = -1
    for i, text in enumerate(lines):
        s = text.strip()
        if not s or (s.startswith("#") and not seen_header):
            continue
        if not seen_header:
            seen_header = True
            continue
        n += 1
        if n == row:
            return i + 1
    return 1
