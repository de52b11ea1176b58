"""Acceptance processes (SPEC 2), batch-first, each with its exact survival S_i.

A process answers two questions:

* ``survival(max_draft)``: the exact ``S_i = P(G >= i)``, ``i = 1..K`` (closed form
  or Gauss-Hermite quadrature), used by the oracle;
* ``draw(keys, rounds, max_draft)``: for a batch of (episode key, round index)
  pairs, the accept run length ``G`` capped at ``K`` (``A = min(k, G)`` for any
  draft length ``k <= K``) and the per-position acceptance probabilities ``p``
  that generated it (the confidence signal is a noisy view of ``p``).

Draws are counter-based and computed by the compiled kernels (:mod:`specstop_gym.core.kernels`,
the code the simulator runs): round ``r`` of an episode
gets the same draws whatever policy runs, which is what common random numbers
need. Position ``i`` is accepted when ``u_{r,i} < p_{r,i}``; ``G`` is the index of
the first rejection minus one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import kernels

_LOGIT_CLIP = 40.0


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), clipped to +-40 so that p in {0, 1} stays finite."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore"):
        out = np.log(p) - np.log1p(-p)
    return np.clip(out, -_LOGIT_CLIP, _LOGIT_CLIP)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x))."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def extend_profile(profile: tuple[float, ...] | np.ndarray, max_draft: int) -> np.ndarray:
    """a_1..a_K: the profile's first K values, extended with its last value when shorter."""
    a = np.asarray(profile, dtype=np.float64)
    if a.size >= max_draft:
        return a[:max_draft].copy()
    return np.concatenate([a, np.full(max_draft - a.size, a[-1])])


def confidence_signal(keys: np.ndarray, rounds: np.ndarray, p: np.ndarray, sigma: float) -> np.ndarray:
    """q_i with logit q_i = logit p_i + N(0, sigma^2) (SPEC 2, confidence signal); shape of ``p``."""
    keys = kernels.as_arg(keys, np.uint64)
    rounds = kernels.as_arg(rounds, np.int64)
    p = kernels.as_arg(p, np.float64)
    out = np.empty_like(p)
    kernels.confidence_from_p_array(float(sigma), keys, rounds, p, out)
    return out


class AcceptanceProcess:
    """Interface of an acceptance process (see module docstring).

    Subclasses give ``survival`` and ``pack`` (their parameters for the compiled
    kernels, :mod:`specstop_gym.core.kernels`); the draws are the kernels' (the same
    code the simulator runs).
    """

    name = "base"

    def survival(self, max_draft: int) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def pack(self, builder: "kernels.ParamBuilder", max_draft: int) -> None:  # pragma: no cover - interface
        """Write the kind and parameters of the process for draft lengths up to ``max_draft``."""
        raise NotImplementedError

    def _params(self, max_draft: int, sigma: float | None) -> tuple[np.ndarray, np.ndarray]:
        cache = self.__dict__.get("_kernel_params")
        if cache is None:
            cache = {}
            object.__setattr__(self, "_kernel_params", cache)  # frozen dataclasses too
        key = (int(max_draft), sigma)
        if key not in cache:
            cache[key] = kernels.pack_model(acceptance=self, max_draft=max_draft, sigma=sigma)
        return kernels.read_only(cache[key])

    def _draw(self, keys, rounds, max_draft: int, sigma: float | None, want: int):
        keys = kernels.as_arg(keys, np.uint64)
        rounds = kernels.as_arg(np.broadcast_to(np.asarray(rounds, dtype=np.int64), keys.shape), np.int64)
        if keys.ndim != 1:
            raise ValueError(f"keys must be one-dimensional, got shape {keys.shape}")
        n, k = keys.shape[0], int(max_draft)
        P, I = self._params(k, sigma)
        g = np.empty(n, np.int64)
        p = np.empty((n, k) if want & 1 else (0, k))
        q = np.empty((n, k) if want & 2 else (0, k))
        kernels.draw_rounds_array(P, I, k, 0.0 if sigma is None else float(sigma), want, keys, rounds, g, p, q)
        return g, p, q

    def draw(self, keys: np.ndarray, rounds: np.ndarray, max_draft: int) -> tuple[np.ndarray, np.ndarray]:
        """(G capped at K, p of shape (B, K)) for episode keys and round indices of shape (B,)."""
        g, p, _ = self._draw(keys, rounds, max_draft, None, 1)
        return g, p

    def draw_with_signal(self, keys: np.ndarray, rounds: np.ndarray, max_draft: int,
                         sigma: float | None) -> tuple[np.ndarray, np.ndarray | None]:
        """(G, q): the run length and the confidence signal q (None when sigma is None)."""
        if sigma is None:
            return self._draw(keys, rounds, max_draft, None, 0)[0], None
        g, _, q = self._draw(keys, rounds, max_draft, sigma, 2)
        return g, q


