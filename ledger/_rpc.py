"""The lean JSON-RPC path for the hot chain reads (key release: the latest block and the
policy views pinned to it).

`FastRpc` sends JSON-RPC requests over one keep-alive HTTP/1.1 connection per thread and
parses the answers with httptools (llhttp, the C parser uvicorn uses). Why by hand: web3's
HTTPProvider goes through `requests` (~0.75 ms of CPU a call here), and even stdlib
`http.client` spends most of its ~0.2 ms a call parsing headers through the `email`
package; a request here is one `sendall` and a few `recv`s fed to llhttp. Used only for
idempotent reads. Anything unusual about the provider (not an HTTP(S) URL, request settings
other than headers and timeout, credentials in the URL) → the provider's own make_request
is used instead. A dropped keep-alive connection is reopened once at once; a second failure
is a ConnectionError (transient: LedgerClient retries it).
"""
from __future__ import annotations

import json
import socket
import ssl
import threading
from typing import Any
from urllib.parse import urlsplit

import httptools

from ledger.errors import RpcError

MAX_RESPONSE = 64 * 1024 * 1024  # a JSON-RPC answer larger than this is refused, not buffered


class _Connection:
    """One keep-alive HTTP/1.1 connection: POST a body, get (status, body)."""

    def __init__(self, scheme: str, host: str, port: int, timeout: float) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if scheme == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        self.sock = sock
        self._body: list[bytes] = []
        self._size = 0
        self._complete = False
        self._keep_alive = False
        self._parser: Any = None

    # httptools parser callbacks
    def on_body(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > MAX_RESPONSE:
            raise RpcError(f"the chain node's answer exceeds {MAX_RESPONSE} bytes")
        self._body.append(data)

    def on_message_complete(self) -> None:
        self._complete = True
        self._keep_alive = self._parser.should_keep_alive()  # llhttp resets it right after this

    def post(self, head: bytes, body: bytes) -> tuple[int, bytes, bool]:
        """(status, body, keep_alive)."""
        self._body, self._size, self._complete, self._keep_alive = [], 0, False, False
        parser = self._parser = httptools.HttpResponseParser(self)
        self.sock.sendall(head + body)
        while not self._complete:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the chain node closed the connection")
            try:
                parser.feed_data(data)
            except httptools.HttpParserError as exc:
                raise ConnectionError(f"malformed HTTP answer from the chain node: {exc}") from None
        return parser.get_status_code(), b"".join(self._body), self._keep_alive

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:  # pragma: no cover - closing a broken socket
            pass


class FastRpc:
    def __init__(self, provider: Any) -> None:
        self.provider = provider
        self._local = threading.local()
        self._target: tuple[str, str, int, float] | None = None
        self._head = b""
        uri = getattr(provider, "endpoint_uri", None)
        get_kwargs = getattr(provider, "get_request_kwargs", None)
        if not isinstance(uri, str) or not callable(get_kwargs):
            return
        parts, kwargs = urlsplit(uri), dict(get_kwargs())
        if parts.scheme not in ("http", "https") or parts.username or set(kwargs) - {"headers", "timeout"}:
            return
        headers = dict(kwargs.get("headers") or {"Content-Type": "application/json"})
        if any(not _header_safe(k) or not _header_safe(str(v)) for k, v in headers.items()):
            return
        timeout = kwargs.get("timeout", 30)
        host = parts.hostname or "localhost"
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self._target = (parts.scheme, host, port, float(timeout if isinstance(timeout, (int, float)) else 30))
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = host if parts.port is None else f"{host}:{parts.port}"
        lines = [f"POST {path} HTTP/1.1", f"Host: {host_header}", "Connection: keep-alive"]
        lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "content-length", "connection")]
        self._head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")

    def request(self, method: str, params: list[Any]) -> dict[str, Any]:
        if self._target is None:
            return dict(self.provider.make_request(method, params))
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
        head = self._head + str(len(body)).encode() + b"\r\n\r\n"
        for attempt in (0, 1):
            conn = self._connection()
            try:
                status, data, keep_alive = conn.post(head, body)
            except (OSError, ConnectionError) as exc:
                self._drop(conn)
                if attempt:
                    raise ConnectionError(f"{method}: {exc}") from exc
                continue
            if not keep_alive:
                self._drop(conn)
            if status == 429 or status >= 500:
                raise ConnectionError(f"{method}: HTTP {status} from the chain node")
            if status != 200:
                raise RpcError(f"{method}: HTTP {status} from the chain node")
            try:
                return json.loads(data)
            except ValueError:
                raise RpcError(f"{method}: the chain node's answer is not JSON") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection(self) -> _Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            assert self._target is not None
            conn = self._local.conn = _Connection(*self._target)
        return conn

    def _drop(self, conn: _Connection) -> None:
        conn.close()
        self._local.conn = None


def _header_safe(text: str) -> bool:
    return "\r" not in text and "\n" not in text
