"""Every plot: agents drawn distinguishably (no two with the same colour, line style and marker;
the same agent styled alike in every plot), every axis label carries a unit, the legend is one
per figure, times in seconds when large, latency bars from 0, and the trace plot's labels off
the data. Tiny budgets: two seeds, one request of 24 tokens, a three-point delay sweep."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import pytest
from matplotlib.colors import to_hex
from matplotlib.lines import Line2D

from specstop_gym import make_scenario
from specstop_gym.evaluation import plots, report
from specstop_gym.traces import data_path, load_delay_trace
from specstop_gym.traces.delay import DelayTrace
from specstop_gym.traces.summary import delay_trace_figure, summarize_delay_trace

AGENTS = ["static-k", "heuristic", "specdec++", "naive-ucb", "ucb-specstop", "contextual-ucb", "oracle",
          "best-fixed-k"]
UNIT = re.compile(r"\((?:[^()]*[;,] )?(ms|s|ms/token|s/token|tokens|%|draft-verify cycles)(?=[,;)\s])[^()]*\)")


@pytest.fixture(scope="module")
def stationary() -> tuple[report.Comparison, dict[str, Any]]:
    sc = make_scenario("qwen-geometric", requests_per_episode=1, n_tokens=24)
    comp = report.run_comparison(sc, [*AGENTS, "static-k:k=2"], [0, 1])
    sweep = report.delay_sweep(sc, [*AGENTS, "static-k:k=2"], [20.0, 100.0, 500.0], [0, 1])
    return comp, report.build_summary(comp, command="test", sweep=sweep)


@pytest.fixture(scope="module")
def markov() -> tuple[report.Comparison, dict[str, Any]]:
    sc = make_scenario("markov-csi", requests_per_episode=1, n_tokens=24)
    comp = report.run_comparison(sc, AGENTS, [0, 1])
    return comp, report.build_summary(comp, command="test")


def agent_artists(fig: Any) -> dict[str, list[Any]]:
    """Artists tagged ``agent:<label>`` by the plotting code, per label."""
    found: dict[str, list[Any]] = {}
    for artist in fig.findobj(lambda a: str(a.get_gid() or "").startswith("agent:")):
        found.setdefault(artist.get_gid()[len("agent:"):], []).append(artist)
    return found


def line_style(line: Line2D) -> tuple[str, str, str, str]:
    return (to_hex(line.get_color()), str(line.get_linestyle()), str(line.get_marker()), line.get_fillstyle())


def assert_distinct_lines(fig: Any, labels: Iterable[str]) -> dict[str, tuple[str, str, str, str]]:
    """One line per agent and axes, and no two agents with the same (colour, line style, marker)."""
    found = agent_artists(fig)
    assert set(found) == set(labels)
    styles: dict[str, tuple[str, str, str, str]] = {}
    for label, artists in found.items():
        lines = [a for a in artists if isinstance(a, Line2D)]
        assert lines, label
        kinds = {line_style(line) for line in lines}
        assert len(kinds) == 1, (label, kinds)  # the same style in every panel
        styles[label] = kinds.pop()
    combos = [s[:3] for s in styles.values()]
    assert len(set(combos)) == len(combos), styles
    return styles


def assert_units(fig: Any, categorical_x: bool = False) -> None:
    """Every axis with ticks has a label with a unit in parentheses (``categorical_x``: the x axis
    lists agents, no unit)."""
    for ax in fig.axes:
        for axis, label in (("x", ax.get_xlabel()), ("y", ax.get_ylabel())):
            if axis == "x" and categorical_x:
                continue
            ticks = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
            shared = axis == "x" and not any(t.get_visible() and t.get_text() for t in ticks)
            if shared and not label:  # a shared x axis labelled on the bottom panel only
                continue
            assert UNIT.search(label.replace("\n", " ")), f"{axis} label {label!r} has no unit"


def one_legend(fig: Any) -> None:
    assert len(fig.legends) == 1 and not any(ax.get_legend() for ax in fig.axes)


def test_agent_styles_fixed_per_name_and_distinct() -> None:
    labels = [*AGENTS, "static-k:k=2", "static-k:k=6", "sb3:runs/a/model.zip", "sb3:runs/b/model.zip"]
    styles = plots.agent_styles(labels)
    combos = [(s["color"], str(s["linestyle"]), s["marker"]) for s in styles.values()]
    assert len(set(combos)) == len(labels)
    for name in AGENTS:  # fixed per registry name, whatever else is plotted
        assert styles[name] == plots.AGENT_STYLES[name]
        assert plots.agent_styles([name, "oracle"])[name] == plots.AGENT_STYLES[name]
    assert plots.agent_styles(["oracle"])["oracle"]["color"] == "#000000"
    # a variant keeps its agent's colour, with another line style and marker
    assert styles["static-k:k=2"]["color"] == plots.AGENT_STYLES["static-k"]["color"]
    assert styles["static-k:k=2"]["marker"] != plots.AGENT_STYLES["static-k"]["marker"]
    # a variant listed first does not take the plain name's fixed style
    assert plots.agent_styles(["static-k:k=2", "static-k"])["static-k"] == plots.AGENT_STYLES["static-k"]
    # other names take colours no fixed agent uses
    fixed = {s["color"] for s in plots.AGENT_STYLES.values()}
    assert styles["sb3:runs/a/model.zip"]["color"] not in fixed
    assert styles["sb3:runs/a/model.zip"]["color"] != styles["sb3:runs/b/model.zip"]["color"]


def test_regret_plot(stationary, markov) -> None:
    comp, _ = stationary
    fig = plots.regret_figure(comp.runs, "t")
    try:
        styles = assert_distinct_lines(fig, comp.runs)
        assert_units(fig)
        one_legend(fig)
        assert len(fig.axes) == 2 and "pseudo-regret" in fig.axes[1].get_ylabel()
        note = " ".join(fig.get_supxlabel().split())
        assert "the exact rho*" in note and "below 0" in note
        # ucb-specstop and contextual-ucb coincide on this scenario: still two different styles
        assert styles["ucb-specstop"][:3] != styles["contextual-ucb"][:3]
        assert styles["oracle"][0] == "#000000"
    finally:
        plots.plt.close(fig)
    comp, _ = markov
    fig = plots.regret_figure(comp.runs, "t")
    try:
        assert_distinct_lines(fig, comp.runs)
        assert_units(fig)
        assert len(fig.axes) == 1 and "ends at 0" in " ".join(fig.get_supxlabel().split())
    finally:
        plots.plt.close(fig)


def test_large_times_in_seconds() -> None:
    assert plots.time_unit([0.0, 9999.0]) == (1.0, "ms")
    assert plots.time_unit([-80_000.0, 10.0]) == (1e-3, "s")
    assert plots.time_unit([np.nan, 5.0]) == (1.0, "ms")


def test_k_over_time_plot(stationary, markov) -> None:
    for comp, summary in (stationary, markov):
        fig = plots.k_over_time_figure(comp.runs, summary["oracle"], "t")
        try:
            assert_distinct_lines(fig, comp.runs)
            assert_units(fig)
            one_legend(fig)
        finally:
            plots.plt.close(fig)


def test_latency_plot_bars_from_zero(stationary) -> None:
    _, summary = stationary
    fig = plots.latency_figure(summary, "t")
    try:
        ax = fig.axes[0]
        assert ax.get_ylim()[0] == 0.0 and ax.get_yscale() == "linear"
        bars = agent_artists(fig)
        assert set(bars) == set(summary["agents"])
        looks = [(to_hex(b[0].get_facecolor(), keep_alpha=False), b[0].get_hatch()) for b in bars.values()]
        assert len(set(looks)) == len(looks)  # colour, or hatch for a variant of the same agent
        assert to_hex(bars["oracle"][0].get_facecolor(), keep_alpha=False) == "#000000"
        for bar in (b[0] for b in bars.values()):
            assert bar.get_y() == 0.0  # every bar starts at 0
        texts = [t.get_text() for t in ax.texts]
        gap = summary["agents"]["naive-ucb"]["gap_to_oracle_pct"]["mean"]
        assert any(f"{gap:+.1f}%" in t for t in texts)
        assert_units(fig, categorical_x=True)
        one_legend(fig)
    finally:
        plots.plt.close(fig)


def test_sweep_plot_has_gap_panel(stationary) -> None:
    _, summary = stationary
    fig = plots.sweep_figure(summary["sweep"], "t")
    try:
        assert len(fig.axes) == 3
        assert "gap to the oracle" in fig.axes[2].get_ylabel()
        assert_distinct_lines(fig, summary["sweep"]["agents"])
        # the gap panel holds each agent's paired gap, the oracle's at 0
        gap_lines = {a.get_gid(): a for a in fig.axes[2].get_lines() if a.get_gid()}
        assert np.allclose(gap_lines["agent:oracle"].get_ydata(), 0.0)
        want = [p["mean"] for p in summary["sweep"]["agents"]["naive-ucb"]["gap_to_oracle_pct"]]
        assert np.allclose(gap_lines["agent:naive-ucb"].get_ydata(), want)
        assert_units(fig)
        one_legend(fig)
    finally:
        plots.plt.close(fig)


def test_same_agent_same_style_in_every_plot(stationary) -> None:
    comp, summary = stationary
    figs = [plots.regret_figure(comp.runs, "t"), plots.k_over_time_figure(comp.runs, summary["oracle"], "t"),
            plots.sweep_figure(summary["sweep"], "t")]
    try:
        per_fig = [assert_distinct_lines(f, agent_artists(f)) for f in figs]
        for label in summary["sweep"]["agents"]:
            assert len({s[label] for s in per_fig}) == 1, label
    finally:
        for f in figs:
            plots.plt.close(f)


def test_plot_files_written(stationary, tmp_path) -> None:
    comp, summary = stationary
    paths = [plots.plot_regret(comp.runs, tmp_path / "r.png", "t"),
             plots.plot_latency(summary, tmp_path / "l.png", "t"),
             plots.plot_k_over_time(comp.runs, summary["oracle"], tmp_path / "k.png", "t"),
             plots.plot_sweep(summary["sweep"], tmp_path / "s.png", "t")]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["k.png", "l.png", "r.png", "s.png"]


# --------------------------------------------------------------------------- trace plot
def test_trace_plot_labels_off_the_data_and_units() -> None:
    trace = load_delay_trace(data_path("delay/synthetic_cellular_handover.csv"))
    s = summarize_delay_trace(trace)
    fig = delay_trace_figure(trace, summary=s)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert_units(fig)
    one_legend(fig)
    renderer = fig.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    labels = [t for t in ax.texts if "\u2192" in t.get_text()]
    assert len(labels) == len(s["regime_changes"]) == 14
    for t in labels:  # every change label above the plot area, none on the data
        assert t.get_window_extent(renderer).y0 >= box.y1 - 0.5, t.get_text()
    # samples, regime levels and change markers are told apart by colour or line style
    lines = [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]
    kinds = {line_style(ln)[:3] for ln in lines}
    assert len(kinds) == len(lines) == 3


def test_trace_plot_without_changes() -> None:
    rng = np.random.default_rng(3)
    trace = DelayTrace(t_ms=np.arange(2000) * 20.0, rtt_ms=40 * rng.lognormal(0, 0.05, 2000))
    fig = delay_trace_figure(trace)
    assert "0 regime changes" in fig.get_suptitle()
    assert_units(fig)
