"""Static draft length: what vLLM's ``num_speculative_tokens`` does (SPEC 6)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from specstop_gym.core.config import ScenarioConfig

from .base import Agent, RoundContext

__all__ = ["StaticK"]

#: Default draft length when ``k`` is not given (capped at ``max_draft``).
DEFAULT_K = 4


class StaticK(Agent):
    """``static-k``: draft the same ``k`` tokens every round, whatever happens.

    Rule: ``k_t = k`` for every round and run; learns nothing.

    Parameters:
        k (int or None, default None): the draft length, in ``1..max_draft``
            (ValueError otherwise). None means ``min(4, max_draft)``.

    Source: vLLM speculative decoding, ``num_speculative_tokens`` (a fixed number
    of draft tokens per step). The ``best-fixed-k`` benchmark of the evaluation
    runs this agent for every ``k`` on the same random streams and keeps the
    best in hindsight.
    """

    name: ClassVar[str] = "static-k"

    def __init__(self, scenario: ScenarioConfig, n_runs: int = 1, seed: int | None = 0,
                 k: int | None = None, **params: Any) -> None:
        super().__init__(scenario, n_runs, seed, **params)
        if k is None:
            k = min(DEFAULT_K, self.max_draft)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= self.max_draft:
            raise ValueError(f"k must be an integer in 1..{self.max_draft} (max_draft), got {k!r}")
        self.k = int(k)

    def choose_k(self, ctx: RoundContext) -> np.ndarray:
        return np.full(len(ctx.rows), self.k, dtype=np.int64)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "k": self.k}
