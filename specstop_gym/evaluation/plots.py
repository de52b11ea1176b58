"""Plots of an evaluation (matplotlib, Agg backend: no display needed).

* :func:`plot_regret`: cumulative regret over rounds, mean over seeds with a 95% band;
* :func:`plot_latency`: per-token latency per agent (bars with 95% CI, the oracle as a line);
* :func:`plot_k_over_time`: the chosen draft length over rounds (mean over seeds), oracle k*;
* :func:`plot_sweep`: over a grid of constant delays, the oracle's k*(D) (step plot) and each
  agent's per-token latency, the critical delay D_c marked.

Every function writes one PNG and returns its path. Seeds end their runs at different rounds;
in the per-round curves a seed that has finished keeps its final value (regret) or drops out
of the mean (chosen k).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from .runner import AgentRun

DPI = 120


def _t_quantile(n: int, level: float = 0.95) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, n - 1)) if n >= 2 else 0.0


def _per_round_matrix(run: AgentRun, column: str, fill: str) -> np.ndarray:
    """(seeds, rounds) matrix of a column by round index; after a seed's last round ``fill``
    is ``"last"`` (carry the final value) or ``"nan"``."""
    cols = run.columns
    n_rounds = int(cols["round"].max()) + 1 if len(cols["round"]) else 0
    mat = np.full((len(run.seeds), n_rounds), np.nan)
    for i in range(len(run.seeds)):
        m = run.seed_rows(i)
        r = cols["round"][m].astype(np.int64)
        mat[i, r] = cols[column][m]
        if fill == "last" and m.any():
            last = int(r.max())
            mat[i, last + 1:] = cols[column][m][-1]
    return mat


def _mean_band(mat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over rows (ignoring NaN) and the 95% CI half-width at each column."""
    n = np.sum(~np.isnan(mat), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # columns with < 2 seeds: no spread
        mean = np.nanmean(mat, axis=0) if mat.size else np.zeros(0)
        sd = np.nanstd(mat, axis=0, ddof=1) if mat.shape[0] > 1 else np.zeros(mat.shape[1])
    uniq = np.unique(n)
    table = {int(u): _t_quantile(int(u)) for u in uniq}  # one t quantile per distinct seed count
    tq = np.array([table[int(x)] for x in n]) if mat.shape[0] > 1 else np.zeros(mat.shape[1])
    half = np.where(n >= 2, tq * np.nan_to_num(sd) / np.sqrt(np.maximum(n, 1)), 0.0)
    return mean, half


def _colors(labels: Sequence[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {lab: cmap(i % cmap.N) for i, lab in enumerate(labels)}


def _style(label: str) -> dict[str, Any]:
    if label.split(":")[0] == "oracle":
        return {"color": "black", "linestyle": "--"}
    return {}


def _widths(labels: Sequence[str]) -> dict[str, float]:
    """Line widths decreasing with the agent's position: agents whose curves coincide (e.g.
    ucb-specstop and contextual-ucb without CSI) stay visible as a thin line on a thick one."""
    n = max(len(labels) - 1, 1)
    return {lab: 2.8 - 1.8 * i / n for i, lab in enumerate(labels)}


def plot_regret(runs: Mapping[str, AgentRun], path: str | Path, title: str) -> Path:
    """Cumulative regret (ms) over rounds per agent: mean over seeds and a 95% CI band.

    A second panel shows pseudo-regret (expectations given the chosen k) when available.
    """
    has_pseudo = all("pseudo_regret_ms" in r.columns for r in runs.values()) and bool(runs)
    panels = ["regret_ms"] + (["pseudo_regret_ms"] if has_pseudo else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.2), squeeze=False)
    colors = _colors(list(runs))
    widths = _widths(list(runs))
    for ax, column in zip(axes[0], panels):
        for label, run in runs.items():
            if not len(run.columns["k"]):
                continue
            mean, half = _mean_band(_per_round_matrix(run, column, "last"))
            x = np.arange(1, len(mean) + 1)
            style = {"color": colors[label], **_style(label)}
            ax.plot(x, mean, label=label, lw=widths[label], **style)
            ax.fill_between(x, mean - half, mean + half, color=style["color"], alpha=0.15, lw=0)
        ax.axhline(0.0, color="grey", lw=0.6)
        ax.set_xlabel("round")
        ax.set_ylabel("cumulative " + ("pseudo-regret" if column.startswith("pseudo") else "regret") + " (ms)")
        ax.grid(alpha=0.3)
    axes[0][0].set_title(title, fontsize=10)
    axes[0][-1].legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def plot_latency(summary: Mapping[str, Any], path: str | Path, title: str) -> Path:
    """Per-token latency (ms/token) per agent: bars with 95% CI, oracle (and rho*) as lines."""
    agents = summary["agents"]
    labels = list(agents)
    means = np.array([agents[a]["per_token_latency_ms"]["mean"] for a in labels])
    lo = np.array([agents[a]["per_token_latency_ms"]["ci_low"] for a in labels])
    hi = np.array([agents[a]["per_token_latency_ms"]["ci_high"] for a in labels])
    colors = _colors(labels)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(labels) + 2), 4.2))
    x = np.arange(len(labels))
    ax.bar(x, means, color=[colors[a] for a in labels], alpha=0.85,
           yerr=np.vstack([means - lo, hi - means]), capsize=4)
    oracle = summary.get("oracle_agent")
    if oracle in agents:
        ax.axhline(agents[oracle]["per_token_latency_ms"]["mean"], color="black", ls="--", lw=1,
                   label=f"{oracle} (realised)")
    rho = summary.get("oracle", {}).get("rho_star_ms")
    if rho is not None:
        ax.axhline(rho, color="black", ls=":", lw=1, label=f"rho* = {rho:.2f} ms (exact)")
    low = float(np.nanmin(lo)) if len(lo) else 0.0
    high = float(np.nanmax(hi)) if len(hi) else 1.0
    pad = 0.15 * max(high - low, 1e-9)
    ax.set_ylim(max(0.0, low - pad), high + pad)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("per-token latency (ms/token)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_k_over_time(runs: Mapping[str, AgentRun], oracle: Mapping[str, Any], path: str | Path, title: str,
                     smooth: int | None = None) -> Path:
    """Chosen draft length over rounds: mean over the seeds still running (drawn while at least half
    of the seeds are), moving average.

    The stationary k* is a horizontal line; for drift/Markov channels the stationary optimum at
    each mean rtt level is drawn dotted.
    """
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    colors = _colors(list(runs))
    widths = _widths(list(runs))
    longest = max((int(r.columns["round"].max()) + 1 for r in runs.values() if len(r.columns["round"])),
                  default=1)
    w = smooth or max(1, longest // 60)
    for label, run in runs.items():
        if not len(run.columns["k"]):
            continue
        mat = _per_round_matrix(run, "k", "nan")
        running = np.sum(~np.isnan(mat), axis=0)
        mat = mat[:, running >= max(1, mat.shape[0] / 2)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(mat, axis=0)
        if w > 1 and len(mean) >= w:
            kernel = np.ones(w) / w
            mean = np.convolve(mean, kernel, mode="valid")
            x = np.arange(len(mean)) + (w + 1) / 2
        else:
            x = np.arange(1, len(mean) + 1)
        ax.plot(x, mean, label=label, lw=widths[label], color=colors[label],
                **{k: v for k, v in _style(label).items() if k != "color"})
    if oracle.get("k_star") is not None:
        ax.axhline(oracle["k_star"], color="black", lw=1.5, ls=":", label=f"oracle k* = {oracle['k_star']}")
    x_right = ax.get_xlim()[1]
    for lev in oracle.get("local", []):
        ax.axhline(lev["k_star"], color="grey", lw=0.8, ls=":")
        ax.text(x_right, lev["k_star"], f"k*({lev['rtt_ms']:.0f} ms) = {lev['k_star']} ", fontsize=7, va="bottom",
                ha="right", color="grey")
    ax.set_xlabel("round")
    smoothing = f", moving average of {w}" if w > 1 else ""
    ax.set_ylabel(f"chosen k (mean over seeds{smoothing})")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_sweep(sweep: Mapping[str, Any], path: str | Path, title: str) -> Path:
    """Delay sweep: the oracle's k*(D) (step plot, exact, fine grid) above, each agent's measured
    per-token latency against the delay below (mean and 95% CI over seeds), with the exact
    rho*(D); the critical delay D_c as a vertical line in both panels."""
    fig, (ax_k, ax_l) = plt.subplots(2, 1, figsize=(7.5, 7.0), sharex=True,
                                     gridspec_kw={"height_ratios": [1, 1.6]})
    fine = sweep["exact"]
    d_fine = np.asarray(fine["delays_ms"])
    ax_k.step(d_fine, fine["k_star"], where="post", color="black", lw=1.5, label="oracle k*(D)")
    ax_k.set_ylabel("optimal draft length k*")
    ax_l.plot(d_fine, fine["rho_star_ms"], color="black", ls=":", lw=1.2, label="rho*(D) exact")
    labels = list(sweep["agents"])
    colors = _colors(labels)
    d = np.asarray(sweep["delays_ms"])
    for label in labels:
        pts = sweep["agents"][label]["per_token_latency_ms"]
        mean = np.array([p["mean"] for p in pts])
        lo = np.array([p["ci_low"] for p in pts])
        hi = np.array([p["ci_high"] for p in pts])
        style = {"color": colors[label], **_style(label)}
        ax_l.errorbar(d, mean, yerr=np.vstack([mean - lo, hi - mean]), marker="o", ms=3, lw=1.1, capsize=2,
                      label=label, **style)
    dc = sweep.get("critical_delay_ms")
    if dc is not None and math.isfinite(dc) and dc > 0:
        for ax in (ax_k, ax_l):
            ax.axvline(dc, color="red", lw=1, ls="--")
        ax_k.text(dc, ax_k.get_ylim()[1], f" D_c = {dc:.1f} ms", color="red", fontsize=8, va="top")
    ax_l.set_xscale("log")
    ax_l.set_yscale("log")
    ax_l.set_xlabel("constant round-trip delay D (ms)")
    ax_l.set_ylabel("per-token latency (ms/token)")
    ax_k.set_title(title, fontsize=10)
    for ax in (ax_k, ax_l):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    """Save a figure atomically (temporary file + replace) and close it."""
    import os
    import tempfile

    path = Path(path)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        fig.savefig(tmp, dpi=DPI, format="png")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        plt.close(fig)
    return path
