"""Why an audit record, proof or log does not verify.

Every failure raised by ledger/audit/verify.py is an AuditVerificationError whose
`.reason` is one of these codes and whose message starts with it ("leaf-mismatch: …"),
so callers and tests can tell failures apart without parsing prose.
"""
from __future__ import annotations

import enum
from typing import NoReturn

from ledger.errors import AuditVerificationError


class Reason(enum.StrEnum):
    MALFORMED = "malformed"                          # proof/record document is not well-formed
    RECORD_HASH_MISMATCH = "record-hash-mismatch"    # keccak256(record) != claimed/stored hash
    LEAF_MISMATCH = "leaf-mismatch"                  # leaf != keccak(keccak(abi.encode(seq, hash)))
    PROOF_MISMATCH = "proof-mismatch"                # the Merkle path does not lead to the root
    ROOT_NOT_ANCHORED = "root-not-anchored"          # chain holds no / another root for (org, toSeq)
    SEQ_OUT_OF_RANGE = "seq-out-of-range"            # seq not in the batch's fromSeq..toSeq
    CHAIN_MISMATCH = "chain-mismatch"                # proof is for another chain id or contract
    ORG_MISMATCH = "org-mismatch"                    # record logged by another org than claimed
    ANCHOR_EVENT_MISMATCH = "anchor-event-mismatch"  # tx has no matching AuditBatchAnchored event
    MISSING_RECORD = "missing-record"                # a seq up to the anchored head is absent
    DUPLICATE_RECORD = "duplicate-record"            # a seq appears more than once
    SEQ_MISMATCH = "seq-mismatch"                    # stored row seq != the record's own seq
    BATCH_ROOT_MISMATCH = "batch-root-mismatch"      # records of a batch no longer give its root
    UNANCHORED_CLAIM = "unanchored-claim"            # local state claims anchoring the chain lacks


def error(reason: Reason, detail: str) -> AuditVerificationError:
    err = AuditVerificationError(f"{reason.value}: {detail}")
    err.reason = reason  # type: ignore[attr-defined]
    return err


def fail(reason: Reason, detail: str) -> NoReturn:
    raise error(reason, detail)
