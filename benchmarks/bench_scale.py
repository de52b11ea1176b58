"""Cold start and vector speed in one run: the first single and vector step on a machine without
compiled kernels, and the native vector envs against Gymnasium's CartPoleVectorEnv.

**Cold start.** Each measurement is a fresh interpreter (a subprocess) with an empty
``NUMBA_CACHE_DIR``, as on a fresh machine or clone; it reports seconds since its start until
``import specstop_gym``, ``make`` + ``reset``, and the end of the first ``step``: of
``gym.make("SpecStop-v0")`` (*single*) or of ``gym.make_vec("SpecStop-v0", num_envs=N,
vectorization_mode="vector_entry_point")`` (*vector*), each in its own fresh cache. Modes:

* ``background`` (the default of the package): kernels not in the cache run interpreted while a
  background process compiles them (specstop_gym.core._coldstart); the run then waits for the
  compiler (``compiled after``) and measures the step rate once the compiled kernels took over;
* ``inline`` (``SPECSTOP_GYM_COMPILE=inline``): numba compiles at the first call, in the process;
* ``warm``: a new process on the cache the background run filled.

The step rates after the hand-over (random actions, the single env reset at episode ends; best of 3
blocks of ``rate_steps`` single steps or ``10 * rate_steps`` vector env steps; per second of process
CPU time, which other processes on the machine do not inflate) are reported as ratios to the warm
process's: the warm step rate is kept when they are ~1.

**Vector speed.** Env-steps per second (``N * calls / seconds``) of ``SpecStop-v0`` and
``SpecStopRound-v0`` against ``gym.make_vec("CartPole-v1", num_envs=N,
vectorization_mode="vector_entry_point")``, random actions, NextStep autoreset, interleaved
repeats; the median, the spread (min-max) and the ratio of medians, by wall clock (the target)
and by process CPU time (all threads; insensitive to other processes taking the cores, but it
counts numba's threads spinning between steps). Printed with numba's threading layer and thread
count, numpy's SIMD extensions and the load average, which move the reference: CartPole is numpy
on one core, the SpecStop kernels use numba's threads above 512 rows, so a machine whose cores are
busy with other work takes more from us than from CartPole.

A timing benchmark, not a test: machines are shared and noisy; compare ratios measured in one run.

Usage::

    python benchmarks/bench_scale.py                               # all of it (~3-5 min on 2 cores)
    python benchmarks/bench_scale.py --cold_modes none --repeats 9 # vector ratios only
    python benchmarks/bench_scale.py --sizes 1024 --cold_modes background warm
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numba
import numpy as np
from _common import parse_config

import specstop_gym  # noqa: F401  (registers the ids)
from specstop_gym.core import _coldstart
from specstop_gym.core import kernels as kn

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_ID = "CartPole-v1"
IDS = ("SpecStop-v0", "SpecStopRound-v0")
COLD_MODES = ("background", "inline", "warm")

CHILD = r"""
import time
T0 = time.perf_counter()
import json, sys
what, n, scenario, rate_steps = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
import gymnasium as gym, numpy as np, specstop_gym
from specstop_gym.core import _coldstart
out = {"import": time.perf_counter() - T0}
rng = np.random.default_rng(0)
if what == "single":
    env = gym.make("SpecStop-v0", scenario=scenario)
    env.reset(seed=0)
    out["make_reset"] = time.perf_counter() - T0
    env.step(0)
else:
    env = gym.make_vec("SpecStop-v0", num_envs=n, vectorization_mode="vector_entry_point", scenario=scenario)
    env.reset(seed=0)
    out["make_reset"] = time.perf_counter() - T0
    env.step(np.zeros(n, np.int64))
out["first_step"] = time.perf_counter() - T0
status = _coldstart.status()
out["interpreted_calls"] = sum(status.get("interpreted_calls", {}).values())
out["compiled"] = _coldstart.wait_all(1800)
out["compiled_after"] = time.perf_counter() - T0
best = 0.0
if what == "single":
    actions = [int(a) for a in rng.integers(0, 2, rate_steps)]
    for a in actions[:10]:  # warm-up: a kernel handed over to numba is loaded at its next call
        if env.step(a)[2]:
            env.reset()
    for _ in range(3):
        start = time.process_time()
        for a in actions:
            if env.step(a)[2]:
                env.reset()
        best = max(best, rate_steps / (time.process_time() - start))
