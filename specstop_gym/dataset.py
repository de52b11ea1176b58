"""Tables written to disk as they are produced: one writer for the per-round records of
``evaluate.py`` and for any other large table of the project (an experiment grid, ...).

* Format: **Apache Parquet** (``pyarrow``), columns typed by a small schema (``"int32"``,
  ``"float64"``, ``"string"``, ...), **zstd**-compressed (dictionary encoding for integers and
  strings, byte-stream-split for floats), one row group per ``row_group_rows``
  rows (65536 by default), so that a reader can stream a file in bounded memory
  (:func:`iter_dataset`) and read only the columns it needs. ``format="csv.gz"`` (or
  ``"csv"``) writes the same table as (gzip-compressed) CSV text instead, with a header line.
* Memory: the writer buffers at most one row group; the rest is on disk.
* Crash safety: rows go to a temporary file next to the destination
  (:func:`specstop_gym.fileio.temporary_name`); :meth:`DatasetWriter.close` finishes the file,
  ``fsync``-s it and renames it into place. A killed run therefore never leaves a truncated
  file under the final name (the temporary file is an orphan that the next run removes), and
  a file under its final name is always complete and readable.
* File-level key/value metadata (``metadata=``) is stored in the Parquet footer (read it back
  with :func:`dataset_metadata`).

Reading: :func:`read_dataset` (all rows, as numpy arrays; strings as object arrays) and
:func:`iter_dataset` (batches of at most ``batch_rows`` rows) work on both formats, and on a
*folder of parts* (the ``*.parquet`` files directly in it, in name order, temporary files
skipped): the layout of a grid's rounds, one part per cell written when the cell finishes, which
any Parquet reader also reads as one table (``pyarrow.dataset``, DuckDB, pandas).
"""

from __future__ import annotations

import csv
import gzip
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .fileio import fsync_dir, fsync_file, temporary_name

PathLike = str | os.PathLike[str]

TYPES = ("bool", "int8", "int16", "int32", "int64", "float32", "float64", "string")
"""Column types a schema may use."""
FORMATS = ("parquet", "csv.gz", "csv")
"""File formats of :class:`DatasetWriter`."""
DEFAULT_ROW_GROUP_ROWS = 1 << 16


def format_of(path: PathLike) -> str:
    """The format a file name implies: ``.parquet``, ``.csv.gz`` or ``.csv`` (a folder: its Parquet parts)."""
    if Path(path).is_dir():
        return "parquet"
    name = Path(path).name
    for fmt in ("csv.gz", "csv", "parquet"):
        if name.endswith("." + fmt):
            return fmt
    raise ValueError(f"{str(path)!r}: unknown table format (expected .parquet, .csv.gz or .csv)")


