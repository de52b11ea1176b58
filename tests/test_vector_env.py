"""The native vector envs against Gymnasium's SyncVectorEnv over the single envs, step for step.

Everything must be identical: observations, rewards, terminations, truncations and
infos (keys, masks, values, dtypes), in both autoreset modes, with and without
``max_episode_steps``; plus seeding, partial resets, input validation and spaces.
"""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import specstop_gym  # noqa: F401  (registers the ids)
from specstop_gym.envs._vector import VectorFace

IDS = ("SpecStop-v0", "SpecStopRound-v0")
PRESETS = ("qwen-geometric", "markov-csi", "drift", "qwen-latent-signal", "trace-cellular")
MODES = (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP)
SMALL = {"n_tokens": 16}
PRESET_KW = {"drift": {"n_tokens": 8, "requests_per_episode": 2}}  # drift has 4 requests per episode


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the passive env checker's notes on the sync side
        yield


# ------------------------------------------------------------------ helpers
def assert_info_equal(a: dict[str, Any], b: dict[str, Any], path: str = "info") -> None:
    """Recursive equality of two vector infos: keys, masks, values and dtypes."""
    assert set(a) == set(b), f"{path}: keys differ: {sorted(set(a) ^ set(b))}"
    for key, x in a.items():
        y, where = b[key], f"{path}[{key!r}]"
        if not key.startswith("_"):
            assert "_" + key in a, f"{where}: no mask"
        if isinstance(x, dict) or isinstance(y, dict):
            assert isinstance(x, dict) and isinstance(y, dict), where
            assert_info_equal(x, y, where)
            continue
        assert isinstance(x, np.ndarray) and isinstance(y, np.ndarray), f"{where}: {type(x)} vs {type(y)}"
        assert x.dtype == y.dtype, f"{where}: dtype {x.dtype} vs {y.dtype}"
        assert x.shape == y.shape, f"{where}: shape {x.shape} vs {y.shape}"
        if x.dtype == object:
            for i, (u, v) in enumerate(zip(x, y)):
                assert (u is None) == (v is None), f"{where}[{i}]"
                if u is not None:
                    assert u.dtype == v.dtype, f"{where}[{i}] dtype"
                    np.testing.assert_array_equal(u, v, err_msg=f"{where}[{i}]")
        else:
            np.testing.assert_array_equal(x, y, err_msg=where)


def assert_step_equal(r1: tuple, r2: tuple, where: str) -> None:
    for name, x, y in zip(("obs", "reward", "terminated", "truncated"), r1[:4], r2[:4]):
        assert x.dtype == y.dtype, f"{where} {name}: dtype {x.dtype} vs {y.dtype}"
        np.testing.assert_array_equal(x, y, err_msg=f"{where} {name}")
    assert_info_equal(r1[4], r2[4], f"{where} info")


def make_pair(env_id: str, n: int, mode: AutoresetMode = AutoresetMode.NEXT_STEP, **kw: Any):
    native = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", autoreset_mode=mode, **kw)
    sync = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode}, **kw)
    assert native.metadata["autoreset_mode"] == sync.metadata["autoreset_mode"] == mode
    return native, sync


def random_actions(rng: np.random.Generator, env: gym.vector.VectorEnv, p_draft: float = 0.75) -> np.ndarray:
    """Token level: draft with probability p_draft (0 at max_draft is a forced stop); round level: any k."""
    n = env.num_envs
    if env.single_action_space.n == 2:
        return (rng.random(n) >= p_draft).astype(np.int64)
    return rng.integers(0, env.single_action_space.n, n)


