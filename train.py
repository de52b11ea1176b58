"""Train a Stable-Baselines3 agent on a specstop-gym environment and write a run folder.

    python train.py                                          # PPO, round level, qwen-geometric
    python train.py --algo MaskablePPO --level token --total-timesteps 300000
    python train.py --scenario qwen-geometric --set channel=constant --set delay_ms=300
    python train.py --algo DQN --hyperparams learning_rate=5e-4 net_arch=[128,128]
    python train.py --resume runs/SpecStopRound-v0__PPO__0__20250101-120000 --total-timesteps 400000
    python evaluate.py --agents sb3:runs/<run>/model.zip oracle best-fixed-k ucb-specstop

The run folder (``--out``, default ``runs/<env>__<algo>__<seed>__<time>``) holds ``config.json``
(every resolved setting), ``model.zip``, ``vecnormalize.pkl`` (with ``--normalize``; a pickle, so
load only runs you trust), ``checkpoints/``, TensorBoard logs in ``tb/``, ``evaluations.csv`` (the
periodic evaluations) and ``summary.json``: the trained policy, the oracle and best-fixed-k on the
evaluation seeds, in evaluate.py's schema (docs/evaluation.md). See docs/training.md.

Exit codes: 0 success, 2 invalid arguments (checked before any work; nothing is written),
130 interrupted (a checkpoint is saved first: continue with ``--resume RUN_DIR``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import random
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from specstop_gym.cli import (
    UsageError,
    dataclass_parser,
    parse_scenario_overrides,
    tuples_from_lists,
)

RUN_SCHEMA_VERSION = 1
"""Version of the config.json layout of a run folder."""

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
    """override a scenario field, field=value (repeatable; numbers, lists, true/false/none, else strings); train.py sets the training reward (reward_mode, time_scale_ms=100) per algorithm and level unless overridden (docs/training.md)"""
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
    """continue the run in RUN_DIR from its last checkpoint (model, VecNormalize, step count)"""
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
    return dataclass_parser(TrainConfig, "train.py", __doc__, epilog="\n\n".join((__doc__ or "").split("\n\n")[1:]),
                            suppress_defaults=suppress_defaults, negatable=("native",))


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


def parse_seeds(items: list[str]) -> list[int]:
    """``["1000-1003", "7"]`` -> ``[1000, 1001, 1002, 1003, 7]`` (duplicates dropped, order kept)."""
    out: list[int] = []
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            lo, dash, hi = part.partition("-")
            try:
                seeds = list(range(int(lo), int(hi) + 1)) if dash and lo else [int(part)]
            except ValueError:
                raise UsageError(f"--eval-seeds: {part!r} is not a seed (integer >= 0) or a range A-B") from None
            if not seeds or any(s < 0 for s in seeds):
                raise UsageError(f"--eval-seeds: {part!r} gives no non-negative seeds")
            out.extend(seeds)
    out = list(dict.fromkeys(out))
    if not out:
        raise UsageError("--eval-seeds needs at least one seed")
    return out


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
    from specstop_gym.training.callbacks import list_checkpoints

    run_dir = Path(str(config.resume)).expanduser()
    if not run_dir.is_dir():
        raise UsageError(f"--resume {str(run_dir)!r}: no such folder")
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise UsageError(f"--resume {str(run_dir)!r}: not a train.py run folder (no config.json)")
    try:
        saved = json.loads(cfg_path.read_text())
        train = saved["train"]
        if saved.get("kind") != "specstop-gym training run" or not isinstance(train, dict):
            raise KeyError("kind")
    except (OSError, ValueError, KeyError, TypeError) as e:
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
    ckpt = ckpts[-1]
    if resumed.normalize and ckpt.vecnormalize is None:
        raise UsageError(f"--resume {str(run_dir)!r}: the run uses --normalize but checkpoint {ckpt.model.name} "
                         "has no VecNormalize statistics")
    if "total_timesteps" not in explicit:
        resumed.total_timesteps = int(train.get("total_timesteps", 0))
    if ckpt.steps >= resumed.total_timesteps:
        raise UsageError(f"--resume {str(run_dir)!r}: the last checkpoint already has {ckpt.steps} steps "
                         f"(>= --total-timesteps {resumed.total_timesteps}); pass a larger --total-timesteps")
    return resumed, saved, ckpt, run_dir


def prepare(config: TrainConfig, explicit: set[str], command: str) -> Plan:
    """Check every argument and resolve the run (UsageError with a clear message otherwise)."""
    from specstop_gym.core.config import ConfigError
    from specstop_gym.evaluation.report import check_writable
    from specstop_gym.scenarios import build_simulator, make_scenario, scenario_names
    from specstop_gym.training.hyperparams import (
        ENV_IDS,
        TRAINING_SCENARIO_DEFAULTS,
        HyperparamError,
        canonical_algorithm,
        check_algorithm_spaces,
        parse_overrides,
        resolve_hyperparams,
    )

    saved, ckpt = None, None
    if config.resume is not None:
        config, saved, ckpt, _ = _load_resume(config, explicit)
    try:
        algo = canonical_algorithm(config.algo)
    except HyperparamError as e:
        raise UsageError(str(e)) from None
    if config.level not in ENV_IDS:
        raise UsageError(f"unknown level {config.level!r}; valid: {', '.join(ENV_IDS)}")
    env_id = ENV_IDS[config.level]
    for name, minimum in (("n_envs", 1), ("total_timesteps", 1), ("eval_freq", 0), ("checkpoint_freq", 0),
                          ("torch_threads", 1), ("seed", 0)):
        if getattr(config, name) < minimum:
            raise UsageError(f"--{name.replace('_', '-')} must be >= {minimum}, got {getattr(config, name)}")
    if config.verbose not in (0, 1, 2):
        raise UsageError(f"--verbose must be 0, 1 or 2, got {config.verbose}")
    if config.scenario not in scenario_names():
        raise UsageError(f"unknown scenario {config.scenario!r}; valid: {', '.join(scenario_names())}")
    if saved is not None:
        overrides = dict(_tuples_in(saved["scenario_overrides"]))
    else:
        overrides = {**TRAINING_SCENARIO_DEFAULTS[(algo, config.level)], **parse_scenario_overrides(config.set)}
    try:
        scenario = make_scenario(config.scenario, **overrides)
        build_simulator(scenario, 1)  # loads trace files, if any
    except (ConfigError, ValueError, OSError) as e:
        raise UsageError(f"scenario {config.scenario!r}: {e}") from None
    try:
        if saved is not None:
            hyperparams = dict(saved["hyperparams"])
        else:
            hyperparams = resolve_hyperparams(algo, config.level, parse_overrides(config.hyperparams))
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
    return Plan(config=config, algo=algo, level=config.level, env_id=env_id, overrides=overrides, scenario=scenario,
                hyperparams=hyperparams, eval_seeds=eval_seeds, run_dir=run_dir, command=command, checkpoint=ckpt,
                saved=saved)


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
    if cfg.normalize:
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
    if plan.checkpoint.replay_buffer is not None and hasattr(model, "load_replay_buffer"):
        model.load_replay_buffer(str(plan.checkpoint.replay_buffer))
    # a fresh, reproducible stream for the continuation (the start's would replay the first episodes)
    model.set_random_seed(cfg.seed + plan.checkpoint.steps)
    return model


def run_metadata(plan: Plan) -> dict[str, Any]:
    """Stored inside every saved zip (``model.specstop_meta``): what SB3Agent needs to check and feed it."""
    from agents.sb3_agent import scenario_spaces

    _, _, fields = scenario_spaces(plan.scenario, plan.level)
    return {"algorithm": plan.algo, "level": plan.level, "env_id": plan.env_id, "scenario": plan.scenario.name,
            "max_draft": plan.scenario.max_draft, "n_states": len([f for f in fields if f.startswith("csi_")]),
            "observation_fields": fields, "normalize": plan.config.normalize}


def _config_document(plan: Plan, status: str, history: list[dict[str, Any]], num_timesteps: int) -> dict[str, Any]:
    from specstop_gym.evaluation.report import versions
    from specstop_gym.training.hyperparams import ALGORITHM_INFO

    train = dataclasses.asdict(plan.config)
    train["resume"] = None
    created = (plan.saved or {}).get("created") or datetime.now(timezone.utc).isoformat(timespec="seconds")
    return {
        "kind": "specstop-gym training run",
        "schema_version": RUN_SCHEMA_VERSION,
        "created": created,
        "command": plan.command,
        "status": status,
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
                  "checkpoints": "checkpoints/", "tensorboard": "tb/", "evaluations": "evaluations.csv",
                  "summary": "summary.json"},
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
                                 level=plan.level, prebuilt={label: agent}, on_round=on_round)
    elapsed = time.perf_counter() - t0
    summary = report.build_summary(comp, command=plan.command, files={"model": "model.zip", "config": "config.json"})
    summary["wall_s"] = elapsed
    summary["rounds_per_s"] = rounds["n"] / elapsed if elapsed > 0 else None
    summary["training"] = {"run_dir": str(plan.run_dir), "algorithm": plan.algo, "level": plan.level,
                           "env_id": plan.env_id, "num_timesteps": int(agent.model.num_timesteps),
                           "agent": label}
    return summary


def run(plan: Plan) -> int:
    """Train, save, evaluate; returns the exit code."""
    from stable_baselines3.common.callbacks import CallbackList

    from specstop_gym.evaluation import report
    from specstop_gym.training.callbacks import PolicyEvalCallback, RunCheckpointCallback
    from specstop_gym.training.hyperparams import ALGORITHM_INFO

    cfg = plan.config
    start_steps = plan.checkpoint.steps if plan.checkpoint is not None else 0
    seed = cfg.seed + start_steps
    try:
        venv = make_env(plan, seed)
        model = build_model(plan, venv)
    except (ValueError, TypeError, AssertionError) as e:
        print(f"train.py: error: cannot build the {plan.algo} model: {e}", file=sys.stderr)
        if plan.checkpoint is None and plan.run_dir.is_dir() and not any(plan.run_dir.iterdir()):
            plan.run_dir.rmdir()  # created empty by the writability check: leave nothing behind
        return 2
    model.specstop_meta = run_metadata(plan)
    history = list((plan.saved or {}).get("history", []))
    history.append({"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "from_steps": start_steps,
                    "target_steps": cfg.total_timesteps, "command": plan.command})
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    report.write_json_atomic(plan.run_dir / "config.json", _config_document(plan, "running", history, start_steps))

    ckpt_cb = RunCheckpointCallback(cfg.checkpoint_freq, cfg.n_envs, plan.run_dir / "checkpoints",
                                    save_replay_buffer=not ALGORITHM_INFO[plan.algo].on_policy,
                                    save_vecnormalize=cfg.normalize)
    callbacks: list[Any] = [ckpt_cb]
    if cfg.eval_freq > 0:
        callbacks.append(PolicyEvalCallback(plan.scenario, plan.eval_seeds, algorithm=plan.algo, level=plan.level,
                                            eval_freq=cfg.eval_freq, csv_path=plan.run_dir / "evaluations.csv",
                                            verbose=1 if cfg.verbose else 0))
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
    history[-1].update(to_steps=int(model.num_timesteps), wall_s=wall, status=status,
                       steps_per_s=(model.num_timesteps - start_steps) / wall if wall > 0 else None)
    if status == "interrupted":
        report.write_json_atomic(plan.run_dir / "config.json",
                                 _config_document(plan, status, history, model.num_timesteps))
        print(f"\ninterrupted at {model.num_timesteps} steps; checkpoint {ckpt_path}\n"
              f"continue with: python train.py --resume {shlex.quote(str(plan.run_dir))}", file=sys.stderr)
        venv.close()
        return 130
    model.save(plan.run_dir / "model.zip")
    if cfg.normalize:
        model.get_vec_normalize_env().save(str(plan.run_dir / "vecnormalize.pkl"))
    venv.close()
    summary = final_evaluation(plan, plan.run_dir / "model.zip")
    report.write_json_atomic(plan.run_dir / "summary.json", summary)
    report.write_json_atomic(plan.run_dir / "config.json", _config_document(plan, status, history, model.num_timesteps))
    if cfg.verbose:
        session = model.num_timesteps - start_steps
        print(f"\n{plan.scenario.name}: {len(plan.eval_seeds)} evaluation seeds, level {plan.level}, "
              f"{model.num_timesteps} steps ({session} in this session: {wall:.0f} s, "
              f"{history[-1]['steps_per_s'] or 0:.0f} steps/s)")
        print(report.format_table(summary))
        print(f"-> {plan.run_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse, validate (exit 2 on bad input), train, evaluate."""
    args = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join(["train.py", *args])
    try:
        config, explicit = parse_args(args)
        plan = prepare(config, explicit, command)
    except SystemExit as e:  # argparse: --help (0) or a malformed command line (2, message printed)
        return int(e.code or 0)
    except UsageError as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    with confined_global_state(plan.config.torch_threads):
        return run(plan)


if __name__ == "__main__":
    sys.exit(main())
