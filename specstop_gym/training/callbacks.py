"""Callbacks of train.py: evaluation on common random numbers and resumable checkpoints.

* :class:`PolicyEvalCallback`: every ``eval_freq`` environment steps, the current policy plays
  the evaluation seeds as an agent (:class:`agents.sb3_agent.SB3Agent`) through the project's
  runner, i.e. on the same common random numbers as the oracle, whose run is computed once per
  (scenario, seeds) and cached. Logs ``eval/per_token_latency_ms``, ``eval/gap_to_oracle_pct``,
  ``eval/gap_to_best_fixed_k_pct`` and ``eval/mean_k`` to TensorBoard and appends a row to
  ``evaluations.csv`` in the run folder.
* :class:`RunCheckpointCallback`: SB3's ``CheckpointCallback`` (model, ``VecNormalize`` statistics
  and, for off-policy algorithms, the replay buffer) that keeps only the newest replay buffer and
  can save on demand (at the end of training and on Ctrl-C), so ``train.py --resume`` always
  finds the latest state. Every file is saved atomically (:func:`specstop_gym.fileio.atomic_path`:
  a temporary file, fsync, rename), the statistics and the replay buffer before the model zip,
  so a checkpoint's zip under its final name means the whole checkpoint is on disk.
* :func:`verify_checkpoint`: checks a checkpoint without unpickling anything (the zip's CRCs,
  SB3's members and its JSON ``data``; the pickles' opcode streams end to end), so
  ``train.py --resume`` can fall back to the newest intact checkpoint.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import pickletools
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback

from ..core.config import ScenarioConfig
from ..fileio import atomic_path, atomic_write_text

CHECKPOINT_PREFIX = "rl_model"
_CKPT = re.compile(rf"^{CHECKPOINT_PREFIX}_(\d+)_steps\.zip$")
EVAL_COLUMNS = ("timesteps", "per_token_latency_ms", "gap_to_oracle_pct", "gap_to_best_fixed_k_pct", "mean_k",
                "oracle_ms", "best_fixed_k_ms", "eval_s")


# ------------------------------------------------------------------------------ references
@functools.lru_cache(maxsize=16)
def reference_latencies(scenario: ScenarioConfig, seeds: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Per-seed per-token latency of the oracle and of best-fixed-k on ``seeds`` (computed once per
    scenario and seeds, then cached: the policy changes during training, the references do not)."""
    from agents.registry import make_agent

    from ..evaluation.runner import run_agent, run_best_fixed_k

    oracle = run_agent(make_agent("oracle", scenario, n_runs=len(seeds)), scenario, seeds, keep_rounds=False)
    best = run_best_fixed_k(scenario, seeds, keep_rounds=False)
    return oracle.per_token_latency_ms.copy(), best.per_token_latency_ms.copy()


def evaluate_model(model: Any, scenario: ScenarioConfig, seeds: tuple[int, ...], *, algorithm: str, level: str,
                   normalizer: Any = None) -> dict[str, float]:
    """The current policy on ``seeds`` through the runner: latency, gaps to oracle and best-fixed-k."""
    from agents.sb3_agent import SB3Agent

    from ..evaluation.runner import run_agent

    oracle, best = reference_latencies(scenario, tuple(int(s) for s in seeds))
    agent = SB3Agent.from_model(model, scenario, n_runs=len(seeds), algorithm=algorithm, level=level,
                                normalizer=normalizer)
    run = run_agent(agent, scenario, seeds, level=level, keep_rounds=False)
    lat = run.per_token_latency_ms
    return {
        "per_token_latency_ms": float(lat.mean()),
        "gap_to_oracle_pct": float(((lat - oracle) / oracle * 100.0).mean()),
        "gap_to_best_fixed_k_pct": float(((lat - best) / best * 100.0).mean()),
        "mean_k": run.stats.mean_k,
        "oracle_ms": float(oracle.mean()),
        "best_fixed_k_ms": float(best.mean()),
    }


