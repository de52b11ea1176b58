"""Channel processes in wall-clock time (SPEC 3), batch-first.

A channel gives the rtt of a round sent at wall-clock time ``t_send`` (ms since
the episode start) and the channel state (CSI) at any time. Its per-row path
state lives in :class:`ChannelRows` (owned by the simulator) so that one channel
object serves a whole batch.

Common random numbers: the state path of a Markov channel is generated from the
episode key by switch number (so the path is a fixed function of wall-clock
time), the rtt jitter of a round sent at ``t_send`` is indexed by the wall-clock
slot ``floor(t_send / jitter_slot_ms)``, and a trace starts at an offset drawn
from the episode key. Two policies on the same key therefore face the same
channel realisation, indexed by wall-clock time.

Distributions: ``lognormal(mean, cv)`` has ``sigma^2 = ln(1 + cv^2)``,
``mu = ln(mean) - sigma^2 / 2``; ``gamma(mean, cv)`` has shape ``1/cv^2`` and
scale ``mean * cv^2``. ``cv = 0`` gives the constant ``mean``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import rng

PROBE_SLOT = 1  # jitter slot of the initial rtt probe at reset (rounds use slot 0)


@dataclass
class ChannelRows:
    """Per-row path state of a channel (arrays of shape (B,))."""

    state: np.ndarray
    next_switch_ms: np.ndarray
    switch_count: np.ndarray
    offset_ms: np.ndarray

    @classmethod
    def empty(cls, batch: int) -> "ChannelRows":
        return cls(np.zeros(batch, np.int64), np.full(batch, np.inf), np.zeros(batch, np.int64), np.zeros(batch))


def lognormal_from_normal(mean: np.ndarray, cv: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Lognormal variate with the given mean and coefficient of variation from a standard normal z."""
    s2 = np.log1p(np.square(cv))
    return mean * np.exp(np.sqrt(s2) * z - 0.5 * s2)


class Channel:
    """Interface: see module docstring."""

    n_states: int = 1
    kind: str = "base"

    def init_rows(self, rows: ChannelRows, idx: np.ndarray, keys: np.ndarray) -> None:
        """Start the paths of rows ``idx`` at time 0 (keys: their episode keys)."""
        rows.state[idx] = 0
        rows.next_switch_ms[idx] = np.inf
        rows.switch_count[idx] = 0
        rows.offset_ms[idx] = 0.0

    def state_at(self, rows: ChannelRows, idx: np.ndarray | slice, keys: np.ndarray, t_ms: np.ndarray) -> np.ndarray:
        """Channel state of rows ``idx`` (index array or slice) at times ``t_ms`` (non-decreasing per row)."""
        return rows.state[idx]

    def sample_rtt(self, rows: ChannelRows, idx: np.ndarray, keys: np.ndarray, t_ms: np.ndarray,
                   state: np.ndarray, slot: int = 0) -> np.ndarray:
        """rtt (ms) of a round sent at ``t_ms`` in ``state``."""
        raise NotImplementedError  # pragma: no cover - interface

    def mean_rtt_ms(self, rows: ChannelRows, idx: np.ndarray, t_ms: np.ndarray, state: np.ndarray) -> np.ndarray:
        """Mean rtt (ms) the channel has at ``t_ms`` in ``state`` (what a clairvoyant oracle plans with)."""
        raise NotImplementedError  # pragma: no cover - interface

    def long_run_mean_rtt_ms(self) -> float:
        """Long-run mean rtt (ms): the stationary delay the stationary oracle uses."""
        raise NotImplementedError  # pragma: no cover - interface

    def tx_ms_per_token(self, state: np.ndarray, bytes_per_token: float,
                        bandwidth_kbps: float | None) -> np.ndarray | float:
        """Uplink transmission time per drafted token, ms (0 without a bandwidth)."""
        if bandwidth_kbps is None or bytes_per_token == 0:
            return 0.0
        return bytes_per_token * 8.0 / bandwidth_kbps

    def _slot_index(self, t_ms: np.ndarray, slot_ms: float) -> np.ndarray:
        return np.floor(t_ms / slot_ms).astype(np.int64)


@dataclass(eq=False)
class IIDChannel(Channel):
    """rtt i.i.d. from lognormal or gamma with ``mean_ms`` and ``cv`` (cv = 0: constant)."""

    mean_ms: float
    cv: float = 0.0
    distribution: str = "lognormal"
    jitter_slot_ms: float = 1.0
    kind: str = "iid"

    def sample_rtt(self, rows, idx, keys, t_ms, state, slot=0):
        if self.cv == 0:
            return np.full(np.shape(t_ms), self.mean_ms)
        j = self._slot_index(t_ms, self.jitter_slot_ms)
        if self.distribution == "gamma":
            from scipy.special import gammaincinv

            u = rng.uniform(keys, rng.STREAM_RTT, j, slot)
            shape = 1.0 / self.cv**2
            return gammaincinv(shape, u) * self.mean_ms / shape
        z = rng.normal(keys, rng.STREAM_RTT, j, slot)
        return lognormal_from_normal(self.mean_ms, self.cv, z)

    def mean_rtt_ms(self, rows, idx, t_ms, state):
        return np.full(np.shape(t_ms), self.mean_ms)

    def long_run_mean_rtt_ms(self) -> float:
        return self.mean_ms


