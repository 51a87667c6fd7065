"""Index records and use-case results → public response models (api/schemas.py)."""
from __future__ import annotations

from api import schemas
from api.errors import NotFoundError
from api.node import Node
from api.usecases._common import format_ref, kind_name, permission_names
from ledger.audit import AuditRecord
from ledger.indexer import AssetRecord, GrantRecord, VersionRecord


def asset_view(a: AssetRecord) -> schemas.AssetPublic:
    return schemas.AssetPublic(asset_id=a.asset_id, owner=a.owner, kind=kind_name(a.kind), name=a.name,
                               metadata_digest=a.metadata_digest, retired=a.retired, version_count=a.version_count,
                               created_block=a.created_block, created_tx=a.created_tx)


def version_view(v: VersionRecord) -> schemas.VersionPublic:
    return schemas.VersionPublic(asset_id=v.asset_id, version=v.version, cid=v.cid, commitment=v.commitment,
                                 size=v.size, parents=[format_ref(p) for p in v.parents], author=v.author,
                                 block=v.block_number, timestamp=v.block_timestamp, tx_hash=v.tx_hash)


def grant_view(g: GrantRecord, now: int) -> schemas.GrantPublic:
    return schemas.GrantPublic(asset_id=g.asset_id, grantee=g.grantee, permissions=permission_names(g.permissions),
                               expiry=g.expiry, purpose=g.purpose, active=g.active, in_force=g.in_force(now),
                               granted_block=g.granted_block, revoked_block=g.revoked_block)


def record_view(r: AuditRecord) -> schemas.AuditRecordPublic:
    obj = r.to_json_obj()
    return schemas.AuditRecordPublic(seq=r.seq, kind=str(r.kind), time=r.time, org=r.org, actor=r.actor,
                                     asset=r.asset_id, version=r.version, details=obj["details"],
                                     record_hash="0x" + r.record_hash().hex(),
                                     canonical=r.canonical().decode("utf-8"))


MAX_INDEXED_ID = 2**63 - 1  # the index stores ids as signed 64-bit integers


def indexed_asset(node: Node, asset_id: int) -> AssetRecord:
    """The indexed asset, or NotFoundError (unknown_asset) — also for ids beyond what the
    index can hold (the chain's counter never reaches them)."""
    assert node.queries is not None
    asset = node.queries.asset(asset_id) if asset_id <= MAX_INDEXED_ID else None
    if asset is None:
        raise NotFoundError(f"asset {asset_id} is not in this node's index", reason="unknown_asset")
    return asset


def indexed_version(node: Node, asset_id: int, version: int) -> VersionRecord:
    assert node.queries is not None
    record = node.queries.version(asset_id, version) if asset_id <= MAX_INDEXED_ID else None
    if record is None:
        raise NotFoundError(f"version {asset_id}@{version} is not in this node's index",
                            reason="unknown_asset_version")
    return record
