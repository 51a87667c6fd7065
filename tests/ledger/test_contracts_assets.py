"""AssetLedger assets and versions (incl. lineage) on a real Anvil, exact decoded errors."""
from __future__ import annotations

import itertools

import pytest
from eth_utils import keccak

from ledger import reverts
from ledger.client import LedgerClient
from ledger.models import AssetKind, AssetState, VersionRef

CID = bytes.fromhex("01551220") + keccak(b"content")  # CIDv1 raw sha2-256: 36 bytes
_counter = itertools.count()


def commitment() -> bytes:
    return keccak(text=f"commitment-{next(_counter)}")


@pytest.fixture()
def asset(orgs, isolated) -> int:
    return orgs[0].create_asset(AssetKind.MODEL, "twin model").asset_id


def test_create_asset_assigns_consecutive_ids_and_records_owner(orgs, isolated):
    before = orgs[0].asset_count()
    first = orgs[0].create_asset(AssetKind.DATASET, "sensor data", keccak(b"meta"))
    second = orgs[1].create_asset(AssetKind.REPORT, "validation")
    assert (first.asset_id, second.asset_id) == (before + 1, before + 2)
    assert orgs[0].asset_count() == before + 2
    assert orgs[0].get_asset(first.asset_id) == AssetState(first.asset_id, orgs[0].address, AssetKind.DATASET,
                                                           False, 0)
    assert orgs[0].get_asset(second.asset_id).owner == orgs[1].address
    event = orgs[0].asset_ledger.events.AssetCreated().process_receipt(
        orgs[0].w3.eth.get_transaction_receipt(first.tx.tx_hash))[0]["args"]
    assert (event["metadataDigest"], event["name"], event["kind"]) == (keccak(b"meta"), "sensor data", 1)


def test_create_asset_requires_active_registered_org(admin, orgs, outsider, isolated):
    with pytest.raises(reverts.AssetLedgerOrgNotActive) as exc:
        outsider.create_asset(AssetKind.MODEL, "x")
    assert exc.value.args_by_name == {"org": outsider.address}
    admin.deactivate_org(orgs[1].address)
    with pytest.raises(reverts.AssetLedgerOrgNotActive) as inactive:
        orgs[1].create_asset(AssetKind.MODEL, "x")
    assert inactive.value.args_by_name == {"org": orgs[1].address}


@pytest.mark.parametrize("name", ["", "n" * 129])
def test_create_asset_validates_name(orgs, isolated, name):
    with pytest.raises(reverts.AssetLedgerInvalidName) as exc:
        orgs[0].create_asset(AssetKind.OTHER, name)
    assert exc.value.args == (name,)


def test_unknown_asset(orgs, isolated):
    unknown = orgs[0].asset_count() + 1
    with pytest.raises(reverts.AssetLedgerUnknownAsset) as exc:
        orgs[0].get_asset(unknown)
    assert exc.value.args == (unknown,)
    with pytest.raises(reverts.AssetLedgerUnknownAsset):
        orgs[0].add_version(unknown, CID, commitment(), 1)


def test_add_version_records_digest_and_commitment(orgs, asset):
    c = commitment()
    added = orgs[0].add_version(asset, CID, c, 1234)
    assert (added.asset_id, added.version) == (asset, 1)
    assert orgs[0].get_asset(asset).version_count == 1
    assert orgs[0].version_by_commitment(c) == (asset, 1)
    assert orgs[0].version_by_commitment(commitment()) is None
    timestamp = orgs[0].w3.eth.get_block(added.tx.block_number)["timestamp"]
    expected = LedgerClient.compute_version_digest(asset, 1, CID, c, 1234, (), orgs[0].address, timestamp)
    assert orgs[0].version_digest(asset, 1) == expected
    assert orgs[0].version_digest(asset, 2) == b"\0" * 32


