"""ledger._rpc.FastRpc: the hot-path JSON-RPC client, against a real Anvil (same answers as
web3's provider) and against a scripted HTTP server for the ways a node can misbehave."""
from __future__ import annotations

import json
import socket
import threading

import pytest
from web3 import Web3

from ledger._rpc import MAX_RESPONSE, FastRpc
from ledger.errors import RpcError
from tests.chain import anvil, w3  # noqa: F401


def test_answers_equal_the_providers(w3):  # noqa: F811
    fast = FastRpc(w3.provider)
    for method, params in (("eth_chainId", []), ("eth_blockNumber", []),
                           ("eth_getBlockByNumber", ["latest", False])):
        assert fast.request(method, params)["result"] == w3.provider.make_request(method, params)["result"]
    error = fast.request("eth_getBlockByNumber", ["not-a-block", False])
    assert "error" in error  # JSON-RPC errors are answers, passed through for the caller to decode


def test_connections_are_kept_alive_per_thread(w3):  # noqa: F811
    fast = FastRpc(w3.provider)
    fast.request("eth_chainId", [])
    first = fast._local.conn
    fast.request("eth_blockNumber", [])
    assert fast._local.conn is first
    other: list = []
    th = threading.Thread(target=lambda: (fast.request("eth_chainId", []), other.append(fast._local.conn)))
    th.start()
    th.join()
    assert other and other[0] is not first


class Scripted:
    """A loopback HTTP server answering each connection's requests from `answers` in turn."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/rpc"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while self.answers:
            conn, _ = self.sock.accept()
            self.connections += 1
            with conn:
                while self.answers:
                    data = conn.recv(65536)
                    if not data:
                        break
                    self.requests.append(data)
                    answer = self.answers.pop(0)
                    if answer == b"DROP":
                        break
                    conn.sendall(answer)
                    if b"Connection: close" in answer:
                        break


def _http(status: int, body: bytes, *extra: str) -> bytes:
    head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Content-Type: application/json", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


OK = _http(200, json.dumps({"jsonrpc": "2.0", "id": 1, "result": "0x1"}).encode())


def _fast(server: Scripted) -> FastRpc:
    return FastRpc(Web3.HTTPProvider(server.url, request_kwargs={"timeout": 5}))


def test_request_shape_and_reconnect_after_the_server_closes():
    server = Scripted([OK, _http(200, b'{"result": "0x2"}', "Connection: close"), OK])
    fast = _fast(server)
    assert fast.request("eth_chainId", [])["result"] == "0x1"
    assert fast.request("eth_chainId", [])["result"] == "0x2"
    assert fast.request("eth_chainId", [])["result"] == "0x1"  # on a new connection
    assert server.connections == 2
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /rpc HTTP/1.1") and f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body) == {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}


def test_a_dropped_keep_alive_connection_is_retried_once():
    server = Scripted([OK, b"DROP", OK])
    fast = _fast(server)
    fast.request("eth_chainId", [])
    assert fast.request("eth_chainId", [])["result"] == "0x1"


@pytest.mark.parametrize("answer, error", [
    (_http(503, b"busy"), ConnectionError),  # transient: LedgerClient retries
    (_http(429, b"slow down"), ConnectionError),
    (_http(404, b"no"), RpcError),
    (_http(200, b"<html>"), RpcError),
    (b"HTTP/1.1 200 OK\r\nContent-Length: nonsense\r\n\r\n", ConnectionError),
])
def test_bad_answers_are_clear_errors(answer, error):
    server = Scripted([answer, answer])
    with pytest.raises(error):
        _fast(server).request("eth_chainId", [])


def test_an_oversized_answer_is_refused():
    huge = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + (b"100000\r\n" + b"x" * 0x100000 + b"\r\n") * 65
    assert len(huge) > MAX_RESPONSE
    server = Scripted([huge, huge])
    with pytest.raises((RpcError, ConnectionError)):
        _fast(server).request("eth_chainId", [])
