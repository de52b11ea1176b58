"""Fit two-state Markov channels to the shared real delay traces and write ``traces/channels/*.json``.

Usage (from the repository root)::

    python traces/fit_channels.py

The real traces are third-party data and are not part of the repository: they
are read from ``$SPECSTOP_SHARED_TRACES`` (default ``../shared/traces`` next
to the repository root). Only the fitted numbers are written, with the source,
link and licence quoted from that folder's ``README.md``. The manifest
``traces/MANIFEST.json`` is rebuilt afterwards.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import specstop_gym  # noqa: F401
except ModuleNotFoundError:  # running from a source checkout without an install
    sys.path.insert(0, str(REPO))

from specstop_gym.traces.delay import load_delay_trace
from specstop_gym.traces.fit import DEFAULT_SMOOTH_MS, fit_markov_channel, write_channel_json
from specstop_gym.traces.manifest import write_manifest
from specstop_gym.traces.provenance import read_readme_table, readme_rtt_stats
from specstop_gym.traces.summary import summarize_delay_trace

N_STATES = 2
COMMAND = "python traces/fit_channels.py"
# shared trace file -> (channel name written under traces/channels/)
CHANNELS = {
    "nr5g_urban_n78.csv": "nr5g_urban_n78",
    "starlink_isl_ping.csv": "starlink_isl",
}


def shared_traces_dir() -> Path:
    """``$SPECSTOP_SHARED_TRACES``, else ``<repository>/../shared/traces``."""
    env = os.environ.get("SPECSTOP_SHARED_TRACES")
    return Path(env) if env else REPO.parent / "shared" / "traces"


def main() -> int:
    shared = shared_traces_dir()
    readme = shared / "README.md"
    if not readme.is_file():
        print(
            f"error: {readme} not found; set SPECSTOP_SHARED_TRACES to the folder of the real traces",
            file=sys.stderr,
        )
        return 2
    table = read_readme_table(readme)
    out_dir = REPO / "traces" / "channels"
    out_dir.mkdir(parents=True, exist_ok=True)
    for csv_name, name in CHANNELS.items():
        row = table[csv_name]
        trace = load_delay_trace(shared / csv_name)
        summary = summarize_delay_trace(trace)
        fit = fit_markov_channel(trace, N_STATES, smooth_ms=DEFAULT_SMOOTH_MS, source=row["source"])
        stats = readme_rtt_stats(row)
        doc = {
            "name": name,
            "kind": "channel",
            "synthetic": "no",
            "link": row["link"],
            "source": row["source"],
            "licence": f"{row['licence']} (figures derived from the source data; attribute the source)",
            "units": "generator_per_ms: 1/ms; rtt_mean_ms, rtt_median_ms, mean_sojourn_ms, duration_ms: ms; "
            "rtt_cv: dimensionless",
            "fitted_from": f"{csv_name} (third-party, not shipped; see the shared traces README)",
            "fitting_command": f"{COMMAND}  # fit_markov_channel(trace, n_states={N_STATES}, "
            f"smooth_ms={DEFAULT_SMOOTH_MS:g})",
            "trace_rtt_ms_min_median_p95_max": [
                summary["rtt_min_ms"],
                summary["rtt_median_ms"],
                summary["rtt_p95_ms"],
                summary["rtt_max_ms"],
            ],
            "readme_rtt_ms_min_median_p95_max": list(stats) if stats else None,
            **{k: v for k, v in fit.items() if k != "source"},
        }
        path = out_dir / f"{name}.json"
        write_channel_json(path, doc)
        print(
            f"{path.relative_to(REPO)}: Q/ms = {fit['generator_per_ms']}, rtt mean ms = {fit['rtt_mean_ms']}, "
            f"cv = {fit['rtt_cv']}, stationary = {fit['stationary']}"
        )
    print(f"{write_manifest().relative_to(REPO)} rebuilt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
