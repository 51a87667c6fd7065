"""W3C PROV-JSON (https://www.w3.org/Submission/prov-json/) for a set of versions.

Mapping (DESIGN §5 "Lineage"):
- entity   `tl:asset-<id>-v<n>`  one per asset version: cid, commitment, size, kind;
- activity `tl:act-<id>-v<n>`    the activity that produced that version, typed
  `tl:publish`, `tl:compute` or `tl:sync` (see `default_activity_type`), timed by its block;
- agent    `tl:org-<address>`    an organisation (prov:Organization);
- relations: wasGeneratedBy (version ← its activity), used (activity → each parent),
  wasDerivedFrom (version → each parent, through the activity), wasAssociatedWith
  (activity → author), wasAttributedTo (version → the asset's owner).
Relations are only emitted between nodes of the exported set. Identifiers of relations
are blank nodes numbered in a deterministic order, so the same lineage always exports
byte-identical JSON. uint64 sizes are typed xsd:unsignedLong strings (JSON numbers lose
precision above 2**53 in many consumers).
"""
from __future__ import annotations

import re

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ledger.errors import IndexerError
from ledger.models import AssetKind

if TYPE_CHECKING:
    from ledger.indexer.queries import AssetRecord, OrgRecord, VersionRecord

TL_NAMESPACE = "urn:twinledger:"
ACTIVITY_TYPES = ("publish", "compute", "sync")
_LOCAL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")

ActivityTypeHook = Callable[["VersionRecord", "AssetRecord", Sequence["AssetRecord"]], str]


def default_activity_type(version: VersionRecord, asset: AssetRecord, parent_assets: Sequence[AssetRecord]) -> str:
    """"compute" for a derived version whose author is not the owner of one of its
    parents, or a derived report; "publish" otherwise. The node passes its own hook
    (knowing which versions its compute or sync services produced) to refine this."""
    if parent_assets and (any(p.owner != version.author for p in parent_assets) or asset.kind == AssetKind.REPORT):
        return "compute"
    return "publish"


def _qname(value: str) -> dict[str, str]:
    return {"$": value, "type": "prov:QUALIFIED_NAME"}


def _time(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def entity_id(asset_id: int, version: int) -> str:
    return f"tl:asset-{asset_id}-v{version}"


def activity_id(asset_id: int, version: int) -> str:
    return f"tl:act-{asset_id}-v{version}"


def agent_id(address: str) -> str:
    return f"tl:org-{address}"


def build(versions: Iterable[VersionRecord], assets: Mapping[int, AssetRecord], orgs: Mapping[str, OrgRecord],
          activity_type: ActivityTypeHook = default_activity_type) -> dict[str, Any]:
    """The PROV-JSON document of `versions` (with `assets` and `orgs` they refer to)."""
    ordered = sorted(versions, key=lambda v: (v.asset_id, v.version))
    included = {(v.asset_id, v.version) for v in ordered}
    doc: dict[str, Any] = {"prefix": {"tl": TL_NAMESPACE}}
    sections: dict[str, dict[str, Any]] = {name: {} for name in (
        "entity", "activity", "agent", "wasGeneratedBy", "used", "wasDerivedFrom",
        "wasAssociatedWith", "wasAttributedTo")}
    counters = {"wasGeneratedBy": "gen", "used": "use", "wasDerivedFrom": "der",
                "wasAssociatedWith": "assoc", "wasAttributedTo": "attr"}

    def relation(kind: str, body: dict[str, Any]) -> None:
        sections[kind][f"_:{counters[kind]}{len(sections[kind]) + 1}"] = body

    def agent(address: str) -> str:
        ident = agent_id(address)
        if ident not in sections["agent"]:
            org = orgs.get(address)
            body: dict[str, Any] = {"prov:type": _qname("prov:Organization"), "tl:address": address}
            if org is not None:
                body["prov:label"] = org.name
            sections["agent"][ident] = body
        return ident

    for v in ordered:
        asset = assets[v.asset_id]
        parents = [p for p in v.parents if (p.asset_id, p.version) in included]
        parent_assets = [assets[p.asset_id] for p in v.parents]
        kind = activity_type(v, asset, parent_assets)
        if not isinstance(kind, str) or not _LOCAL_NAME.fullmatch(kind):
            raise IndexerError(f"activity_type hook returned {kind!r}: expected a name like 'publish'")
        ent, act, when = entity_id(v.asset_id, v.version), activity_id(v.asset_id, v.version), _time(v.block_timestamp)
        entity: dict[str, Any] = {
            "prov:type": _qname("tl:AssetVersion"),
            "prov:label": f"{asset.name} v{v.version}",
            "tl:assetId": v.asset_id,
            "tl:version": v.version,
            "tl:kind": asset.kind.name.lower(),
            "tl:cidHex": v.cid_hex,
            "tl:commitment": v.commitment,
            "tl:size": {"$": str(v.size), "type": "xsd:unsignedLong"},
        }
        if v.cid is not None:
            entity["tl:cid"] = v.cid
        sections["entity"][ent] = entity
        sections["activity"][act] = {
            "prov:type": _qname(f"tl:{kind}"),
            "prov:startTime": when,
            "prov:endTime": when,
            "tl:blockNumber": v.block_number,
            "tl:txHash": v.tx_hash,
        }
        relation("wasGeneratedBy", {"prov:entity": ent, "prov:activity": act, "prov:time": when})
        for p in parents:
            parent = entity_id(p.asset_id, p.version)
            relation("used", {"prov:activity": act, "prov:entity": parent})
            relation("wasDerivedFrom", {"prov:generatedEntity": ent, "prov:usedEntity": parent,
                                        "prov:activity": act})
        relation("wasAssociatedWith", {"prov:activity": act, "prov:agent": agent(v.author)})
        relation("wasAttributedTo", {"prov:entity": ent, "prov:agent": agent(asset.owner)})

    doc.update({name: body for name, body in sections.items() if body})
    return doc
