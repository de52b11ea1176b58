"""Compiled kernels (numba): the arithmetic of the simulation core, in one place.

Everything that is computed per round or per drafted token lives here, as scalar
functions over one row, compiled with numba and called by loops over the rows of a
batch. The Python classes (:mod:`.rng`, :mod:`.acceptance`, :mod:`.channel`,
:mod:`.simulator`) hold the configuration and the state arrays and call these
kernels; none of them repeats the arithmetic. A single environment is a batch of
one over the same loops as a vector environment of 4096 rows, so the two agree
bit for bit and neither pays numpy's per-call overhead once per quantity.

Parameters travel as two flat arrays built by :func:`pack_model`: ``P`` (float64)
and ``I`` (int64), with the scalar slots and array offsets named by the ``P_*``,
``I_*`` constants below (the kernels read them as compile-time constants).

State of the batch (owned by :class:`~specstop_gym.core.simulator.Simulator`):

* ``S`` (B, ``S_COLS``) int64: episode key (as int64 bits), round index, tokens
  left, request index, draft position, run length ``G`` of the current round, CSI,
  channel path state, switch count, episode tokens, done flag, trace pick;
* ``F`` (B, ``F_COLS + 3K``) float64: clock, request start, last rtt, episode
  time, next Markov switch, trace offset, latent difficulty ``z``, the fast and
  slow rtt averages (:data:`RTT_EWMA_FAST_MS`, :data:`RTT_EWMA_SLOW_MS`); then the
  censored-feedback counts ``risk_1..K``, ``acc_1..K`` and the confidences
  ``q_1..K`` of the current round;
* ``O`` (B, obs_dim) float32: the observation buffer.

Counter-based randomness (SPEC 5): ``hash(key, stream, index, slot) =
mix(mix(key ^ stream*GOLDEN) ^ (index*M1 + slot*M2 + GOLDEN))`` with the SplitMix64
finaliser ``mix``, modulo 2**64; a uniform is ``((h >> 11) + 0.5) * 2**-53``, a normal
is the normal quantile of that uniform (inversion; Acklam's approximation, relative error
< 1.2e-9, no tail cut below |z| = 8.3).
"""

from __future__ import annotations

import math
import os
import sys

import numba
import numpy as np
from numba import njit, prange

from ._jitcache import cache_enabled

if "NUMBA_THREADING_LAYER" not in os.environ and numba.config.THREADING_LAYER == "default":
    # numba's default would take GNU OpenMP when TBB is missing, and a process that forks after
    # an OpenMP parallel region kills its children ("fork() called from a process already using
    # GNU OpenMP"), which breaks fork-based multiprocessing (AsyncVectorEnv, SubprocVecEnv).
    # "forksafe" takes TBB (a dependency on x86-64) or else numba's own workqueue.
    numba.config.THREADING_LAYER = "forksafe"

PARALLEL_MIN_ROWS = 512
"""Vector environments of at least this many rows step with :func:`vector_step_parallel` (numba's
threads, one per core by default; ``NUMBA_NUM_THREADS=1`` or ``numba.set_num_threads(1)`` keeps
them on one core). The threading layer is fork-safe unless ``NUMBA_THREADING_LAYER`` says otherwise
(see above)."""

_JIT = {"cache": cache_enabled(), "nogil": True, "error_model": "numpy", "_nrt": False}
"""numba options of every kernel. ``cache``: compiled code is cached on disk, with a private
temporary folder as the fallback when nowhere numba looks is writable, and off (with a warning)
when even that fails (:mod:`._jitcache`). ``_nrt=False``: no kernel allocates, and without the
runtime's reference counting an array passed to a helper costs nothing (with it, each
call pays atomic increments and decrements, ~10 ns)."""

_INLINE = {"forceinline": True, **_JIT}
"""Options of the small helpers: each is compiled once (per argument types) and LLVM inlines it
into its callers (``forceinline``: LLVM's ``alwaysinline``), so the step loops run as one
function. (numba's own ``inline="always"``, used before, inlined at numba's IR level: the same
speed, but numba re-derived and copied the helper's IR at every call site, which made the first
compile of the kernels 2-3x longer; docs/vector.md, "First run".) Helpers take typed int64
arguments (:data:`I0`, the ``STREAM_*`` constants): a literal argument would compile one more copy
of the helper per distinct value."""

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
M1 = np.uint64(0xBF58476D1CE4E5B9)
M2 = np.uint64(0x94D049BB133111EB)
_S11 = np.uint64(11)
_S27 = np.uint64(27)
_S30 = np.uint64(30)
_S31 = np.uint64(31)
TWO_M53 = 1.0 / 9007199254740992.0
LOGIT_CLIP = 40.0

# Named streams: distinct constants so that draws never collide.
STREAM_ACCEPT_U = np.int64(1)  # acceptance uniforms, index = round, slot = position
STREAM_LATENT_Z = np.int64(2)  # per-round difficulty, index = round
STREAM_LATENT_EPS = np.int64(3)  # per-token difficulty noise, index = round, slot = position
STREAM_CONFIDENCE = np.int64(4)  # confidence-signal noise, index = round, slot = position
STREAM_TRACE_PICK = np.int64(5)  # which recorded round a replayed round copies, index = round
STREAM_RTT = np.int64(6)  # rtt jitter, index = wall-clock slot of sending
STREAM_MARKOV = np.int64(7)  # Markov path: index = switch number, slot 0 = holding time, 1 = next state
STREAM_OFFSET = np.int64(8)  # episode start offsets (trace replay), index = 0
STREAM_INIT = np.int64(9)  # initial channel state, index = 0
PROBE_SLOT = np.int64(1)  # jitter slot of the initial rtt probe at reset (rounds use slot 0)

I0 = np.int64(0)
I1 = np.int64(1)
"""Typed int64 constants for helper arguments (a literal ``0`` would be typed ``Literal[int](0)``
and compile one more copy of the helper)."""

# ---------------------------------------------------------------- kinds
ACC_PROFILE, ACC_LATENT, ACC_TRACE = 0, 1, 2
CH_IID, CH_GAMMA, CH_MARKOV, CH_DRIFT, CH_TRACE = 0, 1, 2, 3, 4

