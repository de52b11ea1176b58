"""UCB-SpecStop: structured optimism for the draft length (SPEC sections 4 and 6).

Also home of the two pieces the structured agents share:

* :class:`CensoredAcceptance`: per-run, per-position acceptance counts from
  censored round outcomes (used by ``ucb-specstop``, ``contextual-ucb`` and
  ``specdec++``);
* :func:`batch_optimal_k`: :func:`specstop_gym.oracle.optimal_k_for_costs`
  vectorised over runs (used by the learners and by the ``oracle`` agent).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from specstop_gym.core.config import ScenarioConfig

from .base import Agent, RoundContext, RoundFeedback

__all__ = ["CensoredAcceptance", "UCBSpecStop", "batch_optimal_k"]

#: Relative tolerance under which two rho values tie (smallest k wins), as in the oracle.
_TIE_RTOL = 1e-12


def batch_optimal_k(survival: Any, marginal_cost_ms: Any, fixed_cost_ms: Any) -> np.ndarray:
    """``k* = argmin_k (k*c + B) / (1 + sum_{i<=k} S_i)`` for many runs at once.

    The same rule (and tie-break: smallest ``k`` within a relative 1e-12) as
    :func:`specstop_gym.oracle.optimal_k_for_costs`, vectorised.

    Args:
        survival: ``(n, K)`` per-run survival ``S_1..S_K``, or ``(K,)`` shared by all runs.
        marginal_cost_ms: ``c`` per run ``(n,)`` or a scalar (ms per drafted token).
        fixed_cost_ms: ``B`` per run ``(n,)`` or a scalar (ms per round).

    Returns:
        int64 array ``(n,)`` of draft lengths in ``1..K``.
    """
    s = np.asarray(survival, dtype=np.float64)
    c = np.asarray(marginal_cost_ms, dtype=np.float64)
    b = np.asarray(fixed_cost_ms, dtype=np.float64)
    if s.ndim not in (1, 2) or c.ndim > 1 or b.ndim > 1:
        raise ValueError("batch_optimal_k: survival must be (K,) or (n, K), costs scalars or (n,)")
    sizes = ([s.shape[0]] if s.ndim == 2 else []) + [a.shape[0] for a in (c, b) if a.ndim == 1]
    n = sizes[0] if sizes else 1
    s2 = np.broadcast_to(s if s.ndim == 2 else s[None, :], (n, s.shape[-1]))
    ks = np.arange(1, s2.shape[1] + 1, dtype=np.float64)
    c_col = np.broadcast_to(c, (n,))[:, None]
    b_col = np.broadcast_to(b, (n,))[:, None]
    rho = (ks[None, :] * c_col + b_col) / (1.0 + np.cumsum(s2, axis=1))
    best = rho.min(axis=1, keepdims=True)
    return (np.argmax(rho <= best + _TIE_RTOL * np.abs(best), axis=1) + 1).astype(np.int64)


class CensoredAcceptance:
    """Per-position conditional acceptance learnt from censored round outcomes.

    A round that drafted ``k`` and had ``A`` accepted reveals positions
    ``1..A+1`` when ``A < k`` (the last one rejected) and ``1..k`` when ``A = k``
    (all accepted). Per run ``r`` and position ``i``: ``n[r, i]`` times observed,
    ``acc[r, i]`` times accepted; the estimate is the Beta(1, 1) posterior mean
    ``a_hat = (acc + 1) / (n + 2)`` (0.5 for an unobserved position). This is the
    same estimate the environment shows in its observation
    (:meth:`specstop_gym.core.simulator.Simulator.acceptance_estimate`).
    """

    def __init__(self, n_runs: int, max_draft: int) -> None:
        self.n = np.zeros((n_runs, max_draft))
        self.acc = np.zeros((n_runs, max_draft))
        self._positions = np.arange(1, max_draft + 1)

    def reset(self) -> None:
        self.n[:] = 0.0
        self.acc[:] = 0.0

    def update(self, rows: np.ndarray, k: np.ndarray, accepted: np.ndarray) -> None:
        """Add the censored outcomes of rounds ``(k, accepted)`` of runs ``rows`` (distinct)."""
        k = np.asarray(k, dtype=np.int64)
        a = np.asarray(accepted, dtype=np.int64)
        pos = self._positions[None, :]
        seen = pos <= np.minimum(a + 1, k)[:, None]
        self.n[rows] += seen
        self.acc[rows] += seen & (pos <= a[:, None])

    def mean(self, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Posterior-mean conditional acceptance ``a_hat``, shape ``(len(rows), K)``."""
        return (self.acc[rows] + 1.0) / (self.n[rows] + 2.0)

    def optimistic(self, rows: np.ndarray, beta: float, t: np.ndarray) -> np.ndarray:
        """``a^+ = min(1, a_hat + sqrt(beta * ln t / n))`` (1 for unobserved positions)."""
        n = self.n[rows]
        log_t = np.log(np.maximum(np.asarray(t, dtype=np.float64), 1.0))[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            bonus = np.sqrt(beta * log_t / n)
        return np.where(n > 0, np.minimum(1.0, self.mean(rows) + bonus), 1.0)


class UCBSpecStop(Agent):
    """``ucb-specstop``: optimistic per-position acceptance + estimated costs + the oracle's rule.

    Rule (per run, at the start of each round):

    1. **Acceptance, shared across arms.** Censored round outcomes update
       per-position counts (:class:`CensoredAcceptance`): ``n_i`` observations
       and the Beta(1, 1) posterior mean ``a_hat_i``. Optimism:
       ``a_i^+ = min(1, a_hat_i + sqrt(beta * ln t / n_i))`` (``t`` = rounds this
       run has finished, at least 1; an unobserved position gets ``a_i^+ = 1``),
       ``S_i^+ = prod_{j<=i} a_j^+``. Every round informs every arm that drafts
       at least as far as it got, which is what makes this learn faster than
       per-arm UCB.
    2. **Costs.** Fixed cost ``B_hat = rtt_hat + verify_base_hat`` where
       ``rtt_hat`` is the mean of the observed round rtts (exponentially weighted
       with half-life ``rtt_halflife`` rounds when that is set; before the first
       round the rtt the edge measured at the start, ``ctx.last_rtt_ms``). The
       compute part of a round, ``round_ms - rtt_ms = verify_base + k * c``, is
       fitted by least squares over observed rounds once at least two distinct
       ``k`` have been tried, giving ``c_hat`` and ``verify_base_hat``. Before that
       the prior is the scenario's nominal ``c = draft_ms + verify_per_token_ms``
       (the device knows its own draft speed and the server's advertised
       verification cost), and with one distinct ``k`` tried
       ``verify_base_hat = mean(round_ms - rtt_ms) - k * c_nominal``.
    3. **Decision.** ``k = argmin_k (k * c_hat + B_hat) / (1 + sum_{i<=k} S_i^+)``
       (:func:`specstop_gym.oracle.optimal_k_for_costs`, vectorised as
       :func:`batch_optimal_k`), equivalently the Dinkelbach threshold rule of
       SPEC 4, ``k = max(1, #{i : rho^+ * S_i^+ > c_hat})``.

    Optimism only inflates ``S^+``, so an under-explored position looks worth
    drafting; drafting it observes it (when the prefix survives) and shrinks its
    bonus. Positions beyond the chosen ``k`` are only observed through optimism,
    so the rule converges to the oracle's ``k*`` on a stationary channel. The
    rule is delay-aware through ``B_hat`` but, like the stationary oracle,
    ignores the request's remaining tokens (a bounded horizon) and the CSI (see
    ``contextual-ucb``).

    Parameters:
        beta (float, default 0.1): width of the confidence bonus (>= 0; 0 is
            greedy on the posterior means). The bonus is added at every position
            and multiplied through S^+, so it compounds: 0.1 converges to k* within
            a few thousand rounds on the qwen-geometric and llama-heavy-head presets
            (tests/test_agents_unit.py), 1.0 stays one token too long there.
        rtt_halflife (float or None, default 50): half-life, in rounds, of the
            exponentially weighted rtt mean, so that the rule tracks a drifting
            delay; None is the plain running mean (optimal for a stationary
            channel, SPEC 4: there only the long-run mean matters; with cv 0.2 a
            50-round half-life adds about 2% noise to B_hat, which rarely moves k).

    Source: the UCB-SpecStop of arXiv 2606.20591 (abstract only is public: "structured
    optimism" over a threshold stopping rule); the per-position censored
    estimate follows the Kaplan-Meier-style survival estimate of SPEC 2 and the
    decision the exact oracle of SPEC 4 (:mod:`specstop_gym.oracle`).
    """

    name: ClassVar[str] = "ucb-specstop"

    def __init__(self, scenario: ScenarioConfig, n_runs: int = 1, seed: int | None = 0,
                 beta: float = 0.1, rtt_halflife: float | None = 50.0, **params: Any) -> None:
        super().__init__(scenario, n_runs, seed, **params)
        self.beta = _nonneg_float("beta", beta)
        if rtt_halflife is None:
            self.rtt_halflife: float | None = None
            self._decay = 1.0
        else:
            h = _nonneg_float("rtt_halflife", rtt_halflife)
            if h <= 0.0:
                raise ValueError(f"rtt_halflife must be > 0 rounds (or None for the plain mean), got {rtt_halflife!r}")
            self.rtt_halflife = h
            self._decay = 0.5 ** (1.0 / h)
        self._c_nominal = scenario.draft_ms + scenario.verify_per_token_ms
        self.acceptance = CensoredAcceptance(self.n_runs, self.max_draft)
        self.t = np.zeros(self.n_runs)
        # rtt: weighted sum and weight (plain mean when decay = 1)
        self._rtt_num = np.zeros(self.n_runs)
        self._rtt_den = np.zeros(self.n_runs)
        # least squares of y = round_ms - rtt_ms on k: sums n, k, k^2, y, k*y
        self._ls = np.zeros((self.n_runs, 5))

    # ----------------------------------------------------------------- state
    def reset(self) -> None:
        super().reset()
        self.acceptance.reset()
        self.t[:] = 0.0
        self._rtt_num[:] = 0.0
        self._rtt_den[:] = 0.0
        self._ls[:] = 0.0

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "beta": self.beta, "rtt_halflife": self.rtt_halflife}

    # -------------------------------------------------------------- estimates
    def cost_estimates(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(c_hat, verify_base_hat)`` per run in ``rows`` (ms), see the class docstring."""
        n, sk, skk, sy, sky = self._ls[rows].T
        det = n * skk - sk * sk  # n^2 * var(k): >= n - 1 > 0 once two distinct k were tried
        two = det > 0.5
        safe_det = np.where(two, det, 1.0)
        safe_n = np.maximum(n, 1.0)
        c_fit = (n * sky - sk * sy) / safe_det
        c_hat = np.where(two, c_fit, self._c_nominal)
        c_hat = np.maximum(c_hat, 1e-9)
        vb = np.where(n > 0, (sy - c_hat * sk) / safe_n, self.scenario.verify_base_ms)
        return c_hat, np.maximum(vb, 0.0)

    def rtt_estimate(self, ctx: RoundContext) -> np.ndarray:
        """Estimated rtt (ms) for the rows of ``ctx``: observed mean, else the last measured rtt."""
        den = self._rtt_den[ctx.rows]
        return np.where(den > 0, self._rtt_num[ctx.rows] / np.where(den > 0, den, 1.0), ctx.last_rtt_ms)

    def optimistic_survival(self, rows: np.ndarray) -> np.ndarray:
        """``S^+`` per run in ``rows``, shape ``(len(rows), K)``."""
        return np.cumprod(self.acceptance.optimistic(rows, self.beta, self.t[rows]), axis=1)

    # ----------------------------------------------------------------- policy
    def choose_k(self, ctx: RoundContext) -> np.ndarray:
        rows = np.asarray(ctx.rows)
        c_hat, vb_hat = self.cost_estimates(rows)
        fixed = self.rtt_estimate(ctx) + vb_hat
        return batch_optimal_k(self.optimistic_survival(rows), c_hat, fixed)

    def update(self, feedback: RoundFeedback) -> None:
        rows = np.asarray(feedback.rows)
        k = np.asarray(feedback.k, dtype=np.float64)
        self.acceptance.update(rows, feedback.k, feedback.accepted)
        self.t[rows] += 1.0
        self._update_rtt(rows, np.asarray(feedback.rtt_ms, dtype=np.float64), feedback)
        y = np.asarray(feedback.round_ms, dtype=np.float64) - np.asarray(feedback.rtt_ms, dtype=np.float64)
        self._ls[rows] += np.stack([np.ones_like(k), k, k * k, y, k * y], axis=1)

    def _update_rtt(self, rows: np.ndarray, rtt: np.ndarray, feedback: RoundFeedback) -> None:
        self._rtt_num[rows] = self._decay * self._rtt_num[rows] + rtt
        self._rtt_den[rows] = self._decay * self._rtt_den[rows] + 1.0


def _nonneg_float(name: str, value: Any) -> float:
    """A finite real >= 0, else ValueError naming the parameter."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}") from None
    if not math.isfinite(v) or v < 0.0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v
