"""Fixtures for the node foundation tests: a real Anvil + deployment (tests/chain.py),
registered organisations with real age identities, and databases (tests/db.py)."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
from eth_account.signers.local import LocalAccount

from ledger.client import LedgerClient
from tests.chain import anvil, deployment, dev_accounts, w3  # noqa: F401
from tests.db import db_url, pg_url  # noqa: F401
from vault.age import X25519Identity


@dataclass(frozen=True)
class Member:
    account: LocalAccount
    identity: X25519Identity

    @property
    def address(self) -> str:
        return self.account.address

    @property
    def recipient(self) -> str:
        return str(self.identity.recipient)


@pytest.fixture(scope="module")
def admin_ledger(w3, deployment, dev_accounts) -> LedgerClient:  # noqa: F811
    return LedgerClient(w3, deployment, dev_accounts[0])


@pytest.fixture(scope="module")
def members(admin_ledger, dev_accounts) -> dict[str, Member]:  # noqa: F811
    """alice, bob: active orgs; carol: registered then deactivated; mallory: never registered."""
    out = {}
    for index, name in ((1, "alice"), (2, "bob"), (3, "carol"), (4, "mallory")):
        member = Member(dev_accounts[index], X25519Identity.generate())
        if name != "mallory":
            admin_ledger.register_org(member.address, name, member.recipient, f"http://127.0.0.1:{8700 + index}")
        out[name] = member
    admin_ledger.deactivate_org(out["carol"].address)
    return out
