"""The benchmark scripts run end to end on tiny budgets and report the ratios they promise.

Timing targets are not asserted (the machines are shared and noisy; the scripts report
ratios measured in one run). What is checked: each script runs through its ``main``
with a small budget, returns finite positive ratios for every environment or mode it
compares, and rejects out-of-range settings with an error naming the flag.
"""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module", autouse=True)
def _benchmarks_on_path():
    sys.path.insert(0, str(BENCHMARKS))
    yield
    sys.path.remove(str(BENCHMARKS))


def _bench(name: str):
    return importlib.import_module(name)


def _positive(x: float) -> bool:
    return math.isfinite(x) and x > 0


def test_single_env_benchmark_reports_ratios_to_cartpole(capsys) -> None:
    ratios = _bench("bench_single_env").main(["--steps", "300", "--repeats", "1"])
    assert set(ratios) == {f"{e}/{c}" for e in ("CartPole-v1", "SpecStop-v0", "SpecStopRound-v0")
                           for c in ("wall", "cpu")}
    assert ratios["CartPole-v1/wall"] == 1.0 and all(_positive(r) for r in ratios.values())
    assert "SpecStop-v0 / CartPole-v1" in capsys.readouterr().out


def test_vector_env_benchmark_reports_a_ratio_per_size_and_env() -> None:
    results = _bench("bench_vector_env").main(["--sizes", "4", "16", "--env_steps", "400", "--repeats", "1"])
    assert set(results) == {4, 16}
    for per_env in results.values():
        assert set(per_env) == {"CartPole-v1", "SpecStop-v0", "SpecStopRound-v0"}
        assert per_env["CartPole-v1"] == 1.0 and all(_positive(r) for r in per_env.values())


def test_batched_eval_benchmark_gives_identical_totals() -> None:
    out = _bench("bench_batched_eval").main(["--seeds", "3", "--requests", "1", "--repeats", "1",
                                             "--agent", "static-k"])
    assert _positive(out["ratio"]) and out["identical_totals"] == 1.0


def test_ppo_fps_benchmark_reports_the_environments_share_of_training(capsys) -> None:
    out = _bench("bench_ppo_fps").main(["--n_envs", "2", "3", "--timesteps", "64", "--n_steps", "16",
                                        "--batch_size", "16", "--n_epochs", "1", "--repeats", "1"])
    assert set(out) == {f"{n}/{side}/{what}" for n in (2, 3) for side in ("native", "dummy")
                        for what in ("fps", "env_share", "collect_share", "fps_if_free")} | {"2/fps_ratio", "3/fps_ratio"}
    assert all(_positive(v) for v in out.values())
    for n in (2, 3):
        for side in ("native", "dummy"):
            # the environment is part of collecting rollouts, which is part of learning
            assert out[f"{n}/{side}/env_share"] < out[f"{n}/{side}/collect_share"] < 1.0
            assert out[f"{n}/{side}/fps_if_free"] > out[f"{n}/{side}/fps"]
    assert "env share" in capsys.readouterr().out


def test_scale_benchmark_reports_cold_start_and_vector_ratios(capsys) -> None:
    """On the current cache (--reuse_cache: an empty one would compile every kernel, ~1 min)."""
    out = _bench("bench_scale").main(["--reuse_cache", "--cold_modes", "background", "--cold_envs", "4",
                                      "--rate_steps", "40", "--sizes", "8", "--env_steps", "200", "--repeats", "1"])
    assert set(out["cold"]) == {"single", "vector"}
    for per_mode in out["cold"].values():
        assert set(per_mode) == {"background"}
        for r in per_mode.values():
            assert 0 < r["import"] <= r["make_reset"] <= r["first_step"] <= r["compiled_after"] and r["compiled"]
            assert _positive(r["rate"])
    assert set(out["vector"]) == {8} and out["vector"][8]["CartPole-v1"]["wall"] == 1.0
    assert all(_positive(v["wall"]) and _positive(v["cpu"]) for v in out["vector"][8].values())
    text = capsys.readouterr().out
    assert "threading layer" in text and "SIMD" in text and "load average" in text


