"""Confidence bounds on the survival ``S_i`` from censored round outcomes (docs/agents.md, "ucb-specstop").

The data of a run: per position ``j`` the censored counts of :class:`agents.ucb_specstop.CensoredAcceptance`
(``n_j`` rounds that observed position ``j``, ``acc_j`` of them accepted it), and per position ``i``
the *direct* counts ``m_i`` (rounds that drafted at least ``i`` tokens) and ``g_i`` (those of them
that accepted at least ``i``). Given the draft lengths (chosen before the round's draws), the
likelihood of the censored outcomes factorises over positions,

    L(a) = prod_j a_j^acc_j (1 - a_j)^(n_j - acc_j),

so the maximum-likelihood estimate is ``a_hat_j = acc_j / n_j`` (the product-limit, Kaplan-Meier,
estimate) and ``S_i = prod_{j<=i} a_j``. Three upper confidence bounds on ``S_i`` at a level
``L`` (nats; the bandit's exploration level, :func:`exploration_level`), all ``1`` where nothing was
observed:

* :func:`kl_upper` per position (KL-UCB, Garivier and Cappe 2011):
  ``a_j^+ = max{q >= a_hat_j : n_j kl(a_hat_j, q) <= L}``, and ``prod_{j<=i} a_j^+``. Each factor
  is a bound at level ``L``; the product spends the level once *per position*, so the relative
  errors add linearly and a deep position, observed in only ``S_{j-1}`` of the rounds that draft
  it, inflates every survival after it.
* :func:`profile_likelihood_upper` (Thomas and Grunkemeier 1975, the likelihood-ratio bound on
  the Kaplan-Meier survival): ``S_i^+ = max{prod_{j<=i} a_j : sum_{j<=i} n_j kl(a_hat_j, a_j) <= L}``.
  The budget ``L`` is shared, so the positions' deviations add in quadrature (as in
  Greenwood's variance of ``log S_i``); the profile likelihood ratio of a scalar is
  asymptotically ``chi^2_1 / 2`` (Wilks), so the level keeps the meaning it has for one
  Bernoulli arm: ``P(S_i > S_i^+) ~ exp(-L) / sqrt(4 pi L)``. With a Lagrange multiplier ``mu``
  the maximiser is ``a_j = (1 + mu n_j a_hat_j) / (1 + mu n_j)``; ``mu`` is found by bisection.
* :func:`kl_upper` on the direct counts: the indicators ``1{G >= i}`` of the ``m_i`` rounds that
  drafted at least ``i`` are i.i.d. Bernoulli(``S_i``) (the draft length is chosen before the
  draws), so ``KL-UCB(g_i / m_i, m_i)`` bounds ``S_i`` from one position's worth of data. It is
  the tight one deep in the draft, where ``S_i`` is small and ``m_i`` is large.

:func:`survival_upper` returns the smaller of the profile-likelihood and the direct bound,
made non-increasing in ``i`` (``S_{i+1} <= S_i``). All three are optimistic for the latency: if
``S_i <= S_i^+`` for every ``i``, then ``rho(k) = (k c + B) / (1 + sum_{i<=k} S_i) >= rho^+(k)`` for
every ``k`` at once (docs/agents.md derives what that implies for exploration).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

__all__ = ["exploration_level", "kl_bernoulli", "kl_upper", "profile_likelihood_upper", "survival_upper"]

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}
_EPS = 1e-15


def exploration_level(t: Any, c: float = 1.0, pulls: Any = None) -> np.ndarray:
    """The exploration level (nats) of a bound after ``t >= 1`` rounds.

    ``pulls=None``: KL-UCB's ``f(t) = log t + c log log t``. With ``pulls`` (the rounds that
    sampled the quantity, e.g. ``m_i`` rounds that drafted at least ``i`` tokens), the KL-UCB+
    level ``log(t / pulls) + c log log t`` (``t / pulls`` floored at 1, ``pulls`` at 1): a quantity
    sampled in most rounds needs little optimism, a rarely sampled one the full ``log t``
    (Garivier, Lattimore and Kaufmann 2016; asymptotically optimal, Kaufmann 2018). ``log log t``
    is taken as 0 for ``t < e``. Shapes broadcast (``t`` per row against ``pulls`` per row and
    position: pass ``t[:, None]``).
    """
    t = np.maximum(np.asarray(t, dtype=np.float64), 1.0)
    extra = c * np.log(np.maximum(np.log(t), 1.0))
    if pulls is None:
        return np.log(t) + extra
    ratio = np.maximum(t / np.maximum(np.asarray(pulls, dtype=np.float64), 1.0), 1.0)
    return np.log(ratio) + extra


def _levels(level: Any, shape: tuple[int, int]) -> np.ndarray:
    """``level`` as an ``(R, K)`` array: a scalar, one value per row ``(R,)`` or per row and position."""
    lv = np.asarray(level, dtype=np.float64)
    if lv.ndim == 1:
        lv = lv[:, None]
    return np.ascontiguousarray(np.broadcast_to(lv, shape), dtype=np.float64)


def _bound(kernel: Any, successes: Any, trials: Any, level: Any) -> np.ndarray:
    """Run a bound ``kernel(p, n, level, out)`` on ``(R, K)`` counts: ``p = successes / trials``
    (0 where ``trials = 0``), ``level`` broadcast by :func:`_levels`."""
    s = np.atleast_2d(np.asarray(successes, dtype=np.float64))
    n = np.atleast_2d(np.asarray(trials, dtype=np.float64))
    lv = _levels(level, n.shape)
    p = np.where(n > 0, s / np.where(n > 0, n, 1.0), 0.0)
    out = np.empty_like(p)
    kernel(np.ascontiguousarray(p), np.ascontiguousarray(n), lv, out)
    return out


@njit(inline="always", **_JIT)
def _kl(p: float, q: float) -> float:
    p = min(max(p, _EPS), 1.0 - _EPS)
    q = min(max(q, _EPS), 1.0 - _EPS)
    return p * math.log(p / q) + (1.0 - p) * math.log((1.0 - p) / (1.0 - q))


def kl_bernoulli(p: Any, q: Any) -> np.ndarray:
    """``kl(p, q) = p log(p/q) + (1-p) log((1-p)/(1-q))`` (nats), arguments clipped to ``[1e-15, 1 - 1e-15]``."""
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    q = np.clip(np.asarray(q, dtype=np.float64), _EPS, 1.0 - _EPS)
    return p * np.log(p / q) + (1.0 - p) * np.log((1.0 - p) / (1.0 - q))


@njit(**_JIT)
def _kl_upper(p, n, level, out):
    for r in range(p.shape[0]):
        for j in range(p.shape[1]):
            if n[r, j] <= 0.0:
                out[r, j] = 1.0
                continue
            target = level[r, j] / n[r, j]
            lo, hi = p[r, j], 1.0
            if _kl(p[r, j], hi) <= target:
                out[r, j] = 1.0
                continue
            for _ in range(60):
                mid = 0.5 * (lo + hi)
                if _kl(p[r, j], mid) <= target:
                    lo = mid
                else:
                    hi = mid
            out[r, j] = lo


def kl_upper(successes: Any, trials: Any, level: Any) -> np.ndarray:
    """KL-UCB of Bernoulli means: ``max{q in [p, 1] : n kl(p, q) <= level}``, ``p = successes / trials``.

    Arrays of shape ``(R, K)``; ``level`` per row ``(R,)`` (nats) or a scalar. ``1`` where ``trials = 0``.
    Bisection to 2^-60 (below float resolution).
    """
    return _bound(_kl_upper, successes, trials, level)


@njit(**_JIT)
def _profile_upper(p, n, level, out):
    kmax = p.shape[1]
    for r in range(p.shape[0]):
        for i in range(kmax):
            lv = level[r, i]
            # S_i^+ = max prod_{j<=i} a_j  s.t.  sum_{j<=i} n_j kl(p_j, a_j) <= lv
            informative = False
            for j in range(i + 1):
                if n[r, j] > 0.0 and p[r, j] < 1.0:
                    informative = True
            if not informative:  # every factor can be 1 at no cost
                out[r, i] = 1.0
                continue
            if lv <= 0.0:
                s = 1.0
                for j in range(i + 1):
                    if n[r, j] > 0.0:
                        s *= p[r, j]
                out[r, i] = s
                continue
            lo, hi = -60.0, 60.0  # log mu: a_j -> 1 as mu -> 0, a_j -> p_j as mu -> inf
            for _ in range(80):
                mid = 0.5 * (lo + hi)
                mu = math.exp(mid)
                cost = 0.0
                for j in range(i + 1):
                    nj = n[r, j]
                    if nj > 0.0:
                        a = (1.0 + mu * nj * p[r, j]) / (1.0 + mu * nj)
                        cost += nj * _kl(p[r, j], a)
                if cost > lv:
                    lo = mid
                else:
                    hi = mid
            mu = math.exp(hi)
            s = 1.0
            for j in range(i + 1):
                nj = n[r, j]
                if nj > 0.0:
                    s *= (1.0 + mu * nj * p[r, j]) / (1.0 + mu * nj)
            out[r, i] = s


def profile_likelihood_upper(accepted: Any, observed: Any, level: Any) -> np.ndarray:
    """Likelihood-ratio upper bound on ``S_i`` from censored per-position counts (module docstring).

    ``S_i^+ = max{prod_{j<=i} a_j : sum_{j<=i} n_j kl(a_hat_j, a_j) <= level}`` with ``a_hat_j =
    accepted_j / observed_j``; arrays ``(R, K)``, ``level`` per row (nats) or a scalar. A position
    never observed contributes the factor 1. Non-increasing in ``i`` by construction. Bisection on
    ``log mu`` (80 steps).
    """
    return _bound(_profile_upper, accepted, observed, level)


def survival_upper(accepted: Any, observed: Any, reached: Any, drafted: Any, level: Any) -> np.ndarray:
    """``min(profile-likelihood bound, direct KL-UCB bound)`` on ``S_1..S_K``, made non-increasing.

    ``accepted``, ``observed``: censored per-position counts (``acc_j``, ``n_j``); ``reached``,
    ``drafted``: the direct counts (``g_i`` rounds with ``A >= i`` among the ``m_i`` rounds that
    drafted ``k >= i``). All ``(R, K)``; ``level`` per row (nats) or a scalar.
    """
    prof = profile_likelihood_upper(accepted, observed, level)
    direct = kl_upper(reached, drafted, level)
    return np.minimum.accumulate(np.minimum(prof, direct), axis=1)
