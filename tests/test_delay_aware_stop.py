"""delay-aware-stop (issue 13): the fit of the latent signal model, the rule, its fallbacks, and the
llama-latent-signal preset it is measured on. Small budgets; the grid comparison is in docs/agents.md."""

from __future__ import annotations

import numpy as np
import pytest
from test_agents_unit import drive, drive_tokens

from agents import DelayAwareStop, UCBSpecStop, make_agent
from agents.delay_aware_stop import fit_latent_signal
from specstop_gym.core.acceptance import LatentDifficultyAcceptance
from specstop_gym.evaluation.runner import run_agent
from specstop_gym.scenarios import build_acceptance, make_scenario
from specstop_gym.signal_oracle import LatentSignalModel, prefix_acceptance


def _latent_rounds(rng: np.random.Generator, n: int, la: np.ndarray, tau: float, se: float, sig: float,
                   stop_q: float = 0.45):
    """Rounds of the latent model with a draft length that depends on the confidences seen (MAR)."""
    kmax = la.size
    z = tau * rng.standard_normal(n)
    eps = se * rng.standard_normal((n, kmax))
    x = la + z[:, None] + eps + sig * rng.standard_normal((n, kmax))
    p = 1.0 / (1.0 + np.exp(-(la + z[:, None] + eps)))
    acc = rng.random((n, kmax)) < p
    g = np.argmin(np.c_[acc, np.zeros(n, bool)], axis=1)
    k = np.ones(n, np.int64)
    for r in range(n):
        while k[r] < kmax and 1.0 / (1.0 + np.exp(-x[r, k[r] - 1])) > stop_q:
            k[r] += 1
    return x, k, np.minimum(g, k)


def test_fit_recovers_the_latent_model_from_censored_rounds() -> None:
    rng = np.random.default_rng(0)
    la = np.log(0.6 / 0.4) - 0.1 * np.arange(8)
    x, k, a = _latent_rounds(rng, 1500, la, tau=1.0, se=0.3, sig=0.5)
    f = fit_latent_signal(x, k, a)
    assert f["tau"] == pytest.approx(1.0, abs=0.1)
    assert f["signal_sigma"] == pytest.approx(0.5, abs=0.1)
    assert f["eps_sigma"] == pytest.approx(0.3, abs=0.15)
    n_pos = (np.arange(8)[None, :] < k[:, None]).sum(axis=0)
    well = n_pos >= 200
    np.testing.assert_allclose(f["logit_a"][well], la[well], atol=0.15)


def test_fit_finds_no_shared_difficulty_in_an_uninformative_signal() -> None:
    rng = np.random.default_rng(1)
    n, kmax = 800, 6
    la = np.log(np.array([0.7] + [0.28] * (kmax - 1)) / (1 - np.array([0.7] + [0.28] * (kmax - 1))))
    x = la + 0.5 * rng.standard_normal((n, kmax))  # noise around constant logits (profile acceptance)
    k = np.where(x[:, 0] > 1.2, 3, 1)
    g = (rng.random((n, kmax)) < 1 / (1 + np.exp(-la))).cumprod(axis=1).sum(axis=1)
    f = fit_latent_signal(x, k, np.minimum(g, k))
    assert f["tau"] < 0.15 and f["signal_sigma"] == pytest.approx(0.5, abs=0.08)
    model = LatentSignalModel(f["logit_a"], f["tau"], f["eps_sigma"], f["signal_sigma"])
    # the posterior of the next token barely moves with the confidence of the first
    y = np.zeros((2, kmax))
    y[1, 0] = 2.0
    p = prefix_acceptance(model, y, np.array([1, 1]), upto=2)[:, 1]
    assert abs(p[1] - p[0]) < 0.05 * p[0]


def test_fit_rejects_malformed_rounds() -> None:
    with pytest.raises(ValueError, match="fit_latent_signal"):
        fit_latent_signal(np.zeros((3, 4)), np.array([1, 5, 2]), np.array([0, 0, 0]))
    with pytest.raises(ValueError, match="fit_latent_signal"):
        fit_latent_signal(np.zeros((2, 4)), np.array([1, 2]), np.array([2, 0]))


def test_llama_latent_signal_has_the_heavy_head_survival() -> None:
    lat = build_acceptance(make_scenario("llama-latent-signal"))
    assert isinstance(lat, LatentDifficultyAcceptance)
    heavy = build_acceptance(make_scenario("llama-heavy-head"))
    np.testing.assert_allclose(lat.survival(8), heavy.survival(8), rtol=1e-3)


def test_round_level_and_no_signal_fall_back_to_ucb_specstop() -> None:
    cfg = make_scenario("qwen-latent-signal", n_tokens=100_000)
    a = drive(DelayAwareStop(cfg, n_runs=2), cfg, 2, 200).k
    b = drive(UCBSpecStop(cfg, n_runs=2), cfg, 2, 200).k
    np.testing.assert_array_equal(a, b)
    nosig = make_scenario("qwen-geometric", n_tokens=100_000)
    np.testing.assert_array_equal(drive_tokens(DelayAwareStop(nosig, n_runs=2), nosig, 2, 120),
                                  drive_tokens(UCBSpecStop(nosig, n_runs=2), nosig, 2, 120))


def test_token_rule_is_the_delay_derived_threshold_on_the_fitted_posterior() -> None:
    cfg = make_scenario("qwen-latent-signal", channel="constant", delay_ms=200.0, n_tokens=256,
                        requests_per_episode=2)
    agent = make_agent("delay-aware-stop", cfg, n_runs=2, warmup=16)
    run = run_agent(agent, cfg, [0, 1], level="token")
    assert agent.fits >= 2
    fit = agent.fitted(0)
    assert fit is not None and fit["tau"] > 0.5 and np.isfinite(fit["lam"])
    # after the fits, the rule drafts more on confident rounds: k varies within a run
    k = run.columns["k"][run.seed_rows(0)]
    assert len(np.unique(k[40:])) >= 3
    # the threshold follows the delay: lam at 1600 ms is far above lam at 25 ms for the same model
    model = agent._models[0]
    c, vb = agent.cost_estimates(np.array([0]))
    agent._lam[0] = np.nan
    lam_slow = agent._lam_for(0, float(c[0]), 1600.0 + float(vb[0]))
    agent._lam[0] = np.nan
    lam_fast = agent._lam_for(0, float(c[0]), 25.0 + float(vb[0]))
    assert model is not None and lam_slow > 5 * lam_fast


def test_delay_aware_stop_parameters_are_validated_and_reset_repeats() -> None:
    cfg = make_scenario("qwen-latent-signal", n_tokens=64, requests_per_episode=2)
    for bad in ({"warmup": 1}, {"memory": 8}, {"lam_rounds": 10}, {"refit_every": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            DelayAwareStop(cfg, **bad)
    agent = make_agent("delay-aware-stop", cfg, n_runs=2, warmup=8, lam_rounds=100)
    first = run_agent(agent, cfg, [3, 4], level="token").columns["k"]
    agent.reset()
    np.testing.assert_array_equal(run_agent(agent, cfg, [3, 4], level="token").columns["k"], first)
