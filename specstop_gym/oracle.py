"""Exact optimal control for edge-cloud speculative decoding (the oracle).

All times are in **milliseconds**; all functions take plain floats and numpy
arrays and depend on nothing else in the project (numpy and scipy only).

The model (SPEC sections 1, 2 and 4)
------------------------------------
One round drafts ``k`` tokens on the edge (``k * draft_ms``), sends them, the
cloud verifies them in one pass (``verify_base_ms + k * verify_per_token_ms``)
and the verdict comes back after the round-trip delay ``rtt``.  The target
accepts ``A = min(k, G)`` draft tokens (``G`` is the accept run length) and adds
one of its own, so the request grows by ``A + 1`` tokens.  ``survival`` is the
array ``S_1..S_K`` with ``S_i = P(G >= i) = prod_{j<=i} a_j`` (non-increasing,
in ``[0, 1]``), hence ``E[A + 1 | k] = 1 + sum_{i<=k} S_i``.

Write ``c`` for the marginal cost of one more drafted token
(``draft_ms + verify_per_token_ms``, plus the per-token transmission time when
bandwidth is modelled) and ``B`` for the fixed cost of a round
(``delay_ms + verify_base_ms``).  For a stationary channel the per-token
latency of always drafting ``k`` is the renewal-reward ratio

    rho(k) = (k * c + B) / (1 + sum_{i<=k} S_i),

the offline optimum is ``k* = argmin_k rho(k)`` (smallest ``k`` on ties) and
``rho* = rho(k*)``.  Facts (checked against brute force in the tests):

* **Threshold form** (Dinkelbach).  ``rho(k) <= lam`` iff
  ``B - lam + sum_{i<=k} (c - lam * S_i) <= 0``.  For ``lam = rho*`` the minimum
  of the right-hand side over ``k`` is 0 and, as ``S_i`` is non-increasing, it is
  attained by the prefix of positions with ``lam * S_i > c``:
  ``k* = max(1, #{i : rho* * S_i > c})`` for *any* profile.
* **Delay monotonicity**: ``k*`` is non-decreasing in the delay (a larger ``B``
  raises ``rho*`` and so lowers the threshold ``c / rho*``); it is finite for
  every delay (at most ``K``).
* **Critical delay**: ``rho(1) <= rho(2)`` iff ``B * S_2 <= c * (1 + S_1 - S_2)``,
  and then ``rho(1) <= rho(k)`` for every ``k`` (``rho(1) * S_i <= c`` for all
  ``i >= 2``).  So single-token speculation is optimal exactly when
  ``delay_ms <= D_c = c * (1 + S_1 - S_2) / S_2 - verify_base_ms``.
* **Logarithmic growth**: for geometric acceptance (``S_i = alpha**i``) the
  threshold form gives ``k* ~ ln(rho* / c) / ln(1 / alpha)``, and since ``rho*``
  grows linearly in the delay, ``k*`` grows like ``ln(D) / ln(1 / alpha)``.

The subtle point: when the rtt cancels out
------------------------------------------
If the rtt varies from round to round *independently of the action* and the
horizon is unbounded, the current round's rtt does **not** enter the marginal
trade-off.  In the average-cost optimality equation the round's cost is
``T(k) - rho* * (A + 1)``; the rtt is an additive term of ``T(k)`` that is the
same for every ``k``, so it drops out of ``argmin_k``.  The optimal ``k`` depends
on the *long-run* ``rho*`` (through the threshold ``c / rho*``), not on this
round's delay.  Channel state information (CSI) matters only when

* the channel persists in wall-clock time (the state seen now predicts the rtt
  of the next rounds, and drafting longer moves the send time),
* the request is finite (a bounded horizon: near the end of a request the
  tokens still to come are worth less than ``rho*`` each), or
* the marginal cost depends on the state (bandwidth-dependent transmission).

For the Markov-modulated channel with a finite request the oracle is therefore
the finite-horizon dynamic program :func:`solve_markov_dp` over
``(tokens left, channel state)``, giving a state-dependent ``k*(n, s)``.

The Markov dynamic program
--------------------------
``M`` channel states, continuous-time generator ``Q`` (rates per ms).  At the
start of a round the state ``s`` is observed and ``k`` chosen.  Drafting takes
``k * draft_ms`` during which the state moves: the state at sending is
``s1 ~ expm(Q * k * draft_ms)[s, :]``.  The round's rtt is lognormal with mean
``rtt_mean_ms[s1]`` and coefficient of variation ``rtt_cv[s1]`` (constant when
the cv is 0); the payload takes ``tx = k * bytes_per_token * 8 /
bandwidth_kbps[s1]`` ms.  The rest of the round lasts
``R = rtt + verify_base_ms + k * verify_per_token_ms + tx`` and the next round
starts in ``s' ~ expm(Q * R)[s1, :]``.  With ``A`` distributed as
``P(A = a) = S_a - S_{a+1}`` (``a < k``, ``S_0 = 1``), ``P(A = k) = S_k`` and
``min(A + 1, n)`` tokens gained,

    V(0, s) = 0,
    V(n, s) = min_k E[ k*draft_ms + R + V(n - min(A + 1, n), s') ].

The expectation over the rtt (which changes both ``R`` and the law of ``s'``)
is computed by Gauss-Hermite quadrature in log space (exact when the cv is 0;
the expected round time itself uses the exact lognormal mean).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from .core.channel import stationary_distribution as _core_stationary_distribution
import scipy.linalg

__all__ = [
    "MarkovDPSolution",
    "best_fixed_k",
    "critical_delay",
    "expected_request_time_fixed_k",
    "optimal_draft_length",
    "optimal_k_for_costs",
    "per_token_latency",
    "rho_curve",
    "solve_markov_dp",
    "solve_markov_dp_episode",
    "stationary_distribution",
    "threshold_k",
]

#: Tolerance for survival values slightly outside [0, 1] or slightly increasing.
_SURVIVAL_TOL = 1e-12
#: Relative tolerance under which two costs count as a tie (smallest k wins).
_TIE_RTOL = 1e-12
#: Tolerance (relative to the largest rate) for generator rows summing to 0.
_GENERATOR_ROW_TOL = 1e-9


# ---------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------


def _as_survival(survival: Any) -> np.ndarray:
    """Validate ``survival`` (S_1..S_K) and return it as a float array.

    Values within 1e-12 outside [0, 1] are clipped, and increases of at most
    1e-12 are tolerated (and removed by a running minimum).
    """
    try:
        s = np.asarray(survival, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"survival must be a 1-D array of floats: {exc}") from None
    if s.ndim != 1 or s.size == 0:
        raise ValueError(
            f"survival must be a non-empty 1-D array S_1..S_K, got shape {s.shape}"
        )
    if np.isnan(s).any():
        raise ValueError("survival contains NaN")
    if (s < -_SURVIVAL_TOL).any() or (s > 1.0 + _SURVIVAL_TOL).any():
        raise ValueError(
            f"survival values must lie in [0, 1], got min {s.min()!r}, max {s.max()!r}"
        )
    if s.size > 1 and (np.diff(s) > _SURVIVAL_TOL).any():
        i = int(np.argmax(np.diff(s) > _SURVIVAL_TOL))
        raise ValueError(
            "survival must be non-increasing (S_i = prod_{j<=i} a_j), but "
            f"S_{i + 2} = {s[i + 1]!r} > S_{i + 1} = {s[i]!r}"
        )
    s = np.clip(s, 0.0, 1.0)
    return np.minimum.accumulate(s)


def _as_nonneg(value: Any, name: str) -> float:
    """Validate a finite, non-negative real scalar (a time in ms, a rate...)."""
    if isinstance(value, bool) or np.ndim(value) != 0:
        raise ValueError(f"{name} must be a real scalar, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real scalar, got {value!r}") from None
    if math.isnan(x):
        raise ValueError(f"{name} is NaN")
    if not math.isfinite(x) or x < 0.0:
        raise ValueError(f"{name} must be finite and >= 0, got {x!r}")
    return x


def _as_int(value: Any, name: str, lo: int, hi: int | None = None) -> int:
    """Validate an integer in ``[lo, hi]`` (``hi`` None: unbounded)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be in {rng}, got {v}")
    return v


