"""The measurements of issue 13 (agents that adapt) on common random numbers, as tables for docs/agents.md.

Not a speed benchmark. Every comparison runs through :func:`specstop_gym.evaluation.report.run_comparison`
(the engine of ``evaluate.py``): all agents of a comparison see the same seeds, hence the same
acceptance draws and channel realisation; relative numbers are computed per seed (paired) and
reported as mean ± 95% CI half-width over seeds. The oracle is the registry's ``oracle`` (its
description, printed with each table, says which rule it plays on that channel).

Sections (``--sections``):

* ``drift``: the three variants of the drift preset that ``evaluate.py --paper`` builds (claim (f):
  the preset; its schedule rotated to start at the other level; the other drift mode), ``drift_requests``
  requests per run: gap to the oracle of every agent and its advantage over the best fixed k in
  hindsight (paired per seed).
* ``markov``: the Markov presets with observed state, ``csi_requests`` requests: gap to the oracle and
  the advantage over the best fixed k (positive: the agent is faster).
* ``switch``: the prompt-switch preset (acceptance that drifts): gap to the oracle and advantage over
  the best fixed k.
* ``final-k``: ``final_seeds`` runs of ``final_requests`` requests at a constant delay on a preset
  (default qwen-geometric at 95 ms, k* = 2): how many runs *end at k\\**, i.e. whose most frequent
  draft length over their last ``final_window`` rounds is k*.

    python benchmarks/adaptive_targets.py
    python benchmarks/adaptive_targets.py --sections final-k --final_agents ucb-specstop ucb-specstop:bound=hoeffding
    python benchmarks/adaptive_targets.py --sections final-k --final_first_seed 64 --final_agents ucb-specstop
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
from specstop_gym.evaluation.report import run_comparison
from specstop_gym.scenarios import stationary_reference

SECTIONS = ("drift", "markov", "switch", "final-k")


@dataclass
class Config:
    """Measurement settings (one flag per field)."""

    sections: list[str] = field(default_factory=lambda: list(SECTIONS))
    """Which measurements to run: drift, markov, switch, final-k."""
    seeds: int = 16
    """Seeds of the drift, markov and switch comparisons (first_seed .. first_seed + seeds - 1)."""
    first_seed: int = 0
    """First seed of the drift, markov and switch comparisons (e.g. 16 for seeds disjoint from the default)."""
    drift_agents: list[str] = field(default_factory=lambda: ["ucb-specstop", "ts-specstop", "local-oracle"])
    """Agents on the drift variants (best-fixed-k, the first level's static k and the oracle are added;
    names the registry does not know are skipped)."""
    drift_requests: int = 12
    """Requests per run on the drift variants (PaperBudget.drift_requests)."""
    markov_presets: list[str] = field(default_factory=lambda: ["markov-csi", "markov-nr5g", "markov-starlink"])
    """Markov presets with observed state."""
    markov_agents: list[str] = field(default_factory=lambda: ["ucb-specstop", "contextual-ucb",
                                                              "contextual-ucb:planner=local", "ts-specstop"])
    """Agents on the Markov presets (best-fixed-k and the oracle are added)."""
    csi_requests: int = 12
    """Requests per run on the Markov presets (PaperBudget.csi_requests)."""
    switch_agents: list[str] = field(default_factory=lambda: [
        "ucb-specstop", "ucb-specstop:window=150", "ucb-specstop:window=300", "ucb-specstop:window=600",
        "ucb-specstop:discount=0.995", "ts-specstop", "ts-specstop:window=300"])
    """Agents on the prompt-switch preset (best-fixed-k and the oracle are added)."""
    switch_requests: int = 24
    """Requests per run on the prompt-switch preset (its own 24: about eight 60-s regimes)."""
    final_preset: str = "qwen-geometric"
    """Preset of the final-k count (channel set to constant)."""
    final_delay_ms: float = 95.0
    """Constant delay of the final-k count."""
    final_seeds: int = 64
    """Runs of the final-k count."""
    final_first_seed: int = 0
    """First seed of the final-k count (seeds final_first_seed .. final_first_seed + final_seeds - 1), e.g. 64 for
    a seed set disjoint from the default one."""
    final_requests: int = 8
    """Requests per run of the final-k count (the --paper grid's)."""
    final_window: int = 100
    """Last rounds over which the final draft length is the most frequent one."""
    final_agents: list[str] = field(default_factory=lambda: ["ucb-specstop", "ucb-specstop:bound=hoeffding",
                                                             "ts-specstop"])
    """Agents of the final-k count."""
    out: str = ""
    """Optional JSON file for every number."""


def _seeds(cfg: Config) -> list[int]:
    return list(range(cfg.first_seed, cfg.first_seed + cfg.seeds))


def _ci(x: np.ndarray) -> dict[str, float]:
    return confidence_interval(np.asarray(x, dtype=np.float64))


def _fmt(ci: dict[str, float], digits: int = 2) -> str:
    return f"{ci['mean']:.{digits}f} ± {(ci['ci_high'] - ci['ci_low']) / 2:.{digits}f}"


def _known(specs: list[str]) -> list[str]:
    from agents.registry import AGENTS

    return [s for s in specs if s.partition(":")[0] in AGENTS or s == "best-fixed-k"]


def _compare(sc, specs: list[str], seeds: list[int]) -> dict[str, Any]:
    specs = list(dict.fromkeys([*_known(specs), "best-fixed-k", "oracle"]))
    comp = run_comparison(sc, specs, seeds)
    o = comp.latency("oracle")
    b = comp.latency("best-fixed-k")
    rows = {}
    for s in specs:
        lat = comp.latency(s)
        rows[s] = {"latency_ms": _ci(lat), "gap_pct": _ci((lat - o) / o * 100.0),
                   "vs_best_fixed_k_pct": _ci((b - lat) / b * 100.0), "mean_k": float(comp.runs[s].columns["k"].mean())}
    return {"agents": rows, "oracle": comp.runs["oracle"].description,
            "best_fixed_k": comp.runs["best-fixed-k"].description}


def drift_variants() -> list[tuple[str, dict[str, Any]]]:
    """The three drift variants of ``evaluate.py --paper`` (paper.py, claim_drift): the preset, its
    schedule rotated to start at the other level, the other drift mode; ``(tag, overrides)``."""
    preset = make_scenario("drift")
    assert preset.drift_schedule is not None
    times = [t for t, _ in preset.drift_schedule]
    levels = [d for _, d in preset.drift_schedule]
    rotated = tuple(zip(times, levels[1:] + levels[:1]))
    other = "linear" if preset.drift_mode == "step" else "step"
    return [(f"{preset.drift_mode}, {levels[0]:g} ms first", {}),
            (f"{preset.drift_mode}, {rotated[0][1]:g} ms first", {"drift_schedule": rotated}),
            (f"{other}, {levels[0]:g} ms first", {"drift_mode": other})]


def drift(cfg: Config) -> list[dict[str, Any]]:
    """Every agent on the three drift variants, with the first level's static k* beside them."""
    from specstop_gym.oracle import optimal_k_for_costs
    from specstop_gym.scenarios import build_acceptance

    out = []
    for tag, ov in drift_variants():
        sc = make_scenario("drift", requests_per_episode=cfg.drift_requests, **ov)
        surv = build_acceptance(sc).survival(sc.max_draft)
        assert sc.drift_schedule is not None
        k1 = optimal_k_for_costs(surv, sc.marginal_cost_ms, sc.drift_schedule[0][1] + sc.verify_base_ms)[0]
        res = _compare(sc, [*cfg.drift_agents, f"static-k:k={k1}"], _seeds(cfg))
        res["agents"] = {("static k* of the first level" if a == f"static-k:k={k1}" else a): v
                         for a, v in res["agents"].items()}
        res["variant"] = f"{tag} (static k = {k1})"
        out.append(res)
    return out


def markov(cfg: Config) -> list[dict[str, Any]]:
    out = []
    for name in cfg.markov_presets:
        sc = make_scenario(name, requests_per_episode=cfg.csi_requests)
        res = _compare(sc, cfg.markov_agents, _seeds(cfg))
        res["preset"] = name
        out.append(res)
    return out


def switch(cfg: Config) -> list[dict[str, Any]]:
    sc = make_scenario("prompt-switch", requests_per_episode=cfg.switch_requests)
    res = _compare(sc, cfg.switch_agents, _seeds(cfg))
    res["preset"] = "prompt-switch"
    return [res]


def final_k(cfg: Config) -> dict[str, Any]:
    sc = make_scenario(cfg.final_preset, channel="constant", delay_ms=cfg.final_delay_ms,
                       requests_per_episode=cfg.final_requests)
    k_star = stationary_reference(sc)[0]
    seeds = list(range(cfg.final_first_seed, cfg.final_first_seed + cfg.final_seeds))
    comp = run_comparison(sc, [*_known(cfg.final_agents), "oracle"], seeds)
    o = comp.latency("oracle")
    rows = {}
    for s in _known(cfg.final_agents):
        run = comp.runs[s]
        ends = []
        for i in range(len(seeds)):
            k = run.columns["k"][run.seed_rows(i)]
            ends.append(int(np.bincount(k[-cfg.final_window:]).argmax()))
        ends_arr = np.array(ends)
        lat = comp.latency(s)
        rows[s] = {"end_at_k_star": int((ends_arr == k_star).sum()), "runs": len(seeds),
                   "end_k_counts": {int(v): int((ends_arr == v).sum()) for v in np.unique(ends_arr)},
                   "gap_pct": _ci((lat - o) / o * 100.0), "worst_gap_pct": float(((lat - o) / o * 100.0).max())}
    return {"preset": cfg.final_preset, "delay_ms": cfg.final_delay_ms, "k_star": int(k_star), "seeds": [seeds[0], seeds[-1]],
            "agents": rows}


def markdown(result: dict[str, Any]) -> str:
    lines: list[str] = []
    cfg = result["config"]
    for key, title in (("drift", "variant"), ("markov", "preset"), ("switch", "preset")):
        if key not in result:
            continue
        blocks = result[key]
        specs = list(blocks[0]["agents"])
        lines += [(f"{key}: gap to the oracle, % (mean ± 95% CI over {cfg['seeds']} seeds, "
                   f"{cfg['first_seed']}..{cfg['first_seed'] + cfg['seeds'] - 1}); oracle: "
                   f"{blocks[0]['oracle']}"), "",
                  f"| {title} | " + " | ".join(f"`{s}`" for s in specs if s != "oracle") + " |",
                  "|---|" + "---|" * (len(specs) - 1)]
        for blk in blocks:
            lines.append(f"| {blk.get('variant', blk.get('preset'))} | "
                         + " | ".join(_fmt(blk["agents"][s]["gap_pct"]) for s in specs if s != "oracle") + " |")
        lines += ["", f"{key}: advantage over the best fixed k in hindsight, % (positive: lower latency)", "",
                  f"| {title} | " + " | ".join(f"`{s}`" for s in specs if s not in ("best-fixed-k",)) + " |",
                  "|---|" + "---|" * (len(specs) - 1)]
        for blk in blocks:
            lines.append(f"| {blk.get('variant', blk.get('preset'))} | "
                         + " | ".join(_fmt(blk["agents"][s]["vs_best_fixed_k_pct"]) for s in specs
                                      if s not in ("best-fixed-k",)) + " |")
        lines.append("")
    if "final-k" in result:
        f = result["final-k"]
        lines += [(f"final-k: {f['preset']} at {f['delay_ms']:g} ms (k* = {f['k_star']}), "
                   f"{cfg['final_seeds']} runs (seeds {f['seeds'][0]}..{f['seeds'][1]}) of {cfg['final_requests']} requests: "
                   "runs whose most frequent k over "
                   f"the last {cfg['final_window']} rounds is k*"), "",
                  "| agent | end at k* | final k (runs) | gap to oracle % | worst run % |", "|---|---|---|---|---|"]
        for s, r in f["agents"].items():
            counts = ", ".join(f"k={k}: {n}" for k, n in r["end_k_counts"].items())
            lines.append(f"| `{s}` | {r['end_at_k_star']}/{r['runs']} | {counts} | {_fmt(r['gap_pct'])} | "
                         f"{r['worst_gap_pct']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(Config, __doc__, argv, minimum={"seeds": 2, "first_seed": 0, "drift_requests": 1, "csi_requests": 1, "switch_requests": 1,
                                                       "final_delay_ms": 0.0, "final_seeds": 1, "final_first_seed": 0,
                                                       "final_requests": 1,
                                                       "final_window": 1})
    bad = [s for s in cfg.sections if s not in SECTIONS]
    if bad:
        import argparse

        argparse.ArgumentParser(prog="adaptive_targets.py").error(
            f"--sections must be among {', '.join(SECTIONS)}, got {', '.join(bad)}")
    t0 = time.perf_counter()
    result: dict[str, Any] = {"config": asdict(cfg)}
    for sec, fn in (("drift", drift), ("markov", markov), ("switch", switch), ("final-k", final_k)):
        if sec in cfg.sections:
            result[sec] = fn(cfg)
    result["wall_s"] = time.perf_counter() - t0
    print(markdown(result))
    print(f"{result['wall_s']:.0f} s")
    if cfg.out:
        Path(cfg.out).write_text(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    main()
