"""``import specstop_gym`` where numba's usual cache folders are not writable (issue 15, point 3).

Each case runs a fresh interpreter on a read-only copy of the package (without ``__pycache__``)
with HOME read-only, imports the package and compiles one small kernel. Root ignores permission
bits, so the copy's ``core/__pycache__`` and ``$HOME/.cache`` are also plain files, which no one
can turn into folders: numba's in-tree and user-wide locations are unusable either way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CODE = ("import numba, specstop_gym, specstop_gym.core.kernels as k; "
        "print(k._JIT['cache'], numba.config.CACHE_DIR or '-'); print(int(k.mix(k.GOLDEN)))")
MIX_GOLDEN = 16294208416658607535  # SplitMix64 finaliser of the golden-ratio constant


def _read_only(path: Path) -> None:
    for root, dirs, files in os.walk(path):
        for name in files:
            os.chmod(os.path.join(root, name), 0o444)
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o555)
    os.chmod(path, 0o555)


def _writable(path: Path) -> None:
    os.chmod(path, 0o755)
    for root, dirs, files in os.walk(path):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)


@pytest.fixture()
def sandbox(tmp_path: Path):
    pkg = tmp_path / "site"
    shutil.copytree(ROOT / "specstop_gym", pkg / "specstop_gym", ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "specstop_gym" / "core" / "__pycache__").write_text("")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".cache").write_text("")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    _read_only(pkg)
    _read_only(home)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NUMBA_") and k not in ("XDG_CACHE_HOME", "PYTHONPATH", "PYTHONPYCACHEPREFIX")}
    env.update(HOME=str(home), TMPDIR=str(tmpdir), PYTHONPATH=str(pkg), PYTHONDONTWRITEBYTECODE="1")
    yield tmp_path, env, tmpdir
    _writable(pkg)
    _writable(home)


def run(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=300, check=False)


def cached_kernels(folder: Path) -> list[Path]:
    return sorted(folder.rglob("kernels.mix-*.nbi"))


def test_falls_back_to_a_private_temp_folder(sandbox) -> None:
    tmp_path, env, tmpdir = sandbox
    r = run(tmp_path, env)
    assert r.returncode == 0, r.stderr
    fallback = tmpdir / f"specstop_gym-numba-cache-{os.getuid()}"
    assert r.stdout.split() == ["True", str(fallback), str(MIX_GOLDEN)]
    assert "Warning" not in r.stderr
    assert cached_kernels(fallback) and (fallback.stat().st_mode & 0o777) == 0o700


def test_respects_the_users_numba_cache_dir(sandbox) -> None:
    tmp_path, env, tmpdir = sandbox
    mine = tmp_path / "my-numba-cache"
    r = run(tmp_path, {**env, "NUMBA_CACHE_DIR": str(mine)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", str(mine), str(MIX_GOLDEN)]
    assert cached_kernels(mine) and not list(tmpdir.iterdir())


def test_last_resort_compiles_without_cache_and_warns_once(sandbox) -> None:
    tmp_path, env, tmpdir = sandbox
    (tmpdir / f"specstop_gym-numba-cache-{os.getuid()}").write_text("")  # a file where the folder would go
    r = run(tmp_path, env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "-", str(MIX_GOLDEN)]
    warnings = [line for line in r.stderr.splitlines() if "RuntimeWarning" in line]
    assert len(warnings) == 1 and "NUMBA_CACHE_DIR" in warnings[0] and "Traceback" not in r.stderr


def test_refuses_a_temp_folder_open_to_others(sandbox) -> None:
    tmp_path, env, tmpdir = sandbox
    shared = tmpdir / f"specstop_gym-numba-cache-{os.getuid()}"
    shared.mkdir()
    shared.chmod(0o777)  # someone else could have planted pickled code there
    r = run(tmp_path, env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "False" and not list(shared.iterdir())