def compare_rollout(env_id: str, mode: AutoresetMode, n: int = 3, steps: int = 100, seed: int = 7,
                    **kw: Any) -> dict[str, int]:
    native, sync = make_pair(env_id, n, mode, **kw)
    r1, r2 = native.reset(seed=seed), sync.reset(seed=seed)
    np.testing.assert_array_equal(r1[0], r2[0])
    assert_info_equal(r1[1], r2[1], "reset info")
    rng = np.random.default_rng(seed)
    counts = {"terminated": 0, "truncated": 0, "forced": 0}
    for t in range(steps):
        a = random_actions(rng, native)
        s1, s2 = native.step(a), sync.step(a)
        assert_step_equal(s1, s2, f"{env_id} {mode.value} step {t}")
        assert native.observation_space.contains(s1[0])
        counts["terminated"] += int(s1[2].sum())
        counts["truncated"] += int(s1[3].sum())
        counts["forced"] += int(s1[4].get("_forced_stop", np.zeros(n, bool)).sum())
        if "final_info" in s1[4]:
            counts["forced"] += int(s1[4]["final_info"].get("_forced_stop", np.zeros(n, bool)).sum())
    native.close()
    sync.close()
    return counts


# ---------------------------------------------------------- equivalence tests
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("env_id", IDS)
def test_native_equals_sync(env_id: str, preset: str, mode: AutoresetMode) -> None:
    counts = compare_rollout(env_id, mode, scenario=preset, **PRESET_KW.get(preset, SMALL))
    assert counts["terminated"] >= 4, "episodes must end (and autoreset) several times"
    if env_id == "SpecStop-v0":
        assert counts["forced"] >= 1, "the rollout must include forced stops at max_draft"


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("env_id", IDS)
def test_native_equals_sync_with_time_limit(env_id: str, mode: AutoresetMode) -> None:
    # a limit shorter and one around the episode length: both truncation alone and with termination
    for limit in (5, 9):
        counts = compare_rollout(env_id, mode, steps=80, scenario="markov-csi", max_episode_steps=limit, **SMALL)
        assert counts["truncated"] >= 2


def test_time_limit_passed_through_make_vec() -> None:
    env = gym.make_vec("SpecStopRound-v0", num_envs=3, vectorization_mode="vector_entry_point",
                       max_episode_steps=2, n_tokens=256)
    assert env.unwrapped.max_episode_steps == 2
    env.reset(seed=0)
    env.step(np.zeros(3, np.int64))
    _, _, terminated, truncated, _ = env.step(np.zeros(3, np.int64))
    assert truncated.all() and not terminated.any()


@pytest.mark.parametrize("env_id", IDS)
def test_reward_mode_token_credit_matches(env_id: str) -> None:
    compare_rollout(env_id, AutoresetMode.NEXT_STEP, steps=60, reward_mode="token_credit", **SMALL)


# --------------------------------------------------------------- autoreset
def test_next_step_autoreset_semantics() -> None:
    env = gym.make_vec("SpecStopRound-v0", num_envs=2, vectorization_mode="vector_entry_point", n_tokens=1)
    env.reset(seed=1)
    a = np.full(2, 7, np.int64)  # n_tokens = 1: every episode is one round
    _, rewards, terminated, _, info = env.step(a)
    assert terminated.all() and (rewards < 0).all() and info["_per_token_latency_ms"].all()
    obs, rewards, terminated, truncated, info = env.step(a)  # the reset step: action ignored
    assert not terminated.any() and not truncated.any() and (rewards == 0).all()
    assert "round" not in info and (info["time_ms"] == 0).all() and (info["tokens_left"] == 1).all()
    assert (obs[:, env.observation_fields.index("tokens_left_frac")] == 1.0).all()  # a fresh episode


def test_same_step_autoreset_semantics() -> None:
    env = gym.make_vec("SpecStopRound-v0", num_envs=2, vectorization_mode="vector_entry_point",
                       autoreset_mode="SameStep", n_tokens=1)
    env.reset(seed=1)
    obs, rewards, terminated, _, info = env.step(np.full(2, 7, np.int64))
    assert terminated.all() and (rewards < 0).all()
    assert info["_final_obs"].all() and info["_final_info"].all()
    left = env.observation_fields.index("tokens_left_frac")
    assert (info["time_ms"] == 0).all() and (obs[:, left] == 1.0).all()  # already the next episode
    final = info["final_info"]
    assert (final["episode_tokens"] == 1).all() and final["round"]["_k"].all()
    assert all(env.single_observation_space.contains(o) for o in info["final_obs"])
    assert all(o[left] == 0.0 for o in info["final_obs"])  # no tokens left at the end


