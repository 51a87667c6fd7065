"""CARv1 read/write/import/export and the DAG-CBOR header subset."""
from __future__ import annotations

import hashlib
import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault import _mfcbor
from vault._mfbase import FormatError, encode_varint
from vault.blockstore import MemoryBlockstore, walk_dag
from vault.car import (MAX_SECTION_SIZE, dag_blocks, encode_header, export_car, import_car, read_car,
                       write_car)
from vault.cid import CID, DAG_PB, RAW
from vault.errors import BlockMismatchError, InputValidationError, IntegrityError, InvalidCARError
from vault.unixfs import Profile, export, import_bytes

FEW = settings(max_examples=50, deadline=None)
TINY = Profile("tiny", cid_version=0, raw_leaves=False, chunk_size=32, max_links=3)

blocks_st = st.lists(st.binary(max_size=300), max_size=8).map(
    lambda datas: [(CID.from_sha256(d, RAW, 1), d) for d in datas])
cid_st = st.builds(lambda d, v: CID.from_digest(d, DAG_PB, v), st.binary(min_size=32, max_size=32), st.sampled_from([0, 1]))


def _car(roots: list[CID], blocks: list[tuple[CID, bytes]]) -> bytes:
    out = io.BytesIO()
    write_car(roots, blocks, out)
    return out.getvalue()


def _section(cid: CID, data: bytes) -> bytes:
    body = cid.to_bytes() + data
    return encode_varint(len(body)) + body


# -- DAG-CBOR header --------------------------------------------------------------------------
def test_header_bytes_are_canonical_dag_cbor() -> None:
    root = CID.decode("bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e")
    header = encode_header([root])
    body = bytes.fromhex("a265726f6f747381d82a5825") + b"\0" + root.to_bytes() + bytes.fromhex("6776657273696f6e01")
    assert header == encode_varint(len(body)) + body  # {"roots": [tag42(0x00 ‖ cid)], "version": 1}


cbor_values = st.recursive(
    st.one_of(st.integers(-(2**64), 2**64 - 1), st.text(max_size=10), st.binary(max_size=10), st.booleans(),
              st.none(), cid_st),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children, max_size=4)),
    max_leaves=12)


@FEW
@given(cbor_values)
def test_cbor_round_trip(value: object) -> None:
    encoded = _mfcbor.encode(value)
    assert _mfcbor.decode(encoded) == value
    assert _mfcbor.encode(_mfcbor.decode(encoded)) == encoded


@FEW
@given(st.binary(max_size=64))
def test_cbor_decoder_only_raises_format_error(raw: bytes) -> None:
    try:
        _mfcbor.decode(raw)
    except FormatError:
        pass


@pytest.mark.parametrize("raw, needle", [
    (b"\x18\x05", "non-minimal"), (b"\x9f\xff", "indefinite"), (b"\xf9\x3c\x00", "float"),
    (b"\xa2\x61a\x01\x61a\x02", "duplicate"), (b"\xa1\x01\x02", "keys"), (b"\xc1\x00", "tag"),
    (b"\x81" * 20 + b"\x00", "deep"), (b"\x00\x00", "trailing"), (b"\x9b" + b"\xff" * 8, "longer"),
])
def test_cbor_decoder_refusals(raw: bytes, needle: str) -> None:
    with pytest.raises(FormatError, match=needle):
        _mfcbor.decode(raw)


# -- read / write ----------------------------------------------------------------------------
@FEW
@given(st.lists(cid_st, min_size=1, max_size=3), blocks_st)
def test_write_read_round_trip(roots: list[CID], blocks: list[tuple[CID, bytes]]) -> None:
    got_roots, got = read_car(io.BytesIO(_car(roots, blocks)))
    assert got_roots == roots
    assert list(got) == blocks


@FEW
@given(st.binary(max_size=200))
def test_reader_fails_only_with_named_errors(raw: bytes) -> None:
    try:
        _, blocks = read_car(io.BytesIO(raw))
        list(blocks)
    except (InputValidationError, IntegrityError):
        pass


