"""Per-round records consumed as they are produced: regret, per-seed totals and per-round
statistics in memory that does not grow with the number of seeds.

The runner hands every finished round of an agent to a :class:`RoundRecorder`, which

* adds the cumulative regret of SPEC 5 when the reference ``rho_ref`` (per seed) is known:
  ``R(t) = C_T(t) - rho_ref * C_N(t)`` with ``C_T``, ``C_N`` the running sums of round time
  and tokens of the seed, and the pseudo-regret (``k c + B`` and ``1 + sum_{i<=k} S_i`` in
  place of the realised time and tokens) on stationary channels;
* forwards the batch to a ``sink`` (e.g. a :class:`specstop_gym.dataset.DatasetWriter`
  writing ``rounds.parquet``) and keeps it only when asked (``keep=True``: the
  :attr:`AgentRun.columns` of library use);
* accumulates :class:`RoundStats`: per seed (rounds, sums of k, rtt and time, final regret),
  and per round index the count, mean and sum of squared deviations over the seeds (Chan et
  al.'s pairwise update), which is all the summary and the per-round plots need. Memory:
  O(seeds + rounds), never O(seeds x rounds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.config import ScenarioConfig

ROUND_COLUMNS = ("seed", "round", "k", "accepted", "tokens", "time_ms", "rtt_ms", "state", "start_ms")
"""Columns of one round record (``seed`` is the seed itself, not its position)."""
REGRET_COLUMNS = ("regret_ms", "pseudo_regret_ms")

Sink = Callable[[dict[str, np.ndarray]], None]


class Moments:
    """Per round index: count, mean and sum of squared deviations (M2) of a quantity over seeds.

    ``add(index, values)`` merges a batch (any mix of indices) with Chan, Golub and LeVeque's
    pairwise formulas, exact up to rounding and free of the cancellation of sum/sum-of-squares.
    """

    def __init__(self) -> None:
        self.n = np.zeros(0, np.int64)
        self.mean = np.zeros(0)
        self.m2 = np.zeros(0)

    def _grow(self, size: int) -> None:
        if size > len(self.n):
            new = max(size, 2 * len(self.n), 64)
            for name in ("n", "mean", "m2"):
                old = getattr(self, name)
                arr = np.zeros(new, old.dtype)
                arr[:len(old)] = old
                setattr(self, name, arr)

    def add(self, index: np.ndarray, values: np.ndarray) -> None:
        index = np.asarray(index, np.int64)
        values = np.asarray(values, np.float64)
        if not len(index):
            return
        size = int(index.max()) + 1
        self._grow(size)
        cnt = np.bincount(index, minlength=size)
        used = np.flatnonzero(cnt)
        bsum = np.bincount(index, weights=values, minlength=size)
        bmean = np.zeros(size)
        bmean[used] = bsum[used] / cnt[used]
        bm2 = np.bincount(index, weights=(values - bmean[index]) ** 2, minlength=size)
        self.merge(used, cnt[used], bmean[used], bm2[used])

    def merge(self, idx: np.ndarray, nb: np.ndarray, mb: np.ndarray, m2b: np.ndarray) -> None:
        """Merge groups of (count, mean, M2) into the rounds ``idx``."""
        if not len(idx):
            return
        self._grow(int(idx.max()) + 1)
        na, ma = self.n[idx].astype(np.float64), self.mean[idx]
        nb = np.asarray(nb, np.float64)
        tot = na + nb
        safe = np.where(tot > 0, tot, 1.0)
        delta = mb - ma
        self.mean[idx] = np.where(tot > 0, ma + delta * nb / safe, 0.0)
        self.m2[idx] = self.m2[idx] + m2b + delta ** 2 * na * nb / safe
        self.n[idx] = tot.astype(np.int64)

    def trimmed(self, length: int) -> Moments:
        out = Moments()
        out.n, out.mean, out.m2 = self.n[:length].copy(), self.mean[:length].copy(), self.m2[:length].copy()
        if length > len(self.n):
            out._grow(length)
            out.n, out.mean, out.m2 = out.n[:length], out.mean[:length], out.m2[:length]
        return out

    def band(self, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Mean and Student-t CI half-width at each round (0 where fewer than 2 seeds)."""
        from scipy import stats

        n = self.n
        sd = np.sqrt(np.where(n >= 2, self.m2 / np.maximum(n - 1, 1), 0.0))
        uniq = np.unique(n)
        table = {int(u): float(stats.t.ppf(0.5 + level / 2, u - 1)) if u >= 2 else 0.0 for u in uniq}
        tq = np.array([table[int(x)] for x in n]) if len(n) else np.zeros(0)
        half = np.where(n >= 2, tq * sd / np.sqrt(np.maximum(n, 1)), 0.0)
        return self.mean.copy(), half


