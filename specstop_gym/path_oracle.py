"""The clairvoyant oracle on a known delay path: a dynamic program over (wall-clock time, progress).

On ``drift`` and ``trace`` channels the future delay is part of the model (SPEC 3, 4): the
drift schedule, or the replayed file from the episode's own offset. What the oracle does not
know are the random draws (acceptance run lengths, the drift's per-round jitter). This module
computes the policy that minimises the **expected episode time** on that path; the episode's
token count is fixed (``n_requests * n_tokens``), so it is also the policy of least expected
per-token latency. All times are milliseconds.

The model (exactly the simulator's, :mod:`specstop_gym.core.simulator`)
-------------------------------------------------------------------
The episode serves ``R`` requests of ``N`` tokens back to back. Its *progress* ``p`` is the
number of tokens committed so far (``0 <= p < L = R N``); request ``p // N`` has
``n = N - p % N`` tokens left. A round started at time ``t`` with draft length ``k`` is sent
at ``t + k draft_ms``, takes

    T = k c + rtt + verify_base_ms,        c = draft_ms + verify_per_token_ms + tx_per_token_ms,

and commits ``g = min(A + 1, n)`` tokens, ``P(A = a | k) = S_a - S_{a+1}`` (``a < k``,
``S_0 = 1``), ``P(A = k) = S_k``. The rtt of a round sent at ``s`` is ``m(s) J`` with ``m`` the
known path (drift: the schedule's mean; trace: the sample at ``(offset + s) mod duration``)
and ``J`` the jitter: lognormal with mean 1 and the drift's cv, independent between rounds (the
simulator indexes it by the 1-ms wall-clock slot of sending, and two rounds never share a
slot); ``J = 1`` for traces. The oracle minimises

    F(t, p) = min_k E[ T + F(t + T, p + g) ],    F(t, L) = 0,

the expected remaining episode time. Requests need no special case: reaching
``p = (r + 1) N`` *is* starting request ``r + 1``, so the per-request problems are chained
exactly (``F_r(t, 0) = F_{r+1}(t, N)``) and the whole episode is optimised.

Why the recursion is cheap
--------------------------
``T`` does not depend on the acceptance outcome, so for one ``(t, k, jitter node)`` every
outcome lands at the same time ``x``. With ``H_k(x, p) = sum_a P(A = a | k) F(x, p + g(a))``,

    H_1 = (1 - S_1) F(p + 1) + S_1 F(p + min(2, n)),
    H_{k+1} = H_k + S_{k+1} (F(p + min(k + 2, n)) - F(p + min(k + 1, n))),

all ``K`` of them cost ``O(K)`` per time point, and a state costs ``K J`` interpolations of
``H`` (``J`` jitter nodes). The forward propagation uses the same identity backwards: the
landing mass of the rounds that drafted ``k`` is gathered per ``k`` and split over the
outcomes with suffix sums (outcome ``a`` receives ``S_a C_a - S_{a+1} C_{a+1}``,
``C_a = sum_{k >= a} landing_k``).

Discretisation (what is computed, exactly)
------------------------------------------
* **Time grid** ``t_i = i h`` (``h = grid_ms``). A round started at ``t_i`` is sent at
  ``t_i + k draft_ms`` and its rtt mean is the path's there, exactly as the simulator computes it.
  ``F(., p)`` is kept at the grid points and **linearly interpolated** between them: equivalently,
  the landing time ``x`` is rounded at random to its two neighbouring grid points with the
  linear weights (which keeps its mean). This *discretised model* is what the DP solves exactly
  and what the brute-force test enumerates.
* **Jitter**: Gauss-Hermite quadrature with ``jitter_nodes`` nodes in log space
  (``J = exp(sigma Z - sigma^2 / 2)``, ``sigma^2 = ln(1 + cv^2)``), the nodes rescaled to mean
  exactly 1, so the round-time term is the exact mean ``m``.
* **Windows**: level ``p`` is solved only on the grid window ``[lo_p, hi_p]`` where the episode
  is at progress ``p`` with non-negligible probability. They come in two stages on a grid
  ``window_coarsen`` times coarser: a forward propagation of the start-time distribution under
  a pilot rule (the local ``k*(m(t))``), cut at the ``window_tail`` quantile on each side at each
  level; then the DP itself on that coarse grid, on the pilot's windows widened, whose own
  distribution (propagated without truncation) gives the ``window_tail`` quantiles that become
  the fine windows, widened by ``window_margin`` of their width on each side. (The optimum is
  faster than the pilot: windows from the pilot alone drift off the optimum's distribution late
  in a long episode.) Beyond its window a level's value is held at the window's edge (the
  remaining time is locally shift-invariant).
* **The check**: a second forward propagation, under the DP's own policy on the fine grid and
  **without truncation**, gives the expected number of visits to states outside their windows
  (``leak``; an upper bound on the probability that the restriction mattered at all) and the
  expected episode time of that policy on the discretised model (``expected_time_ms``; it
  equals ``value_ms`` when nothing leaks). While the leak exceeds ``max_leak`` the windows are
  rebuilt from this propagation and the DP solved again.
* **At run time** (:meth:`PathDPSolution.k`) the decision is taken at the exact time ``t``:
  ``argmin_k k c + vb + m(t + k draft_ms) + E[F(t + T, p + g)]`` with the exact rtt mean of this
  round's send time and the DP's values as the continuation (one step of exact lookahead on
  the solved value function; the grid only enters through the continuation).

Memory: when the values of every level fit ``keep_values_mb`` (``float32``) the first pass keeps
them all. Otherwise they are kept per request: the solve stores ``float64`` checkpoints (the
first ``K + 2`` levels of every request) and the values of the first request; the values of a
later request are recomputed from its successor's checkpoint when a run reaches it
(bit-identical to the first pass; a few blocks are cached), one more backward pass in all. The error of the time discretisation is measured by
refinement in docs/model.md and in the tests.
"""

from __future__ import annotations

import math
import time as _time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

__all__ = ["Continuation", "DelayPath", "PathDPSolution", "check_problem_size", "path_from_channel",
           "request_states_estimate", "solve_path_dp"]

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}

PATH_DRIFT = 0
PATH_TRACE = 1

#: Relative tolerance under which two costs count as a tie (smallest k wins).
_TIE_RTOL = 1e-12
#: Forward propagation: cells of smaller mass are dropped (and counted in the leak).
_NEGLIGIBLE_MASS = 1e-24
#: Blocks of per-request values a solution keeps at once (runs are at most a few requests apart).
_BLOCK_CACHE = 3
#: Largest problem solved: grid states per pass (time and a temporary byte per state grow with it).
MAX_STATES = 150_000_000
#: Largest propagation grid (cells per progress level row) of the pilot and of the check.
MAX_GRID = 20_000_000


