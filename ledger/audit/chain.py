"""AuditAnchors on a real chain: AnchorSink and AnchorSource over LedgerClient.

Transactions, retries, nonces and revert decoding are LedgerClient's (ledger/client.py);
this adapter adds what anchoring and verification need on top: the AuditBatchAnchored
event of a transaction, the events of an org, and an eth_call of verifyRecord.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from web3 import Web3
from web3.exceptions import TransactionNotFound
from web3.logs import DISCARD

from ledger.audit.ports import AnchorEvent, AnchorHead
from ledger.client import LedgerClient
from ledger.deployment import Deployment
from ledger.errors import AuditError
from ledger.tx import retrying

_EVENT = "AuditBatchAnchored"
_LOG_RANGE = 10_000  # blocks per eth_getLogs request


class ChainAnchors:
    """AnchorSink (with an account) and AnchorSource (always) for one deployment."""

    def __init__(self, client: LedgerClient) -> None:
        self.client = client
        self.chain_id = client.deployment.chain_id
        self.contract = to_checksum_address(client.deployment.audit_anchors)
        self._contract = client.audit_anchors

    @classmethod
    def connect(cls, w3: Web3, deployment: Deployment, account: LocalAccount | None = None) -> "ChainAnchors":
        return cls(LedgerClient(w3, deployment, account))

    @property
    def org(self) -> str:
        if self.client.address is None:
            raise AuditError("this ChainAnchors has no account: it can read anchors but not submit them")
        return self.client.address

    # -- AnchorSink ----------------------------------------------------------------------

    def submit(self, from_seq: int, to_seq: int, root: bytes) -> AnchorEvent:
        result = self.client.anchor(from_seq, to_seq, root)
        events = [e for e in self.events_in_tx(result.tx_hash) if e.org == self.org]
        if len(events) != 1:
            raise AuditError(f"anchor transaction {result.tx_hash} emitted {len(events)} {_EVENT} events "
                             f"for {self.org}")
        return events[0]

    # -- AnchorSource --------------------------------------------------------------------

    def head(self, org: str) -> AnchorHead:
        h = self.client.audit_head(org)
        return AnchorHead(last_seq=h.last_seq, batches=h.batches)

    def root_of(self, org: str, to_seq: int) -> bytes:
        return self.client.root_of(org, to_seq)

    def verify_record(self, org: str, to_seq: int, seq: int, record_hash: bytes, proof: Sequence[bytes]) -> bool:
        """AuditAnchors.verifyRecord by eth_call (OpenZeppelin MerkleProof on chain)."""
        return self.client.verify_record(org, to_seq, seq, record_hash, list(proof))

    def events_in_tx(self, tx_hash: str) -> list[AnchorEvent]:
        w3 = self.client.w3
        try:
            receipt = retrying("eth_getTransactionReceipt", lambda: w3.eth.get_transaction_receipt(tx_hash))
        except TransactionNotFound:
            return []
        if receipt["status"] != 1:
            return []
        logs = self._contract.events[_EVENT]().process_receipt(receipt, errors=DISCARD)
        return [e for e in map(self._event, logs) if e.contract == self.contract]

    def events(self, org: str) -> Iterator[AnchorEvent]:
        w3 = self.client.w3
        org = to_checksum_address(org)
        start = self.client.deployment.deployment_block
        latest = retrying("eth_blockNumber", lambda: w3.eth.block_number)
        event = self._contract.events[_EVENT]
        while start <= latest:
            end = min(start + _LOG_RANGE - 1, latest)
            logs = retrying("eth_getLogs", lambda s=start, e=end: event.get_logs(
                from_block=s, to_block=e, argument_filters={"org": org}))
            for log in sorted(logs, key=lambda x: (x["blockNumber"], x["logIndex"])):
                yield self._event(log)
            start = end + 1

    def _event(self, log: Any) -> AnchorEvent:
        a = log["args"]
        return AnchorEvent(org=to_checksum_address(a["org"]), batch_index=a["batchIndex"], from_seq=a["fromSeq"],
                           to_seq=a["toSeq"], root=bytes(a["merkleRoot"]), tx_hash=Web3.to_hex(log["transactionHash"]),
                           block=log["blockNumber"], contract=to_checksum_address(log["address"]))
