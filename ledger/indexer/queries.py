"""Read API over the indexer's tables, used by the organisation node.

Every result is a frozen dataclass (or a list of them); nothing here writes. Addresses
given by callers are accepted in any case and checked: a malformed one raises
IndexerError. `get`-style lookups return None for an unknown key; lineage and PROV
export of an unknown version raise IndexerError.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import tuple_
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from web3 import Web3

from ledger.errors import IndexerError
from ledger.indexer import _prov
from ledger.indexer.tables import (
    GrantEvent,
    IndexedAnchor,
    IndexedAsset,
    IndexedGrant,
    IndexedOrg,
    IndexedVersion,
    VersionParent,
)
from ledger.models import AssetKind, Permission, VersionRef

_MAX_BIGINT = 2**63 - 1  # the largest value of a signed 64-bit SQL column

_IN_CHUNK = 400  # (asset, version) pairs per IN (...) query


@dataclass(frozen=True)
class OrgRecord:
    address: str
    name: str
    age_recipient: str
    endpoint: str
    active: bool
    registered_block: int
    updated_block: int


@dataclass(frozen=True)
class AssetRecord:
    asset_id: int
    owner: str
    kind: AssetKind
    name: str
    metadata_digest: str
    retired: bool
    retired_block: int | None
    version_count: int
    created_block: int
    created_tx: str


@dataclass(frozen=True)
class VersionRecord:
    asset_id: int
    version: int
    cid: str | None  # canonical CID string; None if the registered bytes are not a CID
    cid_hex: str
    commitment: str
    size: int
    author: str
    block_number: int
    block_timestamp: int
    tx_hash: str
    log_index: int
    parents: tuple[VersionRef, ...]

    @property
    def ref(self) -> VersionRef:
        return VersionRef(self.asset_id, self.version)


@dataclass(frozen=True)
class GrantRecord:
    asset_id: int
    grantee: str
    permissions: Permission
    expiry: int
    purpose: str
    active: bool  # False once revoked
    granted_block: int
    revoked_block: int | None

    def in_force(self, now: int, permission: Permission | int = 0) -> bool:
        """Not revoked, unexpired at unix time `now`, and holding every bit of
        `permission`. The chain's hasAccess also requires live asset and active orgs."""
        return self.active and now < self.expiry and (self.permissions & permission) == permission


@dataclass(frozen=True)
class GrantHistoryEntry:
    asset_id: int
    grantee: str
    action: str  # "granted" | "revoked"
    permissions: Permission | None
    expiry: int | None
    purpose: str | None
    block_number: int
    tx_hash: str
    log_index: int


@dataclass(frozen=True)
class AnchorRecord:
    org: str
    batch_index: int
    from_seq: int
    to_seq: int
    merkle_root: str
    block_number: int
    tx_hash: str
    log_index: int


@dataclass(frozen=True)
class LineageNode:
    asset_id: int
    version: int
    depth: int  # shortest number of derivation steps from the starting version

    @property
    def ref(self) -> VersionRef:
        return VersionRef(self.asset_id, self.version)


def _address(value: str) -> str:
    try:
        return Web3.to_checksum_address(value)
    except (ValueError, TypeError):
        raise IndexerError(f"not an Ethereum address: {value!r}") from None


def _org(row: IndexedOrg) -> OrgRecord:
    return OrgRecord(row.address, row.name, row.age_recipient, row.endpoint, row.active, row.registered_block,
                     row.updated_block)


def _asset(row: IndexedAsset) -> AssetRecord:
    return AssetRecord(row.asset_id, row.owner, AssetKind(row.kind), row.name, row.metadata_digest, row.retired,
                       row.retired_block, row.version_count, row.created_block, row.created_tx)


def _grant(row: IndexedGrant) -> GrantRecord:
    return GrantRecord(row.asset_id, row.grantee, Permission(row.permissions), row.expiry, row.purpose, row.active,
                       row.granted_block, row.revoked_block)


def _anchor(row: IndexedAnchor) -> AnchorRecord:
    return AnchorRecord(row.org, row.batch_index, row.from_seq, row.to_seq, row.merkle_root, row.block_number,
                        row.tx_hash, row.log_index)


