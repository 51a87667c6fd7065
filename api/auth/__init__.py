"""Request authentication: EIP-712 typed messages, signed-request headers, single-use
nonces and the authenticator that checks them against the consortium registry.

    domain = Eip712Domain.from_deployment(deployment)
    sig = KeyRequest(...).sign(domain, account)                 # SDK side
    headers = sign_request(account, domain, "POST", "/v1/x", body)
    auth = RequestAuthenticator(domain, NonceStore(engine), LedgerOrgDirectory(ledger))
    signer = auth.authenticate_request("POST", "/v1/x", body_hash(body), headers)
    request = auth.verify_key_request(KeyRequest.from_json(obj), sig)   # node side
"""
from __future__ import annotations

from api.auth.eip712 import (
    EMPTY_BODY_HASH,
    Eip712Domain,
    KeyReceipt,
    KeyRequest,
    NodeRequest,
    body_hash,
    new_nonce,
)
from api.auth.headers import SignedHeaders, parse_headers, sign_request
from api.auth.nonces import NonceStore
from api.auth.orgs import LedgerOrgDirectory, OrgDirectory
from api.auth.verify import RequestAuthenticator

__all__ = [
    "EMPTY_BODY_HASH",
    "Eip712Domain",
    "KeyReceipt",
    "KeyRequest",
    "LedgerOrgDirectory",
    "NodeRequest",
    "NonceStore",
    "OrgDirectory",
    "RequestAuthenticator",
    "SignedHeaders",
    "body_hash",
    "new_nonce",
    "parse_headers",
    "sign_request",
]
