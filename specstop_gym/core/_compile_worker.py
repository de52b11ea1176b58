"""The background compiler of :mod:`._coldstart` (``python -m specstop_gym.core._compile_worker LOCK``):
compiles the kernels its parent asks for (one request per line on stdin) into numba's cache and
reports each (``ready KEY`` / ``failed KEY`` on stdout). Nothing imports this module, so running it
with ``-m`` gives no second copy of an imported module."""

import sys
from pathlib import Path

from specstop_gym.core._coldstart import worker

if __name__ == "__main__":
    worker(Path(sys.argv[1]))
