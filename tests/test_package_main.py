"""``python -m specstop_gym``: the scenario-docs generator runs as a user runs it, without
warnings (it used to be ``python -m specstop_gym.scenarios``, which made runpy warn about a
second copy of a module the package had already imported)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-W", "default", "-m", "specstop_gym", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120, check=False)


def test_scenarios_command_prints_the_docs_page_without_warnings() -> None:
    r = run("scenarios")
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout == (ROOT / "docs" / "scenarios.md").read_text()
    assert "`python -m specstop_gym scenarios > docs/scenarios.md`" in r.stdout


def test_usage_errors_exit_2_on_one_line() -> None:
    for args in ((), ("bogus",)):
        r = run(*args)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert r.stderr.splitlines()[-1].startswith("python -m specstop_gym: error:")


def test_the_older_module_form_prints_the_same_page_without_warnings() -> None:
    r = subprocess.run([sys.executable, "-W", "default", "-m", "specstop_gym.scenarios"], capture_output=True,
                       text=True, cwd=ROOT, timeout=120, check=False)
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout == (ROOT / "docs" / "scenarios.md").read_text()
