"""Pydantic request and response models of the node's /v1 routes (docs/api.md).

Request models (…Create, …Request) are separate from the public response models
(…Public, …Result), as in the FastAPI full-stack template. Addresses are 0x-hex strings,
hashes 0x-hex, CIDs canonical strings, times unix seconds (audit record `time`: unix ms).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Address = Field(pattern=r"^0x[0-9a-fA-F]{40}$", examples=["0x70997970C51812dc3A010C7d01b50e0d17dc79C8"])
KindName = Literal["model", "dataset", "report", "other"]
PermissionName = Literal["READ", "SYNC", "COMPUTE"]
_TX = "0x5c504ed432cb51138bcf09aa5e8a410dd4a1e204ef84bfed1be16dfba1b22060"
_CID = "bafybeihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- assets ---------------------------------------------------------------------------------


class AssetCreate(_Strict):
    kind: KindName
    name: str = Field(min_length=1, max_length=256, description="Public on chain: put nothing secret here.")
    metadata: dict[str, Any] | None = Field(
        None, description="Optional JSON object; only keccak256 of its RFC 8785 form goes on chain.")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"kind": "dataset", "name": "spindle run 7", "metadata": {"line": 3, "machine": "CNC-12"}}]})


class AssetCreated(BaseModel):
    asset_id: int
    owner: str
    kind: KindName
    name: str
    metadata_digest: str
    tx_hash: str
    block: int
    audit_seq: int

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"asset_id": 1, "owner": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8", "kind": "dataset",
         "name": "spindle run 7", "metadata_digest": "0x" + "ab" * 32, "tx_hash": _TX, "block": 12, "audit_seq": 4}]})


class VersionPublic(BaseModel):
    asset_id: int
    version: int
    cid: str | None
    commitment: str
    size: int
    parents: list[str] = Field(description='"assetId@version" of each parent, in on-chain order')
    author: str
    block: int
    timestamp: int
    tx_hash: str


class AssetPublic(BaseModel):
    asset_id: int
    owner: str
    kind: KindName
    name: str
    metadata_digest: str
    retired: bool
    version_count: int
    created_block: int
    created_tx: str


class AssetDetail(AssetPublic):
    versions: list[VersionPublic]


class AssetList(BaseModel):
    items: list[AssetPublic]
    next: int | None = Field(description="pass as `after` for the next page; null on the last page")


class VersionPublished(BaseModel):
    asset_id: int
    version: int
    cid: str
    commitment: str
    size: int
    parents: list[str]
    tx_hash: str
    block: int
    audit_seq: int

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"asset_id": 1, "version": 2, "cid": _CID, "commitment": "0x" + "cd" * 32, "size": 1048576,
         "parents": ["1@1"], "tx_hash": _TX, "block": 14, "audit_seq": 5}]})


# -- grants ---------------------------------------------------------------------------------


class GrantCreate(_Strict):
    grantee: str = Address
    permissions: list[PermissionName] = Field(min_length=1, max_length=3)
    expiry: int | None = Field(None, ge=1, le=2**64 - 1, description="unix seconds; or give ttl_seconds")
    ttl_seconds: int | None = Field(None, ge=1, le=2**63, description="seconds from the chain's current time")
    purpose: str = Field("", max_length=256, description="Public on chain; the consumer must name it exactly.")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"grantee": "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC", "permissions": ["READ", "SYNC"],
         "ttl_seconds": 2592000, "purpose": "predictive maintenance"}]})


class GrantTx(BaseModel):
    tx_hash: str
    block: int
    audit_seq: int


class GrantPublic(BaseModel):
    asset_id: int
    grantee: str
    permissions: list[PermissionName]
    expiry: int
    purpose: str
    active: bool = Field(description="false once revoked")
    in_force: bool = Field(description="active and unexpired at the chain's latest block time")
    granted_block: int
    revoked_block: int | None


class GrantList(BaseModel):
    items: list[GrantPublic]


# -- keys -----------------------------------------------------------------------------------


class KeyReleaseRequest(_Strict):
    request: dict[str, Any] = Field(description="KeyRequest in its EIP-712 JSON form")
    signature: str = Field(max_length=140, description="0x + 130 hex: the consumer's EIP-712 signature")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "request": {"asset": 1, "version": 2, "consumer": "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
                    "recipient": "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
                    "purpose": "predictive maintenance", "permission": 1, "nonce": "0x" + "11" * 32,
                    "deadline": 1767225600},
        "signature": "0x" + "22" * 65}]})


class KeyReleaseResult(BaseModel):
    header: str = Field(description="base64 of the age header wrapped to the consumer's recipient")
    receipt: dict[str, Any] = Field(description="KeyReceipt (EIP-712 JSON) plus `signature` by the owner org")
    audit_seq: int


# -- consumptions ---------------------------------------------------------------------------


class ConsumptionCreate(_Strict):
    receipt: dict[str, Any] = Field(description="the owner's KeyReceipt JSON plus its `signature`")
    cid: str = Field(max_length=256)
    output_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


class ConsumptionRecorded(BaseModel):
    audit_seq: int


# -- audit ----------------------------------------------------------------------------------


class AuditRecordPublic(BaseModel):
    seq: int
    kind: str
    time: int = Field(description="unix milliseconds")
    org: str
    actor: str
    asset: int | None
    version: int | None
    details: dict[str, Any]
    record_hash: str = Field(description="keccak256 of `canonical`: the record hash in the Merkle leaf")
    canonical: str = Field(description="the record's RFC 8785 canonical JSON text (what is hashed)")


class AuditPage(BaseModel):
    items: list[AuditRecordPublic]
    next_after_seq: int | None


class AuditHeadPublic(BaseModel):
    org: str
    last_seq: int = Field(description="the last seq logged")
    anchored_seq: int = Field(description="the last seq anchored on chain")
    batches: int = Field(description="batches anchored on chain")


class AuditProofPublic(BaseModel):
    format: str
    record: str
    record_hash: str
    seq: int
    leaf: str
    proof: list[str]
    root: str
    from_seq: int
    to_seq: int
    batch_index: int
    tx_hash: str
    block: int
    org: str
    chain_id: int
    contract: str


# -- lineage --------------------------------------------------------------------------------


class VersionRefPublic(BaseModel):
    asset_id: int
    version: int


class LineageNodePublic(VersionRefPublic):
    depth: int


class LineagePublic(BaseModel):
    root: VersionRefPublic
    ancestors: list[LineageNodePublic]
    descendants: list[LineageNodePublic]