# ---------------------------------------------------------------- I slots
I_K = 0  # max_draft
I_REQUESTS = 1
I_N_TOKENS = 2
I_ACC_KIND = 3
I_CH_KIND = 4
I_M = 5  # channel states
I_SIGNAL = 6  # 1 when the confidence signal is on
I_CSI_OBS = 7
I_LINEAR = 8  # drift: linear interpolation
I_PERIODIC = 9  # drift: schedule loops every period_ms
I_HAS_STATES = 10  # trace channel has a state column
I_RANDOM_OFFSET = 11
I_TX_BY_STATE = 12  # Markov channel with per-state bandwidth
I_N_REC = 13  # recorded rounds (trace acceptance)
I_CONF_W = 14  # width of recorded confidences (0: none)
I_N_PTS = 15  # points of the drift schedule / delay trace
I_HAS_EPS = 16  # latent: per-token noise on
I_O_A = 17  # P offsets (K, or 2K with an alternative profile): profile a_i
I_O_LOGIT_A = 18  # (K) logit a_i
I_O_HAZ = 19  # (K) Kaplan-Meier continuation rates
I_O_MEAN = 20  # (M) Markov mean rtt per state
I_O_SD = 21  # (M) lognormal sigma per state
I_O_HALF_VAR = 22  # (M) sigma^2 / 2 per state
I_O_RATES = 23  # (M) Markov leaving rates
I_O_JUMP = 24  # (M*M) jump-chain cdf
I_O_STAT = 25  # (M) stationary cdf
I_O_TX = 26  # (M) per-state tx ms per token
I_O_PT_T = 27  # (N_PTS) times
I_O_PT_V = 28  # (N_PTS) values (means or rtts)
I_O_CONF = 29  # (N_REC * CONF_W) recorded confidences (nan: none)
I_O_STATES = 30  # I offset (N_PTS): trace states
I_O_RUNLEN = 31  # I offset (N_REC): recorded run lengths
I_O_CENS = 32  # I offset (N_REC): recorded censoring flags
I_LOCAL_REF = 33  # 1: finish_round computes the round's local reference rate (reward_reference="local")
I_O_EXP_TOKENS = 34  # P offset (K): 1 + S_1 + ... + S_k, expected tokens of a round of length k
I_SIZE = 35

# ---------------------------------------------------------------- P slots
P_DRAFT = 0
P_VERIFY_BASE = 1
P_VERIFY_TOKEN = 2
P_TX = 3  # tx ms per token when it does not depend on the state
P_SIGMA = 4  # confidence-signal sigma
P_JITTER_SLOT = 5
P_TAU = 6
P_EPS = 7
P_PERIOD = 8
P_DURATION = 9
P_GAMMA_SHAPE = 10
P_MEAN = 11  # iid mean rtt
P_SD = 12  # iid / drift lognormal sigma
P_HALF_VAR = 13  # iid / drift sigma^2 / 2
P_N_TOKENS = 14
P_CV = 15  # iid / drift cv (0: no jitter)
P_ACC_SWITCH = 16  # profile acceptance: period (ms) of the switch to the alternative profile (0: none)
P_SIZE = 17

# ---------------------------------------------------------------- state columns
S_KEY, S_ROUND, S_LEFT, S_REQ, S_POS, S_G, S_CSI, S_CH_STATE, S_SWITCHES, S_EP_TOKENS, S_DONE, S_PICK = range(12)
S_COLS = 12
F_T, F_REQ_START, F_LAST_RTT, F_EP_TIME, F_NEXT_SWITCH, F_OFFSET, F_Z, F_EWMA_FAST, F_EWMA_SLOW = range(9)
F_COLS = 9  # then risk (K), acc (K), q (K)

RTT_EWMA_FAST_MS = 1000.0
RTT_EWMA_SLOW_MS = 30000.0
"""Time constants (wall-clock ms) of the two exponentially weighted moving averages of the measured
rtt in the observation: after a round of ``round_ms`` with rtt ``r``, ``m += (1 - exp(-round_ms / tau))
* (r - m)``; both start at the initial probe. The fast one follows the current level of a channel
whose regimes last seconds (drift, Markov) with the per-round jitter averaged out; the slow one
tracks the long-run level."""

# round outputs: int columns and float columns of the per-call output buffers
R_ROW, R_K, R_ACCEPTED, R_TOKENS, R_STATE, R_START_STATE, R_ROUND, R_REQ_DONE, R_EP_DONE = range(9)
R_INT_COLS = 9
R_ROUND_MS, R_RTT, R_START_MS, R_REF = range(4)
R_FLOAT_COLS = 4


# ====================================================================== randomness
@njit(**_INLINE)
def mix(z):
    """SplitMix64 finaliser (bijective on uint64)."""
    z = (z ^ (z >> _S30)) * M1
    z = (z ^ (z >> _S27)) * M2
    return z ^ (z >> _S31)


@njit(**_INLINE)
def hash64(key, stream, index, slot):
    """``mix(mix(key ^ stream*GOLDEN) ^ (index*M1 + slot*M2 + GOLDEN))`` (uint64 key, int64 rest)."""
    h = mix(key ^ (np.uint64(stream) * GOLDEN))
    c = np.uint64(index) * M1 + np.uint64(slot) * M2 + GOLDEN
    return mix(h ^ c)


@njit(**_INLINE)
def to_uniform(h):
    """Uniform in (0, 1) from a hash: ``((h >> 11) + 0.5) * 2**-53``."""
    return (np.float64(h >> _S11) + 0.5) * TWO_M53


# Acklam's rational approximation of the standard normal quantile (relative error < 1.2e-9)
_NA = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02,
       -3.066479806614716e+01, 2.506628277459239e+00)
_NB = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01,
       -1.328068155288572e+01)
_NC = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00,
       4.374664141464968e+00, 2.938163982698783e+00)
_ND = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00)
_A0, _A1, _A2, _A3, _A4, _A5 = _NA
_B0, _B1, _B2, _B3, _B4 = _NB
_C0, _C1, _C2, _C3, _C4, _C5 = _NC
_D0, _D1, _D2, _D3 = _ND
_P_LOW = 0.02425


