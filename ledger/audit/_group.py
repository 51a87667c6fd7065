"""Group commit for audit appends: concurrent appenders share one database transaction.

Every key release writes its record before the key leaves the node, so under load the
node's threads all queue on one write lock (the audit head row on PostgreSQL, the whole
database on SQLite, whose busy handler sleeps 1, 2, 5, 10 … ms between tries and so turns
a short queue into latency spikes of hundreds of ms). Instead, the first thread to arrive
becomes the *leader*: it takes every item queued so far (its own first) and writes them in
one transaction; the threads that arrived meanwhile wait for that commit, and when it is
done the first of those still queued is promoted to lead the next batch. No extra thread
and no handoff for an uncontended append; one commit per batch under contention.

If a batch's transaction fails, its items are retried one by one, so one bad item (a
record that cannot be encoded, say) fails alone and the others still commit. Each caller
gets its own result or its own exception. Nothing here knows about SQL: `write` does.

Hand-written because this is a dozen lines of locking specific to this write path; no
maintained library offers leader/follower batching for synchronous callers.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T, R]):
    __slots__ = ("item", "event", "result", "error", "lead")

    def __init__(self, item: T) -> None:
        self.item = item
        self.event = threading.Event()
        self.result: R | None = None
        self.error: BaseException | None = None
        self.lead = False


class GroupCommit(Generic[T, R]):
    """`submit(item)` returns `write([... item ...])`'s result for `item`.

    `write(items)` must write all `items` atomically (all or nothing) and return one result
    per item, in order; it is only ever called by one thread at a time."""

    def __init__(self, write: Callable[[Sequence[T]], Sequence[R]], *, max_batch: int = 256) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._write = write
        self._max = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Slot[T, R]] = []
        self._busy = False
        self.batches = 0  # transactions written (for metrics and tests)

    def submit(self, item: T) -> R:
        slot: _Slot[T, R] = _Slot(item)
        with self._lock:
            self._queue.append(slot)
            lead = not self._busy
            self._busy = True
        if not lead:
            slot.event.wait()
            if not slot.lead:
                return _outcome(slot)
        self._lead()
        return _outcome(slot)

    def _lead(self) -> None:
        """Write the queue's head batch (which starts with this thread's own slot), then
        hand the lead to the next queued thread, or stand down if nobody is waiting."""
        with self._lock:
            batch = self._queue[: self._max]
            del self._queue[: len(batch)]
        try:
            self._run(batch)
        finally:
            with self._lock:
                if self._queue:
                    successor = self._queue[0]
                    successor.lead = True
                    successor.event.set()
                else:
                    self._busy = False
            for slot in batch:
                slot.event.set()

    def _run(self, batch: list[_Slot[T, R]]) -> None:
        try:
            results = self._write([s.item for s in batch])
            self.batches += 1
        except BaseException as exc:  # noqa: BLE001 - isolate the failing item below
            if len(batch) == 1:
                batch[0].error = exc
                return
            for slot in batch:
                try:
                    slot.result = self._write([slot.item])[0]
                    self.batches += 1
                except BaseException as one:  # noqa: BLE001 - this caller's own error
                    slot.error = one
            return
        if len(results) != len(batch):  # pragma: no cover - a bug in `write`
            raise RuntimeError(f"group write returned {len(results)} results for {len(batch)} items")
        for slot, result in zip(batch, results):
            slot.result = result


def _outcome(slot: _Slot[T, R]) -> R:
    if slot.error is not None:
        raise slot.error
    return slot.result  # type: ignore[return-value]
