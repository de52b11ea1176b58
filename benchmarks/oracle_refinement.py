"""Refinement of the path oracle's time grid: value, policy and simulated latency at h, h/2, h/4, ...

For each grid step the whole-episode path DP (``oracle:scope=episode``; the per-request DP of the
default oracle has the same grid and interpolation) is solved on the scenario (drift: the schedule;
trace: each seed's own offset) and the oracle built on it is run on the same seeds (common random
numbers). Printed per step: the DP's expected per-token latency on the discretised model (for a
trace: the mean over the seeds' DPs) and its change from the finest step; the share of the
finest run's decisions (its visited (progress, time) states) where this step's oracle drafts a
different k; the simulated per-token latency and its paired difference from the finest step
(mean and Student-t 95% interval over seeds); grid states, solve time and leak. The numbers of
docs/model.md ("The oracle: discretisation") come from this script.

    python benchmarks/oracle_refinement.py                                   # drift, 20/10/5/2.5 ms
    python benchmarks/oracle_refinement.py --scenario trace-cellular --requests 4 --seeds 32
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from _common import parse_config

from agents.registry import make_agent
from specstop_gym import make_scenario
from specstop_gym.evaluation import run_agent
from specstop_gym.evaluation.metrics import confidence_interval
from specstop_gym.evaluation.runner import seed_keys
from specstop_gym.scenarios import build_simulator


@dataclass
class Config:
    """Refinement settings (one flag per field)."""

    scenario: str = "drift"
    """Scenario preset (drift or trace channel)."""
    grids: list[float] = field(default_factory=lambda: [20.0, 10.0, 5.0, 2.5])
    """Grid steps (ms), coarsest first; the last is the reference."""
    seeds: int = 32
    """Seeds of the simulated runs (common random numbers)."""
    requests: int = 4
    """Requests per episode."""
    n_tokens: int = 256
    """Tokens per request."""


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    cfg = parse_config(Config, __doc__, argv, minimum={"grids": 1e-3, "seeds": 2, "requests": 1, "n_tokens": 1})
    sc = make_scenario(cfg.scenario, requests_per_episode=cfg.requests, n_tokens=cfg.n_tokens)
    seeds = list(range(cfg.seeds))
    runs = []
    for g in cfg.grids:
        t0 = time.perf_counter()
        agent = make_agent(f"oracle:grid_ms={g},scope=episode", sc, n_runs=len(seeds))
        run = run_agent(agent, sc, seeds)
        desc = agent.describe()
        dps = [desc["dp"]] if "dp" in desc else list(desc["dp_per_offset"].values())
        runs.append((g, agent, run, dps, time.perf_counter() - t0))
    g_ref, agent_ref, ref, _, _ = runs[-1]
    sim = build_simulator(sc, len(seeds))
    sim.reset_rows(np.arange(len(seeds)), seed_keys(seeds))
    offsets = sim.rows.offset_ms.copy()  # the episode offsets of the seeds (0 for drift)
    cols = ref.columns
    # the reference run's decisions: progress before each round (tokens so far in the episode)
    progress = np.zeros(len(cols["k"]), np.int64)
    for i in range(len(seeds)):
        m = ref.seed_rows(i)
        progress[m] = np.concatenate([[0], np.cumsum(cols["tokens"][m])[:-1]])
    value_ref = float(np.mean([d["value_ms"] for d in runs[-1][3]])) / (sc.n_tokens * cfg.requests)
    out = []
    print(f"{cfg.scenario}: {cfg.seeds} seeds x {cfg.requests} requests x {cfg.n_tokens} tokens; reference h = {g_ref} ms")
    print("| h (ms) | DP ms/token | change from finest | decisions differing | simulated ms/token | paired diff vs finest | states per DP | solve s per DP | leak |")
    print("|---|---|---|---|---|---|---|---|---|")
    for g, agent, run, dps, wall in runs:
        value = float(np.mean([d["value_ms"] for d in dps])) / (sc.n_tokens * cfg.requests)
        differ = 0
        if agent is not agent_ref:
            rows = np.searchsorted(seeds, cols["seed"])
            for i in range(len(seeds)):
                m = rows == i
                sol = agent.path_solution(float(offsets[i]))
                differ += int((sol.k(progress[m], cols["start_ms"][m]) != cols["k"][m]).sum())
        d = (run.per_token_latency_ms - ref.per_token_latency_ms) / ref.per_token_latency_ms * 100
        ci = confidence_interval(d)
        row = {"grid_ms": g, "value_ms_per_token": value, "value_change_pct": (value - value_ref) / value_ref * 100,
               "decisions_differing": differ / len(cols["k"]), "latency": float(run.per_token_latency_ms.mean()),
               "diff_pct": ci["mean"], "diff_lo": ci["ci_low"], "diff_hi": ci["ci_high"],
               "states": float(np.mean([x["states"] for x in dps])), "solve_s": float(np.mean([x["solve_s"] for x in dps])),
               "leak": float(max(x["leak"] for x in dps))}
        out.append(row)
        print(f"| {g:g} | {value:.4f} | {row['value_change_pct']:+.4f}% | {100 * row['decisions_differing']:.2f}% | "
              f"{row['latency']:.4f} | {ci['mean']:+.3f}% [{ci['ci_low']:+.3f}, {ci['ci_high']:+.3f}] | "
              f"{row['states']:,.0f} | {row['solve_s']:.2f} | {row['leak']:.1e} |")
    return out


if __name__ == "__main__":
    main()