@njit(**_INLINE)
def normal_quantile(p):
    """Standard normal quantile of p in (0, 1): Acklam's rational approximation (central region
    |p - 1/2| <= 0.47575 without transcendental functions; tails through sqrt(-2 log p))."""
    if p < _P_LOW:
        q = math.sqrt(-2.0 * math.log(p))
        return (((((_C0 * q + _C1) * q + _C2) * q + _C3) * q + _C4) * q + _C5) / (
            (((_D0 * q + _D1) * q + _D2) * q + _D3) * q + 1.0)
    if p > 1.0 - _P_LOW:
        q = math.sqrt(-2.0 * math.log1p(-p))
        return -(((((_C0 * q + _C1) * q + _C2) * q + _C3) * q + _C4) * q + _C5) / (
            (((_D0 * q + _D1) * q + _D2) * q + _D3) * q + 1.0)
    q = p - 0.5
    r = q * q
    return (((((_A0 * r + _A1) * r + _A2) * r + _A3) * r + _A4) * r + _A5) * q / (
        ((((_B0 * r + _B1) * r + _B2) * r + _B3) * r + _B4) * r + 1.0)


@njit(**_INLINE)
def to_normal(h):
    """Standard normal from a hash: the normal quantile of its uniform (inversion, 53 random bits)."""
    return normal_quantile(to_uniform(h))


@njit(**_INLINE)
def uniform(key, stream, index, slot):
    return to_uniform(hash64(key, stream, index, slot))


@njit(**_INLINE)
def normal(key, stream, index, slot):
    return to_normal(hash64(key, stream, index, slot))


@njit(**_JIT)
def draw_array(keys, stream, index, slot, kind, out_u64, out_f64):
    """Flat arrays of equal length: kind 0 hashes into ``out_u64``, 1 uniforms, 2 normals into ``out_f64``."""
    for j in range(keys.shape[0]):
        h = hash64(keys[j], stream, index[j], slot[j])
        if kind == 0:
            out_u64[j] = h
        elif kind == 1:
            out_f64[j] = to_uniform(h)
        else:
            out_f64[j] = to_normal(h)


# ====================================================================== small math
@njit(**_INLINE)
def logit(p):
    """log(p / (1 - p)) clipped to +-40 (finite at p in {0, 1})."""
    x = math.log(p) - math.log1p(-p)
    if x > LOGIT_CLIP:
        return LOGIT_CLIP
    if x < -LOGIT_CLIP:
        return -LOGIT_CLIP
    return x


@njit(**_INLINE)
def sigmoid(x):
    """1 / (1 + exp(-x)) as 0.5 (1 + tanh(x / 2))."""
    return 0.5 * (1.0 + math.tanh(0.5 * x))


