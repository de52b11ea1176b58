"""Importers: common RTT measurement logs -> :class:`DelayTrace` (milliseconds).

Supported inputs:

* :func:`import_ping`: Linux iputils ``ping`` output (also BSD/macOS ``ping``),
  with or without ``-D`` timestamps, with or without ``-O``.
* :func:`import_fping`: ``fping`` per-probe output (``-l``/``-c``/``-C`` with
  ``-D`` or without), one target.
* :func:`import_csv_columns`: any CSV with named time and rtt columns.

Every importer returns times relative to the first answered probe (``t_ms = 0``),
drops lost probes, and raises :class:`TraceFormatError` naming the file and
line for anything it cannot read. Nothing in the input is evaluated. Memory and
time are bounded by construction: files up to 64 MiB, log lines up to 1024
characters, patterns without nested ambiguous repetition (linear time per line),
lost probes counted arithmetically (never enumerated), and the contents held to
the bounds of :mod:`specstop_gym.traces.bounds` (rtt, time span, states, interval).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._io import PathLike, format_number, parse_number, read_text_lines
from .bounds import MAX_INTERVAL_MS, MAX_RTT_MS, MAX_SPAN_MS, MAX_STATE, MIN_INTERVAL_MS
from .delay import DelayTrace, parse_comment_header
from .errors import TraceFormatError

MAX_LOG_LINE = 1024
"""Longest line of a ping/fping log (real lines are below 300 characters)."""
MAX_SEQ_DIGITS = 12
"""Most digits of a probe number."""

DEFAULT_INTERVAL_MS = 1000.0
"""Probe interval assumed when a log has no timestamps and states none (ping's and fping's default, ms)."""

_TS = r"(?:\[(?P<ts>\d+(?:\.\d+)?)\]\s*)?"
_PING_REPLY = re.compile(_TS + r"\d+ bytes from .+?: icmp_[rs]eq=(?P<seq>\S+)(?P<rest>.*)$")
_PING_TIME = re.compile(r"\btime[=<]\s*(?P<time>[^\sm]+)\s*ms\b")
_PING_NO_ANSWER = re.compile(_TS + r"no answer yet for icmp_seq=(?P<seq>\d+)\s*$")
_PING_TIMEOUT = re.compile(_TS + r"Request timeout for icmp_seq[= ](?P<seq>\d+)\s*$")
_PING_ERROR_REPLY = re.compile(_TS + r"From \S+(?: \([^)]*\))?:? icmp_seq=(?P<seq>\d+) .+$")
_PING_IGNORE = (
    re.compile(r"^PING .+"),  # PING host (addr) 56(84) bytes of data.
    re.compile(r"^--- .+ ping statistics ---$"),
    re.compile(r"^\d+ packets transmitted, .+"),
    re.compile(r"^(?:rtt|round-trip) min/avg/max/(?:mdev|stddev) = .+"),
    re.compile(r"^(?:\[\d+(?:\.\d+)?\]\s*)?ping: .+"),  # ping: sendmsg: Network is unreachable
    re.compile(r"^(?:WARNING|Warning): .+"),
    re.compile(r"^\^C$"),
)
# A recorded command line: "$ ping -i 0.2 host", "user@box:~$ sudo fping -D -p 20 host", "# ping ..."
_COMMAND = re.compile(r"^(?:[^\s$#>]*[$#>]+\s*)?(?:sudo\s+)?(?:[^\s/]*/)*f?ping6?\s+(?P<args>.*)$")
_PING_INTERVAL_FLAG = re.compile(r"(?:^|\s)-i\s*(?P<val>\d+(?:\.\d+)?)(?=\s|$)")
_FPING_PERIOD_FLAG = re.compile(r"(?:^|\s)(?:-p\s*|--period=)(?P<val>\d+(?:\.\d+)?)(?=\s|$)")

_FPING_LINE = re.compile(
    _TS + r"(?P<host>\S+)\s+: \[(?P<idx>\d+)\], "
    r"(?:(?P<bytes>\d+) bytes, (?P<rtt>\S+) ms|(?P<timeout>timed out))"
    r" \((?P<avg>\S+) avg, (?P<loss>\S+)% loss\)(?P<extra>.*)$"
)
_FPING_IGNORE = (
    re.compile(r"^\S+\s+: duplicate for \[\d+\], .+"),
    re.compile(r"^\S+\s+: xmt/rcv/%loss = .+"),
    re.compile(r"^\S+\s+:(?: (?:\d+(?:\.\d+)?|-))+$"),  # -C summary: host : 1.23 - 1.40
    re.compile(r"^(?:\[\d+(?:\.\d+)?\]\s*)?ICMP .+ from .+"),
    re.compile(r"^\[\d\d:\d\d:\d\d\]$"),  # -Q interval header
    re.compile(
        r"^\s*\d+ (?:targets|alive|unreachable|unknown addresses|timeouts \(waiting for response\)|"
        r"ICMP Echos sent|ICMP Echo Replies received|other ICMP received)$"
    ),
    re.compile(r"^\s*\d+(?:\.\d+)? ms \((?:min|avg|max) round trip time\)$"),
    re.compile(r"^\s*\d+(?:\.\d+)? sec \(elapsed real time\)$"),
    re.compile(r"^\^C$"),
)


@dataclass
class _Probe:
    seq: int  # probe number (unwrapped)
    rtt_ms: float
    stamp_s: float | None
    line: int


def _unwrapper() -> Callable[[int], int]:
    """Undo the 16-bit wrap of ICMP sequence numbers (65535 -> 0), in file order."""
    state = {"offset": 0, "prev": None}

    def unwrap(seq: int) -> int:
        prev = state["prev"]
        if prev is not None and seq + state["offset"] < prev - 32768:
            state["offset"] += 65536
        value = seq + state["offset"]
        state["prev"] = value
        return value

    return unwrap


def _interval_from_header(
    lines: list[str], meta: dict[str, str], flag: re.Pattern[str], flag_unit_ms: float, path: PathLike
) -> float | None:
    """A probe interval (ms) stated by the log: ``# interval_ms: N`` or a recorded command line.

    ``flag`` finds the interval option in the command's arguments, whose value
    is in units of ``flag_unit_ms`` (ping ``-i`` takes seconds, fping ``-p`` ms).
    A stated interval that is not a number in [0.001 ms, 1 h] is an error naming its line.
    """
    for key in ("interval_ms", "period_ms"):
        if key in meta:
            line = next((i + 1 for i, t in enumerate(lines) if t.lstrip().startswith("#") and key in t), 1)
            value = parse_number(meta[key], path, line, key)
            return _check_interval(value, path, line, key)
    for i, text in enumerate(lines):
        m = _COMMAND.match(text.strip())
        if m:
            f = flag.search(m.group("args"))
            if f:
                value = parse_number(f.group("val"), path, i + 1, "interval") * flag_unit_ms
                return _check_interval(value, path, i + 1, "interval")
    return None


def _check_interval(value: float, path: PathLike, line: int, field: str) -> float:
    if not MIN_INTERVAL_MS <= value <= MAX_INTERVAL_MS:
        raise TraceFormatError(path, line, f"probe interval {value:g} ms is outside "
                               f"[{MIN_INTERVAL_MS:g}, {MAX_INTERVAL_MS:g}] ms", field)
    return value


def _check_interval_arg(name: str, value: float | None) -> None:
    if value is not None and not (isinstance(value, (int, float)) and MIN_INTERVAL_MS <= value <= MAX_INTERVAL_MS):
        raise ValueError(f"{name} must be a number of ms in [{MIN_INTERVAL_MS:g}, {MAX_INTERVAL_MS:g}], got {value!r}")


def _seq(text: str, path: PathLike, line: int, field: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > MAX_SEQ_DIGITS:
        raise TraceFormatError(path, line, f"{text[:20]!r} is not a sequence number "
                               f"(up to {MAX_SEQ_DIGITS} digits)", field)
    return int(text)


def _rtt(text: str, path: PathLike, line: int, field: str) -> float:
    rtt = parse_number(text, path, line, field)
    if not 0 < rtt <= MAX_RTT_MS:
        raise TraceFormatError(path, line, f"rtt must be > 0 and <= {MAX_RTT_MS:g} ms, got {text}", field)
    return rtt


def _assemble(
    path: PathLike,
    probes: list[_Probe],
    lost: set[int],
    interval_ms: float | None,
    importer: str,
    meta: dict[str, str],
    last_line: int,
) -> tuple[DelayTrace, int]:
    if not probes:
        raise TraceFormatError(
            path, last_line, f"no answered probes found in this {importer} output"
        )
    stamped = [p.stamp_s is not None for p in probes]
    if any(stamped) and not all(stamped):
        bad = next(p for p, s in zip(probes, stamped) if s != stamped[0])
        raise TraceFormatError(
            path, bad.line, "some replies have [timestamp] prefixes (-D) and some do not"
        )
    answered = {p.seq for p in probes}
    seqs = answered | lost
    # probes of the span min..max that were not answered: counted, never enumerated
    n_lost = (max(seqs) - min(seqs) + 1) - len(answered)
    probes = sorted(probes, key=lambda p: p.seq)
    rtt = np.array([p.rtt_ms for p in probes])
    meta = dict(meta)
    if all(stamped):
        # -D prints the time the reply arrived; the probe left rtt earlier.
        send_ms = np.array([p.stamp_s for p in probes]) * 1000.0 - rtt  # type: ignore[operator]
        order = np.argsort(send_ms, kind="stable")
        t = send_ms[order] - send_ms[order][0]
        rtt = rtt[order]
        meta["timestamps"] = "-D reply time minus rtt (probe send time)"
    else:
        step = float(interval_ms) if interval_ms is not None else DEFAULT_INTERVAL_MS
        seq = np.array([p.seq for p in probes], dtype=np.float64)
        t = (seq - seq[0]) * step
        meta["timestamps"] = f"probe number x interval ({format_number(step)} ms)"
    far = np.flatnonzero(t > MAX_SPAN_MS)
    if far.size:
        line = probes[int(far[0])].line if not all(stamped) else probes[int(order[far[0]])].line
        raise TraceFormatError(path, line, f"the log spans more than {MAX_SPAN_MS:g} ms (about 3 years)")
    meta.update(
        {"importer": importer, "imported_from": Path(path).name, "units": "ms", "lost": str(n_lost)}
    )
    return DelayTrace(t_ms=np.round(t, 6), rtt_ms=rtt, metadata=meta, path=str(path)), n_lost


def import_ping(path: PathLike, interval_ms: float | None = None) -> tuple[DelayTrace, int]:
    """Read the output of ``ping`` (iputils on Linux; BSD/macOS lines are understood too).

    Args:
        path: a text file holding ping's standard output.
        interval_ms: probe interval, ms, used when the replies carry no ``-D``
            timestamps. Default: the interval stated in the file (a ``#
            interval_ms: N`` comment, or a recorded command line ``ping -i SECONDS
            ...``), else 1000 ms (ping's default).

    Returns:
        ``(trace, n_lost)``. With ``-D`` (``[1723456789.123456] 64 bytes from
        ...``), ``t_ms`` is each probe's send time (reply time minus rtt);
        without it, ``t_ms = (icmp_seq - first answered icmp_seq) * interval_ms``.
        Times start at 0 at the first answered probe. Lost probes (gaps in
        ``icmp_seq``, ``no answer yet`` lines of ``-O``, ``Request timeout``,
        ``From ... Destination Host Unreachable``) are counted and dropped;
        duplicates (``DUP!``) are ignored. Probes lost after the last answered
        one are counted only when ping reports them (``-O``).

    Raises:
        TraceFormatError: a line that is not ping output, a reply without a
            ``time=`` field, an unreadable number, or no answered probe.
    """
    _check_interval_arg("interval_ms", interval_ms)
    lines = read_text_lines(path, max_line=MAX_LOG_LINE)
    meta, _ = parse_comment_header(lines, path)
    unwrap = _unwrapper()
    probes: list[_Probe] = []
    lost: set[int] = set()
    for j, raw in enumerate(lines):
        text = raw.strip()
        line = j + 1
        if not text or text.startswith("#") or _COMMAND.match(text):
            continue
        m = _PING_REPLY.match(text)
        if m:
            seq = unwrap(_seq(m.group("seq"), path, line, "icmp_seq"))
            rest = m.group("rest")
            if "DUP!" in rest:
                continue
            tm = _PING_TIME.search(rest)
            if not tm:
                raise TraceFormatError(path, line, "reply without a time=... ms field", "time")
            rtt = _rtt(tm.group("time"), path, line, "time")
            stamp = parse_number(m.group("ts"), path, line, "timestamp") if m.group("ts") else None
            probes.append(_Probe(seq, rtt, stamp, line))
            continue
        m = (
            _PING_NO_ANSWER.match(text)
            or _PING_TIMEOUT.match(text)
            or _PING_ERROR_REPLY.match(text)
        )
        if m:
            lost.add(unwrap(_seq(m.group("seq"), path, line, "icmp_seq")))
            continue
        if any(p.match(text) for p in _PING_IGNORE):
            continue
        raise TraceFormatError(path, line, f"not a line of ping output: {text[:60]!r}")
    step = (
        interval_ms
        if interval_ms is not None
        else _interval_from_header(lines, meta, _PING_INTERVAL_FLAG, 1000.0, path)
    )
    return _assemble(path, probes, lost, step, "ping", meta, len(lines))


def import_fping(
    path: PathLike, host: str | None = None, period_ms: float | None = None
) -> tuple[DelayTrace, int]:
    """Read the per-probe output of ``fping`` (``-l``, ``-c N`` or ``-C N``, optionally ``-D``).

    Lines look like::

        [1723456789.12345] 8.8.8.8 : [0], 64 bytes, 15.2 ms (15.2 avg, 0% loss)
        [1723456790.62345] 8.8.8.8 : [1], timed out (15.2 avg, 50% loss)

    Args:
        path: a text file holding fping's output (stdout and stderr may be mixed in).
        host: the target to keep when the log covers several; required then.
        period_ms: probe period, ms (fping ``-p``), used when lines carry no
            ``-D`` timestamps. Default: stated in the file (``# period_ms: N`` or
            a recorded ``fping -p N ...`` command line), else 1000 ms.

    Returns:
        ``(trace, n_lost)`` with the same conventions as :func:`import_ping`
        (``[idx]`` plays the part of ``icmp_seq``; ``timed out`` lines and gaps
        count as lost).

    Raises:
        TraceFormatError: an unrecognised line, an unreadable number, several
            targets without ``host``, or no answered probe.
    """
    _check_interval_arg("period_ms", period_ms)
    lines = read_text_lines(path, max_line=MAX_LOG_LINE)
    meta, _ = parse_comment_header(lines, path)
    probes: list[_Probe] = []
    lost: set[int] = set()
    hosts: list[str] = []
    for j, raw in enumerate(lines):
        text = raw.strip()
        line = j + 1
        if not text or text.startswith("#") or _COMMAND.match(text):
            continue
        m = _FPING_LINE.match(text)
        if m:
            name = m.group("host")
            if name not in hosts:
                hosts.append(name)
                if host is None and len(hosts) > 1:
                    raise TraceFormatError(
                        path,
                        line,
                        f"the log covers several targets ({', '.join(hosts)}); "
                        "choose one with host=... (--host)",
                    )
            if host is not None and name != host:
                continue
            idx = _seq(m.group("idx"), path, line, "index")
            if m.group("timeout"):
                lost.add(idx)
                continue
            rtt = _rtt(m.group("rtt"), path, line, "rtt")
            stamp = parse_number(m.group("ts"), path, line, "timestamp") if m.group("ts") else None
            probes.append(_Probe(idx, rtt, stamp, line))
            continue
        if any(p.match(text) for p in _FPING_IGNORE):
            continue
        raise TraceFormatError(path, line, f"not a line of fping output: {text[:60]!r}")
    if host is not None and host not in hosts:
        raise TraceFormatError(
            path,
            max(1, len(lines)),
            f"target {host!r} does not appear (found: {', '.join(hosts) or 'none'})",
        )
    step = (
        period_ms
        if period_ms is not None
        else _interval_from_header(lines, meta, _FPING_PERIOD_FLAG, 1.0, path)
    )
    if hosts:
        meta = {**meta, "target": host or hosts[0]}
    return _assemble(path, probes, lost, step, "fping", meta, len(lines))


_UNIT_TO_MS = {"ms": 1.0, "s": 1000.0, "us": 1e-3}
_MISSING = {"", "na", "n/a", "nan", "null", "none", "-", "timeout", "lost"}


def import_csv_columns(
    path: PathLike,
    time_column: str,
    rtt_column: str,
    time_unit: str = "ms",
    rtt_unit: str = "ms",
    *,
    delimiter: str = ",",
    state_column: str | None = None,
    drop_missing: bool = False,
) -> DelayTrace:
    """Read a CSV whose header names a time column and an rtt column.

    Args:
        path: the CSV file; leading ``# key: value`` comment lines become metadata.
        time_column: header name of the time column (non-decreasing).
        rtt_column: header name of the round-trip-time column (> 0).
        time_unit: unit of the time column: ``"ms"``, ``"s"`` or ``"us"``.
        rtt_unit: unit of the rtt column: ``"ms"``, ``"s"`` or ``"us"``.
        delimiter: field separator (one character; ``","``, ``";"`` or ``"\\t"``).
        state_column: optional header name of an integer channel-state column.
        drop_missing: drop rows whose rtt cell is empty or ``NA``/``nan``/``timeout``
            (counted in ``metadata["lost"]``) instead of rejecting the file.

    Returns:
        The trace in milliseconds, ``t_ms`` shifted so that the first kept row is
        at 0 (so Unix-epoch seconds are fine). Other columns are ignored.
        Quoted fields are understood; a quoted field may not span lines.

    Raises:
        TraceFormatError: missing header or column, wrong field count, a value
            that is not a finite number, rtt <= 0, time going backwards, no rows.
    """
    for name, unit in (("time_unit", time_unit), ("rtt_unit", rtt_unit)):
        if unit not in _UNIT_TO_MS:
            raise ValueError(f"{name} must be one of {sorted(_UNIT_TO_MS)}, got {unit!r}")
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\"\r\n":
        raise ValueError(f"delimiter must be one character (not a quote or newline), got {delimiter!r}")
    lines = read_text_lines(path)
    meta, i = parse_comment_header(lines, path)
    if i >= len(lines):
        raise TraceFormatError(
            path, max(1, len(lines)), "no header line (file holds only comments)"
        )
    header_line = i + 1
    header = [c.strip() for c in next(csv.reader([lines[i]], delimiter=delimiter))]
    wanted = {"time_column": time_column, "rtt_column": rtt_column}
    if state_column is not None:
        wanted["state_column"] = state_column
    index: dict[str, int] = {}
    for role, name in wanted.items():
        if name not in header:
            raise TraceFormatError(
                path,
                header_line,
                f"header has no column {name!r} (columns: {', '.join(header)[:200]})",
                name,
            )
        if header.count(name) > 1:
            raise TraceFormatError(path, header_line, f"column {name!r} appears twice", name)
        index[role] = header.index(name)
    t_list: list[float] = []
    r_list: list[float] = []
    s_list: list[int] = []
    n_missing = 0
    prev = -np.inf
    for j in range(i + 1, len(lines)):
        if not lines[j].strip():
            continue
        line = j + 1
        try:
            cells = next(csv.reader([lines[j]], delimiter=delimiter, strict=True))
        except csv.Error as exc:
            raise TraceFormatError(path, line, f"bad CSV: {exc}") from None
        if len(cells) != len(header):
            raise TraceFormatError(path, line, f"expected {len(header)} fields, got {len(cells)}")
        rtt_text = cells[index["rtt_column"]].strip()
        if drop_missing and rtt_text.lower() in _MISSING:
            n_missing += 1
            continue
        t = (
            parse_number(cells[index["time_column"]], path, line, time_column)
            * _UNIT_TO_MS[time_unit]
        )
        r = parse_number(rtt_text, path, line, rtt_column) * _UNIT_TO_MS[rtt_unit]
        if not 0 < r <= MAX_RTT_MS:
            raise TraceFormatError(path, line, f"rtt must be > 0 and <= {MAX_RTT_MS:g} ms, got {rtt_text}",
                                   rtt_column)
        if t_list and t - t_list[0] > MAX_SPAN_MS:
            raise TraceFormatError(path, line, f"the file spans more than {MAX_SPAN_MS:g} ms (about 3 years)",
                                   time_column)
        if t < prev:
            raise TraceFormatError(path, line, "time goes backwards", time_column)
        prev = t
        t_list.append(t)
        r_list.append(r)
        if state_column is not None:
            s_text = cells[index["state_column"]].strip()
            if not (s_text.isascii() and s_text.isdigit() and len(s_text) <= 6) or int(s_text) > MAX_STATE:
                raise TraceFormatError(
                    path, line, f"{s_text[:20]!r} is not a state label in 0..{MAX_STATE}", state_column
                )
            s_list.append(int(s_text))
    if not t_list:
        raise TraceFormatError(path, header_line, "no data rows after the header")
    t_arr = np.asarray(t_list)
    meta = dict(meta)
    meta.update(
        {
            "importer": "csv",
            "imported_from": Path(path).name,
            "units": "ms",
            "columns": f"{time_column} [{time_unit}] -> t_ms, {rtt_column} [{rtt_unit}] -> rtt_ms",
        }
    )
    if drop_missing:
        meta["lost"] = str(n_missing)
    return DelayTrace(
        t_ms=np.round(t_arr - t_arr[0], 9),
        rtt_ms=np.asarray(r_list),
        state=np.asarray(s_list, dtype=np.int64) if state_column is not None else None,
        metadata=meta,
        path=str(path),
    )
