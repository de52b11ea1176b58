"""Any policy function as an agent: evaluate a policy trained with any library on common random numbers.

``PolicyAgent(scenario, policy, level="token", n_runs=n)`` answers the agent protocol
(:mod:`agents.base`) with ``policy(observations) -> actions``, where ``observations`` are the
environment's observation rows that the evaluation runner puts in every context
(``ctx.observation``, float32, shape ``(rows, obs_dim)``, the layout of
``env.observation_fields``) and ``actions`` the environment's actions:

* ``level="token"`` (a policy for ``SpecStop-v0``): ``should_stop = policy(obs) == 1``; the
  first token of a round is always drafted, and a draft at ``max_draft`` is a forced stop, as in
  the environment;
* ``level="round"`` (a policy for ``SpecStopRound-v0``): ``choose_k = policy(obs) + 1``, with
  the position (``position_frac``, ``position_1..K``) and ``confidence`` set to 0 as that
  environment observes them.

So ``run_agent(PolicyAgent(scenario, act, n_runs=len(seeds)), scenario, seeds, level="token")``
plays the episodes ``env.reset(seed=s)`` would give for each seed ``s``, like every other agent
of a comparison (the oracle, best-fixed-k). ``policy`` must be deterministic or draw from its own
seeded generator; SB3 models fit as ``lambda obs: model.predict(obs, deterministic=True)[0]``.
The agent does not learn (``update`` is a no-op).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from specstop_gym.core.config import ScenarioConfig

from .base import Agent, RoundContext, TokenContext


class PolicyAgent(Agent):
    """A fixed policy ``observations -> actions`` (see the module docstring)."""

    name: ClassVar[str] = "policy"

    def __init__(self, scenario: ScenarioConfig, policy: Callable[[np.ndarray], Any], level: str = "token",
                 n_runs: int = 1, seed: int | None = 0, label: str = "policy") -> None:
        super().__init__(scenario, n_runs=n_runs, seed=seed)
        if level not in ("token", "round"):
            raise ValueError(f"level must be 'token' or 'round', got {level!r}")
        if not callable(policy):
            raise ValueError(f"policy must be a function of the observation rows, got {policy!r}")
        self.policy = policy
        self.level = level
        self.label = label

    def _actions(self, ctx: RoundContext, n_actions: int) -> np.ndarray:
        if ctx.observation is None:
            raise ValueError("PolicyAgent needs ctx.observation (run it through specstop_gym.evaluation.run_agent)")
        obs = np.asarray(ctx.observation, dtype=np.float32)
        if self.level == "round":  # the round-level view (as SpecStopRound-v0 observes): decided before drafting
            obs = obs.copy()
            obs[:, 0] = 0.0  # position_frac
            obs[:, 2 + self.scenario.n_states] = 0.0  # confidence
            obs[:, obs.shape[1] - self.max_draft:] = 0.0  # position_1..position_K
        a = np.asarray(self.policy(obs)).reshape(-1)
        if a.shape != (len(ctx.rows),) or not np.issubdtype(a.dtype, np.integer) or (a < 0).any() or (a >= n_actions).any():
            raise ValueError(f"policy returned {a!r} for {len(ctx.rows)} observation rows; expected one integer "
                             f"action in 0..{n_actions - 1} per row")
        return a

    def choose_k(self, ctx: RoundContext) -> np.ndarray:
        if self.level != "round":
            raise ValueError("a token-level policy plays at the token level: run it with level='token'")
        return self._actions(ctx, self.max_draft) + 1

    def should_stop(self, ctx: TokenContext) -> np.ndarray:
        if self.level == "round":
            return super().should_stop(ctx)
        return self._actions(ctx, 2) == 1

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "level": self.level}