def _as_state_array(value: Any, name: str, m: int, *, positive: bool = False) -> np.ndarray:
    """Validate a per-state array (a scalar is broadcast to all ``m`` states)."""
    try:
        a = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a scalar or an array of {m} floats") from None
    if a.ndim == 0:
        a = np.full(m, float(a))
    if a.shape != (m,):
        raise ValueError(
            f"{name} must have one entry per channel state (shape ({m},)), got shape {a.shape}"
        )
    if np.isnan(a).any():
        raise ValueError(f"{name} contains NaN")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite")
    if positive and (a <= 0.0).any():
        raise ValueError(f"{name} must be > 0 in every state, got {a.tolist()}")
    if (a < 0.0).any():
        raise ValueError(f"{name} must be >= 0 in every state, got {a.tolist()}")
    return a


def _as_generator(generator_per_ms: Any) -> np.ndarray:
    """Validate a continuous-time generator matrix ``Q`` (rates per ms)."""
    try:
        q = np.asarray(generator_per_ms, dtype=float)
    except (TypeError, ValueError):
        raise ValueError("generator_per_ms must be a square matrix of floats") from None
    if q.ndim != 2 or q.shape[0] != q.shape[1] or q.shape[0] == 0:
        raise ValueError(f"generator_per_ms must be a non-empty square matrix, got shape {q.shape}")
    if not np.isfinite(q).all():
        raise ValueError("generator_per_ms must be finite (no NaN/inf)")
    off = q - np.diag(np.diag(q))
    if (off < 0.0).any():
        raise ValueError("generator_per_ms must have non-negative off-diagonal rates")
    scale = max(1.0, float(np.abs(q).max()))
    if (np.abs(q.sum(axis=1)) > _GENERATOR_ROW_TOL * scale).any():
        raise ValueError(
            f"generator_per_ms rows must sum to 0, got row sums {q.sum(axis=1).tolist()}"
        )
    return q