# ---------------------------------------------------------------------------
# The path
# ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class DelayPath:
    """A known mean-rtt path ``m(t)`` (ms) for ``t`` in ms since the episode start.

    ``kind="drift"``: the schedule ``(times_ms, values_ms)``, a step function (``linear=False``,
    each level held from its breakpoint) or linear ramps between breakpoints, looped every
    ``period_ms`` (None: the last level held forever); jitter: lognormal with mean 1 and
    coefficient of variation ``jitter_cv`` per round.

    ``kind="trace"``: the samples ``(times_ms, values_ms)`` as a step function, looped every
    ``duration_ms``, read at ``(offset_ms + t) mod duration_ms``; no jitter.

    These are the formulas of :func:`specstop_gym.core.kernels.channel_mean` (drift and trace
    branches); :func:`path_from_channel` builds the path of a simulator channel.
    """

    kind: str
    times_ms: np.ndarray
    values_ms: np.ndarray
    linear: bool = False
    period_ms: float | None = None
    duration_ms: float = 0.0
    offset_ms: float = 0.0
    jitter_cv: float = 0.0

    def __post_init__(self) -> None:
        t = np.array(self.times_ms, dtype=np.float64)
        v = np.array(self.values_ms, dtype=np.float64)
        if self.kind not in ("drift", "trace"):
            raise ValueError(f"path kind must be 'drift' or 'trace', got {self.kind!r}")
        if t.ndim != 1 or t.shape != v.shape or t.size == 0:
            raise ValueError("times_ms and values_ms must be non-empty 1-D arrays of one length")
        if not (np.isfinite(t).all() and np.isfinite(v).all()) or (v < 0).any() or (np.diff(t) < 0).any():
            raise ValueError("path times must be finite and non-decreasing, values finite and >= 0")
        if self.kind == "trace" and not (self.duration_ms > 0 and math.isfinite(self.duration_ms)):
            raise ValueError(f"a trace path needs duration_ms > 0, got {self.duration_ms!r}")
        if self.period_ms is not None and not (self.period_ms > 0 and math.isfinite(self.period_ms)):
            raise ValueError(f"period_ms must be > 0 (or None), got {self.period_ms!r}")
        if not (self.jitter_cv >= 0 and math.isfinite(self.jitter_cv)):
            raise ValueError(f"jitter_cv must be finite and >= 0, got {self.jitter_cv!r}")
        if not math.isfinite(self.offset_ms):
            raise ValueError(f"offset_ms must be finite, got {self.offset_ms!r}")
        t.flags.writeable = False
        v.flags.writeable = False
        object.__setattr__(self, "times_ms", t)
        object.__setattr__(self, "values_ms", v)

    def _args(self) -> tuple:
        kind = PATH_DRIFT if self.kind == "drift" else PATH_TRACE
        period = 0.0 if self.period_ms is None else float(self.period_ms)
        return (kind, self.times_ms, self.values_ms, bool(self.linear), self.period_ms is not None, period,
                float(self.duration_ms), float(self.offset_ms))

    def mean_rtt_ms(self, t_ms: Any) -> np.ndarray:
        """``m(t)`` at the given times (ms), same shape."""
        t = np.asarray(t_ms, dtype=np.float64)
        out = np.empty(t.size)
        _path_values(*self._args(), np.ascontiguousarray(t.ravel()), out)
        return out.reshape(t.shape)


def path_from_channel(channel: Any, offset_ms: float = 0.0) -> DelayPath:
    """The known path of a :class:`~specstop_gym.core.channel.DriftChannel` or
    :class:`~specstop_gym.core.channel.TraceChannel` (``offset_ms``: the episode's trace offset)."""
    if channel.kind == "drift":
        return DelayPath("drift", channel.times_ms, channel.means_ms, linear=channel.mode == "linear",
                         period_ms=channel.period_ms, jitter_cv=float(channel.cv))
    if channel.kind == "trace":
        return DelayPath("trace", channel.times_ms, channel.rtts_ms, duration_ms=float(channel.duration_ms),
                         offset_ms=float(offset_ms))
    raise ValueError(f"a path oracle needs a drift or trace channel, got {channel.kind!r}")


@njit(inline="always", **_JIT)
def _search_right(a, x):
    lo, hi = 0, a.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(**_JIT)
def _path_value(kind, times, values, linear, periodic, period, duration, offset, t):
    """``m(t)``: kernels._drift_mean (drift) or the value at kernels._trace_index (trace)."""
    n = times.shape[0]
    if kind == PATH_TRACE:
        tt = (offset + t) % duration
        j = _search_right(times, tt) - 1
        return values[min(max(j, 0), n - 1)]
    t = offset + t
    if periodic:
        t = t - period * math.floor(t / period)
    j = _search_right(times, t) - 1
    if not linear:
        return values[min(max(j, 0), n - 1)]
    if j < 0:
        return values[0]
    if j >= n - 1:
        return values[n - 1]
    t0, t1 = times[j], times[j + 1]
    slope = (values[j + 1] - values[j]) / (t1 - t0)
    return slope * (t - t0) + values[j]


@njit(**_JIT)
def _path_values(kind, times, values, linear, periodic, period, duration, offset, t, out):
    for i in range(t.shape[0]):
        out[i] = _path_value(kind, times, values, linear, periodic, period, duration, offset, t[i])


# ---------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------


@njit(**_JIT)
def _local_k(S_cum, c, vb, m):
    """argmin_k (k c + vb + m) / (1 + sum_{i<=k} S_i) (smallest k on ties): the pilot's rule."""
    best = np.inf
    kb = 1
    for k in range(1, S_cum.shape[0]):
        r = (k * c + vb + m) / (1.0 + S_cum[k])
        if r < best * (1.0 - _TIE_RTOL):
            best = r
            kb = k
    return kb


