"""Seal's payload stage: the age STREAM encrypted and hashed on worker threads, straight into
the UnixFS leaves, and written by other threads. Private: vault/vault.py is the only user;
the byte formats live in vault/age.

STREAM encrypts 64 KiB chunks independently (chunk j's nonce is j and a last flag), so they
need not be encrypted in order or on one thread. The caller's thread reads the plaintext
once, in 1 MiB buffers, and feeds each buffer to the commitment, which must see the bytes
in order. Reading once also keeps the commitment and the ciphertext consistent if the file
changes while it is read: both are made from the same bytes.

It then hands out *segments* of the age file (header, nonce, chunks), each one UnixFS leaf
of `segment_size` bytes, to `workers` threads. A worker encrypts the chunks of a segment
into a page-aligned leaf buffer (ChunkSealer.seal_run: one call per run of chunks inside
the segment) and releases the plaintext; once it holds `lanes` sealed leaves (or the input
is done) it hashes them together (vault/_accel.sha256_many: 16 SHA-256 messages side by
side with AVX-512, 4 interleaved with the SHA extensions). It hands each leaf to `writers`
threads, which call `emit(index, leaf, digest)` (the store's put, the DAG) and give the
buffer back. So the cores encrypt and hash while the writers wait for the disk: with the
accelerator, a put is one GIL-free call that blocks until the block is durable, so six
writers keep six blocks in flight. A chunk that straddles two segments is encrypted by
both workers, into a scratch chunk, and each copies its part (at most 2 chunks of 16 per
MiB).

    H = len(header) + 16 (payload nonce),  E = 64 KiB + 16,  P = plaintext size
    chunk j's ciphertext:  [H + j*E, H + j*E + |p_j| + 16)
    segment i:             [i*S, min((i+1)*S, T)),  T = H + P + 16 * max(1, ceil(P / 64 KiB))

A segment is handed out once all its chunks are known: their plaintext has been read, and
whether the last of them is the final chunk (the read after it returned data, or the end
of the input). Plaintext buffers are reference-counted by the segments that use them and
come from a fixed pool, and so do the leaf buffers, so memory is bounded (about
4 + 6 * workers MiB of plaintext and workers * lanes + writers + 2 MiB of leaves: 16 and
40 MiB with AVX-512) whatever the size. Both pools are carved from private anonymous
mappings with transparent huge pages (_arena), which saved a tenth of seal's CPU in page
faults and in pinning pages for O_DIRECT, and the last seal's pools are kept for the next
one (_Arenas), which saved as much again on these VMs.

Why by hand: no library encrypts the age STREAM in parallel into caller-owned buffers.
"""
from __future__ import annotations

import contextlib
import mmap
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from vault import _accel
from vault.age._stream import CHUNK_SIZE, ENC_CHUNK_SIZE, TAG_SIZE, ChunkSealer, read_full
from vault._pipeline import _PLAIN_BUFFER, _Sink
from vault._threads import stop_all

Emit = Callable[[int, memoryview, "bytes | None"], None]
Progress = Callable[[int], None]
WORKERS = 2  # one per core: the writers, not a third worker, wait for the disk
WRITERS = 6  # block files in flight: each writer blocks in one native put (write, fsync, rename, dir fsync)
LANES = max(1, _accel.lanes)  # leaves hashed together by one worker (16 with AVX-512)
_STAGE_DEPTH = 4  # segments queued per worker
_PER_BUFFER = _PLAIN_BUFFER // CHUNK_SIZE  # chunks per plaintext buffer (16)


class _Plain:
    __slots__ = ("view", "size", "refs")

    def __init__(self, view: memoryview, size: int) -> None:
        self.view = view
        self.size = size
        self.refs = 1  # the reader's, until every segment over this buffer is handed out


class _Run:
    """Chunks first..first+n-1 of one segment: `plain` (contiguous, in one plaintext
    buffer) encrypted to leaf[start - lo : end - lo] when `inside` the segment, else (one
    chunk straddling its edge) through a scratch chunk of which the segment keeps its part."""

    __slots__ = ("first", "plain", "buffer", "last", "start", "end", "inside")

    def __init__(self, first: int, plain: memoryview, buffer: int, last: bool, start: int, end: int,
                 inside: bool) -> None:
        self.first, self.plain, self.buffer, self.last = first, plain, buffer, last
        self.start, self.end, self.inside = start, end, inside


class _Segment:
    __slots__ = ("index", "lo", "hi", "runs", "buffers", "released")

    def __init__(self, index: int, lo: int, hi: int, runs: list[_Run], buffers: list[int]) -> None:
        self.index, self.lo, self.hi, self.runs, self.buffers = index, lo, hi, runs, buffers
        self.released = False


