"""Summaries and plots of delay traces, with a simple change-point detector.

Regime changes (documented method, :func:`detect_regime_changes`), in two steps.

1. Candidates. At every sample time ``t`` compare the median rtt of the window
   ``[t - W, t)`` with the median of ``[t, t + W)`` (``W = window_ms``, default
   3000 ms). A point is a candidate when both windows hold at least
   ``min_samples`` samples, span at least ``W / 2``, and the medians differ by more
   than the largest of ``min_shift_ms`` (default 3 ms), ``min_rel_shift`` times the
   lower median (default 5 %) and ``min_z`` (default 8) standard errors of the
   difference (the standard error of a window median taken as
   ``1.2533 * (IQR / 1.349) / sqrt(n)``, so noisier levels need larger steps). Because
   a median moves only when more than half of a window moves, isolated spikes or
   stalls shorter than ``W / 2`` are ignored. Only local maxima of the shift count,
   thinned greedily, largest first, to at least ``W`` apart.

2. Regimes (hysteresis). The candidates cut the trace into regimes, each summarised by
   the median of all its samples. Regimes are merged one at a time until (a) every
   interior regime lasts at least ``min_dwell_ms`` (default 5000 ms; the shortest is
   merged first, into the neighbour with the closer level) and (b) every change
   separates the levels of the two whole regimes around it by the step-1 thresholds,
   with the standard errors multiplied by a noise inflation factor measured on the
   trace (the weakest change is removed first). The factor, ``IQR / 1.349`` of the
   step-1 statistics ``(after - before) / se`` over all tested times (at least 1),
   is about 1 for independent samples and grows with the autocorrelation of the rtt
   (1.5 for AR(1) noise with lag-1 correlation 0.5, 7 for 0.98), which the
   ``sqrt(n)`` of the standard error ignores. Each surviving change is then moved to
   the step-1 candidate between its two regimes that fits them best (least absolute
   deviation from the two medians).

Step 1 alone reports a change wherever a 3 s window's median wanders: on six 100 s levels
with log-normal AR(1) noise (cv 0.1) of lag-1 correlation 0.9, 0.98 and 0.995 per 50 ms
sample it found 33, 73 and 63 changes for 5 true ones, flipping back and forth within
seconds; with step 2 it finds the 5 (docs/traces.md has the counts on every trace). On the
shipped and shared traces (defaults) it reports every handover of the synthetic
cellular trace (14 of 14, within 0.3 s of the generator's state changes), nothing on
the synthetic Wi-Fi jitter and on the 5G trace (16 ms with 1-3 ms wander, a ramp to
about 21 ms and back), and 7 level shifts of the Starlink trace, each at one of its
15 s reconfiguration boundaries (11.4 to 146.1 s, ending 152 -> 213 ms). The dwell of
5 s lies below the shortest true regime of the cellular trace (6.85 s) and well below
Starlink's 15 s slots.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import numpy as np

from ._windows import window_stats
from .delay import DelayTrace
from .gaps import DEFAULT_GAP_FACTOR, find_gaps, time_weighted_mean

DEFAULT_WINDOW_MS = 3000.0
DEFAULT_MIN_SHIFT_MS = 3.0
DEFAULT_MIN_REL_SHIFT = 0.05
DEFAULT_MIN_SAMPLES = 5
DEFAULT_MIN_Z = 8.0
DEFAULT_MIN_DWELL_MS = 5000.0


def detect_regime_changes(
    t_ms: np.ndarray,
    rtt_ms: np.ndarray,
    *,
    window_ms: float = DEFAULT_WINDOW_MS,
    min_shift_ms: float = DEFAULT_MIN_SHIFT_MS,
    min_rel_shift: float = DEFAULT_MIN_REL_SHIFT,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    min_z: float = DEFAULT_MIN_Z,
    min_dwell_ms: float = DEFAULT_MIN_DWELL_MS,
) -> list[tuple[float, float, float]]:
    """Sustained level shifts of the rtt, by comparing medians of adjacent windows, then
    consolidating the regimes they delimit (module docstring).

    Args:
        t_ms: sample times, ms, non-decreasing.
        rtt_ms: round-trip times, ms.
        window_ms: length ``W`` of each of the two windows, ms.
        min_shift_ms: smallest absolute shift of the median reported, ms.
        min_rel_shift: smallest shift relative to the lower of the two medians.
        min_samples: fewest samples each window must hold.
        min_z: smallest shift in units of its standard error (noise-aware threshold).
        min_dwell_ms: shortest regime kept between two changes, ms (shorter ones are merged into
            the neighbour with the closer level; the first and last regime, cut by the trace's
            ends, are exempt). 0 disables the dwell rule, not the level test.

    Returns:
        ``[(t_ms, level_before_ms, level_after_ms), ...]`` in time order; the
        levels are the medians of the whole regimes before and after the change.
    """
    return _detect(
        np.asarray(t_ms, dtype=np.float64),
        np.asarray(rtt_ms, dtype=np.float64),
        window_ms=window_ms,
        min_shift_ms=min_shift_ms,
        min_rel_shift=min_rel_shift,
        min_samples=min_samples,
        min_z=min_z,
        min_dwell_ms=min_dwell_ms,
    )[0]


def _detect(
    t: np.ndarray,
    r: np.ndarray,
    *,
    window_ms: float,
    min_shift_ms: float,
    min_rel_shift: float,
    min_samples: int,
    min_z: float,
    min_dwell_ms: float,
) -> tuple[list[tuple[float, float, float]], float]:
    """:func:`detect_regime_changes` and the noise inflation factor it measured."""
    if not window_ms > 0:
        raise ValueError(f"window_ms must be > 0, got {window_ms}")
    if not min_dwell_ms >= 0:
        raise ValueError(f"min_dwell_ms must be >= 0, got {min_dwell_ms}")
    if t.size == 0:
        return [], 1.0
    cuts, inflation = _candidate_changes(
        t,
        r,
        window_ms=window_ms,
        min_shift_ms=min_shift_ms,
        min_rel_shift=min_rel_shift,
        min_samples=min_samples,
        min_z=min_z,
    )
    regimes = _consolidate(
        t,
        r,
        cuts,
        min_dwell_ms=min_dwell_ms,
        min_shift_ms=min_shift_ms,
        min_rel_shift=min_rel_shift,
        min_z=min_z * inflation,
    )
    changes = [(float(t[b.start]), a.level, b.level) for a, b in itertools.pairwise(regimes)]
    return changes, inflation


def _candidate_changes(
    t: np.ndarray,
    r: np.ndarray,
    *,
    window_ms: float,
    min_shift_ms: float,
    min_rel_shift: float,
    min_samples: int,
    min_z: float,
) -> tuple[list[int], float]:
    """Step 1: sample indices where the medians of ``[t-W, t)`` and ``[t, t+W)`` differ by the
    thresholds, local maxima of the shift only, thinned greedily to at least ``W`` apart."""
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
    inflation = _noise_inflation((after - before)[ok], se[ok])
    with np.errstate(invalid="ignore"):
        ok &= shift > np.maximum(
            np.maximum(min_shift_ms, min_rel_shift * np.minimum(before, after)),
            min_z * se,
        )
    # Keep local maxima of the shift only (a step produces a ramp of candidates around it).
    padded = np.concatenate([[-np.inf], np.where(ok, shift, -np.inf), [-np.inf]])
    ok &= (padded[1:-1] >= padded[:-2]) & (padded[1:-1] >= padded[2:])
    cand = sorted(
        ((float(shift[i]), int(i)) for i in np.flatnonzero(ok)), key=lambda c: (-c[0], c[1])
    )
    chosen: list[int] = []
    for _, i in cand:
        if all(abs(t[i] - t[k]) >= window_ms for k in chosen):
            chosen.append(i)
    return sorted(chosen), inflation


def _noise_inflation(diff: np.ndarray, se: np.ndarray) -> float:
    """How much wider the shifts of adjacent window medians spread than independent samples
    predict: ``IQR(diff / se) / 1.349`` over all tested times (about 1 for independent noise,
    ``sqrt((1 + rho) / (1 - rho))`` at most for AR(1) noise of lag-1 correlation ``rho``), at least
    1. The rare real changes occupy few of the tested times, so the quartiles hardly move."""
    valid = se > 0
    if np.count_nonzero(valid) < 20:
        return 1.0
    q1, q3 = np.percentile(diff[valid] / se[valid], [25.0, 75.0])
    return max(1.0, float(q3 - q1) / 1.349)


class _Regime:
    """A run of samples ``[start, stop)`` between two changes: its median level and the standard
    error of that median (``1.2533 * (IQR / 1.349) / sqrt(n)``), ms."""

    __slots__ = ("level", "se", "start", "stop")

    def __init__(self, r: np.ndarray, start: int, stop: int) -> None:
        self.start, self.stop = start, stop
        med, spread = window_stats(r, np.array([start]), np.array([stop]))
        self.level = float(med[0])
        self.se = float(1.2533 * spread[0] / np.sqrt(stop - start))


def _consolidate(
    t: np.ndarray,
    r: np.ndarray,
    cuts: list[int],
    *,
    min_dwell_ms: float,
    min_shift_ms: float,
    min_rel_shift: float,
    min_z: float,
) -> list[_Regime]:
    """Step 2: merge regimes until every interior one lasts ``min_dwell_ms`` and every change
    separates two regime levels (whole-regime medians) by the step-1 thresholds.

    One merge at a time: first the shortest interior regime below the dwell time, into the
    neighbour with the closer level; then the change with the smallest shift relative to its
    threshold, if that is below 1. This is the hysteresis: a window-level step that does not move
    the level of the regime as a whole (a back-and-forth flip, a wander around one level) is
    not a regime change.
    """
    bounds = [0, *cuts, t.size]
    regimes = [_Regime(r, a, b) for a, b in itertools.pairwise(bounds)]

    def duration(k: int) -> float:
        g = regimes[k]
        end = t[g.stop] if g.stop < t.size else t[-1]
        return float(end - t[g.start])

    def merge(k: int) -> None:  # regimes k and k + 1 become one
        regimes[k : k + 2] = [_Regime(r, regimes[k].start, regimes[k + 1].stop)]

    while len(regimes) > 1:
        short = [k for k in range(1, len(regimes) - 1) if duration(k) < min_dwell_ms]
        if short:
            k = min(short, key=lambda k: (duration(k), k))
            level = regimes[k].level
            left = abs(regimes[k - 1].level - level)
            right = abs(regimes[k + 1].level - level)
            merge(k - 1 if left <= right else k)
            continue
        ratios = []
        for a, b in itertools.pairwise(regimes):
            threshold = max(
                min_shift_ms,
                min_rel_shift * min(a.level, b.level),
                min_z * float(np.hypot(a.se, b.se)),
            )
            ratios.append(abs(b.level - a.level) / threshold)
        k = int(np.argmin(ratios))
        if ratios[k] > 1.0:
            break
        merge(k)
    # A merge keeps one of several nearby cuts, not necessarily the best placed: move each
    # change to the step-1 candidate between its two regimes that fits them best (least
    # absolute deviation from the two medians), keeping interior regimes at least the dwell.
    for k in range(len(regimes) - 1):
        a, b = regimes[k], regimes[k + 1]
        best = (_l1_cost(r, a) + _l1_cost(r, b), a, b)
        for c in cuts:
            if not a.start < c < b.stop or c == b.start:
                continue
            a2, b2 = _Regime(r, a.start, c), _Regime(r, c, b.stop)
            end = t[b.stop] if b.stop < t.size else t[-1]
            if (k > 0 and t[c] - t[a.start] < min_dwell_ms) or (
                k + 2 < len(regimes) and end - t[c] < min_dwell_ms
            ):
                continue
            cost = _l1_cost(r, a2) + _l1_cost(r, b2)
            if cost < best[0]:
                best = (cost, a2, b2)
        regimes[k], regimes[k + 1] = best[1], best[2]
    return regimes


def _l1_cost(r: np.ndarray, g: _Regime) -> float:
    """Sum of absolute deviations of a regime's samples from its median, ms."""
    return float(np.abs(r[g.start : g.stop] - g.level).sum())


