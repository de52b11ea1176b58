"""Hugging Face transformers' assisted-generation schedule (SPEC 6)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from specstop_gym.core.config import ScenarioConfig

from .base import Agent, RoundContext, RoundFeedback

__all__ = ["HeuristicSchedule"]


class HeuristicSchedule(Agent):
    """``heuristic``: Hugging Face's ``"heuristic"`` schedule, +2 after a fully accepted draft, -1 otherwise.

    Rule (per run, as transformers does it): the schedule's state starts at
    ``n = num_assistant_tokens``; a round drafts

        k = max(1, min(n, max_draft, tokens_left - 1))

    (transformers drafts ``min(n, max_length - cur_len - 1)``: the room left in
    the output minus the target's own token; ``max_draft`` is the simulator's
    cap and at least one token is drafted); after the round ``n <- n + 2`` if
    every drafted token was accepted (``A == k``), else ``n <- max(1, n - 1)``.
    ``n`` has no upper bound (only the draft is capped), so after a run of full
    acceptances it can take several rejections before the draft gets shorter.
    The state persists across requests, as the ``"heuristic"`` schedule
    persists across ``generate`` calls with the same assistant model
    (``"heuristic_transient"`` would reset it).

    Not modelled: transformers' ``assistant_confidence_threshold`` (default
    0.4), which also stops a draft early when the drafted token's probability is
    below a threshold re-fitted online; and note that transformers' default
    schedule is now ``"constant"`` (``static-k`` here), ``"heuristic"`` must be
    chosen explicitly.

    Parameters:
        num_assistant_tokens (int, default 20): the starting state ``n`` (>= 1);
            transformers' default (5 in releases before the default changed).

    Source: Hugging Face transformers 5.24.0 (installed here):
    ``transformers/generation/candidate_generator.py`` lines 117-118 (``n`` read
    from the assistant's generation config), 223-247
    (``AssistedCandidateGenerator.update_candidate_strategy``: ``if num_matches
    == len(scores[0]) - 1: n += 2 else n = max(1, n - 1)``), 285-290
    (``_calculate_new_tokens``: ``min(int(n), max_length - cur_len - 1)``);
    ``generation/configuration_utils.py`` lines 638-639 (defaults
    ``num_assistant_tokens = 20``, schedule ``"constant"``) and 322-326 (the
    schedules); ``generation/utils.py`` lines 4246-4252 (``n`` written back to
    the assistant's config after ``generate`` for ``"heuristic"``).
    """

    name: ClassVar[str] = "heuristic"

    def __init__(self, scenario: ScenarioConfig, n_runs: int = 1, seed: int | None = 0,
                 num_assistant_tokens: int = 20, **params: Any) -> None:
        super().__init__(scenario, n_runs, seed, **params)
        n0 = num_assistant_tokens
        if isinstance(n0, bool) or not isinstance(n0, (int, np.integer)) or int(n0) < 1:
            raise ValueError(f"num_assistant_tokens must be an integer >= 1, got {n0!r}")
        self.num_assistant_tokens = int(n0)
        self.n = np.full(self.n_runs, self.num_assistant_tokens, dtype=np.int64)

    def reset(self) -> None:
        super().reset()
        self.n[:] = self.num_assistant_tokens

    def choose_k(self, ctx: RoundContext) -> np.ndarray:
        room = np.asarray(ctx.tokens_left, dtype=np.int64) - 1
        k = np.minimum(np.minimum(self.n[np.asarray(ctx.rows)], self.max_draft), room)
        return np.maximum(k, 1).astype(np.int64)

    def update(self, feedback: RoundFeedback) -> None:
        rows = np.asarray(feedback.rows)
        full = np.asarray(feedback.accepted) >= np.asarray(feedback.k)
        n = self.n[rows]
        self.n[rows] = np.where(full, n + 2, np.maximum(1, n - 1))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "num_assistant_tokens": self.num_assistant_tokens}
