"""Where numba caches the compiled kernels, with a fallback when nowhere numba looks is writable.

numba (``cache=True``) stores compiled kernels, in this order, under ``NUMBA_CACHE_DIR`` when the
user sets it, in the ``__pycache__`` folder next to the source, or in the user-wide cache folder
(``$XDG_CACHE_HOME/numba`` or ``~/.cache/numba``). When none of them is writable (a read-only
site-packages with a read-only or missing home, as in some containers and CI sandboxes), numba
refuses at import: ``cannot cache function 'mix': no locator available``. :func:`cache_enabled`
then points numba's cache (``numba.config.CACHE_DIR``, this process only) to a private folder
under the temporary directory, ``specstop_gym-numba-cache-<uid>`` (created with mode 0700, and
used only when it is a real directory owned by this user and writable by no one else: the cache
holds pickled code), and as a last resort compiles without a cache, with a one-line warning.
"""

from __future__ import annotations

import os
import stat
import tempfile
import warnings

import numba

NO_CACHE_WARNING = (
    "specstop_gym: no writable folder for numba's cache (package folder, NUMBA_CACHE_DIR, "
    "~/.cache, the temporary directory): the kernels compile at every start (about a minute); "
    "set NUMBA_CACHE_DIR to a writable folder to cache them"
)


def _probe() -> None:
    """A function in this package's folder: numba looks for a cache location for it as for the
    kernels (same source folder)."""


def numba_finds_cache() -> bool:
    """Whether numba finds a writable cache location for a function of this folder (numba's own
    test, which creates the folder if it can)."""
    from numba.core.caching import FunctionCache

    try:
        FunctionCache(_probe)
    except RuntimeError:  # "cannot cache function ...: no locator available for file ..."
        return False
    return True


def private_temp_cache_dir() -> str | None:
    """``<tempdir>/specstop_gym-numba-cache-<uid>``, created with mode 0700 if missing; None when it
    cannot be created or is not a directory owned by this user and closed to others."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    owner = str(uid) if uid is not None else (os.environ.get("USERNAME") or "user")
    path = os.path.join(tempfile.gettempdir(), f"specstop_gym-numba-cache-{owner}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode):  # a file or a symlink planted there: not ours
        return None
    if uid is not None and (st.st_uid != uid or st.st_mode & 0o022):
        return None
    return path


def cache_enabled() -> bool:
    """Make sure numba can cache this package's kernels (module docstring); False when they must
    compile without a cache (a warning has been issued)."""
    if numba_finds_cache():
        return True
    previous = numba.config.CACHE_DIR
    fallback = private_temp_cache_dir()
    if fallback is not None:
        numba.config.CACHE_DIR = fallback
        if numba_finds_cache():
            return True
        numba.config.CACHE_DIR = previous
    warnings.warn(NO_CACHE_WARNING, RuntimeWarning, stacklevel=2)
    return False
