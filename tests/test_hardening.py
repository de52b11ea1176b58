"""Issue 14: the malformed inputs of the issue, output-folder safety (lock, status, orphans, disk
errors, rounds formats) and loading (checksums, VecNormalize only when recorded, resume from the
newest intact checkpoint). Tiny budgets; the crash test with SIGKILL is tests/test_crash.py."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import one_line_error

import specstop_gym  # noqa: F401
from specstop_gym import ConfigError, make_scenario

ROOT = Path(__file__).resolve().parents[1]
TINY_EVAL = ["--agents", "static-k:k=2", "oracle", "--seeds", "2", "--requests", "1", "--set", "n_tokens=16",
             "--no-sweep", "--no-plots", "--quiet"]


# ------------------------------------------------------------------------------------ bounds
@pytest.mark.parametrize("field,value,expected", [
    ("delay_cv", 1e300, "delay_cv must be in the range"),
    ("delay_ms", 1e300, "delay_ms must be in the range 0 <= x <= 600000 ms"),
    ("time_scale_ms", 1e-320, "time_scale_ms must be in the range"),
    ("max_draft", float("inf"), "max_draft must be an integer"),
    ("max_draft", 10**12, "max_draft must be an integer in 1..256"),
    ("n_tokens", 10**12, "n_tokens must be an integer in 1..2147483647"),
    ("jitter_slot_ms", 1e-320, "jitter_slot_ms"),
    ("bandwidth_kbps", 1e-300, "bandwidth_kbps"),
    ("name", "../../etc", "name must be"),
    ("profile", [0.5] * 300, "at most 256"),
    ("delay_trace_offset", "yes", "delay_trace_offset must be true or false"),
])
def test_out_of_range_fields_are_refused_naming_the_field(field: str, value, expected: str) -> None:
    import gymnasium as gym

    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        make_scenario("qwen-geometric", **{field: value})
    with pytest.raises(ValueError, match=field):
        gym.make("SpecStop-v0", **{field: value})


def test_gamma_needs_a_cv_its_quantile_handles() -> None:
    with pytest.raises(ConfigError, match=r"delay_cv must be in \[0.01, 3.0\] for a gamma"):
        make_scenario("qwen-geometric", delay_distribution="gamma", delay_cv=1e-300)
    with pytest.raises(ConfigError, match="delay_cv"):
        make_scenario("qwen-geometric", delay_distribution="gamma", delay_cv=5.0)


def test_fields_at_their_bounds_give_finite_steps() -> None:
    import gymnasium as gym

    extremes = dict(delay_ms=600_000.0, delay_cv=10.0, draft_ms=10_000.0, verify_base_ms=60_000.0,
                    max_draft=256, time_scale_ms=1e-3, jitter_slot_ms=0.01, bytes_per_token=1e7, bandwidth_kbps=1.0)
    for env_id in ("SpecStop-v0", "SpecStopRound-v0"):
        env = gym.make(env_id, **extremes)
        obs, _ = env.reset(seed=3)
        for _ in range(10):
            obs, reward, term, trunc, info = env.step(env.action_space.n - 1)
            assert np.all(np.isfinite(obs)) and np.isfinite(reward)
            if term or trunc:
                break


def test_name_can_be_overridden_everywhere(tmp_path: Path, evaluate_module) -> None:
    import gymnasium as gym

    assert make_scenario("drift", name="my-drift").name == "my-drift"
    assert gym.make("SpecStopRound-v0", name="mine").unwrapped.config.name == "mine"
    out = tmp_path / "run"
    assert evaluate_module.main([*TINY_EVAL, "--set", "name=renamed", "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["scenario"]["name"] == "renamed"


# ------------------------------------------------------------------------------------ the issue's inputs
def test_evaluate_issue_inputs_exit_2_in_one_line(tmp_path: Path, evaluate_module,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "huge_rtt.csv"
    trace.write_text("t_ms,rtt_ms\n0,10\n100,1e308\n")
    cases = [
        (["--seeds", "1000000000"], "--seeds must be an integer in 1..100000"),
        (["--seed-list", "99999999999999999999"], "--seed-list must be an integer in 0..4294967295"),
        (["--set", "max_draft=1000000000000"], "max_draft must be an integer in 1..256"),
        (["--set", "delay_cv=1e300"], "delay_cv must be in the range"),
        (["--set", "max_draft=inf"], "max_draft must be an integer"),
        (["--set", "delay_distribution=gamma", "--set", "delay_cv=1e-300"], "delay_cv must be in [0.01, 3.0]"),
        (["--delay-trace", str(trace)], f"{trace} line 3, field rtt_ms: rtt 1e+308 ms is above"),
        (["--sweep-delays", "1e309"], "--sweep-delays must be a finite number"),
        (["--seeds", "x"], "argument --seeds: invalid int value"),
    ]
    for argv, expected in cases:
        capsys.readouterr()
        assert evaluate_module.main([*argv, "--out", str(tmp_path / "never")]) == 2, argv
        line = one_line_error(capsys.readouterr().err, "evaluate.py")
        assert expected in line, (argv, line)
    assert not (tmp_path / "never").exists()


def test_train_issue_inputs_exit_2_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("stable_baselines3")
    import train

    cases = [
        (["--eval-seeds", "0-1000000000"], "--eval-seeds: at most 10000 seeds"),
        (["--n-envs", "1000000000"], "--n-envs must be an integer in 1..4096"),
        (["--hyperparams", "gamma=2"], "--hyperparams gamma=2: must be a number in [0, 1]"),
        (["--hyperparams", "net_arch=[-1]"], "--hyperparams net_arch=[-1]: must be a list"),
        (["--hyperparams", "learning_rate=nan"], "must be a finite number"),
        (["--device", "bogus"], "--device must be cpu, auto, cuda, cuda:N or mps"),
        (["--seed", "99999999999999999999"], "--seed must be an integer in 0..2147483647"),
        (["--set", "max_draft=inf"], "max_draft must be an integer"),
        (["--total-timesteps", "1e3"], "argument --total-timesteps: invalid int value"),
    ]
    for argv, expected in cases:
        capsys.readouterr()
        assert train.main([*argv, "--out", str(tmp_path / "never")]) == 2, argv
        line = one_line_error(capsys.readouterr().err, "train.py")
        assert expected in line, (argv, line)
    assert not (tmp_path / "never").exists()


def _traces(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "specstop_gym.traces", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=False,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"})


def test_traces_cli_issue_inputs(tmp_path: Path) -> None:
    ping = tmp_path / "ping.txt"
    ping.write_text("64 bytes from 1.2.3.4: icmp_seq=1 ttl=57 time=1 ms\n"
                    f"64 bytes from 1.2.3.4: icmp_seq={10**30} ttl=57 time=1 ms\n")
    t0 = time.perf_counter()
    r = _traces("convert", str(ping), str(tmp_path / "o.csv"), "--format", "ping")
    assert r.returncode == 2 and time.perf_counter() - t0 < 60
    assert f"{ping} line 2, field icmp_seq" in one_line_error(r.stderr, "python -m specstop_gym.traces")
    far = tmp_path / "far.txt"
    far.write_text("64 bytes from 1.2.3.4: icmp_seq=1 ttl=57 time=1 ms\n"
                   f"64 bytes from 1.2.3.4: icmp_seq={10**11} ttl=57 time=1 ms\n")
    r = _traces("convert", str(far), str(tmp_path / "o.csv"), "--format", "ping")
    assert r.returncode == 2 and "spans more than" in one_line_error(r.stderr, "python -m specstop_gym.traces")
    neg = tmp_path / "neg.txt"
    neg.write_text("# interval_ms: -100\n64 bytes from 1.2.3.4: icmp_seq=1 ttl=57 time=1 ms\n")
    r = _traces("convert", str(neg), str(tmp_path / "o.csv"), "--format", "ping")
    assert r.returncode == 2 and f"{neg} line 1, field interval_ms" in r.stderr
    acc = tmp_path / "big.jsonl"
    acc.write_text('{"format": "specstop-acceptance-v1"}\n'
                   '{"run_length": 0, "censored": false, "draft_length": 1000000000}\n')
    r = _traces("summary", str(acc))
    assert r.returncode == 2 and f"{acc} line 2, field draft_length" in r.stderr
    r = _traces("summary", str(ROOT / "traces" / "delay" / "synthetic_wifi_jitter.csv"), "--window-ms", "nan")
    assert r.returncode == 2 and "--window-ms must be a finite number" in r.stderr
    r = _traces("summary", str(ROOT / "traces" / "delay" / "synthetic_wifi_jitter.csv"), "--window-ms", "1e10")
    assert r.returncode == 2 and "choose a shorter window" in r.stderr
    r = _traces("summary", "/dev/zero")
    assert r.returncode == 2 and "not a regular file" in r.stderr


def test_scripts_print_one_line_for_argparse_errors() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--level", "episode"], capture_output=True,
                       text=True, cwd=ROOT, timeout=120, check=False)
    assert r.returncode == 2
    assert "argument --level: invalid choice" in one_line_error(r.stderr, "evaluate.py")


# ------------------------------------------------------------------------------------ output folder
def test_second_run_on_a_locked_folder_is_refused(tmp_path: Path, evaluate_module,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from specstop_gym.fileio import FolderLock

    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from specstop_gym.fileio import FolderLock; "
        "FolderLock(sys.argv[2], 'holder').acquire(); print('locked', flush=True); time.sleep(60)"),
        str(ROOT), str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert evaluate_module.main([*TINY_EVAL, "--out", str(out)]) == 2
        line = one_line_error(capsys.readouterr().err, "evaluate.py")
        assert "another process is writing to" in line and f"pid {holder.pid}" in line
        assert not (out / "summary.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the killed holder's lock: the folder is usable at once
    assert evaluate_module.main([*TINY_EVAL, "--out", str(out)]) == 0
    with FolderLock(out):
        pass


def test_status_orphans_and_rerun(tmp_path: Path, evaluate_module) -> None:
    from specstop_gym.fileio import temporary_name

    out = tmp_path / "run"
    assert evaluate_module.main([*TINY_EVAL[:-2], "--quiet", "--out", str(out)]) == 0  # with plots
    assert (out / "regret.png").exists()
    orphan = temporary_name(out / "summary.json")
    orphan.write_text("{half")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["status"] == "finished" and cfg["error"] is None and cfg["pid"] > 0
    assert evaluate_module.main([*TINY_EVAL, "--rounds-format", "csv.gz", "--out", str(out)]) == 0
    assert not orphan.exists()  # cleaned at the start of the run holding the lock
    names = sorted(p.name for p in out.iterdir())
    assert names == [".specstop.lock", "config.json", "rounds.csv.gz", "summary.json"]  # no stale plots/table
    s = json.loads((out / "summary.json").read_text())
    assert s["files"]["rounds"] == "rounds.csv.gz" and s["run_id"] == json.loads((out / "config.json").read_text())[
        "run_id"]


def test_rounds_formats_hold_the_same_table(tmp_path: Path, evaluate_module) -> None:
    from specstop_gym.dataset import read_dataset

    tables = {}
    for fmt in ("parquet", "csv.gz", "csv"):
        out = tmp_path / fmt
        assert evaluate_module.main([*TINY_EVAL, "--rounds-format", fmt, "--out", str(out)]) == 0
        tables[fmt] = read_dataset(out / f"rounds.{fmt}")
    for fmt in ("csv.gz", "csv"):
        assert list(tables[fmt]) == list(tables["parquet"])
        for col, ref in tables["parquet"].items():
            if ref.dtype.kind == "f":
                np.testing.assert_allclose(tables[fmt][col], ref, rtol=1e-9, err_msg=col)
            else:
                assert list(tables[fmt][col]) == list(ref), col


def test_disk_full_is_one_line_and_marks_the_run_failed(tmp_path: Path, evaluate_module,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from specstop_gym import dataset

    out = tmp_path / "run"
    real = dataset.DatasetWriter._flush

    def full(self):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.tmp))

    monkeypatch.setattr(dataset.DatasetWriter, "_flush", full)
    assert evaluate_module.main([*TINY_EVAL, "--out", str(out)]) == 1
    line = one_line_error(capsys.readouterr().err, "evaluate.py")
    assert "no space left on the device (ENOSPC)" in line and ".rounds.parquet." in line
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["status"] == "failed" and "No space left" in cfg["error"]
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".specstop.lock"]
    monkeypatch.setattr(dataset.DatasetWriter, "_flush", real)
    for code, text in ((errno.EROFS, "read-only file system (EROFS)"), (errno.EACCES, "permission denied")):
        from specstop_gym.evaluation import report

        def refuse(path, obj, code=code):
            raise OSError(code, "x", str(path))

        monkeypatch.setattr(report, "write_json_atomic", refuse)
        assert evaluate_module.main([*TINY_EVAL, "--out", str(out)]) == 1
        assert text in one_line_error(capsys.readouterr().err, "evaluate.py")


def test_free_space_is_checked_before_any_work(tmp_path: Path, evaluate_module, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from specstop_gym import fileio
    from specstop_gym.evaluation import report

    monkeypatch.setattr(fileio, "free_bytes", lambda folder: 1 << 20)
    monkeypatch.setattr(report, "run_comparison", lambda *a, **k: pytest.fail("work started"))
    assert evaluate_module.main([*TINY_EVAL, "--out", str(tmp_path / "run")]) == 2
    assert "not enough free space" in one_line_error(capsys.readouterr().err, "evaluate.py")


def test_atomic_path_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    from specstop_gym.fileio import atomic_path, atomic_write_text, is_temporary

    target = tmp_path / "model.zip"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.suffix == ".zip" and is_temporary(tmp.name) and tmp.parent == tmp_path
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["model.zip"]


# ------------------------------------------------------------------------------------ loading
@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("stable_baselines3")
    import train

    out = tmp_path_factory.mktemp("runs") / "ppo"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert train.main(["--total-timesteps", "128", "--out", str(out), "--eval-freq", "0", "--checkpoint-freq",
                           "64", "--set", "n_tokens=32", "--n-envs", "4", "--eval-seeds", "0-1", "--verbose", "0",
                           "--hyperparams", "n_steps=16", "batch_size=32", "n_epochs=1"]) == 0
    return out


def test_model_checksum_is_recorded_and_checked(tmp_path: Path, small_run: Path) -> None:
    import shutil

    from agents.sb3_agent import SB3Agent
    from specstop_gym.training.callbacks import list_checkpoints

    cfg = json.loads((small_run / "config.json").read_text())
    summary = json.loads((small_run / "summary.json").read_text())
    assert cfg["status"] == "finished" and len(cfg["sha256"]["model.zip"]) == 64
    assert summary["training"]["sha256"] == cfg["sha256"]
    scenario = make_scenario("qwen-geometric", n_tokens=32)
    SB3Agent(small_run, scenario)  # matches
    copy = tmp_path / "copy"
    shutil.copytree(small_run, copy)
    other = list_checkpoints(copy / "checkpoints")[0].model
    shutil.copy(other, copy / "model.zip")  # a valid model, but not the recorded one
    with pytest.raises(ValueError, match="does not match the sha256 recorded"):
        SB3Agent(copy, scenario)
    SB3Agent(other, scenario)  # checkpoints carry no record: loaded (trusted files only)


def test_stray_vecnormalize_is_never_unpickled(tmp_path: Path, small_run: Path) -> None:
    import shutil

    from agents.sb3_agent import SB3Agent

    copy = tmp_path / "copy"
    shutil.copytree(small_run, copy)
    marker = tmp_path / "pwned"
    payload = (b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")  # runs a command if unpickled
    (copy / "vecnormalize.pkl").write_bytes(payload)
    agent = SB3Agent(copy, make_scenario("qwen-geometric", n_tokens=32))
    assert agent.policy.normalizer is None and not marker.exists()


def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path: Path, small_run: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    import train
    from specstop_gym.training.callbacks import list_checkpoints, verify_checkpoint, verify_pickle

    copy = tmp_path / "copy"
    shutil.copytree(small_run, copy)
    ckpts = list_checkpoints(copy / "checkpoints")
    assert [c.steps for c in ckpts] == [64, 128]
    data = ckpts[-1].model.read_bytes()
    ckpts[-1].model.write_bytes(data[: len(data) // 2])  # truncated, as an unsafe writer would leave it
    assert verify_checkpoint(ckpts[-1], normalize=False) is not None  # (half a zip may expose an inner one)
    assert verify_checkpoint(ckpts[0], normalize=False) is None
    bad = tmp_path / "x.pkl"
    bad.write_bytes(b"\x80\x04\x95")
    assert verify_pickle(bad) is not None
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert train.main(["--resume", str(copy), "--total-timesteps", "192"]) == 0
    err = capsys.readouterr().err
    assert "rl_model_128_steps.zip is not usable" in err and "resuming from rl_model_64_steps.zip" in err
    cfg = json.loads((copy / "config.json").read_text())
    assert cfg["status"] == "finished" and cfg["num_timesteps"] >= 192
    assert [h["from_steps"] for h in cfg["history"]] == [0, 64]


def test_help_and_docs_say_trusted_files_only(evaluate_module) -> None:
    import train

    text = evaluate_module.build_parser().format_help()
    assert "sb3:PATH" in text and "load only files you trust" in text
    text = train.build_parser().format_help()
    assert "--resume" in text and "resume only run folders you trust" in text
    for doc in ("README.md", "docs/evaluation.md", "docs/training.md", "docs/robustness.md"):
        body = (ROOT / doc).read_text().lower()
        assert "trusted files only" in body or "trusted runs only" in body, doc