@dataclass(eq=False)
class MarkovChannel(Channel):
    """Markov-modulated channel: states evolve in wall-clock time with generator Q (per ms).

    Holding time in state s ~ Exp(-Q[s, s]); the next state is j with probability
    ``Q[s, j] / -Q[s, s]``. The initial state is drawn from the stationary
    distribution. In state s the rtt is lognormal(mean_ms[s], cv[s]) and the
    uplink bandwidth is ``bandwidth_kbps[s]``.
    """

    generator_per_ms: np.ndarray
    mean_ms: np.ndarray
    cv: np.ndarray
    bandwidth_kbps: np.ndarray | None = None
    jitter_slot_ms: float = 1.0
    kind: str = "markov"
    _rates: np.ndarray = field(init=False, repr=False)
    _jump_cdf: np.ndarray = field(init=False, repr=False)
    _stationary_cdf: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        q = np.asarray(self.generator_per_ms, dtype=np.float64)
        self.generator_per_ms = q
        self.mean_ms = np.asarray(self.mean_ms, dtype=np.float64)
        self.cv = np.asarray(self.cv, dtype=np.float64)
        if self.bandwidth_kbps is not None:
            self.bandwidth_kbps = np.asarray(self.bandwidth_kbps, dtype=np.float64)
        self.n_states = q.shape[0]
        self._rates = -np.diag(q)
        jump = np.where(np.eye(self.n_states, dtype=bool), 0.0, q)
        with np.errstate(invalid="ignore", divide="ignore"):
            jump = np.where(self._rates[:, None] > 0, jump / self._rates[:, None], 0.0)
        self._jump_cdf = np.cumsum(jump, axis=1)
        self._stationary_cdf = np.cumsum(stationary_distribution(q))

    def stationary(self) -> np.ndarray:
        return np.diff(self._stationary_cdf, prepend=0.0)

    def _holding(self, keys, state, count) -> np.ndarray:
        u = rng.uniform(keys, rng.STREAM_MARKOV, count, 0)
        rate = self._rates[state]
        with np.errstate(divide="ignore"):
            return np.where(rate > 0, -np.log(u) / np.where(rate > 0, rate, 1.0), np.inf)

    def init_rows(self, rows, idx, keys):
        u = rng.uniform(keys, rng.STREAM_INIT, np.zeros(len(keys), np.int64))
        s = np.minimum(np.searchsorted(self._stationary_cdf, u, side="right"), self.n_states - 1)
        rows.state[idx] = s
        rows.switch_count[idx] = 0
        rows.next_switch_ms[idx] = self._holding(keys, s, np.zeros(len(keys), np.int64))
        rows.offset_ms[idx] = 0.0

    def state_at(self, rows, idx, keys, t_ms):
        if isinstance(idx, slice):
            idx = np.arange(len(rows.state))[idx]
        due = rows.next_switch_ms[idx] <= t_ms
        while due.any():
            r = idx[due]
            k = keys[due]
            cnt = rows.switch_count[r] + 1
            u = rng.uniform(k, rng.STREAM_MARKOV, cnt, 1)
            cdf = self._jump_cdf[rows.state[r]]
            new = np.minimum((cdf < u[:, None]).sum(axis=1), self.n_states - 1)
            rows.state[r] = new
            rows.switch_count[r] = cnt
            rows.next_switch_ms[r] = rows.next_switch_ms[r] + self._holding(k, new, cnt)
            due = rows.next_switch_ms[idx] <= t_ms
        return rows.state[idx]

    def sample_rtt(self, rows, idx, keys, t_ms, state, slot=0):
        z = rng.normal(keys, rng.STREAM_RTT, self._slot_index(t_ms, self.jitter_slot_ms), slot)
        return lognormal_from_normal(self.mean_ms[state], self.cv[state], z)

    def mean_rtt_ms(self, rows, idx, t_ms, state):
        return self.mean_ms[state]

    def long_run_mean_rtt_ms(self) -> float:
        return float(self.stationary() @ self.mean_ms)

    def tx_ms_per_token(self, state, bytes_per_token, bandwidth_kbps):
        if self.bandwidth_kbps is None or bytes_per_token == 0:
            return 0.0
        return bytes_per_token * 8.0 / self.bandwidth_kbps[state]


