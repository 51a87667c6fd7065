"""The seal/open plumbing behind vault.Vault: buffer pools, the worker stage (_Sink), the
in-order hand-over of sealed leaves to the DAG (_InOrder), open's read-ahead (_Prefetch),
open's payload stage and the ciphertext reader. Private: vault/vault.py is the user
(seal's payload stage is vault/_seal.py), and vault/car.py borrows the read-ahead
(disk_prefetch) for CAR export; the byte formats live in vault/age and vault/unixfs.

hashlib, blake3, the AEAD and file I/O release the GIL, so the threads overlap on two cores
(per 256 MiB: SHA-256 ~0.14-0.24 s one at a time, 0.07 s 16 at a time with AVX-512; encrypt
or decrypt ~0.08-0.2 s; commitment ~0.05 s; reading ~0.04 s; block files ~0.05-0.2 s of
kernel time).

  open  caller:   fetch each block and verify it against its CID (export()); two
                  _Prefetch threads read the leaves ahead;
        worker:   decrypt into plaintext buffers (iter_runs + ChunkOpener.open_run: the
                  whole chunks of a block in one GIL-free call, so a busy Python thread
                  elsewhere in the process costs a switch interval per call, not per
                  64 KiB chunk), commitment;
        writer:   writes the buffers past the page cache (vault/_output.py).

Memory is bounded by the pools (_POOL plaintext buffers), the read-ahead and the queue
depths, whatever the file size.
"""
from __future__ import annotations

import collections
import contextlib
import contextvars
import functools
import io
import mmap
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

from vault import _accel
from vault.age._stream import CHUNK_SIZE, ENC_CHUNK_SIZE, ChunkOpener, byte_view, iter_runs
from vault._output import _Output
from vault._threads import stop_all, wait_out
from vault._mfbase import FormatError
from vault._mfdagpb import link_cids
from vault.cid import CID, DAG_PB, RAW
from vault.commitment import Committer
from vault.errors import InputValidationError, PayloadError

Progress = Callable[[int], None]
GetBlock = Callable[[CID], bytes]
_PLAIN_BUFFER = 16 * CHUNK_SIZE  # plaintext per buffer: 16 STREAM chunks, 1 MiB
_POOL = 4  # plaintext buffers in open's ring
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


_EMPTY_LEAF = CID.from_sha256(b"")  # the raw block of no bytes