@njit(**_INLINE)
def search_right(P, off, n, x):
    """Number of the ``n`` sorted values ``P[off:off+n]`` that are <= x (numpy searchsorted, side right)."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) >> 1
        if P[off + mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(**_JIT)
def _gamma_p(a, x, lga):
    """Regularised lower incomplete gamma P(a, x) (series below a + 1, continued fraction above)."""
    if x <= 0.0:
        return 0.0
    if x < a + 1.0:
        ap, term = a, 1.0 / a
        total = term
        for _ in range(1000):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-16:
                break
        return total * math.exp(-x + a * math.log(x) - lga)
    b = x + 1.0 - a
    c = 1.0 / 1e-300
    d = 1.0 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        if abs(d) < 1e-300:
            d = 1e-300
        c = b + an / c
        if abs(c) < 1e-300:
            c = 1e-300
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return 1.0 - math.exp(-x + a * math.log(x) - lga) * h


@njit(**_JIT)
def gamma_quantile(a, u):
    """x with P(a, x) = u (the inverse regularised incomplete gamma), by safeguarded Newton steps."""
    lga = math.lgamma(a)
    lo, hi = 0.0, max(1.0, a)
    while _gamma_p(a, hi, lga) < u:
        lo = hi
        hi *= 2.0
    x = 0.5 * (lo + hi)
    for _ in range(200):
        f = _gamma_p(a, x, lga) - u
        if f == 0.0:
            return x
        if f > 0.0:
            hi = x
        else:
            lo = x
        dens = math.exp((a - 1.0) * math.log(x) - x - lga)
        step = f / dens if dens > 0.0 else 0.0
        nxt = x - step
        if not (lo < nxt < hi) or dens <= 0.0:
            nxt = 0.5 * (lo + hi)
        if abs(nxt - x) <= 1e-15 * x or hi - lo <= 1e-15 * hi:
            return nxt
        x = nxt
    return x


@njit(**_JIT)
def gamma_quantile_array(a, u, out):
    for j in range(u.shape[0]):
        out[j] = gamma_quantile(a, u[j])


# ====================================================================== acceptance
@njit(**_INLINE)
def profile_regime(P, t):
    """Profile acceptance: 0 (the profile) or 1 (the alternative profile) at episode time ``t`` ms; the two
    alternate every ``P[P_ACC_SWITCH]`` ms, starting with the profile (always 0 without a switch)."""
    period = P[P_ACC_SWITCH]
    if period <= 0.0:
        return 0
    return np.int64(math.floor(t / period)) % 2


@njit(**_INLINE)
def accept_p(P, I, key, rnd, i, z, pick):
    """Acceptance probability of position ``i`` (0-based) of round ``rnd`` (its latent ``z``; for profile
    acceptance ``pick`` is the regime of :func:`profile_regime`, for trace acceptance the replayed record)."""
    kind = I[I_ACC_KIND]
    if kind == ACC_LATENT:
        x = P[I[I_O_LOGIT_A] + i] + z
        if I[I_HAS_EPS]:
            x = x + P[P_EPS] * normal(key, STREAM_LATENT_EPS, rnd, i)
        return sigmoid(x)
    if kind == ACC_TRACE:
        return P[I[I_O_HAZ] + i]
    return P[I[I_O_A] + pick * I[I_K] + i]


@njit(**_INLINE)
def draw_round(P, I, k_max, key, rnd, t):
    """(G capped at k_max, latent z, pick) of round ``rnd`` started at episode time ``t`` ms: position
    i is accepted when ``u_i < p_i``; G counts the accepted positions before the first rejection
    (uniforms are drawn up to the first rejection only, which gives the same G). ``pick``: the
    profile regime (profile acceptance) or the replayed record (trace). One loop per kind: the
    loops stay small enough for the compiler to keep them tight."""
    kind = I[I_ACC_KIND]
    g = np.int64(0)
    if kind == ACC_PROFILE:
        regime = profile_regime(P, t)
        o = I[I_O_A] + regime * I[I_K]
        while g < k_max and uniform(key, STREAM_ACCEPT_U, rnd, g) < P[o + g]:
            g += 1
        return g, 0.0, regime
    if kind == ACC_LATENT:
        z = P[P_TAU] * normal(key, STREAM_LATENT_Z, rnd, I0)
        while g < k_max and uniform(key, STREAM_ACCEPT_U, rnd, g) < accept_p(P, I, key, rnd, g, z, I0):
            g += 1
        return g, z, 0
    n = I[I_N_REC]
    pick = min(np.int64(uniform(key, STREAM_TRACE_PICK, rnd, I0) * n), n - 1)
    g = min(I[I[I_O_RUNLEN] + pick], k_max)
    if I[I[I_O_CENS] + pick] == 0 or g >= k_max:
        return g, 0.0, pick
    haz = I[I_O_HAZ]
    while g < k_max and uniform(key, STREAM_ACCEPT_U, rnd, g) < P[haz + g]:
        g += 1
    return g, 0.0, pick


@njit(**_INLINE)
def confidence(P, I, sigma, key, rnd, i, z, pick):
    """Confidence q_i: logit q_i = logit p_i + sigma * N(0, 1); a recorded confidence replaces it."""
    w = I[I_CONF_W]
    if w > i:
        rec = P[I[I_O_CONF] + pick * w + i]
        if not math.isnan(rec):
            return rec
    p = accept_p(P, I, key, rnd, i, z, pick)
    return sigmoid(logit(p) + sigma * normal(key, STREAM_CONFIDENCE, rnd, i))


@njit(**_JIT)
def draw_rounds_array(P, I, k_max, sigma, want, keys, rounds, g_out, p_out, q_out):
    """Batch of (key, round) draws at episode time 0: G always; p when ``want & 1``; q when ``want & 2``."""
    for j in range(keys.shape[0]):
        key = keys[j]
        rnd = rounds[j]
        g, z, pick = draw_round(P, I, k_max, key, rnd, 0.0)
        g_out[j] = g
        if want & 1:
            for i in range(k_max):
                p_out[j, i] = accept_p(P, I, key, rnd, i, z, pick)
        if want & 2:
            for i in range(k_max):
                q_out[j, i] = confidence(P, I, sigma, key, rnd, i, z, pick)


@njit(**_JIT)
def confidence_from_p_array(sigma, keys, rounds, p, out):
    """q = sigmoid(logit p + sigma * N(0,1)) for given p (shape (B, K))."""
    for j in range(keys.shape[0]):
        for i in range(p.shape[1]):
            out[j, i] = sigmoid(logit(p[j, i]) + sigma * normal(keys[j], STREAM_CONFIDENCE, rounds[j], i))


# ====================================================================== channel
@njit(**_INLINE)
def _slot_index(P, t):
    return np.int64(math.floor(t / P[P_JITTER_SLOT]))


@njit(**_INLINE)
def _holding(P, I, key, state, count):
    rate = P[I[I_O_RATES] + state]
    if rate > 0.0:
        return -math.log(uniform(key, STREAM_MARKOV, count, I0)) / rate
    return np.inf


@njit(**_INLINE)
def channel_init(P, I, key):
    """(state, switch count, next switch ms, offset ms) of a path starting at time 0."""
    kind = I[I_CH_KIND]
    if kind == CH_MARKOV:
        m = I[I_M]
        u = uniform(key, STREAM_INIT, I0, I0)
        s = min(search_right(P, I[I_O_STAT], m, u), m - 1)
        return s, I0, _holding(P, I, key, s, I0), 0.0
    if kind == CH_TRACE and I[I_RANDOM_OFFSET]:
        return I0, I0, np.inf, uniform(key, STREAM_OFFSET, I0, I0) * P[P_DURATION]
    return I0, I0, np.inf, 0.0


@njit(**_INLINE)
def _trace_index(P, I, offset, t):
    tt = (offset + t) % P[P_DURATION]
    n = I[I_N_PTS]
    j = search_right(P, I[I_O_PT_T], n, tt) - 1
    return min(max(j, 0), n - 1)


@njit(**_INLINE)
def markov_advance(P, I, key, state, count, next_switch, t):
    """Advance a Markov path to time ``t``: (state, switch count, next switch)."""
    m = I[I_M]
    jump = I[I_O_JUMP]
    while next_switch <= t:
        count += 1
        u = uniform(key, STREAM_MARKOV, count, I1)
        new = 0
        row = jump + state * m
        for j in range(m):
            if P[row + j] < u:
                new += 1
        state = min(new, m - 1)
        next_switch = next_switch + _holding(P, I, key, state, count)
    return state, count, next_switch


@njit(**_INLINE)
def _drift_mean(P, I, t):
    if I[I_PERIODIC]:
        t = t - P[P_PERIOD] * math.floor(t / P[P_PERIOD])
    n = I[I_N_PTS]
    ot, ov = I[I_O_PT_T], I[I_O_PT_V]
    j = search_right(P, ot, n, t) - 1
    if not I[I_LINEAR]:
        return P[ov + min(max(j, 0), n - 1)]
    if j < 0:
        return P[ov]
    if j >= n - 1:
        return P[ov + n - 1]
    t0, t1 = P[ot + j], P[ot + j + 1]
    slope = (P[ov + j + 1] - P[ov + j]) / (t1 - t0)
    return slope * (t - t0) + P[ov + j]


@njit(**_INLINE)
def channel_state(P, I, key, t, state, count, next_switch, offset):
    """(observed state at t, path state, switch count, next switch) of a row's channel at time t."""
    kind = I[I_CH_KIND]
    if kind == CH_MARKOV:
        state, count, next_switch = markov_advance(P, I, key, state, count, next_switch, t)
        return state, state, count, next_switch
    if kind == CH_TRACE and I[I_HAS_STATES]:
        return I[I[I_O_STATES] + _trace_index(P, I, offset, t)], state, count, next_switch
    return 0, state, count, next_switch


