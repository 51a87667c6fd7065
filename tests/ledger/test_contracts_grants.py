"""Grants, revocation, expiry and hasAccess/hasAccessFor on a real Anvil."""
from __future__ import annotations

import pytest

from ledger import reverts
from ledger.client import purpose_hash
from ledger.models import AssetKind, GrantState, Permission

READ, SYNC, COMPUTE = Permission.READ, Permission.SYNC, Permission.COMPUTE


@pytest.fixture()
def asset(orgs, isolated) -> int:
    return orgs[0].create_asset(AssetKind.DATASET, "line 3 sensors").asset_id


def test_grant_is_stored_and_gives_exactly_its_bits(orgs, asset):
    owner, grantee = orgs[0], orgs[1]
    expiry = owner.chain_time() + 3600
    owner.grant(asset, grantee.address, READ | SYNC, expiry, "maintenance")
    assert owner.get_grant(asset, grantee.address) == GrantState(READ | SYNC, expiry, purpose_hash("maintenance"))
    assert owner.has_access(asset, grantee.address, READ)
    assert owner.has_access(asset, grantee.address, READ | SYNC)
    assert not owner.has_access(asset, grantee.address, COMPUTE)
    assert not owner.has_access(asset, grantee.address, READ | COMPUTE)
    assert not owner.has_access(asset, orgs[2].address, READ)
    assert owner.has_access(asset, owner.address, READ | SYNC | COMPUTE)  # owners always


def test_grant_replaces_previous_grant(orgs, asset):
    owner, grantee = orgs[0], orgs[1].address
    owner.grant(asset, grantee, READ | COMPUTE, owner.chain_time() + 100, "a")
    owner.grant(asset, grantee, SYNC, owner.chain_time() + 200, "b")
    assert not owner.has_access(asset, grantee, READ)
    assert owner.has_access(asset, grantee, SYNC)
    assert owner.get_grant(asset, grantee).purpose_hash == purpose_hash("b")


def test_only_the_owner_grants_and_revokes(orgs, asset):
    with pytest.raises(reverts.AssetLedgerNotOwner) as exc:
        orgs[1].grant(asset, orgs[2].address, READ, orgs[1].chain_time() + 100)
    assert exc.value.args_by_name == {"assetId": asset, "caller": orgs[1].address}
    orgs[0].grant(asset, orgs[2].address, READ, orgs[0].chain_time() + 100)
    with pytest.raises(reverts.AssetLedgerNotOwner) as revoke:
        orgs[2].revoke(asset, orgs[2].address)
    assert revoke.value.args_by_name == {"assetId": asset, "caller": orgs[2].address}


def test_grant_to_owner_and_to_inactive_or_unregistered_orgs(admin, orgs, outsider, asset):
    owner = orgs[0]
    expiry = owner.chain_time() + 100
    with pytest.raises(reverts.AssetLedgerGrantToOwner) as to_owner:
        owner.grant(asset, owner.address, READ, expiry)
    assert to_owner.value.args_by_name == {"assetId": asset, "grantee": owner.address}
    with pytest.raises(reverts.AssetLedgerOrgNotActive) as unregistered:
        owner.grant(asset, outsider.address, READ, expiry)
    assert unregistered.value.args_by_name == {"org": outsider.address}
    admin.deactivate_org(orgs[3].address)
    with pytest.raises(reverts.AssetLedgerOrgNotActive) as inactive:
        owner.grant(asset, orgs[3].address, READ, expiry)
    assert inactive.value.args_by_name == {"org": orgs[3].address}


@pytest.mark.parametrize("mask", [0, 8, 0xFF])
def test_invalid_permission_masks(orgs, asset, mask):
    with pytest.raises(reverts.AssetLedgerInvalidPermissions) as exc:
        orgs[0].grant(asset, orgs[1].address, mask, orgs[0].chain_time() + 100)
    assert exc.value.args == (mask,)
    with pytest.raises(reverts.AssetLedgerInvalidPermissions):
        orgs[0].has_access(asset, orgs[1].address, mask)


