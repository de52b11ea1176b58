"""Do standard RL libraries learn the latency-optimal policy from the registered defaults alone?

Trains, for each algorithm and training seed, on ``gym.make("SpecStop-v0")`` (token level) with
nothing but the environment's registered defaults and the library's own defaults:

* ``sb3-ppo``: ``PPO("MlpPolicy", "SpecStop-v0", seed=s)`` (Stable-Baselines3, every
  hyperparameter its default: 1 environment, n_steps 2048, gamma 0.99, ...);
* ``sb3-dqn``: ``DQN("MlpPolicy", "SpecStop-v0", seed=s)`` likewise;
* ``ppo-loop``: the plain PPO loop over ``gym.make_vec`` of ``tests/ppo_loop.py`` (CleanRL's
  shape and defaults: 4 environments x 128 steps, gamma 0.99).

``--scenario NAME`` trains on ``gym.make("SpecStop-v0", scenario=NAME)`` instead (SB3 through
``make_vec_env(..., env_kwargs={"scenario": NAME})``, the string-id path with keyword arguments).

Every ``--eval_every`` steps and at the end, the greedy policy is evaluated on ``--eval_seeds``
episodes with the project's runner (:func:`specstop_gym.evaluation.run_agent`, through
:class:`agents.policy_agent.PolicyAgent`): the same episodes, on common random numbers, as the
oracle, best-fixed-k (the best static k in hindsight per seed), static k*, never stopping
(``k = max_draft``) and a uniformly random policy. The gap to the oracle is per seed, then averaged
(mean and 95% interval over the evaluation seeds).

A measurement, not a test (the test suite trains the PPO loop for a few thousand steps:
``tests/test_rl.py``). CPU-heavy: the default (3 algorithms x 3 seeds x 300k steps) takes about an
hour on one core. Usage::

    python benchmarks/bench_rl_defaults.py                                   # the table of docs/training.md
    python benchmarks/bench_rl_defaults.py --algos sb3-ppo --seeds 0 --timesteps 50000
    python benchmarks/bench_rl_defaults.py --scenario drift --algos sb3-ppo ppo-loop --out drift.json
    python benchmarks/bench_rl_defaults.py --scenario drift --algos ppo-loop --zero_fields rtt_ewma_fast_s rtt_ewma_slow_s
    python benchmarks/bench_rl_defaults.py --report drift.json                # reprint the tables
    python benchmarks/bench_rl_defaults.py --rescore drift.json               # against today's oracle
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from _common import parse_config

ALGOS = ("sb3-ppo", "sb3-dqn", "ppo-loop")
TARGET_GAP_PCT = 3.0
ENV_ID = "SpecStop-v0"


@dataclass
class Config:
    """Settings of bench_rl_defaults.py (one flag each)."""

    algos: list[str] = field(default_factory=lambda: list(ALGOS))
    """algorithms: sb3-ppo, sb3-dqn, ppo-loop"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """training seeds"""
    timesteps: int = 300_000
    """environment steps per training run"""
    eval_every: int = 50_000
    """evaluate the policy every N steps (and at the end)"""
    eval_seeds: int = 20
    """number of evaluation episodes (seeds 1000, 1001, ...)"""
    scenario: str = "qwen-geometric"
    """scenario preset; the registered default (qwen-geometric) trains on gym.make("SpecStop-v0") with no
    arguments (SB3 from the bare string id), any other on gym.make("SpecStop-v0", scenario=...)"""
    zero_fields: list[str] = field(default_factory=list)
    """ablation: observation fields (env.observation_fields names) set to 0 in training and evaluation"""
    torch_threads: int = 1
    """torch CPU threads"""
    out: str = ""
    """write the results as JSON to this file (empty: do not)"""
    report: list[str] = field(default_factory=list)
    """only print the tables of these result files (written by --out) and exit"""
    rescore: list[str] = field(default_factory=list)
    """re-run the oracle and the baselines of these result files with the current code, recompute the
    gaps of the saved per-seed latencies (same episodes: common random numbers), write FILE.rescored.json"""


def make_scenario_of_env(scenario: str) -> tuple[Any, list[str]]:
    """The ScenarioConfig of ``gym.make(ENV_ID[, scenario=...])`` (what the policies are trained on)
    and its observation fields."""
    import gymnasium as gym

    import specstop_gym  # noqa: F401

    env = gym.make(ENV_ID, **({"scenario": scenario} if scenario else {}))
    config, fields = env.unwrapped.config, list(env.unwrapped.observation_fields)
    env.close()
    return config, fields


class Evaluator:
    """Evaluates policies on fixed seeds against the oracle and simple baselines (common random numbers)."""

    def __init__(self, scenario: Any, n_seeds: int, fields: list[str], zero_fields: list[str]) -> None:
        from agents.registry import make_agent
        from specstop_gym.evaluation.runner import run_agent, run_best_fixed_k

        unknown = sorted(set(zero_fields) - set(fields))
        if unknown:
            _usage_error(f"--zero_fields: unknown {', '.join(unknown)}; valid: {', '.join(fields)}")
        self.zero = [fields.index(f) for f in zero_fields]
        self.scenario = scenario
        self.seeds = np.arange(1000, 1000 + n_seeds)
        self._run_agent = run_agent
        n = len(self.seeds)
        self.oracle = run_agent(make_agent("oracle", scenario, n_runs=n), scenario, self.seeds, level="token")
        self.oracle_ms = self.oracle.per_token_latency_ms
        self.baselines: dict[str, np.ndarray] = {}
        best = run_best_fixed_k(scenario, self.seeds)
        self.baselines["best-fixed-k"] = best.per_token_latency_ms
        from specstop_gym.scenarios import stationary_reference

        k_star = stationary_reference(scenario)[0]
        for label, spec in ((f"static-k:k={k_star} (stationary k*)", f"static-k:k={k_star}"),
                            (f"never stop (k = {scenario.max_draft})", f"static-k:k={scenario.max_draft}")):
            run = run_agent(make_agent(spec, scenario, n_runs=n), scenario, self.seeds, level="token")
            self.baselines[label] = run.per_token_latency_ms
        rng = np.random.default_rng(12345)
        self.baselines["random (stop w.p. 1/2)"] = self.policy_latency(
            lambda obs: rng.integers(0, 2, len(obs)))[0]

    def ablate(self, obs: np.ndarray) -> np.ndarray:
        """The observation rows with the ``--zero_fields`` entries set to 0."""
        if not self.zero:
            return obs
        obs = np.array(obs, dtype=np.float32, copy=True)
        obs[..., self.zero] = 0.0
        return obs

    def zero_wrapper(self, env: Any) -> Any:
        import gymnasium as gym

        return gym.wrappers.TransformObservation(env, self.ablate, env.observation_space)

    def zero_vector_wrapper(self, envs: Any) -> Any:
        import gymnasium as gym

        return gym.wrappers.vector.TransformObservation(envs, self.ablate, envs.observation_space)

    def policy_latency(self, policy: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, float]:
        """Per-seed per-token latency of a token-level policy, and its mean draft length."""
        from agents.policy_agent import PolicyAgent

        run = self._run_agent(PolicyAgent(self.scenario, policy, n_runs=len(self.seeds)), self.scenario, self.seeds,
                              level="token")
        return run.per_token_latency_ms, float(np.mean(run.columns["k"]))

    def gap(self, latency: np.ndarray, reference: str = "oracle") -> dict[str, float]:
        """Per-seed gap (%) to the oracle or to a baseline, mean and 95% interval over the seeds."""
        from specstop_gym.evaluation.metrics import confidence_interval

        ref = self.oracle_ms if reference == "oracle" else self.baselines[reference]
        return confidence_interval((latency - ref) / ref * 100.0)


def evaluate_point(ev: Evaluator, policy: Callable[[np.ndarray], np.ndarray], steps: int) -> dict[str, Any]:
    lat, mean_k = ev.policy_latency(policy)
    return {"steps": int(steps), "per_token_latency_ms": float(lat.mean()), "mean_k": mean_k,
            "gap_to_oracle_pct": ev.gap(lat), "gap_to_best_fixed_k_pct": ev.gap(lat, "best-fixed-k"),
            "per_seed_ms": lat.tolist()}


def train_sb3(algo: str, seed: int, cfg: Config, ev: Evaluator) -> list[dict[str, Any]]:
    from stable_baselines3 import DQN, PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    cls = PPO if algo == "sb3-ppo" else DQN
    env: Any = ENV_ID
    if _kwargs(cfg.scenario) or ev.zero:
        env = make_vec_env(ENV_ID, env_kwargs=_kwargs(cfg.scenario) or None,
                           wrapper_class=ev.zero_wrapper if ev.zero else None)
    model = cls("MlpPolicy", env, seed=seed, device="cpu")
    curve: list[dict[str, Any]] = []

    def policy(obs: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(ev.ablate(obs), deterministic=True)[0])

    class EvalEvery(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next = cfg.eval_every

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next:
                curve.append(evaluate_point(ev, policy, self.num_timesteps))
                _progress(algo, seed, curve[-1])
                self.next += cfg.eval_every
            return True

    model.learn(total_timesteps=cfg.timesteps, callback=EvalEvery())
    if not curve or curve[-1]["steps"] != model.num_timesteps:
        curve.append(evaluate_point(ev, policy, model.num_timesteps))
        _progress(algo, seed, curve[-1])
    return curve


def train_loop(seed: int, cfg: Config, ev: Evaluator) -> list[dict[str, Any]]:
    from ppo_loop import PPOConfig, train

    curve: list[dict[str, Any]] = []
    state = {"next": cfg.eval_every, "last": None}

    def callback(steps: int, agent: Any, _mean_return: float) -> None:
        state["last"] = (steps, agent)
        if steps >= state["next"]:
            curve.append(evaluate_point(ev, lambda o: agent.greedy(ev.ablate(o)), steps))
            _progress("ppo-loop", seed, curve[-1])
            state["next"] += cfg.eval_every

    pcfg = PPOConfig(env_id=ENV_ID, env_kwargs=_kwargs(cfg.scenario),
                     total_timesteps=cfg.timesteps, seed=seed)
    agent = train(pcfg, callback, wrap=ev.zero_vector_wrapper if ev.zero else None)
    steps = state["last"][0] if state["last"] else 0
    if not curve or curve[-1]["steps"] != steps:
        curve.append(evaluate_point(ev, lambda o: agent.greedy(ev.ablate(o)), steps))
        _progress("ppo-loop", seed, curve[-1])
    return curve


def rescore(results: dict[str, Any]) -> dict[str, Any]:
    """``results`` with the oracle, the baselines and every gap recomputed by the current code on the
    same evaluation episodes, from the per-seed latencies the runs saved (a run point without them is
    dropped; the episodes are those of the seeds, so the policies need not be retrained)."""
    scenario, fields = make_scenario_of_env(_kwargs(results["scenario"]).get("scenario", ""))
    seeds = results["eval_seeds"]
    ev = Evaluator(scenario, len(seeds), fields, [])
    if ev.seeds.tolist() != seeds:
        _usage_error(f"evaluation seeds {seeds[0]}.. are not this script's (1000, 1001, ...)")
    out = {**results, "oracle_ms": float(ev.oracle_ms.mean()), "rescored": True,
           "baselines": {k: {"per_token_latency_ms": float(v.mean()), "gap_to_oracle_pct": ev.gap(v)}
                         for k, v in ev.baselines.items()}, "runs": []}
    for run in results["runs"]:
        curve = []
        for p in run["curve"]:
            if "per_seed_ms" not in p:
                continue
            lat = np.asarray(p["per_seed_ms"])
            curve.append({**p, "gap_to_oracle_pct": ev.gap(lat), "gap_to_best_fixed_k_pct": ev.gap(lat, "best-fixed-k")})
        if curve:
            first = next((p["steps"] for p in curve if p["gap_to_oracle_pct"]["mean"] <= TARGET_GAP_PCT), None)
            out["runs"].append({**run, "curve": curve, "final": curve[-1], "first_within_target_steps": first})
    return out


def _kwargs(scenario: str) -> dict[str, str]:
    """gym.make's keyword arguments for a preset: none for the registered default."""
    from specstop_gym.scenarios import DEFAULT_SCENARIO

    return {} if scenario == DEFAULT_SCENARIO else {"scenario": scenario}


