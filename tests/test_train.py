"""train.py end to end (in-process ``main(argv)``, tiny budgets), the SB3 agent, the hyperparameter
table and the error paths.

Every run uses requests of 32 tokens, 4 environments, a few hundred steps and 2 evaluation
seeds, so the whole module takes well under two minutes on two CPUs.
"""

from __future__ import annotations

import json
import random
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")
pytest.importorskip("sb3_contrib")

import torch

import specstop_gym
import train
from agents.registry import make_agent
from agents.sb3_agent import SB3Agent, load_policy
from specstop_gym.evaluation.report import SCHEMA_VERSION
from specstop_gym.evaluation.runner import run_agent
from specstop_gym.scenarios import make_scenario
from specstop_gym.training.callbacks import EVAL_COLUMNS, list_checkpoints
from specstop_gym.training.hyperparams import (
    ALGORITHMS,
    DEFAULT_HYPERPARAMS,
    LEVELS,
    HyperparamError,
    algorithm_kwargs,
    check_algorithm_spaces,
    resolve_hyperparams,
    valid_keys,
)

SMALL = ["--set", "n_tokens=32", "--n-envs", "4", "--eval-seeds", "0-1", "--verbose", "0"]
TINY_HP = {
    "PPO": ["n_steps=32", "batch_size=64", "n_epochs=2"],
    "A2C": ["n_steps=8"],
    "DQN": ["learning_starts=64", "buffer_size=2000", "batch_size=32", "target_update_interval=64"],
    "MaskablePPO": ["n_steps=32", "batch_size=64", "n_epochs=2"],
    "RecurrentPPO": ["n_steps=32", "batch_size=64", "n_epochs=2", "lstm_hidden_size=8"],
}
SCENARIO = make_scenario("qwen-geometric", n_tokens=32)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def train_run(out: Path, algo: str = "PPO", level: str = "round", steps: int = 256, *extra: str) -> Path:
    argv = ["--algo", algo, "--level", level, "--total-timesteps", str(steps), "--out", str(out),
            "--eval-freq", "128", "--checkpoint-freq", "128", *SMALL, "--hyperparams", *TINY_HP[algo], *extra]
    assert train.main(argv) == 0
    return out


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def policy_params(model_path: Path) -> dict[str, np.ndarray]:
    model = load_policy(model_path).model
    return {k: v.detach().cpu().numpy().copy() for k, v in model.policy.state_dict().items()}


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_run(tmp_path_factory.mktemp("runs") / "ppo", "PPO", "round", 256)


# ------------------------------------------------------------------------------------ smoke runs
@pytest.mark.parametrize("algo,level", [("PPO", "round"), ("A2C", "token"), ("DQN", "round"),
                                        ("MaskablePPO", "token"), ("RecurrentPPO", "token")])
def test_each_algorithm_trains_saves_and_evaluates(tmp_path: Path, algo: str, level: str) -> None:
    run = train_run(tmp_path / "run", algo, level, 256)
    for name in ("config.json", "model.zip", "summary.json", "evaluations.csv"):
        assert (run / name).is_file(), name
    cfg = read_json(run / "config.json")
    assert cfg["algorithm"] == algo and cfg["level"] == level and cfg["status"] == "finished"
    assert cfg["env_id"] == ("SpecStop-v0" if level == "token" else "SpecStopRound-v0")
    # the environment's registered reward, unchanged by train.py (issue 12)
    registered = specstop_gym.make_scenario("qwen-geometric")
    assert cfg["scenario"]["n_tokens"] == 32
    for name in ("reward_mode", "reward_reference", "time_scale_ms", "reference_ms_per_token"):
        assert cfg["scenario"][name] == getattr(registered, name), name
    assert cfg["num_timesteps"] >= 256
    summary = read_json(run / "summary.json")
    assert summary["schema_version"] == SCHEMA_VERSION and summary["level"] == level
    label = f"sb3:{run / 'model.zip'}"
    assert set(summary["agents"]) == {label, "oracle", "best-fixed-k"}
    assert summary["seeds"] == [0, 1]
    entry = summary["agents"][label]
    assert entry["parameters"]["algorithm"] == algo and entry["per_token_latency_ms"]["mean"] > 0
    assert entry["gap_to_oracle_pct"]["n"] == 2
    assert summary["training"]["num_timesteps"] == cfg["num_timesteps"]
    rows = (run / "evaluations.csv").read_text().splitlines()
    assert rows[0].split(",") == list(EVAL_COLUMNS) and len(rows) >= 2
    assert any((run / "tb").rglob("events.out.tfevents.*"))
    if algo == "DQN":  # the replay buffer is checkpointed too (only the newest one is kept)
        assert len([c for c in list_checkpoints(run / "checkpoints") if c.replay_buffer]) == 1


