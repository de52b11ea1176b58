"""The simulator against the exact formulas (Monte Carlo within standard errors)."""

from __future__ import annotations

import numpy as np
import pytest

from specstop_gym import make_scenario
from specstop_gym.core import rng
from specstop_gym.core.acceptance import (LatentDifficultyAcceptance, ProfileAcceptance, TraceAcceptance,
                                          geometric, logit)
from specstop_gym.core.channel import IIDChannel
from specstop_gym.core.simulator import Simulator
from specstop_gym.oracle import per_token_latency, solve_markov_dp
from specstop_gym.scenarios import build_simulator

K = 8


def _trace_process() -> TraceAcceptance:
    g = np.random.default_rng(11)
    n = 3000
    length = g.integers(1, K + 1, n)
    true_g = g.geometric(1 - 0.6, n) - 1  # P(G >= i) = 0.6^i
    run = np.minimum(true_g, length)
    return TraceAcceptance(run_lengths=run, censored=run == length, draft_lengths=length)


PROCESSES = {
    "geometric": geometric(0.55),
    "heavy-head": ProfileAcceptance((0.70, 0.28)),
    "latent": LatentDifficultyAcceptance((0.75, 0.6), tau=1.0, eps_sigma=0.5),
    "trace": _trace_process(),
}


@pytest.mark.parametrize("name", list(PROCESSES))
def test_exact_survival_matches_the_draws(name: str) -> None:
    proc = PROCESSES[name]
    n = 200_000
    keys = np.full(n, 12345, np.uint64)
    g, _ = proc.draw(keys, np.arange(n), K)
    exact = proc.survival(K)
    for i in range(1, K + 1):
        p = exact[i - 1]
        se = np.sqrt(max(p * (1 - p), 1e-12) / n)
        assert abs((g >= i).mean() - p) < 4 * se + 1e-9, (name, i, (g >= i).mean(), p)


@pytest.mark.parametrize("channel", ["constant", "iid"])
@pytest.mark.parametrize("name", list(PROCESSES))
@pytest.mark.parametrize("k", [1, 3, 6])
def test_fixed_k_latency_matches_per_token_latency(name: str, channel: str, k: int) -> None:
    cfg = make_scenario("qwen-geometric", channel=channel, delay_ms=200.0, delay_cv=0.3, n_tokens=10**9,
                        max_draft=K)
    rows = 256
    sim = Simulator(cfg, PROCESSES[name], IIDChannel(200.0, cv=0.0 if channel == "constant" else 0.3), rows)
    sim.reset_rows(np.arange(rows), np.arange(rows, dtype=np.uint64) * 7919 + 17)
    for _ in range(120):
        sim.step_round(np.full(rows, k))
    ratio = sim.episode_time_ms / sim.episode_tokens  # per row: 120 rounds each
    exact = per_token_latency(PROCESSES[name].survival(K), k, draft_ms=cfg.draft_ms,
                              verify_base_ms=cfg.verify_base_ms, verify_per_token_ms=cfg.verify_per_token_ms,
                              delay_ms=200.0)
    pooled = sim.episode_time_ms.sum() / sim.episode_tokens.sum()
    se = ratio.std(ddof=1) / np.sqrt(rows)
    assert abs(pooled - exact) < 4 * se, (pooled, exact, se)


def test_confidence_signal_is_logit_noise_of_the_given_sigma() -> None:
    n = 100_000
    keys = np.full(n, 99, np.uint64)
    p = np.full((n, K), 0.6)
    from specstop_gym.core.acceptance import confidence_signal

    q = confidence_signal(keys, np.arange(n), p, 0.5)
    noise = logit(q) - logit(p)
    assert noise.mean() == pytest.approx(0.0, abs=4 * 0.5 / np.sqrt(n * K))
    assert noise.std() == pytest.approx(0.5, rel=0.01)


def test_row_of_a_batch_equals_a_batch_of_one_and_crn_across_policies() -> None:
    cfg = make_scenario("markov-csi", n_tokens=200)
    keys = np.array([5, 6, 7], np.uint64)
    big = build_simulator(cfg, 3)
    big.reset_rows(np.arange(3), keys)
    one = build_simulator(cfg, 1)
    one.reset_rows(np.array([0]), keys[1:2])
    for r in range(40):
        k = np.array([1 + r % 4, 2, 3])
        a = big.step_round(k)
        b = one.step_round(k[1:2])
        assert a.round_ms[1] == b.round_ms[0] and a.accepted[1] == b.accepted[0]
    # common random numbers: another policy on the same key sees the same run length in round r
    x = build_simulator(cfg, 1)
    y = build_simulator(cfg, 1)
    x.reset_rows(np.array([0]), keys[:1])
    y.reset_rows(np.array([0]), keys[:1])
    for r in range(30):
        assert x.g[0] == y.g[0] and x.round_idx[0] == y.round_idx[0] == r
        x.step_round(np.array([1]))
        y.step_round(np.array([5]))


