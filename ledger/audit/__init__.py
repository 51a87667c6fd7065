"""The audit log of an org node and its anchoring on chain (DESIGN §5 "Audit").

    log = AuditLog(make_engine(url), org_address)
    record = log.append(AuditKind.KEY_RELEASED, actor, asset_id, version, {"purpose": "…"})
    anchorer = Anchorer(log, ChainAnchors.connect(w3, deployment, account), every_records=1000)
    anchorer.anchor_pending()
    proof = log.proof(record.seq)            # AuditProof, JSON via to_dict()/from_dict()
    verify_proof(proof, ChainAnchors.connect(w3, deployment))      # chain alone
    verify_log(log.iter_raw(), source, org, batches=log.batches()) # audit verify --all

Modules: records (canonical record format), merkle (OpenZeppelin StandardMerkleTree),
log (SQL storage, queries, proofs), anchoring (batches → transactions), verify,
reasons (failure codes), proof (AuditProof), ports (AnchorSink/AnchorSource protocols),
chain (those protocols over LedgerClient). `ledger.audit.chain` is not imported here so
the offline parts load without web3 contract machinery.
"""
from ledger.audit.anchoring import Anchorer
from ledger.audit.log import AuditBatch, AuditLog, Page, RawRecord
from ledger.audit.merkle import AuditTree, leaf_hash, process_proof
from ledger.audit.ports import AnchorEvent, AnchorHead, AnchorSink, AnchorSource
from ledger.audit.proof import AuditProof
from ledger.audit.reasons import Reason
from ledger.audit.records import AuditKind, AuditRecord, parse
from ledger.audit.verify import VerificationReport, verify_log, verify_proof

__all__ = [
    "Anchorer", "AuditBatch", "AuditLog", "Page", "RawRecord", "AuditTree", "leaf_hash", "process_proof",
    "AnchorEvent", "AnchorHead", "AnchorSink", "AnchorSource", "AuditProof", "Reason", "AuditKind",
    "AuditRecord", "parse", "VerificationReport", "verify_log", "verify_proof",
]