@FEW
@given(blocks_st.filter(bool), st.data())
def test_any_truncation_is_invalid(blocks: list[tuple[CID, bytes]], data: st.DataObject) -> None:
    car = _car([blocks[0][0]], blocks)
    cut = data.draw(st.integers(1, len(car) - 1))
    header_len = len(encode_header([blocks[0][0]]))
    if cut == header_len or any(cut == header_len + sum(len(_section(c, d)) for c, d in blocks[:i + 1])
                                for i in range(len(blocks))):
        return  # a cut on a section boundary is a shorter, valid CAR
    with pytest.raises(InvalidCARError, match="truncated"):
        _, it = read_car(io.BytesIO(car[:cut]))
        list(it)


ROOT = CID.from_sha256(b"root", RAW, 1)


def _hdr(value: object) -> bytes:
    body = _mfcbor.encode(value)
    return encode_varint(len(body)) + body


@pytest.mark.parametrize("raw, needle", [
    (b"", "empty"),
    (b"\xff" * 10, "varint"),
    (b"\x00", "out of range"),
    (encode_varint(MAX_SECTION_SIZE) + b"\xa0", "out of range"),
    (b"\x05\xa1", "truncated"),
    (encode_varint(3) + b"\x82\x01\x02", "not a map"),
    (encode_varint(2) + b"\xa1\x01", "not valid DAG-CBOR"),
    (_hdr({"roots": [ROOT], "version": 2}), "CARv2"),
    (_hdr({"roots": [ROOT]}), "version must be 1"),
    (_hdr({"roots": [], "version": 1}), "non-empty"),
    (_hdr({"roots": ["x"], "version": 1}), "list of CIDs"),
    (_hdr({"roots": [ROOT], "version": 1, "x": 0}), "unexpected keys"),
])
def test_bad_headers(raw: bytes, needle: str) -> None:
    with pytest.raises(InvalidCARError, match=needle):
        read_car(io.BytesIO(raw))


@pytest.mark.parametrize("tail, needle", [
    (b"\x00", "empty"),
    (encode_varint(MAX_SECTION_SIZE + 1), "limit"),
    (b"\x80\x80", "cut off"),
    (encode_varint(40) + ROOT.to_bytes(), "truncated"),
    (encode_varint(5) + b"\x01\x55\x13\x01\x00", "CID"),
])
def test_bad_sections(tail: bytes, needle: str) -> None:
    _, it = read_car(io.BytesIO(encode_header([ROOT]) + _section(ROOT, b"root") + tail))
    assert next(it) == (ROOT, b"root")
    with pytest.raises(InvalidCARError, match=needle):
        next(it)


def test_oversized_section_is_refused_before_it_is_read() -> None:
    class Endless(io.RawIOBase):
        def __init__(self) -> None:
            self.served = 0
            self.prefix = encode_header([ROOT]) + encode_varint(64 << 20)

        def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
            chunk = self.prefix[self.served:self.served + len(b)] or b"\0" * len(b)
            b[: len(chunk)] = chunk
            self.served += len(chunk)
            return len(chunk)

    src = Endless()
    _, it = read_car(src)  # type: ignore[arg-type]
    with pytest.raises(InvalidCARError, match="limit"):
        next(it)
    assert src.served < 64


def test_block_that_does_not_match_its_cid_is_rejected() -> None:
    car = encode_header([ROOT]) + _section(ROOT, b"r00t")
    _, it = read_car(io.BytesIO(car))
    with pytest.raises(BlockMismatchError):
        next(it)


# -- store integration ------------------------------------------------------------------------
def test_export_is_dfs_preorder_deduplicated_and_imports_back() -> None:
    src = MemoryBlockstore()
    data = bytes(32) * 20 + b"tail"  # many identical leaves
    root = import_bytes(data, TINY, src.put)
    out = io.BytesIO()
    count = export_car(src, root, out)
    roots, blocks = read_car(io.BytesIO(out.getvalue()))
    listed = [cid for cid, _ in blocks]
    assert roots == [root] and count == len(listed)
    assert listed == list(walk_dag(src, root))  # walk_dag is DFS pre-order
    assert len(listed) == len({c.to_bytes() for c in listed}) < 30
    dst = MemoryBlockstore()
    assert import_car(dst, io.BytesIO(out.getvalue())) == [root]
    assert b"".join(export(root, dst.get)) == data


