"""Crash safety (issue 14): evaluate.py and train.py killed with SIGKILL at seeded random moments,
including in the middle of saves, leave only complete files under their final names, and the
run can be continued (train.py --resume) or redone (evaluate.py on the same --out).

The scripts run as subprocesses through a small wrapper that announces every atomic save on
stderr (``SAVING <temporary file>``) and then holds it for a moment before the rename, so that
a kill can be aimed at a save: the temporary file is complete but not yet renamed. The kill
moments come from ``numpy.random.default_rng(SEED)``: the same kills on every run.

After each kill every file under its final name must parse: JSON loads, Parquet reads, PNGs
have their signature, zips pass their CRC check and SB3's members are there, pickles are
complete opcode streams (checked without unpickling), evaluations.csv has whole lines.

Defined behaviour after a kill:

* evaluate.py: rerunning on the same ``--out`` succeeds (the lock died with the process; the
  orphan temporary files are removed); config.json of the killed run says ``running``.
* train.py: ``--resume`` continues from the newest intact checkpoint (a kill before the first
  checkpoint leaves nothing to resume: the run is started again).
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SEED = 14
WRAPPER = r"""
import os, runpy, sys, time
sys.path.insert(0, os.environ["SPECSTOP_ROOT"])
import specstop_gym.dataset as ds
import specstop_gym.fileio as fio

real = fio.fsync_file
hold = float(os.environ.get("SLOW_SAVE_S", "0.4"))


def announced(path):
    real(path)
    sys.stderr.write(f"SAVING {path}\n")
    sys.stderr.flush()
    time.sleep(hold)


fio.fsync_file = announced
ds.fsync_file = announced
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""


class Child:
    """A script under the wrapper, its stderr collected line by line."""

    def __init__(self, script: str, args: list[str], tmp: Path) -> None:
        wrapper = tmp / "wrapper.py"
        wrapper.write_text(WRAPPER)
        env = {**os.environ, "SPECSTOP_ROOT": str(ROOT), "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
        self.proc = subprocess.Popen([sys.executable, str(wrapper), str(ROOT / script), *args], cwd=ROOT, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.saves = threading.Semaphore(0)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if line.startswith("SAVING "):
                self.saves.release()

    def kill_at_save(self, n: int, timeout: float = 300.0) -> str:
        """SIGKILL right after the n-th announced save (its temporary file written, not renamed)."""
        for _ in range(n):
            if not self.saves.acquire(timeout=timeout):
                raise AssertionError(f"fewer than {n} saves; stderr: {''.join(self.lines)[-2000:]}")
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        return [ln for ln in self.lines if ln.startswith("SAVING ")][-1].split(" ", 1)[1].strip()

    def kill_after(self, seconds: float, timeout: float = 300.0) -> None:
        """SIGKILL ``seconds`` after the run's first save (its config.json, once the arguments are
        checked): a random moment of the work itself. The saves that follow hold for
        ``SLOW_SAVE_S`` each, so the run is still going when the kill lands."""
        if not self.saves.acquire(timeout=timeout):
            raise AssertionError(f"no save; stderr: {''.join(self.lines)[-2000:]}")
        time.sleep(seconds)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def wait(self, timeout: float = 600.0) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code


def check_final_files(folder: Path) -> dict[str, int]:
    """Every file under a final name parses (module docstring); returns counts per kind."""
    from specstop_gym.dataset import read_dataset
    from specstop_gym.fileio import LOCK_NAME, is_temporary
    from specstop_gym.training.callbacks import verify_model_zip, verify_pickle

    seen: dict[str, int] = {}
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or is_temporary(p.name) or p.name == LOCK_NAME or "tfevents" in p.name:
            continue  # temporaries may be left by the kill; TensorBoard logs are append-only by design
        kind = "".join(p.suffixes[-2:]) if p.name.endswith(".csv.gz") else p.suffix
        seen[kind] = seen.get(kind, 0) + 1
        if kind == ".json":
            json.loads(p.read_text())
        elif kind in (".parquet", ".csv.gz") or (kind == ".csv" and p.name.startswith("rounds")):
            read_dataset(p)
        elif kind == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", p
        elif kind == ".zip":
            assert verify_model_zip(p) is None, (p, verify_model_zip(p))
        elif kind == ".pkl":
            assert verify_pickle(p) is None, (p, verify_pickle(p))
        elif kind == ".csv":  # evaluations.csv: whole lines of the documented width
            rows = list(csv.reader(p.read_text().splitlines()))
            assert rows and all(len(r) == len(rows[0]) for r in rows), p
        elif p.suffix == ".gz":
            gzip.decompress(p.read_bytes())
    return seen


def temporaries(folder: Path) -> list[Path]:
    from specstop_gym.fileio import is_temporary

    return [p for p in folder.rglob("*") if is_temporary(p.name)]


EVAL_ARGS = ["--agents", "static-k:k=2", "ucb-specstop", "oracle", "best-fixed-k", "--seeds", "4", "--requests",
             "2", "--set", "n_tokens=64", "--sweep-delays", "30", "300", "--sweep-seeds", "2", "--quiet"]


def test_evaluate_killed_at_random_moments_and_during_saves(tmp_path: Path) -> None:
    rng = np.random.default_rng(SEED)
    out = tmp_path / "run"
    killed_in_save = 0
    for attempt in range(3):
        child = Child("evaluate.py", [*EVAL_ARGS, "--out", str(out)], tmp_path)
        if attempt == 0:
            child.kill_after(float(rng.uniform(0.0, 1.5)))  # anywhere in the work: simulation or a save
        else:
            saving = child.kill_at_save(int(rng.integers(1, 6)))
            assert Path(saving).exists(), saving  # the kill landed inside the save
            killed_in_save += 1
        assert child.proc.returncode == -signal.SIGKILL
        if out.exists():
            check_final_files(out)
            cfg = out / "config.json"
            if cfg.exists():
                assert json.loads(cfg.read_text())["status"] in ("running", "finished")
    assert killed_in_save == 2 and temporaries(out)
    # the defined behaviour: the same command again, on the same folder, succeeds and cleans up
    r = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *EVAL_ARGS, "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600, check=False,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"})
    assert r.returncode == 0, r.stderr
    seen = check_final_files(out)
    assert seen[".parquet"] == 1 and seen[".json"] == 2 and seen[".png"] == 4
    assert not temporaries(out)
    assert json.loads((out / "config.json").read_text())["status"] == "finished"


