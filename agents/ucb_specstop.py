"""UCB-SpecStop: structured optimism for the draft length (SPEC sections 4 and 6).

Also home of the pieces the structured agents share:

* :class:`CensoredAcceptance`: per-run, per-position acceptance counts from
  censored round outcomes (used by ``ucb-specstop``, ``contextual-ucb``,
  ``ts-specstop``, ``delay-aware-stop`` and ``specdec++``), with optional
  discounting for acceptance that drifts;
* :func:`batch_optimal_k`: :func:`specstop_gym.oracle.optimal_k_for_costs`
  vectorised over runs (used by the learners and by the ``oracle`` agent).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from specstop_gym.core.config import ScenarioConfig

from .base import Agent, RoundContext, RoundFeedback
from .confidence import exploration_level, kl_upper, survival_upper
from .delay_tracking import SegmentDelayTracker

__all__ = ["BOUNDS", "LEVELS", "CensoredAcceptance", "UCBSpecStop", "batch_optimal_k"]

BOUNDS = ("likelihood", "kl", "hoeffding")
"""Confidence bounds ``ucb-specstop`` offers (class docstring)."""
LEVELS = ("nested", "plus", "log")
"""Exploration levels ``ucb-specstop`` offers (class docstring)."""

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

    Also kept, for the direct bound of :func:`agents.confidence.survival_upper`:
    ``drafted[r, i]`` rounds that drafted at least ``i + 1`` tokens and ``reached[r, i]``
    of them that accepted at least ``i + 1``, and ``rounds[r]`` the rounds counted.

    For acceptance that drifts (Garivier and Moulines 2011, discounted and sliding-window
    UCB): ``discount`` (``gamma`` in (0, 1], default 1): before each round's counts are
    added, every count of that run is multiplied by ``gamma``, so an observation ``s``
    rounds old weighs ``gamma^s`` (half-life ``ln 2 / -ln gamma`` rounds); ``window``
    (rounds, default None): the counts are those of the run's last ``window`` rounds
    exactly (a ring buffer of their ``(k, A)``). ``rounds`` counts (or weighs) the rounds
    the same way.
    """

    def __init__(self, n_runs: int, max_draft: int, discount: float = 1.0, window: int | None = None) -> None:
        self.n = np.zeros((n_runs, max_draft))
        self.acc = np.zeros((n_runs, max_draft))
        self.drafted = np.zeros((n_runs, max_draft))
        self.reached = np.zeros((n_runs, max_draft))
        self.rounds = np.zeros(n_runs)
        self.discount = float(discount)
        self.window = None if window is None else int(window)
        self._positions = np.arange(1, max_draft + 1)
        if self.window is not None:  # ring buffer of the last `window` rounds' (k, accepted); k = 0: empty
            self._ring = np.zeros((n_runs, self.window, 2), np.int64)
            self._head = np.zeros(n_runs, np.int64)

    def reset(self) -> None:
        for a in (self.n, self.acc, self.drafted, self.reached, self.rounds):
            a[:] = 0.0
        if self.window is not None:
            self._ring[:] = 0
            self._head[:] = 0

    def _add(self, rows: np.ndarray, k: np.ndarray, a: np.ndarray, sign: float) -> None:
        pos = self._positions[None, :]
        seen = pos <= np.minimum(a + 1, k)[:, None]
        self.n[rows] += sign * seen
        self.acc[rows] += sign * (seen & (pos <= a[:, None]))
        self.drafted[rows] += sign * (pos <= k[:, None])
        self.reached[rows] += sign * (pos <= a[:, None])
        self.rounds[rows] += sign * (k > 0)

    def update(self, rows: np.ndarray, k: np.ndarray, accepted: np.ndarray) -> None:
        """Add the censored outcomes of rounds ``(k, accepted)`` of runs ``rows`` (distinct)."""
        rows = np.asarray(rows, dtype=np.int64)
        k = np.asarray(k, dtype=np.int64)
        a = np.asarray(accepted, dtype=np.int64)
        if self.discount < 1.0:
            for arr in (self.n, self.acc, self.drafted, self.reached, self.rounds):
                arr[rows] *= self.discount
        if self.window is not None:
            old = self._ring[rows, self._head[rows]]
            self._add(rows, old[:, 0], old[:, 1], -1.0)
            self._ring[rows, self._head[rows]] = np.stack([k, a], axis=1)
            self._head[rows] = (self._head[rows] + 1) % self.window
        self._add(rows, k, a, 1.0)

    def mean(self, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Posterior-mean conditional acceptance ``a_hat``, shape ``(len(rows), K)``."""
        return (self.acc[rows] + 1.0) / (self.n[rows] + 2.0)

    def optimistic(self, rows: np.ndarray, beta: float, t: np.ndarray) -> np.ndarray:
        """``a^+ = min(1, a_hat + sqrt(beta * ln t / n))`` (1 for unobserved positions): the
        Hoeffding-style bonus of ``ucb-specstop:bound=hoeffding``."""
        n = self.n[rows]
        log_t = np.log(np.maximum(np.asarray(t, dtype=np.float64), 1.0))[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            bonus = np.sqrt(beta * log_t / n)
        return np.where(n > 0, np.minimum(1.0, self.mean(rows) + bonus), 1.0)

    def survival_upper(self, rows: np.ndarray, level: np.ndarray, bound: str = "likelihood") -> np.ndarray:
        """Upper confidence bound on ``S_1..S_K`` at ``level`` nats (per run ``(R,)`` or per run and
        position ``(R, K)``; :mod:`agents.confidence`).

        ``bound="likelihood"``: :func:`~agents.confidence.survival_upper` (profile likelihood and
        direct counts); ``"kl"``: the product of per-position KL-UCB bounds.
        """
        if bound == "likelihood":
            return survival_upper(self.acc[rows], self.n[rows], self.reached[rows], self.drafted[rows], level)
        if bound == "kl":
            return np.cumprod(kl_upper(self.acc[rows], self.n[rows], level), axis=1)
        raise ValueError(f"bound must be 'likelihood' or 'kl' here, got {bound!r}")


class UCBSpecStop(Agent):
    """``ucb-specstop``: optimistic survival + estimated costs + the oracle's threshold rule.

    Rule (per run, at the start of each round):

    1. **Acceptance, shared across arms.** Censored round outcomes update
       per-position counts (:class:`CensoredAcceptance`). The optimistic survival
       ``S^+`` is an upper confidence bound on ``S_1..S_K``, for ``S_i`` at the
       exploration level (nats; ``t`` = rounds this run has finished, ``m_i`` =
       those that drafted at least ``i`` tokens, ``m_0 = t``, ratios floored at 1)

       * ``level="nested"`` (default): ``log(m_{i-1} / m_i) + level_c log log m_{i-1}``,
         KL-UCB+'s level for the binary decision "draft position ``i``", which is
         taken in the ``m_{i-1}`` rounds that drafted ``i - 1`` and sampled in ``m_i``
         of them;
       * ``level="plus"``: ``log(t / m_i) + level_c log log t`` (KL-UCB+ over all rounds);
       * ``level="log"``: ``log t + level_c log log t`` (KL-UCB's),

       by default (``bound="likelihood"``) the smaller of

       * the profile-likelihood bound of the censored (Kaplan-Meier) likelihood,
         ``max{prod_{j<=i} a_j : sum_{j<=i} n_j kl(a_hat_j, a_j) <= f(t)}``
         (Thomas and Grunkemeier 1975), and
       * the KL-UCB bound on ``S_i`` from the rounds that drafted at least ``i``
         (their indicators ``1{A >= i}`` are Bernoulli(``S_i``)),

       made non-increasing (:func:`agents.confidence.survival_upper`). A position
       never observed gets the factor 1, so the first rounds draft long.
       ``bound="kl"``: the product of per-position KL-UCB bounds
       ``prod_{j<=i} max{q : n_j kl(a_hat_j, q) <= f(t)}``; ``bound="hoeffding"``:
       ``prod_{j<=i} min(1, a_hat_j + sqrt(beta ln t / n_j))`` (the rule before
       issue 13; not a calibrated bound for any fixed ``beta``).
    2. **Costs.** Fixed cost ``B_hat = rtt_hat + verify_base_hat``. ``rtt_hat`` is
       the mean rtt of the current *segment* of the run
       (:class:`agents.delay_tracking.SegmentDelayTracker`: a two-sided CUSUM on
       log rtt cuts a new segment when the mean has moved persistently, so
       per-round jitter does not move it and a regime change does within a few
       rounds; ``change_threshold=None`` gives the plain running mean). Before the
       first round: the rtt the edge measured at the start, ``ctx.last_rtt_ms``.
       The compute part of a round, ``round_ms - rtt_ms = verify_base + k * c``, is
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

    Why this is optimism: if ``S_i <= S_i^+`` for every ``i`` (which the bound gives
    with probability about ``1 - 1/t`` per position), then ``rho(k) >= rho^+(k)`` for
    every ``k`` at once, so the chosen ``min_k rho^+(k) <= rho^+(k*) <= rho*``. A
    draft length is tried until its optimistic ratio is no better than what the
    played ones achieve. Since ``S^+`` is non-increasing, once ``S_j^+`` falls below
    the threshold ``c / rho^+`` every deeper position is excluded too, however
    rarely it was observed: exploration stops one position past the first one
    whose survival is certified low (docs/agents.md).

    The rule is delay-aware through ``B_hat`` but, like the stationary oracle,
    ignores the request's remaining tokens (a bounded horizon) and the CSI (see
    ``contextual-ucb``).

    Parameters:
        bound (str, default "likelihood"): "likelihood", "kl" or "hoeffding" (above).
        level (str, default "nested"): "nested", "plus" or "log" (above).
        level_c (float >= 0, default 1): ``c`` of the ``c log log t`` term (KL-UCB's
            proof uses 3, its experiments 0). docs/agents.md has the measurements
            behind the defaults (gaps on the ``--paper`` grid and the drift preset,
            and the draft length 64 runs end at).
        beta (float >= 0, default 0.1): width of the Hoeffding bonus; only used by
            ``bound="hoeffding"``.
        change_threshold (float > 0 or None, default 8): CUSUM decision interval
            ``h`` in units of the jitter's sd of log rtt; None: no change
            detection (plain mean).
        change_allowance (float >= 0, default 0.5): CUSUM reference value ``k``
            (sigma units). docs/agents.md measures the defaults: false alarms on
            i.i.d. jitter, detection delay on the drift preset's steps.

    Source: the UCB-SpecStop of arXiv 2606.20591 (abstract only is public:
    "structured optimism" over a threshold stopping rule); KL-UCB (Garivier and
    Cappe, COLT 2011); the likelihood-ratio bound on a Kaplan-Meier survival
    (Thomas and Grunkemeier, JASA 1975); CUSUM (Page, Biometrika 1954); the
    decision is the exact oracle of SPEC 4 (:mod:`specstop_gym.oracle`).
    """

    name: ClassVar[str] = "ucb-specstop"

    def __init__(self, scenario: ScenarioConfig, n_runs: int = 1, seed: int | None = 0,
                 bound: str = "likelihood", level: str = "nested", level_c: float = 1.0, beta: float = 0.1,
                 change_threshold: float | None = 8.0, change_allowance: float = 0.5,
                 discount: float = 1.0, window: int | None = None, **params: Any) -> None:
        super().__init__(scenario, n_runs, seed, **params)
        if bound not in BOUNDS:
            raise ValueError(f"bound must be one of {', '.join(BOUNDS)}; got {bound!r}")
        self.bound = bound
        if level not in LEVELS:
            raise ValueError(f"level must be one of {', '.join(LEVELS)}; got {level!r}")
        self.level_mode = level
        self.level_c = _nonneg_float("level_c", level_c)
        self.beta = _nonneg_float("beta", beta)
        if change_threshold is None:
            self.change_threshold: float | None = None
        else:
            h = _nonneg_float("change_threshold", change_threshold)
            if h <= 0.0:
                raise ValueError(f"change_threshold must be > 0 (or None: no change detection), got {change_threshold!r}")
            self.change_threshold = h
        self.change_allowance = _nonneg_float("change_allowance", change_allowance)
        g = _nonneg_float("discount", discount)
        if not 0.0 < g <= 1.0:
            raise ValueError(f"discount must be in (0, 1], got {discount!r}")
        self.discount = g
        if window is not None and (isinstance(window, bool) or not isinstance(window, (int, np.integer))
                                   or window < 1):
            raise ValueError(f"window must be an integer >= 1 (rounds) or None, got {window!r}")
        self.window = None if window is None else int(window)
        self._forgets = self.discount < 1.0 or self.window is not None
        self._c_nominal = scenario.draft_ms + scenario.verify_per_token_ms
        self.acceptance = CensoredAcceptance(self.n_runs, self.max_draft, discount=g, window=self.window)
        self.t = np.zeros(self.n_runs)
        self.delay = SegmentDelayTracker(self.n_runs, threshold=self.change_threshold,
                                         allowance=self.change_allowance)
        # least squares of y = round_ms - rtt_ms on k: sums n, k, k^2, y, k*y
        self._ls = np.zeros((self.n_runs, 5))

    # ----------------------------------------------------------------- state
    def reset(self) -> None:
        super().reset()
        self.acceptance.reset()
        self.t[:] = 0.0
        self.delay.reset()
        self._ls[:] = 0.0

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "bound": self.bound, "level": self.level_mode,
                             "level_c": self.level_c}
        if self.bound == "hoeffding":
            d["beta"] = self.beta
        d.update(change_threshold=self.change_threshold, change_allowance=self.change_allowance)
        if self.discount < 1.0:
            d["discount"] = self.discount
        if self.window is not None:
            d["window"] = self.window
        return d

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
        """Estimated rtt (ms) for the rows of ``ctx``: the current segment's mean, else the last measured rtt."""
        return self.delay.estimate(np.asarray(ctx.rows), ctx.last_rtt_ms)

    def level(self, rows: np.ndarray) -> np.ndarray:
        """Exploration level (nats) per run in ``rows`` and position, shape ``(len(rows), K)``."""
        t = (self.acceptance.rounds[rows] if self._forgets else self.t[rows])[:, None]
        drafted = self.acceptance.drafted[rows]
        if self.level_mode == "nested":
            before = np.concatenate([t, drafted[:, :-1]], axis=1)  # m_0 = t, m_1, ..., m_{K-1}
            return exploration_level(before, self.level_c, drafted)
        if self.level_mode == "plus":
            return exploration_level(t, self.level_c, drafted)
        return np.broadcast_to(exploration_level(t, self.level_c), (len(rows), self.max_draft))

    def optimistic_survival(self, rows: np.ndarray) -> np.ndarray:
        """``S^+`` per run in ``rows``, shape ``(len(rows), K)``."""
        if self.bound == "hoeffding":
            t = self.acceptance.rounds[rows] if self._forgets else self.t[rows]
            return np.cumprod(self.acceptance.optimistic(rows, self.beta, t), axis=1)
        return self.acceptance.survival_upper(rows, self.level(rows), self.bound)

    def survival_for_decision(self, rows: np.ndarray) -> np.ndarray:
        """The survival the decision uses (``S^+`` here; ``ts-specstop`` samples one)."""
        return self.optimistic_survival(rows)

    # ----------------------------------------------------------------- policy
    def choose_k(self, ctx: RoundContext) -> np.ndarray:
        rows = np.asarray(ctx.rows)
        c_hat, vb_hat = self.cost_estimates(rows)
        fixed = self.rtt_estimate(ctx) + vb_hat
        return batch_optimal_k(self.survival_for_decision(rows), c_hat, fixed)

    def update(self, feedback: RoundFeedback) -> None:
        rows = np.asarray(feedback.rows)
        k = np.asarray(feedback.k, dtype=np.float64)
        self.acceptance.update(rows, feedback.k, feedback.accepted)
        self.t[rows] += 1.0
        self._update_rtt(rows, np.asarray(feedback.rtt_ms, dtype=np.float64), feedback)
        y = np.asarray(feedback.round_ms, dtype=np.float64) - np.asarray(feedback.rtt_ms, dtype=np.float64)
        self._ls[rows] += np.stack([np.ones_like(k), k, k * k, y, k * y], axis=1)

    def _update_rtt(self, rows: np.ndarray, rtt: np.ndarray, feedback: RoundFeedback) -> None:
        self.delay.update(rows, rtt)


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
