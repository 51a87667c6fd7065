"""Report plumbing shared by the jobs: canonical JSON, number rounding, time rendering,
small Markdown tables.

Canonical JSON (hand-rolled on `json.dumps` because the report is hashed and
registered as an asset version): UTF-8, keys sorted, no insignificant whitespace, no
NaN/Infinity (`allow_nan=False`). Floats are rounded to `SIGNIFICANT` significant
digits before encoding so that the last-ulp differences of summation order cannot
change the bytes; a non-finite result (e.g. the mean of values near 1e308) is `null`.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np

REPORT_SCHEMA = "twinledger/analytics-report/1"
SIGNIFICANT = 10
ROW_SAMPLE = 10  # how many offending row indices a report lists per finding


def num(x: float | np.floating | int | None) -> float | None:
    """A JSON-safe float rounded to SIGNIFICANT digits; None if absent or non-finite."""
    if x is None:
        return None
    x = float(x)
    if not math.isfinite(x):
        return None
    r = float(f"{x:.{SIGNIFICANT}g}")
    if not math.isfinite(r):  # rounding up near the float64 maximum overflows
        r = x
    return 0.0 if r == 0 else r  # no "-0.0" in reports


def rows(indices: np.ndarray | Sequence[int], limit: int = ROW_SAMPLE) -> list[int]:
    return [int(i) for i in list(indices[:limit])]


def iso_ms(ms: int) -> str:
    """Unix ms → ISO 8601 UTC with millisecond precision ("2025-03-03T06:00:00.000Z")."""
    dt = _EPOCH + timedelta(milliseconds=int(ms))
    return f"{dt.year:04d}" + dt.strftime("-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def fmt(x: object) -> str:
    """A value for a Markdown cell."""
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x).replace("|", "\\|").replace("\n", " ")


def md_table(header: Sequence[str], body: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in body]
    return "\n".join(lines)
