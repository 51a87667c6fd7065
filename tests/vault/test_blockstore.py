"""MemoryBlockstore and FilesystemBlockstore: the shared suite plus on-disk specifics
(layout, corruption on disk, torn writes, durable pins, fsync batching)."""
from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest

from vault import _fileio
from vault.blockstore import _flusher as bs_flusher
from vault.blockstore import filesystem as bs_filesystem
from vault.blockstore import FilesystemBlockstore, MemoryBlockstore, walk_dag
from vault.cid import CID, DAG_PB, RAW
from vault.errors import BlockMismatchError, BlockNotFoundError, InputValidationError, IntegrityError
from vault.unixfs import export, import_bytes

from .blockstore_suite import TINY, TINY_PB, PinningSuite


class TestMemoryBlockstore(PinningSuite):
    @pytest.fixture
    def store(self) -> MemoryBlockstore:
        return MemoryBlockstore()

    def test_corruption_in_memory_is_detected(self, store: MemoryBlockstore) -> None:
        cid = CID.from_sha256(b"x")
        store.put(cid, b"x")
        store._blocks[cid.multihash] = b"y"
        with pytest.raises(BlockMismatchError):
            store.get(cid)


class TestFilesystemBlockstore(PinningSuite):
    @pytest.fixture
    def store(self, tmp_path: Path) -> FilesystemBlockstore:
        return FilesystemBlockstore(tmp_path / "repo")


class TestFilesystemBlockstoreUnsynced(PinningSuite):
    @pytest.fixture
    def store(self, tmp_path: Path) -> FilesystemBlockstore:
        return FilesystemBlockstore(tmp_path / "repo", sync=False, verify_writes=False)

    def test_put_refuses_a_block_that_does_not_match(self, store: FilesystemBlockstore) -> None:
        """verify_writes=False trusts the caller by design; the read still catches a lie."""
        cid = CID.from_sha256(b"real")
        store.put(cid, b"fake")
        with pytest.raises(BlockMismatchError):
            store.get(cid)


def test_layout_is_flatfs_next_to_last_2(tmp_path: Path) -> None:
    store = FilesystemBlockstore(tmp_path)
    cid = CID.decode("bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e")
    store.put(cid, b"hello world")
    key = "CIQLSTJHXGJU2PQIUUXFFV62PWV7VREE57RXUU4A52IIR55M4LX432I"
    assert (tmp_path / "blocks" / key[-3:-1] / f"{key}.data").read_bytes() == b"hello world"
    assert sorted(p.name for p in (tmp_path / "blocks").rglob("*") if p.is_file()) == [f"{key}.data", "SHARDING"]
    assert (tmp_path / "blocks" / "SHARDING").read_text() == "/repo/flatfs/shard/v1/next-to-last/2\n"


def test_a_durable_store_makes_every_shard_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """All 1024 shard directories exist before the first put, so no put makes one (or
    fsyncs the blocks directory for it); opening the store again makes nothing."""
    store = FilesystemBlockstore(tmp_path)
    shards = sorted(p.name for p in (tmp_path / "blocks").iterdir() if p.is_dir())
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    assert shards == sorted(a + b for a in alphabet for b in alphabet)
    made: list[str] = []
    real_mkdir = Path.mkdir
    monkeypatch.setattr(Path, "mkdir", lambda self, *a, **k: (made.append(self.name), real_mkdir(self, *a, **k)))
    for n in range(50):
        data = f"block {n}".encode()
        store.put(CID.from_sha256(data), data)
    FilesystemBlockstore(tmp_path)
    assert made == ["blocks"]  # the second open's mkdir(exist_ok=True) of blocks/ only


def test_a_scratch_store_makes_shards_on_demand(tmp_path: Path) -> None:
    store = FilesystemBlockstore(tmp_path, sync=False)
    assert list((tmp_path / "blocks").iterdir()) == []
    store.put(CID.from_sha256(b"x"), b"x")
    assert len([p for p in (tmp_path / "blocks").iterdir() if p.is_dir()]) == 1


def test_corrupt_file_on_disk_is_detected(tmp_path: Path) -> None:
    store = FilesystemBlockstore(tmp_path)
    cid = CID.from_sha256(b"precious bytes")
    store.put(cid, b"precious bytes")
    path = next((tmp_path / "blocks").rglob("*.data"))
    path.write_bytes(b"precious bytez")
    with pytest.raises(BlockMismatchError, match=str(cid)):
        store.get(cid)


def test_torn_block_is_replaced_by_the_next_put(tmp_path: Path) -> None:
    store = FilesystemBlockstore(tmp_path)
    cid = CID.from_sha256(b"full block")
    store.put(cid, b"full block")
    path = next((tmp_path / "blocks").rglob("*.data"))
    path.write_bytes(b"full")  # as if a crash cut the write short
    store.put(cid, b"full block")
    assert store.get(cid) == b"full block"


def test_stray_files_are_not_blocks(tmp_path: Path) -> None:
    store = FilesystemBlockstore(tmp_path)
    cid = CID.from_sha256(b"real")
    store.put(cid, b"real")
    shard = next((tmp_path / "blocks").iterdir())
    (shard / ".CIQXYZ.abcd.tmp").write_bytes(b"partial")
    (shard / "README").write_text("not a block")
    (shard / "not!base32.data").write_text("nope")
    assert [c.multihash for c in store.iter_cids()] == [cid.multihash]


