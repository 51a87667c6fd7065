"""The stats job: windowed aggregates checked against a plain-Python computation."""
from __future__ import annotations

import csv
import io
import math
import statistics
from collections import defaultdict

import numpy as np
import pytest

from services.analytics import JobInputError, JobLimitError, run_job
from services.pilot.data import simulate


def to_csv(header, rows) -> bytes:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return out.getvalue().encode()


def expected_windows(stamps: list[int], values: list[float | None], window_ms: int) -> dict:
    groups: dict[int, list] = defaultdict(list)
    for t, v in zip(stamps, values):
        groups[t // window_ms * window_ms].append(v)
    out = {}
    for start, vs in sorted(groups.items()):
        finite = [v for v in vs if v is not None and math.isfinite(v)]
        out[start] = (len(vs), len(finite), finite)
    return out


@pytest.mark.parametrize("window, window_ms", [("1h", 3_600_000), (900, 900_000), ("15min", 900_000),
                                                ("30s", 30_000), ("2.5s", 2_500)])
def test_windows_match_plain_python(window, window_ms):
    rng = np.random.default_rng(7)
    t0 = 1_740_981_600_000 + 1234
    stamps = sorted(int(t0 + x) for x in rng.integers(0, 3 * 3_600_000, 400))
    values = [None if rng.random() < 0.1 else float(rng.normal(50, 10)) for _ in stamps]
    order = rng.permutation(len(stamps))  # rows need not be sorted
    rows = [[stamps[i] / 1000, "" if values[i] is None else repr(values[i])] for i in order]
    r = run_job("stats", {"dataset": to_csv(["timestamp", "load"], rows)}, {"window": window})
    got = r.report["details"]["windows"]
    want = expected_windows(stamps, values, window_ms)
    assert [w["start_ms"] for w in got] == list(want)
    assert r.summary == {"rows": 400, "windows": len(want), "window_ms": window_ms, "columns": ["load"]}
    for w in got:
        rows_in, n, finite = want[w["start_ms"]]
        c = w["columns"]["load"]
        assert w["rows"] == rows_in and c["count"] == n and w["end_ms"] - w["start_ms"] == window_ms
        if n:
            assert c["mean"] == pytest.approx(statistics.fmean(finite), rel=1e-9)
            assert c["std"] == pytest.approx(statistics.pstdev(finite), rel=1e-6, abs=1e-9)
            assert (c["min"], c["max"]) == (pytest.approx(min(finite)), pytest.approx(max(finite)))
        else:
            assert c["mean"] is None and c["min"] is None


def test_window_with_only_non_finite_readings():
    r = run_job("stats", {"dataset": b"timestamp,x,y\n0,nan,1\n1,inf,2\n7200,5,3\n"}, {"window": "1h"})
    first, second = r.report["details"]["windows"]
    assert first["columns"]["x"] == {"count": 0, "mean": None, "min": None, "max": None, "std": None}
    assert first["columns"]["y"]["count"] == 2 and second["columns"]["x"]["mean"] == 5.0


def test_pilot_stats_csv_equals_parquet_and_covers_every_row():
    run = simulate(8, hours=3)
    a = run_job("stats", {"dataset": run.to_csv()}, {"window": "30min", "columns": ["flank_wear_mm"]})
    b = run_job("stats", {"dataset": run.to_parquet()}, {"window": 1800, "columns": ["flank_wear_mm"]})
    assert a.report_json == b.report_json
    assert sum(w["rows"] for w in a.report["details"]["windows"]) == run.n_rows
    means = [w["columns"]["flank_wear_mm"]["mean"] for w in a.report["details"]["windows"]]
    assert means[-1] > means[0]  # the tool wears


@pytest.mark.parametrize("params", [
    {"window": "1 fortnight"}, {"window": 0}, {"window": -5}, {"window": True}, {"window": "0.0001ms"},
    {"window": float("nan")}, {"window": [1]}, {"time_column": None}, {"columns": []},
    {"columns": "flank_wear_mm"}, {"columns": ["a", "a"]}, {"bucket": "1h"},
])
def test_bad_parameters(params):
    with pytest.raises(JobInputError) as exc:
        run_job("stats", {"dataset": b"timestamp,a\n0,1\n"}, params)
    assert exc.value.reason == "invalid_parameters"


def test_needs_a_time_column():
    with pytest.raises(JobInputError) as exc:
        run_job("stats", {"dataset": b"a,b\n1,2\n"}, {})
    assert (exc.value.reason, exc.value.columns, exc.value.input_name) == \
        ("missing_columns", ("timestamp",), "dataset")


def test_too_many_windows():
    rows = [[i * 10, 1] for i in range(10_001)]
    with pytest.raises(JobLimitError) as exc:
        run_job("stats", {"dataset": to_csv(["timestamp", "a"], rows)}, {"window": "1s"})
    assert (exc.value.limit, exc.value.actual) == ("windows", 10_001)
