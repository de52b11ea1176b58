"""Delay-trace gaps (hold / skip / refuse), the warning, and per-sample statistics (issue 11, item 2).

Two synthetic traces written to tmp: a Wi-Fi-like one with a single huge stall (a probe that
came back after 590 s, followed by a 682-s gap), and a drive-test-like one probed in 30-s bursts
with 700-s pauses (96% of the span is gaps).
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from agents.registry import make_agent
from specstop_gym import make_scenario
from specstop_gym.core.config import ConfigError
from specstop_gym.evaluation import run_agent
from specstop_gym.oracle import optimal_k_for_costs
from specstop_gym.scenarios import build_acceptance, build_channel, stationary_reference
from specstop_gym.traces import (
    DelayTrace,
    TraceGapError,
    find_gaps,
    summarize_delay_trace,
    write_delay_trace,
)
from specstop_gym.traces import gaps as gaps_module

ROOT = Path(__file__).resolve().parents[1]


def _stall_trace(tmp_path: Path) -> Path:
    g = np.random.default_rng(0)
    t = np.arange(0.0, 1_800_000.0, 100.0)  # 30 min at 10 Hz
    rtt = 60.0 + g.gamma(4.0, 8.0, t.size)
    i = t.size // 2
    t[i + 1:] += 682_000.0  # nothing answered for 682 s ...
    rtt[i] = 590_000.0  # ... after a probe that came back after 590 s (rtts are bounded by 10 minutes)
    path = tmp_path / "wifi_stall.csv"
    write_delay_trace(path, DelayTrace(t_ms=t, rtt_ms=rtt, metadata={"source": "test"}))
    return path


def _bursty_trace(tmp_path: Path) -> Path:
    g = np.random.default_rng(1)
    bursts = [b * 730_000.0 + np.arange(0.0, 30_000.0, 1000.0) for b in range(12)]  # 30 probes / 730 s
    t = np.concatenate(bursts)
    rtt = 40.0 + 80.0 * g.random(t.size)
    path = tmp_path / "drive_bursts.csv"
    write_delay_trace(path, DelayTrace(t_ms=t, rtt_ms=rtt, metadata={"source": "test"}))
    return path


@pytest.fixture(autouse=True)
def _fresh_warnings():
    gaps_module._warned.clear()
    yield
    gaps_module._warned.clear()


def test_one_huge_stall_cannot_dominate_the_typical_rtt(tmp_path: Path) -> None:
    path = _stall_trace(tmp_path)
    cfg = make_scenario("trace-cellular", delay_trace=str(path))
    with pytest.warns(UserWarning, match=r"wifi_stall\.csv.*cover 27%"):
        ch = build_channel(cfg)
    rtt = ch.rtts_ms
    per_sample = float(rtt.mean())
    assert ch.long_run_mean_rtt_ms() == pytest.approx(per_sample)
    assert 90 < per_sample < 130  # the one 590-s sample moves the mean of 18,000 samples by 33 ms
    assert ch.time_weighted_mean_rtt_ms() > 100 * per_sample  # held for 682 s of a 2,482-s loop
    # the token_credit reference and the summary use the per-sample figure
    s = build_acceptance(cfg).survival(cfg.max_draft)
    assert stationary_reference(cfg, ch) == optimal_k_for_costs(s, cfg.marginal_cost_ms,
                                                                per_sample + cfg.verify_base_ms)
    summ = summarize_delay_trace(load(path))
    assert summ["rtt_mean_ms"] == pytest.approx(per_sample)
    assert summ["rtt_time_weighted_mean_ms"] == pytest.approx(ch.time_weighted_mean_rtt_ms(), rel=1e-9)
    assert summ["gaps"]["count"] == 1 and summ["gaps"]["max_ms"] == pytest.approx(682_100.0)
    # the gap covers 27% of the loop: warned once under hold, naming the file and the share
    assert summ["gaps"]["share"] == pytest.approx(682_100.0 / (1_800_000.0 + 682_000.0), rel=1e-3)
    gaps_module._warned.clear()
    with pytest.warns(UserWarning, match=r"wifi_stall\.csv.*cover 27%"):
        build_channel(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_channel(cfg)  # once per file and process
        skip = build_channel(cfg.replace(delay_trace_gaps="skip"))  # skip: gaps removed, no warning
    assert skip.duration_ms == pytest.approx(ch.duration_ms - 682_000.0)
    assert np.diff(skip.times_ms).max() == pytest.approx(100.0)


def load(path: Path):
    from specstop_gym.traces import load_delay_trace

    return load_delay_trace(path)


def test_bursty_drive_test_trace_hold_skip_refuse(tmp_path: Path) -> None:
    path = _bursty_trace(tmp_path)
    gaps = find_gaps(load(path).t_ms)
    assert gaps.count == 11 and gaps.share > 0.95
    hold = make_scenario("trace-cellular", delay_trace=str(path), n_tokens=128, requests_per_episode=1)
    with pytest.warns(UserWarning, match=r"drive_bursts\.csv.*cover 96%"):
        build_channel(hold)
    seeds = list(range(8))
    constant = {}
    for policy in ("hold", "skip"):
        sc = hold.replace(delay_trace_gaps=policy)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = run_agent(make_agent("static-k", sc, n_runs=len(seeds), k=2), sc, seeds)
        constant[policy] = sum(len(np.unique(run.columns["rtt_ms"][run.seed_rows(i)])) == 1 for i in range(len(seeds)))
    # hold: most episodes replay one held sample throughout; skip: every episode sees the measured variation
    assert constant["hold"] >= 5 and constant["skip"] == 0
    with pytest.raises(TraceGapError, match=r"drive_bursts\.csv: 11 measurement gap\(s\).*first after sample 29"):
        build_channel(hold.replace(delay_trace_gaps="refuse"))
    # the path oracle replays the same (skipped) timeline
    sc = hold.replace(delay_trace_gaps="skip")
    run = run_agent(make_agent("oracle", sc, n_runs=2), sc, [0, 1])
    assert run.total_tokens.tolist() == [128, 128]


@pytest.mark.parametrize("field, value, message", [
    ("delay_trace_gaps", "drop", "delay_trace_gaps must be one of hold, skip, refuse"),
    ("delay_trace_gap_factor", 1.0, "delay_trace_gap_factor must be in the range 1 < x"),
    ("delay_trace_gap_factor", float("nan"), "delay_trace_gap_factor"),
])
def test_bad_gap_settings_name_the_field(field: str, value, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_scenario("trace-cellular", **{field: value})


def test_refused_trace_is_a_one_line_cli_error(tmp_path: Path) -> None:
    path = _bursty_trace(tmp_path)
    run = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--delay-trace", str(path), "--set",
                          "delay_trace_gaps=refuse", "--seeds", "1", "--requests", "1", "--no-sweep", "--no-plots",
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 2
    assert "drive_bursts.csv: 11 measurement gap(s)" in run.stderr and "Traceback" not in run.stderr


def test_shipped_traces_gaps() -> None:
    """The shipped Starlink trace has its 0.5-s outages as gaps (3.4% of the span, no warning);
    the 5G trace and the synthetic ones none."""
    from specstop_gym.traces import data_path

    starlink = find_gaps(load(data_path("delay/starlink_isl_ping.csv")).t_ms)
    assert starlink.count == 11 and 0.03 < starlink.share < 0.04
    for name in ("nr5g_urban_n78.csv", "synthetic_cellular_handover.csv", "synthetic_wifi_jitter.csv"):
        assert find_gaps(load(data_path(f"delay/{name}")).t_ms).count == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_channel(make_scenario("trace-starlink"))
