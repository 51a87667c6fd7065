"""Grant and revoke (DESIGN §5): owner transactions, effective for key release from the
next block. Each waits until the indexer has the receipt's block (so GET …/grants shows
it at once) and is audited (grant_issued / grant_revoked).

Grants are public on chain (grantee, permissions, expiry, purpose): put nothing secret
in a purpose. Revocation stops future releases; it cannot recall bytes already released.
"""
from __future__ import annotations

from dataclasses import dataclass

from api.errors import InvalidFieldError
from api.node import Node
from api.usecases._common import audit, permission_names
from ledger.audit import AuditKind
from ledger.audit.records import MAX_SAFE_INT
from ledger.models import Permission

MAX_EXPIRY = 2**64 - 1


@dataclass(frozen=True)
class GrantChange:
    asset_id: int
    grantee: str
    permissions: Permission
    expiry: int | None
    purpose: str | None
    tx_hash: str
    block: int
    audit_seq: int


def resolve_expiry(node: Node, expiry: int | None, ttl_seconds: int | None) -> int:
    """Exactly one of an absolute unix expiry or a ttl counted from the chain's clock."""
    if (expiry is None) == (ttl_seconds is None):
        raise InvalidFieldError("expiry", "give exactly one of expiry (unix seconds) or ttl_seconds")
    if ttl_seconds is not None:
        if ttl_seconds <= 0:
            raise InvalidFieldError("ttl_seconds", "must be positive")
        expiry = node.ledger.chain_time() + ttl_seconds
    assert expiry is not None
    if not 0 < expiry <= MAX_EXPIRY:
        raise InvalidFieldError("expiry", "must be a unix time in 1..2**64-1")
    return expiry


def grant(node: Node, asset_id: int, grantee: str, permissions: Permission, *, expiry: int | None = None,
          ttl_seconds: int | None = None, purpose: str = "", actor: str | None = None) -> GrantChange:
    when = resolve_expiry(node, expiry, ttl_seconds)
    tx = node.ledger.grant(asset_id, grantee, permissions, when, purpose)  # reverts carry the reason
    node.wait_indexed(tx.block_number)
    record = audit(node, AuditKind.GRANT_ISSUED, actor or node.address, asset_id, None,
                   {"grantee": grantee, "permissions": permission_names(permissions), "expiry": when if when <= MAX_SAFE_INT else str(when),
                    "purpose": purpose, "tx_hash": tx.tx_hash, "block": tx.block_number})
    return GrantChange(asset_id, grantee, permissions, when, purpose, tx.tx_hash, tx.block_number, record.seq)


def revoke(node: Node, asset_id: int, grantee: str, *, actor: str | None = None) -> GrantChange:
    tx = node.ledger.revoke(asset_id, grantee)  # AssetLedgerNoGrant → 404
    node.wait_indexed(tx.block_number)
    record = audit(node, AuditKind.GRANT_REVOKED, actor or node.address, asset_id, None,
                   {"grantee": grantee, "tx_hash": tx.tx_hash, "block": tx.block_number})
    return GrantChange(asset_id, grantee, Permission(0), None, None, tx.tx_hash, tx.block_number, record.seq)
