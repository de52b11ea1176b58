"""The environments as a user meets them: gym.make over every id and preset."""

from __future__ import annotations

import pickle
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env

import specstop_gym
from specstop_gym import ENV_IDS, scenario_names

SMALL = {"n_tokens": 24}


def _rollout(env: gym.Env, seed: int, action_seed: int, max_steps: int = 10_000):
    rng = np.random.default_rng(action_seed)
    obs, info = env.reset(seed=seed)
    traj = [(obs.copy(), None, False, info)]
    for _ in range(max_steps):
        obs, reward, terminated, truncated, info = env.step(int(rng.integers(env.action_space.n)))
        traj.append((obs.copy(), reward, terminated, info))
        if terminated or truncated:
            break
    return traj


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


@pytest.mark.parametrize("scenario", scenario_names())
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_checkers_pass_for_every_id_and_preset(env_id: str, scenario: str) -> None:
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(env_id, scenario=scenario, **SMALL)
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(gym.make(env_id, scenario=scenario, **SMALL), warn=True)


@pytest.mark.parametrize("scenario", ["qwen-geometric", "markov-csi", "drift", "qwen-latent-signal", "trace-cellular"])
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_trajectory_and_different_seeds_differ(env_id: str, scenario: str) -> None:
    a = _rollout(gym.make(env_id, scenario=scenario, **SMALL), seed=7, action_seed=1)
    b = _rollout(gym.make(env_id, scenario=scenario, **SMALL), seed=7, action_seed=1)
    assert len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    c = _rollout(gym.make(env_id, scenario=scenario, **SMALL), seed=8, action_seed=1)
    rewards_a = [s[1] for s in a[1:]]
    rewards_c = [s[1] for s in c[1:]]
    assert rewards_a != rewards_c


def test_reset_with_the_same_seed_replays_the_episode() -> None:
    env = gym.make("SpecStopRound-v0", **SMALL)
    first = _rollout(env, seed=3, action_seed=0)
    second = _rollout(env, seed=3, action_seed=0)
    assert all(_same(x, y) for x, y in zip(first, second))
    third = _rollout(env, seed=None, action_seed=0)  # unseeded reset continues the env's generator
    assert [s[1] for s in third[1:]] != [s[1] for s in first[1:]]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_return_is_minus_the_latency_and_final_info_is_consistent(env_id: str) -> None:
    env = gym.make(env_id, scenario="llama-heavy-head", n_tokens=64, reward_mode="latency")
    traj = _rollout(env, seed=0, action_seed=2)
    total = sum(s[1] for s in traj[1:])
    info = traj[-1][3]
    scale = env.unwrapped.reward_model.scale
    assert total == pytest.approx(-info["episode_time_ms"] / scale, rel=1e-9)
    assert info["episode_tokens"] == 64
    assert info["per_token_latency_ms"] == pytest.approx(info["episode_time_ms"] / info["episode_tokens"])
    rounds = [s[3]["round"] for s in traj[1:] if "round" in s[3]]
    assert sum(r["tokens"] for r in rounds) == 64
    assert sum(r["round_ms"] for r in rounds) == pytest.approx(info["episode_time_ms"])
    for r in rounds:
        assert 0 <= r["accepted"] <= r["k"] and r["tokens"] <= r["accepted"] + 1


def test_token_credit_rewards_credit_tokens_at_the_reference_rate() -> None:
    env = gym.make("SpecStopRound-v0", scenario="qwen-geometric", n_tokens=64, reward_mode="token_credit")
    traj = _rollout(env, seed=1, action_seed=3)
    ref = env.unwrapped.reward_model.reference_ms_per_token
    assert ref == pytest.approx(117.84, abs=0.01)  # the preset's stationary rho*
    info = traj[-1][3]
    expected = (info["episode_tokens"] * ref - info["episode_time_ms"]) / env.unwrapped.reward_model.scale
    assert sum(s[1] for s in traj[1:]) == pytest.approx(expected, rel=1e-9)


