"""SB3 PPO frames per second: native vector env behind SB3VecEnvAdapter vs a DummyVecEnv of single envs.

Both sides are built by :func:`specstop_gym.sb3_vec_env.make_sb3_vec_env` with the same
scenario, ``n_envs`` and seed (``native=True``: one batched numpy env behind the adapter;
``native=False``: the reference, SB3's ``DummyVecEnv`` over ``gym.make`` single envs), and
trained by the same PPO (MlpPolicy, CPU, fixed torch threads) for the same number of
timesteps. Reported per side, median over the repeats (interleaved, native then dummy):

* ``fps``: total timesteps / wall time of ``learn`` (what SB3 logs as ``time/fps``,
  rollout collection and gradient updates together);
* ``collect fps``: timesteps / time spent collecting rollouts (environment stepping plus
  the policy's forward pass), the part the vector env can speed up.

A timing benchmark, not a test: machines are shared and noisy; compare the ratios
measured in one run.

Usage::

    python benchmarks/bench_ppo_fps.py                          # SpecStop-v0, 8 envs, 8192 steps, 3 repeats
    python benchmarks/bench_ppo_fps.py --env_id SpecStopRound-v0 --timesteps 16384 --n_steps 512
"""

from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from _common import parse_config
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback

import specstop_gym  # noqa: F401  (registers the ids)
from specstop_gym.sb3_vec_env import make_sb3_vec_env


@dataclass
class Config:
    """Benchmark settings (one flag per field)."""

    env_id: str = "SpecStop-v0"
    """Environment id."""
    scenario: str = "qwen-geometric"
    """Scenario preset."""
    n_envs: int = 8
    """Environments per vector env."""
    timesteps: int = 8192
    """Timesteps per PPO run."""
    n_steps: int = 256
    """PPO rollout length per environment (n_envs * n_steps samples per update)."""
    batch_size: int = 256
    """PPO minibatch size."""
    n_epochs: int = 4
    """PPO epochs per update."""
    repeats: int = 3
    """Runs per side (interleaved); the median is reported."""
    threads: int = 1
    """torch threads (fixed so that both sides use the same)."""
    seed: int = 0
    """Seed of the envs and of PPO."""
    target: float = 1.5
    """Target fps ratio native / DummyVecEnv (reported, not enforced)."""


class _CollectTimer(BaseCallback):
    """Wall time spent in rollout collection (between on_rollout_start and on_rollout_end)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds = 0.0
        self._start = 0.0

    def _on_rollout_start(self) -> None:
        self._start = time.perf_counter()

    def _on_rollout_end(self) -> None:
        self.seconds += time.perf_counter() - self._start

    def _on_step(self) -> bool:
        return True


def run(cfg: Config, native: bool) -> tuple[float, float]:
    """(fps, collect fps) of one PPO run."""
    env = make_sb3_vec_env(cfg.env_id, cfg.n_envs, seed=cfg.seed, scenario=cfg.scenario, native=native)
    model = PPO("MlpPolicy", env, n_steps=cfg.n_steps, batch_size=cfg.batch_size, n_epochs=cfg.n_epochs,
                seed=cfg.seed, device="cpu", verbose=0)
    timer = _CollectTimer()
    start = time.perf_counter()
    model.learn(total_timesteps=cfg.timesteps, callback=timer)
    elapsed = time.perf_counter() - start
    env.close()
    return model.num_timesteps / elapsed, model.num_timesteps / timer.seconds


def env_steps_per_second(cfg: Config, native: bool, calls: int = 3000) -> float:
    """Environment steps per second of the VecEnv alone (random actions, no policy)."""
    env = make_sb3_vec_env(cfg.env_id, cfg.n_envs, seed=cfg.seed, scenario=cfg.scenario, native=native)
    env.reset()
    rng = np.random.default_rng(cfg.seed)
    actions = [rng.integers(0, env.action_space.n, size=cfg.n_envs) for _ in range(64)]
    for a in actions[:8]:
        env.step(a)
    start = time.perf_counter()
    for i in range(calls):
        env.step(actions[i & 63])
    elapsed = time.perf_counter() - start
    env.close()
    return cfg.n_envs * calls / elapsed


def main(argv: list[str] | None = None) -> dict[str, float]:
    cfg = parse_config(Config, __doc__, argv, minimum={"n_envs": 1, "timesteps": 1, "n_steps": 2, "batch_size": 2,
                                                         "n_epochs": 1, "repeats": 1, "threads": 1, "seed": 0})
    warnings.simplefilter("ignore")
    torch.set_num_threads(cfg.threads)
    print(f"PPO MlpPolicy on {cfg.env_id} ({cfg.scenario}), n_envs={cfg.n_envs}, {cfg.timesteps} timesteps, "
          f"n_steps={cfg.n_steps}, batch_size={cfg.batch_size}, n_epochs={cfg.n_epochs}, "
          f"torch {torch.__version__} threads={cfg.threads}, {cfg.repeats} repeats (median)")
    run(Config(**{**vars(cfg), "timesteps": cfg.n_envs * cfg.n_steps}), native=True)  # warm-up
    runs: dict[str, list[tuple[float, float]]] = {"native adapter": [], "DummyVecEnv": []}
    for _ in range(cfg.repeats):
        runs["native adapter"].append(run(cfg, native=True))
        runs["DummyVecEnv"].append(run(cfg, native=False))
    med = {name: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
           for name, rs in runs.items()}
    ref = med["DummyVecEnv"]
    print(f"{'vec env':<16} {'fps':>8} {'ratio':>7} {'collect fps':>12} {'ratio':>7}")
    for name, (fps, cfps) in med.items():
        print(f"{name:<16} {fps:>8,.0f} {fps / ref[0]:>6.2f}x {cfps:>12,.0f} {cfps / ref[1]:>6.2f}x")
    ratio = med["native adapter"][0] / ref[0]
    print(f"fps ratio {ratio:.2f}x (target >= {cfg.target:.1f}x: {'ok' if ratio >= cfg.target else 'below'})")
    # the environment alone, and the ratio PPO could reach if the native side's environment cost nothing
    env_rates: dict[str, list[float]] = {"native adapter": [], "DummyVecEnv": []}
    for _ in range(cfg.repeats):
        env_rates["native adapter"].append(env_steps_per_second(cfg, native=True))
        env_rates["DummyVecEnv"].append(env_steps_per_second(cfg, native=False))
    native_env, dummy_env = (statistics.median(env_rates[k]) for k in ("native adapter", "DummyVecEnv"))
    dummy_seconds = cfg.timesteps / ref[0]
    env_seconds = cfg.timesteps / dummy_env  # the Dummy run's share spent stepping environments
    ceiling = dummy_seconds / max(dummy_seconds - env_seconds, 1e-9)
    print(f"env steps/s alone: native {native_env:,.0f}, Dummy {dummy_env:,.0f} ({native_env / dummy_env:.2f}x); "
          f"the Dummy run spends ~{env_seconds / dummy_seconds:.0%} of its time stepping environments, so a "
          f"free environment would give at most {ceiling:.2f}x")
    return {"fps_ratio": ratio, "collect_fps_ratio": med["native adapter"][1] / ref[1],
            "env_ratio": native_env / dummy_env, "fps_ratio_ceiling": ceiling}


if __name__ == "__main__":
    main()
