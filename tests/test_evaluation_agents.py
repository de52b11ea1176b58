"""Every agent through the evaluation runner: all presets and both levels, learning and the oracle.

* every registered agent (and best-fixed-k) runs on every preset at the round and token level;
* on stationary presets ucb-specstop's choices converge to the oracle's k* and its
  (pseudo-)regret grows sublinearly;
* on identical draws no agent beats the oracle beyond noise (presets without a confidence
  signal: with one, a token-level rule can legitimately beat the round-level oracle);
* batched and per-seed-loop evaluation of deterministic agents give identical totals.
"""

from __future__ import annotations

import numpy as np
import pytest

from agents.registry import agent_names, make_agent
from specstop_gym.evaluation.metrics import add_regret, confidence_interval, reference_rho
from specstop_gym.evaluation.runner import run_agent, run_best_fixed_k
from specstop_gym.scenarios import make_scenario, scenario_names, stationary_reference

AGENTS = agent_names()
PRESETS = scenario_names()
TINY = {"n_tokens": 16, "requests_per_episode": 1}


def _check_run(run, scenario, seeds) -> None:
    cols = run.columns
    k = cols["k"]
    assert len(k) > 0
    assert ((k >= 1) & (k <= scenario.max_draft)).all()
    assert ((cols["accepted"] >= 0) & (cols["accepted"] <= k)).all()
    assert ((cols["tokens"] >= 1) & (cols["tokens"] <= cols["accepted"] + 1)).all()
    assert (cols["time_ms"] > 0).all() and np.isfinite(cols["time_ms"]).all()
    for i, _ in enumerate(seeds):
        m = run.seed_rows(i)
        assert cols["tokens"][m].sum() == run.total_tokens[i] == scenario.n_tokens * scenario.requests_per_episode
        assert cols["time_ms"][m].sum() == pytest.approx(run.total_time_ms[i])
        assert (np.diff(cols["round"][m]) == 1).all()


@pytest.mark.parametrize("level", ["round", "token"])
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("agent", AGENTS)
def test_every_agent_runs_on_every_preset(agent: str, preset: str, level: str) -> None:
    sc = make_scenario(preset, **TINY)
    seeds = [0, 1]
    run = run_agent(make_agent(agent, sc, n_runs=len(seeds), seed=0), sc, seeds, level=level)
    _check_run(run, sc, seeds)


@pytest.mark.parametrize("preset", PRESETS)
def test_best_fixed_k_runs_on_every_preset(preset: str) -> None:
    sc = make_scenario(preset, n_tokens=16, requests_per_episode=1, max_draft=4)
    seeds = [0, 1, 2]
    run = run_best_fixed_k(sc, seeds)
    _check_run(run, sc, seeds)
    # best in hindsight over the pooled seeds: no static k spent less time for the same tokens
    pooled = run.total_time_ms.sum() / run.total_tokens.sum()
    for k in range(1, sc.max_draft + 1):
        other = run_agent(make_agent("static-k", sc, n_runs=len(seeds), k=k), sc, seeds)
        assert pooled <= other.total_time_ms.sum() / other.total_tokens.sum() + 1e-9


# --------------------------------------------------------------------------- learning
@pytest.mark.parametrize("preset, overrides", [
    ("qwen-geometric", {"delay_ms": 300.0}),
    ("llama-heavy-head", {}),
])
def test_ucb_specstop_converges_to_oracle_k(preset: str, overrides: dict) -> None:
    sc = make_scenario(preset, requests_per_episode=8, **overrides)
    k_star, _ = stationary_reference(sc)
    seeds = list(range(6))
    run = run_agent(make_agent("ucb-specstop", sc, n_runs=len(seeds), seed=0), sc, seeds)
    rho_ref, _ = reference_rho(sc, run)
    add_regret(run, rho_ref, sc)
    late, first_half, second_half = [], [], []
    for i in range(len(seeds)):
        m = run.seed_rows(i)
        k = run.columns["k"][m]
        late.append(k[int(0.8 * len(k)):])
        pr = run.columns["pseudo_regret_ms"][m]
        mid = len(pr) // 2
        first_half.append(pr[mid - 1])
        second_half.append(pr[-1] - pr[mid - 1])
    share = float(np.mean(np.concatenate(late) == k_star))
    assert share >= 0.9, f"ucb-specstop chose k* = {k_star} in only {share:.0%} of the last 20% of rounds"
    # sublinear: the second half of the run adds less (pseudo-)regret than the first
    assert np.mean(second_half) < np.mean(first_half), (np.mean(first_half), np.mean(second_half))


@pytest.mark.parametrize("preset", [p for p in PRESETS if make_scenario(p).confidence_sigma is None])
def test_no_agent_beats_the_oracle_beyond_noise(preset: str) -> None:
    sc = make_scenario(preset, requests_per_episode=1)
    seeds = list(range(6))
    oracle = run_agent(make_agent("oracle", sc, n_runs=len(seeds), seed=0), sc, seeds)
    for agent in AGENTS:
        if agent == "oracle":
            continue
        run = run_agent(make_agent(agent, sc, n_runs=len(seeds), seed=0), sc, seeds)
        diff = run.per_token_latency_ms - oracle.per_token_latency_ms  # paired: same draws
        ci = confidence_interval(diff)
        half = ci["ci_high"] - ci["mean"]
        assert ci["mean"] >= -3 * half, (agent, preset, ci)


@pytest.mark.parametrize("agent, params", [("static-k", {"k": 3}), ("heuristic", {}), ("oracle", {})])
@pytest.mark.parametrize("preset", ["qwen-geometric", "markov-csi", "drift"])
def test_batched_equals_per_seed_loop(agent: str, params: dict, preset: str) -> None:
    sc = make_scenario(preset, n_tokens=32, requests_per_episode=2)
    seeds = [3, 1, 4, 15]
    batched = run_agent(make_agent(agent, sc, n_runs=len(seeds), seed=0, **params), sc, seeds)
    looped = run_agent(make_agent(agent, sc, n_runs=1, seed=0, **params), sc, seeds, batched=False)
    np.testing.assert_array_equal(batched.total_tokens, looped.total_tokens)
    np.testing.assert_array_equal(batched.total_time_ms, looped.total_time_ms)
    for c in ("seed", "round", "k", "accepted", "tokens", "time_ms", "rtt_ms", "state"):
        np.testing.assert_array_equal(batched.columns[c], looped.columns[c], err_msg=c)
