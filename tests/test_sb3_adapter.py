"""SB3VecEnvAdapter: SB3's VecEnv semantics over the native vector envs, equal to DummyVecEnv."""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.env_checker import check_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.utils import check_for_correct_spaces
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    VecCheckNan,
    VecEnvWrapper,
    VecMonitor,
    VecNormalize,
)

import specstop_gym  # noqa: F401
from specstop_gym.sb3_vec_env import SB3VecEnvAdapter, make_sb3_vec_env

IDS = ("SpecStop-v0", "SpecStopRound-v0")
SMALL = {"n_tokens": 16}


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def assert_same(x: Any, y: Any, where: str) -> None:
    """Recursive equality of per-environment infos (dicts, arrays, scalars; types of scalars too)."""
    if isinstance(x, dict):
        assert isinstance(y, dict) and set(x) == set(y), f"{where}: keys {sorted(set(x) ^ set(y))}"
        for k in x:
            assert_same(x[k], y[k], f"{where}[{k!r}]")
    elif isinstance(x, (list, tuple)):
        assert type(x) is type(y) and len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y)):
            assert_same(u, v, f"{where}[{i}]")
    elif isinstance(x, np.ndarray):
        assert isinstance(y, np.ndarray) and x.dtype == y.dtype, f"{where}: {y!r}"
        np.testing.assert_array_equal(x, y, err_msg=where)
    else:
        assert type(x) is type(y) and x == y, f"{where}: {x!r} ({type(x)}) vs {y!r} ({type(y)})"


def random_actions(rng: np.random.Generator, env, n: int) -> np.ndarray:
    if env.action_space.n == 2:
        return (rng.random(n) >= 0.75).astype(np.int64)  # long drafts, forced stops included
    return rng.integers(0, env.action_space.n, n)


# ------------------------------------------------------------- SB3 checks
@pytest.mark.parametrize("env_id", IDS)
def test_sb3_check_env_on_single_envs(env_id: str) -> None:
    check_env(gym.make(env_id, **SMALL).unwrapped, warn=True)


@pytest.mark.parametrize("env_id", IDS)
def test_adapter_spaces_and_nan_check(env_id: str) -> None:
    env = make_sb3_vec_env(env_id, 4, seed=0, **SMALL)
    assert isinstance(env, SB3VecEnvAdapter) and env.num_envs == 4
    check_for_correct_spaces(env, gym.make(env_id).observation_space, gym.make(env_id).action_space)
    env = VecCheckNan(env, raise_exception=True)
    obs = env.reset()
    assert obs.shape == (4, *env.observation_space.shape) and obs.dtype == np.float32
    rng = np.random.default_rng(0)
    for _ in range(60):
        obs, rewards, dones, infos = env.step(random_actions(rng, env, 4))
        assert all(env.observation_space.contains(o) for o in obs)
        assert rewards.dtype == np.float32 and dones.dtype == np.bool_ and len(infos) == 4
        for i in np.flatnonzero(dones):
            assert env.observation_space.contains(infos[i]["terminal_observation"])


# -------------------------------------------------- adapter == DummyVecEnv
@pytest.mark.parametrize("scenario,kw", [("qwen-geometric", {}), ("markov-csi", {"max_episode_steps": 6}),
                                         ("qwen-latent-signal", {"reward_mode": "token_credit"})])
@pytest.mark.parametrize("env_id", IDS)
def test_adapter_equals_dummy_vec_env(env_id: str, scenario: str, kw: dict[str, Any]) -> None:
    n, seed = 3, 21
    native = make_sb3_vec_env(env_id, n, seed=seed, scenario=scenario, **SMALL, **kw)
    dummy = make_sb3_vec_env(env_id, n, seed=seed, scenario=scenario, native=False, **SMALL, **kw)
    assert isinstance(native, SB3VecEnvAdapter) and isinstance(dummy, DummyVecEnv)
    np.testing.assert_array_equal(native.reset(), dummy.reset())
    assert_same(native.reset_infos, dummy.reset_infos, "reset_infos")
    rng = np.random.default_rng(seed)
    ends = truncations = 0
    for t in range(80):
        a = random_actions(rng, native, n)
        o1, r1, d1, i1 = native.step(a)
        o2, r2, d2, i2 = dummy.step(a)
        np.testing.assert_array_equal(o1, o2, err_msg=f"obs step {t}")
        assert r1.dtype == r2.dtype == np.float32
        np.testing.assert_array_equal(r1, r2, err_msg=f"rewards step {t}")
        np.testing.assert_array_equal(d1, d2, err_msg=f"dones step {t}")
        assert_same(i1, i2, f"infos step {t}")  # terminal_observation and TimeLimit.truncated included
        assert_same(native.reset_infos, dummy.reset_infos, f"reset_infos step {t}")
        ends += int(d1.sum())
        truncations += sum(info["TimeLimit.truncated"] for info in i1)
    assert ends >= 3
    if "max_episode_steps" in kw:
        assert truncations >= 1
    # a later unseeded reset continues each row's stream in both
    np.testing.assert_array_equal(native.reset(), dummy.reset())
    native.seed(5)
    dummy.seed(5)
    np.testing.assert_array_equal(native.reset(), dummy.reset())


