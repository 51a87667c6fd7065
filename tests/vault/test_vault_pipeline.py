"""The zero-copy paths of the vault: chunk-at-a-time STREAM (ChunkSealer / ChunkOpener),
seal's ciphertext laid out in leaf buffers and its leaf hashing shared between two
threads, the worker stage (_Sink), open's single verification of every block, the
blockstore's background fsyncs and `get(verify=False)`, and what seal and open leave
durable on disk. Real components throughout; os.fsync is wrapped only to record which
inodes were synced, and the worker's backlog is pinned only to choose who hashes."""
from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import functools
import io
import mmap
import os
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.age import X25519Identity, read_header, unwrap_file_key
from vault.age._stream import (
    CHUNK_SIZE,
    ENC_CHUNK_SIZE,
    NONCE_SIZE,
    TAG_SIZE,
    ChunkOpener,
    _chunk_nonce,
    iter_runs,
    ChunkSealer,
    open_,
    payload_aead,
    payload_key,
    seal,
)
from vault._output import _Output
from vault._pipeline import _InOrder, _Prefetch, _Sink
from vault._seal import _Arenas, _arena, seal_segments
from vault import _accel
from vault.blockstore import _flusher as bs_flusher
from vault.blockstore import filesystem as bs_filesystem
from vault.blockstore import FilesystemBlockstore, MemoryBlockstore, walk_dag
from vault.cid import CID, DAG_PB, RAW
from vault.errors import BlockMismatchError, BlockNotFoundError, InputValidationError, PayloadError
from vault.unixfs import export, import_bytes
from vault.vault import Vault

KEY = bytes(range(16))
NONCE = bytes(range(100, 116))
MIB = 1 << 20


@pytest.fixture(scope="module")
def owner() -> X25519Identity:
    return X25519Identity.generate()


def seal_chunks(plaintext: bytes) -> bytes:
    sealer = ChunkSealer(KEY, NONCE)
    out = bytearray(sealer.nonce)
    starts = range(0, max(len(plaintext), 1), CHUNK_SIZE)
    for start in starts:
        piece = plaintext[start : start + CHUNK_SIZE]
        buf = bytearray(len(piece) + TAG_SIZE)
        sealer.seal_into(piece, buf, start == starts[-1])
        out += buf
    return bytes(out)


def open_chunks(payload: bytes) -> bytes:
    opener = ChunkOpener(payload_aead(KEY, payload[:NONCE_SIZE]))
    body = payload[NONCE_SIZE:]
    plain = bytearray()
    buf = bytearray(CHUNK_SIZE)
    for start in range(0, len(body), ENC_CHUNK_SIZE):
        chunk = body[start : start + ENC_CHUNK_SIZE]
        n = opener.open_into(chunk, buf, start + ENC_CHUNK_SIZE >= len(body))
        plain += buf[:n]
    if not opener.finished:
        raise PayloadError("payload truncated: no final chunk")
    return bytes(plain)


SIZES = [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE]


@pytest.mark.parametrize("size", SIZES)
def test_chunk_sealer_writes_the_same_stream_as_seal(size: int) -> None:
    plaintext = os.urandom(size)
    assert seal_chunks(plaintext) == b"".join(seal(KEY, [plaintext], NONCE))


@pytest.mark.parametrize("size", SIZES)
def test_chunk_opener_reads_what_seal_wrote(size: int) -> None:
    plaintext = os.urandom(size)
    assert open_chunks(b"".join(seal(KEY, [plaintext], NONCE))) == plaintext


@settings(max_examples=40, deadline=None)
@given(plaintext=st.binary(max_size=3 * CHUNK_SIZE + 10), flip=st.integers(min_value=0))
def test_chunk_opener_agrees_with_open_on_any_damage(plaintext: bytes, flip: int) -> None:
    payload = bytearray(b"".join(seal(KEY, [plaintext], NONCE)))
    payload[NONCE_SIZE + flip % (len(payload) - NONCE_SIZE)] ^= 0x40
    with pytest.raises(PayloadError):
        list(open_(payload_aead(KEY, NONCE), io.BytesIO(bytes(payload[NONCE_SIZE:]))))
    with pytest.raises(PayloadError):
        open_chunks(bytes(payload))


def test_chunk_opener_refuses_truncation_trailing_data_and_empty_final_chunks() -> None:
    two = b"".join(seal(KEY, [os.urandom(2 * CHUNK_SIZE)], NONCE))
    with pytest.raises(PayloadError, match="no final chunk"):
        open_chunks(two[: NONCE_SIZE + ENC_CHUNK_SIZE])  # the final chunk dropped
    with pytest.raises(PayloadError, match="trailing"):
        open_chunks(two + b"x")
    one = b"".join(seal(KEY, [b"abc"], NONCE))
    with pytest.raises(PayloadError, match="short chunk"):  # a short chunk with data after it
        ChunkOpener(payload_aead(KEY, NONCE)).open_into(one[NONCE_SIZE:], bytearray(CHUNK_SIZE), False)
    aead = payload_aead(KEY, NONCE)
    full = aead.encrypt(_chunk_nonce(0, False), bytes(CHUNK_SIZE), None)
    empty_final = aead.encrypt(_chunk_nonce(1, True), b"", None)
    opener = ChunkOpener(aead)
    opener.open_into(full, bytearray(CHUNK_SIZE), False)
    with pytest.raises(PayloadError, match="empty final chunk"):
        opener.open_into(empty_final, bytearray(CHUNK_SIZE), True)


