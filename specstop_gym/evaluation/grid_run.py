"""Running a grid: resume from the finished cells, run the others on a backend, stream each
finished cell to the output folder, then write the tables, the summary and the plots.

Output folder of a grid (docs/evaluation.md, "Grids"):

* ``rounds/<key>.parquet``: the rounds of one cell (one part of the rounds dataset; the folder
  reads as one table: :func:`specstop_gym.dataset.read_dataset` on the folder, or
  ``pyarrow.dataset``, DuckDB ``read_parquet('rounds/*.parquet')``, pandas);
* ``cells/<key>.json``: the cell's result (its summary, the per-seed sums, where and how long
  it ran); written after the rounds part, so an existing ``cells/<key>.json`` *is* the record
  that the cell finished (both files are written atomically);
* ``cells.parquet`` (one row per cell and agent) and ``seeds.parquet`` (one row per cell, agent
  and seed), ``summary.json`` (every cell), ``grid.json`` (the grid as run), ``config.json``
  (command, status, counts, backend) and ``plots/``.

A cell whose ``cells/<key>.json`` exists is never recomputed: a killed or interrupted grid
rerun on the same folder continues where it stopped. At the end the parts of cells that are no
longer in the grid (another grid, or older code) are removed, so the folder holds one grid.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .. import fileio
from .grid import GRID_SCHEMA_VERSION, Cell, Grid, grid_document

PROGRESS_EVERY_S = 30.0
"""Without a terminal, a plain progress line at most this often (and at the last cell)."""


class GridError(RuntimeError):
    """A cell failed, or a worker ran other code; the message says which (exit code 1)."""


# ----------------------------------------------------------------------------- progress
class Progress:
    """A tqdm bar over cells (with a time estimate) on a terminal; otherwise a plain line on
    stderr every ``every_s`` seconds and at the end, with the same estimate: the mean time per
    cell computed in this run times the cells left, divided by nothing else (cells run
    concurrently on Ray, so the estimate is from the observed rate, not from cell times)."""

    def __init__(self, total: int, done: int, *, quiet: bool = False, every_s: float = PROGRESS_EVERY_S,
                 stream: Any = None, desc: str = "grid") -> None:
        self.total, self.done, self.start_done = total, done, done
        self.quiet, self.every_s, self.desc = quiet, every_s, desc
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        self.last = -float("inf")
        self.bar = None
        if not quiet and _isatty(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc=desc, unit="cell", file=self.stream, dynamic_ncols=True,
                            smoothing=0.0)
        elif not quiet:
            self._line(force=True)

    def eta_s(self) -> float | None:
        computed = self.done - self.start_done
        if computed <= 0:
            return None
        return (time.perf_counter() - self.t0) / computed * (self.total - self.done)

    def update(self, label: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix_str(label[-40:], refresh=False)
            self.bar.update(1)
        elif not self.quiet:
            self._line(force=self.done == self.total, label=label)

    def _line(self, force: bool = False, label: str = "") -> None:
        now = time.perf_counter()
        if not force and now - self.last < self.every_s:
            return
        self.last = now
        eta = self.eta_s()
        pct = 100.0 * self.done / self.total if self.total else 100.0
        text = (f"{self.desc}: {self.done}/{self.total} cells ({pct:.0f}%), {_hms(now - self.t0)} elapsed, "
                f"eta {_hms(eta) if eta is not None else '?'}" + (f", last {label}" if label else ""))
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


# ----------------------------------------------------------------------------- cache
def cell_json(out: Path, key: str) -> Path:
    return out / "cells" / f"{key}.json"


def rounds_part(out: Path, key: str) -> Path:
    return out / "rounds" / f"{key}.parquet"


def load_finished(out: Path, cells: Sequence[Cell]) -> dict[str, dict[str, Any]]:
    """The results of the cells already finished in ``out`` (their JSON exists, is readable, has
    the cell's key and, when the cell records rounds, its rounds part exists)."""
    done: dict[str, dict[str, Any]] = {}
    for c in cells:
        if c.key in done:
            continue
        p = cell_json(out, c.key)
        if not p.is_file():
            continue
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if doc.get("key") != c.key or (c.spec.rounds and not rounds_part(out, c.key).is_file()):
            continue
        done[c.key] = doc
    return done


# ----------------------------------------------------------------------------- running
def run_grid(grid: Grid, cells: Sequence[Cell], out: str | Path, backend: Any, *, command: str = "",
             quiet: bool = False, plots: bool = True, code: str = "", progress_every_s: float = PROGRESS_EVERY_S,
             on_cell: Callable[[Cell, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run every cell not yet finished in ``out`` on ``backend``, then write the outputs.

    The caller holds the folder's lock. Returns the grid summary (summary.json). Raises
    :class:`GridError` when a worker runs other code; a cell's exception propagates (with its
    traceback: a cell failing on valid input is a bug) after config.json names the cell. The
    finished cells stay in either case.
    """
    out = Path(out)
    run_id = f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    for sub in ("cells", "rounds"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    fileio.atomic_write_json(out / "grid.json", _jsonable(grid_document(grid)))
    done = load_finished(out, cells)
    by_key: dict[str, Cell] = {}
    for c in cells:
        by_key.setdefault(c.key, c)
    todo = [c for k, c in by_key.items() if k not in done]
    reused = len(by_key) - len(todo)
    info = backend.describe()
    state = {"command": command, "run_id": run_id, "status": "running", "error": None, "pid": os.getpid(),
             "grid": grid.name, "code_key": code, "backend": info, "cells_total": len(by_key),
             "cells_reused": reused, "cells_computed": 0, "schema_version": GRID_SCHEMA_VERSION}

    def write_state(**kw: Any) -> None:
        state.update(kw, updated=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        fileio.atomic_write_json(out / "config.json", _jsonable(state))

    write_state()
    progress = Progress(len(by_key), reused, quiet=quiet, every_s=progress_every_s)
    t0 = time.perf_counter()
    try:
        for key, result in backend.run([(c.key, c.spec) for c in todo]):
            cell = by_key[key]
            if code and result.get("code_key") != code:
                w = result.get("worker", {})
                raise GridError(f"cell {cell.label}: worker {w.get('host')} (pid {w.get('pid')}) runs code "
                                f"{result.get('code_key')}, this process {code}; install the same specstop-gym "
                                "on every node")
            done[key] = _store(out, cell, result, run_id)
            state["cells_computed"] += 1
            progress.update(cell.label)
            if on_cell is not None:
                on_cell(cell, done[key])
        progress.close()
    except BaseException as e:
        progress.close()
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        failed = by_key.get(getattr(e, "cell_key", ""))
        where = f"cell {failed.label} ({failed.key}): " if failed is not None else ""
        try:
            write_state(status=status, error=where + " ".join(f"{type(e).__name__}: {e}".split())[:500])
        except OSError:
            pass
        if failed is not None:  # a bug in a cell (or a worker lost): its traceback follows
            print(f"grid: {where}failed; the {state['cells_reused'] + state['cells_computed']} finished cells are "
                  f"kept in {str(out)!r}", file=sys.stderr)
        raise
    compute_s = time.perf_counter() - t0
    summary = finish(out, grid, cells, done, command=command, run_id=run_id, code=code, backend=info,
                     computed=state["cells_computed"], reused=reused, compute_s=compute_s, plots=plots)
    write_state(status="finished")
    return summary


def _store(out: Path, cell: Cell, result: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    """Write a finished cell: its rounds part, then its JSON (the record that it finished)."""
    rounds = result.get("rounds")
    rows = None
    if rounds is not None:
        fileio.atomic_write_bytes(rounds_part(out, cell.key), rounds)
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(rounds_part(out, cell.key)).metadata.num_rows
    doc = {"key": cell.key, "label": cell.label, "coordinates": cell.coordinates(), "summary": result["summary"],
           "stats": result["stats"], "code_key": result.get("code_key"), "computed_by": run_id,
           "timing": result.get("timing"), "worker": result.get("worker"),
           "rounds_file": f"rounds/{cell.key}.parquet" if rounds is not None else None, "rounds_rows": rows,
           "schema_version": GRID_SCHEMA_VERSION}
    fileio.atomic_write_json(cell_json(out, cell.key), _jsonable(doc))
    return doc


def _jsonable(obj: Any) -> Any:
    from .report import to_jsonable

    return to_jsonable(obj)


# ----------------------------------------------------------------------------- outputs
CELL_TABLE = (("cell", "string"), ("label", "string"), ("experiment", "string"), ("scenario", "string"),
              ("variant", "string"), ("delay_ms", "float64"), ("trace", "string"), ("block", "int32"),
              ("level", "string"), ("n_seeds", "int32"), ("agent", "string"), ("requested", "bool"),
              ("latency_ms_per_token", "float64"), ("latency_ci_low", "float64"), ("latency_ci_high", "float64"),
              ("gap_to_oracle_pct", "float64"), ("gap_ci_low", "float64"), ("gap_ci_high", "float64"),
              ("regret_ms", "float64"), ("regret_ci_low", "float64"), ("regret_ci_high", "float64"),
              ("mean_k", "float64"), ("rounds", "int64"))
SEED_TABLE = (("cell", "string"), ("experiment", "string"), ("scenario", "string"), ("variant", "string"),
              ("delay_ms", "float64"), ("trace", "string"), ("agent", "string"), ("seed", "int64"),
              ("per_token_latency_ms", "float64"), ("total_time_ms", "float64"), ("total_tokens", "int64"),
              ("regret_ms", "float64"), ("rounds", "int64"), ("sum_k", "float64"), ("sum_rtt_ms", "float64"),
              ("sum_time_ms", "float64"))


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def finish(out: Path, grid: Grid, cells: Sequence[Cell], done: Mapping[str, Mapping[str, Any]], *, command: str,
           run_id: str, code: str, backend: Mapping[str, Any], computed: int, reused: int, compute_s: float,
           plots: bool = True) -> dict[str, Any]:
    """Write cells.parquet, seeds.parquet, summary.json and the plots; remove stale parts."""
    from ..dataset import DatasetWriter
    from .report import versions

    keys = {c.key for c in cells}
    for sub, suffix in (("cells", ".json"), ("rounds", ".parquet")):
        for p in (out / sub).iterdir():
            if p.name.endswith(suffix) and p.name[:-len(suffix)] not in keys:
                p.unlink()
    seen: set[str] = set()
    with DatasetWriter(out / "cells.parquet", CELL_TABLE, metadata={"kind": "specstop-gym grid cells"}) as ct, \
            DatasetWriter(out / "seeds.parquet", SEED_TABLE, metadata={"kind": "specstop-gym grid seeds"}) as st:
        for c in cells:
            if c.key in seen:
                continue
            seen.add(c.key)
            doc = done[c.key]
            s = doc["summary"]
            co = {"cell": c.key, "experiment": c.experiment, "scenario": c.scenario, "variant": c.variant or "",
                  "delay_ms": _num(c.delay_ms), "trace": c.trace or ""}
            for label, e in s["agents"].items():
                lat, gap, reg = e["per_token_latency_ms"], e.get("gap_to_oracle_pct") or {}, e["cumulative_regret_ms"]
                ct.write({**co, "label": c.label, "block": c.block, "level": c.spec.level,
                          "n_seeds": len(c.spec.seeds), "agent": label, "requested": bool(e["requested"]),
                          "latency_ms_per_token": _num(lat["mean"]), "latency_ci_low": _num(lat["ci_low"]),
                          "latency_ci_high": _num(lat["ci_high"]), "gap_to_oracle_pct": _num(gap.get("mean")),
                          "gap_ci_low": _num(gap.get("ci_low")), "gap_ci_high": _num(gap.get("ci_high")),
                          "regret_ms": _num(reg["mean"]), "regret_ci_low": _num(reg["ci_low"]),
                          "regret_ci_high": _num(reg["ci_high"]), "mean_k": _num(e["mean_k"]),
                          "rounds": int(e["rounds"])})
                ps = e["per_seed"]
                sts = doc["stats"][label]
                st.write({**co, "agent": label, "seed": np.asarray(s["seeds"], np.int64),
                          "per_token_latency_ms": np.array([_num(v) for v in ps["per_token_latency_ms"]]),
                          "total_time_ms": np.array([_num(v) for v in ps["total_time_ms"]]),
                          "total_tokens": np.asarray(ps["total_tokens"], np.int64),
                          "regret_ms": np.array([_num(v) for v in ps["cumulative_regret_ms"]]),
                          "rounds": np.asarray(sts["rounds"], np.int64),
                          "sum_k": np.array([_num(v) for v in sts["sum_k"]]),
                          "sum_rtt_ms": np.array([_num(v) for v in sts["sum_rtt_ms"]]),
                          "sum_time_ms": np.array([_num(v) for v in sts["sum_time_ms"]])})
    files: dict[str, Any] = {"rounds": "rounds/" if grid.rounds_table else None, "cells": "cells.parquet",
                             "seeds": "seeds.parquet", "cell_results": "cells/", "grid": "grid.json",
                             "config": "config.json", "plots": {}}
    if plots:
        from .grid_plots import plot_grid

        files["plots"] = plot_grid(out / "plots", grid, cells, done)
    cell_wall = [d.get("timing", {}).get("wall_s") for d in done.values() if d.get("computed_by") == run_id]
    summary = {
        "schema_version": GRID_SCHEMA_VERSION, "kind": "specstop-gym grid summary", "grid": grid.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": command, "run_id": run_id,
        "code_key": code, "versions": versions(), "backend": dict(backend),
        "cells_total": len(seen), "cells_computed": computed, "cells_reused": reused,
        "compute_wall_s": compute_s, "cell_seconds_this_run": float(sum(w for w in cell_wall if w)),
        "files": files,
        "cells": [{"key": c.key, "label": c.label, "coordinates": c.coordinates(), "summary": done[c.key]["summary"],
                   "stats": done[c.key]["stats"], "timing": done[c.key].get("timing"),
                   "worker": done[c.key].get("worker"), "computed_by": done[c.key].get("computed_by")}
                  for c in cells],
    }
    fileio.atomic_write_json(out / "summary.json", _jsonable(summary))
    return summary


def format_cells_table(summary: Mapping[str, Any], limit: int = 60) -> str:
    """Per cell and agent: per-token latency and gap to the oracle (the table printed at the end)."""
    from .report import _pm

    rows = [("cell", "agent", "latency ms/token", "gap to oracle %")]
    for c in summary["cells"][:limit]:
        for label, e in c["summary"]["agents"].items():
            gap = e.get("gap_to_oracle_pct")
            rows.append((c["label"], label, _pm(e["per_token_latency_ms"]), _pm(gap) if gap else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(r[i].ljust(widths[i]) if i < 2 else r[i].rjust(widths[i]) for i in range(4)).rstrip()
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if len(summary["cells"]) > limit:
        lines.append(f"... and {len(summary['cells']) - limit} more cells (cells.parquet)")
    return "\n".join(lines)


__all__ = ["GridError", "Progress", "finish", "format_cells_table", "load_finished", "run_grid"]