@njit(**_INLINE)
def channel_mean(P, I, t, state, offset):
    """Mean rtt (ms) at time t in ``state`` (what a clairvoyant oracle plans with)."""
    kind = I[I_CH_KIND]
    if kind == CH_MARKOV:
        return P[I[I_O_MEAN] + state]
    if kind == CH_DRIFT:
        return _drift_mean(P, I, t)
    if kind == CH_TRACE:
        return P[I[I_O_PT_V] + _trace_index(P, I, offset, t)]
    return P[P_MEAN]


@njit(**_INLINE)
def channel_rtt(P, I, key, t, state, offset, slot):
    """rtt (ms) of a round sent at time t in ``state`` (jitter indexed by the wall-clock slot)."""
    kind = I[I_CH_KIND]
    if kind == CH_TRACE:
        return P[I[I_O_PT_V] + _trace_index(P, I, offset, t)]
    if kind == CH_MARKOV:
        mean = P[I[I_O_MEAN] + state]
        sd = P[I[I_O_SD] + state]
        hv = P[I[I_O_HALF_VAR] + state]
        return mean * math.exp(sd * normal(key, STREAM_RTT, _slot_index(P, t), slot) - hv)
    mean = _drift_mean(P, I, t) if kind == CH_DRIFT else P[P_MEAN]
    if P[P_CV] == 0.0:
        return mean
    if kind == CH_GAMMA:
        a = P[P_GAMMA_SHAPE]
        return gamma_quantile(a, uniform(key, STREAM_RTT, _slot_index(P, t), slot)) * mean / a
    return mean * math.exp(P[P_SD] * normal(key, STREAM_RTT, _slot_index(P, t), slot) - P[P_HALF_VAR])


@njit(**_INLINE)
def channel_tx(P, I, state):
    """Uplink transmission time per drafted token (ms) in ``state``."""
    if I[I_TX_BY_STATE]:
        return P[I[I_O_TX] + state]
    return P[P_TX]


@njit(**_JIT)
def channel_init_array(P, I, keys, state, count, next_switch, offset):
    for j in range(keys.shape[0]):
        state[j], count[j], next_switch[j], offset[j] = channel_init(P, I, keys[j])


@njit(**_JIT)
def channel_state_array(P, I, keys, t, state, count, next_switch, offset, out):
    """Advance the paths (arrays updated in place) and write the observed state at t into ``out``."""
    for j in range(keys.shape[0]):
        out[j], state[j], count[j], next_switch[j] = channel_state(
            P, I, keys[j], t[j], state[j], count[j], next_switch[j], offset[j])


@njit(**_JIT)
def channel_rtt_array(P, I, keys, t, state, offset, slot, out):
    for j in range(keys.shape[0]):
        out[j] = channel_rtt(P, I, keys[j], t[j], state[j], offset[j], slot)


@njit(**_JIT)
def channel_mean_array(P, I, t, state, offset, out):
    for j in range(t.shape[0]):
        out[j] = channel_mean(P, I, t[j], state[j], offset[j])


# ====================================================================== simulator
@njit(**_INLINE)
def _key(S, row):
    return np.uint64(S[row, S_KEY])


@njit(**_INLINE)
def begin_round(S, F, P, I, row):
    """Draws of the row's current round (G; z and pick; q when the signal is on); position 1."""
    k = I[I_K]
    key = _key(S, row)
    rnd = S[row, S_ROUND]
    g, z, pick = draw_round(P, I, k, key, rnd, F[row, F_T])
    S[row, S_G] = g
    S[row, S_PICK] = pick
    S[row, S_POS] = 1
    F[row, F_Z] = z
    if I[I_SIGNAL]:
        qo = F_COLS + 2 * k
        sigma = P[P_SIGMA]
        for i in range(k):
            F[row, qo + i] = confidence(P, I, sigma, key, rnd, i, z, pick)


@njit(**_INLINE)
def refresh_row(S, F, O, P, I, row):
    """Observation row from the state (layout: Simulator.observe)."""
    k = I[I_K]
    m = I[I_M]
    pos = S[row, S_POS]
    O[row, 0] = np.float32(pos / k)
    O[row, 1] = np.float32(F[row, F_LAST_RTT] / 1000.0)
    if I[I_CSI_OBS]:
        csi = S[row, S_CSI]
        for s in range(m):
            O[row, 2 + s] = np.float32(1.0) if s == csi else np.float32(0.0)
    if I[I_SIGNAL]:
        O[row, 2 + m] = np.float32(F[row, F_COLS + 2 * k + pos - 1])
    for i in range(k):
        O[row, 3 + m + i] = np.float32((F[row, F_COLS + k + i] + 1.0) / (F[row, F_COLS + i] + 2.0))
    O[row, 3 + m + k] = np.float32(np.float64(S[row, S_LEFT]) / P[P_N_TOKENS])
    O[row, 4 + m + k] = np.float32(F[row, F_EWMA_FAST] / 1000.0)
    O[row, 5 + m + k] = np.float32(F[row, F_EWMA_SLOW] / 1000.0)
    for i in range(k):  # the draft position, one-hot
        O[row, 6 + m + k + i] = np.float32(1.0) if i == pos - 1 else np.float32(0.0)


@njit(**_INLINE)
def local_rate(P, I, mean_rtt, state):
    """rho*(mean_rtt): the least per-token latency of a fixed draft length on a stationary channel
    of mean rtt ``mean_rtt`` in ``state`` (SPEC 4), ``min_k (k c + mean_rtt + verify_base) /
    (1 + S_1 + ... + S_k)`` with ``c`` the marginal cost of a drafted token in that state."""
    c = P[P_DRAFT] + P[P_VERIFY_TOKEN] + channel_tx(P, I, state)
    fixed = mean_rtt + P[P_VERIFY_BASE]
    o = I[I_O_EXP_TOKENS]
    best = np.inf
    for k in range(I[I_K]):
        rho = ((k + 1) * c + fixed) / P[o + k]
        best = min(best, rho)
    return best


