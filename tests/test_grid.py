"""Experiment grids in process: grid files and their errors, the outputs, resumption after a
SIGKILL (no finished cell recomputed, the same result as an uninterrupted run), the --paper grid
file against the code that generates it, and the plain progress line.

The Ray backend runs the same grids in tests/test_grid_ray.py.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from grid_helpers import (
    KILL_GRID,
    ROOT,
    TINY_GRID,
    assert_same_results,
    kill_after,
    result_doc,
    run_cli,
    write_grid,
)

from specstop_gym.cli import UsageError
from specstop_gym.evaluation.grid import grid_document, grid_from_dict, load_grid, parse_grid


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny grid run once in process (the reference of the other tests)."""
    d = tmp_path_factory.mktemp("tiny")
    grid = write_grid(d, TINY_GRID)
    r = run_cli("--grid", str(grid), "--out", str(d / "run"))
    assert r.returncode == 0, r.stderr
    return d / "run"


# --------------------------------------------------------------------------- outputs
def test_outputs_of_a_grid(tiny: Path) -> None:
    from specstop_gym.dataset import read_dataset

    cfg = json.loads((tiny / "config.json").read_text())
    assert cfg["status"] == "finished" and cfg["cells_total"] == 6 and cfg["cells_computed"] == 6
    assert cfg["backend"]["backend"] == "in-process"
    summary = json.loads((tiny / "summary.json").read_text())
    labels = [c["label"] for c in summary["cells"]]
    assert labels == ["delays/qwen-geometric/50 ms/seeds 0..1", "delays/qwen-geometric/50 ms/seeds 2..3",
                      "delays/qwen-geometric/400 ms/seeds 0..1", "delays/qwen-geometric/400 ms/seeds 2..3",
                      "markov/markov-csi/seeds 0..1", "markov/markov-csi/seeds 2..3"]
    # the rounds dataset: one part per cell, the folder reads as one table
    parts = sorted(p.name for p in (tiny / "rounds").iterdir())
    assert parts == sorted(f"{c['key']}.parquet" for c in summary["cells"])
    rounds = read_dataset(tiny / "rounds")
    cells = {c["key"]: c for c in summary["cells"]}
    for key, c in cells.items():
        mine = rounds["cell"] == key
        for agent, e in c["summary"]["agents"].items():
            rows = mine & (rounds["agent"] == agent)
            assert rows.sum() == e["rounds"]
            # per-seed latency recomputed from the rounds = the summary's
            for i, seed in enumerate(c["summary"]["seeds"]):
                sel = rows & (rounds["seed"] == seed)
                lat = rounds["time_ms"][sel].sum() / rounds["tokens"][sel].sum()
                assert lat == pytest.approx(e["per_seed"]["per_token_latency_ms"][i], rel=1e-12)
    stationary = np.isin(rounds["cell"], [c["key"] for c in summary["cells"] if c["coordinates"]["delay_ms"]])
    assert np.isfinite(rounds["pseudo_regret_ms"][stationary]).all()
    assert np.isnan(rounds["pseudo_regret_ms"][~stationary]).all()  # Markov channel: no pseudo-regret
    # per (cell, agent) and per (cell, agent, seed) tables
    ct = read_dataset(tiny / "cells.parquet")
    assert len(ct["cell"]) == 2 * 2 * 3 + 2 * 4  # delays: 3 agents; markov: 3 + the oracle
    st = read_dataset(tiny / "seeds.parquet")
    assert len(st["cell"]) == 2 * len(ct["cell"])
    assert sorted(p.name for p in (tiny / "plots").iterdir()) == ["delays__qwen-geometric.png", "markov.png"]
    for p in (tiny / "plots").iterdir():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_reuses_every_cell(tiny: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(tiny, copy)
    before = {p.name: p.read_bytes() for p in (copy / "cells").iterdir()}
    grid = write_grid(tmp_path, TINY_GRID)
    r = run_cli("--grid", str(grid), "--out", str(copy), "--quiet")
    assert r.returncode == 0, r.stderr
    cfg = json.loads((copy / "config.json").read_text())
    assert (cfg["cells_reused"], cfg["cells_computed"]) == (6, 0)
    assert {p.name: p.read_bytes() for p in (copy / "cells").iterdir()} == before
    assert_same_results(tiny, copy)


def test_flags_make_the_same_cells_as_a_file(tiny: Path, tmp_path: Path) -> None:
    """--grid-delays/--seed-block describe the delays experiment: the same cell keys and numbers."""
    r = run_cli("--scenarios", "qwen-geometric", "--agents", "ucb-specstop", "static-k:k=2", "oracle",
                "--seeds", "4", "--seed-block", "2", "--requests", "1", "--set", "n_tokens=32",
                "--grid-delays", "50", "400", "--out", str(tmp_path / "flags"), "--quiet", "--no-plots")
    assert r.returncode == 0, r.stderr
    flags, file = result_doc(tmp_path / "flags"), result_doc(tiny)
    assert set(flags) <= set(file)
    for key in flags:
        assert flags[key]["summary"] == file[key]["summary"]


# --------------------------------------------------------------------------- resumption
def test_killed_grid_resumes_without_recomputing(tmp_path: Path) -> None:
    """SIGKILL after some cells finished; the rerun computes only the others and ends with the same
    results as an uninterrupted run."""
    grid = write_grid(tmp_path, KILL_GRID)
    whole = tmp_path / "whole"
    r = run_cli("--grid", str(grid), "--out", str(whole), "--quiet", "--no-plots")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "killed"
    at_kill = kill_after(["--grid", str(grid), "--out", str(out), "--quiet", "--no-plots"], out, 3)
    total = json.loads((whole / "config.json").read_text())["cells_total"]
    assert 3 <= len(at_kill) < total
    assert json.loads((out / "config.json").read_text())["status"] == "running"  # it died
    r = run_cli("--grid", str(grid), "--out", str(out), "--quiet", "--no-plots")
    assert r.returncode == 0, r.stderr
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["status"] == "finished"
    assert (cfg["cells_reused"], cfg["cells_computed"]) == (len(at_kill), total - len(at_kill))
    for key, data in at_kill.items():  # the finished cells were not touched
        assert (out / "cells" / f"{key}.json").read_bytes() == data
    run_ids = {json.loads(p.read_text())["computed_by"] for p in (out / "cells").iterdir()}
    assert len(run_ids) == 2
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]  # the killed run's temporaries are gone
    assert_same_results(whole, out)


