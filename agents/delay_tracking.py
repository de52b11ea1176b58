"""Delay tracking that tells a persistent change of the mean rtt from per-round jitter (docs/agents.md).

Why (SPEC 4): when the rtt of each round is drawn independently around a fixed mean, this
round's rtt cancels out of the optimal draft length: ``k*`` depends on the long-run mean only,
so jitter must not move ``k``. When the mean itself moves and then *persists* (the regimes of the
``drift`` preset, the states of a Markov channel), the relevant fixed cost is the current
regime's mean: over a regime that lasts many rounds the tokens per unit of wall-clock time are
the renewal-reward ratio at that mean. So the estimate is the mean rtt of the current
*segment*, and segments are cut by change-point detection.

Rule (per run), on ``x = log rtt`` (a change of the mean by a factor is a shift of ``x``; the
jitter of a lognormal rtt with coefficient of variation ``cv`` has ``sd(x) = sqrt(log(1 + cv^2))``,
the same at every level):

* **Segment statistics**: count, sum and sum of squares of ``x`` and the sum of the rtt since the
  segment began. The estimate is the segment's arithmetic mean rtt (what the expected round time
  needs; the rtt the edge measured at the start stands in before the first round).
* **Jitter scale** ``sigma``: the pooled within-segment standard deviation of ``x`` over the whole
  run, shrunk towards ``sigma_prior`` with ``prior_weight`` pseudo-observations (it only sets the
  detector's units; a change of level does not inflate it once detected).
* **Detector**: a two-sided, self-starting CUSUM (Page 1954; Hawkins 1987 for the self-starting
  standardisation) on ``z_t = (x_t - xbar) / (sigma sqrt(1 + 1/n))``, with ``xbar`` and ``n`` the
  segment's mean and count *before* ``x_t``:
  ``U_t = max(0, U_{t-1} + z_t - allowance)``, ``D_t = max(0, D_{t-1} - z_t - allowance)``.
  An alarm (``U_t > threshold`` or ``D_t > threshold``) splits the segment at its
  maximum-likelihood change point: among its last ``j = 1..min(n, 64)`` observations, the ``j``
  maximising the two-sample mean-shift statistic ``j (n - j) / n (xbar_last_j - xbar_rest)^2``;
  the last ``j`` observations become the new segment, and both statistics restart at 0. (The
  CUSUM's own estimate, the last time the alarming statistic was 0, is biased early: before a
  large step the statistic is often briefly positive, which would put pre-step rounds in the
  new segment.)
* ``threshold = None`` disables detection: one segment, the plain running mean (optimal on a
  stationary channel).

With ``allowance`` ``k`` and ``threshold`` ``h`` in units of ``sigma``, Siegmund's approximation
gives the one-sided average run length ``ARL(d) = (exp(-2 D b) + 2 D b - 1) / (2 D^2)``, ``D = d - k``,
``b = h + 1.166`` for a shift of ``d`` sigma (``d = 0``: between false alarms). The defaults
(``k = 0.5``, ``h = 8``) give about 9600 rounds between false alarms of either side and detect a
shift of 2 sigma in about 6 rounds, of 23 sigma (the ``drift`` preset's 40 <-> 400 ms steps at cv
0.1) in one; docs/agents.md has the measured false-alarm rates and delays.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["SegmentDelayTracker", "siegmund_arl"]

_RECENT = 64
"""Observations kept per run for locating a change point (the candidates of the split)."""


def siegmund_arl(shift: float, allowance: float, threshold: float) -> float:
    """Siegmund's approximation of a one-sided CUSUM's average run length (rounds), in sigma units."""
    d = shift - allowance
    b = threshold + 1.166
    if abs(d) < 1e-9:
        return b * b
    return (math.exp(-2.0 * d * b) + 2.0 * d * b - 1.0) / (2.0 * d * d)


class SegmentDelayTracker:
    """Per-run segment mean of the rtt with CUSUM change detection on ``log rtt`` (module docstring).

    Arrays over ``n_runs``; :meth:`update` takes the rtts of finished rounds of distinct runs,
    :meth:`estimate` returns the current segment's mean rtt (ms) or a fallback where nothing was
    observed yet.

    Parameters:
        threshold: CUSUM decision interval ``h`` in units of sigma (> 0), or None for no detection.
        allowance: CUSUM reference value ``k`` in units of sigma (>= 0).
        sigma_prior: prior jitter scale of ``log rtt`` (> 0), e.g. 0.2 for cv 0.2.
        prior_weight: pseudo-observations of the prior (>= 0).
        sigma_floor: smallest sigma used (> 0), so that a constant channel does not divide by 0.
    """

    def __init__(self, n_runs: int, threshold: float | None = 8.0, allowance: float = 0.5,
                 sigma_prior: float = 0.2, prior_weight: float = 4.0, sigma_floor: float = 1e-3) -> None:
        self.n_runs = int(n_runs)
        self.threshold = None if threshold is None else float(threshold)
        self.allowance = float(allowance)
        self.sigma_prior = float(sigma_prior)
        self.prior_weight = float(prior_weight)
        self.sigma_floor = float(sigma_floor)
        n = self.n_runs
        # current segment: count, sum x, sum x^2, sum rtt
        self.seg = np.zeros((n, 4))
        # the last _RECENT observations (x = log rtt, rtt), newest at index (count - 1) % _RECENT
        self.recent = np.zeros((n, _RECENT, 2))
        self.cusum = np.zeros((n, 2))
        # pooled within-segment sum of squares and degrees of freedom of closed segments
        self.pooled = np.zeros((n, 2))
        self.alarms = np.zeros(n, np.int64)
        self.last_alarm_round = np.full(n, -1, np.int64)
        self.rounds = np.zeros(n, np.int64)

    def reset(self) -> None:
        for a in (self.seg, self.recent, self.cusum, self.pooled):
            a[:] = 0.0
        self.alarms[:] = 0
        self.last_alarm_round[:] = -1
        self.rounds[:] = 0

    # ---------------------------------------------------------------- estimates
    @staticmethod
    def _ss(stats: np.ndarray) -> np.ndarray:
        """Sum of squared deviations of x from stats (count, sum, sum of squares, ...)."""
        n, s, q = stats[..., 0], stats[..., 1], stats[..., 2]
        return np.maximum(q - s * s / np.maximum(n, 1.0), 0.0)

    def sigma(self, rows: Any = slice(None)) -> np.ndarray:
        """Jitter scale of log rtt per run (pooled within segments, shrunk to the prior)."""
        seg = self.seg[rows]
        ss = self.pooled[rows, 0] + self._ss(seg)
        dof = self.pooled[rows, 1] + np.maximum(seg[:, 0] - 1.0, 0.0)
        var = (self.prior_weight * self.sigma_prior ** 2 + ss) / np.maximum(self.prior_weight + dof, 1e-12)
        return np.maximum(np.sqrt(var), self.sigma_floor)

    def estimate(self, rows: Any, fallback: Any) -> np.ndarray:
        """Mean rtt (ms) of the current segment of each run in ``rows``; ``fallback`` where it is empty."""
        seg = self.seg[rows]
        n = seg[:, 0]
        return np.where(n > 0, seg[:, 3] / np.maximum(n, 1.0), np.asarray(fallback, dtype=np.float64))

    def segment_length(self, rows: Any = slice(None)) -> np.ndarray:
        """Observations in the current segment of each run."""
        return self.seg[rows, 0].copy()

    # ------------------------------------------------------------------ update
    def _remember(self, rows: np.ndarray, x: np.ndarray, rtt: np.ndarray) -> None:
        slot = (self.rounds[rows] - 1) % _RECENT
        self.recent[rows, slot, 0] = x
        self.recent[rows, slot, 1] = rtt

    def _split(self, row: int, seg: np.ndarray) -> np.ndarray:
        """Statistics (count, sum x, sum x^2, sum rtt) of the new segment: the last ``j`` observations of
        ``seg`` with the largest two-sample mean-shift statistic (module docstring)."""
        n = int(seg[0])
        c = min(n, _RECENT, int(self.rounds[row]))
        newest = int((self.rounds[row] - 1) % _RECENT)
        idx = (newest - np.arange(c)) % _RECENT  # newest first
        xs, rs = self.recent[row, idx, 0], self.recent[row, idx, 1]
        j = np.arange(1, c + 1, dtype=np.float64)
        sx = np.cumsum(xs)
        if c < n:
            rest_mean = (seg[1] - sx) / (n - j)
            stat = j * (n - j) / n * (sx / j - rest_mean) ** 2
        else:  # the whole segment is recent: j = n would leave nothing before the change
            rest = np.maximum(n - j, 1.0)
            stat = np.where(j < n, j * (n - j) / n * (sx / j - (seg[1] - sx) / rest) ** 2, -1.0)
        best = int(np.argmax(stat)) + 1
        return np.array([float(best), sx[best - 1], float(np.sum(xs[:best] ** 2)), float(np.sum(rs[:best]))])

    def update(self, rows: Any, rtt_ms: Any) -> np.ndarray:
        """Add one observed rtt (ms, > 0) per run in ``rows`` (distinct); returns where an alarm fired."""
        rows = np.asarray(rows, dtype=np.int64)
        rtt = np.maximum(np.asarray(rtt_ms, dtype=np.float64), 1e-9)
        x = np.log(rtt)
        obs = np.stack([np.ones_like(x), x, x * x, rtt], axis=1)  # (r, 4)
        self.rounds[rows] += 1
        alarm = np.zeros(len(rows), dtype=bool)
        if self.threshold is not None:
            seg = self.seg[rows]
            n = seg[:, 0]
            has = n > 0
            mean = seg[:, 1] / np.maximum(n, 1.0)
            sd = self.sigma(rows) * np.sqrt(1.0 + 1.0 / np.maximum(n, 1.0))
            z = np.where(has, (x - mean) / sd, 0.0)
            c = self.cusum[rows]
            up = np.maximum(0.0, c[:, 0] + z - self.allowance)
            down = np.maximum(0.0, c[:, 1] - z - self.allowance)
            alarm = has & ((up > self.threshold) | (down > self.threshold))
            seg = seg + obs
            self._remember(rows, x, rtt)
            for j in np.flatnonzero(alarm):
                row = rows[j]
                moved = self._split(row, seg[j])
                old = seg[j] - moved
                self.pooled[row, 0] += self._ss(old)
                self.pooled[row, 1] += max(old[0] - 1.0, 0.0)
                seg[j] = moved
                up[j] = down[j] = 0.0
                self.alarms[row] += 1
                self.last_alarm_round[row] = self.rounds[row]
            self.cusum[rows] = np.stack([up, down], axis=1)
            self.seg[rows] = seg
        else:
            self.seg[rows] += obs
        return alarm
