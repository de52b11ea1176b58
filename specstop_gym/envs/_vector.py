"""Native vector face shared by both levels: N rows of the core stepped in one batched call.

Autoreset follows Gymnasium 1.x (``metadata["autoreset_mode"]``):

* ``NEXT_STEP`` (default): the step after an episode ended resets that row; its
  action is ignored, its reward is 0, terminated/truncated are False and its info
  is the reset info.
* ``SAME_STEP``: the row is reset in the step that ends it; the returned
  observation is the new episode's first one, the final observation and info are
  in ``info["final_obs"]`` (object array) and ``info["final_info"]`` (vector info),
  and the row's other info entries are the reset info.

Infos follow Gymnasium's vector convention (arrays with ``_key`` masks) and equal
what :class:`gymnasium.vector.SyncVectorEnv` over the single environments returns
(keys, masks, values and dtypes). ``max_episode_steps`` truncates like
:class:`gymnasium.wrappers.TimeLimit` (``truncated`` is set when the step count
reaches the limit, also on the step that terminates).

Seeding: each row owns a generator, seeded like ``SyncVectorEnv`` seeds its
environments (``reset(seed=s)``: row ``i`` gets ``s + i``; a list gives one seed
per row, ``None`` entries keep the row's generator). Every episode key of row
``i`` is drawn from that generator exactly as a single environment draws it from
its ``np_random``, so row ``i`` reproduces a single environment seeded ``s + i``
episode after episode (tests/test_vector_env.py). The keys are drawn ``_KEY_BLOCK``
at a time per row (numpy's bounded 64-bit draws give the same sequence in one call
of size ``n`` as in ``n`` calls of size 1), so that autoresets at large N do not
pay a Python call per reset row.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
from gymnasium import logger
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from ..core import kernels as kn
from ..core.config import ScenarioConfig
from ._face import (
    ROUND_FIELDS,
    RewardModel,
    build_simulator,
    check_seed,
    episode_keys,
    observation_fields,
    observation_space,
    resolve_config,
)
from ._render import render_rgb

_EMPTY = np.zeros(0, np.int64)
_NO_BOOL = np.zeros(0, bool)


class _Rounds(NamedTuple):
    """The rounds finished in a step (rows with a round and their values)."""

    rows: np.ndarray
    k: np.ndarray
    accepted: np.ndarray
    tokens: np.ndarray
    state: np.ndarray
    round_ms: np.ndarray
    rtt_ms: np.ndarray


def _put(n: int, rows: np.ndarray, values: Any, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """A length-n info array holding ``values`` at ``rows`` (0 elsewhere) and its mask."""
    if len(rows) == n and isinstance(values, np.ndarray):  # every row (rows are sorted and unique)
        return values.astype(dtype), np.ones(n, bool)
    mask = np.zeros(n, bool)
    mask[rows] = True
    arr = np.zeros((n,) + np.shape(values)[1:], dtype=dtype)
    arr[rows] = values
    return arr, mask


class VectorFace(VectorEnv):
    """Common machinery of the native vector environments of both levels."""

    token_level = True
    _KEY_BLOCK = 64
    """Episode keys drawn per row generator at once (see the module docstring)."""

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
        if max_episode_steps is not None and (isinstance(max_episode_steps, bool)
                                              or not isinstance(max_episode_steps, (int, np.integer))
                                              or max_episode_steps < 1):
            raise ValueError(f"max_episode_steps must be an integer >= 1 or None, got {max_episode_steps!r}")
        if render_mode is not None and render_mode != "rgb_array":
            logger.warn(f"render_mode={render_mode!r} is not supported by the vector environment (supported: "
                        f"['rgb_array']); it will not render")
            render_mode = None
        self.num_envs = int(num_envs)
        self.autoreset_mode = mode
        self.metadata = {"autoreset_mode": mode, "render_modes": ["rgb_array"], "render_fps": 4}
        self.render_mode = render_mode
        self.max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)
        self.config = resolve_config(scenario, overrides)
        self.sim = build_simulator(self.config, batch_size=self.num_envs)
        self.single_observation_space = observation_space(self.sim)
        self.single_action_space = gym.spaces.Discrete(2 if self.token_level else self.config.max_draft)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.reward_model = RewardModel(self.config, self.sim)
        self.observation_fields = observation_fields(self.sim)
        n = self.num_envs
        self._gens: list[np.random.Generator | None] = [None] * n
        self._key_buf = np.zeros((n, self._KEY_BLOCK), np.uint64)
        self._key_pos = np.full(n, self._KEY_BLOCK, np.int64)
        self._autoreset = np.zeros(n, bool)
        self._steps = np.zeros(n, np.int64)
        self._started = False
        self._all = np.arange(n)
        self._n_actions = int(self.single_action_space.n)
        # reward parameters of the step kernel (token credit?, reference, scale, max steps or 0, local?)
        self._reward_params = self.reward_model.kernel_params(self.max_episode_steps)

    # -------------------------------------------------------------- protocol
    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None):
        """Reset all rows (or the rows of ``options["reset_mask"]``); returns (obs, info).

        ``seed``: ``None`` (keep each row's generator; fresh random ones at the first
        reset), an int ``s`` (row ``i`` seeded ``s + i``) or a list of per-row seeds.
        """
        mask = None if options is None else options.get("reset_mask")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_ or not mask.any():
                raise ValueError(f"options['reset_mask'] must be a bool array of shape ({self.num_envs},) "
                                 f"with at least one True, got {options['reset_mask']!r}")
            if not self._started and not mask.all():
                raise ValueError("the first reset must reset every row (no partial options['reset_mask'])")
            rows = self._all[mask]
        else:
            rows = self._all
        self._seed_rows(seed, rows)
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            self._np_random, self._np_random_seed = seeding.np_random(int(seed))
        self._started = True
        self._reset_rows(rows)
        base_rows = None if mask is None else rows
        return self.sim.observe(self.token_level), self._info(base_rows, None, _EMPTY, _EMPTY)

    def step(self, actions: Any):
        """Step every row (rows due for a NextStep autoreset are reset instead)."""
        if not self._started:
            raise RuntimeError("call reset() before step()")
        a = self._validate_actions(actions)
        n = self.num_envs
        sim = self.sim
        next_step = self.autoreset_mode == AutoresetMode.NEXT_STEP
        resetting = None
        active = _NO_BOOL  # empty: every row steps
        if next_step and self._autoreset.any():
            resetting = np.flatnonzero(self._autoreset)
            active = ~self._autoreset
            self._reset_rows(resetting)
        # every output of the step in four blocks, filled by one kernel call (rows: see kernels.vector_row)
        ints = np.empty((6, n), np.int64)
        floats = np.empty((4, n))
        flags = np.empty((14, n), bool)
        masks = np.empty((n, 2) if self.token_level else (0, 2), bool)
        step = kn.vector_step_parallel if n >= kn.PARALLEL_MIN_ROWS else kn.vector_step
        step(sim.state_ints, sim.state_floats, sim.obs_buffer, sim.kernel_params, sim.kernel_ints, active, a,
             self.token_level, self._reward_params, self._steps, ints, floats, flags, masks)
        rewards, terminated, truncated = floats[0], flags[0], flags[1]
        flags[3:7] = True  # presence masks of the per-step info entries
        flags[8:14] = flags[7]  # one presence mask per round field, and the round's own (rows with a round)
        r_masks = flags[7:14]
        fin = r_masks[6].any()
        ended_mask = terminated.copy() if self.max_episode_steps is None else terminated | truncated
        obs = sim.observe(self.token_level)
        done_rows = np.flatnonzero(terminated) if terminated.any() else _EMPTY
        forced = flags[2]
        forced_rows = np.flatnonzero(forced) if self.token_level and forced.any() else _EMPTY
        if next_step or not ended_mask.any():
            info: dict[str, Any] = {"channel_state": ints[0], "_channel_state": flags[3], "time_ms": floats[1],
                                    "_time_ms": flags[4], "tokens_left": ints[1], "_tokens_left": flags[5]}
            if self.token_level:
                info["action_mask"], info["_action_mask"] = masks, flags[6]
            if fin:
                info["round"] = {"k": ints[2], "_k": r_masks[0], "accepted": ints[3], "_accepted": r_masks[1],
                                 "tokens": ints[4], "_tokens": r_masks[2], "round_ms": floats[2],
                                 "_round_ms": r_masks[3], "rtt_ms": floats[3], "_rtt_ms": r_masks[4],
                                 "channel_state": ints[5], "_channel_state": r_masks[5]}
                info["_round"] = r_masks[6]
            if len(forced_rows):
                info["forced_stop"], info["_forced_stop"] = forced, forced.copy()
            if len(done_rows):
                self._add_episode_totals(info, done_rows)
            if next_step:
                self._autoreset = ended_mask
            return obs, rewards, terminated, truncated, info
        # SAME_STEP with finished rows: final obs/info of those rows, then reset them
        result = None
        if fin:
            rows = np.flatnonzero(r_masks[6])
            result = _Rounds(rows, ints[2, rows], ints[3, rows], ints[4, rows], ints[5, rows],
                             floats[2, rows], floats[3, rows])
        ended = np.flatnonzero(ended_mask)
        final_rows = obs[ended]
        final_obs = np.full(n, None, dtype=object)
        for j, i in enumerate(ended.tolist()):
            final_obs[i] = final_rows[j]
        final_info = self._info(ended, result, forced_rows, done_rows, keep=ended_mask)
        self._reset_rows(ended)
        obs = sim.observe(self.token_level)
        info = self._info(None, result, forced_rows, _EMPTY, keep=~ended_mask)
        info["final_obs"], info["_final_obs"] = final_obs, ended_mask
        info["final_info"], info["_final_info"] = final_info, ended_mask.copy()
        return obs, rewards, terminated, truncated, info

    def _add_episode_totals(self, info: dict[str, Any], d: np.ndarray) -> None:
        """Episode totals of the rows ``d`` that finished their episode (3 allocations in all)."""
        sim = self.sim
        times = np.zeros((2, self.num_envs))
        counts = np.zeros(self.num_envs, np.int64)
        masks = np.zeros((3, self.num_envs), bool)
        times[0, d] = sim.per_token_latency_ms(d)
        times[1, d] = sim.episode_time_ms[d]
        counts[d] = sim.episode_tokens[d]
        masks[:, d] = True
        info["per_token_latency_ms"], info["_per_token_latency_ms"] = times[0], masks[0]
        info["episode_time_ms"], info["_episode_time_ms"] = times[1], masks[1]
        info["episode_tokens"], info["_episode_tokens"] = counts, masks[2]

    def render(self) -> tuple[np.ndarray, ...] | None:
        """``"rgb_array"``: one frame per row (as :class:`gymnasium.vector.SyncVectorEnv` returns its
        environments' frames; the picture is described in :mod:`specstop_gym.envs._render`)."""
        if self.render_mode != "rgb_array":
            return None
        obs = self.sim.observe(self.token_level)
        return tuple(render_rgb(obs[i], self.observation_fields, int(self.sim.csi[i])) for i in range(self.num_envs))

    def action_masks(self) -> np.ndarray:
        """Valid actions per row, shape (N, n_actions): token level [draft, stop], round level all k."""
        if self.token_level:
            return self.sim.action_masks()
        return np.ones((self.num_envs, self._n_actions), bool)

    # --------------------------------------------------------------- seeding
    def _seed_rows(self, seed: Any, rows: np.ndarray) -> None:
        """Replace the generators of ``rows`` as Gymnasium's SyncVectorEnv seeds its environments."""
        n = self.num_envs
        if seed is None:
            seeds: list[Any] = [None] * n
        elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            check_seed(seed)
            seeds = [int(seed) + i for i in range(n)]
        elif isinstance(seed, (list, tuple, np.ndarray)):
            if len(seed) != n:
                raise ValueError(f"a seed list must have num_envs = {n} entries, got {len(seed)}")
            for s in seed:
                check_seed(s)
            seeds = list(seed)
        else:
            raise ValueError(f"seed must be None, a non-negative integer or a list of {n} of them, got {seed!r}")
        for i in rows:
            s = seeds[i]
            if s is None and self._gens[i] is not None:
                continue  # like a single env reset with seed=None: keep the generator
            self._gens[i] = seeding.np_random(None if s is None else int(s))[0]
            self._key_pos[i] = self._KEY_BLOCK  # buffered keys belong to the old generator

    def _take_keys(self, rows: np.ndarray) -> np.ndarray:
        """The next episode key of each row, from that row's generator (buffered in blocks)."""
        block = self._KEY_BLOCK
        empty = rows[self._key_pos[rows] >= block]
        for i in empty:  # one Python call per row every `block` episodes
            self._key_buf[i] = episode_keys(self._gens[i], block)
        self._key_pos[empty] = 0
        pos = self._key_pos[rows]
        self._key_pos[rows] = pos + 1
        return self._key_buf[rows, pos]

    def _reset_rows(self, rows: np.ndarray) -> None:
        """Reset ``rows`` (int64, sorted, distinct: ``self._all`` or from ``np.flatnonzero``)."""
        self.sim.reset_rows_unchecked(rows, self._take_keys(rows))
        self._autoreset[rows] = False
        self._steps[rows] = 0

    # ------------------------------------------------------------------ infos
    def _validate_actions(self, actions: Any) -> np.ndarray:
        a = np.asarray(actions)
        if (a.shape != (self.num_envs,) or a.dtype.kind not in "iu"
                or not kn.actions_in_range(a.astype(np.int64, copy=False), self._n_actions)):
            what = ("0 (draft another) or 1 (stop and send)" if self.token_level
                    else f"0..{self._n_actions - 1} (k - 1)")
            raise ValueError(f"invalid actions {actions!r}: need an integer array of shape ({self.num_envs},) "
                             f"with values {what}")
        return kn.as_arg(a, np.int64)

    def _info(self, base_rows: np.ndarray | None, result: _Rounds | None, forced: np.ndarray,
              done_rows: np.ndarray, keep: np.ndarray | None = None) -> dict[str, Any]:
        """Vector info as SyncVectorEnv builds it from the single environments' infos.

        ``base_rows`` (None: all) get the per-step entries (from the simulator's current
        state); the finished rounds of ``result``, the ``forced`` stops and the episode
        totals of ``done_rows`` are included for rows where ``keep`` (length N, default
        all) holds.
        """
        n = self.num_envs
        sim = self.sim
        info: dict[str, Any] = {}
        if base_rows is None:
            masks = np.ones((4, n), bool)  # one allocation; each entry gets its own row
            info["channel_state"], info["_channel_state"] = sim.csi.astype(np.int64), masks[0]
            info["time_ms"], info["_time_ms"] = sim.t_ms.astype(np.float64), masks[1]
            info["tokens_left"], info["_tokens_left"] = sim.tokens_left.astype(np.int64), masks[2]
            if self.token_level:
                info["action_mask"], info["_action_mask"] = sim.action_masks(), masks[3]
        else:
            r = base_rows
            info["channel_state"], info["_channel_state"] = _put(n, r, sim.csi[r], np.int64)
            info["time_ms"], info["_time_ms"] = _put(n, r, sim.t_ms[r], np.float64)
            info["tokens_left"], info["_tokens_left"] = _put(n, r, sim.tokens_left[r], np.int64)
            if self.token_level:
                info["action_mask"], info["_action_mask"] = _put(n, r, sim.action_masks()[r], bool)
        if result is not None:
            rows = result.rows
            sel = None
            if keep is not None:
                sel = keep[rows]
                if sel.all():
                    sel = None
                else:
                    rows = rows[sel]
            if len(rows):
                ints = np.zeros((4, n), np.int64)
                floats = np.zeros((2, n), np.float64)
                masks = np.zeros((7, n), bool)
                int_vals = (result.k, result.accepted, result.tokens, result.state)
                float_vals = (result.round_ms, result.rtt_ms)
                if sel is not None:
                    int_vals = tuple(np.asarray(v)[sel] for v in int_vals)
                    float_vals = tuple(np.asarray(v)[sel] for v in float_vals)
                ints[:, rows] = int_vals
                floats[:, rows] = float_vals
                masks[:, rows] = True
                rnd = {"k": ints[0], "accepted": ints[1], "tokens": ints[2], "round_ms": floats[0],
                       "rtt_ms": floats[1], "channel_state": ints[3]}
                for j, name in enumerate(ROUND_FIELDS):
                    rnd["_" + name] = masks[j]
                info["round"], info["_round"] = rnd, masks[6]
        if len(forced) and keep is not None:
            forced = forced[keep[forced]]
        if len(forced):
            info["forced_stop"], info["_forced_stop"] = _put(n, forced, True, bool)
        if len(done_rows):
            self._add_episode_totals(info, done_rows)
        return info
