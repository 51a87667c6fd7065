"""Compute-to-data analytics: the built-in jobs a node runs next to its data (no foreign
code). Pure computation — no HTTP, chain or encryption; only numpy, pyarrow and stdlib.

    from services.analytics import run_job
    result = run_job("validate", {"model": model_bytes, "dataset": Path("run.parquet")}, {})
"""
from .errors import REASONS, JobError, JobInputError, JobLimitError
from .jobs import JobResult, available_jobs, run_job
from .tabular import DEFAULT_LIMITS, Table, TableLimits, read_table, sniff_format

__all__ = [
    "DEFAULT_LIMITS", "REASONS", "JobError", "JobInputError", "JobLimitError", "JobResult",
    "Table", "TableLimits", "available_jobs", "read_table", "run_job", "sniff_format",
]
