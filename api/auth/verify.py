"""Authenticate signed HTTP requests and key requests (DESIGN §5 "Consume", §8).

Checks, in this order (the first failure is raised; its `.reason` goes into the audit
denial record):

    1. the EIP-712 signature recovers the claimed signer    BadSignatureError   bad_signature
       (a signature for another chain id or contract recovers another address)
    2. the deadline has not passed                          DeadlineExpiredError deadline_expired
    3. the deadline is at most `max_window` s ahead          DeadlineTooFarError deadline_too_far
    4. the signer is a registered org                       UnknownOrgError     unknown_org
    5. ... and active, at the latest block                  InactiveOrgError    inactive_org
    6. the nonce was never used (consumed atomically now)   ReplayedNonceError  replayed_nonce
    7. key requests only: recipient == registered recipient RecipientMismatchError recipient_mismatch

The nonce is consumed only once 1–5 passed, so nobody can burn another org's nonces with
garbage. Key release splits the steps (check_key_request, check_recipient) and consumes
the nonce in the same transaction as its audit record (api/usecases/release.py).
Policy (hasAccess, the version exists) is the key-release use case's job.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from api.auth.eip712 import Eip712Domain, KeyRequest, NodeRequest, _TypedMessage
from api.auth.headers import parse_headers
from api.auth.nonces import NonceStore
from api.auth.orgs import OrgDirectory
from api.errors import (
    BadSignatureError,
    BodyHashMismatchError,
    DeadlineExpiredError,
    DeadlineTooFarError,
    InactiveOrgError,
    MissingAuthError,
    RecipientMismatchError,
    UnknownOrgError,
)
from ledger.audit.log import Claim

DEFAULT_MAX_WINDOW = 300


class RequestAuthenticator:
    def __init__(self, domain: Eip712Domain, nonce_store: NonceStore, org_directory: OrgDirectory, *,
                 clock: Callable[[], float] = time.time, max_window: int = DEFAULT_MAX_WINDOW) -> None:
        if max_window <= 0:
            raise ValueError("max_window must be positive")
        self.domain = domain
        self.nonces = nonce_store
        self.orgs = org_directory
        self.clock = clock
        self.max_window = int(max_window)

    def authenticate_request(self, method: str, path: str, body_hash: bytes | None,
                             headers: Mapping[str, str]) -> str:
        """The checksummed address of the active org that signed this HTTP request.

        `body_hash` is keccak256 of the body the node received; pass None for a streamed
        upload, whose hash is then taken from X-TwinLedger-Body-Hash — the caller MUST
        compare it with the hash of the streamed bytes at the end (BodyHashMismatchError)."""
        signed = parse_headers(headers)
        if body_hash is None:
            if signed.body_hash is None:
                raise MissingAuthError("a streamed body needs the X-TwinLedger-Body-Hash header")
            body_hash = signed.body_hash
        elif signed.body_hash is not None and signed.body_hash != body_hash:
            raise BodyHashMismatchError("the body does not match X-TwinLedger-Body-Hash")
        message = NodeRequest(method=method.upper(), path=path, body_hash=body_hash, signer=signed.signer,
                              nonce=signed.nonce, deadline=signed.deadline)
        self._check(message, signed.signature, message.signer, message.deadline)
        self._consume(message.signer, message.nonce, message.deadline)
        return message.signer

    def verify_key_request(self, request: KeyRequest, signature: object, *,
                           orgs: OrgDirectory | None = None) -> KeyRequest:
        """The request, if signed by an active org for its own registered recipient; its
        nonce is consumed here. `orgs` (default: the authenticator's directory) answers the
        org questions."""
        orgs = self.orgs if orgs is None else orgs
        self._check(request, signature, request.consumer, request.deadline, orgs)
        self._consume(request.consumer, request.nonce, request.deadline)
        self.check_recipient(request, orgs=orgs)
        return request

    def check_key_request(self, request: KeyRequest, signature: object, *,
                          orgs: OrgDirectory | None = None) -> Claim:
        """Steps 1–5 for a key request, WITHOUT consuming the nonce: returns the nonce's
        Claim, which the caller must commit together with the decision's audit record
        (AuditLog.append_claimed; a replay then becomes replayed_nonce). Key release passes
        `orgs` pinned to the one block its whole decision is read at."""
        orgs = self.orgs if orgs is None else orgs
        self._check(request, signature, request.consumer, request.deadline, orgs)
        return self.nonces.claim(request.consumer, request.nonce, request.deadline)

    def check_recipient(self, request: KeyRequest, *, orgs: OrgDirectory | None = None) -> None:
        """Step 7: the header goes only to the consumer's registered recipient."""
        registered = (self.orgs if orgs is None else orgs).recipient_of(request.consumer)
        if registered != request.recipient:
            raise RecipientMismatchError(
                f"recipient {request.recipient} is not the registered recipient of {request.consumer}")

    # -- steps ------------------------------------------------------------------------

    def _check(self, message: _TypedMessage, signature: object, claimed: str, deadline: int,
               orgs: OrgDirectory | None = None) -> None:
        orgs = self.orgs if orgs is None else orgs
        if message.recover(self.domain, signature) != claimed:
            raise BadSignatureError(f"the signature does not recover {claimed} under this chain and contract")
        now = int(self.clock())
        if now > deadline:
            raise DeadlineExpiredError(f"deadline {deadline} has passed (now {now})")
        if deadline > now + self.max_window:
            raise DeadlineTooFarError(f"deadline {deadline} is more than {self.max_window} s ahead (now {now})")
        if not orgs.is_active(claimed):
            if not orgs.is_registered(claimed):
                raise UnknownOrgError(f"{claimed} is not a registered organisation")
            raise InactiveOrgError(f"organisation {claimed} is deactivated")

    def _consume(self, signer: str, nonce: bytes, deadline: int) -> None:
        self.nonces.consume(signer, nonce, deadline)

    def prune_nonces(self) -> int:
        """Forget nonces whose deadline has passed (a periodic housekeeping step)."""
        return self.nonces.prune(int(self.clock()))


__all__ = ["DEFAULT_MAX_WINDOW", "RequestAuthenticator"]
