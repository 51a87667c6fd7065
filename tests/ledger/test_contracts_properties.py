"""Property tests against the real contracts: hasAccess vs a Python model of the rules,
and lineage (parents accepted iff they exist; the Python digest equals the chain's).
Each example runs inside an evm snapshot that is reverted afterwards."""
from __future__ import annotations

import pytest
from eth_utils import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import reverts
from ledger.client import LedgerClient
from ledger.models import AssetKind, Permission, VersionRef

MASKS = [Permission(m) for m in range(1, 8)]
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

def has_access_all_masks(client: LedgerClient, asset: int, org: str) -> list[bool]:
    """hasAccess for each of the 7 masks in one JSON-RPC batch (keeps the test quick);
    cross-checked against the client's own has_access for one mask."""
    with client.w3.batch_requests() as batch:
        for mask in MASKS:
            batch.add(client.asset_ledger.functions.hasAccess(asset, org, int(mask)))
        results = list(batch.execute())
    assert results[0] == client.has_access(asset, org, MASKS[0])
    return results


grant_op = st.tuples(st.just("grant"), st.integers(1, 7), st.integers(-5, 500), st.sampled_from(["", "audit"]))
revoke_op = st.tuples(st.just("revoke"))
time_op = st.tuples(st.just("time"), st.integers(1, 400))
deactivate_op = st.tuples(st.just("toggle"))


@pytest.mark.slow
@SETTINGS
@given(ops=st.lists(st.one_of(grant_op, revoke_op, time_op, deactivate_op), min_size=1, max_size=5))
def test_has_access_matches_model(admin, orgs, chain, ops):
    owner, grantee = orgs[0], orgs[1].address
    with chain.isolated():
        asset = owner.create_asset(AssetKind.DATASET, "prop").asset_id
        perms, expiry, purpose, active = 0, 0, "", True
        for op in ops:
            now = owner.chain_time()
            if op[0] == "grant":
                _, mask, offset, new_purpose = op
                if not active:
                    with pytest.raises(reverts.AssetLedgerOrgNotActive):
                        owner.grant(asset, grantee, Permission(mask), now + offset, new_purpose)
                elif offset <= 0:
                    # the grant is mined in the next block, at a timestamp >= now + 1
                    with pytest.raises(reverts.AssetLedgerExpiryNotInFuture):
                        owner.grant(asset, grantee, Permission(mask), now + offset, new_purpose)
                else:
                    tx = owner.grant(asset, grantee, Permission(mask), now + offset + 1, new_purpose)
                    assert tx.block_number == owner.block_number()
                    perms, expiry, purpose = mask, now + offset + 1, new_purpose
            elif op[0] == "revoke":
                if perms == 0:
                    with pytest.raises(reverts.AssetLedgerNoGrant):
                        owner.revoke(asset, grantee)
                else:
                    owner.revoke(asset, grantee)
                    perms, expiry, purpose = 0, 0, ""
            elif op[0] == "time":
                chain.increase_time(op[1])
            else:
                (admin.reactivate_org if not active else admin.deactivate_org)(grantee)
                active = not active
            now = owner.chain_time()
            expected = [active and perms & mask == mask and now < expiry for mask in MASKS]
            assert has_access_all_masks(owner, asset, grantee) == expected, (op, perms, expiry, now)
            if perms:
                expected = active and now < expiry
                assert owner.has_access_for(asset, grantee, Permission(perms), purpose) == expected
                assert not owner.has_access_for(asset, grantee, Permission(perms), purpose + "x")


parent_ref = st.tuples(st.integers(0, 2), st.integers(0, 3))  # (asset index, version); 0 never exists


@pytest.mark.slow
@SETTINGS
@given(steps=st.lists(st.tuples(st.integers(0, 1), st.lists(parent_ref, max_size=3)), min_size=1, max_size=6))
def test_lineage_parents_accepted_iff_they_exist(orgs, chain, steps):
    owners = [orgs[0], orgs[1]]
    with chain.isolated():
        assets = [owners[0].create_asset(AssetKind.MODEL, "a").asset_id,
                  owners[1].create_asset(AssetKind.DATASET, "b").asset_id]
        unknown_asset = assets[-1] + 1
        counts = {assets[0]: 0, assets[1]: 0}
        for n, (which, raw_parents) in enumerate(steps):
            asset = assets[which]
            client = owners[which]
            parents = [VersionRef(assets[i] if i < 2 else unknown_asset, v) for i, v in raw_parents]
            cid = bytes.fromhex("01551220") + keccak(text=f"cid {n}")
            commitment = keccak(text=f"commitment {n}")
            valid = all(1 <= p.version <= counts.get(p.asset_id, 0) for p in parents)
            if not valid:
                first_bad = next(p for p in parents if not 1 <= p.version <= counts.get(p.asset_id, 0))
                with pytest.raises(reverts.AssetLedgerUnknownParent) as exc:
                    client.add_version(asset, cid, commitment, n, parents)
                assert exc.value.args_by_name == {"assetId": first_bad.asset_id, "version": first_bad.version}
                continue
            added = client.add_version(asset, cid, commitment, n, parents)
            counts[asset] += 1
            assert added.version == counts[asset]
            timestamp = client.w3.eth.get_block(added.tx.block_number)["timestamp"]
            expected = LedgerClient.compute_version_digest(asset, added.version, cid, commitment, n, parents,
                                                           client.address, timestamp)
            assert client.version_digest(asset, added.version) == expected