def test_autoreset_mode_validation() -> None:
    for bad in ("Disabled", AutoresetMode.DISABLED, "sometimes"):
        with pytest.raises(ValueError, match="autoreset_mode"):
            gym.make_vec("SpecStop-v0", num_envs=2, vectorization_mode="vector_entry_point", autoreset_mode=bad)


# ----------------------------------------------------------------- seeding
@pytest.mark.parametrize("env_id", IDS)
def test_deterministic_with_same_seed(env_id: str) -> None:
    envs = [gym.make_vec(env_id, num_envs=5, vectorization_mode="vector_entry_point", scenario="drift", **SMALL)
            for _ in range(2)]
    r = [e.reset(seed=42) for e in envs]
    np.testing.assert_array_equal(r[0][0], r[1][0])
    assert_info_equal(r[0][1], r[1][1])
    rng = np.random.default_rng(0)
    for t in range(100):
        a = random_actions(rng, envs[0])
        assert_step_equal(envs[0].step(a), envs[1].step(a), f"step {t}")


def test_different_seeds_differ() -> None:
    envs = [gym.make_vec("SpecStopRound-v0", num_envs=3, vectorization_mode="vector_entry_point") for _ in range(2)]
    envs[0].reset(seed=1)
    envs[1].reset(seed=2)
    a = np.ones(3, np.int64)
    assert not np.array_equal(envs[0].step(a)[1], envs[1].step(a)[1])


@pytest.mark.parametrize("env_id", IDS)
def test_row_i_equals_single_env_seeded_seed_plus_i(env_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # a tiny key block so that the test crosses several refills of each row's key buffer
    monkeypatch.setattr(VectorFace, "_KEY_BLOCK", 3)
    n, seed, kw = 3, 100, {"scenario": "qwen-geometric", "n_tokens": 4}
    venv = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", autoreset_mode="SameStep", **kw)
    singles = [gym.make(env_id, **kw) for _ in range(n)]
    obs, _ = venv.reset(seed=seed)
    single_obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(singles)]
    np.testing.assert_array_equal(obs, np.stack(single_obs))
    rng = np.random.default_rng(1)
    episodes = 0
    for t in range(120):
        a = random_actions(rng, venv)
        obs, rewards, terminated, truncated, info = venv.step(a)
        for i, env in enumerate(singles):
            o, r, term, trunc, inf = env.step(int(a[i]))
            assert r == rewards[i] and term == terminated[i] and trunc == truncated[i], f"row {i} step {t}"
            if term or trunc:
                np.testing.assert_array_equal(info["final_obs"][i], o)
                assert inf["episode_time_ms"] == info["final_info"]["episode_time_ms"][i]
                o, _ = env.reset()
                episodes += 1
            np.testing.assert_array_equal(obs[i], o, err_msg=f"row {i} step {t}")
    assert episodes >= 3 * n * 3, "every row must use several key blocks"


@pytest.mark.parametrize("env_id", IDS)
def test_per_row_seed_list(env_id: str) -> None:
    native, sync = make_pair(env_id, 4, scenario="markov-csi", **SMALL)
    seeds: list[int | None] = [5, 17, 3, 99]
    r1, r2 = native.reset(seed=seeds), sync.reset(seed=seeds)
    np.testing.assert_array_equal(r1[0], r2[0])
    rng = np.random.default_rng(3)
    for t in range(40):
        a = random_actions(rng, native)
        assert_step_equal(native.step(a), sync.step(a), f"step {t}")
    # None entries keep that row's generator, as a single env reset(seed=None) does
    seeds = [None, 8, None, 1]
    r1, r2 = native.reset(seed=seeds), sync.reset(seed=seeds)
    np.testing.assert_array_equal(r1[0], r2[0])
    assert_info_equal(r1[1], r2[1])
    for t in range(40):
        a = random_actions(rng, native)
        assert_step_equal(native.step(a), sync.step(a), f"step {t} after reseed")
    # unseeded reset continues every row's stream
    r1, r2 = native.reset(), sync.reset()
    np.testing.assert_array_equal(r1[0], r2[0])
    assert_info_equal(r1[1], r2[1])


