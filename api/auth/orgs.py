"""Who the consortium's organisations are, as the authenticator needs to know it.

`OrgDirectory` is the small interface RequestAuthenticator depends on; `LedgerOrgDirectory`
implements it over ledger.client.LedgerClient with view calls at the latest block.
There is deliberately no cache: a deactivation or a recipient rotation must stop key
releases from the next block on, and one `isActive` call per request is cheap.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from api.errors import UnknownOrgError
from ledger.client import LedgerClient
from ledger.errors import ContractRevertError


@runtime_checkable
class OrgDirectory(Protocol):
    def is_active(self, address: str) -> bool: ...

    def is_registered(self, address: str) -> bool: ...

    def recipient_of(self, address: str) -> str:
        """The org's registered age recipient; UnknownOrgError if it is not registered."""
        ...


class LedgerOrgDirectory:
    """OrgDirectory over the Consortium contract (latest block, no cache)."""

    def __init__(self, ledger: LedgerClient) -> None:
        self.ledger = ledger

    def is_active(self, address: str) -> bool:
        return bool(self.ledger.is_active(address))

    def is_registered(self, address: str) -> bool:
        return bool(self.ledger.is_registered(address))

    def recipient_of(self, address: str) -> str:
        try:
            return self.ledger.get_org(address).age_recipient
        except ContractRevertError as exc:
            if exc.name == "ConsortiumOrgNotRegistered":
                raise UnknownOrgError(f"{address} is not a registered organisation") from None
            raise
