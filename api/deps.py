"""FastAPI dependencies, as `Annotated` aliases (FastAPI full-stack template style).

    @router.post("/v1/assets")
    def create(body: AssetCreate, caller: OwnOrg, ledger: LedgerDep): ...

Authentication (signed NodeRequest headers, see api/auth/headers.py):

    AuthenticatedOrg  any active org. The body (if any) is read whole — at most
                      settings.max_body_bytes — and its keccak256 must be the signed
                      body hash. For JSON routes.
    OwnOrg            the same, and the signer must be this node's own org.
    StreamingOrg      for uploads: the signature covers X-TwinLedger-Body-Hash; the route
    StreamingOwnOrg   reads the body with `caller.stream(request)`, which hashes as it
                      yields and raises BodyHashMismatchError after the last chunk if the
                      bytes differ — treat everything received as provisional until the
                      stream is exhausted (content first, chain second).
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from eth_hash.auto import keccak
from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from api.node import Node as NodeContext
from api.auth import RequestAuthenticator
from api.auth._fields import parse_bytes32
from api.auth.headers import BODY_HASH
from api.errors import BodyHashMismatchError, MissingAuthError, NotOwnOrgError, PayloadTooLargeError
from api.settings import NodeSettings
from ledger.client import LedgerClient
from vault.vault import Vault


def get_node(request: Request) -> NodeContext:
    return request.app.state.node


NodeDep = Annotated[NodeContext, Depends(get_node)]


def get_settings(node: NodeDep) -> NodeSettings:
    return node.settings


def get_ledger(node: NodeDep) -> LedgerClient:
    return node.ledger


def get_authenticator(node: NodeDep) -> RequestAuthenticator:
    return node.authenticator


def get_vault(node: NodeDep) -> Vault:
    return node.vault


SettingsDep = Annotated[NodeSettings, Depends(get_settings)]
LedgerDep = Annotated[LedgerClient, Depends(get_ledger)]
AuthenticatorDep = Annotated[RequestAuthenticator, Depends(get_authenticator)]
VaultDep = Annotated[Vault, Depends(get_vault)]


@dataclass(frozen=True)
class Caller:
    """The authenticated org behind a request."""

    address: str
    body_hash: bytes
    streamed: bool
    max_bytes: int

    async def stream(self, request: Request) -> AsyncIterator[bytes]:
        """The request body, chunk by chunk, checked against the signed hash at the end."""
        if not self.streamed:
            raise RuntimeError("stream() is for StreamingOrg routes; the body was already read")
        digest = keccak.new(b"")
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_bytes:
                raise PayloadTooLargeError(f"the request body is larger than {self.max_bytes} bytes")
            digest.update(chunk)
            if chunk:
                yield chunk
        if digest.digest() != self.body_hash:
            raise BodyHashMismatchError("the uploaded bytes do not match X-TwinLedger-Body-Hash")


def signed_path(request: Request) -> str:
    """The request target as the client signed it: raw path plus "?query" when present."""
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1") if raw else request.url.path
    query = request.scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path


async def _authenticate(request: Request, node: NodeContext, *, streamed: bool) -> Caller:
    settings = node.settings
    if streamed:
        if BODY_HASH.lower() not in request.headers:
            raise MissingAuthError(f"uploads must carry the {BODY_HASH} header")
        body_hash = None
        limit = settings.max_upload_bytes
    else:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > settings.max_body_bytes:
            raise PayloadTooLargeError(f"bodies over {settings.max_body_bytes} bytes must be streamed "
                                       f"with {BODY_HASH}")
        try:
            body = await request.body()
        except RuntimeError:  # a form body FastAPI already consumed: a programming error
            raise RuntimeError("AuthenticatedOrg cannot hash a body FastAPI parsed as a form; "
                               "declare upload routes with StreamingOrg and read caller.stream()") from None
        if len(body) > settings.max_body_bytes:
            raise PayloadTooLargeError(f"bodies over {settings.max_body_bytes} bytes must be streamed "
                                       f"with {BODY_HASH}")
        body_hash = keccak(body)
        limit = settings.max_body_bytes
    signer = await run_in_threadpool(node.authenticator.authenticate_request, request.method,
                                     signed_path(request), body_hash, dict(request.headers))
    signed_hash = body_hash if body_hash is not None else parse_bytes32(request.headers[BODY_HASH].strip(), BODY_HASH)
    return Caller(address=signer, body_hash=signed_hash, streamed=streamed, max_bytes=limit)


async def authenticated_org(request: Request, node: NodeDep) -> Caller:
    return await _authenticate(request, node, streamed=False)


async def streaming_org(request: Request, node: NodeDep) -> Caller:
    return await _authenticate(request, node, streamed=True)


AuthenticatedOrg = Annotated[Caller, Depends(authenticated_org)]
StreamingOrg = Annotated[Caller, Depends(streaming_org)]


def _require_own(caller: Caller, node: NodeContext) -> Caller:
    if caller.address != node.address:
        raise NotOwnOrgError(f"only this node's organisation ({node.address}) may do this")
    return caller


async def own_org(caller: AuthenticatedOrg, node: NodeDep) -> Caller:
    return _require_own(caller, node)


async def streaming_own_org(caller: StreamingOrg, node: NodeDep) -> Caller:
    return _require_own(caller, node)


OwnOrg = Annotated[Caller, Depends(own_org)]
StreamingOwnOrg = Annotated[Caller, Depends(streaming_own_org)]


async def read_limited_body(request: Request, limit: int) -> bytes:
    """The whole body of an unauthenticated JSON route, at most `limit` bytes (413 above,
    by Content-Length at once or while streaming)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"the request body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLargeError(f"the request body is larger than {limit} bytes")
    return bytes(body)
