"""The Gymnasium faces (``SpecStop-v0``, ``SpecStopRound-v0``) as a user meets them.

Every registered id x every scenario preset (small requests for speed): Gymnasium's
and Stable-Baselines3's environment checkers, exact determinism, seeding, pickling;
then the documented behaviour: rewards and returns, the final info, the token
level's first drafted token, action mask and forced stop, input validation and
overrides. Randomness only through explicit generators.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env

import specstop_gym
from specstop_gym import ENV_IDS, scenario_names
from specstop_gym.scenarios import stationary_reference

SMALL = {"n_tokens": 32}
PRESETS = scenario_names()


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # checker notes (unbounded rtt entry, float32 casts) are not failures
        yield


def make(env_id: str, scenario: str = "qwen-geometric", **overrides: Any) -> gym.Env:
    return gym.make(env_id, scenario=scenario, **{**SMALL, **overrides})


def same_info(a: Any, b: Any) -> bool:
    """Exact equality of two info values (dicts, arrays, numbers)."""
    if isinstance(a, dict) or isinstance(b, dict):
        return (isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys()
                and all(same_info(a[k], b[k]) for k in a))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and np.array_equal(a, b))
    return type(a) is type(b) and a == b


def rollout(env: gym.Env, seed: int | None, action_seed: int, max_steps: int = 20_000) -> list[tuple]:
    """One episode with uniformly random actions from ``default_rng(action_seed)``."""
    actions = np.random.default_rng(action_seed)
    obs, info = env.reset(seed=seed)
    steps = [(obs, None, False, False, info)]
    for _ in range(max_steps):
        step = env.step(int(actions.integers(env.action_space.n)))
        steps.append(step)
        if step[2] or step[3]:
            return steps
    raise AssertionError("episode did not end")


def same_rollout(a: list[tuple], b: list[tuple]) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(x[0], y[0]) and x[0].dtype == y[0].dtype and x[1] == y[1] and x[2] == y[2]
        and x[3] == y[3] and same_info(x[4], y[4]) for x, y in zip(a, b))


# ------------------------------------------------------------------ checkers
@pytest.mark.parametrize("scenario", PRESETS)
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_and_sb3_checkers_pass(env_id: str, scenario: str) -> None:
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = make(env_id, scenario)
    gym_check_env(env.unwrapped, skip_render_check=False)
    sb3_check_env(make(env_id, scenario).unwrapped, warn=True)
    assert env.spec is not None and env.spec.id == env_id
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs) and obs.dtype == np.float32
    assert len(env.unwrapped.observation_fields) == env.observation_space.shape[0]


def test_make_with_module_prefix_works_in_a_fresh_interpreter() -> None:
    code = ("import sys, gymnasium as gym\n"
            "assert 'specstop_gym' not in sys.modules\n"
            "for env_id in ('SpecStop-v0', 'SpecStopRound-v0'):\n"
            "    env = gym.make('specstop_gym:' + env_id, n_tokens=8)\n"
            "    obs, info = env.reset(seed=0)\n"
            "    env.step(0)\n"
            "    print(env.spec.id)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == list(ENV_IDS)


def test_every_id_has_a_vector_entry_point() -> None:
    for env_id in ENV_IDS:
        spec = gym.spec(env_id)
        assert spec.entry_point.startswith("specstop_gym.envs.")
        assert spec.vector_entry_point is not None


# ------------------------------------------------------------------ determinism and seeding
@pytest.mark.parametrize("scenario", PRESETS)
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_episode_and_other_seeds_differ(env_id: str, scenario: str) -> None:
    a = rollout(make(env_id, scenario), seed=11, action_seed=3)
    b = rollout(make(env_id, scenario), seed=11, action_seed=3)
    assert same_rollout(a, b)
    c = rollout(make(env_id, scenario), seed=12, action_seed=3)
    assert not same_rollout(a, c)
    assert [s[1] for s in a[1:]] != [s[1] for s in c[1:]]  # the rewards themselves differ


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_reset_with_the_same_seed_twice_replays_the_episode(env_id: str) -> None:
    env = make(env_id, "markov-csi")
    first = rollout(env, seed=5, action_seed=1)
    rollout(env, seed=None, action_seed=2)  # something else in between
    again = rollout(env, seed=5, action_seed=1)
    assert same_rollout(first, again)
    # unseeded resets continue the env's own generator: a fresh env replays them too
    other = make(env_id, "markov-csi")
    rollout(other, seed=5, action_seed=1)
    assert same_rollout(rollout(env, None, 4), rollout(other, None, 4))


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_pickled_env_continues_like_the_original_and_like_a_fresh_env(env_id: str) -> None:
    fresh = pickle.loads(pickle.dumps(make(env_id, "qwen-latent-signal")))
    assert same_rollout(rollout(fresh, 8, 2), rollout(make(env_id, "qwen-latent-signal"), 8, 2))
    env = make(env_id, "markov-csi")
    env.reset(seed=9)
    actions = np.random.default_rng(9)
    for _ in range(6):
        env.step(int(actions.integers(env.action_space.n)))
    clone = pickle.loads(pickle.dumps(env))
    for _ in range(60):
        a = int(actions.integers(env.action_space.n))
        x, y = env.step(a), clone.step(a)
        assert np.array_equal(x[0], y[0]) and x[1:4] == y[1:4] and same_info(x[4], y[4])
        if x[2]:
            break


# ------------------------------------------------------------------ rewards and the final info
@pytest.mark.parametrize("scenario", ["qwen-geometric", "drift", "markov-csi"])
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_return_is_minus_the_episode_latency(env_id: str, scenario: str) -> None:
    env = make(env_id, scenario, reward_mode="latency", time_scale_ms=250.0)
    steps = rollout(env, seed=4, action_seed=4)
    final = steps[-1][4]
    ret = sum(s[1] for s in steps[1:])
    assert ret == pytest.approx(-final["episode_time_ms"] / 250.0, rel=1e-9)
    assert final["episode_time_ms"] == pytest.approx(final["time_ms"], rel=1e-12)
    assert final["episode_tokens"] == env.unwrapped.config.n_tokens * env.unwrapped.config.requests_per_episode
    assert final["per_token_latency_ms"] == pytest.approx(final["episode_time_ms"] / final["episode_tokens"],
                                                          rel=1e-12)
    rounds = [s[4]["round"] for s in steps[1:] if "round" in s[4]]
    assert sum(r["round_ms"] for r in rounds) == pytest.approx(final["episode_time_ms"], rel=1e-9)
    assert sum(r["tokens"] for r in rounds) == final["episode_tokens"]
    assert all("per_token_latency_ms" not in s[4] for s in steps[:-1])  # only at the end


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_token_credit_rewards_sum_to_tokens_at_the_reference_minus_time(env_id: str) -> None:
    env = make(env_id, "llama-heavy-head", reward_mode="token_credit")
    ref = env.unwrapped.reward_model.reference_ms_per_token
    assert ref == pytest.approx(stationary_reference(env.unwrapped.config)[1], rel=1e-12)  # default: rho*
    steps = rollout(env, seed=6, action_seed=6)
    final = steps[-1][4]
    assert env.unwrapped.reward_model.scale == ref  # default time scale: the stationary rho* (rewards in tokens)
    expected = (final["episode_tokens"] * ref - final["episode_time_ms"]) / env.unwrapped.reward_model.scale
    assert sum(s[1] for s in steps[1:]) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    fixed = make(env_id, "llama-heavy-head", reward_mode="token_credit", reference_ms_per_token=40.0)
    assert fixed.unwrapped.reward_model.reference_ms_per_token == 40.0


# ------------------------------------------------------------------ token level: position, mask, forced stop
def test_first_token_is_always_drafted_and_the_mask_matches_the_position() -> None:
    env = make("SpecStop-v0", max_draft=5)
    k = 5
    obs, info = env.reset(seed=1)
    assert obs[0] == np.float32(1 / k)  # position 1: the first token of the round is drafted
    actions = np.random.default_rng(1)
    for _ in range(300):
        position = int(round(float(obs[0]) * k))
        expected = np.array([position < k, True])
        assert info["action_mask"].dtype == bool
        np.testing.assert_array_equal(info["action_mask"], expected)
        np.testing.assert_array_equal(env.unwrapped.action_masks(), expected)
        action = int(actions.integers(2))
        obs, reward, terminated, _, info = env.step(action)
        if "round" in info:
            assert info["round"]["k"] == position and 1 <= position <= k
            assert obs[0] == np.float32(1 / k) or terminated
        else:
            assert action == 0 and int(round(float(obs[0]) * k)) == position + 1
            assert reward == pytest.approx(-env.unwrapped.config.draft_ms / env.unwrapped.reward_model.scale)
        if terminated:
            obs, info = env.reset()
    # stopping straight away sends k = 1
    env.reset(seed=2)
    assert env.step(1)[4]["round"]["k"] == 1


def test_drafting_at_max_draft_is_a_forced_stop() -> None:
    k = 4
    env = make("SpecStop-v0", max_draft=k, n_tokens=10**5)
    env.reset(seed=3)
    for position in range(1, k):
        obs, _, _, _, info = env.step(0)
        assert "round" not in info and "forced_stop" not in info
    np.testing.assert_array_equal(info["action_mask"], [False, True])
    obs, _, _, _, info = env.step(0)
    assert info["forced_stop"] is True and info["round"]["k"] == k
    np.testing.assert_array_equal(info["action_mask"], [True, True])
    # a voluntary stop at max_draft is not forced
    for _ in range(k - 1):
        env.step(0)
    info = env.step(1)[4]
    assert "forced_stop" not in info and info["round"]["k"] == k


def test_round_level_actions_are_draft_lengths() -> None:
    env = make("SpecStopRound-v0", max_draft=6, n_tokens=10**5)
    env.reset(seed=4)
    for a in range(6):
        info = env.step(a)[4]
        assert info["round"]["k"] == a + 1 and 0 <= info["round"]["accepted"] <= a + 1
    np.testing.assert_array_equal(env.unwrapped.action_masks(), np.ones(6, bool))


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("bad", ["out-of-range", -1, 0.5, "x", None])
def test_invalid_actions_raise_value_error_naming_the_action(env_id: str, bad: Any) -> None:
    env = make(env_id)
    env.reset(seed=0)
    if bad == "out-of-range":
        bad = env.action_space.n  # 2 at the token level, max_draft at the round level
    with pytest.raises(ValueError, match="invalid action") as err:
        env.step(bad)
    assert repr(bad) in str(err.value)
    # the episode is untouched and goes on; numpy integers are valid actions
    env.step(0)
    env.step(np.int64(1))
    env.step(np.array(0))


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_stepping_after_termination_or_before_reset_raises(env_id: str) -> None:
    env = make(env_id, n_tokens=8)
    with pytest.raises(RuntimeError):
        env.unwrapped.step(0)
    rollout(env, seed=0, action_seed=0)
    with pytest.raises(RuntimeError, match="reset"):
        env.unwrapped.step(0)
    env.reset()
    env.step(0)  # fine again after reset


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_overrides_change_the_scenario_spaces_and_observations(env_id: str) -> None:
    base = gym.make(env_id, scenario="qwen-geometric")
    env = gym.make(env_id, scenario="qwen-geometric", delay_ms=300, max_draft=12)
    cfg = env.unwrapped.config
    assert cfg.delay_ms == 300.0 and cfg.max_draft == 12 and base.unwrapped.config.max_draft == 8
    m = env.unwrapped.sim.n_states
    assert env.observation_space.shape == (6 + m + 24,) and base.observation_space.shape == (6 + m + 16,)
    assert env.action_space.n == (2 if env_id == "SpecStop-v0" else 12)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (6 + m + 24,)
    # a different mean delay gives different rtts on the same seed
    first_rtt = [e.reset(seed=0)[0][1] for e in (base, env)]
    assert first_rtt[0] != first_rtt[1]
    # overrides reach every field, e.g. the channel kind
    const = gym.make(env_id, channel="constant", delay_ms=77.0)
    assert const.reset(seed=0)[0][1] == np.float32(0.077)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_unknown_override_or_scenario_raise_value_error_naming_it(env_id: str) -> None:
    with pytest.raises(ValueError, match="no_such_field"):
        gym.make(env_id, no_such_field=1)
    with pytest.raises(ValueError, match="no-such-scenario"):
        gym.make(env_id, scenario="no-such-scenario")
    with pytest.raises(ValueError, match="max_draft"):
        gym.make(env_id, max_draft=0)
    assert issubclass(specstop_gym.ConfigError, ValueError)


def test_render_ansi_describes_the_state() -> None:
    env = gym.make("SpecStop-v0", render_mode="ansi", **SMALL)
    env.reset(seed=0)
    env.step(1)
    text = env.render()
    assert "t=" in text and "last round" in text
    with pytest.warns(UserWarning, match="render_mode='human' is not supported"):
        env = specstop_gym.envs.SpecStopEnv(render_mode="human", **SMALL)
    assert env.render_mode is None and env.render() is None