def test_pins_survive_reopening(tmp_path: Path) -> None:
    store = FilesystemBlockstore(tmp_path)
    root = import_bytes(b"durable " * 100, TINY_PB, store.put)
    store.pin(root)
    again = FilesystemBlockstore(tmp_path)
    assert again.pins() == {root}
    assert again.gc() == 0
    (tmp_path / "pins.json").write_text("{not json")
    with pytest.raises(IntegrityError, match="corrupt"):
        again.pins()


def test_walk_dag_is_depth_first_and_strictness_is_optional(tmp_path: Path) -> None:
    store = FilesystemBlockstore(tmp_path, sync=False)
    root = import_bytes(bytes(range(256)) * 3, TINY, store.put)
    order = list(walk_dag(store, root))
    assert order[0] == root and order[1].codec == DAG_PB  # pre-order: root, first child, ...
    assert len(order) == len({c.multihash for c in order})
    store.delete(order[-1])
    with pytest.raises(BlockNotFoundError):
        list(walk_dag(store, root))
    assert len(list(walk_dag(store, root, strict=False))) == len(order)


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Inodes passed to os.fsync, on the store's Python path (the native put makes the same
    calls from C: tests/vault/test_blockstore_native.py traces them)."""
    monkeypatch.setattr(bs_filesystem, "_NATIVE", False)
    monkeypatch.setattr(bs_flusher, "syncfs_pays", lambda: False)  # per-file fsyncs, whatever the machine
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(os.fstat(fd).st_ino)  # which file or directory
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


def _blocks(n: int) -> list[tuple[CID, bytes]]:
    return [(CID.from_sha256(b"%d" % i), b"%d" % i) for i in range(n)]


def _store(tmp_path: Path, fsyncs: list[int], *, premade: bool) -> FilesystemBlockstore:
    """A durable store, its own fsyncs forgotten; premade=False: as a store from before
    shards were made up front (every shard directory removed), so puts make them."""
    store = FilesystemBlockstore(tmp_path)
    if not premade:
        for shard in (tmp_path / "blocks").iterdir():
            if shard.is_dir():
                shard.rmdir()
    fsyncs.clear()
    return store


@pytest.mark.parametrize("premade", [True, False])
def test_sync_fsyncs_every_put(tmp_path: Path, fsyncs: list[int], premade: bool) -> None:
    store = _store(tmp_path, fsyncs, premade=premade)
    for cid, data in _blocks(5):
        store.put(cid, data)
    paths = list((tmp_path / "blocks").rglob("*.data"))
    shards = {p.parent.stat().st_ino for p in paths}
    blocks_dir = (tmp_path / "blocks").stat().st_ino
    # file + shard directory per block, and the blocks directory once per shard made (its entry)
    expected = [p.stat().st_ino for p in paths] + [p.parent.stat().st_ino for p in paths]
    if not premade:
        expected += [blocks_dir] * len(shards)
    assert sorted(fsyncs) == sorted(expected)
    fsyncs.clear()
    cid, data = _blocks(1)[0]
    before = store._path(cid).stat()
    store.put(cid, data)  # already there: not written again, but synced (another batch may have written it)
    assert store._path(cid).stat().st_mtime_ns == before.st_mtime_ns
    assert sorted(fsyncs) == sorted([before.st_ino, store._path(cid).parent.stat().st_ino])


@pytest.mark.parametrize("premade", [True, False])
def test_batch_defers_fsyncs_to_its_end(tmp_path: Path, fsyncs: list[int], premade: bool) -> None:
    store = _store(tmp_path, fsyncs, premade=premade)
    blocks = _blocks(20)
    with store.batch():
        with store.batch():  # nests
            for cid, data in blocks:
                store.put(cid, data)
        assert fsyncs == []
        assert all(store.get(cid) == data for cid, data in blocks)  # visible at once
    paths = list((tmp_path / "blocks").rglob("*.data"))
    shards = {p.parent.stat().st_ino for p in paths}
    # every file, every shard once, and the blocks directory once for all the shards made
    made = [] if premade else [(tmp_path / "blocks").stat().st_ino]
    assert sorted(fsyncs) == sorted([p.stat().st_ino for p in paths] + [*shards, *made])


def test_batch_lets_exceptions_through_and_still_flushes(tmp_path: Path, fsyncs: list[int]) -> None:
    store = _store(tmp_path, fsyncs, premade=False)
    with pytest.raises(RuntimeError, match="boom"):
        with store.batch():
            with store.batch():
                store.put(*_blocks(1)[0])
                raise RuntimeError("boom")
    assert len(fsyncs) == 3  # the file, its new shard and the blocks directory (the shard's entry)


def test_unsynced_store_never_fsyncs_blocks(tmp_path: Path, fsyncs: list[int]) -> None:
    store = FilesystemBlockstore(tmp_path, sync=False)
    for cid, data in _blocks(5):
        store.put(cid, data)
    assert fsyncs == []


# -- reads past the page cache (open's direct=True) ----------------------------------------


def _stored_block(tmp_path: Path, size: int) -> tuple[FilesystemBlockstore, CID, bytes]:
    store = FilesystemBlockstore(tmp_path, sync=False)
    data = os.urandom(size)
    cid = CID.from_sha256(data, RAW, 1)
    store.put(cid, data)
    return store, cid, data


@pytest.mark.parametrize("size", [0, 1, 4095, (64 << 10) - 1, 64 << 10, 1 << 20, (1 << 20) + 1, 3 * 4096 + 7])
def test_direct_get_returns_the_same_bytes(tmp_path: Path, size: int) -> None:
    store, cid, data = _stored_block(tmp_path, size)
    assert store.get(cid, direct=True) == data
    assert store.get(cid, verify=False, direct=True) == data


def _evict(path: Path) -> None:
    """Drop the file's pages from the page cache (written back first). DONTNEED is advice:
    on a busy machine a page can survive it, so it is given again until cachestat (where
    known) says the file is not all cached."""
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(20):
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            if not _fileio.in_page_cache(fd, os.fstat(fd).st_size):
                break
            time.sleep(0.05)
    finally:
        os.close(fd)


def _cached(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        return _fileio.in_page_cache(fd, path.stat().st_size)
    finally:
        os.close(fd)


needs_cachestat = pytest.mark.skipif(
    _fileio.SYSCALL is None, reason="cachestat(2) is not known on this platform")


@needs_cachestat
def test_in_page_cache_tells_what_the_page_cache_holds(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(1 << 20))
    if not _cached(path):
        pytest.skip("this kernel has no cachestat(2) (Linux >= 6.5)")
    _evict(path)
    assert not _cached(path)
    with open(path, "rb") as fh:
        fh.read()
    assert _cached(path)


def _count_direct_reads(monkeypatch: pytest.MonkeyPatch, path: Path) -> list[int]:
    """os.preadv is only used for reads past the page cache (pread for the others); only
    reads of `path` count (a thread another test left running may read its own files)."""
    calls: list[int] = []
    real = os.preadv

    def counting(fd, buffers, offset, *a):  # noqa: ANN001, ANN002
        if os.readlink(f"/proc/self/fd/{fd}") == str(path):
            calls.append(offset)
        return real(fd, buffers, offset, *a)

    monkeypatch.setattr(os, "preadv", counting)
    return calls


@needs_cachestat
def test_direct_get_reads_a_block_that_is_in_the_page_cache_from_there(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    store, cid, data = _stored_block(tmp_path, 1 << 20)  # just written: in the page cache
    if not _cached(store._path(cid)):
        pytest.skip("this kernel has no cachestat(2) (Linux >= 6.5)")
    direct = _count_direct_reads(monkeypatch, store._path(cid))
    assert store.get(cid, direct=True) == data
    assert direct == []
    _evict(store._path(cid))
    assert store.get(cid, direct=True) == data
    assert direct == [0]
    assert not _cached(store._path(cid))  # read past the cache: nothing added to it
    store._path(cid).write_bytes(b"\x00" + data[1:])  # in the cache again, and corrupt
    with pytest.raises(BlockMismatchError):
        store.get(cid, direct=True)
    assert len(direct) == 1


def test_direct_get_uses_o_direct_for_large_blocks_and_still_verifies(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    store, cid, data = _stored_block(tmp_path, 1 << 20)
    _evict(store._path(cid))
    flags: list[int] = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda path, f, *a, **k: (flags.append(f), real_open(path, f, *a, **k))[1])
    direct = _count_direct_reads(monkeypatch, store._path(cid))
    assert store.get(cid, direct=True) == data
    assert any(f & os.O_DIRECT for f in flags)
    assert direct == [0]
    path = store._path(cid)
    path.write_bytes(b"\x00" + data[1:])
    with pytest.raises(BlockMismatchError):
        store.get(cid, direct=True)
    path.unlink()
    with pytest.raises(BlockNotFoundError):
        store.get(cid, direct=True)


def test_direct_get_falls_back_to_the_page_cache_where_o_direct_is_refused(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    store, cid, data = _stored_block(tmp_path, 1 << 20)
    real_open = os.open

    def no_direct(path, f, *a):
        if f & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, f, *a)

    monkeypatch.setattr(os, "open", no_direct)
    assert store.get(cid, direct=True) == data


# -- durability by syncfs (sync_method) ----------------------------------------------------


def test_auto_takes_syncfs_only_when_little_else_waits_to_be_written() -> None:
    if _fileio.SYNCFS is None:
        pytest.skip("no syncfs(2) here")
    assert bs_flusher.syncfs_pays(lambda: 10 << 20)
    assert not bs_flusher.syncfs_pays(lambda: 1 << 30)  # someone else's gigabyte: per-file fsyncs
    assert not bs_flusher.syncfs_pays(lambda: None)  # unknown: per-file fsyncs


@pytest.mark.parametrize(("method", "cheap", "whole"), [("auto", True, True), ("auto", False, False),
                                                        ("syncfs", False, True), ("fsync", True, False)])
def test_a_batch_is_made_durable_by_one_syncfs_or_by_fsyncs(tmp_path: Path, fsyncs: list[int],
                                                             monkeypatch: pytest.MonkeyPatch, method: str,
                                                             cheap: bool, whole: bool) -> None:
    if _fileio.SYNCFS is None:
        pytest.skip("no syncfs(2) here")
    monkeypatch.setattr(bs_flusher, "syncfs_pays", lambda: cheap)
    synced_fs: list[Path] = []
    real = _fileio.syncfs
    monkeypatch.setattr(_fileio, "syncfs", lambda path: (synced_fs.append(path), real(path)))
    store = FilesystemBlockstore(tmp_path, sync_method=method)
    fsyncs.clear()
    blocks = _blocks(6)
    with store.batch(background=True):
        for cid, data in blocks:
            store.put(cid, data)
    if whole:
        assert synced_fs == [tmp_path] and fsyncs == []
    else:
        assert synced_fs == [] and len(fsyncs) == 2 * len(blocks)  # each file and its shard
    assert all(store.get(cid) == data for cid, data in blocks)


# -- damaged and stray files in the store -----------------------------------------------------


def _damage(store: FilesystemBlockstore, cid: CID) -> None:
    """Same size, other bytes: what bit rot or a crash inside a syncfs batch can leave."""
    path = store._path(cid)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    path.write_bytes(bytes(raw))


def test_a_put_repairs_a_damaged_block_of_the_right_size(tmp_path: Path) -> None:
    store = FilesystemBlockstore(tmp_path)
    data = os.urandom(70_000)
    cid = CID.from_sha256(data, RAW, 1)
    store.put(cid, data)
    assert store.holds(cid)
    _damage(store, cid)
    assert store.has(cid) and not store.holds(cid)
    with pytest.raises(BlockMismatchError):
        store.get(cid)
    store.put(cid, data)
    assert store.holds(cid) and store.get(cid) == data


def test_a_car_import_repairs_a_damaged_block_it_carries(tmp_path: Path) -> None:
    from vault.car import import_blocks

    store = FilesystemBlockstore(tmp_path)
    blocks = [(CID.from_sha256(b, RAW, 1), b) for b in (os.urandom(1 << 20), os.urandom(5000))]
    import_blocks(store, blocks)
    _damage(store, blocks[0][0])
    assert import_blocks(store, blocks) == 1  # the damaged one stored again, the whole one left
    assert all(store.get(c) == b for c, b in blocks)


def test_a_directory_where_a_block_file_belongs_is_a_clear_error_and_does_not_stop_gc(tmp_path: Path) -> None:
    store = FilesystemBlockstore(tmp_path)
    data = os.urandom(5000)
    cid = CID.from_sha256(data, RAW, 1)
    store._path(cid).mkdir()
    junk = CID.from_sha256(b"junk")
    store.put(junk, b"junk")
    assert not store.has(cid) and not store.holds(cid) and list(store.iter_cids()) == [junk]
    for attempt in (lambda: store.get(cid), lambda: store.put(cid, data), lambda: store.delete(cid)):
        with pytest.raises(IntegrityError, match="is not a regular file; remove it"):
            attempt()
    assert store.gc() == 1 and not store.has(junk)
    assert not [p for p in (tmp_path / "blocks").rglob("*.tmp")]  # the refused put left nothing


def test_gc_removes_block_files_that_get_cannot_reach(tmp_path: Path) -> None:
    store = FilesystemBlockstore(tmp_path)
    data = b"misplaced"
    cid = CID.from_sha256(data, RAW, 1)
    store.put(cid, data)
    store.pin(cid)
    right = store._path(cid)
    other_shard = next(p for p in (tmp_path / "blocks").iterdir() if p.is_dir() and p != right.parent)
    wrong = other_shard / right.name
    wrong.write_bytes(data)  # a copy in another shard: get() never reads it
    padded = right.parent / (right.stem + "=" * (-len(right.stem) % 8) + ".data")  # not the canonical name
    padded.write_bytes(data)
    undecodable = right.parent / right.name.lower()  # names no multihash: not the store's to remove
    undecodable.write_bytes(data)
    assert list(store.iter_cids()) == [cid]
    assert store.gc() == 2
    assert not wrong.exists() and not padded.exists() and store.get(cid) == data
    assert store.gc() == 0 and undecodable.exists()


def test_gc_removes_stale_temp_files_and_spares_fresh_ones(tmp_path: Path) -> None:
    store = FilesystemBlockstore(tmp_path)
    cid = CID.from_sha256(b"x")
    store.put(cid, b"x")
    store.pin(cid)
    shard = store._path(cid).parent
    old, fresh = shard / f".{store._path(cid).stem}.0123456789ab.tmp", shard / ".FRESH.ba9876543210.tmp"
    old_pin = tmp_path / "pins" / ".ABC.pin.0123456789ab.tmp"
    old_layout = tmp_path / "blocks" / ".SHARDING.0123456789ab.tmp"  # a kill while the store was made
    unknown, other = shard / "README", tmp_path / "blocks" / ".notes.0123456789ab.tmp"  # not the store's to remove
    for path in (old, fresh, old_pin, old_layout, unknown, other):
        path.write_bytes(b"partial")
    hours_ago = time.time() - 2 * 3600
    for path in (old, old_pin, old_layout, unknown, other):
        os.utime(path, (hours_ago, hours_ago))
    assert store.gc() == 0  # temp files are not blocks
    assert not old.exists() and not old_pin.exists() and not old_layout.exists()
    assert fresh.exists() and unknown.exists() and other.exists()
    assert store.get(cid) == b"x" and store.pins() == {cid}


def test_gc_leaves_a_directory_named_like_a_pins_temp_file_and_still_counts(tmp_path: Path) -> None:
    store = FilesystemBlockstore(tmp_path)
    store.put(CID.from_sha256(b"junk"), b"junk")
    odd = tmp_path / "pins" / ".stale.tmp"
    odd.mkdir(parents=True)
    hours_ago = time.time() - 2 * 3600
    os.utime(odd, (hours_ago, hours_ago))
    assert store.gc() == 1 and odd.is_dir()


def test_gc_moves_the_only_copy_of_a_pinned_block_into_place_instead_of_deleting_it(tmp_path: Path) -> None:
    store = FilesystemBlockstore(tmp_path)
    root = import_bytes(os.urandom(700), TINY, store.put)
    store.pin(root)
    leaf = next(c for c in walk_dag(store, root) if c.codec == RAW)
    home = store._path(leaf)
    elsewhere = next(p for p in (tmp_path / "blocks").iterdir() if p.is_dir() and p != home.parent) / home.name
    os.replace(home, elsewhere)  # a bad restore put it in the wrong shard
    spare_home = store._path(root)
    spare = next(p for p in (tmp_path / "blocks").iterdir() if p.is_dir() and p != spare_home.parent) / spare_home.name
    spare.write_bytes(spare_home.read_bytes())  # a misplaced copy of a block that is in place too
    assert store.gc() == 1  # the spare
    assert home.exists() and not elsewhere.exists() and not spare.exists()
    assert all(store.holds(c) for c in walk_dag(store, root))


def test_gc_moves_a_misplaced_block_home_even_into_a_shard_not_made_yet(tmp_path: Path) -> None:
    store = FilesystemBlockstore(tmp_path, sync=False)  # makes each shard on its first block
    root = import_bytes(os.urandom(700), TINY, store.put)
    store.pin(root)
    for misplaced in (next(c for c in walk_dag(store, root) if c.codec == RAW), root):  # a leaf, then a node
        home = store._path(misplaced)
        elsewhere = tmp_path / "blocks" / "ZZ" / home.name
        elsewhere.parent.mkdir(exist_ok=True)
        os.replace(home, elsewhere)
        if not any(home.parent.iterdir()):
            home.parent.rmdir()
        assert store.gc() == 0
        assert home.exists() and not elsewhere.exists()
    assert all(store.holds(c) for c in walk_dag(store, root))


def test_blocks_found_present_in_a_background_batch_are_synced_off_the_callers_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    monkeypatch.setattr(bs_filesystem, "_NATIVE", False)
    monkeypatch.setattr(bs_flusher, "syncfs_pays", lambda: False)
    store = FilesystemBlockstore(tmp_path, sync_method="fsync")
    blocks = _blocks(20)
    for cid, data in blocks:
        store.put(cid, data)
    where: list[tuple[int, str]] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (where.append((os.fstat(fd).st_ino, threading.current_thread().name)),
                                                 real(fd)))
    with store.batch(background=True):
        for _ in range(3):  # the same blocks again and again (an input that repeats its chunks)
            for cid, data in blocks:
                store.put(cid, data)
    synced = {ino for ino, _ in where}
    assert {store._path(c).stat().st_ino for c, _ in blocks} <= synced
    assert where and all(name.startswith("blockstore-fsync") for _, name in where)


def test_a_present_block_written_again_by_another_batch_is_synced_by_the_inode_found(
        tmp_path: Path, fsyncs: list[int]) -> None:
    """This background batch found X (inode 1) and synced it; X was then removed and written
    again by another thread's deferred batch (inode 2, not synced yet); finding X again must
    sync inode 2 before this batch ends."""
    import threading

    store = _store(tmp_path, fsyncs, premade=True)
    x, x_data = _blocks(1)[0]
    store.put(x, x_data)
    inside, release = threading.Event(), threading.Event()

    def other() -> None:
        with store.batch():  # deferred: syncs at its end
            store.put(x, x_data)
            inside.set()
            release.wait(30)

    thread = threading.Thread(target=other)
    try:
        with store.batch(background=True):
            store.put(x, x_data)  # found: inode 1 synced with this batch
            store._path(x).unlink()
            thread.start()
            assert inside.wait(30)
            second = store._path(x).stat().st_ino
            fsyncs.clear()
            store.put(x, x_data)  # found again: inode 2
        assert second in fsyncs
    finally:
        release.set()
        if thread.is_alive():
            thread.join()


def test_a_batch_left_from_a_context_with_its_own_batch_leaves_that_one_current(tmp_path: Path) -> None:
    import contextlib
    import threading

    store = FilesystemBlockstore(tmp_path, sync=False)
    outer = contextlib.ExitStack()
    outer.enter_context(store.batch())
    seen = []

    def other() -> None:
        with store.batch():
            mine = store._current_batch()
            outer.close()  # the main thread's batch, ended here
            seen.append(store._current_batch() is mine and mine is not None)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen == [True]


def test_a_shard_that_is_a_file_is_an_integrity_error_naming_it(tmp_path: Path) -> None:
    store = FilesystemBlockstore(tmp_path)
    cid = CID.from_sha256(b"x")
    shard = store._path(cid).parent
    shard.rmdir()
    shard.write_bytes(b"not a directory")
    for attempt in (lambda: store.get(cid), lambda: store.put(cid, b"x"), lambda: store.delete(cid)):
        with pytest.raises(IntegrityError, match=f"{shard} .*its shard.* is not a regular file"):
            attempt()
    assert not store.holds(cid) and not store.has(cid)


# -- a batch is its own context's ----------------------------------------------------------


def test_a_batch_defers_its_own_threads_puts_and_no_one_elses(tmp_path: Path, fsyncs: list[int]) -> None:
    """Another thread's open batch (a seal under way) neither defers a plain put nor keeps
    this thread's own batch from being durable when it exits."""
    import threading

    store = _store(tmp_path, fsyncs, premade=True)
    inside, release = threading.Event(), threading.Event()

    def other() -> None:
        with store.batch(background=True):
            inside.set()
            release.wait(30)

    thread = threading.Thread(target=other)
    thread.start()
    try:
        assert inside.wait(30)
        (a, a_data), (b, b_data) = _blocks(2)
        store.put(a, a_data)  # outside any batch of this thread's: durable when put returns
        assert store._path(a).stat().st_ino in fsyncs
        fsyncs.clear()
        with store.batch():
            store.put(b, b_data)
            assert fsyncs == []  # deferred into this thread's batch ...
        assert store._path(b).stat().st_ino in fsyncs  # ... durable at its end, the other still open
    finally:
        release.set()
        thread.join()