def test_token_level_first_token_drafted_mask_and_forced_stop() -> None:
    env = gym.make("SpecStop-v0", scenario="qwen-geometric", max_draft=3, **SMALL)
    obs, info = env.reset(seed=0)
    k = env.unwrapped.config.max_draft
    assert obs[0] * k == pytest.approx(1.0)  # the first token of a round is always drafted
    assert info["action_mask"].tolist() == [True, True]
    obs, _, _, _, info = env.step(0)
    obs, _, _, _, info = env.step(0)
    assert obs[0] * k == pytest.approx(3.0)
    assert info["action_mask"].tolist() == [False, True]
    assert env.unwrapped.action_masks().tolist() == [False, True]
    obs, _, _, _, info = env.step(0)  # drafting at max_draft: a forced stop
    assert info.get("forced_stop") is True and info["round"]["k"] == 3
    assert obs[0] * k == pytest.approx(1.0)


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("bad", [-1, 0.5, "x", None, 99])
def test_invalid_actions_raise_a_clear_error(env_id: str, bad) -> None:
    env = gym.make(env_id, **SMALL).unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match="invalid action"):
        env.step(bad)


def test_step_after_termination_raises() -> None:
    env = gym.make("SpecStopRound-v0", n_tokens=2).unwrapped
    env.reset(seed=0)
    terminated = False
    while not terminated:
        _, _, terminated, _, _ = env.step(0)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_overrides_change_the_environment() -> None:
    env = gym.make("SpecStopRound-v0", scenario="qwen-geometric", delay_ms=300.0, max_draft=12)
    assert env.action_space.n == 12
    assert env.observation_space.shape == (6 + 1 + 24,)
    assert env.unwrapped.config.delay_ms == 300.0
    obs, _ = env.reset(seed=0)
    assert obs[1] > 0.15  # the initial rtt probe is around 300 ms = 0.3 s


def test_unknown_override_and_scenario_name_the_problem() -> None:
    with pytest.raises(ValueError, match="delay_mss"):
        gym.make("SpecStop-v0", delay_mss=3)
    with pytest.raises(ValueError, match="unknown scenario 'nope'.*qwen-geometric"):
        gym.make("SpecStop-v0", scenario="nope")
    with pytest.raises(ValueError, match="max_draft"):
        gym.make("SpecStop-v0", max_draft=0)


def test_csi_is_observed_only_where_the_scenario_says_so() -> None:
    seen = gym.make("SpecStopRound-v0", scenario="markov-csi", n_tokens=64)
    obs, info = seen.reset(seed=0)
    m = seen.unwrapped.sim.n_states
    assert m == 2 and obs[2:2 + m].sum() == 1.0 and obs[2 + info["channel_state"]] == 1.0
    hidden = gym.make("SpecStopRound-v0", scenario="markov-csi", csi_observable=False, n_tokens=64)
    obs, _ = hidden.reset(seed=0)
    assert obs[2:2 + m].sum() == 0.0


def test_pickled_env_continues_identically() -> None:
    env = gym.make("SpecStop-v0", scenario="markov-csi", **SMALL)
    env.reset(seed=5)
    for _ in range(5):
        env.step(0)
    clone = pickle.loads(pickle.dumps(env))
    for a in [1, 0, 0, 1, 1, 0, 1]:
        x = env.step(a)
        y = clone.step(a)
        assert _same(x[3], y[3]) and np.array_equal(x[0], y[0]) and x[1] == y[1]


def test_entry_point_registration_without_import() -> None:
    code = ("import gymnasium as gym; env = gym.make('specstop_gym:SpecStop-v0', n_tokens=8); "
            "env.reset(seed=0); print(env.spec.id)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "SpecStop-v0"


def test_registered_with_vector_entry_points() -> None:
    for env_id in ENV_IDS:
        spec = gym.spec(env_id)
        assert isinstance(spec.entry_point, str) and isinstance(spec.vector_entry_point, str)
    assert specstop_gym.__version__
