"""Record a consumption in the consumer's own audit log (DESIGN §5 "Consume", last step).

    seq = record_consumption(node, receipt_json, signature, cid, output_sha256)

The receipt must be one the asset's owner signed for THIS node's org: its `owner` is the
asset's owner on chain, the EIP-712 signature (this chain, this AssetLedger) recovers that
owner, `consumer` is this node's org, and `cid` is the CID registered for the version
(when the index has it). The record (`consumption_recorded`) keeps the receipt and its
signature, so the consumer can later show what the owner's node released and under
which of its audit seqs.
"""
from __future__ import annotations

import re

from api.auth import KeyReceipt
from api.auth._fields import parse_signature
from api.errors import BadSignatureError, InputValidationError, InvalidFieldError
from api.node import Node
from api.usecases._common import audit, json_safe
from ledger.audit import AuditKind
from vault.cid import CID
from vault.errors import InvalidCIDError

_SHA256 = re.compile(r"[0-9a-f]{64}")


def _invalid(message: str) -> InputValidationError:
    return InputValidationError(message, reason="invalid_receipt")


def record_consumption(node: Node, receipt: object, signature: object, cid: str,
                       output_sha256: str | None = None) -> int:
    """Verify the owner's receipt and append `consumption_recorded`; its audit seq."""
    parsed = receipt if isinstance(receipt, KeyReceipt) else KeyReceipt.from_json(receipt)
    try:
        cid_text = str(CID.decode(cid))
    except (InvalidCIDError, TypeError):
        raise InvalidFieldError("cid", "is not a CID") from None
    if output_sha256 is not None and not _SHA256.fullmatch(output_sha256):
        raise InvalidFieldError("output_sha256", "must be 64 lower-case hex digits")
    if parsed.consumer != node.address:
        raise _invalid(f"the receipt was issued to {parsed.consumer}, not to this node's org {node.address}")
    owner = node.ledger.get_asset(parsed.asset).owner  # AssetLedgerUnknownAsset → 404
    if parsed.owner != owner:
        raise _invalid(f"the receipt names {parsed.owner} as owner; asset {parsed.asset} is owned by {owner}")
    try:
        signer = parsed.recover(node.domain, signature)
    except BadSignatureError:
        signer = None
    if signer != owner:
        raise _invalid("the receipt signature does not recover the asset's owner on this chain and contract")
    version = node.queries.version(parsed.asset, parsed.version) if node.queries else None
    if version is not None and version.cid is not None and version.cid != cid_text:
        raise _invalid(f"version {parsed.asset}@{parsed.version} is registered with CID {version.cid}, not {cid_text}")
    details = {"receipt": json_safe(parsed.to_json()), "signature": "0x" + parse_signature(signature).hex(), "cid": cid_text,
               "owner": owner}
    if output_sha256 is not None:
        details["output_sha256"] = output_sha256
    return audit(node, AuditKind.CONSUMPTION_RECORDED, node.address, parsed.asset, parsed.version, details).seq
