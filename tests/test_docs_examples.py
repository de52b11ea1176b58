"""Every shell command and Python block of README.md and docs/*.md runs in a fresh clone.

What it does:

* extracts the fenced ``bash``/``sh``/``console`` and ``python`` blocks of README.md and docs/*.md
  (untagged blocks are output, file formats or trees; a test checks that none holds a command);
* fails if any block, or any link of those pages, refers to a path outside the repository
  (``../``, absolute paths such as ``/work/...``, links that leave the repository);
* clones the repository (``git clone`` of this checkout's HEAD, plus its uncommitted edits and
  untracked files that git does not ignore) into a temporary folder and runs
  every command there, from the clone's root as the README says, with the clone's own package
  (``PYTHONPATH`` = the clone), each one exiting 0. A command either runs or is listed in
  ``SKIP`` with its reason; long ones run on a small budget: the flags of ``budget_flags`` are
  appended (argparse: the last flag wins), ``SUBSTITUTIONS`` lists the few edits of a block's
  text (a training budget in Python code, a grid file's seeds), ``FIXTURES`` the user's own files
  an example starts from (a ``ping`` log). Every entry of these tables must match something, so a
  stale entry fails too. A block preceded by ``<!-- docs-test: file NAME -->`` (a grid file) is
  written to NAME in the clone before the commands run.

Speed: the commands run one after another in forked children of one warm Python process
(numpy, numba's compiled kernels, matplotlib, torch and SB3 imported once), so each pays its
own work but not the imports; the clone gets this checkout's compiled kernels (numba's cache
files, with the source's timestamp) when its kernels.py is identical. Identical commands after
budgeting run once.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
SHELL_LANGS = {"bash", "sh", "shell", "console"}
DIRECTIVE = re.compile(r"<!--\s*docs-test:\s*(.*?)\s*-->")

# --------------------------------------------------------------------------- the tables
SKIP: list[tuple[str, str]] = [
    (r"^pip install", ("installs packages: the test runs in the environment these lines installed (.ci/run runs "
                       "the same pip lines)")),
    (r"^python -m pytest", "the test suite itself, which this test is part of"),
    (r"^tensorboard ", "a server that runs until it is stopped"),
    (r"--ray-address", "needs a running Ray cluster's address (tests/test_grid_ray.py starts a two-node one)"),
    (r"--ray\b", "starts a Ray runtime (tests/test_grid_ray.py runs grids on Ray)"),
    (r"rl_zoo3", "RL Baselines3 Zoo training (the zoo extra, minutes); tests/test_rl.py runs the zoo command"),
    (r"sb3:logs/ppo/", "evaluates the model of the RL Baselines3 Zoo run above, which is skipped"),
    (r"benchmarks/", ("a benchmark: a long measurement run by hand (its numbers are in the docs); "
                      "tests/test_benchmarks.py and tests/test_rl.py run most scripts on tiny budgets")),
    (r"record_acceptance_trace", ("needs a draft and a target Hugging Face model (the record extra) and "
                                  "downloads; tests/test_recorder.py runs the recorder on tiny models")),
    (r"agent\.choose_k\(ctx\)", ("the agent protocol's synopsis: ctx, tctx and feedback are built by the runner "
                                 "every round (docs/agents.md describes them)")),
]
"""(regex on a command or block, reason): what is not run, and why. Each must match something."""

SUBSTITUTIONS: list[tuple[str, str, str, str]] = [
    ("docs/training.md", 'MaskablePPO("MlpPolicy", "SpecStop-v0").learn(300_000)',
     'MaskablePPO("MlpPolicy", "SpecStop-v0", n_steps=64, batch_size=64, n_epochs=1).learn(64)',
     "sb3-contrib's training budget"),
    ("docs/training.md", '\nPPO("MlpPolicy", "SpecStop-v0").learn(300_000)',
     '\nPPO("MlpPolicy", "SpecStop-v0", n_steps=64, batch_size=64, n_epochs=1).learn(64)', "SB3's training budget"),
    ("docs/training.md", 'DQN("MlpPolicy", "SpecStop-v0").learn(300_000)', 'DQN("MlpPolicy", "SpecStop-v0").learn(64)',
     "SB3's training budget"),
    ("docs/vector.md", 'PPO("MlpPolicy", venv).learn(100_000)',
     'PPO("MlpPolicy", venv, n_steps=8, batch_size=64, n_epochs=1).learn(64)', "SB3's training budget"),
    ("docs/evaluation.md", "seeds = 16 ", "seeds = 2 ", "the grid file's seeds"),
    ("docs/evaluation.md", "seed_block = 8 ", "seed_block = 2 ", "the grid file's seed blocks"),
    ("docs/evaluation.md", "set = { n_tokens = 256 }", "set = { n_tokens = 24, requests_per_episode = 1 }",
     "the grid file's request size"),
    ("docs/evaluation.md", "requests = 8", "requests = 1", "the grid file's requests"),
    ("docs/evaluation.md", "delays_ms = [25.0, 100.0, 400.0, 1600.0]", "delays_ms = [25.0, 400.0]",
     "the grid file's delays"),
]
"""(doc file, old text, new text, what it budgets): edits of a block before it runs, in this order."""

PING_LOG = "".join(f"[{1723456789 + 0.2 * i:.6f}] 64 bytes from 192.0.2.1: icmp_seq={i + 1} ttl=57 "
                   f"time={40 + 25 * ((i // 40) % 2) + (i * 7) % 5:.1f} ms\n" for i in range(400))
FIXTURES: dict[str, tuple[str, str]] = {
    "ping.log": (PING_LOG, "the user's own measurement: `ping -D HOST > ping.log` (80 s at 5 Hz)"),
}
"""File name -> (content, what it stands for): files an example assumes the user has."""

EVAL_SINGLE = ["--seeds", "2", "--requests", "1", "--set", "n_tokens=32", "--sweep-delays", "100",
               "--sweep-seeds", "1"]
EVAL_GRID = ["--seeds", "2", "--seed-block", "2", "--requests", "1", "--set", "n_tokens=24"]
TRAIN = ["--total-timesteps", "256", "--n-envs", "2", "--eval-freq", "0", "--checkpoint-freq", "0",
         "--eval-seeds", "1000", "--verbose", "1"]
TRAIN_RESUME = ["--total-timesteps", "512", "--eval-freq", "0", "--checkpoint-freq", "0"]


def budget_flags(argv: list[str]) -> list[str]:
    """The small-budget flags appended to a command (argparse: the last occurrence wins).

    evaluate.py: 2 seeds, 1 request of 32 tokens, a one-point sweep, no plots except on the main
    job (``python evaluate.py``); a grid from flags: 2 seeds in one block; ``--paper``: its
    ``--quick`` budget in one folder (a grid: the later paper commands reuse its cells); a grid
    file: budgeted in the file (SUBSTITUTIONS). train.py: 256 steps on 2 environments, no
    periodic evaluation or checkpoints, one evaluation seed; ``--resume``: to 512 steps.
    """
    if argv[:1] == ["evaluate.py"]:
        if "--paper" in argv:
            return ["--quick", "--out", "results/docs-test-paper"]
        if "--grid" in argv:
            return []
        if any(f in argv for f in ("--grid-delays", "--grid-traces", "--seed-block")):
            return EVAL_GRID
        return EVAL_SINGLE + ([] if argv == ["evaluate.py"] else ["--no-plots"])
    if argv[:1] == ["train.py"]:
        if "--resume" in argv:
            return TRAIN_RESUME
        return TRAIN
    return []


# --------------------------------------------------------------------------- extraction
@dataclass
class Block:
    doc: str
    line: int
    lang: str
    text: str
    directive: str | None

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def doc_blocks() -> list[Block]:
    blocks = []
    for doc in DOC_FILES:
        text = (ROOT / doc).read_text()
        for m in re.finditer(r"^[ \t]*```([\w+-]*)[ \t]*\n(.*?)^[ \t]*```", text, flags=re.DOTALL | re.MULTILINE):
            line = text.count("\n", 0, m.start()) + 1
            before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
            d = DIRECTIVE.search(before)
            blocks.append(Block(doc, line, m.group(1).lower(), m.group(2), d.group(1) if d else None))
    return blocks


@dataclass
class Command:
    where: str
    text: str          # as written (continuations joined, comment dropped)
    argv: list[str]    # for python commands: ["evaluate.py", ...] or ["-m", "module", ...]
    kind: str          # "script" | "module" | "code" | "other"
    code: str = ""     # Python blocks


def shell_commands(block: Block) -> list[Command]:
    """A shell block's commands: continuations joined, comments dropped, ``&&`` chains split.
    A block with shell control flow or variables is one command (a script)."""
    body = re.sub(r"\\\n\s*", " ", block.text)
    if re.search(r"^\s*(for|while|if)\b|\$\w", body, flags=re.MULTILINE):
        return [Command(block.where, body.strip(), [], "other")]
    out = []
    for raw in body.splitlines():
        if not raw.strip() or raw.strip().startswith("#"):
            continue
        tokens = shlex.split(raw, comments=True)
        parts: list[list[str]] = [[]]
        for tok in tokens:
            if tok == "&&":
                parts.append([])
            else:
                parts[-1].append(tok)
        for part in parts:
            if part[:1] == ["python"]:
                rest = part[1:]
                kind = "module" if rest[:1] == ["-m"] else "script"
                out.append(Command(block.where, shlex.join(part), rest, kind))
            else:
                out.append(Command(block.where, shlex.join(part), part, "other"))
    return out


def substituted(block: Block, used: set[int]) -> str:
    text = block.text
    for i, (doc, old, new, _why) in enumerate(SUBSTITUTIONS):
        if doc == block.doc and old in text:
            text = text.replace(old, new)
            used.add(i)
    return text


def collect() -> tuple[list[Command], list[tuple[Command, str]], dict[str, str], set[int], set[int]]:
    """(commands to run, (command, reason) skipped, files to write, SKIP entries used, SUBSTITUTIONS used)."""
    run, skipped, files = [], [], {}
    used_skip: set[int] = set()
    used_sub: set[int] = set()
    for block in doc_blocks():
        if block.lang == "python":
            cmds = [Command(block.where, block.text, [], "code", substituted(block, used_sub))]
        elif block.lang in SHELL_LANGS:
            block.text = substituted(block, used_sub)
            cmds = shell_commands(block)
        else:
            if block.directive and block.directive.startswith("file "):
                files[block.directive.split(None, 1)[1]] = substituted(block, used_sub)
            continue
        for cmd in cmds:
            reason = None
            for i, (pattern, why) in enumerate(SKIP):
                if re.search(pattern, cmd.text, flags=re.MULTILINE):
                    used_skip.add(i)
                    reason = reason or why
            if reason is not None:
                skipped.append((cmd, reason))
            else:
                run.append(cmd)
    return run, skipped, files, used_skip, used_sub


# --------------------------------------------------------------------------- static checks
OUTSIDE = [
    (re.compile(r"(?<![\w.])\.\./"), "a relative path above the repository (../)"),
    (re.compile(r"(?<![\w:/.~-])/(?:work|home|root|tmp|Users|mnt|opt|srv|data)/"), "an absolute path"),
    (re.compile(r"\b(?:SPEC|CALIBRATION|STYLE)\.md\b"), "a development file that is not in the repository"),
]


def test_no_example_or_link_points_outside_the_repository() -> None:
    problems = []
    for block in doc_blocks():
        for pattern, what in OUTSIDE:
            for m in pattern.finditer(block.text):
                line = block.line + 1 + block.text.count("\n", 0, m.start())
                problems.append(f"{block.doc}:{line}: {what}: {m.group(0)!r}")
    for doc in DOC_FILES:
        text = (ROOT / doc).read_text()
        base = (ROOT / doc).parent
        for m in re.finditer(r"\]\(([^)\s]+)\)", text):
            target = m.group(1).split("#", 1)[0]
            if not target or re.match(r"^[a-z]+:", target):  # anchors, http(s):, mailto:
                continue
            path = (base / target).resolve()
            line = text.count("\n", 0, m.start()) + 1
            if ROOT.resolve() not in path.parents and path != ROOT.resolve():
                problems.append(f"{doc}:{line}: link outside the repository: {target}")
            elif not path.exists():
                problems.append(f"{doc}:{line}: link to a missing file: {target}")
        for pattern, what in OUTSIDE[2:]:
            for m in pattern.finditer(text):
                problems.append(f"{doc}:{text.count(chr(10), 0, m.start()) + 1}: {what}: {m.group(0)!r}")
    assert not problems, "\n".join(problems)


def test_untagged_blocks_hold_no_commands() -> None:
    """Commands are only in bash/python blocks (so the run below sees every one of them)."""
    hidden = [f"{b.where}: {line.strip()}" for b in doc_blocks() if b.lang not in SHELL_LANGS | {"python"}
              for line in b.text.splitlines() if re.match(r"\s*(\$ )?(python|pip|import |from \w+ import)", line)]
    assert not hidden, "commands in untagged blocks:\n" + "\n".join(hidden)


def test_tables_are_current_and_every_command_is_run_or_skipped_with_a_reason() -> None:
    run, skipped, files, used_skip, used_sub = collect()
    assert len(run) >= 25, [c.text for c in run]
    stale = [SKIP[i][0] for i in range(len(SKIP)) if i not in used_skip]
    stale += [f"{SUBSTITUTIONS[i][0]}: {SUBSTITUTIONS[i][1]}" for i in range(len(SUBSTITUTIONS)) if i not in used_sub]
    assert not stale, f"table entries that match nothing: {stale}"
    for cmd, reason in skipped:
        assert len(reason) > 20, (cmd.where, cmd.text)
    # every shell command not skipped is a Python command (nothing silently dropped)
    others = [f"{c.where}: {c.text}" for c in run if c.kind == "other"]
    assert not others, f"shell commands neither run nor skipped: {others}"
    assert "my_grid.toml" in files
    # the fixtures are used by some command
    texts = " ".join(c.text for c in run)
    assert all(name in texts for name in FIXTURES), [n for n in FIXTURES if n not in texts]
    # the skipped scripts exist in the repository all the same
    for cmd, _ in skipped:
        for script in re.findall(r"python\s+((?:benchmarks/)?[\w/]+\.py)", cmd.text):
            assert (ROOT / script).is_file(), f"{cmd.where}: {script} does not exist"


# --------------------------------------------------------------------------- running them
DRIVER = textwrap.dedent('''
    import json, os, runpy, sys, time, traceback
    jobs = json.load(open(sys.argv[1]))
    import numpy
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot
    import gymnasium as gym
    import specstop_gym, agents.registry, specstop_gym.evaluation, specstop_gym.traces
    for extra in ("torch", "stable_baselines3", "sb3_contrib"):
        try:
            __import__(extra)
        except ImportError:
            pass
    env = gym.make("SpecStop-v0")  # loads the compiled kernels once, for every child
    env.reset(seed=0)
    env.step(0)
    env.close()
    results = {"package": specstop_gym.__file__, "jobs": []}
    for job in jobs:
        t0 = time.perf_counter()
        log = open(job["log"], "w")
        pid = os.fork()
        if pid == 0:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            code = 0
            try:
                if job["kind"] == "code":
                    sys.argv = ["-c"]
                    exec(compile(job["code"], job["where"], "exec"), {"__name__": "__main__"})
                elif job["kind"] == "module":
                    sys.argv = [job["argv"][1], *job["argv"][2:]]
                    runpy.run_module(job["argv"][1], run_name="__main__", alter_sys=True)
                else:
                    sys.argv = list(job["argv"])
                    runpy.run_path(job["argv"][0], run_name="__main__")
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        results["jobs"].append({"code": os.waitstatus_to_exitcode(status), "s": time.perf_counter() - t0})
    print(json.dumps(results))
''')


def _copy_compiled_kernels(clone: Path) -> None:
    """numba's cache of this checkout's kernels, valid for the clone when kernels.py is the same
    file (numba keys its cache on the source's modification time and size)."""
    src = ROOT / "specstop_gym" / "core" / "kernels.py"
    dst = clone / "specstop_gym" / "core" / "kernels.py"
    cache = src.parent / "__pycache__"
    if src.read_bytes() != dst.read_bytes() or not cache.is_dir():
        return
    (dst.parent / "__pycache__").mkdir(exist_ok=True)
    for f in cache.glob("kernels.*.nb[ic]"):
        shutil.copy2(f, dst.parent / "__pycache__" / f.name)
    st = src.stat()
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def _overlay_uncommitted(clone: Path) -> None:
    """Copy the checkout's uncommitted edits into the clone (modified tracked files and untracked
    files git does not ignore; deleted files deleted), so that the clone is what committing the
    working tree would give: a developer tests the docs before committing them."""
    def git(*args: str) -> list[str]:
        r = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
        return [p for p in r.stdout.split("\0") if p]

    for rel in git("ls-files", "-z", "--modified", "--others", "--exclude-standard"):
        src, dst = ROOT / rel, clone / rel
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    for rel in git("ls-files", "-z", "--deleted"):
        (clone / rel).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing to clone")  # CI runs on a git checkout
    dest = tmp_path_factory.mktemp("docs") / "clone"
    r = subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(dest)], capture_output=True,
                       text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    _overlay_uncommitted(dest)
    _copy_compiled_kernels(dest)
    return dest