@dataclass(frozen=True)
class ProfileAcceptance(AcceptanceProcess):
    """Independent positions with conditional acceptance a_i (geometric: all a_i = alpha).

    ``S_i = prod_{j<=i} a_j`` exactly. The heavy-head (Llama-like) case is
    ``a_1 = alpha_head``, ``a_i = alpha_tail`` for ``i >= 2``.
    """

    profile: tuple[float, ...]
    name: str = "profile"

    def survival(self, max_draft: int) -> np.ndarray:
        return np.cumprod(extend_profile(self.profile, max_draft))

    def pack(self, builder, max_draft):
        builder.ints[kernels.I_ACC_KIND] = kernels.ACC_PROFILE
        builder.floats(kernels.I_O_A, extend_profile(self.profile, max_draft))


@dataclass(frozen=True)
class SwitchingProfileAcceptance(ProfileAcceptance):
    """Acceptance that changes over time: ``profile`` and ``alt_profile`` alternate every ``switch_ms``.

    In episode time ``t`` (ms), rounds that start in ``[2n T, (2n + 1) T)`` draw from ``profile``,
    those in ``[(2n + 1) T, (2n + 2) T)`` from ``alt_profile`` (``T = switch_ms``): a stream of
    requests whose prompt type (say code, then chat) changes every ``T``. Within a regime the
    positions are independent as in :class:`ProfileAcceptance`. ``survival`` is the primary
    profile's (the first regime); :meth:`survival_at` gives the one in force at a time.
    ``draw`` and ``draw_with_signal`` draw at episode time 0 (the primary profile); the simulator
    passes each round's start time to the kernels.
    """

    alt_profile: tuple[float, ...] = ()
    switch_ms: float = 0.0
    name: str = "switching-profile"

    def regime(self, t_ms) -> np.ndarray:
        """0 (``profile``) or 1 (``alt_profile``) at episode times ``t_ms``."""
        t = np.asarray(t_ms, dtype=np.float64)
        if self.switch_ms <= 0:
            return np.zeros(t.shape, np.int64)
        return (np.floor(t / self.switch_ms).astype(np.int64) % 2)

    def survival_of(self, regime: int, max_draft: int) -> np.ndarray:
        """``S_1..S_K`` of regime 0 (``profile``) or 1 (``alt_profile``)."""
        return np.cumprod(extend_profile(self.alt_profile if regime else self.profile, max_draft))

    def survival_at(self, t_ms: float, max_draft: int) -> np.ndarray:
        """``S_1..S_K`` of the regime in force at episode time ``t_ms``."""
        return self.survival_of(int(self.regime(t_ms)), max_draft)

    def pack(self, builder, max_draft):
        builder.ints[kernels.I_ACC_KIND] = kernels.ACC_PROFILE
        builder.scalars[kernels.P_ACC_SWITCH] = self.switch_ms
        builder.floats(kernels.I_O_A, np.concatenate([extend_profile(self.profile, max_draft),
                                                      extend_profile(self.alt_profile, max_draft)]))


def geometric(alpha: float) -> ProfileAcceptance:
    """Geometric acceptance: a_i = alpha for every position (the Qwen-like case)."""
    return ProfileAcceptance(profile=(float(alpha),), name="geometric")


@dataclass(frozen=True)
class LatentDifficultyAcceptance(AcceptanceProcess):
    """Per-round difficulty: p_i = sigmoid(logit a_i + z + eps_i), z ~ N(0, tau^2), eps_i ~ N(0, sigma^2).

    Rounds are easy or hard as a whole. Exact survival by nested Gauss-Hermite
    quadrature: ``S_i = E_z[ prod_{j<=i} E_eps[sigmoid(logit a_j + z + eps)] ]``
    (eps is independent per token, so it averages out position by position).
    """

    profile: tuple[float, ...]
    tau: float
    eps_sigma: float = 0.0
    quadrature_points: int = 64
    name: str = "latent"

    def _mean_p_given_z(self, a: np.ndarray, z: np.ndarray) -> np.ndarray:
        """E_eps[p_j | z] for nodes z (shape (Z,)) -> shape (Z, K)."""
        base = logit(a)[None, :] + z[:, None]
        if self.eps_sigma == 0:
            return sigmoid(base)
        x, w = np.polynomial.hermite_e.hermegauss(self.quadrature_points)
        w = w / w.sum()
        return np.tensordot(sigmoid(base[..., None] + self.eps_sigma * x), w, axes=([-1], [0]))

    def survival(self, max_draft: int) -> np.ndarray:
        a = extend_profile(self.profile, max_draft)
        if self.tau == 0:
            return np.cumprod(self._mean_p_given_z(a, np.zeros(1))[0])
        x, w = np.polynomial.hermite_e.hermegauss(self.quadrature_points)
        w = w / w.sum()
        pz = self._mean_p_given_z(a, self.tau * x)  # (Z, K)
        return w @ np.cumprod(pz, axis=1)

    def pack(self, builder, max_draft):
        builder.ints[kernels.I_ACC_KIND] = kernels.ACC_LATENT
        builder.ints[kernels.I_HAS_EPS] = int(self.eps_sigma > 0)
        builder.scalars[kernels.P_TAU] = self.tau
        builder.scalars[kernels.P_EPS] = self.eps_sigma
        builder.floats(kernels.I_O_LOGIT_A, logit(extend_profile(self.profile, max_draft)))