def test_dummy_vec_env_reference_trains_too(tmp_path: Path) -> None:
    # --no-native: DummyVecEnv of single envs (MaskablePPO reads the masks through the wrappers)
    run = train_run(tmp_path / "run", "MaskablePPO", "token", 128, "--no-native", "--eval-freq", "0")
    cfg = read_json(run / "config.json")
    assert cfg["train"]["native"] is False and cfg["num_timesteps"] >= 128
    assert not (run / "evaluations.csv").exists()


def test_algorithm_names_are_case_insensitive(tmp_path: Path) -> None:
    run = train_run(tmp_path / "run", "PPO", "round", 128, "--algo", "ppo")
    assert read_json(run / "config.json")["algorithm"] == "PPO"


# ------------------------------------------------------------------------------------ resume
def _tb_steps(tb_dir: Path, tag: str = "time/fps") -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps: list[int] = []
    for f in sorted(tb_dir.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f))
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            steps += [e.step for e in acc.Scalars(tag)]
    return steps


def test_resume_continues_the_step_count(tmp_path: Path) -> None:
    run = train_run(tmp_path / "run", "PPO", "round", 256, "--normalize")
    first = policy_params(run / "model.zip")
    assert [c.steps for c in list_checkpoints(run / "checkpoints")] == [128, 256]
    assert train.main(["--resume", str(run), "--total-timesteps", "512"]) == 0
    model = load_policy(run / "model.zip").model
    assert model.num_timesteps == 512
    assert list_checkpoints(run / "checkpoints")[-1].steps == 512
    assert any(not np.array_equal(first[k], v) for k, v in policy_params(run / "model.zip").items())
    cfg = read_json(run / "config.json")
    assert cfg["num_timesteps"] == 512 and cfg["train"]["total_timesteps"] == 512
    assert [h["from_steps"] for h in cfg["history"]] == [0, 256]
    # TensorBoard continues in the same folder with growing step numbers
    assert sorted(p.name for p in (run / "tb").iterdir()) == ["PPO_1"]
    steps = _tb_steps(run / "tb" / "PPO_1")
    assert max(steps) == 512 and min(steps) <= 256 < max(steps)
    assert _tb_steps(run / "tb" / "PPO_1", "eval/per_token_latency_ms") == [128, 256, 384, 512]
    evals = [int(r.split(",")[0]) for r in (run / "evaluations.csv").read_text().splitlines()[1:]]
    assert evals == sorted(evals) and evals[-1] > 256 and evals[0] <= 256
    assert (run / "vecnormalize.pkl").is_file()
    assert read_json(run / "summary.json")["training"]["num_timesteps"] == 512