def test_every_example_runs_in_a_fresh_clone(clone: Path, tmp_path: Path) -> None:
    run, skipped, files, _, _ = collect()
    for name, text in files.items():
        (clone / name).write_text(text)
    for name, (content, _why) in FIXTURES.items():
        (clone / name).write_text(content)
    jobs, seen = [], set()
    for cmd in run:
        argv = list(cmd.argv)
        if cmd.kind == "script":
            argv = argv + budget_flags(argv)
            assert (clone / argv[0]).is_file(), f"{cmd.where}: {argv[0]} is not in the repository"
        key = (cmd.kind, tuple(argv), cmd.code)
        if key in seen:
            continue
        seen.add(key)
        jobs.append({"where": cmd.where, "kind": cmd.kind, "argv": argv, "code": cmd.code,
                     "log": str(tmp_path / f"job{len(jobs)}.log"),
                     "shown": cmd.text if cmd.kind == "code" else shlex.join(["python", *argv])})
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    (tmp_path / "driver.py").write_text(DRIVER)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_CACHE_DIR", "PYTHONPATH"))}
    env.update(PYTHONPATH=str(clone), MPLBACKEND="Agg", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               SPECSTOP_GYM_COMPILE=os.environ.get("SPECSTOP_GYM_COMPILE", "inline"))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "jobs.json")], cwd=clone,
                       env=env, capture_output=True, text=True, timeout=900, check=False)
    wall = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(r.stdout.strip().splitlines()[-1])
    assert Path(results["package"]).resolve().is_relative_to(clone.resolve()), results["package"]
    failed = []
    for job, res in zip(jobs, results["jobs"]):
        if res["code"] != 0:
            log = Path(job["log"]).read_text()[-1500:]
            failed.append(f"{job['where']}: exit {res['code']}: {job['shown'][:300]}\n{log}")
    timing = ", ".join(f"{j['where']} {res['s']:.1f}s" for j, res in zip(jobs, results["jobs"]))
    print(f"\n{len(jobs)} examples in {wall:.0f} s ({len(skipped)} skipped): {timing}")
    assert not failed, "\n\n".join(failed)
    # what the examples promise exists
    assert (clone / "results" / "docs-test-paper" / "paper.json").is_file()
    assert any((clone / "runs").glob("*/model.zip"))
