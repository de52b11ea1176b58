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

from . import kernels
from .kernels import PROBE_SLOT  # noqa: F401  (re-exported)


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


def _rows_of(rows: "ChannelRows", idx: np.ndarray | slice) -> np.ndarray:
    """Row indices of ``idx`` (an index array or a slice over the rows)."""
    if isinstance(idx, slice):
        return np.arange(len(rows.state))[idx]
    return np.asarray(idx, dtype=np.int64).reshape(-1)


def _flat(x, n: int, dtype) -> np.ndarray:
    return kernels.as_arg(np.broadcast_to(np.asarray(x, dtype=dtype), (n,)), dtype)


class Channel:
    """Interface: see module docstring.

    Subclasses give ``pack`` (their parameters for the compiled kernels of
    :mod:`specstop_gym.core.kernels`, which the simulator runs) and
    ``long_run_mean_rtt_ms``; the methods below evaluate the same kernels on arrays
    (for tests, the oracle and analysis code).
    """

    n_states: int = 1
    kind: str = "base"

    def pack(self, builder: "kernels.ParamBuilder", config=None) -> None:  # pragma: no cover - interface
        """Write the kind and parameters of the channel (``config``: bytes per token, bandwidth)."""
        raise NotImplementedError

    def kernel_params(self) -> tuple[np.ndarray, np.ndarray]:
        """``(P, I)`` of this channel alone (cached)."""
        params = self.__dict__.get("_kernel_params")
        if params is None:
            params = kernels.pack_model(channel=self)
            self.__dict__["_kernel_params"] = params
        return kernels.read_only(params)

    def init_rows(self, rows: ChannelRows, idx: np.ndarray, keys: np.ndarray) -> None:
        """Start the paths of rows ``idx`` at time 0 (keys: their episode keys)."""
        r = _rows_of(rows, idx)
        n = len(r)
        P, I = self.kernel_params()
        state, count, nxt, off = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n), np.empty(n)
        kernels.channel_init_array(P, I, _flat(keys, n, np.uint64), state, count, nxt, off)
        rows.state[r], rows.switch_count[r], rows.next_switch_ms[r], rows.offset_ms[r] = state, count, nxt, off

    def state_at(self, rows: ChannelRows, idx: np.ndarray | slice, keys: np.ndarray, t_ms: np.ndarray) -> np.ndarray:
        """Channel state of rows ``idx`` (index array or slice) at times ``t_ms`` (non-decreasing per row)."""
        r = _rows_of(rows, idx)
        n = len(r)
        P, I = self.kernel_params()
        state, count, nxt = rows.state[r].copy(), rows.switch_count[r].copy(), rows.next_switch_ms[r].copy()
        out = np.empty(n, np.int64)
        kernels.channel_state_array(P, I, _flat(keys, n, np.uint64), _flat(t_ms, n, np.float64), state, count, nxt,
                                    kernels.as_arg(rows.offset_ms[r], np.float64), out)
        rows.state[r], rows.switch_count[r], rows.next_switch_ms[r] = state, count, nxt
        return out

    @staticmethod
    def _times_and_offsets(rows: ChannelRows | None, idx, t_ms) -> tuple[np.ndarray, np.ndarray]:
        t = np.asarray(t_ms, dtype=np.float64).reshape(-1)
        if rows is None or idx is None:
            return kernels.as_arg(t, np.float64), np.zeros(t.size)
        off = kernels.as_arg(rows.offset_ms[_rows_of(rows, idx)], np.float64)
        return kernels.as_arg(np.broadcast_to(t, off.shape), np.float64), off

    def sample_rtt(self, rows: ChannelRows | None, idx: np.ndarray | slice | None, keys: np.ndarray,
                   t_ms: np.ndarray, state: np.ndarray | None, slot: int = 0) -> np.ndarray:
        """rtt (ms) of a round sent at ``t_ms`` in ``state`` (rows: trace offsets; None: offset 0)."""
        t, off = self._times_and_offsets(rows, idx, t_ms)
        n = t.size
        P, I = self.kernel_params()
        out = np.empty(n)
        kernels.channel_rtt_array(P, I, _flat(keys, n, np.uint64), t, _flat(0 if state is None else state, n, np.int64),
                                  off, int(slot), out)
        return out

    def mean_rtt_ms(self, rows: ChannelRows | None, idx: np.ndarray | slice | None, t_ms: np.ndarray,
                    state: np.ndarray | None) -> np.ndarray:
        """Mean rtt (ms) the channel has at ``t_ms`` in ``state`` (what a clairvoyant oracle plans with)."""
        t, off = self._times_and_offsets(rows, idx, t_ms)
        n = t.size
        P, I = self.kernel_params()
        out = np.empty(n)
        kernels.channel_mean_array(P, I, t, _flat(0 if state is None else state, n, np.int64), off, out)
        return out

    def long_run_mean_rtt_ms(self) -> float:
        """Long-run mean rtt (ms): the stationary delay the stationary oracle uses."""
        raise NotImplementedError  # pragma: no cover - interface


def _pack_lognormal(builder, cv: float) -> None:
    s2 = float(np.log1p(cv * cv))
    builder.scalars[kernels.P_CV] = cv
    builder.scalars[kernels.P_SD] = np.sqrt(s2)
    builder.scalars[kernels.P_HALF_VAR] = 0.5 * s2


