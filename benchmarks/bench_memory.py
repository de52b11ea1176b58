"""Peak memory of evaluate.py against the number of seeds (issue 14).

Runs ``evaluate.py`` as a subprocess at a small and a large number of seeds (16 and 256 by
default; the default agents and scenario, ``--requests`` requests per run, plots on, the delay
sweep off), in alternating repeats, and reads each child's peak resident set size from
``os.wait4`` (``ru_maxrss``, the kernel's high-water mark of that process alone). Prints the
peaks, the ratio large / small per repeat, its median and spread. The target is a ratio of at
most 1.5: the rounds are streamed to ``rounds.parquet`` and only O(seeds + rounds) statistics stay
in memory (docs/evaluation.md).

    python benchmarks/bench_memory.py                          # 16 vs 256 seeds, 2 repeats
    python benchmarks/bench_memory.py --small 8 --large 64 --requests 2 --repeats 1   # quick

The first run of a fresh clone also compiles the simulator's kernels (cached afterwards): the
script does one untimed warm-up run at the small size first.
"""

from __future__ import annotations

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

    small: int = 16
    """Seeds of the reference run."""
    large: int = 256
    """Seeds of the large run."""
    requests: int = 20
    """Requests per run (evaluate.py's default)."""
    scenario: str = "qwen-geometric"
    """Scenario preset."""
    repeats: int = 2
    """Measured runs per size (alternating)."""
    target: float = 1.5
    """Largest acceptable ratio of the peaks (reported, not enforced)."""
    agents: str = ""
    """Agent specs, space separated (default: evaluate.py's default agents)."""
    no_warmup: bool = False
    """Skip the untimed warm-up run (the kernels are already compiled)."""


def peak_rss(seeds: int, cfg: Config, out: Path) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of one evaluate.py run in a child process."""
    cmd = [sys.executable, str(ROOT / "evaluate.py"), "--scenarios", cfg.scenario, "--seeds", str(seeds),
           "--requests", str(cfg.requests), "--no-sweep", "--quiet", "--out", str(out)]
    if cfg.agents.split():
        cmd += ["--agents", *cfg.agents.split()]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"evaluate.py failed ({proc.returncode}): {err.strip()[-500:]}")
    return usage.ru_maxrss / 1024.0, wall  # ru_maxrss is in KiB on Linux


def main(argv: list[str] | None = None) -> dict[str, float]:
    cfg = parse_config(Config, __doc__, argv, minimum={"small": 1, "large": 1, "requests": 1, "repeats": 1,
                                                      "target": 1.0},
                       maximum={"small": 100_000, "large": 100_000, "requests": 100_000, "repeats": 100})
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        agents = cfg.agents or "default agents"
        print(f"evaluate.py on {cfg.scenario}, {cfg.requests} requests per run, {agents}, plots, no sweep")
        if not cfg.no_warmup:
            peak_rss(cfg.small, cfg, Path(tmp) / "warmup")
        small, large, ratios = [], [], []
        for i in range(cfg.repeats):
            s, ws = peak_rss(cfg.small, cfg, Path(tmp) / f"s{i}")
            big, wl = peak_rss(cfg.large, cfg, Path(tmp) / f"l{i}")
            rows = _rows(Path(tmp) / f"l{i}")
            small.append(s)
            large.append(big)
            ratios.append(big / s)
            print(f"repeat {i + 1}: {cfg.small} seeds {s:.0f} MiB ({ws:.0f} s), {cfg.large} seeds {big:.0f} MiB "
                  f"({wl:.0f} s, {rows} rounds in rounds.parquet, "
                  f"{(Path(tmp) / f'l{i}' / 'rounds.parquet').stat().st_size / 2**20:.1f} MiB): ratio {big / s:.3f}")
    med = statistics.median(ratios)
    spread = (min(ratios), max(ratios))
    print(f"peak RSS {cfg.large}/{cfg.small} seeds: median ratio {med:.3f} (min {spread[0]:.3f}, max {spread[1]:.3f}, "
          f"{cfg.repeats} repeats); target <= {cfg.target:g}: {'met' if spread[1] <= cfg.target else 'NOT met'}")
    print(f"peaks MiB: {cfg.small} seeds {[round(x) for x in small]}, {cfg.large} seeds {[round(x) for x in large]}")
    return {"ratio_median": med, "ratio_max": spread[1], "small_mib": statistics.median(small),
            "large_mib": statistics.median(large)}


def _rows(folder: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(str(folder / "rounds.parquet")).metadata.num_rows)


if __name__ == "__main__":
    main()