def test_baseline_sensitivity_reports_every_spec_at_every_point(capsys) -> None:
    out = _bench("baseline_sensitivity").main(["--presets", "qwen-geometric", "--delays_ms", "50", "400",
                                               "--seeds", "2", "--requests", "1", "--n_tokens", "32",
                                               "--agents", "naive-ucb", "specdec++:threshold=0.3"])
    assert [p["delay_ms"] for p in out["points"]] == [50.0, 400.0]
    for p in out["points"]:
        assert set(p["agents"]) == {"naive-ucb", "specdec++:threshold=0.3", "ucb-specstop", "oracle"}
        assert p["agents"]["oracle"]["gap"]["mean"] == 0.0 and p["agents"]["ucb-specstop"]["advantage"]["mean"] == 0.0
        assert all(_positive(a["latency"]["mean"]) for a in p["agents"].values())
    assert "`specdec++:threshold=0.3`" in capsys.readouterr().out
    # --first_seed: seeds 0 and 1 taken one at a time average to the two-seed run (common random numbers;
    # ucb-specstop draws nothing of its own, so a run does not depend on the batch)
    one = [_bench("baseline_sensitivity").main(["--presets", "qwen-geometric", "--delays_ms", "50", "--seeds", "1",
                                                "--first_seed", str(f), "--requests", "1", "--n_tokens", "32",
                                                "--agents", "static-k"])["points"][0]["agents"]["ucb-specstop"]["latency"]["mean"]
           for f in (0, 1)]
    assert np.mean(one) == pytest.approx(out["points"][0]["agents"]["ucb-specstop"]["latency"]["mean"], rel=1e-12)
    assert one[0] != one[1] and "1 seeds (1..1)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        _bench("baseline_sensitivity").main(["--metrics", "speed"])
    assert exc.value.code == 2 and "--metrics" in capsys.readouterr().err


def test_oracle_benchmark_reports_the_cost_ratio(capsys) -> None:
    out = _bench("bench_oracle").main(["--seeds", "2", "--requests", "1", "--repeats", "1",
                                       "--agents", "static-k", "ucb-specstop"])
    assert {"ratio_wall", "ratio_cpu", "oracle_cpu_s", "agents_cpu_s"} <= set(out)
    assert all(_positive(v) for v in out.values())
    text = capsys.readouterr().out
    assert "scope=request, grid_ms=10.0" in text and "2 per-run request DPs" in text and "load average" in text
    _bench("bench_oracle").main(["--seeds", "2", "--requests", "1", "--repeats", "1", "--agents", "static-k",
                                 "--oracle", "oracle:scope=episode"])
    assert "whole-episode DPs: 2" in capsys.readouterr().out


def test_oracle_scope_script_bounds_the_per_request_policy(capsys) -> None:
    rows = _bench("oracle_scope").main(["--cases", "drift", "trace-nr5g", "--requests", "2", "--seeds", "2",
                                        "--n_tokens", "32", "--continuations", "token-clock", "completion"])
    assert [(r["case"], r["requests"]) for r in rows] == [("drift", 2), ("trace-nr5g", 2)]
    for r in rows:
        for g in ("token-clock", "completion"):
            assert -1e-7 <= r[g]["min_pct"] <= r[g]["mean_pct"] <= r[g]["max_pct"] < 0.1
        assert r["leak"] < 1e-6
    assert "| `drift` | 2 | 1 |" in capsys.readouterr().out


def test_oracle_refinement_script_reports_every_grid() -> None:
    rows = _bench("oracle_refinement").main(["--scenario", "trace-cellular", "--grids", "20", "10", "--seeds", "2",
                                             "--requests", "1", "--n_tokens", "32"])
    assert [r["grid_ms"] for r in rows] == [20.0, 10.0]
    assert rows[-1]["diff_pct"] == 0.0 and rows[-1]["decisions_differing"] == 0.0
    assert all(_positive(r["value_ms_per_token"]) and 0.0 <= r["decisions_differing"] <= 1.0 for r in rows)


def test_regret_shape_fits_both_shapes(tmp_path) -> None:
    mod = _bench("regret_shape")
    t = np.arange(2, 200, dtype=float)
    fit = mod.fit_shapes(t, 3.0 * np.log(t))
    assert fit["b"] == pytest.approx(3.0) and fit["rms_log"] == pytest.approx(0.0, abs=1e-9) and fit["rms_sqrt"] > 0
    fit = mod.fit_shapes(t, 0.5 * np.sqrt(t * np.log(t)))
    assert fit["a"] == pytest.approx(0.5) and fit["rms_sqrt"] == pytest.approx(0.0, abs=1e-9)
    out = mod.main(["--presets", "qwen-geometric@95", "--seeds", "2", "--rounds", "60", "--fit_from", "10",
                    "--plot", str(tmp_path / "r.png"), "--out", str(tmp_path / "r.json")])
    p = out["presets"][0]
    assert p["k_star"] == 2 and p["rounds"] == 60 and all(np.isfinite(list(p["fit"].values())))
    assert (tmp_path / "r.png").stat().st_size > 0 and (tmp_path / "r.json").exists()
    with pytest.raises(SystemExit) as exc:
        mod.main(["--presets", "drift", "--rounds", "20"])
    assert exc.value.code == 2


def test_delay_tracker_script_counts_alarms_and_delays() -> None:
    out = _bench("delay_tracker").main(["--thresholds", "8", "--runs", "4", "--rounds", "100", "--warmup", "50",
                                        "--steps", "40:400:0.1"])
    row = out["rows"][0]
    assert row["steps"]["40:400:0.1"]["mean_delay_rounds"] == 1.0
    assert all(0.0 <= f["alarms_per_1000_rounds"] < 50 for f in row["false_alarms"].values())


