"""Native vector face shared by both levels: N rows of the core stepped in one batched call.

Autoreset follows Gymnasium 1.x (``metadata["autoreset_mode"]``): ``NEXT_STEP``
(default; the step after an episode ends resets that row, ignoring its action,
with reward 0) or ``SAME_STEP`` (the row is reset in the same step; the final
observation and info are in ``info["final_obs"]`` / ``info["final_info"]``).
Infos follow Gymnasium's vector convention (arrays with ``_key`` masks), built
so that they equal what ``SyncVectorEnv`` over the single environments returns;
row ``i`` seeded with ``seed + i`` reproduces a single environment seeded
``seed + i`` step for step (tests/test_vector_env.py).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from ..core.config import ScenarioConfig
from ..core.simulator import RoundResult
from ._face import (ROUND_FIELDS, RewardModel, build_simulator, new_row_keys, observation_fields,
                    observation_space, resolve_config, row_generators)


def _masked(n: int, rows: np.ndarray, values: np.ndarray, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    arr = np.zeros(n, dtype=dtype)
    arr[rows] = values
    mask = np.zeros(n, bool)
    mask[rows] = True
    return arr, mask


class VectorFace(VectorEnv):
    """Common machinery of the native vector environments of both levels."""

    token_level = True

    def __init__(self, num_envs: int = 1, scenario: str | ScenarioConfig | None = None,
                 autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
                 max_episode_steps: int | None = None, render_mode: str | None = None,
                 **overrides: Any) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        try:
            mode = autoreset_mode if isinstance(autoreset_mode, AutoresetMode) else AutoresetMode(autoreset_mode)
        except ValueError:
            raise ValueError(f"autoreset_mode must be NextStep or SameStep, got {autoreset_mode!r}") from None
        if mode == AutoresetMode.DISABLED:
            raise ValueError("autoreset_mode Disabled is not supported; use NextStep or SameStep")
        if max_episode_steps is not None and (not isinstance(max_episode_steps, (int, np.integer)) or max_episode_steps < 1):
            raise ValueError(f"max_episode_steps must be an integer >= 1 or None, got {max_episode_steps!r}")
        if render_mode is not None:
            raise ValueError("the vector environments do not render")
        self.num_envs = int(num_envs)
        self.autoreset_mode = mode
        self.metadata = {"autoreset_mode": mode, "render_modes": []}
        self.render_mode = None
        self.max_episode_steps = max_episode_steps
        self.config = resolve_config(scenario, overrides)
        self.sim = build_simulator(self.config, batch_size=self.num_envs)
        self.single_observation_space = observation_space(self.sim)
        self.single_action_space = gym.spaces.Discrete(2 if self.token_level else self.config.max_draft)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.reward_model = RewardModel(self.config, self.sim)
        self.observation_fields = observation_fields(self.sim)
        self._gens = row_generators(None, self.num_envs)
        self._autoreset = np.zeros(self.num_envs, bool)
        self._steps = np.zeros(self.num_envs, np.int64)
        self._started = False
        self._all = np.arange(self.num_envs)

    # -------------------------------------------------------------- protocol
    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        mask = None if options is None else options.get("reset_mask")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_ or not mask.any():
                raise ValueError(f"options['reset_mask'] must be a bool array of shape ({self.num_envs},) "
                                 "with at least one True")
            rows = self._all[mask]
        else:
            rows = self._all
        if seed is not None or not self._started:
            gens = row_generators(seed, self.num_envs)
            for i in rows:
                self._gens[i] = gens[i]
        if seed is not None:
            from gymnasium.utils import seeding

            self._np_random, self._np_random_seed = seeding.np_random(seed if isinstance(seed, int) else None)
        self._started = True
        self._reset_rows(rows)
        return self.sim.observe(self.token_level), self._base_info(rows)

    def _reset_rows(self, rows: np.ndarray) -> None:
        self.sim.reset_rows(rows, new_row_keys(self._gens, rows))
        self._autoreset[rows] = False
        self._steps[rows] = 0

    def step(self, actions: Any):
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = self._validate_actions(actions)
        n = self.num_envs
        rewards = np.zeros(n)
        terminated = np.zeros(n, bool)
        truncated = np.zeros(n, bool)
        next_step = self.autoreset_mode == AutoresetMode.NEXT_STEP
        resetting = self._all[self._autoreset] if next_step else self._all[:0]
        if len(resetting):
            self._reset_rows(resetting)
        active = self._all[~self._autoreset] if next_step and len(resetting) else self._all
        forced = None
        if self.token_level:
            step_ms, result, forced_rows = self.sim.step_token(actions[active], active)
            forced = active[forced_rows]
        else:
            result = self.sim.step_round(actions[active] + 1, active)
            step_ms = result.round_ms
        tokens = np.zeros(len(active), np.int64)
        if result is not None:
            tokens[np.searchsorted(active, result.rows)] = result.tokens
        rewards[active] = self.reward_model(step_ms, tokens)
        self._steps[active] += 1
        terminated[active] = self.sim.done[active]
        if self.max_episode_steps is not None:
            truncated[active] = (self._steps[active] >= self.max_episode_steps) & ~terminated[active]
        ended = self._all[terminated | truncated]
        info = self._step_info(active, result, forced, ended, terminated)
        obs = self.sim.observe(self.token_level)
        if next_step:
            self._autoreset = terminated | truncated
        elif len(ended):
            final_obs = np.full(n, None, dtype=object)
            for i in ended:
                final_obs[i] = obs[i].copy()
            final_info = self._subset_info(info, ended)
            self._reset_rows(ended)
            obs = self.sim.observe(self.token_level)
            for key in ("round", "_round", "forced_stop", "_forced_stop", "per_token_latency_ms",
                        "_per_token_latency_ms", "episode_time_ms", "_episode_time_ms", "episode_tokens",
                        "_episode_tokens"):
                if key in info:
                    self._drop_rows(info, key, ended)
            info.update(self._base_info(self._all))
            info["final_obs"], info["_final_obs"] = final_obs, _masked(n, ended, True, bool)[1]
            info["final_info"], info["_final_info"] = final_info, _masked(n, ended, True, bool)[1]
        return obs, rewards, terminated, truncated, info

    # ------------------------------------------------------------------ infos
    def _validate_actions(self, actions: Any) -> np.ndarray:
        a = np.asarray(actions)
        n_actions = self.single_action_space.n
        if a.shape != (self.num_envs,) or not np.issubdtype(a.dtype, np.integer) or (a < 0).any() or (a >= n_actions).any():
            raise ValueError(f"invalid actions {actions!r}: need an integer array of shape ({self.num_envs},) "
                             f"with values in 0..{n_actions - 1}")
        return a.astype(np.int64)

    def _base_info(self, rows: np.ndarray) -> dict[str, Any]:
        n = self.num_envs
        info: dict[str, Any] = {}
        info["channel_state"], info["_channel_state"] = _masked(n, rows, self.sim.csi[rows], np.int64)
        info["time_ms"], info["_time_ms"] = _masked(n, rows, self.sim.t_ms[rows], np.float64)
        info["tokens_left"], info["_tokens_left"] = _masked(n, rows, self.sim.tokens_left[rows], np.int64)
        if self.token_level:
            am = np.zeros((n, 2), bool)
            am[rows] = self.sim.action_masks()[rows]
            info["action_mask"], info["_action_mask"] = am, _masked(n, rows, True, bool)[1]
        return info

    def _step_info(self, active: np.ndarray, result: RoundResult | None, forced: np.ndarray | None,
                   ended: np.ndarray, terminated: np.ndarray) -> dict[str, Any]:
        n = self.num_envs
        info = self._base_info(active)
        if result is not None:
            r = result.rows
            rnd: dict[str, Any] = {}
            values = (result.k, result.accepted, result.tokens, result.round_ms, result.rtt_ms, result.state)
            for name, val in zip(ROUND_FIELDS, values):
                dtype = np.float64 if name in ("round_ms", "rtt_ms") else np.int64
                rnd[name], rnd["_" + name] = _masked(n, r, val, dtype)
            info["round"], info["_round"] = rnd, _masked(n, r, True, bool)[1]
        if forced is not None and len(forced):
            info["forced_stop"], info["_forced_stop"] = _masked(n, forced, True, bool)
        done = ended[terminated[ended]]
        if len(done):
            info["per_token_latency_ms"], info["_per_token_latency_ms"] = _masked(
                n, done, self.sim.per_token_latency_ms()[done], np.float64)
            info["episode_time_ms"], info["_episode_time_ms"] = _masked(n, done, self.sim.episode_time_ms[done], np.float64)
            info["episode_tokens"], info["_episode_tokens"] = _masked(n, done, self.sim.episode_tokens[done], np.int64)
        return info

    @staticmethod
    def _subset_info(info: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
        """The part of a vector info that belongs to ``rows`` (same shapes, masks restricted)."""
        out: dict[str, Any] = {}
        for key, val in info.items():
            if key.startswith("_"):
                continue
            mask = info["_" + key] & np.isin(np.arange(len(info["_" + key])), rows)
            if not mask.any():
                continue
            if isinstance(val, dict):
                sub = VectorFace._subset_info(val, rows)
                out[key], out["_" + key] = sub, mask
            else:
                arr = np.zeros_like(val)
                arr[mask] = val[mask]
                out[key], out["_" + key] = arr, mask
        return out

    @staticmethod
    def _drop_rows(info: dict[str, Any], key: str, rows: np.ndarray) -> None:
        """Remove ``rows`` from one entry of a vector info (and the entry if no row is left)."""
        if key.startswith("_"):
            return
        mask = info["_" + key].copy()
        mask[rows] = False
        if not mask.any():
            del info[key], info["_" + key]
            return
        val = info[key]
        if isinstance(val, dict):
            for sub in [k for k in val if not k.startswith("_")]:
                VectorFace._drop_rows(val, sub, rows)
        else:
            val[rows] = 0
        info["_" + key] = mask

    def action_masks(self) -> np.ndarray:
        """Valid actions per row (for MaskablePPO adapters)."""
        if self.token_level:
            return self.sim.action_masks()
        return np.ones((self.num_envs, self.config.max_draft), bool)
