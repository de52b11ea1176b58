"""False alarms and detection delays of the delay tracker (agents/delay_tracking.py), for its defaults.

Not a speed benchmark: the measurement behind ``ucb-specstop``'s ``change_threshold`` and
``change_allowance`` defaults (docs/agents.md, "Delay tracking"). The rtts are drawn as the
simulator draws them (lognormal with the given mean and coefficient of variation, one per round,
independent), from ``np.random.default_rng(seed)``.

* **False alarms** on i.i.d. jitter at each ``cv`` (0.1: the drift preset; 0.2: qwen-geometric and
  llama-heavy-head; 0.3: markov-csi's bad state): alarms per 1000 rounds over ``runs`` runs of
  ``rounds`` rounds at a constant mean, and the share of rounds whose locally optimal draft
  length ``k*(estimate)`` (qwen-geometric's costs and survival) differs from ``k*(true mean)``, for
  the tracker, the plain running mean and the last round's rtt ("jitter must not move k").
* **Detection delay** of a persistent step of the mean (``step_from`` -> ``step_to`` ms at the
  given ``cv``; defaults: the drift preset's 40 <-> 400 ms at cv 0.1, and 20% / 50% / 2x steps at
  cv 0.2): rounds from the first round at the new level to the alarm (mean, 95th percentile and
  the share detected within ``within`` rounds), after ``warmup`` rounds at the old level.

Siegmund's approximation of the one-sided average run length is printed beside the measured
false-alarm rate.

    python benchmarks/delay_tracker.py
    python benchmarks/delay_tracker.py --thresholds 4 6 8 12 --allowances 0.25 0.5 1.0
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _common import parse_config

from agents.delay_tracking import SegmentDelayTracker, siegmund_arl
from agents.ucb_specstop import batch_optimal_k
from specstop_gym import make_scenario
from specstop_gym.scenarios import build_acceptance


@dataclass
class Config:
    """Measurement settings (one flag per field)."""

    thresholds: list[float] = field(default_factory=lambda: [4.0, 6.0, 8.0, 12.0])
    """CUSUM decision intervals h (sigma units)."""
    allowances: list[float] = field(default_factory=lambda: [0.5])
    """CUSUM reference values k (sigma units)."""
    cvs: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3])
    """Jitter coefficients of variation for the false-alarm runs."""
    mean_ms: float = 150.0
    """Mean rtt of the false-alarm runs (qwen-geometric's)."""
    runs: int = 64
    """Independent runs per setting."""
    rounds: int = 2000
    """Rounds per false-alarm run."""
    steps: list[str] = field(default_factory=lambda: ["40:400:0.1", "400:40:0.1", "150:180:0.2", "150:225:0.2",
                                                      "150:300:0.2"])
    """Persistent steps as from_ms:to_ms:cv."""
    warmup: int = 200
    """Rounds at the old level before a step."""
    within: int = 5
    """Detection counted as fast within this many rounds."""
    seed: int = 0
    """Seed of the draws."""
    out: str = ""
    """Optional JSON file for every number."""


def _lognormal(rng: np.random.Generator, mean: np.ndarray, cv: float, size: tuple[int, ...]) -> np.ndarray:
    s2 = np.log1p(cv * cv)
    return mean * np.exp(np.sqrt(s2) * rng.standard_normal(size) - 0.5 * s2)


def _k_star_table():
    """``k*(d)`` for an array of delays (ms): qwen-geometric's costs and survival, vectorised."""
    sc = make_scenario("qwen-geometric")
    surv = build_acceptance(sc).survival(sc.max_draft)
    return lambda d: batch_optimal_k(surv, sc.marginal_cost_ms, np.asarray(d, dtype=np.float64) + sc.verify_base_ms)


def false_alarms(cfg: Config, h: float, k: float, cv: float, rng: np.random.Generator, kstar) -> dict[str, float]:
    x = _lognormal(rng, np.full((cfg.runs, 1), cfg.mean_ms), cv, (cfg.runs, cfg.rounds))
    tr = SegmentDelayTracker(cfg.runs, threshold=h, allowance=k)
    plain = SegmentDelayTracker(cfg.runs, threshold=None)
    rows = np.arange(cfg.runs)
    k_true = kstar(np.array([cfg.mean_ms]))[0]
    moved = {"tracker": 0, "plain mean": 0, "last rtt": 0}
    for t in range(cfg.rounds):
        tr.update(rows, x[:, t])
        plain.update(rows, x[:, t])
        if t >= 20:  # after a short start-up, where every estimator is still settling
            for name, est in (("tracker", tr.estimate(rows, 0.0)), ("plain mean", plain.estimate(rows, 0.0)),
                              ("last rtt", x[:, t])):
                moved[name] += int(np.sum(kstar(est) != k_true))
    n = cfg.runs * (cfg.rounds - 20)
    return {"alarms_per_1000_rounds": float(tr.alarms.sum() / (cfg.runs * cfg.rounds) * 1000.0),
            "runs_with_an_alarm": float((tr.alarms > 0).mean()),
            **{f"k_moved_share[{name}]": v / n for name, v in moved.items()}}


def detection(cfg: Config, h: float, k: float, spec: str, rng: np.random.Generator) -> dict[str, float]:
    a, b, cv = (float(v) for v in spec.split(":"))
    horizon = 200
    x = np.concatenate([_lognormal(rng, np.full((cfg.runs, 1), a), cv, (cfg.runs, cfg.warmup)),
                        _lognormal(rng, np.full((cfg.runs, 1), b), cv, (cfg.runs, horizon))], axis=1)
    tr = SegmentDelayTracker(cfg.runs, threshold=h, allowance=k)
    rows = np.arange(cfg.runs)
    delay = np.full(cfg.runs, np.inf)
    early = np.zeros(cfg.runs, bool)
    for t in range(x.shape[1]):
        alarm = tr.update(rows, x[:, t])
        if t < cfg.warmup:
            early |= alarm
        else:
            first = alarm & ~np.isfinite(delay)
            delay[first] = t - cfg.warmup + 1
    ok = np.isfinite(delay)
    return {"mean_delay_rounds": float(delay[ok].mean()) if ok.any() else float("inf"),
            "p95_delay_rounds": float(np.percentile(delay[ok], 95)) if ok.any() else float("inf"),
            "detected_within": float((delay <= cfg.within).mean()), "missed_in_200": float((~ok).mean()),
            "false_alarm_before_step": float(early.mean())}


def measure(cfg: Config) -> dict[str, Any]:
    rng = np.random.default_rng(cfg.seed)
    kstar = _k_star_table()
    rows = []
    for k in cfg.allowances:
        for h in cfg.thresholds:
            entry: dict[str, Any] = {"threshold": h, "allowance": k,
                                     "siegmund_arl0_one_sided": siegmund_arl(0.0, k, h),
                                     "false_alarms": {str(cv): false_alarms(cfg, h, k, cv, rng, kstar) for cv in cfg.cvs},
                                     "steps": {s: detection(cfg, h, k, s, rng) for s in cfg.steps}}
            rows.append(entry)
    return {"config": asdict(cfg), "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines = [(f"False alarms on i.i.d. lognormal jitter (mean {cfg['mean_ms']:g} ms, {cfg['runs']} runs x "
              f"{cfg['rounds']} rounds): alarms per 1000 rounds (Siegmund's one-sided ARL0 in brackets), and "
              "the share of rounds where k*(estimate) != k*(true mean) for the tracker / the plain mean / the "
              "last rtt (qwen-geometric's costs)"), "",
             "| h | k | " + " | ".join(f"cv {cv:g}: alarms/1000 | k moved (tracker / mean / last rtt)"
                                      for cv in cfg["cvs"]) + " |",
             "|---|---|" + "---|---|" * len(cfg["cvs"])]
    for r in result["rows"]:
        cells = []
        for cv in cfg["cvs"]:
            f = r["false_alarms"][str(cv)]
            cells.append(f"{f['alarms_per_1000_rounds']:.2f} ({r['siegmund_arl0_one_sided']:.0f})")
            cells.append(" / ".join(f"{100 * f[f'k_moved_share[{n}]']:.2f}%"
                                    for n in ("tracker", "plain mean", "last rtt")))
        lines.append(f"| {r['threshold']:g} | {r['allowance']:g} | " + " | ".join(cells) + " |")
    lines += ["", (f"Detection of a persistent step after {cfg['warmup']} rounds at the old level: mean delay "
                   f"(rounds), 95th percentile, share within {cfg['within']} rounds"), "",
              ("| h | k | " + " | ".join(f"{s.replace(':', ' -> ', 1).replace(':', ' ms, cv ')}" for s in cfg["steps"])
               + " |"), "|---|---|" + "---|" * len(cfg["steps"])]
    for r in result["rows"]:
        cells = [f"{d['mean_delay_rounds']:.1f} (p95 {d['p95_delay_rounds']:.0f}; {100 * d['detected_within']:.0f}%)"
                 for d in (r["steps"][s] for s in cfg["steps"])]
        lines.append(f"| {r['threshold']:g} | {r['allowance']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(Config, __doc__, argv, minimum={"thresholds": 0.01, "allowances": 0.0, "cvs": 0.0,
                                                       "mean_ms": 0.01, "runs": 1, "rounds": 30, "warmup": 1,
                                                       "within": 1})
    for s in cfg.steps:
        parts = s.split(":")
        try:
            ok = len(parts) == 3 and all(float(p) > 0 for p in parts[:2]) and float(parts[2]) >= 0
        except ValueError:
            ok = False
        if not ok:
            import argparse

            argparse.ArgumentParser(prog="delay_tracker.py").error(
                f"--steps entries must be from_ms:to_ms:cv with positive delays, got {s!r}")
    t0 = time.perf_counter()
    result = measure(cfg)
    result["wall_s"] = time.perf_counter() - t0
    print(markdown(result))
    print(f"{result['wall_s']:.0f} s")
    if cfg.out:
        Path(cfg.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
