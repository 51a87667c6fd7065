"""The audit log's write path: group-committed appends (ledger/audit/_group.py) in plain
SQL on one kept DB-API connection, with an optional unique-row claim per record (the key
release path's request nonce) and, on a SQLite file, an flock that makes the worker
processes of one node take turns. AuditLog (ledger/audit/log.py) is the public face.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

from sqlalchemy import Table
from sqlalchemy.engine import Engine

from ledger.audit._group import GroupCommit
from ledger.audit.records import AuditRecord
from ledger.errors import AuditError


@dataclass(frozen=True)
class Entry:
    """What to log, before the log gives it a seq and a time."""

    kind: str
    actor: str
    asset_id: int | None = None
    version: int | None = None
    details: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Claim:
    """A row that must not exist yet in `table` (a unique key, such as a request nonce).
    Inserted in the same transaction as the record it guards."""

    table: Table
    row: Mapping[str, Any]


@dataclass(frozen=True)
class _Append:
    entry: Entry
    claim: Claim | None = None
    fallback: Entry | None = None


class Appender:
    """Appends records of `org` to the database behind `engine`; thread-safe."""

    def __init__(self, engine: Engine, org: str, clock: Callable[[], int]) -> None:
        self._engine = engine
        self._org = org
        self._clock = clock
        self._group: GroupCommit[_Append, tuple[AuditRecord, bool]] = GroupCommit(self._write)
        self._writer: Any = None  # the DB-API connection group commits use (see _write)
        self._finalizer: weakref.finalize | None = None
        self._lock_path = _sqlite_lock_path(engine)
        self._lock_fd: int | None = None
        self._lock_finalizer: weakref.finalize | None = None

    def submit(self, entry: Entry, claim: Claim | None = None,
               fallback: Entry | None = None) -> tuple[AuditRecord, bool]:
        return self._group.submit(_Append(entry, claim, fallback))

    def _write(self, items: Sequence[_Append]) -> list[tuple[AuditRecord, bool]]:
        """One transaction for a batch of appends (GroupCommit calls this from one thread at
        a time per log; other processes serialise on the head row).

        Plain SQL on a DB-API connection kept for appends (_connection): this runs once
        per key release, and building and compiling SQLAlchemy Core statements (and a pool
        checkout per transaction) cost more CPU than the database work itself (see
        benchmarks/keyrelease.py)."""
        sql = _sql(self._engine.dialect.paramstyle)
        out: list[tuple[AuditRecord, bool]] = []
        conn = self._connection()
        with self._writers_lock():
            return self._write_locked(conn, sql, items, out)

    def _write_locked(self, conn: Any, sql: _Sql, items: Sequence[_Append],
                      out: list[tuple[AuditRecord, bool]]) -> list[tuple[AuditRecord, bool]]:
        try:
            cursor = conn.cursor()
            try:
                cursor.execute(sql.take_seqs, (len(items), self._org))
                last, last_time = cursor.fetchone()
                now = max(int(self._clock()), last_time)  # time never decreases along seq
                seq = last - len(items) + 1
                for item in items:
                    claimed = item.claim is None or _insert_new(cursor, item.claim, sql.param)
                    e = item.entry if claimed else item.fallback
                    assert e is not None
                    out.append((AuditRecord(seq=seq, kind=e.kind, time=now, org=self._org, actor=e.actor,
                                            asset_id=e.asset_id, version=e.version, details=e.details or {}),
                                claimed))
                    seq += 1
                rows = [_row(record) for record, _ in out]
                cursor.executemany(sql.insert_record, [tuple(row[c] for c in _RECORD_COLUMNS) for row in rows])
                if now != last_time:
                    cursor.execute(sql.set_time, (now, self._org))
            finally:
                cursor.close()
            conn.commit()
        except BaseException:
            try:
                conn.rollback()
            except Exception:  # the connection itself is broken: the next batch opens a new one
                self.close()
            raise
        return out

    def _connection(self) -> Any:
        """One DB-API connection kept for appends: GroupCommit runs one batch at a time, so
        it is never shared, and checking one out of the pool for every batch cost as much
        as the batch's SQL."""
        if self._writer is None:
            self._writer = self._engine.raw_connection()
            self._finalizer = weakref.finalize(self, _close_quietly, self._writer)
        return self._writer

    @contextlib.contextmanager
    def _writers_lock(self) -> Iterator[None]:
        """On a SQLite file, an flock on `<db>.audit-lock` around the write transaction.
        Worker processes of one node share the file; SQLite makes a writer that finds the
        database locked sleep 1, 2, 5 … 100 ms between tries, which showed up as p99
        spikes, while an flock waiter wakes as soon as the holder is done. PostgreSQL
        queues appenders on the head row's lock by itself."""
        if self._lock_path is None:
            yield
            return
        if self._lock_fd is None:
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._lock_finalizer = weakref.finalize(self, os.close, self._lock_fd)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Release the append connection (appending later opens a new one)."""
        writer, self._writer = self._writer, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if writer is not None:
            _close_quietly(writer)
        fd, self._lock_fd = self._lock_fd, None
        if self._lock_finalizer is not None:
            self._lock_finalizer.detach()
            self._lock_finalizer = None
        if fd is not None:
            os.close(fd)


def _sqlite_lock_path(engine: Engine) -> str | None:
    """`<database file>.audit-lock` for a SQLite file database, else None."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database + ".audit-lock"


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - closing a connection that already broke
        pass


