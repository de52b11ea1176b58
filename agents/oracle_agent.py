"""The clairvoyant oracle as an agent (SPEC 4, "oracle")."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import numpy as np

from specstop_gym.core.config import ScenarioConfig
from specstop_gym.oracle import MarkovDPSolution, optimal_k_for_costs, solve_markov_dp
from specstop_gym.scenarios import build_acceptance

from .base import Agent, RoundContext
from .ucb_specstop import batch_optimal_k

__all__ = ["OracleAgent"]


@functools.lru_cache(maxsize=16)
def _markov_dp(survival: tuple[float, ...], n_tokens: int, generator: Any, rtt_mean: Any, rtt_cv: Any,
               draft_ms: float, verify_base_ms: float, verify_per_token_ms: float, bandwidth: Any,
               bytes_per_token: float) -> MarkovDPSolution:
    """:func:`solve_markov_dp`, cached: its tables are read-only, so agents can share them."""
    return solve_markov_dp(
        np.array(survival), n_tokens=n_tokens, generator_per_ms=generator, rtt_mean_ms=rtt_mean,
        rtt_cv=rtt_cv, draft_ms=draft_ms, verify_base_ms=verify_base_ms,
        verify_per_token_ms=verify_per_token_ms, bandwidth_kbps=bandwidth, bytes_per_token=bytes_per_token)


class OracleAgent(Agent):
    """``oracle``: knows the acceptance process and the channel model (reads ground truth).

    ``uses_ground_truth = True``: it reads ``ctx.true_state`` (Markov channels) and
    ``ctx.true_mean_rtt_ms`` (drift and trace channels), which no online agent
    may read. Survival ``S = build_acceptance(scenario).survival(max_draft)``
    (exact), ``c = scenario.marginal_cost_ms``.

    Rule, by channel kind (SPEC 4):

    * ``constant`` / ``iid``: the stationary optimum
      ``k* = argmin_k (k * c + B) / (1 + sum_{i<=k} S_i)`` with
      ``B = delay_ms + verify_base_ms`` (:func:`specstop_gym.oracle.optimal_k_for_costs`),
      the same every round. (With a finite request this is the long-run optimum,
      not the finite-horizon one; SPEC 4 names it as the oracle.)
    * ``markov``: the finite-horizon dynamic program over (tokens left, channel
      state) of :func:`specstop_gym.oracle.solve_markov_dp`, solved once for
      ``n_tokens`` with the scenario's generator, per-state rtt means, cvs and
      bandwidths; the round's draft is ``k_table[tokens_left, true_state]``.
    * ``drift`` / ``trace``: the local optimum at this moment's mean rtt,
      ``k*(true_mean_rtt_ms + verify_base_ms)``, per run (vectorised
      :func:`~agents.ucb_specstop.batch_optimal_k`).

    Parameters: none.

    Source: SPEC section 4 and :mod:`specstop_gym.oracle` (renewal-reward optimum,
    Dinkelbach threshold form, Markov DP).
    """

    name: ClassVar[str] = "oracle"
    uses_ground_truth: ClassVar[bool] = True

    def __init__(self, scenario: ScenarioConfig, n_runs: int = 1, seed: int | None = 0, **params: Any) -> None:
        super().__init__(scenario, n_runs, seed, **params)
        self.survival = np.asarray(build_acceptance(scenario).survival(self.max_draft), dtype=np.float64)
        self.marginal_cost_ms = float(scenario.marginal_cost_ms)
        self.mode = {"constant": "stationary", "iid": "stationary", "markov": "markov"}.get(
            scenario.channel, "local")
        self.k_stationary: int | None = None
        self.dp: MarkovDPSolution | None = None
        if self.mode == "stationary":
            fixed = scenario.delay_ms + scenario.verify_base_ms
            self.k_stationary = optimal_k_for_costs(self.survival, self.marginal_cost_ms, fixed)[0]
        elif self.mode == "markov":
            self.dp = _markov_dp(
                tuple(self.survival.tolist()), scenario.n_tokens, scenario.markov_generator_per_ms,
                scenario.markov_rtt_mean_ms, scenario.markov_rtt_cv, scenario.draft_ms,
                scenario.verify_base_ms, scenario.verify_per_token_ms, scenario.markov_bandwidth_kbps,
                scenario.bytes_per_token)

    def choose_k(self, ctx: RoundContext) -> np.ndarray:
        n = len(ctx.rows)
        if self.mode == "stationary":
            assert self.k_stationary is not None
            return np.full(n, self.k_stationary, dtype=np.int64)
        if self.mode == "markov":
            assert self.dp is not None
            table = self.dp.k_table
            left = np.clip(np.asarray(ctx.tokens_left, dtype=np.int64), 1, table.shape[0] - 1)
            state = np.asarray(ctx.true_state, dtype=np.int64)
            if (state < 0).any() or (state >= table.shape[1]).any():
                raise ValueError(f"oracle: true_state {state!r} outside 0..{table.shape[1] - 1}")
            return table[left, state].astype(np.int64)
        fixed = np.asarray(ctx.true_mean_rtt_ms, dtype=np.float64) + self.scenario.verify_base_ms
        return batch_optimal_k(self.survival, self.marginal_cost_ms, fixed)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "mode": self.mode}
