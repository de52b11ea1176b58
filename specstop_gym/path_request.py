"""The path oracle per request: each request's DP on the known path, solved from its exact start.

The whole-episode DP of :mod:`specstop_gym.path_oracle` solves level ``p`` on a window of about
13 standard deviations of the time to reach ``p``; that grows like ``sqrt(p)``, so its cost
grows like ``L^1.5`` in the episode's tokens. Here each request is optimised on its own, from the
moment it starts (known exactly at run time), with a continuation ``g`` for the requests after
it (:class:`~specstop_gym.path_oracle.Continuation`):

    F_r(t, q) = min_k E[T + F_r(t + T, q + g)],    F_r(t, N) = g(t) (r < R - 1),  F_{R-1}(t, N) = 0,

``q`` the tokens committed in the request. Only the last request ends the episode; the others
value their end by ``g`` (``"token-clock"``: the fluid approximation of the rest of the episode;
``"completion"``: ``g = 0``, each request minimises its own expected completion time). What this
leaves against the exact whole-episode DP is measured on the discretised model
(``solve_path_dp(..., continuation=...)``: the exact expected episode time of the per-request
policy, by forward propagation, minus the whole-episode DP's value; docs/model.md, "Per request").

Two ways to solve a request's DP, the same function of the path time:

* **per run** (:func:`solve_request_from`): the windowed DP of ``path_oracle`` with one request,
  on the path shifted to the request's start ``t0``: its window at the start is a single point,
  so the windows grow only within the request (``N^1.5`` per request instead of ``L^1.5``).
* **shared** (:func:`solve_request_shared`): ``F_r(t, q)`` depends on ``t`` only through the
  path from ``t`` on, i.e. through the *path time* ``s`` (trace: ``(offset + t) mod duration``;
  periodic drift: ``t mod period``), when ``g`` does too (both continuations do). So one DP over
  ``(s, q)`` on the whole loop of the path, ``s`` on a grid that divides the period, serves every
  request with the same continuation, every run and every trace offset. No windows (nothing can
  leak); the cost is the loop's cells times ``N``. A drift without a period is constant after its
  last breakpoint, where ``F`` does not depend on ``s``: the grid ends there and is clamped.

:class:`RequestPlanner` plays the per-request policy for a batch of runs: the shared DP where it is
cheaper than the runs' own DPs, else one DP per run and request, solved when the request starts.
All times are milliseconds.
"""

from __future__ import annotations

import dataclasses
import math
import time as _time
from typing import Any

import numpy as np
from numba import njit

from .path_oracle import (
    _JIT,
    _TIE_RTOL,
    Continuation,
    DelayPath,
    PathDPSolution,
    _check_count,
    _check_grid_ms,
    _jitter_nodes,
    _path_value,
    _send_table,
    _survival_arrays,
    request_states_estimate,
    solve_path_dp,
)

__all__ = ["RequestPlanner", "SharedRequestDP", "solve_request_from", "solve_request_shared"]

#: Largest shared DP (grid states: loop cells x tokens per request; float32 values are kept).
MAX_SHARED_STATES = 48_000_000


