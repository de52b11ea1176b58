"""The batched simulation core: one place for the dynamics of SPEC 1-3.

:class:`Simulator` advances ``B`` independent rows (environments, seeds or
agents on common random numbers) with numpy over the batch axis. The
single-environment classes are a batch of one, the vector environments a batch
of N and the evaluation runner a batch of seeds: no second copy of the dynamics.

A row is an *episode*: ``requests_per_episode`` requests of ``n_tokens`` tokens,
back to back in continuous wall-clock time ``t_ms``. A round:

1. starts at ``t_ms`` with the first token drafted (position 1); the acceptance
   draws of the round (run length ``G``, confidences ``q``) are fixed by
   (episode key, round index);
2. at the token level each further draft costs ``draft_ms``; the round is sent at
   ``t_send = t_ms + k * draft_ms``; the channel state at ``t_send`` sets the rtt
   and bandwidth;
3. takes ``T(k) = k*draft_ms + rtt + verify_base_ms + k*verify_per_token_ms + tx_ms(k)``;
   ``A = min(k, G)``; the request gains ``min(A + 1, tokens_left)`` tokens;
   the clock becomes ``t_ms + T(k)`` and the observed channel state (CSI) is the
   state at that time.

The environment's running estimate of per-position acceptance is the posterior
mean under a Beta(1, 1) prior of the censored round outcomes of the episode so
far: a round with ``A < k`` observed positions ``1..A+1`` (the last rejected),
a round with ``A = k`` observed ``1..k`` (all accepted).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import rng
from .acceptance import AcceptanceProcess
from .channel import PROBE_SLOT, Channel, ChannelRows
from .config import ScenarioConfig

RTT_OBS_SCALE_MS = 1000.0
"""Observations show rtt in seconds (rtt_ms / 1000)."""

_ALL_ROWS = slice(None)
"""Row selector of an operation on every row, in order."""


@dataclass
class RoundResult:
    """Outcome of the rounds finished in one call (arrays over the finished rows ``rows``)."""

    rows: np.ndarray
    k: np.ndarray
    accepted: np.ndarray
    tokens: np.ndarray
    round_ms: np.ndarray
    rtt_ms: np.ndarray
    state: np.ndarray  # channel state at sending
    start_state: np.ndarray  # channel state (CSI) at the start of the round
    start_ms: np.ndarray
    round_index: np.ndarray
    request_done: np.ndarray
    episode_done: np.ndarray


class Simulator:
    """Batched simulator of ``batch_size`` episodes of one scenario (see module docstring).

    Performance notes. A single environment is a batch of one, so the number of
    numpy calls, not their work, sets its speed; the code keeps calls few and cheap
    *without* a second code path for small batches:

    * the observation is a persistent buffer that the simulator's own methods
      update only where something changed (a draft step touches two entries of the
      stepped rows, a finished round the rows that finished); code that writes the
      state arrays directly must call :meth:`refresh_observation`;
    * when every row is stepped, in order, the state arrays are used whole (no
      views, no fancy indexing);
    * values that only depend on small integers (``k * draft_ms``, the censored
      feedback of ``(k, A)``, ``position / K``) come from tables of ``K + 2`` rows at
      most, computed once with the same numpy expressions, so they are the same bits;
    * constants are 0-d arrays (numpy applies a ufunc to an array and a Python
      scalar markedly slower than to two arrays); rare events (a request ending, a
      block of acceptance draws running out) take a branch of their own.
    """

    def __init__(self, config: ScenarioConfig, acceptance: AcceptanceProcess, channel: Channel,
                 batch_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.config = config
        self.acceptance = acceptance
        self.channel = channel
        self.batch_size = b = int(batch_size)
        self.max_draft = k = config.max_draft
        self.n_states = m = channel.n_states
        self.has_signal = config.confidence_sigma is not None
        self.keys = np.zeros(b, np.uint64)
        self.t_ms = np.zeros(b)
        self.round_idx = np.zeros(b, np.int64)
        self.tokens_left = np.zeros(b, np.int64)
        self.request_idx = np.zeros(b, np.int64)
        self.request_start_ms = np.zeros(b)
        self.position = np.ones(b, np.int64)
        self.g = np.zeros(b, np.int64)
        self.q = np.zeros((b, k)) if self.has_signal else None
        self.last_rtt_ms = np.zeros(b)
        self.csi = np.zeros(b, np.int64)
        # censored-feedback counts: risk (positions observed) and acc (positions accepted) are
        # the two planes of one array, so that one call updates both
        self._risk_acc = np.zeros((b, 2, k))
        self.episode_time_ms = np.zeros(b)
        self.episode_tokens = np.zeros(b, np.int64)
        self.done = np.ones(b, bool)
        self.rows = ChannelRows.empty(b)
        # acceptance draws are pure functions of (key, round): computed for a block of rounds at
        # once; _cache_ptr is the flat index (row * block + round offset) of each row's current round
        self._block = max(2, min(64, 65536 // b))
        self._g_cache = np.zeros((b, self._block), np.int64)
        self._q_cache = np.zeros((b, self._block, k)) if self.has_signal else None
        self._cache_start = np.zeros(b, np.int64)
        self._all = np.arange(b)
        self._cache_ptr = self._all * self._block
        self._cache_end = self._cache_ptr + self._block
        self._positions = np.arange(1, k + 1)
        self._build_tables()
        self._obs = np.zeros((b, self.obs_dim), np.float32)
        self._make_views()
        self.refresh_observation()

    _VIEWS = ("risk", "acc", "_g_flat", "_q_flat", "_obs_position", "_obs_rtt", "_obs_confidence",
              "_obs_estimate", "_obs_tokens")

    def _make_views(self) -> None:
        """Views into the state arrays (rebuilt after unpickling: pickle copies views apart)."""
        m, k = self.n_states, self.max_draft
        self.risk = self._risk_acc[:, 0]  # positions observed (censored feedback)
        self.acc = self._risk_acc[:, 1]  # positions accepted
        self._g_flat = self._g_cache.reshape(-1)  # (row, offset) -> row * block + offset
        self._q_flat = self._q_cache.reshape(-1, k) if self.has_signal else None
        self._obs_position = self._obs[:, 0]
        self._obs_rtt = self._obs[:, 1]
        self._obs_confidence = self._obs[:, 2 + m]
        self._obs_estimate = self._obs[:, 3 + m:3 + m + k]
        self._obs_tokens = self._obs[:, 3 + m + k]

    def __getstate__(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key not in self._VIEWS}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._make_views()

    def _build_tables(self) -> None:
        """Constants and lookup tables of the hot paths (see the class docstring)."""
        cfg, b, k, m = self.config, self.batch_size, self.max_draft, self.n_states
        ks = np.arange(k + 1)
        # censored feedback of a round with draft k and A accepted (the running estimate):
        # positions 1..min(A + 1, k) observed, 1..A accepted; [k, A, (risk, acc), position]
        seen = self._positions[None, None, :] <= np.minimum(ks[None, :, None] + 1, ks[:, None, None])
        acc = seen & (self._positions[None, None, :] <= ks[None, :, None])
        self._feedback = np.stack([seen, acc], axis=2).astype(np.float64)
        self._draft_time = ks * cfg.draft_ms  # [k] -> k * draft_ms
        self._draft_time_before = (ks - 1) * cfg.draft_ms  # [k] -> (k - 1) * draft_ms
        # k * (draft_ms + verify_per_token_ms + tx) when the transmission time does not depend on the state
        tx = self.channel.tx_ms_per_token(np.zeros(1, np.int64), cfg.bytes_per_token, cfg.bandwidth_kbps)
        self._marginal_time = (ks * (cfg.draft_ms + cfg.verify_per_token_ms + tx)
                               if isinstance(tx, float) else None)
        self._verify_base_ms = np.array(cfg.verify_base_ms)
        self._position_frac = np.arange(k + 2) / k  # [position] -> position / K
        self._n_tokens = np.array(float(cfg.n_tokens))  # tokens_left / n_tokens divides doubles either way
        self._rtt_scale = np.array(RTT_OBS_SCALE_MS)
        self._estimate_prior = np.array([2.0, 1.0])[:, None]  # (risk + 2, acc + 1)
        self._masks_by_position = np.stack([np.arange(k + 2) < k, np.ones(k + 2, bool)], axis=1)
        self._csi_one_hot = np.eye(m, dtype=np.float32)
        self._draft_ms_row = np.full(b, cfg.draft_ms)
        self._no_stop = np.zeros(b, bool)
        self._zero = np.array(0)
        self._one = np.array(1)
        self._max_draft = np.array(k)

    def _address(self, idx: np.ndarray) -> np.ndarray | slice:
        """``_ALL_ROWS`` (``slice(None)``) when ``idx`` lists every row in order (the state arrays
        are then used whole instead of fancy-indexed), else ``idx``."""
        n = len(idx)
        if n == self.batch_size and (n == 1 or idx is self._all or bool(np.all(idx[1:] > idx[:-1]))):
            return _ALL_ROWS
        return idx

    # ------------------------------------------------------------------ reset
    def reset_rows(self, idx: np.ndarray, keys: np.ndarray) -> None:
        """Start new episodes in rows ``idx`` with episode keys ``keys``."""
        idx = np.asarray(idx, dtype=np.int64)
        keys = np.asarray(keys, dtype=np.uint64)
        self.keys[idx] = keys
        self.t_ms[idx] = 0.0
        self.round_idx[idx] = 0
        self.tokens_left[idx] = self.config.n_tokens
        self.request_idx[idx] = 0
        self.request_start_ms[idx] = 0.0
        self._risk_acc[idx] = 0.0
        self.episode_time_ms[idx] = 0.0
        self.episode_tokens[idx] = 0
        self.done[idx] = False
        self._fill_cache(idx)
        self.channel.init_rows(self.rows, idx, keys)
        zero = np.zeros(len(idx))
        state = self.channel.state_at(self.rows, idx, keys, zero)
        self.csi[idx] = state
        self.last_rtt_ms[idx] = self.channel.sample_rtt(self.rows, idx, keys, zero, state, slot=PROBE_SLOT)
        self._begin_rounds(idx)
        self.refresh_observation(idx)

    def _fill_cache(self, idx: np.ndarray) -> None:
        """Draw the acceptance of rounds round_idx .. round_idx + block - 1 for rows idx."""
        blk, k = self._block, self.max_draft
        start = self.round_idx[idx]
        rounds = (start[:, None] + np.arange(blk)[None, :]).ravel()
        keys = np.repeat(self.keys[idx], blk)
        g, q = self.acceptance.draw_with_signal(keys, rounds, k, self.config.confidence_sigma)
        self._g_cache[idx] = g.reshape(-1, blk)
        if q is not None:
            self._q_cache[idx] = q.reshape(-1, blk, k)
        self._cache_start[idx] = start
        self._cache_ptr[idx] = self._all[idx] * blk

    def _begin_rounds(self, ix: np.ndarray | slice) -> None:
        """Start the rounds of rows ``ix`` (round index already set): their acceptance draws, position 1."""
        if ix is _ALL_ROWS:
            ptr = self._cache_ptr
            stale = ptr >= self._cache_end
        else:
            ptr = self._cache_ptr[ix]
            stale = ptr >= self._cache_end[ix]
        if np.count_nonzero(stale):
            self._fill_cache(self._all[ix][stale])
            ptr = self._cache_ptr[ix]
        self.g[ix] = self._g_flat.take(ptr)
        if self.has_signal:
            self.q[ix] = self._q_flat.take(ptr, axis=0)
        self.position[ix] = 1

    # ------------------------------------------------------------------ rounds
    def finish_rounds(self, idx: np.ndarray, k: np.ndarray) -> RoundResult:
        """Send drafts of length ``k`` (1..K) from rows ``idx`` and complete their rounds."""
        cfg = self.config
        channel = self.channel
        rows_out = idx
        ix = self._address(idx)
        full = ix is _ALL_ROWS
        if full:  # every row, in order: the state arrays themselves (no views, no gathers)
            keys, t0, start_state, g, left = self.keys, self.t_ms.copy(), self.csi.copy(), self.g, self.tokens_left
        else:
            keys, t0, start_state, g, left = self.keys[ix], self.t_ms[ix], self.csi[ix], self.g[ix], self.tokens_left[ix]
        t_send = t0 + self._draft_time.take(k)  # t0 + k * draft_ms
        state = channel.state_at(self.rows, ix, keys, t_send)
        rtt = channel.sample_rtt(self.rows, ix, keys, t_send, state)
        if self._marginal_time is not None:
            marginal = self._marginal_time.take(k)
        else:
            tx = channel.tx_ms_per_token(state, cfg.bytes_per_token, cfg.bandwidth_kbps)
            marginal = k * (cfg.draft_ms + cfg.verify_per_token_ms + tx)
        round_ms = marginal + rtt + self._verify_base_ms
        accepted = np.minimum(k, g)
        tokens = np.minimum(accepted + self._one, left)
        feedback = self._feedback[k, accepted]  # censored feedback for the running estimate
        t1 = t0 + round_ms
        left = left - tokens
        request_done = left == self._zero
        round_index = self.round_idx.copy() if full else self.round_idx[ix]
        if full:
            self._risk_acc += feedback
            self.episode_time_ms += round_ms
            self.episode_tokens += tokens
            self.round_idx += self._one
            self._cache_ptr += self._one
        else:
            self._risk_acc[ix] += feedback
            self.episode_time_ms[ix] += round_ms
            self.episode_tokens[ix] += tokens
            self.round_idx[ix] = round_index + self._one
            self._cache_ptr[ix] += self._one
        self.t_ms[ix] = t1
        self.last_rtt_ms[ix] = rtt
        if np.count_nonzero(request_done):
            req = self.request_idx[ix] + request_done
            episode_done = req >= cfg.requests_per_episode
            self.request_idx[ix] = req
            self.tokens_left[ix] = np.where(request_done & ~episode_done, cfg.n_tokens, left)
            self.request_start_ms[ix] = np.where(request_done, t1, self.request_start_ms[ix])
        else:  # no request ended: request counters and start times stay
            episode_done = request_done.copy()
            self.tokens_left[ix] = left
        self.done[ix] = episode_done
        self.csi[ix] = channel.state_at(self.rows, ix, keys, t1)
        self._begin_rounds(ix)
        self.refresh_observation(ix)
        return RoundResult(rows_out, k, accepted, tokens, round_ms, rtt, state, start_state, t0, round_index,
                           request_done, episode_done)

    def _advance(self, ix: np.ndarray | slice) -> None:
        """Draft one more token in rows ``ix`` (position + 1; observation: position, confidence)."""
        if ix is _ALL_ROWS:
            self.position += self._one
            pos = self.position
            self._obs_position[...] = self._position_frac.take(pos)
        else:
            self.position[ix] += self._one
            pos = self.position[ix]
            self._obs_position[ix] = self._position_frac.take(pos)
        if self.has_signal:
            self._obs_confidence[ix] = self.q[self._all[ix], pos - self._one]

    def step_token(self, action: np.ndarray, rows: np.ndarray | None = None
                   ) -> tuple[np.ndarray, RoundResult | None, np.ndarray]:
        """Token-level step of rows ``rows`` (default all): 0 = draft another, 1 = stop and send.

        Drafting at position ``max_draft`` is a forced stop. Returns (step_ms per
        stepped row, the finished rounds or None, forced-stop mask per stepped row).
        A round's steps sum to ``T(k)``: each draft step takes ``draft_ms``, the stop
        step the rest. ``RoundResult.rows`` holds absolute row indices.
        """
        if rows is None:
            idx, pos = self._all, self.position
        else:
            idx, pos = rows, self.position[rows]
        n = len(idx)
        action = np.asarray(action)
        send = action == self._one
        stop = send | (pos >= self._max_draft)
        n_stop = np.count_nonzero(stop)
        if not n_stop:  # every stepped row drafts: only the position moves
            self._advance(_ALL_ROWS if rows is None else self._address(idx))
            if n == self.batch_size:
                return self._draft_ms_row.copy(), None, self._no_stop.copy()
            return self._draft_ms_row[:n].copy(), None, self._no_stop[:n].copy()
        forced = np.greater(stop, send)  # stop & ~send
        if n_stop == n:
            fin, k = idx, pos.copy()
        else:
            self._advance(idx[~stop])
            fin = idx[stop]
            k = self.position[fin]
        result = self.finish_rounds(fin, k)
        rest = result.round_ms - self._draft_time_before.take(k)  # T(k) - (k - 1) * draft_ms
        if n_stop == n:
            return rest, result, forced
        step_ms = self._draft_ms_row[:n].copy()
        step_ms[stop] = rest
        return step_ms, result, forced

    def step_round(self, k: np.ndarray, rows: np.ndarray | None = None) -> RoundResult:
        """Round-level step of rows ``rows`` (default all) with draft lengths ``k`` (1..K)."""
        return self.finish_rounds(self._all if rows is None else rows, np.asarray(k, dtype=np.int64))

    # ------------------------------------------------------------ observation
    @property
    def obs_dim(self) -> int:
        return 4 + self.n_states + self.max_draft

    def acceptance_estimate(self) -> np.ndarray:
        """Posterior-mean conditional acceptance per position, shape (B, K)."""
        return (self.acc + 1.0) / (self.risk + 2.0)

    def refresh_observation(self, ix: np.ndarray | slice | None = None) -> None:
        """Recompute the observation buffer of rows ``ix`` (default all) from the state arrays.

        The simulator's methods call it themselves; call it after writing state arrays
        (``position``, ``last_rtt_ms``, ``csi``, ``acc``, ``risk``, ``tokens_left``, ``q``) directly.
        """
        if ix is None or ix is _ALL_ROWS:
            ix = _ALL_ROWS
            pos, rtt, risk_acc, left = self.position, self.last_rtt_ms, self._risk_acc, self.tokens_left
        else:
            pos, rtt, risk_acc, left = self.position[ix], self.last_rtt_ms[ix], self._risk_acc[ix], self.tokens_left[ix]
        self._obs_position[ix] = self._position_frac.take(pos)
        if self.has_signal:
            self._obs_confidence[ix] = self.q[self._all[ix], pos - self._one]
        self._obs_rtt[ix] = rtt / self._rtt_scale
        if self.config.csi_observable:
            self._obs[ix, 2:2 + self.n_states] = self._csi_one_hot[self.csi[ix]]
        est = risk_acc + self._estimate_prior  # (risk + 2, acc + 1)
        self._obs_estimate[ix] = est[:, 1] / est[:, 0]
        self._obs_tokens[ix] = left.astype(np.float64) / self._n_tokens

    def observe(self, token_level: bool) -> np.ndarray:
        """Observation matrix (B, obs_dim), float32 (a new array); layout in docs/environments.md.

        ``[position/K, last_rtt_ms/1000, csi one-hot (M), confidence, a_hat_1..a_hat_K,
        tokens_left/n_tokens]``. The one-hot is all zero when CSI is not observable;
        the confidence is 0 without a signal and at the round level.
        """
        obs = self._obs.copy()
        if not token_level:
            obs[:, 0] = 0.0
            obs[:, 2 + self.n_states] = 0.0
        return obs

    def action_masks(self) -> np.ndarray:
        """Token-level valid actions (B, 2): [draft another, stop]; draft is invalid at max_draft."""
        return self._masks_by_position.take(self.position, axis=0)

    def per_token_latency_ms(self) -> np.ndarray:
        """Episode time over episode tokens so far, ms/token (nan before the first token)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.episode_time_ms / self.episode_tokens


def new_keys(rng_: np.random.Generator, n: int) -> np.ndarray:
    """Episode keys from an explicit generator (re-exported for the envs)."""
    return rng.episode_keys(rng_, n)
