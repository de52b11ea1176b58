"""Stopping on a draft-confidence signal with the exact posterior (SPEC 4, last paragraph).

With a confidence signal the stopping problem is sequential: after drafting ``j`` tokens and
seeing their confidences, draft another or send. SPEC 4's rule, with the exact posterior and a
threshold derived from the delay instead of tuned once:

    continue  iff  lam * P(tokens 1..j+1 all accepted | signals of 1..j) > c,

``c`` the marginal cost of a drafted token (ms) and ``lam`` the value of a token (ms/token):
the policy's own long-run per-token latency (Dinkelbach's fixed point, :func:`dinkelbach_lambda`).
This module gives the posterior for the latent-difficulty acceptance model (with known or
learned parameters), the rule, its fixed point, and a two-step lookahead to measure what the
one-step rule leaves (docs/model.md). All times in ms.

The model (:class:`~specstop_gym.core.acceptance.LatentDifficultyAcceptance` and the
simulator's confidence signal, :mod:`specstop_gym.core.kernels`)
------------------------------------------------------------------------------------------
A round has a difficulty ``z ~ N(0, tau^2)``; token ``i`` has ``eps_i ~ N(0, sigma_e^2)`` and is
accepted (given its prefix) with probability ``sigmoid(l_i + z + eps_i)``, ``l_i = logit a_i``.
Its confidence is ``q_i = sigmoid(l_i + z + eps_i + sigma xi_i)``, ``xi_i ~ N(0, 1)``, so the
observation ``y_i = logit q_i - l_i = z + eps_i + sigma xi_i``.

The posterior (exact, conjugate)
--------------------------------
Given ``y_1..y_m``: ``z ~ N(mu, 1/P)`` with ``P = 1/tau^2 + m/s^2``, ``mu = (sum y) / (s^2 P)``,
``s^2 = sigma_e^2 + sigma^2``; and given ``z``, independently,
``eps_l ~ N(beta (y_l - z), v)``, ``beta = sigma_e^2 / s^2``, ``v = sigma_e^2 sigma^2 / s^2``. Hence

    P(tokens 1..i accepted | y_1..y_m) = E_z[ prod_{l<=i} psi_l(z) ],
    psi_l(z) = E[sigmoid(l_l + z + eps_l) | z, y_l]   (l <= m; prior eps for l > m),

a 1-D integral over ``z`` (Gauss-Hermite, ``z_nodes`` nodes, around the posterior) of products
of 1-D Gaussian-logistic integrals (Gauss-Hermite, ``eps_nodes`` nodes).

Profile and geometric acceptance have no latent variable: there the confidence is
``sigmoid(l_i + sigma xi_i)``, noise around a constant, independent of the acceptance draw
(``kernels.confidence``), and carries no information; the stopping rule is then the planned
``k`` of the round-level oracle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

__all__ = ["LatentSignalModel", "dinkelbach_lambda", "observation_from_confidence", "prefix_acceptance",
           "should_continue"]

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}
#: logit clip of the simulator (kernels.LOGIT_CLIP): confidences at 0 or 1 map to +-40.
_LOGIT_CLIP = 40.0


@dataclass(frozen=True, eq=False)
class LatentSignalModel:
    """Parameters of the latent-difficulty acceptance model and of its confidence signal.

    Attributes:
        logit_a: ``logit a_i`` for positions ``1..K`` (the base profile, extended to K).
        tau: std of the per-round difficulty ``z`` (logit scale), >= 0.
        eps_sigma: std of the per-token noise ``eps_i`` (logit scale), >= 0.
        signal_sigma: std of the confidence's logit noise ``sigma``, >= 0.
        z_nodes, eps_nodes: Gauss-Hermite nodes of the two quadratures.
    """

    logit_a: np.ndarray
    tau: float
    eps_sigma: float
    signal_sigma: float
    z_nodes: int = 16
    eps_nodes: int = 8

    def __post_init__(self) -> None:
        la = np.array(self.logit_a, dtype=np.float64).reshape(-1)
        if la.size == 0 or not np.isfinite(la).all():
            raise ValueError("logit_a must be a non-empty array of finite numbers")
        for name in ("tau", "eps_sigma", "signal_sigma"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float, np.floating)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        for name in ("z_nodes", "eps_nodes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= v <= 128:
                raise ValueError(f"{name} must be an integer in 1..128, got {v!r}")
        la.flags.writeable = False
        object.__setattr__(self, "logit_a", la)

    @classmethod
    def from_profile(cls, profile: Any, max_draft: int, *, tau: float, eps_sigma: float, signal_sigma: float,
                     **kw: Any) -> LatentSignalModel:
        """From a profile ``a_1, a_2, ...`` (extended with its last value to ``max_draft``)."""
        from .core.acceptance import extend_profile, logit

        return cls(logit(extend_profile(tuple(profile), int(max_draft))), float(tau), float(eps_sigma),
                   float(signal_sigma), **kw)

    @property
    def max_draft(self) -> int:
        return int(self.logit_a.size)

    def _args(self) -> tuple:
        zx, zw = np.polynomial.hermite_e.hermegauss(self.z_nodes)
        ex, ew = np.polynomial.hermite_e.hermegauss(self.eps_nodes)
        return (self.logit_a, float(self.tau), float(self.eps_sigma), float(self.signal_sigma), zx, zw / zw.sum(),
                ex, ew / ew.sum())


def observation_from_confidence(model: LatentSignalModel, confidence: Any, position: Any) -> np.ndarray:
    """``y = logit q - logit a_position`` (``position`` counts from 1), clipped like the simulator."""
    q = np.asarray(confidence, dtype=np.float64)
    pos = np.asarray(position, dtype=np.int64)
    with np.errstate(divide="ignore"):
        lq = np.clip(np.log(q) - np.log1p(-q), -_LOGIT_CLIP, _LOGIT_CLIP)
    return lq - model.logit_a[np.clip(pos - 1, 0, model.max_draft - 1)]


@njit(inline="always", **_JIT)
def _sigmoid(x):
    return 0.5 * (1.0 + math.tanh(0.5 * x))


@njit(**_JIT)
def _prefix_row(la, tau, se, sig, zx, zw, ex, ew, y, m, upto, out):
    """P(tokens 1..i accepted | y_1..y_m) for i = 1..upto into out[:upto] (one run)."""
    s2 = max(se * se + sig * sig, 1e-300)
    if tau > 0.0:
        prec = 1.0 / (tau * tau) + m / s2
        ysum = 0.0
        for l in range(m):
            ysum += y[l]
        mu = ysum / s2 / prec
        sd = 1.0 / math.sqrt(prec)
        nz = zx.shape[0]
    else:
        mu = 0.0
        sd = 0.0
        nz = 1
    beta = se * se / s2
    v_sd = math.sqrt(se * se * sig * sig / s2)
    ne = ex.shape[0]
    for i in range(upto):
        out[i] = 0.0
    for a in range(nz):
        if tau > 0.0:
            z = mu + sd * zx[a]
            wz = zw[a]
        else:
            z = 0.0
            wz = 1.0
        prod = 1.0
        for l in range(upto):
            if l < m:
                cen = la[l] + z + beta * (y[l] - z)
                spread = v_sd
            else:
                cen = la[l] + z
                spread = se
            if spread > 0.0:
                psi = 0.0
                for b in range(ne):
                    psi += ew[b] * _sigmoid(cen + spread * ex[b])
            else:
                psi = _sigmoid(cen)
            prod *= psi
            out[l] += wz * prod
    return 0


@njit(**_JIT)
def _prefix_many(la, tau, se, sig, zx, zw, ex, ew, y, m, upto, out):
    for r in range(y.shape[0]):
        _prefix_row(la, tau, se, sig, zx, zw, ex, ew, y[r], m[r], upto, out[r])


def prefix_acceptance(model: LatentSignalModel, y: Any, n_observed: Any, upto: int | None = None) -> np.ndarray:
    """``P(tokens 1..i all accepted | y_1..y_m)`` for ``i = 1..upto``, per run.

    Args:
        model: the latent model (known, or learned parameters).
        y: ``(n, K)`` observations ``y_l`` (only the first ``n_observed[r]`` of row ``r`` are read).
        n_observed: ``(n,)`` number of observed tokens ``m`` per run (0..K).
        upto: positions returned (default K).

    Returns:
        ``(n, upto)`` array; column ``i - 1`` is the probability that the first ``i`` drafted
        tokens are all accepted. With ``m = 0`` it is the survival ``S_i``.
    """
    yy = np.ascontiguousarray(np.atleast_2d(np.asarray(y, dtype=np.float64)))
    m = np.ascontiguousarray(np.broadcast_to(np.asarray(n_observed, dtype=np.int64), (yy.shape[0],)))
    K = model.max_draft
    upto = K if upto is None else int(upto)
    if yy.shape[1] < K or not 1 <= upto <= K or (m < 0).any() or (m > K).any():
        raise ValueError(f"y must have {K} columns, n_observed in 0..{K}, upto in 1..{K}")
    out = np.zeros((yy.shape[0], upto))
    _prefix_many(*model._args(), yy, m, upto, out)
    return out


@njit(**_JIT)
def _continue_row(la, tau, se, sig, zx, zw, ex, ew, hx, hw, y, j, cap, lam, c, lookahead, buf, ybuf):
    """The stopping rule for one run after drafting j tokens (j observed): True = draft another."""
    if j >= cap:
        return False
    _prefix_row(la, tau, se, sig, zx, zw, ex, ew, y, j, j + 1, buf)
    gain1 = lam * buf[j] - c
    if gain1 > 0.0 or lookahead < 2 or j + 1 >= cap:
        return gain1 > 0.0
    # two-step lookahead: draft j+1, see y_{j+1}, then draft j+2 if it pays
    s2 = se * se + sig * sig
    prec = (1.0 / (tau * tau) if tau > 0.0 else 1e300) + j / max(s2, 1e-300)
    ysum = 0.0
    for l in range(j):
        ybuf[l] = y[l]
        ysum += y[l]
    mu = ysum / max(s2, 1e-300) / prec
    pred_sd = math.sqrt(1.0 / prec + s2)
    extra = 0.0
    for a in range(hx.shape[0]):
        ybuf[j] = mu + pred_sd * hx[a]
        _prefix_row(la, tau, se, sig, zx, zw, ex, ew, ybuf, j + 1, j + 2, buf)
        g2 = lam * buf[j + 1] - c
        if g2 > 0.0:
            extra += hw[a] * g2
    return gain1 + extra > 0.0


@njit(**_JIT)
def _continue_many(la, tau, se, sig, zx, zw, ex, ew, hx, hw, y, j, cap, lam, c, lookahead, out):
    K = la.shape[0]
    buf = np.zeros(K + 1)
    ybuf = np.zeros(K + 1)
    for r in range(y.shape[0]):
        out[r] = _continue_row(la, tau, se, sig, zx, zw, ex, ew, hx, hw, y[r], j[r], cap[r], lam, c, lookahead,
                               buf, ybuf)


def should_continue(model: LatentSignalModel, y: Any, position: Any, cap: Any, *, lam: float, cost_ms: float,
                    lookahead: int = 1) -> np.ndarray:
    """The stopping rule per run: True = draft another token.

    ``lookahead=1`` (SPEC 4): continue iff ``lam * P(1..j+1 accepted | y_1..y_j) > cost_ms`` and
    ``j < cap``. ``lookahead=2`` also continues when drafting ``j+1`` and deciding on ``j+2``
    after seeing ``y_{j+1}`` pays in expectation (``-c + lam P_{j+1} + E[max(0, lam P_{j+2} - c)] > 0``).

    Args:
        y: ``(n, K)`` observations of the drafted tokens (first ``position[r]`` read).
        position: ``(n,)`` tokens drafted so far ``j`` (>= 1).
        cap: ``(n,)`` largest useful draft (e.g. ``min(K, max(1, tokens_left - 1))``).
        lam: value of a token, ms/token; cost_ms: marginal cost of a drafted token, ms.
    """
    yy = np.ascontiguousarray(np.atleast_2d(np.asarray(y, dtype=np.float64)))
    n = yy.shape[0]
    j = np.ascontiguousarray(np.broadcast_to(np.asarray(position, dtype=np.int64), (n,)))
    cp = np.ascontiguousarray(np.broadcast_to(np.asarray(cap, dtype=np.int64), (n,)))
    K = model.max_draft
    if yy.shape[1] < K or (j < 1).any() or (j > K).any():
        raise ValueError(f"y must have {K} columns and positions must be in 1..{K}")
    if lookahead not in (1, 2):
        raise ValueError(f"lookahead must be 1 or 2, got {lookahead!r}")
    hx, hw = np.polynomial.hermite_e.hermegauss(16)
    out = np.zeros(n, np.bool_)
    _continue_many(*model._args(), hx, hw / hw.sum(), yy, j, cp, float(lam), float(cost_ms), int(lookahead), out)
    return out


@njit(**_JIT)
def _simulate_rounds(la, tau, se, sig, zx, zw, ex, ew, hx, hw, zn, en, xn, un, lam, c, lookahead, k_out, a_out):
    """Rounds of the stopping rule on given standard draws (z, eps, xi: normals; u: uniforms)."""
    n, K = en.shape
    buf = np.zeros(K + 1)
    ybuf = np.zeros(K + 1)
    y = np.zeros(K)
    for r in range(n):
        z = tau * zn[r]
        j = 1
        y[0] = z + se * en[r, 0] + sig * xn[r, 0]
        while _continue_row(la, tau, se, sig, zx, zw, ex, ew, hx, hw, y, j, K, lam, c, lookahead, buf, ybuf):
            y[j] = z + se * en[r, j] + sig * xn[r, j]
            j += 1
        g = 0
        while g < K and un[r, g] < _sigmoid(la[g] + z + se * en[r, g]):
            g += 1
        k_out[r] = j
        a_out[r] = min(j, g)
    return 0


def dinkelbach_lambda(model: LatentSignalModel, *, cost_ms: float, fixed_cost_ms: float, rounds: int = 20000,
                      seed: int = 0, lookahead: int = 1, start: float | None = None, tol: float = 1e-7,
                      max_iter: int = 50) -> dict[str, Any]:
    """The fixed point ``lam = E[T] / E[A + 1]`` of the stopping rule with threshold ``lam``.

    ``T = k c + B`` (``c = cost_ms``, ``B = fixed_cost_ms``: mean rtt + verification base),
    ``A = min(k, G)``; the expectations are sample means over ``rounds`` rounds drawn once from
    ``np.random.default_rng(seed)`` (the same draws at every iteration, so the map is a
    deterministic step function and the iteration settles). Dinkelbach: at the fixed point the
    rule maximises ``E[lam (A + 1) - T]`` (= 0), i.e. it minimises the per-token latency over the
    rules of its family. ``start``: the first ``lam`` (default ``B + c``, the rate of one token per
    round, above the optimum; the round-level ``rho*`` is a closer start). Returns
    ``{"lam", "mean_k", "mean_tokens", "iterations"}``.
    """
    for name, v in (("cost_ms", cost_ms), ("fixed_cost_ms", fixed_cost_ms)):
        if not (isinstance(v, (int, float, np.floating)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
    rng = np.random.default_rng(seed)
    K = model.max_draft
    zn = rng.standard_normal(rounds)
    en = rng.standard_normal((rounds, K))
    xn = rng.standard_normal((rounds, K))
    un = rng.random((rounds, K))
    hx, hw = np.polynomial.hermite_e.hermegauss(16)
    args = (*model._args(), hx, hw / hw.sum(), zn, en, xn, un)
    k_out = np.zeros(rounds, np.int64)
    a_out = np.zeros(rounds, np.int64)
    lam = float(fixed_cost_ms + cost_ms) if start is None else float(start)
    it = 0
    for it in range(1, max_iter + 1):
        _simulate_rounds(*args, lam, float(cost_ms), int(lookahead), k_out, a_out)
        new = (k_out.mean() * cost_ms + fixed_cost_ms) / (a_out.mean() + 1.0)
        done = abs(new - lam) <= tol * lam
        lam = float(new)
        if done:
            break
    return {"lam": lam, "mean_k": float(k_out.mean()), "mean_tokens": float(a_out.mean() + 1.0), "iterations": it}
