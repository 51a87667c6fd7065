"""The job registry: every job on bad data fails with the right reason, never a crash;
results are canonical and deterministic."""
from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from services.analytics import REASONS, JobInputError, JobLimitError, TableLimits, available_jobs, run_job
from services.pilot.data import sensor_dataset, sensor_dataset_parquet, twin_model

MODEL = json.dumps(twin_model(2)).encode()


def parquet(columns: dict) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink)
    return sink.getvalue()


GOOD_PARQUET = parquet({"timestamp": [0, 10], "cutting_speed_m_min": [150.0, 150.0],
                        "feed_mm_rev": [0.2, 0.2], "flank_wear_mm": [0.0, 0.01]})
HEADER = b"timestamp,cutting_speed_m_min,feed_mm_rev,flank_wear_mm\n"

BAD_DATASETS = {
    "empty file": (b"", "empty_input"),
    "header only": (HEADER, "empty_input"),
    "garbage bytes": (bytes(range(256)) * 4, "unreadable_format"),
    "truncated parquet": (GOOD_PARQUET[: len(GOOD_PARQUET) // 2], "unreadable_format"),
    "parquet magic, no footer": (b"PAR1" + b"\0" * 64, "unreadable_format"),
    "ragged rows": (HEADER + b"0,150,0.2\n", "unreadable_format"),
    "non-numeric value": (HEADER + b"0,150,0.2,0.01\n10,fast,0.2,0.02\n", "non_numeric"),
    "bad timestamp": (HEADER + b"0,150,0.2,0.01\nnoon,150,0.2,0.02\n", "non_numeric"),
}


def job_inputs(job: str, dataset: bytes) -> dict:
    return {"dataset": dataset} | ({"model": MODEL} if job == "validate" else {})


@pytest.mark.parametrize("job", ["profile", "stats", "validate"])
@pytest.mark.parametrize("case", list(BAD_DATASETS))
def test_every_job_fails_cleanly_on_bad_data(job, case):
    data, reason = BAD_DATASETS[case]
    with pytest.raises(JobInputError) as exc:
        run_job(job, job_inputs(job, data), {})
    assert exc.value.reason == reason and exc.value.input_name == "dataset"
    record = exc.value.to_dict()
    assert json.loads(json.dumps(record)) == record and record["reason"] == reason


@pytest.mark.parametrize("job, params, dataset, reason, columns", [
    ("profile", {"columns": ["vibration_rms_g"]}, HEADER + b"0,1,2,3\n", "missing_columns", ("vibration_rms_g",)),
    ("stats", {}, b"t,a\n0,1\n", "missing_columns", ("timestamp",)),
    ("validate", {}, b"timestamp,flank_wear_mm\n0,0.1\n", "model_mismatch",
     ("cutting_speed_m_min", "feed_mm_rev")),
])
def test_missing_columns_per_job(job, params, dataset, reason, columns):
    with pytest.raises(JobInputError) as exc:
        run_job(job, job_inputs(job, dataset), params)
    assert (exc.value.reason, exc.value.columns) == (reason, columns)


@pytest.mark.parametrize("name, inputs, params", [
    ("train", {"dataset": b"a\n1\n"}, {}),                          # unknown job: no foreign code
    (None, {"dataset": b"a\n1\n"}, {}),
    ("profile", {}, {}),                                            # missing input
    ("profile", {"dataset": b"a\n1\n", "script": b"print(1)"}, {}),  # unknown input
    ("profile", {"dataset": "a\n1\n"}, {}),                         # str is not bytes
    ("profile", [("dataset", b"a\n1\n")], {}),
    ("profile", {"dataset": b"a\n1\n"}, ["gap_factor", 3]),
    ("profile", {"dataset": b"a\n1\n"}, {"gap_factor": 1}),
    ("profile", {"dataset": b"a\n1\n"}, {"gap_factor": "3"}),
    ("profile", {"dataset": b"a\n1\n"}, {"outlier_threshold": -1}),
    ("profile", {"dataset": b"a\n1\n"}, {"ranges": {"a": [5, 1]}}),
    ("profile", {"dataset": b"a\n1\n"}, {"ranges": [1, 2]}),
    ("profile", {"dataset": b"a\n1\n"}, {"time_column": 7}),
    ("profile", {"dataset": b"a\n1\n"}, {"code": "import os"}),
    ("validate", {"dataset": b"a\n1\n", "model": MODEL}, {"window": "1h"}),
])
def test_bad_jobs_inputs_and_parameters(name, inputs, params):
    with pytest.raises(JobInputError) as exc:
        run_job(name, inputs, params)
    assert exc.value.reason == "invalid_parameters"


def test_limits_are_passed_through():
    with pytest.raises(JobLimitError) as exc:
        run_job("profile", {"dataset": sensor_dataset(1, hours=1)}, {}, limits=TableLimits(max_rows=100))
    assert exc.value.to_dict()["limit"] == "rows" and exc.value.reason == "too_large"


def test_paths_and_bytes_give_the_same_result(tmp_path):
    csv_path, parquet_path = tmp_path / "run.csv", tmp_path / "run.bin"
    csv_path.write_bytes(sensor_dataset(2, hours=1))
    parquet_path.write_bytes(sensor_dataset_parquet(2, hours=1))  # sniffed, not by suffix
    model_path = tmp_path / "model.json"
    model_path.write_bytes(MODEL)
    by_bytes = run_job("validate", {"model": MODEL, "dataset": csv_path.read_bytes()}, {})
    for dataset in (csv_path, parquet_path):
        assert run_job("validate", {"model": model_path, "dataset": dataset}, {}).report_json == by_bytes.report_json


def test_report_is_canonical_json_and_deterministic():
    data = sensor_dataset(9, hours=2)
    results = [run_job(job, job_inputs(job, data), {}) for job in ("profile", "stats", "validate")]
    again = [run_job(job, job_inputs(job, sensor_dataset(9, hours=2)), {}) for job in ("profile", "stats", "validate")]
    for r, r2 in zip(results, again):
        assert r.report_json == r2.report_json and r.report_markdown == r2.report_markdown
        decoded = json.loads(r.report_json)
        assert decoded == r.report and decoded["job"] == r.job and decoded["summary"] == r.summary
        assert json.dumps(decoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() == r.report_json
        assert r.report_markdown.startswith("# ")
    assert results[1].params == {"window_ms": 3_600_000, "time_column": "timestamp", "columns": None}


def test_errors_are_picklable_and_describable():
    err = JobInputError("non_numeric", "bad", columns=["a"], rows=[3]).with_input("dataset")
    clone = pickle.loads(pickle.dumps(err))
    assert clone.to_dict() == err.to_dict() == {"reason": "non_numeric", "message": "dataset: bad",
                                                "columns": ["a"], "rows": [3], "input": "dataset"}
    limit = pickle.loads(pickle.dumps(JobLimitError("rows", 10, 11)))
    assert (limit.limit, limit.maximum, limit.actual, limit.reason) == ("rows", 10, 11, "too_large")
    with pytest.raises(ValueError):
        JobInputError("because", "no such reason")
    assert set(REASONS) >= {"empty_input", "missing_columns", "model_mismatch", "invalid_model"}


def test_available_jobs():
    jobs = available_jobs()
    assert sorted(jobs) == ["profile", "stats", "validate"]
    assert jobs["validate"]["inputs"] == ["model", "dataset"] and jobs["profile"]["optional_inputs"] == ["model"]


def test_engine_imports_only_numpy_pyarrow_and_stdlib(repo_root):
    """The node imports this engine; it must not pull in api/, ledger/, vault/ or web stacks."""
    code = ("import sys, services.analytics, services.pilot.data\n"
            "bad = sorted({m.split('.')[0] for m in sys.modules} & {'api', 'ledger', 'vault', 'fastapi',"
            " 'web3', 'httpx', 'sqlmodel', 'pandas'})\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
