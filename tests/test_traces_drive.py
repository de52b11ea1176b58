"""Any delay or acceptance trace drives gym.make, evaluate.py and train.py; so do the real
measured traces shipped in traces/delay."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import specstop_gym  # noqa: F401  (registers the environments)
from specstop_gym.dataset import read_dataset
from specstop_gym.traces import (AcceptanceTrace, DelayTrace, data_path, write_acceptance_trace,
                                 write_delay_trace)

ROOT = Path(__file__).resolve().parents[1]


def _user_traces(tmp_path: Path) -> tuple[Path, Path]:
    g = np.random.default_rng(0)
    t = np.arange(0.0, 60_000.0, 50.0)
    delay = tmp_path / "my_delay.csv"
    write_delay_trace(delay, DelayTrace(t_ms=t, rtt_ms=80.0 + 40.0 * (t > 30_000) + g.gamma(4.0, 2.0, t.size),
                                        state=None, metadata={"source": "test"}, path=None))
    length = g.integers(1, 9, 500)
    run = np.minimum(g.geometric(0.4, 500) - 1, length)
    acc = tmp_path / "my_acceptance.jsonl"
    write_acceptance_trace(acc, AcceptanceTrace(run_length=run, censored=run == length, draft_length=length,
                                                confidences=None, draft_ms=None, verify_ms=None,
                                                metadata={"source": "test"}))
    return delay, acc


def _real(name: str) -> Path:
    return data_path(f"delay/{name}")


@pytest.mark.parametrize("env_id", specstop_gym.ENV_IDS)
def test_user_trace_files_drive_gym_make(tmp_path: Path, env_id: str) -> None:
    delay, acc = _user_traces(tmp_path)
    env = gym.make(env_id, channel="trace", delay_trace=str(delay), acceptance="trace",
                   acceptance_trace=str(acc), n_tokens=32)
    obs, _ = env.reset(seed=0)
    done, rtts = False, []
    while not done:
        obs, _, done, _, info = env.step(env.action_space.n - 1)
        if "round" in info:
            rtts.append(info["round"]["rtt_ms"])
    assert min(rtts) >= 80.0  # rtts come from the file (80 ms + positive noise)


@pytest.mark.parametrize("name", ["nr5g_urban_n78.csv", "starlink_isl_ping.csv"])
def test_real_traces_drive_an_evaluation(tmp_path: Path, name: str) -> None:
    trace = _real(name)
    out = tmp_path / "eval"
    run = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--delay-trace", str(trace), "--seeds", "2",
                          "--requests", "1", "--set", "n_tokens=48", "--no-sweep", "--no-plots", "--quiet",
                          "--agents", "ucb-specstop", "static-k", "oracle", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scenario"]["config"]["channel"] == "trace"
    assert summary["scenario"]["config"]["delay_trace"] == str(trace)
    lat = summary["agents"]["ucb-specstop"]["per_token_latency_ms"]["mean"]
    assert np.isfinite(lat) and lat > 0
    rtt = read_dataset(out / summary["files"]["rounds"], columns=["rtt_ms"])["rtt_ms"]
    lo, hi = (12.0, 271.0) if name.startswith("nr5g") else (106.0, 388.0)  # the traces' min / max (README)
    assert rtt.min() >= lo and rtt.max() <= hi


def test_user_traces_drive_evaluate_and_train(tmp_path: Path) -> None:
    delay, acc = _user_traces(tmp_path)
    out = tmp_path / "eval"
    run = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--delay-trace", str(delay),
                          "--acceptance-trace", str(acc), "--seeds", "2", "--requests", "1", "--set", "n_tokens=32",
                          "--no-sweep", "--no-plots", "--quiet", "--agents", "static-k", "oracle",
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    cfg = json.loads((out / "summary.json").read_text())["scenario"]["config"]
    assert cfg["acceptance"] == "trace" and cfg["acceptance_trace"] == str(acc)
    import train

    run_dir = tmp_path / "run"
    code = train.main(["--set", "channel=trace", "--set", f"delay_trace={delay}", "--set", "acceptance=trace",
                       "--set", f"acceptance_trace={acc}", "--set", "n_tokens=32", "--total-timesteps", "256",
                       "--n-envs", "2", "--eval-freq", "0", "--eval-seeds", "1-2", "--hyperparams", "n_steps=64",
                       "batch_size=64", "--out", str(run_dir)])
    assert code == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["scenario"]["config"]["delay_trace"] == str(delay)
