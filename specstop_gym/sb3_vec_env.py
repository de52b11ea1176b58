"""Stable-Baselines3 adapter for the native (Gymnasium) vector environments.

SB3's :class:`~stable_baselines3.common.vec_env.VecEnv` is not Gymnasium's
:class:`~gymnasium.vector.VectorEnv`: ``step`` returns 4 values
``(obs, rewards, dones, infos)`` with ``dones = terminated | truncated``, a
finished environment is reset *in the same step* (the returned observation is
the new episode's first), the last observation of the finished episode is in
``infos[i]["terminal_observation"]``, a time-limit end is flagged by
``infos[i]["TimeLimit.truncated"]`` and ``infos`` is a list of one dict per
environment. :class:`SB3VecEnvAdapter` turns a Gymnasium vector env built with
``autoreset_mode=SameStep`` into exactly that, so that PPO, A2C, DQN, VecNormalize,
VecMonitor and sb3-contrib's MaskablePPO run on the batched core with one numpy
step per call instead of one Python environment per row.

>>> import numpy as np
>>> from specstop_gym.sb3_vec_env import make_sb3_vec_env
>>> venv = make_sb3_vec_env("SpecStopRound-v0", n_envs=4, seed=0, scenario="qwen-geometric")
>>> obs = venv.reset()
>>> obs.shape
(4, 13)
>>> obs, rewards, dones, infos = venv.step(np.ones(4, dtype=np.int64))  # k = 2 everywhere
>>> len(infos), rewards.dtype, infos[0]["round"]["k"]
(4, dtype('float32'), 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

ROW_METHODS = ("action_masks",)
"""Methods of the native vector env that return one row per environment (shape ``(N, ...)``);
``env_method`` splits their result per environment."""


def _unbatch(info: dict[str, Any], n: int, skip: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """A Gymnasium vector info (arrays with ``_key`` masks) as one dict per environment."""
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    for key, value in info.items():
        if key[:1] == "_" or key in skip:
            continue
        if isinstance(value, dict):
            items: Any = _unbatch(value, n)
        elif isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype != object:
            items = value.tolist()  # plain Python scalars, as a single environment returns them
        else:
            items = list(value)  # rows (of an action-mask matrix, say) or objects
        mask = info.get("_" + key)
        present = None if mask is None else mask.tolist()
        if present is None or all(present):
            for d, item in zip(out, items):
                d[key] = item
        else:
            for d, item, here in zip(out, items, present):
                if here:
                    d[key] = item
    return out


class SB3VecEnvAdapter(VecEnv):
    """An SB3 ``VecEnv`` over a Gymnasium vector env with ``SameStep`` autoreset.

    Parameters
    ----------
    venv:
        A :class:`gymnasium.vector.VectorEnv` whose ``metadata["autoreset_mode"]`` is
        ``AutoresetMode.SAME_STEP``, e.g.
        ``gym.make_vec("SpecStop-v0", num_envs=8, vectorization_mode="vector_entry_point",
        autoreset_mode="SameStep")``. (``SyncVectorEnv(..., autoreset_mode=SAME_STEP)`` works too.)

    Behaviour, per SB3's conventions (as :class:`~stable_baselines3.common.vec_env.DummyVecEnv`):

    * ``step_wait`` returns ``(obs, rewards float32, dones bool, infos)``; ``infos[i]`` is
      the single environment's info of that step; for a finished row, the info of its
      final step plus ``terminal_observation`` (the reset info goes to ``reset_infos[i]``);
      ``TimeLimit.truncated = truncated and not terminated`` in every info.
    * ``seed(s)`` seeds environment ``i`` with ``s + i`` at the next ``reset()``;
      ``set_options`` passes options to the next reset (one dict shared by all rows).
    * ``env_method("action_masks")`` returns one mask per environment (sb3-contrib's
      ``get_action_masks`` stacks them); other methods are delegated per environment
      when ``venv`` has sub-environments (``venv.call``), otherwise not supported.
    * ``get_attr`` returns the vector env's attribute once per environment (the rows
      share one configuration); ``set_attr`` sets it for all rows (a subset raises).
    * ``env_is_wrapped`` is False for every row (rows are not ``gym.Env`` objects:
      use :class:`~stable_baselines3.common.vec_env.VecMonitor` for episode statistics).
    * ``get_images`` returns one frame per row when the vector env was built with
      ``render_mode="rgb_array"`` (``make_sb3_vec_env(..., render_mode="rgb_array")``), so
      SB3's ``render()`` tiles them and ``VecVideoRecorder`` records them; without a render
      mode ``render()`` warns and returns None (SB3's behaviour) and ``get_images`` raises
      ``NotImplementedError`` naming the fix.
    """

    def __init__(self, venv: VectorEnv) -> None:
        if not isinstance(venv, VectorEnv):
            raise TypeError(f"SB3VecEnvAdapter wraps a gymnasium.vector.VectorEnv, got {type(venv).__name__}")
        mode = venv.metadata.get("autoreset_mode")
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError("SB3VecEnvAdapter needs a vector env built with autoreset_mode=SameStep "
                             "(SB3 resets a finished environment in the same step), got "
                             f"metadata['autoreset_mode'] = {mode!r}")
        self.venv = venv
        self._actions: np.ndarray | None = None
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self.metadata = {"render_modes": list(venv.metadata.get("render_modes", [])),
                         "render_fps": venv.metadata.get("render_fps"), "autoreset_mode": mode}

    # --------------------------------------------------------------- stepping
    def reset(self) -> VecEnvObs:
        seed = None if all(s is None for s in self._seeds) else list(self._seeds)
        options = None
        if any(self._options):
            first = self._options[0]
            if any(o != first for o in self._options):
                raise NotImplementedError("SB3VecEnvAdapter passes one options dict to all rows; "
                                          "per-environment options differ")
            options = dict(first)
        obs, info = self.venv.reset(seed=seed, options=options)
        self.reset_infos = _unbatch(info, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() called without a pending step_async()")
        actions, self._actions = self._actions, None
        obs, rewards, terminated, truncated, info = self.venv.step(actions)
        dones = np.logical_or(terminated, truncated)
        infos = _unbatch(info, self.num_envs, skip=("final_obs", "final_info"))
        time_limit = (truncated & ~terminated).tolist()
        if dones.any():
            ended = np.flatnonzero(dones).tolist()
            finals = _unbatch(info["final_info"], self.num_envs)
            for i in ended:
                self.reset_infos[i] = infos[i]
                infos[i] = finals[i]
                infos[i]["terminal_observation"] = info["final_obs"][i]
        for i, flag in enumerate(time_limit):
            infos[i]["TimeLimit.truncated"] = flag
        return obs, np.asarray(rewards, dtype=np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    # -------------------------------------------------------------- attributes
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        idx = list(self._get_indices(indices))
        value = getattr(self.venv, attr_name)  # AttributeError if missing (has_attr relies on it)
        return [value for _ in idx]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        idx = list(self._get_indices(indices))
        if sorted(idx) != list(range(self.num_envs)):
            raise ValueError(f"set_attr({attr_name!r}): the rows of a native vector env share their attributes; "
                             "set them for all environments (indices=None)")
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        idx = list(self._get_indices(indices))
        if method_name in ("render", "get_images"):
            frames = self.get_images()
            return [frames[i] for i in idx]
        if method_name in ROW_METHODS and hasattr(self.venv, method_name):
            batch = getattr(self.venv, method_name)(*method_args, **method_kwargs)
            return [batch[i] for i in idx]
        if hasattr(self.venv, "call"):  # Sync/AsyncVectorEnv: real sub-environments
            results = self.venv.call(method_name, *method_args, **method_kwargs)
            return [results[i] for i in idx]
        raise NotImplementedError(f"env_method({method_name!r}) is not supported by SB3VecEnvAdapter over "
                                  f"{type(self.venv).__name__}; per-environment methods: {', '.join(ROW_METHODS)}")

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        if getattr(self.venv, "render_mode", None) != "rgb_array":
            raise NotImplementedError("SB3VecEnvAdapter renders only a vector env built with render_mode='rgb_array' "
                                      "(make_sb3_vec_env(..., render_mode='rgb_array'))")
        return list(self.venv.render())

    def action_masks(self) -> np.ndarray:
        """Valid actions of all rows, shape (num_envs, n_actions)."""
        return np.stack(self.env_method("action_masks"))


def _make_single(env_id: str, kwargs: dict[str, Any], monitor: bool) -> gym.Env:
    env = gym.make(env_id, **kwargs)
    if monitor:
        from stable_baselines3.common.monitor import Monitor

        env = Monitor(env)
    return env


def make_sb3_vec_env(env_id: str, n_envs: int, seed: int | None = None, scenario: Any = None, native: bool = True,
                     monitor: bool = False, **overrides: Any) -> VecEnv:
    """An SB3 ``VecEnv`` of ``n_envs`` copies of ``env_id`` (``scenario`` + ``overrides``).

    ``native=True``: one native vector env (``autoreset_mode=SameStep``) behind
    :class:`SB3VecEnvAdapter`. ``native=False``: a ``DummyVecEnv`` of single environments
    (the reference). Both are seeded with ``seed`` (environment ``i`` gets ``seed + i`` at
    the first reset), so they produce the same trajectories for the same actions.
    ``monitor=True`` adds episode statistics (``VecMonitor`` over the adapter, ``Monitor``
    around each single env), which SB3 logs as ``rollout/ep_rew_mean``. ``overrides`` are
    scenario fields (``n_tokens=64``, ``delay_ms=300``, ...), ``max_episode_steps`` and ``render_mode``.
    """
    if isinstance(n_envs, bool) or not isinstance(n_envs, (int, np.integer)) or n_envs < 1:
        raise ValueError(f"n_envs must be an integer >= 1, got {n_envs!r}")
    kwargs = dict(overrides)
    if scenario is not None:
        kwargs["scenario"] = scenario
    env: VecEnv
    if native:
        venv = gym.make_vec(env_id, num_envs=int(n_envs), vectorization_mode="vector_entry_point",
                            autoreset_mode=AutoresetMode.SAME_STEP, **kwargs)
        env = SB3VecEnvAdapter(venv)
        if monitor:
            env = VecMonitor(env)
    else:
        env = DummyVecEnv([partial(_make_single, env_id, kwargs, monitor) for _ in range(int(n_envs))])
    if seed is not None:
        env.seed(seed)
    return env


__all__ = ["ROW_METHODS", "SB3VecEnvAdapter", "make_sb3_vec_env"]
