"""What optimising per request leaves against the exact whole-episode path DP (issue 11).

The ``oracle`` optimises each request on the known path from its exact start, valuing the end
of every request but the last by a continuation ``g`` (:mod:`specstop_gym.path_request`). On the
discretised model of the whole-episode DP (same grid, jitter nodes and windows procedure) this
script computes, per episode (drift: the one schedule; trace: each seed's own offset):

* ``V``: the whole-episode DP's value, the least expected episode time (``scope=episode``);
* ``E``: the exact expected episode time of the per-request policy (its grid policy propagated
  forward without truncation, as the DP's own check does),

and prints ``(E - V) / V`` in % (mean and largest over the episodes): the bound on what the
per-request optimisation leaves, for each continuation asked for. The leak columns bound what
the windows leave (the expected visits to states outside them). With ``--simulate`` it also runs
the ``oracle`` (per request, as played) against ``oracle:scope=episode`` on the seeds (common
random numbers) and prints the paired difference of the per-token latency (mean and 95%
interval). The numbers of docs/model.md ("Per request") come from this script.

    python benchmarks/oracle_scope.py                                        # every case, 4 and 20 requests
    python benchmarks/oracle_scope.py --cases trace-cellular --requests 20 --simulate
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from _common import parse_config

from agents.oracle_agent import _survival, _tx_per_token_ms, default_grid_ms
from specstop_gym import make_scenario
from specstop_gym.path_oracle import path_from_channel, solve_path_dp
from specstop_gym.scenarios import build_simulator

#: name -> (preset, overrides): the drift preset and evaluate.py --paper's two other drift
#: variants (claim f), the three trace presets and the shipped synthetic Wi-Fi trace.
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "drift": ("drift", {}),
    "drift-400-first": ("drift", {"drift_schedule": ((0.0, 400.0), (20000.0, 40.0))}),
    "drift-linear": ("drift", {"drift_mode": "linear"}),
    "trace-cellular": ("trace-cellular", {}),
    "trace-nr5g": ("trace-nr5g", {}),
    "trace-starlink": ("trace-starlink", {}),
    "trace-wifi": ("trace-cellular", {"channel": "trace", "delay_trace": "delay/synthetic_wifi_jitter.csv"}),
}


@dataclass
class Config:
    """Settings (one flag per field)."""

    cases: list[str] = field(default_factory=lambda: list(CASES))
    """Cases (drift, drift-400-first, drift-linear, trace-cellular, trace-nr5g, trace-starlink, trace-wifi)."""
    requests: list[int] = field(default_factory=lambda: [4, 20])
    """Requests per episode (each value a row)."""
    seeds: int = 8
    """Seeds 0..seeds-1: one episode offset each on a trace (a drift schedule is one episode)."""
    continuations: list[str] = field(default_factory=lambda: ["token-clock", "completion"])
    """Continuations to bound (token-clock: the default; completion: g = 0)."""
    grid_ms: float = 0.0
    """Time step (ms); 0: the oracle's default (min(10, draft_ms / 2))."""
    n_tokens: int = 0
    """Tokens per request; 0: the preset's (256)."""
    simulate: bool = False
    """Also run oracle against oracle:scope=episode on the seeds (paired per-token latency)."""


def _bound_row(case: str, requests: int, cfg: Config) -> dict[str, Any]:
    preset, over = CASES[case]
    if cfg.n_tokens:
        over = {**over, "n_tokens": cfg.n_tokens}
    sc = make_scenario(preset, requests_per_episode=requests, **over)
    sim = build_simulator(sc, cfg.seeds)
    seeds = list(range(cfg.seeds))
    from specstop_gym.evaluation.runner import seed_keys

    sim.reset_rows(np.arange(cfg.seeds), seed_keys(seeds))
    offsets = sorted(set(sim.rows.offset_ms.tolist())) if sc.channel == "trace" else [0.0]
    kw = dict(n_tokens=sc.n_tokens, n_requests=requests, draft_ms=sc.draft_ms, verify_base_ms=sc.verify_base_ms,
              verify_per_token_ms=sc.verify_per_token_ms, tx_per_token_ms=_tx_per_token_ms(sc),
              grid_ms=cfg.grid_ms or default_grid_ms(sc), keep_values_mb=0.0)
    s = _survival(sc)
    rel: dict[str, list[float]] = {g: [] for g in cfg.continuations}
    leak = 0.0
    c0 = time.process_time()
    for off in offsets:
        path = path_from_channel(sim.channel, off)
        ep = solve_path_dp(s, path, **kw)
        leak = max(leak, ep.leak)
        for g in cfg.continuations:
            pr = solve_path_dp(s, path, continuation=g, **kw)
            leak = max(leak, pr.leak)
            rel[g].append((pr.expected_time_ms - ep.value_ms) / ep.value_ms * 100.0)
    row: dict[str, Any] = {"case": case, "requests": requests, "episodes": len(offsets), "leak": leak,
                           "cpu_s": time.process_time() - c0}
    for g in cfg.continuations:
        a = np.array(rel[g])
        row[g] = {"mean_pct": float(a.mean()), "max_pct": float(a.max()), "min_pct": float(a.min())}
    if cfg.simulate:
        row["simulated"] = _simulate(sc, seeds)
    return row


def _simulate(sc: Any, seeds: list[int]) -> dict[str, float]:
    from agents.registry import make_agent
    from specstop_gym.evaluation import run_agent
    from specstop_gym.evaluation.metrics import confidence_interval

    lat = {spec: run_agent(make_agent(spec, sc, n_runs=len(seeds)), sc, seeds).per_token_latency_ms
           for spec in ("oracle", "oracle:scope=episode")}
    d = (lat["oracle"] - lat["oracle:scope=episode"]) / lat["oracle:scope=episode"] * 100.0
    ci = confidence_interval(d)
    return {"mean_pct": ci["mean"], "ci_low": ci["ci_low"], "ci_high": ci["ci_high"]}


def _usage_error(message: str) -> None:
    """One line on stderr, exit code 2 (as the argument parser does)."""
    print(f"oracle_scope.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    cfg = parse_config(Config, __doc__, argv, minimum={"requests": 1, "seeds": 2, "grid_ms": 0.0,
                                                              "n_tokens": 0})
    bad = [c for c in cfg.cases if c not in CASES] + [g for g in cfg.continuations
                                                      if g not in ("token-clock", "completion")]
    if bad:
        _usage_error(f"unknown case or continuation {bad[0]!r}; cases: "
                         f"{', '.join(CASES)}; continuations: token-clock, completion")
    head = "| case | requests | episodes | " + " | ".join(f"{g}: mean % | {g}: largest %" for g in cfg.continuations)
    head += " | leak (largest) |" + (" simulated oracle vs scope=episode, % [95% CI] |" if cfg.simulate else "")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    rows = []
    for case in cfg.cases:
        for r in cfg.requests:
            row = _bound_row(case, r, cfg)
            rows.append(row)
            line = f"| `{case}` | {r} | {row['episodes']} | " + " | ".join(
                f"{row[g]['mean_pct']:+.5f} | {row[g]['max_pct']:+.5f}" for g in cfg.continuations)
            line += f" | {row['leak']:.1e} |"
            if cfg.simulate:
                sm = row["simulated"]
                line += f" {sm['mean_pct']:+.3f} [{sm['ci_low']:+.3f}, {sm['ci_high']:+.3f}] |"
            print(line, flush=True)
    return rows


if __name__ == "__main__":
    main()