class PolicyEvalCallback(BaseCallback):
    """Evaluate the policy every ``eval_freq`` environment steps on fixed seeds (module docstring)."""

    def __init__(self, scenario: ScenarioConfig, seeds: tuple[int, ...] | list[int], *, algorithm: str, level: str,
                 eval_freq: int, csv_path: str | os.PathLike[str] | None = None, verbose: int = 0) -> None:
        super().__init__(verbose)
        if eval_freq < 1:
            raise ValueError(f"eval_freq must be >= 1 environment steps, got {eval_freq}")
        self.scenario = scenario
        self.seeds = tuple(int(s) for s in seeds)
        self.algorithm = algorithm
        self.level = level
        self.eval_freq = int(eval_freq)
        self.csv_path = Path(csv_path) if csv_path is not None else None
        self.history: list[dict[str, float]] = []
        self._next = 0

    def _init_callback(self) -> None:
        # continue the schedule after a resume: next multiple of eval_freq above num_timesteps
        self._next = (self.model.num_timesteps // self.eval_freq + 1) * self.eval_freq
        reference_latencies(self.scenario, self.seeds)  # the oracle run, once, before training

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._next = (self.num_timesteps // self.eval_freq + 1) * self.eval_freq
            self.evaluate()
        return True

    def evaluate(self) -> dict[str, float]:
        """Run the evaluation now, log it and append it to the CSV."""
        t0 = time.perf_counter()
        result = evaluate_model(self.model, self.scenario, self.seeds, algorithm=self.algorithm, level=self.level,
                                normalizer=self.model.get_vec_normalize_env())
        result = {"timesteps": float(self.num_timesteps), **result, "eval_s": time.perf_counter() - t0}
        self.history.append(result)
        for key in ("per_token_latency_ms", "gap_to_oracle_pct", "gap_to_best_fixed_k_pct", "mean_k"):
            self.logger.record(f"eval/{key}", result[key])
        self.logger.dump(self.num_timesteps)
        if self.csv_path is not None:
            # the whole (small) file rewritten atomically: a kill never leaves half a line
            old = self.csv_path.read_text() if self.csv_path.exists() else ""
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            if not old:
                w.writerow(EVAL_COLUMNS)
            w.writerow([int(result["timesteps"])] + [f"{result[c]:.6g}" for c in EVAL_COLUMNS[1:]])
            atomic_write_text(self.csv_path, old + buf.getvalue())
        if self.verbose:
            print(f"eval @ {self.num_timesteps} steps: {result['per_token_latency_ms']:.2f} ms/token, "
                  f"gap to oracle {result['gap_to_oracle_pct']:+.2f}%, to best fixed k "
                  f"{result['gap_to_best_fixed_k_pct']:+.2f}%, mean k {result['mean_k']:.2f}", flush=True)
        return result


# ------------------------------------------------------------------------------ checkpoints
@dataclass(frozen=True)
class Checkpoint:
    """One saved training state in ``<run>/checkpoints``."""

    steps: int
    model: Path
    vecnormalize: Path | None
    replay_buffer: Path | None


def list_checkpoints(folder: str | os.PathLike[str]) -> list[Checkpoint]:
    """The checkpoints of a folder, oldest first (by step count in the file name)."""
    folder = Path(folder)
    out = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = _CKPT.match(p.name)
            if not m:
                continue
            steps = int(m.group(1))
            vn = folder / f"{CHECKPOINT_PREFIX}_vecnormalize_{steps}_steps.pkl"
            rb = folder / f"{CHECKPOINT_PREFIX}_replay_buffer_{steps}_steps.pkl"
            out.append(Checkpoint(steps, p, vn if vn.exists() else None, rb if rb.exists() else None))
    return sorted(out, key=lambda c: c.steps)


SB3_MEMBERS = ("data", "policy.pth")
"""Members every Stable-Baselines3 model zip has (``data`` is JSON)."""


def verify_model_zip(path: str | os.PathLike[str]) -> str | None:
    """None if ``path`` is an intact SB3 model archive, else what is wrong (nothing is
    unpickled: the zip's central directory and CRCs, SB3's members, ``data`` as JSON)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            missing = [m for m in SB3_MEMBERS if m not in names]
            if missing:
                return f"no {', '.join(missing)} in the archive"
            bad = zf.testzip()
            if bad is not None:
                return f"member {bad!r} is damaged (CRC mismatch)"
            data = json.loads(zf.read("data").decode("utf-8"))
            if not isinstance(data, dict):
                return "its 'data' member is not a JSON object"
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as e:
        return f"not a readable zip archive ({type(e).__name__}: {e})"
    except (UnicodeDecodeError, ValueError) as e:
        return f"its 'data' member is not JSON ({e})"
    return None


def verify_pickle(path: str | os.PathLike[str]) -> str | None:
    """None if ``path`` holds one complete pickle, else what is wrong. The opcode stream is read
    with :func:`pickletools.genops`, which parses without executing anything."""
    try:
        with open(path, "rb") as f:
            ops = pickletools.genops(f)
            last = None
            for last in ops:
                pass
            if last is None or last[0].name != "STOP":
                return "the pickle stream does not end (truncated)"
            if f.read(1):
                return "data after the end of the pickle"
    except (ValueError, EOFError, OSError) as e:
        return f"not a complete pickle ({type(e).__name__}: {e})"
    return None


def verify_checkpoint(ckpt: Checkpoint, *, normalize: bool) -> str | None:
    """None if ``ckpt`` can be resumed from (its zip, and its VecNormalize statistics when the run
    normalises), else the reason. A damaged replay buffer is not fatal (see train.py)."""
    problem = verify_model_zip(ckpt.model)
    if problem:
        return f"{ckpt.model.name}: {problem}"
    if normalize:
        if ckpt.vecnormalize is None:
            return f"{ckpt.model.name}: its VecNormalize statistics are missing"
        problem = verify_pickle(ckpt.vecnormalize)
        if problem:
            return f"{ckpt.vecnormalize.name}: {problem}"
    return None


class RunCheckpointCallback(CheckpointCallback):
    """CheckpointCallback that keeps the newest replay buffer only and saves on demand."""

    def __init__(self, save_freq_steps: int, n_envs: int, save_path: str | os.PathLike[str], *,
                 save_replay_buffer: bool = False, save_vecnormalize: bool = True, verbose: int = 0) -> None:
        # SB3 counts calls (one call = n_envs environment steps)
        super().__init__(save_freq=max(1, int(save_freq_steps) // max(1, n_envs)), save_path=str(save_path),
                         name_prefix=CHECKPOINT_PREFIX, save_replay_buffer=save_replay_buffer,
                         save_vecnormalize=save_vecnormalize, verbose=verbose)
        self.enabled = save_freq_steps > 0

    def _on_step(self) -> bool:
        if self.enabled and self.n_calls % self.save_freq == 0:
            self.save_checkpoint()
        return True

    def save_checkpoint(self) -> Path:
        """Save replay buffer, VecNormalize statistics and model at the current step count, each
        atomically and the model last (module docstring); return the zip path."""
        os.makedirs(self.save_path, exist_ok=True)
        if self.save_replay_buffer and getattr(self.model, "replay_buffer", None) is not None:
            with atomic_path(self._checkpoint_path("replay_buffer_", extension="pkl")) as tmp:
                self.model.save_replay_buffer(tmp)
        if self.save_vecnormalize and self.model.get_vec_normalize_env() is not None:
            with atomic_path(self._checkpoint_path("vecnormalize_", extension="pkl")) as tmp:
                self.model.get_vec_normalize_env().save(str(tmp))
        model_path = Path(self._checkpoint_path(extension="zip"))
        with atomic_path(model_path) as tmp:
            self.model.save(tmp)
        if self.save_replay_buffer:
            self._prune_replay_buffers()
        if self.verbose >= 2:
            print(f"Saving model checkpoint to {model_path}")
        return model_path

    def _prune_replay_buffers(self) -> None:
        """Replay buffers are large: keep only the one of the newest checkpoint."""
        ckpts = [c for c in list_checkpoints(self.save_path) if c.replay_buffer is not None]
        for c in ckpts[:-1]:
            try:
                c.replay_buffer.unlink()  # type: ignore[union-attr]
            except FileNotFoundError:
                pass


__all__ = [
    "CHECKPOINT_PREFIX",
    "EVAL_COLUMNS",
    "Checkpoint",
    "PolicyEvalCallback",
    "RunCheckpointCallback",
    "evaluate_model",
    "list_checkpoints",
    "reference_latencies",
    "verify_checkpoint",
    "verify_model_zip",
    "verify_pickle",
]
