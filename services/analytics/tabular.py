"""Tabular inputs for the built-in jobs: CSV or Parquet, from a path or bytes.

The format is sniffed: Parquet files start with the magic `PAR1`, everything else is
read as CSV (UTF-8, optional BOM, comma-separated, first line = header, blank lines
ignored). Both are read in chunks of `CHUNK_ROWS` rows and converted column by column
(see `_convert`), so memory is bounded by the limits, never by the file.

    table = read_table(Path("run.csv"), columns=["vibration_rms_g"], require_time=True)
    table.timestamps        # int64 unix ms, or None when the dataset has no time column
    table.columns["vibration_rms_g"]   # float64, NaN where missing or non-finite
    table.missing["vibration_rms_g"]   # bool: the cell was empty / null
"""
from __future__ import annotations

import codecs
import contextlib
import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ._convert import TimeParser, to_float
from .errors import JobInputError, JobLimitError, quote_value

PARQUET_MAGIC = b"PAR1"
CHUNK_ROWS = 65_536

Source = bytes | bytearray | memoryview | Path


@dataclass(frozen=True)
class TableLimits:
    """Refuse inputs beyond these sizes (JobLimitError, reason "too_large")."""

    max_bytes: int = 128 * 1024 * 1024
    max_rows: int = 1_000_000
    max_columns: int = 64


DEFAULT_LIMITS = TableLimits()


@dataclass(frozen=True)
class Table:
    """A read dataset: value columns (float64) in order, their missing masks, timestamps."""

    columns: dict[str, np.ndarray]
    missing: dict[str, np.ndarray]
    timestamps: np.ndarray | None
    time_column: str | None
    n_rows: int
    source_format: str  # "csv" | "parquet"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.columns)


def sniff_format(source: Source) -> str:
    """"parquet" if the input starts with the Parquet magic, else "csv"."""
    if isinstance(source, Path):
        try:
            with source.open("rb") as fh:
                head = fh.read(len(PARQUET_MAGIC))
        except OSError as exc:
            raise JobInputError("unreadable_format", f"cannot open input: {exc.strerror}") from None
    else:
        head = bytes(source[: len(PARQUET_MAGIC)])
    return "parquet" if head == PARQUET_MAGIC else "csv"


def read_table(
    source: Source,
    *,
    columns: Sequence[str] | None = None,
    time_column: str | None = "timestamp",
    require_time: bool = False,
    limits: TableLimits = DEFAULT_LIMITS,
) -> Table:
    """Read `columns` (default: every column but the time column) as numbers, and the
    time column (if present, or required) as unix ms. Raises JobInputError."""
    size = _size(source)
    if size > limits.max_bytes:
        raise JobLimitError("bytes", limits.max_bytes, size)
    if size == 0:
        raise JobInputError("empty_input", "the input is empty (0 bytes)")
    fmt = sniff_format(source)
    opener = _ParquetSource if fmt == "parquet" else _CsvSource
    with opener(source, limits) as src:
        names = _select(src.header, columns, time_column, require_time)
        has_time = time_column is not None and time_column in src.header
        if not names and not has_time:
            raise JobInputError("invalid_parameters", "no columns selected")
        parse_time = TimeParser(time_column) if has_time else None
        values: dict[str, list[np.ndarray]] = {n: [] for n in names}
        masks: dict[str, list[np.ndarray]] = {n: [] for n in names}
        times: list[np.ndarray] = []
        n_rows = 0
        for count, chunk in src.chunks(names + ([time_column] if has_time else [])):
            for name in names:
                v, m = to_float(chunk[name], name, n_rows)
                values[name].append(v)
                masks[name].append(m)
            if parse_time is not None:
                times.append(parse_time(chunk[time_column], n_rows))
            n_rows += count
    if n_rows == 0:
        raise JobInputError("empty_input", "the input has a header but no data rows")
    return Table(
        columns={n: np.concatenate(values[n]) for n in names},
        missing={n: np.concatenate(masks[n]) for n in names},
        timestamps=np.concatenate(times) if parse_time is not None else None,
        time_column=time_column if has_time else None,
        n_rows=n_rows,
        source_format=fmt,
    )


def _size(source: Source) -> int:
    if isinstance(source, Path):
        try:
            return source.stat().st_size
        except OSError as exc:
            raise JobInputError("unreadable_format", f"cannot open input: {exc.strerror}") from None
    if isinstance(source, (bytes, bytearray, memoryview)):
        return memoryview(source).nbytes
    raise JobInputError("invalid_parameters", f"an input must be bytes or a Path, not {type(source).__name__}")


def _select(header: list[str], columns: Sequence[str] | None, time_column: str | None,
            require_time: bool) -> list[str]:
    wanted = [c for c in header if c != time_column] if columns is None else list(columns)
    needed = wanted + ([time_column] if require_time and time_column is not None else [])
    missing = [c for c in dict.fromkeys(needed) if c not in header]
    if missing:
        raise JobInputError("missing_columns", f"missing column(s): {', '.join(map(repr, missing))}",
                            columns=missing)
    return [c for c in dict.fromkeys(wanted) if c != time_column]


