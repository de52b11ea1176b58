"""Single-environment face shared by both levels (a batch of one over the core)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from ..core.config import ScenarioConfig
from ._face import (RewardModel, build_simulator, episode_keys, observation_fields, observation_space,
                    resolve_config, round_info)

_ZERO = np.zeros(1, np.int64)


def _constant_rows(values: range) -> list[np.ndarray]:
    """One read-only batch-of-one action array per value (built once, not per step)."""
    rows = [np.array([v], np.int64) for v in values]
    for r in rows:
        r.flags.writeable = False
    return rows


class SingleFace(gym.Env):
    """Common machinery of :class:`SpecStopEnv` and :class:`SpecStopRoundEnv`."""

    metadata = {"render_modes": ["ansi"]}
    token_level = True

    def __init__(self, scenario: str | ScenarioConfig | None = None, render_mode: str | None = None,
                 **overrides: Any) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode
        self.config = resolve_config(scenario, overrides)
        self.sim = build_simulator(self.config, batch_size=1)
        self.observation_space = observation_space(self.sim)
        self.action_space = gym.spaces.Discrete(2 if self.token_level else self.config.max_draft)
        self.reward_model = RewardModel(self.config, self.sim)
        self.observation_fields = observation_fields(self.sim)
        # batch-of-one arguments of Simulator.step_token (action) / step_round (k = action + 1)
        self._sim_args = _constant_rows(range(2) if self.token_level else range(1, self.config.max_draft + 1))
        self._running = False
        self._last_round: dict[str, Any] | None = None

    # -------------------------------------------------------------- protocol
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.sim.reset_rows(_ZERO, episode_keys(self.np_random, 1))
        self._running = True
        self._last_round = None
        return self.sim.observe(self.token_level)[0], self._info()

    def step(self, action: Any):
        if not self._running:
            raise RuntimeError("the episode has ended (or never started): call reset() before step()")
        a = self._validate_action(action)
        sim = self.sim
        if self.token_level:
            step_ms, result, forced = sim.step_token(self._sim_args[a])
            forced_stop = bool(forced[0])
        else:
            result = sim.step_round(self._sim_args[a])
            step_ms, forced_stop = result.round_ms, False
        tokens = result.tokens.item(0) if result is not None else 0
        reward = float(self.reward_model(step_ms.item(0), tokens))
        terminated = bool(sim.done[0])
        info = self._info()
        if result is not None:
            self._last_round = info["round"] = round_info(result, 0)
        if forced_stop:
            info["forced_stop"] = True
        if terminated:
            self._running = False
            info["per_token_latency_ms"] = float(self.sim.per_token_latency_ms()[0])
            info["episode_time_ms"] = float(self.sim.episode_time_ms[0])
            info["episode_tokens"] = int(self.sim.episode_tokens[0])
        return sim.observe(self.token_level)[0], reward, terminated, False, info

    def _validate_action(self, action: Any) -> int:
        try:
            a = int(action)
            ok = a == action and 0 <= a < self.action_space.n
        except (TypeError, ValueError):
            ok = False
        if not ok:
            what = "0 (draft another) or 1 (stop and send)" if self.token_level else f"0..{self.action_space.n - 1} (k - 1)"
            raise ValueError(f"invalid action {action!r}: must be {what}")
        return a

    def _info(self) -> dict[str, Any]:
        sim = self.sim
        info: dict[str, Any] = {"channel_state": sim.csi.item(0), "time_ms": sim.t_ms.item(0),
                                "tokens_left": sim.tokens_left.item(0)}
        if self.token_level:
            info["action_mask"] = sim.action_masks()[0]
        return info

    def action_masks(self) -> np.ndarray:
        """Valid actions (for MaskablePPO): token level [draft, stop]; round level all k."""
        if self.token_level:
            return self.sim.action_masks()[0]
        return np.ones(self.config.max_draft, bool)

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        s = self.sim
        text = (f"t={s.t_ms[0]:.1f} ms  round={s.round_idx[0]}  position={s.position[0]}  "
                f"tokens_left={s.tokens_left[0]}  last_rtt={s.last_rtt_ms[0]:.1f} ms  csi={s.csi[0]}")
        if self._last_round:
            text += f"  last round: {self._last_round}"
        return text
