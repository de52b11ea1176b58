"""Command line of the trace tools: ``python -m specstop_gym.traces COMMAND ...``.

Commands::

    convert INPUT OUTPUT --format ping|fping|csv|delay [options]   import a measurement log
    summary TRACE [--plot out.png] [--json] [--min-dwell-ms 5000]   statistics (+ plot) of a trace
                                                       (TRACE: a file, a shipped one, or a preset: trace-starlink)
    fit TRACE [--states 2] --out channel.json                       fit a Markov channel
    verify [--root DIR]                                             check the shipped data's checksums
    manifest [--root DIR]                                           rebuild MANIFEST.json from the files

Exit codes: 0 success; 1 ``verify`` found a missing or modified file, or a disk
error while writing; 2 a user error (bad option, unreadable, malformed or
out-of-bounds file: the message names the file and line). No tracebacks for
user errors: every error is one line, ``python -m specstop_gym.traces: error: ...``.
Every number given on the command line is checked against a documented range
(finite, and a window may not make the work quadratic in the trace's length);
every file written (converted traces, channel fits, plots) is written atomically.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import numpy as np

from ..fileio import atomic_path, disk_error_message
from .acceptance import load_acceptance_trace
from .bounds import (
    MAX_DRAFT_LENGTH,
    MAX_INTERVAL_MS,
    MAX_SPAN_MS,
    MIN_INTERVAL_MS,
    check_delay_trace,
)
from .delay import DelayTrace, load_delay_trace, write_delay_trace
from .errors import ManifestError, TraceFormatError
from .fit import DEFAULT_SMOOTH_MS, fit_markov_channel, write_channel_json
from .importers import import_csv_columns, import_fping, import_ping
from .manifest import verify_manifest, write_manifest
from .summary import (
    DEFAULT_MIN_DWELL_MS,
    DEFAULT_MIN_REL_SHIFT,
    DEFAULT_MIN_SHIFT_MS,
    DEFAULT_MIN_Z,
    DEFAULT_WINDOW_MS,
    plot_delay_trace,
    summarize_delay_trace,
)

FORMATS = ("ping", "fping", "csv", "delay")
PROG = "python -m specstop_gym.traces"
MAX_WINDOW_SAMPLES = 5_000
"""Most samples a summary or fit window may cover on average: the work is proportional to the
trace's length times this (with a window over the whole trace it would be quadratic)."""