def summarize_delay_trace(
    trace: DelayTrace,
    *,
    window_ms: float = DEFAULT_WINDOW_MS,
    min_shift_ms: float = DEFAULT_MIN_SHIFT_MS,
    min_rel_shift: float = DEFAULT_MIN_REL_SHIFT,
    min_z: float = DEFAULT_MIN_Z,
    min_dwell_ms: float = DEFAULT_MIN_DWELL_MS,
) -> dict[str, Any]:
    """Descriptive statistics of a delay trace (all times in ms unless the key says otherwise).

    Returns a plain dict: ``rows``, ``duration_s``, ``sample_interval_median_ms``,
    ``rtt_min_ms``, ``rtt_median_ms``, ``rtt_p95_ms`` (numpy's linear
    interpolation), ``rtt_max_ms``, ``rtt_mean_ms`` and ``rtt_std_ms`` (per sample: each
    measured sample counts once), ``rtt_time_weighted_mean_ms`` (each sample weighted by how long
    a replay holds it), ``gaps`` (``count``, ``share`` of the span, ``threshold_ms``, the longest
    ``max_ms``; :func:`specstop_gym.traces.gaps.find_gaps` with the default factor), ``losses``
    (from ``metadata["lost"]`` when an importer recorded it, else None),
    ``regime_changes`` (list of ``(t_ms, level_before_ms, level_after_ms)``, see
    :func:`detect_regime_changes`) and ``change_point_method`` (its parameters).
    """
    r = trace.rtt_ms
    lost = trace.metadata.get("lost")
    changes, inflation = _detect(
        np.asarray(trace.t_ms, dtype=np.float64),
        np.asarray(r, dtype=np.float64),
        window_ms=window_ms,
        min_shift_ms=min_shift_ms,
        min_rel_shift=min_rel_shift,
        min_samples=DEFAULT_MIN_SAMPLES,
        min_z=min_z,
        min_dwell_ms=min_dwell_ms,
    )
    gaps = find_gaps(trace.t_ms, DEFAULT_GAP_FACTOR)
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
        "rtt_time_weighted_mean_ms": time_weighted_mean(trace.t_ms, r),
        "gaps": {"count": gaps.count, "share": gaps.share, "threshold_ms": gaps.threshold_ms,
                 "max_ms": float(gaps.length_ms.max()) if gaps.count else 0.0},
        "losses": int(lost) if lost is not None and lost.isdigit() else None,
        "regime_changes": changes,
        "change_point_method": {
            "method": "median of [t-W, t) vs [t, t+W), greedy thinning; regimes merged to "
            "min_dwell_ms and to whole-regime level shifts above the thresholds",
            "window_ms": window_ms,
            "min_shift_ms": min_shift_ms,
            "min_rel_shift": min_rel_shift,
            "min_samples": DEFAULT_MIN_SAMPLES,
            "min_z": min_z,
            "min_dwell_ms": min_dwell_ms,
            "noise_inflation": inflation,
        },
    }


