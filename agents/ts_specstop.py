"""Thompson sampling over the per-position acceptance, with the oracle's threshold rule (``ts-specstop``)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from specstop_gym.core.config import ScenarioConfig

from .ucb_specstop import UCBSpecStop

__all__ = ["TSSpecStop"]


class TSSpecStop(UCBSpecStop):
    """``ts-specstop``: ``ucb-specstop`` with a posterior sample in place of the optimistic survival.

    Rule (per run, at the start of each round):

    1. **Posterior.** The censored likelihood factorises over positions
       (:mod:`agents.confidence`), so with independent uniform priors the posterior of the
       conditional acceptance is a product of Betas:
       ``a_j ~ Beta(1 + acc_j, 1 + n_j - acc_j)`` (``n_j`` rounds observed position ``j``,
       ``acc_j`` accepted it; :class:`~agents.ucb_specstop.CensoredAcceptance`).
    2. **Sample.** Draw ``a_1..a_K`` from it with the agent's own generator (``self.rng``,
       seeded from ``seed``), ``S_i = prod_{j<=i} a_j``.
    3. **Decide** as the oracle would if the sample were the truth:
       ``k = argmin_k (k c_hat + B_hat) / (1 + sum_{i<=k} S_i)``, with the cost and delay
       estimates of ``ucb-specstop`` (least-squares compute costs, segment mean rtt with
       CUSUM change detection).

    A position never observed is Uniform(0, 1) under the posterior, so long drafts are tried
    with the probability that they are optimal under the posterior ("probability matching",
    Thompson 1933), instead of with certainty as under the upper bound. The draws of one call
    are made in a fixed order (rows as given, positions 1..K), so a run repeats itself exactly
    after ``reset()``; they do depend on which rows are asked together (a batched run is not
    the same random sequence as runs one at a time).

    Parameters: ``change_threshold`` (default 8), ``change_allowance`` (default 0.5) and
    ``discount`` (default 1: no forgetting), as for ``ucb-specstop``. (Its ``bound``,
    ``level``, ``level_c`` and ``beta`` are accepted and ignored.)

    Source: Thompson sampling (Thompson, Biometrika 1933; Agrawal and Goyal 2012 for
    Bernoulli bandits; Russo et al., "A Tutorial on Thompson Sampling", 2018) on the structured
    model of SPEC 4 (the posterior is over the acceptance profile, not over the arms, so one
    round informs every draft length, as in ``ucb-specstop``).
    """

    name: ClassVar[str] = "ts-specstop"

    def __init__(self, scenario: ScenarioConfig, n_runs: int = 1, seed: int | None = 0, **params: Any) -> None:
        super().__init__(scenario, n_runs, seed, **params)

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "change_threshold": self.change_threshold,
                             "change_allowance": self.change_allowance}
        if self.discount < 1.0:
            d["discount"] = self.discount
        if self.window is not None:
            d["window"] = self.window
        return d

    def posterior_sample(self, rows: np.ndarray) -> np.ndarray:
        """One draw of ``a_1..a_K`` per run in ``rows`` from the Beta posterior, shape ``(len(rows), K)``."""
        acc = self.acceptance.acc[rows]
        n = self.acceptance.n[rows]
        return self.rng.beta(1.0 + acc, 1.0 + n - acc)

    def survival_for_decision(self, rows: np.ndarray) -> np.ndarray:
        return np.cumprod(self.posterior_sample(rows), axis=1)
