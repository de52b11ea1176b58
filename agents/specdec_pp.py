"""SpecDec++: stop when the draft is probably already wrong (SPEC 6)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from specstop_gym.core.config import ScenarioConfig

from .base import Agent, RoundContext, RoundFeedback, TokenContext
from .ucb_specstop import CensoredAcceptance

__all__ = ["SpecDecPP"]


class SpecDecPP(Agent):
    """``specdec++``: stop drafting once ``P(some drafted token is rejected) > threshold``.

    Rule (as the public SpecDec++ code does it). Let ``q_j`` be the predicted
    acceptance probability of drafted token ``j``. After drafting token ``i``
    (``i = 1, 2, ...``) the agent holds the running product of the tokens
    drafted *before* it,

        P_i = prod_{j < i} q_j        (P_1 = 1),

    and stops when ``1 - P_i > threshold`` (strict), within the bound
    ``lo <= i <= hi`` (``lo = min(min_len, max_draft)``, ``hi = min(max_len,
    max_draft)``): never before ``lo`` drafted tokens, always at ``hi``. The
    product keeps accumulating below ``lo``. Token ``i``'s own ``q_i`` enters
    only at step ``i + 1``: in the original, the acceptance head runs on the
    hidden state of the last *input* token of the draft model's forward pass,
    which at step ``i`` is drafted token ``i - 1`` (at step 1 the last verified
    token, which counts as accepted: factor 1).

    * Token level with a signal (``ctx.confidence`` finite): ``q_j`` is the
      scenario's confidence signal at position ``j`` (the role of SpecDec++'s
      trained acceptance head).
    * Without a signal (``ctx.confidence`` NaN) and at the round level: the
      public code has no such mode (its ``"ada"`` schedule asserts that an
      acceptance head is given). Here ``q_j`` is then the learned conditional
      acceptance ``a_hat_j``, the Beta(1, 1) posterior mean from censored round
      outcomes (:class:`~agents.ucb_specstop.CensoredAcceptance`: a round with
      ``A < k`` reveals positions ``1..A+1``, one with ``A = k`` positions
      ``1..k``), so the round-level draft is ``k = min(hi, first i >= lo with
      1 - prod_{j<i} a_hat_j > threshold)`` (``hi`` if there is none), the
      same length the token rule drafts with NaN confidences.

    On geometric acceptance every ``P_i`` has ``i - 1`` equal factors, so the
    index of the factors does not matter; on a heavy head it does (on
    ``llama-heavy-head``, ``a = (0.70, 0.28, 0.28, ...)``, threshold 0.7: ``1 -
    P_2 = 0.30``, ``1 - P_3 = 0.804``, so it drafts 3).

    Delay-blind: the threshold is tuned once and does not move with the rtt
    (SPEC 4 derives the delay-optimal threshold instead). docs/agents.md has
    a table of thresholds against per-token latency on the ``--paper`` delay
    grid and the command to tune it (``specdec++:threshold=...``).

    Parameters:
        threshold (float, default 0.7): stopping threshold in [0, 1]; a larger
            threshold drafts longer. 0.7 is the released example's value
            (``specdec_pp/sample.py`` line 42); the README's benchmark command
            uses 0.3.
        min_len (int, default 2): shortest draft (>= 1); ``--bound 2 20``.
        max_len (int, default 20): longest draft (>= min_len); both are
            intersected with ``1..max_draft``.

    Source: SpecDec++ (Huang, Guo and Wang, arXiv 2405.19715), repository
    Kaffaljidhmah2/SpecDec_pp at commit 9c52edcfe3542fde89be4623840843a8925dee06:
    ``specdec_pp/hf_generation.py`` line 621 (``cum_acc_prob = 1.`` per round),
    696 (``assist_steps += 1`` after each drafted token), 705 (the head on
    ``hidden_states[-1][0, -1]``, the last input position), 715-722 (step 1:
    ``acc_prob = 1``; else the head's probability; ``cum_acc_prob *=
    acc_prob``; stop if ``1 - cum_acc_prob > stop_threshold``), 725-731 (bound:
    stop at ``assist_steps >= max``, never below ``min``); the head is trained
    to predict the acceptance of the token at its input position
    (``specdec_pp/train.py`` lines 176-184: labels aligned with the drafted
    input ids); defaults ``stop_threshold = 0.7``, ``bound = (2, 20)``
    (``specdec_pp/sample.py`` lines 42-43).
    """

    name: ClassVar[str] = "specdec++"

    def __init__(self, scenario: ScenarioConfig, n_runs: int = 1, seed: int | None = 0,
                 threshold: float = 0.7, min_len: int = 2, max_len: int = 20, **params: Any) -> None:
        super().__init__(scenario, n_runs, seed, **params)
        if isinstance(threshold, bool):
            raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
        try:
            thr = float(threshold)
        except (TypeError, ValueError):
            raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}") from None
        if not (0.0 <= thr <= 1.0) or math.isnan(thr):
            raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
        for pname, v in (("min_len", min_len), ("max_len", max_len)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 1:
                raise ValueError(f"{pname} must be an integer >= 1, got {v!r}")
        if int(max_len) < int(min_len):
            raise ValueError(f"max_len must be >= min_len ({min_len}), got {max_len!r}")
        self.threshold = thr
        self.min_len = int(min_len)
        self.max_len = int(max_len)
        self.lo = min(self.min_len, self.max_draft)
        self.hi = min(self.max_len, self.max_draft)
        self.acceptance = CensoredAcceptance(self.n_runs, self.max_draft)
        self._prod = np.ones(self.n_runs)

    def reset(self) -> None:
        super().reset()
        self.acceptance.reset()
        self._prod[:] = 1.0

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "threshold": self.threshold, "min_len": self.min_len,
                "max_len": self.max_len}

    # ----------------------------------------------------------------- policy
    def _stop(self, position: np.ndarray, prod: np.ndarray) -> np.ndarray:
        return (position >= self.hi) | ((position >= self.lo) & (1.0 - prod > self.threshold))

    def choose_k(self, ctx: RoundContext) -> np.ndarray:
        rows = np.asarray(ctx.rows)
        a_hat = self.acceptance.mean(rows)
        before = np.ones_like(a_hat)
        before[:, 1:] = np.cumprod(a_hat[:, :-1], axis=1)  # P_i = prod_{j<i} a_hat_j
        positions = np.arange(1, self.max_draft + 1)[None, :]
        stop = self._stop(positions, before)  # True at least at position hi
        return (np.argmax(stop, axis=1) + 1).astype(np.int64)

    def should_stop(self, ctx: TokenContext) -> np.ndarray:
        rows = np.asarray(ctx.rows)
        pos = np.asarray(ctx.position, dtype=np.int64)
        conf = np.asarray(ctx.confidence, dtype=np.float64)
        idx = np.clip(pos - 1, 0, self.max_draft - 1)
        a_hat = self.acceptance.mean(rows)[np.arange(len(rows)), idx]
        q = np.where(np.isfinite(conf), conf, a_hat)  # q_i of the token just drafted
        before = np.where(pos <= 1, 1.0, self._prod[rows])  # P_i = prod_{j<i} q_j
        self._prod[rows] = before * q  # prod_{j<=i} q_j, the P of the next step
        return self._stop(pos, before)

    def update(self, feedback: RoundFeedback) -> None:
        self.acceptance.update(np.asarray(feedback.rows), feedback.k, feedback.accepted)