# --------------------------------------------------------------------------- the --paper grid
@pytest.mark.parametrize("quick", [False, True])
def test_paper_grid_files_match_the_budget(quick: bool) -> None:
    from specstop_gym.evaluation.paper import PaperBudget, paper_grid, paper_grid_path

    budget = PaperBudget.quick() if quick else PaperBudget()
    shipped = grid_document(load_grid(paper_grid_path(quick)))
    generated = grid_document(grid_from_dict(paper_grid(budget, "paper-quick" if quick else "paper")))
    shipped.pop("source")
    generated.pop("source")
    assert shipped == generated


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(("text", "message"), [
    ("name = \"g\"\n[[experiment]]\nname = \"a\"\ndelay = [1]\n", "grid.toml:4: experiment[1].delay: unknown key"),
    ("name = \"g\"\n[[experiment]]\nname = \"a\"\nscenarios = [\"nope\"]\n",
     "grid.toml:4: experiment[1].scenarios: unknown scenario 'nope'"),
    ("name = \"g\"\n\n[[experiment]]\nname = \"a\"\n\n[[experiment]]\nname = \"b\"\ndelays_ms = [10, -1]\n",
     "grid.toml:8: experiment[2].delays_ms: every value must be a finite number in [0, 600000] ms, got -1"),
    ("name = \"g\"\n[[experiment]]\nname = \"a\"\nagents = [\"ucb\"]\n", "grid.toml:4: experiment[1].agents: unknown agent 'ucb'"),
    ("name = \"g\"\n[[experiment]]\nname = \"a\"\nset = { alpha = 2.0 }\n", "grid.toml:4: experiment[1].set: scenario"),
    ("name = \"g\"\n[[experiment]]\nname = \"a\"\nset = { alfa = 0.5 }\n",
     "grid.toml:4: experiment[1].set.alfa: unknown scenario field"),
    ("name = \"g\"\n[[experiment]]\nname = \"a\"\ndelays_ms = [10]\ntraces = [\"x.csv\"]\n",
     "grid.toml:5: experiment[1].traces: one channel axis per experiment"),
    ("name = \"g\"\n[[experiment]]\nname = \"a\"\ntraces = [\"/nonexistent/x.csv\"]\n",
     "grid.toml:4: experiment[1].traces: scenario 'qwen-geometric'"),
    ("seeds = \"0-3,x\"\n", "grid.toml:1: seeds:"),
    ("name = \"g\"\n[[experiment]]\nname = \"a\"\nseed_block = 0\n", "grid.toml:4: experiment[1].seed_block: must be"),
    ("name = \"g\"\nseeds = 4\n[[experiment]]\nname = \"a\"\n[[experiment]]\nname = \"a\"\n",
     "grid.toml:6: experiment[2].name: two experiments are named 'a'"),
    ("name = \"g\"\n[[experiment]]\nname = \"a\"\n[[experiment.variants]]\nname = \"v\"\nset = { max_draft = 0 }\n",
     "grid.toml:6: experiment[1].variants[1].set: scenario"),
    ("name = [\"g\"\n", "grid.toml:1: invalid TOML"),
])
def test_grid_file_errors_name_file_line_and_key(tmp_path: Path, text: str, message: str, evaluate_module,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    grid = write_grid(tmp_path, text)
    assert evaluate_module.main(["--grid", str(grid), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("evaluate.py: error: ")
    assert message in lines[0].replace(str(tmp_path) + "/", ""), lines[0]
    assert not (tmp_path / "out").exists()  # nothing run, nothing written


def test_grid_file_error_from_the_command_line(tmp_path: Path) -> None:
    grid = write_grid(tmp_path, "name = \"g\"\n[[experiment]]\nname = \"a\"\nlevel = \"bits\"\n")
    r = run_cli("--grid", str(grid), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr == f"evaluate.py: error: {grid}:4: experiment[1].level: must be \"round\" or \"token\", got 'bits'\n"


@pytest.mark.parametrize(("args", "message"), [
    (["--seeds", "4"], "--seeds: not with --grid"),
    (["--sweep-seeds", "2"], "--sweep-seeds: not used by grids"),
    (["--ray", "--ray-address", "auto"], "--ray-address: give either --ray"),
    (["--quick"], "--quick: only with --paper"),
])
def test_flag_conflicts(tmp_path: Path, args: list[str], message: str, evaluate_module,
                        capsys: pytest.CaptureFixture[str]) -> None:
    grid = write_grid(tmp_path, TINY_GRID)
    assert evaluate_module.main(["--grid", str(grid), *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize(("args", "message"), [
    (["--grid-delays", "10", "-5"], "--grid-delays must be a finite number"),
    (["--grid-traces", "/nonexistent.csv"], "--grid-traces: scenario 'qwen-geometric': file not found"),
    (["--seed-block", "0"], "--seed-block must be an integer"),
    (["--grid", "/nonexistent.toml"], "/nonexistent.toml: no such grid file"),
    (["--grid-delays", "50", "--ray-address", "127.0.0.1:1"], "--ray-address '127.0.0.1:1': cannot connect"),
])
def test_flag_grid_errors(tmp_path: Path, args: list[str], message: str, evaluate_module,
                          capsys: pytest.CaptureFixture[str]) -> None:
    assert evaluate_module.main([*args, "--quiet", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_parse_grid_defaults_and_order() -> None:
    g = parse_grid('name = "g"\nseeds = "0-2,7"\nrequests = 3\nset = { alpha = 0.6 }\n'
                   '[[experiment]]\nname = "a"\nset = { n_tokens = 16 }\n'
                   '[[experiment]]\nname = "b"\nseeds = 2\nrequests = 1\n')
    a, b = g.experiments
    assert a.seeds == (0, 1, 2, 7) and a.requests == 3 and dict(a.set) == {"alpha": 0.6, "n_tokens": 16}
    assert b.seeds == (0, 1) and b.requests == 1 and dict(b.set) == {"alpha": 0.6}
    with pytest.raises(UsageError, match=r"<grid>:1: experiment\[1\]\.name: missing"):
        parse_grid("[[experiment]]\n")


# --------------------------------------------------------------------------- progress
def test_plain_progress_line_without_a_terminal() -> None:
    from specstop_gym.evaluation.grid_run import Progress

    buf = io.StringIO()
    p = Progress(4, 1, every_s=0.0, stream=buf)
    p.update("a/b")
    p.update("a/c")
    p.close()
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("grid: 1/4 cells (25%)") and "eta ?" in lines[0]
    assert lines[-1].startswith("grid: 3/4 cells (75%)") and "eta 0:" in lines[-1] and lines[-1].endswith("last a/c")


def test_the_documented_grid_file_is_valid() -> None:
    """The example grid of docs/evaluation.md parses and expands (every cell validated)."""
    import re

    from specstop_gym.evaluation.grid import expand

    doc = (ROOT / "docs" / "evaluation.md").read_text()
    text = re.search(r"### The grid file.*?```toml\n(.*?)```", doc, flags=re.S).group(1)
    cells = expand(parse_grid(text, "evaluation.md"), "code")
    assert [c.label for c in cells][:2] == ["delays/qwen-geometric/25 ms/seeds 0..7",
                                            "delays/qwen-geometric/25 ms/seeds 8..15"]
    assert len(cells) == 2 * 4 * 2 + 2 * 2 + 2 * 2
    assert len({c.key for c in cells}) == len(cells)


def test_a_failing_cell_is_named_and_the_finished_ones_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from specstop_gym.evaluation import backends
    from specstop_gym.evaluation.cell import code_key
    from specstop_gym.evaluation.grid import expand
    from specstop_gym.evaluation.grid_run import load_finished, run_grid

    grid = parse_grid(TINY_GRID.replace("n_tokens = 32", "n_tokens = 8"), "tiny.toml")
    cells = expand(grid, code_key())
    real = backends.run_cell
    calls = []

    def flaky(spec, key=""):
        calls.append(key)
        if len(calls) == 3:
            raise ZeroDivisionError("injected")
        return real(spec, key)

    monkeypatch.setattr(backends, "run_cell", flaky)
    with pytest.raises(ZeroDivisionError, match="injected"):
        run_grid(grid, cells, tmp_path, backends.InProcessBackend(), quiet=True, plots=False, code=code_key())
    bad = next(c for c in cells if c.key == calls[2])
    assert f"grid: cell {bad.label} ({bad.key}): failed; the 2 finished cells are kept" in capsys.readouterr().err
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["status"] == "failed" and cfg["error"].startswith(f"cell {bad.label}") and "injected" in cfg["error"]
    assert set(load_finished(tmp_path, cells)) == set(calls[:2])


# --------------------------------------------------------------------------- fuzzed grid files
def _fuzz_grid_documents():
    from hypothesis import strategies as st

    junk = st.one_of(st.integers(-5, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                     st.booleans(), st.lists(st.integers(-3, 5), max_size=3), st.none())
    values = {
        "name": st.one_of(st.sampled_from(["a", "b c", "x/y", "", " a", "ok-1"]), junk),
        "scenarios": st.one_of(st.lists(st.sampled_from(["qwen-geometric", "markov-csi", "nope", ""]), max_size=2), junk),
        "agents": st.one_of(st.lists(st.sampled_from(["oracle", "static-k:k=3", "static-k:k=99", "best-fixed-k:x",
                                                      "ucb-specstop", "sb3:/none.zip", "nope"]), max_size=2), junk),
        "seeds": st.one_of(st.integers(-1, 4), st.sampled_from(["0-2", "3-1", "x", "0-100000000"]),
                           st.lists(st.integers(-1, 3), max_size=3), junk),
        "seed_block": st.one_of(st.integers(-1, 3), junk),
        "level": st.one_of(st.sampled_from(["round", "token", "episode"]), junk),
        "requests": st.one_of(st.integers(-1, 2), junk),
        "rounds": st.one_of(st.integers(-1, 3), junk),
        "set": st.one_of(st.dictionaries(st.sampled_from(["alpha", "n_tokens", "max_draft", "alfa", "delay_ms"]),
                                         st.one_of(st.integers(-2, 40), st.floats(-1, 2), st.text(max_size=3)),
                                         max_size=2), junk),
        "delays_ms": st.one_of(st.lists(st.one_of(st.floats(-10, 1e6), st.just(float("nan"))), max_size=2), junk),
        "critical_delay_factors": st.one_of(st.lists(st.floats(-1, 2000), max_size=2), junk),
        "traces": st.one_of(st.lists(st.sampled_from(["/no/such.csv", "delay/synthetic_wifi_jitter.csv"]),
                                     max_size=1), junk),
        "bogus": junk,
    }
    experiment = st.fixed_dictionaries({"name": st.sampled_from(["e1", "e2"])},
                                       optional={k: v for k, v in values.items() if k != "name"})
    return st.fixed_dictionaries({}, optional={**{k: values[k] for k in ("name", "seeds", "set", "agents")},
                                               "experiment": st.one_of(st.lists(experiment, max_size=2), junk)})


def test_fuzzed_grid_documents_are_accepted_or_refused_in_one_line() -> None:
    """Random grid documents (valid keys with valid, edge and junk values, unknown keys): expanded
    into cells, or refused with a UsageError naming the file; never another exception."""
    from hypothesis import HealthCheck, given, settings

    from specstop_gym.evaluation.grid import expand

    @settings(max_examples=60, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(doc=_fuzz_grid_documents())
    def check(doc: dict) -> None:
        try:
            cells = expand(grid_from_dict(doc, "fuzz.toml"), "code")
        except UsageError as e:
            assert str(e).startswith("fuzz.toml") and "\n" not in str(e), str(e)
            return
        assert cells and all(c.spec.seeds for c in cells)

    check()
