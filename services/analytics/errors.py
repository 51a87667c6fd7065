"""Errors raised by the compute-to-data job engine. Nothing here knows about HTTP;
api/ maps these to statuses and writes them to the audit log (see `JobError.to_dict`).

    JobError                              root: a built-in job could not produce a result
    └── JobInputError (ValueError)        the inputs or parameters are unusable; `reason` is a
        │                                 stable code, `columns`/`rows` name the offenders:
        │                                   empty_input          no header, or no data rows
        │                                   missing_columns      a required column is absent
        │                                   non_numeric          a cell is not a number/timestamp
        │                                   unreadable_format    not CSV/Parquet, bad encoding,
        │                                                        ragged rows, truncated file
        │                                   too_large            see JobLimitError
        │                                   model_mismatch       the twin model does not fit the
        │                                                        dataset (columns, no usable rows)
        │                                   invalid_model        the twin model JSON is malformed
        │                                   invalid_parameters   unknown job/input, bad parameter
        └── JobLimitError                 reason "too_large": `limit` (bytes, rows, columns,
                                          windows), `maximum` and `actual` say which and by how much

Rows are 0-based indices of data rows (the CSV header is not a row). Messages quote at
most `MAX_VALUE_CHARS` characters of an offending value, so a hostile cell cannot flood
the audit log.
"""
from __future__ import annotations

from collections.abc import Iterable

REASONS = (
    "empty_input",
    "missing_columns",
    "non_numeric",
    "unreadable_format",
    "too_large",
    "model_mismatch",
    "invalid_model",
    "invalid_parameters",
)

MAX_VALUE_CHARS = 40


def quote_value(value: object) -> str:
    """`repr` of an offending value, truncated to MAX_VALUE_CHARS characters."""
    text = repr(value)
    if len(text) > MAX_VALUE_CHARS:
        text = text[: MAX_VALUE_CHARS - 1] + "…"
    return text


class JobError(Exception):
    """Root of every job-engine error."""

    reason = "job_error"

    def to_dict(self) -> dict:
        """A JSON-ready description for the audit log and the API's error body."""
        return {"reason": self.reason, "message": str(self)}


class JobInputError(JobError, ValueError):
    """The job's inputs or parameters cannot be used. `reason` is one of REASONS."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        columns: Iterable[str] = (),
        rows: Iterable[int] = (),
        input_name: str | None = None,
    ) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown JobInputError reason {reason!r}")
        self.reason = reason
        self.columns = tuple(columns)
        self.rows = tuple(int(r) for r in rows)
        self.input_name = input_name
        prefix = f"{input_name}: " if input_name else ""
        self.message = prefix + message
        super().__init__(self.message)

    def with_input(self, input_name: str) -> JobInputError:
        """The same error, prefixed with the job input it concerns (if not already)."""
        if self.input_name is not None:
            return self
        clone = type(self).__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.input_name = input_name
        clone.message = f"{input_name}: {self.message}"
        Exception.__init__(clone, clone.message)
        return clone

    def to_dict(self) -> dict:
        out = {"reason": self.reason, "message": self.message,
               "columns": list(self.columns), "rows": list(self.rows)}
        if self.input_name is not None:
            out["input"] = self.input_name
        return out

    def __reduce__(self):  # picklable across processes despite the keyword-only arguments
        return (_rebuild, (type(self), self.__dict__.copy()))


class JobLimitError(JobInputError):
    """An input exceeds a configured limit (`limit` in bytes/rows/columns/windows)."""

    def __init__(self, limit: str, maximum: int, actual: int | None = None, *,
                 input_name: str | None = None) -> None:
        self.limit = limit
        self.maximum = int(maximum)
        self.actual = None if actual is None else int(actual)
        seen = f"more than {self.maximum}" if actual is None else str(self.actual)
        super().__init__("too_large", f"{limit}: {seen} exceeds the limit of {self.maximum}",
                         input_name=input_name)

    def to_dict(self) -> dict:
        out = super().to_dict()
        out.update(limit=self.limit, maximum=self.maximum, actual=self.actual)
        return out


def _rebuild(cls: type, state: dict) -> JobInputError:
    err = cls.__new__(cls)
    err.__dict__.update(state)
    Exception.__init__(err, state.get("message", ""))
    return err
