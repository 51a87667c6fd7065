"""One node's HTTP API as seen by the SDK: signed requests, problem bodies → typed errors.

Every `/v1` request except `POST /v1/keys` is signed as an EIP-712 NodeRequest
(api/auth/headers.py): a fresh random nonce, a short deadline, and the keccak256 of the
body — of the exact bytes sent. The signed `path` is taken from the request httpx
actually builds (`url.raw_path`), so path and query are signed exactly as they go on the
wire. A retried request is signed again (nonces are single use).

Errors: no answer → NodeUnreachableError; an answer with status >= 400 → the RemoteError
subclass of its status, carrying the node's `error` code, `detail` and `audit_seq`; a 2xx
answer that is not the JSON object the contract promises → UntrustedAnswerError.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from eth_account.signers.local import LocalAccount

from api.auth.eip712 import Eip712Domain
from api.auth.headers import sign_request
from api.errors import (
    NodeUnreachableError,
    RemoteAuthError,
    RemoteConflictError,
    RemoteError,
    RemoteForbiddenError,
    RemoteInputError,
    RemoteNotFoundError,
    RemoteUnavailableError,
    UntrustedAnswerError,
)

_BY_STATUS: dict[int, type[RemoteError]] = {
    400: RemoteInputError, 413: RemoteInputError, 422: RemoteInputError, 401: RemoteAuthError,
    403: RemoteForbiddenError, 404: RemoteNotFoundError, 409: RemoteConflictError,
    502: RemoteUnavailableError, 503: RemoteUnavailableError, 504: RemoteUnavailableError,
}
TRANSIENT = (NodeUnreachableError, RemoteUnavailableError)
DEFAULT_TIMEOUT = 30.0
SIGNATURE_TTL = 60  # seconds a signed request stays valid (the node accepts up to request_max_age)


def segment(value: object) -> str:
    """One URL path segment, percent-encoded."""
    return quote(str(value), safe="")


def query(params: Mapping[str, Any] | None) -> str:
    """"?a=1&b=x" from the params that are not None ("" when none are)."""
    if not params:
        return ""
    items = [(k, _param(v)) for k, v in params.items() if v is not None]
    return "?" + urlencode(items) if items else ""


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def remote_error(response: httpx.Response) -> RemoteError:
    """The typed error for a problem answer (any status >= 400)."""
    status = response.status_code
    reason, detail, audit_seq = f"http_{status}", "", None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        reason = body.get("error") if isinstance(body.get("error"), str) else reason
        detail = body.get("detail") if isinstance(body.get("detail"), str) else ""
        seq = body.get("audit_seq")
        audit_seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
    else:
        detail = response.text[:200].strip()
    cls = _BY_STATUS.get(status) or (RemoteInputError if 400 <= status < 500 else
                                     RemoteUnavailableError if status >= 502 else RemoteError)
    where = f"{response.request.method} {response.request.url}"
    message = f"{where}: {status} {reason}" + (f": {detail}" if detail else "")
    if audit_seq is not None:
        message += f" (audit record {audit_seq})"
    return cls(message, status=status, reason=reason, detail=detail, audit_seq=audit_seq,
               url=str(response.request.url))


class NodeHttp:
    """HTTP access to one node at `base_url`, signing as `account` (None: unsigned only)."""

    def __init__(self, base_url: str, account: LocalAccount | None, domain: Eip712Domain, *,
                 transport: httpx.BaseTransport | None = None, timeout: float = DEFAULT_TIMEOUT,
                 clock: Callable[[], float] = time.time, retries: int = 2, backoff: float = 0.25) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"node URL must be http(s)://host[:port], got {base_url!r}")
        self.base_url = str(base_url).rstrip("/")
        self.account = account
        self.domain = domain
        self.clock = clock
        self.retries = retries
        self.backoff = backoff
        self._client = httpx.Client(transport=transport, timeout=timeout, follow_redirects=False)
        # Read-your-writes token: when set, reads ask the node to answer only after it has
        # indexed this block (header X-TwinLedger-Min-Block; see api/app.py).
        self.min_block: int | None = None

    def close(self) -> None:
        self._client.close()

    # -- requests --------------------------------------------------------------------------

    def get(self, path: str, params: Mapping[str, Any] | None = None, *, signed: bool = True) -> Any:
        """GET, retried on transient failures (reads are idempotent)."""
        headers = {"X-TwinLedger-Min-Block": str(self.min_block)} if self.min_block is not None else None
        return self.call("GET", path + query(params), signed=signed, retry=True, headers=headers)

    def call(self, method: str, path_query: str, *, body: Any = None, signed: bool = True, retry: bool = False,
             headers: Mapping[str, str] | None = None, ok: Iterable[int] = (200, 201)) -> Any:
        """A JSON request; the decoded JSON answer."""
        raw = None if body is None else json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        extra = dict(headers or {})
        if raw is not None:
            extra["Content-Type"] = "application/json"

        def once() -> Any:
            request = self._client.build_request(method, self.base_url + path_query, content=raw, headers=extra)
            if signed:
                self._sign(request, raw or b"")
            return self.json(self._send(request), ok)

        return self.attempts(once, retry=retry)

    def stream(self, method: str, path_query: str, *, body: Callable[[], Iterator[bytes]], length: int,
               body_hash: bytes, headers: Mapping[str, str], timeout: httpx.Timeout | None = None,
               retry: bool = True, ok: Iterable[int] = (200, 201)) -> tuple[int, Any]:
        """A streamed upload signed over `body_hash` (X-TwinLedger-Body-Hash): `body()`
        yields the bytes (again on each retry). Returns (status, JSON answer)."""

        def once() -> tuple[int, Any]:
            request = self._client.build_request(
                method, self.base_url + path_query, content=body(),
                headers={**headers, "Content-Length": str(length)},
                timeout=timeout if timeout is not None else self._client.timeout)
            if self.account is None:
                raise ValueError("uploads are signed: this client has no account")
            request.headers.update(sign_request(self.account, self.domain, method, request.url.raw_path.decode("ascii"),
                                                streamed_body_hash=body_hash, ttl=SIGNATURE_TTL, clock=self.clock))
            response = self._send(request)
            return response.status_code, self.json(response, ok)

        return self.attempts(once, retry=retry)

    def attempts(self, once: Callable[[], Any], *, retry: bool) -> Any:
        """`once()`, repeated up to `retries` more times on a transient failure."""
        tries = self.retries + 1 if retry else 1
        for attempt in range(tries):
            try:
                return once()
            except TRANSIENT:
                if attempt + 1 >= tries:
                    raise
                time.sleep(self.backoff * (2 ** attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    # -- plumbing --------------------------------------------------------------------------

    def _sign(self, request: httpx.Request, raw: bytes) -> None:
        if self.account is None:
            raise ValueError("this client has no account to sign requests with")
        request.headers.update(sign_request(self.account, self.domain, request.method,
                                            request.url.raw_path.decode("ascii"), raw, ttl=SIGNATURE_TTL,
                                            clock=self.clock))

    def _send(self, request: httpx.Request) -> httpx.Response:
        try:
            response = self._client.send(request)
        except httpx.TransportError as exc:  # connect/read/write errors and timeouts
            raise NodeUnreachableError(f"{request.method} {request.url}: no answer from the node "
                                       f"({type(exc).__name__}: {exc})") from None
        return response

    @staticmethod
    def json(response: httpx.Response, ok: Iterable[int] = (200, 201)) -> Any:
        if response.status_code >= 400:
            raise remote_error(response)
        if response.status_code not in tuple(ok):
            raise UntrustedAnswerError(f"{response.request.method} {response.request.url}: unexpected status "
                                       f"{response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise UntrustedAnswerError(f"{response.request.method} {response.request.url}: the answer is not "
                                       "JSON") from None
