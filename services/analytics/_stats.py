"""The `stats` job: aggregates per value column over fixed time windows.

Windows are aligned to the unix epoch ([k·w, (k+1)·w) in ms), so the same reading
always falls in the same window whatever the dataset's start; only windows holding at
least one row are listed, in time order (rows need not be sorted). Per column and
window: count of finite readings, mean, min, max and population std (ddof = 0); null
when the window holds no finite reading.
"""
from __future__ import annotations

import numpy as np

from ._report import iso_ms, md_table, num
from .errors import JobLimitError
from .tabular import Table

MAX_WINDOWS = 10_000
MD_WINDOWS = 48  # windows rendered in Markdown per column; the JSON has them all


def stats(table: Table, params: dict) -> tuple[dict, dict, str]:
    w = params["window_ms"]
    ts = table.timestamps
    index = np.floor_divide(ts, w)
    keys, inverse, counts = np.unique(index, return_inverse=True, return_counts=True)
    if len(keys) > MAX_WINDOWS:
        raise JobLimitError("windows", MAX_WINDOWS, len(keys), input_name="dataset")
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    per_column = {name: _aggregate(table.columns[name], inverse, order, starts, len(keys))
                  for name in table.names}
    windows = []
    for k, key in enumerate(keys.tolist()):
        windows.append({
            "start_ms": key * w, "end_ms": (key + 1) * w, "start": iso_ms(key * w), "rows": int(counts[k]),
            "columns": {name: {stat: values[k] for stat, values in agg.items()}
                        for name, agg in per_column.items()},
        })
    summary = {"rows": table.n_rows, "windows": len(windows), "window_ms": w,
               "columns": list(table.names)}
    details = {"window_ms": w, "windows": windows}
    return summary, details, _markdown(summary, windows)


def _aggregate(v: np.ndarray, inverse: np.ndarray, order: np.ndarray, starts: np.ndarray,
               n_windows: int) -> dict[str, list]:
    finite = np.isfinite(v)
    clean = np.where(finite, v, np.nan)
    with np.errstate(all="ignore"):
        count = np.bincount(inverse[finite], minlength=n_windows)
        total = np.bincount(inverse[finite], weights=v[finite], minlength=n_windows)
        mean = total / count
        dev = v[finite] - mean[inverse[finite]]
        var = np.bincount(inverse[finite], weights=dev * dev, minlength=n_windows) / count
        sorted_values = clean[order]
        lo = np.fmin.reduceat(sorted_values, starts)
        hi = np.fmax.reduceat(sorted_values, starts)
        std = np.sqrt(var)
    has = count > 0
    pick = (lambda arr: [num(x) if h else None for x, h in zip(arr.tolist(), has.tolist())])
    return {"count": [int(c) for c in count.tolist()], "mean": pick(mean), "min": pick(lo),
            "max": pick(hi), "std": pick(std)}


def _markdown(summary: dict, windows: list[dict]) -> str:
    parts = [f"{summary['rows']} rows in {summary['windows']} windows of "
             f"{summary['window_ms'] / 1000:g} s."]
    for name in summary["columns"]:
        body = [(win["start"], c["count"], c["mean"], c["min"], c["max"], c["std"])
                for win in windows[:MD_WINDOWS] for c in [win["columns"][name]]]
        parts.append(f"## {name}\n\n" + md_table(("window start", "count", "mean", "min", "max", "std"), body))
        if len(windows) > MD_WINDOWS:
            parts.append(f"… {len(windows) - MD_WINDOWS} more windows in the JSON report.")
    return "\n\n".join(parts)
