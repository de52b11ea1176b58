"""Baselines under different settings on the delay grid of ``evaluate.py --paper`` (claims (c)-(e)).

Not a speed benchmark: a measurement script for tuning the baselines fairly. Every agent
spec given with ``--agents`` runs on the constant-delay grid of the paper run
(``PaperBudget``: qwen-geometric and llama-heavy-head, 25..1600 ms, 8 seeds, 8 requests of
256 tokens, token level), together with ``--reference`` (ucb-specstop) and the oracle, on
common random numbers. Printed per preset, one row per spec and one column per delay
(mean ± 95% CI half-width over seeds, computed per seed):

* ``latency``: per-token latency, ms/token;
* ``gap``: gap to the oracle, ``(lat - lat_oracle) / lat_oracle * 100``;
* ``advantage``: how much lower the reference's latency is, ``(lat - lat_ref) / lat * 100``
  (the quantity of claims (c) and (e)).

    python benchmarks/baseline_sensitivity.py --agents specdec++:threshold=0.3 specdec++:threshold=0.7
    python benchmarks/baseline_sensitivity.py --agents naive-ucb naive-ucb:bonus=per-arm,c=0.2 --metrics gap advantage
    python benchmarks/baseline_sensitivity.py --agents heuristic --presets llama-heavy-head --delays_ms 25 400 --out r.json
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _common import parse_config

from specstop_gym import make_scenario
from specstop_gym.evaluation.metrics import confidence_interval
from specstop_gym.evaluation.paper import PaperBudget
from specstop_gym.evaluation.report import run_comparison

_BUDGET = PaperBudget()
METRICS = ("latency", "gap", "advantage")


@dataclass
class Config:
    """Measurement settings (one flag per field); defaults are the --paper delay grid."""

    agents: list[str] = field(default_factory=lambda: ["specdec++", "naive-ucb", "heuristic"])
    """Agent specs to measure (name[:key=value,...])."""
    reference: str = "ucb-specstop"
    """The agent whose advantage over each spec is reported."""
    presets: list[str] = field(default_factory=lambda: ["qwen-geometric", "llama-heavy-head"])
    """Scenario presets (the channel is set to constant at each delay)."""
    delays_ms: list[float] = field(default_factory=lambda: list(_BUDGET.grid_delays_ms))
    """Constant delays (ms)."""
    seeds: int = _BUDGET.seeds
    """Seeds first_seed .. first_seed + seeds - 1 (common random numbers)."""
    first_seed: int = 0
    """First seed (e.g. 8 for seeds disjoint from the --paper run's 0..7)."""
    requests: int = _BUDGET.grid_requests
    """Requests per run."""
    n_tokens: int = 256
    """Tokens per request."""
    level: str = "token"
    """round or token (the paper grid runs at the token level)."""
    set: list[str] = field(default_factory=list)
    """Scenario overrides FIELD=VALUE applied to every preset (values parsed as evaluate.py --set)."""
    metrics: list[str] = field(default_factory=lambda: list(METRICS))
    """Tables to print: latency, gap, advantage."""
    out: str = ""
    """Optional JSON file for every number."""


def _ci(x: np.ndarray) -> dict[str, float]:
    return confidence_interval(np.asarray(x, dtype=np.float64))


def _overrides(items: list[str]) -> dict[str, Any]:
    from specstop_gym.cli import parse_value

    out: dict[str, Any] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--set needs FIELD=VALUE, got {item!r}")
        out[key.strip()] = parse_value(value)
    return out


def measure(cfg: Config) -> dict[str, Any]:
    """Every spec at every (preset, delay): latency, gap to the oracle and the reference's advantage."""
    specs = list(dict.fromkeys([*cfg.agents, cfg.reference, "oracle"]))
    seeds = list(range(cfg.first_seed, cfg.first_seed + cfg.seeds))
    points = []
    overrides = _overrides(cfg.set)
    for preset in cfg.presets:
        base = make_scenario(preset, n_tokens=cfg.n_tokens, **overrides)
        for d in cfg.delays_ms:
            sc = base.replace(channel="constant", delay_ms=float(d), requests_per_episode=cfg.requests)
            comp = run_comparison(sc, specs, seeds, level=cfg.level)
            lat_o, lat_r = comp.latency("oracle"), comp.latency(cfg.reference)
            per = {}
            for s in specs:
                lat = comp.latency(s)
                per[s] = {"latency": _ci(lat), "gap": _ci((lat - lat_o) / lat_o * 100.0),
                          "advantage": _ci((lat - lat_r) / lat * 100.0),
                          "mean_k": float(comp.runs[s].columns["k"].mean())}
            points.append({"preset": preset, "delay_ms": float(d), "agents": per})
    return {"config": asdict(cfg), "specs": specs, "points": points}


def _cell(ci: dict[str, float], digits: int) -> str:
    half = (ci["ci_high"] - ci["ci_low"]) / 2
    return f"{ci['mean']:.{digits}f} ± {half:.{digits}f}"


def markdown(result: dict[str, Any], metrics: list[str]) -> str:
    """One table per (preset, metric): rows = specs, columns = delays."""
    cfg = result["config"]
    titles = {"latency": "per-token latency, ms/token",
              "gap": "gap to the oracle, %",
              "advantage": f"{cfg['reference']}'s advantage over the agent, % (positive: {cfg['reference']} lower)"}
    lines = []
    for preset in cfg["presets"]:
        pts = [p for p in result["points"] if p["preset"] == preset]
        for m in metrics:
            lines += [f"{preset}: {titles[m]}", "",
                      "| agent | " + " | ".join(f"{p['delay_ms']:g} ms" for p in pts) + " |",
                      "|---|" + "---|" * len(pts)]
            for s in result["specs"]:
                if m == "advantage" and s in (cfg["reference"], "oracle"):
                    continue
                if m == "gap" and s == "oracle":
                    continue
                lines.append(f"| `{s}` | " + " | ".join(_cell(p["agents"][s][m], 2 if m == "latency" else 1)
                                                      for p in pts) + " |")
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(Config, __doc__, argv, minimum={"seeds": 1, "first_seed": 0, "requests": 1, "n_tokens": 1, "delays_ms": 0.0})
    bad = [m for m in cfg.metrics if m not in METRICS]
    if bad or cfg.level not in ("round", "token"):
        import argparse

        msg = (f"--metrics must be among {', '.join(METRICS)}, got {', '.join(bad)}" if bad
               else f"--level must be round or token, got {cfg.level}")
        argparse.ArgumentParser(prog="baseline_sensitivity.py").error(msg)
    try:
        overrides = _overrides(cfg.set)
        for preset in cfg.presets:
            make_scenario(preset, **overrides)
    except ValueError as e:
        import argparse

        argparse.ArgumentParser(prog="baseline_sensitivity.py").error(str(e))
    t0 = time.perf_counter()
    result = measure(cfg)
    result["wall_s"] = time.perf_counter() - t0
    print(markdown(result, cfg.metrics))
    print(f"{cfg.seeds} seeds ({cfg.first_seed}..{cfg.first_seed + cfg.seeds - 1}), {cfg.requests} requests x {cfg.n_tokens} tokens, {cfg.level} level; "
          f"{result['wall_s']:.0f} s")
    if cfg.out:
        Path(cfg.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
