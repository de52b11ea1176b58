"""Fit two-state Markov channels to the shipped real delay traces and write ``traces/channels/*.json``.

Usage (from the repository root)::

    python traces/fit_channels.py

The real traces are third-party data shipped in ``traces/delay/`` under their own
licences (CC BY 4.0, CC BY-SA 4.0; see ``traces/README.md``); ``$SPECSTOP_REAL_TRACES``
may name another folder holding the same files. The fitted numbers are written with
the source and licence quoted from the table of ``traces/README.md``. The manifest
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
# real trace file -> (channel name written under traces/channels/)
CHANNELS = {
    "nr5g_urban_n78.csv": "nr5g_urban_n78",
    "starlink_isl_ping.csv": "starlink_isl",
}


def real_traces_dir() -> Path:
    """``$SPECSTOP_REAL_TRACES``, else the shipped ``traces/delay``."""
    env = os.environ.get("SPECSTOP_REAL_TRACES")
    return Path(env) if env else REPO / "traces" / "delay"


def main() -> int:
    folder = real_traces_dir()
    readme = REPO / "traces" / "README.md"
    missing = [name for name in CHANNELS if not (folder / name).is_file()]
    if missing:
        print(f"error: {', '.join(missing)} not found in {folder}", file=sys.stderr)
        return 2
    table = read_readme_table(readme)
    out_dir = REPO / "traces" / "channels"
    out_dir.mkdir(parents=True, exist_ok=True)
    for csv_name, name in CHANNELS.items():
        row = table[csv_name]
        trace = load_delay_trace(folder / csv_name)
        summary = summarize_delay_trace(trace)
        fit = fit_markov_channel(trace, N_STATES, smooth_ms=DEFAULT_SMOOTH_MS, source=row["source"])
        stats = readme_rtt_stats(row)
        doc = {
            "name": name,
            "kind": "channel",
            "synthetic": "no",
            "description": row["description"],
            "link": row["link"],
            "source": row["source"],
            "licence": f"{row['licence']} (figures derived from the source data; attribute the source)",
            "units": "generator_per_ms: 1/ms; rtt_mean_ms, rtt_median_ms, mean_sojourn_ms, duration_ms: ms; "
            "rtt_cv: dimensionless",
            "fitted_from": f"traces/delay/{csv_name} (third-party, shipped; see traces/README.md)",
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