@dataclass
class RoundStats:
    """What the summary and the plots need of an agent's rounds (module docstring).

    Per seed (arrays over the run's seeds): ``rounds``, ``sum_k``, ``sum_rtt_ms``,
    ``sum_time_ms``, ``last_start_ms`` and, when regret was computed, ``final[column]`` (the
    last cumulative value; 0 for a seed without rounds). Per round index (``per_round``):
    ``"k"`` over the seeds still running at that round; ``"regret_ms"`` and
    ``"pseudo_regret_ms"`` with each finished seed's final value carried to later rounds.
    """

    rounds: np.ndarray
    sum_k: np.ndarray
    sum_rtt_ms: np.ndarray
    sum_time_ms: np.ndarray
    last_start_ms: np.ndarray
    final: dict[str, np.ndarray] = field(default_factory=dict)
    per_round: dict[str, Moments] = field(default_factory=dict)

    @property
    def n_rounds(self) -> int:
        """Rounds over all seeds."""
        return int(self.rounds.sum())

    @property
    def mean_k(self) -> float:
        """Mean draft length over all rounds (NaN without rounds)."""
        n = self.n_rounds
        return float(self.sum_k.sum() / n) if n else float("nan")

    @property
    def longest(self) -> int:
        """Rounds of the longest run."""
        return int(self.rounds.max()) if len(self.rounds) else 0


