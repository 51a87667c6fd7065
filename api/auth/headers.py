"""The HTTP headers that carry a NodeRequest signature, both sides.

    X-TwinLedger-Signer      0x… address of the signing org
    X-TwinLedger-Nonce       0x + 64 hex, single use per signer
    X-TwinLedger-Deadline    unix seconds (decimal), at most the node's window ahead
    X-TwinLedger-Signature   0x + 130 hex (r ‖ s ‖ v) over the EIP-712 NodeRequest
    X-TwinLedger-Body-Hash   0x + 64 hex, keccak256 of the body — only for streamed
                             uploads: the node checks the signature over this value
                             first and compares the hash of the streamed body at the end

`path` in the signed message is the URL path plus "?query" exactly as sent on the wire.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from api.auth._fields import hex0x, parse_address, parse_bytes32, parse_signature, parse_uint
from api.auth.eip712 import Eip712Domain, NodeRequest, body_hash, new_nonce
from api.errors import MissingAuthError

SIGNER = "X-TwinLedger-Signer"
NONCE = "X-TwinLedger-Nonce"
DEADLINE = "X-TwinLedger-Deadline"
SIGNATURE = "X-TwinLedger-Signature"
BODY_HASH = "X-TwinLedger-Body-Hash"
DEFAULT_TTL = 60


@dataclass(frozen=True)
class SignedHeaders:
    """The parsed X-TwinLedger-* headers of one request."""

    signer: str
    nonce: bytes
    deadline: int
    signature: bytes
    body_hash: bytes | None  # only for streamed uploads


def parse_headers(headers: Mapping[str, str]) -> SignedHeaders:
    """Parse the auth headers (any case). Missing ones → MissingAuthError; malformed
    ones → InvalidFieldError naming the header."""
    lower = {k.lower(): v for k, v in headers.items()}
    missing = [h for h in (SIGNER, NONCE, DEADLINE, SIGNATURE) if h.lower() not in lower]
    if missing:
        raise MissingAuthError(f"missing authentication header(s): {', '.join(missing)}")
    claimed = lower.get(BODY_HASH.lower())
    return SignedHeaders(
        signer=parse_address(lower[SIGNER.lower()].strip(), SIGNER),
        nonce=parse_bytes32(lower[NONCE.lower()].strip(), NONCE),
        deadline=parse_uint(lower[DEADLINE.lower()].strip(), 64, DEADLINE),
        signature=parse_signature(lower[SIGNATURE.lower()].strip(), SIGNATURE),
        body_hash=parse_bytes32(claimed.strip(), BODY_HASH) if claimed is not None else None,
    )


def sign_request(
    account: LocalAccount,
    domain: Eip712Domain,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    streamed_body_hash: bytes | None = None,
    ttl: int = DEFAULT_TTL,
    clock: Callable[[], float] = time.time,
    nonce: bytes | None = None,
) -> dict[str, str]:
    """The headers that authenticate `method path` with `body` as `account` (SDK side).
    For a streamed upload pass `streamed_body_hash` (keccak256 of the bytes that will be
    sent) instead of the body; it then travels in X-TwinLedger-Body-Hash."""
    if body is not None and streamed_body_hash is not None:
        raise ValueError("pass either body or streamed_body_hash, not both")
    digest = streamed_body_hash if streamed_body_hash is not None else body_hash(body or b"")
    message = NodeRequest(method=method.upper(), path=path, body_hash=digest, signer=account.address,
                          nonce=nonce if nonce is not None else new_nonce(), deadline=int(clock()) + ttl)
    headers = {
        SIGNER: message.signer,
        NONCE: hex0x(message.nonce),
        DEADLINE: str(message.deadline),
        SIGNATURE: hex0x(message.sign(domain, account)),
    }
    if streamed_body_hash is not None:
        headers[BODY_HASH] = hex0x(message.body_hash)
    return headers
