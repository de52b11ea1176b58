"""Hugging Face transformers' assisted-generation schedule (SPEC 6)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from specstop_gym.core.config import ScenarioConfig

from .base import Agent, RoundContext, RoundFeedback

__all__ = ["HeuristicSchedule"]


class HeuristicSchedule(Agent):
    """``heuristic``: +2 after a fully accepted draft, -1 otherwise.

    Rule (per run): start at ``n = num_assistant_tokens``; draft ``k = n``; after
    the round, ``n <- n + 2`` if every drafted token was accepted (``A == k``),
    else ``n <- max(1, n - 1)``. ``n`` is kept in ``1..max_draft`` (transformers
    lets it grow without bound and caps only the draft; capping the state
    instead means a long run of full acceptances does not need as many
    rejections to come back down). The schedule persists across requests, as
    transformers' ``"heuristic"`` schedule does across ``generate`` calls (the
    ``"heuristic_transient"`` variant would reset it).

    Parameters:
        num_assistant_tokens (int, default 5): the starting draft length (>= 1;
            values above ``max_draft`` start at ``max_draft``). 5 was
            transformers' long-time default; recent releases default to 20.

    Source: Hugging Face transformers, ``AssistedCandidateGenerator.update_candidate_strategy``
    (``generation/candidate_generator.py``), ``num_assistant_tokens_schedule="heuristic"``.
    """

    name: ClassVar[str] = "heuristic"

    def __init__(self, scenario: ScenarioConfig, n_runs: int = 1, seed: int | None = 0,
                 num_assistant_tokens: int = 5, **params: Any) -> None:
        super().__init__(scenario, n_runs, seed, **params)
        n0 = num_assistant_tokens
        if isinstance(n0, bool) or not isinstance(n0, (int, np.integer)) or int(n0) < 1:
            raise ValueError(f"num_assistant_tokens must be an integer >= 1, got {n0!r}")
        self.num_assistant_tokens = int(n0)
        self.n = np.full(self.n_runs, self._start(), dtype=np.int64)

    def _start(self) -> int:
        return min(self.num_assistant_tokens, self.max_draft)

    def reset(self) -> None:
        super().reset()
        self.n[:] = self._start()

    def choose_k(self, ctx: RoundContext) -> np.ndarray:
        return self.n[ctx.rows].copy()

    def update(self, feedback: RoundFeedback) -> None:
        rows = np.asarray(feedback.rows)
        full = np.asarray(feedback.accepted) >= np.asarray(feedback.k)
        n = self.n[rows]
        self.n[rows] = np.clip(np.where(full, n + 2, n - 1), 1, self.max_draft)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "num_assistant_tokens": self.num_assistant_tokens}
