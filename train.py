"""Train a Stable-Baselines3 agent on a specstop-gym environment and write a run folder.

    python train.py                                          # PPO, round level, qwen-geometric
    python train.py --algo MaskablePPO --level token --total-timesteps 300000
    python train.py --scenario qwen-geometric --set channel=constant --set delay_ms=300
    python train.py --algo DQN --hyperparams learning_rate=5e-4 net_arch=[128,128]
    python train.py --out runs/ppo-300ms --set channel=constant --set delay_ms=300 --total-timesteps 100000
    python train.py --resume runs/ppo-300ms --total-timesteps 200000
    python evaluate.py --agents sb3:runs/ppo-300ms/model.zip oracle best-fixed-k --set channel=constant --set delay_ms=300

The run folder (``--out``, default ``runs/<env>__<algo>__<seed>__<time>``) holds ``config.json``
(every resolved setting, the run's status and the sha256 of model.zip), ``model.zip``,
``vecnormalize.pkl`` (with ``--normalize``), ``checkpoints/``, TensorBoard logs in ``tb/``,
``evaluations.csv`` (the periodic evaluations) and ``summary.json``: the trained policy, the
oracle and best-fixed-k on the evaluation seeds, in evaluate.py's schema (docs/evaluation.md).
Every file is written atomically (a kill leaves the previous version or the new one, never a
truncated file); the folder is locked while a run writes to it. See docs/training.md.

Trust: --resume (and evaluate.py's sb3:PATH) unpickles the run's model, VecNormalize statistics
and replay buffer: a pickle can run code, so resume only run folders you trust. --resume checks
each checkpoint's archive and falls back to the newest intact one, saying so.

Exit codes: 0 success; 1 a disk error during the run (one line naming the file; config.json
says failed); 2 invalid arguments or a run folder in use (checked before any work; nothing is
written); 130 interrupted (a checkpoint is saved first: continue with ``--resume RUN_DIR``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import os
import random
import shlex
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from specstop_gym.cli import (
    UsageError,
    check_count,
    check_path,
    dataclass_parser,
    did_you_mean,
    parse_scenario_overrides,
    print_error,
    tuples_from_lists,
)
from specstop_gym.cli import parse_seeds as _parse_seed_ranges

RUN_SCHEMA_VERSION = 1
"""Version of the config.json layout of a run folder."""

MAX_N_ENVS = 4_096
"""Most parallel environments (rows of the native vector env)."""
MAX_TRAIN_SEED = 2**31 - 1
"""Largest --seed: environment row i gets seed + i and a resumed session seed + steps, all below
2^32 (the global generators SB3 seeds take 32-bit seeds)."""

RESUMABLE = ("total_timesteps", "eval_freq", "checkpoint_freq", "progress_bar", "verbose", "torch_threads",
             "device", "resume")
"""Flags that may be given together with --resume (everything else comes from the run's config.json)."""


@dataclass
class TrainConfig:
    """Command-line configuration of train.py (each field is a flag: ``n_envs`` -> ``--n-envs``)."""

    algo: str = field(default="PPO", metadata={"metavar": "NAME"})
    """algorithm: PPO, A2C, DQN (stable-baselines3), MaskablePPO, RecurrentPPO (sb3-contrib)"""
    level: Literal["round", "token"] = "round"
    """round: choose k per round (SpecStopRound-v0); token: draft or stop after each token (SpecStop-v0)"""
    scenario: str = field(default="qwen-geometric", metadata={"metavar": "NAME"})
    """scenario preset (specstop_gym.scenario_names())"""
    set: list[str] = field(default_factory=list)
    """override a scenario field, field=value (repeatable; numbers, lists, true/false/none, else strings); the reward is the environment's registered default unless overridden, e.g. --set reward_mode=latency (docs/training.md)"""
    n_envs: int = field(default=16, metadata={"metavar": "N"})
    """parallel environments (rows of one native vector env)"""
    seed: int = field(default=0, metadata={"metavar": "SEED"})
    """seed of the algorithm (torch, exploration) and of the environments (row i gets seed + i)"""
    total_timesteps: int = field(default=200_000, metadata={"metavar": "N"})
    """environment steps to train for (with --resume: the new total, counting the steps already done)"""
    native: bool = True
    """use the native vector env behind an SB3 adapter (--no-native: DummyVecEnv of single envs)"""
    normalize: bool = False
    """normalise observations with VecNormalize (statistics saved as vecnormalize.pkl and reloaded)"""
    hyperparams: list[str] = field(default_factory=list, metadata={"metavar": "KEY=VALUE"})
    """override hyperparameters (specstop_gym/training/hyperparams.py), e.g. learning_rate=1e-4 net_arch=[32,32]"""
    eval_freq: int = field(default=25_000, metadata={"metavar": "N"})
    """evaluate the policy every N environment steps on the evaluation seeds (0: never)"""
    eval_seeds: list[str] = field(default_factory=lambda: ["1000-1009"], metadata={"metavar": "SEED"})
    """evaluation seeds: integers and ranges A-B (common random numbers with the oracle)"""
    checkpoint_freq: int = field(default=50_000, metadata={"metavar": "N"})
    """save a checkpoint every N environment steps (0: only at the end and on Ctrl-C)"""
    out: str | None = field(default=None, metadata={"metavar": "DIR"})
    """run folder (default: runs/<env>__<algo>__<seed>__<time>)"""
    resume: str | None = field(default=None, metadata={"metavar": "RUN_DIR"})
    """continue the run in RUN_DIR from its newest intact checkpoint (model, VecNormalize, step count); trusted runs only: their files are unpickled"""
    progress_bar: bool = False
    """show a progress bar (tqdm + rich)"""
    torch_threads: int = field(default=1, metadata={"metavar": "N"})
    """torch CPU threads during the run (small MLPs run fastest on one); restored afterwards"""
    device: str = field(default="cpu", metadata={"metavar": "DEVICE"})
    """torch device (cpu, cuda, auto)"""
    verbose: int = field(default=1, metadata={"metavar": "0|1|2"})
    """0: silent; 1: evaluation lines and the final table; 2: also SB3's training logs"""


def build_parser(suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """One flag per TrainConfig field; ``suppress_defaults`` leaves unset flags out of the namespace
    (to tell which flags were given explicitly)."""
    import textwrap

    from specstop_gym.scenarios import scenario_names

    paragraphs = (__doc__ or "").split("\n\n")
    scen = textwrap.fill(", ".join(scenario_names()), 96, initial_indent="  ", subsequent_indent="  ",
                         break_on_hyphens=False)
    names = (f"scenarios (--scenario; docs/scenarios.md):\n{scen}\n\nalgorithms (--algo): PPO, A2C, DQN "
             "(stable-baselines3), MaskablePPO, RecurrentPPO (sb3-contrib); install: " + TRAINING_EXTRA_HINT)
    epilog = "\n\n".join(["examples:\n" + paragraphs[1], names, *paragraphs[2:]])
    return dataclass_parser(TrainConfig, "train.py", __doc__, epilog=epilog, suppress_defaults=suppress_defaults,
                            negatable=("native",))


def parse_args(argv: list[str] | None) -> tuple[TrainConfig, set[str]]:
    """The configuration and the names of the flags given explicitly."""
    ns = build_parser().parse_args(argv)
    explicit = set(vars(build_parser(suppress_defaults=True).parse_args(argv)))
    values = vars(ns)
    values["set"] = values["set"] or []
    return TrainConfig(**values), explicit


# --------------------------------------------------------------------------------------- validation
@dataclass
class Plan:
    """Everything resolved and checked before any work."""

    config: TrainConfig
    algo: str
    level: str
    env_id: str
    overrides: dict[str, Any]
    scenario: Any  # ScenarioConfig
    hyperparams: dict[str, Any]
    eval_seeds: list[int]
    run_dir: Path
    command: str
    checkpoint: Any = None  # callbacks.Checkpoint when resuming
    saved: dict[str, Any] | None = None  # the config.json of a resumed run
    fallbacks: list[Any] = dataclasses.field(default_factory=list)  # older intact checkpoints, newest first


MAX_EVAL_SEEDS = 10_000
"""Most evaluation seeds of a training run."""


def parse_seeds(items: list[str]) -> list[int]:
    """``["1000-1003", "7"]`` -> ``[1000, 1001, 1002, 1003, 7]`` (duplicates dropped, order kept;
    at most :data:`MAX_EVAL_SEEDS`, each in 0..2^32-1)."""
    return _parse_seed_ranges(items, "--eval-seeds", MAX_EVAL_SEEDS)


HYPERPARAM_BOUNDS: dict[str, tuple[float, float, bool]] = {
    "learning_rate": (1e-12, 1.0, False), "n_steps": (1, 65_536, True), "batch_size": (1, 1 << 20, True),
    "n_epochs": (1, 1_000, True), "gamma": (0.0, 1.0, False), "gae_lambda": (0.0, 1.0, False),
    "clip_range": (1e-6, 10.0, False), "clip_range_vf": (1e-6, 1e6, False), "ent_coef": (0.0, 100.0, False),
    "vf_coef": (0.0, 100.0, False), "max_grad_norm": (1e-6, 1e6, False), "target_kl": (1e-8, 100.0, False),
    "buffer_size": (1, 1_000_000, True), "learning_starts": (0, 10**10, True), "tau": (0.0, 1.0, False),
    "train_freq": (1, 10**6, True), "gradient_steps": (-1, 10_000, True),
    "target_update_interval": (1, 10**10, True), "exploration_fraction": (0.0, 1.0, False),
    "exploration_initial_eps": (0.0, 1.0, False), "exploration_final_eps": (0.0, 1.0, False),
    "lstm_hidden_size": (1, 4_096, True), "n_lstm_layers": (1, 16, True), "sde_sample_freq": (-1, 10**6, True),
    "rms_prop_eps": (1e-12, 1.0, False), "stats_window_size": (1, 10**6, True),
}
"""(lo, hi, integer) of the hyperparameters train.py checks before building a model: probabilities
and discounts in [0, 1], positive rates and sizes that keep the rollout and replay buffers and
the networks within memory (docs/training.md). ``net_arch``: at most 16 layers of 1..4096 units.
Any other numeric value must be finite."""
MAX_ROLLOUT_SAMPLES = 1 << 21
"""Largest on-policy rollout, ``n_steps * n_envs`` samples."""


def check_hyperparams(hp: dict[str, Any], n_envs: int) -> None:
    """Refuse hyperparameters outside :data:`HYPERPARAM_BOUNDS` (UsageError naming the key)."""
    import math

    def number(key: str, v: Any) -> None:
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return
        if isinstance(v, (int, float)):
            if not math.isfinite(v):
                raise UsageError(f"--hyperparams {key}={v!r}: must be a finite number")
            if key in HYPERPARAM_BOUNDS:
                lo, hi, integer = HYPERPARAM_BOUNDS[key]
                if not lo <= v <= hi or (integer and v != int(v)):
                    kind = "an integer" if integer else "a number"
                    raise UsageError(f"--hyperparams {key}={v!r}: must be {kind} in [{lo:g}, {hi:g}]")
        elif isinstance(v, (list, tuple)):
            if len(v) > 64:
                raise UsageError(f"--hyperparams {key}: at most 64 entries")
            for x in v:
                number(key, x)
        elif isinstance(v, dict):
            for k, x in v.items():
                number(str(k), x)

    def arch(key: str, v: Any) -> None:
        layers = v if isinstance(v, (list, tuple)) else None
        if isinstance(v, dict):
            for part in v.values():
                arch(key, part)
            return
        if layers is None or len(layers) > 16 or any(isinstance(u, bool) or not isinstance(u, int)
                                                     or not 1 <= u <= 4096 for u in layers):
            raise UsageError(f"--hyperparams {key}={v!r}: must be a list of at most 16 layer sizes in 1..4096 "
                             "(or a dict of such lists)")

    for key, value in hp.items():
        number(key, value)
        if key == "net_arch":
            arch(key, value)
        if key == "policy_kwargs" and isinstance(value, dict) and "net_arch" in value:
            arch("policy_kwargs.net_arch", value["net_arch"])
        if key == "learning_rate" and isinstance(value, str):
            rate = float(value[4:])
            if not 1e-12 <= rate <= 1.0:
                raise UsageError(f"--hyperparams learning_rate={value!r}: the initial rate must be in [1e-12, 1]")
    n_steps = hp.get("n_steps")
    if isinstance(n_steps, int) and n_steps * n_envs > MAX_ROLLOUT_SAMPLES:
        raise UsageError(f"--hyperparams n_steps={n_steps} with --n-envs {n_envs}: a rollout of "
                         f"{n_steps * n_envs} samples; at most {MAX_ROLLOUT_SAMPLES}")


def check_device(device: str) -> str:
    """cpu, auto, cuda, cuda:N or mps, available here (UsageError otherwise)."""
    import re

    if not isinstance(device, str) or not re.fullmatch(r"cpu|auto|mps|cuda(:\d{1,3})?", device):
        raise UsageError(f"--device must be cpu, auto, cuda, cuda:N or mps, got {str(device)[:40]!r}")
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available on this machine")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        raise UsageError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps: MPS is not available on this machine")
    return device


def env_spaces(scenario: Any, level: str) -> tuple[Any, Any, bool]:
    """(observation space, action space, has action masks) of the environment train.py will build.

    Both environments implement ``action_masks()`` (the round level's are all True). Kept as a
    function so that tests can substitute spaces and exercise the compatibility check.
    """
    from agents.sb3_agent import scenario_spaces

    obs, act, _ = scenario_spaces(scenario, level)
    return obs, act, True


def _new_run_dir(config: TrainConfig, env_id: str, algo: str) -> Path:
    if config.out:
        return Path(config.out)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{env_id}__{algo}__{config.seed}__{stamp}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = Path(f"{base}-{n}")
    return out


def _load_resume(config: TrainConfig, explicit: set[str]) -> tuple[TrainConfig, dict[str, Any], Any, Path]:
    """The saved configuration of ``--resume RUN_DIR`` with the allowed flags applied, and its
    newest checkpoint."""
    from specstop_gym.training.callbacks import list_checkpoints, verify_checkpoint

    run_dir = Path(check_path("--resume", config.resume)).expanduser()
    if not run_dir.is_dir():
        raise UsageError(f"--resume {str(run_dir)!r}: no such folder")
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise UsageError(f"--resume {str(run_dir)!r}: not a train.py run folder (no config.json)")
    try:
        if cfg_path.stat().st_size > 16 << 20:
            raise ValueError("larger than 16 MiB")
        saved = json.loads(cfg_path.read_text())
        train = saved["train"]
        if saved.get("kind") != "specstop-gym training run" or not isinstance(train, dict):
            raise KeyError("kind")
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise UsageError(f"--resume {str(run_dir)!r}: config.json is not a train.py run configuration ({e})") from None
    if saved.get("schema_version") != RUN_SCHEMA_VERSION:
        raise UsageError(f"--resume {str(run_dir)!r}: config.json has schema version {saved.get('schema_version')!r}, "
                         f"this train.py reads version {RUN_SCHEMA_VERSION}")
    fixed = sorted(n for n in explicit if n not in RESUMABLE)
    if fixed:
        flags = ", ".join("--" + n.replace("_", "-") for n in fixed)
        raise UsageError(f"--resume continues a run with its saved settings; {flags} cannot be changed "
                         f"(allowed: {', '.join('--' + n.replace('_', '-') for n in RESUMABLE if n != 'resume')})")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in train.items() if k in names}
    for n in explicit & set(RESUMABLE):
        values[n] = getattr(config, n)
    values["out"] = str(run_dir)
    try:
        resumed = TrainConfig(**values)
    except TypeError as e:
        raise UsageError(f"--resume {str(run_dir)!r}: config.json does not fit this train.py ({e})") from None
    ckpts = list_checkpoints(run_dir / "checkpoints")
    if not ckpts:
        raise UsageError(f"--resume {str(run_dir)!r}: no checkpoint in {str(run_dir / 'checkpoints')!r} "
                         "(the run stopped before its first checkpoint; start it again)")
    good = []
    for c in reversed(ckpts):  # newest first; damaged ones are skipped with a note
        problem = verify_checkpoint(c, normalize=resumed.normalize)
        if problem:
            print(f"note: --resume: checkpoint {c.model.name} is not usable ({problem}); trying an older one",
                  file=sys.stderr)
        else:
            good.append(c)
    if not good:
        raise UsageError(f"--resume {str(run_dir)!r}: none of the {len(ckpts)} checkpoints is usable "
                         "(see the notes above); start the run again")
    if good[0] is not ckpts[-1]:
        print(f"note: --resume: resuming from {good[0].model.name} ({good[0].steps} steps), the newest intact "
              "checkpoint", file=sys.stderr)
    ckpt = good[0]
    if "total_timesteps" not in explicit:
        resumed.total_timesteps = int(train.get("total_timesteps", 0))
    if ckpt.steps >= resumed.total_timesteps:
        raise UsageError(f"--resume {str(run_dir)!r}: the last checkpoint already has {ckpt.steps} steps "
                         f"(>= --total-timesteps {resumed.total_timesteps}); pass a larger --total-timesteps")
    if saved.get("status") == "running":
        print(f"note: --resume: the previous session of {str(run_dir)!r} did not end normally (killed?); "
              f"continuing from {ckpt.steps} steps", file=sys.stderr)
    return resumed, saved, good, run_dir


