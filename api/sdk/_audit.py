"""`verify`: check a node's audit log against the chain alone (DESIGN §5 "Audit").

The auditor trusts no node. It pages through the node's records (GET /v1/audit/records)
and, for every record the chain says is anchored, fetches its proof (GET
/v1/audit/records/{seq}/proof) and checks it with ledger.audit.verify_proof against the
AuditAnchors contract: Merkle path to a root the org anchored, anchor transaction, and
that the proven record is the record listed. With `all=True` the listing is also run
through ledger.audit.verify_log: every seq from 1 to the chain's anchored head present
exactly once and each batch recomputing to its anchored root — so deletions, insertions
and renumberings are caught, not only edits.

Per-record failures are named by seq: an edited record fails its proof check
(record-hash-mismatch) or, when its stored hash was rewritten too, the node cannot prove
any record of that batch (proof-unavailable) and the batch root no longer matches.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import rfc8785
from eth_utils import is_address, to_checksum_address

from api.errors import RemoteError, RemoteNotFoundError, UntrustedAnswerError
from api.sdk._http import NodeHttp, segment
from api.sdk.models import hex32, uint
from ledger.audit.log import RawRecord
from ledger.audit.ports import AnchorEvent, AnchorHead, AnchorSource
from ledger.audit.verify import verify_log, verify_proof
from ledger.errors import AuditVerificationError

PAGE = 1000
_RECORD_FIELDS = ("v", "seq", "kind", "time", "org", "actor", "asset", "version", "details")


@dataclass
class AuditVerification:
    """The verdict on one node's audit log. `problems` name the seq and a reason code
    (ledger.audit.Reason values, plus "proof-unavailable" and "record-differs")."""

    node: str
    org: str
    complete: bool  # all=True: completeness 1..anchored head checked
    anchored_seq: int = 0  # the chain's anchored head for the org
    batches: int = 0
    node_last_seq: int | None = None
    records_checked: int = 0
    proofs_verified: int = 0
    unanchored_records: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, seq: int | None, reason: str, detail: str) -> None:
        self.problems.append({"seq": seq, "reason": reason, "detail": detail})

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "node": self.node, "org": self.org, "complete": self.complete,
                "anchored_seq": self.anchored_seq, "batches": self.batches, "node_last_seq": self.node_last_seq,
                "records_checked": self.records_checked, "proofs_verified": self.proofs_verified,
                "unanchored_records": self.unanchored_records, "problems": list(self.problems)}


class CachedAnchors:
    """An AnchorSource that asks the chain once per root, transaction and org."""

    def __init__(self, inner: AnchorSource) -> None:
        self.inner = inner
        self.chain_id = inner.chain_id
        self.contract = inner.contract
        self._roots: dict[tuple[str, int], bytes] = {}
        self._txs: dict[str, list[AnchorEvent]] = {}
        self._events: dict[str, list[AnchorEvent]] = {}

    def head(self, org: str) -> AnchorHead:
        return self.inner.head(org)

    def root_of(self, org: str, to_seq: int) -> bytes:
        key = (org, to_seq)
        if key not in self._roots:
            self._roots[key] = self.inner.root_of(org, to_seq)
        return self._roots[key]

    def events_in_tx(self, tx_hash: str) -> list[AnchorEvent]:
        key = tx_hash.lower()
        if key not in self._txs:
            self._txs[key] = list(self.inner.events_in_tx(tx_hash))
        return self._txs[key]

    def events(self, org: str) -> list[AnchorEvent]:
        if org not in self._events:
            self._events[org] = list(self.inner.events(org))
        return self._events[org]


def raw_record(item: Any) -> RawRecord:
    """A listed record as the verifier's RawRecord: its canonical text (given, or the
    RFC 8785 encoding of the record fields — identical for an unaltered record) and the
    stored hash when the node reports one."""
    if not isinstance(item, dict):
        raise UntrustedAnswerError("the node's audit listing holds a non-object item")
    seq = uint(item.get("seq"), "audit record seq")
    stored = item.get("record_hash")
    record_hash = hex32(stored, "record_hash") if isinstance(stored, str) else None
    canonical = item.get("canonical")
    if not isinstance(canonical, str):
        record = item.get("record") if isinstance(item.get("record"), dict) else item
        try:
            canonical = rfc8785.dumps({k: record[k] for k in _RECORD_FIELDS}).decode("utf-8")
        except (KeyError, TypeError, ValueError, rfc8785.CanonicalizationError):
            canonical = json.dumps(record, sort_keys=True)  # not a record: verify reports it malformed
    return RawRecord(seq, canonical, record_hash)  # type: ignore[arg-type]


def iter_records(http: NodeHttp, *, page: int = PAGE) -> Iterator[RawRecord]:
    after = 0
    while True:
        answer = http.get("/v1/audit/records", {"after_seq": after, "limit": page})
        items = answer.get("items") if isinstance(answer, dict) else None
        if not isinstance(items, list):
            raise UntrustedAnswerError("the node's audit listing has no items list")
        for item in items:
            yield raw_record(item)
        following = answer.get("next_after_seq")
        if following is None or not items:
            return
        following = uint(following, "next_after_seq")
        if following <= after:
            raise UntrustedAnswerError(f"the node's audit listing does not advance (next_after_seq {following})")
        after = following


def verify_node(http: NodeHttp, source: AnchorSource, *, org: str | None = None, all: bool = False,
                page: int = PAGE) -> AuditVerification:
    """Verify the audit log served by `http` against `source` (the chain)."""
    head = http.get("/v1/audit/head")
    node_org = head.get("org") if isinstance(head, dict) else None
    if not isinstance(node_org, str) or not is_address(node_org):
        raise UntrustedAnswerError("the node's audit head names no org address")
    node_org = to_checksum_address(node_org)
    org = to_checksum_address(org) if org is not None else node_org
    if org != node_org:
        raise UntrustedAnswerError(f"the node at {http.base_url} keeps the audit log of {node_org}, not {org}")
    cached = CachedAnchors(source)
    chain_head = cached.head(org)
    last = head.get("last_seq")
    report = AuditVerification(node=http.base_url, org=org, complete=all, anchored_seq=chain_head.last_seq,
                               batches=chain_head.batches,
                               node_last_seq=last if isinstance(last, int) and not isinstance(last, bool) else None)

    def checked(rows: Iterator[RawRecord]) -> Iterator[RawRecord]:
        for row in rows:
            report.records_checked += 1
            if row.seq <= chain_head.last_seq:
                _check_proof(http, cached, row, report)
            else:
                report.unanchored_records += 1
            yield row

    rows = checked(iter_records(http, page=page))
    if all:
        log_report = verify_log(rows, cached, org)
        for p in log_report.problems:
            report.add(p.seq, p.reason.value, p.detail)
        if log_report.problem_count > len(log_report.problems):
            report.add(None, "truncated", f"{log_report.problem_count - len(log_report.problems)} more problems")
    else:
        for _ in rows:
            pass
    return report


def _check_proof(http: NodeHttp, source: AnchorSource, row: RawRecord, report: AuditVerification) -> None:
    try:
        proof = http.get(f"/v1/audit/records/{segment(row.seq)}/proof")
    except RemoteNotFoundError as exc:
        report.add(row.seq, "proof-unavailable", f"record {row.seq} is anchored on chain but the node has no proof "
                                                 f"({exc.reason}: {exc.detail})")
        return
    except RemoteError as exc:
        report.add(row.seq, "proof-unavailable", f"the node cannot prove record {row.seq} ({exc.reason}: {exc.detail})")
        return
    try:
        record = verify_proof(proof, source)
    except AuditVerificationError as exc:
        reason = getattr(exc, "reason", None)
        report.add(row.seq, getattr(reason, "value", "malformed"), f"record {row.seq}: {exc}")
        return
    if record.seq != row.seq or record.canonical().decode("utf-8") != row.canonical:
        report.add(row.seq, "record-differs", f"record {row.seq} as listed differs from the record its proof proves")
        return
    report.proofs_verified += 1