def test_import_is_all_or_nothing() -> None:
    src = MemoryBlockstore()
    data = hashlib.shake_256(b"x").digest(500)
    root = import_bytes(data, TINY, src.put)
    out = io.BytesIO()
    export_car(src, root, out)
    good = out.getvalue()
    leaf_cid = CID.from_sha256(b"victim", RAW, 1)
    bad = good + _section(leaf_cid, b"victiM")
    dst = MemoryBlockstore()
    existing = CID.from_sha256(b"already here")
    dst.put(existing, b"already here")
    with pytest.raises(BlockMismatchError):
        import_car(dst, io.BytesIO(bad))
    assert [c.multihash for c in dst.iter_cids()] == [existing.multihash]
    with pytest.raises(InvalidCARError):
        import_car(dst, io.BytesIO(good[:-3]))
    assert len(dst) == 1


class _Flaky(MemoryBlockstore):
    """Fails its `fail_at`-th put (disk full); `before_failing` runs just before, as an
    import running at the same time would."""

    def __init__(self, fail_at: int, before_failing=None) -> None:
        super().__init__()
        self.puts = 0
        self.fail_at = fail_at
        self.before_failing = before_failing

    def put(self, cid: CID, data: bytes) -> None:
        self.puts += 1
        if self.puts == self.fail_at:
            if self.before_failing is not None:
                self.before_failing()
            raise OSError("disk full")
        super().put(cid, data)


def _car_of(seed: bytes) -> tuple[CID, bytes]:
    src = MemoryBlockstore()
    root = import_bytes(hashlib.shake_256(seed).digest(400), TINY, src.put)
    out = io.BytesIO()
    export_car(src, root, out)
    return root, out.getvalue()


def test_a_store_failing_midway_leaves_only_unpinned_whole_blocks_that_gc_removes() -> None:
    root, car = _car_of(b"y")
    dst = _Flaky(fail_at=4)
    with pytest.raises(OSError, match="disk full") as info:
        import_car(dst, io.BytesIO(car))
    assert dst.puts == 4 and len(dst) == 3
    assert "3 of the " in "".join(info.value.__notes__) and "gc" in "".join(info.value.__notes__)
    for cid in list(dst.iter_cids()):
        cid.verify(dst.get(cid))  # whole blocks, nothing half-written
    assert dst.pins() == frozenset()
    assert dst.gc() == 3 and len(dst) == 0


def test_a_failed_import_does_not_delete_blocks_a_concurrent_import_relies_on() -> None:
    # Import A stores some blocks, then fails. Meanwhile import B of the same CAR found those
    # blocks present, skipped them and pinned the root. Deleting A's blocks on failure (as
    # import_blocks once did) would leave B's pinned DAG with holes.
    root, car = _car_of(b"shared")

    def concurrent_import() -> None:
        dst.fail_at = 0  # B's own puts succeed
        assert import_car(dst, io.BytesIO(car)) == [root]
        dst.pin(root)  # walks the DAG: every block present

    dst = _Flaky(fail_at=3, before_failing=concurrent_import)
    with pytest.raises(OSError, match="disk full"):
        import_car(dst, io.BytesIO(car))
    assert dst.pins() == {root}
    stored = {cid.multihash for cid in dst.iter_cids()}
    assert {cid.multihash for cid, _ in dag_blocks(dst, root)} == stored  # complete, raises if not
    assert dst.gc() == 0


def test_write_car_needs_a_root() -> None:
    with pytest.raises(InvalidCARError, match="root"):
        write_car([], [], io.BytesIO())


