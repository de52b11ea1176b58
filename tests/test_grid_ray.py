"""Experiment grids on Ray: a two-node test cluster on this machine (``ray.cluster_utils.Cluster``,
one CPU per node, bound to the loopback address) shared by the module, and ``--ray`` (a local
runtime started by evaluate.py). The same grid gives identical numbers in process and on Ray; a
grid whose driver is killed with SIGKILL resumes on the cluster without recomputing a finished
cell and ends with the uninterrupted run's results.

Skipped without the ``ray`` extra (``pip install "specstop-gym[ray]"``; CI installs it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # nodes on 127.0.0.1 (read by Ray at import)
ray = pytest.importorskip("ray")

from grid_helpers import (  # noqa: E402
    KILL_GRID,
    TINY_GRID,
    assert_same_results,
    kill_after,
    run_cli,
    write_grid,
)


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes on this machine, one CPU each (started once for the module: ~15 s)."""
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield c
    c.shutdown()


@pytest.fixture(scope="module")
def in_process(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("inproc")
    grid = write_grid(d, TINY_GRID)
    r = run_cli("--grid", str(grid), "--out", str(d / "run"), "--quiet", "--no-plots")
    assert r.returncode == 0, r.stderr
    return grid, d / "run"


def test_cluster_gives_the_in_process_numbers(cluster, in_process, tmp_path: Path) -> None:
    grid, reference = in_process
    out = tmp_path / "ray"
    r = run_cli("--grid", str(grid), "--ray-address", cluster.address, "--out", str(out), "--quiet", "--no-plots")
    assert r.returncode == 0, r.stderr
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["backend"]["backend"] == "ray" and cfg["backend"]["nodes"] == 2 and cfg["backend"]["cpus"] == 2
    nodes = {json.loads(p.read_text())["worker"]["ray_node"] for p in (out / "cells").iterdir()}
    assert len(nodes) == 2 and None not in nodes  # the cells ran on both nodes
    assert_same_results(reference, out)


def test_killed_grid_resumes_on_the_cluster(cluster, tmp_path: Path) -> None:
    grid = write_grid(tmp_path, KILL_GRID)
    whole = tmp_path / "whole"
    args = ["--grid", str(grid), "--ray-address", cluster.address, "--quiet", "--no-plots"]
    r = run_cli(*args, "--out", str(whole))
    assert r.returncode == 0, r.stderr
    total = json.loads((whole / "config.json").read_text())["cells_total"]
    out = tmp_path / "killed"
    at_kill = kill_after([*args, "--out", str(out)], out, 3)
    assert 3 <= len(at_kill) < total
    r = run_cli(*args, "--out", str(out))
    assert r.returncode == 0, r.stderr
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["cells_reused"], cfg["cells_computed"]) == (len(at_kill), total - len(at_kill))
    for key, data in at_kill.items():
        assert (out / "cells" / f"{key}.json").read_bytes() == data
    assert_same_results(whole, out)


def test_local_runtime_flag(in_process, tmp_path: Path) -> None:
    """--ray starts (and stops) a Ray runtime on this machine's cores: the same numbers again."""
    grid, reference = in_process
    out = tmp_path / "local"
    r = run_cli("--grid", str(grid), "--ray", "--out", str(out), "--quiet", "--no-plots")
    assert r.returncode == 0, r.stderr
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["backend"]["address"] == "local" and cfg["backend"]["cpus"] == os.cpu_count()
    assert_same_results(reference, out)
