"""Cost of the path oracle against the time the other agents take on the same evaluation (issue 11).

The run is ``evaluate.py``'s default comparison on a trace scenario: the default agents on
``--seeds`` seeds with ``--requests`` requests per run (evaluate.py's defaults: 8 seeds, 20
requests of 256 tokens). The oracle's time is everything it costs in that run: building the
agent, one path DP per episode offset (solved when the run first needs it), the per-request
values recomputed from checkpoints and the per-round decisions. The agents' time is the
sum of their runs (``best-fixed-k`` runs static-k for every k). Oracle and agents alternate
over the repeats, so that both see the same machine load; the median ratio is printed with
the spread over the repeats, in wall-clock and in process CPU time. A timing benchmark, not a
test: machines are shared and noisy, compare ratios measured in one run.

    python benchmarks/bench_oracle.py                              # trace-cellular, 8 seeds, 20 requests
    python benchmarks/bench_oracle.py --scenario drift --repeats 3
"""

from __future__ import annotations

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
    agents: list[str] = field(default_factory=lambda: [a for a in DEFAULT_AGENTS if a != "oracle"])
    """The agents whose time is the reference (evaluate.py's defaults without the oracle)."""
    repeats: int = 2
    """Timed runs of the oracle and of the agents (alternating); the median ratio is reported."""
    target: float = 0.5
    """Target ratio oracle / agents (reported, not enforced): well under 1."""


def _timed(fn) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def main(argv: list[str] | None = None) -> dict[str, float]:
    cfg = parse_config(Config, __doc__, argv, minimum={"seeds": 1, "requests": 1, "repeats": 1})
    scenario = make_scenario(cfg.scenario, requests_per_episode=cfg.requests)
    seeds = list(range(cfg.seeds))
    oracle_t: list[tuple[float, float]] = []
    agents_t: list[tuple[float, float]] = []
    info: dict[str, float] = {}
    for _ in range(cfg.repeats):
        from agents import oracle_agent

        oracle_agent._drift_dp.cache_clear()  # a drift DP is cached per scenario: solve it again

        def run_oracle() -> None:
            agent = make_agent("oracle", scenario, n_runs=len(seeds))
            run_agent(agent, scenario, seeds)
            desc = agent.describe()
            dps = [desc["dp"]] if "dp" in desc else list(desc.get("dp_per_offset", {}).values())
            info["dp_solve_s"] = sum(d["solve_s"] for d in dps)
            info["dp_states"] = sum(d["states"] for d in dps) / max(len(dps), 1)
            info["dp_leak_max"] = max((d["leak"] for d in dps), default=0.0)
            info["dps"] = len(dps)

        def run_agents() -> None:
            for spec in cfg.agents:
                if spec == BEST_FIXED_K:
                    run_best_fixed_k(scenario, seeds)
                else:
                    run_agent(make_agent(spec, scenario, n_runs=len(seeds)), scenario, seeds)

        oracle_t.append(_timed(run_oracle))
        agents_t.append(_timed(run_agents))
    out: dict[str, float] = {}
    print(f"oracle vs {len(cfg.agents)} agents on {cfg.scenario}: {cfg.seeds} seeds x {cfg.requests} requests x "
          f"{scenario.n_tokens} tokens, {cfg.repeats} repeats")
    for i, clock in enumerate(("wall", "cpu")):
        ratios = [o[i] / a[i] for o, a in zip(oracle_t, agents_t)]
        out[f"ratio_{clock}"] = statistics.median(ratios)
        print(f"  {clock:4s}: oracle {statistics.median(o[i] for o in oracle_t):7.2f} s, agents "
              f"{statistics.median(a[i] for a in agents_t):7.2f} s, ratio {out[f'ratio_{clock}']:.3f} "
              f"(spread {min(ratios):.3f}..{max(ratios):.3f}; target < {cfg.target:g})")
    if info.get("dps"):
        print(f"  path DPs: {info['dps']:.0f}, {info['dp_solve_s']:.2f} s to solve (wall, last repeat), "
              f"{info['dp_states']:,.0f} grid states each, largest leak {info['dp_leak_max']:.2e}")
    return out


if __name__ == "__main__":
    main()
