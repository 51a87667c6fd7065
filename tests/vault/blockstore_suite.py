"""Behaviour every BlockStore must have, run against each implementation.

Use: subclass and provide a `store` fixture, e.g.

    class TestMyStore(BlockStoreSuite):
        @pytest.fixture
        def store(self, tmp_path): return MyStore(tmp_path)

`PinningSuite` adds recursive pins and gc for stores that implement PinningBlockStore.
"""
from __future__ import annotations

import hashlib

import pytest

from vault.blockstore import BlockStore, PinningBlockStore, walk_dag
from vault.cid import CID, DAG_PB, RAW
from vault.errors import BlockMismatchError, BlockNotFoundError
from vault.unixfs import Importer, Profile, export, import_bytes

# Small chunks and fan-out so a few KiB make a three-level DAG.
TINY = Profile("tiny", cid_version=1, raw_leaves=True, chunk_size=64, max_links=3)
TINY_PB = Profile("tiny-pb", cid_version=0, raw_leaves=False, chunk_size=64, max_links=3)


def _file(store: BlockStore, seed: bytes, size: int = 2000, profile: Profile = TINY) -> tuple[CID, bytes]:
    data = (seed * (size // len(seed) + 1))[:size]
    return import_bytes(data, profile, store.put), data


class BlockStoreSuite:
    def test_satisfies_the_protocol(self, store: BlockStore) -> None:
        assert isinstance(store, BlockStore)

    def test_put_get_has(self, store: BlockStore) -> None:
        cid = CID.from_sha256(b"alpha")
        assert not store.has(cid)
        store.put(cid, b"alpha")
        assert store.has(cid)
        assert store.get(cid) == b"alpha"
        store.put(cid, b"alpha")  # idempotent
        assert store.get(cid) == b"alpha"

    def test_empty_block(self, store: BlockStore) -> None:
        cid = CID.from_sha256(b"")
        store.put(cid, b"")
        assert store.has(cid) and store.get(cid) == b""

    def test_get_missing_raises_block_not_found(self, store: BlockStore) -> None:
        cid = CID.from_sha256(b"never stored")
        with pytest.raises(BlockNotFoundError, match=str(cid)):
            store.get(cid)

    def test_put_refuses_a_block_that_does_not_match(self, store: BlockStore) -> None:
        cid = CID.from_sha256(b"the real bytes")
        with pytest.raises(BlockMismatchError):
            store.put(cid, b"other bytes")
        assert not store.has(cid)

    def test_blocks_are_keyed_by_multihash(self, store: BlockStore) -> None:
        raw = CID.from_sha256(b"shared", RAW, 1)
        pb = CID(1, DAG_PB, raw.multihash)
        store.put(raw, b"shared")
        assert store.has(pb) and store.get(pb) == b"shared"

    def test_delete_is_idempotent(self, store: BlockStore) -> None:
        cid = CID.from_sha256(b"gone soon")
        store.put(cid, b"gone soon")
        store.delete(cid)
        assert not store.has(cid)
        store.delete(cid)
        with pytest.raises(BlockNotFoundError):
            store.get(cid)

    def test_iter_cids_lists_every_multihash_once(self, store: BlockStore) -> None:
        before = {c.multihash for c in store.iter_cids()}
        cids = [CID.from_sha256(bytes([i]) * 10) for i in range(5)]
        for i, cid in enumerate(cids):
            store.put(cid, bytes([i]) * 10)
        listed = [c.multihash for c in store.iter_cids()]
        assert len(listed) == len(set(listed))
        assert set(listed) - before == {c.multihash for c in cids}

    def test_a_whole_file_round_trips(self, store: BlockStore) -> None:
        root, data = _file(store, b"round trip ")
        assert b"".join(export(root, store.get)) == data
        importer = Importer(TINY_PB, store.put)
        importer.write(data)
        assert b"".join(export(importer.finish(), store.get)) == data


class PinningSuite(BlockStoreSuite):
    def test_satisfies_the_pinning_protocol(self, store: PinningBlockStore) -> None:
        assert isinstance(store, PinningBlockStore)

    def test_pin_unpin_pins(self, store: PinningBlockStore) -> None:
        root, _ = _file(store, b"pinned ")
        store.pin(root)
        store.pin(root)
        assert root in store.pins()
        assert store.unpin(root) is True
        assert root not in store.pins()
        assert store.unpin(root) is False

    def test_pin_requires_the_whole_dag(self, store: PinningBlockStore) -> None:
        data = hashlib.shake_256(b"no repeated chunks").digest(2000)
        root = import_bytes(data, TINY)
        blocks: list[tuple[CID, bytes]] = []
        import_bytes(data, TINY, lambda c, b: blocks.append((c, b)))
        for cid, block in blocks[1:]:  # every block but the first leaf
            store.put(cid, block)
        with pytest.raises(BlockNotFoundError):
            store.pin(root)
        assert root not in store.pins()

    def test_gc_stops_before_deleting_anything_when_a_pinned_dags_node_is_missing(
            self, store: PinningBlockStore) -> None:
        data = hashlib.shake_256(b"an inner node goes missing").digest(2000)
        root = import_bytes(data, TINY, store.put)
        store.pin(root)
        junk = CID.from_sha256(b"junk")
        store.put(junk, b"junk")
        order = list(walk_dag(store, root))
        inner = next(c for c in order[1:] if c.codec == DAG_PB)
        inner_block = store.get(inner)
        store.delete(inner)  # lost: its leaves are still there, and still needed
        before = {c.multihash for c in store.iter_cids()}
        with pytest.raises(BlockNotFoundError, match=f"gc stopped, nothing removed: block {inner}"):
            store.gc()
        assert {c.multihash for c in store.iter_cids()} == before  # junk included
        store.put(inner, inner_block)  # back (from a gateway, a CAR): the DAG is whole again
        assert store.gc() == 1 and not store.has(junk)
        assert b"".join(export(root, store.get)) == data

    def test_gc_goes_on_past_a_missing_raw_leaf(self, store: PinningBlockStore) -> None:
        data = hashlib.shake_256(b"a leaf goes missing").digest(2000)
        root = import_bytes(data, TINY, store.put)
        store.pin(root)
        junk = CID.from_sha256(b"junk")
        store.put(junk, b"junk")
        leaf = next(c for c in walk_dag(store, root) if c.codec == RAW)
        store.delete(leaf)  # nothing under it to lose
        rest = {c.multihash for c in store.iter_cids()} - {junk.multihash}
        assert store.gc() == 1
        assert {c.multihash for c in store.iter_cids()} == rest

    def test_gc_keeps_pinned_dags_and_removes_the_rest(self, store: PinningBlockStore) -> None:
        kept, kept_data = _file(store, b"keep me ", profile=TINY_PB)
        shared, shared_data = _file(store, b"keep me ", size=1000, profile=TINY_PB)  # shares blocks
        dropped, _ = _file(store, b"drop me ")
        junk = CID.from_sha256(b"junk")
        store.put(junk, b"junk")
        store.pin(kept)
        store.pin(shared)
        everything = {c.multihash for c in store.iter_cids()}
        keep_set = {c.multihash for root in (kept, shared) for c in walk_dag(store, root)}
        assert store.gc() == len(everything - keep_set)
        assert not store.has(junk) and not store.has(dropped)
        assert {c.multihash for c in store.iter_cids()} == keep_set
        assert b"".join(export(kept, store.get)) == kept_data
        assert b"".join(export(shared, store.get)) == shared_data
        assert store.gc() == 0
        store.unpin(kept)
        assert store.gc() > 0
        assert b"".join(export(shared, store.get)) == shared_data
        with pytest.raises(BlockNotFoundError):
            b"".join(export(kept, store.get))
        store.unpin(shared)
        store.gc()
        assert not ({c.multihash for c in store.iter_cids()} & keep_set)
