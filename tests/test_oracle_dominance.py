"""No agent beats the oracle beyond noise, on any preset and any shipped delay trace, at either level.

For every preset, plus the shipped Wi-Fi trace replayed as a channel (the other shipped traces
are the presets ``trace-cellular``, ``trace-nr5g`` and ``trace-starlink``), at the round and the
token level, every registered agent (``local-oracle`` included) and every fixed ``k`` run on the
oracle's seeds (common random numbers). Per seed the relative difference
``(agent - oracle) / oracle`` of the per-token latency is taken, and its Student-t 95% interval
over the seeds must not lie below 0.

``best-fixed-k`` is the best static k *of each seed, chosen on that seed's own draws*: a
selection no policy can make, worth 1.45 / 0.76 / 0.50 % of latency on ``qwen-latent-signal``
with 1 / 2 / 4 requests (64 seeds; docs/model.md). The test therefore holds the oracle against
every fixed k (which covers the best fixed k in expectation) and reports the per-seed
best-fixed-k's difference without asserting on it.

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
    assert not beaten, f"{case} ({level} level): beaten by " + "; ".join(beaten)
    # the per-seed best-fixed-k (hindsight on each seed's draws) is reported, not asserted
    statics = np.array([_latency(case, f"static-k:k={k}", level) for k in range(1, sc.max_draft + 1)])
    bfk = (statics.min(axis=0) - oracle) / oracle * 100.0
    print(f"{case} {level}: best-fixed-k (per seed) {bfk.mean():+.3f}%; " + "; ".join(report))
