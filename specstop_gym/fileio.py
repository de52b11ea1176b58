"""Crash-safe output files of the scripts: atomic writes, a lock on an output folder, the run
status, orphan temporaries and disk errors reported in one line.

* **Atomic writes** (:func:`atomic_write_bytes`, :func:`atomic_write_text`,
  :func:`atomic_write_json`, and :func:`atomic_path` for writers that want a path, e.g.
  Stable-Baselines3's ``save`` or matplotlib's ``savefig``): the content goes to a temporary
  file in the destination folder (``.<name>.<8 random characters>.tmp<suffix>``), is flushed
  and ``fsync``-ed, then renamed over the destination with ``os.replace`` (atomic on POSIX),
  and the folder is ``fsync``-ed. A reader, or a process killed at any moment, sees either the
  previous file or the complete new one under the final name; never a truncated one. On an
  exception the temporary file is removed; after ``SIGKILL`` it stays behind as an *orphan*
  that :func:`clean_orphans` removes at the next start (the folder lock guarantees that no
  live writer owns it).
* **Folder lock** (:class:`FolderLock`): ``fcntl.flock`` on ``<folder>/.specstop.lock``, held for
  the whole run and released by the kernel when the process ends (also on ``SIGKILL``), so a
  second ``evaluate.py`` / ``train.py`` on the same folder is refused at once and a crashed
  run never leaves a stale lock. The lock file itself stays (empty); removing it would race.
* **Disk errors**: :func:`disk_error_message` turns ``ENOSPC``, ``EDQUOT``, ``EROFS``,
  ``EACCES``, ``EPERM`` and ``EIO`` into one line naming the file; :func:`free_bytes` lets a
  script compare an estimate of its output with the free space before any work.

Only the standard library: every layer may use it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

PathLike = str | os.PathLike[str]

LOCK_NAME = ".specstop.lock"
"""Name of the lock file inside a locked folder."""

_ORPHAN = re.compile(r"^\..+\.[A-Za-z0-9]{8}\.tmp(\.[A-Za-z0-9]{1,8})?$")
DISK_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
               errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
               errno.EPERM: "operation not permitted", errno.EIO: "input/output error"}
"""errno values reported as disk errors (one line, no traceback) and their wording."""


class LockedError(RuntimeError):
    """Another process holds the lock of an output folder."""


# ----------------------------------------------------------------------------- atomic writes
def temporary_name(path: PathLike) -> Path:
    """A fresh temporary path next to ``path``: ``.<name>.<8 random characters>.tmp<suffix>``
    (the suffix is kept so that writers choosing a format by extension keep working)."""
    p = Path(path)
    return p.with_name(f".{p.name}.{secrets.token_hex(4)}.tmp{p.suffix}")


def is_temporary(name: str) -> bool:
    """Whether a file name is one of :func:`temporary_name`'s."""
    return bool(_ORPHAN.match(name))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(folder: PathLike) -> None:
    """Flush a folder's entries (a rename) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block ends normally the file written
    there is fsync-ed and renamed to ``path``; on an exception it is removed.

    For writers that take a file name (``model.save(tmp)``, ``fig.savefig(tmp)``). The writer
    must write exactly the yielded path (SB3 appends ``.zip``/``.pkl`` only when the name has
    no suffix; the temporary name keeps the destination's suffix).
    """
    final = Path(path)
    tmp = temporary_name(final)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(errno.ENOENT, "the writer did not create its file", str(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        fsync_file(tmp)
        os.replace(tmp, final)
    except BaseException:  # also KeyboardInterrupt: never leave the temporary file behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(final.parent)


def atomic_write(path: PathLike, write: Callable[[IO[Any]], Any], *, binary: bool = False) -> None:
    """Call ``write(f)`` on a temporary file next to ``path``, then move it into place atomically."""
    with atomic_path(path) as tmp:
        mode = "wb" if binary else "w"
        kw: dict[str, Any] = {} if binary else {"encoding": "utf-8", "newline": ""}
        with open(tmp, mode, **kw) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(data), binary=True)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8, line endings as given) to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(text))


def atomic_write_json(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as strict JSON (``allow_nan=False``; convert NaN beforehand), indented."""
    atomic_write(path, lambda f: (json.dump(obj, f, indent=2, allow_nan=False), f.write("\n")))


def clean_orphans(folder: PathLike, *, recursive: bool = True) -> list[Path]:
    """Remove the temporary files a killed writer left in ``folder`` (and its subfolders).

    Only names made by :func:`temporary_name` are touched. Call it while holding the folder's
    :class:`FolderLock`: then no live writer owns them. Returns the removed paths.
    """
    root = Path(folder)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    walker = os.walk(root) if recursive else [(str(root), [], [p.name for p in root.iterdir()])]
    for dirpath, _dirs, files in walker:
        for name in files:
            if is_temporary(name):
                p = Path(dirpath) / name
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed.append(p)
    return removed


# ----------------------------------------------------------------------------- folder lock
class FolderLock:
    """An exclusive, non-blocking ``flock`` on ``<folder>/.specstop.lock`` (module docstring).

    ``acquire()`` raises :class:`LockedError` naming the holder (its pid and command, written
    into the lock file) when another process has the folder. Use as a context manager or call
    ``release()``; the kernel releases it when the process ends in any way.
    """

    def __init__(self, folder: PathLike, purpose: str = "") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.purpose = purpose
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = ""
            with contextlib.suppress(OSError, UnicodeDecodeError):
                holder = os.pread(fd, 4096, 0).decode("utf-8").strip()
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f" ({holder})" if holder else ""
                raise LockedError(f"another process is writing to {str(self.folder)!r}{who}; wait for it to end "
                                  "or choose another folder") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}{': ' + self.purpose if self.purpose else ''}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# ----------------------------------------------------------------------------- disk errors
def disk_error_message(exc: BaseException) -> str | None:
    """One line for a disk error (``ENOSPC``, ``EROFS``, ``EACCES``, ...), naming the file;
    None for any other exception."""
    if not isinstance(exc, OSError) or exc.errno not in DISK_ERRNOS:
        return None
    where = exc.filename if exc.filename is not None else ""
    if where:
        where = f" {str(where)!r}"
    return f"cannot write{where}: {DISK_ERRNOS[exc.errno]} ({errno.errorcode.get(exc.errno, exc.errno)})"


def free_bytes(folder: PathLike) -> int | None:
    """Free space (bytes) available to this user on the file system of ``folder`` (or of its
    nearest existing parent); None when it cannot be told."""
    p = Path(folder).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return int(shutil.disk_usage(p).free)
    except OSError:
        return None


def format_bytes(n: float) -> str:
    """``123456789`` -> ``"118 MiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def check_writable(folder: PathLike) -> Path:
    """Create ``folder`` (and parents) and check that a file can be written there.

    Raises ``OSError`` with a message naming the folder when it cannot be used.
    """
    p = Path(folder)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = temporary_name(p / "write-test")
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OSError(f"output folder {str(p)!r} is not writable: {e.strerror or e}") from e
    return p


__all__ = [
    "DISK_ERRNOS",
    "LOCK_NAME",
    "FolderLock",
    "LockedError",
    "atomic_path",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_writable",
    "clean_orphans",
    "disk_error_message",
    "format_bytes",
    "free_bytes",
    "fsync_dir",
    "fsync_file",
    "is_temporary",
    "temporary_name",
]