def _first_min(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Index of the smallest entry along ``axis``; the first one on (near) ties."""
    best = values.min(axis=axis, keepdims=True)
    tol = _TIE_RTOL * np.abs(best)
    return np.argmax(values <= best + tol, axis=axis)


# ---------------------------------------------------------------------------
# Stationary (renewal-reward) oracle
# ---------------------------------------------------------------------------


def rho_curve(survival: Any, marginal_cost_ms: float, fixed_cost_ms: float) -> np.ndarray:
    """Per-token latency (ms/token) of always drafting ``k``, for ``k = 1..K``.

    ``rho(k) = (k * c + B) / (1 + sum_{i<=k} S_i)`` with ``c = marginal_cost_ms``
    (ms per drafted token) and ``B = fixed_cost_ms`` (ms per round).

    Args:
        survival: ``S_1..S_K``, non-increasing, in [0, 1].
        marginal_cost_ms: cost of one more drafted token, ms (>= 0).
        fixed_cost_ms: fixed cost of a round (rtt + verify base), ms (>= 0).

    Returns:
        Array of length ``K``; entry ``k - 1`` is ``rho(k)`` in ms/token.
    """
    s = _as_survival(survival)
    c = _as_nonneg(marginal_cost_ms, "marginal_cost_ms")
    b = _as_nonneg(fixed_cost_ms, "fixed_cost_ms")
    return _rho_curve(s, c, b)


def _rho_curve(s: np.ndarray, c: float, b: float) -> np.ndarray:
    k = np.arange(1, s.size + 1, dtype=float)
    return (k * c + b) / (1.0 + np.cumsum(s))


def optimal_k_for_costs(
    survival: Any, marginal_cost_ms: float, fixed_cost_ms: float
) -> tuple[int, float]:
    """Stationary optimum ``(k*, rho*)`` for per-token cost ``c`` and round cost ``B``.

    ``k* = argmin_{k=1..K} (k * c + B) / (1 + sum_{i<=k} S_i)`` (smallest ``k`` on
    ties, within a relative tolerance of 1e-12), ``rho* = rho(k*)`` in ms/token.
    Equivalently (Dinkelbach) ``k* = max(1, #{i : rho* * S_i > c})``; see
    :func:`threshold_k`.

    Args:
        survival: ``S_1..S_K``.
        marginal_cost_ms: ``c``, ms per drafted token.
        fixed_cost_ms: ``B``, ms per round.
    """
    rho = rho_curve(survival, marginal_cost_ms, fixed_cost_ms)
    k = int(_first_min(rho))
    return k + 1, float(rho[k])


def threshold_k(survival: Any, marginal_cost_ms: float, lam: float) -> int:
    """Draft length of the threshold rule: ``max(1, #{i : lam * S_i > c})``.

    Drafting token ``i`` pays iff its expected gain ``lam * S_i`` (ms, with
    ``lam`` the value of a token in ms/token, e.g. ``rho*``) exceeds its cost
    ``c = marginal_cost_ms`` (ms).  Since ``S_i`` is non-increasing the rule
    drafts a prefix.  With ``lam = rho*`` it returns ``k*`` exactly.

    Args:
        survival: ``S_1..S_K``.
        marginal_cost_ms: ``c``, ms per drafted token.
        lam: value of one token, ms/token (>= 0).
    """
    s = _as_survival(survival)
    c = _as_nonneg(marginal_cost_ms, "marginal_cost_ms")
    lam_f = _as_nonneg(lam, "lam")
    return max(1, int(np.count_nonzero(lam_f * s > c)))


def per_token_latency(
    survival: Any,
    k: int,
    *,
    draft_ms: float,
    verify_base_ms: float,
    verify_per_token_ms: float,
    delay_ms: float,
) -> float:
    """Long-run per-token latency (ms/token) of always drafting ``k`` tokens.

    ``rho(k) = (k * c + B) / (1 + sum_{i<=k} S_i)`` with
    ``c = draft_ms + verify_per_token_ms`` and ``B = delay_ms + verify_base_ms``
    (all in ms).  ``delay_ms`` is the (mean) round-trip time.

    Raises:
        ValueError: bad survival, negative/NaN times, ``k`` not an integer in 1..K.
    """
    s = _as_survival(survival)
    kk = _as_int(k, "k", 1, s.size)
    c = _as_nonneg(draft_ms, "draft_ms") + _as_nonneg(verify_per_token_ms, "verify_per_token_ms")
    b = _as_nonneg(delay_ms, "delay_ms") + _as_nonneg(verify_base_ms, "verify_base_ms")
    return float((kk * c + b) / (1.0 + float(np.sum(s[:kk]))))


def optimal_draft_length(
    survival: Any,
    *,
    draft_ms: float,
    verify_base_ms: float,
    verify_per_token_ms: float,
    delay_ms: float,
) -> tuple[int, float]:
    """Offline optimal draft length for a stationary channel: ``(k*, rho*)``.

    ``k* = argmin_{k=1..K} rho(k)`` (smallest ``k`` on ties), ``rho* = rho(k*)``
    in ms/token, where ``rho(k) = (k * c + B) / (1 + sum_{i<=k} S_i)``,
    ``c = draft_ms + verify_per_token_ms``, ``B = delay_ms + verify_base_ms``
    (ms).  Also ``k* = max(1, #{i : S_i > c / rho*})`` (threshold form).
    """
    c = _as_nonneg(draft_ms, "draft_ms") + _as_nonneg(verify_per_token_ms, "verify_per_token_ms")
    b = _as_nonneg(delay_ms, "delay_ms") + _as_nonneg(verify_base_ms, "verify_base_ms")
    return optimal_k_for_costs(survival, c, b)


def critical_delay(
    survival: Any,
    *,
    draft_ms: float,
    verify_base_ms: float,
    verify_per_token_ms: float,
) -> float:
    """Critical delay ``D_c`` (ms): ``k* = 1`` exactly when ``delay_ms <= D_c``.

    ``D_c = c * (1 + S_1 - S_2) / S_2 - verify_base_ms`` with
    ``c = draft_ms + verify_per_token_ms``.  Derivation: ``rho(1) <= rho(2)`` iff
    ``B * S_2 <= c * (1 + S_1 - S_2)`` (``B = delay_ms + verify_base_ms``), and
    then ``rho(1) * S_i <= c`` for every ``i >= 2``, so ``k = 1`` is optimal
    overall (ties resolved to the smaller ``k``).  Above ``D_c`` the optimum
    drafts at least two tokens.

    Returns ``float('inf')`` when ``K == 1`` or ``S_2 == 0`` (a second token never
    pays).  The value may be negative: then ``k* >= 2`` for every delay.
    """
    s = _as_survival(survival)
    c = _as_nonneg(draft_ms, "draft_ms") + _as_nonneg(verify_per_token_ms, "verify_per_token_ms")
    vb = _as_nonneg(verify_base_ms, "verify_base_ms")
    if s.size == 1 or s[1] == 0.0:
        return float("inf")
    return float(c * (1.0 + s[0] - s[1]) / s[1] - vb)


# ---------------------------------------------------------------------------
# Best fixed k in hindsight
# ---------------------------------------------------------------------------


def best_fixed_k(per_k_total_time_ms: Any, per_k_total_tokens: Any) -> tuple[int, float]:
    """The fixed draft length that did best in hindsight, and its ms/token.

    Entry ``i`` of both arrays belongs to ``k = i + 1``: the total time (ms) and
    the total tokens that always drafting ``k`` achieved on the same random
    streams.  Returns ``(k, time / tokens)`` minimising ``time / tokens``
    (smallest ``k`` on ties).
    """
    try:
        t = np.asarray(per_k_total_time_ms, dtype=float)
    except (TypeError, ValueError):
        raise ValueError("per_k_total_time_ms must be a 1-D array of floats") from None
    try:
        n = np.asarray(per_k_total_tokens, dtype=float)
    except (TypeError, ValueError):
        raise ValueError("per_k_total_tokens must be a 1-D array of numbers") from None
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"per_k_total_time_ms must be a non-empty 1-D array, got shape {t.shape}")
    if n.shape != t.shape:
        raise ValueError(
            f"per_k_total_tokens must have the same shape as per_k_total_time_ms "
            f"({t.shape}), got {n.shape}"
        )
    if np.isnan(t).any() or not np.isfinite(t).all() or (t < 0).any():
        raise ValueError("per_k_total_time_ms must be finite and >= 0")
    if np.isnan(n).any() or not np.isfinite(n).all() or (n <= 0).any():
        raise ValueError("per_k_total_tokens must be finite and > 0")
    ratio = t / n
    k = int(_first_min(ratio))
    return k + 1, float(ratio[k])


# ---------------------------------------------------------------------------
# Markov-modulated channel: finite-horizon dynamic program
# ---------------------------------------------------------------------------


def stationary_distribution(generator_per_ms: Any) -> np.ndarray:
    """Stationary distribution ``pi`` of a CTMC generator: ``pi Q = 0``, ``sum pi = 1``.

    Validates ``Q`` and solves by least squares
    (:func:`specstop_gym.core.channel.stationary_distribution`); for a reducible
    chain (e.g. ``Q = 0``) the minimum-norm solution (uniform for ``Q = 0``).
    """
    return _core_stationary_distribution(_as_generator(generator_per_ms))


@dataclass(frozen=True, eq=False)
class MarkovDPSolution:
    """Optimal state-dependent draft lengths for a finite request.

    Attributes:
        k_table: int array ``(n_tokens + 1, M)``; ``k_table[n, s]`` is the optimal
            draft length with ``n`` tokens left in observed channel state ``s``
            (row 0 unused, 0).
        value_ms: float array ``(n_tokens + 1, M)``; expected remaining time (ms)
            under the optimal policy (``value_ms[0] = 0``).
        generator_per_ms: the channel generator ``Q`` (rates per ms).
    """

    k_table: np.ndarray
    value_ms: np.ndarray
    generator_per_ms: np.ndarray

    @property
    def n_tokens(self) -> int:
        """Request length the table was solved for."""
        return int(self.k_table.shape[0] - 1)

    @property
    def n_states(self) -> int:
        """Number of channel states ``M``."""
        return int(self.k_table.shape[1])

    def k(self, n_left: int, state: int) -> int:
        """Optimal draft length with ``n_left`` tokens left in channel state ``state``."""
        n = _as_int(n_left, "n_left", 1, self.n_tokens)
        s = _as_int(state, "state", 0, self.n_states - 1)
        return int(self.k_table[n, s])

    def per_token_latency_ms(self, initial_distribution: Any = None) -> float:
        """Expected per-token latency (ms/token) of a whole request.

        ``sum_s p(s) * V(n_tokens, s) / n_tokens`` where ``p`` is
        ``initial_distribution`` (default: the stationary distribution of ``Q``).
        """
        m = self.n_states
        if initial_distribution is None:
            p = stationary_distribution(self.generator_per_ms)
        else:
            p = _as_state_array(initial_distribution, "initial_distribution", m)
            if abs(p.sum() - 1.0) > 1e-9:
                raise ValueError(f"initial_distribution must sum to 1, got {p.sum()!r}")
        return float(p @ self.value_ms[-1] / self.n_tokens)


def _accept_pmf(s: np.ndarray) -> np.ndarray:
    """``pmf[k - 1, a] = P(A = a | k)`` for ``k = 1..K``, ``a = 0..K``."""
    kmax = s.size
    s_ext = np.concatenate([[1.0], s])  # S_0..S_K
    pmf = np.zeros((kmax, kmax + 1))
    for k in range(1, kmax + 1):
        pmf[k - 1, :k] = s_ext[:k] - s_ext[1 : k + 1]
        pmf[k - 1, k] = s_ext[k]
    return np.clip(pmf, 0.0, None)


def _markov_round_model(
    survival: Any,
    *,
    generator_per_ms: Any,
    rtt_mean_ms: Any,
    rtt_cv: Any,
    draft_ms: float,
    verify_base_ms: float,
    verify_per_token_ms: float,
    bandwidth_kbps: Any,
    bytes_per_token: float,
    quadrature_points: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate the channel model and precompute one round for every (k, s).

    Returns ``(Q, ET, P, pmf)``: ``ET[k-1, s]`` expected round time (ms) from
    start state ``s``; ``P[k-1, s, s']`` law of the next round's start state;
    ``pmf`` from :func:`_accept_pmf`.
    """
    s = _as_survival(survival)
    q = _as_generator(generator_per_ms)
    m = q.shape[0]
    d = _as_nonneg(draft_ms, "draft_ms")
    vb = _as_nonneg(verify_base_ms, "verify_base_ms")
    vp = _as_nonneg(verify_per_token_ms, "verify_per_token_ms")
    mean = _as_state_array(rtt_mean_ms, "rtt_mean_ms", m)
    cv = _as_state_array(rtt_cv, "rtt_cv", m)
    if ((mean == 0.0) & (cv > 0.0)).any():
        raise ValueError("rtt_mean_ms must be > 0 in states where rtt_cv > 0 (lognormal)")
    bpt = _as_nonneg(bytes_per_token, "bytes_per_token")
    if bandwidth_kbps is None:
        tx_per_token = np.zeros(m)
    else:
        bw = _as_state_array(bandwidth_kbps, "bandwidth_kbps", m, positive=True)
        tx_per_token = bpt * 8.0 / bw  # bytes * 8 / (kbit/s) = ms
    j = _as_int(quadrature_points, "quadrature_points", 1)

    kmax = s.size
    ks = np.arange(1, kmax + 1, dtype=float)

    # rtt quadrature nodes per state: lognormal = exp(mu + sigma * Z).
    sigma = np.sqrt(np.log1p(cv**2))
    if (sigma == 0.0).all():
        x = np.zeros(1)
        w = np.ones(1)
    else:
        x, w = np.polynomial.hermite.hermgauss(j)
        x = math.sqrt(2.0) * x
        w = w / w.sum()
    with np.errstate(divide="ignore"):
        mu = np.where(mean > 0.0, np.log(np.where(mean > 0.0, mean, 1.0)) - 0.5 * sigma**2, 0.0)
    rtt_nodes = np.where(
        mean[:, None] > 0.0, np.exp(mu[:, None] + sigma[:, None] * x[None, :]), 0.0
    )  # (M, J)

    # Draft phase: start state s -> sending state s1.
    p_draft = scipy.linalg.expm(q[None, :, :] * (ks * d)[:, None, None])  # (K, M, M)
    # Rest of the round, per (k, s1, node).
    rest = (
        rtt_nodes[None, :, :]
        + vb
        + (ks * vp)[:, None, None]
        + (ks[:, None] * tx_per_token[None, :])[:, :, None]
    )  # (K, M, J)
    e_rest = scipy.linalg.expm(q[None, None, None] * rest[..., None, None])  # (K, M, J, M, M)
    rows = e_rest[:, np.arange(m), :, np.arange(m), :]  # (M, K, J, M): row s1 of expm
    after_send = np.einsum("j,mkjt->kmt", w, rows)  # (K, s1, s')
    p_next = np.einsum("ksm,kmt->kst", p_draft, after_send)  # (K, s, s')
    p_next = np.clip(p_next, 0.0, None)
    p_next /= p_next.sum(axis=2, keepdims=True)

    mean_rest = mean[None, :] + vb + (ks * vp)[:, None] + ks[:, None] * tx_per_token[None, :]
    e_time = (ks * d)[:, None] + np.einsum("ksm,km->ks", p_draft, mean_rest)  # (K, s)
    return q, e_time, p_next, _accept_pmf(s)


def _backward(
    e_time: np.ndarray, p_next: np.ndarray, pmf: np.ndarray, n_tokens: int, fixed_k: int | None,
    terminal: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Backward induction over tokens left; optimal (or fixed) k per (n, s); ``V(0, s) = terminal``."""
    kmax, m = e_time.shape
    value = np.zeros((n_tokens + 1, m))
    if terminal is not None:
        value[0] = terminal
    k_table = np.zeros((n_tokens + 1, m), dtype=np.int64)
    gained = np.arange(1, kmax + 2)  # A + 1 for A = 0..K
    if fixed_k is not None:
        e_time = e_time[fixed_k - 1 : fixed_k]
        p_next = p_next[fixed_k - 1 : fixed_k]
        pmf = pmf[fixed_k - 1 : fixed_k]
    for n in range(1, n_tokens + 1):
        v_after = value[np.maximum(n - gained, 0)]  # (K+1, M)
        w = pmf @ v_after  # (K', M): E[V(n - tokens, s')] per k
        cost = e_time + np.einsum("kst,kt->ks", p_next, w)  # (K', M)
        best = _first_min(cost, axis=0)
        value[n] = cost[best, np.arange(m)]
        k_table[n] = best + 1 if fixed_k is None else fixed_k
    return value, k_table


def solve_markov_dp(
    survival: Any,
    *,
    n_tokens: int,
    generator_per_ms: Any,
    rtt_mean_ms: Any,
    rtt_cv: Any,
    draft_ms: float,
    verify_base_ms: float,
    verify_per_token_ms: float,
    bandwidth_kbps: Any = None,
    bytes_per_token: float = 0.0,
    quadrature_points: int = 32,
    terminal_value_ms: Any = None,
) -> MarkovDPSolution:
    """Finite-horizon DP for a Markov-modulated channel with observed state (CSI).

    ``V(n, s) = min_{k=1..K} E[T_k + V(n - min(A + 1, n), s')]``, ``V(0, s) = 0`` (or
    ``terminal_value_ms[s]``: the value of what follows the request, e.g. the next request's
    ``value_ms[n_tokens]``, which chains the requests of an episode exactly),
    with round time ``T_k = k*draft_ms + rtt + verify_base_ms +
    k*verify_per_token_ms + k*bytes_per_token*8/bandwidth_kbps[s1]`` (ms), where
    ``s1`` is the state at sending (after ``k*draft_ms`` ms of drafting) and
    ``s'`` the state when the next round starts (after the rest of the round);
    see the module docstring for the full model.

    Args:
        survival: ``S_1..S_K``; ``K`` is the largest allowed draft.
        n_tokens: request length (>= 1).
        generator_per_ms: ``M x M`` CTMC generator (rates per ms, rows sum to 0).
        rtt_mean_ms: per-state rtt mean (ms), shape ``(M,)`` or scalar.
        rtt_cv: per-state rtt coefficient of variation (0: constant rtt).
        draft_ms, verify_base_ms, verify_per_token_ms: costs in ms.
        bandwidth_kbps: per-state uplink bandwidth (kbit/s), or None for no
            transmission time.
        bytes_per_token: payload bytes per drafted token.
        quadrature_points: Gauss-Hermite nodes for the lognormal rtt.
        terminal_value_ms: ``V(0, s)`` per state (ms), default 0.

    Returns:
        :class:`MarkovDPSolution` (``k_table``, ``value_ms``, ``k(n, s)``).
    """
    n = _as_int(n_tokens, "n_tokens", 1)
    q, e_time, p_next, pmf = _markov_round_model(
        survival,
        generator_per_ms=generator_per_ms,
        rtt_mean_ms=rtt_mean_ms,
        rtt_cv=rtt_cv,
        draft_ms=draft_ms,
        verify_base_ms=verify_base_ms,
        verify_per_token_ms=verify_per_token_ms,
        bandwidth_kbps=bandwidth_kbps,
        bytes_per_token=bytes_per_token,
        quadrature_points=quadrature_points,
    )
    terminal = None
    if terminal_value_ms is not None:
        terminal = _as_state_array(terminal_value_ms, "terminal_value_ms", q.shape[0])
    value, k_table = _backward(e_time, p_next, pmf, n, None, terminal)
    q = q.copy()
    for arr in (value, k_table, q):
        arr.flags.writeable = False
    return MarkovDPSolution(k_table=k_table, value_ms=value, generator_per_ms=q)


def solve_markov_dp_episode(
    survival: Any,
    *,
    n_tokens: int,
    n_requests: int,
    generator_per_ms: Any,
    rtt_mean_ms: Any,
    rtt_cv: Any,
    draft_ms: float,
    verify_base_ms: float,
    verify_per_token_ms: float,
    bandwidth_kbps: Any = None,
    bytes_per_token: float = 0.0,
    quadrature_points: int = 32,
) -> list[MarkovDPSolution]:
    """:func:`solve_markov_dp` for a whole episode of ``n_requests`` requests back to back.

    Request ``r`` is solved with ``V_r(0, s) = V_{r+1}(n_tokens, s)`` (the channel state a
    request ends in is the state the next one starts in), the last with ``V(0, s) = 0``; so
    entry ``r`` of the returned list is the exact optimum for request ``r`` of the episode
    (the round model is computed once). ``[0].value_ms[n_tokens]`` is the expected episode time.
    """
    nr = _as_int(n_requests, "n_requests", 1)
    n = _as_int(n_tokens, "n_tokens", 1)
    q, e_time, p_next, pmf = _markov_round_model(
        survival, generator_per_ms=generator_per_ms, rtt_mean_ms=rtt_mean_ms, rtt_cv=rtt_cv,
        draft_ms=draft_ms, verify_base_ms=verify_base_ms, verify_per_token_ms=verify_per_token_ms,
        bandwidth_kbps=bandwidth_kbps, bytes_per_token=bytes_per_token, quadrature_points=quadrature_points)
    out: list[MarkovDPSolution] = []
    terminal = None
    for _ in range(nr):
        value, k_table = _backward(e_time, p_next, pmf, n, None, terminal)
        terminal = value[n].copy()
        gen = q.copy()
        for arr in (value, k_table, gen):
            arr.flags.writeable = False
        out.append(MarkovDPSolution(k_table=k_table, value_ms=value, generator_per_ms=gen))
    return out[::-1]


def expected_request_time_fixed_k(
    survival: Any,
    k: int,
    *,
    n_tokens: int,
    generator_per_ms: Any,
    rtt_mean_ms: Any,
    rtt_cv: Any,
    draft_ms: float,
    verify_base_ms: float,
    verify_per_token_ms: float,
    bandwidth_kbps: Any = None,
    bytes_per_token: float = 0.0,
    quadrature_points: int = 32,
) -> np.ndarray:
    """Expected time (ms) to finish an ``n_tokens`` request always drafting ``k``.

    Same model and recursion as :func:`solve_markov_dp` with the minimum over
    ``k`` replaced by the fixed ``k`` (drafted even when fewer tokens are left).
    Returns an array of shape ``(M,)``: the expected request time from each
    initial channel state.  ``solve_markov_dp(...).value_ms[n_tokens]`` is
    element-wise ``<=`` this for every ``k``.
    """
    n = _as_int(n_tokens, "n_tokens", 1)
    s = _as_survival(survival)
    kk = _as_int(k, "k", 1, s.size)
    _, e_time, p_next, pmf = _markov_round_model(
        s,
        generator_per_ms=generator_per_ms,
        rtt_mean_ms=rtt_mean_ms,
        rtt_cv=rtt_cv,
        draft_ms=draft_ms,
        verify_base_ms=verify_base_ms,
        verify_per_token_ms=verify_per_token_ms,
        bandwidth_kbps=bandwidth_kbps,
        bytes_per_token=bytes_per_token,
        quadrature_points=quadrature_points,
    )
    value, _ = _backward(e_time, p_next, pmf, n, kk)
    return value[n].copy()
