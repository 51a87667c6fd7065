"""Crash-safety, rebuild, reorgs and read-your-writes, on a real Anvil (SQLite + PostgreSQL)."""
from __future__ import annotations

import logging
import threading

import pytest
from sqlmodel import Session, select

from ledger.db import make_engine
from ledger.errors import IndexerError
from ledger.indexer import Indexer, IndexQueries
from ledger.indexer.tables import IndexedVersion, ProcessedLog
from ledger.models import AssetKind, Permission, VersionRef
from tests.db import db_url, pg_url  # noqa: F401
from tests.ledger.indexer_helpers import cid_v1, dump, fresh_commitment, synced


class Crash(RuntimeError):
    """The injected fault."""


class CrashingIndexer(Indexer):
    """Fails while applying its `crash_at`-th event (counted over its lifetime)."""

    def __init__(self, *args, crash_at: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.crash_at = crash_at
        self.applied = 0

    def _apply_event(self, session, event):
        self.applied += 1
        if self.applied == self.crash_at:
            raise Crash(f"injected fault at event {self.applied} (block {event.log.block_number})")
        return super()._apply_event(session, event)


@pytest.fixture(scope="module")
def activity(admin, orgs):
    """A few dozen events spread over many blocks."""
    o1, o2, o3, _ = orgs
    now = admin.chain_time()
    assets = []
    for i in range(3):
        a = o1.create_asset(AssetKind.DATASET, f"dataset {i}").asset_id
        o1.add_version(a, cid_v1(b"%d" % i), fresh_commitment(), 100 + i)
        o1.add_version(a, cid_v1(b"%d'" % i), fresh_commitment(), 200 + i, [VersionRef(a, 1)])
        o1.grant(a, o2.address, Permission.READ, now + 5000 + i, f"purpose {i}")
        assets.append(a)
    o1.revoke(assets[0], o2.address)
    m = o3.create_asset(AssetKind.MODEL, "model").asset_id
    o3.add_version(m, cid_v1(b"m"), fresh_commitment(), 5, [VersionRef(a, 2) for a in assets])
    o1.anchor(1, 3, b"\x05" * 32)
    return assets


def test_crash_mid_range_commits_nothing_and_resume_matches(w3, deployment, activity, db_url, tmp_path):
    reference, ref_engine = synced(w3, deployment, f"sqlite:///{tmp_path / 'ref.db'}")
    total = len(dump(ref_engine)["idx_processed_logs"])
    engine = make_engine(db_url)
    crashing = CrashingIndexer(w3, deployment, engine, batch_blocks=4, crash_at=total - 3)
    with pytest.raises(Crash):
        crashing.sync_once()
    checkpoint = crashing.indexed_block()
    assert deployment.deployment_block <= checkpoint < reference.indexed_block()
    with Session(engine) as s:
        # Nothing past the checkpoint was committed, although events of the failed range were applied.
        assert s.exec(select(ProcessedLog).where(ProcessedLog.block_number > checkpoint)).all() == []
    assert crashing.applied > len(dump(engine)["idx_processed_logs"])
    partial_engine = make_engine(f"sqlite:///{tmp_path / 'partial.db'}")
    partial = Indexer(w3, deployment, partial_engine)
    partial.create_tables()
    partial.index_range(deployment.deployment_block, checkpoint)
    assert _tables(dump(engine)) == _tables(dump(partial_engine))  # exactly the committed ranges

    resumed = Indexer(w3, deployment, engine, batch_blocks=4)
    assert resumed.sync_once() > 0
    assert dump(engine) == dump(ref_engine)


def _tables(d: dict) -> dict:
    """A dump without the checkpoint row (whose last block depends on the range sizes)."""
    return {k: v for k, v in d.items() if k != "idx_checkpoint"}


def test_rebuild_yields_identical_tables(w3, deployment, activity, db_url):
    indexer, engine = synced(w3, deployment, db_url, batch_blocks=3)
    before = dump(engine)
    with Session(engine) as s, s.begin():  # damage the derived state; rebuild must not care
        s.delete(s.exec(select(IndexedVersion)).first())
    assert dump(engine) != before
    applied = indexer.rebuild()
    assert applied == len(before["idx_processed_logs"])
    assert dump(engine) == before


def test_reorg_to_a_longer_chain_reindexes_from_the_fork(w3, deployment, activity, orgs, isolated, db_url, tmp_path,
                                                         caplog):
    o1, o2 = orgs[0], orgs[1]
    indexer, engine = synced(w3, deployment, db_url)
    fork = max(row[2] for row in dump(engine)["idx_processed_logs"])  # (tx, index, block, ...)
    snapshot = isolated.rpc("evm_snapshot")
    gone = o1.create_asset(AssetKind.REPORT, "orphaned").asset_id
    o1.add_version(gone, cid_v1(b"orphan"), fresh_commitment(), 1)
    o1.revoke(activity[1], o2.address)
    indexer.sync_once()
    assert IndexQueries(engine).asset(gone) is not None
    orphaned_block = indexer.indexed_block()

    assert isolated.rpc("evm_revert", snapshot) is True
    o1.sender.resync_nonce()
    kept = o1.create_asset(AssetKind.MODEL, "on the new branch").asset_id
    assert kept == gone  # same id, different asset: stale rows would show up as a mismatch
    for _ in range(4):
        isolated.mine()
    assert w3.eth.block_number > orphaned_block
    with caplog.at_level(logging.WARNING, logger="ledger.indexer.indexer"):
        indexer.sync_once()
    assert f"re-indexing from block {fork + 1}" in caplog.text  # walked back to the fork, not to zero
    _, fresh = synced(w3, deployment, f"sqlite:///{tmp_path / 'fresh.db'}")
    assert _tables(dump(engine)) == _tables(dump(fresh))
    assert IndexQueries(engine).asset(kept).name == "on the new branch"
    assert IndexQueries(engine).grant(activity[1], o2.address).active is True


def test_reorg_to_a_shorter_chain_rewinds(w3, deployment, activity, orgs, isolated, tmp_path):
    indexer, engine = synced(w3, deployment, f"sqlite:///{tmp_path / 'a.db'}")
    before = dump(engine)
    snapshot = isolated.rpc("evm_snapshot")
    orgs[0].create_asset(AssetKind.OTHER, "short-lived")
    isolated.mine()
    indexer.sync_once()
    assert len(dump(engine)["idx_assets"]) == len(before["idx_assets"]) + 1
    assert isolated.rpc("evm_revert", snapshot) is True
    orgs[0].sender.resync_nonce()
    indexer.sync_once()  # the chain is now shorter than the checkpoint
    assert dump(engine) == before


def test_wait_until_indexed_without_a_loop(w3, deployment, orgs, tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    indexer = Indexer(w3, deployment, engine)
    created = orgs[1].create_asset(AssetKind.DATASET, "read my write")
    indexer.wait_until_indexed(created.tx.block_number, timeout=30)
    assert IndexQueries(engine).asset(created.asset_id).name == "read my write"


def test_wait_until_indexed_with_a_running_loop(w3, deployment, orgs, tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'loop.db'}")
    indexer = Indexer(w3, deployment, engine)
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            indexer.run(stop, poll_interval=0.05)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        added = orgs[1].add_version(orgs[1].create_asset(AssetKind.MODEL, "looped").asset_id, cid_v1(b"loop"),
                                    fresh_commitment(), 9)
        indexer.wait_until_indexed(added.tx.block_number, timeout=30)
        version = IndexQueries(engine).version(added.asset_id, 1)
        assert version is not None and version.tx_hash == added.tx.tx_hash
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive() and errors == []


def test_wait_until_indexed_times_out(w3, deployment, tmp_path):
    indexer = Indexer(w3, deployment, make_engine(f"sqlite:///{tmp_path / 't.db'}"))
    future = w3.eth.block_number + 1000
    with pytest.raises(IndexerError, match=f"block {future} not indexed"):
        indexer.wait_until_indexed(future, timeout=0.3)
    assert indexer.indexed_block() == w3.eth.block_number  # it did sync what exists


def test_range_that_does_not_extend_the_indexed_chain_is_refused(w3, deployment, orgs, isolated, tmp_path,
                                                                  caplog):
    """A reorg landing between the reorg check and the fetch of the next range."""

    class Blind(Indexer):
        def _handle_reorg(self) -> None:  # as if the reorg happened right after this check
            return None

    engine = make_engine(f"sqlite:///{tmp_path / 'blind.db'}")
    snapshot = isolated.rpc("evm_snapshot")
    orgs[0].create_asset(AssetKind.OTHER, "old branch")
    blind = Blind(w3, deployment, engine)
    blind.sync_once()
    before = dump(engine)
    assert isolated.rpc("evm_revert", snapshot) is True
    orgs[0].sender.resync_nonce()
    orgs[0].create_asset(AssetKind.OTHER, "new branch")
    for _ in range(3):
        isolated.mine()
    with caplog.at_level(logging.WARNING, logger="ledger.indexer.indexer"):
        assert blind.sync_once() == 0
    assert "chain changed" in caplog.text and dump(engine) == before
    Indexer(w3, deployment, engine).sync_once()  # the real reorg handling repairs it
    _, fresh = synced(w3, deployment, f"sqlite:///{tmp_path / 'fresh.db'}")
    assert _tables(dump(engine)) == _tables(dump(fresh))
