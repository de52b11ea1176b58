"""Fit a Markov-modulated channel (SPEC section 3, ``markov``) to a delay trace.

Method (:func:`fit_markov_channel`), in wall-clock time:

1. **Smooth**: replace each log-rtt sample by the median of log rtt over the
   centred window ``[t - smooth_ms/2, t + smooth_ms/2]`` (default 1000 ms), so
   that isolated spikes and stalls shorter than about ``smooth_ms / 2`` do not
   count as state changes (they stay in the per-state rtt distribution).
2. **Classify**: one-dimensional k-means (Lloyd's algorithm, deterministic
   quantile start) on the smoothed log rtt; states are numbered by increasing
   rtt, state 0 the fastest.
3. **Refine**: each state change of the smoothed series is only known to
   within ``smooth_ms / 2``; within that zone the change is moved to the split
   that best fits the two states' centres to the raw log rtt (least squares),
   so that per-state statistics do not absorb samples of the neighbour state.
4. **Per-state rtt**: mean and coefficient of variation (std / mean) of the raw
   rtt samples labelled with the state.
5. **Generator**: the interval ``[t_j, t_{j+1})`` is spent in the state of
   sample ``j``; with ``T_a`` the total time in state ``a`` and ``N_ab`` the
   number of observed ``a -> b`` changes, the maximum-likelihood continuous-time
   generator is ``Q_ab = N_ab / T_a`` per ms (``a != b``), ``Q_aa = -sum_b Q_ab``:
   the exit rate ``1 / mean holding time`` split by the observed transition
   counts. A state never left gets exit rate 0.

The result is a plain dict (JSON-ready) with ``generator_per_ms``,
``rtt_mean_ms``, ``rtt_cv`` and ``stationary`` in the names that
:class:`specstop_gym.core.config.ScenarioConfig` uses for ``markov_*`` fields.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

from ._io import atomic_write_text
from ._windows import window_medians
from ..core.channel import stationary_distribution
from .delay import DelayTrace

DEFAULT_SMOOTH_MS = 1000.0


def _kmeans_1d(x: np.ndarray, k: int, max_iter: int = 200) -> np.ndarray:
    """Sorted cluster centres of 1-D data by Lloyd's algorithm from quantile starting points."""
    centres = np.quantile(x, (np.arange(k) + 0.5) / k)
    labels = None
    for _ in range(max_iter):
        cut = 0.5 * (centres[1:] + centres[:-1])
        new = np.searchsorted(cut, x, side="right")
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        for c in range(k):
            members = x[labels == c]
            if members.size:
                centres[c] = members.mean()
        centres = np.sort(centres)
    return centres


def _refine_changes(
    t: np.ndarray, x: np.ndarray, labels: np.ndarray, centres: np.ndarray, half_ms: float
) -> np.ndarray:
    """Move every label change to the least-squares split within ``+-half_ms`` (step 3 of the module docstring)."""
    out = labels.copy()
    starts = np.flatnonzero(np.diff(labels)) + 1  # first sample of each new run
    prev = 0
    for k, c in enumerate(starts):
        nxt = int(starts[k + 1]) if k + 1 < starts.size else labels.size
        lo = max(prev, int(np.searchsorted(t, t[c] - half_ms, side="left")))
        hi = min(nxt, int(np.searchsorted(t, t[c] + half_ms, side="right")))
        a, b = labels[c - 1], labels[c]
        seg = x[lo:hi]
        cost_a = np.concatenate([[0.0], np.cumsum((seg - centres[a]) ** 2)])
        cost_b = np.concatenate([[0.0], np.cumsum((seg - centres[b]) ** 2)])
        split = lo + int(np.argmin(cost_a + (cost_b[-1] - cost_b)))  # samples lo..split-1 stay in a
        out[lo:split] = a
        out[split:hi] = b
        prev = split
    return out


