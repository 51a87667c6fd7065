"""Event indexer: the contracts' events projected into SQL tables (SQLite or PostgreSQL),
checkpointed, idempotent on (tx hash, log index), reorg-aware and rebuildable; plus the
read API (orgs, assets, versions, grants, anchors, lineage, PROV-JSON) the node uses.

    indexer = Indexer(w3, deployment, make_engine(url))
    indexer.sync_once()                       # or: indexer.run(stop_event) in a thread
    indexer.wait_until_indexed(receipt_block) # read your own writes
    IndexQueries(engine).ancestors(asset_id, version)
"""
from ledger.indexer._prov import ACTIVITY_TYPES, TL_NAMESPACE, default_activity_type
from ledger.indexer.indexer import Indexer
from ledger.indexer.queries import (
    AnchorRecord,
    AssetRecord,
    GrantHistoryEntry,
    GrantRecord,
    IndexQueries,
    LineageNode,
    OrgRecord,
    VersionRecord,
)
from ledger.indexer.tables import INDEXER_METADATA

__all__ = [
    "ACTIVITY_TYPES", "INDEXER_METADATA", "TL_NAMESPACE", "AnchorRecord", "AssetRecord", "GrantHistoryEntry",
    "GrantRecord", "IndexQueries", "Indexer", "LineageNode", "OrgRecord", "VersionRecord",
    "default_activity_type",
]
