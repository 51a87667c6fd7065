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

Pipeline and memory. seal: the caller's thread reads and encrypts; worker threads feed
the plaintext commitment, chunk and hash the ciphertext, and write the blocks.
open: a worker thread fetches and verifies blocks, the caller's thread decrypts and
writes, another worker feeds the commitment. hashlib, the AEAD and file I/O release the
GIL, so the stages overlap on several cores. The queues between them are bounded, so
memory stays a few MiB whatever the file size.

Durability. seal stores all blocks inside the store's `batch()` when it has one (one
fsync pass at the end instead of one per block), then pins the root, and only then
returns. open writes a temp file next to `out`, fsyncs it, checks the commitment and
renames it into place; on any failure the temp file is removed and `out` is untouched.
"""
from __future__ import annotations

import contextlib
import io
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from vault.age import Decryptor, X25519Identity, X25519Recipient, encrypt, read_header, rewrap
from vault.blockstore import BlockStore
from vault.cid import CID
from vault.commitment import Committer
from vault.errors import InputValidationError
from vault.unixfs import DEFAULT_PROFILE, PROFILES, Importer, export

Progress = Callable[[int], None]
GetBlock = Callable[[CID], bytes]
COMMITMENT_SIZE = 32
_READ_SIZE = 1 << 20  # plaintext read per call
_BATCH_BYTES = 1 << 20  # ciphertext handed to the storing thread per queue item
_QUEUE_DEPTH = 8
_CHUNKS_PER_BATCH = 16  # age STREAM chunks (64 KiB) per queue item when opening


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
        committer = Committer(file_key)
        counted = [0]
        batch = getattr(self.store, "batch", None)
        with batch() if callable(batch) else contextlib.nullcontext():
            writer = _Sink(lambda block: self.store.put(*block), "write")  # file I/O, beside the hashing
            importer = Importer(self.profile, lambda cid, data: writer.put(((cid, data),)))
            commit = _Sink(committer.update, "commit")  # HMAC over the plaintext, beside the encryption
            blocks = _Sink(importer.write, "import")  # chunk and hash the ciphertext

            def plaintext() -> Iterator[bytes]:
                for piece in _read_pieces(src):
                    commit.put((piece,))
                    counted[0] += len(piece)
                    if progress is not None:
                        progress(len(piece))
                    yield piece

            try:
                pending: list[bytes] = []
                size = 0
                for piece in encrypt(plaintext(), [self.identity.recipient], file_key=file_key):
                    pending.append(piece)
                    size += len(piece)
                    if size >= _BATCH_BYTES:
                        blocks.put(pending)
                        pending, size = [], 0
                if pending:
                    blocks.put(pending)
                commit.close()
                blocks.close()
                root = importer.finish()  # the last leaf and the inner nodes
            except BaseException:
                for sink in (commit, blocks, writer):
                    sink.abort()
                raise
            writer.close()
        pin = getattr(self.store, "pin", None)
        if callable(pin):
            pin(root)
        return SealedVersion(
            cid=str(root),
            commitment=committer.digest(),
            size=counted[0],
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
            header = read_header(_reader(blocks))
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

        fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
        tmp = Path(tmp_name)
        blocks: _Prefetch | None = None
        try:
            with open(fd, "wb", buffering=0) as fh:
                blocks = _Prefetch(export(root, get_block or self.store.get))
                ciphertext = _reader(blocks)
                stored = read_header(ciphertext)  # skipped: the payload follows it
                decryptor = Decryptor(_Chain(stored if header is None else bytes(header), ciphertext), [identity])
                committer = Committer(decryptor.file_key)
                commit = _Sink(committer.update, "commit")  # HMAC beside decryption and writing
                written = 0
                try:
                    pending: list[bytes] = []
                    for chunk in decryptor:
                        fh.write(chunk)
                        pending.append(chunk)
                        written += len(chunk)
                        if len(pending) == _CHUNKS_PER_BATCH:
                            commit.put(pending)
                            pending = []
                        if progress is not None:
                            progress(len(chunk))
                    commit.put(pending)
                except BaseException:
                    commit.abort()
                    raise
                commit.close()
                committer.verify(commitment)  # CommitmentMismatchError
                os.fsync(fh.fileno())
            os.replace(tmp, out)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        finally:
            if blocks is not None:
                blocks.close()
        _fsync_dir(out.parent)
        return written


# -- plumbing ------------------------------------------------------------------------------


def _parse_cid(cid: str | CID) -> CID:
    if isinstance(cid, CID):
        return cid
    if not isinstance(cid, str):
        raise InputValidationError(f"cid must be a CID string, got {type(cid).__name__}")
    return CID.decode(cid)


def _read_pieces(src: BinaryIO | Path | Iterable[bytes] | bytes) -> Iterator[bytes]:
    if isinstance(src, (bytes, bytearray, memoryview)):
        yield bytes(src)
    elif isinstance(src, (str, os.PathLike)):
        with open(src, "rb", buffering=0) as fh:
            yield from _read_file(fh)
    elif hasattr(src, "readinto") or hasattr(src, "read"):
        yield from _read_file(src)  # type: ignore[arg-type]
    else:
        for piece in src:
            if not isinstance(piece, (bytes, bytearray, memoryview)):
                raise InputValidationError(f"plaintext pieces must be bytes, got {type(piece).__name__}")
            yield piece  # type: ignore[misc]


def _read_file(fh: BinaryIO) -> Iterator[bytes]:
    while True:
        piece = fh.read(_READ_SIZE)
        if not piece:
            return
        yield piece


class _Sink:
    """Runs `consume(piece)` for every piece of every batch on one worker thread, behind a
    bounded queue. A failure in the worker is re-raised to the producer at its next put()
    or at close(); the worker keeps draining so the producer never blocks on a dead thread."""

    _END = object()

    def __init__(self, consume: Callable[[Any], Any], name: str) -> None:
        self._consume = consume
        self._queue: queue.Queue[Any] = queue.Queue(_QUEUE_DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"vault-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if self._error is None:
                try:
                    for piece in item:
                        self._consume(piece)
                except BaseException as exc:  # handed to the producer
                    self._error = exc

    def put(self, batch: Iterable[Any]) -> None:
        if self._error is not None:
            self.close()
        self._queue.put(batch)

    def close(self) -> None:
        self._queue.put(self._END)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        with contextlib.suppress(BaseException):
            self.close()


class _Prefetch:
    """Iterates `source` on a worker thread, up to _QUEUE_DEPTH items ahead."""

    _END = object()

    def __init__(self, source: Iterator[bytes]) -> None:
        self._source = source
        self._queue: queue.Queue[Any] = queue.Queue(_QUEUE_DEPTH)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vault-fetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for item in self._source:
                self._queue.put((item, None))
                if self._stop.is_set():
                    return
            self._queue.put((self._END, None))
        except BaseException as exc:
            self._queue.put((self._END, exc))
        finally:
            close = getattr(self._source, "close", None)
            if callable(close):
                with contextlib.suppress(BaseException):
                    close()

    def __iter__(self) -> Iterator[bytes]:
        while True:
            item, error = self._queue.get()
            if error is not None:
                raise error
            if item is self._END:
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
        self._thread.join()


class _IterRaw(io.RawIOBase):
    """A raw readable stream over an iterator of bytes pieces (one copy, into the caller's buffer)."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self._pieces = iter(pieces)
        self._current = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._current:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._current = memoryview(piece)
        n = min(len(buffer), len(self._current))
        buffer[:n] = self._current[:n]
        self._current = self._current[n:]
        return n


def _reader(pieces: Iterable[bytes]) -> io.BufferedReader:
    return io.BufferedReader(_IterRaw(pieces), buffer_size=64 * 1024)


class _Chain(io.RawIOBase):
    """`head` bytes followed by the rest of `tail` (a buffered reader)."""

    def __init__(self, head: bytes, tail: io.BufferedReader) -> None:
        self._head = memoryview(head)
        self._tail = tail

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        return self._tail.readinto(buffer)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