def fit_markov_channel(
    trace: DelayTrace,
    n_states: int = 2,
    *,
    smooth_ms: float = DEFAULT_SMOOTH_MS,
    source: str | None = None,
) -> dict[str, Any]:
    """Fit an ``n_states``-state Markov-modulated rtt channel (method in the module docstring).

    Args:
        trace: the delay trace (ms).
        n_states: number of channel states ``M >= 1``.
        smooth_ms: width of the centred rolling-median window on log rtt, ms (0: no smoothing).
        source: provenance string stored in the result (default: the trace's
            ``source`` metadata, else its file name).

    Returns:
        A JSON-ready dict: ``generator_per_ms`` (M x M, rates per ms, rows sum
        to 0), ``rtt_mean_ms``, ``rtt_cv``, ``rtt_median_ms``, ``stationary``
        (from the generator), ``time_fraction`` (observed), ``mean_sojourn_ms``
        (None for a state never left), ``transition_counts``,
        ``state_bounds_ms`` (rtt values separating the states on the smoothed
        series), ``n_samples``, ``duration_ms``, ``source`` and ``method``.

    Raises:
        ValueError: ``n_states < 1``, or the trace cannot fill ``n_states`` states.
    """
    m = int(n_states)
    if m < 1:
        raise ValueError(f"n_states must be >= 1, got {n_states}")
    if smooth_ms < 0:
        raise ValueError(f"smooth_ms must be >= 0, got {smooth_ms}")
    t, r = trace.t_ms, trace.rtt_ms
    n = t.size
    x = np.log(r)
    if smooth_ms > 0:
        start = np.searchsorted(t, t - smooth_ms / 2, side="left")
        stop = np.searchsorted(t, t + smooth_ms / 2, side="right")
        xs = window_medians(x, start, stop)
    else:
        xs = x
    if np.unique(xs).size < m:
        raise ValueError(
            f"the trace has fewer than {m} distinct (smoothed) rtt levels; fit fewer states"
        )
    centres = _kmeans_1d(xs, m)
    cut = 0.5 * (centres[1:] + centres[:-1])
    labels = np.searchsorted(cut, xs, side="right")
    if smooth_ms > 0 and m > 1:
        labels = _refine_changes(t, x, labels, centres, smooth_ms / 2)
    counts = np.bincount(labels, minlength=m)
    if np.any(counts == 0):
        raise ValueError(f"k-means left a state empty; the trace does not support {m} states")
    dt = np.diff(t)
    time_in = np.bincount(labels[:-1], weights=dt, minlength=m) if n > 1 else np.zeros(m)
    trans = np.zeros((m, m), dtype=np.int64)
    if n > 1:
        np.add.at(trans, (labels[:-1], labels[1:]), 1)
    np.fill_diagonal(trans, 0)
    q = np.zeros((m, m))
    for a in range(m):
        if time_in[a] > 0:
            q[a] = trans[a] / time_in[a]
        q[a, a] = 0.0
        q[a, a] = -q[a].sum()
    exits = trans.sum(axis=1)
    means = np.array([r[labels == a].mean() for a in range(m)])
    stds = np.array([r[labels == a].std(ddof=1) if counts[a] > 1 else 0.0 for a in range(m)])
    medians = np.array([np.median(r[labels == a]) for a in range(m)])
    total = float(time_in.sum())
    if source is None:
        source = trace.metadata.get("source") or (
            os.path.basename(trace.path) if trace.path else "unknown"
        )
    return {
        "model": "markov-modulated rtt (continuous time)",
        "n_states": m,
        "generator_per_ms": q.tolist(),
        "rtt_mean_ms": means.tolist(),
        "rtt_cv": (stds / means).tolist(),
        "rtt_median_ms": medians.tolist(),
        "stationary": stationary_distribution(q).tolist() if m > 1 else [1.0],
        "time_fraction": (time_in / total).tolist() if total > 0 else (counts / n).tolist(),
        "mean_sojourn_ms": [float(time_in[a] / exits[a]) if exits[a] else None for a in range(m)],
        "transition_counts": trans.tolist(),
        "state_bounds_ms": np.exp(cut).tolist(),
        "n_samples": int(n),
        "duration_ms": float(t[-1] - t[0]),
        "source": source,
        "method": {
            "smoothing": "centred rolling median of log rtt",
            "smooth_ms": float(smooth_ms),
            "classification": "1-D k-means on the smoothed log rtt, states by increasing rtt; "
            "changes refined to the least-squares split within smooth_ms / 2",
            "generator": "MLE Q_ab = N_ab / T_a (transitions per ms spent in a)",
        },
    }


def _round_sig(x: Any, digits: int = 6) -> Any:
    """Round floats (recursively) to ``digits`` significant digits for stable, readable JSON."""
    if isinstance(x, float):
        if x == 0.0 or not math.isfinite(x):
            return x
        return float(f"{x:.{digits}g}")
    if isinstance(x, list):
        return [_round_sig(v, digits) for v in x]
    if isinstance(x, dict):
        return {k: _round_sig(v, digits) for k, v in x.items()}
    return x


def channel_to_json(fit: dict[str, Any], digits: int = 6) -> str:
    """JSON text of a fit: floats to ``digits`` significant digits, generator rows summing to exactly 0."""
    out = _round_sig(fit, digits)
    q = out.get("generator_per_ms")
    if q is not None:
        for i, row in enumerate(q):
            row[i] = 0.0
            row[i] = -sum(row)
    return json.dumps(out, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_channel_json(path: str | os.PathLike[str], fit: dict[str, Any]) -> None:
    """Write a fitted channel as JSON (see :func:`channel_to_json`), atomically."""
    atomic_write_text(path, channel_to_json(fit))