class DatasetWriter:
    """Append batches of rows of a fixed schema to a Parquet (or CSV) file (module docstring).

    Args:
        path: the destination; written only by :meth:`close` (atomic rename).
        schema: ``(column, type)`` pairs (or a mapping), types from :data:`TYPES`.
        format: ``"parquet"`` (default), ``"csv.gz"`` or ``"csv"``.
        row_group_rows: rows buffered before a row group is written (Parquet) or flushed (CSV).
        compression: Parquet codec (``"zstd"``; ``"none"`` for none).
        metadata: string key/value pairs stored in the file (Parquet footer; CSV: not stored).

    ``write(batch)`` takes a mapping column -> 1-D array (all of one length) or scalar (repeated
    over the batch, e.g. a constant label). Use as a context manager: an exception inside the
    block discards the file (:meth:`abort`), a normal exit closes it.
    """

    def __init__(self, path: PathLike, schema: Mapping[str, str] | Sequence[tuple[str, str]], *,
                 format: str = "parquet", row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
                 compression: str = "zstd", metadata: Mapping[str, str] | None = None) -> None:
        self.path = Path(path)
        self.schema = list(schema.items()) if isinstance(schema, Mapping) else [tuple(c) for c in schema]
        for name, tp in self.schema:
            if tp not in TYPES:
                raise ValueError(f"column {name!r}: type {tp!r} is not one of {', '.join(TYPES)}")
        if len({n for n, _ in self.schema}) != len(self.schema):
            raise ValueError("a column name appears twice in the schema")
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        if int(row_group_rows) < 1:
            raise ValueError("row_group_rows must be >= 1")
        self.format = format
        self.row_group_rows = int(row_group_rows)
        self.compression = compression
        self.metadata = {str(k): str(v) for k, v in (metadata or {}).items()}
        self.tmp = temporary_name(self.path)
        self.rows_written = 0
        self._buffer: list[dict[str, np.ndarray]] = []
        self._buffered = 0
        self._closed = False
        self._writer: Any = None
        self._text: Any = None
        if format == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            fields = [pa.field(n, pa.string() if t == "string" else pa.from_numpy_dtype(np.dtype(t)))
                      for n, t in self.schema]
            meta = {b"specstop": json.dumps(self.metadata).encode()} if self.metadata else None
            self._arrow_schema = pa.schema(fields, metadata=meta)
            floats = [n for n, t in self.schema if t.startswith("float")]
            # floats: no dictionary, byte-stream-split encoding (measured: 41 -> 29.5 bytes per round row)
            self._writer = pq.ParquetWriter(str(self.tmp), self._arrow_schema,
                                            compression=None if compression == "none" else compression,
                                            use_dictionary=[n for n, _ in self.schema if n not in floats],
                                            use_byte_stream_split=floats or False, write_statistics=True)
        else:
            raw = gzip.open(self.tmp, "wt", encoding="utf-8", newline="") if format == "csv.gz" else \
                open(self.tmp, "w", encoding="utf-8", newline="")
            self._text = raw
            self._text.write(",".join(n for n, _ in self.schema) + "\n")

    # ------------------------------------------------------------------ writing
    def write(self, batch: Mapping[str, Any]) -> None:
        """Append rows (see the class docstring); nothing is written until a row group fills."""
        if self._closed:
            raise ValueError(f"{str(self.path)!r}: the writer is closed")
        lengths = {len(np.asarray(v)) for v in batch.values() if np.ndim(v) == 1}
        if len(lengths) > 1:
            raise ValueError(f"columns of one batch differ in length: {sorted(lengths)}")
        n = lengths.pop() if lengths else 1
        missing = [c for c, _ in self.schema if c not in batch]
        extra = [c for c in batch if c not in dict(self.schema)]
        if missing or extra:
            raise ValueError(f"batch columns do not fit the schema (missing {missing}, unknown {extra})")
        if n == 0:
            return
        cols = {}
        for name, tp in self.schema:
            v = batch[name]
            if np.ndim(v) == 0:
                v = np.full(n, v, dtype=object if tp == "string" else tp)
            cols[name] = np.asarray(v, dtype=object if tp == "string" else tp)
        self._buffer.append(cols)
        self._buffered += n
        if self._buffered >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        cols = {name: np.concatenate([b[name] for b in self._buffer]) for name, _ in self.schema}
        self._buffer, self._buffered = [], 0
        n = len(next(iter(cols.values())))
        if self._writer is not None:
            import pyarrow as pa

            arrays = [pa.array(cols[name], type=self._arrow_schema.field(name).type) for name, _ in self.schema]
            self._writer.write_table(pa.Table.from_arrays(arrays, schema=self._arrow_schema),
                                     row_group_size=self.row_group_rows)
        else:
            self._text.write(_csv_rows(cols, self.schema))
        self.rows_written += n

    def close(self) -> Path:
        """Write what is buffered, finish the file and move it to its final name (atomic)."""
        if self._closed:
            return self.path
        try:
            self._flush()
            if self._writer is not None:
                self._writer.close()
            else:
                self._text.close()
            self._closed = True
            fsync_file(self.tmp)
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        fsync_dir(self.path.parent)
        return self.path

    def abort(self) -> None:
        """Discard the file (the destination keeps its previous content, if any)."""
        self._closed = True
        self._buffer = []
        for handle in (self._writer, self._text):
            if handle is not None:
                try:
                    handle.close()
                except Exception:  # noqa: BLE001, S110 - the file is being discarded anyway
                    pass
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _csv_rows(cols: Mapping[str, np.ndarray], schema: Sequence[tuple[str, str]]) -> str:
    parts = []
    for name, tp in schema:
        v = cols[name]
        if tp == "string":
            parts.append([_csv_field(str(x)) for x in v])
        elif tp.startswith("float"):
            parts.append(np.char.mod("%.10g", v.astype(np.float64)).tolist())
        elif tp == "bool":
            parts.append(np.where(v, "true", "false").tolist())
        else:
            parts.append(v.astype(np.int64).astype(str).tolist())
    return "".join(",".join(row) + "\n" for row in zip(*parts))


