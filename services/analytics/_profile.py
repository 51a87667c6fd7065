"""The `profile` job: data quality of one dataset.

Per column: completeness (fraction of rows holding a finite number), missing cells
(empty/null), non-finite readings (NaN, ±inf), readings outside the declared physical
range (from the twin model's `sensors`/`inputs`/`output`, or the `ranges` parameter,
which wins), min/max/mean/std over finite readings, outliers by the robust z-score
0.6745·|x − median| / MAD > threshold (Iglewicz & Hoaglin; skipped when MAD = 0), and
the longest run of one repeated value (a stuck sensor shows up here). Faulty readings
= non-finite + out of physical range.

Time: first/last timestamp, non-increasing steps (each step t[i] <= t[i-1], reported at
row i), median sampling interval over increasing steps, jitter (MAD and std of the
increasing steps that are not gaps), gaps (steps > gap_factor × median, at the row
after the gap) and an estimate of the samples lost in them.
"""
from __future__ import annotations

import numpy as np

from ._report import iso_ms, md_table, num, rows
from ._twin_model import TwinModel
from .tabular import Table

ROBUST_Z = 0.6745


def profile(table: Table, model: TwinModel | None, params: dict) -> tuple[dict, dict, str]:
    declared: dict[str, tuple[list[float], str]] = {}
    if model is not None:
        for col, (physical, _valid) in model.declared_ranges().items():
            if physical is not None:
                declared[col] = (list(physical), "model")
    for col, rng in params["ranges"].items():
        declared[col] = (rng, "params")
    columns = {name: _column(table.columns[name], table.missing[name], declared.get(name),
                             params["outlier_threshold"]) for name in table.names}
    time = _time(table, params["gap_factor"])
    completeness = [c["completeness"] for c in columns.values()]
    summary = {
        "rows": table.n_rows,
        "columns": len(columns),
        "cells": table.n_rows * len(columns),
        "completeness_min": min(completeness) if completeness else None,
        "completeness_mean": num(np.mean(completeness)) if completeness else None,
        "missing_cells": sum(c["missing"]["count"] for c in columns.values()),
        "faulty_readings": sum(c["faulty"]["count"] for c in columns.values()),
        "outliers": sum((c["outliers"]["count"] or 0) for c in columns.values()),
        "gaps": time["gaps"]["count"] if time else None,
        "non_increasing_steps": time["non_increasing"]["count"] if time else None,
    }
    details = {"columns": columns, "time": time}
    return summary, details, _markdown(summary, columns, time)


def _column(v: np.ndarray, missing: np.ndarray, declared: tuple[list[float], str] | None,
            threshold: float) -> dict:
    n = len(v)
    finite = np.isfinite(v)
    fv = v[finite]
    non_finite = ~missing & ~finite
    out = np.zeros(n, dtype=bool)
    range_info = None
    if declared is not None:
        (lo, hi), source = declared
        below, above = finite & (v < lo), finite & (v > hi)
        out = below | above
        range_info = {"declared": [lo, hi], "source": source, "below": int(below.sum()),
                      "above": int(above.sum()), "rows": rows(np.flatnonzero(out))}
    faulty = non_finite | out
    with np.errstate(all="ignore"):
        col = {
            "completeness": num(finite.sum() / n) if n else None,
            "missing": {"count": int(missing.sum()), "rows": rows(np.flatnonzero(missing))},
            "non_finite": {"count": int(non_finite.sum()), "rows": rows(np.flatnonzero(non_finite))},
            "faulty": {"count": int(faulty.sum()), "rows": rows(np.flatnonzero(faulty))},
            "range": range_info,
            "min": num(fv.min()) if len(fv) else None,
            "max": num(fv.max()) if len(fv) else None,
            "mean": num(fv.mean()) if len(fv) else None,
            "std": num(fv.std()) if len(fv) else None,
            "outliers": _outliers(v, finite, threshold),
            "longest_constant_run": _constant_run(v),
        }
    return col


