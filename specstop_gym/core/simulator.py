"""The batched simulation core: one place for the dynamics of SPEC 1-3.

:class:`Simulator` advances ``B`` independent rows (environments, seeds or
agents on common random numbers) with compiled kernels (:mod:`.kernels`) that loop
over the stepped rows. The
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

from typing import ClassVar

import numpy as np

from . import kernels as kn
from .acceptance import AcceptanceProcess
from .channel import Channel, ChannelRows
from .config import MAX_BATCH_ROWS, ScenarioConfig

RTT_OBS_SCALE_MS = 1000.0
"""Observations show rtt in seconds (rtt_ms / 1000)."""


class RoundResult:
    """Outcome of the rounds finished in one call (arrays over the finished rows ``rows``).

    Fields: ``rows`` (absolute row indices), ``k``, ``accepted`` (``A = min(k, G)``),
    ``tokens`` (committed), ``round_ms``, ``rtt_ms``, ``state`` (channel state at
    sending), ``start_state`` (CSI at the start of the round), ``start_ms``,
    ``round_index``, ``request_done``, ``episode_done``, ``reference_ms`` (the local reference
    rate of the reward, ms/token, when the scenario's reward uses one, else 0). Columns of two blocks that
    the simulator's kernel filled; they are views made on first access.
    """

    __slots__ = ("__dict__", "_floats", "_ints")

    _INT_FIELDS: ClassVar[dict[str, int]] = {"rows": kn.R_ROW, "k": kn.R_K, "accepted": kn.R_ACCEPTED, "tokens": kn.R_TOKENS,
                   "state": kn.R_STATE, "start_state": kn.R_START_STATE, "round_index": kn.R_ROUND}
    _BOOL_FIELDS: ClassVar[dict[str, int]] = {"request_done": kn.R_REQ_DONE, "episode_done": kn.R_EP_DONE}
    _FLOAT_FIELDS: ClassVar[dict[str, int]] = {"round_ms": kn.R_ROUND_MS, "rtt_ms": kn.R_RTT, "start_ms": kn.R_START_MS,
                                              "reference_ms": kn.R_REF}

    def __init__(self, ints: np.ndarray, floats: np.ndarray) -> None:
        self._ints = ints
        self._floats = floats

    def __getattr__(self, name: str) -> np.ndarray:
        if name in RoundResult._INT_FIELDS:
            value = self._ints[:, RoundResult._INT_FIELDS[name]]
        elif name in RoundResult._BOOL_FIELDS:
            value = self._ints[:, RoundResult._BOOL_FIELDS[name]] != 0
        elif name in RoundResult._FLOAT_FIELDS:
            value = self._floats[:, RoundResult._FLOAT_FIELDS[name]]
        else:
            raise AttributeError(name)
        self.__dict__[name] = value
        return value

    def __len__(self) -> int:
        return self._ints.shape[0]

    def __repr__(self) -> str:
        return f"RoundResult(rows={self.rows.tolist()}, k={self.k.tolist()}, tokens={self.tokens.tolist()})"


class Simulator:
    """Batched simulator of ``batch_size`` episodes of one scenario (see module docstring).

    The state lives in three arrays that the compiled kernels
    (:mod:`specstop_gym.core.kernels`) update in place, one loop over the stepped
    rows per call: ``state_ints`` (int64 columns), ``state_floats`` (float64 columns, then the censored
    feedback counts and the current round's confidences) and the observation buffer.
    The attributes ``t_ms``, ``csi``, ``position``, ``risk``, ``q``, ... are views of
    their columns. Code that writes them directly must call :meth:`refresh_observation`.
    A single environment is a batch of one over the same kernels (no second code path).
    """

    def __init__(self, config: ScenarioConfig, acceptance: AcceptanceProcess, channel: Channel,
                 batch_size: int = 1) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if batch_size > MAX_BATCH_ROWS:
            raise ValueError(f"batch_size must be at most {MAX_BATCH_ROWS} rows (seeds or environments), "
                             f"got {batch_size}")
        self.config = config
        self.acceptance = acceptance
        self.channel = channel
        self.batch_size = b = int(batch_size)
        self.max_draft = k = config.max_draft
        self.n_states = channel.n_states
        self.has_signal = config.confidence_sigma is not None
        # the state (columns: kernels.S_*, F_*), the observation buffer and the kernels' parameters
        self.kernel_params, self.kernel_ints = kn.pack_model(config, acceptance, channel)
        self.state_ints = np.zeros((b, kn.S_COLS), np.int64)
        self.state_floats = np.zeros((b, kn.F_COLS + 3 * k))
        self.state_ints[:, kn.S_DONE] = 1
        self.state_ints[:, kn.S_POS] = 1
        self.obs_buffer = np.zeros((b, self.obs_dim), np.float32)
        # per-call output buffers of the kernels (overwritten by the next step; see step_token_rows)
        self.out_ints = np.zeros((b, kn.R_INT_COLS), np.int64)
        self.out_floats = np.zeros((b, kn.R_FLOAT_COLS))
        self.out_step_ms = np.zeros(b)
        self.out_forced = np.zeros(b, bool)
        self._all = np.arange(b)
        self._make_views()
        self.refresh_observation()

    _VIEWS = ("keys", "t_ms", "round_idx", "tokens_left", "request_idx", "request_start_ms", "position", "g", "q",
              "last_rtt_ms", "rtt_ewma_ms", "csi", "risk", "acc", "episode_time_ms", "episode_tokens", "rows")

    def _make_views(self) -> None:
        """Named views of the state columns (rebuilt after unpickling: pickle copies views apart)."""
        S, F, k = self.state_ints, self.state_floats, self.max_draft
        self.keys = S[:, kn.S_KEY].view(np.uint64)
        self.round_idx = S[:, kn.S_ROUND]
        self.tokens_left = S[:, kn.S_LEFT]
        self.request_idx = S[:, kn.S_REQ]
        self.position = S[:, kn.S_POS]
        self.g = S[:, kn.S_G]
        self.csi = S[:, kn.S_CSI]
        self.episode_tokens = S[:, kn.S_EP_TOKENS]
        self.t_ms = F[:, kn.F_T]
        self.request_start_ms = F[:, kn.F_REQ_START]
        self.last_rtt_ms = F[:, kn.F_LAST_RTT]
        self.rtt_ewma_ms = F[:, kn.F_EWMA_FAST:kn.F_EWMA_SLOW + 1]  # (B, 2): fast, slow averages of the rtt
        self.episode_time_ms = F[:, kn.F_EP_TIME]
        self.risk = F[:, kn.F_COLS:kn.F_COLS + k]  # positions observed (censored feedback)
        self.acc = F[:, kn.F_COLS + k:kn.F_COLS + 2 * k]  # positions accepted
        self.q = F[:, kn.F_COLS + 2 * k:kn.F_COLS + 3 * k] if self.has_signal else None
        self.rows = ChannelRows(S[:, kn.S_CH_STATE], F[:, kn.F_NEXT_SWITCH], S[:, kn.S_SWITCHES], F[:, kn.F_OFFSET])

    def __getstate__(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key not in self._VIEWS}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        kn.read_only((self.kernel_params, self.kernel_ints))  # pickle drops the flag
        self._make_views()

    @property
    def done(self) -> np.ndarray:
        """Episode finished, per row (bool, a new array)."""
        return self.state_ints[:, kn.S_DONE] != 0

    def _row_array(self, idx) -> np.ndarray:
        rows = kn.as_arg(np.asarray(idx, dtype=np.int64).reshape(-1), np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.batch_size):
            raise IndexError(f"row indices must be in 0..{self.batch_size - 1}, got {rows.tolist()}")
        return rows

    # ------------------------------------------------------------------ reset
    def reset_rows(self, idx: np.ndarray, keys: np.ndarray) -> None:
        """Start new episodes in rows ``idx`` with episode keys ``keys``."""
        rows = self._row_array(idx)
        self.reset_rows_unchecked(rows, kn.as_arg(np.broadcast_to(np.asarray(keys, dtype=np.uint64), rows.shape),
                                                  np.uint64))

    def reset_rows_unchecked(self, rows: np.ndarray, keys: np.ndarray) -> None:
        """:meth:`reset_rows` for the environments' hot path: ``rows`` int64, C-contiguous, distinct
        valid row indices; ``keys`` a writable C-contiguous uint64 array of the same length."""
        kn.reset_rows(self.state_ints, self.state_floats, self.obs_buffer, self.kernel_params, self.kernel_ints,
                      rows, keys)

    # ------------------------------------------------------------------ rounds
    def round_result(self, n: int) -> RoundResult:
        """The ``n`` rounds finished by the last step, from the output buffers (copied)."""
        return RoundResult(self.out_ints[:n].copy(), self.out_floats[:n].copy())

    def finish_rounds(self, idx: np.ndarray, k: np.ndarray) -> RoundResult:
        """Send drafts of length ``k`` (1..K) from rows ``idx`` and complete their rounds."""
        rows = self._row_array(idx)
        ks = kn.as_arg(np.broadcast_to(np.asarray(k, dtype=np.int64), rows.shape), np.int64)
        n = self.step_round_rows(rows, ks)
        if n < 0:
            raise ValueError(f"draft lengths must be in 1..{self.max_draft}, got {ks.tolist()}")
        return self.round_result(n)

    def step_token(self, action: np.ndarray, rows: np.ndarray | None = None
                   ) -> tuple[np.ndarray, RoundResult | None, np.ndarray]:
        """Token-level step of rows ``rows`` (default all): 0 = draft another, 1 = stop and send.

        Drafting at position ``max_draft`` is a forced stop. Returns (step_ms per
        stepped row, the finished rounds or None, forced-stop mask per stepped row).
        A round's steps sum to ``T(k)``: each draft step takes ``draft_ms``, the stop
        step the rest ``T(k) - (k - 1) * draft_ms``. ``RoundResult.rows`` holds absolute
        row indices, in the order of ``rows``.
        """
        rows = self._all if rows is None else self._row_array(rows)
        actions = kn.as_arg(np.broadcast_to(np.asarray(action, dtype=np.int64), rows.shape), np.int64)
        m = len(rows)
        n = self.step_token_rows(rows, actions)
        return self.out_step_ms[:m].copy(), (self.round_result(n) if n else None), self.out_forced[:m].copy()

    def step_token_rows(self, rows: np.ndarray, actions: np.ndarray) -> int:
        """Unchecked token-level step for the environments' hot path; returns the number ``n``
        of finished rounds.

        ``rows``: int64, C-contiguous, distinct valid row indices; ``actions``: int64 of the
        same length. Results are in the reused buffers: ``out_step_ms[:len(rows)]``,
        ``out_forced[:len(rows)]``, and the finished rounds in ``out_ints[:n]`` /
        ``out_floats[:n]`` (columns ``kernels.R_*``), valid until the next step.
        """
        return kn.step_token(self.state_ints, self.state_floats, self.obs_buffer, self.kernel_params,
                             self.kernel_ints, rows, actions, self.out_ints, self.out_floats, self.out_step_ms,
                             self.out_forced)

    def step_round_rows(self, rows: np.ndarray, ks: np.ndarray) -> int:
        """Unchecked round-level step (see :meth:`step_token_rows`); ``ks`` int64 in 1..K."""
        return kn.step_round(self.state_ints, self.state_floats, self.obs_buffer, self.kernel_params,
                             self.kernel_ints, rows, ks, self.out_ints, self.out_floats)

    def step_round(self, k: np.ndarray, rows: np.ndarray | None = None) -> RoundResult:
        """Round-level step of rows ``rows`` (default all) with draft lengths ``k`` (1..K)."""
        return self.finish_rounds(self._all if rows is None else rows, k)

    # ------------------------------------------------------------ observation
    @property
    def obs_dim(self) -> int:
        return 6 + self.n_states + 2 * self.max_draft

    def acceptance_estimate(self) -> np.ndarray:
        """Posterior-mean conditional acceptance per position, shape (B, K)."""
        return (self.acc + 1.0) / (self.risk + 2.0)

    def confidence(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Confidence q of the latest drafted token per row (nan without a signal)."""
        rows = self._all if rows is None else np.asarray(rows, dtype=np.int64)
        if not self.has_signal:
            return np.full(len(rows), np.nan)
        return self.q[rows, self.position[rows] - 1]

    def refresh_observation(self, ix: np.ndarray | slice | None = None) -> None:
        """Recompute the observation buffer of rows ``ix`` (default all) from the state arrays.

        The simulator's methods call it themselves; call it after writing state arrays
        (``position``, ``last_rtt_ms``, ``csi``, ``acc``, ``risk``, ``tokens_left``, ``q``) directly.
        """
        if ix is None or isinstance(ix, slice):
            rows = self._all if ix is None else self._all[ix]
        else:
            rows = self._row_array(ix)
        kn.refresh_rows(self.state_ints, self.state_floats, self.obs_buffer, self.kernel_params, self.kernel_ints,
                        kn.as_arg(rows, np.int64))

    def observe(self, token_level: bool) -> np.ndarray:
        """Observation matrix (B, obs_dim), float32 (a new array); layout in docs/environments.md.

        ``[position/K, last_rtt_ms/1000, csi one-hot (M), confidence, a_hat_1..a_hat_K,
        tokens_left/n_tokens, rtt_ewma_fast_ms/1000, rtt_ewma_slow_ms/1000, position one-hot (K)]``
        (the rtt averages: :data:`~specstop_gym.core.kernels.RTT_EWMA_FAST_MS`). The CSI one-hot is all zero when CSI is not observable;
        the confidence is 0 without a signal; at the round level the position (fraction and
        one-hot) and the confidence are 0 (the decision is taken before drafting).
        """
        obs = self.obs_buffer.copy()
        if not token_level:
            obs[:, 0] = 0.0
            obs[:, 2 + self.n_states] = 0.0
            obs[:, self.obs_dim - self.max_draft:] = 0.0
        return obs

    def action_masks(self) -> np.ndarray:
        """Token-level valid actions (B, 2): [draft another, stop]; draft is invalid at max_draft."""
        out = np.empty((self.batch_size, 2), bool)
        kn.action_masks(self.state_ints, self.kernel_ints, out)
        return out

    def per_token_latency_ms(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Episode time over episode tokens so far, ms/token, of rows ``rows`` (default all; nan
        before the first token)."""
        time_ms, tokens = ((self.episode_time_ms, self.episode_tokens) if rows is None
                           else (self.episode_time_ms[rows], self.episode_tokens[rows]))
        with np.errstate(invalid="ignore", divide="ignore"):
            return time_ms / tokens