_RECORD_COLUMNS = ("org", "seq", "kind", "time", "actor", "asset_id", "version", "record_hash", "canonical")


class _Sql(NamedTuple):
    param: str
    take_seqs: str
    insert_record: str
    set_time: str


@functools.lru_cache(maxsize=4)
def _sql(paramstyle: str) -> _Sql:
    """The append statements for a DB-API paramstyle (sqlite3: qmark; psycopg: format/pyformat)."""
    p = "?" if paramstyle == "qmark" else "%s"
    return _Sql(
        param=p,
        take_seqs=f"UPDATE audit_heads SET last_seq = last_seq + {p} WHERE org = {p} RETURNING last_seq, last_time",
        insert_record=(f"INSERT INTO audit_records ({', '.join(_RECORD_COLUMNS)}) "
                       f"VALUES ({', '.join([p] * len(_RECORD_COLUMNS))})"),
        set_time=f"UPDATE audit_heads SET last_time = {p} WHERE org = {p}",
    )


def _insert_new(cursor: Any, claim: Claim, param: str) -> bool:
    """INSERT … ON CONFLICT DO NOTHING RETURNING (SQLite >= 3.35 and PostgreSQL): True if
    the row was new. Concurrent transactions inserting the same key wait for each other on
    the unique index, so exactly one wins. (RETURNING, not rowcount: psycopg reports -1
    for this statement.)"""
    columns = list(claim.row)
    for column in columns:  # names come from our own tables, but never trust them into SQL unchecked
        if column not in claim.table.c:
            raise AuditError(f"claim column {column!r} is not in table {claim.table.name}")
    key = next(iter(claim.table.primary_key.columns)).name
    values = ", ".join([param] * len(columns))
    cursor.execute(f"INSERT INTO {claim.table.name} ({', '.join(columns)}) VALUES ({values}) "
                   f"ON CONFLICT DO NOTHING RETURNING {key}", tuple(claim.row[c] for c in columns))
    return cursor.fetchone() is not None


def _row(record: AuditRecord) -> dict[str, Any]:
    return {"org": record.org, "seq": record.seq, "kind": str(record.kind), "time": record.time,
            "actor": record.actor, "asset_id": record.asset_id, "version": record.version,
            "record_hash": record.record_hash(), "canonical": record.canonical().decode("utf-8")}