# -- importing into the filesystem store ---------------------------------------------------
def _large_dag(size: int = 3 << 20) -> tuple[MemoryBlockstore, CID, bytes]:
    src = MemoryBlockstore()
    data = hashlib.shake_256(b"large").digest(size)
    return src, import_bytes(data, "v1", src.put), data  # 256 KiB raw leaves: direct-sized


class _KeepingStore(MemoryBlockstore):
    """A store that keeps the very object put() is given (a plugin may well do that)."""

    def put(self, cid: CID, data) -> None:
        cid.verify(data)
        self._blocks[cid.multihash] = data


def test_import_gives_a_foreign_store_blocks_of_its_own() -> None:
    src, root, data = _large_dag()
    car = io.BytesIO()
    export_car(src, root, car)
    dst = _KeepingStore()
    import_car(dst, io.BytesIO(car.getvalue()))
    assert b"".join(export(root, dst.get)) == data  # no buffer reused under it


def test_import_writes_large_blocks_past_the_page_cache_in_a_background_batch(tmp_path, monkeypatch) -> None:
    from vault import _fileio
    from vault.blockstore import FilesystemBlockstore

    src, root, data = _large_dag()
    car = io.BytesIO()
    export_car(src, root, car)
    store = FilesystemBlockstore(tmp_path / "repo")
    batches = []
    real_batch = FilesystemBlockstore.batch
    monkeypatch.setattr(FilesystemBlockstore, "batch", lambda self, **kw: (batches.append(kw), real_batch(self, **kw))[1])
    assert import_car(store, io.BytesIO(car.getvalue())) == [root]
    assert batches == [{"background": True, "direct": True}]
    leaves = [cid for cid in walk_dag(src, root) if cid.codec == RAW]
    assert len(leaves) == 12
    if _fileio.SYSCALL is not None:  # before anything reads them
        for leaf in leaves:
            fd = os.open(store._path(leaf), os.O_RDONLY)
            try:
                assert not _fileio.in_page_cache(fd, 256 << 10)  # written with O_DIRECT
            finally:
                os.close(fd)
    assert b"".join(export(root, store.get)) == data


# -- blocks are checked in groups, and come out as if one by one -------------------------
def _numbered(count: int) -> list[tuple[CID, bytes]]:
    datas = [hashlib.sha256(b"%d" % i).digest() * (i + 1) for i in range(count)]
    return [(CID.from_sha256(d, RAW, 1), d) for d in datas]


def _until_error(car: bytes) -> tuple[list[CID], BaseException | None]:
    got: list[CID] = []
    _, blocks = read_car(io.BytesIO(car))
    try:
        for cid, data in blocks:
            cid.verify(data)
            got.append(cid)
    except (BlockMismatchError, InvalidCARError) as exc:
        return got, exc
    return got, None


@pytest.mark.parametrize("bad", [0, 1, 15, 16, 17, 39])
def test_a_bad_block_stops_the_read_right_after_the_good_ones_before_it(bad) -> None:
    blocks = _numbered(40)
    cid, data = blocks[bad]
    tampered = blocks[:bad] + [(cid, data[:-1] + bytes([data[-1] ^ 1]))] + blocks[bad + 1:]
    got, exc = _until_error(_car([blocks[0][0]], tampered))
    assert got == [c for c, _ in blocks[:bad]]
    assert isinstance(exc, BlockMismatchError) and str(cid) in str(exc)


@pytest.mark.parametrize("cut", [1, 5, 16, 20])
def test_a_truncated_car_yields_the_whole_sections_before_the_cut(cut) -> None:
    blocks = _numbered(24)
    car = _car([blocks[0][0]], blocks)
    end = len(_car([blocks[0][0]], blocks[:cut])) + 3  # into section `cut`
    got, exc = _until_error(car[:end])
    assert got == [c for c, _ in blocks[:cut]]
    assert isinstance(exc, InvalidCARError)
    # a bad block before the cut is reported, not the cut
    cid, data = blocks[cut - 1]
    tampered = blocks[: cut - 1] + [(cid, b"x" + data[1:])] + blocks[cut:]
    got, exc = _until_error(_car([blocks[0][0]], tampered)[:end])
    assert got == [c for c, _ in blocks[: cut - 1]] and isinstance(exc, BlockMismatchError)


