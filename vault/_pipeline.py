"""The seal/open pipeline behind vault.Vault: buffer rings, the storing and writing worker
threads, the fsync-behind syncer and the ciphertext reader. Private: vault/vault.py is the
only user; the byte formats live in vault/age and vault/unixfs.

Memory is bounded by the rings (_POOL buffers of one leaf each, two plaintext buffers) and
the queue depth; hashlib, the AEAD and file I/O release the GIL, so the caller's thread
(read, commitment HMAC, encrypt) and one worker (block SHA-256 + store) overlap.
"""
from __future__ import annotations

import contextlib
import io
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from vault.age._stream import (
    CHUNK_SIZE,
    ENC_CHUNK_SIZE,
    TAG_SIZE,
    ChunkOpener,
    ChunkSealer,
    iter_chunks,
    read_full,
)
from vault.cid import CID
from vault.commitment import Committer
from vault.errors import InputValidationError, PayloadError

Progress = Callable[[int], None]
GetBlock = Callable[[CID], bytes]
_PLAIN_BUFFER = 16 * CHUNK_SIZE  # plaintext per buffer: 16 STREAM chunks, 1 MiB
_POOL = 4  # buffers per ring (plaintext, ciphertext segments): bounds memory
_QUEUE_DEPTH = 8


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