def _csv_field(text: str) -> str:
    if any(ch in text for ch in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


# ------------------------------------------------------------------ reading
def iter_dataset(path: PathLike, columns: Sequence[str] | None = None,
                 batch_rows: int = DEFAULT_ROW_GROUP_ROWS) -> Iterator[dict[str, np.ndarray]]:
    """Batches of at most ``batch_rows`` rows of a table written by :class:`DatasetWriter`
    (or any Parquet file), as column -> numpy array (strings as object arrays). CSV values are
    parsed as integers, else floats, else kept as strings, column by column per batch."""
    if Path(path).is_dir():
        for part in dataset_parts(path):
            yield from iter_dataset(part, columns, batch_rows)
        return
    fmt = format_of(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with pq.ParquetFile(str(path)) as f:
            for rb in f.iter_batches(batch_size=batch_rows, columns=list(columns) if columns else None):
                yield {name: _to_numpy(rb.column(i)) for i, name in enumerate(rb.schema.names)}
        return
    opener = gzip.open if fmt == "csv.gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:  # type: ignore[operator]
        reader = csv.reader(f)
        header = next(reader)
        keep = [header.index(c) for c in columns] if columns else list(range(len(header)))
        rows: list[list[str]] = []
        for row in reader:
            rows.append(row)
            if len(rows) >= batch_rows:
                yield _csv_batch(header, keep, rows)
                rows = []
        if rows:
            yield _csv_batch(header, keep, rows)


def dataset_parts(folder: PathLike) -> list[Path]:
    """The parts of a folder dataset: its ``*.parquet`` files (not temporary ones), in name order."""
    from .fileio import is_temporary

    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and p.name.endswith(".parquet") and not is_temporary(p.name))


def _to_numpy(col: Any) -> np.ndarray:
    import pyarrow as pa

    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return np.asarray(col.to_pylist(), dtype=object)
    return col.to_numpy(zero_copy_only=False)


def _csv_batch(header: list[str], keep: list[int], rows: list[list[str]]) -> dict[str, np.ndarray]:
    out = {}
    for j in keep:
        vals = [r[j] for r in rows]
        for conv in (np.int64, np.float64):
            try:
                out[header[j]] = np.asarray(vals, dtype=conv)
                break
            except (ValueError, OverflowError):
                continue
        else:
            out[header[j]] = np.asarray(vals, dtype=object)
    return out


def read_dataset(path: PathLike, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """All rows of a table (see :func:`iter_dataset`) as column -> numpy array."""
    parts = list(iter_dataset(path, columns))
    if not parts:
        if Path(path).is_dir():
            first = dataset_parts(path)
            if not first:
                return {}
            path = first[0]
        if format_of(path) == "parquet":
            import pyarrow.parquet as pq

            schema = pq.read_schema(str(path))
            names = list(columns) if columns else schema.names
            return {n: np.zeros(0, dtype=object if str(schema.field(n).type) == "string"
                                else schema.field(n).type.to_pandas_dtype()) for n in names}
        return {}
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def dataset_metadata(path: PathLike) -> dict[str, str]:
    """The ``metadata=`` a Parquet file was written with (empty for CSV)."""
    if format_of(path) != "parquet":
        return {}
    import pyarrow.parquet as pq

    meta = pq.read_schema(str(path)).metadata or {}
    raw = meta.get(b"specstop")
    return json.loads(raw.decode()) if raw else {}


__all__ = ["DEFAULT_ROW_GROUP_ROWS", "FORMATS", "TYPES", "DatasetWriter", "dataset_metadata", "dataset_parts",
           "format_of", "iter_dataset", "read_dataset"]

