"""Packaging: every package is listed, and a regular (non-editable) install ships the trace data."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in ROOT.glob("specstop_gym/**/__init__.py")}
    found |= {"agents"}
    assert found <= listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"


@pytest.mark.skipif(os.environ.get("SPECSTOP_SKIP_WHEEL") == "1", reason="wheel build disabled")
def test_wheel_ships_trace_data_and_scripts(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                          "-q", "-w", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    wheel = next(tmp_path.glob("*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    manifest = [n for n in names if n.endswith("specstop_gym_traces/MANIFEST.json")]
    assert manifest, "traces/MANIFEST.json missing from the wheel"
    assert any(n.startswith("specstop_gym_traces/delay/") and n.endswith(".csv") for n in names)
    assert any(n.startswith("specstop_gym_traces/acceptance/") and n.endswith(".jsonl") for n in names)
    assert any(n.startswith("specstop_gym_traces/channels/") and n.endswith(".json") for n in names)
    assert "evaluate.py" in names and "train.py" in names
    assert "specstop_gym/py.typed" in names
    assert "specstop_gym/training/zoo/ppo.yml" in names  # the RL Baselines3 Zoo hyperparameters

    # installed (not editable): shipped traces resolve from the package data
    target = tmp_path / "site"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                          str(wheel)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    code = ("import specstop_gym, gymnasium as gym; from specstop_gym.traces.manifest import verify_manifest; "
            "assert specstop_gym.__file__.startswith(%r), specstop_gym.__file__; verify_manifest(); "
            "env = gym.make('SpecStop-v0', scenario='trace-cellular', n_tokens=8); env.reset(seed=0); "
            "print('ok')" % str(target))
    env = {**os.environ, "PYTHONPATH": str(target)}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr
