"""Counter-based random numbers: the randomness of a simulated episode as a pure function.

Every random quantity of an episode is ``f(episode_key, stream, index, slot)``: a
SplitMix64 hash of a 64-bit episode key (drawn from the environment's own
``np_random``, hence from the user's seed), a named stream, an index (the round
number for acceptance draws, the wall-clock millisecond for channel jitter, the
switch number for Markov paths) and a slot within that index (e.g. the draft
position). Consequences the project relies on:

* **Common random numbers** (SPEC 5): two policies that run on the same episode
  key see the same acceptance draws for round ``r`` and the same channel at
  wall-clock time ``t``, whatever they did before.
* **Vector == single**: a batch row and a single environment with the same key
  produce identical draws; nothing depends on how many rows are stepped together.
* No global generator is ever touched.

All functions are vectorised over numpy arrays (batch axis first) and use
wrap-around ``uint64`` arithmetic. Batches of at most ``_SMALL`` draws (a single
environment is a batch of one) compute the same integer arithmetic with Python
integers, which is several times cheaper than numpy's per-call overhead; the
transcendental functions (``log``, ``cos``) always run in numpy and every other
floating-point step is a correctly rounded IEEE operation, so the bits do not depend
on the batch size (tests/test_core.py holds both paths equal).
"""

from __future__ import annotations

import math

import numpy as np

_GOLDEN_INT = 0x9E3779B97F4A7C15
_M1_INT = 0xBF58476D1CE4E5B9
_M2_INT = 0x94D049BB133111EB
_MASK = 0xFFFFFFFFFFFFFFFF
_LOW32_INT = 0xFFFFFFFF
# Constants as 0-d arrays: numpy applies a ufunc to an array and a 0-d array much faster
# than to an array and a numpy/Python scalar, and 0-d operands never take numpy's scalar
# path (which warns on the intended uint64 wrap-around).
_GOLDEN = np.array(_GOLDEN_INT, np.uint64)
_M1 = np.array(_M1_INT, np.uint64)
_M2 = np.array(_M2_INT, np.uint64)
_S30 = np.array(30, np.uint64)
_S27 = np.array(27, np.uint64)
_S31 = np.array(31, np.uint64)
_S11 = np.array(11, np.uint64)
_S32 = np.array(32, np.uint64)
_LOW32 = np.array(_LOW32_INT, np.uint64)
_HALF = np.array(0.5)
_TWO_M53 = 1.0 / 9007199254740992.0  # 2**-53
_TWO_M32 = 1.0 / 4294967296.0  # 2**-32
_TWO_M53_A = np.array(_TWO_M53)
_TWO_M32_A = np.array(_TWO_M32)
_TWO_PI = 2.0 * np.pi
_TWO_PI_A = np.array(_TWO_PI)
_MINUS_TWO = np.array(-2.0)
_SMALL = 8
"""Batches of at most this many draws hash with Python integers (exactly the same
arithmetic modulo 2**64, hence the same bits; see :func:`hash64`)."""

