"""TransactionSender on a real Anvil: concurrent nonces, resync, transient-error retries
(through an injected flaky provider that wraps the real one), receipt timeout."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from web3 import Web3

from ledger.anvil import AnvilProcess, free_port
from ledger.errors import ReceiptTimeoutError, TransientRpcError
from ledger.tx import TransactionSender, is_transient

SINK = "0x000000000000000000000000000000000000dEaD"


class FlakyProvider(Web3.HTTPProvider):
    """The real HTTP provider, but eth_sendRawTransaction fails in scripted ways:
    "lost" forwards the request and then raises (the node accepted it, the reply was
    lost); "503" raises an HTTP 503 without forwarding."""

    def __init__(self, url: str, script: list[str]) -> None:
        super().__init__(url, request_kwargs={"timeout": 30})
        self.script = list(script)
        self.sent = 0

    def make_request(self, method, params):
        if method == "eth_sendRawTransaction" and self.script:
            failure = self.script.pop(0)
            if failure == "lost":
                super().make_request(method, params)
                self.sent += 1
                raise requests.ConnectionError("connection reset after send")
            response = requests.Response()
            response.status_code = 503
            raise requests.HTTPError("503 Service Unavailable", response=response)
        if method == "eth_sendRawTransaction":
            self.sent += 1
        return super().make_request(method, params)


def nonce_of(w3: Web3, tx_hash: str) -> int:
    return w3.eth.get_transaction(tx_hash)["nonce"]


def test_concurrent_sends_from_one_account_get_consecutive_nonces(w3, dev_accounts):
    sender = TransactionSender(w3, dev_accounts[5])
    start = w3.eth.get_transaction_count(sender.address, "pending")
    barrier = threading.Barrier(20)

    def send(i: int):
        barrier.wait()
        return sender.send(SINK, "0x", value=i + 1)

    with ThreadPoolExecutor(max_workers=20) as pool:
        receipts = list(pool.map(send, range(20)))
    assert all(r["status"] == 1 for r in receipts)
    nonces = sorted(nonce_of(w3, r["transactionHash"]) for r in receipts)
    assert nonces == list(range(start, start + 20))
    assert w3.eth.get_transaction_count(sender.address) == start + 20


def test_stale_local_nonce_is_resynced(w3, dev_accounts):
    first = TransactionSender(w3, dev_accounts[6])
    second = TransactionSender(w3, dev_accounts[6])  # e.g. another process with the same key
    a = first.send(SINK, "0x", value=1)
    b = second.send(SINK, "0x", value=2)  # takes the nonce `first` believes is next
    c = first.send(SINK, "0x", value=3)
    assert [nonce_of(w3, r["transactionHash"]) for r in (a, b, c)] == [
        nonce_of(w3, a["transactionHash"]) + i for i in range(3)]


@pytest.mark.parametrize("script", [["lost"], ["lost", "lost"], ["503"], ["503", "lost"]])
def test_transient_send_failures_do_not_duplicate_or_skip(w3, anvil, dev_accounts, script):
    flaky = FlakyProvider(anvil.url, script)
    sender = TransactionSender(Web3(flaky), dev_accounts[7], backoff=0.01)
    start = w3.eth.get_transaction_count(sender.address, "pending")
    first = sender.send(SINK, "0x", value=1)
    second = sender.send(SINK, "0x", value=2)
    assert [nonce_of(w3, first["transactionHash"]), nonce_of(w3, second["transactionHash"])] == [start, start + 1]
    assert w3.eth.get_transaction_count(sender.address) == start + 2
    # each signed transaction reached the node exactly once: an accepted one is never re-sent
    assert flaky.sent == 2


def test_exhausted_retries_raise_and_do_not_consume_the_nonce(w3, anvil, dev_accounts):
    flaky = FlakyProvider(anvil.url, ["503"] * 3)
    sender = TransactionSender(Web3(flaky), dev_accounts[7], retries=2, backoff=0.01)
    start = w3.eth.get_transaction_count(sender.address, "pending")
    with pytest.raises(TransientRpcError):
        sender.send(SINK, "0x", value=1)
    receipt = sender.send(SINK, "0x", value=1)
    assert nonce_of(w3, receipt["transactionHash"]) == start


def test_receipt_timeout(dev_accounts, tmp_path):
    with AnvilProcess(port=free_port(), log_file=tmp_path / "anvil.log") as node:
        w3 = Web3(Web3.HTTPProvider(node.url))
        assert w3.provider.make_request("evm_setAutomine", [False])["result"] is None
        sender = TransactionSender(w3, dev_accounts[1], receipt_timeout=0.3)
        with pytest.raises(ReceiptTimeoutError, match="no receipt for transaction 0x"):
            sender.send(SINK, "0x", value=1)
        tx_hash = sender.submit(SINK, "0x", value=2)
        w3.provider.make_request("evm_mine", [])
        assert sender.wait(tx_hash)["status"] == 1


def test_transient_classification():
    def http(status: int) -> requests.HTTPError:
        response = requests.Response()
        response.status_code = status
        return requests.HTTPError(str(status), response=response)

    assert is_transient(requests.ConnectionError())
    assert is_transient(requests.Timeout())
    assert is_transient(http(429)) and is_transient(http(502))
    assert not is_transient(http(400)) and not is_transient(http(404))
    assert not is_transient(ValueError("bad"))