def test_import_puts_on_writer_threads_and_reports_progress_on_the_callers(tmp_path, monkeypatch) -> None:
    import threading

    from vault.blockstore import FilesystemBlockstore

    src, root, data = _large_dag()
    car = io.BytesIO()
    blocks = export_car(src, root, car)
    store = FilesystemBlockstore(tmp_path / "repo")
    present = next(cid for cid in walk_dag(src, root) if cid.codec == RAW)
    store.put(present, src.get(present))  # found present: reported, not put again
    putters, reporters, reported = set(), set(), []
    real_put = FilesystemBlockstore.put

    def put(self, cid, block):
        putters.add(threading.get_ident())
        return real_put(self, cid, block)

    def progress(n: int) -> None:
        reporters.add(threading.get_ident())
        reported.append(n)

    monkeypatch.setattr(FilesystemBlockstore, "put", put)
    import_car(store, io.BytesIO(car.getvalue()), progress)
    assert reporters == {threading.get_ident()} and threading.get_ident() not in putters
    assert len(reported) == blocks and sum(reported) == sum(len(src.get(c)) for c in src.iter_cids())
    assert b"".join(export(root, store.get)) == data


def test_a_failed_put_on_a_writer_thread_stops_the_import_and_says_how_many_landed(tmp_path, monkeypatch) -> None:
    import threading

    from vault.blockstore import FilesystemBlockstore

    src, root, _ = _large_dag(8 << 20)  # 32 leaves + a root
    car = io.BytesIO()
    export_car(src, root, car)
    store = FilesystemBlockstore(tmp_path / "repo")
    real_put, calls, lock = FilesystemBlockstore.put, [], threading.Lock()

    def put(self, cid, block):
        with lock:
            calls.append(cid)
            n = len(calls)
        if n == 5:
            raise OSError(28, "No space left on device")
        return real_put(self, cid, block)

    monkeypatch.setattr(FilesystemBlockstore, "put", put)
    with pytest.raises(OSError, match="No space") as caught:
        import_car(store, io.BytesIO(car.getvalue()))
    stored = len(list(store.iter_cids()))
    assert 4 <= stored < 33 and len(calls) < 33  # no put started long after the failure
    assert caught.value.__notes__ == [f"{stored} of the 33 blocks were stored before this failure; "
                                      "this import did not pin them, and a gc removes them unless a pin reaches them"]
    monkeypatch.setattr(FilesystemBlockstore, "put", real_put)
    assert import_car(store, io.BytesIO(car.getvalue())) == [root]  # a retry completes it
    assert b"".join(export(root, store.get)) == b"".join(export(root, src.get))


# -- exporting from the filesystem store ---------------------------------------------------
def _fs_copy(tmp_path, src: MemoryBlockstore):
    from vault.blockstore import FilesystemBlockstore

    store = FilesystemBlockstore(tmp_path / "repo")
    for cid in src.iter_cids():
        store.put(cid, src.get(cid))
    return store


@pytest.mark.parametrize("data", [hashlib.shake_256(b"e").digest(5 << 20), bytes(3 << 20) + b"tail"],
                             ids=["distinct-leaves", "repeated-leaves"])
def test_export_from_disk_reads_ahead_past_the_page_cache_and_matches_memory(tmp_path, monkeypatch, data) -> None:
    from vault.blockstore import FilesystemBlockstore

    src = MemoryBlockstore()
    root = import_bytes(data, "v1", src.put)
    store = _fs_copy(tmp_path, src)
    asked = []
    real_get = FilesystemBlockstore.get
    monkeypatch.setattr(FilesystemBlockstore, "get",
                        lambda self, cid, **kw: (asked.append(kw), real_get(self, cid, **kw))[1])
    on_disk, in_memory = io.BytesIO(), io.BytesIO()
    assert export_car(store, root, on_disk) == export_car(src, root, in_memory)
    assert on_disk.getvalue() == in_memory.getvalue()
    assert asked and all(kw == {"verify": False, "direct": True} for kw in asked)  # checked by the exporter


