"""Reading CSV and Parquet into a Table: formats, timestamps, missing cells, precise errors."""
from __future__ import annotations

import io
import math
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.analytics import JobInputError, JobLimitError, TableLimits, read_table, sniff_format
from services.analytics.errors import MAX_VALUE_CHARS


def parquet_bytes(columns: dict) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink)
    return sink.getvalue()


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def reason(exc_info) -> str:
    return exc_info.value.reason


# --- good input -----------------------------------------------------------------------------

def test_csv_values_missing_and_non_finite_cells():
    data = b"timestamp,a,b\n2025-01-01T00:00:00Z,1.5,\n2025-01-01T00:00:10Z, nan ,NA\n2025-01-01T00:00:20Z,-inf,3e2\n"
    t = read_table(data)
    assert t.names == ("a", "b") and t.n_rows == 3 and t.source_format == "csv"
    assert t.timestamps.tolist() == [ms("2025-01-01T00:00:00+00:00") + 10_000 * i for i in range(3)]
    assert t.columns["a"][0] == 1.5 and math.isnan(t.columns["a"][1]) and t.columns["a"][2] == -math.inf
    assert t.missing["a"].tolist() == [False, False, False]  # "nan" is a reading, not an empty cell
    assert t.missing["b"].tolist() == [True, True, False]
    assert t.columns["b"][2] == 300.0


@pytest.mark.parametrize("cell, expected", [
    ("2025-03-03T06:00:00Z", "2025-03-03T06:00:00+00:00"),
    ("2025-03-03T07:00:00+01:00", "2025-03-03T06:00:00+00:00"),
    ("2025-03-03T06:00:00.250Z", "2025-03-03T06:00:00.250+00:00"),
    ("2025-03-03 06:00:00", "2025-03-03T06:00:00+00:00"),  # naive = UTC
    ("1740981600", "2025-03-03T06:00:00+00:00"),           # unix seconds
    ("1740981600.25", "2025-03-03T06:00:00.250+00:00"),
])
def test_timestamp_formats(cell, expected):
    t = read_table(f"timestamp,x\n{cell},1\n".encode())
    assert t.timestamps.dtype == np.int64
    assert t.timestamps.tolist() == [ms(expected)]


def test_parquet_timestamp_and_numeric_types():
    stamps = [ms("2025-03-03T06:00:00+00:00"), ms("2025-03-03T06:00:10+00:00")]
    data = parquet_bytes({"timestamp": pa.array(stamps, pa.timestamp("ms", "UTC")),
                          "i": pa.array([1, None], pa.int32()), "f": pa.array([0.5, float("nan")]),
                          "s": pa.array(["2.5", " "])})
    assert sniff_format(data) == "parquet"
    t = read_table(data)
    assert t.source_format == "parquet" and t.timestamps.tolist() == stamps
    assert t.columns["i"][0] == 1.0 and t.missing["i"].tolist() == [False, True]
    assert math.isnan(t.columns["f"][1]) and not t.missing["f"][1]
    assert t.columns["s"][0] == 2.5 and t.missing["s"].tolist() == [False, True]


def test_parquet_unix_seconds_time_column():
    t = read_table(parquet_bytes({"timestamp": [1740981600, 1740981610], "x": [1.0, 2.0]}))
    assert t.timestamps.tolist() == [1740981600000, 1740981610000]


def test_path_input_and_column_selection(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"timestamp,a,b,label\n1,1,2,x\n2,3,4,y\n")
    t = read_table(path, columns=["b"])  # the text column is never parsed
    assert t.names == ("b",) and t.columns["b"].tolist() == [2.0, 4.0]


def test_bom_blank_lines_and_quoted_cells():
    t = read_table(b'\xef\xbb\xbf"a","b"\n\n"1","2"\n\n3,4\n')
    assert t.columns["a"].tolist() == [1.0, 3.0] and t.timestamps is None


# --- bad input: each names its reason, column and row ------------------------------------------

@pytest.mark.parametrize("data, expected", [
    (b"", "empty_input"),
    (b"\n\n  \n", "empty_input"),
    (b"timestamp,a\n", "empty_input"),                        # header only
    (b"timestamp,a\n\n\n", "empty_input"),
    (b"\xff\xfe\x00\x81\x9f garbage \xc3\x28", "unreadable_format"),
    (b"a,b\n1,2\n3\n", "unreadable_format"),                   # ragged row
    (b"a,a\n1,2\n", "unreadable_format"),                      # duplicate column
    (b"a,,c\n1,2,3\n", "unreadable_format"),                   # unnamed column
    (b'a,b\n"1,2\n', "unreadable_format"),                     # unterminated quote
    (b"PAR1 this is not parquet", "unreadable_format"),
])
def test_bad_bytes(data, expected):
    with pytest.raises(JobInputError) as exc:
        read_table(data)
    assert reason(exc) == expected


