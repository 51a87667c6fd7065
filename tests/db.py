"""Database URL fixtures: every DB-backed test runs on SQLite and on PostgreSQL.

PostgreSQL (127.0.0.1:5432, database `test`, user `postgres`, trust auth) gets a fresh
database per test, created from `test` and dropped afterwards, so parallel workers never
share tables. In CI the server must be there; elsewhere its absence skips those cases.

    from tests.db import db_url  # noqa: F401   (in a conftest.py)
"""
from __future__ import annotations

import os
import uuid

import pytest

PG_ADMIN_DSN = os.environ.get("TWINLEDGER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_DSN, connect_timeout=3):
            return True
    except Exception:
        return False


@pytest.fixture
def pg_url():
    if not _pg_available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_DSN} in CI")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_DSN}")
    import psycopg

    name = f"tl_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tl.db'}"
    return request.getfixturevalue("pg_url")