def _outliers(v: np.ndarray, finite: np.ndarray, threshold: float) -> dict:
    out = {"method": "robust_z", "threshold": num(threshold), "count": None, "rows": [], "skipped": None}
    fv = v[finite]
    if len(fv) == 0:
        out["skipped"] = "no finite values"
        return out
    med = np.median(fv)
    mad = np.median(np.abs(fv - med))
    if not np.isfinite(mad) or mad == 0:
        out["skipped"] = "median absolute deviation is 0" if mad == 0 else "values overflow"
        return out
    z = np.zeros(len(v))
    z[finite] = ROBUST_Z * np.abs(v[finite] - med) / mad
    flagged = np.flatnonzero(z > threshold)
    out.update(count=int(len(flagged)), rows=rows(flagged), median=num(med), mad=num(mad))
    return out


def _constant_run(v: np.ndarray) -> dict | None:
    """Longest run of consecutive identical finite values (length >= 2), or None."""
    if len(v) < 2:
        return None
    same = (v[1:] == v[:-1]) & np.isfinite(v[1:])
    if not same.any():
        return None
    padded = np.concatenate([[0], same.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    starts, ends = edges[::2], edges[1::2]
    k = int(np.argmax(ends - starts))  # first of the longest
    return {"length": int(ends[k] - starts[k] + 1), "first_row": int(starts[k])}


def _time(table: Table, gap_factor: float) -> dict | None:
    ts = table.timestamps
    if ts is None:
        return None
    d = np.diff(ts)
    non_inc = np.flatnonzero(d <= 0) + 1
    positive = d[d > 0]
    out = {
        "column": table.time_column,
        "first": iso_ms(int(ts[0])), "last": iso_ms(int(ts[-1])),
        "first_ms": int(ts[0]), "last_ms": int(ts[-1]),
        "span_ms": int(ts.max() - ts.min()),
        "non_increasing": {"count": int(len(non_inc)), "rows": rows(non_inc)},
        "median_interval_ms": None, "jitter_mad_ms": None, "jitter_std_ms": None,
        "gap_factor": num(gap_factor),
        "gaps": {"count": 0, "total_ms": 0, "missing_samples_estimate": 0, "list": []},
    }
    if len(positive) == 0:
        return out
    median = float(np.median(positive))
    is_gap = d > gap_factor * median
    regular = positive[positive <= gap_factor * median]
    gap_rows = np.flatnonzero(is_gap) + 1
    out.update(
        median_interval_ms=num(median),
        jitter_mad_ms=num(np.median(np.abs(regular - median))),
        jitter_std_ms=num(regular.std()),
    )
    out["gaps"] = {
        "count": int(len(gap_rows)),
        "total_ms": int(d[is_gap].sum()),
        "missing_samples_estimate": int(np.sum(np.rint(d[is_gap] / median) - 1)),
        "list": [{"row": int(r), "from": iso_ms(int(ts[r - 1])), "to": iso_ms(int(ts[r])),
                  "interval_ms": int(d[r - 1])} for r in gap_rows[:10]],
    }
    return out


def _markdown(summary: dict, columns: dict, time: dict | None) -> str:
    parts = [f"{summary['rows']} rows, {summary['columns']} value columns; "
             f"{summary['missing_cells']} missing cells, {summary['faulty_readings']} faulty "
             f"readings, {summary['outliers']} outliers."]
    if time is not None:
        parts.append(
            f"Time ({time['column']}): {time['first']} → {time['last']}; median interval "
            f"{time['median_interval_ms']} ms (jitter MAD {time['jitter_mad_ms']} ms); "
            f"{time['gaps']['count']} gaps (about {time['gaps']['missing_samples_estimate']} samples "
            f"lost); {time['non_increasing']['count']} non-increasing steps.")
    body = [(name, c["completeness"], c["min"], c["max"], c["mean"], c["std"], c["missing"]["count"],
             c["faulty"]["count"], c["outliers"]["count"],
             c["longest_constant_run"]["length"] if c["longest_constant_run"] else None)
            for name, c in columns.items()]
    parts.append(md_table(("column", "completeness", "min", "max", "mean", "std", "missing",
                           "faulty", "outliers", "longest constant run"), body))
    return "\n\n".join(parts)