def test_seed_validation() -> None:
    env = gym.make_vec("SpecStop-v0", num_envs=3, vectorization_mode="vector_entry_point")
    for bad in (-1, [1, 2], [1, 2, -3], 1.5, "0", [1, 2, 3.5]):
        with pytest.raises(ValueError, match="seed"):
            env.reset(seed=bad)


# ------------------------------------------------------------ partial resets
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("env_id", IDS)
def test_reset_mask(env_id: str, mode: AutoresetMode) -> None:
    native, sync = make_pair(env_id, 4, mode, scenario="qwen-latent-signal", **SMALL)
    native.reset(seed=11)
    sync.reset(seed=11)
    rng = np.random.default_rng(11)
    for round_ in range(4):
        for t in range(15):
            a = random_actions(rng, native)
            assert_step_equal(native.step(a), sync.step(a), f"step {round_}.{t}")
        mask = rng.random(4) < 0.5
        mask[round_] = True
        seed = None if round_ % 2 else 50 + round_
        r1 = native.reset(seed=seed, options={"reset_mask": mask.copy()})
        r2 = sync.reset(seed=seed, options={"reset_mask": mask.copy()})
        np.testing.assert_array_equal(r1[0], r2[0])
        assert_info_equal(r1[1], r2[1], "partial reset info")
        assert (r1[1]["_tokens_left"] == mask).all()


def test_reset_mask_validation() -> None:
    env = gym.make_vec("SpecStop-v0", num_envs=3, vectorization_mode="vector_entry_point")
    with pytest.raises(ValueError, match="first reset"):
        env.reset(seed=0, options={"reset_mask": np.array([True, False, False])})
    env.reset(seed=0)
    for bad in (np.zeros(3, bool), np.ones(2, bool), np.array([1, 0, 1]), [[True, True, True]]):
        with pytest.raises(ValueError, match="reset_mask"):
            env.reset(options={"reset_mask": bad})


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize("env_id", IDS)
def test_invalid_actions_raise(env_id: str) -> None:
    env = gym.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point")
    env.reset(seed=0)
    n_actions = env.single_action_space.n
    bad_actions = [np.array([0, 0, n_actions]), np.array([0, -1, 0]), np.zeros(2, np.int64), np.zeros(4, np.int64),
                   np.zeros(3) + 0.5, np.zeros((3, 1), np.int64), np.array([True, False, True]), "0"]
    for bad in bad_actions:
        with pytest.raises(ValueError, match="invalid actions"):
            env.step(bad)
    env.step([0, 0, 0])  # a list of valid ints is fine


def test_step_before_reset_raises() -> None:
    env = gym.make_vec("SpecStop-v0", num_envs=2, vectorization_mode="vector_entry_point")
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(2, np.int64))


@pytest.mark.parametrize("env_id", IDS)
def test_num_envs_and_argument_validation(env_id: str) -> None:
    for bad in (0, -2, 1.5, True, "4", None):
        with pytest.raises(ValueError, match="num_envs"):
            gym.make_vec(env_id, num_envs=bad, vectorization_mode="vector_entry_point")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_episode_steps"):
            gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point", max_episode_steps=bad)
    with pytest.warns(UserWarning, match="render_mode='human' is not supported"):
        quiet = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point", render_mode="human")
    assert quiet.render_mode is None and quiet.render() is None
    with pytest.raises(ValueError, match="n_tokens"):
        gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point", n_tokens=0)
    env = gym.make_vec(env_id, num_envs=1, vectorization_mode="vector_entry_point")  # a batch of one is fine
    assert env.num_envs == 1