def test_resume_errors(tmp_path: Path, ppo_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["--resume", str(tmp_path / "nope")], "no such folder"),
        (["--resume", str(tmp_path)], "no config.json"),
        (["--resume", str(ppo_run), "--total-timesteps", "100"], "pass a larger --total-timesteps"),
        (["--resume", str(ppo_run), "--algo", "A2C", "--total-timesteps", "1000"], "--algo cannot be changed"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert train.main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
    empty = tmp_path / "copy"
    shutil.copytree(ppo_run, empty)
    shutil.rmtree(empty / "checkpoints")
    assert train.main(["--resume", str(empty), "--total-timesteps", "1000"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    (empty / "config.json").write_text("{not json")
    assert train.main(["--resume", str(empty)]) == 2
    assert "not a train.py run configuration" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ reload + runner
def test_saved_model_evaluates_through_the_runner(ppo_run: Path) -> None:
    seeds = [0, 1]
    agent = SB3Agent(ppo_run / "model.zip", SCENARIO, n_runs=2, seed=0)
    assert agent.algorithm == "PPO" and agent.level == "round"
    run = run_agent(agent, SCENARIO, seeds)
    assert np.all(run.per_token_latency_ms > 0) and run.columns["k"].min() >= 1
    # same numbers as train.py's final evaluation (common random numbers, deterministic policy)
    summary = read_json(ppo_run / "summary.json")
    mine = summary["agents"][f"sb3:{ppo_run / 'model.zip'}"]["per_seed"]["per_token_latency_ms"]
    np.testing.assert_allclose(run.per_token_latency_ms, mine)
    # through the registry (evaluate.py --agents sb3:PATH), from the run folder too
    for spec in (f"sb3:{ppo_run / 'model.zip'}", f"sb3:{ppo_run}"):
        again = run_agent(make_agent(spec, SCENARIO, n_runs=2), SCENARIO, seeds)
        np.testing.assert_array_equal(again.per_token_latency_ms, run.per_token_latency_ms)
    # a round-level model at the token level plans k at the first token: same rounds
    token = run_agent(SB3Agent(ppo_run, SCENARIO, n_runs=2), SCENARIO, seeds, level="token")
    np.testing.assert_array_equal(token.columns["k"], run.columns["k"])
    # checkpoints load as well
    ckpt = list_checkpoints(ppo_run / "checkpoints")[0]
    assert SB3Agent(ckpt.model, SCENARIO).describe()["num_timesteps"] == ckpt.steps


@pytest.mark.parametrize("algo", ["MaskablePPO", "RecurrentPPO"])
def test_token_model_at_the_round_level_replays_its_token_decisions(tmp_path: Path, algo: str) -> None:
    run = train_run(tmp_path / "run", algo, "token", 128, "--eval-freq", "0")
    seeds = [3, 4, 5]
    by_token = run_agent(SB3Agent(run, SCENARIO, n_runs=3), SCENARIO, seeds, level="token")
    by_round = run_agent(SB3Agent(run, SCENARIO, n_runs=3), SCENARIO, seeds, level="round")
    np.testing.assert_array_equal(by_token.columns["k"], by_round.columns["k"])
    np.testing.assert_allclose(by_token.per_token_latency_ms, by_round.per_token_latency_ms)
    signal = make_scenario("qwen-latent-signal", n_tokens=32)
    with pytest.raises(ValueError, match="--level token"):
        run_agent(SB3Agent(run, signal, n_runs=1), signal, [0], level="round")


def test_normalized_run_reloads_its_statistics(tmp_path: Path) -> None:
    run = train_run(tmp_path / "run", "PPO", "round", 128, "--normalize", "--eval-freq", "0")
    assert (run / "vecnormalize.pkl").is_file()
    agent = SB3Agent(run, SCENARIO, n_runs=2)
    assert agent.policy.normalizer is not None and agent.describe()["normalize"] is True
    np.testing.assert_allclose(run_agent(agent, SCENARIO, [0, 1]).per_token_latency_ms,
                               read_json(run / "summary.json")["agents"][f"sb3:{run / 'model.zip'}"]["per_seed"][
                                   "per_token_latency_ms"])
    (run / "vecnormalize.pkl").unlink()
    with pytest.raises(FileNotFoundError, match="--normalize"):
        SB3Agent(run, SCENARIO)


# ------------------------------------------------------------------------------------ reproducibility
def test_same_seed_same_policy_and_global_generators_untouched(tmp_path: Path) -> None:
    random.seed(123)
    np.random.seed(123)
    torch.manual_seed(123)
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone())
    threads = torch.get_num_threads()
    a = train_run(tmp_path / "a", "PPO", "round", 256, "--seed", "7")
    b = train_run(tmp_path / "b", "PPO", "round", 256, "--seed", "7")
    c = train_run(tmp_path / "c", "PPO", "round", 256, "--seed", "8")
    pa, pb, pc = (policy_params(r / "model.zip") for r in (a, b, c))
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)
    assert any(not np.array_equal(pa[k], pc[k]) for k in pa)
    sa, sb = (read_json(r / "summary.json")["agents"] for r in (a, b))
    assert (sa[f"sb3:{a / 'model.zip'}"]["per_seed"] == sb[f"sb3:{b / 'model.zip'}"]["per_seed"])
    # train.py seeds the global generators (SB3 does) but restores them afterwards
    assert random.getstate() == states[0]
    np.testing.assert_array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])
    assert torch.get_num_threads() == threads


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("argv,message", [
    (["--algo", "SAC"], "unknown algorithm 'SAC'; valid algorithms: PPO, A2C, DQN, MaskablePPO, RecurrentPPO"),
    (["--hyperparams", "n_stepz=64"], "unknown hyperparameter 'n_stepz' for PPO; valid:"),
    (["--algo", "DQN", "--hyperparams", "n_epochs=3"], "unknown hyperparameter 'n_epochs' for DQN"),
    (["--hyperparams", "n_steps=0.5"], "n_steps=0.5"),
    (["--hyperparams", "seed=3"], "set by train.py itself"),
    (["--hyperparams", "activation_fn=swish"], "activation_fn='swish'"),
    (["--hyperparams", "oops"], "key=value"),
    (["--scenario", "nope"], "unknown scenario 'nope'"),
    (["--set", "max_drafts=4"], "unknown scenario field 'max_drafts'"),
    (["--set", "max_draft=0"], "max_draft"),
    (["--n-envs", "0"], "--n-envs must be >= 1"),
    (["--eval-seeds", "x"], "--eval-seeds"),
])
def test_invalid_arguments_exit_2_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  argv: list[str], message: str) -> None:
    out = tmp_path / "never"
    assert train.main([*argv, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_out_folder_holding_a_run_is_refused(ppo_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train.main(["--out", str(ppo_run)]) == 2
    assert "--resume" in capsys.readouterr().err


def test_algorithm_space_mismatch_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from gymnasium import spaces

    box_obs = spaces.Box(0.0, 1.0, (5,), np.float32)
    monkeypatch.setattr(train, "env_spaces", lambda scenario, level: (box_obs, spaces.Box(-1, 1, (1,)), False))
    for algo, message in (("DQN", "DQN does not support the action space"),
                          ("MaskablePPO", "MaskablePPO does not support the action space")):
        assert train.main(["--algo", algo, "--out", str(tmp_path / algo)]) == 2
        assert message in capsys.readouterr().err
    monkeypatch.setattr(train, "env_spaces", lambda scenario, level: (box_obs, spaces.Discrete(3), False))
    assert train.main(["--algo", "MaskablePPO", "--out", str(tmp_path / "m")]) == 2
    assert "needs an environment with action_masks()" in capsys.readouterr().err
    monkeypatch.setattr(train, "env_spaces",
                        lambda scenario, level: (spaces.Dict({"a": box_obs}), spaces.Discrete(3), True))
    assert train.main(["--algo", "PPO", "--out", str(tmp_path / "p")]) == 2
    assert "flat Box observation space" in capsys.readouterr().err


def test_model_for_another_max_draft_is_refused(ppo_run: Path) -> None:
    with pytest.raises(ValueError) as err:
        SB3Agent(ppo_run / "model.zip", make_scenario("qwen-geometric", max_draft=12))
    msg = str(err.value)
    assert "max_draft 8" in msg and "max_draft 12" in msg and "Discrete(8)" in msg and "Discrete(12)" in msg
    with pytest.raises(ValueError, match="max_draft 12"):
        make_agent(f"sb3:{ppo_run}", make_scenario("qwen-geometric", max_draft=12))
    with pytest.raises(ValueError, match="2 channel state"):  # a Markov channel adds CSI entries
        SB3Agent(ppo_run, make_scenario("markov-csi", max_draft=8))


def test_missing_and_corrupt_model_files(tmp_path: Path, ppo_run: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SB3Agent(tmp_path / "missing.zip", SCENARIO)
    with pytest.raises(ValueError, match="does not exist"):
        make_agent(f"sb3:{tmp_path / 'missing.zip'}", SCENARIO)
    with pytest.raises(FileNotFoundError, match="no model.zip"):
        SB3Agent(tmp_path, SCENARIO)
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"definitely not a zip")
    with pytest.raises(ValueError, match="not a Stable-Baselines3 model file"):
        SB3Agent(garbage, SCENARIO)
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("hello.txt", "a zip, but not a model")
    with pytest.raises(ValueError, match="not a Stable-Baselines3 model file"):
        SB3Agent(other, SCENARIO)
    truncated = tmp_path / "truncated.zip"
    data = (ppo_run / "model.zip").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a Stable-Baselines3 model file"):
        SB3Agent(truncated, SCENARIO)
    with pytest.raises(ValueError, match="needs the path"):
        make_agent("sb3:", SCENARIO)


# ------------------------------------------------------------------------------------ hyperparameters
def test_default_table_is_complete_and_valid() -> None:
    for algo in ALGORITHMS:
        keys = set(valid_keys(algo))
        for level in LEVELS:
            params = DEFAULT_HYPERPARAMS[(algo, level)]
            assert set(params) <= keys, (algo, level, set(params) - keys)
            assert 0.9 <= params["gamma"] <= 1.0
            assert resolve_hyperparams(algo, level) == dict(params)


def test_overrides_and_policy_shortcuts() -> None:
    hp = resolve_hyperparams("ppo", "token", {"net_arch": [32], "activation_fn": "relu", "learning_rate": "lin_1e-3"})
    kwargs = algorithm_kwargs("PPO", hp)
    assert kwargs["policy_kwargs"]["net_arch"] == [32]
    assert kwargs["policy_kwargs"]["activation_fn"] is torch.nn.ReLU
    assert kwargs["learning_rate"](0.5) == pytest.approx(5e-4)
    assert "net_arch" not in kwargs and kwargs["gamma"] == DEFAULT_HYPERPARAMS[("PPO", "token")]["gamma"]
    assert algorithm_kwargs("RecurrentPPO", resolve_hyperparams("RecurrentPPO", "round"))["policy_kwargs"][
        "lstm_hidden_size"] == 32
    with pytest.raises(HyperparamError, match="lstm_hidden_size"):
        resolve_hyperparams("PPO", "round", {"lstm_hidden_size": 8})
    with pytest.raises(HyperparamError, match="unknown level"):
        resolve_hyperparams("PPO", "episode")


def test_space_check_accepts_the_real_environments() -> None:
    for level in LEVELS:
        obs, act, masks = train.env_spaces(SCENARIO, level)
        for algo in ALGORITHMS:
            check_algorithm_spaces(algo, obs, act, has_action_masks=masks)


def test_help_lists_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert train.main(["--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--algo", "--level", "--scenario", "--set", "--n-envs", "--seed", "--total-timesteps", "--native",
                 "--no-native", "--normalize", "--eval-freq", "--eval-seeds", "--checkpoint-freq", "--out",
                 "--resume", "--progress-bar", "--hyperparams"):
        assert flag in text
