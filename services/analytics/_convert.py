"""Column conversion: one Arrow chunk (from a CSV or a Parquet batch) → numpy arrays.

Numbers: CSV cells and Parquet string columns are trimmed, the null tokens below become
missing, and the rest must parse as a decimal float (Arrow's strict parser: no
underscores, no thousands separators, "nan"/"inf" accepted and kept as non-finite
readings). Integer, float and decimal Parquet columns are cast to float64.

Timestamps become int64 unix milliseconds: Parquet timestamp/date columns directly;
numbers are unix seconds; strings are ISO 8601 (offset or "Z" honoured, naive = UTC)
or unix seconds, decided once per column from its first value. A missing or
unparseable timestamp is an error (reason "non_numeric").

Conversion is vectorised; only on failure do we search (by bisection over prefixes,
O(n log n) worst case) for the first offending row so the error can name it.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import JobInputError, quote_value

NULL_TOKENS = ("", "NA", "N/A", "n/a", "null", "NULL", "None")
_NULLS = pa.array(NULL_TOKENS, pa.string())

# Years 0001..9999, the range ISO 8601 calendars and Python datetimes share.
MIN_MS = -62_135_596_800_000
MAX_MS = 253_402_300_799_999

_TS_CANDIDATES = (
    pa.timestamp("us", "UTC"), pa.timestamp("us"), pa.timestamp("ns", "UTC"), pa.timestamp("ns"),
)


def _decoded(arr: pa.Array) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    return arr


def _clean_strings(arr: pa.Array) -> pa.Array:
    """Trim whitespace and turn the null tokens into nulls."""
    trimmed = pc.utf8_trim_whitespace(arr)
    is_token = pc.fill_null(pc.is_in(trimmed, value_set=_NULLS), True)
    return pc.if_else(is_token, pa.scalar(None, pa.string()), trimmed)


def _casts(arr: pa.Array, target: pa.DataType) -> bool:
    try:
        pc.cast(arr, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def _first_bad(arr: pa.Array, target: pa.DataType) -> int:
    """Index of the first element that does not cast (arr as a whole must fail)."""
    lo, hi = 0, len(arr)  # arr[:lo] casts, arr[:hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _casts(arr.slice(0, mid), target):
            lo = mid
        else:
            hi = mid
    return hi - 1


def _not_numeric(column: str, row: int, value: object, what: str) -> JobInputError:
    return JobInputError(
        "non_numeric", f"column {column!r}, data row {row}: {quote_value(value)} is not {what}",
        columns=(column,), rows=(row,))


def to_float(arr: pa.Array, column: str, row_offset: int) -> tuple[np.ndarray, np.ndarray]:
    """(values float64 with NaN where missing, missing mask) for one chunk of a column."""
    arr = _decoded(arr)
    typ = arr.type
    if pa.types.is_null(typ):
        n = len(arr)
        return np.full(n, np.nan), np.ones(n, dtype=bool)
    if pa.types.is_string(typ):
        cleaned = _clean_strings(arr)
        try:
            as_float = pc.cast(cleaned, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            i = _first_bad(cleaned, pa.float64())
            raise _not_numeric(column, row_offset + i, arr[i].as_py(), "a number") from None
    elif pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ):
        as_float = pc.cast(arr, pa.float64(), safe=False)
    else:
        valid = np.flatnonzero(~np.asarray(arr.is_null()))
        i = int(valid[0]) if len(valid) else 0
        value = arr[i].as_py() if len(arr) else None
        raise _not_numeric(column, row_offset + i, value, f"a number (column type {typ})")
    missing = np.asarray(as_float.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    values = np.array(as_float.to_numpy(zero_copy_only=False), dtype=np.float64)
    values[missing] = np.nan
    return values, missing


class TimeParser:
    """Converts the chunks of one timestamp column; the string mode is fixed by its first value."""

    def __init__(self, column: str) -> None:
        self.column = column
        self._target: pa.DataType | None = None  # for string columns: float64 or a timestamp type

    def __call__(self, arr: pa.Array, row_offset: int) -> np.ndarray:
        arr = _decoded(arr)
        if arr.null_count:
            i = int(np.flatnonzero(np.asarray(arr.is_null()))[0])
            raise _not_numeric(self.column, row_offset + i, None, "a timestamp (missing)")
        typ = arr.type
        if pa.types.is_timestamp(typ) or pa.types.is_date(typ):
            # finer units truncate to ms; coarser ones (s, days) must not overflow int64
            coarse = not pa.types.is_timestamp(typ) or typ.unit == "s"
            try:
                ms = pc.cast(arr, pa.timestamp("ms", getattr(typ, "tz", None)), safe=coarse)
            except pa.ArrowInvalid:
                i = _first_bad(arr, pa.timestamp("ms", getattr(typ, "tz", None)))
                raise _not_numeric(self.column, row_offset + i, str(arr[i]),
                                   "a timestamp between years 1 and 9999") from None
            out = np.asarray(ms.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
        elif pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ):
            out = self._from_seconds(pc.cast(arr, pa.float64(), safe=False), arr, row_offset)
        elif pa.types.is_string(typ):
            out = self._from_strings(arr, row_offset)
        else:
            raise _not_numeric(self.column, row_offset, arr[0].as_py() if len(arr) else None,
                               f"a timestamp (column type {typ})")
        bad = np.flatnonzero((out < MIN_MS) | (out > MAX_MS))
        if len(bad):
            i = int(bad[0])
            raise _not_numeric(self.column, row_offset + i, arr[i].as_py(),
                               "a timestamp between years 1 and 9999")
        return out

    def _from_seconds(self, seconds: pa.Array, original: pa.Array, row_offset: int) -> np.ndarray:
        s = np.asarray(seconds.to_numpy(zero_copy_only=False), dtype=np.float64)
        with np.errstate(all="ignore"):
            ms = np.rint(s * 1000.0)
        bad = np.flatnonzero(~np.isfinite(ms) | (ms < MIN_MS) | (ms > MAX_MS))
        if len(bad):
            i = int(bad[0])
            raise _not_numeric(self.column, row_offset + i, original[i].as_py(),
                               "a timestamp (unix seconds out of range)")
        return ms.astype(np.int64)

    def _from_strings(self, arr: pa.Array, row_offset: int) -> np.ndarray:
        cleaned = _clean_strings(arr)
        if cleaned.null_count:
            i = int(np.flatnonzero(np.asarray(cleaned.is_null()))[0])
            raise _not_numeric(self.column, row_offset + i, arr[i].as_py(), "a timestamp (missing)")
        if self._target is None and len(cleaned):
            first = cleaned.slice(0, 1)
            for target in (pa.float64(), *_TS_CANDIDATES):
                if _casts(first, target):
                    self._target = target
                    break
            else:
                raise _not_numeric(self.column, row_offset, arr[0].as_py(),
                                   "a timestamp (ISO 8601 or unix seconds)")
        target = self._target or pa.float64()
        try:
            cast = pc.cast(cleaned, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            i = _first_bad(cleaned, target)
            raise _not_numeric(self.column, row_offset + i, arr[i].as_py(),
                               "a timestamp in the same format as the first row") from None
        if target == pa.float64():
            return self._from_seconds(cast, arr, row_offset)
        ms = pc.cast(cast, pa.timestamp("ms", target.tz), safe=False)
        return np.asarray(ms.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
