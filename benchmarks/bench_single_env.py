"""Single-environment step rate of SpecStop-v0 / SpecStopRound-v0 against CartPole-v1.

All environments are built with ``gym.make`` (so each carries Gymnasium's default
wrappers: the passive env checker and order enforcing; CartPole also its
TimeLimit) and stepped with uniformly random actions drawn beforehand from a
seeded generator, resetting when an episode ends. The runs are interleaved
(CartPole, SpecStop-v0, SpecStopRound-v0, CartPole, ...) so that all see the same
machine load, and the median over the repeats is reported with the ratio to
CartPole's median. Two clocks are reported: wall time (``perf_counter``) and the
CPU time of this process (``process_time``), which is the steadier of the two on a
machine shared with other jobs (time spent preempted does not count).

Usage::

    python benchmarks/bench_single_env.py                 # 5 repeats of 20000 steps
    python benchmarks/bench_single_env.py --steps 50000 --repeats 7 --scenario markov-csi

On a noisy shared machine the ratio moves by +-0.1 between runs; a deterministic
alternative is the instruction count per step under ``valgrind --tool=callgrind``
(the difference of two runs of different lengths, with ``PYTHONHASHSEED=0``), which
is how the numbers in the report of the speed work were cross-checked.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from _common import parse_config

import specstop_gym  # noqa: F401  (registers the ids)

REFERENCE_ID = "CartPole-v1"


@dataclass
class Config:
    """Benchmark settings (one flag per field)."""

    steps: int = 20000
    """Environment steps per timed run."""
    repeats: int = 5
    """Timed runs per environment (interleaved); the median is reported."""
    scenario: str = "qwen-geometric"
    """Scenario preset of the SpecStop environments."""
    seed: int = 0
    """Seed of the action generator and of the first reset."""
    target: float = 0.5
    """Target ratio SpecStop-v0 / CartPole-v1 (reported, not enforced)."""


def steps_per_second(env_id: str, steps: int, seed: int, **kwargs) -> tuple[float, float]:
    """Random-action steps per second of ``gym.make(env_id, **kwargs)`` (reset on episode end),
    by wall time and by process CPU time."""
    env = gym.make(env_id, **kwargs)
    actions = [int(a) for a in np.random.default_rng(seed).integers(0, env.action_space.n, size=steps)]
    env.reset(seed=seed)
    step, reset = env.step, env.reset
    start, start_cpu = time.perf_counter(), time.process_time()
    for a in actions:
        _, _, terminated, truncated, _ = step(a)
        if terminated or truncated:
            reset()
    elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    env.close()
    return steps / elapsed, steps / elapsed_cpu


def main(argv: list[str] | None = None) -> dict[str, float]:
    cfg = parse_config(Config, __doc__, argv, minimum={"steps": 1, "repeats": 1, "seed": 0})
    runs: dict[str, tuple[str, dict]] = {
        REFERENCE_ID: (REFERENCE_ID, {}),
        "SpecStop-v0": ("SpecStop-v0", {"scenario": cfg.scenario}),
        "SpecStopRound-v0": ("SpecStopRound-v0", {"scenario": cfg.scenario}),
    }
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for env_id, kwargs in runs.values():  # warm-up (imports, first-call costs)
        steps_per_second(env_id, 1000, cfg.seed, **kwargs)
    for _ in range(cfg.repeats):
        for name, (env_id, kwargs) in runs.items():
            w, c = steps_per_second(env_id, cfg.steps, cfg.seed, **kwargs)
            wall[name].append(w)
            cpu[name].append(c)
    print(f"{cfg.steps} random-action steps, median of {cfg.repeats} interleaved repeats, "
          f"scenario {cfg.scenario!r}")
    ratios: dict[str, float] = {}
    for clock, rates in (("wall", wall), ("cpu", cpu)):
        medians = {name: statistics.median(r) for name, r in rates.items()}
        ref = medians[REFERENCE_ID]
        print(f" {clock} clock:")
        for name, med in medians.items():
            spread = f"[{min(rates[name]):,.0f} .. {max(rates[name]):,.0f}]"
            print(f"  {name:18s} {med:10,.0f} steps/s  {spread:24s} ratio {med / ref:5.3f}")
            ratios[f"{name}/{clock}"] = med / ref
    print(f"SpecStop-v0 / {REFERENCE_ID}: {ratios['SpecStop-v0/wall']:.3f} wall, "
          f"{ratios['SpecStop-v0/cpu']:.3f} cpu (target >= {cfg.target})")
    return ratios


if __name__ == "__main__":
    main()