def test_a_batch_left_from_another_context_still_makes_its_blocks_durable(tmp_path: Path, fsyncs: list[int]) -> None:
    """An ExitStack closed on another thread (or a generator resumed in another context)."""
    import contextlib
    import threading

    store = _store(tmp_path, fsyncs, premade=True)
    stack = contextlib.ExitStack()
    stack.enter_context(store.batch())
    cid, data = _blocks(1)[0]
    store.put(cid, data)
    assert fsyncs == []
    closer = threading.Thread(target=stack.close)
    closer.start()
    closer.join()
    assert store._path(cid).stat().st_ino in fsyncs
    fsyncs.clear()
    with store.batch():  # this context's batch is gone too: a new one defers again
        store.put(*_blocks(2)[1])
        assert fsyncs == []
    assert fsyncs


def test_a_worker_that_outlives_a_batch_opens_its_own_instead_of_joining_the_ended_one(
        tmp_path: Path, fsyncs: list[int]) -> None:
    import contextvars
    import threading

    store = _store(tmp_path, fsyncs, premade=True)
    ended, deferred = threading.Event(), []
    with store.batch():
        worker_context = contextvars.copy_context()  # as _Sink's threads get theirs

    def work() -> None:
        with store.batch():
            for cid, data in _blocks(3):
                store.put(cid, data)
            deferred.append(list(fsyncs))
        ended.set()

    thread = threading.Thread(target=worker_context.run, args=(work,))
    thread.start()
    thread.join()
    assert ended.is_set() and deferred == [[]] and len(fsyncs) >= 3


