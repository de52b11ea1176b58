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
    """Batched simulator of ``batch_size`` episodes of one scenario (see module docstring)."""

    def __init__(self, config: ScenarioConfig, acceptance: AcceptanceProcess, channel: Channel,
                 batch_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.config = config
        self.acceptance = acceptance
        self.channel = channel
        self.batch_size = b = int(batch_size)
        self.max_draft = k = config.max_draft
        self.n_states = channel.n_states
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
        self.risk = np.zeros((b, k))
        self.acc = np.zeros((b, k))
        self.episode_time_ms = np.zeros(b)
        self.episode_tokens = np.zeros(b, np.int64)
        self.done = np.ones(b, bool)
        self.rows = ChannelRows.empty(b)
        # acceptance draws are pure functions of (key, round): computed for a block of rounds at once
        self._block = max(2, min(64, 65536 // b))
        self._g_cache = np.zeros((b, self._block), np.int64)
        self._q_cache = np.zeros((b, self._block, k)) if self.has_signal else None
        self._cache_start = np.zeros(b, np.int64)
        self._all = np.arange(b)
        self._positions = np.arange(1, k + 1)

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
        self.risk[idx] = 0.0
        self.acc[idx] = 0.0
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

    def _begin_rounds(self, idx: np.ndarray | slice) -> None:
        offset = self.round_idx[idx] - self._cache_start[idx]
        stale = offset >= self._block
        if stale.any():
            self._fill_cache(self._all[idx][stale])
            offset = self.round_idx[idx] - self._cache_start[idx]
        rows = self._all[idx]
        self.g[idx] = self._g_cache[rows, offset]
        if self.has_signal:
            self.q[idx] = self._q_cache[rows, offset]
        self.position[idx] = 1

    # ------------------------------------------------------------------ rounds
    def finish_rounds(self, idx: np.ndarray, k: np.ndarray) -> RoundResult:
        """Send drafts of length ``k`` (1..K) from rows ``idx`` and complete their rounds."""
        cfg = self.config
        rows_out = idx
        if len(idx) == self.batch_size:
            idx = slice(None)  # all rows (in order): basic slicing is much cheaper than fancy indexing
        keys = self.keys[idx]
        t0 = self.t_ms[idx]
        start_state = self.csi[idx]
        t_send = t0 + k * cfg.draft_ms
        state = self.channel.state_at(self.rows, idx, keys, t_send)
        rtt = self.channel.sample_rtt(self.rows, idx, keys, t_send, state)
        tx = self.channel.tx_ms_per_token(state, cfg.bytes_per_token, cfg.bandwidth_kbps)
        round_ms = k * (cfg.draft_ms + cfg.verify_per_token_ms + tx) + rtt + cfg.verify_base_ms
        accepted = np.minimum(k, self.g[idx])
        left = self.tokens_left[idx]
        tokens = np.minimum(accepted + 1, left)
        # censored feedback for the running acceptance estimate
        pos = self._positions[None, :]
        seen = pos <= np.minimum(accepted + 1, k)[:, None]
        self.risk[idx] += seen
        self.acc[idx] += seen & (pos <= accepted[:, None])
        t1 = t0 + round_ms
        self.t_ms[idx] = t1
        self.last_rtt_ms[idx] = rtt
        self.episode_time_ms[idx] += round_ms
        self.episode_tokens[idx] += tokens
        left = left - tokens
        request_done = left == 0
        req = self.request_idx[idx] + request_done
        episode_done = req >= cfg.requests_per_episode
        self.request_idx[idx] = req
        self.tokens_left[idx] = np.where(request_done & ~episode_done, cfg.n_tokens, left)
        self.request_start_ms[idx] = np.where(request_done, t1, self.request_start_ms[idx])
        round_index = self.round_idx[idx].copy()
        self.round_idx[idx] = round_index + 1
        self.done[idx] = episode_done
        self.csi[idx] = self.channel.state_at(self.rows, idx, keys, t1)
        self._begin_rounds(idx)
        return RoundResult(rows_out, k, accepted, tokens, round_ms, rtt, state, start_state, t0, round_index,
                           request_done, episode_done)

    def step_token(self, action: np.ndarray, rows: np.ndarray | None = None
                   ) -> tuple[np.ndarray, RoundResult | None, np.ndarray]:
        """Token-level step of rows ``rows`` (default all): 0 = draft another, 1 = stop and send.

        Drafting at position ``max_draft`` is a forced stop. Returns (step_ms per
        stepped row, the finished rounds or None, forced-stop mask per stepped row).
        A round's steps sum to ``T(k)``: each draft step takes ``draft_ms``, the stop
        step the rest. ``RoundResult.rows`` holds absolute row indices.
        """
        idx = self._all if rows is None else rows
        action = np.asarray(action)
        stop = (action == 1) | (self.position[idx] >= self.max_draft)
        forced = stop & (action != 1)
        step_ms = np.full(len(idx), self.config.draft_ms)
        self.position[idx[~stop]] += 1
        result = None
        if stop.any():
            fin = idx[stop]
            k = self.position[fin].copy()
            result = self.finish_rounds(fin, k)
            step_ms[stop] = result.round_ms - (k - 1) * self.config.draft_ms
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

    def observe(self, token_level: bool) -> np.ndarray:
        """Observation matrix (B, obs_dim), float32; layout in docs/environments.md.

        ``[position/K, last_rtt_ms/1000, csi one-hot (M), confidence, a_hat_1..a_hat_K,
        tokens_left/n_tokens]``. The one-hot is all zero when CSI is not observable;
        the confidence is 0 without a signal and at the round level.
        """
        b, k, m = self.batch_size, self.max_draft, self.n_states
        obs = np.zeros((b, self.obs_dim), np.float32)
        if token_level:
            obs[:, 0] = self.position / k
            if self.has_signal:
                obs[:, 2 + m] = self.q[self._all, self.position - 1]
        obs[:, 1] = self.last_rtt_ms / RTT_OBS_SCALE_MS
        if self.config.csi_observable:
            obs[self._all, 2 + self.csi] = 1.0
        obs[:, 3 + m:3 + m + k] = self.acceptance_estimate()
        obs[:, -1] = self.tokens_left / self.config.n_tokens
        return obs

    def action_masks(self) -> np.ndarray:
        """Token-level valid actions (B, 2): [draft another, stop]; draft is invalid at max_draft."""
        masks = np.ones((self.batch_size, 2), bool)
        masks[:, 0] = self.position < self.max_draft
        return masks

    def per_token_latency_ms(self) -> np.ndarray:
        """Episode time over episode tokens so far, ms/token (nan before the first token)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.episode_time_ms / self.episode_tokens


def new_keys(rng_: np.random.Generator, n: int) -> np.ndarray:
    """Episode keys from an explicit generator (re-exported for the envs)."""
    return rng.episode_keys(rng_, n)
