"""Anchorer unit tests with an injected fake chain (the real chain is exercised in
test_audit_chain.py). The fake enforces AuditAnchors' rules (contiguous batches from 1,
non-zero root) and can fail or "lose" a receipt on demand."""
from __future__ import annotations

import threading

import pytest

from ledger.audit import AnchorEvent, AnchorHead, Anchorer, AuditKind, AuditLog
from ledger.audit.merkle import AuditTree
from ledger.db import make_engine
from ledger.errors import AuditError, TransactionError

ORG = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


class FakeAnchors:
    chain_id = 31337
    contract = "0x5FbDB2315678afecb367f032d93F642f64180aa3"

    def __init__(self, org: str = ORG) -> None:
        self.org = org
        self.anchored: list[AnchorEvent] = []
        self.sent: list[tuple[int, int, bytes]] = []
        self.fail_next = 0  # raise before the tx lands
        self.crash_after_landing = 0  # the tx lands, then the call fails (crash/timeout)

    def head(self, org: str) -> AnchorHead:
        mine = [e for e in self.anchored if e.org == org]
        return AnchorHead(mine[-1].to_seq if mine else 0, len(mine))

    def root_of(self, org: str, to_seq: int) -> bytes:
        return next((e.root for e in self.anchored if e.org == org and e.to_seq == to_seq), b"\0" * 32)

    def events(self, org: str):
        return [e for e in self.anchored if e.org == org]

    def events_in_tx(self, tx_hash: str):
        return [e for e in self.anchored if e.tx_hash == tx_hash]

    def submit(self, from_seq: int, to_seq: int, root: bytes) -> AnchorEvent:
        self.sent.append((from_seq, to_seq, root))
        if self.fail_next:
            self.fail_next -= 1
            raise TransactionError("connection reset")
        head = self.head(self.org)
        if from_seq != head.last_seq + 1 or to_seq < from_seq or root == b"\0" * 32:
            raise TransactionError(f"reverted: AuditAnchorsNonContiguous({head.last_seq + 1}, {from_seq})")
        event = AnchorEvent(self.org, head.batches, from_seq, to_seq, root, f"0x{len(self.sent):064x}",
                            100 + len(self.sent), self.contract)
        self.anchored.append(event)
        if self.crash_after_landing:
            self.crash_after_landing -= 1
            raise TransactionError("receipt timeout")
        return event


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def log(tmp_path):
    return AuditLog(make_engine(f"sqlite:///{tmp_path / 'audit.db'}"), ORG, clock=Clock())


def _fill(log: AuditLog, n: int) -> None:
    for i in range(n):
        log.append(AuditKind.KEY_RELEASED, "consumer", 1, i)


def _root(log: AuditLog, a: int, b: int) -> bytes:
    return AuditTree.build(log.leaf_entries(a, b)).root


def test_one_transaction_per_batch_covering_the_tail(log):
    sink = FakeAnchors()
    anchorer = Anchorer(log, sink, every_records=5)
    _fill(log, 3)
    [batch] = anchorer.anchor_pending()
    assert (batch.from_seq, batch.to_seq, batch.status, batch.attempts) == (1, 3, "anchored", 1)
    assert batch.root == _root(log, 1, 3) and batch.tx_hash == sink.anchored[0].tx_hash
    assert (batch.chain_id, batch.contract, batch.batch_index) == (31337, sink.contract, 0)
    _fill(log, 4)
    [second] = anchorer.anchor_pending()
    assert (second.from_seq, second.to_seq, second.batch_index) == (4, 7, 1)
    assert sink.sent == [(1, 3, batch.root), (4, 7, second.root)]
    assert anchorer.anchor_pending() == [] and len(sink.sent) == 2


def test_records_appended_while_anchoring_wait_for_the_next_call(log):
    """Under a steady stream of appends, one call must not chase the tail forever (it used
    to send anchor after anchor back to back, ignoring every_records/every_seconds)."""

    class Busy(FakeAnchors):
        def submit(self, from_seq, to_seq, root):
            _fill(log, 2)  # a release lands while the transaction is on its way
            return super().submit(from_seq, to_seq, root)

    sink = Busy()
    _fill(log, 3)
    batches = Anchorer(log, sink, max_batch=2).anchor_pending()
    assert [(b.from_seq, b.to_seq) for b in batches] == [(1, 2), (3, 3)]  # up to seq 3, as of the call
    assert log.last_seq() == 7 and log.batched_seq() == 3