def plot_delay_trace(
    trace: DelayTrace,
    out_png: str | os.PathLike[str],
    *,
    summary: dict[str, Any] | None = None,
    title: str | None = None,
) -> None:
    """Plot rtt (ms) over time (s) to a PNG, with the detected regimes marked.

    The samples are a thin blue line; each regime's level (the median of its samples) a red
    step line over its span; each change a dashed vertical line, labelled ``before -> after``
    above the plot area (so no label covers the data; more than 30 changes are left
    unlabelled). The y axis is logarithmic (plain tick labels) when the maximum exceeds five
    times the median. The legend sits below the plot. Uses matplotlib's Agg canvas directly
    (no pyplot, no global backend change). ``summary`` may pass an already computed
    :func:`summarize_delay_trace` result.
    """
    fig = delay_trace_figure(trace, summary=summary, title=title)
    fig.savefig(os.fspath(out_png))


def delay_trace_figure(
    trace: DelayTrace, *, summary: dict[str, Any] | None = None, title: str | None = None
) -> Any:
    """The matplotlib ``Figure`` that :func:`plot_delay_trace` saves (for tests and notebooks)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    s = summary if summary is not None else summarize_delay_trace(trace)
    changes = s["regime_changes"]
    fig = Figure(figsize=(10, 4.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    t_s = trace.t_ms / 1000.0
    ax.plot(t_s, trace.rtt_ms, lw=0.5, marker=".", ms=1.2, color="tab:blue", label="rtt sample")
    if trace.n_rows:
        edges = [float(t_s[0])] + [tc / 1000.0 for tc, _, _ in changes] + [float(t_s[-1])]
        levels = [changes[0][1]] if changes else [s["rtt_median_ms"]]
        levels += [after for _, _, after in changes]
        ax.step(
            edges,
            levels + levels[-1:],
            where="post",
            color="tab:red",
            lw=1.6,
            label="regime level (median)" if changes else "median (no regime change)",
        )
    for k, (tc, before, after) in enumerate(changes):
        ax.axvline(
            tc / 1000.0,
            color="tab:red",
            ls="--",
            lw=0.8,
            alpha=0.7,
            label="regime change" if k == 0 else None,
        )
        if len(changes) <= 30:
            ax.annotate(
                f"{before:.0f}\u2192{after:.0f}",
                (tc / 1000.0, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(0, 3),
                textcoords="offset points",
                rotation=90 if len(changes) > 10 else 0,
                ha="center",
                va="bottom",
                fontsize=7,
                color="tab:red",
                annotation_clip=False,
            )
    if s["rtt_max_ms"] > 5 * s["rtt_median_ms"]:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(
            FuncFormatter(lambda v, _: f"{v:g}" if str(f"{v:g}")[0] in "25" else "")
        )
    ax.set_xlabel("time since the first sample (s)")
    ax.set_ylabel("round-trip time (ms)")
    name = title or os.path.basename(trace.path or "delay trace")
    fig.suptitle(
        f"{name}: {s['rows']} samples, rtt min/median/p95/max = "
        f"{s['rtt_min_ms']:.0f}/{s['rtt_median_ms']:.0f}/{s['rtt_p95_ms']:.0f}/{s['rtt_max_ms']:.0f} ms, "
        f"{len(changes)} regime change{'s' if len(changes) != 1 else ''}",
        fontsize=9,
    )
    ax.grid(True, alpha=0.3)
    fig.legend(loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    return fig
