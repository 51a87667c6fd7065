"""Key release (DESIGN §5 "Consume", docs/api.md "Key release"): the owner's node decides
whether a consumer gets the file key of one version, wrapped in an age header for the
consumer's registered recipient.

    release = release_key(node, request_json, signature)   # KeyRelease or a domain error

Checks, in order; the first failure is the outcome:

    1. the KeyRequest parses                          invalid_field / malformed_body (422/400)
    2. signature, deadline, consumer registered and   bad_signature, deadline_expired, deadline_too_far,
       active, nonce unused (consumed), recipient ==  unknown_org, inactive_org, replayed_nonce,
       registered recipient (RequestAuthenticator)    recipient_mismatch (401/403)
    3. permission is READ, SYNC (or COMPUTE)          invalid_permission (422)
    4. the asset is this node's own                   unknown_asset (404), not_owner_node (404)
    5. the version exists on chain                    unknown_asset_version (404)
    6. permission is not COMPUTE                      compute_never_releases_keys (403)
    7. hasAccessFor(asset, consumer, permission,      no_grant, grant_revoked, grant_expired,
       purpose) at the latest block                   permission_not_granted, purpose_mismatch,
                                                      asset_retired, owner_inactive (403)
    8. the header is re-wrapped for the recipient     e.g. block_not_found (404)

Chain reads (steps 2, 4, 5, 7, and the refinement of a "no" from step 7) all answer for
ONE block: the latest block as reported by a request sent once the signature and deadline
have been checked (api.node.ChainReads: pinned by block hash, memoised per block, so
concurrent releases in one block share their reads and a new block — say, the one holding
a revoke — is always read afresh). The record names that block (`block`, `block_hash`).
A transaction mined after that block was read and before the answer is not seen, as with
any "latest" read.

EVERY outcome is an audit record (key_released, or key_denied with the reason code of the
error the caller receives, which then carries `audit_seq`), committed BEFORE the answer.
The nonce (step 2) is checked for replay where it is consumed: in the same transaction as
that record (AuditLog.append_claimed). A replayed nonce's request is decided like any
other, and then the replayed_nonce denial is committed in place of its record, so a nonce
is never consumed without a record and a replay never gets anything but replayed_nonce.
Records hold the request fields (asset, version, consumer, recipient, purpose, permission,
nonce, deadline) — never the header or a key. On success the node signs a KeyReceipt
(EIP-712, the org's account) naming the header's keccak256 and the record's seq.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from eth_utils import keccak

from api.auth import KeyReceipt, KeyRequest
from api.errors import AccessDeniedError, InvalidFieldError, NotFoundError, ReplayedNonceError
from api.node import ChainReads, LatestView, Node
from api.usecases._common import audit, audit_entry, key_permission
from ledger.audit import AuditKind, AuditRecord
from ledger.audit.log import Claim, Entry
from ledger.client import BlockRef, LedgerClient
from ledger.models import AssetState, Permission
from vault.age import X25519Recipient, header_for, unwrap_file_key

UNAUTHENTICATED_ACTOR = "unauthenticated"


@dataclass(frozen=True)
class KeyRelease:
    header: bytes  # the age header for the consumer's recipient
    receipt: KeyReceipt
    signature: bytes  # the owner org's EIP-712 signature over `receipt`
    audit_seq: int


def release_key(node: Node, request: object, signature: object) -> KeyRelease:
    """Decide, audit, and (if allowed) release. Raises the denial as a domain error whose
    `audit_seq` names the committed key_denied record."""
    parsed: KeyRequest | None = None
    claim: Claim | None = None
    verified = False
    chain = (node.chain_reads or ChainReads(node.ledger)).decision()
    try:
        parsed = request if isinstance(request, KeyRequest) else KeyRequest.from_json(request)
        claim = node.authenticator.check_key_request(parsed, signature, orgs=chain)
        node.authenticator.check_recipient(parsed, orgs=chain)
        verified = True
        permission = key_permission(parsed.permission)
        state = chain.asset(parsed.asset)  # AssetLedgerUnknownAsset → 404 unknown_asset
        if state.owner != node.address:
            raise NotFoundError(f"asset {parsed.asset} is owned by {state.owner}; ask that org's node",
                                reason="not_owner_node")
        if not 1 <= parsed.version <= state.version_count:
            raise NotFoundError(f"asset {parsed.asset} has no version {parsed.version} "
                                f"({state.version_count} registered)", reason="unknown_asset_version")
        if permission == Permission.COMPUTE:
            raise AccessDeniedError("COMPUTE never releases a key: the raw data stays with its owner "
                                    "(run a job through /v1/jobs)", reason="compute_never_releases_keys")
        if not chain.has_access_for(parsed.asset, parsed.consumer, permission, parsed.purpose):
            reason, why = _denial(node, parsed, permission, state, chain.view.block)
            raise AccessDeniedError(f"{parsed.consumer} may not {permission.name} asset {parsed.asset}: {why}",
                                    reason=reason)
        cid = node.version_cids.get((parsed.asset, parsed.version),
                                    lambda: _version_cid(node, parsed.asset, parsed.version, chain.view.block))
        header = _rewrap(node, cid, _recipient(parsed.recipient))
    except Exception as exc:
        replayed = _audit_denial(node, exc, parsed, verified, chain, claim)
        if replayed is not None:
            raise replayed from None
        raise
    assert claim is not None
    issued_at = int(node.clock())
    header_hash = keccak(header)
    entry = audit_entry(AuditKind.KEY_RELEASED, parsed.consumer, parsed.asset, parsed.version,
                        {**_request_details(parsed), "cid": cid, "header_hash": "0x" + header_hash.hex(),
                         "issued_at": issued_at, **_block_details(chain.view.block)})
    record, replayed = _append_claimed(node, entry, claim, parsed, chain)
    if replayed is not None:
        raise replayed
    receipt = KeyReceipt(asset=parsed.asset, version=parsed.version, owner=node.address, consumer=parsed.consumer,
                         recipient=parsed.recipient, header_hash=header_hash, audit_seq=record.seq,
                         issued_at=issued_at)
    return KeyRelease(header, receipt, receipt.sign(node.domain, node.keys.account), record.seq)


def _append_claimed(node: Node, entry: Entry, claim: Claim, req: KeyRequest,
                    chain: LatestView) -> tuple[AuditRecord, ReplayedNonceError | None]:
    """Commit `entry` together with the request's nonce. If the nonce was already used,
    the replayed_nonce denial is committed instead and returned as the error to raise."""
    replay = ReplayedNonceError(f"nonce 0x{req.nonce.hex()} was already used by {req.consumer}")
    fallback = audit_entry(AuditKind.KEY_DENIED, req.consumer, req.asset, req.version,
                           {**_request_details(req), "reason": node.reason_code(replay),
                            "signature_verified": False, **_block_details(chain.chosen)})
    assert node.audit is not None
    record, fresh = node.audit.append_claimed(entry, claim, fallback)
    if fresh:
        return record, None
    replay.audit_seq = record.seq  # type: ignore[attr-defined]  # the error body names the record
    return record, replay


def _request_details(req: KeyRequest) -> dict[str, Any]:
    try:
        permission: Any = Permission(req.permission).name
    except ValueError:
        permission = req.permission
    return {"consumer": req.consumer, "recipient": req.recipient, "purpose": req.purpose,
            "permission": permission, "nonce": "0x" + req.nonce.hex(), "deadline": req.deadline}


def _block_details(block: BlockRef | None) -> dict[str, Any]:
    """The block a decision was read at (absent if it was refused before any chain read)."""
    return {} if block is None else {"block": block.number, "block_hash": "0x" + block.hash.hex()}


def _audit_denial(node: Node, exc: BaseException, req: KeyRequest | None, verified: bool,
                  chain: LatestView, claim: Claim | None) -> ReplayedNonceError | None:
    """Commit the key_denied record of `exc` (with the nonce, if the request got as far as
    having one checked) and name it in the error. Returns the error to raise INSTEAD when
    the nonce turned out to be replayed: that is then the recorded outcome."""
    reason = node.reason_code(exc)
    replayed: ReplayedNonceError | None = None
    if req is None:
        details: dict[str, Any] = {"reason": reason, "signature_verified": False}
        if isinstance(exc, InvalidFieldError):
            details["field"] = exc.field[:64]
        record = audit(node, AuditKind.KEY_DENIED, UNAUTHENTICATED_ACTOR, None, None, details)
    else:
        entry = audit_entry(AuditKind.KEY_DENIED, req.consumer, req.asset, req.version,
                            {**_request_details(req), "reason": reason, "signature_verified": verified,
                             **_block_details(chain.chosen)})
        if claim is None:  # refused before the nonce was checked (signature, deadline, org)
            assert node.audit is not None
            record = node.audit.append(entry.kind, entry.actor, entry.asset_id, entry.version, entry.details)
        else:
            record, replayed = _append_claimed(node, entry, claim, req, chain)
    try:
        exc.audit_seq = record.seq  # type: ignore[attr-defined]  # the error body names the record
    except AttributeError:
        pass
    return replayed


def _denial(node: Node, req: KeyRequest, permission: Permission, state: AssetState,
            block: BlockRef) -> tuple[str, str]:
    """Why hasAccessFor said no, read from the chain at the decision's block (for the record)."""
    ledger = node.ledger
    if state.retired:
        return "asset_retired", "the asset is retired"
    if not ledger.is_active(node.address, block_identifier=block):
        return "owner_inactive", "the owning org is deactivated"
    grant = ledger.get_grant(req.asset, req.consumer, block_identifier=block)
    if grant.permissions == 0:
        record = node.queries.grant(req.asset, req.consumer) if node.queries else None
        if record is not None and not record.active:
            return "grant_revoked", "the grant was revoked"
        return "no_grant", "there is no grant"
    if grant.expiry <= ledger.block_time(block):
        return "grant_expired", f"the grant expired at {grant.expiry}"
    if grant.permissions & permission != permission:
        return "permission_not_granted", f"the grant holds {', '.join(p.name for p in Permission if p & grant.permissions)}"
    if grant.purpose_hash != LedgerClient.purpose_hash(req.purpose):
        return "purpose_mismatch", "the grant was made for another purpose"
    return "access_denied", "the on-chain policy says no"