# Named streams: distinct constants so that draws never collide.
STREAM_ACCEPT_U = 1  # acceptance uniforms, index = round, slot = position
STREAM_LATENT_Z = 2  # per-round difficulty, index = round
STREAM_LATENT_EPS = 3  # per-token difficulty noise, index = round, slot = position
STREAM_CONFIDENCE = 4  # confidence-signal noise, index = round, slot = position
STREAM_TRACE_PICK = 5  # which recorded round a replayed round copies, index = round
STREAM_RTT = 6  # rtt jitter, index = wall-clock millisecond of sending
STREAM_MARKOV = 7  # Markov path: index = switch number, slot 0 = holding time, 1 = next state
STREAM_OFFSET = 8  # episode start offsets (trace replay), index = 0
STREAM_INIT = 9  # initial channel state, index = 0


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (bijective on uint64), in place on a freshly allocated array ``z``."""
    z ^= z >> _S30
    z *= _M1
    z ^= z >> _S27
    z *= _M2
    z ^= z >> _S31
    return z


def _mix_int(z: int) -> int:
    """:func:`_mix` on one Python integer in ``[0, 2**64)``."""
    z = ((z ^ (z >> 30)) * _M1_INT) & _MASK
    z = ((z ^ (z >> 27)) * _M2_INT) & _MASK
    return z ^ (z >> 31)


_KEY_MIX: dict[tuple[int, int], int] = {}
"""Memo of the first mix, ``mix(key ^ salt)``: a function of the episode key and the stream only."""
_KEY_MIX_MAX = 4096
_U64 = np.dtype(np.uint64)
_I64 = np.dtype(np.int64)


def _hash_int(k: int, salt: int, counter: int) -> int:
    """``mix(mix(k ^ salt) ^ counter)`` on Python integers; the first mix (a function of the
    episode key and the stream only) is memoised."""
    h = _KEY_MIX.get((k, salt))
    if h is None:
        if len(_KEY_MIX) >= _KEY_MIX_MAX:
            _KEY_MIX.clear()
        h = _KEY_MIX[(k, salt)] = _mix_int(k ^ salt)
    z = h ^ counter
    z = ((z ^ (z >> 30)) * _M1_INT) & _MASK
    z = ((z ^ (z >> 27)) * _M2_INT) & _MASK
    return z ^ (z >> 31)


def _salt_int(stream: int) -> int:
    """``stream * GOLDEN`` modulo 2**64."""
    return (int(stream) * _GOLDEN_INT) & _MASK


_SALT_INT = {stream: _salt_int(stream) for stream in range(16)}
_SLOT_INT = {slot: (slot * _M2_INT + _GOLDEN_INT) & _MASK for slot in range(4)}
_SALTS: dict[int, np.ndarray] = {}


def _salt(stream: int) -> np.ndarray:
    """``stream * GOLDEN`` modulo 2**64 as a 0-d uint64 array (cached per stream)."""
    s = _SALTS.get(stream)
    if s is None:
        s = _SALTS[stream] = np.array(_salt_int(stream), np.uint64)
    return s


def _small_hashes(key, stream: int, index, slot) -> tuple[list[int], tuple[int, ...]] | None:
    """The hashes as Python ints (flattened, C order) and their shape, for at most ``_SMALL``
    keys with index (and slot) of the key's shape or scalar; None when numpy must be used."""
    salt = _SALT_INT.get(stream)
    if salt is None:
        salt = _salt_int(stream)
    if type(key) is np.ndarray and key.dtype is _U64 and key.ndim == 1 and type(slot) is int:
        # the common case (one key per row, one index per row, a fixed slot), checked cheaply
        if key.size > _SMALL or type(index) is not np.ndarray or index.shape != key.shape:
            return None
        c = _SLOT_INT.get(slot)
        if c is None:
            c = ((slot & _MASK) * _M2_INT + _GOLDEN_INT) & _MASK
        if index.dtype is not _I64:
            index = index.astype(np.int64)
        if key.size == 1:
            return [_hash_int(key.item(0), salt, (index.item(0) * _M1_INT + c) & _MASK)], key.shape
        return [_hash_int(kv, salt, (iv * _M1_INT + c) & _MASK)
                for kv, iv in zip(key.tolist(), index.tolist())], key.shape
    k = np.asarray(key, dtype=np.uint64)
    if k.size > _SMALL:
        return None
    shape = k.shape
    if np.ndim(index):
        i = np.asarray(index)
        if i.shape != shape:
            return None
        idx = i.astype(np.int64, copy=False).ravel().tolist()
    else:
        idx = [int(index)] * k.size
    if np.ndim(slot):
        s = np.asarray(slot)
        if s.shape != shape:
            return None
        slots = s.astype(np.int64, copy=False).ravel().tolist()
    else:
        slots = [int(slot)] * k.size
    return [_hash_int(kv, salt, ((iv & _MASK) * _M1_INT + (sv & _MASK) * _M2_INT + _GOLDEN_INT) & _MASK)
            for kv, iv, sv in zip(k.ravel().tolist(), idx, slots)], shape