def test_train_killed_during_saves_resumes(tmp_path: Path) -> None:
    pytest.importorskip("stable_baselines3")
    rng = np.random.default_rng(SEED + 1)
    run = tmp_path / "run"
    args = ["--algo", "DQN", "--total-timesteps", "640", "--checkpoint-freq", "64", "--eval-freq", "128",
            "--n-envs", "4", "--set", "n_tokens=32", "--eval-seeds", "0-1", "--verbose", "0", "--normalize",
            "--hyperparams", "learning_starts=32", "buffer_size=2000", "batch_size=32",
            "target_update_interval=64"]
    child = Child("train.py", [*args, "--out", str(run)], tmp_path)
    saving = child.kill_at_save(int(rng.integers(4, 9)))  # after the first checkpoint, inside a later save
    assert Path(saving).exists() and child.proc.returncode == -signal.SIGKILL
    seen = check_final_files(run)
    assert seen.get(".zip", 0) >= 1 and seen.get(".pkl", 0) >= 2  # checkpoints with statistics and buffer
    assert json.loads((run / "config.json").read_text())["status"] == "running"
    # resume, killed again at a random moment, then resumed to the end
    resume = ["--resume", str(run), "--verbose", "0"]
    child = Child("train.py", resume, tmp_path)
    child.kill_after(float(rng.uniform(0.0, 2.0)))
    assert child.proc.returncode == -signal.SIGKILL
    check_final_files(run)
    final = subprocess.run([sys.executable, str(ROOT / "train.py"), *resume], cwd=ROOT, capture_output=True,
                           text=True, timeout=600, check=False,
                           env={**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"})
    assert final.returncode == 0, final.stderr
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["status"] == "finished" and cfg["num_timesteps"] >= 640
    assert len(cfg["history"]) >= 2 and cfg["history"][0]["from_steps"] == 0
    seen = check_final_files(run)
    assert (run / "model.zip").exists() and (run / "summary.json").exists() and not temporaries(run)
    from agents.sb3_agent import SB3Agent
    from specstop_gym import make_scenario

    SB3Agent(run, make_scenario("qwen-geometric", n_tokens=32))  # loads, checksum matches
