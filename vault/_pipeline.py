"""The seal/open pipeline behind vault.Vault: buffer rings, the worker threads, the
fsync-behind syncer, open's output writer and the ciphertext reader. Private:
vault/vault.py is the only user; the byte formats live in vault/age and vault/unixfs.

Two cores, two busy threads. hashlib, blake3, the AEAD and file I/O release the GIL, so the
caller's thread and one worker overlap; the split below gives them similar CPU work (per
256 MiB: SHA-256 ~0.16 s, block files ~0.15 s of kernel time, encrypt or decrypt ~0.08 s,
commitment ~0.05 s, reading ~0.04 s). The other threads mostly wait for the disk.

  seal  caller: read, commitment, encrypt into leaf buffers, and the SHA-256 of a full leaf
                whenever the worker has a backlog (the leaf is still in this core's cache);
        worker: SHA-256 of the other leaves, block files; two blockstore threads fsync them.
  open  caller: fetch each block and verify it against its CID (export());
        worker: decrypt into plaintext buffers, commitment;
        writer: writes the buffers past the page cache (vault/_output.py).

Memory is bounded by the rings (_SEGMENTS leaf buffers and two plaintext buffers for seal,
_POOL plaintext buffers for open) and the queue depths, whatever the file size.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import mmap
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
from vault._output import _Output
from vault.cid import CID
from vault.commitment import Committer
from vault.errors import InputValidationError, PayloadError

Progress = Callable[[int], None]
GetBlock = Callable[[CID], bytes]
_PLAIN_BUFFER = 16 * CHUNK_SIZE  # plaintext per buffer: 16 STREAM chunks, 1 MiB
_POOL = 4  # plaintext buffers in open's ring
_SEGMENTS = 6  # leaf buffers in seal's ring: the one being filled + the worker's backlog
_QUEUE_DEPTH = 6  # ciphertext blocks in flight to open's worker (each one leaf, <= 1 MiB)


class _Pool:
    """A fixed ring of `count` reusable buffers of `size` bytes; take() blocks until one is
    released, which bounds how far the producer runs ahead of its consumers."""

    def __init__(self, size: int, count: int, *, aligned: bool = False) -> None:
        self.size = size
        self._free: queue.Queue[Any] = queue.Queue()
        for _ in range(count):  # mmap memory is page-aligned, as O_DIRECT wants it
            self._free.put(mmap.mmap(-1, size) if aligned else bytearray(size))

    def take(self) -> memoryview:
        return memoryview(self._free.get())

    def release(self, view: memoryview) -> None:
        self._free.put(view.obj)  # type: ignore[arg-type]


class _Segments:
    """Lays the ciphertext out in pool buffers of exactly the import chunk size and hands
    each full one to `ship(segment, digest)` (the importer then takes it as one leaf without
    copying it into its own buffer); close() ships the partial last one.

    Leaf hashing is shared with the worker: when `hash_here()` says so as a segment is
    shipped (the worker has a backlog), its SHA-256 is computed here, while the bytes just
    written are still in this core's cache, and passed on as `digest`; otherwise `digest`
    is None and the worker hashes the leaf."""

    def __init__(self, pool: _Pool, ship: Callable[[memoryview, bytes | None], None],
                 hash_here: Callable[[], bool] | None = None) -> None:
        self._pool = pool
        self._ship = ship
        self._hash_here = hash_here
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
        """What reserve() handed out has been written."""
        if self._fill == self._size:
            self._send(self._view)
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
            self._send(self._view[: self._fill])
        else:
            self._pool.release(self._view)

    def _send(self, segment: memoryview) -> None:
        here = self._hash_here is not None and self._hash_here()
        self._ship(segment, hashlib.sha256(segment).digest() if here else None)


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
    """Hand the STREAM, one verified block at a time as export() yields it on this thread,
    to a worker that decrypts it into plaintext buffers and feeds the commitment; a writer
    thread writes each buffer to `fd` (_Output). Returns the plaintext size; raises the
    worker's PayloadError or the writer's OSError."""
    output = _Output(fd)
    pool = _Pool(_PLAIN_BUFFER, _POOL, aligned=True)
    written = 0

    def decrypt(pieces: Iterator[bytes | memoryview]) -> None:
        nonlocal written
        plain, fill = pool.take(), 0
        for chunk, at_end in iter_chunks(pieces):
            fill += opener.open_into(chunk, plain[fill:], at_end)
            if at_end or fill + CHUNK_SIZE > len(plain):
                view = plain[:fill]
                committer.update(view)  # while it is in this core's cache
                writer.put(view)
                written += fill
                plain, fill = pool.take(), 0
        pool.release(plain)
        if not opener.finished:
            raise PayloadError("payload truncated: no final chunk")

    writer = _Sink(lambda buffers: [output.write(view) for view in buffers], "write", pool.release, depth=_POOL)
    worker = _Sink(decrypt, "decrypt", depth=_QUEUE_DEPTH)
    received = reported = 0
    try:
        for piece in ciphertext.rest():  # each block fetched and checked against its CID here
            worker.put(piece)
            if progress is not None:
                # Progress on this thread: the plaintext of the whole chunks handed over so
                # far (never more than the final count; the rest is reported at the end).
                received += len(piece)
                due = received // ENC_CHUNK_SIZE * CHUNK_SIZE
                if due > reported:
                    progress(due - reported)
                    reported = due
        worker.close()
        writer.close()
    except BaseException:
        worker.abort()
        writer.abort()
        output.close(check=False)
        raise
    output.close()
    if progress is not None and written > reported:
        progress(written - reported)
    return written


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
    """Runs `drain(items)` on one worker thread, where `items` yields what the producer
    put(), through a bounded queue, until close(); `release(item)` runs once the worker
    has moved past an item (also for items skipped after a failure, so buffer pools
    refill). A failure in the worker is re-raised to the producer at its next put() or at
    close(); the worker keeps taking items so the producer never blocks on a dead thread."""

    _END = object()

    def __init__(self, drain: Callable[[Iterator[Any]], Any], name: str,
                 release: Callable[[Any], Any] | None = None, *, depth: int = _QUEUE_DEPTH) -> None:
        self._drain = drain
        self._release = release
        self._queue: queue.Queue[Any] = queue.Queue(depth)
        self._ended = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"vault-{name}", daemon=True)
        self._thread.start()

    def _items(self) -> Iterator[Any]:
        while (item := self._queue.get()) is not self._END:
            try:
                yield item
            finally:
                if self._release is not None:
                    self._release(item)
        self._ended = True

    def _run(self) -> None:
        items = self._items()
        try:
            self._drain(items)
        except BaseException as exc:  # handed to the producer
            self._error = exc
        finally:
            items.close()  # releases the item the drain stopped at
        if not self._ended:
            if self._error is None:  # drain returned early: nothing may follow what it took
                self._error = InputValidationError("the pipeline worker stopped before the end of its input")
            for _ in self._items():
                pass

    def backlog(self) -> int:
        """Items waiting for the worker (not counting the one it is on)."""
        return self._queue.qsize()

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

