"""The --paper grid serial (in process) against Ray on this machine's cores (issue 16).

Runs ``evaluate.py --paper --no-plots --quiet`` as a subprocess, in process and with ``--ray``
(a local Ray runtime on all cores), alternating, each into a fresh output folder (no cell is
reused), and prints per repeat: the wall-clock time of the whole command, the grid's compute
time (``compute_wall_s`` of summary.json: from the first cell submitted to the last one stored,
so without Python start-up, validation, Ray's start-up and the outputs), the CPU cores the
cells actually obtained (their processes' CPU seconds / the grid's compute time: at most 1 serially,
2 on Ray with two cores, less when other work shares the machine), the speed-ups serial / Ray of
both, and the 1-minute load average before each run; then the median and spread
(min..max) of the speed-ups. The target is a speed-up of at least 1.6 on two cores (reported,
not enforced). Also printed: the numbers of both backends must be identical (checked: every
cell's summary), and what each Ray worker pays before its first cell (its first cell's time
minus the same cell's time in a process that had already run one).

    python benchmarks/bench_grid.py                    # 3 repeats of each (about 10 minutes on 2 cores)
    python benchmarks/bench_grid.py --quick            # the --paper --quick grid (a smoke test)
    python benchmarks/bench_grid.py --cold-numba       # also once with an empty numba cache on Ray

The serial run is also one process paying the kernels' loading once; on Ray every worker process
pays it (and, with ``--cold-numba``, the compilation).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _common import parse_config

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Config:
    """Benchmark settings (one flag per field)."""

    repeats: int = 3
    """Measured runs per backend (alternating, serial first)."""
    quick: bool = False
    """Use the --paper --quick grid (seconds; for a smoke test of the script)."""
    cold_numba: bool = False
    """Also run once on Ray with an empty numba cache (every worker compiles the kernels)."""
    target: float = 1.6
    """Smallest acceptable speed-up serial / Ray (reported, not enforced)."""


def run(args: list[str], out: Path, env: dict[str, str] | None = None) -> dict:
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--paper", "--no-plots", "--quiet", "--out", str(out),
                        *args], cwd=ROOT, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"evaluate.py {' '.join(args)} failed: {r.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    cpu = sum((c.get("timing") or {}).get("cpu_s") or 0.0 for c in summary["cells"])
    return {"wall_s": wall, "compute_s": summary["compute_wall_s"], "load": load, "summary": summary,
            "cores": cpu / summary["compute_wall_s"]}


def cells(summary: dict) -> dict[str, dict]:
    return {c["key"]: c for c in summary["cells"]}


def worker_startup(ray_summary: dict, serial_summary: dict) -> list[float]:
    """Per Ray worker process: its first cell's time minus the same cell's time in the serial
    process (where that cell was not the process's first), seconds."""
    serial = cells(serial_summary)
    out = []
    for key, c in cells(ray_summary).items():
        ref = serial[key]
        if (c.get("worker") or {}).get("first_cell_in_process") and not (ref.get("worker") or {}).get(
                "first_cell_in_process"):
            out.append(c["timing"]["wall_s"] - ref["timing"]["wall_s"])
    return out


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(Config, __doc__ or "", argv, minimum={"repeats": 1})
    extra = ["--quick"] if cfg.quick else []
    print(f"bench_grid: the --paper{' --quick' if cfg.quick else ''} grid, serial vs --ray on {os.cpu_count()} cores, "
          f"{cfg.repeats} repeat(s); python {sys.version.split()[0]}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-grid-") as tmp:
        # warm-up: the kernels compiled and cached once, so every measured run loads them from disk
        run(["--quick"], Path(tmp) / "warmup")
        for i in range(cfg.repeats):
            s = run(extra, Path(tmp) / f"serial{i}")
            r = run(["--ray", *extra], Path(tmp) / f"ray{i}")
            if set(cells(s["summary"])) != set(cells(r["summary"])):
                raise SystemExit("bench_grid.py: error: the serial and Ray runs have different cell keys: the code "
                                 "changed between them (a cell's key includes the code version); run the benchmark "
                                 "on a checkout nobody edits meanwhile")
            same = all(a["summary"] == b["summary"] and a["stats"] == b["stats"]
                       for a, b in zip(s["summary"]["cells"], r["summary"]["cells"]))
            firsts = worker_startup(r["summary"], s["summary"])
            rows.append((s, r, same, firsts))
            print(f"repeat {i + 1}: serial {s['wall_s']:.1f} s (grid {s['compute_s']:.1f} s, {s['cores']:.2f} cores "
                  f"obtained, load {s['load']:.1f}), ray {r['wall_s']:.1f} s (grid {r['compute_s']:.1f} s, "
                  f"{r['cores']:.2f} cores obtained, load {r['load']:.1f}); speed-up "
                  f"{s['wall_s'] / r['wall_s']:.2f}x whole command, {s['compute_s'] / r['compute_s']:.2f}x grid; "
                  f"identical numbers: {same}; Ray workers' first-cell overhead "
                  f"{', '.join(f'{x:.1f}' for x in firsts) or '-'} s", flush=True)
        if cfg.cold_numba:
            env = dict(os.environ, NUMBA_CACHE_DIR=str(Path(tmp) / "empty-numba-cache"))
            cold = run(["--ray", *extra], Path(tmp) / "ray-cold", env=env)
            over = worker_startup(cold["summary"], rows[-1][0]["summary"])
            print(f"ray with an empty numba cache: {cold['wall_s']:.1f} s (grid {cold['compute_s']:.1f} s, "
                  f"load {cold['load']:.1f}); workers' first-cell overhead "
                  f"{', '.join(f'{x:.1f}' for x in over) or '-'} s", flush=True)
    whole = [s["wall_s"] / r["wall_s"] for s, r, _, _ in rows]
    grid = [s["compute_s"] / r["compute_s"] for s, r, _, _ in rows]
    med = statistics.median(grid)
    print(f"speed-up serial / ray, whole command: median {statistics.median(whole):.2f}x "
          f"(min {min(whole):.2f}, max {max(whole):.2f})")
    print(f"speed-up serial / ray, grid compute: median {med:.2f}x (min {min(grid):.2f}, max {max(grid):.2f}); "
          f"target >= {cfg.target:g}x: {'met' if med >= cfg.target else 'not met'}")
    print(f"identical numbers on both backends in every repeat: {all(same for _, _, same, _ in rows)}")
    print(f"load average (1 min) before the runs: {min(x['load'] for s, r, _, _ in rows for x in (s, r)):.1f}.."
          f"{max(x['load'] for s, r, _, _ in rows for x in (s, r)):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