else:
    actions = [rng.integers(0, 2, n) for _ in range(16)]
    calls = max(20, 10 * rate_steps // n)
    for a in actions[:5]:
        env.step(a)
    for _ in range(3):
        start = time.process_time()
        for i in range(calls):
            env.step(actions[i & 15])
        best = max(best, n * calls / (time.process_time() - start))
out["rate"] = best
out["interpreted_calls_total"] = sum(_coldstart.status().get("interpreted_calls", {}).values())
print(json.dumps(out))
"""


@dataclass
class Config:
    """Benchmark settings (one flag per field)."""

    sizes: list[int] = field(default_factory=lambda: [1024, 4096])
    """Numbers of environments N of the vector speed comparison."""
    env_steps: int = 400_000
    """Environment steps per timed vector run (calls = env_steps / N, at least 20)."""
    repeats: int = 5
    """Timed vector runs per environment and N (interleaved); median and spread reported."""
    scenario: str = "qwen-geometric"
    """Scenario preset of the SpecStop environments."""
    seed: int = 0
    """Seed of the action generator and of the first reset."""
    cold_modes: list[str] = field(default_factory=lambda: list(COLD_MODES))
    """Cold-start modes to measure, of: background inline warm (or: none)."""
    cold_envs: int = 1024
    """N of the cold-start vector env."""
    rate_steps: int = 20_000
    """Single-env steps per block of the step-rate measurement after the cold start (vector: 10x)."""
    reuse_cache: bool = False
    """Cold runs on the current numba cache instead of an empty one (a smoke test of the script)."""
    target_cold_s: float = 5.0
    """Target: first step within this many seconds of a fresh start (reported, not enforced)."""
    target_ratio: float = 1.0
    """Target ratio SpecStop / CartPole env-steps per second (reported, not enforced)."""


# ====================================================================== cold start
def cold_run(what: str, mode: str, cache_dir: str | None, cfg: Config) -> dict:
    """One fresh interpreter: seconds since its start to each milestone, and the step rate after."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPECSTOP_GYM_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    if mode == "inline":
        env["SPECSTOP_GYM_COMPILE"] = "inline"
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", CHILD, what, str(cfg.cold_envs), cfg.scenario, str(cfg.rate_steps)],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=3600, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"cold-start run ({what}, {mode}) failed:\n{r.stderr}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["process"] = time.perf_counter() - start
    return out


def cold_start(cfg: Config) -> dict[str, dict[str, dict]]:
    modes = [m for m in COLD_MODES if m in cfg.cold_modes]
    results: dict[str, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="specstop-bench-numba-") as tmp:
        for what in ("single", "vector"):
            background_cache = None if cfg.reuse_cache else os.path.join(tmp, f"{what}-background")
            per_mode: dict[str, dict] = {}
            for mode in modes:
                if mode == "warm":
                    cache = background_cache
                else:
                    cache = None if cfg.reuse_cache else os.path.join(tmp, f"{what}-{mode}")
                per_mode[mode] = cold_run(what, mode, cache, cfg)
            results[what] = per_mode
    label = {"single": 'gym.make("SpecStop-v0")', "vector": f"make_vec(SpecStop-v0, N={cfg.cold_envs})"}
    print(f"Cold start: seconds since interpreter start, {'current' if cfg.reuse_cache else 'empty'} numba cache "
          f"(target: first step within {cfg.target_cold_s:g} s)")
    print(f"{'':32} {'mode':<11} {'import':>7} {'make+reset':>11} {'first step':>11} {'interp.':>8} "
          f"{'compiled':>9} {'rate vs warm':>13}")
    for what, per_mode in results.items():
        warm_rate = per_mode.get("warm", {}).get("rate")
        for mode, r in per_mode.items():
            ok = "ok" if r["first_step"] <= cfg.target_cold_s else "over"
            rel = f"{r['rate'] / warm_rate:.2f}x" if warm_rate else "-"
            print(f"{label[what]:32} {mode:<11} {r['import']:7.2f} {r['make_reset']:11.2f} {r['first_step']:9.2f} {ok:<2}"
                  f"{r['interpreted_calls']:7d} {r['compiled_after']:8.1f}s {rel:>13}")
    return results


# ====================================================================== vector speed
def make(env_id: str, n: int, scenario: str) -> gym.vector.VectorEnv:
    kwargs = {} if env_id == REFERENCE_ID else {"scenario": scenario}
    return gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", **kwargs)


def rates(env: gym.vector.VectorEnv, calls: int, seed: int) -> tuple[float, float]:
    """(wall, CPU) random-action env-steps per second of a vector env."""
    n = env.num_envs
    rng = np.random.default_rng(seed)
    actions = [rng.integers(0, env.single_action_space.n, size=n) for _ in range(64)]
    env.reset(seed=seed)
    for a in actions[:5]:
        env.step(a)
    step = env.step
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(calls):
        step(actions[i & 63])
    return n * calls / (time.perf_counter() - start), n * calls / (time.process_time() - cpu)


@contextlib.contextmanager
def _interpreted_for(seconds: float):
    """Cap the interpreted time of this process's cold kernels (0: wait for the compiled ones)."""
    state = _coldstart._STATE
    if state is None:
        yield
        return
    saved, state.budget = state.budget, seconds
    try:
        yield
    finally:
        state.budget = saved


def machine() -> str:
    simd = np.show_config(mode="dicts").get("SIMD Extensions", {})
    return (f"numpy {np.__version__} (SIMD baseline {','.join(simd.get('baseline', [])) or '?'}, found "
            f"{','.join(simd.get('found', [])) or '-'}), numba {numba.__version__} (threading layer "
            f"{numba.threading_layer()}, {numba.get_num_threads()} threads), gymnasium {gym.__version__}, "
            f"{os.cpu_count()} CPUs")


def vector_speed(cfg: Config) -> dict[int, dict[str, dict[str, float]]]:
    # one threaded step first (compiled: waiting for the background compiler if need be), so that
    # numba names its threading layer
    warm = make(IDS[0], kn.PARALLEL_MIN_ROWS, cfg.scenario)
    warm.reset(seed=0)
    warm.step(np.zeros(kn.PARALLEL_MIN_ROWS, np.int64))
    load0 = os.getloadavg()[0]
    print(f"\nVector speed: {machine()}; scenario {cfg.scenario}, {cfg.env_steps} env steps x {cfg.repeats} "
          f"interleaved repeats (median [min-max]), load average {load0:.1f}")
    print(f"{'N':>6} {'env':<18} {'wall env-steps/s':>30} {'ratio':>7}   {'CPU env-steps/s':>15} {'ratio':>6}")
    results: dict[int, dict[str, dict[str, float]]] = {}
    for n in cfg.sizes:
        calls = max(20, cfg.env_steps // n)
        envs = {env_id: make(env_id, n, cfg.scenario) for env_id in (REFERENCE_ID, *IDS)}
        wall: dict[str, list[float]] = {e: [] for e in envs}
        cpu: dict[str, list[float]] = {e: [] for e in envs}
        for _ in range(cfg.repeats):
            for env_id, env in envs.items():
                w, c = rates(env, calls, cfg.seed)
                wall[env_id].append(w)
                cpu[env_id].append(c)
        ref_w, ref_c = statistics.median(wall[REFERENCE_ID]), statistics.median(cpu[REFERENCE_ID])
        results[n] = {}
        for env_id in envs:
            w, c = statistics.median(wall[env_id]), statistics.median(cpu[env_id])
            ratio = w / ref_w
            mark = "" if env_id == REFERENCE_ID else ("  ok" if ratio >= cfg.target_ratio else "  below")
            spread = f"[{min(wall[env_id]) / 1e6:.2f}-{max(wall[env_id]) / 1e6:.2f}M]"
            print(f"{n:>6} {env_id:<18} {w:>12,.0f} {spread:>17} {ratio:>6.2f}x   {c:>15,.0f} {c / ref_c:>5.2f}x{mark}")
            results[n][env_id] = {"wall": ratio, "cpu": c / ref_c, "wall_rate": w,
                                  "wall_min_ratio": min(wall[env_id]) / max(wall[REFERENCE_ID]),
                                  "wall_max_ratio": max(wall[env_id]) / min(wall[REFERENCE_ID])}
        for env in envs.values():
            env.close()
    print(f"load average {load0:.1f} before, {os.getloadavg()[0]:.1f} after (2 = both cores of a 2-CPU machine busy)")
    return results


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(Config, __doc__, argv, minimum={"sizes": 1, "env_steps": 1, "repeats": 1, "seed": 0,
                                                         "cold_envs": 1, "rate_steps": 1})
    unknown = [m for m in cfg.cold_modes if m not in (*COLD_MODES, "none")]
    if unknown:
        print(f"bench_scale.py: error: --cold_modes must be among {', '.join(COLD_MODES)} or none, got {unknown}",
              file=sys.stderr)
        raise SystemExit(2)
    out: dict = {}
    if "none" not in cfg.cold_modes:
        out["cold"] = cold_start(cfg)
    with _interpreted_for(0.0):  # timings of compiled kernels only (waits for the compiler if need be)
        out["vector"] = vector_speed(cfg)
    return out


if __name__ == "__main__":
    main()
