"""What a newcomer meets first (issue 15, points 3, 4 and 6): errors before work, warnings instead of
silent surprises, help that lists what is valid, suggestions for misspellings, progress without a
terminal. The scripts run in process through ``main(argv)`` (tiny budgets) or, where the import
state matters, as subprocesses.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import one_line_error

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--requests", "1", "--set", "n_tokens=16", "--no-sweep", "--no-plots"]


# --------------------------------------------------------------------------- point 3: refused up front
@pytest.mark.parametrize("values", [["0"], ["100", "0"], ["-5"]])
def test_bad_sweep_delay_is_refused_before_any_work(evaluate_module, tmp_path: Path, capsys, values: list[str]) -> None:
    out = tmp_path / "run"
    assert evaluate_module.main(["--sweep-delays", *values, "--out", str(out)]) == 2
    line = one_line_error(capsys.readouterr().err, "evaluate.py")
    assert "--sweep-delays" in line
    assert not out.exists()  # no empty output folder


def test_train_without_the_sb3_extra_says_how_to_install_it(tmp_path: Path) -> None:
    """A subprocess in which ``import stable_baselines3`` fails (as without the extra)."""
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['stable_baselines3'] = None\n")
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"}
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--total-timesteps", "64",
                        "--out", str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=120,
                       check=False)
    assert r.returncode == 2, r.stderr
    line = one_line_error(r.stderr, "train.py")
    assert 'pip install -e ".[sb3]"' in line and "stable_baselines3" in line
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- point 4: no silent surprises
def test_quick_without_paper_is_an_error(evaluate_module, tmp_path: Path, capsys) -> None:
    assert evaluate_module.main(["--quick", "--out", str(tmp_path / "run")]) == 2
    assert "--quick" in one_line_error(capsys.readouterr().err, "evaluate.py")
    assert not (tmp_path / "run").exists()


def test_duplicate_seeds_run_once_with_a_note_naming_the_flag(evaluate_module, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert evaluate_module.main(["--seed-list", "3", "1", "3", "--agents", "static-k", "--quiet", *TINY,
                          "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert re.search(r"note: --seed-list: duplicate seeds dropped \(3\).*2 seeds", err), err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [3, 1]


def test_progress_without_a_terminal_is_one_line_per_finished_step(evaluate_module, tmp_path: Path, capsys) -> None:
    """stderr is captured here (not a terminal): no bar, one plain line per agent and sweep point."""
    assert evaluate_module.main(["--seeds", "1", "--agents", "static-k", "heuristic", "--requests", "1", "--set",
                          "n_tokens=16", "--sweep-delays", "50", "--sweep-seeds", "1", "--no-plots",
                          "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("qwen-geometric: [")]
    assert [re.sub(r" in [\d.]+ s$", "", ln) for ln in lines] == [
        "qwen-geometric: [1/4] oracle finished", "qwen-geometric: [2/4] static-k finished",
        "qwen-geometric: [3/4] heuristic finished", "qwen-geometric: [4/4] delay sweep at 50 ms finished"]
    assert "\r" not in err
    # --quiet: nothing
    assert evaluate_module.main(["--seeds", "1", "--agents", "static-k", "--quiet", *TINY,
                          "--out", str(tmp_path / "quiet")]) == 0
    assert "finished" not in capsys.readouterr().err


def test_rounds_table_size_of_the_default_run_is_documented(evaluate_module) -> None:
    """docs/evaluation.md states the default run's rounds.parquet size (measured); evaluate.py's
    own estimate of that table (its free-space check) brackets the documented size."""
    doc = (ROOT / "docs" / "evaluation.md").read_text()
    m = re.search(r"default run \(`python evaluate.py`\) writes a ([\d.]+) MB `rounds.parquet`", doc)
    assert m, "docs/evaluation.md: the default run's rounds.parquet size"
    documented = float(m.group(1)) * 1e6
    from specstop_gym.scenarios import make_scenario

    args = evaluate_module.Args()
    cfg = make_scenario(args.scenarios[0], requests_per_episode=args.requests)
    fewest, most = evaluate_module.estimate_rounds(cfg, len(args.agents), args.seeds, None)
    per_row = evaluate_module.BYTES_PER_ROUND["parquet"]
    assert 0.5 * fewest * per_row <= documented <= most * per_row
    assert "rounds.parquet" in (ROOT / "README.md").read_text()


def test_one_paper_run_time_everywhere() -> None:
    """The run time of ``--paper`` is one measured number wherever it is printed or documented."""
    texts = {p: (ROOT / p).read_text() for p in ("README.md", "evaluate.py", "docs/paper.md",
                                                  "docs/evaluation.md", "specstop_gym/evaluation/paper.py")}
    found = {}
    for path, text in texts.items():
        for line in text.splitlines():
            if "--paper" in line or "the --paper experiments" in line:
                for est in re.findall(r"(?:~|about|within)\s?(\d+(?:\.\d+)?)\s*(s|min|minutes?)\b", line):
                    found.setdefault(f"{est[0]} {est[1][:3]}", []).append(path)
    assert len(found) == 1 and sum(len(v) for v in found.values()) >= 3, found


# --------------------------------------------------------------------------- point 6: help and spelling
def test_help_has_examples_and_lists_valid_scenarios_and_agents(evaluate_module, capsys) -> None:
    from agents.registry import agent_names
    from specstop_gym.scenarios import scenario_names

    assert evaluate_module.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:\n    python evaluate.py" in out
    for name in [*scenario_names(), *agent_names(), "best-fixed-k", "sb3:PATH"]:
        assert re.search(rf"(^|[\s,]){re.escape(name)}(,|\s|$)", out), name


@pytest.mark.parametrize(("argv", "hint"), [
    (["--scenarios", "markov_csi"], "did you mean 'markov-csi'?"),
    (["--scenarios", "qwen-geometrik"], "did you mean 'qwen-geometric'?"),
    (["--agents", "ucb-specstp"], "did you mean 'ucb-specstop'?"),
    (["--agents", "specdec"], "did you mean 'specdec++'?"),
    (["--sedds", "3"], "did you mean '--seeds'?"),
])
def test_misspellings_get_a_suggestion(evaluate_module, tmp_path: Path, capsys, argv: list[str], hint: str) -> None:
    assert evaluate_module.main([*argv, "--out", str(tmp_path / "run")]) == 2
    assert hint in one_line_error(capsys.readouterr().err, "evaluate.py")


def test_traces_summary_accepts_the_names_evaluate_accepts(capsys) -> None:
    from specstop_gym.traces.cli import main

    outputs = []
    for name in ("trace-starlink", "starlink_isl_ping.csv", "delay/starlink_isl_ping.csv",
                 "traces/delay/starlink_isl_ping.csv"):
        assert main(["summary", name, "--json"]) == 0, name
        outputs.append(json.loads(capsys.readouterr().out))
    assert all(o == outputs[0] for o in outputs[1:])
    assert main(["summary", "trace-nosuch"]) == 2
    assert "trace-nosuch" in capsys.readouterr().err


# --------------------------------------------------------------------------- train.py (needs SB3)
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    pytest.importorskip("stable_baselines3")
    pytest.importorskip("sb3_contrib")
    sys.path.insert(0, str(ROOT))
    import train

    out = tmp_path_factory.mktemp("train") / "run"
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = train.main(["--total-timesteps", "100", "--n-envs", "2", "--eval-freq", "0", "--checkpoint-freq",
                           "0", "--eval-seeds", "1000", "--out", str(out)])
    assert code == 0, err.getvalue()
    return out, err.getvalue()


def test_total_timesteps_not_a_multiple_of_the_rollout_says_what_is_trained(trained: tuple[Path, str]) -> None:
    out, err = trained
    # PPO at the round level: n_steps 128 x 2 envs = rollouts of 256 steps
    assert ("note: --total-timesteps 100: PPO trains in whole rollouts of n_steps x n_envs = 256 steps, so this "
            "run trains 256 steps") in err
    history = json.loads((out / "config.json").read_text())["history"]
    assert history[-1]["to_steps"] == 256


def test_recorded_device_is_the_one_used(trained: tuple[Path, str], capsys) -> None:
    import torch

    import train

    out, _ = trained
    assert json.loads((out / "config.json").read_text())["history"][-1]["device"] == "cpu"
    if not torch.cuda.is_available():  # a CPU-only torch: --device cuda is refused, not recorded as used
        assert train.main(["--device", "cuda", "--out", str(out.parent / "cuda")]) == 2
        line = one_line_error(capsys.readouterr().err, "train.py")
        assert "--device cuda" in line and "not available" in line
        assert not (out.parent / "cuda").exists()


def test_model_evaluated_on_another_scenario_warns_naming_both(trained: tuple[Path, str], evaluate_module, capsys) -> None:
    from agents.registry import make_agent
    from agents.sb3_agent import ScenarioMismatchWarning
    from specstop_gym.scenarios import make_scenario

    out, _ = trained
    model = str(out / "model.zip")
    with pytest.warns(ScenarioMismatchWarning, match="trained on scenario 'qwen-geometric' and is evaluated on "
                                                     "'llama-heavy-head'"):
        make_agent(f"sb3:{model}", make_scenario("llama-heavy-head"), n_runs=1)
    with pytest.warns(ScenarioMismatchWarning, match=r"with other settings .*delay_ms 150.0 -> 300.0"):
        make_agent(f"sb3:{model}", make_scenario("qwen-geometric", delay_ms=300.0), n_runs=1)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", ScenarioMismatchWarning)  # same scenario and settings: silent
        make_agent(f"sb3:{model}", make_scenario("qwen-geometric"), n_runs=1)
    # evaluate.py: one warning line, before the run
    assert evaluate_module.main(["--agents", f"sb3:{model}", "oracle", "--scenarios", "llama-heavy-head", "--seeds", "1",
                          "--quiet", *TINY, "--out", str(out.parent / "eval")]) == 0
    err = capsys.readouterr().err
    assert re.search(r"^warning: --agents sb3:.*trained on scenario 'qwen-geometric' and is evaluated on "
                     r"'llama-heavy-head'$", err, flags=re.MULTILINE), err


def test_train_misspellings_get_a_suggestion(trained: tuple[Path, str], capsys) -> None:
    import train

    out, _ = trained
    for argv, hint in ((["--scenario", "qwen-geometrc"], "did you mean 'qwen-geometric'?"),
                       (["--algo", "ppo2"], "did you mean 'PPO'?"),
                       (["--totl-timesteps", "5"], "did you mean '--total-timesteps'?")):
        assert train.main([*argv, "--out", str(out.parent / "x")]) == 2
        assert hint in one_line_error(capsys.readouterr().err, "train.py")
    assert not (out.parent / "x").exists()


def test_duplicate_seeds_of_a_grid_from_flags_get_the_same_note(evaluate_module, tmp_path: Path, capsys) -> None:
    out = tmp_path / "grid"
    assert evaluate_module.main(["--grid-delays", "50", "--seed-list", "2", "2", "--agents", "static-k", "--quiet",
                          "--requests", "1", "--set", "n_tokens=16", "--no-plots", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert re.search(r"note: --seed-list: duplicate seeds dropped \(2\).*1 seeds", err), err