@dataclass(eq=False)
class IIDChannel(Channel):
    """rtt i.i.d. from lognormal or gamma with ``mean_ms`` and ``cv`` (cv = 0: constant)."""

    mean_ms: float
    cv: float = 0.0
    distribution: str = "lognormal"
    jitter_slot_ms: float = 1.0
    kind: str = "iid"

    def pack(self, builder, config=None):
        gamma = self.distribution == "gamma" and self.cv > 0
        builder.ints[kernels.I_CH_KIND] = kernels.CH_GAMMA if gamma else kernels.CH_IID
        builder.scalars[kernels.P_MEAN] = self.mean_ms
        builder.scalars[kernels.P_JITTER_SLOT] = self.jitter_slot_ms
        _pack_lognormal(builder, float(self.cv))
        if gamma:
            builder.scalars[kernels.P_GAMMA_SHAPE] = 1.0 / self.cv ** 2

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

    def pack(self, builder, config=None):
        m = self.n_states
        builder.ints[kernels.I_CH_KIND] = kernels.CH_MARKOV
        builder.ints[kernels.I_M] = m
        builder.scalars[kernels.P_JITTER_SLOT] = self.jitter_slot_ms
        s2 = np.log1p(np.square(self.cv))
        builder.floats(kernels.I_O_MEAN, self.mean_ms)
        builder.floats(kernels.I_O_SD, np.sqrt(s2))
        builder.floats(kernels.I_O_HALF_VAR, 0.5 * s2)
        builder.floats(kernels.I_O_RATES, self._rates)
        builder.floats(kernels.I_O_JUMP, self._jump_cdf)
        builder.floats(kernels.I_O_STAT, self._stationary_cdf)
        builder.scalars[kernels.P_TX] = 0.0  # the state's bandwidth replaces the scenario's
        if config is not None and self.bandwidth_kbps is not None and config.bytes_per_token != 0:
            builder.ints[kernels.I_TX_BY_STATE] = 1
            builder.floats(kernels.I_O_TX, config.bytes_per_token * 8.0 / self.bandwidth_kbps)

    def long_run_mean_rtt_ms(self) -> float:
        return float(self.stationary() @ self.mean_ms)


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

    def __post_init__(self) -> None:
        self.times_ms = np.asarray(self.times_ms, dtype=np.float64)
        self.means_ms = np.asarray(self.means_ms, dtype=np.float64)

    def pack(self, builder, config=None):
        builder.ints[kernels.I_CH_KIND] = kernels.CH_DRIFT
        builder.ints[kernels.I_LINEAR] = int(self.mode == "linear")
        builder.ints[kernels.I_PERIODIC] = int(self.period_ms is not None)
        builder.ints[kernels.I_N_PTS] = len(self.times_ms)
        builder.scalars[kernels.P_PERIOD] = 0.0 if self.period_ms is None else self.period_ms
        builder.scalars[kernels.P_JITTER_SLOT] = self.jitter_slot_ms
        _pack_lognormal(builder, float(self.cv))
        builder.floats(kernels.I_O_PT_T, self.times_ms)
        builder.floats(kernels.I_O_PT_V, self.means_ms)

    def _mean(self, t_ms: np.ndarray) -> np.ndarray:
        t = np.asarray(t_ms, dtype=np.float64)
        out = np.empty(t.size)
        P, I = self.kernel_params()
        kernels.channel_mean_array(P, I, kernels.as_arg(t.ravel(), np.float64), np.zeros(t.size, np.int64),
                                   np.zeros(t.size), out)
        return out.reshape(t.shape)

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
    ``times_ms`` is the replay timeline (after the gap policy of
    :func:`specstop_gym.traces.gaps.replay_times`, applied by the scenario builder).
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

    def pack(self, builder, config=None):
        builder.ints[kernels.I_CH_KIND] = kernels.CH_TRACE
        builder.ints[kernels.I_N_PTS] = len(self.times_ms)
        builder.ints[kernels.I_RANDOM_OFFSET] = int(self.random_offset)
        builder.scalars[kernels.P_DURATION] = self.duration_ms
        builder.floats(kernels.I_O_PT_T, self.times_ms)
        builder.floats(kernels.I_O_PT_V, self.rtts_ms)
        if self.states is not None:
            builder.ints[kernels.I_M] = self.n_states
            builder.ints[kernels.I_HAS_STATES] = 1
            builder.integers(kernels.I_O_STATES, self.states)

    def long_run_mean_rtt_ms(self) -> float:
        """The trace's typical rtt (ms): the mean over its samples, each counted once, so that one
        long stall cannot dominate it (the time-weighted mean is :meth:`time_weighted_mean_rtt_ms`)."""
        return float(np.mean(self.rtts_ms))

    def time_weighted_mean_rtt_ms(self) -> float:
        """Mean of the replayed step function over one loop (ms), each sample weighted by how long
        it is held: what a round sent at a uniformly random time would see."""
        w = np.diff(np.append(self.times_ms, self.duration_ms))
        return float((w * self.rtts_ms).sum() / w.sum())
