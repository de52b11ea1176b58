"""``delay-aware-stop``: SpecDec++'s per-token stop with the threshold derived from the delay (SPEC 4)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from specstop_gym.core.config import ScenarioConfig
from specstop_gym.signal_oracle import LatentSignalModel, dinkelbach_lambda, prefix_acceptance

from .base import RoundFeedback, TokenContext, _subset
from .ucb_specstop import UCBSpecStop

__all__ = ["DelayAwareStop", "fit_latent_signal"]

_LOGIT_CLIP = 40.0
_SPLITS = np.linspace(0.0, 1.0, 11)


class _FittedModel(LatentSignalModel):
    """A fitted :class:`LatentSignalModel` whose quadrature nodes are computed once (the agent asks it
    for one posterior per drafted token; recomputing the Gauss-Hermite nodes dominated that cost)."""

    def _args(self) -> tuple:
        cached = self.__dict__.get("_cached_args")
        if cached is None:
            cached = super()._args()
            object.__setattr__(self, "_cached_args", cached)
        return cached


def _logit(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.clip(np.log(q) - np.log1p(-q), -_LOGIT_CLIP, _LOGIT_CLIP)


def _fit_confidences(x: np.ndarray, obs: np.ndarray) -> tuple[np.ndarray, float, float]:
    """ML of ``x_ri = l_i + z_r + e_ri`` (``z ~ N(0, tau^2)``, ``e ~ N(0, s^2)``) on the observed cells.

    With ``rho = tau^2 / (tau^2 + s^2)`` fixed, the means are the GLS solution and the total variance
    has a closed form, so the likelihood is profiled onto ``rho`` and maximised by a bounded scalar
    search (direct, so a ``tau^2`` at the boundary 0 is reached, which EM approaches only slowly).
    Returns ``(l, tau^2, s^2)``; positions never observed take the last observed ``l``.
    """
    from scipy.optimize import minimize_scalar

    kmax = x.shape[1]
    m = obs.astype(np.float64)
    kk = m.sum(axis=1)
    xm = np.where(obs, x, 0.0)
    n_obs = float(kk.sum())
    cols = np.flatnonzero(m.sum(axis=0) > 0)
    rowsum = xm.sum(axis=1)

    def solve(rho: float) -> tuple[float, np.ndarray]:
        c = rho / (1.0 - rho + kk * rho)  # W_r = I - c_r J on the round's observed cells
        a = np.diag(m.sum(axis=0)) - (m * c[:, None]).T @ m
        b = xm.sum(axis=0) - (m * (c * rowsum)[:, None]).sum(axis=0)
        lv = np.zeros(kmax)
        lv[cols] = np.linalg.solve(a[np.ix_(cols, cols)], b[cols])
        e = np.where(obs, x - lv[None, :], 0.0)
        quad = float(((e * e).sum(axis=1) - c * e.sum(axis=1) ** 2).sum())
        v = max(quad / ((1.0 - rho) * n_obs), 1e-12)
        nll = 0.5 * (n_obs * math.log(v) + float(((kk - 1.0) * math.log(1.0 - rho)).sum())
                     + float(np.log(1.0 - rho + kk * rho).sum()) + n_obs)
        return nll, lv

    res = minimize_scalar(lambda r: solve(r)[0], bounds=(0.0, 0.99), method="bounded",
                          options={"xatol": 1e-5})
    rho = float(res.x)
    nll0, _ = solve(0.0)
    if nll0 <= res.fun:  # the boundary itself (no shared difficulty)
        rho = 0.0
    _, l = solve(rho)
    e = np.where(obs, x - l[None, :], 0.0)
    c = rho / (1.0 - rho + kk * rho)
    v = max(float(((e * e).sum(axis=1) - c * e.sum(axis=1) ** 2).sum()) / ((1.0 - rho) * n_obs), 1e-12)
    for i in range(kmax):  # extend past the last observed position
        if i not in cols:
            prev = cols[cols < i]
            l[i] = l[prev[-1]] if prev.size else 0.0
    return l, rho * v, (1.0 - rho) * v


def fit_latent_signal(x: np.ndarray, k: np.ndarray, accepted: np.ndarray, *, z_nodes: int = 8,
                      eps_nodes: int = 4, fallback_logit: np.ndarray | None = None,
                      min_obs: int = 10) -> dict[str, Any]:
    """Maximum-likelihood parameters of the latent-difficulty signal model from censored rounds.

    Args:
        x: ``(R, K)`` logit confidences of the drafted tokens (only the first ``k[r]`` of row ``r`` are read).
        k: ``(R,)`` draft lengths (>= 1); accepted: ``(R,)`` accepted counts ``A <= k``.

    The model (SPEC 2; :mod:`specstop_gym.signal_oracle`): ``x_ri = l_i + z_r + eps_ri + sigma xi_ri``,
    token ``i`` accepted given its prefix with probability ``sigmoid(l_i + z_r + eps_ri)``.

    1. ``l_i``, ``tau^2`` and ``s^2 = eps_sigma^2 + sigma^2`` from the confidences alone: a Gaussian
       random-intercept model (per-round ``z_r``), maximum likelihood profiled onto
       ``tau^2 / (tau^2 + s^2)`` (:func:`_fit_confidences`). The draft length depends only on
       confidences already seen (the stopping rule), so the unobserved tail of a round is missing
       at random and the likelihood of the observed prefixes is the right one (Rubin 1976).
       Positions observed fewer than ``min_obs`` times take ``fallback_logit`` (the agent passes
       the logit of its censored acceptance estimate, which keeps every round) when given, else the
       value of the last observed position.
    2. The split ``eps_sigma^2 = b s^2`` (how much of a confidence's own deviation is the token's
       own difficulty, which decides *its* acceptance, rather than read-out noise) from the
       acceptance outcomes: ``b`` in ``0, 0.1, ..., 1`` maximising the censored likelihood
       ``prod_r P(A_r | x_r)``, ``P(A = a | x) = P_a - P_{a+1}`` (``a < k``) or ``P_k`` (``a = k``),
       ``P_j`` the posterior probability that tokens ``1..j`` are accepted
       (:func:`specstop_gym.signal_oracle.prefix_acceptance`).

    Returns ``{"logit_a", "tau", "eps_sigma", "signal_sigma", "split", "loglik"}``.
    """
    x = np.asarray(x, dtype=np.float64)
    k = np.asarray(k, dtype=np.int64)
    acc = np.asarray(accepted, dtype=np.int64)
    r, kmax = x.shape
    if r == 0 or k.shape != (r,) or acc.shape != (r,) or (k < 1).any() or (k > kmax).any() or (acc > k).any():
        raise ValueError("fit_latent_signal: x (R, K), k in 1..K and accepted <= k per round")
    obs = np.arange(kmax)[None, :] < k[:, None]
    l, tau2, s2 = _fit_confidences(x, obs)
    if fallback_logit is not None:
        few = obs.sum(axis=0) < min_obs
        l = np.where(few, np.asarray(fallback_logit, dtype=np.float64), l)
    y = x - l[None, :]
    best: dict[str, Any] | None = None
    tau = math.sqrt(tau2)
    for b in _SPLITS:
        model = LatentSignalModel(l, tau, math.sqrt(b * s2), math.sqrt((1.0 - b) * s2), z_nodes=z_nodes,
                                  eps_nodes=eps_nodes)
        p = prefix_acceptance(model, np.where(obs, y, 0.0), k)
        p_ext = np.concatenate([np.ones((r, 1)), p, np.zeros((r, 1))], axis=1)  # P_0 .. P_K, P_{K+1} = 0
        idx = np.arange(r)
        prob = np.where(acc < k, p_ext[idx, acc] - p_ext[idx, acc + 1], p_ext[idx, acc])
        ll = float(np.log(np.maximum(prob, 1e-300)).sum())
        if best is None or ll > best["loglik"]:
            best = {"logit_a": l.copy(), "tau": tau, "eps_sigma": math.sqrt(b * s2),
                    "signal_sigma": math.sqrt((1.0 - b) * s2), "split": float(b), "loglik": ll}
    assert best is not None
    return best


class DelayAwareStop(UCBSpecStop):
    """``delay-aware-stop``: stop drafting when the next token is not worth its time, at this delay.

    Rule (token level, with a confidence signal), after drafting ``j`` tokens with confidences
    ``q_1..q_j`` (SPEC 4, last paragraph):

        draft token j + 1  iff  j < K  and  lam_hat * P(tokens 1..j+1 all accepted | q_1..q_j) > c_hat,

    i.e. SpecDec++'s rule (stop once the draft is probably wrong) with its threshold derived from
    the delay instead of tuned once. Drafting one more token costs ``c_hat`` ms and earns one
    token worth ``lam_hat`` ms exactly when the whole prefix survives; ``lam_hat`` is the
    per-token latency the policy achieves (Dinkelbach's fixed point: at ``lam = rho*`` the rule
    maximises ``E[lam (A + 1) - T]``), so a longer delay raises ``lam_hat`` and the draft.

    What it learns, per run (nothing is read from the scenario but ``draft_ms`` and
    ``verify_per_token_ms``, the nominal cost prior shared with ``ucb-specstop``):

    * ``P(1..j+1 accepted | q)``: the exact posterior of the latent-difficulty model
      (:func:`specstop_gym.signal_oracle.prefix_acceptance`, the machinery of the oracle) with
      parameters fitted by :func:`fit_latent_signal` on the run's last ``memory`` rounds:
      per-position logits, difficulty spread and signal noise from the confidences, the split of
      the confidence's noise into token difficulty and read-out noise from the censored
      acceptance outcomes. Refitted after ``warmup`` rounds, then at doubling round counts up to
      every ``refit_every`` rounds. On profile or geometric acceptance the fit finds a confidence
      that carries no information about acceptance (no shared difficulty, split 0), and the rule
      becomes the round-level threshold rule on the learnt ``S_i``.
    * ``c_hat``, ``verify_base_hat``, the delay (segment mean with CUSUM change detection): as
      ``ucb-specstop``; ``B_hat = rtt_hat + verify_base_hat``.
    * ``lam_hat``: Dinkelbach's fixed point of the rule on the fitted model at ``(c_hat, B_hat)``
      (:func:`specstop_gym.signal_oracle.dinkelbach_lambda`, ``lam_rounds`` simulated rounds from a
      generator seeded by the agent's seed), recomputed at each refit and whenever ``B_hat`` has
      moved by more than 5% since (a new delay segment).

    Before the first fit, at the round level, and without a signal (NaN confidence) it plans ``k``
    at the first position with ``ucb-specstop``'s rule (optimistic survival, threshold rule), which
    also explores the deep positions the fit needs. Within a round the mode chosen at position 1
    is kept.

    Parameters: those of ``ucb-specstop`` (for the fallback and the delay), and

    * ``warmup`` (int >= 2, default 32): rounds before the first fit;
    * ``refit_every`` (int >= 1, default 256): largest number of rounds between fits;
    * ``memory`` (int >= 16, default 4096): rounds kept for the fit (the most recent); positions
      with fewer than 10 confidences among them use the logit of the censored acceptance estimate;
    * ``lam_rounds`` (int >= 50, default 1000): simulated rounds per Dinkelbach iteration.

    Source: SPEC 4 (the sequential stopping rule with a delay-derived threshold); SpecDec++ (Huang,
    Guo and Wang, arXiv 2405.19715: stop when ``P(some drafted token is rejected)`` exceeds a
    tuned threshold); Dinkelbach (1967) for the ratio objective; the posterior of
    :mod:`specstop_gym.signal_oracle` (the token-level oracle, with known parameters).
    """

    name: ClassVar[str] = "delay-aware-stop"

    def __init__(self, scenario: ScenarioConfig, n_runs: int = 1, seed: int | None = 0, warmup: int = 32,
                 refit_every: int = 256, memory: int = 4096, lam_rounds: int = 1000, **params: Any) -> None:
        super().__init__(scenario, n_runs, seed, **params)
        for pname, v, lo in (("warmup", warmup, 2), ("refit_every", refit_every, 1), ("memory", memory, 16),
                             ("lam_rounds", lam_rounds, 50)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"{pname} must be an integer >= {lo}, got {v!r}")
        self.warmup = int(warmup)
        self.refit_every = int(refit_every)
        self.memory = int(memory)
        self.lam_rounds = int(lam_rounds)
        self._alloc()

    def _alloc(self) -> None:
        n, kmax = self.n_runs, self.max_draft
        self._cur = np.zeros((n, kmax))  # logit confidences of the current round
        self._has_conf = np.zeros(n, bool)  # the current round showed confidences
        self._signal_round = np.zeros(n, bool)  # the current round follows the signal rule
        self._x = np.zeros((n, self.memory, kmax))
        self._k = np.zeros((n, self.memory), np.int64)
        self._a = np.zeros((n, self.memory), np.int64)
        self._stored = np.zeros(n, np.int64)  # rounds stored so far (ring position = stored % memory)
        self._next_fit = np.full(n, self.warmup, np.int64)
        self._models: list[LatentSignalModel | None] = [None] * n
        self._fits: list[dict[str, Any] | None] = [None] * n
        self._lam = np.full(n, np.nan)
        self._lam_b = np.full(n, np.nan)  # B_hat at which lam was computed
        self.fits = 0

    def reset(self) -> None:
        super().reset()
        self._alloc()

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(name=self.name, warmup=self.warmup, refit_every=self.refit_every, memory=self.memory,
                 lam_rounds=self.lam_rounds)
        return d

    def fitted(self, row: int) -> dict[str, Any] | None:
        """The last fit of run ``row`` (:func:`fit_latent_signal`'s dict plus ``lam``), or None."""
        f = self._fits[row]
        return None if f is None else {**f, "lam": float(self._lam[row])}

    # ----------------------------------------------------------------- policy
    def _fixed_cost(self, rows: np.ndarray, last_rtt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c_hat, vb_hat = self.cost_estimates(rows)
        return c_hat, self.delay.estimate(rows, last_rtt) + vb_hat

    def _lam_for(self, row: int, c_hat: float, b_hat: float) -> float:
        model = self._models[row]
        assert model is not None
        old_b = self._lam_b[row]
        if not math.isfinite(self._lam[row]) or not math.isfinite(old_b) or abs(b_hat - old_b) > 0.05 * old_b:
            seed = int(np.random.SeedSequence([0 if self.seed is None else int(self.seed), row,
                                               int(self._stored[row])]).generate_state(1)[0])
            start = float(self._lam[row]) if math.isfinite(self._lam[row]) else None
            self._lam[row] = dinkelbach_lambda(model, cost_ms=c_hat, fixed_cost_ms=b_hat, rounds=self.lam_rounds,
                                               seed=seed, start=start)["lam"]
            self._lam_b[row] = b_hat
        return float(self._lam[row])

    def should_stop(self, ctx: TokenContext) -> np.ndarray:
        rows = np.asarray(ctx.rows)
        pos = np.asarray(ctx.position, dtype=np.int64)
        conf = np.asarray(ctx.confidence, dtype=np.float64)
        seen = np.isfinite(conf)
        if seen.any():  # every round with a signal feeds the fit, planned or not
            self._cur[rows[seen], pos[seen] - 1] = _logit(conf[seen])
            self._has_conf[rows[seen]] = True
        first = pos == 1
        if first.any():
            r1 = rows[first]
            self._signal_round[r1] = np.isfinite(conf[first]) & np.array([self._models[r] is not None for r in r1],
                                                                           dtype=bool)
        sig = self._signal_round[rows]
        stop = np.zeros(len(rows), dtype=bool)
        if (~sig).any():
            sub = _subset(ctx, ~sig)
            stop[~sig] = super().should_stop(sub)
        if sig.any():
            idx = np.flatnonzero(sig)
            r = rows[idx]
            c_hat, b_hat = self._fixed_cost(r, np.asarray(ctx.last_rtt_ms)[idx])
            for j, row in enumerate(r):
                model = self._models[row]
                assert model is not None
                lam = self._lam_for(int(row), float(c_hat[j]), float(b_hat[j]))
                p_j = int(pos[idx[j]])
                if p_j >= self.max_draft:
                    stop[idx[j]] = True
                    continue
                y = (self._cur[row] - model.logit_a)[None, :]
                prefix = prefix_acceptance(model, y, np.array([p_j]), upto=p_j + 1)[0, p_j]
                stop[idx[j]] = not (lam * prefix > float(c_hat[j]))
        return stop

    def update(self, feedback: RoundFeedback) -> None:
        super().update(feedback)
        rows = np.asarray(feedback.rows)
        k = np.asarray(feedback.k, dtype=np.int64)
        a = np.asarray(feedback.accepted, dtype=np.int64)
        has = self._has_conf[rows]
        for j, row in enumerate(rows):
            if not has[j]:
                continue
            slot = int(self._stored[row] % self.memory)
            self._x[row, slot] = self._cur[row]
            self._k[row, slot] = k[j]
            self._a[row, slot] = a[j]
            self._stored[row] += 1
            if self._stored[row] >= self._next_fit[row]:
                self._refit(int(row))
        self._cur[rows] = 0.0
        self._has_conf[rows] = False
        self._signal_round[rows] = False

    def _refit(self, row: int) -> None:
        n = int(min(self._stored[row], self.memory))
        fallback = np.log(self.acceptance.mean(np.array([row]))[0]) - np.log1p(-self.acceptance.mean(np.array([row]))[0])
        fit = fit_latent_signal(self._x[row, :n], self._k[row, :n], self._a[row, :n], fallback_logit=fallback)
        self._fits[row] = fit
        self._models[row] = _FittedModel(fit["logit_a"], fit["tau"], fit["eps_sigma"], fit["signal_sigma"],
                                         z_nodes=8, eps_nodes=4)
        self._lam[row] = np.nan
        self._lam_b[row] = np.nan
        self.fits += 1
        self._next_fit[row] = self._stored[row] + min(max(int(self._stored[row]), 1), self.refit_every)

