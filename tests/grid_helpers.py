"""Shared by tests/test_grid.py and tests/test_grid_ray.py: tiny grid files, running evaluate.py
as a subprocess, killing it after some cells finished, and comparing two grid folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "evaluate.py"

TINY_GRID = """\
name = "tiny"
seeds = 4
seed_block = 2
set = { n_tokens = 32 }

[[experiment]]
name = "delays"
scenarios = ["qwen-geometric"]
agents = ["ucb-specstop", "static-k:k=2", "oracle"]
delays_ms = [50.0, 400.0]
requests = 1

[[experiment]]
name = "markov"
scenarios = ["markov-csi"]
agents = ["ucb-specstop", "contextual-ucb", "best-fixed-k"]
requests = 2
"""
"""6 cells: a stationary delay axis and a Markov channel (the oracle's rounds spilled and replayed),
best-fixed-k, two seed blocks each."""

KILL_GRID = """\
name = "kill"
seeds = 6
seed_block = 2
set = { n_tokens = 128 }

[[experiment]]
name = "delays"
scenarios = ["qwen-geometric", "llama-heavy-head"]
agents = ["ucb-specstop", "naive-ucb", "oracle"]
delays_ms = [25.0, 100.0, 400.0]
level = "token"
requests = 2
"""
"""18 cells of about a third of a second each: long enough to kill the run between cells."""


def run_cli(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, check=False, env=env)


def write_grid(folder: Path, text: str, name: str = "grid.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_text(text)
    return p


def finished_cells(out: Path) -> dict[str, bytes]:
    """cells/<key>.json of the finished cells: key -> file bytes."""
    d = out / "cells"
    if not d.is_dir():
        return {}
    from specstop_gym.fileio import is_temporary

    return {p.name[:-5]: p.read_bytes() for p in d.iterdir() if p.name.endswith(".json") and not is_temporary(p.name)}


def kill_after(args: list[str], out: Path, n_cells: int, timeout: float = 300) -> dict[str, bytes]:
    """Start evaluate.py, SIGKILL it as soon as ``n_cells`` cells finished; returns those cells'
    JSON bytes as they were at the kill."""
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    try:
        while True:
            if len(finished_cells(out)) >= n_cells:
                proc.send_signal(signal.SIGKILL)
                break
            if proc.poll() is not None:
                raise AssertionError(f"evaluate.py ended before {n_cells} cells finished: {proc.stderr.read()[-2000:]}")
            if time.monotonic() - t0 > timeout:
                raise AssertionError("no cells finished in time")
            time.sleep(0.01)
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return finished_cells(out)


def result_doc(out: Path) -> dict:
    """What must not depend on the backend, the run or an interruption: every cell's summary and
    per-seed sums, in grid order."""
    s = json.loads((out / "summary.json").read_text())
    return {c["key"]: {"label": c["label"], "summary": c["summary"], "stats": c["stats"]} for c in s["cells"]}


def rounds_table(out: Path) -> dict[str, np.ndarray]:
    """All rounds of a grid, sorted by cell, agent, seed and round."""
    from specstop_gym.dataset import read_dataset

    cols = read_dataset(out / "rounds")
    order = np.lexsort((cols["round"], cols["seed"], cols["agent"].astype(str), cols["cell"].astype(str)))
    return {k: v[order] for k, v in cols.items()}


def assert_same_results(a: Path, b: Path) -> None:
    """Identical numbers in two grid folders: summaries, per-seed sums and every round."""
    ra, rb = result_doc(a), result_doc(b)
    assert list(ra) == list(rb)
    for key in ra:
        assert ra[key] == rb[key], f"cell {ra[key]['label']} differs"
    ta, tb = rounds_table(a), rounds_table(b)
    assert list(ta) == list(tb)
    for col in ta:
        if ta[col].dtype.kind == "f":
            np.testing.assert_array_equal(ta[col], tb[col], err_msg=col)  # NaN == NaN here
        else:
            assert (ta[col] == tb[col]).all(), col


def env_with(**kw: str) -> dict:
    env = dict(os.environ)
    env.update(kw)
    return env
