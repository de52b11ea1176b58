"""Plots of a grid, from the finished cells' results (no rounds are read).

* An experiment with a constant-delay axis (``delays_ms`` or ``critical_delay_factors``): per
  scenario (and variant) the delay-sweep figure of ``evaluate.py``
  (:func:`specstop_gym.evaluation.plots.plot_sweep`: the oracle's exact k*(D), each agent's
  per-token latency and gap to the oracle against the delay, D_c marked).
* Any other experiment: one figure with a point per cell (scenario, variant, trace), each agent's
  per-token latency (top) and gap to the oracle (bottom), mean and 95% CI over seeds.

Seed blocks of one point are merged: per-seed values are pooled before the interval is computed.
Agents keep the styles of every other plot (:func:`specstop_gym.evaluation.plots.agent_styles`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .grid import Cell, Grid


def _pooled(cells: Sequence[Cell], done: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, np.ndarray]]:
    """Per agent: per-seed latency and gap to the oracle, pooled over the cells (seed blocks)."""
    from .metrics import confidence_interval  # noqa: F401  (used by callers through _ci)

    out: dict[str, dict[str, list[float]]] = {}
    for c in cells:
        s = done[c.key]["summary"]
        oracle = np.array(s["agents"][s["oracle_agent"]]["per_seed"]["per_token_latency_ms"], dtype=np.float64)
        for label, e in s["agents"].items():
            lat = np.array(e["per_seed"]["per_token_latency_ms"], dtype=np.float64)
            d = out.setdefault(label, {"lat": [], "gap": []})
            d["lat"].extend(lat.tolist())
            d["gap"].extend(((lat - oracle) / oracle * 100.0).tolist())
    return {k: {n: np.array(v) for n, v in d.items()} for k, d in out.items()}


def _ci(values: np.ndarray) -> dict[str, float]:
    from .metrics import confidence_interval

    return confidence_interval(values)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_")[:80] or "x"


def plot_grid(folder: Path, grid: Grid, cells: Sequence[Cell], done: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Write the grid's figures into ``folder``; returns {figure name: file name relative to the
    grid folder}."""
    from .plots import plot_sweep
    from .report import exact_delay_curve

    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    for exp in grid.experiments:
        mine = [c for c in cells if c.experiment == exp.name]
        if not mine:
            continue
        if all(c.delay_ms is not None for c in mine):
            groups: dict[tuple[str, str | None], list[Cell]] = {}
            for c in mine:
                groups.setdefault((c.scenario, c.variant), []).append(c)
            for (scen, var), group in groups.items():
                delays = sorted({c.delay_ms for c in group})  # type: ignore[type-var]
                if len(delays) < 2:
                    continue
                agents: dict[str, Any] = {}
                seeds: set[int] = set()
                for d in delays:
                    at = [c for c in group if c.delay_ms == d]
                    for c in at:
                        seeds.update(c.spec.seeds)
                    for label, v in _pooled(at, done).items():
                        e = agents.setdefault(label, {"per_token_latency_ms": [], "gap_to_oracle_pct": []})
                        e["per_token_latency_ms"].append(_ci(v["lat"]))
                        e["gap_to_oracle_pct"].append(_ci(v["gap"]))
                base = group[0].spec.scenario
                from .grid import critical_delay_of

                d_c = critical_delay_of(base)
                lo, hi = min(delays), max(delays)
                fine = np.unique(np.r_[np.geomspace(max(lo, 1e-3), hi, 400), [d_c] if lo <= d_c <= hi else []])
                at_grid = exact_delay_curve(base, delays)
                sweep = {"delays_ms": delays, "critical_delay_ms": d_c, "k_star": at_grid["k_star"],
                         "rho_star_ms": at_grid["rho_star_ms"], "exact": exact_delay_curve(base, fine),
                         "agents": agents}
                name = _slug("__".join(x for x in (exp.name, scen, var) if x))
                title = (f"{exp.name}: {scen}{' / ' + var if var else ''}\n({len(seeds)} seeds, "
                         f"{base.requests_per_episode} request(s) x {base.n_tokens} tokens, {group[0].spec.level} level)")
                plot_sweep(sweep, folder / f"{name}.png", title)
                files[name] = f"plots/{name}.png"
        else:
            name = _slug(exp.name)
            _points_plot(folder / f"{name}.png", exp.name, mine, done)
            files[name] = f"plots/{name}.png"
    return files


def _points_plot(path: Path, title: str, cells: Sequence[Cell], done: Mapping[str, Mapping[str, Any]]) -> Path:
    """One point per cell group (seed blocks merged): latency and gap to the oracle per agent."""
    from .plots import _figure, _figure_legend, _save, agent_styles

    groups: dict[str, list[Cell]] = {}
    for c in cells:
        groups.setdefault(c.label.split("/seeds ")[0].split("/", 1)[-1], []).append(c)
    names = list(groups)
    pooled = [_pooled(g, done) for g in groups.values()]
    labels = list(dict.fromkeys(label for p in pooled for label in p))
    styles = agent_styles(labels)
    fig, axes = _figure(2, 1, (max(6.0, 1.2 * len(names) + 3), 6.4), sharex=True)
    ax_l, ax_g = axes[:, 0]
    x = np.arange(len(names), dtype=np.float64)
    width = 0.7 / max(len(labels), 1)
    for pos, label in enumerate(labels):
        xs, lat, lat_e, gap, gap_e = [], [], [], [], []
        for i, p in enumerate(pooled):
            if label not in p:
                continue
            a, g = _ci(p[label]["lat"]), _ci(p[label]["gap"])
            xs.append(x[i] + (pos - (len(labels) - 1) / 2) * width)
            lat.append(a["mean"])
            lat_e.append((a["mean"] - a["ci_low"], a["ci_high"] - a["mean"]))
            gap.append(g["mean"])
            gap_e.append((g["mean"] - g["ci_low"], g["ci_high"] - g["mean"]))
        st = styles[label]
        kw = {"color": st["color"], "marker": st["marker"], "ls": "none", "capsize": 2, "ms": 6}
        b = ax_l.errorbar(xs, lat, yerr=np.array(lat_e).T, label=label, **kw)
        b.lines[0].set_gid(f"agent:{label}")
        b = ax_g.errorbar(xs, gap, yerr=np.array(gap_e).T, label="_" + label, **kw)
        b.lines[0].set_gid(f"agent:{label}")
    ax_g.axhline(0.0, color="grey", lw=0.6)
    ax_l.set_ylabel("per-token latency\n(ms/token)")
    ax_g.set_ylabel("gap to the oracle\n(%, same seeds)")
    ax_g.set_xticks(x)
    ax_g.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
    for ax in (ax_l, ax_g):
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title}: mean and 95% CI over seeds", fontsize=10)
    _figure_legend(fig, [ax_l, ax_g])
    return _save(fig, path)


__all__ = ["plot_grid"]