def _usage_error(message: str) -> None:
    print(f"bench_rl_defaults.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _progress(algo: str, seed: int, point: dict[str, Any]) -> None:
    g = point["gap_to_oracle_pct"]
    print(f"  {algo} seed {seed} @ {point['steps']}: {point['per_token_latency_ms']:.2f} ms/token, "
          f"gap {g['mean']:+.2f}% [{g['ci_low']:+.2f}, {g['ci_high']:+.2f}], mean k {point['mean_k']:.2f}",
          flush=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(Config, __doc__ or "", argv, {"timesteps": 1, "eval_every": 1, "eval_seeds": 2,
                                                     "torch_threads": 1, "seeds": 0})
    if cfg.rescore:
        for path in cfg.rescore:
            try:
                old = json.loads(Path(path).read_text())
            except (OSError, ValueError) as e:
                _usage_error(f"--rescore {path}: not a results file of this script ({e})")
            new = rescore(old)
            out = Path(path).with_suffix(".rescored.json")
            out.write_text(json.dumps(new, indent=1))
            print_table(new)
            print(f"-> {out}")
        return {}
    if cfg.report:
        for path in cfg.report:
            try:
                print_table(json.loads(Path(path).read_text()))
            except (OSError, ValueError, KeyError) as e:
                _usage_error(f"--report {path}: not a results file of this script ({e})")
        return {}
    bad = sorted(set(cfg.algos) - set(ALGOS))
    if bad:
        _usage_error(f"--algos: unknown {', '.join(bad)}; valid: {', '.join(ALGOS)}")
    import torch

    torch.set_num_threads(cfg.torch_threads)
    scenario, fields = make_scenario_of_env(_kwargs(cfg.scenario).get("scenario", ""))
    ev = Evaluator(scenario, cfg.eval_seeds, fields, cfg.zero_fields)
    extra = "".join(f", {k}={v!r}" for k, v in _kwargs(cfg.scenario).items())
    print(f"scenario {scenario.name} (gym.make({ENV_ID!r}{extra})): "
          f"oracle {ev.oracle_ms.mean():.2f} ms/token on {len(ev.seeds)} seeds", flush=True)
    for label, lat in ev.baselines.items():
        g = ev.gap(lat)
        print(f"  {label}: {lat.mean():.2f} ms/token, gap {g['mean']:+.2f}%", flush=True)
    results: dict[str, Any] = {
        "scenario": scenario.name, "env": ENV_ID, "eval_seeds": ev.seeds.tolist(), "zero_fields": cfg.zero_fields,
        "oracle_ms": float(ev.oracle_ms.mean()),
        "baselines": {k: {"per_token_latency_ms": float(v.mean()), "gap_to_oracle_pct": ev.gap(v)}
                      for k, v in ev.baselines.items()},
        "runs": [],
    }
    for algo in cfg.algos:
        for seed in cfg.seeds:
            t0 = time.perf_counter()
            curve = train_loop(seed, cfg, ev) if algo == "ppo-loop" else train_sb3(algo, seed, cfg, ev)
            wall = time.perf_counter() - t0
            first = next((p["steps"] for p in curve if p["gap_to_oracle_pct"]["mean"] <= TARGET_GAP_PCT), None)
            results["runs"].append({"algo": algo, "seed": seed, "wall_s": wall, "curve": curve,
                                    "final": curve[-1], "first_within_target_steps": first})
            if cfg.out:
                Path(cfg.out).write_text(json.dumps(results, indent=1))
    print_table(results)
    return results


def _ci(g: dict[str, float] | None) -> str:
    return "-" if g is None else f"{g['mean']:+.2f} [{g['ci_low']:+.2f}, {g['ci_high']:+.2f}]"


def print_table(results: dict[str, Any]) -> None:
    """The markdown table of docs/training.md from a results dict (``--report FILE`` reprints it)."""
    print(f"\n{results['scenario']} ({results['env']}), oracle {results['oracle_ms']:.2f} ms/token on "
          f"{len(results['eval_seeds'])} evaluation seeds" +
          (f"; zeroed: {', '.join(results['zero_fields'])}" if results.get("zero_fields") else ""))
    print(f"\n| algorithm | seed | steps | per-token latency (ms) | oracle (ms) | gap to oracle % | "
          f"gap to best-fixed-k % | mean k | first within {TARGET_GAP_PCT:g}% at | train+eval s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results["runs"]:
        f = r["final"]
        print(f"| {r['algo']} | {r['seed']} | {f['steps']} | {f['per_token_latency_ms']:.2f} | "
              f"{results['oracle_ms']:.2f} | {_ci(f['gap_to_oracle_pct'])} | {_ci(f.get('gap_to_best_fixed_k_pct'))} | "
              f"{f['mean_k']:.2f} | {r['first_within_target_steps'] or '-'} | {r['wall_s']:.0f} |")
    print("\n| baseline | per-token latency (ms) | gap to oracle % |\n|---|---|---|")
    for label, b in results["baselines"].items():
        print(f"| {label} | {b['per_token_latency_ms']:.2f} | {_ci(b['gap_to_oracle_pct'])} |")


if __name__ == "__main__":
    main()
