"""Naive UCB over draft lengths, each arm learnt alone: BanditSpec's UCBSpec (SPEC 6)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from specstop_gym.core.config import ScenarioConfig

from .base import Agent, RoundContext, RoundFeedback

__all__ = ["NaiveUCB"]

BONUS_KINDS = ("total", "per-arm")


class NaiveUCB(Agent):
    """``naive-ucb``: BanditSpec's UCBSpec over the draft lengths ``k = 1..K``, each arm learnt alone.

    Rule (per run, as the public BanditSpec code does it; defaults in brackets).

    * Arms: ``k = 1..K`` with ``K = min(n_arms, max_draft)`` [``n_arms = 4``].
    * Reward of a round: its throughput ``x = tokens / round_ms * 1000``
      (committed tokens per second of the round, drafting, network and
      verification included). Per arm: ``n_k`` pulls and the running mean
      ``mu_k``. With ``normalise=True`` the means are divided by the largest
      throughput seen so far, ``x_max`` [False: raw tokens/s, as the code].
    * Round ``t = 1, 2, ...`` (counted from the start of the request when
      ``per_request``, else from the start of the run): warm-up ``t < 2K``
      plays ``k = (t - 1) mod K + 1`` (round robin: ``1..K``, then ``1..K-1``);
      afterwards

          k_t = argmax_k  mu_k + bonus_k,
          bonus_k = sqrt(c ln t / sum_j n_j)   (bonus="total", the code) [c = 6]
          bonus_k = sqrt(c ln t / n_k)         (bonus="per-arm", UCB1),

      ties to the shortest draft (``torch.argmax`` returns the first maximum).
      With ``bonus="total"`` the bonus is the same for every arm, so after the
      warm-up the rule is greedy on ``mu_k`` and ``c`` has no effect (tested).
    * ``per_request`` [True]: the arm statistics and ``t`` restart at the first
      round of every request (``tokens_left == n_tokens``): in the code they are
      local variables of the generate function, which is called once per
      prompt. ``False`` keeps learning across the requests of a run.

    Maximising the mean per-round throughput ``E[N/T]`` is *not* minimising
    the long-run time per token ``E[T]/E[N]`` (SPEC 4's renewal-reward
    objective; by Jensen they differ whenever ``T`` varies), and every arm is
    learnt from its own rounds only, whereas a round at ``k`` says something
    about every ``k' <= k``. docs/agents.md has the sensitivity of the gaps to
    ``c``, ``K``, the bonus and ``per_request``.

    Parameters:
        c (float, default 6.0): exploration constant (>= 0).
        n_arms (int or None, default 4): number of arms (>= 1); None = ``max_draft``.
        bonus (str, default "total"): "total" or "per-arm" (see above).
        normalise (bool, default False): divide rewards by the largest seen.
        per_request (bool, default True): restart the statistics at each request.

    Source: BanditSpec (Hou et al., arXiv 2505.15141), repository sail-sg/BanditSpec
    at commit 4e6dd869a3a1677ca62ee8055713cec439f26ccc, ``generate_utils.py``,
    ``ucb_length_spec_generate``: line 139 (``gamma = 4``: arms 1..4), 180-182
    (per-call statistics, ``exploration_weight = 6.0``), 184-191 (``out_index``
    from 1; ``out_index < 4 * 2``: round robin ``(out_index - 1) % 4 + 1``; else
    ``ucb_mean + sqrt(exploration_weight * log(out_index) / ucb_calltime.sum())``,
    ``argmax``), 245-249 (reward ``correct_len.sum() / (bandit_end -
    bandit_start)``, the round's accepted + bonus tokens per second of wall
    time; running mean per arm); ``inference_length.py`` line 80 (one call per
    prompt, ``max_gen_len=256``). The paper's algorithm box was not available
    here; this follows the code.
    """

    name: ClassVar[str] = "naive-ucb"

    def __init__(self, scenario: ScenarioConfig, n_runs: int = 1, seed: int | None = 0,
                 c: float = 6.0, n_arms: int | None = 4, bonus: str = "total", normalise: bool = False,
                 per_request: bool = True, **params: Any) -> None:
        super().__init__(scenario, n_runs, seed, **params)
        bad = isinstance(c, bool)
        try:
            cf = float(c)
        except (TypeError, ValueError):
            bad = True
            cf = math.nan
        if bad or not math.isfinite(cf) or cf < 0.0:
            raise ValueError(f"c must be a finite number >= 0, got {c!r}")
        if n_arms is not None and (isinstance(n_arms, bool) or not isinstance(n_arms, (int, np.integer))
                                   or int(n_arms) < 1):
            raise ValueError(f"n_arms must be an integer >= 1 or None, got {n_arms!r}")
        if bonus not in BONUS_KINDS:
            raise ValueError(f"bonus must be one of {', '.join(BONUS_KINDS)}, got {bonus!r}")
        for pname, v in (("normalise", normalise), ("per_request", per_request)):
            if not isinstance(v, (bool, np.bool_)):
                raise ValueError(f"{pname} must be true or false, got {v!r}")
        self.c = cf
        self.n_arms = None if n_arms is None else int(n_arms)
        self.arms = self.max_draft if n_arms is None else min(int(n_arms), self.max_draft)
        self.bonus = bonus
        self.normalise = bool(normalise)
        self.per_request = bool(per_request)
        self.pulls = np.zeros((self.n_runs, self.arms))
        self.reward_sum = np.zeros((self.n_runs, self.arms))
        self.reward_max = np.zeros(self.n_runs)

    def reset(self) -> None:
        super().reset()
        self._forget(np.arange(self.n_runs))

    def _forget(self, rows: np.ndarray) -> None:
        self.pulls[rows] = 0.0
        self.reward_sum[rows] = 0.0
        self.reward_max[rows] = 0.0

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "c": self.c, "n_arms": self.n_arms, "bonus": self.bonus,
                "normalise": self.normalise, "per_request": self.per_request}

    def index(self, rows: np.ndarray) -> np.ndarray:
        """UCB index per run in ``rows`` and arm, shape ``(len(rows), K)``; ``-inf`` for an untried arm.

        ``t`` is the index of the round about to be played (rounds finished + 1).
        """
        n = self.pulls[rows]
        t = n.sum(axis=1, keepdims=True) + 1.0
        tried = n > 0
        mean = self.reward_sum[rows] / np.where(tried, n, 1.0)
        if self.normalise:
            mean = mean / np.where(self.reward_max[rows] > 0, self.reward_max[rows], 1.0)[:, None]
        denom = n.sum(axis=1, keepdims=True) if self.bonus == "total" else n
        bonus = np.sqrt(self.c * np.log(t) / np.maximum(denom, 1.0))
        return np.where(tried, mean + bonus, -np.inf)

    def choose_k(self, ctx: RoundContext) -> np.ndarray:
        rows = np.asarray(ctx.rows)
        if self.per_request:
            fresh = np.asarray(ctx.tokens_left) >= self.scenario.n_tokens
            if fresh.any():
                self._forget(rows[fresh])
        t = self.pulls[rows].sum(axis=1).astype(np.int64) + 1
        warm = t < 2 * self.arms
        k = np.argmax(self.index(rows), axis=1) + 1  # first maximum, as torch.argmax
        k = np.where(warm, (t - 1) % self.arms + 1, k)
        return k.astype(np.int64)

    def update(self, feedback: RoundFeedback) -> None:
        rows = np.asarray(feedback.rows)
        k = np.asarray(feedback.k, dtype=np.int64)
        x = np.asarray(feedback.tokens, dtype=np.float64) / np.asarray(feedback.round_ms, dtype=np.float64) * 1000.0
        if (k < 1).any() or (k > self.arms).any():
            raise ValueError(f"naive-ucb got feedback for draft lengths {k!r} outside its arms 1..{self.arms}")
        arm = k - 1
        self.pulls[rows, arm] += 1.0
        self.reward_sum[rows, arm] += x
        self.reward_max[rows] = np.maximum(self.reward_max[rows], x)
