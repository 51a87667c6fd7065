"""The vault facade: seal a file into content-addressed ciphertext, re-header it for a
consumer, open it again into a verified plaintext file.

    sealed = Vault(store, identity).seal(Path("twin.bin"))       # -> SealedVersion
    header = vault.rewrap_for(sealed.cid, consumer_recipient)   # age header, ~200 bytes
    Vault(store, consumer_identity).open(sealed.cid, header, consumer_identity, out,
                                         commitment=sealed.commitment)

What is stored under `SealedVersion.cid` is an ordinary age v1 file (header encrypted to
the owner's recipient, then the STREAM payload), imported as a UnixFS file with the
vault's profile, so `ipfs cat <cid> | age -d -i owner.key` works, and a consumer given a
new header opens `new header ‖ payload` with any age implementation.

Pipeline and memory. seal: the caller's thread reads the plaintext into one of two
1 MiB buffers, feeds it to the commitment HMAC and encrypts its 64 KiB STREAM chunks
with encrypt_into straight into ciphertext buffers of exactly the leaf size (1 MiB for
the default profile; the age header and nonce open the first one), so a leaf is never
joined or copied on its way to the importer; one worker hashes each full leaf buffer and
stores it, and a blockstore thread fsyncs the stored files meanwhile. open: the caller's
thread fetches each block, has export() check it against its CID (the only hash of it:
our own stores are asked for `get(verify=False)`) and decrypts its chunks with
decrypt_into into 1 MiB plaintext buffers; one worker writes each buffer and feeds the
commitment HMAC, another fdatasyncs the output every 32 MiB so that the final fsync
only waits for the tail. Each stage keeps the bytes it produced hot in its core's cache;
hashlib, hmac, the AEAD and file I/O release the GIL, so the stages overlap on two
cores. Buffers come from fixed rings (at most ~8 MiB in flight), so memory stays flat
whatever the file size.

Durability. seal stores the blocks inside the store's `batch()` (FilesystemBlockstore:
`batch(background=True)`), which returns only once every block file and every shard
directory that received one is fsynced; it then pins the root (pins.json: temp file,
fsync, rename, directory fsync) and only then returns. open writes a temp file next to
`out`, checks the commitment, fsyncs the temp file, renames it into place and fsyncs the
directory; on any failure the temp file is removed and `out` is untouched.

The STREAM chunk helpers (ChunkSealer, ChunkOpener, iter_chunks) and header_for come
from the private modules of vault.age: they are the same format code the public
encrypt()/decrypt() use, one chunk at a time into caller-owned buffers.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import io
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from vault.age import X25519Identity, X25519Recipient, read_header, rewrap, unwrap_file_key
from vault.age._age import header_for
from vault.age._stream import (
    CHUNK_SIZE,
    ENC_CHUNK_SIZE,
    NONCE_SIZE,
    TAG_SIZE,
    ChunkOpener,
    ChunkSealer,
    iter_chunks,
    payload_aead,
    read_full,
)
from vault.blockstore import BlockStore, FilesystemBlockstore
from vault.cid import CID
from vault.commitment import Committer
from vault.errors import HeaderError, InputValidationError, PayloadError
from vault.unixfs import DEFAULT_PROFILE, PROFILES, Importer, export

Progress = Callable[[int], None]
GetBlock = Callable[[CID], bytes]
COMMITMENT_SIZE = 32
_PLAIN_BUFFER = 16 * CHUNK_SIZE  # plaintext per buffer: 16 STREAM chunks, 1 MiB
_POOL = 4  # buffers per ring (plaintext, ciphertext segments): bounds memory
_QUEUE_DEPTH = 8


@dataclass(frozen=True)
class SealedVersion:
    """What seal() produced: the ciphertext's root CID, the plaintext commitment (32
    bytes, recorded on chain), plaintext and ciphertext sizes, and the import profile."""

    cid: str
    commitment: bytes
    size: int
    ciphertext_size: int
    profile: str


class Vault:
    """Seals files for `identity`'s recipient into `store`, re-headers and opens them."""

    def __init__(self, store: BlockStore, identity: X25519Identity, profile: str = DEFAULT_PROFILE) -> None:
        if not isinstance(identity, X25519Identity):
            raise InputValidationError(f"identity must be an X25519Identity, got {type(identity).__name__}")
        for method in ("put", "get"):
            if not callable(getattr(store, method, None)):
                raise InputValidationError(f"store must be a BlockStore (no {method}()), got {type(store).__name__}")
        self.store = store
        self.identity = identity
        if not isinstance(profile, str) or profile not in PROFILES:
            raise InputValidationError(f"unknown import profile {profile!r}; known: {', '.join(PROFILES)}")
        self.profile = profile

    def __repr__(self) -> str:
        return f"Vault({type(self.store).__name__}, recipient={self.identity.recipient}, profile={self.profile!r})"

    # -- seal ------------------------------------------------------------------------------

    def seal(self, src: BinaryIO | Path | Iterable[bytes], *, progress: Progress | None = None) -> SealedVersion:
        """Encrypt `src` to this vault's own recipient, commit to the plaintext, import the
        ciphertext as UnixFS, store every block and pin the root. `progress(n)` is called
        with the number of plaintext bytes consumed since the previous call."""
        file_key = os.urandom(16)
        header = header_for(file_key, [self.identity.recipient])
        sealer = ChunkSealer(file_key)
        committer = Committer(file_key)
        plain = _Pool(_PLAIN_BUFFER, 2)  # the buffer being sealed + one of look-ahead
        segments = _Pool(PROFILES[self.profile].chunk_size, _POOL)
        with contextlib.ExitStack() as stack:
            reader = _plaintext_reader(src, stack)
            stack.enter_context(_batch(self.store))
            # The caller reads, commits and encrypts each buffer while it is hot in its
            # core's cache; one worker hashes and stores the leaves.
            importer = Importer(self.profile, self.store.put)
            blocks = _Sink(importer.write, "import", segments.release)
            try:
                out = _Segments(segments, blocks.put)
                out.append(header)
                out.append(sealer.nonce)
                size = _seal_payload(reader, sealer, plain, committer.update, out, progress)
                out.close()
                blocks.close()
                root = importer.finish()  # the last leaf and the inner nodes
            except BaseException:
                blocks.abort()
                raise
        pin = getattr(self.store, "pin", None)
        if callable(pin):
            pin(root)
        return SealedVersion(
            cid=str(root),
            commitment=committer.digest(),
            size=size,
            ciphertext_size=importer.size or 0,
            profile=self.profile,
        )

    # -- share -----------------------------------------------------------------------------

    def rewrap_for(self, cid: str, recipient: X25519Recipient) -> bytes:
        """A new age header that opens the payload under `cid` for `recipient`. Reads only
        the first blocks of the ciphertext; the payload is not touched."""
        if not isinstance(recipient, X25519Recipient):
            raise InputValidationError(f"recipient must be an X25519Recipient, got {type(recipient).__name__}")
        blocks = export(_parse_cid(cid), self.store.get)
        try:
            header = read_header(_Ciphertext(blocks))
        finally:
            blocks.close()  # type: ignore[attr-defined]
        return rewrap(header, [self.identity], [recipient])

    # -- open ------------------------------------------------------------------------------

    def open(
        self,
        cid: str,
        header: bytes | None,
        identity: X25519Identity,
        out: Path,
        *,
        commitment: bytes,
        get_block: GetBlock | None = None,
        progress: Progress | None = None,
    ) -> int:
        """Fetch the ciphertext under `cid` (from this store, or `get_block`, e.g. a
        gateway client), replace its header by `header` (None keeps the stored one),
        decrypt with `identity`, check `commitment`, and write `out` atomically.
        Returns the number of plaintext bytes written. On any failure nothing is left
        at `out` and no temp file remains. `progress(n)`: plaintext bytes since last call."""
        root = _parse_cid(cid)
        if not isinstance(commitment, bytes) or len(commitment) != COMMITMENT_SIZE:
            raise InputValidationError(f"commitment must be {COMMITMENT_SIZE} bytes")
        if not isinstance(identity, X25519Identity):
            raise InputValidationError(f"identity must be an X25519Identity, got {type(identity).__name__}")
        if header is not None and not isinstance(header, (bytes, bytearray)):
            raise InputValidationError(f"header must be bytes or None, got {type(header).__name__}")
        out = Path(out)
        if not out.parent.is_dir():
            raise InputValidationError(f"output directory {out.parent} does not exist")
        if out.is_dir():
            raise InputValidationError(f"output path {out} is a directory")

        if get_block is None:
            get_block = _get_once_verified(self.store)
        fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
        tmp = Path(tmp_name)
        blocks: Iterator[bytes] | None = None
        try:
            with open(fd, "wb", buffering=0) as fh:
                blocks = export(root, get_block)
                ciphertext = _Ciphertext(blocks)
                stored = read_header(ciphertext)  # replaced by `header` unless None
                nonce = ciphertext.read(NONCE_SIZE)
                if len(nonce) != NONCE_SIZE:
                    raise HeaderError("file ends before the payload nonce")
                file_key = unwrap_file_key(stored if header is None else bytes(header), [identity])
                committer = Committer(file_key)
                opener = ChunkOpener(payload_aead(file_key, nonce))
                written = _open_payload(ciphertext, opener, committer, fh.fileno(), progress)
                committer.verify(commitment)  # CommitmentMismatchError
                os.fsync(fh.fileno())
            os.replace(tmp, out)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        finally:
            if blocks is not None:
                blocks.close()  # type: ignore[attr-defined]
        _fsync_dir(out.parent)
        return written


# -- plumbing ------------------------------------------------------------------------------


def _parse_cid(cid: str | CID) -> CID:
    if isinstance(cid, CID):
        return cid
    if not isinstance(cid, str):
        raise InputValidationError(f"cid must be a CID string, got {type(cid).__name__}")
    return CID.decode(cid)


def _get_once_verified(store: BlockStore) -> GetBlock:
    """The store's get for export(), which checks every block against its CID itself: a
    store whose get() takes `verify` (FilesystemBlockstore, MemoryBlockstore) is told not
    to hash the block a second time."""
    try:
        takes_verify = "verify" in inspect.signature(store.get).parameters
    except (TypeError, ValueError):
        takes_verify = False
    return functools.partial(store.get, verify=False) if takes_verify else store.get


def _batch(store: BlockStore) -> contextlib.AbstractContextManager[Any]:
    """The store's batch() (fsyncs overlapped on a background thread when the store can),
    else nothing."""
    if isinstance(store, FilesystemBlockstore):
        return store.batch(background=True)
    batch = getattr(store, "batch", None)
    return batch() if callable(batch) else contextlib.nullcontext()


class _Pool:
    """A fixed ring of `count` reusable buffers of `size` bytes; take() blocks until one is
    released, which bounds how far the producer runs ahead of its consumers."""

    def __init__(self, size: int, count: int) -> None:
        self.size = size
        self._free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(count):
            self._free.put(bytearray(size))

    def take(self) -> memoryview:
        return memoryview(self._free.get())

    def release(self, view: memoryview) -> None:
        self._free.put(view.obj)  # type: ignore[arg-type]


class _Segments:
    """Lays the ciphertext out in pool buffers of exactly the import chunk size and hands
    each full one to `ship` (the importer then hashes it as one leaf without copying it
    into its own buffer); close() ships the partial last one."""

    def __init__(self, pool: _Pool, ship: Callable[[memoryview], None]) -> None:
        self._pool = pool
        self._ship = ship
        self._size = pool.size
        self._view = pool.take()
        self._fill = 0

    def reserve(self, n: int) -> memoryview | None:
        """`n` bytes of the current segment to write into, or None if they do not fit."""
        start = self._fill
        if start + n > self._size:
            return None
        self._fill = start + n
        return self._view[start : start + n]

    def filled(self) -> None:
        if self._fill == self._size:
            self._ship(self._view)
            self._view = self._pool.take()
            self._fill = 0

    def append(self, data: bytes | bytearray | memoryview) -> None:
        data = memoryview(data)
        while data:
            take = min(self._size - self._fill, len(data))
            self._view[self._fill : self._fill + take] = data[:take]
            self._fill += take
            data = data[take:]
            self.filled()

    def close(self) -> None:
        if self._fill:
            self._ship(self._view[: self._fill])
        else:
            self._pool.release(self._view)


def _seal_payload(reader: Any, sealer: ChunkSealer, plain: _Pool, commit: Callable[[memoryview], None],
                  out: _Segments, progress: Progress | None) -> int:
    """Read plaintext into pool buffers, feed each to `commit`, then encrypt its STREAM
    chunks straight into `out` (through a scratch chunk only where one straddles two
    segments). One buffer of look-ahead tells whether a full last chunk is the final one."""
    scratch = memoryview(bytearray(ENC_CHUNK_SIZE))
    seal_into = sealer.seal_into
    view = plain.take()
    n = read_full(reader, view)
    total = 0
    while True:
        total += n
        commit(view[:n])
        if progress is not None and n:
            progress(n)
        nxt: memoryview | None = None
        more = 0
        if n == len(view):
            nxt = plain.take()
            more = read_full(reader, nxt)
        final = more == 0
        for start in range(0, max(n, 1), CHUNK_SIZE):
            end = min(start + CHUNK_SIZE, n)
            size = end - start + TAG_SIZE
            target = out.reserve(size)
            if target is not None:
                seal_into(view[start:end], target, final and end == n)
                out.filled()
            else:
                seal_into(view[start:end], scratch[:size], final and end == n)
                out.append(scratch[:size])
        plain.release(view)
        if final:
            if nxt is not None:
                plain.release(nxt)
            return total
        view, n = nxt, more  # type: ignore[assignment]


def _open_payload(ciphertext: _Ciphertext, opener: ChunkOpener, committer: Committer, fd: int,
                  progress: Progress | None) -> int:
    """Decrypt the STREAM chunks straight into pool buffers; a worker writes each full
    buffer to `fd` and feeds it to the commitment. Returns the plaintext size."""
    pool = _Pool(_PLAIN_BUFFER, _POOL)
    syncer = _Syncer(fd)

    def write(view: memoryview) -> None:
        _write_all(fd, view)
        syncer.wrote(len(view))
        committer.update(view)

    output = _Sink(write, "write", pool.release)
    written = 0
    try:
        view = pool.take()
        fill = 0
        for chunk, at_end in iter_chunks(ciphertext.rest()):
            fill += opener.open_into(chunk, view[fill:], at_end)
            if at_end or fill + CHUNK_SIZE > len(view):
                output.put(view[:fill])
                written += fill
                if progress is not None and fill:
                    progress(fill)
                if at_end:
                    break
                view, fill = pool.take(), 0
        if not opener.finished:
            raise PayloadError("payload truncated: no final chunk")
        output.close()
    except BaseException:
        output.abort()
        syncer.close(check=False)
        raise
    syncer.close()
    return written


class _Syncer:
    """Flushes a file being written to disk on a background thread (fdatasync after every
    _SYNC_EVERY bytes), so the caller's final fsync only waits for the tail. A failed
    fdatasync is re-raised by close(): the kernel reports a writeback error only once."""

    _SYNC_EVERY = 32 << 20

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pending = 0
        self._wake = threading.Condition()
        self._due = False
        self._done = False
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="vault-sync", daemon=True)
        self._thread.start()

    def wrote(self, n: int) -> None:
        self._pending += n
        if self._pending >= self._SYNC_EVERY:
            self._pending = 0
            with self._wake:
                self._due = True
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not (self._due or self._done):
                    self._wake.wait()
                if self._done:
                    return
                self._due = False
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                self._error = self._error or exc

    def close(self, *, check: bool = True) -> None:
        with self._wake:
            self._done = True
            self._wake.notify()
        self._thread.join()
        if check and self._error is not None:
            raise self._error


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view) :]


def _plaintext_reader(src: BinaryIO | Path | Iterable[bytes] | bytes, stack: contextlib.ExitStack) -> Any:
    """Something read_full() can fill buffers from (a path is opened on `stack`)."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return io.BytesIO(src)
    if isinstance(src, (str, os.PathLike)):
        return stack.enter_context(open(src, "rb", buffering=0))
    if hasattr(src, "readinto") or hasattr(src, "read"):
        return src
    return _PieceReader(src)


class _PieceReader:
    """readinto() over an iterable of bytes pieces."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self._pieces = iter(pieces)
        self._current = memoryview(b"")

    def readinto(self, buffer: memoryview) -> int:
        while not self._current:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            if not isinstance(piece, (bytes, bytearray, memoryview)):
                raise InputValidationError(f"plaintext pieces must be bytes, got {type(piece).__name__}")
            self._current = memoryview(piece).cast("B")
        n = min(len(buffer), len(self._current))
        buffer[:n] = self._current[:n]
        self._current = self._current[n:]
        return n


class _Ciphertext:
    """The stored ciphertext as the exporter yields it (one piece per leaf): read() and
    readline() for the header and nonce, then rest() for the STREAM."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self._pieces = iter(pieces)
        self._piece = b""
        self._pos = 0

    def _next(self) -> bool:
        while self._pos == len(self._piece):
            piece = next(self._pieces, None)
            if piece is None:
                return False
            self._piece, self._pos = piece, 0
        return True

    def read(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n and self._next():
            take = min(n - len(out), len(self._piece) - self._pos)
            out += self._piece[self._pos : self._pos + take]
            self._pos += take
        return bytes(out)

    def readline(self, limit: int) -> bytes:
        out = bytearray()
        while len(out) < limit and self._next():
            end = min(len(self._piece), self._pos + limit - len(out))
            newline = self._piece.find(b"\n", self._pos, end)
            stop = end if newline < 0 else newline + 1
            out += self._piece[self._pos : stop]
            self._pos = stop
            if newline >= 0:
                break
        return bytes(out)

    def rest(self) -> Iterator[bytes | memoryview]:
        """The pieces after what read() and readline() consumed."""
        if self._pos < len(self._piece):
            yield memoryview(self._piece)[self._pos :]
        yield from self._pieces


class _Sink:
    """Runs `consume(item)` for every item on one worker thread, behind a bounded queue,
    then `release(item)` (also for items skipped after a failure, so buffer pools refill).
    A failure in the worker is re-raised to the producer at its next put() or at close();
    the worker keeps draining so the producer never blocks on a dead thread."""

    _END = object()

    def __init__(self, consume: Callable[[Any], Any], name: str,
                 release: Callable[[Any], Any] | None = None) -> None:
        self._consume = consume
        self._release = release
        self._queue: queue.Queue[Any] = queue.Queue(_QUEUE_DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"vault-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            try:
                if self._error is None:
                    self._consume(item)
            except BaseException as exc:  # handed to the producer
                self._error = exc
            finally:
                if self._release is not None:
                    self._release(item)

    def put(self, item: Any) -> None:
        if self._error is not None:
            self.close()
        self._queue.put(item)

    def close(self) -> None:
        self._queue.put(self._END)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        with contextlib.suppress(BaseException):
            self.close()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

