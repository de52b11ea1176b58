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

    Rule. Let ``q_i`` be the predicted acceptance probability of drafted token
    ``i``. After drafting token ``i`` the agent holds the running product
    ``P_i = prod_{j=2..i} q_j`` (the first drafted token counts as accepted, so
    ``P_1 = 1``) and stops when ``1 - P_i > threshold``, within the clamp
    ``lo <= k <= hi`` with ``lo = min(min_len, max_draft)`` and
    ``hi = min(max_len, max_draft)``: it never stops before ``lo`` drafted
    tokens and always stops at ``hi``.

    * Token level with a signal (``ctx.confidence`` finite): ``q_i`` is the
      scenario's confidence signal (the role of SpecDec++'s trained acceptance
      head).
    * Without a signal (``ctx.confidence`` NaN) and at the round level: ``q_i``
      is replaced by the learned conditional acceptance ``a_hat_i``, the
      Beta(1, 1) posterior mean from censored round outcomes
      (:class:`~agents.ucb_specstop.CensoredAcceptance`: a round with ``A < k``
      reveals positions ``1..A+1``, one with ``A = k`` positions ``1..k``). The
      round-level draft is ``k = min(hi, max(lo, first i with 1 - prod_{j=2..i}
      a_hat_j > threshold))`` (``hi`` if there is none).

    Delay-blind: the threshold is tuned once and does not move with the rtt
    (SPEC 4 derives the delay-optimal threshold instead).

    Parameters:
        threshold (float, default 0.7): stopping threshold in [0, 1]; 0.7 is the
            released example's value, the README benchmark uses 0.3.
        min_len (int, default 2): shortest draft (>= 1).
        max_len (int, default 20): longest draft (>= min_len); both are
            intersected with ``1..max_draft``.

    Source: SpecDec++ (Huang, Guo and Wang, arXiv 2405.19715), repository
    Kaffaljidhmah2/SpecDec_pp; see ../shared/CALIBRATION.md "Baseline stopping
    rules".
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
        prod = np.ones_like(a_hat)
        prod[:, 1:] = np.cumprod(a_hat[:, 1:], axis=1)  # P_i = prod_{j=2..i} a_hat_j
        positions = np.arange(1, self.max_draft + 1)[None, :]
        stop = self._stop(positions, prod)  # True at least at position hi
        return (np.argmax(stop, axis=1) + 1).astype(np.int64)

    def should_stop(self, ctx: TokenContext) -> np.ndarray:
        rows = np.asarray(ctx.rows)
        pos = np.asarray(ctx.position, dtype=np.int64)
        conf = np.asarray(ctx.confidence, dtype=np.float64)
        idx = np.clip(pos - 1, 0, self.max_draft - 1)
        a_hat = self.acceptance.mean(rows)[np.arange(len(rows)), idx]
        q = np.where(np.isfinite(conf), conf, a_hat)
        prod = np.where(pos <= 1, 1.0, self._prod[rows] * q)
        self._prod[rows] = prod
        return self._stop(pos, prod)

    def update(self, feedback: RoundFeedback) -> None:
        self.acceptance.update(np.asarray(feedback.rows), feedback.k, feedback.accepted)
