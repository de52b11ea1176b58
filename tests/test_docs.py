"""The documentation a newcomer reads stays true to the code."""

from __future__ import annotations

import re
from pathlib import Path

from specstop_gym.scenarios import scenarios_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_scenarios_doc_is_current() -> None:
    doc = (ROOT / "docs" / "scenarios.md").read_text()
    assert doc == scenarios_markdown(), "regenerate: python -m specstop_gym scenarios > docs/scenarios.md"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = "python -m pytest -q"
    assert test_cmd in readme and test_cmd in ci
    # the install line of the README is what CI installs too
    assert 'pip install "torch==2.13.0"' in readme and '"torch==2.13.0"' in ci
    assert '-e ".[all]"' in readme and '-e ".[all]"' in ci


def test_readme_links_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    for link in re.findall(r"\]\(([^)#:]+)\)", readme):
        assert (ROOT / link).exists(), f"README links to missing {link}"


def test_readme_python_examples_run() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert len(blocks) >= 3
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme_example"})


def test_robustness_doc_lists_the_current_bounds() -> None:
    from specstop_gym.core.config import bounds_markdown

    doc = (ROOT / "docs" / "robustness.md").read_text()
    assert bounds_markdown() in doc, "update the bounds table: specstop_gym.core.config.bounds_markdown()"
