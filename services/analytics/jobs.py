"""The built-in compute-to-data jobs and their registry. No foreign code runs: a request
names one of these jobs, its inputs (bytes or a Path the node resolved from an asset
version) and JSON parameters.

    result = run_job("profile", {"dataset": Path("run.csv")}, {"gap_factor": 3})
    result.report_json        # canonical JSON bytes, identical for identical inputs
    result.report_markdown    # the same findings for people

    job        inputs                       parameters (all optional)
    profile    dataset, [model]             time_column, columns, gap_factor, outlier_threshold, ranges
    stats      dataset                      window ("1h", "15min", seconds), time_column, columns
    validate   model, dataset               —

Every failure is a JobInputError (errors.py) with a stable `reason`; the node audits it.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from . import _profile, _stats, _validate
from ._report import REPORT_SCHEMA, canonical_json
from ._twin_model import load_model
from .errors import JobInputError
from .tabular import DEFAULT_LIMITS, Table, TableLimits, read_table

Inputs = Mapping[str, bytes | bytearray | memoryview | Path]


@dataclass(frozen=True)
class JobResult:
    job: str
    params: dict
    summary: dict
    report: dict
    report_json: bytes
    report_markdown: str


@dataclass(frozen=True)
class _JobSpec:
    title: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    params: Callable[[dict], dict]
    run: Callable[[Inputs, dict, TableLimits], tuple[dict, dict, str]]


def available_jobs() -> dict[str, dict]:
    """name → {title, inputs, optional_inputs}: what a node can advertise."""
    return {name: {"title": s.title, "inputs": list(s.required), "optional_inputs": list(s.optional)}
            for name, s in sorted(_JOBS.items())}


def run_job(name: str, inputs: Inputs, params: Mapping | None = None, *,
            limits: TableLimits = DEFAULT_LIMITS) -> JobResult:
    """Run built-in job `name`. Raises JobInputError (never anything else for bad input)."""
    spec = _JOBS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise JobInputError("invalid_parameters",
                            f"unknown job {str(name)[:40]!r}; available: {', '.join(sorted(_JOBS))}")
    if not isinstance(inputs, Mapping):
        raise JobInputError("invalid_parameters", "inputs must be a mapping of input name → bytes or Path")
    unknown = [k for k in inputs if k not in spec.required + spec.optional]
    absent = [k for k in spec.required if k not in inputs]
    if unknown or absent:
        raise JobInputError("invalid_parameters",
                            f"job {name!r} takes inputs {list(spec.required)} (optional "
                            f"{list(spec.optional)}); unknown {unknown}, missing {absent}")
    for key, value in inputs.items():
        if not isinstance(value, (bytes, bytearray, memoryview, Path)):
            raise JobInputError("invalid_parameters", f"input {key!r} must be bytes or a Path")
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise JobInputError("invalid_parameters", "params must be a JSON object")
    normalised = spec.params(dict(params))
    summary, details, body = spec.run(inputs, normalised, limits)
    report = {"schema": REPORT_SCHEMA, "job": name, "params": normalised,
              "summary": summary, "details": details}
    markdown = f"# {spec.title}\n\n{body.rstrip()}\n"
    return JobResult(job=name, params=normalised, summary=summary, report=report,
                     report_json=canonical_json(report), report_markdown=markdown)


# --- parameters ---------------------------------------------------------------------------

def _bad(message: str) -> JobInputError:
    return JobInputError("invalid_parameters", message)


def _only(params: dict, allowed: tuple[str, ...]) -> None:
    unknown = sorted(str(k)[:40] for k in params if k not in allowed)
    if unknown:
        raise _bad(f"unknown parameter(s) {unknown}; allowed: {list(allowed)}")


def _number(params: dict, key: str, default: float, *, above: float) -> float:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value <= above:
        raise _bad(f"{key} must be a number greater than {above}")
    return float(value)


def _time_column(params: dict) -> str | None:
    value = params.get("time_column", "timestamp")
    if value is not None and (not isinstance(value, str) or not value):
        raise _bad("time_column must be a column name or null")
    return value


def _columns(params: dict) -> list[str] | None:
    value = params.get("columns")
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(c, str) and c for c in value):
        raise _bad("columns must be a non-empty list of column names")
    if len(set(value)) != len(value):
        raise _bad("columns must not repeat a name")
    return list(value)


def _profile_params(params: dict) -> dict:
    _only(params, ("time_column", "columns", "gap_factor", "outlier_threshold", "ranges"))
    ranges = params.get("ranges") or {}
    if not isinstance(ranges, dict):
        raise _bad("ranges must map column names to [low, high]")
    checked = {}
    for col, rng in ranges.items():
        if not (isinstance(rng, list) and len(rng) == 2 and all(
                not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x) for x in rng)
                and rng[0] < rng[1]):
            raise _bad(f"ranges[{str(col)[:40]!r}] must be [low, high] with low < high")
        checked[col] = [float(rng[0]), float(rng[1])]
    return {"time_column": _time_column(params), "columns": _columns(params),
            "gap_factor": _number(params, "gap_factor", 3.0, above=1.0),
            "outlier_threshold": _number(params, "outlier_threshold", 3.5, above=0.0),
            "ranges": checked}


_UNITS_MS = {"ms": 1, "s": 1000, "min": 60_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_WINDOW = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h|d)\s*")


def _stats_params(params: dict) -> dict:
    _only(params, ("window", "time_column", "columns"))
    window = params.get("window", "1h")
    if isinstance(window, str) and (m := _WINDOW.fullmatch(window)):
        window_ms = float(m.group(1)) * _UNITS_MS[m.group(2)]
    elif not isinstance(window, bool) and isinstance(window, (int, float)) and math.isfinite(window):
        window_ms = float(window) * 1000.0
    else:
        raise _bad(f"window must be seconds or a duration like '1h', '15min', '30s', not {str(window)[:40]!r}")
    if window_ms < 1 or window_ms != int(window_ms) or window_ms > 366 * 86_400_000:
        raise _bad("window must be a whole number of milliseconds between 1 ms and 366 days")
    time_column = _time_column(params)
    if time_column is None:
        raise _bad("stats needs a time column")
    return {"window_ms": int(window_ms), "time_column": time_column, "columns": _columns(params)}


def _validate_params(params: dict) -> dict:
    _only(params, ())
    return {}


# --- runners ------------------------------------------------------------------------------

def _read(inputs: Inputs, name: str, limits: TableLimits, **kwargs) -> Table:
    try:
        return read_table(inputs[name], limits=limits, **kwargs)
    except JobInputError as exc:
        raise exc.with_input(name) from None


def _model(inputs: Inputs, name: str = "model"):
    try:
        return load_model(inputs[name])
    except JobInputError as exc:
        raise exc.with_input(name) from None


def _run_profile(inputs: Inputs, params: dict, limits: TableLimits) -> tuple[dict, dict, str]:
    model = _model(inputs) if "model" in inputs else None
    table = _read(inputs, "dataset", limits, columns=params["columns"], time_column=params["time_column"])
    return _profile.profile(table, model, params)


def _run_stats(inputs: Inputs, params: dict, limits: TableLimits) -> tuple[dict, dict, str]:
    table = _read(inputs, "dataset", limits, columns=params["columns"],
                  time_column=params["time_column"], require_time=True)
    return _stats.stats(table, params)


def _run_validate(inputs: Inputs, params: dict, limits: TableLimits) -> tuple[dict, dict, str]:
    model = _model(inputs)
    needed = [model.speed.column, model.feed.column, model.wear.column]
    try:
        table = _read(inputs, "dataset", limits, columns=needed,
                      time_column=model.cutting_time.column, require_time=True)
    except JobInputError as exc:
        if exc.reason != "missing_columns":
            raise
        raise JobInputError("model_mismatch", f"the model needs column(s) the dataset lacks: "
                            f"{', '.join(map(repr, exc.columns))}", columns=exc.columns,
                            input_name="dataset") from None
    return _validate.validate(model, table)


_JOBS: dict[str, _JobSpec] = {
    "profile": _JobSpec("Data-quality profile", ("dataset",), ("model",), _profile_params, _run_profile),
    "stats": _JobSpec("Windowed statistics", ("dataset",), (), _stats_params, _run_stats),
    "validate": _JobSpec("Twin model validation", ("model", "dataset"), (), _validate_params, _run_validate),
}
