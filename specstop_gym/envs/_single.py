"""Single-environment face shared by both levels (a batch of one over the core)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import logger

from ..core import kernels as kn
from ..core.config import ScenarioConfig
from ._face import (
    RewardModel,
    build_simulator,
    episode_keys,
    observation_fields,
    observation_space,
    resolve_config,
)
from ._render import render_rgb

_ZERO = np.zeros(1, np.int64)


def _constant_rows(values: range) -> list[np.ndarray]:
    """One batch-of-one action array per value (built once, not per step; private and never written;
    writable like the arrays of the simulator's other callers: the kernels have one compiled signature)."""
    return [np.array([v], np.int64) for v in values]


class SingleFace(gym.Env):
    """Common machinery of :class:`SpecStopEnv` and :class:`SpecStopRoundEnv`."""

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}
    token_level = True

    def __init__(self, scenario: str | ScenarioConfig | None = None, render_mode: str | None = None,
                 **overrides: Any) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            logger.warn(f"render_mode={render_mode!r} is not supported (supported: "
                        f"{self.metadata['render_modes']}); the environment will not render")
            render_mode = None
        self.render_mode = render_mode
        self.config = resolve_config(scenario, overrides)
        self.sim = build_simulator(self.config, batch_size=1)
        self.observation_space = observation_space(self.sim)
        self.action_space = gym.spaces.Discrete(2 if self.token_level else self.config.max_draft)
        self.reward_model = RewardModel(self.config, self.sim)
        self.observation_fields = observation_fields(self.sim)
        # batch-of-one arguments of Simulator.step_token_rows (action) / step_round_rows (k = action + 1)
        self._sim_args = _constant_rows(range(2) if self.token_level else range(1, self.config.max_draft + 1))
        self._running = False
        self._last_round: dict[str, Any] | None = None
        self._max_draft = self.config.max_draft
        self._confidence_col = 2 + self.sim.n_states
        self._mask_open = np.array([True, True])  # [draft, stop] below max_draft
        self._mask_full = np.array([False, True])  # at max_draft: stop only

    # -------------------------------------------------------------- protocol
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.sim.reset_rows(_ZERO, episode_keys(self.np_random, 1))
        self._running = True
        self._last_round = None
        return self._observe(), self._info()

    def step(self, action: Any):
        if not self._running:
            raise RuntimeError("the episode has ended (or never started): call reset() before step()")
        a = self._validate_action(action)
        sim = self.sim
        # the kernels' unchecked batch-of-one path: row 0, a constant action array
        if self.token_level:
            finished = sim.step_token_rows(_ZERO, self._sim_args[a])
            step_ms = sim.out_step_ms.item(0)
        else:
            finished = sim.step_round_rows(_ZERO, self._sim_args[a])
            step_ms = sim.out_floats.item(kn.R_ROUND_MS)
        state = sim.state_ints[0].tolist()
        info = self._info(state)
        tokens = 0
        local_ref = 0.0
        if finished:
            ri = sim.out_ints[0].tolist()
            rf = sim.out_floats[0].tolist()
            tokens = ri[kn.R_TOKENS]
            local_ref = rf[kn.R_REF]
            self._last_round = info["round"] = {
                "k": ri[kn.R_K], "accepted": ri[kn.R_ACCEPTED], "tokens": tokens, "round_ms": rf[kn.R_ROUND_MS],
                "rtt_ms": rf[kn.R_RTT], "channel_state": ri[kn.R_STATE]}
            if self.token_level and sim.out_forced[0]:
                info["forced_stop"] = True
        reward = float(self.reward_model(step_ms, tokens, local_ref))
        terminated = state[kn.S_DONE] != 0
        if terminated:
            self._running = False
            info["per_token_latency_ms"] = float(self.sim.per_token_latency_ms()[0])
            info["episode_time_ms"] = float(self.sim.episode_time_ms[0])
            info["episode_tokens"] = int(self.sim.episode_tokens[0])
        return self._observe(), reward, terminated, False, info

    def _observe(self) -> np.ndarray:
        obs = self.sim.obs_buffer[0].copy()
        if not self.token_level:  # as Simulator.observe(token_level=False)
            obs[0] = 0.0
            obs[self._confidence_col] = 0.0
            obs[-self._max_draft:] = 0.0
        return obs

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

    def _info(self, state: list[int] | None = None) -> dict[str, Any]:
        """Per-step info from the row's integer state (``state_ints[0]`` as a list)."""
        sim = self.sim
        if state is None:
            state = sim.state_ints[0].tolist()
        info: dict[str, Any] = {"channel_state": state[kn.S_CSI], "time_ms": sim.state_floats.item(kn.F_T),
                                "tokens_left": state[kn.S_LEFT]}
        if self.token_level:
            info["action_mask"] = (self._mask_open if state[kn.S_POS] < self._max_draft else self._mask_full).copy()
        return info

    def action_masks(self, _env: Any = None) -> np.ndarray:
        """Valid actions (for MaskablePPO): token level [draft, stop]; round level all k.

        The ignored optional argument lets sb3-contrib's ``ActionMasker(env, "action_masks")``
        work: it calls the method it finds with the environment as argument."""
        if self.token_level:
            return self.sim.action_masks()[0]
        return np.ones(self.config.max_draft, bool)

    def render(self) -> str | np.ndarray | None:
        """``"ansi"``: one line of text; ``"rgb_array"``: a small bar chart of the state
        (:mod:`specstop_gym.envs._render`); otherwise None."""
        if self.render_mode == "rgb_array":
            return render_rgb(self._observe(), self.observation_fields, int(self.sim.csi[0]))
        if self.render_mode != "ansi":
            return None
        s = self.sim
        text = (f"t={s.t_ms[0]:.1f} ms  round={s.round_idx[0]}  position={s.position[0]}  "
                f"tokens_left={s.tokens_left[0]}  last_rtt={s.last_rtt_ms[0]:.1f} ms  csi={s.csi[0]}")
        if self._last_round:
            text += f"  last round: {self._last_round}"
        return text
