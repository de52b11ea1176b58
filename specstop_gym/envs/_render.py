"""``render_mode="rgb_array"``: a small picture of one row's state, drawn with numpy alone.

The picture (``HEIGHT`` x width x 3, uint8, white background) is a bar chart of the
observation, left to right:

* a top strip coloured by the channel state (the true state, also when the agent does not
  observe it; one colour per state);
* blue: the draft position ``k / max_draft``;
* orange: the last rtt and its fast and slow averages, on a log scale from 1 ms (empty) to
  10 s (full);
* green: the acceptance estimate of each position ``1..max_draft``;
* grey: the share of the request still to generate.

Thin black ticks under the bars mark the groups. Frames are meant for video recording
(``gymnasium.wrappers.RecordVideo``, SB3's ``VecVideoRecorder``), not for reading values:
``render_mode="ansi"`` prints them.
"""

from __future__ import annotations

import math

import numpy as np

HEIGHT = 64
"""Frame height, pixels."""
_BAR, _GAP, _MARGIN, _STRIP = 6, 2, 4, 6
_STATE_COLOURS = np.array([[46, 139, 87], [205, 92, 92], [106, 90, 205], [218, 165, 32], [70, 130, 180],
                           [199, 21, 133]], np.uint8)
_BLUE, _ORANGE, _GREEN, _GREY = (np.array(c, np.uint8) for c in ([31, 119, 180], [255, 127, 14],
                                                                   [44, 160, 44], [127, 127, 127]))


def _rtt_fraction(rtt_s: float) -> float:
    """log10(rtt / 1 ms) / 4, clipped to [0, 1]: 1 ms -> 0, 10 s -> 1."""
    if not math.isfinite(rtt_s) or rtt_s <= 0.001:
        return 0.0
    return min(1.0, math.log10(rtt_s * 1000.0) / 4.0)


def frame_width(n_accept: int) -> int:
    """Width in pixels of a frame with ``n_accept`` acceptance bars."""
    n_bars = 1 + 3 + n_accept + 1
    return 2 * _MARGIN + n_bars * (_BAR + _GAP) + 3 * _GAP


def render_rgb(obs: np.ndarray, fields: list[str], state: int) -> np.ndarray:
    """The frame of one observation row (names ``fields``) in channel state ``state``."""
    accept = [i for i, f in enumerate(fields) if f.startswith("accept_est_")]
    col = {f: i for i, f in enumerate(fields)}
    width = frame_width(len(accept))
    img = np.full((HEIGHT, width, 3), 255, np.uint8)
    img[:_STRIP, :] = _STATE_COLOURS[int(state) % len(_STATE_COLOURS)]
    base = HEIGHT - 3  # bars grow upwards from here
    top = _STRIP + 2
    span = base - top
    x = _MARGIN

    def bar(fraction: float, colour: np.ndarray) -> None:
        nonlocal x
        f = 0.0 if not math.isfinite(fraction) else min(1.0, max(0.0, fraction))
        h = round(f * span)
        if h:
            img[base - h:base, x:x + _BAR] = colour
        img[base:base + 1, x:x + _BAR] = 0
        x += _BAR + _GAP

    bar(float(obs[col["position_frac"]]), _BLUE)
    x += _GAP
    for name in ("last_rtt_s", "rtt_ewma_fast_s", "rtt_ewma_slow_s"):
        bar(_rtt_fraction(float(obs[col[name]])), _ORANGE)
    x += _GAP
    for i in accept:
        bar(float(obs[i]), _GREEN)
    x += _GAP
    bar(float(obs[col["tokens_left_frac"]]), _GREY)
    return img
