"""Values the ledger client returns: frozen dataclasses mirroring the contracts' state.

Addresses are EIP-55 checksummed strings, hashes/digests are `bytes`, transaction hashes
are "0x…" hex strings.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag


class Permission(IntFlag):
    """Grant permission bits, as in AssetLedger (READ | SYNC | COMPUTE)."""

    READ = 1
    SYNC = 2
    COMPUTE = 4


ALL_PERMISSIONS = Permission.READ | Permission.SYNC | Permission.COMPUTE


class AssetKind(IntEnum):
    """IAssetLedger.Kind."""

    MODEL = 0
    DATASET = 1
    REPORT = 2
    OTHER = 3


@dataclass(frozen=True, order=True)
class VersionRef:
    """One version of one asset (a lineage parent)."""

    asset_id: int
    version: int


@dataclass(frozen=True)
class OrgInfo:
    address: str
    name: str
    age_recipient: str
    endpoint: str
    active: bool
    registered_at: int  # unix time of the registering block


@dataclass(frozen=True)
class AssetState:
    asset_id: int
    owner: str
    kind: AssetKind
    retired: bool
    version_count: int


@dataclass(frozen=True)
class GrantState:
    """A grant as stored: `purpose_hash` is the first 23 bytes of keccak256(purpose);
    all zero (permissions 0) means no grant."""

    permissions: Permission
    expiry: int
    purpose_hash: bytes


@dataclass(frozen=True)
class AuditHead:
    last_seq: int
    batches: int


@dataclass(frozen=True)
class TxResult:
    tx_hash: str
    block_number: int
    gas_used: int


@dataclass(frozen=True)
class CreatedAsset:
    asset_id: int
    tx: TxResult


@dataclass(frozen=True)
class AddedVersion:
    asset_id: int
    version: int
    tx: TxResult
