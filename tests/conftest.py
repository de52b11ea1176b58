"""Test-session settings: one BLAS thread (the matrices here are tiny; on a shared
2-core machine BLAS threads only add start-up cost, e.g. 2-4 s per Markov DP solve
instead of 0.05 s). Set before numpy is imported by the test modules."""

import os
from pathlib import Path

import pytest

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("MPLBACKEND", "Agg")


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def evaluate_module(monkeypatch: pytest.MonkeyPatch):
    """evaluate.py as a module (its ``main(argv)`` runs the script in process)."""
    monkeypatch.syspath_prepend(str(ROOT))
    import evaluate

    return evaluate

