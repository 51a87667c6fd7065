"""Group commit (ledger/audit/_group.py) and the audit log's use of it: concurrent appends
share transactions, each caller gets its own result or error, a failing item fails alone,
and a nonce-style claim commits with its record or not at all (SQLite and PostgreSQL)."""
from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import Column, MetaData, String, Table, select

from ledger.audit import AuditKind, AuditLog
from ledger.audit._group import GroupCommit
from ledger.audit.log import Claim, Entry
from ledger.db import make_engine
from ledger.errors import AuditError
from tests.db import db_url, pg_url  # noqa: F401

ORG = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def _run_concurrently(n: int, fn) -> list:
    results: list = [None] * n
    start = threading.Barrier(n)

    def worker(i: int) -> None:
        start.wait()
        try:
            results[i] = ("ok", fn(i))
        except BaseException as exc:  # noqa: BLE001 - the assertion looks at it
            results[i] = ("error", exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    return results


def test_uncontended_submit_writes_one_item_per_batch():
    batches: list[list[int]] = []
    group = GroupCommit(lambda items: (batches.append(list(items)), [i * 10 for i in items])[1])
    assert [group.submit(i) for i in range(3)] == [0, 10, 20]
    assert batches == [[0], [1], [2]] and group.batches == 3


def test_concurrent_submits_are_batched_and_each_gets_its_own_result():
    batches: list[list[int]] = []
    lock = threading.Lock()

    def write(items):
        time.sleep(0.02)  # a slow commit: others queue behind it (no timing is asserted)
        with lock:
            batches.append(list(items))
        return [i * 10 for i in items]

    group = GroupCommit(write)
    results = _run_concurrently(16, group.submit)
    assert results == [("ok", i * 10) for i in range(16)]
    written = sorted(i for b in batches for i in b)
    assert written == list(range(16))  # every item exactly once
    assert len(batches) < 16  # and some transactions carried several items


def test_a_failing_item_fails_alone():
    def write(items):
        time.sleep(0.01)
        if 3 in items:
            raise ValueError("item 3 cannot be written")
        return [f"w{i}" for i in items]

    group = GroupCommit(write)
    results = _run_concurrently(8, group.submit)
    for i, (status, value) in enumerate(results):
        if i == 3:
            assert status == "error" and isinstance(value, ValueError)
        else:
            assert (status, value) == ("ok", f"w{i}")


def test_max_batch_bounds_a_transaction():
    sizes: list[int] = []

    def write(items):
        time.sleep(0.01)
        sizes.append(len(items))
        return list(items)

    group = GroupCommit(write, max_batch=3)
    assert [r[1] for r in _run_concurrently(12, group.submit)] == list(range(12))
    assert max(sizes) <= 3 and sum(sizes) == 12


@pytest.fixture
def log(db_url):  # noqa: F811
    engine = make_engine(db_url)
    table = Table("test_claims", MetaData(), Column("k", String(64), primary_key=True))
    table.create(engine, checkfirst=True)
    yield AuditLog(engine, ORG), table
    engine.dispose()


def test_claimed_append_takes_the_fallback_on_a_replay(log):
    audit, table = log
    entry = Entry(AuditKind.KEY_RELEASED, "consumer", 1, 1, {"n": 1})
    fallback = Entry(AuditKind.KEY_DENIED, "consumer", 1, 1, {"reason": "replayed_nonce"})
    first, fresh = audit.append_claimed(entry, Claim(table, {"k": "nonce-1"}), fallback)
    second, fresh2 = audit.append_claimed(entry, Claim(table, {"k": "nonce-1"}), fallback)
    assert (first.kind, fresh, second.kind, fresh2) == (AuditKind.KEY_RELEASED, True, AuditKind.KEY_DENIED, False)
    assert second.details == {"reason": "replayed_nonce"} and second.seq == first.seq + 1


def test_concurrent_claims_of_one_key_release_exactly_once(log):
    audit, table = log
    entry = Entry(AuditKind.KEY_RELEASED, "consumer")
    fallback = Entry(AuditKind.KEY_DENIED, "consumer", details={"reason": "replayed_nonce"})
    results = _run_concurrently(12, lambda i: audit.append_claimed(entry, Claim(table, {"k": "same"}), fallback))
    assert all(status == "ok" for status, _ in results)
    fresh = [rec for _, (rec, new) in results if new]
    assert len(fresh) == 1 and fresh[0].kind == AuditKind.KEY_RELEASED
    seqs = sorted(rec.seq for _, (rec, _) in results)
    assert seqs == list(range(1, 13)) and audit.last_seq() == 12  # gapless, one record each


def test_a_bad_record_rolls_back_its_claim_but_not_its_batch_mates(log):
    audit, table = log
    fallback = Entry(AuditKind.KEY_DENIED, "consumer", details={"reason": "replayed_nonce"})

    def one(i: int):
        details = {"score": 0.5} if i == 2 else {"i": i}  # floats are not in the record format
        return audit.append_claimed(Entry(AuditKind.KEY_RELEASED, "consumer", details=details),
                                    Claim(table, {"k": f"n{i}"}), fallback)

    results = _run_concurrently(6, one)
    assert results[2][0] == "error" and isinstance(results[2][1], AuditError)
    assert all(results[i][0] == "ok" and results[i][1][1] for i in range(6) if i != 2)
    with audit.engine.connect() as conn:
        keys = {row.k for row in conn.execute(select(table.c.k))}
    assert keys == {f"n{i}" for i in range(6) if i != 2}  # the failed record's claim rolled back
    assert audit.last_seq() == 5 and [r.seq for r in audit.iter_raw()] == [1, 2, 3, 4, 5]


def test_a_broken_append_connection_is_replaced(log):
    audit, _ = log
    assert audit.append(AuditKind.JOB_RUN, "analytics").seq == 1
    audit._appender._writer.dbapi_connection.close()  # the database connection dies under the log
    with pytest.raises(Exception):
        audit.append(AuditKind.JOB_RUN, "analytics")
    assert audit.append(AuditKind.JOB_RUN, "analytics").seq == 2  # a new connection; no seq lost
    audit.close()
    assert audit.append(AuditKind.JOB_RUN, "analytics").seq == 3 and audit.last_seq() == 3


def _append_in_process(db: str, n: int, queue) -> None:
    from ledger.audit import AuditKind as Kind, AuditLog as Log
    from ledger.db import make_engine as engine_for

    log = Log(engine_for(db), ORG, create_tables=False)
    queue.put([log.append(Kind.KEY_RELEASED, f"p{n}", 1, i).seq for i in range(25)])


def test_processes_appending_to_one_sqlite_log_take_turns(tmp_path):
    """Worker processes of one node append to one SQLite file: seqs stay gapless and unique,
    and the writers serialise on the side lock file next to the database."""
    import multiprocessing

    db = f"sqlite:///{tmp_path / 'node.db'}"
    log = AuditLog(make_engine(db), ORG)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_append_in_process, args=(db, n, queue)) for n in range(3)]
    for p in procs:
        p.start()
    seqs = sorted(s for _ in procs for s in queue.get(timeout=60))
    for p in procs:
        p.join(30)
    assert seqs == list(range(1, 76)) and log.last_seq() == 75
    assert (tmp_path / "node.db.audit-lock").exists()
