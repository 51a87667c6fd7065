"""What the audit log needs from the chain, as two small protocols.

`AnchorSink` is what the Anchorer writes to; `AnchorSource` is what the verifier reads
from. ledger/audit/chain.py implements both over the AuditAnchors contract; unit tests
inject fakes. Both are defined by the AuditAnchors contract's semantics: per org, batches
(fromSeq, toSeq, root) are contiguous from seq 1, `head` is (lastSeq, batches) and
`root_of(org, toSeq)` is the root of the batch that ends at toSeq (zero if none).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol

ZERO_ROOT = b"\0" * 32


@dataclass(frozen=True)
class AnchorEvent:
    """One AuditBatchAnchored event, with where it was emitted."""

    org: str
    batch_index: int
    from_seq: int
    to_seq: int
    root: bytes
    tx_hash: str  # "0x…"
    block: int
    contract: str


@dataclass(frozen=True)
class AnchorHead:
    last_seq: int
    batches: int


class AnchorSource(Protocol):
    chain_id: int
    contract: str  # EIP-55 address of AuditAnchors

    def head(self, org: str) -> AnchorHead: ...

    def root_of(self, org: str, to_seq: int) -> bytes: ...

    def events_in_tx(self, tx_hash: str) -> list[AnchorEvent]:
        """AuditBatchAnchored events that `contract` emitted in transaction `tx_hash`
        (empty if the transaction is unknown or failed)."""
        ...

    def events(self, org: str) -> Iterable[AnchorEvent]:
        """Every batch `org` anchored, in batch order."""
        ...


class AnchorSink(AnchorSource, Protocol):
    def submit(self, from_seq: int, to_seq: int, root: bytes) -> AnchorEvent:
        """Send one anchor transaction and wait for it; the event it emitted.
        Raises a LedgerError if it was not mined successfully."""
        ...

    @property
    def org(self) -> str:
        """The address the sink anchors for (its sending account)."""
        ...