# bech32 decoding in pure Python; a node serves the same few consumers' recipients over and over
_recipient = functools.lru_cache(maxsize=4096)(X25519Recipient.parse)


def _rewrap(node: Node, cid: str, recipient: X25519Recipient) -> bytes:
    """A fresh age header of `cid`'s file key for `recipient` (new ephemeral X25519 stanza
    and header MAC, as `rewrap` writes it).

    The file key is unwrapped once per CID — from this org's own header of the stored
    ciphertext (Vault.rewrap_for to its own recipient; that reads and verifies the first
    block), MAC checked — and kept in node.file_keys (bounded LRU, a CID names immutable
    bytes). Keeping it in memory adds no exposure: this process holds the org's age
    identity, which unwraps every one of those keys anyway; they are never logged,
    stored or sent except inside a header for an authorised recipient."""
    file_key = node.file_keys.get(cid, lambda: unwrap_file_key(
        node.vault.rewrap_for(cid, node.keys.identity.recipient), [node.keys.identity]))
    return header_for(file_key, [recipient])


def _version_cid(node: Node, asset_id: int, version: int, block: BlockRef) -> str:
    assert node.queries is not None
    record = node.queries.version(asset_id, version)
    if record is None:  # registered on chain (at `block`) but not indexed yet (another writer, a restart)
        node.wait_indexed(block.number)
        record = node.queries.version(asset_id, version)
    if record is None or record.cid is None:
        raise NotFoundError(f"version {asset_id}@{version} has no content this node can serve",
                            reason="unknown_asset_version")
    return record.cid