def _arena(count: int, size: int) -> list[memoryview]:
    """`count` page-aligned buffers of `size` bytes, carved from one private anonymous
    mapping with transparent huge pages asked for (where the kernel offers them): a seal
    then faults in 2 MiB at a time instead of 4 KiB, and the store's O_DIRECT writes pin a
    few huge pages per leaf instead of 256 small ones. Seals take them from _ARENAS."""
    mem = mmap.mmap(-1, count * size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    with contextlib.suppress(AttributeError, OSError):  # no THP: plain pages, same bytes
        mem.madvise(mmap.MADV_HUGEPAGE)
    whole = memoryview(mem)
    return [whole[i * size : (i + 1) * size] for i in range(count)]


class _Arenas:
    """The buffer pools of the last seal of each shape, kept for the next one. A fresh
    mapping costs a page fault per huge page, and on these VMs memory the guest has freed
    goes back to the host (free page reporting), so faulting it in again costs a trip to
    the hypervisor per page: about a tenth of a seal's CPU. A process that seals keeps
    one idle set per shape (about 56 MiB with 16 lanes); concurrent seals make their own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[tuple[int, int], list[memoryview]] = {}

    @contextlib.contextmanager
    def take(self, count: int, size: int, *, wipe: bool = False) -> Iterator[list[memoryview]]:
        """Buffers for one seal; given back only if the seal ends without an error (its
        threads have stopped either way, but a failed seal is not worth the doubt), and
        zeroed first when `wipe` (plaintext: not left lying in an idle pool)."""
        with self._lock:
            bufs = self._idle.pop((count, size), None)
        if bufs is None:
            bufs = _arena(count, size)
        yield bufs
        if wipe:
            zero = bytes(size)
            for buf in bufs:
                buf[:] = zero
        with self._lock:
            self._idle.setdefault((count, size), bufs)


_ARENAS = _Arenas()


def seal_segments(reader: Any, head: bytes, sealer: ChunkSealer, commit: Callable[[memoryview], None],
                  segment_size: int, emit: Emit, progress: Progress | None = None, *,
                  workers: int = WORKERS, writers: int = WRITERS, lanes: int = LANES,
                  hash_leaves: bool = True) -> tuple[int, int]:
    """Encrypt everything `reader` yields into the age file `head` ‖ STREAM (`head` is the
    header and the payload nonce `sealer` was made with), cut into segments of
    `segment_size` bytes (the last one shorter), each passed once to
    `emit(index, leaf, digest)` on a writer thread, in any order; `leaf` is only valid
    during the call and `digest` is its SHA-256 (None unless `hash_leaves`). Returns the
    plaintext size and the number of segments. The first failure (in reading, in a worker
    or in `emit`) is raised here once every thread has stopped."""
    if segment_size <= 0 or segment_size % 4096:
        raise ValueError(f"segment size {segment_size} is not a positive multiple of 4096")
    if workers < 1 or writers < 1 or not 1 <= lanes <= _accel.MAX_LANES:
        raise ValueError(f"bad pipeline shape: workers={workers} writers={writers} lanes={lanes}")
    S = segment_size
    # the reader's two newest, one per queued segment, two per worker's current segment
    plain = (4 + (_STAGE_DEPTH + 2) * workers, _PLAIN_BUFFER)
    # A worker holds up to `lanes` leaves until it hashes them; the rest are the writers'
    # (one each, and two queued). With fewer than workers * lanes, two workers could each
    # wait for the other's. Page-aligned: the store may write them with O_DIRECT.
    leaf = (workers * lanes + writers + 2, S)
    with _ARENAS.take(*plain, wipe=True) as plain_bufs, _ARENAS.take(*leaf) as leaf_bufs:
        return _seal(reader, head, sealer, commit, S, emit, progress, workers, writers, lanes, hash_leaves,
                     plain_bufs, leaf_bufs)


def _seal(reader: Any, head: bytes, sealer: ChunkSealer, commit: Callable[[memoryview], None], S: int,
          emit: Emit, progress: Progress | None, workers: int, writers: int, lanes: int, hash_leaves: bool,
          plain_bufs: list[memoryview], leaf_bufs: list[memoryview]) -> tuple[int, int]:
    H = len(head)
    pool: queue.Queue[memoryview] = queue.Queue()
    for buf in plain_bufs:
        pool.put(buf)
    leaves: queue.Queue[memoryview] = queue.Queue()
    for buf in leaf_bufs:
        leaves.put(buf)
    buffers: dict[int, _Plain] = {}
    lock = threading.Lock()

    def unref(k: int) -> None:
        with lock:
            entry = buffers[k]
            entry.refs -= 1
            if entry.refs:
                return
            del buffers[k]
        pool.put(entry.view)

    def release(seg: _Segment) -> None:  # once per segment: when encrypted, or when skipped
        if not seg.released:
            seg.released = True
            for k in seg.buffers:
                unref(k)

    def encrypt(seg: _Segment, leaf: memoryview, scratch: memoryview) -> None:
        lo, hi = seg.lo, seg.hi
        if lo < H:
            leaf[: min(H, hi) - lo] = head[lo : min(H, hi)]
        for run in seg.runs:
            if run.inside:
                sealer.seal_run(run.first, run.plain, leaf[run.start - lo : run.end - lo], run.last)
            else:  # straddles the segment's edge: this segment's part of it
                sealer.seal_run(run.first, run.plain, scratch[: run.end - run.start], run.last)
                a, b = max(run.start, lo), min(run.end, hi)
                leaf[a - lo : b - lo] = scratch[a - run.start : b - run.start]
        release(seg)

    def work(segments: Iterator[_Segment]) -> None:
        scratch = memoryview(bytearray(ENC_CHUNK_SIZE))
        pending: list[tuple[int, memoryview, memoryview]] = []  # (index, pool buffer, leaf view): sealed, not hashed

        def flush() -> None:
            views = [entry[2] for entry in pending]
            digests = _accel.sha256_many(views) if hash_leaves else [None] * len(views)
            for digest in digests:
                out.put((*pending[0], digest))
                pending.pop(0)  # the writers own it now

        try:
            for seg in segments:
                buf = leaves.get()
                view = memoryview(buf)[: seg.hi - seg.lo]
                pending.append((seg.index, buf, view))
                encrypt(seg, view, scratch)
                if len(pending) == lanes:
                    flush()
            if pending:
                flush()
        finally:
            for _index, buf, view in pending:
                view.release()
                leaves.put(buf)

    def write(items: Iterator[tuple[int, memoryview, memoryview, bytes | None]]) -> None:
        for index, _buf, view, digest in items:
            emit(index, view, digest)

    def give_back(item: tuple[int, memoryview, memoryview, bytes | None]) -> None:
        item[2].release()
        leaves.put(item[1])

    def segment(index: int, lo: int, hi: int, total: int, eof: bool) -> _Segment:
        runs: list[_Run] = []
        used: list[int] = []
        j = max(0, (lo - H) // ENC_CHUNK_SIZE)  # the first chunk that reaches into [lo, hi)
        while H + j * ENC_CHUNK_SIZE < hi:
            size = min(CHUNK_SIZE, total - j * CHUNK_SIZE)
            last = eof and (j + 1) * CHUNK_SIZE >= total
            k, offset = divmod(j, _PER_BUFFER)
            start = H + j * ENC_CHUNK_SIZE
            end = start + size + TAG_SIZE
            inside = lo <= start and end <= hi
            prev = runs[-1] if runs else None
            if (inside and prev is not None and prev.inside and not prev.last
                    and prev.buffer == k and prev.end == start):
                # the next chunk of the same buffer, also inside: extend the run
                base = (prev.first % _PER_BUFFER) * CHUNK_SIZE
                prev.plain = buffers[k].view[base : offset * CHUNK_SIZE + size]
                prev.last, prev.end = last, end
            else:
                runs.append(_Run(j, buffers[k].view[offset * CHUNK_SIZE : offset * CHUNK_SIZE + size], k,
                                 last, start, end, inside))
            if not used or used[-1] != k:
                used.append(k)
            if last:
                break
            j += 1
        with lock:
            for k in used:
                buffers[k].refs += 1
        return _Segment(index, lo, hi, runs, used)

    out = _Sink(write, "write", give_back, depth=2 * writers, threads=writers, start=False)
    stage = _Sink(work, "seal", release, depth=_STAGE_DEPTH * workers, threads=workers, start=False)
    try:  # the threads are started inside it: an interruption between two starts stops the first
        out.start()
        stage.start()
        total = 0
        count = 0  # buffers read
        held: list[int] = []  # buffers the reader still holds a reference to, oldest first
        handed = 0  # segments handed out
        eof = False
        while not eof:
            view = pool.get()
            n = read_full(reader, view)
            eof = n < len(view)
            if n == 0 and count:  # the end, right after a full buffer
                pool.put(view)
            else:
                commit(view[:n])
                total += n
                if progress is not None and n:
                    progress(n)
                with lock:
                    buffers[count] = _Plain(view, n)
                held.append(count)
                count += 1
            if eof:
                limit = H + total + TAG_SIZE * max(1, -(-total // CHUNK_SIZE))  # the whole file
            else:  # the chunks of all but the newest buffer: the newest one's last chunk may be final
                limit = H + (count - 1) * _PER_BUFFER * ENC_CHUNK_SIZE
            while handed * S < limit and (eof or (handed + 1) * S <= limit):
                lo = handed * S
                stage.put(segment(handed, lo, min(lo + S, limit), total, eof))
                handed += 1
            # a buffer whose every chunk lies in handed-out segments is the workers' now
            while held and (eof or H + (held[0] + 1) * _PER_BUFFER * ENC_CHUNK_SIZE <= handed * S):
                unref(held.pop(0))
        stage.close()
        out.close()
    except BaseException:
        # both stopped before the import gate opens (vault/_threads.py)
        stop_all(stage.abort, out.abort)
        raise
    return total, handed
