"""Run the fuzz suite (tests/test_fuzz.py) with more examples and print its counts (issue 14).

The suite's property: every generated input is either accepted with finite results or refused
with a one-line message naming the field, flag or file:line, within 2 s and 1 GiB; any
traceback, hang, giant allocation or NaN fails it. This script runs it in a subprocess with
``FUZZ_EXAMPLES`` examples per target (derandomized: the same inputs on every run) and prints
the table of docs/robustness.md: inputs, refused cleanly, accepted, per target, and whether
the suite passed.

    python benchmarks/fuzz_report.py                  # 1000 examples per target (a few minutes)
    python benchmarks/fuzz_report.py --examples 100
"""

from __future__ import annotations

import json
import os
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
    """Settings (one flag per field)."""

    examples: int = 1000
    """Examples per fuzz target (per test function; the importers share one)."""


def main(argv: list[str] | None = None) -> dict[str, dict[str, int]]:
    cfg = parse_config(Config, __doc__, argv, minimum={"examples": 1}, maximum={"examples": 1_000_000})
    with tempfile.TemporaryDirectory(prefix="fuzz_report_") as tmp:
        counts_path = Path(tmp) / "counts.json"
        env = {**os.environ, "FUZZ_EXAMPLES": str(cfg.examples), "FUZZ_COUNTS": str(counts_path),
               "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "MPLBACKEND": "Agg"}
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:warnings", "-p", "no:cacheprovider",
                            str(ROOT / "tests" / "test_fuzz.py")], cwd=tmp, env=env, capture_output=True, text=True,
                           check=False)
        wall = time.perf_counter() - t0
        counts = json.loads(counts_path.read_text()) if counts_path.exists() else {}
    passed = r.returncode == 0
    print(f"fuzz suite, {cfg.examples} examples per target (derandomized), {wall:.0f} s wall: "
          f"{'passed' if passed else 'FAILED'}")
    print()
    print("| target | inputs | refused cleanly | accepted (finite results) |")
    print("|---|---:|---:|---:|")
    total = {"inputs": 0, "refused": 0, "accepted": 0}
    for name in sorted(counts):
        c = counts[name]
        print(f"| {name} | {c['inputs']} | {c['refused']} | {c['accepted']} |")
        for k in total:
            total[k] += c[k]
    print(f"| **all** | **{total['inputs']}** | **{total['refused']}** | **{total['accepted']}** |")
    print()
    print("tracebacks, hangs (> 2 s), allocations over 1 GiB, non-finite results: "
          + ("0" if passed else "see the failure below"))
    if not passed:
        print(r.stdout[-5000:])
        raise SystemExit(1)
    return counts


if __name__ == "__main__":
    main()
