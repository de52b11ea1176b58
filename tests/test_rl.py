"""Reinforcement learning out of the box (issue 12): the registered reward and observation, and the
ways users reach the environments from RL libraries (SB3's string ids, action masks, RL Baselines3
Zoo, subprocess vector environments), tested as users use them.

* the registered reward: token credit at the oracle's rate, the local rate on drift and Markov
  channels (checked against the oracle's formula), and the claim the docs derive from it: the
  discounted (gamma = 0.99) optimum of the token-level decision is the oracle's k*, the latency
  reward's is never to stop;
* the rtt averages of the observation (their recursion, recomputed here);
* ``PPO("MlpPolicy", "SpecStop-v0")``, ``DQN``, ``make_vec_env``, ``MaskablePPO`` from the string;
* action masks through ``env.action_masks()``, ``get_wrapper_attr`` and sb3-contrib's ``ActionMasker``;
* ``render_mode="rgb_array"`` and ``render_fps``; check_env without warnings but the documented one;
* the subprocess paths (``gym.make_vec(..., vectorization_mode="async")``, SB3's SubprocVecEnv with
  the ``specstop_gym:SpecStop-v0`` id) and the RL Baselines3 Zoo command (skipped without rl_zoo3);
* a plain PPO loop over ``gym.make_vec`` (tests/ppo_loop.py) learns a policy better than both a
  random one and never stopping, on common random numbers.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import specstop_gym
from specstop_gym import make_scenario
from specstop_gym.core import kernels as kn
from specstop_gym.oracle import optimal_k_for_costs
from specstop_gym.scenarios import build_acceptance, build_simulator, stationary_reference

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"n_tokens": 24}


# ------------------------------------------------------------------------- the registered reward
def test_registered_defaults_are_token_credit_in_units_of_the_stationary_rate() -> None:
    env = gym.make("SpecStop-v0")
    rm = env.unwrapped.reward_model
    rho = stationary_reference(env.unwrapped.config)[1]
    assert env.unwrapped.config.reward_mode == "token_credit" and env.unwrapped.config.reward_reference == "local"
    assert rm.reference_ms_per_token == rho and rm.scale == rho and not rm.local  # iid channel: local = stationary
    assert rho == pytest.approx(117.84, abs=0.01)
    assert gym.make("SpecStop-v0", scenario="drift").unwrapped.reward_model.local
    assert not gym.make("SpecStop-v0", scenario="drift", reward_reference="stationary").unwrapped.reward_model.local
    with pytest.raises(ValueError, match="reward_reference"):
        gym.make("SpecStop-v0", reward_reference="global")


def _local_rate(cfg, mean_rtt: float) -> float:
    survival = build_acceptance(cfg).survival(cfg.max_draft)
    return optimal_k_for_costs(survival, cfg.marginal_cost_ms, mean_rtt + cfg.verify_base_ms)[1]


@pytest.mark.parametrize("scenario", ["drift", "markov-csi"])
def test_the_local_reference_is_the_oracle_rate_at_the_mean_rtt_of_the_sending_time(scenario: str) -> None:
    if scenario == "drift":  # regimes of 2 s, so that a short run sees both
        cfg = make_scenario(scenario, n_tokens=400, drift_schedule=((0.0, 40.0), (2000.0, 400.0)),
                            drift_period_ms=4000.0)
    else:
        cfg = make_scenario(scenario, n_tokens=400, markov_generator_per_ms=((-1e-3, 1e-3), (2e-3, -2e-3)))
    sim = build_simulator(cfg, batch_size=3)
    sim.reset_rows(np.arange(3), np.array([11, 12, 13], np.uint64))
    g = np.random.default_rng(0)
    refs, means = [], []
    for _ in range(150):
        r = sim.step_round(g.integers(1, cfg.max_draft + 1, 3))
        t_send = r.start_ms + r.k * cfg.draft_ms
        if scenario == "drift":
            mean = np.where((t_send % 4000.0) < 2000.0, 40.0, 400.0)
        else:
            mean = np.array(cfg.markov_rtt_mean_ms)[r.state]
        refs += r.reference_ms.tolist()
        means += mean.tolist()
    expected = {m: _local_rate(cfg, m) for m in set(means)}
    assert len(expected) == 2  # both regimes occurred
    np.testing.assert_allclose(refs, [expected[m] for m in means], rtol=1e-12)


def test_rewards_credit_each_round_at_its_local_rate_and_sum_to_the_return() -> None:
    env = gym.make("SpecStop-v0", scenario="drift", n_tokens=160, requests_per_episode=4)
    cfg = env.unwrapped.config
    scale = env.unwrapped.reward_model.scale
    assert scale == stationary_reference(cfg)[1]
    env.reset(seed=3)
    g = np.random.default_rng(3)
    t_start, ret, expected, regimes = 0.0, 0.0, 0.0, set()
    done = False
    while not done:
        _, reward, done, _, info = env.step(int(g.random() < 0.4))
        ret += reward
        if "round" in info:
            rnd = info["round"]
            t_send = t_start + rnd["k"] * cfg.draft_ms
            mean = 40.0 if (t_send % cfg.drift_period_ms) < 20000.0 else 400.0
            regimes.add(mean)
            stop_ms = rnd["round_ms"] - (rnd["k"] - 1) * cfg.draft_ms
            assert reward == pytest.approx((rnd["tokens"] * _local_rate(cfg, mean) - stop_ms) / scale, rel=1e-12)
            expected += rnd["tokens"] * _local_rate(cfg, mean) - rnd["round_ms"]
            t_start = info["time_ms"]
        else:
            assert reward == pytest.approx(-cfg.draft_ms / scale, rel=1e-15)
    assert regimes == {40.0, 400.0}
    assert ret == pytest.approx(expected / scale, rel=1e-9)


def test_latency_reward_is_still_available() -> None:
    env = gym.make("SpecStopRound-v0", reward_mode="latency", time_scale_ms=1000.0, **SMALL)
    env.reset(seed=0)
    total, done = 0.0, False
    while not done:
        _, r, done, _, info = env.step(1)
        total += r
    assert total == pytest.approx(-info["episode_time_ms"] / 1000.0, rel=1e-12)


def discounted_positional_policy(cfg, mean_rtt: float, gamma: float, mode: str, reference: str = "local") -> int:
    """First stop position of the gamma-discounted optimal token-level policy when the channel's mean
    rtt stays ``mean_rtt`` (value iteration over the draft position; the rewards the environment
    gives, in expectation; ``reference``: the local rate or the stationary one of the preset)."""
    survival = build_acceptance(cfg).survival(cfg.max_draft)
    k = cfg.max_draft
    scale = stationary_reference(cfg)[1]
    ref = _local_rate(cfg, mean_rtt) if reference == "local" else scale
    pos = np.arange(1, k + 1)
    stop_ms = pos * cfg.marginal_cost_ms + mean_rtt + cfg.verify_base_ms - (pos - 1) * cfg.draft_ms
    credit = (1 + np.cumsum(survival)) * ref if mode == "token_credit" else 0.0
    stop = (credit - stop_ms) / scale
    draft = -cfg.draft_ms / scale
    v = np.zeros(k)
    for _ in range(100_000):
        new = np.empty(k)
        new[-1] = stop[-1] + gamma * v[0]
        for i in range(k - 2, -1, -1):
            new[i] = max(stop[i] + gamma * v[0], draft + gamma * new[i + 1])
        converged = np.abs(new - v).max() < 1e-12
        v = new
        if converged:
            break
    return next(i + 1 for i in range(k) if i == k - 1 or stop[i] + gamma * v[0] >= draft + gamma * v[i + 1])


# (preset, mean rtt of a regime, stop position of the discounted optimum with the stationary reference)
REGIMES = [("qwen-geometric", 150.0, 2), ("llama-heavy-head", 150.0, 2), ("drift", 40.0, 1), ("drift", 400.0, 12),
           ("markov-csi", 30.0, 1), ("markov-csi", 300.0, 12)]


@pytest.mark.parametrize("scenario,mean_rtt,stationary_k", REGIMES)
def test_the_discounted_optimum_of_the_registered_reward_is_the_oracle_k(scenario: str, mean_rtt: float,
                                                                        stationary_k: int) -> None:
    """docs/training.md: with the local reference every round's expected reward is <= 0, = 0 exactly
    for k*, so gamma = 0.99 (SB3's, CleanRL's default) does not move the optimum; with the latency
    reward the discounted optimum drafts to max_draft (what PPO learned before issue 12); with the
    stationary reference in a lasting regime slower than the long-run mean, too (every round loses,
    so spreading a round over more steps pays)."""
    cfg = make_scenario(scenario)
    survival = build_acceptance(cfg).survival(cfg.max_draft)
    k_star = optimal_k_for_costs(survival, cfg.marginal_cost_ms, mean_rtt + cfg.verify_base_ms)[0]
    for gamma in (0.99, 0.999):
        assert discounted_positional_policy(cfg, mean_rtt, gamma, "token_credit") == k_star
        assert discounted_positional_policy(cfg, mean_rtt, gamma, "latency") == cfg.max_draft
        assert discounted_positional_policy(cfg, mean_rtt, gamma, "token_credit", "stationary") == stationary_k


# ------------------------------------------------------------------------- the observation
@pytest.mark.parametrize("scenario", ["drift", "trace-cellular"])
def test_rtt_averages_follow_their_recursion(scenario: str) -> None:
    env = gym.make("SpecStopRound-v0", scenario=scenario, n_tokens=200)
    fields = env.unwrapped.observation_fields
    assert len(fields) == env.observation_space.shape[0]
    fast, slow = fields.index("rtt_ewma_fast_s"), fields.index("rtt_ewma_slow_s")
    obs, _ = env.reset(seed=5)
    m = np.array([obs[1], obs[1]], np.float64) * 1000.0  # both start at the initial probe
    assert obs[fast] == obs[slow] == obs[1]
    g = np.random.default_rng(5)
    for _ in range(60):
        obs, *_, info = env.step(int(g.integers(env.action_space.n)))
        r = info["round"]
        for j, tau in enumerate((kn.RTT_EWMA_FAST_MS, kn.RTT_EWMA_SLOW_MS)):
            m[j] += (1.0 - np.exp(-r["round_ms"] / tau)) * (r["rtt_ms"] - m[j])
        np.testing.assert_allclose([obs[fast], obs[slow]], m / 1000.0, rtol=1e-6)
        assert obs[1] == np.float32(r["rtt_ms"] / 1000.0)


# ------------------------------------------------------------------------- SB3's string-id path
def test_sb3_string_id_path_builds_and_learns() -> None:
    pytest.importorskip("stable_baselines3")
    from stable_baselines3 import DQN, PPO
    from stable_baselines3.common.env_util import make_vec_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SB3 passes render_mode="rgb_array": supported, no warning
        model = PPO("MlpPolicy", "SpecStop-v0", n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
        model.learn(128)
        venv = make_vec_env("SpecStop-v0", n_envs=2, seed=0, env_kwargs={"scenario": "drift"})
        assert venv.get_attr("render_mode") == ["rgb_array"] * 2
        assert venv.render().ndim == 3  # SB3 tiles the rgb frames of its environments
        PPO("MlpPolicy", venv, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu").learn(64)
        DQN("MlpPolicy", "SpecStopRound-v0", learning_starts=16, seed=0, device="cpu").learn(64)


# ------------------------------------------------------------------------- action masks
def test_action_masks_are_reachable_the_ways_users_reach_them() -> None:
    pytest.importorskip("sb3_contrib")
    from sb3_contrib.common.wrappers import ActionMasker

    env = gym.make("SpecStop-v0", max_draft=2, **SMALL)
    env.reset(seed=0)
    env.step(0)  # position 2 = max_draft: only stopping is valid
    expected = [False, True]
    assert env.action_masks().tolist() == expected  # gym.make returns the environment itself
    wrapped = gym.wrappers.RecordEpisodeStatistics(gym.wrappers.TimeLimit(env, 1000))
    assert wrapped.get_wrapper_attr("action_masks")().tolist() == expected  # any wrapper stack
    with pytest.raises(AttributeError):
        wrapped.action_masks()  # Gymnasium 1.x wrappers do not forward attributes
    for fn in ("action_masks", lambda e: e.action_masks(), lambda e: e.get_wrapper_attr("action_masks")()):
        assert ActionMasker(env, fn).action_masks().tolist() == expected
    assert ActionMasker(wrapped, lambda e: e.get_wrapper_attr("action_masks")()).action_masks().tolist() == expected
    vec = gym.make_vec("SpecStop-v0", num_envs=3, max_draft=2, **SMALL)
    vec.reset(seed=0)
    vec.step(np.zeros(3, np.int64))
    assert vec.action_masks().tolist() == [expected] * 3  # the native vector env, unwrapped
    stats = gym.wrappers.vector.RecordEpisodeStatistics(vec)
    assert stats.unwrapped.action_masks().tolist() == [expected] * 3  # vector wrappers: .unwrapped


def test_maskable_ppo_from_the_string_id_never_takes_an_invalid_action() -> None:
    pytest.importorskip("sb3_contrib")
    from sb3_contrib import MaskablePPO

    model = MaskablePPO("MlpPolicy", "SpecStop-v0", n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(128)
    env = gym.make("SpecStop-v0", max_draft=3, **SMALL)
    model = MaskablePPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    obs, info = env.reset(seed=1)
    for _ in range(200):
        action, _ = model.predict(obs, action_masks=env.action_masks(), deterministic=False)
        assert info["action_mask"][int(action)]
        obs, _, done, _, info = env.step(int(action))
        assert "forced_stop" not in info
        if done:
            obs, info = env.reset()


# ------------------------------------------------------------------------- rendering and checkers
@pytest.mark.parametrize("env_id", specstop_gym.ENV_IDS)
def test_rgb_array_render_draws_the_state(env_id: str) -> None:
    env = gym.make(env_id, scenario="markov-csi", render_mode="rgb_array", **SMALL)
    assert env.metadata["render_fps"] > 0 and "rgb_array" in env.metadata["render_modes"]
    env.reset(seed=0)
    first = env.render()
    assert first.dtype == np.uint8 and first.ndim == 3 and first.shape[2] == 3
    frames = [first]
    for _ in range(6):
        env.step(1)
        frames.append(env.render())
    assert all(f.shape == first.shape for f in frames)
    assert any(not np.array_equal(first, f) for f in frames[1:])  # the picture follows the state
    vec = gym.make_vec(env_id, num_envs=2, render_mode="rgb_array", scenario="markov-csi", **SMALL)
    vec.reset(seed=0)
    frames = vec.render()
    assert len(frames) == 2 and frames[0].shape == first.shape


@pytest.mark.parametrize("env_id", specstop_gym.ENV_IDS)
def test_checkers_warn_only_about_the_unbounded_rtt(env_id: str) -> None:
    pytest.importorskip("stable_baselines3")
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    for check in (lambda e: gym_check_env(e, skip_render_check=False), lambda e: sb3_check_env(e, warn=True)):
        env = gym.make(env_id, render_mode="rgb_array", **SMALL)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check(env)
        messages = [str(w.message) for w in caught]
        unexpected = [m for m in messages if "maximum value is infinity" not in m]
        assert not unexpected, unexpected


# ------------------------------------------------------------------------- subprocesses
def test_subprocess_vector_environments() -> None:
    vec = gym.make_vec("SpecStop-v0", num_envs=2, vectorization_mode="async", **SMALL)
    try:
        obs, _ = vec.reset(seed=0)
        assert obs.shape == (2, vec.single_observation_space.shape[0])
        obs, *_ = vec.step(np.ones(2, np.int64))
        assert [m.tolist() for m in vec.call("action_masks")] == [[True, True]] * 2
    finally:
        vec.close()
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv

    # a fresh subprocess only knows the id after importing the package: the "module:id" form does it
    venv = make_vec_env("specstop_gym:SpecStop-v0", n_envs=2, vec_env_cls=SubprocVecEnv, env_kwargs=SMALL)
    try:
        assert venv.reset().shape == (2, 23)
        assert [m.tolist() for m in venv.env_method("action_masks")] == [[True, True]] * 2
    finally:
        venv.close()


def test_rl_zoo_trains_from_the_shipped_hyperparameters(tmp_path: Path) -> None:
    # find_spec, not importorskip: importing rl_zoo3 patches gymnasium's TimeLimit for the whole process
    # (rl_zoo3/gym_patches.py), which changed other tests' truncation flags
    if importlib.util.find_spec("rl_zoo3") is None:
        pytest.skip("rl_zoo3 is a test extra: pip install -e '.[zoo]'")
    from specstop_gym.training import zoo_conf_file

    conf = zoo_conf_file("ppo")
    assert conf == ROOT / "specstop_gym" / "training" / "zoo" / "ppo.yml"
    cmd = [sys.executable, "-m", "rl_zoo3.train", "--algo", "ppo", "--env", "SpecStop-v0", "--gym-packages",
           "specstop_gym", "--conf-file", str(conf), "-n", "2048", "--eval-freq", "-1", "--seed", "0",
           "--device", "cpu", "-f", str(tmp_path), "--verbose", "0", "--env-kwargs", "n_tokens:32"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    model_path = tmp_path / "ppo" / "SpecStop-v0_1" / "SpecStop-v0.zip"
    assert model_path.is_file(), sorted(str(p) for p in tmp_path.rglob("*"))
    from stable_baselines3 import PPO

    model = PPO.load(model_path, device="cpu")
    assert model.num_timesteps >= 2048 and model.n_envs == 8
    env = gym.make("SpecStop-v0", n_tokens=32)
    obs, _ = env.reset(seed=0)
    assert env.action_space.contains(int(model.predict(obs, deterministic=True)[0]))


# ------------------------------------------------------------------------- a plain PPO loop learns
def test_a_plain_ppo_loop_over_make_vec_beats_random_and_never_stopping() -> None:
    torch = pytest.importorskip("torch")
    from ppo_loop import PPOConfig, train

    from agents.policy_agent import PolicyAgent
    from agents.registry import make_agent
    from specstop_gym.evaluation import run_agent

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        agent = train(PPOConfig(total_timesteps=SHORT_PPO_STEPS, num_envs=8, learning_rate=2e-3, gae_lambda=0.8,
                                seed=0))
    finally:
        torch.set_num_threads(threads)
    scenario = gym.make("SpecStop-v0").unwrapped.config  # the registered defaults
    seeds = list(range(2000, 2016))
    rng = np.random.default_rng(0)
    runs = {"learnt": PolicyAgent(scenario, agent.greedy, n_runs=len(seeds)),
            "random": PolicyAgent(scenario, lambda o: rng.integers(0, 2, len(o)), n_runs=len(seeds)),
            "never stop": make_agent(f"static-k:k={scenario.max_draft}", scenario, n_runs=len(seeds))}
    lat = {name: run_agent(a, scenario, seeds, level="token").per_token_latency_ms for name, a in runs.items()}
    for other in ("random", "never stop"):
        diff = lat[other] - lat["learnt"]  # paired: the same episodes (common random numbers)
        assert diff.mean() > 3 * diff.std(ddof=1) / np.sqrt(len(seeds)), (other, lat["learnt"].mean(), lat[other].mean())
    oracle = run_agent(make_agent("oracle", scenario, n_runs=len(seeds)), scenario, seeds, level="token")
    assert lat["learnt"].mean() <= 1.03 * oracle.per_token_latency_ms.mean()


SHORT_PPO_STEPS = 20_480
"""Steps of the short PPO run of the test: 20 updates of 8 environments x 128 steps, with a larger
learning rate (2e-3) and GAE lambda 0.8 than CleanRL's defaults, so that it learns in seconds
(it reached the oracle's k* within 10k steps for training seeds 0-7 when this was written;
benchmarks/bench_rl_defaults.py trains 300k steps with the defaults)."""


# ------------------------------------------------------------------------- PolicyAgent
def test_policy_agent_plays_a_policy_function_like_the_equivalent_agent() -> None:
    """A policy function through PolicyAgent gives exactly the episodes of the agent it imitates
    (common random numbers): 'stop at position 2' and 'k = 3' are static-k."""
    from agents.policy_agent import PolicyAgent
    from agents.registry import make_agent
    from specstop_gym.evaluation import run_agent

    scenario = make_scenario("qwen-geometric", n_tokens=40)
    seeds = [5, 6, 7]
    fields = gym.make("SpecStop-v0", n_tokens=40).unwrapped.observation_fields
    pos2 = fields.index("position_2")
    stop_at_2 = PolicyAgent(scenario, lambda o: (o[:, pos2] == 1).astype(np.int64), n_runs=3)
    three = PolicyAgent(scenario, lambda o: np.full(len(o), 2), level="round", n_runs=3)
    for agent, k, level in ((stop_at_2, 2, "token"), (three, 3, "round"), (three, 3, "token")):
        got = run_agent(agent, scenario, seeds, level=level)
        ref = run_agent(make_agent(f"static-k:k={k}", scenario, n_runs=3), scenario, seeds, level=level)
        np.testing.assert_array_equal(got.per_token_latency_ms, ref.per_token_latency_ms)
        assert (got.columns["k"] == k).all()
    bad = PolicyAgent(scenario, lambda o: np.full(len(o), 7), n_runs=3)
    with pytest.raises(ValueError, match="expected one integer action in 0..1"):
        run_agent(bad, scenario, seeds, level="token")