def test_expiry_must_be_in_the_future(orgs, asset):
    now = orgs[0].chain_time()
    with pytest.raises(reverts.AssetLedgerExpiryNotInFuture) as exc:
        orgs[0].grant(asset, orgs[1].address, READ, now)
    assert exc.value.args_by_name["expiry"] == now
    assert exc.value.args_by_name["blockTimestamp"] >= now


def test_purpose_length(orgs, asset):
    orgs[0].grant(asset, orgs[1].address, READ, orgs[0].chain_time() + 100, "p" * 256)
    with pytest.raises(reverts.AssetLedgerPurposeTooLong) as exc:
        orgs[0].grant(asset, orgs[1].address, READ, orgs[0].chain_time() + 100, "p" * 257)
    assert exc.value.args_by_name == {"length": 257, "max": 256}


def test_grant_expires_with_chain_time(orgs, asset, isolated):
    owner, grantee = orgs[0], orgs[1].address
    expiry = owner.chain_time() + 1000
    owner.grant(asset, grantee, READ, expiry)
    isolated.set_time(expiry - 1)  # last second of validity
    assert owner.chain_time() == expiry - 1
    assert owner.has_access(asset, grantee, READ)
    isolated.set_time(expiry)
    assert owner.chain_time() == expiry
    assert not owner.has_access(asset, grantee, READ)
    assert owner.has_access(asset, owner.address, READ)


def test_revocation_ends_access_from_the_next_block(orgs, asset):
    owner, grantee = orgs[0], orgs[1].address
    granted = owner.grant(asset, grantee, READ, owner.chain_time() + 1000, "x")
    revoked = owner.revoke(asset, grantee)
    assert not owner.has_access(asset, grantee, READ)
    assert owner.get_grant(asset, grantee) == GrantState(Permission(0), 0, b"\0" * 23)
    # historical reads still see the grant
    assert owner.has_access(asset, grantee, READ, block_identifier=granted.block_number)
    assert not owner.has_access(asset, grantee, READ, block_identifier=revoked.block_number)
    with pytest.raises(reverts.AssetLedgerNoGrant) as exc:
        owner.revoke(asset, grantee)
    assert exc.value.args_by_name == {"assetId": asset, "grantee": grantee}


def test_inactive_grantee_or_owner_and_retired_asset_lose_access(admin, orgs, asset):
    owner, grantee = orgs[0], orgs[1].address
    owner.grant(asset, grantee, READ, owner.chain_time() + 1000)
    admin.deactivate_org(grantee)
    assert not owner.has_access(asset, grantee, READ)
    admin.reactivate_org(grantee)
    assert owner.has_access(asset, grantee, READ)
    admin.deactivate_org(owner.address)
    assert not owner.has_access(asset, grantee, READ)
    assert not owner.has_access(asset, owner.address, READ)
    admin.reactivate_org(owner.address)
    owner.retire_asset(asset)
    assert not owner.has_access(asset, grantee, READ)
    assert not owner.has_access(asset, owner.address, READ)
    owner.revoke(asset, grantee)  # revoking stays possible on a retired asset


def test_unknown_asset_has_no_access(orgs, asset):
    assert not orgs[0].has_access(asset + 1, orgs[0].address, READ)


def test_purpose_binding(orgs, asset):
    owner, grantee = orgs[0], orgs[1].address
    owner.grant(asset, grantee, READ | COMPUTE, owner.chain_time() + 1000, "predictive maintenance")
    assert owner.has_access_for(asset, grantee, READ, "predictive maintenance")
    assert not owner.has_access_for(asset, grantee, READ, "marketing")
    assert not owner.has_access_for(asset, grantee, READ, "")
    assert not owner.has_access_for(asset, grantee, SYNC, "predictive maintenance")
    assert owner.has_access_for(asset, owner.address, SYNC, "anything at all")
    owner.grant(asset, orgs[2].address, READ, owner.chain_time() + 1000)  # purpose ""
    assert owner.has_access_for(asset, orgs[2].address, READ, "")
    assert not owner.has_access_for(asset, orgs[2].address, READ, "x")
