"""What the token-level and round-level environments share: scenario parsing, spaces,
reward, info, seeding. The dynamics are in :mod:`specstop_gym.core.simulator`.

Single environments are a batch of one; vector environments a batch of N.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding

from ..core.config import ScenarioConfig
from ..core.rng import episode_keys
from ..core.simulator import RoundResult, Simulator
from ..scenarios import DEFAULT_SCENARIO, build_simulator, make_scenario, stationary_reference

ROUND_FIELDS = ("k", "accepted", "tokens", "round_ms", "rtt_ms", "channel_state")


def resolve_config(scenario: str | ScenarioConfig | None, overrides: dict[str, Any]) -> ScenarioConfig:
    """Scenario preset name (or config) plus keyword overrides -> validated config."""
    return make_scenario(DEFAULT_SCENARIO if scenario is None else scenario, **overrides)


def observation_space(sim: Simulator) -> spaces.Box:
    """Box of the observation layout of :meth:`Simulator.observe`."""
    low = np.zeros(sim.obs_dim, np.float32)
    high = np.ones(sim.obs_dim, np.float32)
    fields = observation_fields(sim)
    for name in ("last_rtt_s", "rtt_ewma_fast_s", "rtt_ewma_slow_s"):  # seconds, unbounded
        high[fields.index(name)] = np.inf
    return spaces.Box(low, high, dtype=np.float32)


def observation_fields(sim: Simulator) -> list[str]:
    """Names of the observation entries, in order."""
    m, k = sim.n_states, sim.max_draft
    return (["position_frac", "last_rtt_s"] + [f"csi_{s}" for s in range(m)] + ["confidence"]
            + [f"accept_est_{i}" for i in range(1, k + 1)] + ["tokens_left_frac", "rtt_ewma_fast_s", "rtt_ewma_slow_s"]
            + [f"position_{i}" for i in range(1, k + 1)])


class RewardModel:
    """reward = (tokens * reference - step_ms) / scale (``token_credit``) or -step_ms / scale
    (``latency``); docs/training.md derives the choice.

    ``reference``: ``reference_ms_per_token`` when the scenario fixes it, else the stationary
    ``rho*`` (the oracle's least per-token latency at the channel's long-run mean rtt), or, when
    ``local`` (``config.local_reward_reference``), the round's own local rate that the simulator
    reports (``RoundResult.reference_ms``: ``rho*`` at the channel's mean rtt when the round is
    sent). ``scale``: ``time_scale_ms``, by default the stationary ``rho*`` (rewards count tokens).

    Takes numpy arrays (vector environments) or Python numbers (single environments, where
    plain floats are much cheaper than arrays of one); the same IEEE operations either way.
    """

    def __init__(self, config: ScenarioConfig, sim: Simulator) -> None:
        self.mode = config.reward_mode
        self.local = config.local_reward_reference
        self.stationary_ms_per_token = float(stationary_reference(config, sim.channel)[1])
        ref = config.reference_ms_per_token
        self.reference_ms_per_token = float(self.stationary_ms_per_token if ref is None else ref)
        """The fixed reference (ms/token); rounds use their local rate instead when ``local``."""
        scale = config.time_scale_ms
        self.scale = float(self.stationary_ms_per_token if scale is None else scale)

    def __call__(self, step_ms: np.ndarray | float, tokens: np.ndarray | int,
                 local_reference: np.ndarray | float = 0.0) -> np.ndarray | float:
        """Reward of a step of ``step_ms`` committing ``tokens`` (0 for a draft step);
        ``local_reference``: the finished round's local rate (used when ``self.local``)."""
        if self.mode == "latency":
            return -step_ms / self.scale
        ref = local_reference if self.local else self.reference_ms_per_token
        return (tokens * ref - step_ms) / self.scale

    def kernel_params(self, max_episode_steps: int | None = None) -> np.ndarray:
        """The reward parameters of the vector step kernel (``kernels.vector_row``)."""
        return np.array([float(self.mode != "latency"), self.reference_ms_per_token, self.scale,
                         float(max_episode_steps or 0), float(self.local)])


def round_info(result: RoundResult, j: int) -> dict[str, float | int]:
    """The finished round of row position ``j`` in ``result`` as a plain dict."""
    return {"k": int(result.k[j]), "accepted": int(result.accepted[j]), "tokens": int(result.tokens[j]),
            "round_ms": float(result.round_ms[j]), "rtt_ms": float(result.rtt_ms[j]),
            "channel_state": int(result.state[j])}


def check_seed(seed: Any) -> None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")


def row_generators(seed: int | list[int] | None, n: int) -> list[np.random.Generator]:
    """Per-row generators as Gymnasium seeds vector envs: row i gets ``seed + i``."""
    if seed is None:
        return [seeding.np_random(None)[0] for _ in range(n)]
    if isinstance(seed, (list, tuple, np.ndarray)):
        if len(seed) != n:
            raise ValueError(f"seed list must have num_envs = {n} entries, got {len(seed)}")
        for s in seed:
            check_seed(s)
        return [seeding.np_random(None if s is None else int(s))[0] for s in seed]
    check_seed(seed)
    return [seeding.np_random(int(seed) + i)[0] for i in range(n)]


def new_row_keys(gens: list[np.random.Generator], rows: np.ndarray) -> np.ndarray:
    """One fresh episode key per row from that row's own generator."""
    return np.array([episode_keys(gens[i], 1)[0] for i in rows], dtype=np.uint64)


__all__ = [
    "ROUND_FIELDS",
    "RewardModel",
    "build_simulator",
    "check_seed",
    "episode_keys",
    "new_row_keys",
    "observation_fields",
    "observation_space",
    "resolve_config",
    "round_info",
    "row_generators",
]