@njit(**_JIT)
def reset_rows(S, F, O, P, I, rows, keys):
    """Start new episodes in ``rows`` with episode keys ``keys`` (uint64)."""
    for j in range(rows.shape[0]):
        row = rows[j]
        key = keys[j]
        for c in range(S.shape[1]):
            S[row, c] = 0
        for c in range(F.shape[1]):
            F[row, c] = 0.0
        S[row, S_KEY] = np.int64(key)
        S[row, S_LEFT] = I[I_N_TOKENS]
        state, count, nxt, offset = channel_init(P, I, key)
        csi, state, count, nxt = channel_state(P, I, key, 0.0, state, count, nxt, offset)
        S[row, S_CH_STATE] = state
        S[row, S_SWITCHES] = count
        S[row, S_CSI] = csi
        F[row, F_NEXT_SWITCH] = nxt
        F[row, F_OFFSET] = offset
        probe = channel_rtt(P, I, key, 0.0, csi, offset, PROBE_SLOT)
        F[row, F_LAST_RTT] = probe
        F[row, F_EWMA_FAST] = probe
        F[row, F_EWMA_SLOW] = probe
        begin_round(S, F, P, I, row)
        refresh_row(S, F, O, P, I, row)


@njit(**_JIT)  # not inlined: one compiled copy serves the four step kernels (compile time)
def finish_round(S, F, O, P, I, row, k):
    """Send a draft of length k (1..K) from ``row`` and complete the round. Returns (round_ms, rtt,
    start ms, accepted, tokens, channel state at sending, state at the start, round index,
    request done, episode done, local reference rate): the last is :func:`local_rate` at the
    channel's mean rtt at the sending time in the state at sending when ``I[I_LOCAL_REF]`` is set
    (the reward's reference, reward_reference="local"), else 0."""
    kmax = I[I_K]
    key = _key(S, row)
    t0 = F[row, F_T]
    start_state = S[row, S_CSI]
    old_pos = S[row, S_POS]  # the draft position before this round (k at the token level, else 1)
    t_send = t0 + k * P[P_DRAFT]
    offset = F[row, F_OFFSET]
    state, path, count, nxt = channel_state(P, I, key, t_send, S[row, S_CH_STATE], S[row, S_SWITCHES],
                                            F[row, F_NEXT_SWITCH], offset)
    rtt = channel_rtt(P, I, key, t_send, state, offset, I0)
    marginal = k * (P[P_DRAFT] + P[P_VERIFY_TOKEN] + channel_tx(P, I, state))
    round_ms = marginal + rtt + P[P_VERIFY_BASE]
    ref = local_rate(P, I, channel_mean(P, I, t_send, state, offset), state) if I[I_LOCAL_REF] else 0.0
    g = S[row, S_G]
    accepted = min(k, g)
    left = S[row, S_LEFT]
    tokens = min(accepted + 1, left)
    # censored feedback: positions 1..min(A + 1, k) observed, 1..A accepted
    seen = min(accepted + 1, k)
    for i in range(seen):
        F[row, F_COLS + i] += 1.0
    for i in range(accepted):
        F[row, F_COLS + kmax + i] += 1.0
    t1 = t0 + round_ms
    left -= tokens
    rnd = S[row, S_ROUND]
    F[row, F_EP_TIME] += round_ms
    S[row, S_EP_TOKENS] += tokens
    S[row, S_ROUND] = rnd + 1
    F[row, F_T] = t1
    F[row, F_LAST_RTT] = rtt
    ewma_fast = F[row, F_EWMA_FAST]
    ewma_fast -= math.expm1(-round_ms / RTT_EWMA_FAST_MS) * (rtt - ewma_fast)
    F[row, F_EWMA_FAST] = ewma_fast
    ewma_slow = F[row, F_EWMA_SLOW]
    ewma_slow -= math.expm1(-round_ms / RTT_EWMA_SLOW_MS) * (rtt - ewma_slow)
    F[row, F_EWMA_SLOW] = ewma_slow
    request_done = left == 0
    episode_done = False
    if request_done:
        req = S[row, S_REQ] + 1
        S[row, S_REQ] = req
        episode_done = req >= I[I_REQUESTS]
        F[row, F_REQ_START] = t1
        if not episode_done:
            left = I[I_N_TOKENS]
    S[row, S_LEFT] = left
    S[row, S_DONE] = 1 if episode_done else 0
    csi, path, count, nxt = channel_state(P, I, key, t1, path, count, nxt, offset)
    S[row, S_CH_STATE] = path
    S[row, S_SWITCHES] = count
    F[row, F_NEXT_SWITCH] = nxt
    S[row, S_CSI] = csi
    begin_round(S, F, P, I, row)
    # the observation entries this round changed (refresh_row's expressions, so the same bits):
    # position 1, rtt, CSI, confidence, the estimates of the positions it observed, tokens left
    m = I[I_M]
    O[row, 0] = np.float32(1 / kmax)
    O[row, 1] = np.float32(rtt / 1000.0)
    if I[I_CSI_OBS]:
        for s in range(m):
            O[row, 2 + s] = np.float32(1.0) if s == csi else np.float32(0.0)
    if I[I_SIGNAL]:
        O[row, 2 + m] = np.float32(F[row, F_COLS + 2 * kmax])
    for i in range(seen):
        O[row, 3 + m + i] = np.float32((F[row, F_COLS + kmax + i] + 1.0) / (F[row, F_COLS + i] + 2.0))
    O[row, 3 + m + kmax] = np.float32(np.float64(left) / P[P_N_TOKENS])
    O[row, 4 + m + kmax] = np.float32(ewma_fast / 1000.0)
    O[row, 5 + m + kmax] = np.float32(ewma_slow / 1000.0)
    O[row, 6 + m + kmax + old_pos - 1] = np.float32(0.0)  # one-hot position: old -> 1
    O[row, 6 + m + kmax] = np.float32(1.0)
    return round_ms, rtt, t0, accepted, tokens, state, start_state, rnd, request_done, episode_done, ref


