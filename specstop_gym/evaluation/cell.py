"""One cell of an experiment grid: a comparison of agents on one scenario and one block of seeds,
as a pure function of its configuration (so any backend may run it, anywhere, any number of
times, and get the same numbers).

:func:`run_cell` takes a :class:`CellSpec` (the resolved :class:`ScenarioConfig`, the agent
specs, the seeds, the decision level, the round cap, whether to record the rounds) and returns a
plain dict:

* ``summary``: the per-cell summary, the same document as ``evaluate.py``'s summary.json
  (:func:`specstop_gym.evaluation.report.build_summary`) without its run-dependent fields;
* ``stats``: per agent and per seed, the sums the paper's claims need beyond the summary
  (rounds, sum of k, of rtt and of round time, start of the last round);
* ``rounds``: the cell's rounds table as the bytes of a Parquet file written by
  :class:`specstop_gym.dataset.DatasetWriter` (None without rounds), so that a worker on another
  machine returns it through the backend and the driver writes it with one atomic write;
* ``timing``, ``worker``: wall-clock and CPU seconds (of the worker process) and where the cell
  ran (not part of the result);
* ``code_key``: the worker's :func:`code_key`, which the driver checks against its own.

:func:`code_key` is the code version in every cell's cache key (docs/evaluation.md, "Resuming a
grid"): the package version, a sha256 over the source files that can change a result, and the
versions of the numerical libraries.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.config import ScenarioConfig

# ----------------------------------------------------------------------------- code version
CODE_PACKAGES = ("specstop_gym", "agents")
"""Packages whose source files enter :func:`code_key`."""
CODE_EXCLUDED = (
    "specstop_gym/__main__.py", "specstop_gym/cli.py", "specstop_gym/training/",
    "specstop_gym/traces/cli.py", "specstop_gym/traces/__main__.py", "specstop_gym/traces/recorder.py",
    "specstop_gym/evaluation/plots.py", "specstop_gym/evaluation/paper.py", "specstop_gym/evaluation/grid.py",
    "specstop_gym/evaluation/grid_run.py", "specstop_gym/evaluation/grid_plots.py",
    "specstop_gym/evaluation/backends.py",
)
"""Source files (or folders, ending in ``/``) that cannot change a cell's numbers: command-line
plumbing, training, trace tools, plots, the paper's judging, and the grid's orchestration (file
loading, scheduling, progress, outputs; a change there that alters a cell's configuration changes
the configuration's hash instead). Every other ``.py`` file of :data:`CODE_PACKAGES` counts."""
NUMERIC_LIBRARIES = ("numpy", "numba", "scipy", "pyarrow")


def code_files() -> list[tuple[str, Path]]:
    """(relative name, path) of the source files that enter :func:`code_key`, sorted by name."""
    import agents

    import specstop_gym

    out = []
    for pkg in (specstop_gym, agents):
        root = Path(pkg.__file__).resolve().parent
        for path in root.rglob("*.py"):
            name = f"{root.name}/{path.relative_to(root).as_posix()}"
            if any(name == ex or (ex.endswith("/") and name.startswith(ex)) for ex in CODE_EXCLUDED):
                continue
            out.append((name, path))
    return sorted(out)


@functools.lru_cache(maxsize=1)
def code_key() -> str:
    """``<package version>+<16 hex digits>``: a sha256 over the name and bytes of every file of
    :func:`code_files`, the versions of :data:`NUMERIC_LIBRARIES`, the Python version and the
    machine architecture (computed once per process)."""
    import importlib

    import specstop_gym

    h = hashlib.sha256()
    for name, path in code_files():
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    for lib in NUMERIC_LIBRARIES:
        try:
            version = str(getattr(importlib.import_module(lib), "__version__", "?"))
        except ImportError:
            version = "absent"
        h.update(f"{lib}={version}\0".encode())
    h.update(f"python={platform.python_version()}\0machine={platform.machine()}\0".encode())
    return f"{specstop_gym.__version__}+{h.hexdigest()[:16]}"


# ----------------------------------------------------------------------------- the cell
@dataclass(frozen=True)
class CellSpec:
    """What a cell computes (all of it enters the cache key, with :func:`code_key`)."""

    scenario: ScenarioConfig
    agents: tuple[str, ...]
    seeds: tuple[int, ...]
    level: str = "round"
    max_rounds: int | None = None
    rounds: bool = True
    """Record the rounds table of the cell."""


ROUNDS_SCHEMA: tuple[tuple[str, str], ...] = (("cell", "string"),)  # completed below from report.ROUNDS_SCHEMA
"""Columns of a grid's rounds dataset: the cell key, then evaluate.py's rounds columns (all of them:
``pseudo_regret_ms`` is NaN on non-stationary channels, so every part of the dataset has one
schema)."""


def rounds_schema() -> list[tuple[str, str]]:
    from .report import ROUNDS_SCHEMA as EVAL_SCHEMA

    return [*ROUNDS_SCHEMA, *EVAL_SCHEMA]


class _CellRounds:
    """The rounds table of one cell, written to a local temporary file: the columns of
    :func:`rounds_schema` (the cell key first, every column present). Batches (one per round
    index: as many rows as seeds) are gathered into chunks of :data:`CHUNK_ROWS` rows before they
    reach the :class:`~specstop_gym.dataset.DatasetWriter` (per-batch writes cost a fifth of a
    token-level cell). Quacks like :class:`~specstop_gym.evaluation.report.RoundsFile` for
    :func:`~specstop_gym.evaluation.report.run_comparison`."""

    CHUNK_ROWS = 8192
    COLUMNS = ("seed", "round", "k", "accepted", "tokens", "time_ms", "rtt_ms", "state", "start_ms", "regret_ms")

    def __init__(self, path: Path, cell_key: str, scenario: ScenarioConfig) -> None:
        from ..dataset import DatasetWriter
        from .report import SCHEMA_VERSION

        self.path = path
        self.key = cell_key
        self.scenario = scenario.name
        self.row_group_rows = 1 << 16
        self.writer = DatasetWriter(path, rounds_schema(), row_group_rows=self.row_group_rows, metadata={
            "kind": "specstop-gym grid rounds", "schema_version": str(SCHEMA_VERSION), "cell": cell_key,
            "scenario": scenario.name})
        self._parts: list[dict[str, np.ndarray]] = []
        self._rows = 0
        self._label = ""

    def _flush(self) -> None:
        if not self._parts:
            return
        cols = {c: np.concatenate([p[c] for p in self._parts]) for c in (*self.COLUMNS, "pseudo_regret_ms")}
        self._parts, self._rows = [], 0
        self.writer.write({"cell": self.key, "scenario": self.scenario, "agent": self._label, **cols})

    def sink(self, label: str):
        self._flush()
        self._label = label

        def write(batch: dict[str, np.ndarray]) -> None:
            if self._label != label:
                self._flush()
                self._label = label
            pseudo = batch.get("pseudo_regret_ms")
            part = {c: batch[c] for c in self.COLUMNS}
            part["pseudo_regret_ms"] = pseudo if pseudo is not None else np.full(len(batch["seed"]), np.nan)
            self._parts.append(part)
            self._rows += len(batch["seed"])
            if self._rows >= self.CHUNK_ROWS:
                self._flush()

        return write

    def spill(self, seeds: np.ndarray):
        from .report import _Spill

        return _Spill(self.path.parent, seeds, self.row_group_rows)

    def close(self) -> Path:
        self._flush()
        return self.writer.close()

    def abort(self) -> None:
        self._parts = []
        self.writer.abort()


RUN_DEPENDENT = ("created", "command", "versions", "run_id", "wall_s", "rounds_per_s", "files")
"""Fields of a summary that depend on the run rather than the cell (moved to ``timing``/dropped)."""


def run_cell(spec: CellSpec, key: str = "") -> dict[str, Any]:
    """Run one cell (module docstring); ``key`` is written into the rounds table's ``cell`` column."""
    from .report import build_summary, run_comparison

    t0, c0 = time.perf_counter(), time.process_time()
    first = _first_call()
    seeds = list(spec.seeds)
    tmp = Path(tempfile.mkdtemp(prefix="specstop-cell-"))
    try:
        rounds = _CellRounds(tmp / "rounds.parquet", key, spec.scenario) if spec.rounds else None
        try:
            comp = run_comparison(spec.scenario, list(spec.agents), seeds, level=spec.level,
                                  max_rounds=spec.max_rounds, rounds=rounds, keep_rounds=False)  # type: ignore[arg-type]
            if rounds is not None:
                rounds.close()
        except BaseException:
            if rounds is not None:
                rounds.abort()
            raise
        data = (tmp / "rounds.parquet").read_bytes() if spec.rounds else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = build_summary(comp, command="")
    for name in RUN_DEPENDENT:
        summary.pop(name, None)
    agent_wall = {}
    for label, entry in summary["agents"].items():
        agent_wall[label] = entry.pop("wall_s", None)
        entry.pop("rounds_per_s", None)
    stats = {}
    for label, run in comp.runs.items():
        st = run.stats
        stats[label] = {"rounds": st.rounds, "sum_k": st.sum_k, "sum_rtt_ms": st.sum_rtt_ms,
                        "sum_time_ms": st.sum_time_ms, "last_start_ms": st.last_start_ms}
    from .report import to_jsonable

    return {
        "summary": to_jsonable(summary),
        "stats": to_jsonable(stats),
        "rounds": data,
        "code_key": code_key(),
        "timing": {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                   "agents_wall_s": agent_wall},
        "worker": {"host": socket.gethostname(), "pid": os.getpid(), "first_cell_in_process": first,
                   "ray_node": _ray_node()},
    }


def _ray_node() -> str | None:
    """The Ray node id when this runs inside a Ray worker, else None."""
    import sys

    ray = sys.modules.get("ray")
    try:
        return ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else None
    except Exception:  # noqa: BLE001 - informational only
        return None


_CALLS = {"n": 0}


def _first_call() -> bool:
    _CALLS["n"] += 1
    return _CALLS["n"] == 1


__all__ = ["CODE_EXCLUDED", "CellSpec", "code_files", "code_key", "rounds_schema", "run_cell"]