@pytest.mark.parametrize("victim", [0, 7, 19])
def test_export_from_disk_finds_a_corrupt_or_missing_leaf(tmp_path, victim) -> None:
    src = MemoryBlockstore()
    root = import_bytes(hashlib.shake_256(b"c").digest(5 << 20), "v1", src.put)  # 20 leaves
    store = _fs_copy(tmp_path, src)
    leaf = [c for c in walk_dag(src, root) if c.codec == RAW][victim]
    path = store._path(leaf)
    good = path.read_bytes()
    path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(BlockMismatchError):
        export_car(store, root, io.BytesIO())
    path.unlink()
    from vault.errors import BlockNotFoundError

    with pytest.raises(BlockNotFoundError):
        export_car(store, root, io.BytesIO())


def test_an_abandoned_export_stops_its_read_ahead(tmp_path) -> None:
    import threading

    src = MemoryBlockstore()
    root = import_bytes(hashlib.shake_256(b"a").digest(5 << 20), "v1", src.put)
    store = _fs_copy(tmp_path, src)
    blocks = dag_blocks(store, root)
    next(blocks), next(blocks)
    assert any(t.name.startswith("vault-fetch") for t in threading.enumerate())
    blocks.close()
    assert not any(t.name.startswith("vault-fetch") and t.is_alive() for t in threading.enumerate())


@settings(max_examples=15, deadline=None)
@given(leaves=st.integers(1, 24), fail_at=st.one_of(st.none(), st.integers(1, 25)), present=st.integers(0, 3))
def test_parallel_import_either_completes_or_counts_what_landed(tmp_path_factory, leaves, fail_at, present) -> None:
    import threading

    from vault.blockstore import FilesystemBlockstore

    src = MemoryBlockstore()
    root = import_bytes(hashlib.shake_256(b"%d" % leaves).digest(leaves << 18), "v1", src.put)  # 256 KiB leaves
    car = io.BytesIO()
    total = export_car(src, root, car)
    store = FilesystemBlockstore(tmp_path_factory.mktemp("repo"))
    for cid in [c for c in walk_dag(src, root) if c.codec == RAW][:present]:
        store.put(cid, src.get(cid))  # some already there: skipped, not counted
    before = len(list(store.iter_cids()))
    calls, lock = [0], threading.Lock()
    real_put = FilesystemBlockstore.put

    def put(self, cid, block):
        with lock:
            calls[0] += 1
            n = calls[0]
        if n == fail_at:
            raise OSError(28, "No space left on device")
        return real_put(self, cid, block)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FilesystemBlockstore, "put", put)
        try:
            added = import_car(store, io.BytesIO(car.getvalue()))
        except OSError as exc:
            landed = len(list(store.iter_cids())) - before
            notes = getattr(exc, "__notes__", [])
            assert (notes == [] and landed == 0) or notes[0].startswith(f"{landed} of the {total} blocks")
        else:
            assert added == [root]
            assert b"".join(export(root, store.get)) == b"".join(export(root, src.get))


# -- review findings (session 9) -----------------------------------------------------------
def test_import_into_a_filesystem_store_takes_blocks_larger_than_a_car_section(tmp_path) -> None:
    """import_blocks takes any blocks (only read_car caps a section): one of 3 MiB, among
    small ones, lands whole instead of failing as a short read of the spool."""
    from vault.blockstore import FilesystemBlockstore
    from vault.car import import_blocks

    big = hashlib.shake_256(b"big").digest((3 << 20) + 5)
    blocks = _numbered(3) + [(CID.from_sha256(big, RAW, 1), big)] + _numbered(6)[3:]
    store = FilesystemBlockstore(tmp_path / "repo")
    assert import_blocks(store, blocks) == 7
    for cid, data in blocks:
        assert store.get(cid) == data


