"""Anchoring: turn the audit log's unanchored tail into on-chain Merkle roots.

A batch runs from the last batched seq + 1 to the current last seq (at most `max_batch`
records, so a tree's memory is bounded). Its root is computed and the batch is stored as
`pending` BEFORE the transaction is sent; then exactly one anchor transaction is sent for
it. A batch whose transaction failed stays pending and is retried next time with the same
range and the same root — never skipped, never re-formed. Before (re)sending, the chain's
head for the org is read: if it already covers the batch (the transaction landed but the
node crashed before marking it), the batch is reconciled from the chain's event instead of
sending again; if the chain disagrees with the log (a different root for the range, or a
head inside the batch) anchoring stops with an AuditError, because only a human can
decide which side is wrong.

One Anchorer per org: two anchorers racing on the same database would both try to form
the same batch (the second insert fails on the batches' primary key).
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

from ledger.audit import _tables as t
from ledger.audit.log import AuditBatch, AuditLog
from ledger.audit.merkle import AuditTree
from ledger.audit.ports import AnchorEvent, AnchorSink
from ledger.errors import AuditError, LedgerError

log_ = logging.getLogger(__name__)
DEFAULT_MAX_BATCH = 100_000


class Anchorer:
    """Anchors `log` through `sink` every `every_records` records or `every_seconds`
    after the oldest unanchored record, whichever comes first."""

    def __init__(self, log: AuditLog, sink: AnchorSink, *, every_records: int = 1000, every_seconds: float = 60.0,
                 max_batch: int = DEFAULT_MAX_BATCH, clock: Callable[[], int] | None = None) -> None:
        if every_records < 1 or every_seconds < 0 or max_batch < 1:
            raise AuditError("every_records and max_batch must be >= 1, every_seconds >= 0")
        if sink.org != log.org:
            raise AuditError(f"the sink anchors for {sink.org}, but the log belongs to {log.org}")
        self.log = log
        self.sink = sink
        self.every_records = every_records
        self.every_ms = int(every_seconds * 1000)
        self.max_batch = max_batch
        self.clock = clock or log.clock

    def due(self) -> bool:
        """True if a batch is pending or the unanchored tail is big or old enough."""
        if self.log.batches(status=t.PENDING):
            return True
        start, last = self.log.batched_seq() + 1, self.log.last_seq()
        if last < start:
            return False
        if last - start + 1 >= self.every_records:
            return True
        oldest = self.log.record_time(start)
        return oldest is not None and int(self.clock()) - oldest >= self.every_ms

    def anchor_pending(self) -> list[AuditBatch]:
        """Anchor everything logged up to this call; the batches handled, in order. Stops
        at the first batch whose transaction fails: it is returned still pending, with
        `attempts` and `last_error` updated, and is retried on the next call.

        Records appended while this runs wait for the next call: under a steady stream of
        appends, "everything so far" would never end and the loop would send anchor after
        anchor back to back, ignoring every_records / every_seconds."""
        handled: list[AuditBatch] = []
        until = self.log.last_seq()
        while True:
            pending = self.log.batches(status=t.PENDING)
            batch = pending[0] if pending else self._form_batch(until)
            if batch is None:
                return handled
            batch = self._anchor(batch)
            handled.append(batch)
            if not batch.anchored:
                return handled

    def run(self, stop: threading.Event, poll_seconds: float = 1.0) -> None:
        """Anchor whenever due until `stop` is set. Failures are logged and retried."""
        while not stop.is_set():
            try:
                if self.due():
                    for batch in self.anchor_pending():
                        if not batch.anchored:
                            log_.warning("audit batch %d..%d not anchored yet (attempt %d): %s",
                                         batch.from_seq, batch.to_seq, batch.attempts, batch.last_error)
            except LedgerError as exc:
                log_.error("audit anchoring failed: %s", exc)
            stop.wait(poll_seconds)

    # -- internals -----------------------------------------------------------------------

    def _form_batch(self, until: int) -> AuditBatch | None:
        start, last = self.log.batched_seq() + 1, until
        if last < start:
            return None
        end = min(last, start + self.max_batch - 1)
        tree = AuditTree.build(self.log.leaf_entries(start, end))
        if tree.to_seq != end:
            raise AuditError(f"audit records {tree.to_seq + 1}..{end} are missing from the log")
        return self.log.add_batch(start, end, tree.root)

    def _anchor(self, batch: AuditBatch) -> AuditBatch:
        org = self.log.org
        head = self.sink.head(org)
        if head.last_seq >= batch.to_seq:
            return self._mark(batch, self._event_on_chain(batch))
        if head.last_seq != batch.from_seq - 1:
            raise AuditError(f"chain head of {org} is at seq {head.last_seq}, inside pending batch "
                             f"{batch.from_seq}..{batch.to_seq}: the log and the chain disagree")
        self.log.note_attempt(batch.from_seq, None)
        try:
            event = self.sink.submit(batch.from_seq, batch.to_seq, batch.root)
        except LedgerError as exc:
            self.log.note_attempt(batch.from_seq, f"{type(exc).__name__}: {exc}", count=False)
            return self.log.batch(batch.from_seq)
        return self._mark(batch, event)

    def _event_on_chain(self, batch: AuditBatch) -> AnchorEvent:
        for event in self.sink.events(self.log.org):
            if event.to_seq == batch.to_seq:
                return event
        raise AuditError(f"chain head covers batch {batch.from_seq}..{batch.to_seq} but no anchor event ends there")

    def _mark(self, batch: AuditBatch, event: AnchorEvent) -> AuditBatch:
        if (event.from_seq, event.to_seq, event.root) != (batch.from_seq, batch.to_seq, batch.root):
            raise AuditError(
                f"chain anchored {event.from_seq}..{event.to_seq} root 0x{event.root.hex()} for {self.log.org}, "
                f"but the log's batch is {batch.from_seq}..{batch.to_seq} root 0x{batch.root.hex()}")
        return self.log.mark_anchored(batch.from_seq, tx_hash=event.tx_hash, block=event.block,
                                      batch_index=event.batch_index, chain_id=self.sink.chain_id,
                                      contract=self.sink.contract)