def _check_header(names: list[str], limits: TableLimits) -> list[str]:
    if len(names) > limits.max_columns:
        raise JobLimitError("columns", limits.max_columns, len(names))
    seen: set[str] = set()
    for i, name in enumerate(names):
        if not name:
            raise JobInputError("unreadable_format", f"column {i} of the header has no name")
        if name in seen:
            raise JobInputError("unreadable_format", f"column name {quote_value(name)} appears twice",
                                columns=(name,))
        seen.add(name)
    return names


# --- CSV ---------------------------------------------------------------------------------

SNIFF_BYTES = 64 * 1024


def _check_text(head: bytes) -> None:
    """Refuse binary data up front, so garbage fails as unreadable whatever job reads it:
    NUL bytes, or invalid UTF-8 in the first SNIFF_BYTES (a multi-byte sequence cut off
    at the end of the sample is fine)."""
    if b"\0" in head:
        raise JobInputError("unreadable_format", "not CSV or Parquet: binary data (NUL bytes)")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason != "unexpected end of data":
            raise JobInputError("unreadable_format",
                                f"not CSV or Parquet: invalid UTF-8 ({exc.reason})") from None

Chunk = tuple[int, dict[str, pa.Array]]  # (rows in the chunk, column name → values)


class _CsvSource:
    """Streams a CSV: `header` once opened, then `chunks(selected)` of CHUNK_ROWS rows."""

    def __init__(self, source: Source, limits: TableLimits) -> None:
        self._limits = limits
        if isinstance(source, Path):
            try:
                self._raw: BinaryIO = source.open("rb")
            except OSError as exc:
                raise JobInputError("unreadable_format", f"cannot open input: {exc.strerror}") from None
        else:
            self._raw = io.BytesIO(bytes(source))
        try:
            _check_text(self._raw.read(SNIFF_BYTES))
        except BaseException:
            self._raw.close()
            raise
        self._raw.seek(0)
        text = codecs.getreader("utf-8-sig")(self._raw, errors="strict")
        self._rows = csv.reader(text, strict=True)
        self.header: list[str] = []

    def __enter__(self) -> _CsvSource:
        try:
            with self._errors():
                for line in self._rows:
                    if any(cell.strip() for cell in line):
                        self.header = _check_header([c.strip() for c in line], self._limits)
                        return self
        except BaseException:
            self._raw.close()
            raise
        self._raw.close()
        raise JobInputError("empty_input", "the input has no header (no non-blank line)")

    def __exit__(self, *exc: object) -> None:
        self._raw.close()

    def chunks(self, selected: list[str]) -> Iterator[Chunk]:
        index = [self.header.index(name) for name in selected]
        width = len(self.header)
        buffer: list[list[str]] = []
        n_rows = 0
        with self._errors():
            for line in self._rows:
                if not line:
                    continue  # blank line (a quoted "" is an empty cell, not a blank line)
                if len(line) != width:
                    raise JobInputError(
                        "unreadable_format",
                        f"data row {n_rows} (line {self._rows.line_num}) has {len(line)} "
                        f"fields, the header has {width}", rows=(n_rows,))
                n_rows += 1
                if n_rows > self._limits.max_rows:
                    raise JobLimitError("rows", self._limits.max_rows)
                buffer.append(line)
                if len(buffer) == CHUNK_ROWS:
                    yield self._chunk(buffer, selected, index)
                    buffer = []
            if buffer:
                yield self._chunk(buffer, selected, index)

    @staticmethod
    def _chunk(rows: list[list[str]], selected: list[str], index: list[int]) -> Chunk:
        return len(rows), {name: pa.array([r[i] for r in rows], pa.string())
                           for name, i in zip(selected, index)}

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except UnicodeDecodeError as exc:
            raise JobInputError("unreadable_format",
                                f"not CSV or Parquet: invalid UTF-8 ({exc.reason})") from None
        except csv.Error as exc:
            raise JobInputError("unreadable_format",
                                f"malformed CSV at line {self._rows.line_num}: {exc}") from None


# --- Parquet -----------------------------------------------------------------------------

_ARROW_ERRORS = (pa.ArrowException, OSError, ValueError, EOFError)


class _ParquetSource:
    """Reads the footer when opened (header, row count), then decodes only `selected`."""

    def __init__(self, source: Source, limits: TableLimits) -> None:
        self._source = source
        self._limits = limits
        self.header: list[str] = []

    def __enter__(self) -> _ParquetSource:
        with _arrow_errors():
            target = self._source if isinstance(self._source, Path) else pa.BufferReader(bytes(self._source))
            self._file = pq.ParquetFile(target)
            names = list(self._file.schema_arrow.names)
        try:
            self.header = _check_header(names, self._limits)
            rows = self._file.metadata.num_rows
            if rows > self._limits.max_rows:
                raise JobLimitError("rows", self._limits.max_rows, rows)
        except JobInputError:
            self._file.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if hasattr(self, "_file"):
            self._file.close()

    def chunks(self, selected: list[str]) -> Iterator[Chunk]:
        with _arrow_errors():
            for batch in self._file.iter_batches(batch_size=CHUNK_ROWS, columns=selected):
                yield batch.num_rows, {name: batch.column(name) for name in selected}


@contextlib.contextmanager
def _arrow_errors() -> Iterator[None]:
    try:
        yield
    except _ARROW_ERRORS as exc:
        text = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise JobInputError("unreadable_format", f"unreadable Parquet: {text}") from None
