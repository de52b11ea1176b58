"""The agent protocol (SPEC section 6): batch-first, one row per independent run.

An agent instance controls ``n_runs`` independent runs at once (e.g. one per
seed in a batched evaluation; ``n_runs = 1`` for a single environment). Every
call names the runs it concerns with ``rows`` (absolute row indices), so a
token-level runner can ask only the rows that are mid-round.

* Round level: ``choose_k(ctx) -> (len(rows),)`` draft lengths in ``1..max_draft``.
* Token level: ``should_stop(ctx) -> (len(rows),)`` bools, asked after each drafted
  token (position >= 1). The default plans ``k`` with ``choose_k`` when a round
  starts (position 1) and stops at it, so every round-level agent also runs at the
  token level; agents with a token rule (SpecDec++) override it.
* Learning: ``update(feedback)`` after rounds finish, with what the edge device
  measures: ``k``, accepted count, tokens, round time, rtt, and the channel state
  when the scenario makes it observable (else -1).

Contexts also carry ``true_state``, ``true_mean_rtt_ms`` and ``true_trace_offset_ms``: ground
truth that only clairvoyant oracles (``uses_ground_truth = True``: ``oracle``, ``local-oracle``)
may read (documented per agent).

Randomness: an agent that needs any draws uses ``self.rng``, a generator seeded from
the ``seed`` it is given; never the global numpy generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from specstop_gym.core.config import ScenarioConfig


@dataclass
class RoundContext:
    """What the edge knows when a round starts (arrays over ``rows``)."""

    rows: np.ndarray
    last_rtt_ms: np.ndarray
    csi: np.ndarray  # observed channel state, -1 when not observable
    tokens_left: np.ndarray
    time_ms: np.ndarray
    true_state: np.ndarray  # ground truth: oracles only
    true_mean_rtt_ms: np.ndarray  # ground truth: oracles only
    observation: np.ndarray | None = None  # the environment's observation rows (learned policies)
    true_trace_offset_ms: np.ndarray | None = None  # ground truth: the episode's trace offset (oracles only)


@dataclass
class TokenContext(RoundContext):
    """What the edge knows after drafting token ``position`` of the current round."""

    position: np.ndarray = None  # type: ignore[assignment]  # tokens drafted so far (>= 1)
    confidence: np.ndarray = None  # type: ignore[assignment]  # q at ``position``; nan without a signal


@dataclass
class RoundFeedback:
    """Outcome of finished rounds (arrays over ``rows``)."""

    rows: np.ndarray
    k: np.ndarray
    accepted: np.ndarray
    tokens: np.ndarray
    round_ms: np.ndarray
    rtt_ms: np.ndarray
    csi: np.ndarray  # observed channel state at the round start, -1 when not observable


class Agent:
    """Base class of every policy (see module docstring)."""

    name: ClassVar[str] = "base"
    uses_ground_truth: ClassVar[bool] = False

    def __init__(self, scenario: ScenarioConfig, n_runs: int = 1, seed: int | None = 0, **params: Any) -> None:
        if isinstance(n_runs, bool) or not isinstance(n_runs, (int, np.integer)) or n_runs < 1:
            raise ValueError(f"n_runs must be an integer >= 1, got {n_runs!r}")
        if params:
            raise ValueError(f"unknown parameter(s) for agent {self.name!r}: {', '.join(sorted(params))}")
        self.scenario = scenario
        self.max_draft = scenario.max_draft
        self.n_runs = int(n_runs)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._planned = np.ones(self.n_runs, np.int64)

    # ----------------------------------------------------------------- hooks
    def reset(self) -> None:
        """Forget everything learnt (start of a new comparison)."""
        self.rng = np.random.default_rng(self.seed)
        self._planned[:] = 1

    def choose_k(self, ctx: RoundContext) -> np.ndarray:
        raise NotImplementedError

    def should_stop(self, ctx: TokenContext) -> np.ndarray:
        first = ctx.position == 1
        if first.any():
            sub = _subset(ctx, first)
            self._planned[sub.rows] = self.choose_k(sub)
        return ctx.position >= self._planned[ctx.rows]

    def update(self, feedback: RoundFeedback) -> None:
        """Learn from finished rounds (default: nothing)."""

    def describe(self) -> dict[str, Any]:
        """Name and parameters, for results files."""
        return {"name": self.name}


def _subset(ctx: RoundContext, mask: np.ndarray) -> Any:
    """The same context restricted to the rows where ``mask`` is True."""
    fields = {k: (v[mask] if isinstance(v, np.ndarray) else v) for k, v in vars(ctx).items()}
    return type(ctx)(**fields)


def validate_k(agent: Agent, k: np.ndarray) -> np.ndarray:
    """Check an agent's choice: integers in 1..max_draft (a clear error otherwise)."""
    k = np.asarray(k)
    if not np.issubdtype(k.dtype, np.integer) or (k < 1).any() or (k > agent.max_draft).any():
        raise ValueError(f"agent {agent.name!r} chose draft lengths {k!r} outside 1..{agent.max_draft}")
    return k.astype(np.int64)
