"""The indexer's tables: a projection of the contracts' events (DESIGN §3, §6).

Everything here is derived from `idx_processed_logs` (the raw logs, in chain order) and
can be dropped and rebuilt from the chain at any time. The tables live in their own
SQLAlchemy metadata (`INDEXER_METADATA`), so creating or dropping them never touches
other tables that share the node's database (audit log, nonces, ...), and their names
carry an `idx_` prefix for the same reason.

Value conventions:
- addresses are EIP-55 checksummed strings;
- hashes, digests, commitments, raw CIDs are "0x…" lower-case hex strings;
- enum-like values (asset kind, permission bits) are plain ints (`ledger.models`
  converts them in query results);
- uint64 values (sizes, expiries, audit sequence numbers, batch indices) use `Uint64`:
  SQL BIGINT is signed, and an owner may legitimately pick expiry 2**64-1 ("never"),
  so they are stored as 20-digit zero-padded decimal strings, which keep their order
  (comparisons in SQL stay correct) and stay readable in a SQL shell.
"""
from __future__ import annotations

from sqlalchemy import BigInteger, Index, MetaData, String, Text
from sqlalchemy.orm import registry
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from ledger.errors import IndexerError

INDEXER_METADATA = MetaData()
CHECKPOINT_ID = 1
_UINT64_DIGITS = 20  # len(str(2**64 - 1))


class Uint64(TypeDecorator):
    """An unsigned 64-bit integer stored as a zero-padded decimal string (order-preserving)."""

    impl = String(_UINT64_DIGITS)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = int(value)
        if not 0 <= value < 2**64:
            raise IndexerError(f"value {value} does not fit an unsigned 64-bit column")
        return str(value).zfill(_UINT64_DIGITS)

    def process_result_value(self, value, dialect):
        return None if value is None else int(value)


class _IndexerTable(SQLModel, registry=registry(metadata=INDEXER_METADATA)):
    """Base of the indexer tables (own metadata, see module docstring)."""


class IndexedOrg(_IndexerTable, table=True):
    __tablename__ = "idx_orgs"

    address: str = Field(primary_key=True, sa_type=String(42))
    name: str = Field(sa_type=Text)
    age_recipient: str = Field(sa_type=Text)
    endpoint: str = Field(sa_type=Text)
    active: bool
    registered_block: int = Field(sa_type=BigInteger)
    updated_block: int = Field(sa_type=BigInteger)


class IndexedAsset(_IndexerTable, table=True):
    __tablename__ = "idx_assets"

    asset_id: int = Field(primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False})
    owner: str = Field(index=True, sa_type=String(42))
    kind: int = Field(index=True)
    name: str = Field(sa_type=Text)
    metadata_digest: str = Field(sa_type=String(66))
    retired: bool = False
    retired_block: int | None = Field(default=None, sa_type=BigInteger)
    version_count: int = 0
    created_block: int = Field(sa_type=BigInteger)
    created_tx: str = Field(sa_type=String(66))


class IndexedVersion(_IndexerTable, table=True):
    __tablename__ = "idx_versions"

    asset_id: int = Field(primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False})
    version: int = Field(primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False})
    cid: str | None = Field(default=None, index=True, sa_type=Text)  # None: bytes are not a valid CID
    cid_hex: str = Field(sa_type=Text)
    commitment: str = Field(index=True, sa_type=String(66))
    size: int = Field(sa_type=Uint64)
    author: str = Field(index=True, sa_type=String(42))
    block_number: int = Field(sa_type=BigInteger)
    block_timestamp: int = Field(sa_type=BigInteger)
    tx_hash: str = Field(sa_type=String(66))
    log_index: int


