"""Naive UCB over draft lengths, each arm learnt alone (SPEC 6)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from specstop_gym.core.config import ScenarioConfig

from .base import Agent, RoundContext, RoundFeedback

__all__ = ["NaiveUCB"]


class NaiveUCB(Agent):
    """``naive-ucb``: UCB1-style index over the arms ``k = 1..max_draft``, rewards per arm.

    Rule (per run). The reward of a round is its throughput
    ``x = tokens / round_ms * 1000`` (committed tokens per second). Per arm ``k``:
    ``n_k`` pulls and mean throughput ``mu_k``. Rewards are normalised by the
    largest throughput this run has observed so far, ``x_max`` (so the
    normalised means lie in (0, 1] and the bonus has a sensible scale whatever
    the delay), and the arm played is

        k_t = argmax_k  mu_k / x_max + sqrt(c * ln t / n_k),

    with ``t`` the number of rounds this run has finished. An untried arm has
    index ``+inf`` (so every arm is tried once, in a random order, before any is
    repeated); ties are broken uniformly at random with the agent's own
    generator ``self.rng`` (never in favour of the first arm).

    Note: maximising the mean per-round throughput ``E[N/T]`` is *not* the same as
    minimising the long-run time per token ``E[T]/E[N]`` (the renewal-reward
    objective of SPEC 4; by Jensen they differ whenever ``T`` varies). This is
    what the baseline does and why it can settle on a different arm than the
    oracle even with unlimited data; it also learns every arm separately,
    ignoring that a round at ``k`` says something about every ``k' <= k``.

    Parameters:
        c (float, default 6.0): exploration constant (>= 0; 0 is greedy).

    Source: BanditSpec's UCBSpec (arXiv 2505.15141): arms are draft lengths,
    reward the committed tokens per second of the round, bonus
    ``sqrt(6 ln t / n)``; the index form and the +inf/random-tie conventions
    follow SMPyBandits' ``Policies/UCB.py``.
    """

    name: ClassVar[str] = "naive-ucb"

    def __init__(self, scenario: ScenarioConfig, n_runs: int = 1, seed: int | None = 0,
                 c: float = 6.0, **params: Any) -> None:
        super().__init__(scenario, n_runs, seed, **params)
        bad = isinstance(c, bool)
        try:
            cf = float(c)
        except (TypeError, ValueError):
            bad = True
            cf = math.nan
        if bad or not math.isfinite(cf) or cf < 0.0:
            raise ValueError(f"c must be a finite number >= 0, got {c!r}")
        self.c = cf
        self.pulls = np.zeros((self.n_runs, self.max_draft))
        self.reward_sum = np.zeros((self.n_runs, self.max_draft))
        self.reward_max = np.zeros(self.n_runs)

    def reset(self) -> None:
        super().reset()
        self.pulls[:] = 0.0
        self.reward_sum[:] = 0.0
        self.reward_max[:] = 0.0

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "c": self.c}

    def index(self, rows: np.ndarray) -> np.ndarray:
        """UCB index per run in ``rows`` and arm, shape ``(len(rows), max_draft)``."""
        n = self.pulls[rows]
        t = n.sum(axis=1, keepdims=True)
        scale = np.where(self.reward_max[rows] > 0, self.reward_max[rows], 1.0)[:, None]
        tried = n > 0
        safe_n = np.where(tried, n, 1.0)
        mean = self.reward_sum[rows] / safe_n / scale
        bonus = np.sqrt(self.c * np.log(np.maximum(t, 1.0)) / safe_n)
        return np.where(tried, mean + bonus, np.inf)

    def choose_k(self, ctx: RoundContext) -> np.ndarray:
        idx = self.index(np.asarray(ctx.rows))
        best = idx.max(axis=1, keepdims=True)
        ties = idx >= best  # inf == inf counts as a tie
        u = self.rng.random(idx.shape)
        return (np.argmax(np.where(ties, u, -1.0), axis=1) + 1).astype(np.int64)

    def update(self, feedback: RoundFeedback) -> None:
        rows = np.asarray(feedback.rows)
        k = np.asarray(feedback.k, dtype=np.int64)
        x = np.asarray(feedback.tokens, dtype=np.float64) / np.asarray(feedback.round_ms, dtype=np.float64) * 1000.0
        self.pulls[rows, k - 1] += 1.0
        self.reward_sum[rows, k - 1] += x
        self.reward_max[rows] = np.maximum(self.reward_max[rows], x)