@njit(**_JIT)
def _backward(N, L, K, S, c, vb, h, M, e, w, lo, hi, ucap, p_top, p_bot, ring,
              pol, pol_ptr, blk, blk_ptr, ck, ck_ptr, per_request, end_term, term, dland_lo, dland_hi):
    """Backward induction over levels ``p_top .. p_bot`` (descending) on their windows.

    ``ring`` (K+2 rows, float64) holds the values of the levels ``p_top+1 .. p_top+K+1`` in
    row ``level % (K+2)`` (levels >= L are the terminal zero and never read); the values of
    every solved level are written there too. Per level ``p``, when its pointer is >= 0: the
    argmin into ``pol`` (uint8), the values into ``blk`` (float32) and into ``ck`` (float64).
    ``M[k, i]`` is the mean rtt at the send time ``i h + k draft_ms`` of a round started at grid
    index ``i`` with draft ``k`` (row 0: at ``i h``).

    Per-request mode (``per_request``): the values of a level that starts a request are replaced,
    as targets of the previous request's levels, by the continuation ``term[i] = g(i h)``; with
    ``end_term`` the end of the last request is valued ``g`` too (else 0). ``dland_lo`` and
    ``dland_hi`` bound the grid cells a round moves forward (where ``g`` is read past the end).
    """
    R = K + 2
    wmax = ring.shape[1]
    best_v = np.zeros(wmax)
    best_k = np.zeros(wmax, np.int64)
    H = np.zeros((K, ucap))
    fj = np.zeros((K + 2, ucap))
    J = e.shape[0]
    inv_h = 1.0 / h
    for p in range(p_top, p_bot - 1, -1):
        n = N - (p % N)
        nmax = min(K + 1, n)
        # H_k over the union of the windows of the non-terminal targets p+1 .. p+nmax
        ulo = 1 << 62
        uhi = -1
        for j in range(1, nmax + 1):
            pt = p + j
            if pt < L:
                ulo = min(ulo, lo[pt])
                uhi = max(uhi, hi[pt])
        if end_term and p + nmax >= L:  # g is read at the landing times of this level's rounds
            ulo = min(ulo, lo[p] + dland_lo)
            uhi = max(uhi, hi[p] + dland_hi)
        if uhi < 0:  # every outcome ends the episode
            ulo = 0
            uhi = 0
        span = uhi - ulo
        # f_j(u) = F(u, p + j), clamped to the target's window (0 for the end of the episode)
        for j in range(1, nmax + 1):
            pt = p + j
            if pt >= L and not end_term:
                for u in range(span + 1):
                    fj[j, u] = 0.0
                continue
            if pt >= L or (per_request and pt % N == 0):  # the next request: the continuation g(t)
                for u in range(span + 1):
                    fj[j, u] = term[ulo + u]
                continue
            src = pt % R
            a = lo[pt] - ulo
            b = hi[pt] - ulo
            first = ring[src, 0]
            last = ring[src, b - a]
            for u in range(a):
                fj[j, u] = first
            for u in range(a, b + 1):
                fj[j, u] = ring[src, u - a]
            for u in range(b + 1, span + 1):
                fj[j, u] = last
        j2 = min(2, n)
        s1 = S[1]
        for u in range(span + 1):
            H[0, u] = (1.0 - s1) * fj[1, u] + s1 * fj[j2, u]
        for k in range(1, K):
            ja = min(k + 1, n)
            jb = min(k + 2, n)
            sk = S[k + 1]
            if ja == jb or sk == 0.0:
                for u in range(span + 1):
                    H[k, u] = H[k - 1, u]
            else:
                for u in range(span + 1):
                    H[k, u] = H[k - 1, u] + sk * (fj[jb, u] - fj[ja, u])
        width = hi[p] - lo[p] + 1
        # Q-values of every k over the window (k outer, time inner: sequential access to H)
        for k in range(1, K + 1):
            off = k * c + vb
            Hk = H[k - 1]
            Mk = M[k]
            for ii in range(width):
                i = lo[p] + ii
                m = Mk[i]
                base = (i * h + off) * inv_h - ulo
                acc = off + m
                if J == 1:
                    x = base + m * inv_h * e[0]
                    if x <= 0.0:
                        acc += Hk[0]
                    elif x >= span:
                        acc += Hk[span]
                    else:
                        ix = int(x)
                        fr = x - ix
                        acc += Hk[ix] + (Hk[ix + 1] - Hk[ix]) * fr
                else:
                    mh = m * inv_h
                    for jn in range(J):
                        x = base + mh * e[jn]
                        if x <= 0.0:
                            val = Hk[0]
                        elif x >= span:
                            val = Hk[span]
                        else:
                            ix = int(x)
                            fr = x - ix
                            val = Hk[ix] + (Hk[ix + 1] - Hk[ix]) * fr
                        acc += w[jn] * val
                if k == 1 or acc < best_v[ii] - _TIE_RTOL * abs(best_v[ii]):
                    best_v[ii] = acc
                    best_k[ii] = k
        row = p % R
        bp, pp, cp = blk_ptr[p], pol_ptr[p], ck_ptr[p]
        for ii in range(width):
            ring[row, ii] = best_v[ii]
        if bp >= 0:
            for ii in range(width):
                blk[bp + ii] = best_v[ii]
        if pp >= 0:
            for ii in range(width):
                pol[pp + ii] = best_k[ii]
        if cp >= 0:
            for ii in range(width):
                ck[cp + ii] = best_v[ii]
    return 0


@njit(inline="always", **_JIT)
def _tail_quantiles(ring, row, a, b, tail):
    """(first, last) grid points of ``ring[row, a..b]`` beyond ``tail`` of the mass from either end:
    the first index where the mass summed from ``a`` exceeds ``tail``, and the last where the mass
    summed from ``b`` down exceeds it (at least the first; ``a``/``b`` when the tail is never
    exceeded)."""
    cum = 0.0
    qlo = a
    for i in range(a, b + 1):
        cum += ring[row, i]
        if cum > tail:
            qlo = i
            break
    cum = 0.0
    qhi = b
    for i in range(b, a - 1, -1):
        cum += ring[row, i]
        if cum > tail:
            qhi = i
            break
    return qlo, max(qhi, qlo)


@njit(**_JIT)
def _forward(N, L, K, S, c, vb, h, M, e, w, G, tail, lo, hi, pol, pol_ptr, round_min, round_max,
             out_lo, out_hi, stats):
    """Forward propagation of the distribution of (time, progress) on the grid under the stored
    grid policy (clamped to the windows, as at run time). Nothing is cut but cells of mass below
    ``_NEGLIGIBLE_MASS``: the mass outside each level's window (and the negligible mass) is added
    to ``stats[1]`` (the leak), and the ``tail``-quantile windows of the true distribution are
    written to ``out_lo``/``out_hi``. ``stats``: [expected episode time of the propagated
    mass, leak, overflow (mass past the grid's end), mass that finished].
    """
    R = K + 2
    ring = np.zeros((R, G))
    tmin = np.full(R, G, np.int64)
    tmax = np.full(R, -1, np.int64)
    ring[0, 0] = 1.0
    tmin[0] = 0
    tmax[0] = 0
    J = e.shape[0]
    dmin = math.floor(round_min / h)
    dmax = math.ceil(round_max / h) + 2
    wmax = 1
    for p in range(L):
        wmax = max(wmax, hi[p] - lo[p] + 1)
    cap = 4 * wmax + dmax + 4
    land = np.zeros((K + 1, cap))
    csum = np.zeros(K + 2)
    for p in range(L):
        row = p % R
        a = tmin[row]
        b = tmax[row]
        n = N - (p % N)
        out_lo[p] = 0
        out_hi[p] = 0
        if b < a:
            continue
        qlo, qhi = _tail_quantiles(ring, row, a, b, tail)
        out_lo[p] = qlo
        out_hi[p] = qhi
        base_x = a + dmin
        umax = -1
        for i in range(a, b + 1):
            mass = ring[row, i]
            if mass == 0.0:
                continue
            ring[row, i] = 0.0
            outside = i < lo[p] or i > hi[p]
            if outside or mass < _NEGLIGIBLE_MASS:
                stats[1] += mass
            if mass < _NEGLIGIBLE_MASS:
                continue
            ic = min(max(i, lo[p]), hi[p])
            k = np.int64(pol[pol_ptr[p] + ic - lo[p]])
            m = M[k, i]
            base = i * h + k * c + vb
            for jn in range(J):
                x = (base + m * e[jn]) / h
                mj = mass * w[jn]
                ix = int(x)
                u = ix - base_x
                if ix + 1 >= G or u + 1 >= cap or u < 0:
                    stats[2] += mj
                    continue
                fr = x - ix
                land[k, u] += mj * (1.0 - fr)
                land[k, u + 1] += mj * fr
                umax = max(umax, u + 1)
        tmin[row] = G
        tmax[row] = -1
        for u in range(umax + 1):
            csum[K + 1] = 0.0
            for kk in range(K, 0, -1):
                csum[kk] = csum[kk + 1] + land[kk, u]
                land[kk, u] = 0.0
            if csum[1] == 0.0:
                continue
            csum[0] = csum[1]
            ix = base_x + u
            for acc in range(K + 1):
                mm = S[acc] * csum[acc] - S[acc + 1] * csum[acc + 1]
                if mm <= 0.0:
                    continue
                pt = p + min(acc + 1, n)
                if pt >= L:
                    stats[0] += mm * (ix * h)
                    stats[3] += mm
                    continue
                rt = pt % R
                ring[rt, ix] += mm
                tmin[rt] = min(tmin[rt], ix)
                tmax[rt] = max(tmax[rt], ix)
    return 0