_NO_ROUND = (0.0, 0.0, 0.0, 0, 0, 0, 0, 0, False, False, 0.0)


@njit(**_INLINE)
def write_round(RI, RF, j, row, k, res):
    """Outputs of a finished round (the tuple of :func:`finish_round`) into RI[j], RF[j]."""
    round_ms, rtt, t0, accepted, tokens, state, start_state, rnd, request_done, episode_done, ref = res
    RI[j, R_ROW] = row
    RI[j, R_K] = k
    RI[j, R_ACCEPTED] = accepted
    RI[j, R_TOKENS] = tokens
    RI[j, R_STATE] = state
    RI[j, R_START_STATE] = start_state
    RI[j, R_ROUND] = rnd
    RI[j, R_REQ_DONE] = 1 if request_done else 0
    RI[j, R_EP_DONE] = 1 if episode_done else 0
    RF[j, R_ROUND_MS] = round_ms
    RF[j, R_RTT] = rtt
    RF[j, R_START_MS] = t0
    RF[j, R_REF] = ref


@njit(**_JIT)
def step_round(S, F, O, P, I, rows, ks, RI, RF):
    """Finish a round of draft length ks[j] in rows[j]; returns the number of rounds (-1: a k out of 1..K)."""
    kmax = I[I_K]
    for j in range(rows.shape[0]):
        if ks[j] < 1 or ks[j] > kmax:
            return -1
    for j in range(rows.shape[0]):
        write_round(RI, RF, j, rows[j], ks[j], finish_round(S, F, O, P, I, rows[j], ks[j]))
    return rows.shape[0]


@njit(**_INLINE)
def token_action(S, F, O, P, I, row, action):
    """Token-level action of one row: 1 stops and sends, anything else drafts another token
    (a forced stop at max_draft). Returns (step_ms, finished, forced, k, the round's outputs of
    :func:`finish_round` (zeros when drafting)); a round's steps add up to T(k)."""
    kmax = I[I_K]
    pos = S[row, S_POS]
    send = action == 1
    if not send and pos < kmax:
        pos += 1
        S[row, S_POS] = pos
        O[row, 0] = np.float32(pos / kmax)
        hot = 6 + I[I_M] + kmax  # one-hot position: pos - 1 -> pos
        O[row, hot + pos - 2] = np.float32(0.0)
        O[row, hot + pos - 1] = np.float32(1.0)
        if I[I_SIGNAL]:
            O[row, 2 + I[I_M]] = np.float32(F[row, F_COLS + 2 * kmax + pos - 1])
        return P[P_DRAFT], False, False, pos, _NO_ROUND
    res = finish_round(S, F, O, P, I, row, pos)
    return res[0] - (pos - 1) * P[P_DRAFT], True, not send, pos, res


@njit(**_JIT)
def step_token(S, F, O, P, I, rows, actions, RI, RF, step_ms, forced):
    """Token-level step of ``rows`` (see :func:`token_action`). Writes step_ms and forced per
    stepped row; returns the number of rounds finished (outputs in RI/RF rows 0..n-1, in row order)."""
    n = np.int64(0)
    for j in range(rows.shape[0]):
        row = rows[j]
        ms, fin, frc, k, res = token_action(S, F, O, P, I, row, actions[j])
        step_ms[j] = ms
        forced[j] = frc
        if fin:
            write_round(RI, RF, n, row, k, res)
            n += 1
    return n


@njit(**_JIT)
def actions_in_range(actions, n_actions):
    """True when every action is in 0..n_actions - 1."""
    for j in range(actions.shape[0]):
        if actions[j] < 0 or actions[j] >= n_actions:
            return False
    return True


@njit(**_INLINE)
def vector_row(S, F, O, P, I, row, active, action, token_level, R, steps, ints, floats, flags, masks):
    """One row of a vector-environment step: the action (unless the row is inactive: it was just
    reset by a NextStep autoreset), then every per-row output of the step.

    ``R`` = (credit mode, reference ms/token, time scale, max episode steps or 0, local reference);
    the reward is ``-step_ms / scale`` (latency) or ``(tokens * reference - step_ms) / scale`` (token
    credit), the reference being the round's local rate (the last entry of :func:`finish_round`'s
    outputs) when ``R[4]`` is set, else ``R[1]``.
    Outputs, column ``row`` of: ``ints`` (csi, tokens_left, round k, accepted, tokens, channel
    state at sending); ``floats`` (reward, time_ms, round_ms, rtt_ms); ``flags`` rows 0, 1, 2, 7
    (terminated, truncated, forced stop, finished a round; the caller fills the other rows, the
    info masks, with numpy: fewer output streams keep the loop fast); ``masks`` row: the
    token-level action mask. Rows without a round get zeros in the round entries.
    """
    fin = False
    forced = False
    k = 0
    res = _NO_ROUND
    if active:
        if token_level:
            step_ms, fin, forced, k, res = token_action(S, F, O, P, I, row, action)
        else:
            k = action + 1
            res = finish_round(S, F, O, P, I, row, k)
            step_ms = res[0]
            fin = True
        steps[row] += 1
        if R[0] != 0.0:
            ref = res[10] if R[4] != 0.0 else R[1]
            floats[0, row] = (res[4] * ref - step_ms) / R[2]  # res[4]: tokens (0 when drafting)
        else:
            floats[0, row] = -step_ms / R[2]
    else:
        floats[0, row] = 0.0
    ints[0, row] = S[row, S_CSI]
    ints[1, row] = S[row, S_LEFT]
    floats[1, row] = F[row, F_T]
    if fin:
        ints[2, row] = k
        ints[3, row] = res[3]
        ints[4, row] = res[4]
        ints[5, row] = res[5]
        floats[2, row] = res[0]
        floats[3, row] = res[1]
    else:
        for c in range(2, 6):
            ints[c, row] = 0
        floats[2, row] = 0.0
        floats[3, row] = 0.0
    flags[0, row] = S[row, S_DONE] != 0
    flags[1, row] = R[3] > 0.0 and steps[row] >= R[3]
    flags[2, row] = forced
    flags[7, row] = fin
    if token_level:
        masks[row, 0] = S[row, S_POS] < I[I_K]
        masks[row, 1] = True


