"""Plots of an evaluation (matplotlib, Agg backend: no display needed).

* :func:`plot_regret`: cumulative regret over rounds, mean over seeds with a 95% band (and the
  pseudo-regret on stationary channels), with a note on what the reference is;
* :func:`plot_latency`: per-token latency per agent (bars from 0 with 95% CI, each labelled with
  its value and gap to the oracle; the oracle's realised latency and the exact rho* as lines);
* :func:`plot_k_over_time`: the chosen draft length over rounds (mean over seeds), oracle k*;
* :func:`plot_sweep`: over a grid of constant delays, the oracle's k*(D) (step plot), each
  agent's per-token latency and its gap to the oracle (%), the critical delay D_c marked.

Each ``plot_*`` writes one PNG and returns its path; the matching ``*_figure`` function returns
the matplotlib figure instead (for notebooks and tests).

Every agent has one style in every plot (:func:`agent_styles`): a colour, a line style and a
marker fixed per registry name (the oracle is always black, dashed, with stars), so that agents
whose curves coincide (ucb-specstop and contextual-ucb without channel-state information) stay
distinguishable. One legend per figure, right of the panels. Times are in ms, or in s when the
largest value reaches 10,000 ms.

Seeds end their runs at different rounds; in the per-round curves a seed that has finished
keeps its final value (regret) or drops out of the mean (chosen k). The per-round curves come
from each run's :class:`~specstop_gym.evaluation.stream.RoundStats` (per round index: count,
mean and spread over seeds, accumulated while the rounds were streamed), not from the rounds.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter

from .runner import AgentRun

DPI = 120

SECONDS_FROM_MS = 10_000.0
"""Times whose largest absolute value reaches this many ms are drawn in seconds."""

ROUND_LABEL = "round (draft-verify cycles)"

AGENT_STYLES: dict[str, dict[str, Any]] = {
    "static-k": {"color": "#1f77b4", "linestyle": "-", "marker": "s"},
    "heuristic": {"color": "#ff7f0e", "linestyle": "-", "marker": "^"},
    "specdec++": {"color": "#2ca02c", "linestyle": "-", "marker": "v"},
    "naive-ucb": {"color": "#d62728", "linestyle": "-", "marker": "X"},
    "ucb-specstop": {"color": "#9467bd", "linestyle": "-", "marker": "o"},
    "contextual-ucb": {"color": "#8c564b", "linestyle": "--", "marker": "D", "fillstyle": "none"},
    "oracle": {"color": "#000000", "linestyle": "--", "marker": "*"},
    "best-fixed-k": {"color": "#7f7f7f", "linestyle": ":", "marker": "P"},
}
"""The fixed style of each registry name (tab10 colours; the oracle black). contextual-ucb, which
equals ucb-specstop when the channel state is not observable, is dashed with hollow markers so the
two stay apart where their curves coincide."""

_EXTRA_COLORS = ("#e377c2", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
                 "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5")
_EXTRA_LINESTYLES: tuple[Any, ...] = ("-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 1)), (0, (8, 2)), "-", "--")
_EXTRA_MARKERS = ("h", "<", ">", "p", "d", "H", "8", "1", "2", "3", "4", "+")
_HATCHES = ("//", "\\\\", "xx", "..", "oo", "--", "||", "**")
_MARKERS_PER_CURVE = 10


def _base_name(label: str) -> str:
    return label.strip().partition(":")[0].strip()


def _key(style: Mapping[str, Any]) -> tuple[str, str, str]:
    return (str(style["color"]), str(style["linestyle"]), str(style["marker"]))


def agent_styles(labels: Sequence[str]) -> dict[str, dict[str, Any]]:
    """A distinct ``{"color", "linestyle", "marker"}`` per label, stable across plots.

    A registry name (or, when it is not plotted plain, its first variant) gets that name's fixed
    style (:data:`AGENT_STYLES`); further variants of the same name (``static-k:k=2`` and ``static-k:k=4``) keep its colour with
    the next unused line style and marker; other names (``sb3:PATH``, new agents) get the next
    unused colour, line style and marker, in the order of ``labels``. No two labels share all
    three (nor, among the fixed names, any colour).
    """
    out: dict[str, dict[str, Any]] = {}
    used: set[tuple[str, str, str]] = set()
    used_colors: set[str] = set()
    taken_fixed: set[str] = set()
    # Fixed styles first: plain names, then the first variant of a name not plotted plain.
    for plain in (True, False):
        for label in labels:
            name = _base_name(label)
            if name in AGENT_STYLES and name not in taken_fixed and (label.strip() == name) == plain:
                out[label] = dict(AGENT_STYLES[name])
                taken_fixed.add(name)
                used.add(_key(out[label]))
                used_colors.add(out[label]["color"])
    extra = 0
    for label in labels:
        if label in out:
            continue
        name = _base_name(label)
        if name in AGENT_STYLES:
            colors: Sequence[str] = [AGENT_STYLES[name]["color"]]
        else:
            free = [c for c in _EXTRA_COLORS if c not in used_colors]
            colors = free or list(_EXTRA_COLORS)
        for i in range(extra, extra + len(_EXTRA_LINESTYLES) * len(_EXTRA_MARKERS) * len(colors)):
            style = {"color": colors[i % len(colors)], "linestyle": _EXTRA_LINESTYLES[i % len(_EXTRA_LINESTYLES)],
                     "marker": _EXTRA_MARKERS[i % len(_EXTRA_MARKERS)]}
            if _key(style) not in used:
                break
        extra = i + 1
        out[label] = style
        used.add(_key(style))
        used_colors.add(style["color"])
    return out


def _line_kwargs(style: Mapping[str, Any], n_points: int, position: int, n_curves: int, label: str) -> dict[str, Any]:
    """Keyword arguments of ``ax.plot`` for one agent's curve: its style, about
    ``_MARKERS_PER_CURVE`` markers staggered between agents (so coinciding curves show both
    marker kinds), decreasing widths (a thin line stays visible on a thick one), and a ``gid``
    ``"agent:<label>"`` that tests use to find the agents' artists."""
    step = max(1, n_points // _MARKERS_PER_CURVE)
    offset = (position * step) // max(n_curves, 1)
    width = 2.6 - 1.4 * position / max(n_curves - 1, 1)
    return {**style, "lw": width, "ms": 6 if style["marker"] != "*" else 8, "markevery": (offset, step),
            "label": label, "gid": f"agent:{label}"}


def time_unit(values_ms: Any) -> tuple[float, str]:
    """``(factor, unit)`` to draw times given in ms: seconds when the largest absolute value
    reaches :data:`SECONDS_FROM_MS`, else ms."""
    arr = np.asarray(values_ms, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size and float(np.abs(arr).max()) >= SECONDS_FROM_MS:
        return 1e-3, "s"
    return 1.0, "ms"


# Data access: the only functions that read a run's rounds (the figures below draw what they return).
# They read the run's RoundStats (specstop_gym.evaluation.stream), accumulated while the rounds were
# streamed to disk, so the plots need neither the rounds in memory nor a second pass over the file.
def _has_rounds(run: AgentRun) -> bool:
    return run.stats is not None and run.stats.n_rounds > 0


def _has_column(run: AgentRun, column: str) -> bool:
    return run.stats is not None and column in run.stats.per_round


def _longest(run: AgentRun) -> int:
    """Rounds of the run's longest seed."""
    return run.stats.longest if _has_rounds(run) else 0


def _cumulative_band(run: AgentRun, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Per round index: mean over seeds of a cumulative column and its 95% CI half-width, a
    finished seed's final value carried on."""
    return run.stats.per_round[column].band()


def _k_mean(run: AgentRun) -> np.ndarray:
    """Per round index while at least half of the seeds are still running: their mean k."""
    k = run.stats.per_round["k"]
    return k.mean[k.n >= max(1, len(run.seeds) / 2)]


def _figure(nrows: int, ncols: int, figsize: tuple[float, float], **kw: Any) -> tuple[Any, np.ndarray]:
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, layout="constrained", **kw)
    return fig, axes


def _figure_legend(fig: Any, axes: Sequence[Any], ncol: int | None = None) -> None:
    """One legend for the whole figure, right of the panels: every labelled artist of ``axes``
    once (by label, first seen)."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside right upper", ncol=ncol or 1,
                   fontsize=8, frameon=False)


def _plain(v: float, _pos: Any = None) -> str:
    """Tick label without powers of ten (log axes): 20, 50, 100, 0.5."""
    return f"{v:g}"


def _plain_minor(v: float, _pos: Any = None) -> str:
    """Minor tick label of a log axis: only mantissas 2 and 5 (20, 50, 200), plainly."""
    return f"{v:g}" if f"{v:e}"[0] in "25" else ""


def _plain_log(axis: Any) -> None:
    axis.set_major_formatter(FuncFormatter(_plain))
    axis.set_minor_formatter(FuncFormatter(_plain_minor))


# --------------------------------------------------------------------------- regret
def regret_figure(runs: Mapping[str, AgentRun], title: str, stationary: bool | None = None) -> Any:
    """Figure of :func:`plot_regret`. ``stationary`` (default: whether every run has a
    ``pseudo_regret_ms`` column, which the metrics add on stationary channels only) selects the
    note explaining the reference."""
    has_pseudo = bool(runs) and all(_has_column(r, "pseudo_regret_ms") for r in runs.values())
    stationary = has_pseudo if stationary is None else stationary
    panels = ["regret_ms"] + (["pseudo_regret_ms"] if has_pseudo else [])
    fig, axes = _figure(1, len(panels), (1.5 + 6.2 * len(panels), 5.0))
    styles = agent_styles(list(runs))
    curves: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {c: [] for c in panels}
    for column in panels:
        for label, run in runs.items():
            if _has_rounds(run):
                mean, half = _cumulative_band(run, column)
                curves[column].append((label, mean, half))
    every = [np.r_[m - h, m + h] for c in panels for _, m, h in curves[c]]
    factor, unit = time_unit(np.concatenate(every) if every else [0.0])
    n = len(runs)
    for ax, column in zip(axes[0], panels):
        for label, mean, half in curves[column]:
            x = np.arange(1, len(mean) + 1)
            pos = list(runs).index(label)
            ax.plot(x, mean * factor, **_line_kwargs(styles[label], len(x), pos, n, label))
            ax.fill_between(x, (mean - half) * factor, (mean + half) * factor, color=styles[label]["color"],
                            alpha=0.12, lw=0)
        ax.axhline(0.0, color="grey", lw=0.6)
        ax.set_xlabel(ROUND_LABEL)
        if column.startswith("pseudo"):
            ax.set_ylabel(f"cumulative pseudo-regret ({unit})")
            ax.set_title("pseudo-regret: expected time and tokens given the chosen k\n"
                         "(the learning cost without the luck of the draws)", fontsize=8.5)
        else:
            ax.set_ylabel(f"cumulative realised regret ({unit})")
            ax.set_title("realised regret: sum over rounds of (time - reference ms/token x tokens)\n"
                         "mean over seeds, 95% band", fontsize=8.5)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    if stationary:
        note = ("Reference: the exact rho* (the expected ms/token of the best policy). The oracle plays k*, but its "
                "realised time is random: its realised regret wanders around 0 (below 0: faster than rho* by luck); "
                "its pseudo-regret is 0.")
    else:
        note = ("Reference: the oracle's own realised ms/token over the whole run, on the same seed. Every curve, "
                "the oracle's included, falls in the channel's fast phases and rises in its slow ones; the "
                "oracle's ends at 0.")
    fig.supxlabel(textwrap.fill(note, width=int(16 * fig.get_figwidth())), fontsize=7.5, color="#333333")
    _figure_legend(fig, axes[0])
    return fig


def plot_regret(runs: Mapping[str, AgentRun], path: str | Path, title: str) -> Path:
    """Cumulative realised regret over rounds per agent: mean over seeds and a 95% CI band.

    A second panel shows pseudo-regret (expectations given the chosen k) when available; a note
    says what the reference is and why the oracle's realised regret can run below zero.
    """
    return _save(regret_figure(runs, title), path)


# --------------------------------------------------------------------------- latency
def latency_figure(summary: Mapping[str, Any], title: str) -> Any:
    """Figure of :func:`plot_latency`."""
    agents = summary["agents"]
    labels = list(agents)
    means = np.array([agents[a]["per_token_latency_ms"]["mean"] for a in labels], dtype=np.float64)
    lo = np.array([agents[a]["per_token_latency_ms"]["ci_low"] for a in labels], dtype=np.float64)
    hi = np.array([agents[a]["per_token_latency_ms"]["ci_high"] for a in labels], dtype=np.float64)
    rho = summary.get("oracle", {}).get("rho_star_ms")
    factor, unit = time_unit(np.r_[hi, [rho] if rho is not None else []])
    styles = agent_styles(labels)
    fig, axes = _figure(1, 1, (max(5.5, 0.95 * len(labels) + 2.5), 4.8))
    ax = axes[0][0]
    x = np.arange(len(labels))
    bars = ax.bar(x, means * factor, color=[styles[a]["color"] for a in labels], alpha=0.6,
                  yerr=np.vstack([means - lo, hi - means]) * factor, capsize=4, edgecolor="black", lw=0.6)
    oracle = summary.get("oracle_agent")
    hatches = iter(_HATCHES)
    for bar, label, mean in zip(bars.patches, labels, means):
        bar.set_gid(f"agent:{label}")
        if styles[label] != AGENT_STYLES.get(_base_name(label)):  # a variant may share its agent's colour
            bar.set_hatch(next(hatches, "++"))
        gap = agents[label].get("gap_to_oracle_pct")
        text = f"{mean * factor:.4g}"
        if gap is not None and label != oracle and gap.get("mean") is not None:
            text += f"\n{gap['mean']:+.1f}%"
        ax.annotate(text, (bar.get_x() + bar.get_width() / 2, hi[labels.index(label)] * factor),
                    xytext=(0, 3), textcoords="offset points", ha="center", va="bottom", fontsize=7)
    if oracle in agents:
        ax.axhline(agents[oracle]["per_token_latency_ms"]["mean"] * factor, color="black", ls="--", lw=1,
                   label=f"{oracle} (realised)")
    if rho is not None:
        ax.axhline(rho * factor, color="black", ls=":", lw=1,
                   label=f"rho* = {rho * factor:.4g} {unit}/token (exact, expected)")
    top = float(np.nanmax(hi)) * factor if len(hi) else 1.0
    ax.set_ylim(0.0, top * 1.18)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_xlabel(f"agent (above each bar: mean in {unit}/token, gap to the oracle on the same seeds in %)",
                  fontsize=8)
    ax.set_ylabel(f"per-token latency ({unit}/token)")
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    _figure_legend(fig, [ax])
    return fig


def plot_latency(summary: Mapping[str, Any], path: str | Path, title: str) -> Path:
    """Per-token latency (ms/token) per agent: bars from 0 with 95% CI, each labelled with its
    mean and gap to the oracle; oracle (realised) and rho* (exact) as lines."""
    return _save(latency_figure(summary, title), path)


# --------------------------------------------------------------------------- chosen k
def k_over_time_figure(runs: Mapping[str, AgentRun], oracle: Mapping[str, Any], title: str,
                       smooth: int | None = None) -> Any:
    """Figure of :func:`plot_k_over_time`."""
    fig, axes = _figure(1, 1, (8.0, 4.9))
    ax = axes[0][0]
    styles = agent_styles(list(runs))
    longest = max((_longest(r) for r in runs.values()), default=1) or 1
    w = smooth or max(1, longest // 60)
    n = len(runs)
    for pos, (label, run) in enumerate(runs.items()):
        if not _has_rounds(run):
            continue
        mean = _k_mean(run)
        if w > 1 and len(mean) >= w:
            kernel = np.ones(w) / w
            mean = np.convolve(mean, kernel, mode="valid")
            x = np.arange(len(mean)) + (w + 1) / 2
        else:
            x = np.arange(1, len(mean) + 1)
        ax.plot(x, mean, **_line_kwargs(styles[label], len(x), pos, n, label))
    if oracle.get("k_star") is not None:
        ax.axhline(oracle["k_star"], color="black", lw=1.0, ls=(0, (1, 3)),
                   label=f"stationary optimum k* = {oracle['k_star']}")
    for lev in oracle.get("local", []):  # labelled in the right margin, off the data
        ax.axhline(lev["k_star"], color="grey", lw=0.8, ls=":")
        ax.annotate(f"k*({lev['rtt_ms']:.0f} ms) = {lev['k_star']}", (1.0, lev["k_star"]),
                    xycoords=("axes fraction", "data"), xytext=(3, 0), textcoords="offset points", fontsize=7,
                    va="center", ha="left", color="grey", annotation_clip=False)
    ax.set_xlabel(ROUND_LABEL)
    ax.set_ylabel("chosen draft length k (tokens)")
    smoothing = f", moving average over {w} rounds" if w > 1 else ""
    ax.set_title(f"mean over the seeds still running{smoothing}", fontsize=8.5)
    ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    _figure_legend(fig, [ax])
    return fig


def plot_k_over_time(runs: Mapping[str, AgentRun], oracle: Mapping[str, Any], path: str | Path, title: str,
                     smooth: int | None = None) -> Path:
    """Chosen draft length over rounds: mean over the seeds still running (drawn while at least half
    of the seeds are), moving average.

    The stationary k* is a horizontal line; for drift/Markov channels the stationary optimum at
    each mean rtt level is drawn dotted.
    """
    return _save(k_over_time_figure(runs, oracle, title, smooth), path)


# --------------------------------------------------------------------------- delay sweep
def sweep_figure(sweep: Mapping[str, Any], title: str) -> Any:
    """Figure of :func:`plot_sweep`."""
    fig, axes = _figure(3, 1, (8.0, 9.6), sharex=True, gridspec_kw={"height_ratios": [0.8, 1.4, 1.2]})
    ax_k, ax_l, ax_g = axes[:, 0]
    fine = sweep["exact"]
    d_fine = np.asarray(fine["delays_ms"], dtype=np.float64)
    ax_k.step(d_fine, fine["k_star"], where="post", color="black", lw=1.5, label="oracle k*(D) (exact)")
    ax_k.set_ylabel("optimal draft\nlength k* (tokens)")
    labels = list(sweep["agents"])
    styles = agent_styles(labels)
    d = np.asarray(sweep["delays_ms"], dtype=np.float64)
    all_hi = [p["ci_high"] for lab in labels for p in sweep["agents"][lab]["per_token_latency_ms"]]
    factor, unit = time_unit(np.r_[all_hi, fine["rho_star_ms"]])
    ax_l.plot(d_fine, np.asarray(fine["rho_star_ms"]) * factor, color="black", ls=":", lw=1.2,
              label="rho*(D) (exact, expected)")
    n = len(labels)
    # Agents at the same delay are spread a little sideways (log x) so their error bars do not overlap.
    spread = np.exp((np.arange(n) - (n - 1) / 2) * 0.03)
    for pos, label in enumerate(labels):
        e = sweep["agents"][label]
        mean = np.array([p["mean"] for p in e["per_token_latency_ms"]], dtype=np.float64)
        lo = np.array([p["ci_low"] for p in e["per_token_latency_ms"]], dtype=np.float64)
        hi = np.array([p["ci_high"] for p in e["per_token_latency_ms"]], dtype=np.float64)
        st = styles[label]
        kw = {**st, "lw": 1.1, "ms": 5 if st["marker"] != "*" else 8, "capsize": 2, "label": label}
        bars = ax_l.errorbar(d * spread[pos], mean * factor, yerr=np.vstack([mean - lo, hi - mean]) * factor, **kw)
        bars.lines[0].set_gid(f"agent:{label}")  # the data line (not the caps) marks the agent for tests
        gaps = e.get("gap_to_oracle_pct")
        if gaps:
            g = np.array([p["mean"] for p in gaps], dtype=np.float64)
            glo = np.array([p["ci_low"] for p in gaps], dtype=np.float64)
            ghi = np.array([p["ci_high"] for p in gaps], dtype=np.float64)
            bars = ax_g.errorbar(d * spread[pos], g, yerr=np.vstack([g - glo, ghi - g]), **{**kw, "label": "_" + label})
            bars.lines[0].set_gid(f"agent:{label}")
    dc = sweep.get("critical_delay_ms")
    if dc is not None and math.isfinite(dc) and dc > 0:
        for ax in (ax_k, ax_l, ax_g):
            ax.axvline(dc, color="red", lw=1, ls="--", label=f"critical delay D_c = {dc:.1f} ms")
        ax_k.annotate(f"D_c = {dc:.1f} ms", (dc, 0.95), xycoords=("data", "axes fraction"), xytext=(4, 0),
                      textcoords="offset points", color="red", fontsize=8, va="top")
    ax_g.axhline(0.0, color="grey", lw=0.6)
    ax_g.set_yscale("symlog", linthresh=1.0, linscale=0.6)
    ax_g.yaxis.set_major_formatter(FuncFormatter(_plain))
    ax_l.set_xscale("log")
    ax_l.set_yscale("log")
    _plain_log(ax_l.yaxis)
    _plain_log(ax_g.xaxis)
    ax_g.set_xlabel("constant round-trip delay D (ms)")
    ax_l.set_ylabel(f"per-token latency\n({unit}/token, log scale)")
    ax_g.set_ylabel("gap to the oracle (%,\nsame seeds; symlog)")
    for ax in (ax_k, ax_l, ax_g):
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(title, fontsize=10)
    _figure_legend(fig, [ax_k, ax_l, ax_g])
    return fig


def plot_sweep(sweep: Mapping[str, Any], path: str | Path, title: str) -> Path:
    """Delay sweep: the oracle's k*(D) (step plot, exact, fine grid) on top, each agent's measured
    per-token latency against the delay in the middle (mean and 95% CI over seeds) with the exact
    rho*(D), and each agent's gap to the oracle (%, paired by seed) at the bottom, on a symlog
    scale so that gaps of a few percent at large delays stay apart; the critical delay D_c as a
    vertical line in every panel."""
    return _save(sweep_figure(sweep, title), path)


def _save(fig: Any, path: str | Path) -> Path:
    """Save a figure atomically (:func:`specstop_gym.fileio.atomic_path`) and close it."""
    from ..fileio import atomic_path

    path = Path(path)
    try:
        if fig.get_layout_engine() is None:
            fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=DPI, format="png")
    finally:
        plt.close(fig)
    return path
