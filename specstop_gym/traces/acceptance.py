"""Acceptance traces: recorded speculative-decoding rounds (SPEC sections 2 and 8).

A round drafted ``draft_length`` tokens; the target accepted the first
``run_length`` of them. ``G`` (SPEC 2) is the accept run length with an
unbounded draft, so a round tells ``G = run_length`` exactly when
``run_length < draft_length`` and only ``G >= run_length`` when the whole draft
was accepted: such a round is **censored** (``censored`` is true exactly when
``run_length == draft_length``).

File format: JSON Lines (UTF-8), one JSON object per line::

    {"format": "specstop-acceptance-v1", "metadata": {"model_pair": "...", "hardware": "...", "source": "...", "synthetic": "yes"}}
    {"run_length": 2, "censored": false, "draft_length": 5, "confidences": [0.81, 0.62, 0.40, 0.55, 0.31], "draft_ms": 101.5, "verify_ms": 16.4}
    {"run_length": 3, "censored": true, "draft_length": 3}

* Line 1 is the header: ``format`` must be ``"specstop-acceptance-v1"``,
  ``metadata`` an object (free JSON values; by convention ``model_pair``,
  ``hardware``, ``source``, ``licence``, ``synthetic``).
* Every further non-blank line is one round with the required fields
  ``run_length`` (int >= 0), ``censored`` (bool) and ``draft_length``
  (int >= 1, ``run_length <= draft_length``), and the optional fields
  ``confidences`` (``draft_length`` numbers in [0, 1]: the draft model's
  estimate ``q_i`` after drafting position ``i``), ``draft_ms`` and
  ``verify_ms`` (measured times of the round, ms, finite, >= 0). An optional
  field is present in every round or in none. No other field is allowed.
* At least one round.
* Bounds (:mod:`specstop_gym.traces.bounds`): ``draft_length <= 1024``, ``draft_ms`` and
  ``verify_ms <= 3600000`` (an hour), at most 2,000,000 rounds, and with confidences at most
  16,777,216 cells ``rounds x max(draft_length)``; the file at most 64 MiB.

The reader uses ``json.loads`` only (no pickle, no eval), rejects ``NaN`` /
``Infinity`` literals and duplicate keys, and raises :class:`TraceFormatError`
naming the file, the line and the field. It fills arrays as it reads (no list
of per-round objects), so its memory is a small multiple of the file's size.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.acceptance import kaplan_meier_hazards
from ._io import PathLike, atomic_write_text, read_text_lines, readonly_copy
from .bounds import MAX_CONFIDENCE_CELLS, MAX_DRAFT_LENGTH, MAX_ROUNDS
from .errors import TraceFormatError

MAX_ROUND_MS = 3_600_000.0
"""Largest measured draft_ms / verify_ms of a round (an hour)."""

FORMAT_ID = "specstop-acceptance-v1"
REQUIRED_FIELDS = ("run_length", "censored", "draft_length")
OPTIONAL_FIELDS = ("confidences", "draft_ms", "verify_ms")


@dataclass(frozen=True, eq=False)
class AcceptanceTrace:
    """Recorded rounds of speculative decoding.

    Attributes:
        run_length: accepted prefix length per round (int64 >= 0, shape (n,)).
        censored: True where the whole draft was accepted, so the true run
            ``G >= run_length`` (bool, shape (n,)); equals ``run_length == draft_length``.
        draft_length: tokens drafted per round (int64 >= 1, shape (n,)),
            ``run_length <= draft_length``.
        confidences: optional per-position draft confidences ``q_i`` (float64,
            shape (n, K) with ``K >= max(draft_length)``), in [0, 1] for the
            drafted positions ``i <= draft_length`` of each round and NaN beyond.
        draft_ms: optional measured drafting time per round, ms (float64 >= 0, shape (n,)).
        verify_ms: optional measured verification time per round, ms (float64 >= 0, shape (n,)).
        metadata: JSON-serialisable mapping (model_pair, hardware, source, licence, synthetic, ...).
        path: the file the trace was read from, if any.

    Arrays are copied and made read-only; invalid contents raise ``ValueError``.
    """

    run_length: np.ndarray
    censored: np.ndarray
    draft_length: np.ndarray
    confidences: np.ndarray | None = None
    draft_ms: np.ndarray | None = None
    verify_ms: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        g = _as_int_array(self.run_length, "run_length")
        k = _as_int_array(self.draft_length, "draft_length")
        c = np.asarray(self.censored)
        if c.dtype != np.bool_:
            raise ValueError(f"censored must be a bool array, got dtype {c.dtype}")
        n = g.shape[0]
        if n < 1:
            raise ValueError("an acceptance trace needs at least one round")
        if k.shape != (n,) or c.shape != (n,):
            raise ValueError(
                f"run_length, censored and draft_length must have one length, got "
                f"{g.shape}, {c.shape}, {k.shape}"
            )
        if np.any(g < 0):
            raise ValueError("run_length must be >= 0")
        if np.any(k < 1):
            raise ValueError("draft_length must be >= 1")
        if np.any(k > MAX_DRAFT_LENGTH):
            raise ValueError(f"draft_length must be <= {MAX_DRAFT_LENGTH}, got {int(k.max())}")
        if n > MAX_ROUNDS:
            raise ValueError(f"an acceptance trace holds at most {MAX_ROUNDS} rounds, got {n}")
        if np.any(g > k):
            raise ValueError(f"run_length exceeds draft_length in round {int(np.argmax(g > k))}")
        if np.any(c != (g == k)):
            raise ValueError(
                f"censored must equal (run_length == draft_length); round {int(np.argmax(c != (g == k)))} differs"
            )
        set_(self, "run_length", readonly_copy(g))
        set_(self, "draft_length", readonly_copy(k))
        set_(self, "censored", readonly_copy(c))
        if self.confidences is not None:
            q = np.asarray(self.confidences, dtype=np.float64)
            if q.ndim != 2 or q.shape[0] != n or q.shape[1] < int(k.max()):
                raise ValueError(
                    f"confidences must have shape ({n}, K >= {int(k.max())}), got {q.shape}"
                )
            drafted = np.arange(q.shape[1])[None, :] < k[:, None]
            inside = q[drafted]
            if not np.all(np.isfinite(inside)) or np.any(inside < 0) or np.any(inside > 1):
                raise ValueError("confidences of drafted positions must be finite and in [0, 1]")
            if not np.all(np.isnan(q[~drafted])):
                raise ValueError("confidences beyond a round's draft_length must be NaN")
            set_(self, "confidences", readonly_copy(q))
        for name in ("draft_ms", "verify_ms"):
            v = getattr(self, name)
            if v is None:
                continue
            a = np.asarray(v, dtype=np.float64)
            if a.shape != (n,) or not np.all(np.isfinite(a)) or np.any(a < 0) or np.any(a > MAX_ROUND_MS):
                raise ValueError(f"{name} must be {n} finite values in [0, {MAX_ROUND_MS:g}] (ms)")
            set_(self, name, readonly_copy(a))
        meta = dict(self.metadata)
        try:
            json.dumps(meta, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"metadata must be JSON-serialisable with finite numbers: {exc}"
            ) from None
        if not all(isinstance(key, str) for key in meta):
            raise ValueError("metadata keys must be strings")
        set_(self, "metadata", meta)

    @classmethod
    def from_rounds(
        cls,
        rounds: Iterable[Mapping[str, Any]],
        metadata: Mapping[str, Any] | None = None,
        path: str | None = None,
    ) -> AcceptanceTrace:
        """Build a trace from per-round mappings shaped like the file's round records.

        Each mapping has ``run_length``, ``draft_length``, optionally ``censored``
        (derived from ``run_length == draft_length`` when absent), and optionally
        ``confidences`` (a sequence of ``draft_length`` numbers), ``draft_ms``,
        ``verify_ms``. Optional fields must be present in all rounds or none.
        """
        rounds = list(rounds)
        if not rounds:
            raise ValueError("an acceptance trace needs at least one round")
        g = np.array([int(r["run_length"]) for r in rounds], dtype=np.int64)
        k = np.array([int(r["draft_length"]) for r in rounds], dtype=np.int64)
        c = np.array(
            [
                bool(r.get("censored", int(r["run_length"]) == int(r["draft_length"])))
                for r in rounds
            ]
        )
        opt: dict[str, Any] = {}
        for name in OPTIONAL_FIELDS:
            present = [name in r for r in rounds]
            if any(present) and not all(present):
                raise ValueError(f"{name} is present in some rounds but not in all")
            if not all(present):
                opt[name] = None
            elif name == "confidences":
                if len(rounds) * int(k.max()) > MAX_CONFIDENCE_CELLS:
                    raise ValueError(f"confidences of {len(rounds)} rounds x {int(k.max())} positions exceed "
                                     f"{MAX_CONFIDENCE_CELLS} cells")
                q = np.full((len(rounds), int(k.max())), np.nan)
                for i, r in enumerate(rounds):
                    vals = np.asarray(r[name], dtype=np.float64)
                    if vals.shape != (k[i],):
                        raise ValueError(
                            f"round {i}: confidences must have draft_length = {k[i]} values"
                        )
                    q[i, : k[i]] = vals
                opt[name] = q
            else:
                opt[name] = np.array([float(r[name]) for r in rounds])
        return cls(
            run_length=g,
            censored=c,
            draft_length=k,
            metadata=dict(metadata or {}),
            path=path,
            **opt,
        )

    def __len__(self) -> int:
        return int(self.run_length.shape[0])

    @property
    def n_rounds(self) -> int:
        """Number of recorded rounds."""
        return int(self.run_length.shape[0])

    @property
    def max_draft_length(self) -> int:
        """Largest recorded draft length (tokens)."""
        return int(self.draft_length.max())

    def conditional_acceptance(self, max_draft: int) -> np.ndarray:
        """Kaplan-Meier conditional acceptance rates ``a_1..a_K`` (``K = max_draft``).

        Position ``i`` is at risk in a round if the round observed it
        (``draft_length >= i`` and ``run_length >= i - 1``) and accepted there if
        ``run_length >= i``; ``a_i = accepted_i / at_risk_i``. A position at
        which no round was at risk (beyond every recorded draft, or after a
        position nobody passed) reuses the last defined rate. Position 1 is
        always defined, since every round drafts at least one token.
        """
        if int(max_draft) < 1:
            raise ValueError(f"max_draft must be >= 1, got {max_draft}")
        return kaplan_meier_hazards(
            self.run_length, self.censored, self.draft_length, int(max_draft)
        )

    def empirical_survival(self, max_draft: int) -> np.ndarray:
        """Survival ``S_i = P(G >= i)``, ``i = 1..max_draft``, by the Kaplan-Meier product-limit estimator.

        ``S_i = prod_{j <= i} a_j`` with the censoring-aware rates of
        :meth:`conditional_acceptance` (see there for positions with nobody at
        risk). With no censored round this is exactly the empirical fraction
        ``#{rounds with run_length >= i} / n_rounds``.
        """
        return np.cumprod(self.conditional_acceptance(max_draft))


def _as_int_array(values: Any, name: str) -> np.ndarray:
    a = np.asarray(values)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if a.dtype == np.bool_ or not np.all(np.isfinite(a)) or not np.all(np.mod(a, 1) == 0):
            raise ValueError(f"{name} must hold integers")
    return a.astype(np.int64)


# ---------------------------------------------------------------------------- reading


def _json_line(text: str, path: PathLike, line: int) -> Any:
    def reject_constant(name: str) -> Any:
        raise ValueError(f"{name} is not allowed (numbers must be finite)")

    def finite_float(s: str) -> float:
        v = float(s)
        if not math.isfinite(v):
            raise ValueError(f"{s} overflows to infinity")
        return v

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise ValueError(f"key {key!r} appears twice")
            out[key] = value
        return out

    try:
        return json.loads(
            text,
            parse_constant=reject_constant,
            parse_float=finite_float,
            object_pairs_hook=no_duplicates,
        )
    except json.JSONDecodeError as exc:
        raise TraceFormatError(
            path, line, f"invalid JSON: {exc.msg} (column {exc.colno})"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise TraceFormatError(path, line, f"invalid JSON: {exc}") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _parse_header(obj: Any, path: PathLike, line: int) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise TraceFormatError(
            path,
            line,
            "the first line must be the header object "
            f'{{"format": "{FORMAT_ID}", "metadata": {{...}}}}',
        )
    if "format" not in obj:
        if "run_length" in obj:
            raise TraceFormatError(
                path,
                line,
                f'missing header line {{"format": "{FORMAT_ID}", ...}} before the first round',
                "format",
            )
        raise TraceFormatError(path, line, "header lacks 'format'", "format")
    if obj["format"] != FORMAT_ID:
        raise TraceFormatError(
            path, line, f"unsupported format {obj['format']!r} (expected {FORMAT_ID!r})", "format"
        )
    for key in obj:
        if key not in ("format", "metadata"):
            raise TraceFormatError(path, line, f"unknown header field {key!r}", key)
    meta = obj.get("metadata", {})
    if not isinstance(meta, dict):
        raise TraceFormatError(path, line, "metadata must be a JSON object", "metadata")
    return meta


def _parse_round(obj: Any, path: PathLike, line: int) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise TraceFormatError(
            path, line, f"a round must be a JSON object, got {type(obj).__name__}"
        )
    for key in obj:
        if key not in REQUIRED_FIELDS + OPTIONAL_FIELDS:
            raise TraceFormatError(path, line, f"unknown field {key!r}", key)
    for key in REQUIRED_FIELDS:
        if key not in obj:
            raise TraceFormatError(path, line, "missing required field", key)
    g, c, k = obj["run_length"], obj["censored"], obj["draft_length"]
    if not _is_int(g) or g < 0:
        raise TraceFormatError(path, line, f"must be an integer >= 0, got {_short(g)}", "run_length")
    if not isinstance(c, bool):
        raise TraceFormatError(path, line, f"must be true or false, got {_short(c)}", "censored")
    if not _is_int(k) or not 1 <= k <= MAX_DRAFT_LENGTH:
        raise TraceFormatError(path, line, f"must be an integer in 1..{MAX_DRAFT_LENGTH}, got {_short(k)}",
                               "draft_length")
    if g > k:
        raise TraceFormatError(path, line, f"run_length {g} exceeds draft_length {k}", "run_length")
    if c != (g == k):
        want = "true" if g == k else "false"
        raise TraceFormatError(
            path,
            line,
            f"must be {want} when run_length = {g} and draft_length = {k} "
            "(censored means the whole draft was accepted)",
            "censored",
        )
    if "confidences" in obj:
        q = obj["confidences"]
        if not isinstance(q, list) or len(q) != k:
            raise TraceFormatError(
                path, line, f"must be a list of draft_length = {k} numbers", "confidences"
            )
        for i, v in enumerate(q):
            if not _is_number(v) or not 0.0 <= v <= 1.0:
                raise TraceFormatError(
                    path, line, f"position {i + 1}: {_short(v)} is not a number in [0, 1]", "confidences"
                )
    for name in ("draft_ms", "verify_ms"):
        if name in obj and (not _is_number(obj[name]) or not 0 <= obj[name] <= MAX_ROUND_MS):
            raise TraceFormatError(
                path, line, f"must be a number of ms in [0, {MAX_ROUND_MS:g}], got {_short(obj[name])}", name
            )
    return obj


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:60] + "...(cut)"


def load_acceptance_trace(path: PathLike) -> AcceptanceTrace:
    """Read an acceptance trace (``.jsonl``, format in the module docstring).

    Raises:
        TraceFormatError: empty, binary or too large file, invalid JSON on a line, a missing
            or wrong header, a missing/unknown/ill-typed field, a value out of bounds,
            ``run_length > draft_length``, ``censored`` inconsistent with the lengths,
            confidences outside [0, 1] or of the wrong length, an optional field
            present in some rounds only, too many rounds, or no round at all.
        OSError: the file cannot be read.
    """
    lines = read_text_lines(path)
    meta: dict[str, Any] | None = None
    g_list: list[int] = []
    c_list: list[bool] = []
    k_list: list[int] = []
    conf: list[np.ndarray] = []
    times: dict[str, list[float]] = {"draft_ms": [], "verify_ms": []}
    present: dict[str, bool] = {}
    first_line = 1
    k_max = 0
    for j, text in enumerate(lines):
        if not text.strip():
            continue
        line = j + 1
        obj = _json_line(text, path, line)
        if meta is None:
            meta = _parse_header(obj, path, line)
            first_line = line
            continue
        rec = _parse_round(obj, path, line)
        if not g_list:
            present = {name: name in rec for name in OPTIONAL_FIELDS}
        else:
            for name, was in present.items():
                if (name in rec) != was:
                    state = "missing here but present" if was else "present here but missing"
                    raise TraceFormatError(
                        path,
                        line,
                        f"optional field {state} in the first round "
                        "(it must be in every round or in none)",
                        name,
                    )
        if len(g_list) >= MAX_ROUNDS:
            raise TraceFormatError(path, line, f"more than {MAX_ROUNDS} rounds")
        k_max = max(k_max, rec["draft_length"])
        if present["confidences"] and (len(g_list) + 1) * k_max > MAX_CONFIDENCE_CELLS:
            raise TraceFormatError(path, line, f"confidences of {len(g_list) + 1} rounds x {k_max} positions "
                                   f"exceed {MAX_CONFIDENCE_CELLS} cells", "confidences")
        g_list.append(rec["run_length"])
        c_list.append(rec["censored"])
        k_list.append(rec["draft_length"])
        if present["confidences"]:
            conf.append(np.asarray(rec["confidences"], dtype=np.float64))
        for name in times:
            if present[name]:
                times[name].append(float(rec[name]))
    n_lines = len(lines)
    del lines
    if meta is None:
        raise TraceFormatError(
            path, max(1, n_lines), "no header line (file holds only blank lines)"
        )
    if not g_list:
        raise TraceFormatError(path, first_line, "no rounds after the header")
    q = None
    if present["confidences"]:
        q = np.full((len(conf), k_max), np.nan)
        for i, row in enumerate(conf):
            q[i, : len(row)] = row
    return AcceptanceTrace(
        run_length=np.asarray(g_list, dtype=np.int64),
        censored=np.asarray(c_list, dtype=bool),
        draft_length=np.asarray(k_list, dtype=np.int64),
        confidences=q,
        draft_ms=np.asarray(times["draft_ms"]) if present["draft_ms"] else None,
        verify_ms=np.asarray(times["verify_ms"]) if present["verify_ms"] else None,
        metadata=meta,
        path=str(path),
    )


# ---------------------------------------------------------------------------- writing


def write_acceptance_trace(path: PathLike, trace: AcceptanceTrace) -> None:
    """Write ``trace`` as JSON Lines (format in the module docstring), atomically.

    Floats are written with Python's shortest round-trip representation, so a
    written trace reads back equal.
    """
    header = {"format": FORMAT_ID, "metadata": trace.metadata}
    out = [json.dumps(header, ensure_ascii=False, allow_nan=False)]
    for i in range(trace.n_rounds):
        k = int(trace.draft_length[i])
        rec: dict[str, Any] = {
            "run_length": int(trace.run_length[i]),
            "censored": bool(trace.censored[i]),
            "draft_length": k,
        }
        if trace.confidences is not None:
            rec["confidences"] = [float(x) for x in trace.confidences[i, :k]]
        if trace.draft_ms is not None:
            rec["draft_ms"] = float(trace.draft_ms[i])
        if trace.verify_ms is not None:
            rec["verify_ms"] = float(trace.verify_ms[i])
        out.append(json.dumps(rec, allow_nan=False))
    atomic_write_text(path, "\n".join(out) + "\n")