def test_adaptive_targets_script_runs_every_section(capsys) -> None:
    mod = _bench("adaptive_targets")
    variants = mod.drift_variants()  # the drift section runs the path-DP oracle: too slow for a test
    assert [tag for tag, _ in variants] == ["step, 40 ms first", "step, 400 ms first", "linear, 40 ms first"]
    assert variants[1][1]["drift_schedule"] == ((0.0, 400.0), (20000.0, 40.0))
    out = mod.main(["--sections", "markov", "switch", "final-k", "--seeds", "2", "--first_seed", "3", "--csi_requests", "1",
                    "--markov_presets", "markov-csi", "--markov_agents", "contextual-ucb",
                    "--switch_agents", "ts-specstop:window=50", "--switch_requests", "1", "--final_seeds", "2", "--final_requests", "1",
                    "--final_agents", "ucb-specstop", "--final_first_seed", "5"])
    for sec in ("markov", "switch"):
        for blk in out[sec]:
            assert blk["agents"]["oracle"]["gap_pct"]["mean"] == 0.0
    assert 0 <= out["final-k"]["agents"]["ucb-specstop"]["end_at_k_star"] <= 2
    assert out["final-k"]["seeds"] == [5, 6]  # --final_first_seed: seeds 5..6
    printed = capsys.readouterr().out
    assert "(seeds 5..6)" in printed and "over 2 seeds, 3..4)" in printed


def test_baseline_sensitivity_applies_overrides(capsys) -> None:
    out = _bench("baseline_sensitivity").main(["--presets", "llama-heavy-head", "--delays_ms", "100", "--seeds", "2",
                                               "--requests", "1", "--n_tokens", "32", "--agents", "static-k",
                                               "--set", "confidence_sigma=0.5", "--metrics", "gap"])
    assert out["points"][0]["agents"]["oracle"]["gap"]["mean"] == 0.0
    with pytest.raises(SystemExit) as exc:
        _bench("baseline_sensitivity").main(["--set", "no_such_field=1"])
    assert exc.value.code == 2 and "no_such_field" in capsys.readouterr().err


@pytest.mark.parametrize("script, argv, flag", [
    ("bench_vector_env", ["--sizes", "8", "0"], "--sizes"),
    ("bench_single_env", ["--repeats", "0"], "--repeats"),
    ("bench_batched_eval", ["--seeds", "0"], "--seeds"),
    ("bench_ppo_fps", ["--n_envs", "-1"], "--n_envs"),
    ("bench_scale", ["--repeats", "0"], "--repeats"),
    ("baseline_sensitivity", ["--seeds", "0"], "--seeds"),
    ("baseline_sensitivity", ["--first_seed", "-1"], "--first_seed"),
    ("bench_oracle", ["--requests", "0"], "--requests"),
    ("oracle_scope", ["--seeds", "1"], "--seeds"),
    ("regret_shape", ["--seeds", "0"], "--seeds"),
    ("delay_tracker", ["--runs", "0"], "--runs"),
    ("adaptive_targets", ["--final_seeds", "0"], "--final_seeds"),
    ("adaptive_targets", ["--final_first_seed", "-1"], "--final_first_seed"),
    ("adaptive_targets", ["--first_seed", "-1"], "--first_seed"),
])
def test_benchmarks_reject_out_of_range_settings_naming_the_flag(script: str, argv: list[str], flag: str,
                                                                  capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        _bench(script).main(argv)
    assert exc.value.code == 2
    assert f"{flag} must be >=" in capsys.readouterr().err


@pytest.mark.parametrize("script, argv, expected", [
    ("bench_batched_eval", ["--seeds", "1e9"], "invalid int value"),
    ("bench_batched_eval", ["--seeds", "1000000000000"], "--seeds must be a finite number <= 1e+09"),
    ("bench_single_env", ["--scenario", "nope"], "--scenario: unknown scenario 'nope'"),
    ("bench_batched_eval", ["--agent", "nope"], "--agent: unknown agent 'nope'"),
    ("bench_memory", ["--repeats", "1000"], "--repeats must be a finite number <= 100"),
])
def test_benchmarks_refuse_bad_flags_in_one_line(script: str, argv: list[str], expected: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        _bench(script).main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and expected in err and "\n" not in err


def test_memory_benchmark_reports_the_peak_ratio() -> None:
    out = _bench("bench_memory").main(["--small", "1", "--large", "2", "--requests", "1", "--repeats", "1",
                                       "--agents", "static-k", "--no_warmup"])
    assert _positive(out["ratio_median"]) and out["small_mib"] > 10 and out["large_mib"] > 10


def test_scale_benchmark_rejects_an_unknown_cold_mode(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        _bench("bench_scale").main(["--cold_modes", "lukewarm"])
    assert exc.value.code == 2 and "--cold_modes" in capsys.readouterr().err