@njit(**_JIT)
def _forward_pilot(N, L, K, S, S_cum, c, vb, hp, M, e, w, G, tail, out_lo, out_hi, stats):
    """Pilot: the local rule ``k*(m(t))`` on the grid ``hp``, each level cut at its ``tail`` quantiles
    as it is reached (window ``out_lo``/``out_hi``; the cut mass in ``stats[1]``, mass past the grid
    in ``stats[2]``). ``M`` as in :func:`_backward` (on this grid)."""
    R = K + 2
    ring = np.zeros((R, G))
    tmin = np.full(R, G, np.int64)
    tmax = np.full(R, -1, np.int64)
    ring[0, 0] = 1.0
    tmin[0] = 0
    tmax[0] = 0
    J = e.shape[0]
    for p in range(L):
        row = p % R
        a = tmin[row]
        b = tmax[row]
        n = N - (p % N)
        if b < a:
            continue
        qlo, qhi = _tail_quantiles(ring, row, a, b, tail)
        out_lo[p] = qlo
        out_hi[p] = qhi
        for i in range(a, b + 1):
            mass = ring[row, i]
            if mass == 0.0:
                continue
            ring[row, i] = 0.0
            if i < qlo or i > qhi:
                stats[1] += mass
                continue
            k = _local_k(S_cum, c, vb, M[0, i])
            m = M[k, i]
            base = i * hp + k * c + vb
            for jn in range(J):
                x = (base + m * e[jn]) / hp
                mj = mass * w[jn]
                ix = int(x)
                if ix + 1 >= G:
                    stats[2] += mj
                    continue
                fr = x - ix
                for acc in range(k + 1):
                    pa = S[acc] - S[acc + 1] if acc < k else S[k]
                    if pa <= 0.0:
                        continue
                    pt = p + min(acc + 1, n)
                    if pt >= L:
                        continue
                    rt = pt % R
                    ring[rt, ix] += mj * pa * (1.0 - fr)
                    ring[rt, ix + 1] += mj * pa * fr
                    tmin[rt] = min(tmin[rt], ix)
                    tmax[rt] = max(tmax[rt], ix + 1)
        tmin[row] = G
        tmax[row] = -1
    return 0


@njit(inline="always", **_JIT)
def _interp(arr, u):
    """``arr`` linearly interpolated at the (fractional) index ``u``, clamped to its ends."""
    top = arr.shape[0] - 1
    if u <= 0.0:
        return arr[0]
    if u >= top:
        return arr[top]
    iu = int(u)
    return arr[iu] + (arr[iu + 1] - arr[iu]) * (u - iu)


@njit(inline="always", **_JIT)
def _F_at(lo, hi, ptr, vals, inv_h, L, pt, x, N, per_request, end_term, term):
    """F(x, pt): linear interpolation of the stored values of level pt, clamped to its window
    (the end of the episode: 0; per-request mode: the continuation at the start of a request)."""
    if pt >= L:
        return _interp(term, x * inv_h) if end_term else 0.0
    if per_request and pt % N == 0:
        return _interp(term, x * inv_h)
    u = x * inv_h - lo[pt]
    top = hi[pt] - lo[pt]
    base = ptr[pt]
    if u <= 0.0:
        return vals[base]
    if u >= top:
        return vals[base + top]
    iu = int(u)
    fr = u - iu
    return vals[base + iu] + (vals[base + iu + 1] - vals[base + iu]) * fr


@njit(**_JIT)
def _decide_many(N, L, S, c, vb, d, h, kind, times, values_path, linear, periodic, period, duration, offset,
                 e, w, lo, hi, ptr, vals, per_request, end_term, term, p, t, out):
    """The exact-time decision of :meth:`PathDPSolution.k` for each (p, t)."""
    K = S.shape[0] - 2
    J = e.shape[0]
    inv_h = 1.0 / h
    for r in range(p.shape[0]):
        pr = p[r]
        n = N - (pr % N)
        best = np.inf
        kb = 1
        for k in range(1, K + 1):
            m = _path_value(kind, times, values_path, linear, periodic, period, duration, offset, t[r] + k * d)
            qv = k * c + vb + m
            for jn in range(J):
                x = t[r] + k * c + vb + m * e[jn]
                cont = 0.0
                for acc in range(k + 1):
                    pa = S[acc] - S[acc + 1] if acc < k else S[k]
                    if pa <= 0.0:
                        continue
                    cont += pa * _F_at(lo, hi, ptr, vals, inv_h, L, pr + min(acc + 1, n), x, N, per_request, end_term,
                                       term)
                qv += w[jn] * cont
            if k == 1 or qv < best - _TIE_RTOL * abs(best):
                best = qv
                kb = k
        out[r] = kb


# ---------------------------------------------------------------------------
# Solution and solver
# ---------------------------------------------------------------------------


