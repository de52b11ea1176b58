"""The signal oracle (specstop_gym.signal_oracle): the exact latent posterior and the stopping rule.

* with no observation the prefix probabilities are the exact survival of the latent model;
* the posterior's predictions agree with a direct numerical integration (the definition, by
  dense quadrature over z and each eps) and are calibrated on simulated rounds;
* the rule continues exactly when lam * P(next prefix) > c, never past the cap;
* Dinkelbach's fixed point is a fixed point, and better than the round-level optimum;
* on profile/geometric acceptance the signal carries no information (the oracle plans k).
"""

from __future__ import annotations

import numpy as np
import pytest

from agents.oracle_agent import signal_model
from agents.registry import make_agent
from specstop_gym import make_scenario
from specstop_gym.oracle import optimal_k_for_costs
from specstop_gym.scenarios import build_acceptance
from specstop_gym.signal_oracle import (
    LatentSignalModel,
    dinkelbach_lambda,
    observation_from_confidence,
    prefix_acceptance,
    should_continue,
)


def _model(**kw) -> LatentSignalModel:
    sc = make_scenario("qwen-latent-signal")
    return LatentSignalModel.from_profile((0.6, 0.5, 0.45), sc.max_draft, tau=1.0, eps_sigma=0.3,
                                          signal_sigma=0.5, **kw)


def test_no_observation_gives_the_exact_survival() -> None:
    sc = make_scenario("qwen-latent-signal")
    m = signal_model(sc)
    s = build_acceptance(sc).survival(sc.max_draft)
    np.testing.assert_allclose(prefix_acceptance(m, np.zeros((1, sc.max_draft)), 0)[0], s, atol=1e-6)
    fine = LatentSignalModel(m.logit_a, m.tau, m.eps_sigma, m.signal_sigma, z_nodes=48, eps_nodes=24)
    np.testing.assert_allclose(prefix_acceptance(fine, np.zeros((1, sc.max_draft)), 0)[0], s, atol=1e-9)


def _direct(model: LatentSignalModel, y: np.ndarray, upto: int) -> np.ndarray:
    """P(1..i accepted | y) by dense quadrature of the joint density over (z, eps_1..eps_m):
    prior x likelihood of each y_l given (z, eps_l), normalised (the definition, no conjugacy)."""
    tau, se, sig = model.tau, model.eps_sigma, model.signal_sigma
    z = np.linspace(-8 * tau, 8 * tau, 2001)
    ez = np.linspace(-8 * se, 8 * se, 801)
    wz = np.exp(-0.5 * (z / tau) ** 2)
    we = np.exp(-0.5 * (ez / se) ** 2)
    lik = np.ones_like(z)
    psi = []
    for l in range(upto):
        p = 1.0 / (1.0 + np.exp(-(model.logit_a[l] + z[:, None] + ez[None, :])))  # (Z, E)
        if l < len(y):
            dens = np.exp(-0.5 * ((y[l] - z[:, None] - ez[None, :]) / sig) ** 2) * we[None, :]  # eps | z, y_l
            lik = lik * dens.sum(axis=1)
            psi.append((p * dens).sum(axis=1) / dens.sum(axis=1))
        else:
            psi.append((p * we[None, :]).sum(axis=1) / we.sum())
    post = wz * lik
    post /= post.sum()
    return np.array([post @ np.prod(psi[: i + 1], axis=0) for i in range(upto)])


def test_posterior_matches_direct_integration() -> None:
    m = _model()
    rng = np.random.default_rng(3)
    for j in (1, 2, 4):
        y = rng.normal(0.0, 1.2, m.max_draft)
        got = prefix_acceptance(m, y[None, :], j, j + 2)[0]
        np.testing.assert_allclose(got, _direct(m, y[:j], j + 2), atol=2e-6)


