"""A follower indexer (a node worker whose sibling process runs the indexer loop on the
same database) never syncs by itself: waiting only watches the checkpoint another
indexer moves."""
from __future__ import annotations

import threading

import pytest

from ledger.db import make_engine
from ledger.errors import IndexerError
from ledger.indexer import Indexer
from ledger.models import AssetKind


def test_a_follower_waits_for_the_indexing_process_and_never_syncs(w3, deployment, orgs, tmp_path):
    url = f"sqlite:///{tmp_path / 'node.db'}"
    leader = Indexer(w3, deployment, make_engine(url))
    leader.create_tables()
    follower = Indexer(w3, deployment, make_engine(url))
    follower.follower = True
    created = orgs[0].create_asset(AssetKind.DATASET, "followed")
    block = created.tx.block_number

    with pytest.raises(IndexerError, match=f"block {block} not indexed within"):
        follower.wait_until_indexed(block, timeout=0.5)
    assert follower.indexed_block() < block  # it did not index anything itself

    waited: list[BaseException | None] = []
    waiter = threading.Thread(target=lambda: waited.append(_wait(follower, block)))
    waiter.start()
    leader.sync_once()  # "the other process" indexes
    waiter.join(timeout=60)
    assert waited == [None]
    assert follower.indexed_block() >= block


def test_without_follower_mode_a_wait_syncs_itself(w3, deployment, orgs, tmp_path):
    indexer = Indexer(w3, deployment, make_engine(f"sqlite:///{tmp_path / 'node.db'}"))
    block = orgs[0].create_asset(AssetKind.DATASET, "self-synced").tx.block_number
    indexer.wait_until_indexed(block, timeout=30)
    assert indexer.indexed_block() >= block


def _wait(indexer: Indexer, block: int) -> BaseException | None:
    try:
        indexer.wait_until_indexed(block, timeout=60)
    except BaseException as exc:  # reported to the test thread
        return exc
    return None
