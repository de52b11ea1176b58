"""Cumulative regret of an agent on stationary presets against the shapes of the paper's regret bounds.

Not a speed benchmark: a measurement script (docs/agents.md, "ucb-specstop: regret"). The
reference paper (arXiv 2606.20591, abstract) bounds UCB-SpecStop's regret by
``O(L_max sqrt(K_max T log(K_max T)))`` (gap-free) and ``O(sum_k L_max^2 log(K_max T) / Delta_k)``
(gap-dependent), i.e. shapes ``sqrt(T log T)`` and ``log T`` in the number of rounds ``T``.

For each preset (stationary channel: the reference is the exact ``rho*``, SPEC 4) the agent runs
``rounds`` rounds in each of ``seeds`` runs of one long request (no request ends), and the
**pseudo-regret** after round ``t`` is

    R(t) = sum_{r<=t} (k_r c + B - rho* (1 + sum_{i<=k_r} S_i)),

the expected extra time (ms) of the draft lengths it chose (SPEC 5; realised regret adds a
zero-mean random walk of size ``sqrt(t)`` that would favour the square-root shape). The mean over
seeds is fitted on ``t`` in ``[fit_from, rounds]`` (log-spaced points) by least squares through
the origin, ``R ~ a sqrt(t log t)`` and ``R ~ b log t``; printed per preset: ``a``, ``b``, the RMS
residual of each fit (ms, and relative to the mean of ``R`` over the fitted points), the final
regret with its 95% CI over seeds, and the share of the last 10% of rounds at ``k*``. A PNG
(``--plot``) shows the mean regret, its CI band and both fits on a log time axis.

    python benchmarks/regret_shape.py
    python benchmarks/regret_shape.py --agent ts-specstop --rounds 20000 --plot regret.png --out regret.json
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _common import parse_config

from agents import make_agent
from specstop_gym import make_scenario
from specstop_gym.evaluation.metrics import confidence_interval
from specstop_gym.evaluation.runner import run_agent
from specstop_gym.scenarios import build_acceptance, build_channel, stationary_reference


@dataclass
class Config:
    """Measurement settings (one flag per field)."""

    agent: str = "ucb-specstop"
    """Agent spec (name[:key=value,...])."""
    presets: list[str] = field(default_factory=lambda: ["qwen-geometric", "llama-heavy-head",
                                                        "qwen-geometric@95", "llama-heavy-head@400"])
    """Stationary presets; name@D sets a constant delay of D ms (plain names keep the preset's iid channel)."""
    seeds: int = 16
    """Runs (seeds 0..seeds-1, common random numbers)."""
    rounds: int = 20000
    """Rounds per run (one request long enough never to end)."""
    fit_from: int = 100
    """First round of the fitted range."""
    plot: str = ""
    """Optional PNG of the curves and fits."""
    out: str = ""
    """Optional JSON file for every number."""


def _preset(spec: str, rounds: int):
    name, _, delay = spec.partition("@")
    over: dict[str, Any] = {"n_tokens": 8 * rounds + 16, "requests_per_episode": 1}
    if delay:
        over.update(channel="constant", delay_ms=float(delay))
    sc = make_scenario(name, **over)
    if sc.channel not in ("constant", "iid") or sc.acceptance_switch_ms is not None:
        raise ValueError(f"preset {spec!r} is not stationary (channel {sc.channel!r})")
    return sc


def fit_shapes(t: np.ndarray, regret: np.ndarray) -> dict[str, float]:
    """Least squares through the origin of ``regret`` on ``sqrt(t log t)`` and on ``log t``.

    Returns ``a``, ``b``, the RMS residuals ``rms_sqrt``, ``rms_log`` (units of ``regret``) and the
    same relative to the mean of ``regret`` (``rel_sqrt``, ``rel_log``).
    """
    t = np.asarray(t, dtype=np.float64)
    y = np.asarray(regret, dtype=np.float64)
    if t.shape != y.shape or t.size < 2 or (t <= 1).any():
        raise ValueError("fit_shapes needs matching arrays of at least 2 points with t > 1")
    out: dict[str, float] = {}
    for key, x in (("sqrt", np.sqrt(t * np.log(t))), ("log", np.log(t))):
        coef = float(x @ y / (x @ x))
        rms = float(np.sqrt(np.mean((y - coef * x) ** 2)))
        out["a" if key == "sqrt" else "b"] = coef
        out[f"rms_{key}"] = rms
        out[f"rel_{key}"] = rms / max(float(np.mean(np.abs(y))), 1e-300)
    return out


def measure_preset(cfg: Config, spec: str) -> dict[str, Any]:
    sc = _preset(spec, cfg.rounds)
    seeds = list(range(cfg.seeds))
    agent = make_agent(cfg.agent, sc, n_runs=len(seeds), seed=0)
    run = run_agent(agent, sc, seeds, max_rounds=cfg.rounds)
    surv = build_acceptance(sc).survival(sc.max_draft)
    b = build_channel(sc).long_run_mean_rtt_ms() + sc.verify_base_ms
    k_star, rho = stationary_reference(sc)
    cum_s = np.concatenate([[0.0], np.cumsum(surv)])
    curves = []
    at_k_star = []
    for i in range(len(seeds)):
        k = run.columns["k"][run.seed_rows(i)].astype(np.int64)
        inst = k * sc.marginal_cost_ms + b - rho * (1.0 + cum_s[k])
        curves.append(np.cumsum(inst))
        at_k_star.append(float((k[-max(1, len(k) // 10):] == k_star).mean()))
    n = min(len(c) for c in curves)
    r = np.stack([c[:n] for c in curves])
    mean = r.mean(axis=0)
    t_all = np.arange(1, n + 1)
    pts = np.unique(np.geomspace(min(cfg.fit_from, n - 1), n, 60).astype(np.int64))
    pts = pts[pts > 1]
    fits = fit_shapes(pts.astype(float), mean[pts - 1])
    sd = r.std(axis=0, ddof=1) if len(seeds) > 1 else np.zeros(n)
    half = 1.96 * sd / math.sqrt(len(seeds))
    grid = np.unique(np.geomspace(1, n, 200).astype(np.int64))
    return {"preset": spec, "k_star": int(k_star), "rho_star_ms": float(rho), "rounds": int(n),
            "final_regret_ms": confidence_interval(r[:, -1]), "share_at_k_star_last_10pct": float(np.mean(at_k_star)),
            "fit": fits, "fit_points": pts.tolist(),
            "curve": {"t": t_all[grid - 1].tolist(), "mean": mean[grid - 1].tolist(), "half_ci": half[grid - 1].tolist()}}


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines = [(f"`{cfg['agent']}`: cumulative pseudo-regret (ms) over {cfg['rounds']} rounds, {cfg['seeds']} seeds; "
              f"fits through the origin on t in [{cfg['fit_from']}, {cfg['rounds']}]"), "",
             ("| preset | k* | rho* ms/token | R(T) ms (95% CI) | a: R ~ a sqrt(t log t) | RMS resid. | "
              "b: R ~ b log t | RMS resid. | last 10% at k* |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for p in result["presets"]:
        f, fr = p["fit"], p["final_regret_ms"]
        lines.append(f"| {p['preset']} | {p['k_star']} | {p['rho_star_ms']:.2f} | {fr['mean']:.0f} ± "
                     f"{(fr['ci_high'] - fr['ci_low']) / 2:.0f} | {f['a']:.3g} | {f['rms_sqrt']:.0f} "
                     f"({100 * f['rel_sqrt']:.0f}%) | {f['b']:.3g} | {f['rms_log']:.0f} ({100 * f['rel_log']:.0f}%) | "
                     f"{100 * p['share_at_k_star_last_10pct']:.1f}% |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ps = result["presets"]
    fig, axes = plt.subplots(1, len(ps), figsize=(4.2 * len(ps), 3.4), squeeze=False)
    for ax, p in zip(axes[0], ps):
        t = np.asarray(p["curve"]["t"], dtype=float)
        m = np.asarray(p["curve"]["mean"])
        h = np.asarray(p["curve"]["half_ci"])
        ax.fill_between(t, m - h, m + h, alpha=0.25, label="95% CI")
        ax.plot(t, m, lw=1.5, label="mean pseudo-regret")
        tt = t[t > 1]
        ax.plot(tt, p["fit"]["a"] * np.sqrt(tt * np.log(tt)), "--", label="a sqrt(t log t)")
        ax.plot(tt, p["fit"]["b"] * np.log(tt), ":", label="b log t")
        ax.set_xscale("log")
        ax.set_title(f"{p['preset']} (k* = {p['k_star']})", fontsize=9)
        ax.set_xlabel("round t")
        ax.set_ylabel("regret, ms")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{result['config']['agent']}: cumulative pseudo-regret", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(Config, __doc__, argv, minimum={"seeds": 1, "rounds": 10, "fit_from": 2})
    if cfg.fit_from >= cfg.rounds:
        import argparse

        argparse.ArgumentParser(prog="regret_shape.py").error(
            f"--fit_from must be below --rounds ({cfg.rounds}), got {cfg.fit_from}")
    t0 = time.perf_counter()
    try:
        presets = [measure_preset(cfg, p) for p in cfg.presets]
    except ValueError as e:
        import argparse

        argparse.ArgumentParser(prog="regret_shape.py").error(str(e))
    result = {"config": asdict(cfg), "presets": presets, "wall_s": time.perf_counter() - t0}
    print(markdown(result))
    print(f"{result['wall_s']:.0f} s")
    if cfg.plot:
        plot(result, cfg.plot)
    if cfg.out:
        Path(cfg.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
