"""The manifest of the shipped data files (``traces/MANIFEST.json``) and where to find them.

``MANIFEST.json`` lists every shipped data file with its ``path`` (relative to
the data folder), ``kind`` (``delay``, ``acceptance`` or ``channel``),
``source``, ``licence``, ``units``, ``synthetic``, ``rows`` (samples, rounds or
channel states) and ``sha256``. :func:`verify_manifest` recomputes the
checksums; :func:`build_manifest` regenerates the list from the files' own
headers (the generator scripts call it).

Data location (:func:`data_root`): the repository's ``traces/`` folder next to
the package (source checkout or editable install) if it holds a manifest, else
the installed package data ``specstop_gym_traces``.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

from ._io import atomic_write_text
from .errors import ManifestError

MANIFEST_NAME = "MANIFEST.json"
MANIFEST_FORMAT = "specstop-manifest-v1"
PACKAGE_DATA = "specstop_gym_traces"
_KINDS = {
    "delay": ("delay", "*.csv"),
    "acceptance": ("acceptance", "*.jsonl"),
    "channel": ("channels", "*.json"),
}


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2] / "traces"


def data_root() -> Path:
    """The folder holding the shipped data files and ``MANIFEST.json``.

    Raises:
        FileNotFoundError: neither the repository folder nor the installed package data exists.
    """
    repo = _repo_root()
    if (repo / MANIFEST_NAME).is_file():
        return repo
    try:
        res = importlib.resources.files(PACKAGE_DATA)
    except (ModuleNotFoundError, TypeError):
        res = None
    if res is not None and res.joinpath(MANIFEST_NAME).is_file():
        return Path(str(res))
    raise FileNotFoundError(
        f"no shipped trace data: neither {repo / MANIFEST_NAME} nor the installed "
        f"package data {PACKAGE_DATA!r} exists"
    )


def data_path(relative: str | os.PathLike[str]) -> Path:
    """Path of a shipped data file, e.g. ``data_path("delay/synthetic_wifi_jitter.csv")``.

    ``relative`` uses ``/`` separators, relative to the data folder
    (:func:`data_root`); absolute paths and ``..`` are refused.

    Raises:
        ValueError: ``relative`` is absolute or leaves the data folder.
        FileNotFoundError: no such shipped file.
    """
    rel = PurePosixPath(os.fspath(relative).replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ValueError(
            f"data_path takes a path inside the data folder, got {os.fspath(relative)!r}"
        )
    path = data_root().joinpath(*rel.parts)
    if not path.is_file():
        raise FileNotFoundError(f"no shipped data file {rel} (looked in {data_root()})")
    return path


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_manifest(root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Read ``MANIFEST.json`` from ``root`` (default :func:`data_root`).

    Raises:
        ManifestError: the manifest is missing or malformed.
    """
    base = Path(root) if root is not None else data_root()
    path = base / MANIFEST_NAME
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: not a valid JSON manifest ({exc})") from None
    if (
        not isinstance(doc, dict)
        or doc.get("format") != MANIFEST_FORMAT
        or not isinstance(doc.get("files"), list)
    ):
        raise ManifestError(f'{path}: expected {{"format": "{MANIFEST_FORMAT}", "files": [...]}}')
    for i, entry in enumerate(doc["files"]):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("path"), str)
            or not isinstance(entry.get("sha256"), str)
        ):
            raise ManifestError(f"{path}: entry {i} lacks a path or sha256")
    return doc


def verify_manifest(root: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Check every listed file exists and has the listed SHA-256.

    Args:
        root: data folder to check (default :func:`data_root`), e.g. a copy.

    Returns:
        The manifest entries, all verified.

    Raises:
        ManifestError: listing every missing file and every checksum mismatch.
    """
    base = Path(root) if root is not None else data_root()
    doc = load_manifest(base)
    problems: list[str] = []
    for entry in doc["files"]:
        rel = PurePosixPath(entry["path"])
        if rel.is_absolute() or ".." in rel.parts:
            problems.append(f"{entry['path']}: path leaves the data folder")
            continue
        path = base.joinpath(*rel.parts)
        if not path.is_file():
            problems.append(f"{entry['path']}: missing (expected at {path})")
            continue
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            problems.append(
                f"{entry['path']}: checksum mismatch (manifest {entry['sha256'][:12]}..., "
                f"file {digest[:12]}...): the file was modified or the manifest is stale"
            )
    if problems:
        raise ManifestError(
            f"{base / MANIFEST_NAME}: {len(problems)} problem(s):\n  " + "\n  ".join(problems)
        )
    return list(doc["files"])


def _entry(base: Path, path: Path, kind: str) -> dict[str, Any]:
    from .acceptance import load_acceptance_trace
    from .delay import load_delay_trace

    rel = path.relative_to(base).as_posix()
    if kind == "delay":
        tr = load_delay_trace(path)
        meta: dict[str, Any] = dict(tr.metadata)
        rows = tr.n_rows
        units = meta.get("units", "t_ms, rtt_ms: milliseconds")
    elif kind == "acceptance":
        acc = load_acceptance_trace(path)
        meta = dict(acc.metadata)
        rows = acc.n_rounds
        units = meta.get(
            "units",
            "run_length, draft_length: tokens; confidences: probability; "
            "draft_ms, verify_ms: milliseconds",
        )
    else:
        meta = json.loads(path.read_text(encoding="utf-8"))
        rows = int(meta.get("n_states", len(meta.get("generator_per_ms", []))))
        units = meta.get("units", "generator_per_ms: 1/ms; rtt_mean_ms: ms; rtt_cv: dimensionless")
    return {
        "path": rel,
        "kind": kind,
        "source": str(meta.get("source", "unknown")),
        "licence": str(meta.get("licence", "unknown")),
        "synthetic": str(meta.get("synthetic", "unknown")),
        "units": str(units),
        "rows": int(rows),
        "sha256": sha256_file(path),
    }


def build_manifest(root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Scan ``delay/*.csv``, ``acceptance/*.jsonl`` and ``channels/*.json`` under ``root``.

    Source, licence, units and the synthetic flag come from each file's own
    header (metadata); ``rows`` counts samples (delay), rounds (acceptance) or
    states (channel). Entries are sorted by path.
    """
    base = Path(root) if root is not None else _repo_root()
    files = []
    for kind, (folder, pattern) in _KINDS.items():
        for path in sorted((base / folder).glob(pattern)):
            files.append(_entry(base, path, kind))
    files.sort(key=lambda e: e["path"])
    return {
        "format": MANIFEST_FORMAT,
        "description": "Data files shipped with specstop-gym; verify with 'python -m specstop_gym.traces verify'.",
        "files": files,
    }


def write_manifest(root: str | os.PathLike[str] | None = None) -> Path:
    """Rebuild ``MANIFEST.json`` under ``root`` (default: the repository's ``traces/``) and write it atomically."""
    base = Path(root) if root is not None else _repo_root()
    doc = build_manifest(base)
    out = base / MANIFEST_NAME
    atomic_write_text(out, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return out