def test_a_block_another_batch_wrote_is_durable_when_this_batch_ends(tmp_path: Path, fsyncs: list[int]) -> None:
    """Thread A's batch wrote X and defers its fsync; B's batch puts X too: X is there, so B
    writes nothing, but B must not end before X is durable."""
    import threading

    from vault.car import import_blocks

    store = _store(tmp_path, fsyncs, premade=True)
    (x, x_data), (y, y_data) = _blocks(2)
    inside, release = threading.Event(), threading.Event()

    def a() -> None:
        with store.batch():
            store.put(x, x_data)
            store.put(y, y_data)
            inside.set()
            release.wait(30)

    thread = threading.Thread(target=a)
    thread.start()
    try:
        assert inside.wait(30) and fsyncs == []
        with store.batch():
            store.put(x, x_data)
        assert store._path(x).stat().st_ino in fsyncs
        import_blocks(store, [(y, y_data)])  # a CAR import finding y there
        assert store._path(y).stat().st_ino in fsyncs
    finally:
        release.set()
        thread.join()


def _syncfs_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[FilesystemBlockstore, list[Path]]:
    if _fileio.SYNCFS is None:
        pytest.skip("no syncfs(2) here")
    synced_fs: list[Path] = []
    real = _fileio.syncfs
    monkeypatch.setattr(_fileio, "syncfs", lambda path: (synced_fs.append(path), real(path)))
    return FilesystemBlockstore(tmp_path, sync_method="syncfs"), synced_fs