def test_markov_dp_matches_simulation_of_its_policy_and_beats_every_fixed_k() -> None:
    cfg = make_scenario("markov-csi", n_tokens=48)
    surv = np.cumprod(np.full(cfg.max_draft, cfg.alpha))
    sol = solve_markov_dp(surv, n_tokens=cfg.n_tokens, generator_per_ms=np.array(cfg.markov_generator_per_ms),
                          rtt_mean_ms=np.array(cfg.markov_rtt_mean_ms), rtt_cv=np.array(cfg.markov_rtt_cv),
                          draft_ms=cfg.draft_ms, verify_base_ms=cfg.verify_base_ms,
                          verify_per_token_ms=cfg.verify_per_token_ms)
    rows = 4000

    def simulate(policy) -> tuple[np.ndarray, np.ndarray]:
        sim = build_simulator(cfg, rows)
        sim.reset_rows(np.arange(rows), np.arange(rows, dtype=np.uint64) + 1000)
        start = sim.csi.copy()
        while not sim.done.all():
            active = np.flatnonzero(~sim.done)
            sim.step_round(policy(sim, active), active)
        return sim.episode_time_ms, start

    def dp_policy(sim, active):
        return sol.k_table[sim.tokens_left[active], sim.csi[active]]

    time_dp, start = simulate(dp_policy)
    for s in range(2):
        m = start == s
        se = time_dp[m].std(ddof=1) / np.sqrt(m.sum())
        assert abs(time_dp[m].mean() - sol.value_ms[cfg.n_tokens, s]) < 4 * se, (s, time_dp[m].mean(),
                                                                                 sol.value_ms[cfg.n_tokens, s])
    best_fixed = min(simulate(lambda sim, a, k=k: np.full(len(a), k))[0].mean() for k in range(1, 7))
    assert time_dp.mean() <= best_fixed


def test_markov_channel_time_share_matches_stationary_distribution() -> None:
    cfg = make_scenario("markov-csi", n_tokens=10**9)
    sim = build_simulator(cfg, 64)
    sim.reset_rows(np.arange(64), np.arange(64, dtype=np.uint64) + 3)
    t = np.linspace(0, 2_000_000, 1001)  # 2000 s per row, sampled every 2 s
    states = np.stack([sim.channel.state_at(sim.rows, np.arange(64), sim.keys, np.full(64, ti)) for ti in t])
    share_bad = (states == 1).mean()
    assert share_bad == pytest.approx(0.25, abs=0.03)  # stays 30 s good / 10 s bad


def test_drift_and_trace_channels_follow_their_definitions() -> None:
    cfg = make_scenario("drift", drift_cv=0.0)
    sim = build_simulator(cfg, 1)
    sim.reset_rows(np.array([0]), np.array([1], np.uint64))
    ch = sim.channel
    idx = np.array([0])
    for t, mean in [(0.0, 40.0), (19_999.0, 40.0), (20_000.0, 400.0), (39_999.0, 400.0), (40_000.0, 40.0)]:
        assert ch.sample_rtt(sim.rows, idx, sim.keys, np.array([t]), np.array([0]))[0] == mean
    tr = make_scenario("trace-cellular", delay_trace_offset=False)
    sim = build_simulator(tr, 1)
    sim.reset_rows(np.array([0]), np.array([1], np.uint64))
    ch = sim.channel
    for j in [0, 5, len(ch.times_ms) - 1]:
        t = np.array([ch.times_ms[j]])
        assert ch.sample_rtt(sim.rows, idx, sim.keys, t, np.array([0]))[0] == ch.rtts_ms[j]
        looped = t + ch.duration_ms
        assert ch.sample_rtt(sim.rows, idx, sim.keys, looped, np.array([0]))[0] == ch.rtts_ms[j]


def test_counter_based_draws_are_uniform_and_key_dependent() -> None:
    u = rng.uniform(np.uint64(1), rng.STREAM_ACCEPT_U, np.arange(100_000))
    assert u.min() > 0 and u.max() < 1
    assert u.mean() == pytest.approx(0.5, abs=0.005) and u.var() == pytest.approx(1 / 12, rel=0.02)
    v = rng.uniform(np.uint64(2), rng.STREAM_ACCEPT_U, np.arange(100_000))
    assert abs(np.corrcoef(u, v)[0, 1]) < 0.02
