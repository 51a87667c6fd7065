"""Seal's payload stage: the age STREAM encrypted on several threads, straight into the
UnixFS leaves. Private: vault/vault.py is the only user; the byte formats live in vault/age.

STREAM encrypts 64 KiB chunks independently (chunk j's nonce is j and a last flag), so they
need not be encrypted in order or on one thread. The caller's thread reads the plaintext
once, in 1 MiB buffers, and feeds each buffer to the commitment, which must see the bytes
in order. Reading once also keeps the commitment and the ciphertext consistent if the file
changes while it is read: both are made from the same bytes.

It then hands out *segments* of the age file (header, nonce, chunks), each one UnixFS leaf
of `segment_size` bytes, to worker threads. A worker encrypts the chunks that overlap its
segment into its own page-aligned leaf buffer and calls `emit(index, leaf)`, which hashes
and stores the leaf before it returns, while the bytes are still in that core's cache.
A chunk that straddles two segments is encrypted by both workers, into a scratch chunk, and
each copies its part (at most 2 chunks of 16 per MiB). Workers block in `emit` on the disk
while the others compute.

    H = len(header) + 16 (payload nonce),  E = 64 KiB + 16,  P = plaintext size
    chunk j's ciphertext:  [H + j*E, H + j*E + |p_j| + 16)
    segment i:             [i*S, min((i+1)*S, T)),  T = H + P + 16 * max(1, ceil(P / 64 KiB))

A segment is handed out once all its chunks are known: their plaintext has been read, and
whether the last of them is the final chunk (the read after it returned data, or the end
of the input). Plaintext buffers are reference-counted by the segments that use them and
come from a fixed pool, so memory is bounded (about 10 + workers MiB) whatever the size.

Why by hand: no library encrypts the age STREAM in parallel into caller-owned buffers.
"""
from __future__ import annotations

import mmap
import queue
import threading
from collections.abc import Callable
from typing import Any

from vault.age._stream import CHUNK_SIZE, ENC_CHUNK_SIZE, TAG_SIZE, ChunkSealer, read_full
from vault._pipeline import _PLAIN_BUFFER, _Sink

Emit = Callable[[int, memoryview], None]
Progress = Callable[[int], None]
WORKERS = 3  # two cores busy while a third worker waits for its block to reach the disk
_PLAIN_BUFFERS = 10  # 1 MiB each: the reader's two newest + what the queued segments use
_PER_BUFFER = _PLAIN_BUFFER // CHUNK_SIZE  # chunks per plaintext buffer (16)


class _Plain:
    __slots__ = ("view", "size", "refs")

    def __init__(self, view: memoryview, size: int) -> None:
        self.view = view
        self.size = size
        self.refs = 1  # the reader's, until every segment over this buffer is handed out


class _Segment:
    __slots__ = ("index", "lo", "hi", "chunks", "buffers")

    def __init__(self, index: int, lo: int, hi: int, chunks: list[tuple[int, memoryview, bool]],
                 buffers: list[int]) -> None:
        self.index, self.lo, self.hi, self.chunks, self.buffers = index, lo, hi, chunks, buffers


def seal_segments(reader: Any, head: bytes, sealer: ChunkSealer, commit: Callable[[memoryview], None],
                  segment_size: int, emit: Emit, progress: Progress | None = None,
                  *, workers: int = WORKERS) -> tuple[int, int]:
    """Encrypt everything `reader` yields into the age file `head` ‖ STREAM (`head` is the
    header and the payload nonce `sealer` was made with), cut into segments of
    `segment_size` bytes (the last one shorter), each passed once to `emit(index, leaf)` on
    a worker thread (in any order; `leaf` is only valid during the call). Returns the
    plaintext size and the number of segments. The first failure (in reading, in a worker
    or in `emit`) is raised here once every worker has stopped."""
    if segment_size <= 0 or segment_size % 4096:
        raise ValueError(f"segment size {segment_size} is not a positive multiple of 4096")
    H, S = len(head), segment_size
    pool: queue.Queue[bytearray] = queue.Queue()
    for _ in range(_PLAIN_BUFFERS):
        pool.put(bytearray(_PLAIN_BUFFER))
    buffers: dict[int, _Plain] = {}
    lock = threading.Lock()

    def unref(k: int) -> None:
        with lock:
            entry = buffers[k]
            entry.refs -= 1
            if entry.refs:
                return
            del buffers[k]
        pool.put(entry.view.obj)  # type: ignore[arg-type]

    def work(segments: Any) -> None:
        leaf = memoryview(mmap.mmap(-1, S))  # page-aligned: the store may write it with O_DIRECT
        scratch = memoryview(bytearray(ENC_CHUNK_SIZE))
        for seg in segments:
            lo, hi = seg.lo, seg.hi
            if lo < H:
                leaf[: min(H, hi) - lo] = head[lo : min(H, hi)]
            for j, plain, last in seg.chunks:
                start = H + j * ENC_CHUNK_SIZE
                end = start + len(plain) + TAG_SIZE
                if lo <= start and end <= hi:
                    sealer.seal_at(j, plain, leaf[start - lo : end - lo], last)
                else:  # straddles the segment's edge: this segment's part of it
                    sealer.seal_at(j, plain, scratch[: end - start], last)
                    a, b = max(start, lo), min(end, hi)
                    leaf[a - lo : b - lo] = scratch[a - start : b - start]
            emit(seg.index, leaf[: hi - lo])

    def release(seg: _Segment) -> None:
        for k in seg.buffers:
            unref(k)

    def segment(index: int, lo: int, hi: int, total: int, eof: bool) -> _Segment:
        chunks: list[tuple[int, memoryview, bool]] = []
        used: list[int] = []
        j = max(0, (lo - H) // ENC_CHUNK_SIZE)  # the first chunk that reaches into [lo, hi)
        while H + j * ENC_CHUNK_SIZE < hi:
            size = min(CHUNK_SIZE, total - j * CHUNK_SIZE)
            last = eof and (j + 1) * CHUNK_SIZE >= total
            k, offset = divmod(j, _PER_BUFFER)
            chunks.append((j, buffers[k].view[offset * CHUNK_SIZE : offset * CHUNK_SIZE + size], last))
            if not used or used[-1] != k:
                used.append(k)
            if last:
                break
            j += 1
        with lock:
            for k in used:
                buffers[k].refs += 1
        return _Segment(index, lo, hi, chunks, used)

    sink = _Sink(work, "seal", release, depth=workers, threads=workers)
    try:
        total = 0
        count = 0  # buffers read
        held: list[int] = []  # buffers the reader still holds a reference to, oldest first
        handed = 0  # segments handed out
        eof = False
        while not eof:
            view = memoryview(pool.get())
            n = read_full(reader, view)
            eof = n < len(view)
            if n == 0 and count:  # the end, right after a full buffer
                pool.put(view.obj)  # type: ignore[arg-type]
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
                sink.put(segment(handed, lo, min(lo + S, limit), total, eof))
                handed += 1
            # a buffer whose every chunk lies in handed-out segments is the workers' now
            while held and (eof or H + (held[0] + 1) * _PER_BUFFER * ENC_CHUNK_SIZE <= handed * S):
                unref(held.pop(0))
        sink.close()
    except BaseException:
        sink.abort()
        raise
    return total, handed