def test_truncated_parquet():
    data = parquet_bytes({"a": list(range(100))})
    for cut in (len(data) - 1, len(data) // 2, 8):
        with pytest.raises(JobInputError) as exc:
            read_table(data[:cut])
        assert reason(exc) == "unreadable_format"


def test_non_numeric_names_column_row_and_truncated_value():
    long_value = "x" * 500
    with pytest.raises(JobInputError) as exc:
        read_table(f"a,b\n1,2\n3,4\n5,{long_value}\n".encode())
    e = exc.value
    assert (e.reason, e.columns, e.rows) == ("non_numeric", ("b",), (2,))
    assert "x" * (MAX_VALUE_CHARS - 2) in str(e) and long_value not in str(e)


@pytest.mark.parametrize("cell", ["1,5", "1_0", "0x10", "twelve", "12 mm"])
def test_strict_numbers(cell):
    with pytest.raises(JobInputError) as exc:
        read_table(f'a\n1\n"{cell}"\n'.encode())
    assert (exc.value.reason, exc.value.rows) == ("non_numeric", (1,))


@pytest.mark.parametrize("cells, bad_row", [
    (["2025-01-01T00:00:00Z", "yesterday"], 1),
    (["2025-01-01T00:00:00Z", ""], 1),
    (["1740981600", "2025-01-01T00:00:00Z"], 1),   # mixed formats
    (["1e300"], 0),                                 # beyond year 9999
])
def test_bad_timestamps(cells, bad_row):
    body = "".join(f"{c},1\n" for c in cells)
    with pytest.raises(JobInputError) as exc:
        read_table(f"timestamp,a\n{body}".encode())
    assert (exc.value.reason, exc.value.columns, exc.value.rows) == ("non_numeric", ("timestamp",), (bad_row,))


def test_parquet_non_numeric_type():
    with pytest.raises(JobInputError) as exc:
        read_table(parquet_bytes({"a": [1.0, 2.0], "flag": [True, False]}))
    assert (exc.value.reason, exc.value.columns) == ("non_numeric", ("flag",))


def test_missing_columns_listed():
    with pytest.raises(JobInputError) as exc:
        read_table(b"a,b\n1,2\n", columns=["a", "c", "d"])
    assert (exc.value.reason, exc.value.columns) == ("missing_columns", ("c", "d"))
    with pytest.raises(JobInputError) as exc:
        read_table(b"a,b\n1,2\n", require_time=True)
    assert exc.value.columns == ("timestamp",)


def test_missing_file(tmp_path):
    with pytest.raises(JobInputError) as exc:
        read_table(tmp_path / "absent.csv")
    assert reason(exc) == "unreadable_format"


@pytest.mark.parametrize("limits, data, limit", [
    (TableLimits(max_bytes=10), b"a,b\n1,2\n3,4\n", "bytes"),
    (TableLimits(max_rows=2), b"a\n1\n2\n3\n", "rows"),
    (TableLimits(max_columns=2), b"a,b,c\n1,2,3\n", "columns"),
])
def test_limits(limits, data, limit):
    with pytest.raises(JobLimitError) as exc:
        read_table(data, limits=limits)
    assert (exc.value.reason, exc.value.limit) == ("too_large", limit)


def test_parquet_row_limit_from_footer():
    with pytest.raises(JobLimitError) as exc:
        read_table(parquet_bytes({"a": list(range(50))}), limits=TableLimits(max_rows=49))
    assert exc.value.actual == 50


def test_chunk_boundaries_keep_row_numbers(monkeypatch):
    import services.analytics.tabular as tabular
    monkeypatch.setattr(tabular, "CHUNK_ROWS", 3)
    rows = [str(i) for i in range(10)]
    rows[7] = "oops"
    with pytest.raises(JobInputError) as exc:
        read_table(("a\n" + "\n".join(rows) + "\n").encode())
    assert exc.value.rows == (7,)
    rows[7] = "7"
    t = read_table(("a\n" + "\n".join(rows) + "\n").encode())
    assert t.columns["a"].tolist() == [float(i) for i in range(10)]


# --- properties ----------------------------------------------------------------------------

floats = st.floats(allow_nan=False, allow_infinity=False, width=64)
cells = st.one_of(st.none(), floats)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4_000_000_000_000), cells, cells), min_size=1, max_size=30))
def test_csv_and_parquet_decode_to_the_same_table(rows):
    """Encode the same cells as CSV (repr) and Parquet (float64/null); both decode exactly."""
    text = "timestamp,a,b\n" + "".join(
        f"{t / 1000!r},{'' if a is None else repr(a)},{'' if b is None else repr(b)}\n" for t, a, b in rows)
    par = parquet_bytes({"timestamp": pa.array([t for t, _, _ in rows], pa.timestamp("ms", "UTC")),
                         "a": pa.array([a for _, a, _ in rows], pa.float64()),
                         "b": pa.array([b for _, _, b in rows], pa.float64())})
    from_csv, from_parquet = read_table(text.encode()), read_table(par)
    assert from_csv.timestamps.tolist() == from_parquet.timestamps.tolist() == [t for t, _, _ in rows]
    for i, name in ((1, "a"), (2, "b")):
        expected = [r[i] for r in rows]
        assert from_csv.missing[name].tolist() == [x is None for x in expected]
        assert np.array_equal(from_csv.columns[name], from_parquet.columns[name], equal_nan=True)
        assert [None if m else v for v, m in zip(from_csv.columns[name].tolist(),
                                                   from_csv.missing[name].tolist())] == expected


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_read_or_fail_cleanly(data):
    try:
        read_table(data)
    except JobInputError:
        pass


def test_naive_and_aware_timestamps_agree():
    aware = read_table(b"timestamp,a\n2025-03-03T06:00:00Z,1\n").timestamps
    naive = read_table(b"timestamp,a\n2025-03-03T06:00:00,1\n").timestamps
    assert aware.tolist() == naive.tolist() == [int(datetime(2025, 3, 3, 6, tzinfo=UTC).timestamp() * 1000)]
