"""The consumer flow of DESIGN §5, step by step (used by TwinLedgerClient.get).

    1. the version record — from the own node, else the owner's node — is CHECKED against
       the chain: its fields must hash to AssetLedger.versionDigest(asset, version);
       no node's index is trusted blindly
    2. owner and endpoint from the on-chain registry (never from a node)
    3. a KeyRequest signed by the consumer → POST {owner}/v1/keys; the answer's receipt
       must be signed by the on-chain owner and describe exactly this request and header
    4. the ciphertext by CID through the trustless gateway protocol (owner's node first,
       then extra gateways) into a temporary blockstore, every block verified
    5. Vault.open with the released header and the on-chain commitment: decrypt, check,
       write `out` atomically (nothing at `out` on any failure)
    6. the owner's signed receipt → POST /v1/consumptions on the own node
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from eth_hash.auto import keccak

from api.auth.eip712 import Eip712Domain, KeyReceipt, KeyRequest
from api.errors import ApiError, UntrustedAnswerError
from api.sdk.models import VersionInfo, field_of, uint
from ledger.client import LedgerClient
from ledger.errors import InvalidArgumentError
from ledger.models import VersionRef
from vault.cid import CID
from vault.errors import InvalidCIDError

KEY_REQUEST_TTL = 60


def check_version(ledger: LedgerClient, info: VersionInfo, asset_id: int, version: int) -> VersionInfo:
    """`info` if it is exactly what the chain registered for (asset_id, version)."""
    if (info.asset_id, info.version) != (asset_id, version):
        raise UntrustedAnswerError(f"asked for {asset_id}@{version}, the node answered "
                                   f"{info.asset_id}@{info.version}")
    try:
        cid_bytes = CID.decode(info.cid).to_bytes()
        digest = LedgerClient.compute_version_digest(
            info.asset_id, info.version, cid_bytes, info.commitment, info.size,
            [VersionRef(p.asset_id, p.version) for p in info.parents], info.author, info.timestamp)
    except (InvalidCIDError, InvalidArgumentError, OverflowError) as exc:
        raise UntrustedAnswerError(f"version record {asset_id}@{version} is malformed: {exc}") from None
    on_chain = ledger.version_digest(asset_id, version)
    if on_chain == b"\0" * 32:
        raise UntrustedAnswerError(f"version {asset_id}@{version} is not registered on chain")
    if digest != on_chain:
        raise UntrustedAnswerError(f"the version record of {asset_id}@{version} does not match the chain "
                                   f"(digest 0x{digest.hex()} != on-chain 0x{on_chain.hex()})")
    return info


def key_request(domain: Eip712Domain, account: Any, recipient: str, asset_id: int, version: int, *,
                permission: int, purpose: str, now: float, nonce: bytes) -> tuple[KeyRequest, bytes]:
    request = KeyRequest(asset=asset_id, version=version, consumer=account.address, recipient=recipient,
                         purpose=purpose, permission=permission, nonce=nonce,
                         deadline=int(now) + KEY_REQUEST_TTL)
    return request, request.sign(domain, account)


def parse_key_answer(answer: Any, request: KeyRequest, domain: Eip712Domain,
                     owner: str) -> tuple[bytes, KeyReceipt, bytes, int]:
    """(header, receipt, receipt signature, audit seq) from the owner's answer, after
    checking the receipt: signed by `owner`, for this request, over this header."""
    what = "key release answer"
    header_b64 = field_of(answer, "header", what)
    try:
        header = base64.b64decode(header_b64, validate=True) if isinstance(header_b64, str) else b""
    except (binascii.Error, ValueError):
        header = b""
    if not header:
        raise UntrustedAnswerError("the key release answer carries no base64 age header")
    receipt_obj = field_of(answer, "receipt", what)
    if not isinstance(receipt_obj, dict):
        raise UntrustedAnswerError("the key release receipt is not a JSON object")
    fields = dict(receipt_obj)
    signature = fields.pop("signature", None)
    if signature is None:  # the signature beside the receipt rather than inside it
        signature = answer.get("receipt_signature") or answer.get("signature")
    try:
        receipt = KeyReceipt.from_json(fields)
        signer = receipt.recover(domain, signature)
    except ApiError as exc:
        raise UntrustedAnswerError(f"the key release receipt is invalid: {exc}") from None
    if signer != owner:
        raise UntrustedAnswerError(f"the key release receipt is signed by {signer}, not by the asset's owner {owner}")
    expected = (request.asset, request.version, request.consumer, request.recipient, owner)
    got = (receipt.asset, receipt.version, receipt.consumer, receipt.recipient, receipt.owner)
    if got != expected:
        raise UntrustedAnswerError("the key release receipt does not describe this request")
    if receipt.header_hash not in (keccak(header), hashlib.sha256(header).digest()):
        raise UntrustedAnswerError("the key release receipt is not for the header that came with it")
    seq = answer.get("audit_seq", receipt.audit_seq)
    audit_seq = uint(seq, "audit_seq")
    if audit_seq != receipt.audit_seq:
        raise UntrustedAnswerError(f"the key release answer names audit record {audit_seq}, its receipt "
                                   f"{receipt.audit_seq}")
    return header, receipt, bytes.fromhex(str(signature).removeprefix("0x")), audit_seq


def fetch_and_open(info: VersionInfo, header: bytes, identity: Any, out: Path, *, gateways: Sequence[str],
                   transport: Any, timeout: float, progress: Callable[[int], None] | None) -> tuple[int, str]:
    """Fetch the ciphertext, open it into `out`; (plaintext bytes, sha256 hex)."""
    from vault.blockstore import FilesystemBlockstore
    from vault.gateway import GatewayClient
    from vault.vault import Vault

    root = CID.decode(info.cid)
    with tempfile.TemporaryDirectory(prefix="twinledger-get-") as tmp:
        store = FilesystemBlockstore(Path(tmp), sync=False, verify_writes=False)  # the gateway client verified
        with GatewayClient(list(gateways), transport=transport, timeout=timeout) as gateway:
            gateway.fetch_car(root, store)
        written = Vault(store, identity).open(info.cid, header, identity, out, commitment=info.commitment,
                                              progress=progress)
    digest = hashlib.sha256()
    with open(out, "rb") as fh:
        while piece := fh.read(1 << 20):
            digest.update(piece)
    return written, digest.hexdigest()
