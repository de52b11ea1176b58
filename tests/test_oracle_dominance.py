"""No agent beats the oracle beyond noise, on any preset and any shipped delay trace, at either level.

For every preset, plus the shipped Wi-Fi trace replayed as a channel (the other shipped traces
are the presets ``trace-cellular``, ``trace-nr5g`` and ``trace-starlink``), at the round and the
token level, every registered agent (``local-oracle`` included) and every fixed ``k`` run on the
oracle's seeds (common random numbers). Per seed the relative difference
``(agent - oracle) / oracle`` of the per-token latency is taken, and its Student-t 95% interval
over the seeds must not lie below 0.

``best-fixed-k`` is the single static k with the lowest pooled latency over the seeds (the
runner's definition; every seed serves the same number of tokens, so that is the k of the lowest
mean latency). It is held to the same test. The best k *of each seed, chosen on that seed's own
draws* is a selection no policy can make (worth 1.45 / 0.76 / 0.50 % of latency on
``qwen-latent-signal`` with 1 / 2 / 4 requests, 64 seeds; docs/model.md): it is reported, not
asserted.

Budget: 10 seeds, each preset's own number of requests (``drift``: 2, so that an episode crosses
a 40 -> 400 ms switch), 256 tokens per request.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from agents.registry import agent_names, make_agent
from specstop_gym import make_scenario
from specstop_gym.evaluation import run_agent
from specstop_gym.evaluation.metrics import confidence_interval
from specstop_gym.scenarios import scenario_names

SEEDS = list(range(10))
CASES = scenario_names() + ["trace-wifi"]


def _scenario(case: str):
    if case == "trace-wifi":
        return make_scenario("trace-cellular", channel="trace", delay_trace="delay/synthetic_wifi_jitter.csv")
    if case == "drift":
        return make_scenario("drift", requests_per_episode=2)
    return make_scenario(case)


@functools.cache
def _latency(case: str, spec: str, level: str) -> np.ndarray:
    sc = _scenario(case)
    if spec.startswith("static-k") and level == "token":
        level = "round"  # a static k drafts k tokens and stops at either level: the same run
    return run_agent(make_agent(spec, sc, n_runs=len(SEEDS)), sc, SEEDS, level=level).per_token_latency_ms


@pytest.mark.parametrize("level", ["round", "token"])
@pytest.mark.parametrize("case", CASES)
def test_no_agent_beats_the_oracle(case: str, level: str) -> None:
    sc = _scenario(case)
    oracle = _latency(case, "oracle", level)
    specs = [a for a in agent_names() if a != "oracle"] + [f"static-k:k={k}" for k in range(1, sc.max_draft + 1)]
    report, beaten = [], []
    for spec in specs:
        d = (_latency(case, spec, level) - oracle) / oracle * 100.0
        ci = confidence_interval(d)
        report.append(f"{spec} {ci['mean']:+.3f}% [{ci['ci_low']:+.3f}, {ci['ci_high']:+.3f}]")
        if ci["ci_high"] < 0.0:
            beaten.append(report[-1])
    statics = np.array([_latency(case, f"static-k:k={k}", level) for k in range(1, sc.max_draft + 1)])
    best = int(np.argmin(statics.mean(axis=1)))  # best-fixed-k: one k for all seeds
    ci = confidence_interval((statics[best] - oracle) / oracle * 100.0)
    report.append(f"best-fixed-k (k={best + 1}) {ci['mean']:+.3f}% [{ci['ci_low']:+.3f}, {ci['ci_high']:+.3f}]")
    if ci["ci_high"] < 0.0:
        beaten.append(report[-1])
    assert not beaten, f"{case} ({level} level): beaten by " + "; ".join(beaten)
    # the best k of each seed on its own draws (hindsight no policy has) is reported, not asserted
    per_seed = (statics.min(axis=0) - oracle) / oracle * 100.0
    print(f"{case} {level}: per-seed hindsight k {per_seed.mean():+.3f}%; " + "; ".join(report))


def test_best_fixed_k_is_one_k_for_all_seeds() -> None:
    """The runner's best-fixed-k plays the single k of the lowest pooled latency on every seed."""
    from specstop_gym.evaluation.runner import run_best_fixed_k

    sc = make_scenario("qwen-latent-signal", n_tokens=64)
    seeds = list(range(6))
    run = run_best_fixed_k(sc, seeds)
    statics = np.array([run_agent(make_agent(f"static-k:k={k}", sc, n_runs=len(seeds)), sc, seeds)
                        .per_token_latency_ms for k in range(1, sc.max_draft + 1)])
    k = int(np.argmin(statics.mean(axis=1))) + 1
    assert run.description["k"] == k and set(run.columns["k"].tolist()) == {k}
    np.testing.assert_array_equal(run.per_token_latency_ms, statics[k - 1])
    assert len(run.description["k_per_seed_hindsight"]) == len(seeds)