def hash64(key: np.ndarray, stream: int, index: np.ndarray, slot: np.ndarray | int = 0) -> np.ndarray:
    """64-bit hash of (key, stream, index, slot): two SplitMix64 rounds; broadcasts like numpy.

    ``h = mix(mix(key ^ stream*GOLDEN) ^ (index*M1 + slot*M2 + GOLDEN))`` modulo 2**64.
    Small batches (at most ``_SMALL`` keys, shapes matching) use Python integers, large
    ones numpy ``uint64``: the same arithmetic, so the same bits whatever the batch size
    (tests/test_core.py holds the two paths equal).
    """
    small = _small_hashes(key, stream, index, slot)
    if small is not None:
        values, shape = small
        return np.array(values, dtype=np.uint64).reshape(shape) if shape else np.uint64(values[0])
    k = np.asarray(key, dtype=np.uint64)
    i = np.asarray(index, dtype=np.int64).view(np.uint64) if np.ndim(index) else np.array(int(index) & _MASK, np.uint64)
    if np.ndim(slot):
        c = np.asarray(slot, dtype=np.int64).view(np.uint64) * _M2
        c += _GOLDEN
    else:
        c = np.array(((int(slot) & _MASK) * _M2_INT + _GOLDEN_INT) & _MASK, np.uint64)
    h = _mix(k ^ _salt(stream))
    t = i * _M1
    t = t + c  # may broadcast
    return _mix(np.bitwise_xor(h, t))


def uniform(key: np.ndarray, stream: int, index: np.ndarray, slot: np.ndarray | int = 0) -> np.ndarray:
    """Uniform draws in the open interval (0, 1) (53 random bits): ``((h >> 11) + 0.5) * 2**-53``."""
    small = _small_hashes(key, stream, index, slot)
    if small is not None:
        # int -> float is exact below 2**53 and + 0.5, * 2**-53 are IEEE operations: same bits as numpy
        values, shape = small
        out = [((h >> 11) + 0.5) * _TWO_M53 for h in values]
        return np.array(out).reshape(shape) if shape else np.float64(out[0])
    u = (hash64(key, stream, index, slot) >> _S11).astype(np.float64)
    u += _HALF
    u *= _TWO_M53_A
    return u


def normal(key: np.ndarray, stream: int, index: np.ndarray, slot: np.ndarray | int = 0) -> np.ndarray:
    """Standard normal draws: Box-Muller on the two 32-bit halves of one hash.

    ``u1 = ((h >> 32) + 0.5) * 2**-32``, ``u2 = ((h & (2**32 - 1)) + 0.5) * 2**-32``,
    ``z = sqrt(-2 ln u1) * cos(2 pi u2)`` (the transcendental functions always run in numpy).
    """
    small = _small_hashes(key, stream, index, slot)
    if small is not None:
        # log and cos run in numpy, as on the large path; the other operations (*, sqrt) are
        # correctly rounded IEEE operations, so Python floats give the same bits
        values, shape = small
        if len(values) == 1:  # one draw: numpy scalars, no lists
            h = values[0]
            lg = float(np.log(((h >> 32) + 0.5) * _TWO_M32))
            cs = float(np.cos(_TWO_PI * (((h & _LOW32_INT) + 0.5) * _TWO_M32)))
            z1 = math.sqrt(-2.0 * lg) * cs
            return np.array([z1]).reshape(shape) if shape else np.float64(z1)
        log_u1 = np.log(np.array([((h >> 32) + 0.5) * _TWO_M32 for h in values])).tolist()
        cos_u2 = np.cos(np.array([_TWO_PI * (((h & _LOW32_INT) + 0.5) * _TWO_M32) for h in values])).tolist()
        return np.array([math.sqrt(-2.0 * lg) * cs for lg, cs in zip(log_u1, cos_u2)]).reshape(shape)
    h = hash64(key, stream, index, slot)
    u1 = (h >> _S32).astype(np.float64)
    u1 += _HALF
    u1 *= _TWO_M32_A
    u2 = (h & _LOW32).astype(np.float64)
    u2 += _HALF
    u2 *= _TWO_M32_A
    return np.sqrt(_MINUS_TWO * np.log(u1)) * np.cos(_TWO_PI_A * u2)


def episode_keys(rng: np.random.Generator, n: int = 1) -> np.ndarray:
    """Draw ``n`` fresh 64-bit episode keys from an explicit generator."""
    return rng.integers(0, np.iinfo(np.int64).max, size=n, dtype=np.int64).astype(np.uint64)
