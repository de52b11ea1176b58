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

import argparse
import statistics
import time

import numpy as np

from agents.registry import make_agent
from specstop_gym import make_scenario
from specstop_gym.evaluation import run_agent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=32)
    p.add_argument("--agent", default="ucb-specstop")
    p.add_argument("--scenario", default="qwen-geometric")
    p.add_argument("--requests", type=int, default=2, help="requests per run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--target", type=float, default=10.0)
    args = p.parse_args()
    scenario = make_scenario(args.scenario, requests_per_episode=args.requests)
    seeds = list(range(args.seeds))
    rates = {"batched": [], "per-seed loop": []}
    totals = {}
    for _ in range(args.repeats):
        for mode in rates:
            batched = mode == "batched"
            agent = make_agent(args.agent, scenario, n_runs=len(seeds) if batched else 1)
            t0 = time.perf_counter()
            run = run_agent(agent, scenario, seeds, batched=batched)
            dt = time.perf_counter() - t0
            rates[mode].append(len(run.columns["k"]) / dt)
            totals[mode] = run.total_time_ms
    same = np.array_equal(totals["batched"], totals["per-seed loop"])
    med = {m: statistics.median(v) for m, v in rates.items()}
    ratio = med["batched"] / med["per-seed loop"]
    print(f"{args.agent} on {args.scenario}, {args.seeds} seeds x {args.requests} requests, {args.repeats} repeats")
    for m, v in med.items():
        print(f"  {m:14s} {v:12,.0f} rounds/s")
    print(f"batched / per-seed loop: {ratio:.1f}x (target >= {args.target:g}x); identical totals: {same}")


if __name__ == "__main__":
    main()
