"""Agents that adapt (issue 13): the confidence bounds, the delay tracker, contextual-ucb's model,
ts-specstop, forgetting counts and the prompt-switch preset. Exact unit checks on small inputs
(brute force where it exists), plus a few short runs; the long measurements are in docs/agents.md.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_agents_unit import blank_context, drive, scripted_feedback

from agents import ContextualUCB, TSSpecStop, UCBSpecStop, make_agent
from agents.confidence import (
    exploration_level,
    kl_bernoulli,
    kl_upper,
    profile_likelihood_upper,
    survival_upper,
)
from agents.delay_tracking import SegmentDelayTracker, siegmund_arl
from agents.ucb_specstop import CensoredAcceptance
from specstop_gym.core.acceptance import SwitchingProfileAcceptance
from specstop_gym.core.config import ConfigError
from specstop_gym.evaluation.runner import run_agent
from specstop_gym.scenarios import build_acceptance, build_simulator, make_scenario

# ---------------------------------------------------------------------------
# confidence bounds
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("s,n,level", [(3, 10, 2.0), (0, 5, 1.0), (9, 10, 3.0), (50, 100, 0.5), (10, 10, 1.0)])
def test_kl_upper_is_the_largest_q_within_the_level(s: int, n: int, level: float) -> None:
    u = float(kl_upper([[s]], [[n]], level)[0, 0])
    p = s / n
    assert p <= u <= 1.0
    if u < 1.0:
        assert n * kl_bernoulli(p, u) == pytest.approx(level, rel=1e-9, abs=1e-9)
    grid = np.linspace(p, 1.0, 20001)
    inside = grid[n * kl_bernoulli(p, grid) <= level]
    assert u == pytest.approx(inside.max(), abs=1e-4)


def test_kl_upper_of_an_unobserved_arm_is_one_and_level_zero_is_the_mle() -> None:
    assert kl_upper([[0.0, 2.0]], [[0.0, 4.0]], 1.0)[0, 0] == 1.0
    assert kl_upper([[2.0]], [[4.0]], 0.0)[0, 0] == pytest.approx(0.5)


def test_profile_likelihood_bound_is_the_constrained_maximum() -> None:
    """Brute force over a grid of (a_1, a_2): max a_1 a_2 subject to the summed divergence."""
    acc, n, level = np.array([[12.0, 3.0]]), np.array([[20.0, 9.0]]), 2.0
    bound = profile_likelihood_upper(acc, n, level)[0]
    p = acc[0] / n[0]
    g1, g2 = np.meshgrid(np.linspace(p[0], 1, 1501), np.linspace(p[1], 1, 1501), indexing="ij")
    cost = n[0, 0] * kl_bernoulli(p[0], g1) + n[0, 1] * kl_bernoulli(p[1], g2)
    assert bound[1] == pytest.approx((g1 * g2)[cost <= level].max(), abs=2e-3)
    assert bound[0] == pytest.approx(float(kl_upper(acc[:, :1], n[:, :1], level)[0, 0]), abs=1e-9)
    # one shared budget is tighter than a bound per position multiplied through
    per_position = np.cumprod(kl_upper(acc, n, level)[0])
    assert bound[1] < per_position[1]


def test_survival_upper_is_optimistic_tight_and_non_increasing() -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        kmax = int(rng.integers(1, 9))
        n = rng.integers(0, 60, size=(3, kmax)).astype(float)
        acc = np.floor(n * rng.uniform(0, 1, size=n.shape))
        drafted = rng.integers(0, 80, size=(3, kmax)).astype(float)
        reached = np.floor(drafted * rng.uniform(0, 1, size=n.shape))
        level = rng.uniform(0, 4, size=3)
        s = survival_upper(acc, n, reached, drafted, level)
        assert (np.diff(s, axis=1) <= 1e-12).all() and (s <= 1.0).all() and (s >= 0.0).all()
        prof = profile_likelihood_upper(acc, n, level)
        direct = kl_upper(reached, drafted, level)
        assert (s <= prof + 1e-12).all() and (s <= direct + 1e-12).all()
        # the MLE of the product-limit survival lies under the bound
        with np.errstate(invalid="ignore", divide="ignore"):
            mle = np.cumprod(np.where(n > 0, acc / n, 1.0), axis=1)
        assert (prof >= mle - 1e-9).all()


def test_survival_upper_covers_the_truth_at_its_level() -> None:
    """Coverage on simulated censored data: S_i > S_i^+ in well under 5% of the runs at level log 20."""
    rng = np.random.default_rng(1)
    a = np.array([0.7, 0.5, 0.5, 0.4])
    s_true = np.cumprod(a)
    runs, rounds = 400, 60
    k = rng.integers(1, 5, size=(runs, rounds))
    g = (rng.random((runs, rounds, 4)) < a).cumprod(axis=2).sum(axis=2)
    acc_a = np.minimum(g, k)
    ca = CensoredAcceptance(runs, 4)
    for t in range(rounds):
        ca.update(np.arange(runs), k[:, t], acc_a[:, t])
    s = survival_upper(ca.acc, ca.n, ca.reached, ca.drafted, math.log(20.0))
    miss = (s < s_true[None, :] - 1e-12).mean(axis=0)
    assert (miss < 0.05).all(), miss


def test_exploration_levels() -> None:
    assert exploration_level(1.0, 3.0) == 0.0
    assert exploration_level(100.0, 0.0) == pytest.approx(math.log(100.0))
    assert exploration_level(100.0, 1.0) == pytest.approx(math.log(100.0) + math.log(math.log(100.0)))
    # KL-UCB+: log(t / pulls), floored at 0, pulls floored at 1
    np.testing.assert_allclose(exploration_level(100.0, 0.0, [0.0, 10.0, 100.0, 500.0]),
                               [math.log(100.0), math.log(10.0), 0.0, 0.0])


def test_nested_level_uses_the_rounds_that_drafted_the_previous_position() -> None:
    cfg = make_scenario("qwen-geometric")
    agent = UCBSpecStop(cfg, n_runs=1, level_c=0.0)
    for k in (1, 1, 1, 2, 3):
        agent.update(scripted_feedback([0], k, 0))
    # t = 5, m_1 = 5, m_2 = 2, m_3 = 1, m_4.. = 0
    np.testing.assert_allclose(agent.level(np.array([0]))[0, :4],
                               [0.0, math.log(5 / 2), math.log(2 / 1), math.log(1)])


# ---------------------------------------------------------------------------
# ucb-specstop
# ---------------------------------------------------------------------------


def test_ucb_specstop_decision_is_the_threshold_rule_on_the_bound() -> None:
    cfg = make_scenario("qwen-geometric")
    agent = UCBSpecStop(cfg, n_runs=2)
    for k, a in ((8, 3), (8, 1), (4, 0), (2, 2), (3, 1)):
        agent.update(scripted_feedback([0, 1], k, a, round_ms=150.0 + 16.0 + k * 20.11))
    rows = np.arange(2)
    s_up = agent.optimistic_survival(rows)
    expected = survival_upper(agent.acceptance.acc, agent.acceptance.n, agent.acceptance.reached,
                              agent.acceptance.drafted, agent.level(rows))
    np.testing.assert_allclose(s_up, expected)
    c, vb = agent.cost_estimates(rows)
    rho = (np.arange(1, 9) * c[0] + 150.0 + vb[0]) / (1.0 + np.cumsum(s_up[0]))
    assert (agent.choose_k(blank_context(2)) == np.argmin(rho) + 1).all()


def test_hoeffding_bound_reproduces_the_former_rule() -> None:
    cfg = make_scenario("qwen-geometric")
    agent = UCBSpecStop(cfg, n_runs=1, bound="hoeffding", beta=0.1)
    for k, a in ((8, 3), (2, 1), (3, 0)):
        agent.update(scripted_feedback([0], k, a))
    a_hat = agent.acceptance.mean(np.array([0]))[0]
    n = agent.acceptance.n[0]
    bonus = np.sqrt(0.1 * math.log(3.0) / np.where(n > 0, n, 1.0))
    expected = np.cumprod(np.where(n > 0, np.minimum(1.0, a_hat + bonus), 1.0))
    np.testing.assert_allclose(agent.optimistic_survival(np.array([0]))[0], expected)


def test_window_counts_are_exactly_the_last_rounds() -> None:
    rng = np.random.default_rng(3)
    ks = rng.integers(1, 7, size=40)
    accs = np.array([rng.integers(0, k + 1) for k in ks])
    windowed = CensoredAcceptance(1, 6, window=7)
    for k, a in zip(ks, accs):
        windowed.update(np.array([0]), np.array([k]), np.array([a]))
    fresh = CensoredAcceptance(1, 6)
    for k, a in zip(ks[-7:], accs[-7:]):
        fresh.update(np.array([0]), np.array([k]), np.array([a]))
    for name in ("n", "acc", "drafted", "reached", "rounds"):
        np.testing.assert_allclose(getattr(windowed, name), getattr(fresh, name), err_msg=name)


def test_discounted_counts_weigh_old_rounds_by_gamma_to_the_age() -> None:
    ca = CensoredAcceptance(1, 3, discount=0.5)
    for k, a in ((3, 3), (1, 0), (2, 1)):
        ca.update(np.array([0]), np.array([k]), np.array([a]))
    # n_1: rounds 1, 2, 3 observed position 1 -> 0.25 + 0.5 + 1
    np.testing.assert_allclose(ca.n[0], [1.75, 0.25 + 1.0, 0.25])
    np.testing.assert_allclose(ca.acc[0], [0.25 + 1.0, 0.25, 0.25])
    np.testing.assert_allclose(ca.rounds[0], 1.75)


def test_ucb_specstop_parameters_are_validated() -> None:
    cfg = make_scenario("qwen-geometric")
    for bad, word in (({"window": 0}, "window"), ({"window": 2.5}, "window"), ({"level_c": float("nan")}, "level_c"),
                      ({"change_allowance": -1}, "change_allowance")):
        with pytest.raises(ValueError, match=word):
            UCBSpecStop(cfg, **bad)


# ---------------------------------------------------------------------------
# delay tracking
# ---------------------------------------------------------------------------


def test_tracker_without_detection_is_the_running_mean() -> None:
    tr = SegmentDelayTracker(2, threshold=None)
    x = np.array([[100.0, 50.0], [120.0, 500.0], [80.0, 40.0]])
    for row in x:
        tr.update(np.arange(2), row)
    np.testing.assert_allclose(tr.estimate(np.arange(2), [0, 0]), x.mean(axis=0))
    assert (tr.alarms == 0).all()
    np.testing.assert_allclose(tr.estimate(np.arange(2), [7.0, 9.0]), x.mean(axis=0))
    assert SegmentDelayTracker(1).estimate(np.array([0]), [42.0])[0] == 42.0


def test_tracker_cusum_statistics_are_pages_recursion() -> None:
    """Before any alarm, U and D follow the self-starting recursion computed by hand."""
    tr = SegmentDelayTracker(1, threshold=1e9, allowance=0.5, sigma_prior=0.2, prior_weight=4.0)
    xs = [100.0, 110.0, 95.0, 130.0, 90.0, 105.0]
    up = down = 0.0
    logs: list[float] = []
    for x in xs:
        if logs:
            n = len(logs)
            mean = sum(logs) / n
            ss = sum((v - mean) ** 2 for v in logs)
            sigma = math.sqrt((4.0 * 0.04 + ss) / (4.0 + n - 1))
            z = (math.log(x) - mean) / (sigma * math.sqrt(1 + 1 / n))
            up, down = max(0.0, up + z - 0.5), max(0.0, down - z - 0.5)
        logs.append(math.log(x))
        tr.update(np.array([0]), [x])
        assert tr.cusum[0, 0] == pytest.approx(up) and tr.cusum[0, 1] == pytest.approx(down)


def test_tracker_cuts_a_segment_at_a_persistent_step_and_keeps_its_mean() -> None:
    rng = np.random.default_rng(0)
    tr = SegmentDelayTracker(1)
    before = 40.0 * np.exp(0.1 * rng.standard_normal(80))
    after = 400.0 * np.exp(0.1 * rng.standard_normal(5))
    for x in before:
        tr.update(np.array([0]), [x])
    assert tr.alarms[0] == 0
    assert tr.estimate(np.array([0]), [0.0])[0] == pytest.approx(before.mean())
    fired = [bool(tr.update(np.array([0]), [x])[0]) for x in after]
    assert fired[0] and tr.alarms[0] == 1  # a 23-sigma step: the first round at the new level
    assert tr.estimate(np.array([0]), [0.0])[0] == pytest.approx(after.mean())
    assert tr.segment_length(np.array([0]))[0] == 5


def test_tracker_false_alarms_on_iid_jitter_are_rare() -> None:
    rng = np.random.default_rng(5)
    tr = SegmentDelayTracker(32)
    for x in 150.0 * np.exp(0.2 * rng.standard_normal((500, 32))):
        tr.update(np.arange(32), x)
    assert tr.alarms.sum() <= 3  # Siegmund: ~16000 rounds between alarms of one side; 16000 rounds here
    assert siegmund_arl(0.0, 0.5, 8.0) > 1e4 and siegmund_arl(2.0, 0.5, 8.0) < 10


# ---------------------------------------------------------------------------
# contextual-ucb
# ---------------------------------------------------------------------------


def test_contextual_generator_estimate_from_the_observed_states() -> None:
    cfg = make_scenario("markov-csi")
    agent = ContextualUCB(cfg, n_runs=1, prior_switches=1.0, prior_ms=1000.0)
    # state 0 for 0..3000 ms, a switch to 1 at 3000, back to 0 at 4000, observed at round starts
    for t, s in ((0, 0), (1000, 0), (2000, 0), (3000, 1), (3500, 1), (4000, 0), (4500, 0)):
        agent._observe_state(np.array([0]), np.array([float(t)]), np.array([s]))
    q, _, _ = agent.state_model(0, 100.0)
    # time in 0: 3000 + 500 ms, one 0 -> 1 switch; time in 1: 1000 ms, one 1 -> 0 switch
    assert q[0, 1] == pytest.approx((1 + 1) / (3500 + 1000))
    assert q[1, 0] == pytest.approx((1 + 1) / (1000 + 1000))
    np.testing.assert_allclose(q.sum(axis=1), 0.0, atol=1e-15)


def test_contextual_state_rtt_mean_and_cv() -> None:
    cfg = make_scenario("markov-csi")
    agent = ContextualUCB(cfg, n_runs=1)
    for rtt, s in ((30.0, 0), (34.0, 0), (26.0, 0), (300.0, 1), (330.0, 1)):
        agent.update(scripted_feedback([0], 2, 1, rtt_ms=rtt, round_ms=rtt + 56.22, csi=s))
    _, mean, cv = agent.state_model(0, 100.0)
    np.testing.assert_allclose(mean, [30.0, 315.0])
    np.testing.assert_allclose(cv, [np.std([30, 34, 26], ddof=1) / 30.0, np.std([300, 330], ddof=1) / 315.0])


def test_contextual_dp_planner_plays_the_solved_table() -> None:
    from specstop_gym.oracle import solve_markov_dp

    cfg = make_scenario("markov-csi", n_tokens=64)
    agent = ContextualUCB(cfg, n_runs=1, resolve_every=10_000)
    tr = drive(agent, cfg, 1, 300)
    assert agent.solves >= 1
    # re-solve the model the agent holds and check its next choice against the table
    rows = np.array([0])
    c, vb = agent.cost_estimates(rows)
    q, mean, cv = agent.state_model(0, float(agent.delay.estimate(rows, [100.0])[0]))
    sol = solve_markov_dp(agent.optimistic_survival(rows)[0], n_tokens=64, generator_per_ms=q, rtt_mean_ms=mean,
                          rtt_cv=cv, draft_ms=cfg.draft_ms, verify_base_ms=vb[0],
                          verify_per_token_ms=c[0] - cfg.draft_ms, quadrature_points=8)
    agent._tables[0] = None  # force a solve now
    ctx = blank_context(1, csi=np.array([1]), tokens_left=np.array([40]), time_ms=np.array([tr.time_ms[-1, 0] + 1.0]))
    assert agent.choose_k(ctx)[0] == sol.k_table[40, 1]


def test_contextual_local_planner_is_the_per_state_threshold_rule() -> None:
    cfg = make_scenario("markov-csi", n_tokens=100_000)
    local = ContextualUCB(cfg, n_runs=2, planner="local")
    tr = drive(local, cfg, 2, 400)
    bad = int(np.argmax(cfg.markov_rtt_mean_ms))
    assert tr.k[200:][tr.start_state[200:] == bad].mean() > tr.k[200:][tr.start_state[200:] != bad].mean()
    with pytest.raises(ValueError, match="planner"):
        ContextualUCB(cfg, planner="x")
    with pytest.raises(ValueError, match="dp_horizon"):
        ContextualUCB(cfg, dp_horizon=0)


# ---------------------------------------------------------------------------
# ts-specstop
# ---------------------------------------------------------------------------


def test_ts_specstop_samples_the_beta_posterior_with_its_own_generator() -> None:
    cfg = make_scenario("qwen-geometric")
    agent = TSSpecStop(cfg, n_runs=1, seed=11)
    for k, a in ((8, 2), (3, 3), (2, 0)):
        agent.update(scripted_feedback([0], k, a))
    acc, n = agent.acceptance.acc[0], agent.acceptance.n[0]
    expected = np.random.default_rng(11).beta(1.0 + acc[None, :], 1.0 + (n - acc)[None, :])
    np.testing.assert_allclose(agent.posterior_sample(np.array([0])), expected)
    draws = np.stack([agent.posterior_sample(np.array([0]))[0] for _ in range(4000)])
    np.testing.assert_allclose(draws.mean(axis=0), (acc + 1) / (n + 2), atol=0.02)


def test_ts_specstop_converges_on_a_stationary_channel() -> None:
    cfg = make_scenario("llama-heavy-head", n_tokens=100_000)
    tr = drive(TSSpecStop(cfg, n_runs=4, seed=0), cfg, 4, 1500)
    assert (tr.k[-300:] == 2).mean() >= 0.85  # k* = 2 at 150 ms


# ---------------------------------------------------------------------------
# short runs: the adaptive agents adapt
# ---------------------------------------------------------------------------


def test_ucb_specstop_follows_a_delay_step_within_a_few_rounds() -> None:
    cfg = make_scenario("drift", n_tokens=100_000, drift_period_ms=None,
                        drift_schedule=((0.0, 40.0), (15_000.0, 400.0)))
    agent = UCBSpecStop(cfg, n_runs=2)
    tr = drive(agent, cfg, 2, 240)
    for j in range(2):
        late = tr.time_ms[:, j] >= 15_000.0
        first = int(np.argmax(late))
        # after the step the estimate is the new level's within 3 rounds: k rises to the 400-ms regime's
        assert tr.k[first + 3:first + 20, j].min() > tr.k[first - 20:first, j].max()
        assert agent.delay.alarms[j] >= 1


def test_iid_jitter_does_not_cut_segments_in_a_short_run() -> None:
    cfg = make_scenario("qwen-geometric", n_tokens=100_000)
    agent = make_agent("ucb-specstop", cfg, n_runs=4)
    drive(agent, cfg, 4, 400)
    assert agent.delay.alarms.sum() == 0


# ---------------------------------------------------------------------------
# prompt-switch preset (acceptance that drifts)
# ---------------------------------------------------------------------------


def test_prompt_switch_draws_follow_the_regime_in_force() -> None:
    cfg = make_scenario("prompt-switch", n_tokens=100_000, acceptance_switch_ms=2_000.0)
    acc = build_acceptance(cfg)
    assert isinstance(acc, SwitchingProfileAcceptance)
    sim = build_simulator(cfg, batch_size=256)
    sim.reset_rows(np.arange(256), np.arange(256, dtype=np.uint64) + np.uint64(7))
    counts = {0: np.zeros(8), 1: np.zeros(8)}
    totals = {0: 0, 1: 0}
    for _ in range(60):
        regime = acc.regime(sim.t_ms.copy())
        res = sim.step_round(np.full(256, 8))
        for r in (0, 1):
            m = regime == r
            counts[r] += (res.accepted[m][:, None] >= np.arange(1, 9)[None, :]).sum(axis=0)
            totals[r] += int(m.sum())
    assert totals[0] > 3000 and totals[1] > 3000
    for r in (0, 1):
        emp = counts[r] / totals[r]
        se = np.sqrt(emp * (1 - emp) / totals[r]) + 1e-3
        assert (np.abs(emp - acc.survival_of(r, 8)) < 5 * se).all(), (r, emp)


def test_prompt_switch_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="alt_profile"):
        make_scenario("qwen-geometric", acceptance_switch_ms=1000.0)
    with pytest.raises(ConfigError, match="acceptance_switch_ms"):
        make_scenario("qwen-latent-signal", acceptance_switch_ms=1000.0, alt_profile=(0.5,))
    with pytest.raises(ConfigError, match="alt_profile"):
        make_scenario("prompt-switch", alt_profile=(1.5,))


def test_oracle_on_prompt_switch_plays_the_dp_of_the_regime_in_force() -> None:
    from specstop_gym.oracle import optimal_k_for_costs, solve_markov_dp

    cfg = make_scenario("prompt-switch", n_tokens=256, requests_per_episode=4, acceptance_switch_ms=5_000.0)
    run = run_agent(make_agent("oracle", cfg, n_runs=2), cfg, [0, 1])
    acc = build_acceptance(cfg)
    tables = [solve_markov_dp(acc.survival_of(r, 8), n_tokens=256, generator_per_ms=[[0.0]], rtt_mean_ms=cfg.delay_ms,
                              rtt_cv=0.0, draft_ms=cfg.draft_ms, verify_base_ms=cfg.verify_base_ms,
                              verify_per_token_ms=cfg.verify_per_token_ms).k_table[:, 0] for r in (0, 1)]
    for i in range(2):
        m = run.seed_rows(i)
        tokens = run.columns["tokens"][m]
        left = 256 - (np.concatenate([[0], np.cumsum(tokens)[:-1]]) % 256)
        regime = acc.regime(run.columns["start_ms"][m])
        np.testing.assert_array_equal(run.columns["k"][m], np.where(regime == 0, tables[0][left], tables[1][left]))
    # far from a request's end each regime's stationary k*: code drafts longer than chat
    ks = [optimal_k_for_costs(acc.survival_of(r, 8), cfg.marginal_cost_ms, cfg.delay_ms + cfg.verify_base_ms)[0]
          for r in (0, 1)]
    assert tables[0][200] == ks[0] and tables[1][200] == ks[1] and ks[0] > ks[1]


@pytest.mark.parametrize("spec", ["ucb-specstop:window=50", "ts-specstop:discount=0.98"])
def test_forgetting_agents_run_on_prompt_switch(spec: str) -> None:
    cfg = make_scenario("prompt-switch", n_tokens=64, requests_per_episode=2)
    run = run_agent(make_agent(spec, cfg, n_runs=2), cfg, [0, 1])
    assert run.columns["k"].min() >= 1 and (run.total_tokens == 128).all()