def kaplan_meier_hazards(run_length_: np.ndarray, censored: np.ndarray, draft_length: np.ndarray,
                         max_draft: int) -> np.ndarray:
    """Conditional acceptance a_i (i = 1..K) by the product-limit (Kaplan-Meier) estimator.

    Position i is at risk in a recorded round if the round observed it
    (``draft_length >= i`` and ``run_length >= i - 1``); it was accepted there if
    ``run_length >= i``. A position nobody was at risk at reuses the last defined
    rate (0.5 when none is defined at all).
    """
    g = np.asarray(run_length_, dtype=np.int64)
    lengths = np.asarray(draft_length, dtype=np.int64)
    del censored  # implied by run_length == draft_length; kept in the signature for clarity
    pos = np.arange(1, max_draft + 1)[None, :]
    at_risk = (lengths[:, None] >= pos) & (g[:, None] >= pos - 1)
    acc = at_risk & (g[:, None] >= pos)
    n_risk = at_risk.sum(axis=0)
    n_acc = acc.sum(axis=0)
    a = np.empty(max_draft)
    last = 0.5
    for i in range(max_draft):
        if n_risk[i] > 0:
            last = n_acc[i] / n_risk[i]
        a[i] = last
    return a


@dataclass(frozen=True, eq=False)
class TraceAcceptance(AcceptanceProcess):
    """Replay of recorded rounds: each simulated round copies a recorded round chosen uniformly.

    A recorded round gives ``G`` directly unless it is censored at a draft length
    ``L < K``; then positions ``L+1..K`` are continued with the Kaplan-Meier
    conditional rates of the whole trace. The exact survival is the mixture
    ``S_i = mean_r P(G_r >= i)`` with ``P = 1`` for ``i <= G_r``, ``0`` past an
    uncensored ``G_r`` and the product of continuation rates past a censored one.
    Recorded confidences, where present, are replayed as the confidence signal.
    """

    run_lengths: np.ndarray
    censored: np.ndarray
    draft_lengths: np.ndarray
    confidences: np.ndarray | None = None
    name: str = "trace"

    def _hazards(self, max_draft: int) -> np.ndarray:
        return kaplan_meier_hazards(self.run_lengths, self.censored, self.draft_lengths, max_draft)

    def survival(self, max_draft: int) -> np.ndarray:
        a = self._hazards(max_draft)
        g = np.minimum(self.run_lengths, max_draft)
        pos = np.arange(1, max_draft + 1)[None, :]
        known = (pos <= g[:, None]).astype(np.float64)
        cont = np.where(pos > g[:, None], a[None, :], 1.0)
        tail = np.cumprod(cont, axis=1)
        prob = np.where(self.censored[:, None] & (g[:, None] < max_draft), np.maximum(known, tail), known)
        return prob.mean(axis=0)

    def pack(self, builder, max_draft):
        builder.ints[kernels.I_ACC_KIND] = kernels.ACC_TRACE
        builder.ints[kernels.I_N_REC] = self.run_lengths.shape[0]
        builder.floats(kernels.I_O_HAZ, self._hazards(max_draft))
        builder.integers(kernels.I_O_RUNLEN, self.run_lengths)
        builder.integers(kernels.I_O_CENS, np.asarray(self.censored, bool))
        if self.confidences is not None:
            conf = np.asarray(self.confidences, dtype=np.float64)[:, :max_draft]
            builder.ints[kernels.I_CONF_W] = conf.shape[1]
            builder.floats(kernels.I_O_CONF, conf)

    @property
    def has_recorded_confidences(self) -> bool:
        return self.confidences is not None and bool(np.isfinite(self.confidences).any())
