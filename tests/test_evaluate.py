"""evaluate.py end to end: outputs, argument errors, atomic summary writes, --paper smoke.

Subprocess smoke runs use tiny budgets (2 seeds, 1 request of a few tokens, a 3-point sweep).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "evaluate.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DEFAULT_AGENTS = ["static-k", "heuristic", "specdec++", "naive-ucb", "ucb-specstop", "contextual-ucb", "oracle",
                  "best-fixed-k"]
TINY = ["--seeds", "2", "--requests", "1", "--set", "n_tokens=24", "--sweep-delays", "20", "100", "500",
        "--sweep-seeds", "2", "--quiet"]
SUMMARY_KEYS = {"schema_version", "kind", "created", "command", "versions", "scenario", "seeds", "level", "budget",
                "oracle", "oracle_agent", "regret_reference", "agents", "sweep", "files", "wall_s", "rounds_per_s",
                "run_id"}
LOCK = ".specstop.lock"
AGENT_KEYS = {"spec", "per_token_latency_ms", "cumulative_regret_ms", "cumulative_pseudo_regret_ms",
              "gap_to_oracle_pct", "rounds", "mean_k", "parameters", "requested", "per_seed", "wall_s",
              "rounds_per_s"}
CI_KEYS = {"mean", "ci_low", "ci_high", "n"}


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, check=False)


def strict_json(path: Path) -> dict:
    """Parse JSON rejecting NaN/Infinity (not valid JSON)."""
    def bad(token: str) -> None:
        raise ValueError(f"{path} contains {token}")

    return json.loads(path.read_text(), parse_constant=bad)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("smoke") / "run"
    r = run_cli(*TINY, "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out


# --------------------------------------------------------------------------- outputs
def read_rounds(path: Path) -> list[dict]:
    from specstop_gym.dataset import read_dataset

    cols = read_dataset(path)
    names = list(cols)
    return [{c: cols[c][i] for c in names} for i in range(len(cols["k"]))], names


def test_rounds_table_columns_and_content(smoke: Path) -> None:
    rows, header = read_rounds(smoke / "rounds.parquet")
    assert header == ["scenario", "agent", "seed", "round", "k", "accepted", "tokens", "time_ms", "rtt_ms", "state",
                      "start_ms", "regret_ms", "pseudo_regret_ms"]  # qwen-geometric is stationary: pseudo-regret too
    assert {r["agent"] for r in rows} == set(DEFAULT_AGENTS)
    assert {r["scenario"] for r in rows} == {"qwen-geometric"}
    assert {int(r["seed"]) for r in rows} == {0, 1}
    for r in rows:
        k, a, n = int(r["k"]), int(r["accepted"]), int(r["tokens"])
        assert 1 <= k <= 8 and 0 <= a <= k and 1 <= n <= a + 1
        assert float(r["time_ms"]) > float(r["rtt_ms"]) > 0
    # every seed of every agent served exactly one request of 24 tokens
    for agent in DEFAULT_AGENTS:
        for seed in (0, 1):
            assert sum(int(r["tokens"]) for r in rows if r["agent"] == agent and r["seed"] == seed) == 24


def test_summary_schema_and_consistency_with_the_rounds(smoke: Path) -> None:
    s = strict_json(smoke / "summary.json")
    assert SUMMARY_KEYS <= set(s)
    assert s["schema_version"] == 2
    assert s["seeds"] == [0, 1] and s["level"] == "round"
    assert s["scenario"]["name"] == "qwen-geometric" and s["scenario"]["stationary"] is True
    assert s["scenario"]["config"]["n_tokens"] == 24
    assert s["budget"] == {"requests_per_episode": 1, "n_tokens": 24, "max_rounds": None}
    assert s["oracle"]["k_star"] == 2 and s["oracle"]["rho_star_ms"] > 0
    assert 80 < s["oracle"]["critical_delay_ms"] < 90
    assert s["oracle_agent"] == "oracle"
    assert s["regret_reference"]["description"].startswith("stationary rho*")
    assert set(s["agents"]) == set(DEFAULT_AGENTS)
    assert "numpy" in s["versions"] and "python" in s["versions"]
    for name, e in s["agents"].items():
        assert AGENT_KEYS <= set(e), name
        for key in ("per_token_latency_ms", "cumulative_regret_ms", "gap_to_oracle_pct"):
            assert set(e[key]) == CI_KEYS and e[key]["ci_low"] <= e[key]["mean"] <= e[key]["ci_high"]
        assert e["requested"] is True
    assert s["agents"]["oracle"]["gap_to_oracle_pct"]["mean"] == 0.0
    # latency recomputed from the rounds table: total time over total tokens per seed, mean over seeds
    rows, _ = read_rounds(smoke / "rounds.parquet")
    for name, e in s["agents"].items():
        per_seed = []
        for seed in (0, 1):
            mine = sorted((r for r in rows if r["agent"] == name and r["seed"] == seed), key=lambda r: r["round"])
            per_seed.append(sum(float(r["time_ms"]) for r in mine) / sum(int(r["tokens"]) for r in mine))
            assert float(mine[-1]["regret_ms"]) == pytest.approx(
                e["per_seed"]["cumulative_regret_ms"][seed], abs=1e-6)
            assert e["rounds"] == sum(1 for r in rows if r["agent"] == name)
        assert np.mean(per_seed) == pytest.approx(e["per_token_latency_ms"]["mean"], rel=1e-6)
    sweep = s["sweep"]
    assert sweep["delays_ms"] == [20.0, 100.0, 500.0]
    assert sweep["k_star"] == sorted(sweep["k_star"]) and sweep["k_star"][0] == 1
    assert "best-fixed-k" not in sweep["agents"]
    for name, e in sweep["agents"].items():
        assert len(e["per_token_latency_ms"]) == 3, name
    assert s["files"]["rounds"] == "rounds.parquet"
    cfg = strict_json(smoke / "config.json")
    assert cfg["scenario"]["n_tokens"] == 24 and cfg["seeds"] == [0, 1]
    assert cfg["status"] == "finished" and cfg["run_id"] == s["run_id"] and cfg["error"] is None


def test_plots_are_png(smoke: Path) -> None:
    s = strict_json(smoke / "summary.json")
    names = s["files"]["plots"]
    assert set(names) == {"regret", "latency", "k_over_time", "delay_sweep"}
    for name in names.values():
        data = (smoke / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
    assert [p.name for p in smoke.glob(".*")] == [LOCK]  # no temporary files left


def test_several_scenarios_get_subfolders(tmp_path: Path) -> None:
    out = tmp_path / "multi"
    r = run_cli("--scenarios", "llama-heavy-head", "markov-csi", "--agents", "static-k:k=2", "ucb-specstop",
                "--seeds", "2", "--requests", "1", "--set", "n_tokens=16", "--no-sweep", "--no-plots", "--quiet",
                "--level", "token", "--out", str(out))
    assert r.returncode == 0, r.stderr
    for name in ("llama-heavy-head", "markov-csi"):
        s = strict_json(out / name / "summary.json")
        assert s["scenario"]["name"] == name and s["level"] == "token" and s["sweep"] is None
        # the oracle is always run as the reference, marked as not requested
        assert s["agents"]["oracle"]["requested"] is False
        assert (out / name / "rounds.parquet").exists() and not list((out / name).glob("*.png"))
    markov = strict_json(out / "markov-csi" / "summary.json")
    assert markov["scenario"]["stationary"] is False and markov["oracle"]["k_star"] is None
    assert "realised" in markov["regret_reference"]["description"]
    assert markov["agents"]["static-k:k=2"]["cumulative_pseudo_regret_ms"] is None
    assert strict_json(out / "index.json")["scenarios"] == {n: f"{n}/summary.json"
                                                            for n in ("llama-heavy-head", "markov-csi")}


def test_help_lists_flags_with_defaults() -> None:
    r = run_cli("--help")
    assert r.returncode == 0
    for flag in ("--scenarios", "--agents", "--seeds", "--seed-list", "--requests", "--rounds", "--level", "--set",
                 "--delay-ms", "--delay-trace", "--acceptance-trace", "--sweep-delays", "--no-sweep", "--out",
                 "--no-plots", "--paper", "--quick", "--quiet"):
        assert flag in r.stdout, flag
    assert "(default: 8)" in r.stdout and "qwen-geometric" in r.stdout


# --------------------------------------------------------------------------- argument errors
INVALID = [
    (["--agents", "no-such-agent"], ["unknown agent 'no-such-agent'", "ucb-specstop", "best-fixed-k", "oracle"]),
    (["--scenarios", "no-such-scenario"], ["unknown scenario 'no-such-scenario'", "qwen-geometric", "markov-csi"]),
    (["--set", "alpha=2"], ["alpha must be a probability"]),
    (["--set", "no_such_field=1"], ["unknown scenario field 'no_such_field'", "delay_ms"]),
    (["--set", "alpha"], ["field=value"]),
    (["--agents", "static-k:k=99"], ["static-k:k=99", "k must be an integer"]),
    (["--delay-trace", "/no/such/trace.csv"], ["file not found"]),
    (["--seeds", "0"], ["--seeds must be an integer in 1..100000"]),
    (["--seeds", "1000000000"], ["--seeds must be an integer in 1..100000"]),
    (["--seed-list", "99999999999999999999"], ["--seed-list must be an integer in 0..4294967295"]),
    (["--set", "delay_cv=1e300"], ["delay_cv must be in the range"]),
    (["--set", "max_draft=inf"], ["max_draft must be an integer"]),
    (["--set", "max_draft=1000000000000"], ["max_draft must be an integer in 1..256"]),
    (["--set", "name=../escape"], ["name must be"]),
    (["--sweep-delays", "nan"], ["--sweep-delays must be a finite number"]),
]


@pytest.mark.parametrize("args, expected", INVALID)
def test_invalid_arguments_exit_2_before_work(tmp_path: Path, args: list[str], expected: list[str], evaluate_module,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from specstop_gym.evaluation import report

    monkeypatch.setattr(report, "run_comparison", _no_work)
    out = tmp_path / "out"
    assert evaluate_module.main([*args, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    for text in expected:
        assert text in err, (text, err)
    assert not out.exists()  # nothing written


@pytest.mark.parametrize("args, expected", [INVALID[0], INVALID[1]])
def test_cli_invalid_names_exit_2_without_traceback(tmp_path: Path, args: list[str], expected: list[str]) -> None:
    r = run_cli(*args, "--out", str(tmp_path / "out"), "--quiet")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    for text in expected:
        assert text in r.stderr, (text, r.stderr)


def _no_work(*a, **k):  # pragma: no cover - reaching it is the failure
    raise AssertionError("work started before the arguments were validated")


def test_unwritable_output_fails_before_work(tmp_path: Path, evaluate_module, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from specstop_gym.evaluation import report

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")

    monkeypatch.setattr(report, "run_comparison", _no_work)
    code = evaluate_module.main(["--out", str(blocker / "sub"), "--quiet", "--seeds", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "not writable" in err and str(blocker / "sub") in err
    assert not (blocker.parent / "sub").exists() and blocker.read_text() == "not a folder"
    # the same through the real CLI
    r = run_cli("--out", str(blocker / "sub"), "--quiet")
    assert r.returncode == 2 and "not writable" in r.stderr and "Traceback" not in r.stderr


# --------------------------------------------------------------------------- atomic writes
def test_json_writer_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from specstop_gym.evaluation import report

    target = tmp_path / "summary.json"
    report.write_json_atomic(target, {"version": 1, "values": [1.0, float("nan")]})
    before = target.read_text()
    assert json.loads(before) == {"version": 1, "values": [1.0, None]}

    def interrupted_dump(obj, f, **kw):
        f.write('{"version": 2, "values": [')  # half a document, then the interruption
        raise KeyboardInterrupt

    monkeypatch.setattr(report.json, "dump", interrupted_dump)
    with pytest.raises(KeyboardInterrupt):
        report.write_json_atomic(target, {"version": 2, "values": list(range(1000))})
    assert target.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_interrupted_run_keeps_previous_summary(tmp_path: Path, evaluate_module,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from specstop_gym.evaluation import report

    out = tmp_path / "run"
    argv = ["--agents", "static-k:k=2", "oracle", "--requests", "1", "--set", "n_tokens=16",
            "--no-sweep", "--no-plots", "--quiet", "--out", str(out)]
    assert evaluate_module.main([*argv, "--seeds", "2"]) == 0
    before = (out / "summary.json").read_text()
    real_dump = json.dump

    def dump_then_fail(obj, f, **kw):
        if isinstance(obj, dict) and obj.get("kind") == "specstop-gym evaluation summary":
            f.write(json.dumps(obj)[:100])
            raise OSError("disk full (simulated)")
        return real_dump(obj, f, **kw)

    monkeypatch.setattr(report.json, "dump", dump_then_fail)
    with pytest.raises(OSError, match="simulated"):
        evaluate_module.main([*argv, "--seeds", "3"])  # a different run into the same folder
    assert (out / "summary.json").read_text() == before
    assert strict_json(out / "summary.json")["seeds"] == [0, 1]
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [LOCK]
    assert strict_json(out / "config.json")["status"] == "failed"  # the second run's status, with its error
    assert "simulated" in strict_json(out / "config.json")["error"]


# --------------------------------------------------------------------------- --paper
def test_paper_quick(tmp_path: Path) -> None:
    out = tmp_path / "paper"
    r = run_cli("--paper", "--quick", "--quiet", "--out", str(out))
    assert r.returncode == 0, r.stderr
    doc = strict_json(out / "paper.json")
    assert [c["id"] for c in doc["claims"]] == list("abcdefg")
    for c in doc["claims"]:
        assert {"claim", "paper", "measured", "setup", "consistent", "details"} <= set(c)
        assert c["measured"] and c["paper"]
        assert c["consistent"] in ("yes", "partly", "no", None)
    crit = doc["claims"][0]["details"]
    assert [d["preset"] for d in crit] == ["qwen-geometric", "llama-heavy-head"]
    # the presets are calibrated to the paper's transitions (83 ms, 111 ms; docs/scenarios.md)
    assert crit[0]["critical_delay_ms"] == pytest.approx(83.0, abs=5.0)
    assert crit[1]["critical_delay_ms"] == pytest.approx(111.0, abs=5.0)
    growth = doc["claims"][1]["details"]
    assert all(0.9 < g["asymptotic_ratio"] < 1.1 for g in growth)
    md = (out / "paper.md").read_text()
    assert md.count("\n| (") == 7 and "22.4%" in md and "83 ms" in md