def test_posterior_is_calibrated_on_simulated_rounds() -> None:
    m = _model()
    K = m.max_draft
    rng = np.random.default_rng(1)
    n = 20000
    z = m.tau * rng.standard_normal(n)
    eps = m.eps_sigma * rng.standard_normal((n, K))
    y = z[:, None] + eps + m.signal_sigma * rng.standard_normal((n, K))
    acc = np.cumprod(rng.random((n, K)) < 1.0 / (1.0 + np.exp(-(m.logit_a + z[:, None] + eps))), axis=1)
    pred = prefix_acceptance(m, y, 3, 4)[:, 3]  # P(tokens 1..4 accepted | confidences of 1..3)
    order = np.argsort(pred)
    for part in np.array_split(order, 5):
        assert abs(pred[part].mean() - acc[part, 3].mean()) < 0.02


def test_rule_and_cap() -> None:
    m = _model()
    rng = np.random.default_rng(2)
    y = rng.normal(0.0, 1.5, (200, m.max_draft))
    j = rng.integers(1, m.max_draft + 1, 200)
    lam, c = 90.0, 20.11
    go = should_continue(m, y, j, np.full(200, m.max_draft), lam=lam, cost_ms=c)
    nxt = np.array([prefix_acceptance(m, y[r:r + 1], j[r], min(j[r] + 1, m.max_draft))[0, -1] for r in range(200)])
    want = (j < m.max_draft) & (lam * nxt > c)
    np.testing.assert_array_equal(go, want)
    assert not should_continue(m, y, j, np.maximum(j, 1), lam=lam, cost_ms=c).any()  # at the cap: stop
    q = 1.0 / (1.0 + np.exp(-(m.logit_a[2] + 0.7)))
    assert observation_from_confidence(m, q, 3) == pytest.approx(0.7)


def test_dinkelbach_fixed_point_beats_the_round_level_optimum() -> None:
    sc = make_scenario("qwen-latent-signal")
    m = signal_model(sc)
    c, b = sc.marginal_cost_ms, sc.delay_ms + sc.verify_base_ms
    fit = dinkelbach_lambda(m, cost_ms=c, fixed_cost_ms=b, rounds=4000, seed=5)
    again = dinkelbach_lambda(m, cost_ms=c, fixed_cost_ms=b, rounds=4000, seed=5, start=fit["lam"], max_iter=1)
    assert again["lam"] == pytest.approx(fit["lam"], rel=1e-6)  # a fixed point of its own map
    rho = optimal_k_for_costs(build_acceptance(sc).survival(sc.max_draft), c, b)[1]
    assert fit["lam"] < 0.95 * rho  # the signal is worth more than 5% here (11% measured)


@pytest.mark.parametrize("preset", ["qwen-geometric", "llama-heavy-head"])
def test_signal_on_profile_acceptance_is_uninformative(preset: str) -> None:
    """q = sigmoid(logit a_i + sigma xi): independent of the acceptance draw. The oracle plans k (no
    signal rule), and the confidences do not predict acceptance on simulated rounds."""
    sc = make_scenario(preset, confidence_sigma=0.5)
    assert signal_model(sc) is None
    agent = make_agent("oracle", sc, n_runs=1)
    assert "token_rule" not in agent.describe()
    from specstop_gym.core.rng import episode_keys
    from specstop_gym.scenarios import build_simulator

    sim = build_simulator(sc, 4000)  # round 0 of 4000 episodes: its run length G and confidences q
    sim.reset_rows(np.arange(4000), episode_keys(np.random.default_rng(0), 4000))
    r = np.corrcoef(sim.q[:, 0], sim.g >= 1)[0, 1]
    assert abs(r) < 0.05
    latent = build_simulator(make_scenario("qwen-latent-signal"), 4000)  # where it does inform
    latent.reset_rows(np.arange(4000), episode_keys(np.random.default_rng(0), 4000))
    assert np.corrcoef(latent.q[:, 0], latent.g >= 1)[0, 1] > 0.3