class _Prefetch:
    """A get_block for export() that reads ahead: once a dag-pb node whose links are all raw
    leaves has been fetched, its leaves are what export() asks for next, in order, so up to
    `ahead` of them are read on `threads` threads meanwhile (from a disk: the reads overlap
    the caller's hashing and each other). A request for anything else drops the plan and is
    read directly. The node is parsed before export() has verified it: a bad one only makes
    this read the wrong blocks ahead, which are then not used. close() stops the threads.

    With `lanes` > 1 the leaves are also checked against their CIDs here, `lanes` at a time
    (vault/_accel.sha256_many: 16 SHA-256 side by side with AVX-512, on a thread of its
    own), and export() is handed verify() so that it does not hash them a second time: it
    accepts a block only if it is the very object that was checked (else it hashes it).

    `once`: for a caller that asks for each CID once (car.dag_blocks, whose `seen` set it
    is): the plan then takes each link once and leaves out those already seen, so that a
    leaf repeated in a file does not drop the read-ahead for the rest of its node. Without
    it (export(), which yields a repeated leaf each time) every link is planned."""

    def __init__(self, get: GetBlock, *, ahead: int = 4, threads: int = 2, lanes: int = 1,
                 once: set[bytes] | None = None) -> None:
        self._get = get
        self._once = once
        self._ahead = ahead
        self._lanes = lanes
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="vault-fetch")
        self._checker = ThreadPoolExecutor(1, thread_name_prefix="vault-verify") if lanes > 1 else None
        self._plan: collections.deque[CID] = collections.deque()
        self._pending: collections.deque[tuple[CID, Future[bytes], Future[set[int]] | None, int]] = collections.deque()
        self._group: list[tuple[CID, Future[bytes]]] = []  # reads not yet handed to the checker
        self._checked: dict[CID, bytes] = {}  # returned by __call__, hash checked, not yet vouched for

    def __call__(self, cid: CID) -> bytes:
        while self._pending and self._pending[0][0] != cid and self._pending[0][0] == _EMPTY_LEAF:
            self._pending.popleft()[1].cancel()  # export() asks for an empty leaf once, then skips it
            self._fill()
        if self._pending and self._pending[0][0] == cid:
            _, future, group, slot = self._pending.popleft()
            self._fill()
            data = future.result()
            if group is not None and slot in group.result():
                self._checked[cid] = data
        else:
            self._reset()
            data = self._get(cid)
        if cid.codec == DAG_PB:
            try:
                links = link_cids(data)
            except FormatError:
                links = []  # export() rejects the block
            if links and all(link.codec == RAW for link in links):
                self._reset()
                if self._once is not None:
                    seen = self._once
                    links = [link for link in dict.fromkeys(links) if link.to_bytes() not in seen]
                self._plan.extend(links)
                self._fill()
        return data

    def verify(self, cid: CID, block: bytes) -> None:
        """export()'s check of `block` against `cid`: free for a block this prefetcher has
        just returned for `cid` and checked, else cid.verify (BlockMismatchError)."""
        if self._checked.pop(cid, None) is not block:
            cid.verify(block)

    def _fill(self) -> None:
        while self._plan and len(self._pending) + len(self._group) < self._ahead:
            cid = self._plan.popleft()
            future = self._pool.submit(self._get, cid)
            if self._checker is None:
                self._pending.append((cid, future, None, 0))
                continue
            self._group.append((cid, future))
            if len(self._group) == self._lanes or not self._plan:
                group = self._group
                self._group = []
                check = self._checker.submit(self._check, group)
                self._pending.extend((c, f, check, i) for i, (c, f) in enumerate(group))

    @staticmethod
    def _check(group: list[tuple[CID, Future[bytes]]]) -> set[int]:
        """The slots of `group` whose block hashes to its CID (a failed read is left for
        __call__ to raise, a mismatch for export() to find)."""
        blocks: list[tuple[int, bytes]] = []
        for i, (_, future) in enumerate(group):
            try:
                blocks.append((i, future.result()))
            except BaseException:  # noqa: BLE001 - raised again where it is asked for
                continue
        if not blocks:
            return set()
        digests = _accel.sha256_many([block for _, block in blocks])
        return {i for (i, _), digest in zip(blocks, digests) if digest == group[i][0].multihash[2:]}

    def _reset(self) -> None:
        for _, future, _, _ in self._pending:
            future.cancel()
        for _, future in self._group:
            future.cancel()
        self._pending.clear()
        self._group.clear()
        self._plan.clear()
        self._checked.clear()

    def close(self) -> None:
        self._reset()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._checker is not None:
            self._checker.shutdown(wait=True, cancel_futures=True)


def disk_prefetch(store: Any, lanes: int = max(1, _accel.lanes), *, once: set[bytes] | None = None) -> _Prefetch:
    """The read-ahead for a FilesystemBlockstore `store`: leaves read past the page cache
    (get(verify=False, direct=True): the caller checks them through verify()), `lanes` at
    a time (default: as many as this CPU hashes side by side) checked on a thread of their
    own, twice that many read ahead (4 for one lane: the caller hashes). Vault.open (1
    lane), vault.read_file and car.dag_blocks use it; `once`: see _Prefetch."""
    return _Prefetch(functools.partial(store.get, verify=False, direct=True),
                     ahead=2 * lanes if lanes > 1 else 4, lanes=lanes, once=once)


