"""Consortium rules on a real Anvil through LedgerClient, with exact decoded errors."""
from __future__ import annotations

import pytest
from eth_utils import keccak

from ledger import reverts
from ledger.models import OrgInfo
from tests.ledger.conftest import RECIPIENTS

ADMIN_ROLE = keccak(text="CONSORTIUM_ADMIN_ROLE")
NEW_RECIPIENT = "age1" + "x" * 58


def test_registered_orgs_are_members_with_their_records(admin, orgs, chain):
    assert admin.members() == [c.address for c in orgs]
    info = admin.get_org(orgs[0].address)
    assert info == OrgInfo(address=orgs[0].address, name="org1", age_recipient=RECIPIENTS[0],
                           endpoint="http://127.0.0.1:9001", active=True, registered_at=info.registered_at)
    assert 0 < info.registered_at <= admin.chain_time()
    assert admin.is_active(orgs[0].address) and admin.is_registered(orgs[0].address)


def test_unregistered_address_is_neither_registered_nor_active(admin, outsider):
    assert not admin.is_registered(outsider.address)
    assert not admin.is_active(outsider.address)
    with pytest.raises(reverts.ConsortiumOrgNotRegistered) as exc:
        admin.get_org(outsider.address)
    assert exc.value.args_by_name == {"org": outsider.address}


@pytest.mark.parametrize("fn", ["register", "deactivate", "reactivate"])
def test_admin_only_functions_reject_other_accounts(fn, orgs, outsider, isolated):
    caller = orgs[0]
    with pytest.raises(reverts.AccessControlUnauthorizedAccount) as exc:
        if fn == "register":
            caller.register_org(outsider.address, "x", RECIPIENTS[0], "http://x")
        elif fn == "deactivate":
            caller.deactivate_org(orgs[1].address)
        else:
            caller.reactivate_org(orgs[1].address)
    assert exc.value.args_by_name == {"account": caller.address, "neededRole": ADMIN_ROLE}
    assert exc.value.name == "AccessControlUnauthorizedAccount"


def test_register_rejects_duplicates_and_zero_address(admin, orgs, isolated):
    with pytest.raises(reverts.ConsortiumOrgAlreadyRegistered) as exc:
        admin.register_org(orgs[0].address, "again", RECIPIENTS[0], "http://x")
    assert exc.value.args == (orgs[0].address,)
    with pytest.raises(reverts.ConsortiumZeroAddress) as zero:
        admin.register_org("0x" + "00" * 20, "zero", RECIPIENTS[0], "http://x")
    assert zero.value.args == ()


@pytest.mark.parametrize(("name", "recipient", "endpoint", "error", "arg"), [
    ("", RECIPIENTS[0], "http://x", "ConsortiumInvalidName", ""),
    ("n" * 65, RECIPIENTS[0], "http://x", "ConsortiumInvalidName", "n" * 65),
    ("ok", "age1short", "http://x", "ConsortiumInvalidRecipient", "age1short"),
    ("ok", "agex" + "q" * 58, "http://x", "ConsortiumInvalidRecipient", "agex" + "q" * 58),
    ("ok", RECIPIENTS[0], "", "ConsortiumInvalidEndpoint", ""),
    ("ok", RECIPIENTS[0], "h" * 257, "ConsortiumInvalidEndpoint", "h" * 257),
])
def test_register_validates_fields(admin, outsider, isolated, name, recipient, endpoint, error, arg):
    with pytest.raises(getattr(reverts, error)) as exc:
        admin.register_org(outsider.address, name, recipient, endpoint)
    assert exc.value.args == (arg,)


def test_limits_are_inclusive(admin, outsider, isolated):
    admin.register_org(outsider.address, "n" * 64, RECIPIENTS[0], "h" * 256)
    assert admin.get_org(outsider.address).name == "n" * 64


def test_deactivate_and_reactivate(admin, orgs, isolated):
    target = orgs[1].address
    admin.deactivate_org(target)
    assert not admin.is_active(target) and admin.is_registered(target)
    assert admin.get_org(target).active is False
    with pytest.raises(reverts.ConsortiumOrgNotActive) as exc:
        admin.deactivate_org(target)
    assert exc.value.args_by_name == {"org": target}
    admin.reactivate_org(target)
    assert admin.is_active(target)
    with pytest.raises(reverts.ConsortiumOrgAlreadyActive) as again:
        admin.reactivate_org(target)
    assert again.value.args_by_name == {"org": target}


def test_deactivate_unregistered_reverts(admin, outsider, isolated):
    for action in (admin.deactivate_org, admin.reactivate_org):
        with pytest.raises(reverts.ConsortiumOrgNotRegistered) as exc:
            action(outsider.address)
        assert exc.value.args_by_name == {"org": outsider.address}


def test_org_updates_its_own_recipient_and_endpoint(admin, orgs, isolated):
    org = orgs[2]
    org.update_recipient(NEW_RECIPIENT)
    org.update_endpoint("https://node.example:8443")
    info = admin.get_org(org.address)
    assert (info.age_recipient, info.endpoint) == (NEW_RECIPIENT, "https://node.example:8443")
    assert admin.get_org(orgs[1].address).age_recipient == RECIPIENTS[1]  # nobody else changed
    with pytest.raises(reverts.ConsortiumInvalidRecipient):
        org.update_recipient("age1")
    with pytest.raises(reverts.ConsortiumInvalidEndpoint):
        org.update_endpoint("")


def test_updates_need_a_registered_active_org(admin, orgs, outsider, isolated):
    with pytest.raises(reverts.ConsortiumOrgNotRegistered) as exc:
        outsider.update_recipient(NEW_RECIPIENT)
    assert exc.value.args_by_name == {"org": outsider.address}
    admin.deactivate_org(orgs[3].address)
    with pytest.raises(reverts.ConsortiumOrgNotActive) as inactive:
        orgs[3].update_endpoint("http://new")
    assert inactive.value.args_by_name == {"org": orgs[3].address}
