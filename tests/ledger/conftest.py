"""Ledger test fixtures: the shared chain fixtures (one Anvil per session, one deployment
per module) plus LedgerClients for the admin and four registered orgs."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from ledger.client import LedgerClient
from tests.chain import anvil, dev_accounts, deployment, w3  # noqa: F401

RECIPIENTS = ["age1" + c * 58 for c in "qpzry"]


class Chain:
    """Test-only helpers for Anvil's dev RPCs: time travel and snapshots."""

    def __init__(self, w3, clients: list[LedgerClient]) -> None:
        self.w3 = w3
        self.clients = clients

    def rpc(self, method: str, *params):
        response = self.w3.provider.make_request(method, list(params))
        if "error" in response:
            raise RuntimeError(f"{method}: {response['error']}")
        return response["result"]

    def increase_time(self, seconds: int) -> None:
        """Advance the chain clock by `seconds` and mine a block (never sleep)."""
        self.rpc("evm_increaseTime", seconds)
        self.rpc("evm_mine")

    def set_time(self, timestamp: int) -> None:
        """Mine a block with exactly this timestamp. increase_time() is relative to the
        wall clock too (Anvil: the next block is at least `now + offset`), so a second
        that ticks between reading the chain time and mining would shift the result."""
        self.rpc("evm_setNextBlockTimestamp", timestamp)
        self.rpc("evm_mine")

    def mine(self) -> None:
        self.rpc("evm_mine")

    @contextlib.contextmanager
    def isolated(self) -> Iterator[None]:
        """Everything done inside is undone afterwards (evm_snapshot/evm_revert); the
        clients' local nonces are resynced since the revert rewinds account nonces."""
        snapshot = self.rpc("evm_snapshot")
        try:
            yield
        finally:
            assert self.rpc("evm_revert", snapshot) is True
            for client in self.clients:
                if client.sender is not None:
                    client.sender.resync_nonce()


@pytest.fixture(scope="module")
def admin(w3, deployment, dev_accounts) -> LedgerClient:
    return LedgerClient(w3, deployment, dev_accounts[0])


@pytest.fixture(scope="module")
def orgs(w3, deployment, dev_accounts, admin) -> list[LedgerClient]:
    """Clients of dev accounts 1..4, each registered (active) as org{i}."""
    clients = []
    for i in range(1, 5):
        account = dev_accounts[i]
        admin.register_org(account.address, f"org{i}", RECIPIENTS[i - 1], f"http://127.0.0.1:{9000 + i}")
        clients.append(LedgerClient(w3, deployment, account))
    return clients


@pytest.fixture(scope="module")
def outsider(w3, deployment, dev_accounts) -> LedgerClient:
    """A funded account that is not registered in the consortium."""
    return LedgerClient(w3, deployment, dev_accounts[9])


@pytest.fixture(scope="module")
def chain(w3, admin, orgs, outsider) -> Chain:
    return Chain(w3, [admin, *orgs, outsider])


@pytest.fixture()
def isolated(chain) -> Iterator[Chain]:
    """Run the test inside an evm snapshot, reverted afterwards."""
    with chain.isolated():
        yield chain