class _InOrder:
    """Runs functions in the order of their indexes (0, 1, 2, ...), whatever the order in
    which add() is called: each one runs, under a lock, on the thread that fills the gap
    before it. `done` counts those that ran."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[int, Callable[[], Any]] = {}
        self.done = 0

    def add(self, index: int, fn: Callable[[], Any]) -> None:
        with self._lock:
            if index < self.done or index in self._pending:
                raise InputValidationError(f"index {index} was added twice")
            self._pending[index] = fn
            while (ready := self._pending.pop(self.done, None)) is not None:
                ready()
                self.done += 1


def _open_payload(ciphertext: _Ciphertext, opener: ChunkOpener, committer: Committer, fd: int,
                  progress: Progress | None) -> int:
    """Hand the STREAM, one verified block at a time as export() yields it on this thread,
    to a worker that decrypts it into plaintext buffers and feeds the commitment; a writer
    thread writes each buffer to `fd` (_Output). Returns the plaintext size; raises the
    worker's PayloadError or the writer's OSError."""
    pool = _Pool(_PLAIN_BUFFER, _POOL, aligned=True)
    written = 0
    output: _Output | None = None

    def decrypt(pieces: Iterator[bytes | memoryview]) -> None:
        nonlocal written
        plain, fill = pool.take(), 0
        for run, at_end in iter_runs(pieces):  # whole chunks inside a block come as one run
            while True:
                if at_end:
                    fill += opener.open_into(run, plain[fill:], True)
                else:  # as many chunks as the buffer holds, in one call (ChunkOpener.open_run)
                    count = min(len(run) // ENC_CHUNK_SIZE, (len(plain) - fill) // CHUNK_SIZE)
                    fill += opener.open_run(run[: count * ENC_CHUNK_SIZE], plain[fill:])
                    run = run[count * ENC_CHUNK_SIZE :]
                if at_end or fill + CHUNK_SIZE > len(plain):
                    view = plain[:fill]
                    committer.update(view)  # while it is in this core's cache
                    writer.put(view)
                    written += fill
                    plain, fill = pool.take(), 0
                if at_end or not run:
                    break
        pool.release(plain)
        if not opener.finished:
            raise PayloadError("payload truncated: no final chunk")

    received = reported = 0
    writer = _Sink(lambda buffers: [output.write(view) for view in buffers], "write",  # type: ignore[union-attr]
                   pool.release, depth=_POOL, start=False)
    worker = _Sink(decrypt, "decrypt", depth=_QUEUE_DEPTH, start=False)
    try:  # the threads are started inside it: an interruption between two starts stops the first
        output = _Output(fd)
        writer.start()
        worker.start()
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
        output.close()
    except BaseException:
        # every thread stopped before `fd` can be closed (vault/_threads.py): the decrypt
        # worker first (it waits for the writer's buffers), then the writer and the syncer
        stop_all(worker.abort, writer.abort,
                 *([lambda: wait_out(lambda: output.close(check=False))] if output is not None else []))
        raise
    if progress is not None and written > reported:
        progress(written - reported)
    return written


def _plaintext_reader(src: BinaryIO | Path | Iterable[bytes] | bytes, stack: contextlib.ExitStack) -> Any:
    """Something read_full() can fill buffers from (a path is opened on `stack`)."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return io.BytesIO(byte_view(src, "plaintext"))
    if isinstance(src, (str, os.PathLike)):
        return stack.enter_context(open(src, "rb", buffering=0))
    if isinstance(src, io.TextIOBase):
        raise InputValidationError(f"{type(src).__name__} is a text stream: open the file in binary mode ('rb')")
    if hasattr(src, "readinto") or hasattr(src, "read"):
        return src
    return _PieceReader(src)


_NO_MORE = object()