def _chunks(items: list, size: int = _IN_CHUNK) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class IndexQueries:
    """Queries over the indexed tables of one database."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def _session(self) -> Session:
        return Session(self._engine)

    # ---- orgs
    def orgs(self, *, active: bool | None = None) -> list[OrgRecord]:
        stmt = select(IndexedOrg).order_by(IndexedOrg.registered_block, IndexedOrg.address)
        if active is not None:
            stmt = stmt.where(IndexedOrg.active == active)
        with self._session() as s:
            return [_org(r) for r in s.exec(stmt)]

    def org(self, address: str) -> OrgRecord | None:
        with self._session() as s:
            row = s.get(IndexedOrg, _address(address))
            return None if row is None else _org(row)

    # ---- assets
    def assets(self, *, owner: str | None = None, kind: AssetKind | int | None = None,
               include_retired: bool = True, after: int = 0, limit: int | None = None) -> list[AssetRecord]:
        """Assets by ascending id, above `after` (a keyset cursor), at most `limit` of them."""
        if after >= _MAX_BIGINT:  # ids are a BIGINT column: nothing lies above this cursor
            return []
        stmt = select(IndexedAsset).where(IndexedAsset.asset_id > int(after)).order_by(IndexedAsset.asset_id)
        if limit is not None:
            stmt = stmt.limit(int(limit))
        if owner is not None:
            stmt = stmt.where(IndexedAsset.owner == _address(owner))
        if kind is not None:
            stmt = stmt.where(IndexedAsset.kind == int(kind))
        if not include_retired:
            stmt = stmt.where(IndexedAsset.retired == False)  # noqa: E712 (SQL expression)
        with self._session() as s:
            return [_asset(r) for r in s.exec(stmt)]

    def asset(self, asset_id: int) -> AssetRecord | None:
        with self._session() as s:
            row = s.get(IndexedAsset, int(asset_id))
            return None if row is None else _asset(row)

    # ---- versions
    def versions(self, asset_id: int, *, after: int = 0) -> list[VersionRecord]:
        """Versions of `asset_id` numbered above `after`, in order."""
        stmt = (select(IndexedVersion).where(IndexedVersion.asset_id == int(asset_id), IndexedVersion.version > after)
                .order_by(IndexedVersion.version))
        with self._session() as s:
            return self._with_parents(s, list(s.exec(stmt)))

    def version(self, asset_id: int, version: int) -> VersionRecord | None:
        with self._session() as s:
            row = s.get(IndexedVersion, (int(asset_id), int(version)))
            return None if row is None else self._with_parents(s, [row])[0]

    def version_by_commitment(self, commitment: bytes | str) -> VersionRecord | None:
        value = "0x" + commitment.hex() if isinstance(commitment, bytes) else commitment.lower()
        with self._session() as s:
            row = s.exec(select(IndexedVersion).where(IndexedVersion.commitment == value)).first()
            return None if row is None else self._with_parents(s, [row])[0]

    def _with_parents(self, s: Session, rows: list[IndexedVersion]) -> list[VersionRecord]:
        parents: dict[tuple[int, int], list[VersionRef]] = {}
        keys = [(r.asset_id, r.version) for r in rows]
        for chunk in _chunks(keys):
            stmt = (select(VersionParent)
                    .where(tuple_(VersionParent.child_asset_id, VersionParent.child_version).in_(chunk))
                    .order_by(VersionParent.child_asset_id, VersionParent.child_version, VersionParent.position))
            for p in s.exec(stmt):
                parents.setdefault((p.child_asset_id, p.child_version), []).append(
                    VersionRef(p.parent_asset_id, p.parent_version))
        return [VersionRecord(r.asset_id, r.version, r.cid, r.cid_hex, r.commitment, r.size, r.author,
                              r.block_number, r.block_timestamp, r.tx_hash, r.log_index,
                              tuple(parents.get((r.asset_id, r.version), ()))) for r in rows]

    # ---- grants
    def grant(self, asset_id: int, grantee: str) -> GrantRecord | None:
        with self._session() as s:
            row = s.get(IndexedGrant, (int(asset_id), _address(grantee)))
            return None if row is None else _grant(row)

    def grants_for_asset(self, asset_id: int, *, active_only: bool = False) -> list[GrantRecord]:
        stmt = select(IndexedGrant).where(IndexedGrant.asset_id == int(asset_id)).order_by(IndexedGrant.grantee)
        return self._grants(stmt, active_only)

    def grants_for_grantee(self, grantee: str, *, active_only: bool = False) -> list[GrantRecord]:
        stmt = (select(IndexedGrant).where(IndexedGrant.grantee == _address(grantee))
                .order_by(IndexedGrant.asset_id))
        return self._grants(stmt, active_only)

    def _grants(self, stmt: Any, active_only: bool) -> list[GrantRecord]:
        if active_only:
            stmt = stmt.where(IndexedGrant.active == True)  # noqa: E712 (SQL expression)
        with self._session() as s:
            return [_grant(r) for r in s.exec(stmt)]

    def grant_history(self, asset_id: int, grantee: str | None = None) -> list[GrantHistoryEntry]:
        stmt = select(GrantEvent).where(GrantEvent.asset_id == int(asset_id))
        if grantee is not None:
            stmt = stmt.where(GrantEvent.grantee == _address(grantee))
        stmt = stmt.order_by(GrantEvent.block_number, GrantEvent.log_index)
        with self._session() as s:
            return [GrantHistoryEntry(r.asset_id, r.grantee, r.action,
                                      None if r.permissions is None else Permission(r.permissions), r.expiry,
                                      r.purpose, r.block_number, r.tx_hash, r.log_index) for r in s.exec(stmt)]

    # ---- anchors
    def anchors(self, org: str) -> list[AnchorRecord]:
        stmt = select(IndexedAnchor).where(IndexedAnchor.org == _address(org)).order_by(IndexedAnchor.batch_index)
        with self._session() as s:
            return [_anchor(r) for r in s.exec(stmt)]

    def anchor_covering(self, org: str, seq: int) -> AnchorRecord | None:
        """The anchored batch of `org` whose from_seq..to_seq contains `seq`."""
        if not 0 <= seq < 2**64:
            return None
        stmt = select(IndexedAnchor).where(IndexedAnchor.org == _address(org), IndexedAnchor.from_seq <= seq,
                                           IndexedAnchor.to_seq >= seq)
        with self._session() as s:
            row = s.exec(stmt).first()
            return None if row is None else _anchor(row)

    # ---- lineage
    def ancestors(self, asset_id: int, version: int, *, max_depth: int | None = None) -> list[LineageNode]:
        """Every version `asset_id`/`version` derives from, transitively, each once with
        its shortest depth; sorted by (depth, asset, version)."""
        return self._walk((int(asset_id), int(version)), up=True, max_depth=max_depth)

    def descendants(self, asset_id: int, version: int, *, max_depth: int | None = None) -> list[LineageNode]:
        """Every version derived from `asset_id`/`version`, transitively (as ancestors)."""
        return self._walk((int(asset_id), int(version)), up=False, max_depth=max_depth)

    def _walk(self, start: tuple[int, int], *, up: bool, max_depth: int | None) -> list[LineageNode]:
        if self.version(*start) is None:
            raise IndexerError(f"unknown version {start[0]}/{start[1]} (not indexed)")
        src = (VersionParent.child_asset_id, VersionParent.child_version)
        dst = (VersionParent.parent_asset_id, VersionParent.parent_version)
        if not up:
            src, dst = dst, src
        seen = {start}  # cycle-safe: a node is visited once (the chain cannot form cycles anyway)
        frontier, depth, out = [start], 0, []
        with self._session() as s:
            while frontier and (max_depth is None or depth < max_depth):
                depth += 1
                found: set[tuple[int, int]] = set()
                for chunk in _chunks(frontier):
                    for a, v in s.exec(select(*dst).where(tuple_(*src).in_(chunk))):
                        if (a, v) not in seen:
                            seen.add((a, v))
                            found.add((a, v))
                frontier = sorted(found)
                out.extend(LineageNode(a, v, depth) for a, v in frontier)
        return out

    def prov_json(self, asset_id: int, version: int, *, include_descendants: bool = False,
                  activity_type: _prov.ActivityTypeHook | None = None) -> dict[str, Any]:
        """W3C PROV-JSON of a version and all its ancestors (and descendants if asked).
        `activity_type(version, asset, parent_assets) -> "publish" | "compute" | "sync"`
        types each version's activity; the default is `_prov.default_activity_type`."""
        nodes = [VersionRef(int(asset_id), int(version))]
        nodes += [n.ref for n in self.ancestors(asset_id, version)]
        if include_descendants:
            nodes += [n.ref for n in self.descendants(asset_id, version)]
        with self._session() as s:
            rows = []
            for chunk in _chunks([(n.asset_id, n.version) for n in nodes]):
                rows += s.exec(select(IndexedVersion).where(
                    tuple_(IndexedVersion.asset_id, IndexedVersion.version).in_(chunk))).all()
            versions = self._with_parents(s, rows)
            asset_ids = {v.asset_id for v in versions} | {p.asset_id for v in versions for p in v.parents}
            assets = {r.asset_id: _asset(r) for r in s.exec(
                select(IndexedAsset).where(IndexedAsset.asset_id.in_(sorted(asset_ids))))}
            addresses = {v.author for v in versions} | {a.owner for a in assets.values()}
            orgs = {r.address: _org(r) for r in s.exec(
                select(IndexedOrg).where(IndexedOrg.address.in_(sorted(addresses))))}
        return _prov.build(versions, assets, orgs, activity_type or _prov.default_activity_type)
