"""AuditLog storage on SQLite and PostgreSQL: gapless seqs under concurrency, queries
with keyset pagination, batch bookkeeping."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from ledger.audit import AuditKind, AuditLog, parse
from ledger.audit.merkle import leaf_hash
from ledger.db import make_engine
from ledger.errors import AuditError
from tests.db import db_url, pg_url  # noqa: F401

ORG = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
OTHER = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"


class Clock:
    def __init__(self, start: int = 1_700_000_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def engine(db_url):  # noqa: F811
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def test_append_assigns_gapless_seqs_and_commits(engine):
    clock = Clock()
    log = AuditLog(engine, ORG.lower(), clock=clock)
    assert log.org == ORG and log.last_seq() == 0
    first = log.append(AuditKind.KEY_RELEASED, OTHER, 1, 1, {"purpose": "maintenance"})
    clock.now += 5
    second = log.append("key_denied", OTHER, 1, 2, {"reason": "no grant"})
    assert (first.seq, second.seq) == (1, 2)
    assert second.time == first.time + 5 and second.kind is AuditKind.KEY_DENIED
    # A second AuditLog on a new engine (another process) sees the committed records.
    other = AuditLog(make_engine(str(engine.url.render_as_string(hide_password=False))), ORG)
    assert other.get(2) == second and other.last_seq() == 2
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT canonical, record_hash FROM audit_records WHERE seq = 1")).one()
    assert parse(stored.canonical) == first and bytes(stored.record_hash) == first.record_hash()


def test_a_failed_append_does_not_consume_a_seq(engine):
    log = AuditLog(engine, ORG)
    log.append(AuditKind.JOB_RUN, "analytics", details={"job": "profile"})
    with pytest.raises(AuditError, match="actor"):
        log.append(AuditKind.JOB_RUN, "x" * 300)  # fails inside the transaction, after the counter moved
    with pytest.raises(AuditError, match="floats"):
        log.append(AuditKind.JOB_RUN, "analytics", details={"score": 0.5})
    assert log.append(AuditKind.JOB_FAILED, "analytics").seq == 2
    assert log.last_seq() == 2


def test_concurrent_appends_are_gapless_and_unique(engine):
    log = AuditLog(engine, ORG)
    threads, per_thread = 4, 15
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            mine = AuditLog(engine, ORG)  # separate instances share only the database
            for i in range(per_thread):
                mine.append(AuditKind.KEY_RELEASED, f"consumer-{n}", n, i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert errors == []
    seqs = [r.seq for r in log.iter_raw()]
    assert seqs == list(range(1, threads * per_thread + 1))
    assert log.last_seq() == threads * per_thread
    for n in range(threads):  # each worker's records are all there, in its own order
        versions = [r.version for r in _all(log, actor=f"consumer-{n}")]
        assert versions == list(range(per_thread))


def _all(log: AuditLog, **filters):
    out, after = [], None
    while True:
        page = log.query(after_seq=after, limit=4, **filters)
        out.extend(page.records)
        if page.next_after_seq is None:
            return out
        after = page.next_after_seq


def test_logs_of_two_orgs_are_independent(engine):
    a, b = AuditLog(engine, ORG), AuditLog(engine, OTHER)
    a.append(AuditKind.GRANT_ISSUED, ORG, 1, None)
    assert b.append(AuditKind.GRANT_ISSUED, OTHER, 2, None).seq == 1
    assert [r.asset_id for r in _all(a)] == [1] and [r.asset_id for r in _all(b)] == [2]


def test_query_filters_and_keyset_pagination(engine):
    clock = Clock(1_000)
    log = AuditLog(engine, ORG, clock=clock)
    kinds = [AuditKind.KEY_RELEASED, AuditKind.KEY_DENIED, AuditKind.CONSUMPTION_RECORDED]
    for i in range(30):
        clock.now = 1_000 + 10 * i
        log.append(kinds[i % 3], f"actor-{i % 2}", asset_id=i % 4, version=1, details={"i": i})
    by_asset = _all(log, asset_id=2)
    assert [r.details["i"] for r in by_asset] == [i for i in range(30) if i % 4 == 2]
    by_actor_kind = _all(log, actor="actor-1", kind="key_denied")
    assert [r.details["i"] for r in by_actor_kind] == [i for i in range(30) if i % 2 == 1 and i % 3 == 1]
    window = _all(log, kind=AuditKind.KEY_RELEASED, since=1_100, until=1_200)
    assert [r.details["i"] for r in window] == [i for i in range(10, 20) if i % 3 == 0]
    page = log.query(limit=7)
    assert [r.seq for r in page.records] == list(range(1, 8)) and page.next_after_seq == 7
    assert [r.seq for r in log.query(after_seq=7, limit=3).records] == [8, 9, 10]
    assert log.query(asset_id=99).records == [] and log.query(asset_id=99).next_after_seq is None
    with pytest.raises(AuditError, match="limit"):
        log.query(limit=0)
    with pytest.raises(AuditError, match="kind"):
        log.query(kind="DROP TABLE")


def test_time_never_decreases_along_seq_and_time_ranges_stay_exact(engine):
    clock = Clock(5_000)
    log = AuditLog(engine, ORG, clock=clock)
    times = [5_000, 4_000, 6_000, 6_000, 5_500, 9_000]  # the clock steps back twice
    for i, now in enumerate(times):
        clock.now = now
        log.append(AuditKind.KEY_RELEASED, "a", 1, i)
    stored = [r.time for r in _all(log)]
    assert stored == [5_000, 5_000, 6_000, 6_000, 6_000, 9_000]
    assert [r.seq for r in _all(log, since=6_000, until=9_000)] == [3, 4, 5]
    assert [r.seq for r in _all(log, since=5_000, until=5_001)] == [1, 2]
    assert [r.seq for r in _all(log, since=9_000)] == [6]
    assert log.query(since=9_001).records == [] and log.query(until=5_000).records == []


def test_iter_raw_streams_in_order_across_chunks(engine, monkeypatch):
    import ledger.audit.log as log_module

    monkeypatch.setattr(log_module, "_CHUNK", 3)
    log = AuditLog(engine, ORG)
    for i in range(8):
        log.append(AuditKind.SYNC_MATERIALISED, "sync", i, 1)
    raw = list(log.iter_raw())
    assert [r.seq for r in raw] == list(range(1, 9))
    assert [r.seq for r in log.iter_raw(3, 5)] == [3, 4, 5]
    assert all(parse(r.canonical).record_hash() == r.record_hash for r in raw)
    assert log.leaf_entries(2, 3) == [(r.seq, r.record_hash) for r in raw[1:3]]


def test_batches_must_follow_the_log(engine):
    log = AuditLog(engine, ORG)
    for _ in range(5):
        log.append(AuditKind.ASSET_PUBLISHED, ORG, 1, 1)
    root = leaf_hash(1, b"\0" * 32)
    with pytest.raises(AuditError, match="next batch starts at 1"):
        log.add_batch(2, 3, root)
    with pytest.raises(AuditError, match="last seq 5"):
        log.add_batch(1, 6, root)
    batch = log.add_batch(1, 3, root)
    assert (batch.status, batch.attempts, batch.anchored) == ("pending", 0, False)
    assert log.batched_seq() == 3 and log.batch_for(2) == batch and log.batch_for(4) is None
    log.note_attempt(1, "timeout")
    assert (log.batch(1).attempts, log.batch(1).last_error) == (1, "timeout")
    with pytest.raises(AuditError, match="not anchored yet"):
        log.proof(2)


def test_bad_org_is_refused(engine):
    with pytest.raises(AuditError, match="address"):
        AuditLog(engine, "not-an-address")