class Continuation:
    """The value ``g(t)`` given to the end of each request but the last in the per-request DP
    (``F(t, (r + 1) N) = g(t)``; the last request ends the episode, ``g = 0``).

    ``"completion"``: ``g = 0``, each request minimises its own expected completion time.
    ``"token-clock"``: ``g(t) = Lambda(s) / rbar - s`` at the path time ``s`` of ``t``, where
    ``Lambda(s) = int_0^s r(m(u)) du`` counts the tokens the local rule would have produced by ``s``
    (``r(m) = 1 / rho*(m)``, ``rho*(m) = min_k (k c + vb + m) / (1 + sum_{i<=k} S_i)``) and ``rbar``
    is the mean rate over the path's period (the last level's rate if it has none): the fluid
    approximation of the rest of the episode, in which starting later by ``dt`` loses the
    ``r dt`` tokens of that moment, made up at the average rate at the end.
    """

    def __init__(self, kind: str, path: DelayPath, S_cum: np.ndarray, c: float, vb: float) -> None:
        if kind not in ("completion", "token-clock"):
            raise ValueError(f"continuation must be 'completion' or 'token-clock', got {kind!r}")
        self.kind = kind
        if kind == "completion":
            return
        if path.kind == "trace":
            period = float(path.duration_ms)
        elif path.period_ms is not None:
            period = float(path.period_ms)
        else:
            period = float(path.times_ms[-1]) + 1.0
        # the path is a step function (or linear ramps) between its breakpoints: integrate the rate
        # exactly on each step (midpoint), ramps on 64 sub-intervals each
        knots = np.unique(np.concatenate([[0.0, period], path.times_ms[(path.times_ms > 0) & (path.times_ms < period)]]))
        if path.kind == "drift" and path.linear:
            knots = np.unique(np.concatenate([a + (b - a) * np.arange(64) / 64 for a, b in zip(knots[:-1], knots[1:])]
                                             + [[period]]))
        base = DelayPath(path.kind, path.times_ms, path.values_ms, linear=path.linear, period_ms=path.period_ms,
                         duration_ms=path.duration_ms, offset_ms=0.0)
        m = base.mean_rtt_ms((knots[:-1] + knots[1:]) / 2.0)
        ks = np.arange(1, S_cum.size)
        rate = ((1.0 + S_cum[1:])[None, :] / (ks[None, :] * c + vb + m[:, None])).max(axis=1)
        lam = np.concatenate([[0.0], np.cumsum(rate * np.diff(knots))])
        if path.kind == "trace" or path.period_ms is not None:
            rbar = lam[-1] / period
        else:
            rbar = float(rate[-1])
        self.grid_s = knots
        self.g = lam / rbar - knots
        self.period = period
        self.periodic = path.kind == "trace" or path.period_ms is not None

    def at(self, s_ms: Any) -> np.ndarray:
        """``g`` at path times ``s_ms`` (a path's ``offset_ms`` plus the time since its start)."""
        s = np.asarray(s_ms, dtype=np.float64)
        if self.kind == "completion":
            return np.zeros(s.shape)
        s = np.mod(s, self.period) if self.periodic else np.minimum(s, self.grid_s[-1])
        return np.interp(s, self.grid_s, self.g)

    def values(self, h: float, G: int, offset_ms: float = 0.0) -> np.ndarray:
        """``g`` at the grid times ``i h`` (``i < G``) of a path read from ``offset_ms`` on."""
        return np.ascontiguousarray(self.at(offset_ms + np.arange(G) * h))