TRAINING_EXTRA_HINT = 'pip install -e ".[sb3]"'
"""How to install what train.py needs (torch, stable-baselines3, sb3-contrib): the ``sb3`` extra."""


def check_training_extras() -> None:
    """train.py needs the ``sb3`` extra (torch, stable-baselines3, sb3-contrib), which the main job
    (evaluate.py) does not: say how to install it instead of a ModuleNotFoundError."""
    for module in ("torch", "stable_baselines3", "sb3_contrib"):
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise UsageError(f"{module} is not installed ({type(e).__name__}); train.py needs the training extra: "
                             f"{TRAINING_EXTRA_HINT} (a CPU-only torch: pip install torch --index-url "
                             "https://download.pytorch.org/whl/cpu)") from None


def rollout_note(algo: str, hyperparams: dict[str, Any], n_envs: int, total: int, start: int) -> str | None:
    """The note when SB3 will train more steps than ``--total-timesteps`` asks, or None.

    SB3's on-policy algorithms collect whole rollouts of ``n_steps * n_envs`` steps before
    checking the budget, and the off-policy ones step all ``n_envs`` environments at once, so
    ``learn(total)`` ends at the first multiple of the rollout (of ``n_envs``) at or above it.
    """
    from specstop_gym.training.hyperparams import ALGORITHM_INFO

    if ALGORITHM_INFO[algo].on_policy:
        unit = int(hyperparams.get("n_steps", 2048)) * n_envs
        what = f"whole rollouts of n_steps x n_envs = {unit} steps"
    else:
        unit = n_envs
        what = f"steps of all {n_envs} environments at once"
    todo = total - start
    trained = -(-todo // unit) * unit
    if trained == todo:
        return None
    return (f"note: --total-timesteps {total}: {algo} trains in {what}, so this run trains {trained} steps "
            f"(to {start + trained}); pass a multiple of {unit} to train exactly that many")


def prepare(config: TrainConfig, explicit: set[str], command: str) -> Plan:
    """Check every argument and resolve the run (UsageError with a clear message otherwise)."""
    check_training_extras()
    from specstop_gym.core.config import ConfigError
    from specstop_gym.evaluation.report import check_writable
    from specstop_gym.scenarios import build_simulator, make_scenario, scenario_names
    from specstop_gym.training.hyperparams import (
        ENV_IDS,
        HyperparamError,
        canonical_algorithm,
        check_algorithm_spaces,
        parse_overrides,
        resolve_hyperparams,
    )

    saved, ckpt, fallbacks = None, None, []
    if config.resume is not None:
        config, saved, good, _ = _load_resume(config, explicit)
        ckpt, fallbacks = good[0], good[1:]
    try:
        algo = canonical_algorithm(config.algo)
    except HyperparamError as e:
        raise UsageError(str(e)) from None
    if config.level not in ENV_IDS:
        raise UsageError(f"unknown level {config.level!r}; valid: {', '.join(ENV_IDS)}")
    env_id = ENV_IDS[config.level]
    for name, lo, hi in (("n_envs", 1, MAX_N_ENVS), ("total_timesteps", 1, 10**10), ("eval_freq", 0, 10**10),
                         ("checkpoint_freq", 0, 10**10), ("torch_threads", 1, 256), ("seed", 0, MAX_TRAIN_SEED),
                         ("verbose", 0, 2)):
        value = getattr(config, name)
        if isinstance(value, int) and not isinstance(value, bool) and value < lo and name != "verbose":
            raise UsageError(f"--{name.replace('_', '-')} must be >= {lo}, got {value}")
        check_count(f"--{name.replace('_', '-')}", value, lo, hi)
    check_device(config.device)
    if config.out is not None:
        check_path("--out", config.out)
    if len(config.set) > 1000 or len(config.hyperparams) > 1000:
        raise UsageError("at most 1000 --set and --hyperparams items")
    if config.scenario not in scenario_names():
        raise UsageError(f"--scenario: unknown scenario {config.scenario!r}"
                         f"{did_you_mean(config.scenario, scenario_names())}; valid: {', '.join(scenario_names())}")
    if saved is not None:
        overrides = dict(_tuples_in(saved["scenario_overrides"]))
    else:
        overrides = parse_scenario_overrides(config.set)  # the environment's registered defaults otherwise
    try:
        scenario = make_scenario(config.scenario, **overrides)
        build_simulator(scenario, 1)  # loads trace files, if any
    except (ConfigError, ValueError, TypeError, OSError) as e:
        raise UsageError(f"scenario {config.scenario!r}: {e}") from None
    try:
        if saved is not None:
            hyperparams = dict(saved["hyperparams"])
        else:
            hyperparams = resolve_hyperparams(algo, config.level, parse_overrides(config.hyperparams))
            check_hyperparams(hyperparams, config.n_envs)
        obs_space, act_space, has_masks = env_spaces(scenario, config.level)
        check_algorithm_spaces(algo, obs_space, act_space, has_action_masks=has_masks)
    except HyperparamError as e:
        raise UsageError(str(e)) from None
    eval_seeds = parse_seeds(config.eval_seeds)
    if saved is not None:
        run_dir = Path(str(config.out))
    else:
        run_dir = _new_run_dir(config, env_id, algo)
        if run_dir.exists() and any((run_dir / n).exists() for n in ("config.json", "model.zip", "checkpoints")):
            raise UsageError(f"--out {str(run_dir)!r} already holds a run; continue it with --resume "
                             f"{str(run_dir)!r} or choose another folder")
    try:
        check_writable(run_dir)
    except OSError as e:
        raise UsageError(str(e)) from None
    check_space(run_dir, algo, hyperparams, obs_space)
    return Plan(config=config, algo=algo, level=config.level, env_id=env_id, overrides=overrides, scenario=scenario,
                hyperparams=hyperparams, eval_seeds=eval_seeds, run_dir=run_dir, command=command, checkpoint=ckpt,
                saved=saved, fallbacks=fallbacks)


def check_space(run_dir: Path, algo: str, hyperparams: dict[str, Any], obs_space: Any) -> None:
    """Refuse a run whose checkpoints cannot fit the free space: a DQN replay buffer is saved with
    every checkpoint (``buffer_size`` x observation floats, twice), briefly twice over (atomic save)."""
    from specstop_gym.fileio import format_bytes, free_bytes

    free = free_bytes(run_dir)
    if free is None:
        return
    need = 64 << 20  # models, statistics, TensorBoard logs
    if algo == "DQN":
        obs = int(getattr(obs_space, "shape", (1,))[0])
        need += 2 * int(hyperparams.get("buffer_size", 1_000_000)) * (2 * obs * 4 + 16)
    if free < need:
        raise UsageError(f"not enough free space in {str(run_dir)!r}: checkpoints need about {format_bytes(need)}, "
                         f"{format_bytes(free)} are free")


def _tuples_in(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuples_from_lists(v) for k, v in d.items()}


# --------------------------------------------------------------------------------------- running
@contextlib.contextmanager
def confined_global_state(threads: int) -> Iterator[None]:
    """Restore the global generators and torch's thread count afterwards.

    SB3 seeds Python's ``random``, numpy's global generator and torch's global generator when a
    model gets ``seed=`` (``set_random_seed``), and torch samples actions from its global
    generator; there is no per-model generator. train.py therefore seeds globally during the run
    and puts the previous states back when it ends, so calling ``main()`` in a process (tests)
    leaves its random streams untouched.
    """
    import numpy as np
    import torch

    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    n_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        torch.set_num_threads(n_threads)


def make_env(plan: Plan, seed: int) -> Any:
    """The training VecEnv (native adapter or DummyVecEnv), wrapped in VecNormalize if asked."""
    from stable_baselines3.common.vec_env import VecNormalize

    from specstop_gym.sb3_vec_env import make_sb3_vec_env

    cfg = plan.config
    venv = make_sb3_vec_env(plan.env_id, cfg.n_envs, seed, scenario=cfg.scenario, native=cfg.native, monitor=True,
                            **plan.overrides)
    if cfg.normalize:  # statistics are loaded only when the run's config says it normalises
        if plan.checkpoint is not None:
            venv = VecNormalize.load(str(plan.checkpoint.vecnormalize), venv)
            venv.training = True
        else:
            venv = VecNormalize(venv, norm_obs=True, norm_reward=False,
                                gamma=float(plan.hyperparams.get("gamma", 0.99)))
    return venv


def build_model(plan: Plan, venv: Any) -> Any:
    """A new model, or the checkpoint's when resuming (with its replay buffer for DQN)."""
    from specstop_gym.training.hyperparams import ALGORITHM_INFO, algorithm_kwargs

    info = ALGORITHM_INFO[plan.algo]
    cls = info.load_class()
    cfg = plan.config
    sb3_verbose = 1 if cfg.verbose >= 2 else 0
    tb = str(plan.run_dir / "tb")
    if plan.checkpoint is None:
        return cls(info.policy, venv, seed=cfg.seed, device=cfg.device, verbose=sb3_verbose, tensorboard_log=tb,
                   **algorithm_kwargs(plan.algo, plan.hyperparams))
    model = cls.load(str(plan.checkpoint.model), env=venv, device=cfg.device, tensorboard_log=tb, verbose=sb3_verbose)
    if not info.on_policy and hasattr(model, "load_replay_buffer"):  # only off-policy runs save one
        from specstop_gym.training.callbacks import verify_pickle

        rb = plan.checkpoint.replay_buffer
        problem = "missing" if rb is None else verify_pickle(rb)
        if problem:
            print(f"note: --resume: the replay buffer of {plan.checkpoint.model.name} is not usable ({problem}); "
                  "continuing with an empty one", file=sys.stderr)
        else:
            model.load_replay_buffer(str(rb))
    # a fresh, reproducible stream for the continuation (the start's would replay the first episodes)
    model.set_random_seed(cfg.seed + plan.checkpoint.steps)
    return model


def run_metadata(plan: Plan) -> dict[str, Any]:
    """Stored inside every saved zip (``model.specstop_meta``): what SB3Agent needs to check and feed it."""
    from agents.sb3_agent import scenario_spaces

    _, _, fields = scenario_spaces(plan.scenario, plan.level)
    return {"algorithm": plan.algo, "level": plan.level, "env_id": plan.env_id, "scenario": plan.scenario.name,
            "max_draft": plan.scenario.max_draft, "n_states": len([f for f in fields if f.startswith("csi_")]),
            "observation_fields": fields, "normalize": plan.config.normalize,
            "scenario_config": plan.scenario.to_dict()}


def _config_document(plan: Plan, status: str, history: list[dict[str, Any]], num_timesteps: int,
                     error: str | None = None, checksums: dict[str, str] | None = None) -> dict[str, Any]:
    from specstop_gym.evaluation.report import versions
    from specstop_gym.training.hyperparams import ALGORITHM_INFO

    train = dataclasses.asdict(plan.config)
    train["resume"] = None
    created = (plan.saved or {}).get("created") or datetime.now(timezone.utc).isoformat(timespec="seconds")
    return {
        "kind": "specstop-gym training run",
        "schema_version": RUN_SCHEMA_VERSION,
        "created": created,
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": plan.command,
        "status": status,
        "error": error,
        "pid": os.getpid(),
        "algorithm": plan.algo,
        "policy": ALGORITHM_INFO[plan.algo].policy,
        "level": plan.level,
        "env_id": plan.env_id,
        "num_timesteps": int(num_timesteps),
        "train": train,
        "scenario_name": plan.config.scenario,
        "scenario_overrides": plan.overrides,
        "scenario": plan.scenario.to_dict(),
        "hyperparams": plan.hyperparams,
        "eval_seeds": plan.eval_seeds,
        "history": history,
        "files": {"model": "model.zip", "vecnormalize": "vecnormalize.pkl" if plan.config.normalize else None,
                  "replay_buffer": None if ALGORITHM_INFO[plan.algo].on_policy else "checkpoints/ (newest only)",
                  "checkpoints": "checkpoints/", "tensorboard": "tb/", "evaluations": "evaluations.csv",
                  "summary": "summary.json"},
        "sha256": dict(checksums or {}),
        "versions": versions(),
    }


def final_evaluation(plan: Plan, model_path: Path) -> dict[str, Any]:
    """The saved model (reloaded from disk, as evaluate.py would), the oracle and best-fixed-k on the
    evaluation seeds: summary.json in evaluate.py's schema, plus a ``training`` section."""
    from agents.sb3_agent import SB3Agent
    from specstop_gym.evaluation import report

    label = f"sb3:{model_path}"
    agent = SB3Agent(model_path, plan.scenario, n_runs=len(plan.eval_seeds), seed=plan.eval_seeds[0])
    rounds = {"n": 0}

    def on_round(n: int) -> None:
        rounds["n"] += n

    t0 = time.perf_counter()
    comp = report.run_comparison(plan.scenario, [label, "oracle", report.BEST_FIXED_K], plan.eval_seeds,
                                 level=plan.level, prebuilt={label: agent}, on_round=on_round, keep_rounds=False)
    elapsed = time.perf_counter() - t0
    summary = report.build_summary(comp, command=plan.command, files={"model": "model.zip", "config": "config.json"})
    summary["wall_s"] = elapsed
    summary["rounds_per_s"] = rounds["n"] / elapsed if elapsed > 0 else None
    summary["training"] = {"run_dir": str(plan.run_dir), "algorithm": plan.algo, "level": plan.level,
                           "env_id": plan.env_id, "num_timesteps": int(agent.model.num_timesteps),
                           "agent": label}
    return summary


def _build(plan: Plan, seed: int) -> tuple[Any, Any]:
    """The env and the model; when resuming, a checkpoint that fails to load is replaced by the
    next older intact one (with a note), as long as there is one."""
    while True:
        venv = None
        try:
            venv = make_env(plan, seed)
            return venv, build_model(plan, venv)
        except Exception as e:
            if venv is not None:
                venv.close()
            if plan.checkpoint is None or not plan.fallbacks:
                raise
            print(f"note: --resume: {plan.checkpoint.model.name} could not be loaded ({type(e).__name__}: {e}); "
                  f"trying {plan.fallbacks[0].model.name}", file=sys.stderr)
            plan.checkpoint = plan.fallbacks.pop(0)
            seed = plan.config.seed + plan.checkpoint.steps


def run(plan: Plan) -> int:
    """Train, save, evaluate; returns the exit code. The caller holds the run folder's lock."""
    from stable_baselines3.common.callbacks import CallbackList

    from specstop_gym.evaluation import report
    from specstop_gym.fileio import atomic_path
    from specstop_gym.training.callbacks import PolicyEvalCallback, RunCheckpointCallback
    from specstop_gym.training.hyperparams import ALGORITHM_INFO

    cfg = plan.config
    start_steps = plan.checkpoint.steps if plan.checkpoint is not None else 0
    try:
        venv, model = _build(plan, cfg.seed + start_steps)
    except (ValueError, TypeError, AssertionError, RuntimeError, OSError, EOFError) as e:
        if isinstance(e, OSError) and _disk_error(e):
            raise
        print_error("train.py", f"cannot build the {plan.algo} model: {type(e).__name__}: {e}")
        if plan.checkpoint is None and plan.run_dir.is_dir() and all(
                p.name == ".specstop.lock" for p in plan.run_dir.iterdir()):
            shutil.rmtree(plan.run_dir, ignore_errors=True)  # created by the checks: leave nothing behind
        return 2
    start_steps = plan.checkpoint.steps if plan.checkpoint is not None else 0
    model.specstop_meta = run_metadata(plan)
    history = list((plan.saved or {}).get("history", []))
    history.append({"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "from_steps": start_steps,
                    "target_steps": cfg.total_timesteps, "command": plan.command})
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    config_path = plan.run_dir / "config.json"
    report.write_json_atomic(config_path, _config_document(plan, "running", history, start_steps))
    try:
        return _train_and_evaluate(plan, venv, model, history, start_steps, CallbackList, report, atomic_path,
                                   PolicyEvalCallback, RunCheckpointCallback, ALGORITHM_INFO)
    except BaseException as e:
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        error = " ".join(f"{type(e).__name__}: {e}".split())[:500]
        history[-1].update(status=status, error=error)
        try:
            report.write_json_atomic(config_path, _config_document(plan, status, history,
                                                                   getattr(model, "num_timesteps", 0), error))
        except OSError:
            pass  # the disk error itself is reported by main()
        raise


def _train_and_evaluate(plan: Plan, venv: Any, model: Any, history: list[dict[str, Any]], start_steps: int,
                        CallbackList: Any, report: Any, atomic_path: Any, PolicyEvalCallback: Any,
                        RunCheckpointCallback: Any, ALGORITHM_INFO: Any) -> int:
    cfg = plan.config
    ckpt_cb = RunCheckpointCallback(cfg.checkpoint_freq, cfg.n_envs, plan.run_dir / "checkpoints",
                                    save_replay_buffer=not ALGORITHM_INFO[plan.algo].on_policy,
                                    save_vecnormalize=cfg.normalize)
    callbacks: list[Any] = [ckpt_cb]
    if cfg.eval_freq > 0:
        callbacks.append(PolicyEvalCallback(plan.scenario, plan.eval_seeds, algorithm=plan.algo, level=plan.level,
                                            eval_freq=cfg.eval_freq, csv_path=plan.run_dir / "evaluations.csv",
                                            verbose=1 if cfg.verbose else 0))
    note = rollout_note(plan.algo, plan.hyperparams, cfg.n_envs, cfg.total_timesteps, start_steps)
    if note:  # after every check passed: an invalid command still gets its one error line only
        print(note, file=sys.stderr, flush=True)
    if cfg.verbose:
        what = f"resuming at {start_steps} steps" if plan.checkpoint is not None else "training"
        print(f"{what}: {plan.algo} on {plan.env_id} ({plan.scenario.name}, {cfg.n_envs} envs, "
              f"{'native' if cfg.native else 'DummyVecEnv'}) to {cfg.total_timesteps} steps -> {plan.run_dir}",
              flush=True)
    t0 = time.perf_counter()
    status = "finished"
    try:
        model.learn(total_timesteps=cfg.total_timesteps - start_steps, callback=CallbackList(callbacks),
                    reset_num_timesteps=plan.checkpoint is None, tb_log_name=plan.algo,
                    progress_bar=cfg.progress_bar)
    except KeyboardInterrupt:
        status = "interrupted"
    wall = time.perf_counter() - t0
    ckpt_cb.model = model  # set by learn(); also when it was interrupted before the first step
    ckpt_path = ckpt_cb.save_checkpoint()
    history[-1].update(to_steps=int(model.num_timesteps), wall_s=wall, status=status, device=str(model.device),
                       steps_per_s=(model.num_timesteps - start_steps) / wall if wall > 0 else None)
    if status == "interrupted":
        report.write_json_atomic(plan.run_dir / "config.json",
                                 _config_document(plan, status, history, model.num_timesteps))
        print(f"\ninterrupted at {model.num_timesteps} steps; checkpoint {ckpt_path}\n"
              f"continue with: python train.py --resume {shlex.quote(str(plan.run_dir))}", file=sys.stderr)
        venv.close()
        return 130
    from specstop_gym.traces.manifest import sha256_file

    checksums = {}
    if cfg.normalize:
        with atomic_path(plan.run_dir / "vecnormalize.pkl") as tmp:
            model.get_vec_normalize_env().save(str(tmp))
        checksums["vecnormalize.pkl"] = sha256_file(plan.run_dir / "vecnormalize.pkl")
    with atomic_path(plan.run_dir / "model.zip") as tmp:
        model.save(tmp)
    checksums["model.zip"] = sha256_file(plan.run_dir / "model.zip")
    venv.close()
    # recorded before the final evaluation reloads the model (sb3:PATH checks it)
    report.write_json_atomic(plan.run_dir / "config.json",
                             _config_document(plan, "evaluating", history, model.num_timesteps, checksums=checksums))
    summary = final_evaluation(plan, plan.run_dir / "model.zip")
    summary["training"]["sha256"] = checksums
    report.write_json_atomic(plan.run_dir / "summary.json", summary)
    report.write_json_atomic(plan.run_dir / "config.json",
                             _config_document(plan, status, history, model.num_timesteps, checksums=checksums))
    if cfg.verbose:
        session = model.num_timesteps - start_steps
        print(f"\n{plan.scenario.name}: {len(plan.eval_seeds)} evaluation seeds, level {plan.level}, "
              f"{model.num_timesteps} steps ({session} in this session: {wall:.0f} s, "
              f"{history[-1]['steps_per_s'] or 0:.0f} steps/s)")
        print(report.format_table(summary))
        print(f"-> {plan.run_dir}")
    return 0


def _disk_error(e: BaseException) -> bool:
    from specstop_gym.fileio import disk_error_message

    return disk_error_message(e) is not None


def main(argv: list[str] | None = None) -> int:
    """Parse, validate (exit 2 on bad input), lock the run folder, train, evaluate."""
    from specstop_gym.fileio import FolderLock, LockedError, clean_orphans, disk_error_message

    args = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join(["train.py", *args])
    try:
        config, explicit = parse_args(args)
        plan = prepare(config, explicit, command)
        lock = FolderLock(plan.run_dir, command[:200]).acquire()
    except SystemExit as e:  # argparse: --help (0) or a malformed command line (2, one line printed)
        return int(e.code or 0)
    except UsageError as e:
        print_error("train.py", str(e))
        return 2
    except LockedError as e:
        print_error("train.py", f"run folder: {e}")
        return 2
    try:
        clean_orphans(plan.run_dir)
        with confined_global_state(plan.config.torch_threads):
            return run(plan)
    except KeyboardInterrupt:
        print_error("train.py", f"interrupted; continue with: python train.py --resume {shlex.quote(str(plan.run_dir))}")
        return 130
    except OSError as e:
        msg = disk_error_message(e)
        if msg is None:
            raise
        print_error("train.py", msg)
        return 1
    finally:
        lock.release()


if __name__ == "__main__":
    sys.exit(main())