class UsageError(Exception):
    """A command-line mistake reported as ``prog: error: ...`` with exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Read, convert, summarise and fit delay and acceptance traces.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    c = sub.add_parser(
        "convert", help="import a measurement log into a delay trace CSV (t_ms,rtt_ms)"
    )
    c.add_argument("input", help="the measurement log or CSV to read")
    c.add_argument("output", help="the delay trace CSV to write (atomically)")
    c.add_argument(
        "--format",
        required=True,
        choices=FORMATS,
        help="ping: iputils ping output (-D optional); fping: fping per-probe output; "
        "csv: any CSV with named columns; delay: re-validate and rewrite a delay trace",
    )
    c.add_argument("--time-column", help="csv: header of the time column")
    c.add_argument("--rtt-column", help="csv: header of the rtt column")
    c.add_argument(
        "--time-unit", default="ms", choices=("ms", "s", "us"), help="csv: unit of the time column"
    )
    c.add_argument(
        "--rtt-unit", default="ms", choices=("ms", "s", "us"), help="csv: unit of the rtt column"
    )
    c.add_argument("--state-column", help="csv: header of an integer channel-state column")
    c.add_argument("--delimiter", default=",", help="csv: field separator (default ',')")
    c.add_argument(
        "--drop-missing", action="store_true", help="csv: drop rows with an empty/NA rtt"
    )
    c.add_argument(
        "--interval-ms",
        type=float,
        help="ping/fping without -D: probe interval in ms (default: stated in the log, else 1000)",
    )
    c.add_argument("--host", help="fping: the target to keep when the log covers several")
    c.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="metadata line to add to the output header (repeatable), e.g. --meta 'licence=CC BY 4.0'",
    )

    s = sub.add_parser(
        "summary", help="statistics of a delay trace (.csv) or acceptance trace (.jsonl)"
    )
    s.add_argument("trace")
    s.add_argument("--plot", metavar="OUT_PNG", help="delay traces: write a plot of rtt over time")
    s.add_argument("--json", action="store_true", help="print JSON instead of text")
    s.add_argument(
        "--window-ms", type=float, default=DEFAULT_WINDOW_MS, help="change-point window W, ms"
    )
    s.add_argument(
        "--min-shift-ms",
        type=float,
        default=DEFAULT_MIN_SHIFT_MS,
        help="smallest reported shift, ms",
    )
    s.add_argument(
        "--min-rel-shift",
        type=float,
        default=DEFAULT_MIN_REL_SHIFT,
        help="smallest reported shift relative to the lower level",
    )
    s.add_argument(
        "--min-z",
        type=float,
        default=DEFAULT_MIN_Z,
        help="smallest reported shift in standard errors of the difference of medians",
    )
    s.add_argument(
        "--min-dwell-ms",
        type=float,
        default=DEFAULT_MIN_DWELL_MS,
        help="shortest regime kept between two changes, ms (0: no dwell rule)",
    )
    s.add_argument(
        "--max-draft",
        type=int,
        help="acceptance traces: positions of the survival estimate "
        "(default: the largest recorded draft length)",
    )

    f = sub.add_parser("fit", help="fit a Markov-modulated channel to a delay trace")
    f.add_argument("trace")
    f.add_argument("--states", type=int, default=2, help="number of channel states (default 2)")
    f.add_argument(
        "--smooth-ms", type=float, default=DEFAULT_SMOOTH_MS, help="rolling-median window, ms"
    )
    f.add_argument("--out", required=True, help="channel JSON to write")

    v = sub.add_parser("verify", help="verify the shipped data files against MANIFEST.json")
    v.add_argument("--root", help="data folder to verify (default: the shipped data)")

    m = sub.add_parser("manifest", help="rebuild MANIFEST.json from the data files' headers")
    m.add_argument("--root", help="data folder (default: the repository's traces/)")
    return p


def _meta_pairs(items: list[str]) -> dict[str, str]:
    if len(items) > 100:
        raise UsageError("--meta: at most 100 items")
    out = {}
    for item in items:
        if "=" not in item or len(item) > 2000:
            raise UsageError(f"--meta takes KEY=VALUE (at most 2000 characters), got {item[:60]!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _number(flag: str, value: float | None, lo: float, hi: float, *, lo_open: bool = False) -> None:
    if value is None:
        return
    ok = math.isfinite(value) and (lo < value if lo_open else lo <= value) and value <= hi
    if not ok:
        rng = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise UsageError(f"{flag} must be a finite number in {rng}, got {value!r}")


def _check_args(a: argparse.Namespace) -> None:
    """Every numeric option within its range (module docstring), before any file is read."""
    if a.command == "convert":
        _number("--interval-ms", a.interval_ms, MIN_INTERVAL_MS, MAX_INTERVAL_MS)
        if a.delimiter not in ("\\t", "tab") and (len(a.delimiter) != 1 or a.delimiter in "\"\r\n"):
            raise UsageError(f"--delimiter must be one character (or tab), got {a.delimiter[:10]!r}")
    elif a.command == "summary":
        _number("--window-ms", a.window_ms, 0.0, MAX_SPAN_MS, lo_open=True)
        _number("--min-shift-ms", a.min_shift_ms, 0.0, 1e9)
        _number("--min-rel-shift", a.min_rel_shift, 0.0, 1e6)
        _number("--min-z", a.min_z, 0.0, 1e6)
        _number("--min-dwell-ms", a.min_dwell_ms, 0.0, MAX_SPAN_MS)
        if a.max_draft is not None and not 1 <= a.max_draft <= MAX_DRAFT_LENGTH:
            raise UsageError(f"--max-draft must be an integer in 1..{MAX_DRAFT_LENGTH}, got {a.max_draft}")
    elif a.command == "fit":
        if not 1 <= a.states <= 16:
            raise UsageError(f"--states must be an integer in 1..16, got {a.states}")
        _number("--smooth-ms", a.smooth_ms, 0.0, MAX_SPAN_MS)


def _check_windows(trace: DelayTrace, flag: str, before_ms: float, after_ms: float) -> None:
    """Refuse a window covering more than :data:`MAX_WINDOW_SAMPLES` samples on average."""
    t = trace.t_ms
    cells = int(np.sum(np.searchsorted(t, t + after_ms, side="right") - np.searchsorted(t, t - before_ms)))
    if cells > MAX_WINDOW_SAMPLES * t.size:
        raise UsageError(f"{flag}: a window covers {cells / t.size:.0f} samples of {trace.path or 'the trace'} on "
                         f"average (at most {MAX_WINDOW_SAMPLES}); choose a shorter window")


def _load_delay(path: str) -> DelayTrace:
    trace = load_delay_trace(path)
    check_delay_trace(trace)
    return trace


def _convert(a: argparse.Namespace) -> int:
    n_lost: int | None = None
    if a.format == "ping":
        trace, n_lost = import_ping(a.input, interval_ms=a.interval_ms)
    elif a.format == "fping":
        trace, n_lost = import_fping(a.input, host=a.host, period_ms=a.interval_ms)
    elif a.format == "csv":
        if not a.time_column or not a.rtt_column:
            raise UsageError("--format csv needs --time-column and --rtt-column")
        delim = "\t" if a.delimiter in ("\\t", "tab") else a.delimiter
        trace = import_csv_columns(
            a.input,
            a.time_column,
            a.rtt_column,
            a.time_unit,
            a.rtt_unit,
            delimiter=delim,
            state_column=a.state_column,
            drop_missing=a.drop_missing,
        )
    else:
        trace = load_delay_trace(a.input)
    check_delay_trace(trace)
    extra = _meta_pairs(a.meta)
    if extra:
        trace = DelayTrace(
            trace.t_ms, trace.rtt_ms, trace.state, {**trace.metadata, **extra}, trace.path
        )
    try:
        write_delay_trace(a.output, trace)
    except ValueError as exc:
        raise UsageError(f"{a.output}: {exc}") from None
    lost = f", {n_lost} lost probes dropped" if n_lost is not None else ""
    print(f"{a.output}: {trace.n_rows} samples over {trace.duration_ms / 1000:.1f} s{lost}")
    return 0


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def resolve_trace_arg(path: str) -> str:
    """The trace a command line names, as evaluate.py accepts it: an existing file as given; else a
    shipped file by its path under ``traces/`` (``delay/starlink_isl_ping.csv``) or its bare name
    (``starlink_isl_ping.csv``); else a trace preset's name (``trace-starlink``: its delay trace).
    Anything else is returned unchanged (the loader then names the missing file)."""
    if not path or os.path.exists(path):
        return path
    from ..core.config import ConfigError
    from ..scenarios import make_scenario, resolve_data_path, scenario_names

    candidates = [path, f"delay/{path}", f"acceptance/{path}"]
    if path in scenario_names():
        cfg = make_scenario(path)
        candidates = [c for c in (cfg.delay_trace, cfg.acceptance_trace) if c] + candidates
    for cand in candidates:
        try:
            return resolve_data_path(cand)
        except ConfigError:
            continue
    return path


def _summary(a: argparse.Namespace) -> int:
    a.trace = resolve_trace_arg(a.trace)
    if a.trace.endswith(".jsonl"):
        acc = load_acceptance_trace(a.trace)
        k = a.max_draft or acc.max_draft_length
        if k < 1:
            raise UsageError("--max-draft must be >= 1")
        surv = acc.empirical_survival(k)
        out: dict[str, Any] = {
            "rounds": acc.n_rounds,
            "censored_fraction": float(acc.censored.mean()),
            "mean_run_length": float(acc.run_length.mean()),
            "mean_draft_length": float(acc.draft_length.mean()),
            "survival_km": [float(x) for x in surv],
            "has_confidences": acc.confidences is not None,
            "metadata": acc.metadata,
        }
        if a.json:
            print(json.dumps(out, indent=2))
        else:
            print(
                f"{a.trace}: {out['rounds']} rounds, {100 * out['censored_fraction']:.1f}% censored, "
                f"mean run length {out['mean_run_length']:.3f}, mean draft length {out['mean_draft_length']:.2f}"
            )
            print("Kaplan-Meier survival S_1..S_K: " + " ".join(f"{x:.4f}" for x in surv))
        return 0
    trace = _load_delay(a.trace)
    _check_windows(trace, "--window-ms", a.window_ms, a.window_ms)
    lost = trace.metadata.get("lost")
    if lost is not None and not (lost.isascii() and lost.isdigit() and len(lost) <= 18):
        meta = {k: v for k, v in trace.metadata.items() if k != "lost"}  # not a count: shown as unknown
        trace = DelayTrace(trace.t_ms, trace.rtt_ms, trace.state, meta, trace.path)
    summ = summarize_delay_trace(
        trace,
        window_ms=a.window_ms,
        min_shift_ms=a.min_shift_ms,
        min_rel_shift=a.min_rel_shift,
        min_z=a.min_z,
        min_dwell_ms=a.min_dwell_ms,
    )
    if a.plot:
        with atomic_path(a.plot) as tmp:
            plot_delay_trace(trace, tmp, summary=summ)
    if a.json:
        print(json.dumps(_jsonable(summ), indent=2))
    else:
        lost = "unknown" if summ["losses"] is None else str(summ["losses"])
        print(
            f"{a.trace}: {summ['rows']} samples over {summ['duration_s']:.1f} s "
            f"(median spacing {summ['sample_interval_median_ms'] or 0:.1f} ms), losses {lost}"
        )
        print(
            f"rtt ms: min {summ['rtt_min_ms']:.1f}, median {summ['rtt_median_ms']:.1f}, "
            f"p95 {summ['rtt_p95_ms']:.1f}, max {summ['rtt_max_ms']:.1f}, mean {summ['rtt_mean_ms']:.1f} "
            f"(per sample; time-weighted {summ['rtt_time_weighted_mean_ms']:.1f})"
        )
        g = summ["gaps"]
        print(f"gaps (intervals > {g['threshold_ms']:.1f} ms): {g['count']}, {100 * g['share']:.1f}% of the span")
        print(f"regime changes ({len(summ['regime_changes'])}):")
        for t, before, after in summ["regime_changes"]:
            print(f"  t = {t / 1000:.1f} s: {before:.1f} -> {after:.1f} ms")
        if a.plot:
            print(f"plot written to {a.plot}")
    return 0


def _fit(a: argparse.Namespace) -> int:
    a.trace = resolve_trace_arg(a.trace)
    trace = _load_delay(a.trace)
    _check_windows(trace, "--smooth-ms", a.smooth_ms / 2, a.smooth_ms / 2)
    try:
        fit = fit_markov_channel(trace, a.states, smooth_ms=a.smooth_ms)
    except ValueError as exc:
        raise UsageError(f"--states {a.states} / --smooth-ms {a.smooth_ms:g} on {a.trace}: {exc}") from None
    write_channel_json(a.out, fit)
    print(
        f"{a.out}: {a.states} states, rtt mean ms [{', '.join(f'{x:.1f}' for x in fit['rtt_mean_ms'])}], "
        f"generator per ms [{', '.join('[' + ', '.join(f'{q:.3g}' for q in row) + ']' for row in fit['generator_per_ms'])}]"
    )
    return 0


def _verify(a: argparse.Namespace) -> int:
    try:
        entries = verify_manifest(a.root)
    except ManifestError as exc:
        print(f"verify failed: {exc}", file=sys.stderr)
        return 1
    for e in entries:
        print(f"ok  {e['path']}  ({e['kind']}, {e['rows']} rows, {e['licence']})")
    print(f"{len(entries)} files verified")
    return 0


def _manifest(a: argparse.Namespace) -> int:
    print(f"{write_manifest(a.root)} written")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the module docstring)."""
    args = _parser().parse_args(argv)
    try:
        _check_args(args)
    except UsageError as exc:
        _error(str(exc))
        return 2
    handler = {
        "convert": _convert,
        "summary": _summary,
        "fit": _fit,
        "verify": _verify,
        "manifest": _manifest,
    }[args.command]
    try:
        return handler(args)
    except BrokenPipeError:  # output piped into e.g. head: not an error
        sys.stdout = open(os.devnull, "w")
        return 0
    except TraceFormatError as exc:
        _error(str(exc))
    except UsageError as exc:
        _error(str(exc))
    except FileNotFoundError as exc:
        _error(f"{exc.filename or exc}: no such file or directory")
    except IsADirectoryError as exc:
        _error(f"{exc.filename or exc}: is a folder, not a file")
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):  # writing failed midway
            _error(disk_error_message(exc) or str(exc))
            return 1
        _error(f"{exc.filename or ''}: {exc.strerror or exc}")
    except ManifestError as exc:
        _error(str(exc))
    return 2


def _error(message: str) -> None:
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
