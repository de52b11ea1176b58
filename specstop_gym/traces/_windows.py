"""Statistics over many variable-length windows of one array, vectorised (internal)."""

from __future__ import annotations

import numpy as np


def window_stats(
    values: np.ndarray, start: np.ndarray, stop: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Median and robust spread (IQR / 1.349) of ``values[start[i]:stop[i]]`` for every ``i``, vectorised.

    Windows are gathered into a padded matrix (padding +inf sorts last) in
    chunks of at most about two million cells and sorted row-wise; order
    statistics are read off (lower quartile index ``(n-1)//4``, upper
    ``(3(n-1)+3)//4``). Empty windows give NaN.
    """
    n = start.size
    lens = stop - start
    med = np.full(n, np.nan)
    spread = np.full(n, np.nan)
    width = int(lens.max()) if n else 0
    if width == 0:
        return med, spread
    cols = np.arange(width)
    chunk = max(1, 2_000_000 // width)
    for c0 in range(0, n, chunk):
        s, ln = start[c0 : c0 + chunk], lens[c0 : c0 + chunk]
        idx = np.minimum(s[:, None] + cols[None, :], values.size - 1)
        block = np.where(cols[None, :] < ln[:, None], values[idx], np.inf)
        block.sort(axis=1)
        rows = np.arange(s.size)
        last = np.maximum(ln - 1, 0)
        with np.errstate(invalid="ignore"):
            m = 0.5 * (block[rows, last // 2] + block[rows, (last + 1) // 2])
            iqr = block[rows, (3 * last + 3) // 4] - block[rows, last // 4]
        med[c0 : c0 + chunk] = np.where(ln > 0, m, np.nan)
        spread[c0 : c0 + chunk] = np.where(ln > 0, iqr / 1.349, np.nan)
    return med, spread


def window_medians(values: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """Median of ``values[start[i]:stop[i]]`` for every ``i`` (NaN for an empty window)."""
    return window_stats(values, start, stop)[0]