def test_seed_returns_per_env_seeds_and_applies_at_reset() -> None:
    env = make_sb3_vec_env("SpecStopRound-v0", 3)
    assert env.seed(10) == [10, 11, 12]
    first = env.reset()
    env.seed(10)
    np.testing.assert_array_equal(env.reset(), first)
    single = gym.make("SpecStopRound-v0")
    np.testing.assert_array_equal(single.reset(seed=12)[0], first[2])


# --------------------------------------------------------- VecEnv protocol
def test_attributes_methods_render_close() -> None:
    env = make_sb3_vec_env("SpecStop-v0", 4, seed=0, scenario="markov-csi")
    env.reset()
    assert env.get_attr("render_mode") == [None] * 4
    assert [c.name for c in env.get_attr("config", indices=[1, 3])] == ["markov-csi"] * 2
    assert env.has_attr("action_masks") and not env.has_attr("no_such_attribute")
    with pytest.raises(AttributeError):
        env.get_attr("no_such_attribute")
    env.set_attr("my_flag", 3)
    assert env.get_attr("my_flag") == [3] * 4
    with pytest.raises(ValueError, match="set_attr"):
        env.set_attr("my_flag", 4, indices=[0])
    masks = env.env_method("action_masks")
    assert len(masks) == 4 and all(m.shape == (2,) and m.dtype == np.bool_ for m in masks)
    assert len(env.env_method("action_masks", indices=[2])) == 1
    np.testing.assert_array_equal(env.action_masks(), np.stack(masks))
    with pytest.raises(NotImplementedError, match="env_method"):
        env.env_method("reset")
    assert env.env_is_wrapped(Monitor) == [False] * 4
    with pytest.warns(UserWarning, match="render_mode"):
        assert env.render() is None  # SB3's behaviour without a render mode
    with pytest.raises(NotImplementedError, match="render_mode='rgb_array'"):
        env.get_images()
    drawn = make_sb3_vec_env("SpecStop-v0", 3, seed=0, render_mode="rgb_array", **SMALL)
    drawn.reset()
    frames = drawn.get_images()
    assert len(frames) == 3 and all(f.dtype == np.uint8 and f.ndim == 3 for f in frames)
    assert drawn.render().ndim == 3  # SB3 tiles the frames
    assert len(drawn.env_method("render", indices=[1])) == 1
    env.set_options({"unused": 1})  # one options dict for all rows is passed to the next reset
    env.reset()
    env.close()


def test_adapter_requires_same_step() -> None:
    venv = gym.make_vec("SpecStop-v0", num_envs=2, vectorization_mode="vector_entry_point")
    with pytest.raises(ValueError, match="SameStep"):
        SB3VecEnvAdapter(venv)
    with pytest.raises(TypeError):
        SB3VecEnvAdapter(gym.make("SpecStop-v0"))
    with pytest.raises(ValueError, match="n_envs"):
        make_sb3_vec_env("SpecStop-v0", 0)


def test_adapter_over_sync_vector_env() -> None:
    """The adapter also wraps Gymnasium's SyncVectorEnv (SameStep); env_method goes to the sub-envs."""
    sync = gym.make_vec("SpecStop-v0", num_envs=2, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP}, **SMALL)
    native = make_sb3_vec_env("SpecStop-v0", 2, seed=4, **SMALL)
    env = SB3VecEnvAdapter(sync)
    env.seed(4)
    np.testing.assert_array_equal(env.reset(), native.reset())
    rng = np.random.default_rng(0)
    for t in range(40):
        a = random_actions(rng, env, 2)
        np.testing.assert_array_equal(env.action_masks(), native.action_masks())
        o1, r1, d1, i1 = env.step(a)
        o2, r2, d2, i2 = native.step(a)
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(d1, d2)
        assert_same(i1, i2, f"infos step {t}")


