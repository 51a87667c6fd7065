"""The profile job: each number checked against an independent computation."""
from __future__ import annotations

import csv
import io
import json
import statistics

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.analytics import JobInputError, run_job
from services.pilot.data import simulate, twin_model


def to_csv(header: list[str], rows: list[list[object]]) -> bytes:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return out.getvalue().encode()


@pytest.fixture(scope="module")
def pilot():
    return simulate(21)


def test_completeness_equals_injected_fraction():
    clean = list(csv.reader(io.StringIO(simulate(4, hours=2, noise=False, gaps=False, faults=False)
                                        .to_csv().decode())))
    header, rows = clean[0], clean[1:]
    rng = np.random.default_rng(99)
    blank = {"spindle_load_pct": 0.05, "temperature_c": 0.2, "flank_wear_mm": 0.0}
    blanked = {}
    for name, share in blank.items():
        j = header.index(name)
        hit = rng.choice(len(rows), size=int(share * len(rows)), replace=False)
        for i in hit:
            rows[i][j] = ""
        blanked[name] = sorted(int(i) for i in hit)
    r = run_job("profile", {"dataset": to_csv(header, rows)}, {})
    cols = r.report["details"]["columns"]
    for name, share in blank.items():
        assert cols[name]["completeness"] == pytest.approx(share and 1 - share or 1.0)
        assert cols[name]["missing"]["count"] == len(blanked[name])
        assert cols[name]["missing"]["rows"] == blanked[name][:10]
    assert r.summary["missing_cells"] == sum(map(len, blanked.values()))


def test_column_statistics_match_python():
    vals = [3.0, 1.0, None, 4.0, 1.5, 9.0, 2.5, "nan"]
    data = to_csv(["x"], [["" if v is None else v] for v in vals])
    col = run_job("profile", {"dataset": data}, {"time_column": None}).report["details"]["columns"]["x"]
    finite = [v for v in vals if isinstance(v, float)]
    assert col["min"] == min(finite) and col["max"] == max(finite)
    assert col["mean"] == pytest.approx(statistics.fmean(finite))
    assert col["std"] == pytest.approx(statistics.pstdev(finite))
    assert col["completeness"] == pytest.approx(len(finite) / len(vals))
    assert col["missing"] == {"count": 1, "rows": [2]}
    assert col["non_finite"] == {"count": 1, "rows": [7]}


def test_robust_outliers_match_independent_computation():
    rng = np.random.default_rng(1)
    x = rng.normal(10.0, 1.0, 300)
    x[[17, 150, 299]] = [30.0, -12.0, 25.0]
    data = to_csv(["x"], [[repr(float(v))] for v in x])
    out = run_job("profile", {"dataset": data}, {"time_column": None}).report["details"]["columns"]["x"]["outliers"]
    med = statistics.median(x.tolist())
    mad = statistics.median([abs(v - med) for v in x.tolist()])
    expected = [i for i, v in enumerate(x.tolist()) if 0.6745 * abs(v - med) / mad > 3.5]
    assert {17, 150, 299} <= set(expected)
    assert out["count"] == len(expected) and out["rows"] == expected[:10]


def test_constant_column_skips_outliers_and_reports_the_run():
    data = to_csv(["x"], [[1.0], [2.0], [2.0], [2.0], [2.0], [3.0], [3.0]])
    col = run_job("profile", {"dataset": data}, {"time_column": None}).report["details"]["columns"]["x"]
    assert col["longest_constant_run"] == {"length": 4, "first_row": 1}
    # |x - 2| = 1,0,0,0,0,1,1: the MAD is 0, so the robust z-score is undefined
    assert col["outliers"]["count"] is None and col["outliers"]["skipped"] == "median absolute deviation is 0"
    data = to_csv(["x"], [[5.0]] * 6 + [[""]])
    col = run_job("profile", {"dataset": data}, {"time_column": None}).report["details"]["columns"]["x"]
    assert col["longest_constant_run"] == {"length": 6, "first_row": 0}


