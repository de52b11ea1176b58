"""Native vector-env step rate of SpecStop-v0 / SpecStopRound-v0 against CartPole-v1's vector env.

All three are built with ``gym.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point")``
(Gymnasium's own ``CartPoleVectorEnv`` is the reference; autoreset NextStep for all) and
stepped with uniformly random actions drawn beforehand from a seeded generator. The rate
counts environment steps: ``N * calls / seconds``. The runs are interleaved (CartPole,
SpecStop-v0, SpecStopRound-v0, CartPole, ...) so that all see the same machine load, and
the median over the repeats is reported with the ratio to CartPole's median at the same N.
A timing benchmark, not a test: machines are shared and noisy; compare ratios measured in
one run, not absolute numbers across runs.

Usage::

    python benchmarks/bench_vector_env.py                       # N = 64, 1024, 4096; 5 repeats
    python benchmarks/bench_vector_env.py --sizes 4096 --env_steps 2000000 --scenario markov-csi
    python benchmarks/bench_vector_env.py --profile 4096        # cProfile of SpecStop-v0 at N = 4096
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
from _common import parse_config

import specstop_gym  # noqa: F401  (registers the ids)

REFERENCE_ID = "CartPole-v1"
IDS = ("SpecStop-v0", "SpecStopRound-v0")


@dataclass
class Config:
    """Benchmark settings (one flag per field)."""

    sizes: list[int] = field(default_factory=lambda: [64, 1024, 4096])
    """Numbers of environments N."""
    env_steps: int = 400_000
    """Environment steps per timed run (calls = env_steps / N, at least 20)."""
    repeats: int = 5
    """Timed runs per environment and N (interleaved); the median is reported."""
    scenario: str = "qwen-geometric"
    """Scenario preset of the SpecStop environments."""
    seed: int = 0
    """Seed of the action generator and of the first reset."""
    target: float = 1.0
    """Target ratio SpecStop / CartPole (reported, not enforced)."""
    profile: int = 0
    """If > 0: print a cProfile of SpecStop-v0 and SpecStopRound-v0 at this N instead."""


def make(env_id: str, n: int, scenario: str) -> gym.vector.VectorEnv:
    kwargs = {} if env_id == REFERENCE_ID else {"scenario": scenario}
    return gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", **kwargs)


def env_steps_per_second(env: gym.vector.VectorEnv, calls: int, seed: int) -> float:
    """Random-action environment steps per second of a vector env (N * calls / seconds)."""
    n = env.num_envs
    rng = np.random.default_rng(seed)
    actions = [rng.integers(0, env.single_action_space.n, size=n) for _ in range(64)]
    env.reset(seed=seed)
    for a in actions[:5]:  # warm-up: first-call costs
        env.step(a)
    step = env.step
    start = time.perf_counter()
    for i in range(calls):
        step(actions[i & 63])
    return n * calls / (time.perf_counter() - start)


def run_profile(cfg: Config) -> None:
    import cProfile
    import pstats

    for env_id in IDS:
        env = make(env_id, cfg.profile, cfg.scenario)
        calls = max(20, cfg.env_steps // cfg.profile)
        prof = cProfile.Profile()
        prof.enable()
        env_steps_per_second(env, calls, cfg.seed)
        prof.disable()
        print(f"--- {env_id}, N = {cfg.profile}, {calls} calls")
        pstats.Stats(prof).sort_stats("tottime").print_stats(18)


def main(argv: list[str] | None = None) -> dict[int, dict[str, float]]:
    cfg = parse_config(Config, __doc__, argv,
                       minimum={"sizes": 1, "env_steps": 1, "repeats": 1, "seed": 0, "profile": 0})
    if cfg.profile:
        run_profile(cfg)
        return {}
    print(f"numpy {np.__version__}, gymnasium {gym.__version__}, scenario {cfg.scenario}, "
          f"{cfg.env_steps} env steps x {cfg.repeats} repeats (median)")
    print(f"{'N':>6} {'env':<18} {'env-steps/s':>13} {'ratio':>7}")
    results: dict[int, dict[str, float]] = {}
    for n in cfg.sizes:
        calls = max(20, cfg.env_steps // n)
        envs = {env_id: make(env_id, n, cfg.scenario) for env_id in (REFERENCE_ID, *IDS)}
        rates: dict[str, list[float]] = {env_id: [] for env_id in envs}
        for _ in range(cfg.repeats):
            for env_id, env in envs.items():
                rates[env_id].append(env_steps_per_second(env, calls, cfg.seed))
        med = {env_id: statistics.median(r) for env_id, r in rates.items()}
        ref = med[REFERENCE_ID]
        for env_id, rate in med.items():
            ratio = rate / ref
            mark = "" if env_id == REFERENCE_ID else ("  ok" if ratio >= cfg.target else f"  < {cfg.target:.1f}x")
            print(f"{n:>6} {env_id:<18} {rate:>13,.0f} {ratio:>6.2f}x{mark}")
        results[n] = {env_id: rate / ref for env_id, rate in med.items()}
        for env in envs.values():
            env.close()
    return results


if __name__ == "__main__":
    main()