def test_large_backlog_is_split_into_bounded_batches(log):
    sink = FakeAnchors()
    _fill(log, 10)
    batches = Anchorer(log, sink, max_batch=4).anchor_pending()
    assert [(b.from_seq, b.to_seq) for b in batches] == [(1, 4), (5, 8), (9, 10)]
    assert all(b.anchored for b in batches)


def test_failed_batch_stays_pending_and_is_retried_with_same_range_and_root(log):
    sink = FakeAnchors()
    anchorer = Anchorer(log, sink)
    _fill(log, 3)
    sink.fail_next = 2
    [failed] = anchorer.anchor_pending()
    assert (failed.status, failed.attempts) == ("pending", 1) and "connection reset" in failed.last_error
    _fill(log, 2)  # new records must not change the pending batch
    [again] = anchorer.anchor_pending()
    assert (again.status, again.attempts) == ("pending", 2)
    assert anchorer.due()
    done = anchorer.anchor_pending()
    assert [(b.from_seq, b.to_seq, b.status) for b in done] == [(1, 3, "anchored"), (4, 5, "anchored")]
    assert done[0].attempts == 3 and done[0].last_error is None
    assert [s[:2] for s in sink.sent] == [(1, 3), (1, 3), (1, 3), (4, 5)]
    assert len({s[2] for s in sink.sent[:3]}) == 1  # the same root every time


def test_landed_but_unmarked_batch_is_reconciled_from_the_chain(log):
    sink = FakeAnchors()
    anchorer = Anchorer(log, sink)
    _fill(log, 4)
    sink.crash_after_landing = 1
    [batch] = anchorer.anchor_pending()
    assert batch.status == "pending" and sink.head(ORG).last_seq == 4
    [batch] = anchorer.anchor_pending()
    assert batch.anchored and batch.tx_hash == sink.anchored[0].tx_hash
    assert len(sink.sent) == 1  # reconciled, not re-sent


def test_chain_disagreeing_with_the_log_stops_anchoring(log):
    sink = FakeAnchors()
    _fill(log, 4)
    # Someone anchored 1..4 under another root for this org (e.g. a restored old database).
    sink.anchored.append(AnchorEvent(ORG, 0, 1, 4, b"\x11" * 32, "0x" + "ab" * 32, 5, sink.contract))
    with pytest.raises(AuditError, match="chain anchored 1..4 root 0x1111"):
        Anchorer(log, sink).anchor_pending()
    assert log.batch(1).status == "pending"


def test_chain_head_inside_a_pending_batch_is_an_error(log):
    sink = FakeAnchors()
    _fill(log, 4)
    sink.anchored.append(AnchorEvent(ORG, 0, 1, 2, b"\x11" * 32, "0x" + "ab" * 32, 5, sink.contract))
    with pytest.raises(AuditError, match="inside pending batch 1..4"):
        Anchorer(log, sink).anchor_pending()


def test_due_by_count_or_by_age_of_oldest_unanchored_record(log):
    anchorer = Anchorer(log, FakeAnchors(), every_records=3, every_seconds=10)
    assert not anchorer.due()
    _fill(log, 2)
    assert not anchorer.due()
    log.clock.now += 10_000
    assert anchorer.due()
    log.clock.now -= 10_000
    _fill(log, 1)
    assert anchorer.due()
    anchorer.anchor_pending()
    assert not anchorer.due()


def test_sink_must_anchor_for_the_logs_org(log):
    with pytest.raises(AuditError, match="belongs to"):
        Anchorer(log, FakeAnchors(org="0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"))


def test_run_loop_anchors_until_stopped(log):
    sink = FakeAnchors()
    _fill(log, 2)
    stop = threading.Event()
    runner = threading.Thread(target=Anchorer(log, sink, every_records=1).run, args=(stop, 0.01))
    runner.start()
    try:
        for _ in range(500):
            if sink.anchored:
                break
            stop.wait(0.01)
    finally:
        stop.set()
        runner.join(5)
    assert not runner.is_alive()
    assert [(e.from_seq, e.to_seq) for e in sink.anchored] == [(1, 2)]
