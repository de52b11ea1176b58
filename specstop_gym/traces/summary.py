"""Summaries and plots of delay traces, with a simple change-point detector.

Regime changes (documented method, :func:`detect_regime_changes`): at every
sample time ``t`` compare the median rtt of the window ``[t - W, t)`` with the
median of ``[t, t + W)`` (``W = window_ms``, default 3000 ms). A point is a
candidate when both windows hold at least ``min_samples`` samples, span at
least ``W / 2``, and the medians differ by more than the largest of
``min_shift_ms`` (default 3 ms), ``min_rel_shift`` times the lower median
(default 5 %) and ``min_z`` (default 8) standard errors of the difference (the
standard error of a window median taken as ``1.2533 * (IQR / 1.349) / sqrt(n)``,
so noisier levels need larger steps; 8 rather than a textbook 3 because rtt
samples are autocorrelated, which the formula ignores, and every sample time
is tested). Because a median moves only when more than half of a
window moves, a reported shift is sustained for at least ``W / 2`` on each side
and isolated spikes or stalls shorter than that are ignored. Candidates are
thinned greedily, largest shift first, so that reported changes are at least
``W`` apart (only local maxima of the shift are considered).

The defaults ignore the 1-3 ms wander of a 16 ms 5G link and the jitter of
the synthetic Wi-Fi trace, and report the 8-60 ms steps of a Starlink path at
its 15 s reconfiguration boundaries and every handover of the synthetic
cellular trace.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ._windows import window_stats
from .delay import DelayTrace

DEFAULT_WINDOW_MS = 3000.0
DEFAULT_MIN_SHIFT_MS = 3.0
DEFAULT_MIN_REL_SHIFT = 0.05
DEFAULT_MIN_SAMPLES = 5
DEFAULT_MIN_Z = 8.0


def detect_regime_changes(
    t_ms: np.ndarray,
    rtt_ms: np.ndarray,
    *,
    window_ms: float = DEFAULT_WINDOW_MS,
    min_shift_ms: float = DEFAULT_MIN_SHIFT_MS,
    min_rel_shift: float = DEFAULT_MIN_REL_SHIFT,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    min_z: float = DEFAULT_MIN_Z,
) -> list[tuple[float, float, float]]:
    """Sustained level shifts of the rtt, by comparing medians of adjacent windows (module docstring).

    Args:
        t_ms: sample times, ms, non-decreasing.
        rtt_ms: round-trip times, ms.
        window_ms: length ``W`` of each of the two windows, ms.
        min_shift_ms: smallest absolute shift of the median reported, ms.
        min_rel_shift: smallest shift relative to the lower of the two medians.
        min_samples: fewest samples each window must hold.
        min_z: smallest shift in units of its standard error (noise-aware threshold).

    Returns:
        ``[(t_ms, level_before_ms, level_after_ms), ...]`` in time order; the
        levels are the two window medians at the change.
    """
    t = np.asarray(t_ms, dtype=np.float64)
    r = np.asarray(rtt_ms, dtype=np.float64)
    if window_ms <= 0:
        raise ValueError(f"window_ms must be > 0, got {window_ms}")
    if t.size == 0:
        return []
    lo = np.searchsorted(t, t - window_ms, side="left")
    mid = np.searchsorted(t, t, side="left")  # first sample at this time stamp
    hi = np.searchsorted(t, t + window_ms, side="left")
    before, spread_b = window_stats(r, lo, mid)
    after, spread_a = window_stats(r, mid, hi)
    # Standard error of a median, about 1.2533 sigma / sqrt(n), sigma from the IQR.
    se = np.sqrt(
        (1.2533 * spread_b) ** 2 / np.maximum(mid - lo, 1)
        + (1.2533 * spread_a) ** 2 / np.maximum(hi - mid, 1)
    )
    # Both windows must hold enough samples and span at least half their length.
    last_after = np.maximum(hi - 1, 0)
    ok = ((mid - lo) >= min_samples) & ((hi - mid) >= min_samples)
    ok &= (
        (t - t[lo] >= window_ms / 2)
        & (t[last_after] - t >= window_ms / 2)
        & (mid == np.arange(t.size))
    )
    shift = np.abs(after - before)
    with np.errstate(invalid="ignore"):
        ok &= shift > np.maximum(
            np.maximum(min_shift_ms, min_rel_shift * np.minimum(before, after)), min_z * se
        )
    # Keep local maxima of the shift only (a step produces a ramp of candidates around it).
    padded = np.concatenate([[-np.inf], np.where(ok, shift, -np.inf), [-np.inf]])
    ok &= (padded[1:-1] >= padded[:-2]) & (padded[1:-1] >= padded[2:])
    cand = [
        (float(shift[i]), int(i), float(before[i]), float(after[i])) for i in np.flatnonzero(ok)
    ]
    chosen: list[tuple[float, int, float, float]] = []
    for c in sorted(cand, key=lambda c: (-c[0], c[1])):
        if all(abs(t[c[1]] - t[k[1]]) >= window_ms for k in chosen):
            chosen.append(c)
    return [
        (float(t[i]), before, after) for _, i, before, after in sorted(chosen, key=lambda c: c[1])
    ]


def summarize_delay_trace(
    trace: DelayTrace,
    *,
    window_ms: float = DEFAULT_WINDOW_MS,
    min_shift_ms: float = DEFAULT_MIN_SHIFT_MS,
    min_rel_shift: float = DEFAULT_MIN_REL_SHIFT,
    min_z: float = DEFAULT_MIN_Z,
) -> dict[str, Any]:
    """Descriptive statistics of a delay trace (all times in ms unless the key says otherwise).

    Returns a plain dict: ``rows``, ``duration_s``, ``sample_interval_median_ms``,
    ``rtt_min_ms``, ``rtt_median_ms``, ``rtt_p95_ms`` (numpy's linear
    interpolation), ``rtt_max_ms``, ``rtt_mean_ms``, ``rtt_std_ms``, ``losses``
    (from ``metadata["lost"]`` when an importer recorded it, else None),
    ``regime_changes`` (list of ``(t_ms, level_before_ms, level_after_ms)``, see
    :func:`detect_regime_changes`) and ``change_point_method`` (its parameters).
    """
    r = trace.rtt_ms
    lost = trace.metadata.get("lost")
    changes = detect_regime_changes(
        trace.t_ms,
        r,
        window_ms=window_ms,
        min_shift_ms=min_shift_ms,
        min_rel_shift=min_rel_shift,
        min_z=min_z,
    )
    return {
        "rows": trace.n_rows,
        "duration_s": trace.duration_ms / 1000.0,
        "sample_interval_median_ms": float(np.median(np.diff(trace.t_ms)))
        if trace.n_rows > 1
        else None,
        "rtt_min_ms": float(r.min()),
        "rtt_median_ms": float(np.median(r)),
        "rtt_p95_ms": float(np.percentile(r, 95)),
        "rtt_max_ms": float(r.max()),
        "rtt_mean_ms": float(r.mean()),
        "rtt_std_ms": float(r.std()),
        "losses": int(lost) if lost is not None and lost.isdigit() else None,
        "regime_changes": changes,
        "change_point_method": {
            "method": "median of [t-W, t) vs [t, t+W), greedy thinning",
            "window_ms": window_ms,
            "min_shift_ms": min_shift_ms,
            "min_rel_shift": min_rel_shift,
            "min_samples": DEFAULT_MIN_SAMPLES,
            "min_z": min_z,
        },
    }


def plot_delay_trace(
    trace: DelayTrace,
    out_png: str | os.PathLike[str],
    *,
    summary: dict[str, Any] | None = None,
    title: str | None = None,
) -> None:
    """Plot rtt (ms) over time (s) to a PNG, with detected regime changes marked.

    Uses matplotlib's Agg canvas directly (no pyplot, no global backend change).
    The y axis is logarithmic when the maximum exceeds five times the median.
    ``summary`` may pass an already computed :func:`summarize_delay_trace` result.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    s = summary if summary is not None else summarize_delay_trace(trace)
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    t_s = trace.t_ms / 1000.0
    ax.plot(t_s, trace.rtt_ms, lw=0.6, marker=".", ms=1.5, color="tab:blue", label="rtt")
    for k, (tc, before, after) in enumerate(s["regime_changes"]):
        ax.axvline(
            tc / 1000.0, color="tab:red", ls="--", lw=0.9, label="regime change" if k == 0 else None
        )
        ax.annotate(
            f"{before:.0f}->{after:.0f}",
            (tc / 1000.0, after),
            fontsize=7,
            color="tab:red",
            xytext=(2, 4),
            textcoords="offset points",
        )
    if s["rtt_max_ms"] > 5 * s["rtt_median_ms"]:
        ax.set_yscale("log")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("rtt (ms)")
    name = title or os.path.basename(trace.path or "delay trace")
    ax.set_title(
        f"{name}: {s['rows']} samples, rtt min/median/p95/max = "
        f"{s['rtt_min_ms']:.0f}/{s['rtt_median_ms']:.0f}/{s['rtt_p95_ms']:.0f}/{s['rtt_max_ms']:.0f} ms",
        fontsize=9,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(os.fspath(out_png))