def test_no_put_starts_after_one_failed(tmp_path, monkeypatch) -> None:
    """With one writer thread the next put is already queued when the first one fails: it
    must be skipped (no write to a disk that is full), not reported as stored or done."""
    import threading
    import time

    from vault import car as car_module
    from vault.blockstore import FilesystemBlockstore
    from vault.car import import_blocks

    monkeypatch.setattr(car_module, "_WRITERS", 1)
    blocks = [(CID.from_sha256(d, RAW, 1), d) for d in (os.urandom(8192) for _ in range(6))]
    calls, lock = [], threading.Lock()

    def put(self, cid, block):
        with lock:
            calls.append(cid)
        time.sleep(0.05)  # meanwhile the caller queues the next put behind this one
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(FilesystemBlockstore, "put", put)
    done: list[int] = []
    with pytest.raises(OSError, match="No space") as caught:
        import_blocks(FilesystemBlockstore(tmp_path / "repo"), blocks, done.append)
    assert calls == [blocks[0][0]] and done == []
    assert not getattr(caught.value, "__notes__", None)  # nothing was stored


def test_read_ahead_survives_a_leaf_repeated_in_a_node(tmp_path, monkeypatch) -> None:
    """dag_blocks sends a repeated CID once: the read-ahead plans each once too, so every
    leaf still comes from the fetch threads, none from the caller's."""
    import threading

    from vault._mfdagpb import encode_link, encode_node
    from vault.blockstore import FilesystemBlockstore

    store = FilesystemBlockstore(tmp_path / "repo")
    leaves = [(CID.from_sha256(d, RAW, 1), d) for d in (os.urandom(70000) for _ in range(10))]
    for cid, data in leaves:
        store.put(cid, data)
    order = [leaves[0], leaves[1], leaves[0]] + leaves[2:6] + [leaves[3]] + leaves[6:]
    node = encode_node([encode_link(c.to_bytes(), len(d)) for c, d in order], None)
    root = CID.from_sha256(node, DAG_PB, 1)
    store.put(root, node)
    readers: dict[CID, str] = {}
    real_get = FilesystemBlockstore.get

    def get(self, cid, **kw):
        readers[cid] = threading.current_thread().name
        return real_get(self, cid, **kw)

    monkeypatch.setattr(FilesystemBlockstore, "get", get)
    got = list(dag_blocks(store, root))
    assert [c for c, _ in got] == [root] + [c for c, _ in leaves]
    assert all(readers[c].startswith("vault-fetch") for c, _ in leaves), readers


def test_dag_blocks_without_read_ahead_reads_one_block_at_a_time_on_its_caller(tmp_path) -> None:
    import threading

    src = MemoryBlockstore()
    root = import_bytes(hashlib.shake_256(b"g").digest(3 << 20), "v1", src.put)
    store = _fs_copy(tmp_path, src)
    before = set(threading.enumerate())
    blocks = dag_blocks(store, root, read_ahead=False)
    first = [next(blocks), next(blocks)]
    assert set(threading.enumerate()) == before  # no fetch or checker threads held
    assert first + list(blocks) == list(dag_blocks(src, root))


class _FailingSource(io.BytesIO):
    """A CAR source whose read fails (a disk or network error) once `limit` bytes are read."""

    def __init__(self, data: bytes, limit: int) -> None:
        super().__init__(data)
        self._limit = limit

    def read(self, n: int = -1) -> bytes:
        if self.tell() >= self._limit:
            raise OSError(5, "Input/output error")
        return super().read(n if n < 0 else min(n, self._limit - self.tell()))


@pytest.mark.parametrize("cut", [1, 7, 16, 20])
def test_a_failing_source_yields_the_checked_sections_before_the_error(cut) -> None:
    blocks = _numbered(24)
    car = _car([blocks[0][0]], blocks)
    src = _FailingSource(car, len(_car([blocks[0][0]], blocks[:cut])))
    _, sections = read_car(src)
    got = []
    with pytest.raises(OSError, match="Input/output"):
        for cid, _ in sections:
            got.append(cid)
    assert got == [c for c, _ in blocks[:cut]]