def stationary_distribution(generator_per_ms: np.ndarray) -> np.ndarray:
    """pi with pi Q = 0, sum(pi) = 1 (least squares; uniform over states for Q = 0)."""
    q = np.asarray(generator_per_ms, dtype=np.float64)
    m = q.shape[0]
    if not np.any(q):
        return np.full(m, 1.0 / m)
    a = np.vstack([q.T, np.ones(m)])
    b = np.zeros(m + 1)
    b[-1] = 1.0
    pi = np.linalg.lstsq(a, b, rcond=None)[0]
    pi = np.clip(pi, 0.0, None)
    return pi / pi.sum()


@dataclass(eq=False)
class DriftChannel(Channel):
    """Mean rtt follows a schedule of (t_ms, mean_ms) breakpoints, held (step) or interpolated
    (linear), looping every ``period_ms`` if given; lognormal jitter with ``cv`` around it."""

    times_ms: np.ndarray
    means_ms: np.ndarray
    mode: str = "step"
    period_ms: float | None = None
    cv: float = 0.1
    jitter_slot_ms: float = 1.0
    kind: str = "drift"

    def _mean(self, t_ms: np.ndarray) -> np.ndarray:
        t = np.asarray(t_ms, dtype=np.float64)
        if self.period_ms is not None:
            t = np.mod(t, self.period_ms)
        if self.mode == "linear":
            return np.interp(t, self.times_ms, self.means_ms)
        i = np.searchsorted(self.times_ms, t, side="right") - 1
        return self.means_ms[np.clip(i, 0, len(self.means_ms) - 1)]

    def sample_rtt(self, rows, idx, keys, t_ms, state, slot=0):
        mean = self._mean(t_ms)
        if self.cv == 0:
            return mean
        z = rng.normal(keys, rng.STREAM_RTT, self._slot_index(t_ms, self.jitter_slot_ms), slot)
        return lognormal_from_normal(mean, self.cv, z)

    def mean_rtt_ms(self, rows, idx, t_ms, state):
        return self._mean(t_ms)

    def long_run_mean_rtt_ms(self) -> float:
        end = self.period_ms if self.period_ms is not None else float(self.times_ms[-1]) + 1.0
        grid = np.linspace(0.0, end, 20001)[:-1]
        return float(self._mean(grid).mean())


@dataclass(eq=False)
class TraceChannel(Channel):
    """Replay of a measured rtt series (t_ms, rtt_ms[, state]) as a step function, looped.

    Each episode starts at an offset drawn uniformly over the loop duration from
    the episode key (or at 0). The loop duration is the last timestamp plus the
    median sampling interval. The trace's ``state`` column, if any, is the CSI.
    """

    times_ms: np.ndarray
    rtts_ms: np.ndarray
    states: np.ndarray | None = None
    random_offset: bool = True
    kind: str = "trace"
    duration_ms: float = field(init=False)

    def __post_init__(self) -> None:
        t = np.asarray(self.times_ms, dtype=np.float64)
        self.times_ms = t - t[0]
        self.rtts_ms = np.asarray(self.rtts_ms, dtype=np.float64)
        step = float(np.median(np.diff(self.times_ms))) if t.size > 1 else 1.0
        self.duration_ms = float(self.times_ms[-1]) + max(step, 1e-9)
        if self.states is not None:
            self.states = np.asarray(self.states, dtype=np.int64)
            self.n_states = int(self.states.max()) + 1

    def _index(self, rows, idx, t_ms):
        tt = np.mod(rows.offset_ms[idx] + t_ms, self.duration_ms)
        return np.clip(np.searchsorted(self.times_ms, tt, side="right") - 1, 0, len(self.times_ms) - 1)

    def init_rows(self, rows, idx, keys):
        super().init_rows(rows, idx, keys)
        if self.random_offset:
            rows.offset_ms[idx] = rng.uniform(keys, rng.STREAM_OFFSET, np.zeros(len(keys), np.int64)) * self.duration_ms

    def state_at(self, rows, idx, keys, t_ms):
        if self.states is None:
            return np.zeros(np.shape(t_ms), np.int64)
        return self.states[self._index(rows, idx, t_ms)]

    def sample_rtt(self, rows, idx, keys, t_ms, state, slot=0):
        return self.rtts_ms[self._index(rows, idx, t_ms)]

    def mean_rtt_ms(self, rows, idx, t_ms, state):
        return self.rtts_ms[self._index(rows, idx, t_ms)]

    def long_run_mean_rtt_ms(self) -> float:
        w = np.diff(np.append(self.times_ms, self.duration_ms))
        return float((w * self.rtts_ms).sum() / w.sum())
