"""Publish (DESIGN §5): create assets and add versions — content first, chain second.

    created = create_asset(node, "dataset", "spindle run 7", {"line": 3})
    check_publishable(node, created.asset_id)           # before reading an upload
    v = publish_version(node, created.asset_id, Path("run7.csv"), parents=(),
                        idempotency_key="7b1c…", actor=node.address, content_sha256="…")

publish_version: seal the file (age-encrypt to the org's own recipient, UnixFS import,
blocks stored and pinned) → addVersion transaction → wait until the indexer has the
receipt's block (the caller reads its own write) → `asset_published` audit record.
A failure after sealing leaves only unreferenced blocks.

Idempotency: with an Idempotency-Key the sealed version is journalled (api/usecases/
_journal.py) BEFORE the transaction. A retry with the same key reuses that sealed version
and, if its transaction landed (versionByCommitment on chain), answers with the existing
version (`created=False`, HTTP 200) instead of registering twice. The same key with other
content, parents or asset is a ConflictError (idempotency_key_reused). WITHOUT a key,
identical re-uploads are distinct versions (each seal draws a fresh random file key, so
the commitments differ): the SDK always sends a key.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import rfc8785
from eth_utils import keccak

from api.errors import ConflictError, ForbiddenError, InvalidFieldError
from api.node import Node
from api.usecases._common import audit, format_ref, kind_name, parse_kind
from api.usecases._journal import REGISTERED, JournalEntry, PublishJournal
from ledger import reverts
from ledger.audit import AuditKind
from ledger.models import AssetKind, VersionRef
from vault.cid import CID
from vault.vault import SealedVersion

ZERO_DIGEST = b"\0" * 32
_IDEM_KEY = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, no spaces


@dataclass(frozen=True)
class CreatedAssetResult:
    asset_id: int
    owner: str
    kind: AssetKind
    name: str
    metadata_digest: bytes
    tx_hash: str
    block: int
    audit_seq: int


@dataclass(frozen=True)
class PublishedVersion:
    asset_id: int
    version: int
    cid: str
    commitment: bytes
    size: int
    parents: tuple[VersionRef, ...]
    tx_hash: str
    block: int
    audit_seq: int
    created: bool  # False: an idempotent retry answered with the existing version


def metadata_digest(metadata: Mapping[str, Any] | None) -> bytes:
    """keccak256 of the RFC 8785 canonical JSON of `metadata` (zero when absent). Only
    the digest goes on chain; the metadata itself stays with the caller."""
    if metadata is None:
        return ZERO_DIGEST
    try:
        return keccak(rfc8785.dumps(dict(metadata)))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise InvalidFieldError("metadata", f"is not canonicalisable JSON ({type(exc).__name__})") from None


def create_asset(node: Node, kind: str | AssetKind, name: str, metadata: Mapping[str, Any] | None = None, *,
                 actor: str | None = None) -> CreatedAssetResult:
    asset_kind = parse_kind(kind)
    digest = metadata_digest(metadata)
    created = node.ledger.create_asset(asset_kind, name, digest)
    node.wait_indexed(created.tx.block_number)
    record = audit(node, "asset_created", actor or node.address, created.asset_id, None,
                   {"kind": kind_name(asset_kind), "name": name, "metadata_digest": "0x" + digest.hex(),
                    "tx_hash": created.tx.tx_hash, "block": created.tx.block_number})
    return CreatedAssetResult(created.asset_id, node.address, asset_kind, name, digest, created.tx.tx_hash,
                              created.tx.block_number, record.seq)


def check_publishable(node: Node, asset_id: int) -> None:
    """Refuse early (before an upload is read) if this node cannot add a version:
    unknown asset (404), owned by another org (403 not_owner), retired (409)."""
    state = node.ledger.get_asset(asset_id)  # AssetLedgerUnknownAsset → 404
    if state.owner != node.address:
        raise ForbiddenError(f"asset {asset_id} is owned by {state.owner}, not by this node's org {node.address}",
                             reason="not_owner")
    if state.retired:
        raise ConflictError(f"asset {asset_id} is retired", reason="asset_retired")


def check_idempotency_key(key: str | None) -> str | None:
    if key is not None and not _IDEM_KEY.fullmatch(key):
        raise InvalidFieldError("Idempotency-Key", "must be 1..128 printable ASCII characters without spaces")
    return key


def publish_version(
    node: Node,
    asset_id: int,
    source: Path | BinaryIO | Iterable[bytes],
    parents: Iterable[VersionRef] = (),
    idempotency_key: str | None = None,
    *,
    actor: str | None = None,
    content_sha256: str | None = None,
    reopen: Any = None,
) -> PublishedVersion:
    """Seal `source` and register it as the next version of `asset_id`.

    `content_sha256` (hex SHA-256 of the plaintext, computed by the caller while
    receiving it) lets a retry under the same key prove it carries the same bytes.
    `reopen()` returns the source again, for the rare retry whose sealed blocks were lost
    (default: `source` itself when it is a Path)."""
    actor = actor or node.address
    parents = tuple(parents)
    check_idempotency_key(idempotency_key)
    if idempotency_key is None:
        return _register(node, asset_id, node.vault.seal(source), parents, actor, None, None)
    journal = PublishJournal(node.engine)
    entry = journal.get(actor, idempotency_key)
    if entry is None:
        sealed = node.vault.seal(source)
        entry = journal.add(actor, idempotency_key, asset_id, content_sha256, parents, sealed, node.now_ms())
    else:
        _check_same_request(entry, asset_id, parents, content_sha256)
        if entry.status != REGISTERED and not _landed(node, entry) and not node.blockstore.has(
                CID.decode(entry.sealed.cid)):
            fresh = node.vault.seal(reopen() if reopen is not None else source)
            journal.reseal(entry, fresh)
            entry = journal.get(actor, idempotency_key)
            assert entry is not None
    return _register(node, asset_id, entry.sealed, parents, actor, journal, entry)


def _check_same_request(entry: JournalEntry, asset_id: int, parents: tuple[VersionRef, ...],
                        content_sha256: str | None) -> None:
    same_content = entry.content_sha256 is None or content_sha256 is None or entry.content_sha256 == content_sha256
    if entry.asset_id != asset_id or entry.parents != parents or not same_content:
        raise ConflictError(f"Idempotency-Key {entry.key!r} was used for another upload (asset {entry.asset_id}, "
                            "other content or parents)", reason="idempotency_key_reused")


def _landed(node: Node, entry: JournalEntry) -> tuple[int, int] | None:
    return node.ledger.version_by_commitment(entry.sealed.commitment)


def _register(node: Node, asset_id: int, sealed: SealedVersion, parents: tuple[VersionRef, ...], actor: str,
              journal: PublishJournal | None, entry: JournalEntry | None) -> PublishedVersion:
    created = True
    if entry is not None and entry.status == REGISTERED:
        assert entry.version is not None and entry.tx_hash is not None and entry.block is not None
        version, tx_hash, block, created = entry.version, entry.tx_hash, entry.block, False
    else:
        found = _landed(node, entry) if entry is not None else None
        if found is None:
            try:
                added = node.ledger.add_version(asset_id, CID.decode(sealed.cid).to_bytes(), sealed.commitment,
                                                sealed.size, parents)
                version, tx_hash, block = added.version, added.tx.tx_hash, added.tx.block_number
            except reverts.AssetLedgerDuplicateCommitment:  # a concurrent retry registered it
                found = node.ledger.version_by_commitment(sealed.commitment)
                if found is None or entry is None:
                    raise
        if found is not None:
            if found[0] != asset_id:
                raise ConflictError(f"this content is already registered as {found[0]}@{found[1]}",
                                    reason="duplicate_commitment")
            version, created = found[1], False
            node.wait_indexed(node.ledger.block_number())
            record = node.queries.version(asset_id, version) if node.queries else None
            if record is None:
                raise ConflictError(f"version {asset_id}@{version} is on chain but not indexed yet; retry",
                                    reason="publish_in_progress")
            tx_hash, block = record.tx_hash, record.block_number
        if journal is not None and entry is not None:
            journal.mark_registered(entry, version, tx_hash, block)
    node.wait_indexed(block)
    audit_seq = entry.audit_seq if entry is not None else None
    if audit_seq is None:
        details: dict[str, Any] = {"cid": sealed.cid, "commitment": "0x" + sealed.commitment.hex(),
                                   "size": sealed.size, "parents": [format_ref(p) for p in parents],
                                   "tx_hash": tx_hash, "block": block}
        if entry is not None:
            details["idempotency_key"] = entry.key
        audit_seq = audit(node, AuditKind.ASSET_PUBLISHED, actor, asset_id, version, details).seq
        if journal is not None and entry is not None:
            journal.set_audit_seq(entry, audit_seq)
    return PublishedVersion(asset_id, version, sealed.cid, sealed.commitment, sealed.size, parents, tx_hash, block,
                            audit_seq, created)