# --------------------------------------------------------------------- spaces
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("env_id", IDS)
def test_spaces(env_id: str, preset: str) -> None:
    n = 6
    env = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", scenario=preset, **SMALL)
    single = gym.make(env_id, scenario=preset, **SMALL)
    assert env.single_observation_space == single.observation_space
    assert env.single_action_space == single.action_space
    assert env.observation_space == gym.vector.utils.batch_space(single.observation_space, n)
    assert env.action_space == gym.vector.utils.batch_space(single.action_space, n)
    assert env.unwrapped.observation_fields == single.unwrapped.observation_fields
    assert len(env.unwrapped.observation_fields) == env.single_observation_space.shape[0]
    obs, info = env.reset(seed=3)
    assert obs.dtype == np.float32 and obs.shape == (n, *single.observation_space.shape)
    assert env.observation_space.contains(obs)
    env.action_space.seed(0)
    for _ in range(30):
        a = env.action_space.sample()
        assert env.action_space.contains(a)
        obs, rewards, terminated, truncated, info = env.step(a)
        assert env.observation_space.contains(obs)
        assert rewards.dtype == np.float64 and rewards.shape == (n,)
        assert terminated.dtype == truncated.dtype == np.bool_
    masks = env.unwrapped.action_masks()
    assert masks.shape == (n, env.single_action_space.n) and masks.dtype == np.bool_
    if env_id == "SpecStop-v0":
        np.testing.assert_array_equal(masks, info["action_mask"])


def test_gymnasium_env_checker_on_single_envs() -> None:
    from gymnasium.utils.env_checker import check_env

    for env_id in IDS:
        check_env(gym.make(env_id, **SMALL).unwrapped)


@pytest.mark.parametrize("env_id", IDS)
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("preset", ["qwen-latent-signal", "markov-csi"])
def test_threaded_step_equals_the_one_thread_step(env_id: str, mode: AutoresetMode, preset: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """At N >= kernels.PARALLEL_MIN_ROWS the rows are split over numba's threads: same bits as the
    serial loop (itself checked against SyncVectorEnv above), autoresets and truncation included."""
    from specstop_gym.core import kernels

    n = 600
    assert n >= kernels.PARALLEL_MIN_ROWS
    kw = {"scenario": preset, "n_tokens": 12, "max_episode_steps": 25}
    threaded = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", autoreset_mode=mode, **kw)
    serial = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", autoreset_mode=mode, **kw)
    rng = np.random.default_rng(5)
    o1, i1 = threaded.reset(seed=11)
    o2, i2 = serial.reset(seed=11)
    np.testing.assert_array_equal(o1, o2)
    assert_info_equal(i1, i2, "reset info")
    calls = {"parallel": 0}
    original = kernels.vector_step_parallel

    def counting(*args):
        calls["parallel"] += 1
        return original(*args)

    for t in range(60):
        a = random_actions(rng, threaded)
        monkeypatch.setattr(kernels, "vector_step_parallel", counting)
        r1 = threaded.step(a)
        monkeypatch.setattr(kernels, "PARALLEL_MIN_ROWS", n + 1)  # the one-thread loop
        r2 = serial.step(a)
        monkeypatch.undo()
        assert_step_equal(r1, r2, f"step {t}")
    assert calls["parallel"] == 60


def test_a_process_that_stepped_a_threaded_vector_env_can_fork() -> None:
    """The threaded kernel must not leave a fork-unsafe runtime behind (GNU OpenMP would kill
    the child): fork-based multiprocessing after a large native vector env keeps working."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import multiprocessing as mp
        import numpy as np, gymnasium as gym, specstop_gym

        def child(q):
            env = gym.make_vec("SpecStop-v0", num_envs=600, vectorization_mode="vector_entry_point")
            env.reset(seed=0)
            q.put(float(env.step(np.ones(600, np.int64))[1].sum()))

        if __name__ == "__main__":
            env = gym.make_vec("SpecStop-v0", num_envs=600, vectorization_mode="vector_entry_point")
            env.reset(seed=0)
            parent = float(env.step(np.ones(600, np.int64))[1].sum())
            ctx = mp.get_context("fork")
            q = ctx.Queue()
            p = ctx.Process(target=child, args=(q,))
            p.start()
            p.join(120)
            assert p.exitcode == 0, p.exitcode
            assert q.get(timeout=10) == parent
            print("ok")
    """)
    env = {k: v for k, v in __import__("os").environ.items() if k != "NUMBA_THREADING_LAYER"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout + out.stderr