def test_seals_writer_threads_join_its_batch(tmp_path: Path, fsyncs: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    from vault.age import X25519Identity
    from vault.vault import Vault

    store, synced_fs = _syncfs_only(tmp_path, monkeypatch)
    fsyncs.clear()
    sealed = Vault(store, X25519Identity.generate()).seal(io.BytesIO(os.urandom(5 << 20)))
    blocks = {store._path(c).stat().st_ino for c in store.iter_cids()}
    assert len(blocks) >= 6 and sealed.cid
    assert synced_fs == [tmp_path] and not blocks & set(fsyncs)  # one syncfs, no put fsynced on its own


def test_car_imports_put_threads_join_its_batch(tmp_path: Path, fsyncs: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    from vault.car import import_blocks

    store, synced_fs = _syncfs_only(tmp_path, monkeypatch)
    fsyncs.clear()
    blocks = [(CID.from_sha256(b, RAW, 1), b) for b in (os.urandom(1 << 20) for _ in range(6))]
    assert import_blocks(store, blocks) == 6
    inodes = {store._path(c).stat().st_ino for c, _ in blocks}
    assert synced_fs == [tmp_path] and not inodes & set(fsyncs)


def test_sync_method_is_checked() -> None:
    with pytest.raises(InputValidationError, match="sync_method must be one of auto, fsync, syncfs"):
        FilesystemBlockstore("/nonexistent-never-created", sync_method="sometimes")


def test_auto_falls_back_to_fsyncs_when_the_machine_got_busy_during_the_batch(
        tmp_path: Path, fsyncs: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """"auto" chose syncfs at the start; by the end much else is dirty, and syncfs would
    wait for it: the batch's own files and shards are fsynced instead."""
    if _fileio.SYNCFS is None:
        pytest.skip("no syncfs(2) here")
    answers = iter([True, False])  # quiet at the start, busy at the end
    monkeypatch.setattr(bs_flusher, "syncfs_pays", lambda: next(answers))
    synced_fs: list[Path] = []
    monkeypatch.setattr(_fileio, "syncfs", synced_fs.append)
    store = FilesystemBlockstore(tmp_path)
    fsyncs.clear()
    with store.batch(background=True):
        for cid, data in _blocks(6):
            store.put(cid, data)
    paths = list((tmp_path / "blocks").rglob("*.data"))
    assert synced_fs == []
    assert sorted(fsyncs) == sorted([p.stat().st_ino for p in paths] + list({p.parent.stat().st_ino for p in paths}))


@pytest.mark.skipif(not bs_filesystem._NATIVE, reason="the native accelerator is not built")
def test_a_direct_batch_writes_unaligned_bytes_past_the_page_cache_too(tmp_path: Path) -> None:
    """An Importer's blocks are plain bytes: put copies each into an aligned buffer, so
    that O_DIRECT takes it, instead of sending it through the page cache."""
    from vault import _accel

    store = FilesystemBlockstore(tmp_path / "repo")
    pieces = [os.urandom(1 << 20), os.urandom(256 << 10)]
    aligned = __import__("mmap").mmap(-1, 1 << 20)
    assert _accel.page_aligned(aligned) and not _accel.page_aligned(memoryview(aligned)[8:])
    assert not all(_accel.page_aligned(p) for p in pieces)
    cids = [CID.from_sha256(p, RAW, 1) for p in pieces]
    with store.batch(background=True, direct=True):
        for cid, piece in zip(cids, pieces):
            store.put(cid, piece)
    for cid, piece in zip(cids, pieces):
        if _fileio.SYSCALL is not None:
            assert not _cached(store._path(cid))  # written with O_DIRECT
        assert store.get(cid) == piece


@pytest.mark.parametrize("mode", ["single", "deferred", "background", "syncfs", "native-deferred"])
def test_a_block_whose_sync_failed_is_written_again_by_its_next_put(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    # After a failed fsync Linux marks the pages clean: the page cache still holds the whole
    # block, so a retry that took it as present would "sync" nothing and report success.
    import errno

    if mode == "native-deferred":  # the C put writes; the batch's fsyncs are Python's
        if not bs_filesystem._NATIVE:
            pytest.skip("the native accelerator is not built")
    else:
        monkeypatch.setattr(bs_filesystem, "_NATIVE", False)
    if mode == "syncfs":
        if _fileio.SYNCFS is None:
            pytest.skip("no syncfs(2) here")
        store = FilesystemBlockstore(tmp_path / "s", sync_method="syncfs")
    else:
        store = FilesystemBlockstore(tmp_path / "s", sync_method="fsync")
    data = os.urandom(100_000)
    cid = CID.from_sha256(data)
    path = store._path(cid)
    target = str(path.parent if mode == "single" else path)  # a single put fsyncs its file before the rename
    armed = [True]
    real_fsync, real_syncfs = os.fsync, _fileio.syncfs
    synced: list[int] = []

    def fsync(fd: int) -> None:
        if armed[0] and os.readlink(f"/proc/self/fd/{fd}") == target:
            armed[0] = False
            synced.clear()  # from here on: what was made durable after the failure
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    def syncfs(root: Path) -> None:
        if armed[0]:
            armed[0] = False
            synced.clear()
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_syncfs(root)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(_fileio, "syncfs", syncfs)
    with pytest.raises(OSError, match="Input/output error"):
        if mode == "single":
            store.put(cid, data)
        else:
            with store.batch(background=mode == "background"):
                store.put(cid, data)
    assert not armed[0]
    rewritten = path.stat().st_ino
    assert rewritten in synced  # written again as a new file, which was fsynced
    assert store.get(cid) == data and [p.name for p in path.parent.iterdir()] == [path.name]  # nothing moved
    other = FilesystemBlockstore(store.root, sync_method="fsync")  # the retry, as another process
    other.put(cid, data)
    assert path.stat().st_ino == rewritten  # durable now: kept


@pytest.mark.skipif(not bs_filesystem._NATIVE, reason="the native accelerator is not built")
def test_a_native_put_whose_directory_fsync_failed_is_written_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    store = FilesystemBlockstore(tmp_path / "s", sync_method="fsync")
    data = os.urandom(100_000)
    cid = CID.from_sha256(data)
    real = bs_filesystem._accel.write_block
    armed = [True]

    def renamed_then_failed(*args, **kwargs):  # noqa: ANN002, ANN003
        refused = real(*args, **kwargs)
        if armed[0]:
            armed[0] = False
            raise OSError(errno.EIO, os.strerror(errno.EIO))  # the shard's fsync, after the rename
        return refused

    monkeypatch.setattr(bs_filesystem._accel, "write_block", renamed_then_failed)
    with pytest.raises(OSError, match="Input/output error"):
        store.put(cid, data)
    first = store._path(cid).stat().st_ino  # in place: the C call does not say where it failed
    store.put(cid, data)
    second = store._path(cid).stat().st_ino
    assert second != first  # this store wrote it again
    store.put(cid, data)
    assert store._path(cid).stat().st_ino == second


def test_a_failed_sync_of_a_batch_never_loses_the_blocks_it_found_present(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # A re-import finds an earlier pinned file's blocks present; its shard's fsync fails:
    # those blocks (written and synced long before) must stay, and gc must keep them.
    import errno

    from vault.car import export_car, import_car

    monkeypatch.setattr(bs_filesystem, "_NATIVE", False)
    store = FilesystemBlockstore(tmp_path / "s", sync_method="fsync")
    data = os.urandom(3 << 20)
    root = import_bytes(data, "unixfs-v1-2025", store.put)
    store.pin(root)
    car = io.BytesIO()
    export_car(store, root, car)
    leaf = next(c for c in walk_dag(store, root) if c.codec == RAW)
    target = str(store._path(leaf).parent)
    armed = [True]
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if armed[0] and os.readlink(f"/proc/self/fd/{fd}") == target:
            armed[0] = False
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    car.seek(0)
    with pytest.raises(OSError, match="Input/output error"):
        import_car(store, car)
    assert not armed[0]
    assert b"".join(export(root, store.get)) == data
    monkeypatch.setattr(bs_filesystem, "STALE_TEMP", 0.0)
    assert store.gc() == 0
    assert b"".join(export(root, store.get)) == data


def _blocks_of_one_shard(store: FilesystemBlockstore, count: int) -> list[tuple[CID, bytes]]:
    """`count` random blocks whose files land in the same shard of `store`."""
    by_shard: dict[str, list[tuple[CID, bytes]]] = {}
    while True:
        data = os.urandom(64)
        cid = CID.from_sha256(data)
        found = by_shard.setdefault(store._path(cid).parent.name, [])
        found.append((cid, data))
        if len(found) == count:
            return found

def test_a_background_batch_rewrites_the_blocks_renamed_into_a_shard_whose_fsync_failed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import threading

    monkeypatch.setattr(bs_filesystem, "_NATIVE", False)
    monkeypatch.setattr(bs_flusher.Flusher, "_THREADS", 1)  # one fsync thread: a fixed order
    store = FilesystemBlockstore(tmp_path / "s", sync_method="fsync")
    blocks = _blocks_of_one_shard(store, 3)
    shard = str(store._path(blocks[0][0]).parent)
    queued = threading.Event()
    armed = [True]
    real_fsync = os.fsync
    synced: list[int] = []

    def fsync(fd: int) -> None:
        if armed[0] and os.readlink(f"/proc/self/fd/{fd}") == shard:
            armed[0] = False
            queued.wait(10)  # the other two are renamed and queued meanwhile
            synced.clear()
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    first = _inodes_of_a_failing_batch(store, blocks, queued.set)
    for cid, data in blocks:
        now = store._path(cid).stat().st_ino
        assert now != first[cid] and now in synced  # each written again and made durable
        assert store.get(cid) == data


def _inodes_of_a_failing_batch(store, blocks, before_the_end=lambda: None) -> dict:
    """Put `blocks` in one background batch whose end raises EIO (the test's fault); the
    inode each block file had right after its put."""
    first = {}
    with pytest.raises(OSError, match="Input/output error"):
        with store.batch(background=True):
            for cid, data in blocks:
                store.put(cid, data)
                first[cid] = store._path(cid).stat().st_ino
            before_the_end()
    return first


def test_a_block_the_other_fsync_thread_took_for_synced_is_rewritten_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Linux reports a directory's writeback error once: thread A's fsync of the shard fails
    # while thread B's, a moment earlier or later, succeeds for a block renamed before it.
    import errno
    import threading

    monkeypatch.setattr(bs_filesystem, "_NATIVE", False)
    store = FilesystemBlockstore(tmp_path / "s", sync_method="fsync")
    blocks = _blocks_of_one_shard(store, 2)
    shard = store._path(blocks[0][0]).parent
    real = bs_flusher.fsync_dir
    calls = [0]
    other_done = threading.Event()

    def fsync_dir(path: Path) -> None:
        if Path(path) == shard and calls[0] < 2:
            calls[0] += 1
            if calls[0] == 1:  # thread A: fails once B's call has succeeded
                other_done.wait(10)
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            real(path)
            other_done.set()
            return
        real(path)

    monkeypatch.setattr(bs_flusher, "fsync_dir", fsync_dir)
    first = _inodes_of_a_failing_batch(store, blocks)
    assert calls[0] == 2
    for cid, data in blocks:
        assert store._path(cid).stat().st_ino != first[cid]  # both written again
        assert store.get(cid) == data


@pytest.mark.skipif(os.geteuid() != 0, reason="a bind mount needs root")
def test_owns_sees_a_shard_made_after_it_last_looked(tmp_path: Path) -> None:
    import subprocess

    store = FilesystemBlockstore(tmp_path / "s", sync=False)  # makes each shard on its first block
    assert not store.owns(tmp_path / "elsewhere")  # the shards' identities are kept from here
    data = b"a block in a new shard"
    cid = CID.from_sha256(data)
    store.put(cid, data)
    alias = tmp_path / "alias"
    alias.mkdir()
    if subprocess.run(["mount", "--bind", str(store._path(cid).parent), str(alias)], capture_output=True).returncode:
        pytest.skip("mount --bind is not allowed here")
    try:
        assert store.owns(alias / "out.bin")
    finally:
        subprocess.run(["umount", str(alias)], check=True)


def test_owns_keeps_nothing_from_a_scan_of_the_shards_that_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from vault.blockstore import _layout

    store = FilesystemBlockstore(tmp_path / "s")
    blocks = os.stat(store.root / "blocks")
    _layout._SHARDS.pop((blocks.st_dev, blocks.st_ino), None)
    real = os.scandir

    def failing(path):  # noqa: ANN001
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(_layout.os, "scandir", failing)
    assert not store.owns(tmp_path / "elsewhere")
    assert (blocks.st_dev, blocks.st_ino) not in _layout._SHARDS  # a later call scans again
    monkeypatch.setattr(_layout.os, "scandir", real)
    assert not store.owns(tmp_path / "elsewhere")
    assert len(_layout._SHARDS[(blocks.st_dev, blocks.st_ino)][1]) == 1 + 1024


def test_a_failed_shard_is_rewritten_once_per_file_however_often_its_blocks_were_synced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    monkeypatch.setattr(bs_filesystem, "_NATIVE", False)
    store = FilesystemBlockstore(tmp_path / "s", sync_method="fsync")
    data = b"found present again and again"
    cid = CID.from_sha256(data)
    store.put(cid, data)
    shard = str(store._path(cid).parent)
    rewrites: list[Path] = []
    real_rewrite = bs_flusher._rewrite
    monkeypatch.setattr(bs_flusher, "_rewrite", lambda path: (rewrites.append(path), real_rewrite(path))[1])
    dir_syncs = [0]
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}") == shard:
            dir_syncs[0] += 1
            if dir_syncs[0] == 300:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="Input/output error"):
        with store.batch(background=True):
            for _ in range(300):
                assert store.adopt(cid)  # found present: synced with the batch, each time
    assert rewrites == [store._path(cid)]  # once, not once per time it was synced
    assert store.get(cid) == data