@njit(**_JIT)
def vector_step(S, F, O, P, I, active, actions, token_level, R, steps, ints, floats, flags, masks):
    """Step every row of a vector environment (``active`` empty: all rows active); see
    :func:`vector_row`. ``flags[13]`` marks the rows that finished a round."""
    all_active = active.shape[0] == 0
    for row in range(S.shape[0]):
        vector_row(S, F, O, P, I, row, all_active or active[row], actions[row], token_level, R, steps,
                   ints, floats, flags, masks)


@njit(parallel=True, **_JIT)
def vector_step_parallel(S, F, O, P, I, active, actions, token_level, R, steps, ints, floats, flags, masks):
    """:func:`vector_step` with the rows split over numba's threads (rows are independent and
    every row writes only its own entries, so the results are the same bits; no reduction, which
    would need the runtime's allocator)."""
    all_active = active.shape[0] == 0
    for r in prange(S.shape[0]):
        row = np.int64(r)  # prange's index is unsigned: as int64, the row function is the one vector_step uses
        vector_row(S, F, O, P, I, row, all_active or active[row], actions[row], token_level, R, steps,
                   ints, floats, flags, masks)


@njit(**_JIT)
def refresh_rows(S, F, O, P, I, rows):
    for j in range(rows.shape[0]):
        refresh_row(S, F, O, P, I, rows[j])


@njit(**_JIT)
def action_masks(S, I, out):
    """Token-level valid actions [draft, stop] per row: draft is invalid at max_draft."""
    kmax = I[I_K]
    for row in range(S.shape[0]):
        out[row, 0] = S[row, S_POS] < kmax
        out[row, 1] = True


# ====================================================================== parameters
class ParamBuilder:
    """Builds the flat parameter arrays ``(P, I)`` of the kernels (see the module docstring)."""

    def __init__(self) -> None:
        self.ints = np.zeros(I_SIZE, np.int64)
        self.scalars = np.zeros(P_SIZE)
        self._p: list[np.ndarray] = []
        self._p_len = P_SIZE
        self._i: list[np.ndarray] = []
        self._i_len = I_SIZE

    def floats(self, slot: int, values) -> None:
        """Append a float array to P; ``I[slot]`` = its offset."""
        v = np.ascontiguousarray(values, dtype=np.float64).ravel()
        self.ints[slot] = self._p_len
        self._p.append(v)
        self._p_len += v.size

    def integers(self, slot: int, values) -> None:
        """Append an int array to I; ``I[slot]`` = its offset."""
        v = np.ascontiguousarray(values, dtype=np.int64).ravel()
        self.ints[slot] = self._i_len
        self._i.append(v)
        self._i_len += v.size

    def build(self) -> tuple[np.ndarray, np.ndarray]:
        P = np.concatenate([self.scalars] + self._p)
        I = np.concatenate([self.ints] + self._i)
        P.flags.writeable = False
        I.flags.writeable = False
        return P, I


def as_arg(a, dtype) -> np.ndarray:
    """``a`` as a writable, aligned, C-contiguous array of ``dtype``, copied only when it is not one:
    numba compiles one machine-code version of a kernel per combination of argument types, and a
    read-only or strided view (``np.broadcast_to``, a column) is another type; callers that pass
    their arrays through here share one compiled version (and one background compile on a fresh
    machine: :mod:`._coldstart`)."""
    a = np.asarray(a, dtype=dtype)
    f = a.flags
    return a if f.c_contiguous and f.writeable and f.aligned else np.array(a, dtype=dtype, order="C")


def read_only(params: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(P, I)`` made read-only again if they lost the flag (pickle drops it): the kernels then see
    the same array types whatever the arrays' history, and have one compiled signature."""
    for a in params:
        if a.flags.writeable:
            a.flags.writeable = False
    return params


def pack_model(config=None, acceptance=None, channel=None, max_draft: int | None = None,
               sigma: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(P, I)`` for a scenario (any part may be omitted: the kernels that need it are then not called).

    ``config`` gives the timing constants, K, the request structure and the signal;
    ``acceptance`` and ``channel`` add their parameters through their ``pack`` methods.
    """
    b = ParamBuilder()
    k = int(max_draft if max_draft is not None else (config.max_draft if config is not None else 1))
    b.ints[I_K] = k
    b.ints[I_M] = 1
    if config is not None:
        b.scalars[P_DRAFT] = config.draft_ms
        b.scalars[P_VERIFY_BASE] = config.verify_base_ms
        b.scalars[P_VERIFY_TOKEN] = config.verify_per_token_ms
        if config.bandwidth_kbps is not None and config.bytes_per_token != 0:
            b.scalars[P_TX] = config.bytes_per_token * 8.0 / config.bandwidth_kbps
        b.scalars[P_N_TOKENS] = float(config.n_tokens)
        b.ints[I_N_TOKENS] = config.n_tokens
        b.ints[I_REQUESTS] = config.requests_per_episode
        b.ints[I_CSI_OBS] = int(bool(config.csi_observable))
        if sigma is None:
            sigma = config.confidence_sigma
    if sigma is not None:
        b.ints[I_SIGNAL] = 1
        b.scalars[P_SIGMA] = sigma
    if acceptance is not None:
        acceptance.pack(b, k)
        if config is not None and config.local_reward_reference:
            b.ints[I_LOCAL_REF] = 1
            b.floats(I_O_EXP_TOKENS, 1.0 + np.cumsum(acceptance.survival(k)))
    if channel is not None:
        channel.pack(b, config)
    return b.build()


ENTRY_POINTS = ("draw_array", "gamma_quantile_array", "draw_rounds_array", "confidence_from_p_array",
                "channel_init_array", "channel_state_array", "channel_rtt_array", "channel_mean_array",
                "reset_rows", "step_round", "step_token", "actions_in_range", "vector_step",
                "vector_step_parallel", "refresh_rows", "action_masks")
"""The kernels called from Python (no kernel calls them). Until numba has compiled one of them on
this machine, its first calls run its source as Python while a background process compiles it
(:mod:`._coldstart`, docs/vector.md "First run")."""

from . import _coldstart  # after the kernels it stands in for

_coldstart.install(sys.modules[__name__])