class RoundRecorder:
    """Consumes the rounds of one agent over ``seeds`` (module docstring).

    Args:
        seeds: the seeds of the run (their order defines the positions given to :meth:`add`).
        rho_ref: per-seed reference ms/token of the regret (None: no regret columns).
        scenario: with ``rho_ref``, a stationary scenario also gets pseudo-regret.
        sink: called with every batch (columns :data:`ROUND_COLUMNS` plus the regret columns).
        keep: keep the batches for :meth:`columns` (sorted by seed, then round).
    """

    def __init__(self, seeds: np.ndarray, *, rho_ref: np.ndarray | None = None,
                 scenario: ScenarioConfig | None = None, sink: Sink | None = None, keep: bool = True) -> None:
        self.seeds = np.asarray(seeds, np.int64)
        s = len(self.seeds)
        self.sink = sink
        self.keep = keep
        self.parts: list[dict[str, np.ndarray]] = []
        self.rho_ref = None if rho_ref is None else np.asarray(rho_ref, np.float64)
        self._pseudo: tuple[np.ndarray, np.ndarray] | None = None
        if self.rho_ref is not None and scenario is not None:
            from .metrics import is_stationary

            if is_stationary(scenario):
                from ..scenarios import build_acceptance, build_channel

                surv = build_acceptance(scenario).survival(scenario.max_draft)
                b = build_channel(scenario).long_run_mean_rtt_ms() + scenario.verify_base_ms
                ks = np.arange(scenario.max_draft + 1)
                self._pseudo = (ks * scenario.marginal_cost_ms + b, 1.0 + np.concatenate([[0.0], np.cumsum(surv)]))
        self.stats = RoundStats(rounds=np.zeros(s, np.int64), sum_k=np.zeros(s), sum_rtt_ms=np.zeros(s),
                                sum_time_ms=np.zeros(s), last_start_ms=np.zeros(s))
        self.stats.per_round["k"] = Moments()
        self._cum_time = np.zeros(s)
        self._cum_tokens = np.zeros(s)
        self._cum_exp_t = np.zeros(s)
        self._cum_exp_n = np.zeros(s)
        if self.rho_ref is not None:
            self.stats.final["regret_ms"] = np.zeros(s)
            self.stats.per_round["regret_ms"] = Moments()
            if self._pseudo is not None:
                self.stats.final["pseudo_regret_ms"] = np.zeros(s)
                self.stats.per_round["pseudo_regret_ms"] = Moments()

    @property
    def columns_out(self) -> tuple[str, ...]:
        """Columns of the batches this recorder emits."""
        extra = ()
        if self.rho_ref is not None:
            extra = REGRET_COLUMNS if self._pseudo is not None else REGRET_COLUMNS[:1]
        return ROUND_COLUMNS + extra

    def add(self, pos: np.ndarray, cols: dict[str, Any]) -> None:
        """One batch of rounds: ``pos`` are the seeds' positions (distinct within a batch),
        ``cols`` the other :data:`ROUND_COLUMNS` (``seed`` is filled in here)."""
        pos = np.asarray(pos, np.int64)
        if not len(pos):
            return
        st = self.stats
        k = np.asarray(cols["k"], np.int64)
        time_ms = np.asarray(cols["time_ms"], np.float64)
        tokens = np.asarray(cols["tokens"], np.int64)
        rnd = np.asarray(cols["round"], np.int64)
        st.rounds[pos] += 1
        st.sum_k[pos] += k
        st.sum_rtt_ms[pos] += np.asarray(cols["rtt_ms"], np.float64)
        st.sum_time_ms[pos] += time_ms
        st.last_start_ms[pos] = np.maximum(st.last_start_ms[pos], np.asarray(cols["start_ms"], np.float64))
        st.per_round["k"].add(rnd, k)
        batch = {"seed": self.seeds[pos], **{c: np.asarray(cols[c]) for c in ROUND_COLUMNS if c != "seed"}}
        if self.rho_ref is not None:
            self._cum_time[pos] += time_ms
            self._cum_tokens[pos] += tokens
            regret = self._cum_time[pos] - self.rho_ref[pos] * self._cum_tokens[pos]
            st.final["regret_ms"][pos] = regret
            st.per_round["regret_ms"].add(rnd, regret)
            batch["regret_ms"] = regret
            if self._pseudo is not None:
                exp_t, exp_n = self._pseudo
                self._cum_exp_t[pos] += exp_t[k]
                self._cum_exp_n[pos] += exp_n[k]
                pseudo = self._cum_exp_t[pos] - self.rho_ref[pos] * self._cum_exp_n[pos]
                st.final["pseudo_regret_ms"][pos] = pseudo
                st.per_round["pseudo_regret_ms"].add(rnd, pseudo)
                batch["pseudo_regret_ms"] = pseudo
        if self.sink is not None:
            self.sink(batch)
        if self.keep:
            self.parts.append(batch)

    def finish(self) -> tuple[dict[str, np.ndarray] | None, RoundStats]:
        """The kept columns (None unless ``keep``) and the statistics, with finished seeds'
        final regret carried to the later rounds."""
        st = self.stats
        longest = st.longest
        for name, mom in st.per_round.items():
            st.per_round[name] = mom.trimmed(longest)
        for name in self.stats.final:
            _carry_final(st.per_round[name], st.rounds, st.final[name], longest)
        columns = None
        if self.keep:
            names = self.columns_out
            if self.parts:
                cols = {c: np.concatenate([p[c] for p in self.parts]) for c in names}
                order = np.lexsort((cols["round"], cols["seed"]))
                columns = {c: v[order] for c, v in cols.items()}
            else:
                columns = {c: np.zeros(0) for c in names}
            self.parts = []
        return columns, st


def _carry_final(mom: Moments, rounds: np.ndarray, final: np.ndarray, longest: int) -> None:
    """Add, at every round ``r`` a seed no longer reaches (``rounds[seed] <= r``), the seed's
    final value: the per-round curve of a cumulative quantity stays flat after a run ends."""
    has = rounds > 0
    if not has.any() or longest == 0:
        return
    order = np.argsort(rounds[has], kind="stable")
    ends = rounds[has][order]              # a seed with R rounds is finished from round index R on
    vals = final[has][order]
    # prefix (count, mean, M2) of the finished seeds' finals, by Welford over the sorted seeds
    m = len(vals)
    pn = np.arange(m + 1, dtype=np.float64)
    pmean = np.zeros(m + 1)
    pm2 = np.zeros(m + 1)
    for i, v in enumerate(vals, start=1):
        d = v - pmean[i - 1]
        pmean[i] = pmean[i - 1] + d / i
        pm2[i] = pm2[i - 1] + d * (v - pmean[i])
    r = np.arange(longest)
    count = np.searchsorted(ends, r, side="right")  # seeds finished at or before round r
    sel = np.flatnonzero(count > 0)
    mom.merge(r[sel], pn[count[sel]], pmean[count[sel]], pm2[count[sel]])