class VersionParent(_IndexerTable, table=True):
    """One entry of a version's `parents` list; `position` keeps the on-chain order (and
    makes a parent listed twice two rows instead of a key collision)."""

    __tablename__ = "idx_version_parents"
    __table_args__ = (Index("idx_version_parents_parent", "parent_asset_id", "parent_version"),)

    child_asset_id: int = Field(primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False})
    child_version: int = Field(primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False})
    position: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    parent_asset_id: int = Field(sa_type=BigInteger)
    parent_version: int = Field(sa_type=BigInteger)


class IndexedGrant(_IndexerTable, table=True):
    """The current grant of `grantee` on `asset_id`; `active` is False after a revoke."""

    __tablename__ = "idx_grants"

    asset_id: int = Field(primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False})
    grantee: str = Field(primary_key=True, index=True, sa_type=String(42))
    permissions: int
    expiry: int = Field(sa_type=Uint64)
    purpose: str = Field(sa_type=Text)
    active: bool
    granted_block: int = Field(sa_type=BigInteger)
    revoked_block: int | None = Field(default=None, sa_type=BigInteger)


class GrantEvent(_IndexerTable, table=True):
    """Grant history: every AccessGranted / AccessRevoked, in chain order."""

    __tablename__ = "idx_grant_events"

    tx_hash: str = Field(primary_key=True, sa_type=String(66))
    log_index: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    block_number: int = Field(index=True, sa_type=BigInteger)
    asset_id: int = Field(index=True, sa_type=BigInteger)
    grantee: str = Field(sa_type=String(42))
    action: str = Field(sa_type=String(16))  # "granted" | "revoked"
    permissions: int | None = None
    expiry: int | None = Field(default=None, sa_type=Uint64)
    purpose: str | None = Field(default=None, sa_type=Text)


class IndexedAnchor(_IndexerTable, table=True):
    __tablename__ = "idx_anchors"

    org: str = Field(primary_key=True, sa_type=String(42))
    batch_index: int = Field(primary_key=True, sa_type=Uint64)
    from_seq: int = Field(sa_type=Uint64)
    to_seq: int = Field(sa_type=Uint64)
    merkle_root: str = Field(sa_type=String(66))
    block_number: int = Field(sa_type=BigInteger)
    tx_hash: str = Field(sa_type=String(66))
    log_index: int


class ProcessedLog(_IndexerTable, table=True):
    """Every log applied, raw: (tx_hash, log_index) is the idempotency key, and the rows
    let the indexer replay its state without the RPC after a reorg."""

    __tablename__ = "idx_processed_logs"

    tx_hash: str = Field(primary_key=True, sa_type=String(66))
    log_index: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    block_number: int = Field(index=True, sa_type=BigInteger)
    block_hash: str = Field(sa_type=String(66))
    block_timestamp: int = Field(sa_type=BigInteger)
    address: str = Field(sa_type=String(42))
    event: str = Field(sa_type=String(64))  # decoded event name, "" if not in the ABIs
    topics: str = Field(sa_type=Text)  # comma-separated 0x-hex topics
    data: str = Field(sa_type=Text)  # 0x-hex


class Checkpoint(_IndexerTable, table=True):
    """Where indexing stands (one row). `contracts` pins the deployment the tables belong to."""

    __tablename__ = "idx_checkpoint"

    id: int = Field(default=CHECKPOINT_ID, primary_key=True, sa_column_kwargs={"autoincrement": False})
    chain_id: int = Field(sa_type=BigInteger)
    contracts: str = Field(sa_type=Text)  # "consortium,asset_ledger,audit_anchors" checksummed
    deployment_block: int = Field(sa_type=BigInteger)
    last_block: int = Field(sa_type=BigInteger)
    last_block_hash: str | None = Field(default=None, sa_type=String(66))


# Tables derived from processed logs, in an order safe for deletes.
DERIVED_TABLES = (VersionParent, IndexedVersion, GrantEvent, IndexedGrant, IndexedAnchor, IndexedAsset, IndexedOrg)
ALL_TABLES = (*DERIVED_TABLES, ProcessedLog, Checkpoint)