class _PieceReader:
    """readinto() over an iterable of bytes pieces."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self._pieces = iter(pieces)
        self._current = memoryview(b"")

    def readinto(self, buffer: memoryview) -> int:
        while not self._current:
            piece = next(self._pieces, _NO_MORE)
            if piece is _NO_MORE:  # not None: a None piece is an error (byte_view), not an end
                return 0
            self._current = byte_view(piece)
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
    """Runs `drain(items)` on `threads` worker threads, where each one's `items` yields what
    the producer put(), through one bounded queue, until close(); `release(item)` runs once
    a worker has moved past an item (also for items skipped after a failure, so buffer
    pools refill). A failure in a worker is re-raised to the producer at its next put() or
    at close(); the workers keep taking items so the producer never blocks on a dead
    thread. With several threads, items are taken in order but may finish out of order.
    close() and abort() return only once every worker has stopped (vault/_threads.py)."""

    _END = object()

    def __init__(self, drain: Callable[[Iterator[Any]], Any], name: str,
                 release: Callable[[Any], Any] | None = None, *, depth: int = _QUEUE_DEPTH,
                 threads: int = 1, start: bool = True) -> None:
        """start=False: no thread runs until start(), which a producer calls inside the
        `try` whose cleanup aborts this sink (an interruption between the construction and
        the assignment then leaves no thread behind)."""
        self._drain = drain
        self._release = release
        self._queue: queue.Queue[Any] = queue.Queue(depth)
        self._error: BaseException | None = None
        self._ends = 0  # end markers put
        self._cancelled = False  # abort(): what is still queued is released, not drained
        self._stopped = [threading.Event() for _ in range(threads)]  # each worker's last step
        self._started: list[threading.Event] = []  # those of the workers started
        # each worker runs in a copy of the producer's context, so that what it does joins
        # what the producer holds (a blockstore's batch: seal's puts are the writers')
        self._threads = [threading.Thread(target=contextvars.copy_context().run, args=(self._run, stopped),
                                          name=f"vault-{name}{n if threads > 1 else ''}", daemon=True)
                         for n, stopped in enumerate(self._stopped)]
        if start:
            try:
                self.start()
            except BaseException:  # interrupted: the producer never gets this object to abort it
                self._cancelled = True
                with contextlib.suppress(queue.Full):
                    for _ in self._threads:  # the queue is empty: those started take one each
                        self._queue.put_nowait(self._END)
                raise

    def start(self) -> None:
        """Start the workers (once). A worker is waited for by close()/abort() once its
        start() has returned; one interrupted while starting is not (nothing is queued
        before start() returns, so it can only take an end marker, which abort() puts)."""
        for thread, stopped in zip(self._threads, self._stopped):
            thread.start()
            self._started.append(stopped)

    def _items(self, ended: list[bool]) -> Iterator[Any]:
        while (item := self._queue.get()) is not self._END:
            if self._cancelled:
                if self._release is not None:
                    self._release(item)
                continue
            try:
                yield item
            finally:
                if self._release is not None:
                    self._release(item)
        ended.append(True)

    def _run(self, stopped: threading.Event) -> None:
        try:
            ended: list[bool] = []
            items = self._items(ended)
            try:
                self._drain(items)
            except BaseException as exc:  # handed to the producer
                self._error = self._error or exc
            finally:
                items.close()  # releases the item the drain stopped at
            if not ended:
                if self._error is None:  # drain returned early: nothing may follow what it took
                    self._error = InputValidationError("the pipeline worker stopped before the end of its input")
                for _ in self._items(ended):
                    pass
        finally:
            stopped.set()

    def put(self, item: Any) -> None:
        if self._error is not None:
            self.close()
        self._queue.put(item)

    def close(self) -> None:
        """End the input, wait for every worker, raise the first one's failure. Interrupted,
        it resumes where it was when called again (or through abort())."""
        self._finish()
        if self._error is not None:
            raise self._error

    def _finish(self) -> None:
        while self._ends < len(self._threads):
            self._queue.put(self._END)
            self._ends += 1
        for stopped in self._started:
            stopped.wait()

    def abort(self) -> BaseException | None:
        """Stop without finishing: what is still queued is released unused (an aborted seal
        stores no more blocks), and wait for every worker whatever interrupts the wait. A
        worker's failure is dropped (the producer raises its own); the first interruption
        of the wait is returned, for the producer to raise once everything is stopped."""
        self._cancelled = True
        return wait_out(self._finish)
