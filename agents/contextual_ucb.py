"""Contextual UCB-SpecStop: per-CSI-state delays, learnt persistence and a certainty-equivalent DP (SPEC 4, 6)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from specstop_gym.core.config import ScenarioConfig
from specstop_gym.oracle import solve_markov_dp

from .base import RoundContext, RoundFeedback
from .ucb_specstop import UCBSpecStop, batch_optimal_k

__all__ = ["PLANNERS", "ContextualUCB"]

PLANNERS = ("dp", "local")
"""How ``contextual-ucb`` turns its estimates into a per-state draft length (class docstring)."""


class ContextualUCB(UCBSpecStop):
    """``contextual-ucb``: ``ucb-specstop`` that learns the channel's states and plans over them.

    What it learns, per run, from what the edge observes (the CSI ``s`` at each round start,
    the round's rtt, the wall-clock time):

    * **Acceptance and compute costs**, shared across states: the optimistic survival ``S^+``
      and ``c_hat``, ``verify_base_hat`` of ``ucb-specstop``.
    * **Per-state delay**: mean and coefficient of variation of the rtt of the rounds that
      started in state ``s`` (plain moments; a state not seen yet borrows the run's current
      segment mean and a cv of 0).
    * **Persistence**: the state process' generator ``Q`` from the observed state sequence in
      wall-clock time. Between consecutive round starts ``(t_0, s_0) -> (t_1, s_1)`` the run
      spends ``t_1 - t_0`` ms in ``s_0`` and, if ``s_1 != s_0``, makes one ``s_0 -> s_1`` switch
      (rounds last 0.1-0.5 s, stays 1-30 s on the Markov presets, so switches the round starts
      miss are rare). With ``T_i`` ms spent in ``i`` and ``n_ij`` switches, the posterior mean of a
      Gamma(``prior_switches``, ``prior_ms``) prior on each leaving rate:
      ``q_ij = (n_ij + prior_switches / (M - 1)) / (T_i + prior_ms)``, ``q_ii = -sum_j q_ij``.

    Rule (``planner="dp"``, the default; certainty equivalence): solve the finite-request
    dynamic program of the oracle (:func:`specstop_gym.oracle.solve_markov_dp`: tokens left x
    channel state, the channel evolving during drafting and flight) on the *estimated* model
    (``S^+``, ``Q_hat``, per-state rtt means and cvs, ``draft_ms`` of the device,
    ``verify_base_hat``, ``verify_per_token = c_hat - draft_ms``), and draft
    ``k = k_table[min(tokens_left, dp_horizon), s]`` (requests longer than ``dp_horizon`` tokens
    use the policy with ``dp_horizon`` tokens left, where it has become stationary). The table is re-solved every ``resolve_every`` rounds of
    the run (and the first time every state has been seen); before the first solve, and for a
    state that has not been seen, the per-state local rule below is used. A solve costs about
    20-40 ms (two states, ``K = 12``, 256 tokens; docs/agents.md).

    ``planner="local"``: the per-state local optimum
    ``k(s) = argmin_k (k c_hat + rtt_hat(s) + verify_base_hat) / (1 + sum_{i<=k} S_i^+)``, fresh
    every round (the rule before issue 13).

    With ``csi == -1`` (CSI not observable) the agent is exactly ``ucb-specstop`` (same choices
    on the same feedback).

    Parameters: those of ``ucb-specstop`` (``bound``, ``level``, ``level_c``, ``beta``,
    ``change_threshold``, ``change_allowance``), and

    * ``planner`` (str, default "dp"): "dp" or "local" (above);
    * ``resolve_every`` (int >= 1, default 64): rounds between DP solves;
    * ``dp_horizon`` (int >= 1, default 512): tokens left the DP is solved for (its cost is linear in it);
    * ``prior_switches`` (float > 0, default 1) and ``prior_ms`` (float > 0, default 1000): the
      Gamma prior on each state's leaving rate (one switch per second of observation: weak
      once a state has been watched for a few seconds).

    Source: the CSI-aware UCB-SpecStop of arXiv 2606.20591 (abstract: 3.0-6.8% gained from CSI);
    certainty equivalence over an estimated Markov model as in model-based adaptive control
    (e.g. Kumar and Varaiya, "Stochastic Systems", 1986, ch. 12); the generator estimate is the
    maximum-likelihood estimate of a continuously observed CTMC (``n_ij / T_i``, e.g. Norris,
    "Markov Chains", 1997, section 5.4) with a conjugate Gamma prior.
    """

    name: ClassVar[str] = "contextual-ucb"

    def __init__(self, scenario: ScenarioConfig, n_runs: int = 1, seed: int | None = 0,
                 planner: str = "dp", resolve_every: int = 64, dp_horizon: int = 512,
                 prior_switches: float = 1.0, prior_ms: float = 1000.0, **params: Any) -> None:
        super().__init__(scenario, n_runs, seed, **params)
        if planner not in PLANNERS:
            raise ValueError(f"planner must be one of {', '.join(PLANNERS)}; got {planner!r}")
        for pname, v in (("resolve_every", resolve_every), ("dp_horizon", dp_horizon)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{pname} must be an integer >= 1, got {v!r}")
        for pname, v in (("prior_switches", prior_switches), ("prior_ms", prior_ms)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{pname} must be a finite number > 0, got {v!r}")
        self.planner = planner
        self.resolve_every = int(resolve_every)
        self.dp_horizon = int(dp_horizon)
        self.prior_switches = float(prior_switches)
        self.prior_ms = float(prior_ms)
        m = max(1, int(scenario.n_states))
        self._alloc(m)
        self.solves = 0

    def _alloc(self, m: int) -> None:
        n = self.n_runs
        self._state_stats = np.zeros((n, m, 3))  # count, sum rtt, sum rtt^2
        self._time_in = np.zeros((n, m))
        self._switches = np.zeros((n, m, m))
        self._last_obs = np.full((n, 2), np.nan)  # (time_ms, state) of the last round start seen
        self._tables: list[np.ndarray | None] = [None] * n
        self._next_solve = np.zeros(n)

    def reset(self) -> None:
        super().reset()
        self._alloc(self._state_stats.shape[1])
        self.solves = 0

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(name=self.name, planner=self.planner, resolve_every=self.resolve_every, dp_horizon=self.dp_horizon,
                 prior_switches=self.prior_switches, prior_ms=self.prior_ms)
        return d

    # -------------------------------------------------------------- estimates
    def _grow(self, state: np.ndarray) -> None:
        """Make room for states beyond the scenario's count (e.g. trace channels with a state column)."""
        need = int(np.max(state, initial=-1)) + 1
        m = self._state_stats.shape[1]
        if need > m:
            n, extra = self.n_runs, need - m
            self._state_stats = np.concatenate([self._state_stats, np.zeros((n, extra, 3))], axis=1)
            self._time_in = np.concatenate([self._time_in, np.zeros((n, extra))], axis=1)
            sw = np.zeros((n, need, need))
            sw[:, :m, :m] = self._switches
            self._switches = sw
            self._tables = [None] * n

    def state_rtt_estimate(self, rows: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(rtt_hat(state), known)`` per run in ``rows``; ``known`` False where the state is unseen."""
        state = np.asarray(state, dtype=np.int64)
        self._grow(state)
        s = np.maximum(state, 0)
        st = self._state_stats[rows, s]
        known = (state >= 0) & (st[:, 0] > 0)
        return st[:, 1] / np.where(known, st[:, 0], 1.0), known

    def state_model(self, row: int, fallback_rtt: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Estimated ``(Q_hat per ms, rtt means ms, rtt cvs)`` of run ``row`` (class docstring)."""
        st = self._state_stats[row]
        m = st.shape[0]
        cnt = st[:, 0]
        mean = np.where(cnt > 0, st[:, 1] / np.maximum(cnt, 1.0), fallback_rtt)
        var = np.where(cnt > 1, (st[:, 2] - cnt * mean * mean) / np.maximum(cnt - 1.0, 1.0), 0.0)
        cv = np.where(mean > 0, np.sqrt(np.maximum(var, 0.0)) / np.maximum(mean, 1e-12), 0.0)
        q = np.zeros((m, m))
        if m > 1:
            rates = (self._switches[row] + self.prior_switches / (m - 1)) / (self._time_in[row] + self.prior_ms)[:, None]
            np.fill_diagonal(rates, 0.0)
            q = rates - np.diag(rates.sum(axis=1))
        return q, mean, cv

    def _observe_state(self, rows: np.ndarray, time_ms: np.ndarray, csi: np.ndarray) -> None:
        """Account the time since each run's last observed round start and the switch, if any."""
        last_t, last_s = self._last_obs[rows, 0], self._last_obs[rows, 1]
        ok = np.isfinite(last_t) & (csi >= 0) & (last_s >= 0) & (time_ms >= last_t)
        if ok.any():
            r, s0, s1 = rows[ok], last_s[ok].astype(np.int64), csi[ok]
            np.add.at(self._time_in, (r, s0), time_ms[ok] - last_t[ok])
            moved = s0 != s1
            np.add.at(self._switches, (r[moved], s0[moved], s1[moved]), 1.0)
        self._last_obs[rows, 0] = np.where(csi >= 0, time_ms, np.nan)
        self._last_obs[rows, 1] = csi

    def _solve(self, row: int, c_hat: float, vb_hat: float, fallback_rtt: float) -> np.ndarray:
        q, mean, cv = self.state_model(row, fallback_rtt)
        surv = self.optimistic_survival(np.array([row]))[0]
        draft = float(self.scenario.draft_ms)
        sol = solve_markov_dp(surv, n_tokens=min(self.scenario.n_tokens, self.dp_horizon), generator_per_ms=q, rtt_mean_ms=mean,
                              rtt_cv=cv, draft_ms=draft, verify_base_ms=vb_hat,
                              verify_per_token_ms=max(c_hat - draft, 0.0), quadrature_points=8)
        self.solves += 1
        return sol.k_table

    # ----------------------------------------------------------------- policy
    def rtt_estimate(self, ctx: RoundContext) -> np.ndarray:
        rows = np.asarray(ctx.rows)
        glob = super().rtt_estimate(ctx)
        est, known = self.state_rtt_estimate(rows, ctx.csi)
        return np.where(known, est, glob)

    def choose_k(self, ctx: RoundContext) -> np.ndarray:
        rows = np.asarray(ctx.rows)
        csi = np.asarray(ctx.csi, dtype=np.int64)
        self._grow(csi)
        self._observe_state(rows, np.asarray(ctx.time_ms, dtype=np.float64), csi)
        c_hat, vb_hat = self.cost_estimates(rows)
        fixed = self.rtt_estimate(ctx) + vb_hat
        k = batch_optimal_k(self.survival_for_decision(rows), c_hat, fixed)
        if self.planner == "local":
            return k
        glob = super().rtt_estimate(ctx)
        left = np.asarray(ctx.tokens_left, dtype=np.int64)
        for j, row in enumerate(rows):
            s = csi[j]
            if s < 0:
                continue
            seen = self._state_stats[row, :, 0] > 0
            if not seen.all():
                continue
            if self._tables[row] is None or self.t[row] >= self._next_solve[row]:
                self._tables[row] = self._solve(int(row), float(c_hat[j]), float(vb_hat[j]), float(glob[j]))
                self._next_solve[row] = self.t[row] + self.resolve_every
            table = self._tables[row]
            assert table is not None
            k[j] = table[min(max(int(left[j]), 1), table.shape[0] - 1), s]
        return k

    def update(self, feedback: RoundFeedback) -> None:
        super().update(feedback)
        rows = np.asarray(feedback.rows)
        state = np.asarray(feedback.csi, dtype=np.int64)
        obs = state >= 0
        if obs.any():
            self._grow(state)
            r, s = rows[obs], state[obs]
            x = np.asarray(feedback.rtt_ms, dtype=np.float64)[obs]
            np.add.at(self._state_stats, (r, s), np.stack([np.ones_like(x), x, x * x], axis=1))
