"""Verify audit records against the chain alone.

`verify_proof` checks one AuditProof (a record, its Merkle path and its anchor) using an
AnchorSource: nothing the logging node says is trusted beyond the proof's bytes.
`verify_log` checks a whole log (`audit verify --all`): every seq from 1 to the chain's
anchored head present exactly once, each record canonical and logged by the org, each
batch's recomputed root equal to the root anchored on chain, and no local batch claiming
an anchoring the chain does not have. Edited, deleted and inserted (renumbered) records
all surface as precise `Reason`s.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

from eth_utils import to_checksum_address

from ledger.audit.log import AuditBatch, RawRecord
from ledger.audit.merkle import AuditTree, leaf_hash, process_proof
from ledger.audit.ports import ZERO_ROOT, AnchorEvent, AnchorSource
from ledger.audit.proof import AuditProof
from ledger.audit.reasons import Reason, error, fail
from ledger.audit.records import AuditRecord, parse
from ledger.audit._keccak import keccak256
from ledger.errors import AuditError

MAX_PROBLEMS = 1000  # a report keeps the first ones; `problem_count` counts all


def verify_proof(proof: AuditProof | dict, source: AnchorSource) -> AuditRecord:
    """Check `proof` against the chain behind `source`; the verified record.
    Raises AuditVerificationError whose `.reason` says what is wrong."""
    if not isinstance(proof, AuditProof):
        proof = AuditProof.from_dict(proof)
    if proof.chain_id != source.chain_id or to_checksum_address(proof.contract) != source.contract:
        fail(Reason.CHAIN_MISMATCH, f"proof is for chain {proof.chain_id} contract {proof.contract}, the source is "
                                    f"chain {source.chain_id} contract {source.contract}")
    record_bytes = proof.record.encode("utf-8", "surrogatepass")
    try:
        record = parse(record_bytes)
    except AuditError as exc:
        fail(Reason.MALFORMED, f"record: {exc}")
    record_hash = keccak256(record_bytes)
    if record_hash != proof.record_hash:
        fail(Reason.RECORD_HASH_MISMATCH, f"keccak256(record) is 0x{record_hash.hex()}, proof says "
                                          f"0x{proof.record_hash.hex()}")
    if record.seq != proof.seq:
        fail(Reason.SEQ_MISMATCH, f"record has seq {record.seq}, proof is for seq {proof.seq}")
    if record.org != proof.org:
        fail(Reason.ORG_MISMATCH, f"record was logged by {record.org}, proof is for {proof.org}")
    if not proof.from_seq <= proof.seq <= proof.to_seq:
        fail(Reason.SEQ_OUT_OF_RANGE, f"seq {proof.seq} is outside batch {proof.from_seq}..{proof.to_seq}")
    leaf = leaf_hash(proof.seq, record_hash)
    if leaf != proof.leaf:
        fail(Reason.LEAF_MISMATCH, f"leaf of (seq {proof.seq}, record hash) is 0x{leaf.hex()}, proof says "
                                   f"0x{proof.leaf.hex()}")
    computed = process_proof(leaf, proof.proof)
    if computed != proof.root:
        fail(Reason.PROOF_MISMATCH, f"Merkle path leads to 0x{computed.hex()}, not to root 0x{proof.root.hex()}")
    on_chain = source.root_of(proof.org, proof.to_seq)
    if on_chain != proof.root:
        what = "no batch" if on_chain == ZERO_ROOT else f"root 0x{on_chain.hex()}"
        fail(Reason.ROOT_NOT_ANCHORED, f"{proof.org} anchored {what} ending at seq {proof.to_seq}, "
                                       f"not root 0x{proof.root.hex()}")
    _check_event(proof, source.events_in_tx("0x" + proof.tx_hash.hex()))
    return record


def _check_event(proof: AuditProof, events: Sequence[AnchorEvent]) -> None:
    tx = "0x" + proof.tx_hash.hex()
    mine = [e for e in events if e.org == proof.org and e.to_seq == proof.to_seq]
    if not mine:
        fail(Reason.ANCHOR_EVENT_MISMATCH, f"transaction {tx} did not anchor a batch of {proof.org} ending at "
                                           f"seq {proof.to_seq}")
    event = mine[0]
    if not event.from_seq <= proof.seq <= event.to_seq:
        fail(Reason.SEQ_OUT_OF_RANGE, f"seq {proof.seq} is outside the anchored batch "
                                      f"{event.from_seq}..{event.to_seq}")
    if (event.from_seq, event.root, event.batch_index) != (proof.from_seq, proof.root, proof.batch_index):
        fail(Reason.ANCHOR_EVENT_MISMATCH,
             f"transaction {tx} anchored batch #{event.batch_index} {event.from_seq}..{event.to_seq} root "
             f"0x{event.root.hex()}, proof claims #{proof.batch_index} {proof.from_seq}..{proof.to_seq}")


@dataclass(frozen=True)
class Problem:
    reason: Reason
    seq: int | None
    detail: str


@dataclass
class VerificationReport:
    org: str
    anchored_seq: int = 0  # the chain's head.last_seq for the org
    batches: int = 0
    records_checked: int = 0
    unanchored_records: int = 0
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    @property
    def reasons(self) -> set[Reason]:
        return {p.reason for p in self.problems}

    def add(self, reason: Reason, seq: int | None, detail: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(reason, seq, detail))

    def raise_if_failed(self) -> None:
        if self.problems:
            p = self.problems[0]
            raise error(p.reason, f"{p.detail} (and {self.problem_count - 1} more problems)"
                        if self.problem_count > 1 else p.detail)

    def to_dict(self) -> dict[str, Any]:
        return {"org": self.org, "ok": self.ok, "anchored_seq": self.anchored_seq, "batches": self.batches,
                "records_checked": self.records_checked, "unanchored_records": self.unanchored_records,
                "problem_count": self.problem_count,
                "problems": [{"reason": p.reason.value, "seq": p.seq, "detail": p.detail} for p in self.problems]}


def _raw(item: Any) -> RawRecord:
    if isinstance(item, RawRecord):
        return item
    seq, canonical, *rest = item
    return RawRecord(seq, canonical, rest[0] if rest else None)


class _Records:
    """Raw records in seq order with one item of lookahead."""

    def __init__(self, items: Iterable[Any]) -> None:
        self._it: Iterator[Any] = iter(items)
        self._next: RawRecord | None = None
        self._advance()

    def _advance(self) -> None:
        item = next(self._it, None)
        self._next = None if item is None else _raw(item)

    def peek(self) -> RawRecord | None:
        return self._next

    def pop(self) -> RawRecord:
        item = self._next
        self._advance()
        return item


def verify_log(records: Iterable[RawRecord | tuple], source: AnchorSource, org: str, *,
               batches: Iterable[AuditBatch] = ()) -> VerificationReport:
    """Verify a whole log. `records` yields stored rows in ascending seq order
    (AuditLog.iter_raw(), or (seq, canonical_text[, stored_hash]) tuples from an export);
    `batches` are the node's own batch claims (AuditLog.batches()), checked against the
    chain. Streams: memory is bounded by one batch."""
    org = to_checksum_address(org)
    head = source.head(org)
    report = VerificationReport(org=org, anchored_seq=head.last_seq, batches=head.batches)
    rows = _Records(records)
    expected = 1
    chain_batches: dict[int, AnchorEvent] = {}
    for event in source.events(org):
        chain_batches[event.to_seq] = event
        entries, expected = _take_batch(rows, event.from_seq, event.to_seq, expected, org, report)
        if entries is not None:
            root = AuditTree.build(entries).root
            if root != event.root:
                report.add(Reason.BATCH_ROOT_MISMATCH, event.from_seq,
                           f"records {event.from_seq}..{event.to_seq} give root 0x{root.hex()}, batch "
                           f"#{event.batch_index} anchored 0x{event.root.hex()}")
    if expected <= head.last_seq:
        report.add(Reason.UNANCHORED_CLAIM, expected, f"chain head is {head.last_seq} but anchor events stop at "
                                                      f"{expected - 1}")
    while rows.peek() is not None:  # the unanchored tail: well-formed, in order, no gaps
        row = rows.pop()
        if _check_row(row, expected, org, report) is not None:
            report.unanchored_records += 1
        expected = max(expected, row.seq + 1)
    for batch in batches:
        _check_claim(batch, chain_batches, head.last_seq, report)
    return report


def _take_batch(rows: _Records, from_seq: int, to_seq: int, expected: int, org: str,
                report: VerificationReport) -> tuple[list[tuple[int, bytes]] | None, int]:
    entries: list[tuple[int, bytes]] = []
    complete = True
    while (row := rows.peek()) is not None and row.seq <= to_seq:
        rows.pop()
        if row.seq < expected:
            complete = False
        while expected < row.seq:
            report.add(Reason.MISSING_RECORD, expected, f"record {expected} is missing")
            expected += 1
            complete = False
        record_hash = _check_row(row, expected, org, report)
        if record_hash is None:
            complete = False
        elif row.seq == expected:
            entries.append((row.seq, record_hash))
        expected = max(expected, row.seq + 1)
    while expected <= to_seq:
        report.add(Reason.MISSING_RECORD, expected, f"record {expected} is missing")
        expected += 1
        complete = False
    return (entries if complete and entries and entries[0][0] == from_seq else None), expected


def _check_row(row: RawRecord, expected: int, org: str, report: VerificationReport) -> bytes | None:
    """The record hash of a good row, else None (the problem is reported)."""
    report.records_checked += 1
    if row.seq < expected:
        report.add(Reason.DUPLICATE_RECORD, row.seq, f"record {row.seq} appears more than once or out of order")
        return None
    data = row.canonical.encode("utf-8", "surrogatepass") if isinstance(row.canonical, str) else row.canonical
    try:
        record = parse(data)
    except AuditError as exc:
        report.add(Reason.MALFORMED, row.seq, f"record {row.seq}: {exc}")
        return None
    record_hash = keccak256(data)
    if record.seq != row.seq:
        report.add(Reason.SEQ_MISMATCH, row.seq, f"row {row.seq} holds the record of seq {record.seq}")
        return None
    if record.org != org:
        report.add(Reason.ORG_MISMATCH, row.seq, f"record {row.seq} was logged by {record.org}, not {org}")
        return None
    if row.record_hash is not None and row.record_hash != record_hash:
        report.add(Reason.RECORD_HASH_MISMATCH, row.seq, f"record {row.seq}: stored hash 0x{row.record_hash.hex()} "
                                                         f"is not keccak256 of its text 0x{record_hash.hex()}")
        return None
    return record_hash


def _check_claim(batch: AuditBatch, chain: dict[int, AnchorEvent], head: int, report: VerificationReport) -> None:
    if not batch.anchored:
        if batch.to_seq <= head and batch.to_seq not in chain:
            report.add(Reason.UNANCHORED_CLAIM, batch.from_seq, f"pending batch {batch.from_seq}..{batch.to_seq} "
                                                                "overlaps the chain's anchored range")
        return
    event = chain.get(batch.to_seq)
    if event is None:
        report.add(Reason.UNANCHORED_CLAIM, batch.from_seq,
                   f"batch {batch.from_seq}..{batch.to_seq} is marked anchored, the chain has no such batch "
                   f"(anchored head {head})")
    elif (event.from_seq, event.root) != (batch.from_seq, batch.root):
        report.add(Reason.UNANCHORED_CLAIM, batch.from_seq,
                   f"batch {batch.from_seq}..{batch.to_seq} root 0x{batch.root.hex()} differs from the chain's "
                   f"{event.from_seq}..{event.to_seq} root 0x{event.root.hex()}")
    elif batch.tx_hash is not None and batch.tx_hash.lower() != event.tx_hash.lower():
        report.add(Reason.UNANCHORED_CLAIM, batch.from_seq,
                   f"batch {batch.from_seq}..{batch.to_seq} names transaction {batch.tx_hash}, the chain's "
                   f"anchor is {event.tx_hash}")
