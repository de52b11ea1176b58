"""The optional-dependency groups of pyproject.toml: the main job needs neither torch nor
transformers, `all` (the README's set-up) has no transformers, `test` has everything."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in requirements}


def expand(extra: str) -> set[str]:
    """Package names an extra pulls in, self-references (`specstop-gym[a,b]`) expanded."""
    out: set[str] = set()
    for req in PROJECT["optional-dependencies"][extra]:
        m = re.fullmatch(r"specstop-gym\[([\w,\s-]+)\]", req.strip())
        if m:
            for sub in m.group(1).split(","):
                out |= expand(sub.strip())
        else:
            out |= names([req])
    return out


def test_main_job_needs_no_torch_or_transformers() -> None:
    core = names(PROJECT["dependencies"])
    assert not core & {"torch", "transformers", "tokenizers", "stable-baselines3"}


def test_extras_split_training_recording_and_tests() -> None:
    extras = PROJECT["optional-dependencies"]
    assert {"sb3", "record", "dev", "all", "test"} <= set(extras)
    assert {"torch", "stable-baselines3", "sb3-contrib", "tensorboard"} <= expand("sb3")
    assert "transformers" not in expand("sb3")
    assert {"torch", "transformers"} <= expand("record")
    assert "pytest" in expand("dev")
    assert expand("all") == expand("sb3") | expand("dev") and "transformers" not in expand("all")
    every = set().union(*(expand(e) for e in extras if e != "test"))
    assert expand("test") == every


def test_ci_installs_every_extra_the_tests_use() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    installed: set[str] = set()
    for group in re.findall(r'-e "\.\[([\w,]+)\]"', ci):
        for extra in group.split(","):
            installed |= expand(extra)
    assert expand("test") <= installed  # nothing skipped in CI for want of a package