def test_monitor_option() -> None:
    for native in (True, False):
        env = make_sb3_vec_env("SpecStopRound-v0", 2, seed=0, native=native, monitor=True, n_tokens=4,
                               reward_mode="latency")  # returns are minus the episode time: < 0
        if native:
            assert isinstance(env, VecMonitor)
        env.reset()
        episodes = []
        for _ in range(12):
            _, _, dones, infos = env.step(np.ones(2, np.int64))
            episodes += [info["episode"] for info, d in zip(infos, dones) if d]
        assert episodes and all(ep["r"] < 0 and ep["l"] >= 1 for ep in episodes)


# ---------------------------------------------------------------- training
@pytest.mark.parametrize("native", [True, False], ids=["native", "dummy"])
@pytest.mark.parametrize("env_id", IDS)
def test_ppo_learns(env_id: str, native: bool) -> None:
    env = make_sb3_vec_env(env_id, 4, seed=0, native=native, monitor=True, **SMALL)
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=64, n_epochs=2, seed=0, device="cpu",
                policy_kwargs={"net_arch": [16]})
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256
    obs = env.reset()
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (4,) and env.action_space.contains(int(actions[0]))


def test_a2c_runs_on_adapter() -> None:
    env = make_sb3_vec_env("SpecStopRound-v0", 4, seed=1, **SMALL)
    A2C("MlpPolicy", env, n_steps=8, seed=0, device="cpu", policy_kwargs={"net_arch": [16]}).learn(128)


class _MaskChecker(VecEnvWrapper):
    """Records, before each step, whether every chosen action was valid under the env's masks."""

    def __init__(self, venv):
        super().__init__(venv)
        self.checked = 0
        self.invalid = 0
        self.masked = 0

    def step_async(self, actions: np.ndarray) -> None:
        masks = np.stack(self.venv.env_method("action_masks"))
        self.invalid += int((~masks[np.arange(len(actions)), actions]).sum())
        self.checked += len(actions)
        self.masked += int((~masks).sum())
        self.venv.step_async(actions)

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        self.invalid += sum(bool(info.get("forced_stop")) for info in infos)  # action 0 at max_draft
        return obs, rewards, dones, infos

    def reset(self):
        return self.venv.reset()


def test_maskable_ppo_never_chooses_invalid_actions() -> None:
    sb3_contrib = pytest.importorskip("sb3_contrib")
    from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported

    # max_draft = 3 so that the draft action is masked often
    env = _MaskChecker(make_sb3_vec_env("SpecStop-v0", 4, seed=0, max_draft=3, **SMALL))
    assert is_masking_supported(env)
    assert get_action_masks(env).shape == (4, 2)
    model = sb3_contrib.MaskablePPO("MlpPolicy", env, n_steps=64, batch_size=64, n_epochs=1, seed=0,
                                    device="cpu", policy_kwargs={"net_arch": [16]})
    model.learn(total_timesteps=256)
    assert env.checked >= 256 and env.masked > 0 and env.invalid == 0
    obs = env.reset()
    for _ in range(20):
        masks = get_action_masks(env)
        actions, _ = model.predict(obs, action_masks=masks)
        assert masks[np.arange(4), actions].all()
        obs, _, _, _ = env.step(actions)
    assert env.invalid == 0


def test_vec_normalize_on_adapter() -> None:
    env = VecNormalize(make_sb3_vec_env("SpecStopRound-v0", 4, seed=0, scenario="drift", n_tokens=8),
                       norm_obs=True, norm_reward=True, clip_obs=10.0)
    obs = env.reset()
    assert obs.shape == (4, env.observation_space.shape[0])
    rng = np.random.default_rng(0)
    finals = 0
    for _ in range(50):
        obs, rewards, dones, infos = env.step(rng.integers(0, env.action_space.n, 4))
        assert np.isfinite(obs).all() and np.abs(obs).max() <= 10.0 and np.isfinite(rewards).all()
        for i in np.flatnonzero(dones):
            assert infos[i]["terminal_observation"].shape == obs[i].shape  # normalised by VecNormalize
            finals += 1
    assert finals >= 1 and env.obs_rms.count > 50
    PPO("MlpPolicy", env, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu",
        policy_kwargs={"net_arch": [16]}).learn(128)
