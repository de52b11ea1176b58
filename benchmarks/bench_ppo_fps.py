"""Share of SB3 PPO's training time spent in the environment, at 8 and 64 envs: the native vector env
behind SB3VecEnvAdapter against a DummyVecEnv of single envs.

Both sides are built by :func:`specstop_gym.sb3_vec_env.make_sb3_vec_env` with the same scenario,
``n_envs`` and seed (``native=True``: one batched env behind the adapter; ``native=False``: SB3's
``DummyVecEnv`` over ``gym.make`` single envs), wrapped in a timer (a ``VecEnvWrapper`` adding up
the wall time of ``reset``, ``step_async`` and ``step_wait``: everything PPO waits for from the
environment, the adapter's conversions included), and trained by the same PPO (MlpPolicy, CPU, fixed
torch threads) for the same timesteps. Reported per ``n_envs`` and side, medians over interleaved
repeats:

* ``fps``: timesteps / wall time of ``learn`` (SB3's ``time/fps``);
* ``env share``: environment seconds / ``learn`` seconds;
* ``collect share``: rollout-collection seconds (environment and the policy's forward passes) /
  ``learn`` seconds; the rest is PPO's update (gradient steps);
* ``fps if free``: timesteps / (``learn`` seconds - environment seconds), what an environment that
  cost nothing would give: the ceiling any environment speed-up can reach.

(This replaces the PPO-fps target "native adapter 1.5x a DummyVecEnv at 8 envs", retired in issue 16:
at 8 envs the environment is ~10% of PPO's time, so no environment can reach it; docs/vector.md.)

A timing benchmark, not a test: machines are shared and noisy; compare numbers measured in one run.

Usage::

    python benchmarks/bench_ppo_fps.py                                   # SpecStop-v0, 8 and 64 envs
    python benchmarks/bench_ppo_fps.py --env_id SpecStopRound-v0 --n_envs 64 --repeats 5
    python benchmarks/bench_ppo_fps.py --n_steps 2048 --batch_size 64 --n_epochs 10 --timesteps 131072
"""

from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import dataclass, field

import torch
from _common import parse_config
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnvWrapper

import specstop_gym  # noqa: F401  (registers the ids)
from specstop_gym.sb3_vec_env import make_sb3_vec_env

SIDES = {"native adapter": True, "DummyVecEnv": False}


@dataclass
class Config:
    """Benchmark settings (one flag per field)."""

    env_id: str = "SpecStop-v0"
    """Environment id."""
    scenario: str = "qwen-geometric"
    """Scenario preset."""
    n_envs: list[int] = field(default_factory=lambda: [8, 64])
    """Numbers of environments per vector env."""
    timesteps: int = 32768
    """Timesteps per PPO run (rounded up by SB3 to whole rollouts of n_envs * n_steps)."""
    n_steps: int = 256
    """PPO rollout length per environment (n_envs * n_steps samples per update)."""
    batch_size: int = 256
    """PPO minibatch size."""
    n_epochs: int = 4
    """PPO epochs per update."""
    repeats: int = 3
    """Runs per side and n_envs (interleaved); medians reported."""
    threads: int = 1
    """torch threads (fixed so that both sides use the same)."""
    seed: int = 0
    """Seed of the envs and of PPO."""


class TimedVecEnv(VecEnvWrapper):
    """Adds up the wall time of the wrapped VecEnv's ``reset``, ``step_async`` and ``step_wait``."""

    def __init__(self, venv) -> None:
        super().__init__(venv)
        self.seconds = 0.0

    def reset(self):
        start = time.perf_counter()
        obs = self.venv.reset()
        self.seconds += time.perf_counter() - start
        return obs

    def step_async(self, actions) -> None:
        start = time.perf_counter()
        self.venv.step_async(actions)
        self.seconds += time.perf_counter() - start

    def step_wait(self):
        start = time.perf_counter()
        out = self.venv.step_wait()
        self.seconds += time.perf_counter() - start
        return out


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


def run(cfg: Config, n_envs: int, native: bool, timesteps: int) -> dict[str, float]:
    """One PPO run: timesteps, learn seconds, environment seconds, collection seconds."""
    env = TimedVecEnv(make_sb3_vec_env(cfg.env_id, n_envs, seed=cfg.seed, scenario=cfg.scenario, native=native))
    model = PPO("MlpPolicy", env, n_steps=cfg.n_steps, batch_size=cfg.batch_size, n_epochs=cfg.n_epochs,
                seed=cfg.seed, device="cpu", verbose=0)
    timer = _CollectTimer()
    env.seconds = 0.0
    start = time.perf_counter()
    model.learn(total_timesteps=timesteps, callback=timer)
    learn = time.perf_counter() - start
    env.close()
    return {"timesteps": model.num_timesteps, "learn": learn, "env": env.seconds, "collect": timer.seconds}


def main(argv: list[str] | None = None) -> dict[str, float]:
    cfg = parse_config(Config, __doc__, argv, minimum={"n_envs": 1, "timesteps": 1, "n_steps": 2, "batch_size": 2,
                                                         "n_epochs": 1, "repeats": 1, "threads": 1, "seed": 0})
    warnings.simplefilter("ignore")
    torch.set_num_threads(cfg.threads)
    print(f"PPO MlpPolicy on {cfg.env_id} ({cfg.scenario}), {cfg.timesteps} timesteps, n_steps={cfg.n_steps}, "
          f"batch_size={cfg.batch_size}, n_epochs={cfg.n_epochs}, torch {torch.__version__} threads={cfg.threads}, "
          f"{cfg.repeats} interleaved repeats (median)")
    print(f"{'n_envs':>6} {'vec env':<16} {'fps':>8} {'env share':>10} {'collect share':>14} {'env steps/s':>12} "
          f"{'fps if free':>12}")
    out: dict[str, float] = {}
    for n in cfg.n_envs:
        for native in SIDES.values():  # warm-up: compile, imports, first-call costs
            run(cfg, n, native, n * cfg.n_steps)
        runs: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
        for _ in range(cfg.repeats):
            for side, native in SIDES.items():
                runs[side].append(run(cfg, n, native, cfg.timesteps))
        fps_of = {}
        for side, rs in runs.items():
            fps = statistics.median(r["timesteps"] / r["learn"] for r in rs)
            env_share = statistics.median(r["env"] / r["learn"] for r in rs)
            collect_share = statistics.median(r["collect"] / r["learn"] for r in rs)
            env_rate = statistics.median(r["timesteps"] / r["env"] for r in rs)
            free = statistics.median(r["timesteps"] / max(r["learn"] - r["env"], 1e-9) for r in rs)
            fps_of[side] = fps
            print(f"{n:>6} {side:<16} {fps:>8,.0f} {env_share:>9.1%} {collect_share:>13.1%} {env_rate:>12,.0f} "
                  f"{free:>12,.0f}")
            key = "native" if SIDES[side] else "dummy"
            out.update({f"{n}/{key}/fps": fps, f"{n}/{key}/env_share": env_share,
                        f"{n}/{key}/collect_share": collect_share, f"{n}/{key}/fps_if_free": free})
        out[f"{n}/fps_ratio"] = fps_of["native adapter"] / fps_of["DummyVecEnv"]
        print(f"{n:>6} native adapter / DummyVecEnv fps: {out[f'{n}/fps_ratio']:.2f}x")
    return out


if __name__ == "__main__":
    main()
