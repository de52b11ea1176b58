"""Trace I/O for specstop-gym (SPEC section 8): strict readers and atomic writers, importers, summaries, fits.

Delay traces (``t_ms,rtt_ms`` CSV, milliseconds)::

    >>> from specstop_gym.traces import data_path, load_delay_trace, summarize_delay_trace
    >>> trace = load_delay_trace(data_path("delay/synthetic_wifi_jitter.csv"))
    >>> summarize_delay_trace(trace)["rows"]
    12000

Acceptance traces (JSON Lines, one recorded round per line)::

    >>> from specstop_gym.traces import load_acceptance_trace
    >>> acc = load_acceptance_trace(data_path("acceptance/qwen_geometric.jsonl"))
    >>> acc.empirical_survival(8).shape
    (8,)

Every reader raises :class:`TraceFormatError` naming the file, line and field of
a problem; nothing is unpickled or evaluated. See ``docs/traces.md``.
"""

from .acceptance import AcceptanceTrace, load_acceptance_trace, write_acceptance_trace
from .delay import DelayTrace, load_delay_trace, write_delay_trace
from .errors import ManifestError, TraceFormatError
from .fit import fit_markov_channel, stationary_distribution, write_channel_json
from .gaps import TraceGapError, TraceGaps, find_gaps, replay_times
from .importers import import_csv_columns, import_fping, import_ping
from .manifest import (
    build_manifest,
    data_path,
    data_root,
    load_manifest,
    verify_manifest,
    write_manifest,
)
from .summary import detect_regime_changes, plot_delay_trace, summarize_delay_trace

__all__ = [
    "AcceptanceTrace",
    "DelayTrace",
    "ManifestError",
    "TraceFormatError",
    "TraceGapError",
    "TraceGaps",
    "build_manifest",
    "data_path",
    "data_root",
    "detect_regime_changes",
    "find_gaps",
    "fit_markov_channel",
    "import_csv_columns",
    "import_fping",
    "import_ping",
    "load_acceptance_trace",
    "load_delay_trace",
    "load_manifest",
    "plot_delay_trace",
    "replay_times",
    "stationary_distribution",
    "summarize_delay_trace",
    "verify_manifest",
    "write_acceptance_trace",
    "write_channel_json",
    "write_delay_trace",
    "write_manifest",
]