@njit(inline="always", **_JIT)
def _wrap_interp(row, x, G, periodic):
    """``row`` (one value per loop cell) linearly interpolated at the fractional cell ``x >= 0``:
    periodic (cell ``G`` is cell 0) or clamped to the last cell."""
    ix = int(x)
    fr = x - ix
    if periodic:
        if ix >= G:
            ix -= G * (ix // G)
        ix1 = ix + 1
        if ix1 == G:
            ix1 = 0
        return row[ix] + (row[ix1] - row[ix]) * fr
    if ix >= G - 1:
        return row[G - 1]
    return row[ix] + (row[ix + 1] - row[ix]) * fr


@njit(**_JIT)
def _backward_shared(N, K, S, c, vb, h, M, e, w, G, periodic, term, ext, vals):
    """Backward induction of one request on the loop: ``vals[q, i] = F(i h, q)`` (float32),
    ``F(., N) = term``. ``M[k, i]``: the mean rtt at path time ``i h + k draft_ms``; ``ext``: cells
    past the loop's end a round can land (``H`` is kept on ``G + ext`` cells, its tail the loop's
    start again, or the last cell repeated without a period, so the interpolation needs no wrap)."""
    R = K + 2
    ring = np.zeros((R + 1, G))
    ring[R, :] = term
    H = np.zeros((K, G + ext))
    best = np.zeros(G)
    J = e.shape[0]
    inv_h = 1.0 / h
    s1 = S[1]
    for p in range(N - 1, -1, -1):
        n = N - p
        f1 = ring[(p + 1) % R if n > 1 else R]
        f2 = ring[(p + 2) % R if n > 2 else R]
        H0 = H[0]
        for u in range(G):
            H0[u] = (1.0 - s1) * f1[u] + s1 * f2[u]
        for k in range(1, K):
            ja = min(k + 1, n)
            jb = min(k + 2, n)
            sk = S[k + 1]
            Hk = H[k]
            Hp = H[k - 1]
            if ja == jb or sk == 0.0:
                for u in range(G):
                    Hk[u] = Hp[u]
            else:
                fa = ring[(p + ja) % R if ja < n else R]
                fb = ring[(p + jb) % R if jb < n else R]
                for u in range(G):
                    Hk[u] = Hp[u] + sk * (fb[u] - fa[u])
        for k in range(K):
            Hk = H[k]
            for u in range(G, G + ext):
                Hk[u] = Hk[(u - G) % G] if periodic else Hk[G - 1]
        for k in range(1, K + 1):
            off = k * c + vb
            offh = off * inv_h
            Hk = H[k - 1]
            Mk = M[k]
            if J == 1:
                e0 = e[0] * inv_h
                for i in range(G):
                    m = Mk[i]
                    x = i + offh + m * e0
                    ix = int(x)
                    acc = off + m + Hk[ix] + (Hk[ix + 1] - Hk[ix]) * (x - ix)
                    if k == 1 or acc < best[i] - _TIE_RTOL * abs(best[i]):
                        best[i] = acc
            else:
                for i in range(G):
                    m = Mk[i]
                    acc = off + m
                    base = i + offh
                    mh = m * inv_h
                    for jn in range(J):
                        x = base + mh * e[jn]
                        ix = int(x)
                        acc += w[jn] * (Hk[ix] + (Hk[ix + 1] - Hk[ix]) * (x - ix))
                    if k == 1 or acc < best[i] - _TIE_RTOL * abs(best[i]):
                        best[i] = acc
        row = ring[p % R]
        vr = vals[p]
        for i in range(G):
            row[i] = best[i]
            vr[i] = best[i]
    return 0


@njit(**_JIT)
def _decide_shared(N, S, c, vb, d, h, G, periodic, e, w, vals, term, kind, times, values_path, linear, pperiodic,
                   period, duration, offset, q, s, out):
    """The exact-time decision on the shared DP for each (tokens committed ``q``, path time ``s``)."""
    K = S.shape[0] - 2
    J = e.shape[0]
    inv_h = 1.0 / h
    for r in range(q.shape[0]):
        qr = q[r]
        n = N - qr
        best = np.inf
        kb = 1
        for k in range(1, K + 1):
            m = _path_value(kind, times, values_path, linear, pperiodic, period, duration, offset, s[r] + k * d)
            qv = k * c + vb + m
            for jn in range(J):
                x = (s[r] + k * c + vb + m * e[jn]) * inv_h
                cont = 0.0
                for acc in range(k + 1):
                    pa = S[acc] - S[acc + 1] if acc < k else S[k]
                    if pa <= 0.0:
                        continue
                    lev = qr + min(acc + 1, n)
                    if lev >= N:
                        cont += pa * _wrap_interp(term, x, G, periodic)
                    else:
                        cont += pa * _wrap_interp(vals[lev], x, G, periodic)
                qv += w[jn] * cont
            if k == 1 or qv < best - _TIE_RTOL * abs(best):
                best = qv
                kb = k
        out[r] = kb


@dataclasses.dataclass(frozen=True)
class _Model:
    """A request's cost model (ms): ``c`` per drafted token, ``vb`` per round, ``draft_ms``."""

    S: np.ndarray
    S_cum: np.ndarray
    K: int
    c: float
    vb: float
    draft_ms: float


def _model(survival: Any, draft_ms: float, verify_base_ms: float, verify_per_token_ms: float,
           tx_per_token_ms: float) -> _Model:
    S, S_cum, K = _survival_arrays(survival)
    for name, v in (("draft_ms", draft_ms), ("verify_base_ms", verify_base_ms),
                    ("verify_per_token_ms", verify_per_token_ms), ("tx_per_token_ms", tx_per_token_ms)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) \
                or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    d = float(draft_ms)
    return _Model(S, S_cum, K, d + float(verify_per_token_ms) + float(tx_per_token_ms), float(verify_base_ms), d)


def _loop(path: DelayPath) -> tuple[float, bool]:
    """(length of the path's loop in path time, periodic): a trace's duration, a drift's period, or
    for a drift without a period the time of its last breakpoint (constant after it)."""
    if path.kind == "trace":
        return float(path.duration_ms), True
    if path.period_ms is not None:
        return float(path.period_ms), True
    return float(path.times_ms[-1]), False


def shared_states(path: DelayPath, n_tokens: int, grid_ms: float) -> int:
    """Grid states of :func:`solve_request_shared` (loop cells x tokens)."""
    span, periodic = _loop(path)
    h = _check_grid_ms(grid_ms)
    cells = max(math.ceil(span / h), 1) if periodic else math.ceil(span / h) + 2
    return cells * int(n_tokens)


class SharedRequestDP:
    """One request's DP over (path time on the loop, tokens committed), shared by every request
    with the same continuation, every run and every trace offset (module docstring).

    Attributes: ``grid_ms`` (the loop's step, ``period / cells``, at most the step asked for),
    ``cells``, ``periodic``, ``continuation``, ``states`` (cells x tokens), ``solve_s`` (wall) and
    ``cpu_s``.
    """

    def __init__(self, *, model: _Model, path: DelayPath, n_tokens: int, grid_ms: float, e: np.ndarray,
                 w: np.ndarray, vals: np.ndarray, term: np.ndarray, periodic: bool, continuation: Continuation,
                 solve_s: float, cpu_s: float) -> None:
        self._m = model
        self.path = path
        self.n_tokens = int(n_tokens)
        self.grid_ms = float(grid_ms)
        self._e, self._w = e, w
        self._vals, self._term = vals, term
        self.cells = int(vals.shape[1])
        self.periodic = bool(periodic)
        self.continuation = continuation
        self.states = self.cells * self.n_tokens
        self.solve_s = float(solve_s)
        self.cpu_s = float(cpu_s)

    def path_time(self, t_ms: Any, offset_ms: Any = 0.0) -> np.ndarray:
        """The path time of episode time ``t_ms`` (a trace's episode offset ``offset_ms``)."""
        t = np.asarray(t_ms, dtype=np.float64) + np.asarray(offset_ms, dtype=np.float64) + self.path.offset_ms
        span, periodic = _loop(self.path)
        return np.mod(t, span) if periodic else t

    def value(self, q: int, s_ms: float) -> float:
        """``F(s, q)`` (ms; ``q = n_tokens``: the continuation) at path time ``s_ms``."""
        row = self._term if int(q) == self.n_tokens else self._vals[int(q)]
        return float(_wrap_interp(row, float(s_ms) / self.grid_ms, self.cells, self.periodic))

    def k(self, q: Any, s_ms: Any) -> np.ndarray:
        """Draft lengths at ``q`` tokens committed in the request (``0..n_tokens-1``) and path time
        ``s_ms`` (:meth:`path_time`); the exact-time decision (as :meth:`PathDPSolution.k`)."""
        qa = np.ascontiguousarray(np.asarray(q, dtype=np.int64).ravel())
        sa = np.ascontiguousarray(np.asarray(s_ms, dtype=np.float64).ravel())
        if qa.size and (qa.min() < 0 or qa.max() >= self.n_tokens):
            raise ValueError(f"q must be in 0..{self.n_tokens - 1}")
        if not (np.isfinite(sa).all() and (sa >= 0).all()):
            raise ValueError("s_ms must be finite and >= 0 (a path time)")
        out = np.empty(qa.size, np.int64)
        m = self._m
        _decide_shared(self.n_tokens, m.S, m.c, m.vb, m.draft_ms, self.grid_ms, self.cells, self.periodic,
                       self._e, self._w, self._vals, self._term, *self.path._args(), qa, sa, out)
        return out

    def nbytes(self) -> int:
        return int(self._vals.nbytes + self._term.nbytes)

    def describe(self) -> dict[str, Any]:
        return {"solver": "shared", "continuation": self.continuation.kind, "grid_ms": self.grid_ms,
                "cells": self.cells, "states": self.states, "solve_s": self.solve_s, "cpu_s": self.cpu_s}


def solve_request_shared(survival: Any, path: DelayPath, *, n_tokens: int, draft_ms: float, verify_base_ms: float,
                         verify_per_token_ms: float, tx_per_token_ms: float = 0.0, grid_ms: float = 10.0,
                         jitter_nodes: int = 3, continuation: str = "token-clock") -> SharedRequestDP:
    """One request's DP on the whole loop of ``path`` (module docstring); ``continuation``:
    ``"token-clock"`` or ``"completion"`` (the value of the request's end, ``g``)."""
    w0, c0 = _time.perf_counter(), _time.process_time()
    m = _model(survival, draft_ms, verify_base_ms, verify_per_token_ms, tx_per_token_ms)
    N = _check_count("n_tokens", n_tokens)
    h0 = _check_grid_ms(grid_ms)
    if not isinstance(path, DelayPath):
        raise ValueError(f"path must be a DelayPath, got {type(path).__name__}")
    if continuation not in ("token-clock", "completion"):
        raise ValueError(f"continuation must be 'token-clock' or 'completion', got {continuation!r}")
    states = shared_states(path, N, h0)
    if states > MAX_SHARED_STATES:
        raise ValueError(f"the shared request DP would solve {states:,} grid states (limit {MAX_SHARED_STATES:,}): "
                         "solve per run (solve_request_from) or use a coarser grid_ms")
    span, periodic = _loop(path)
    base = dataclasses.replace(path, offset_ms=0.0)
    if periodic:
        G = max(math.ceil(span / h0), 1)
        h = span / G
    else:
        h = h0
        G = math.ceil(span / h) + 2  # cells from the last breakpoint on see the constant tail
    e, w = _jitter_nodes(float(path.jitter_cv), _check_count("jitter_nodes", jitter_nodes))
    cont = Continuation(continuation, base, m.S_cum, m.c, m.vb)
    term = cont.values(h, G)
    M = _send_table(base._args(), h, m.draft_ms, m.K, G)
    vals = np.empty((N, G), np.float32)
    round_max = m.K * m.c + m.vb + float(path.values_ms.max()) * float(e.max())
    ext = math.ceil(round_max / h) + 2
    _backward_shared(N, m.K, m.S, m.c, m.vb, h, M, e, w, G, periodic, term, ext, vals)
    vals.flags.writeable = False
    term.flags.writeable = False
    return SharedRequestDP(model=m, path=base, n_tokens=N, grid_ms=h, e=e, w=w, vals=vals, term=term,
                           periodic=periodic, continuation=cont, solve_s=_time.perf_counter() - w0,
                           cpu_s=_time.process_time() - c0)


def solve_request_from(survival: Any, path: DelayPath, start_ms: float, *, n_tokens: int, last: bool,
                       draft_ms: float, verify_base_ms: float, verify_per_token_ms: float,
                       tx_per_token_ms: float = 0.0, grid_ms: float = 10.0, jitter_nodes: int = 3,
                       continuation: str | Continuation = "token-clock", keep_values_mb: float = 64.0
                       ) -> PathDPSolution:
    """One request's windowed DP from its exact start ``start_ms`` (episode time) on ``path``: the
    path shifted by ``start_ms`` (its times are relative to the start). ``last``: the request ends
    the episode (``F(t, N) = 0``); else its end is valued by ``continuation``."""
    if not (isinstance(start_ms, (int, float, np.floating, np.integer)) and math.isfinite(start_ms)
            and start_ms >= 0):
        raise ValueError(f"start_ms must be a finite number >= 0, got {start_ms!r}")
    shifted = dataclasses.replace(path, offset_ms=path.offset_ms + float(start_ms))
    return solve_path_dp(survival, shifted, n_tokens=n_tokens, n_requests=1, draft_ms=draft_ms,
                         verify_base_ms=verify_base_ms, verify_per_token_ms=verify_per_token_ms,
                         tx_per_token_ms=tx_per_token_ms, grid_ms=grid_ms, jitter_nodes=jitter_nodes,
                         keep_values_mb=keep_values_mb, continuation=None if last else continuation,
                         ends_episode=last)


class RequestPlanner:
    """The per-request path oracle for ``n_runs`` runs of ``n_requests`` requests (module docstring).

    For the requests before the last (valued by ``continuation`` at their end) and for the last
    (valued 0) it uses the shared DP when that costs less than the runs' own DPs would (grid states
    of the loop against ``2 n_runs x requests x`` the renewal estimate of one request's windows, the
    factor for the windows' pilot, coarse stage and check) and fits :data:`MAX_SHARED_STATES`;
    ``shared=True``/``False`` forces the choice. With ``continuation="completion"`` every request
    has the same DP. Shared DPs come from ``shared_solver(continuation)`` (so that a caller can
    cache them across planners), per-run DPs are solved when a run starts a request, at its exact
    start time, ``threads`` at a time when several runs start together.
    """

    def __init__(self, survival: Any, path: DelayPath, *, n_tokens: int, n_requests: int, n_runs: int,
                 draft_ms: float, verify_base_ms: float, verify_per_token_ms: float, tx_per_token_ms: float = 0.0,
                 grid_ms: float = 10.0, jitter_nodes: int = 3, continuation: str = "token-clock",
                 shared: bool | None = None, shared_solver: Any = None, threads: int = 1) -> None:
        self.survival = np.asarray(survival, dtype=np.float64)
        self.path = path
        self.N = _check_count("n_tokens", n_tokens)
        self.R = _check_count("n_requests", n_requests)
        self.n_runs = _check_count("n_runs", n_runs)
        self.threads = _check_count("threads", threads)
        if continuation not in ("token-clock", "completion"):
            raise ValueError(f"continuation must be 'token-clock' or 'completion', got {continuation!r}")
        self.continuation = continuation
        self.costs = dict(draft_ms=draft_ms, verify_base_ms=verify_base_ms, verify_per_token_ms=verify_per_token_ms,
                          tx_per_token_ms=tx_per_token_ms, grid_ms=grid_ms, jitter_nodes=jitter_nodes)
        self._shared_solver = shared_solver or (lambda kind: solve_request_shared(
            self.survival, self.path, n_tokens=self.N, continuation=kind, **self.costs))
        loop = shared_states(path, self.N, grid_ms)
        per_request = request_states_estimate(self.survival, path, n_tokens=self.N, draft_ms=draft_ms,
                                              verify_base_ms=verify_base_ms, verify_per_token_ms=verify_per_token_ms,
                                              tx_per_token_ms=tx_per_token_ms, grid_ms=grid_ms)
        # the DP kinds: "before" (requests 0..R-2, g at their end) and "last" (request R-1, 0 at its end)
        counts = {"before": self.R - 1, "last": 1}
        if continuation == "completion":
            counts = {"before": self.R, "last": 0}  # g = 0: the last request is like the others
        self.use_shared: dict[str, bool] = {}
        for kind, n in counts.items():
            if n == 0:
                continue
            want = loop <= MAX_SHARED_STATES and loop <= 2.0 * self.n_runs * n * per_request
            self.use_shared[kind] = want if shared is None else bool(shared) and loop <= MAX_SHARED_STATES
        self.estimates = {"shared_states": loop, "request_states": per_request}
        self._shared: dict[str, SharedRequestDP] = {}
        m = _model(self.survival, draft_ms, verify_base_ms, verify_per_token_ms, tx_per_token_ms)
        self._cont = Continuation(continuation, path, m.S_cum, m.c, m.vb)  # g of the per-run DPs
        self._runs: dict[int, tuple[tuple[int, float, float], PathDPSolution]] = {}
        self.solved_per_run = 0
        self.cpu_per_run_s = 0.0

    def _kind(self, request: int) -> str:
        if self.continuation == "completion" or request < self.R - 1:
            return "before"
        return "last"

    def shared_dp(self, kind: str) -> SharedRequestDP:
        """The shared DP of the requests before the last (``"before"``) or of the last (``"last"``)."""
        dp = self._shared.get(kind)
        if dp is None:
            g = self.continuation if kind == "before" else "completion"
            dp = self._shared_solver(g)
            self._shared[kind] = dp
        return dp

    def reset(self) -> None:
        """Forget the runs' own DPs (a new episode)."""
        self._runs.clear()

    def _solve_run(self, key: tuple[int, float, float]) -> PathDPSolution:
        request, start, offset = key
        path = dataclasses.replace(self.path, offset_ms=self.path.offset_ms + offset)
        kind = self._kind(request)
        return solve_request_from(self.survival, path, start, n_tokens=self.N, last=kind == "last",
                                  continuation=self._cont, keep_values_mb=1e9, **self.costs)

    def k(self, runs: Any, progress: Any, time_ms: Any, offset_ms: Any) -> np.ndarray:
        """Draft lengths of the given runs at ``progress`` (tokens committed in the episode,
        ``0..n_tokens * n_requests - 1``), episode time ``time_ms`` and trace offset ``offset_ms``
        (0 for drift). A run at the start of a request (``progress % n_tokens == 0``) has its DP
        solved from this exact time when it needs one."""
        runs = np.asarray(runs, dtype=np.int64)
        p = np.asarray(progress, dtype=np.int64)
        t = np.asarray(time_ms, dtype=np.float64)
        off = np.broadcast_to(np.asarray(offset_ms, dtype=np.float64), p.shape)
        if p.size and (p.min() < 0 or p.max() >= self.N * self.R):
            raise ValueError(f"progress must be in 0..{self.N * self.R - 1}")
        req, q = p // self.N, p % self.N
        out = np.empty(p.size, np.int64)
        last = req == self.R - 1 if self.continuation != "completion" else np.zeros(p.size, bool)
        own = np.where(last, not self.use_shared.get("last", False), not self.use_shared.get("before", False))
        mine = np.flatnonzero(own)
        # runs starting a request with their own DP: solve (several at once on threads)
        todo: dict[int, tuple[int, float, float]] = {}
        for i in mine:
            run = int(runs[i])
            held = self._runs.get(run)
            if q[i] == 0:
                key = (int(req[i]), float(t[i]), float(off[i]))
                if held is None or held[0] != key:
                    todo[run] = key
            elif held is None or held[0][0] != req[i]:
                raise ValueError(f"run {run}: request {int(req[i])} is under way but was not seen starting "
                                 "(the planner must see every request's first round)")
        if todo:
            c0 = _time.process_time()
            keys = list(todo.items())
            if self.threads > 1 and len(keys) > 1:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(max_workers=min(self.threads, len(keys))) as pool:
                    sols = list(pool.map(lambda kv: self._solve_run(kv[1]), keys))
            else:
                sols = [self._solve_run(key) for _, key in keys]
            for (run, key), sol in zip(keys, sols):
                self._runs[run] = (key, sol)
            self.solved_per_run += len(keys)
            self.cpu_per_run_s += _time.process_time() - c0
        for i in mine:
            key, sol = self._runs[int(runs[i])]
            out[i] = sol.k_single(int(q[i]), float(t[i]) - key[1])
        for kind, sel in (("before", np.flatnonzero(~own & ~last)), ("last", np.flatnonzero(~own & last))):
            if sel.size:
                dp = self.shared_dp(kind)
                out[sel] = dp.k(q[sel], dp.path_time(t[sel], off[sel] + self.path.offset_ms))
        return out

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"scope": "request", "continuation": self.continuation,
                               "shared": {k: v for k, v in self.use_shared.items()}, **self.estimates,
                               "per_run_dps_solved": self.solved_per_run, "per_run_cpu_s": self.cpu_per_run_s}
        for kind, dp in self._shared.items():
            out[f"shared_dp_{kind}"] = dp.describe()
        return out