def _pieces(body: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    return [body[a:b] for a, b in zip(bounds, bounds[1:])] + [b""]


@settings(max_examples=60, deadline=None)
@given(size=st.integers(min_value=0, max_value=4 * ENC_CHUNK_SIZE + 5) | st.sampled_from(
           [k * ENC_CHUNK_SIZE for k in range(1, 5)]), cuts=st.lists(st.integers(min_value=0), max_size=6))
def test_iter_runs_splits_any_piece_layout_into_stream_chunks_whole_ones_together(size: int, cuts: list[int]) -> None:
    body = os.urandom(size)
    pieces = _pieces(body, cuts)
    runs = [(bytes(run), at_end) for run, at_end in iter_runs(pieces)]
    flat = [run[i : i + ENC_CHUNK_SIZE] for run, _ in runs for i in range(0, len(run), ENC_CHUNK_SIZE)]
    assert flat == [body[i : i + ENC_CHUNK_SIZE] for i in range(0, size, ENC_CHUNK_SIZE)]
    assert [at_end for _, at_end in runs] == [False] * (len(runs) - 1) + [True] * bool(runs)
    assert all(at_end or len(run) % ENC_CHUNK_SIZE == 0 for run, at_end in runs)  # whole chunks unless last
    assert all(len(run) <= ENC_CHUNK_SIZE for run, at_end in runs if at_end)  # the last chunk comes alone
    if len(pieces) == 2 and size >= 3 * ENC_CHUNK_SIZE:  # one piece: all but the last chunk in one run
        assert len(runs[0][0]) == (size - 1) // ENC_CHUNK_SIZE * ENC_CHUNK_SIZE


def open_runs(payload: bytes, cuts: list[int], native: bool) -> bytes:
    """The payload opened as open's worker does: runs into 1 MiB-like buffers (4 chunks here)."""
    key = payload_key(KEY, payload[:NONCE_SIZE])
    opener = ChunkOpener(payload_aead(KEY, payload[:NONCE_SIZE]), key if native else None)
    plain, buf = bytearray(), memoryview(bytearray(4 * CHUNK_SIZE))
    for run, at_end in iter_runs(_pieces(payload[NONCE_SIZE:], cuts)):
        while True:
            if at_end:
                plain += buf[: opener.open_into(run, buf, True)]
                break
            count = min(len(run) // ENC_CHUNK_SIZE, 4)
            plain += buf[: opener.open_run(run[: count * ENC_CHUNK_SIZE], buf)]
            run = run[count * ENC_CHUNK_SIZE :]
            if not run:
                break
    if not opener.finished:
        raise PayloadError("payload truncated: no final chunk")
    return bytes(plain)


def _outcome(fn, *args):
    try:
        return fn(*args)
    except PayloadError as exc:
        return f"PayloadError: {exc}"


@settings(max_examples=80, deadline=None)
@given(size=st.sampled_from([0, 1, CHUNK_SIZE, 3 * CHUNK_SIZE, 6 * CHUNK_SIZE + 7]) | st.integers(0, 7 * CHUNK_SIZE),
       cuts=st.lists(st.integers(min_value=0), max_size=4), damage=st.none() | st.integers(0),
       cut_short=st.integers(0, 3), native=st.booleans())
def test_open_run_agrees_with_open_into_on_any_damage_or_truncation(size: int, cuts: list[int], damage: int | None,
                                                                  cut_short: int, native: bool) -> None:
    """Whole chunks opened as runs (natively or not) give the plaintext, or the very error,
    that open_into chunk by chunk gives: for a flipped byte anywhere, a stream cut short
    by whole chunks (no final chunk), and a final chunk with data after it."""
    payload = bytearray(b"".join(seal(KEY, [os.urandom(size)], NONCE)))
    if damage is not None:
        payload[NONCE_SIZE + damage % (len(payload) - NONCE_SIZE)] ^= 0x10
    if cut_short == 1 and len(payload) > NONCE_SIZE + ENC_CHUNK_SIZE:
        payload = payload[: NONCE_SIZE + ENC_CHUNK_SIZE]
    elif cut_short == 2:
        payload += b"trailing"
    expected = _outcome(open_chunks, bytes(payload))
    assert _outcome(open_runs, bytes(payload), cuts, native) == expected


def test_open_run_refuses_a_partial_chunk_and_data_after_the_final_chunk() -> None:
    aead = payload_aead(KEY, NONCE)
    final = aead.encrypt(_chunk_nonce(0, True), bytes(CHUNK_SIZE), None)
    for native in (True, False):
        opener = ChunkOpener(aead, payload_key(KEY, NONCE) if native else None)
        with pytest.raises(PayloadError, match="short chunk"):
            opener.open_run(final[:-1], bytearray(CHUNK_SIZE))
        with pytest.raises(PayloadError, match="trailing data"):  # a full-size final chunk, not at the end
            opener.open_run(final, bytearray(CHUNK_SIZE))


def test_chunk_sealer_refuses_misuse() -> None:
    sealer = ChunkSealer(KEY, NONCE)
    with pytest.raises(InputValidationError):
        sealer.seal_into(b"short", bytearray(5 + TAG_SIZE), False)  # a short chunk must be final
    sealer.seal_into(b"last", bytearray(4 + TAG_SIZE), True)
    with pytest.raises(InputValidationError, match="final"):
        sealer.seal_into(b"more", bytearray(4 + TAG_SIZE), True)


# -- seal lays out exactly the age file --------------------------------------------------


@pytest.mark.parametrize("profile", ["unixfs-v1-2025", "v1", "v0"])
@pytest.mark.parametrize("size", [0, 1, MIB - 1, MIB, MIB + 1, 2 * MIB + 70_000])
def test_sealed_ciphertext_is_the_reference_stream(owner, profile: str, size: int) -> None:
    """Whatever the plaintext size, buffer and leaf boundaries, the stored bytes are the
    header followed by exactly what the reference STREAM writer produces."""
    plaintext = os.urandom(size)
    store = MemoryBlockstore()
    sealed = Vault(store, owner, profile).seal([plaintext])
    stored = io.BytesIO(b"".join(export(CID.decode(sealed.cid), store.get)))
    header = read_header(stored)
    payload = stored.read()
    reference = b"".join(seal(unwrap_file_key(header, [owner]), [plaintext], payload[:NONCE_SIZE]))
    assert payload == reference
    assert sealed.ciphertext_size == len(header) + len(reference)


# -- seal encrypts segments on several threads (vault/_seal.py) -----------------------------


def _segments(plaintext: bytes, head: bytes, segment_size: int, workers: int, piece: int | None = None,
              emit_hook=None, *, writers: int = 2, lanes: int = 4, native: bool = True,
              hash_leaves: bool = True) -> tuple[dict[int, bytes], int, int, list[int]]:
    """Run seal_segments over `plaintext`; returns {index: leaf}, size, count, progress calls.
    Every digest emitted is checked against hashlib."""
    got: dict[int, bytes] = {}
    reported: list[int] = []
    lock = threading.Lock()

    def emit(index: int, leaf: memoryview, digest: bytes | None) -> None:
        if emit_hook is not None:
            emit_hook(index)
        assert digest == (hashlib.sha256(leaf).digest() if hash_leaves else None)
        with lock:
            assert index not in got  # every segment once
            got[index] = bytes(leaf)

    source: object = io.BytesIO(plaintext)
    if piece is not None:  # a reader that returns at most `piece` bytes per call
        stream = io.BytesIO(plaintext)
        source = type("Trickle", (), {"readinto": lambda self, b: stream.readinto(b[:piece])})()
    size, count = seal_segments(source, head, ChunkSealer(KEY, NONCE, native=native), lambda view: None,
                                segment_size, emit, reported.append, workers=workers, writers=writers,
                                lanes=lanes, hash_leaves=hash_leaves)
    return got, size, count, reported


@settings(max_examples=60, deadline=None)
@given(size=st.sampled_from([0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, MIB - 1, MIB, MIB + 1,
                             2 * MIB + 70_000, 3 * MIB]) | st.integers(min_value=0, max_value=2 * MIB),
       head_size=st.sampled_from([NONCE_SIZE, NONCE_SIZE + 1, 200, 4095, 4096, 9000]),
       segment_size=st.sampled_from([4096, 3 * 4096, 256 << 10, MIB]),
       workers=st.integers(min_value=1, max_value=4),
       piece=st.none() | st.integers(min_value=1, max_value=300_000),
       writers=st.integers(min_value=1, max_value=6), lanes=st.sampled_from([1, 2, 3, 4, 5, 8, 15, 16]),
       native=st.booleans(), hash_leaves=st.booleans())
def test_segments_are_the_reference_age_file_cut_into_leaves(size: int, head_size: int, segment_size: int,
                                                            workers: int, piece: int | None, writers: int,
                                                            lanes: int, native: bool, hash_leaves: bool) -> None:
    """Whatever the sizes and the pipeline's shape (workers, writers, leaves hashed
    together, native STREAM runs or one encrypt_into per chunk), the segments, in index
    order, are exactly header ‖ nonce ‖ the reference STREAM, each segment_size bytes but
    the last; each is emitted once, with its SHA-256 when asked."""
    plaintext = os.urandom(size)
    header = os.urandom(head_size - NONCE_SIZE)  # up to 9000: longer than a 4096-byte segment
    head = header + NONCE
    reference = header + b"".join(seal(KEY, [plaintext], NONCE))  # seal() yields the nonce first
    got, total, count, reported = _segments(plaintext, head, segment_size, workers, piece, writers=writers,
                                            lanes=lanes, native=native, hash_leaves=hash_leaves)
    assert total == size and sum(reported) == size
    assert sorted(got) == list(range(count))
    assert [len(got[i]) for i in range(count - 1)] == [segment_size] * (count - 1)
    assert 0 < len(got[count - 1]) <= segment_size
    assert b"".join(got[i] for i in range(count)) == reference


def test_seal_buffers_are_distinct_page_aligned_and_writable() -> None:
    """The pools come from _arena: one mapping cut into buffers that must not overlap
    (two leaves in flight share nothing) and must suit O_DIRECT (page-aligned)."""
    bufs = _arena(5, 3 * 4096)
    assert [len(b) for b in bufs] == [3 * 4096] * 5
    for i, buf in enumerate(bufs):
        buf[:] = bytes([i]) * len(buf)
    assert all(bytes(buf) == bytes([i]) * len(buf) for i, buf in enumerate(bufs))
    addresses = [ctypes.addressof(ctypes.c_char.from_buffer(buf)) for buf in bufs]
    assert all(a % mmap.PAGESIZE == 0 for a in addresses)
    assert sorted(addresses) == [addresses[0] + i * 3 * 4096 for i in range(5)]


def test_seal_reuses_its_pools_wipes_the_plaintext_ones_and_drops_them_after_a_failure() -> None:
    arenas = _Arenas()
    with arenas.take(3, 4096, wipe=True) as first:
        for buf in first:
            buf[:] = b"p" * 4096
    with arenas.take(3, 4096, wipe=True) as again:
        assert [a.obj for a in again] == [b.obj for b in first]  # the same mapping, reused
        assert all(bytes(buf) == bytes(4096) for buf in again)  # and wiped on its way back
    with arenas.take(2, 4096) as other:  # another shape: its own buffers
        assert other[0].obj is not first[0].obj
    with pytest.raises(RuntimeError), arenas.take(3, 4096, wipe=True) as taken:
        raise RuntimeError("a seal failed")
    with arenas.take(3, 4096) as fresh:
        assert fresh[0].obj is not taken[0].obj  # not given back after the failure


@pytest.mark.parametrize("shape", [dict(workers=0), dict(writers=0), dict(lanes=0), dict(lanes=17)])
def test_seal_segments_refuses_a_pipeline_it_cannot_run(shape: dict) -> None:
    with pytest.raises(ValueError, match="bad pipeline shape"):
        seal_segments(io.BytesIO(b"x"), NONCE, ChunkSealer(KEY, NONCE), lambda view: None, 4096,
                      lambda *args: None, **shape)


def test_a_failing_emit_stops_the_seal_and_is_raised() -> None:
    def boom(index: int) -> None:
        if index == 5:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        _segments(os.urandom(40 * CHUNK_SIZE), b"h" * 200 + NONCE, 4096, 3, emit_hook=boom)


def test_a_failing_reader_stops_the_workers_and_is_raised() -> None:
    class Broken:
        calls = 0

        def readinto(self, buffer) -> int:
            self.calls += 1
            if self.calls == 4:
                raise OSError(5, "Input/output error")
            buffer[:] = bytes(len(buffer))
            return len(buffer)

    emitted: list[int] = []
    with pytest.raises(OSError, match="Input/output"):
        seal_segments(Broken(), b"h" * 100 + NONCE, ChunkSealer(KEY, NONCE), lambda view: None, MIB,
                      lambda i, leaf, digest: emitted.append(i))
    assert sorted(emitted) == list(range(len(emitted)))  # what was handed out before the failure
    assert not [t for t in threading.enumerate() if t.name.startswith(("vault-seal", "vault-write"))]  # all joined


def test_the_commitment_sees_the_plaintext_in_order_once() -> None:
    plaintext = os.urandom(5 * MIB + 123)
    seen = bytearray()
    seal_segments(io.BytesIO(plaintext), b"h" * 100 + NONCE, ChunkSealer(KEY, NONCE),
                  lambda view: seen.extend(view), MIB, lambda i, leaf, digest: None)
    assert bytes(seen) == plaintext


def test_in_order_runs_functions_by_index_whatever_the_order_they_come_in() -> None:
    ran: list[int] = []
    order = _InOrder()
    for i in [3, 1, 0, 2, 5, 4]:
        order.add(i, functools.partial(ran.append, i))
    assert ran == [0, 1, 2, 3, 4, 5] and order.done == 6
    with pytest.raises(InputValidationError, match="twice"):
        order.add(2, lambda: None)
    order.add(7, lambda: ran.append(7))
    assert order.done == 6 and ran[-1] == 5  # 7 waits for 6


def test_a_full_disk_during_seal_is_raised_and_every_thread_stops(owner, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    store = FilesystemBlockstore(tmp_path / "store")
    real_put = FilesystemBlockstore.put
    puts: list[CID] = []

    def filling_up(self, cid, data) -> None:
        puts.append(cid)
        if len(puts) == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_put(self, cid, data)

    monkeypatch.setattr(FilesystemBlockstore, "put", filling_up)
    with pytest.raises(OSError, match="No space"):
        Vault(store, owner).seal([os.urandom(12 * MIB)])
    assert not [t for t in threading.enumerate() if t.name.startswith(("vault-", "blockstore-"))]
    assert store.pins() == frozenset()  # nothing pinned: gc may take what was written


def test_a_failing_progress_callback_stops_the_seal(owner) -> None:
    def progress(n: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Vault(MemoryBlockstore(), owner).seal([os.urandom(4 * MIB)], progress=progress)
    assert not [t for t in threading.enumerate() if t.name.startswith("vault-")]


@pytest.mark.parametrize("profile", ["unixfs-v1-2025", "v1", "v0"])
def test_sealed_blocks_hash_to_their_cids(owner, tmp_path: Path, profile: str) -> None:
    plaintext = os.urandom(3 * MIB + 77)
    store = FilesystemBlockstore(tmp_path / "store")
    sealed = Vault(store, owner, profile).seal([plaintext])
    assert sealed.cid == str(import_bytes(_stored(store, sealed.cid), profile))  # the CID Kubo would give
    for cid in walk_dag(store, CID.decode(sealed.cid)):
        store.get(cid)  # verifies: BlockMismatchError if a leaf's CID came from a wrong digest
    Vault(store, owner, profile).open(sealed.cid, None, owner, tmp_path / "out", commitment=sealed.commitment)
    assert (tmp_path / "out").read_bytes() == plaintext


def _stored(store: FilesystemBlockstore, cid: str) -> bytes:
    return b"".join(export(CID.decode(cid), store.get))


# -- blocks past the page cache, and read ahead ---------------------------------------------


SIZES_AROUND_PAGES = [1, 4095, 4096, 4097, 64 << 10, (64 << 10) + 1, MIB, MIB + 3]


@pytest.mark.parametrize("aligned", [True, False])
def test_a_direct_batch_stores_exactly_the_bytes_aligned_or_not(tmp_path: Path, aligned: bool) -> None:
    """Large page-aligned blocks go past the page cache; unaligned memory (the kernel
    refuses it) and small or odd-sized blocks take the page cache. Either way the file
    holds exactly the block."""
    store = FilesystemBlockstore(tmp_path)
    blocks = []
    for size in SIZES_AROUND_PAGES:
        data = os.urandom(size)
        if aligned:
            buf = mmap.mmap(-1, size)
            buf[:] = data
            view = memoryview(buf)
        else:
            view = memoryview(bytearray(b"x" + data))[1:]  # off by one byte from any page
        blocks.append((CID.from_sha256(data, RAW, 1), data, view))
    with store.batch(background=True, direct=True):
        for cid, _, view in blocks:
            store.put(cid, view)
    for cid, data, _ in blocks:
        assert store._path(cid).read_bytes() == data
        assert store.get(cid) == data


def test_a_filesystem_without_o_direct_gets_the_page_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A filesystem that refuses O_DIRECT (EINVAL, as ramfs does, and tmpfs before Linux
    6.6): the block is written through the page cache, and so are the next ones. As the
    kernel does, an open with O_DIRECT creates the file before it fails, and fcntl refuses
    to set it (the real thing, C path too: test_blockstore_native.py, on ramfs)."""
    real_open, real_fcntl = os.open, bs_filesystem.fcntl.fcntl
    refused: list[str] = []

    def no_direct(path, flags, *args):
        if flags & os.O_DIRECT:
            os.close(real_open(path, flags & ~os.O_DIRECT, *args))
            refused.append(str(path))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    def no_direct_fcntl(fd, cmd, arg=0):
        if cmd == fcntl.F_SETFL and arg & os.O_DIRECT:
            refused.append(fd)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_fcntl(fd, cmd, arg)

    monkeypatch.setattr(os, "open", no_direct)
    monkeypatch.setattr(bs_filesystem.fcntl, "fcntl", no_direct_fcntl)
    monkeypatch.setattr(bs_filesystem, "_NATIVE", False)  # the C path's fallback: test_blockstore_native.py
    store = FilesystemBlockstore(tmp_path)
    blocks = []
    for _ in range(3):
        data = os.urandom(MIB)
        buf = mmap.mmap(-1, MIB)
        buf[:] = data
        blocks.append((CID.from_sha256(data, RAW, 1), data, memoryview(buf)))
    with store.batch(background=True, direct=True):
        for cid, _, view in blocks:
            store.put(cid, view)
    assert len(refused) == 1  # tried once, then the page cache for the rest of the batch
    assert [store.get(cid) for cid, _, _ in blocks] == [data for _, data, _ in blocks]
    assert not list(tmp_path.rglob("*.tmp"))


def _dag(tmp_path: Path, owner) -> tuple[FilesystemBlockstore, CID, list[CID]]:
    store = FilesystemBlockstore(tmp_path / "store")
    sealed = Vault(store, owner, "v1").seal([os.urandom(3 * MIB)])  # 256 KiB leaves: 13 of them
    root = CID.decode(sealed.cid)
    return store, root, [c for c in walk_dag(store, root) if c.codec == RAW]


def test_prefetch_reads_the_leaves_of_a_node_ahead_and_gives_the_same_bytes(owner, tmp_path: Path) -> None:
    store, root, leaves = _dag(tmp_path, owner)
    asked: list[CID] = []

    def get(cid: CID) -> bytes:
        asked.append(cid)
        return store.get(cid)

    prefetch = _Prefetch(get, ahead=3, threads=2)
    try:
        assert prefetch(root) == store.get(root)
        deadline = time.monotonic() + 10
        while len(asked) < 4 and time.monotonic() < deadline:  # the root and 3 leaves ahead
            time.sleep(0.001)
        assert sorted(map(str, asked[1:4])) == sorted(map(str, leaves[:3]))  # two threads: either order
        assert [prefetch(c) for c in leaves] == [store.get(c) for c in leaves]
    finally:
        prefetch.close()
    assert len(asked) == 1 + len(leaves)  # every leaf read once


def _open_fails_leaving_nothing(store, owner, root: CID, tmp_path: Path, error: type[Exception]) -> None:
    out = tmp_path / "out"
    with pytest.raises(error):
        Vault(store, owner, "v1").open(str(root), None, owner, out, commitment=bytes(32))
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


needs_lanes = pytest.mark.skipif(not _accel.sha_lanes, reason="no multi-lane SHA-256 here (vault/_accel)")


@needs_lanes
@pytest.mark.parametrize("lanes", [2, 4, 5, 16])
def test_prefetch_checks_leaves_in_groups_and_vouches_only_for_what_it_returned(owner, tmp_path: Path,
                                                                              lanes: int) -> None:
    """13 leaves in groups of `lanes` (the last one short): each comes back intact and
    export() need not hash it again; anything else is still hashed (cid.verify)."""
    store, root, leaves = _dag(tmp_path, owner)
    prefetch = _Prefetch(functools.partial(store.get, verify=False), ahead=2 * lanes, lanes=lanes)
    hashed: list[CID] = []
    real_verify = CID.verify

    def counting(self: CID, data) -> None:
        hashed.append(self)
        real_verify(self, data)

    try:
        prefetch.verify(root, prefetch(root))  # the node: not checked ahead, so hashed
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(CID, "verify", counting)
            for cid in leaves:
                block = prefetch(cid)
                assert block == store._path(cid).read_bytes()
                prefetch.verify(cid, block)
            assert hashed == []  # every leaf was checked in a group
            copy = store._path(leaves[0]).read_bytes()
            prefetch.verify(leaves[0], copy)  # not the object it returned (and vouched for once)
            assert hashed == [leaves[0]]
    finally:
        prefetch.close()


@needs_lanes
def test_a_corrupt_leaf_in_a_checked_group_still_fails_the_open(owner, tmp_path: Path) -> None:
    store, root, leaves = _dag(tmp_path, owner)
    path = store._path(leaves[6])
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    prefetch = _Prefetch(functools.partial(store.get, verify=False), ahead=8, lanes=4)
    try:
        with pytest.raises(BlockMismatchError):
            list(export(root, prefetch, prefetch.verify))
    finally:
        prefetch.close()
    _open_fails_leaving_nothing(store, owner, root, tmp_path, BlockMismatchError)


def test_prefetch_keeps_its_plan_when_export_skips_a_repeated_empty_leaf() -> None:
    from vault._mfdagpb import encode_link, encode_node
    from vault.unixfs._pb import internal_data

    parts = [b"a" * 100, b"", b"b" * 100, b"", b"c" * 100, b"", b"d" * 100]
    blocks = {CID.from_sha256(p): p for p in parts}
    links = [CID.from_sha256(p) for p in parts]
    node = encode_node([encode_link(c.to_bytes(), len(p)) for c, p in zip(links, parts)],
                       internal_data([len(p) for p in parts]))
    root = CID.from_sha256(node, DAG_PB, 1)
    blocks[root] = node
    asked: list[CID] = []

    def get(cid: CID) -> bytes:
        asked.append(cid)
        return blocks[cid]

    prefetch = _Prefetch(get, ahead=8, threads=2)
    try:
        prefetch(root)
        deadline = time.monotonic() + 10
        while len(asked) < 1 + len(parts) and time.monotonic() < deadline:  # every leaf read ahead
            time.sleep(0.001)
        assert len(asked) == 1 + len(parts)
        # what export() asks for next: the empty leaf once, its repeats never (unixfs _Walk)
        for i in (0, 1, 2, 4, 6):
            assert prefetch(links[i]) == parts[i]
    finally:
        prefetch.close()
    assert len(asked) == 1 + len(parts)  # no leaf read a second time: the plan was kept
    assert b"".join(export(root, blocks.__getitem__)) == b"".join(parts)


def test_prefetch_drops_its_plan_when_asked_for_something_else(owner, tmp_path: Path) -> None:
    store, root, leaves = _dag(tmp_path, owner)
    prefetch = _Prefetch(functools.partial(store.get, verify=False), ahead=4)
    try:
        prefetch(root)
        assert prefetch(leaves[5]) == store.get(leaves[5])  # out of plan: read directly
        assert prefetch(leaves[0]) == store.get(leaves[0])
    finally:
        prefetch.close()


@pytest.mark.parametrize("lanes", [1, 4])
def test_prefetch_raises_a_missing_leaf_when_it_is_asked_for(owner, tmp_path: Path, lanes: int) -> None:
    if lanes > 1 and not _accel.sha_lanes:
        pytest.skip("no multi-lane SHA-256 here (vault/_accel)")
    store, root, leaves = _dag(tmp_path, owner)
    store.delete(leaves[2])
    prefetch = _Prefetch(store.get, ahead=8, lanes=lanes)
    try:
        prefetch(root)
        prefetch(leaves[0])
        prefetch(leaves[1])
        with pytest.raises(BlockNotFoundError):
            prefetch(leaves[2])
    finally:
        prefetch.close()
    _open_fails_leaving_nothing(store, owner, root, tmp_path, BlockNotFoundError)


def test_seal_at_checks_what_seal_into_checks() -> None:
    sealer = ChunkSealer(KEY, NONCE)
    with pytest.raises(InputValidationError):
        sealer.seal_at(0, b"short", bytearray(5 + TAG_SIZE), False)  # a short chunk must be final
    with pytest.raises(InputValidationError):
        sealer.seal_at(1, b"", bytearray(TAG_SIZE), True)  # empty only as the only chunk
    with pytest.raises(InputValidationError, match="out of range"):
        sealer.seal_at(-1, bytes(CHUNK_SIZE), bytearray(ENC_CHUNK_SIZE), False)
    out = bytearray(3 + TAG_SIZE)
    sealer.seal_at(1, b"abc", out, True)  # any order
    assert bytes(out) == payload_aead(KEY, NONCE).encrypt(_chunk_nonce(1, True), b"abc", None)


# -- the worker stage ---------------------------------------------------------------------


def test_sink_feeds_every_item_in_order_and_releases_each_after_use() -> None:
    seen, released = [], []

    def drain(items) -> None:
        for item in items:
            assert item not in released  # released only once the worker moved past it
            seen.append(item)

    sink = _Sink(drain, "test", released.append, depth=2)
    for i in range(50):
        sink.put(i)
    sink.close()
    assert seen == released == list(range(50))


def test_a_sink_with_several_threads_takes_every_item_once() -> None:
    seen: list[int] = []
    released: list[int] = []
    threads: set[str] = set()

    def drain(items) -> None:
        for item in items:
            threads.add(threading.current_thread().name)
            seen.append(item)
            time.sleep(0.001)  # long enough for the other threads to take the next items

    sink = _Sink(drain, "test", released.append, depth=4, threads=3)
    for i in range(60):
        sink.put(i)
    sink.close()
    assert sorted(seen) == sorted(released) == list(range(60))
    assert len(threads) > 1


def test_a_worker_failure_reaches_the_producer_and_every_item_is_still_released() -> None:
    released: list[int] = []

    def drain(items) -> None:
        for item in items:
            if item == 3:
                raise OSError(28, "No space left on device")

    sink = _Sink(drain, "test", released.append, depth=2)
    queued: list[int] = []
    with pytest.raises(OSError, match="No space"):
        for i in range(10):
            sink.put(i)  # raises once the failure is known...
            queued.append(i)
        sink.close()  # ...at the latest here
    sink.abort()  # what the producer does on its way out: must neither block nor hide it
    assert released == queued  # the items after the failure too, so buffer pools refill
    assert len(queued) >= 4


def test_a_worker_that_stops_before_the_end_is_an_error() -> None:
    def drain(items) -> None:
        next(items)  # returns without taking the rest

    sink = _Sink(drain, "test", depth=2)
    for i in range(5):
        try:
            sink.put(i)
        except InputValidationError:
            break
    with pytest.raises(InputValidationError, match="stopped before the end"):
        sink.close()


# -- open's output -------------------------------------------------------------------------


def test_output_writes_every_byte_direct_or_not(tmp_path: Path) -> None:
    """Aligned buffers go past the page cache where the filesystem allows it; an unaligned
    one (the kernel refuses it: EINVAL) and the unaligned tail fall back to the page cache.
    The file holds exactly the bytes written, in order."""
    aligned = mmap.mmap(-1, 2 * MIB)
    aligned[:] = os.urandom(2 * MIB)
    odd = mmap.mmap(-1, MIB + 1)
    odd[:] = os.urandom(MIB + 1)
    pieces = [memoryview(aligned)[:MIB], memoryview(aligned)[MIB:], memoryview(odd)[1:], memoryview(aligned)[:5000]]
    path = tmp_path / "out"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        output = _Output(fd)
        for piece in pieces:
            output.write(piece)
        output.close()
    finally:
        os.close(fd)
    assert path.read_bytes() == b"".join(bytes(p) for p in pieces)


# -- open verifies every block exactly once ----------------------------------------------


class RecordingStore(MemoryBlockstore):
    """Records how every get() was asked to verify (the real store does the work)."""

    def __init__(self) -> None:
        super().__init__()
        self.gets: list[tuple[CID, bool]] = []

    def get(self, cid: CID, *, verify: bool = True) -> bytes:
        self.gets.append((cid, verify))
        return super().get(cid, verify=verify)


class CountingStore(MemoryBlockstore):
    def __init__(self) -> None:
        super().__init__()
        self.has_calls = 0

    def has(self, cid: CID) -> bool:
        self.has_calls += 1
        return super().has(cid)


class ForeignStore:
    """A store that is not one of ours (a plugin, Kubo): seal must pin it through pin()."""

    def __init__(self) -> None:
        self.inner, self.pinned = MemoryBlockstore(), []
        self.put, self.get, self.has = self.inner.put, self.inner.get, self.inner.has

    def pin(self, root: CID) -> None:
        self.inner.pin(root)
        self.pinned.append(root)


def test_seal_pins_its_own_dag_without_walking_it_again_but_a_foreign_store_through_pin(owner) -> None:
    store = CountingStore()
    sealed = Vault(store, owner, "v1").seal([os.urandom(3 * MIB)])
    root = CID.decode(sealed.cid)
    assert store.pins() == {root} and store.has_calls == 0
    assert store.gc() == 0  # the pin covers every block seal wrote
    foreign = ForeignStore()
    again = Vault(foreign, owner, "v1").seal([os.urandom(MIB)])
    assert foreign.pinned == [CID.decode(again.cid)] and foreign.inner.pins() == set(foreign.pinned)


def test_open_reads_every_block_once_and_leaves_the_check_to_the_exporter(owner, tmp_path: Path) -> None:
    store = RecordingStore()
    sealed = Vault(store, owner, "v1").seal([os.urandom(3 * MIB)])
    store.gets.clear()
    Vault(store, owner, "v1").open(sealed.cid, None, owner, tmp_path / "a", commitment=sealed.commitment)
    fetched = [cid.multihash for cid, _ in store.gets]
    assert sorted(fetched) == sorted(store._blocks)  # noqa: SLF001 - each block exactly once
    assert {verify for _, verify in store.gets} == {False}  # the store does not hash it...

    leaf = next(cid for cid, _ in store.gets if cid.codec == RAW)
    store._blocks[leaf.multihash] = b"\0" + store._blocks[leaf.multihash][1:]  # noqa: SLF001
    with pytest.raises(BlockMismatchError):  # ...export() does
        Vault(store, owner, "v1").open(sealed.cid, None, owner, tmp_path / "b", commitment=sealed.commitment)
    assert not (tmp_path / "b").exists()


@pytest.mark.skipif(not _accel.available, reason="vault/_accel is not built")
@pytest.mark.parametrize("accelerate", [True, False])
def test_open_decrypts_whole_chunks_in_native_runs_unless_told_not_to(owner, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       accelerate: bool) -> None:
    """open hands the chunks inside each block to one native call at a time (a few per
    MiB, not one per 64 KiB chunk); with accelerate=False it never calls the native code."""
    runs: list[int] = []
    real = _accel.stream_open

    def counting(key, first, ciphertext, out) -> int:
        runs.append(len(ciphertext) // ENC_CHUNK_SIZE)
        return real(key, first, ciphertext, out)

    monkeypatch.setattr(_accel, "stream_open", counting)
    store = FilesystemBlockstore(tmp_path / "store")
    plaintext = os.urandom(4 * MIB + 12345)
    vault = Vault(store, owner, accelerate=accelerate)
    sealed = vault.seal([plaintext])
    vault.open(sealed.cid, None, owner, tmp_path / "out", commitment=sealed.commitment)
    assert (tmp_path / "out").read_bytes() == plaintext
    chunks = -(-len(plaintext) // CHUNK_SIZE)
    if not accelerate:
        assert runs == []
        return
    # every chunk but the last, and the ones straddling two blocks, goes through a run
    assert chunks - 1 - 5 <= sum(runs) <= chunks - 1
    assert len(runs) <= 3 * 5


def test_filesystem_get_verifies_unless_told_not_to(tmp_path: Path) -> None:
    store = FilesystemBlockstore(tmp_path, sync=False)
    cid = CID.from_sha256(b"block")
    store.put(cid, b"block")
    path = next((tmp_path / "blocks").rglob("*.data"))
    path.write_bytes(b"blocc")
    assert store.get(cid, verify=False) == b"blocc"
    with pytest.raises(BlockMismatchError):
        store.get(cid)


# -- durability ---------------------------------------------------------------------------


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> set[int]:
    """Inodes passed to os.fsync / os.fdatasync (from any thread), on the blockstore's
    Python path (its native put is traced in tests/vault/test_blockstore_native.py)."""
    monkeypatch.setattr(bs_filesystem, "_NATIVE", False)
    monkeypatch.setattr(bs_flusher, "syncfs_pays", lambda: False)  # per-file fsyncs, whatever the machine
    inodes: set[int] = set()
    real_fsync, real_fdatasync = os.fsync, os.fdatasync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        inodes.add(os.fstat(fd).st_ino)

    def fdatasync(fd: int) -> None:
        real_fdatasync(fd)
        inodes.add(os.fstat(fd).st_ino)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    return inodes


def test_seal_returns_only_when_every_block_shard_and_pin_is_durable(owner, tmp_path: Path, synced) -> None:
    store = FilesystemBlockstore(tmp_path / "store")
    Vault(store, owner, "v1").seal([os.urandom(3 * MIB)])
    blocks = list((tmp_path / "store" / "blocks").rglob("*.data"))
    assert len(blocks) == 14  # 13 leaves of 256 KiB + the root
    needed = {p.stat().st_ino for p in blocks} | {p.parent.stat().st_ino for p in blocks}
    (pin,) = (tmp_path / "store" / "pins").iterdir()
    needed |= {pin.stat().st_ino, pin.parent.stat().st_ino, (tmp_path / "store").stat().st_ino}
    assert needed <= synced


def test_background_batch_fsyncs_each_file_and_shard_once(tmp_path: Path, synced) -> None:
    store = FilesystemBlockstore(tmp_path)
    blocks = [(CID.from_sha256(b"%d" % i), b"%d" % i) for i in range(30)]
    with store.batch(background=True):
        for cid, data in blocks:
            store.put(cid, data)
    files = list((tmp_path / "blocks").rglob("*.data"))
    assert {p.stat().st_ino for p in files} | {p.parent.stat().st_ino for p in files} <= synced


def test_a_failed_background_fsync_fails_the_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    store = FilesystemBlockstore(tmp_path, sync_method="fsync")
    monkeypatch.setattr(bs_filesystem, "_NATIVE", False)
    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="Input/output"), store.batch(background=True):
        store.put(CID.from_sha256(b"x"), b"x")


def test_open_makes_the_output_and_its_directory_durable(owner, tmp_path: Path, synced) -> None:
    store = MemoryBlockstore()
    sealed = Vault(store, owner).seal([os.urandom(MIB + 5)])
    out = tmp_path / "out.bin"
    Vault(store, owner).open(sealed.cid, None, owner, out, commitment=sealed.commitment)
    assert {out.stat().st_ino, tmp_path.stat().st_ino} <= synced


# -- read_file: a stored UnixFS file as `ipfs cat` prints it --------------------------------


def test_read_file_reads_a_disk_store_ahead_and_verifies_every_block(tmp_path: Path, monkeypatch) -> None:
    from vault.unixfs import import_bytes
    from vault.vault import read_file

    data = os.urandom(5 * MIB + 3)
    memory = MemoryBlockstore()
    root = import_bytes(data, "v1", memory.put)
    disk = FilesystemBlockstore(tmp_path / "repo")
    for cid in memory.iter_cids():
        disk.put(cid, memory.get(cid))
    asked = []
    real_get = FilesystemBlockstore.get
    monkeypatch.setattr(FilesystemBlockstore, "get", lambda self, cid, **kw: (asked.append(kw), real_get(self, cid, **kw))[1])
    assert b"".join(read_file(disk, root)) == data == b"".join(read_file(memory, root))
    assert asked and all(kw == {"verify": False, "direct": True} for kw in asked)
    leaf = next(cid for cid in walk_dag(memory, root) if cid.codec == RAW)
    path = disk._path(leaf)
    path.write_bytes(b"\x00" + path.read_bytes()[1:])
    with pytest.raises(BlockMismatchError):
        b"".join(read_file(disk, root))
    assert not any(t.name.startswith("vault-fetch") and t.is_alive() for t in threading.enumerate())
