"""The zero-copy paths of the vault: chunk-at-a-time STREAM (ChunkSealer / ChunkOpener),
seal's ciphertext laid out in leaf buffers and its leaf hashing shared between two
threads, the worker stage (_Sink), open's single verification of every block, the
blockstore's background fsyncs and `get(verify=False)`, and what seal and open leave
durable on disk. Real components throughout; os.fsync is wrapped only to record which
inodes were synced, and the worker's backlog is pinned only to choose who hashes."""
from __future__ import annotations

import hashlib
import io
import mmap
import os
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
    iter_chunks,
    ChunkSealer,
    open_,
    payload_aead,
    seal,
)
from vault._output import _Output
from vault._pipeline import _Pool, _Segments, _Sink
from vault.blockstore import FilesystemBlockstore, MemoryBlockstore, walk_dag
from vault.cid import CID, RAW
from vault.errors import BlockMismatchError, InputValidationError, PayloadError
from vault.unixfs import export
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


@settings(max_examples=50, deadline=None)
@given(size=st.integers(min_value=0, max_value=3 * ENC_CHUNK_SIZE + 5), cuts=st.lists(st.integers(min_value=0)))
def test_iter_chunks_splits_any_piece_layout_into_stream_chunks(size: int, cuts: list[int]) -> None:
    body = os.urandom(size)
    bounds = sorted({0, size, *(c % (size + 1) for c in cuts)})
    pieces = [body[a:b] for a, b in zip(bounds, bounds[1:])] + [b""]
    got = [(bytes(chunk), at_end) for chunk, at_end in iter_chunks(pieces)]
    expected = [body[i : i + ENC_CHUNK_SIZE] for i in range(0, size, ENC_CHUNK_SIZE)]
    assert [c for c, _ in got] == expected
    assert [e for _, e in got] == [False] * (len(expected) - 1) + [True] * bool(expected)


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


# -- seal shares the leaf hashing -----------------------------------------------------------


@pytest.mark.parametrize("hash_here", [None, "never", "always", "alternate"])
def test_segments_are_whole_leaves_with_the_right_digest_whoever_hashes(hash_here) -> None:
    decide = {None: None, "never": lambda: False, "always": lambda: True,
              "alternate": lambda it=iter(range(10**6)): next(it) % 2 == 0}[hash_here]
    pool = _Pool(1000, 3)
    shipped: list[tuple[bytes, bytes | None]] = []

    def ship(segment: memoryview, digest: bytes | None) -> None:
        shipped.append((bytes(segment), digest))
        pool.release(segment)

    data = os.urandom(4321)
    out = _Segments(pool, ship, decide)
    out.append(data[:7])
    at = 7
    while at < len(data):
        n = min(90, len(data) - at)
        target = out.reserve(n)
        if target is None:
            out.append(data[at : at + n])
        else:
            target[:] = data[at : at + n]
            out.filled()
        at += n
    out.close()
    assert b"".join(seg for seg, _ in shipped) == data
    assert [len(seg) for seg, _ in shipped] == [1000] * 4 + [321]
    for seg, digest in shipped:
        assert digest is None or digest == hashlib.sha256(seg).digest()
    hashed = [digest is not None for _, digest in shipped]
    assert hashed == {None: [False] * 5, "never": [False] * 5, "always": [True] * 5,
                      "alternate": [True, False, True, False, True]}[hash_here]


@pytest.mark.parametrize("backlog", [0, 1])  # 0: the worker hashes every leaf, 1: the caller does
def test_sealed_blocks_hash_to_their_cids_whoever_hashes_them(owner, tmp_path: Path, monkeypatch, backlog) -> None:
    monkeypatch.setattr(_Sink, "backlog", lambda self: backlog)
    plaintext = os.urandom(3 * MIB + 77)
    store = FilesystemBlockstore(tmp_path / "store")
    sealed = Vault(store, owner).seal([plaintext])
    for cid in walk_dag(store, CID.decode(sealed.cid)):
        store.get(cid)  # verifies: BlockMismatchError if a leaf's CID came from a wrong digest
    Vault(store, owner).open(sealed.cid, None, owner, tmp_path / "out", commitment=sealed.commitment)
    assert (tmp_path / "out").read_bytes() == plaintext


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
    """Inodes passed to os.fsync / os.fdatasync (from any thread)."""
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
    needed |= {(tmp_path / "store" / "pins.json").stat().st_ino, (tmp_path / "store").stat().st_ino}
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

    store = FilesystemBlockstore(tmp_path)
    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="Input/output"), store.batch(background=True):
        store.put(CID.from_sha256(b"x"), b"x")


def test_open_makes_the_output_and_its_directory_durable(owner, tmp_path: Path, synced) -> None:
    store = MemoryBlockstore()
    sealed = Vault(store, owner).seal([os.urandom(MIB + 5)])
    out = tmp_path / "out.bin"
    Vault(store, owner).open(sealed.cid, None, owner, out, commitment=sealed.commitment)
    assert {out.stat().st_ino, tmp_path.stat().st_ino} <= synced