def test_time_regularity_gaps_and_non_increasing_steps():
    t0 = 1_740_981_600_000
    stamps = [t0 + 10_000 * i for i in range(20)]
    stamps[5:] = [s + 60_000 for s in stamps[5:]]    # a gap of 70 s before row 5
    stamps[12] = stamps[11]                           # a repeated timestamp at row 12
    stamps[15] = stamps[15] + 200                     # jitter
    data = to_csv(["timestamp", "x"], [[s / 1000, i] for i, s in enumerate(stamps)])
    time = run_job("profile", {"dataset": data}, {}).report["details"]["time"]
    steps = [b - a for a, b in zip(stamps, stamps[1:])]
    positive = [d for d in steps if d > 0]
    med = statistics.median(positive)
    assert time["median_interval_ms"] == med == 10_000
    assert time["non_increasing"] == {"count": 1, "rows": [12]}
    assert time["gaps"]["count"] == 1 and time["gaps"]["list"][0]["row"] == 5
    assert time["gaps"]["list"][0]["interval_ms"] == 70_000
    assert time["gaps"]["missing_samples_estimate"] == 6
    regular = [d for d in positive if d <= 3 * med]
    assert time["jitter_mad_ms"] == statistics.median([abs(d - med) for d in regular])
    assert time["span_ms"] == max(stamps) - min(stamps)


def test_pilot_profile_finds_the_injected_faults(pilot):
    f = pilot.faults
    r = run_job("profile", {"dataset": pilot.to_csv(), "model": json.dumps(twin_model(2)).encode()}, {})
    d = r.report["details"]
    assert [g["row"] for g in d["time"]["gaps"]["list"]] == [g["row"] for g in f["gaps"]]
    assert d["time"]["non_increasing"]["rows"] == [f["duplicate_row"]]
    for name, rows in f["dropouts"].items():
        assert d["columns"][name]["missing"]["count"] == len(rows)
    for name, row in f["spikes"].items():
        assert d["columns"][name]["faulty"]["rows"] == [row]
        assert d["columns"][name]["range"]["above"] == 1 and d["columns"][name]["range"]["source"] == "model"
    assert d["columns"]["temperature_c"]["longest_constant_run"]["length"] >= f["stuck"]["temperature_c"]["length"]
    assert r.summary["faulty_readings"] == len(f["spikes"])


def test_ranges_parameter_overrides_the_model():
    data = to_csv(["x"], [[v] for v in (1, 5, 10, -2)])
    col = run_job("profile", {"dataset": data}, {"time_column": None, "ranges": {"x": [0, 6]}}) \
        .report["details"]["columns"]["x"]
    assert col["range"] == {"declared": [0.0, 6.0], "source": "params", "below": 1, "above": 1, "rows": [2, 3]}
    assert col["faulty"] == {"count": 2, "rows": [2, 3]}


def test_csv_and_parquet_reports_are_identical(pilot):
    model = json.dumps(twin_model(1)).encode()
    a = run_job("profile", {"dataset": pilot.to_csv(), "model": model}, {})
    b = run_job("profile", {"dataset": pilot.to_parquet(), "model": model}, {})
    assert a.report_json == b.report_json and a.report_markdown == b.report_markdown


def test_report_is_deterministic(pilot):
    a = run_job("profile", {"dataset": pilot.to_csv()}, {"gap_factor": 2.5})
    b = run_job("profile", {"dataset": simulate(21).to_csv()}, {"gap_factor": 2.5})
    assert a.report_json == b.report_json
    assert json.loads(a.report_json) == a.report


# --- random tables --------------------------------------------------------------------------

cell = st.one_of(
    st.sampled_from(["", "nan", "inf", "-inf", "NA", "1e308", "-1e308", "0", "x", "2025-01-01T00:00:00Z"]),
    st.floats(allow_nan=False).map(repr),
    st.integers(-10**20, 10**20).map(str),
    st.text(max_size=6),
)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 4).flatmap(lambda w: st.tuples(
    st.lists(st.text(min_size=0, max_size=5), min_size=w, max_size=w),
    st.lists(st.lists(cell, min_size=w, max_size=w), min_size=0, max_size=12))))
def test_random_tables_never_raise_anything_but_job_input_error(table):
    header, rows = table
    for time_column in ("timestamp", None):
        try:
            r = run_job("profile", {"dataset": to_csv(header, rows)}, {"time_column": time_column})
        except JobInputError as exc:
            assert exc.reason in ("empty_input", "non_numeric", "unreadable_format", "invalid_parameters")
        else:
            assert json.loads(r.report_json) == r.report


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10**12), st.one_of(st.none(), st.floats(width=64))),
                min_size=1, max_size=25))
def test_random_tables_give_the_same_report_from_csv_and_parquet(rows):
    text = to_csv(["timestamp", "x"], [[t / 1000, "" if v is None else repr(v)] for t, v in rows])
    sink = io.BytesIO()
    pq.write_table(pa.table({"timestamp": pa.array([t for t, _ in rows], pa.timestamp("ms", "UTC")),
                             "x": pa.array([v for _, v in rows], pa.float64())}), sink)
    a = run_job("profile", {"dataset": text}, {})
    b = run_job("profile", {"dataset": sink.getvalue()}, {})
    assert a.report_json == b.report_json