def test_only_the_owner_adds_versions(orgs, asset):
    with pytest.raises(reverts.AssetLedgerNotOwner) as exc:
        orgs[1].add_version(asset, CID, commitment(), 1)
    assert exc.value.args_by_name == {"assetId": asset, "caller": orgs[1].address}


def test_deactivated_owner_cannot_add_versions(admin, orgs, asset):
    admin.deactivate_org(orgs[0].address)
    with pytest.raises(reverts.AssetLedgerOrgNotActive) as exc:
        orgs[0].add_version(asset, CID, commitment(), 1)
    assert exc.value.args_by_name == {"org": orgs[0].address}


@pytest.mark.parametrize("cid", [b"", b"\x01" * 129])
def test_cid_length_is_checked(orgs, asset, cid):
    with pytest.raises(reverts.AssetLedgerInvalidCid) as exc:
        orgs[0].add_version(asset, cid, commitment(), 1)
    assert exc.value.args == (cid,)


def test_zero_commitment_is_rejected(orgs, asset):
    with pytest.raises(reverts.AssetLedgerInvalidCommitment) as exc:
        orgs[0].add_version(asset, CID, b"\0" * 32, 1)
    assert exc.value.args == (b"\0" * 32,)


def test_duplicate_commitment_names_the_existing_version(orgs, asset):
    c = commitment()
    orgs[0].add_version(asset, CID, commitment(), 1)
    orgs[0].add_version(asset, CID, c, 1)
    other = orgs[0].create_asset(AssetKind.MODEL, "other").asset_id
    with pytest.raises(reverts.AssetLedgerDuplicateCommitment) as exc:
        orgs[0].add_version(other, CID, c, 1)
    assert exc.value.args_by_name == {"commitment": c, "assetId": asset, "version": 2}


def test_parents_must_exist(orgs, asset):
    orgs[0].add_version(asset, CID, commitment(), 1)
    foreign = orgs[1].create_asset(AssetKind.DATASET, "input").asset_id
    orgs[1].add_version(foreign, CID, commitment(), 1)
    # a version of another org's asset and an earlier version of the same asset are fine
    added = orgs[0].add_version(asset, CID, commitment(), 1, [VersionRef(foreign, 1), VersionRef(asset, 1)])
    assert added.version == 2
    for bad in (VersionRef(asset, 0), VersionRef(asset, 3), VersionRef(foreign, 2), VersionRef(10**6, 1)):
        with pytest.raises(reverts.AssetLedgerUnknownParent) as exc:
            orgs[0].add_version(asset, CID, commitment(), 1, [VersionRef(foreign, 1), bad])
        assert exc.value.args_by_name == {"assetId": bad.asset_id, "version": bad.version}


def test_at_most_32_parents(orgs, asset):
    orgs[0].add_version(asset, CID, commitment(), 1)
    orgs[0].add_version(asset, CID, commitment(), 1, [VersionRef(asset, 1)] * 32)
    with pytest.raises(reverts.AssetLedgerTooManyParents) as exc:
        orgs[0].add_version(asset, CID, commitment(), 1, [VersionRef(asset, 1)] * 33)
    assert exc.value.args_by_name == {"count": 33, "max": 32}


def test_retired_asset_takes_no_versions_or_grants(orgs, asset):
    orgs[0].add_version(asset, CID, commitment(), 1)
    with pytest.raises(reverts.AssetLedgerNotOwner):
        orgs[1].retire_asset(asset)
    orgs[0].retire_asset(asset)
    assert orgs[0].get_asset(asset).retired is True
    for action in (lambda: orgs[0].add_version(asset, CID, commitment(), 1),
                   lambda: orgs[0].retire_asset(asset),
                   lambda: orgs[0].grant(asset, orgs[1].address, 1, orgs[0].chain_time() + 100)):
        with pytest.raises(reverts.AssetLedgerAssetRetired) as exc:
            action()
        assert exc.value.args == (asset,)
