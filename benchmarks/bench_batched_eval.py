"""Batched multi-seed evaluation against the per-seed loop (issue 6).

Both runs evaluate the same agent on the same seeds with the same runner
(`specstop_gym.evaluation.run_agent`): batched, all seeds are rows of one
simulator and the agent answers for all of them at once; the reference loops
over the seeds with a batch of one. Both are timed in the same process, in
alternating repeats, and the ratio of rounds per second is printed (the
machines are shared and noisy: compare ratios, not absolute rates). The totals
of the two runs are checked to be identical (a deterministic agent).

    python benchmarks/bench_batched_eval.py                       # 32 seeds, ucb-specstop, qwen-geometric
    python benchmarks/bench_batched_eval.py --seeds 64 --agent static-k --scenario markov-csi
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np
from _common import parse_config

from agents.registry import make_agent
from specstop_gym import make_scenario
from specstop_gym.evaluation import run_agent


@dataclass
class Config:
    """Benchmark settings (one flag per field)."""

    seeds: int = 32
    """Seeds 0..seeds-1: rows of the batched run, iterations of the loop."""
    agent: str = "ucb-specstop"
    """Agent name (agents.registry)."""
    scenario: str = "qwen-geometric"
    """Scenario preset."""
    requests: int = 2
    """Requests per run."""
    repeats: int = 3
    """Timed runs per mode (alternating); the median is reported."""
    target: float = 10.0
    """Target ratio batched / per-seed loop (reported, not enforced)."""


def main(argv: list[str] | None = None) -> dict[str, float]:
    cfg = parse_config(Config, __doc__, argv, minimum={"seeds": 1, "requests": 1, "repeats": 1})
    scenario = make_scenario(cfg.scenario, requests_per_episode=cfg.requests)
    seeds = list(range(cfg.seeds))
    rates: dict[str, list[float]] = {"batched": [], "per-seed loop": []}
    totals = {}
    for _ in range(cfg.repeats):
        for mode, mode_rates in rates.items():
            batched = mode == "batched"
            agent = make_agent(cfg.agent, scenario, n_runs=len(seeds) if batched else 1)
            t0 = time.perf_counter()
            run = run_agent(agent, scenario, seeds, batched=batched)
            dt = time.perf_counter() - t0
            mode_rates.append(len(run.columns["k"]) / dt)
            totals[mode] = run.total_time_ms
    same = bool(np.array_equal(totals["batched"], totals["per-seed loop"]))
    med = {m: statistics.median(v) for m, v in rates.items()}
    ratio = med["batched"] / med["per-seed loop"]
    print(f"{cfg.agent} on {cfg.scenario}, {cfg.seeds} seeds x {cfg.requests} requests, {cfg.repeats} repeats")
    for m, v in med.items():
        print(f"  {m:14s} {v:12,.0f} rounds/s")
    print(f"batched / per-seed loop: {ratio:.1f}x (target >= {cfg.target:g}x); identical totals: {same}")
    return {"ratio": ratio, "identical_totals": float(same)}


if __name__ == "__main__":
    main()
