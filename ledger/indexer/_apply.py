"""Apply one decoded event to the tables (inside the caller's transaction).

The handlers are pure functions of (current rows, event): replaying the same logs in
chain order always yields the same rows, which is what rebuild and reorg recovery rely
on. Events the tables do not project (AccessControl role changes, unknown topics) are
still recorded in idx_processed_logs by the caller, and ignored here.
"""
from __future__ import annotations

from collections.abc import Callable

from sqlmodel import Session

from ledger.errors import IndexerError
from ledger.indexer._cidstr import cid_to_string
from ledger.indexer._events import Event
from ledger.indexer.tables import (
    GrantEvent,
    IndexedAnchor,
    IndexedAsset,
    IndexedGrant,
    IndexedOrg,
    IndexedVersion,
    VersionParent,
)


def _hex(value: bytes) -> str:
    return "0x" + bytes(value).hex()


def _org(session: Session, ev: Event) -> IndexedOrg:
    org = session.get(IndexedOrg, ev.args["org"])
    if org is None:
        raise IndexerError(f"{ev.name} for unknown org {ev.args['org']} (log {ev.log.tx_hash}:{ev.log.log_index})")
    org.updated_block = ev.log.block_number
    return org


def _asset(session: Session, ev: Event) -> IndexedAsset:
    asset = session.get(IndexedAsset, ev.args["assetId"])
    if asset is None:
        raise IndexerError(f"{ev.name} for unknown asset {ev.args['assetId']} "
                           f"(log {ev.log.tx_hash}:{ev.log.log_index})")
    return asset


def org_registered(session: Session, ev: Event) -> None:
    a = ev.args
    session.add(IndexedOrg(address=a["org"], name=a["name"], age_recipient=a["ageRecipient"],
                           endpoint=a["endpoint"], active=True, registered_block=ev.log.block_number,
                           updated_block=ev.log.block_number))


def org_deactivated(session: Session, ev: Event) -> None:
    _org(session, ev).active = False


def org_reactivated(session: Session, ev: Event) -> None:
    _org(session, ev).active = True


def org_recipient_updated(session: Session, ev: Event) -> None:
    _org(session, ev).age_recipient = ev.args["ageRecipient"]


def org_endpoint_updated(session: Session, ev: Event) -> None:
    _org(session, ev).endpoint = ev.args["endpoint"]


def asset_created(session: Session, ev: Event) -> None:
    a = ev.args
    session.add(IndexedAsset(asset_id=a["assetId"], owner=a["owner"], kind=int(a["kind"]), name=a["name"],
                             metadata_digest=_hex(a["metadataDigest"]), created_block=ev.log.block_number,
                             created_tx=ev.log.tx_hash))


def asset_retired(session: Session, ev: Event) -> None:
    asset = _asset(session, ev)
    asset.retired = True
    asset.retired_block = ev.log.block_number


def version_added(session: Session, ev: Event) -> None:
    a = ev.args
    asset = _asset(session, ev)
    asset.version_count = max(asset.version_count, a["version"])
    cid = bytes(a["cid"])
    session.add(IndexedVersion(
        asset_id=a["assetId"], version=a["version"], cid=cid_to_string(cid), cid_hex=_hex(cid),
        commitment=_hex(a["commitment"]), size=a["size"], author=a["author"],
        block_number=ev.log.block_number, block_timestamp=ev.log.block_timestamp,
        tx_hash=ev.log.tx_hash, log_index=ev.log.log_index,
    ))
    for position, (parent_asset, parent_version) in enumerate(a["parents"]):
        session.add(VersionParent(child_asset_id=a["assetId"], child_version=a["version"], position=position,
                                  parent_asset_id=parent_asset, parent_version=parent_version))


def access_granted(session: Session, ev: Event) -> None:
    a = ev.args
    key = (a["assetId"], a["grantee"])
    grant = session.get(IndexedGrant, key)
    if grant is None:
        grant = IndexedGrant(asset_id=key[0], grantee=key[1], permissions=0, expiry=0, purpose="",
                             active=True, granted_block=ev.log.block_number)
        session.add(grant)
    grant.permissions = a["permissions"]
    grant.expiry = a["expiry"]
    grant.purpose = a["purpose"]
    grant.active = True
    grant.granted_block = ev.log.block_number
    grant.revoked_block = None
    session.add(GrantEvent(tx_hash=ev.log.tx_hash, log_index=ev.log.log_index, block_number=ev.log.block_number,
                           asset_id=key[0], grantee=key[1], action="granted", permissions=a["permissions"],
                           expiry=a["expiry"], purpose=a["purpose"]))


def access_revoked(session: Session, ev: Event) -> None:
    a = ev.args
    grant = session.get(IndexedGrant, (a["assetId"], a["grantee"]))
    if grant is None:
        raise IndexerError(f"AccessRevoked without a grant for asset {a['assetId']}, {a['grantee']} "
                           f"(log {ev.log.tx_hash}:{ev.log.log_index})")
    grant.active = False
    grant.revoked_block = ev.log.block_number
    session.add(GrantEvent(tx_hash=ev.log.tx_hash, log_index=ev.log.log_index, block_number=ev.log.block_number,
                           asset_id=a["assetId"], grantee=a["grantee"], action="revoked"))


def batch_anchored(session: Session, ev: Event) -> None:
    a = ev.args
    session.add(IndexedAnchor(org=a["org"], batch_index=a["batchIndex"], from_seq=a["fromSeq"], to_seq=a["toSeq"],
                              merkle_root=_hex(a["merkleRoot"]), block_number=ev.log.block_number,
                              tx_hash=ev.log.tx_hash, log_index=ev.log.log_index))


HANDLERS: dict[str, Callable[[Session, Event], None]] = {
    "OrgRegistered": org_registered,
    "OrgDeactivated": org_deactivated,
    "OrgReactivated": org_reactivated,
    "OrgRecipientUpdated": org_recipient_updated,
    "OrgEndpointUpdated": org_endpoint_updated,
    "AssetCreated": asset_created,
    "AssetRetired": asset_retired,
    "VersionAdded": version_added,
    "AccessGranted": access_granted,
    "AccessRevoked": access_revoked,
    "AuditBatchAnchored": batch_anchored,
}


def apply_event(session: Session, ev: Event) -> bool:
    """Apply `ev`; False if it is not an event the tables project."""
    handler = HANDLERS.get(ev.name)
    if handler is None:
        return False
    handler(session, ev)
    return True
