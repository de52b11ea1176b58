"""Cost of the path oracle against the time the other agents take on the same evaluation (issue 11).

The run is ``evaluate.py``'s default comparison on a trace scenario: the default agents on
``--seeds`` seeds with ``--requests`` requests per run (evaluate.py's defaults: 8 seeds, 20
requests of 256 tokens). The oracle's time is everything it costs in that run: building the
agent, its DPs (per request by default: the shared DP of the requests before the last and each
run's own DP of the last request, solved when the run reaches it; ``--oracle
oracle:scope=episode``: one whole-episode DP per trace offset), the per-round decisions, and the
run itself. The oracle's caches (its DPs, the scenario's path) are cleared before each repeat, so
every repeat solves from scratch. The agents' time is the sum of their runs (``best-fixed-k`` runs
static-k for every k). Oracle and agents alternate over the repeats, so that both see the same
machine load; the median ratio is printed with the spread over the repeats, in wall-clock and in
process CPU time, with the load average before and after. A timing benchmark, not a test:
machines are shared and noisy, compare ratios measured in one run.

    python benchmarks/bench_oracle.py                              # trace-cellular, 8 seeds, 20 requests
    python benchmarks/bench_oracle.py --scenario drift --repeats 3
    python benchmarks/bench_oracle.py --oracle oracle:scope=episode   # the exact whole-episode DP
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from _common import parse_config

from agents.registry import make_agent
from specstop_gym import make_scenario
from specstop_gym.evaluation import run_agent
from specstop_gym.evaluation.runner import BEST_FIXED_K, run_best_fixed_k

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from evaluate import DEFAULT_AGENTS


@dataclass
class Config:
    """Benchmark settings (one flag per field)."""

    scenario: str = "trace-cellular"
    """Scenario preset (a trace or drift channel exercises the path DP)."""
    seeds: int = 8
    """Seeds 0..seeds-1 (one episode offset each on a trace)."""
    requests: int = 20
    """Requests per run (evaluate.py's default)."""
    oracle: str = "oracle"
    """The oracle's agent spec (e.g. oracle:scope=episode, oracle:grid_ms=20)."""
    agents: list[str] = field(default_factory=lambda: [a for a in DEFAULT_AGENTS if a != "oracle"])
    """The agents whose time is the reference (evaluate.py's defaults without the oracle)."""
    repeats: int = 3
    """Timed runs of the oracle and of the agents (alternating); the median ratio is reported."""
    target: float = 0.5
    """Target ratio oracle / agents (reported, not enforced): well under 1."""


def _timed(fn) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def _clear_oracle_caches() -> None:
    from agents import oracle_agent

    for cached in (oracle_agent._drift_dp, oracle_agent._shared_request_dp, oracle_agent._scenario_path):
        cached.cache_clear()


def _usage_error(message: str) -> None:
    """One line on stderr, exit code 2 (as the argument parser does)."""
    print(f"bench_oracle.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> dict[str, float]:
    cfg = parse_config(Config, __doc__, argv, minimum={"seeds": 1, "requests": 1, "repeats": 1})
    if cfg.oracle.partition(":")[0] != "oracle":
        _usage_error(f"--oracle must be an oracle spec (oracle[:key=value,...]), "
                         f"got {cfg.oracle!r}")
    scenario = make_scenario(cfg.scenario, requests_per_episode=cfg.requests)
    seeds = list(range(cfg.seeds))
    oracle_t: list[tuple[float, float]] = []
    agents_t: list[tuple[float, float]] = []
    info: dict = {}
    load0 = os.getloadavg()
    for _ in range(cfg.repeats):
        _clear_oracle_caches()

        def run_oracle() -> None:
            agent = make_agent(cfg.oracle, scenario, n_runs=len(seeds))
            run_agent(agent, scenario, seeds)
            info.clear()
            info.update(agent.describe())

        def run_agents() -> None:
            for spec in cfg.agents:
                if spec == BEST_FIXED_K:
                    run_best_fixed_k(scenario, seeds)
                else:
                    run_agent(make_agent(spec, scenario, n_runs=len(seeds)), scenario, seeds)

        oracle_t.append(_timed(run_oracle))
        agents_t.append(_timed(run_agents))
    load1 = os.getloadavg()
    out: dict[str, float] = {}
    how = f"scope={info.get('scope', '-')}, grid_ms={info.get('grid_ms', '-')}, jitter_nodes={info.get('jitter_nodes', '-')}"
    print(f"{cfg.oracle} ({how}) vs {len(cfg.agents)} agents on {cfg.scenario}: {cfg.seeds} seeds x "
          f"{cfg.requests} requests x {scenario.n_tokens} tokens, {cfg.repeats} repeats; load average "
          f"{load0[0]:.2f} before, {load1[0]:.2f} after ({os.cpu_count()} CPUs)")
    for i, clock in enumerate(("wall", "cpu")):
        ratios = [o[i] / a[i] for o, a in zip(oracle_t, agents_t)]
        out[f"ratio_{clock}"] = statistics.median(ratios)
        out[f"oracle_{clock}_s"] = statistics.median(o[i] for o in oracle_t)
        out[f"agents_{clock}_s"] = statistics.median(a[i] for a in agents_t)
        print(f"  {clock:4s}: oracle {out[f'oracle_{clock}_s']:7.2f} s "
              f"({min(o[i] for o in oracle_t):.2f}..{max(o[i] for o in oracle_t):.2f}), agents "
              f"{out[f'agents_{clock}_s']:7.2f} s ({min(a[i] for a in agents_t):.2f}..{max(a[i] for a in agents_t):.2f}), "
              f"ratio {out[f'ratio_{clock}']:.3f} (spread {min(ratios):.3f}..{max(ratios):.3f}; target < {cfg.target:g})")
    pr = info.get("per_request")
    if pr:
        parts = [f"continuation {pr['continuation']}"]
        for kind in ("before", "last"):
            dp = pr.get(f"shared_dp_{kind}")
            if dp:
                parts.append(f"shared DP ({kind}): {dp['states']:,} states, {dp['cpu_s']:.2f} s CPU")
        if pr["per_run_dps_solved"]:
            parts.append(f"{pr['per_run_dps_solved']} per-run request DPs, {pr['per_run_cpu_s']:.2f} s CPU")
        print("  (last repeat) " + "; ".join(parts))
    dps = [info["dp"]] if "dp" in info else list(info.get("dp_per_offset", {}).values())
    if dps:
        print(f"  (last repeat) whole-episode DPs: {len(dps)}, {sum(d['solve_s'] for d in dps):.2f} s to solve (wall), "
              f"{sum(d['states'] for d in dps) / len(dps):,.0f} grid states each, largest leak "
              f"{max(d['leak'] for d in dps):.2e}")
    return out


if __name__ == "__main__":
    main()