class PathDPSolution:
    """The path oracle's solved value function, its run-time rule and its diagnostics.

    Attributes:
        grid_ms: the time step ``h`` (ms), a divisor of ``draft_ms``.
        n_tokens, n_requests: the episode (``levels = n_tokens * n_requests`` progress levels).
        lo, hi: per level, the grid window ``[lo_p, hi_p]`` (grid indices, inclusive).
        value_ms: the DP's expected episode time from time 0 (ms), on the discretised model.
        expected_time_ms: the expected episode time of the DP's grid policy by forward
            propagation without truncation (ms); equal to ``value_ms`` up to rounding when
            nothing leaks.
        leak: expected number of visits to states outside their window under that policy (an
            upper bound on the probability that the window restriction mattered).
        overflow: probability mass that ran past the end of the propagation grid (its episode
            time is missing from ``expected_time_ms``).
        iterations: DP solves (1 unless the windows had to be rebuilt).
        states: grid states solved per pass (sum of the window sizes).
        solve_s: wall-clock seconds of the solve.
        info: further diagnostics (pilot leak, grid multiple, jitter nodes).
    """

    def __init__(self, *, grid_ms: float, n_tokens: int, n_requests: int, lo: np.ndarray, hi: np.ndarray,
                 model: dict[str, Any], checkpoints: tuple[np.ndarray, np.ndarray], first_block: tuple,
                 value_ms: float, expected_time_ms: float, leak: float, overflow: float, iterations: int,
                 solve_s: float, info: dict[str, Any]) -> None:
        self.grid_ms = float(grid_ms)
        self.n_tokens = int(n_tokens)
        self.n_requests = int(n_requests)
        self.lo = lo
        self.hi = hi
        self.value_ms = float(value_ms)
        self.expected_time_ms = float(expected_time_ms)
        self.leak = float(leak)
        self.overflow = float(overflow)
        self.iterations = int(iterations)
        self.states = int((hi - lo + 1).sum())
        self.solve_s = float(solve_s)
        self.info = dict(info)
        self._model = model
        self._ck_ptr, self._ck = checkpoints
        self._blocks: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict([(0, first_block)])
        # all levels kept by the first pass (small problems): every request reads that one block
        self._all_levels = bool(first_block[0][-1] >= 0)
        self.blocks_recomputed = 0

    @property
    def levels(self) -> int:
        return self.n_tokens * self.n_requests

    @property
    def per_token_latency_ms(self) -> float:
        """Expected per-token latency of the DP's policy, ms/token (``expected_time_ms / levels``)."""
        return self.expected_time_ms / self.levels

    # ------------------------------------------------------------- values per request
    def _block_levels(self, r: int) -> tuple[int, int]:
        """Levels whose values block ``r`` holds: request ``r`` and the ``K + 2`` levels after it."""
        K = self._model["K"]
        a = r * self.n_tokens
        return a, min((r + 1) * self.n_tokens + K + 2, self.levels)

    def _block(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """(pointer per level, float32 values) of request ``r``, recomputed from the checkpoint of
        request ``r + 1`` when not cached (the same arithmetic as the first pass: same bits)."""
        blk = self._blocks.get(0 if self._all_levels else r)
        if blk is not None:
            self._blocks.move_to_end(0 if self._all_levels else r)
            return blk
        md = self._model
        N, L, K = self.n_tokens, self.levels, md["K"]
        a, b = self._block_levels(r)
        ptr = np.full(L, -1, np.int64)
        widths = self.hi[a:b] - self.lo[a:b] + 1
        ptr[a:b] = np.concatenate([[0], np.cumsum(widths)[:-1]])
        vals = np.empty(int(widths.sum()), np.float32)
        R = K + 2
        ring = np.zeros((R, md["wmax"]))
        top = (r + 1) * N
        for lev in range(top, min(top + K + 2, L)):
            cp = self._ck_ptr[lev]
            wd = self.hi[lev] - self.lo[lev] + 1
            ring[lev % R, :wd] = self._ck[cp:cp + wd]
            vals[ptr[lev]:ptr[lev] + wd] = self._ck[cp:cp + wd]
        none = np.full(L, -1, np.int64)
        _backward(N, L, K, md["S"], md["c"], md["vb"], self.grid_ms, md["M"], md["e"], md["w"],
                  self.lo, self.hi, md["ucap"], top - 1, a, ring, np.zeros(1, np.uint8), none, vals, ptr,
                  np.zeros(1), none, md["per_request"], md["end_term"], md["term"], *md["dland"])
        ptr.flags.writeable = False
        vals.flags.writeable = False
        self._blocks[r] = (ptr, vals)
        self.blocks_recomputed += 1
        while len(self._blocks) > _BLOCK_CACHE:
            self._blocks.popitem(last=False)
        return ptr, vals

    def value(self, progress: int, time_ms: float) -> float:
        """``F(t, p)``: the solved expected remaining time (ms), interpolated and clamped to the window."""
        p = int(progress)
        if not 0 <= p < self.levels:
            raise ValueError(f"progress must be in 0..{self.levels - 1}, got {progress!r}")
        ptr, vals = self._block(p // self.n_tokens)
        u = float(time_ms) / self.grid_ms - self.lo[p]
        top = int(self.hi[p] - self.lo[p])
        u = min(max(u, 0.0), float(top))
        iu = min(int(u), max(top - 1, 0))
        fr = u - iu
        base = int(ptr[p])
        v0 = float(vals[base + iu])
        v1 = float(vals[base + min(iu + 1, top)])
        return v0 + (v1 - v0) * fr

    # ------------------------------------------------------------- run time
    def k(self, progress: Any, time_ms: Any) -> np.ndarray:
        """Draft lengths at ``progress`` (tokens committed in the episode, ``0..levels-1``) and
        ``time_ms`` (ms since the episode start); arrays of one shape (or broadcastable).

        The decision at the exact time: ``argmin_k k c + vb + m(t + k draft_ms) + E[F(t + T, p + g)]``
        with the exact mean rtt of this round's send time and the DP's values ``F`` (interpolated,
        clamped to the windows) as the continuation.
        """
        p = np.asarray(progress, dtype=np.int64)
        t = np.asarray(time_ms, dtype=np.float64)
        p, t = np.broadcast_arrays(p, t)
        if p.size and (p.min() < 0 or p.max() >= self.levels):
            raise ValueError(f"progress must be in 0..{self.levels - 1}, got {p.min()}..{p.max()}")
        if not np.isfinite(t).all():
            raise ValueError("time_ms must be finite")
        pf = np.ascontiguousarray(p.ravel())
        tf = np.ascontiguousarray(t.ravel())
        out = np.empty(pf.size, np.int64)
        md = self._model
        req = pf // self.n_tokens
        for r in np.unique(req):
            sel = np.flatnonzero(req == r)
            ptr, vals = self._block(int(r))
            sub = np.empty(sel.size, np.int64)
            _decide_many(self.n_tokens, self.levels, md["S"], md["c"], md["vb"], md["draft_ms"], self.grid_ms,
                         *md["path"], md["e"], md["w"], self.lo, self.hi, ptr, vals, md["per_request"],
                         md["end_term"], md["term"], pf[sel], tf[sel], sub)
            out[sel] = sub
        return out.reshape(p.shape)

    def k_single(self, progress: int, time_ms: float) -> int:
        """:meth:`k` for one state, without the checks (``0 <= progress < levels``, finite time)."""
        md = self._model
        ptr, vals = self._block(int(progress) // self.n_tokens)
        out = np.empty(1, np.int64)
        _decide_many(self.n_tokens, self.levels, md["S"], md["c"], md["vb"], md["draft_ms"], self.grid_ms,
                     *md["path"], md["e"], md["w"], self.lo, self.hi, ptr, vals, md["per_request"],
                     md["end_term"], md["term"], np.array([progress], np.int64), np.array([time_ms]), out)
        return int(out[0])

    def nbytes(self) -> int:
        """Memory held (bytes): windows, checkpoints, cached blocks and the path on the grid."""
        blocks = sum(p.nbytes + v.nbytes for p, v in self._blocks.values())
        return int(self.lo.nbytes + self.hi.nbytes + self._ck.nbytes + self._ck_ptr.nbytes + blocks
                   + self._model["M"].nbytes)

    def describe(self) -> dict[str, Any]:
        """Diagnostics for results files (plain floats and ints)."""
        return {"grid_ms": self.grid_ms, "value_ms": self.value_ms, "expected_time_ms": self.expected_time_ms,
                "per_token_latency_ms": self.per_token_latency_ms, "leak": self.leak, "overflow": self.overflow,
                "iterations": self.iterations, "states": self.states, "solve_s": self.solve_s, **self.info}


def _check_grid_ms(grid_ms: Any) -> float:
    if isinstance(grid_ms, bool) or not isinstance(grid_ms, (int, float, np.floating, np.integer)) \
            or not (0 < grid_ms < math.inf):
        raise ValueError(f"grid_ms must be a finite number > 0, got {grid_ms!r}")
    return float(grid_ms)


def _send_table(args: tuple, h: float, d: float, K: int, G: int) -> np.ndarray:
    """``M[k, i] = m(i h + k d)`` for ``k = 0..K`` and ``i = 0..G-1``: the mean rtt of a round started
    at grid index ``i`` and sent after ``k`` drafts (row 0: at the round start)."""
    M = np.empty((K + 1, G))
    t = np.arange(G, dtype=np.float64) * h
    for k in range(K + 1):
        _path_values(*args, t + k * d, M[k])
    return M


def _jitter_nodes(cv: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Multipliers ``exp(sigma z_j - sigma^2 / 2)`` and weights of ``n`` Gauss-Hermite nodes (1 node
    for cv 0), rescaled so that their mean is exactly 1 (the quadrature's own error on the lognormal
    mean, 1e-5 with 3 nodes at cv 0.3, would otherwise make the landing times' mean differ from the
    exact mean rtt in the round's cost)."""
    if cv == 0.0 or n <= 1:
        return np.ones(1), np.ones(1)
    x, wt = np.polynomial.hermite.hermgauss(n)
    s2 = math.log1p(cv * cv)
    e = np.exp(math.sqrt(2.0 * s2) * x - 0.5 * s2)
    w = wt / wt.sum()
    return e / float(w @ e), w


def _survival_arrays(survival: Any) -> tuple[np.ndarray, np.ndarray, int]:
    from .oracle import _as_survival

    s = _as_survival(survival)
    K = s.size
    if K > 255:
        raise ValueError(f"the path oracle supports max_draft <= 255, got {K}")
    S = np.concatenate([[1.0], s, [0.0]])  # S_0..S_K, S_{K+1} = 0
    S_cum = np.concatenate([[0.0], np.cumsum(s)])  # sum_{i<=k} S_i, k = 0..K
    return S, S_cum, K


def _check_count(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    return int(v)


def solve_path_dp(
    survival: Any,
    path: DelayPath,
    *,
    n_tokens: int,
    n_requests: int = 1,
    draft_ms: float,
    verify_base_ms: float,
    verify_per_token_ms: float,
    tx_per_token_ms: float = 0.0,
    grid_ms: float = 10.0,
    jitter_nodes: int = 3,
    window_tail: float = 1e-8,
    window_margin: float = 0.02,
    window_coarsen: int = 4,
    max_leak: float = 1e-6,
    max_iterations: int = 6,
    windows: tuple[Any, Any] | None = None,
    keep_values_mb: float = 16.0,
    continuation: str | Continuation | None = None,
    ends_episode: bool = True,
) -> PathDPSolution:
    """Solve the path oracle's DP (module docstring) and check its windows.

    Args:
        survival: ``S_1..S_K`` of the acceptance process (exact).
        path: the known delay path (:class:`DelayPath`).
        n_tokens, n_requests: the episode, ``n_requests`` requests of ``n_tokens`` tokens.
        draft_ms, verify_base_ms, verify_per_token_ms, tx_per_token_ms: the costs, ms.
        grid_ms: the largest time step wanted (ms); the step used divides ``draft_ms``.
        jitter_nodes: Gauss-Hermite nodes for the drift's jitter (1 = its mean only).
        window_tail: probability cut from each side of each level's pilot distribution.
        window_margin: the pilot windows are widened by this share of their width on each side.
        window_coarsen: the pilot runs on a grid this many times coarser.
        max_leak: rebuild the windows and solve again while the leak exceeds this.
        max_iterations: at most this many DP solves.
        windows: explicit ``(lo, hi)`` grid windows per level (skips the pilot and the
            rebuilding; for tests on tiny models).
        keep_values_mb: keep the values of every level when they fit (MB of float32); else per
            request, recomputed from checkpoints (module docstring, "Memory").
    """
    t_start = _time.perf_counter()
    S, S_cum, K = _survival_arrays(survival)
    N, R = _check_count("n_tokens", n_tokens), _check_count("n_requests", n_requests)
    L = N * R
    for name, v in (("draft_ms", draft_ms), ("verify_base_ms", verify_base_ms),
                    ("verify_per_token_ms", verify_per_token_ms), ("tx_per_token_ms", tx_per_token_ms)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) \
                or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    if not isinstance(path, DelayPath):
        raise ValueError(f"path must be a DelayPath, got {type(path).__name__}")
    h = _check_grid_ms(grid_ms)
    d = float(draft_ms)
    c = d + float(verify_per_token_ms) + float(tx_per_token_ms)
    vb = float(verify_base_ms)
    e, w = _jitter_nodes(float(path.jitter_cv), _check_count("jitter_nodes", jitter_nodes))
    args = path._args()
    round_max = K * c + vb + float(path.values_ms.max()) * float(e.max())
    f = _check_count("window_coarsen", window_coarsen)
    info: dict[str, Any] = {"jitter_nodes": int(e.size)}
    if isinstance(continuation, Continuation) or continuation is None:
        cont = continuation
    elif continuation in ("completion", "token-clock"):
        cont = Continuation(continuation, path, S_cum, c, vb)
    else:
        raise ValueError(f"continuation must be None, 'completion' or 'token-clock', got {continuation!r}")
    end_term = cont is not None and not ends_episode
    model = (N, L, K, S, c, vb, d, e, w, args, round_max, cont, end_term)

    if windows is not None:
        lo = np.array(windows[0], dtype=np.int64)
        hi = np.array(windows[1], dtype=np.int64)
        if lo.shape != (L,) or hi.shape != (L,) or (hi < lo).any() or (lo < 0).any() or lo[0] != 0:
            raise ValueError(f"windows must be two int arrays of shape ({L},) with 0 <= lo <= hi and lo[0] = 0")
        info["pilot_leak"] = 0.0
    else:
        # 1. pilot: the local rule k*(m(t)), on the coarse grid f h
        m_typ = float(np.mean(path.values_ms))
        rho_typ = min((k * c + vb + m_typ) / (1.0 + S_cum[k]) for k in range(1, K + 1))
        _check_size_estimate(L, K, S, S_cum, c, vb, m_typ, h, window_margin)
        hc = h * f
        c0 = _time.process_time()
        lo, hi, info["pilot_leak"] = _pilot_windows(model, S_cum, hc, window_tail, 2.0 * L * rho_typ + 10.0 * round_max)
        info["cpu_pilot_s"] = _time.process_time() - c0
        # 2. the DP on the coarse grid, on the pilot's windows widened; its own distribution,
        # propagated without truncation, centres the fine windows (the optimum is faster than the
        # pilot, so the pilot's windows alone would need wide margins)
        if f > 1:
            lo, hi = _widen(lo, hi, max(window_margin, 0.25))
            coarse = _solve_on_windows(model, hc, lo, hi, keep_all=True, want_policy=False)
            lo, hi = coarse["true_lo"], coarse["true_hi"]
            info["coarse_states"] = int((hi - lo + 1).sum())
            info["cpu_coarse_s"] = sum(coarse["cpu_s"])
        lo, hi = lo * f, hi * f + f
        lo, hi = _widen(lo, hi, window_margin)
    iterations = 0
    while True:
        iterations += 1
        solved = _solve_on_windows(model, h, lo, hi, tail=window_tail,
                                   keep_all=4.0 * float((hi - lo + 1).sum()) <= keep_values_mb * 1e6)
        stats = solved["stats"]
        info["cpu_backward_s"], info["cpu_check_s"] = solved["cpu_s"]
        if windows is not None or stats[1] <= max_leak or iterations >= max_iterations:
            break
        lo, hi = _widen(np.minimum(lo, solved["true_lo"]), np.maximum(hi, solved["true_hi"]), window_margin)
    for arr in (lo, hi):
        arr.flags.writeable = False
    md = {"S": S, "c": c, "vb": vb, "K": K, "draft_ms": d, "e": e, "w": w, "path": args,
          "M": solved["M"], "ucap": solved["ucap"], "wmax": solved["wmax"], "per_request": continuation is not None,
          "end_term": end_term, "term": solved["term"], "dland": solved["dland"]}
    return PathDPSolution(
        grid_ms=h, n_tokens=N, n_requests=R, lo=lo, hi=hi, model=md, checkpoints=solved["checkpoints"],
        first_block=solved["first_block"], value_ms=solved["value"], expected_time_ms=float(stats[0]),
        leak=float(stats[1]), overflow=float(stats[2]), iterations=iterations,
        solve_s=_time.perf_counter() - t_start, info=info)


def _widen(lo: np.ndarray, hi: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    pad = np.ceil(margin * (hi - lo + 1)).astype(np.int64) + 2
    lo = np.maximum(lo - pad, 0)
    lo[0] = 0
    return np.ascontiguousarray(lo), np.ascontiguousarray(hi + pad)


def _pilot_windows(model, S_cum, hp, tail, t_est):
    """Tail-quantile windows (grid ``hp``) of the pilot rule's distribution; returns
    (lo, hi, mass cut or past the grid)."""
    N, L, K, S, c, vb, d, e, w, args = model[:10]
    for _ in range(12):
        G = math.ceil(t_est / hp) + 2
        _check_grid(G, K)
        M = _send_table(args, hp, d, K, G)
        out_lo = np.zeros(L, np.int64)
        out_hi = np.zeros(L, np.int64)
        stats = np.zeros(3)
        _forward_pilot(N, L, K, S, S_cum, c, vb, hp, M, e, w, G, tail, out_lo, out_hi, stats)
        if stats[2] <= tail:
            break
        t_est *= 2.0
    return out_lo, out_hi, float(stats[1] + stats[2])


def check_problem_size(survival: Any, path: DelayPath, *, n_tokens: int, n_requests: int, draft_ms: float,
                       verify_base_ms: float, verify_per_token_ms: float, tx_per_token_ms: float = 0.0,
                       grid_ms: float = 10.0, window_margin: float = 0.02) -> None:
    """Raise ValueError (before any work) when :func:`solve_path_dp` would face a problem far beyond
    ``MAX_STATES`` (a renewal estimate of the windows; the offset of a trace does not matter)."""
    S, S_cum, K = _survival_arrays(survival)
    L = _check_count("n_tokens", n_tokens) * _check_count("n_requests", n_requests)
    c = float(draft_ms) + float(verify_per_token_ms) + float(tx_per_token_ms)
    _check_size_estimate(L, K, S, S_cum, c, float(verify_base_ms), float(np.mean(path.values_ms)),
                         _check_grid_ms(grid_ms), window_margin)


def request_states_estimate(survival: Any, path: DelayPath, *, n_tokens: int, draft_ms: float,
                            verify_base_ms: float, verify_per_token_ms: float, tx_per_token_ms: float = 0.0,
                            grid_ms: float = 10.0, window_margin: float = 0.02) -> float:
    """Renewal estimate of the grid states of one request's DP from a known start (the windows of
    :func:`_states_estimate` with ``L = n_tokens``)."""
    S, S_cum, K = _survival_arrays(survival)
    c = float(draft_ms) + float(verify_per_token_ms) + float(tx_per_token_ms)
    return _states_estimate(_check_count("n_tokens", n_tokens), K, S, S_cum, c, float(verify_base_ms),
                            float(np.mean(path.values_ms)), _check_grid_ms(grid_ms), window_margin)


def _states_estimate(L, K, S, S_cum, c, vb, m, h, margin) -> float:
    """The windows' grid states estimated from a renewal approximation (the local rule at the
    path's mean; the time to ``p`` tokens has a standard deviation of about
    ``sqrt(p / E[g]) * sd(g) * rho``, g the tokens of a round, and a window spans about 13 of them
    plus the margins)."""
    k = int(np.argmin([(j * c + vb + m) / (1.0 + S_cum[j]) for j in range(1, K + 1)])) + 1
    g = np.arange(1, k + 2)
    pg = np.array([S[a] - S[a + 1] for a in range(k)] + [S[k]])
    eg = float(pg @ g)
    sd_g = math.sqrt(max(float(pg @ g**2) - eg**2, 1e-12))
    rho = (k * c + vb + m) / eg
    sigma = np.sqrt(np.arange(1, L + 1) / eg) * sd_g * rho
    return float((13.0 * sigma * (1.0 + 2.0 * margin) / h).sum())


def _check_size_estimate(L, K, S, S_cum, c, vb, m, h, margin) -> None:
    """Refuse, before any work, a problem far beyond ``MAX_STATES`` (:func:`_states_estimate`)."""
    estimate = _states_estimate(L, K, S, S_cum, c, vb, m, h, margin)
    if estimate > 4 * MAX_STATES:
        raise ValueError(f"the path oracle would solve about {estimate:,.0f} grid states (limit {MAX_STATES:,}): "
                         "use a coarser grid_ms, fewer requests or tokens, or the local-oracle agent")


@njit(**_JIT)
def _union_cap(N, L, K, lo, hi, end_term, dland_lo, dland_hi):
    """Largest union of the target windows p+1 .. p+min(K+1, n) over the levels (the size of H)."""
    cap = 1
    for p in range(L):
        n = N - (p % N)
        a = 1 << 62
        b = -1
        for j in range(1, min(K + 1, n) + 1):
            if p + j < L:
                a = min(a, lo[p + j])
                b = max(b, hi[p + j])
        if end_term and p + min(K + 1, n) >= L:
            a = min(a, lo[p] + dland_lo)
            b = max(b, hi[p] + dland_hi)
        if b >= 0:
            cap = max(cap, b - a + 1)
    return cap


def _check_grid(G: int, K: int) -> None:
    if G > MAX_GRID:
        raise ValueError(f"the path oracle would need a time grid of {G:,} cells x {K + 2} levels (limit "
                         f"{MAX_GRID:,}): the episode is too long for this grid_ms; use a coarser grid_ms, "
                         "fewer requests or tokens, or the local-oracle agent")


def _solve_on_windows(model: tuple, h: float, lo: np.ndarray, hi: np.ndarray, *, tail: float = 1e-12,
                      keep_all: bool = True, want_policy: bool = True) -> dict[str, Any]:
    """One DP solve on the grid ``h`` and the windows, and the forward check of its grid policy.

    Keeps every level's values (``keep_all``) or checkpoints and the first request's values;
    ``want_policy=False`` keeps no values at all (the coarse stage only needs the distribution:
    ``true_lo``/``true_hi`` are its ``tail``-quantile windows).
    """
    N, L, K, S, c, vb, d, e, w, args, round_max, cont, end_term = model
    states = int((hi - lo + 1).sum())
    if states > MAX_STATES:
        raise ValueError(f"the path oracle would solve {states:,} grid states (limit {MAX_STATES:,}): use a "
                         "coarser grid_ms, fewer requests or tokens, or the local-oracle agent")
    idx = np.arange(L)
    dland = (math.floor((c + vb) / h), math.ceil(round_max / h) + 1)
    ucap = _union_cap(N, L, K, lo, hi, end_term, *dland)
    widths = hi - lo + 1
    wmax = int(widths.max())
    G = int(hi.max()) + math.ceil(round_max / h) + 4
    _check_grid(G, K)
    M = _send_table(args, h, d, K, G)
    term = np.zeros(1) if cont is None else cont.values(h, G, args[-1])
    R = K + 2
    # pointers: the grid policy of every level (for the forward check), checkpoints (the first
    # K + 2 levels of every request after the first), the first request's values (float32)
    pol_ptr = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
    pol = np.zeros(int(widths.sum()), np.uint8)
    store = want_policy
    is_ck = (idx % N < K + 2) & (idx >= N) & (not keep_all) & store
    ck_ptr = np.full(L, -1, np.int64)
    ck_w = np.where(is_ck, widths, 0)
    ck_ptr[is_ck] = (np.cumsum(ck_w) - ck_w)[is_ck]
    ck = np.zeros(max(int(ck_w.sum()), 1))
    b = (L if keep_all else min(N + K + 2, L)) if store else 0
    blk_ptr = np.full(L, -1, np.int64)
    if b:
        blk_ptr[:b] = np.concatenate([[0], np.cumsum(widths[:b])[:-1]])
    blk = np.zeros(max(int(widths[:b].sum()), 1), np.float32)
    ring = np.zeros((R, wmax))
    t0 = _time.process_time()
    _backward(N, L, K, S, c, vb, h, M, e, w, lo, hi, ucap, L - 1, 0, ring, pol, pol_ptr, blk, blk_ptr,
              ck, ck_ptr, cont is not None, end_term, term, *dland)
    t1 = _time.process_time()
    value = float(ring[0, 0])
    stats = np.zeros(4)
    true_lo = np.zeros(L, np.int64)
    true_hi = np.zeros(L, np.int64)
    _forward(N, L, K, S, c, vb, h, M, e, w, G, tail, lo, hi, pol, pol_ptr, c + vb, round_max,
             true_lo, true_hi, stats)
    t2 = _time.process_time()
    for arr in (ck_ptr, ck, blk_ptr, blk, M):
        arr.flags.writeable = False
    return {"stats": stats, "true_lo": true_lo, "true_hi": true_hi, "value": value, "M": M, "term": term,
            "ucap": ucap, "wmax": wmax, "dland": dland, "checkpoints": (ck_ptr, ck), "first_block": (blk_ptr, blk),
            "cpu_s": (t1 - t0, t2 - t1)}
