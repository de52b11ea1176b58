"""Measurement gaps in delay traces, and how a replay treats them (SPEC 3).

A delay trace is replayed as a step function: the rtt of a round sent at ``t`` is the last
sample at or before ``t``. Between two samples far apart the replay must decide what the rtt
was. This module defines a gap and the three policies of the ``delay_trace_gaps`` scenario
field.

**Gap**: an interval between consecutive samples longer than ``gap_factor`` times the trace's
median sampling interval (``delay_trace_gap_factor``, default 10): a 20-Hz probe (50 ms) has a
gap past 500 ms, a 15-ms ping past 150 ms. A few lost probes do not make a gap; an outage or a
pause of the measurement does.

**Policies**:

* ``hold`` (default): the replay holds the last sample across the gap, as across any interval
  (the timeline is the measured one: level shifts and outages stay at their measured times,
  e.g. the Starlink trace's 15-s reconfigurations; a 0.5-s outage replays the pre-outage rtt).
* ``skip``: gaps are removed from the replay timeline: each gap is replaced by one median
  interval, so every replayed sample is held about as long as the trace's own sampling rate
  (right for a trace probed in bursts, where the time between bursts was not measured).
* ``refuse``: a trace with a gap is an error naming the file, the first gap and the count.

Under ``hold``, when gaps cover more than :data:`GAP_WARN_SHARE` of the loop (the span plus one
median interval), a ``UserWarning`` names the file and the share, once per file and process: a
drive-test trace that probes in 30-s bursts would otherwise replay one held sample for most of
an episode without a word.

Per-sample statistics: what stands for "the trace's typical rtt" (the stationary reference of
the ``token_credit`` reward, the channel's ``long_run_mean_rtt_ms``, summaries) counts every
measured sample once (:func:`per_sample_mean`), so one long stall cannot dominate it; the
time-weighted mean of the replayed step function is :func:`time_weighted_mean` (it is what a
process sampling the replay uniformly in time would see).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np

from ..core.config import TRACE_GAP_POLICIES

__all__ = ["DEFAULT_GAP_FACTOR", "GAP_POLICIES", "GAP_WARN_SHARE", "TraceGapError", "TraceGaps", "find_gaps",
           "per_sample_mean", "replay_times", "time_weighted_mean"]

GAP_POLICIES = TRACE_GAP_POLICIES
"""Values of ``delay_trace_gaps``."""
DEFAULT_GAP_FACTOR = 10.0
"""A gap is an interval longer than this many median sampling intervals."""
GAP_WARN_SHARE = 0.10
"""Under ``hold``, warn when gaps cover more than this share of the replayed loop."""

_warned: set[tuple[str, float]] = set()


class TraceGapError(ValueError):
    """A trace has a measurement gap and the policy is ``refuse`` (the message names the file)."""


@dataclass(frozen=True)
class TraceGaps:
    """The gaps of a trace (times in ms).

    Attributes:
        index: sample index before each gap (the held sample), int64.
        start_ms: time of that sample.
        length_ms: length of each gap (the interval to the next sample).
        median_interval_ms: the trace's median sampling interval.
        threshold_ms: ``gap_factor * median_interval_ms``.
        share: total gap length over the replayed loop (span + one median interval), in [0, 1].
    """

    index: np.ndarray
    start_ms: np.ndarray
    length_ms: np.ndarray
    median_interval_ms: float
    threshold_ms: float
    share: float

    @property
    def count(self) -> int:
        return int(self.index.size)


def _median_interval(t: np.ndarray) -> float:
    if t.size < 2:
        return 1.0
    return max(float(np.median(np.diff(t))), 1e-9)


def find_gaps(t_ms: np.ndarray, gap_factor: float = DEFAULT_GAP_FACTOR) -> TraceGaps:
    """The gaps of sample times ``t_ms`` (non-decreasing): intervals > ``gap_factor`` x the median interval."""
    if not (gap_factor > 1.0 and np.isfinite(gap_factor)):
        raise ValueError(f"gap_factor must be a finite number > 1, got {gap_factor!r}")
    t = np.asarray(t_ms, dtype=np.float64)
    med = _median_interval(t)
    thr = gap_factor * med
    d = np.diff(t)
    idx = np.flatnonzero(d > thr)
    loop = float(t[-1] - t[0]) + med if t.size else med
    return TraceGaps(index=idx, start_ms=t[idx], length_ms=d[idx], median_interval_ms=med, threshold_ms=thr,
                     share=float(d[idx].sum() / loop) if loop > 0 else 0.0)


def replay_times(t_ms: np.ndarray, policy: str = "hold", gap_factor: float = DEFAULT_GAP_FACTOR,
                 name: str | os.PathLike[str] = "delay trace") -> np.ndarray:
    """The replay timeline of sample times ``t_ms`` under a gap ``policy`` (see the module docstring).

    Returns the times (ms, starting at 0) at which the replay switches to each sample:
    unchanged for ``hold`` (shifted to start at 0), gaps shortened to one median interval for
    ``skip``. Raises :class:`TraceGapError` for ``refuse`` when there is a gap; warns under
    ``hold`` when gaps cover more than :data:`GAP_WARN_SHARE` of the loop (once per file).
    """
    if policy not in GAP_POLICIES:
        raise ValueError(f"delay_trace_gaps must be one of {', '.join(GAP_POLICIES)}; got {policy!r}")
    t = np.asarray(t_ms, dtype=np.float64)
    t = t - t[0]
    gaps = find_gaps(t, gap_factor)
    label = os.fspath(name)
    if gaps.count == 0:
        return t
    if policy == "refuse":
        i = int(gaps.index[0])
        raise TraceGapError(
            f"{label}: {gaps.count} measurement gap(s) longer than {gaps.threshold_ms:g} ms "
            f"({gap_factor:g} x the median interval {gaps.median_interval_ms:g} ms), the first after sample "
            f"{i} (t = {gaps.start_ms[0]:g} ms, {gaps.length_ms[0]:g} ms long), {gaps.share:.1%} of the trace; "
            "set delay_trace_gaps=hold or skip to replay it")
    if policy == "skip":
        d = np.diff(t)
        d[gaps.index] = gaps.median_interval_ms
        return np.concatenate([[0.0], np.cumsum(d)])
    key = (label, float(gap_factor))
    if gaps.share > GAP_WARN_SHARE and key not in _warned:
        _warned.add(key)
        warnings.warn(
            f"{label}: measurement gaps (intervals > {gaps.threshold_ms:g} ms) cover {gaps.share:.0%} of the "
            f"trace ({gaps.count} gaps); delay_trace_gaps=hold replays the last sample across them "
            "(delay_trace_gaps=skip removes them from the replay timeline)", UserWarning, stacklevel=2)
    return t


def per_sample_mean(rtt_ms: np.ndarray) -> float:
    """Mean rtt over the samples, each counted once (ms): the trace's typical rtt."""
    return float(np.mean(np.asarray(rtt_ms, dtype=np.float64)))


def time_weighted_mean(t_ms: np.ndarray, rtt_ms: np.ndarray, duration_ms: float | None = None) -> float:
    """Mean of the replayed step function over one loop (ms): each sample weighted by how long it is
    held (the last one until ``duration_ms``, default the last time plus the median interval)."""
    t = np.asarray(t_ms, dtype=np.float64)
    r = np.asarray(rtt_ms, dtype=np.float64)
    end = float(t[-1] + _median_interval(t)) if duration_ms is None else float(duration_ms)
    w = np.diff(np.append(t, end))
    return float((w * r).sum() / w.sum()) if w.sum() > 0 else float(r.mean())
