"""Fixtures for tests that need a real chain: one Anvil per test session (per xdist
worker) and a fresh deployment per test module. Import into a conftest.py:

    from tests.chain import anvil, w3, deployment, dev_accounts  # noqa: F401
"""
from __future__ import annotations

import pytest
from web3 import Web3

from ledger.anvil import AnvilProcess, free_port
from ledger.deployment import deploy, dev_account


@pytest.fixture(scope="session")
def anvil(tmp_path_factory):
    proc = AnvilProcess(port=free_port(), log_file=tmp_path_factory.mktemp("anvil") / "anvil.log",
                        tied_to_parent=True)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def w3(anvil) -> Web3:
    return Web3(Web3.HTTPProvider(anvil.url, request_kwargs={"timeout": 30}))


@pytest.fixture(scope="session")
def dev_accounts():
    """Anvil's ten funded development accounts; [0] is the consortium admin/deployer."""
    return [dev_account(i) for i in range(10)]


@pytest.fixture(scope="module")
def deployment(w3, dev_accounts):
    """A fresh set of contracts for each test module, so modules do not see each other's state."""
    return deploy(w3, dev_accounts[0])
