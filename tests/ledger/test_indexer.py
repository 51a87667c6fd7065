"""The indexer on a real Anvil, on SQLite and PostgreSQL: every event type lands in its
table; bad strings and non-CID bytes do not stop it; queries filter and validate."""
from __future__ import annotations

import base64

import eth_abi
import pytest
from eth_utils import function_signature_to_4byte_selector

from ledger.errors import IndexerError
from ledger.indexer import IndexQueries
from ledger.indexer._cidstr import base58btc
from ledger.models import AssetKind, Permission, VersionRef
from tests.db import db_url, pg_url  # noqa: F401
from tests.ledger.indexer_helpers import cid_v0, cid_v1, dump, fresh_commitment, synced

NEW_RECIPIENT = "age1" + "x" * 58
FOREVER = 2**64 - 1


@pytest.fixture(scope="module")
def story(w3, admin, orgs):
    """One of every event, plus the awkward cases (raw bytes as a name, a non-CID)."""
    o1, o2, o3, o4 = orgs
    now = admin.chain_time()
    s = {"orgs": [o.address for o in orgs]}
    o1.update_endpoint("https://org1.example:8443")
    o2.update_recipient(NEW_RECIPIENT)
    admin.deactivate_org(o4.address)
    admin.reactivate_org(o4.address)
    admin.deactivate_org(o3.address)

    a = o1.create_asset(AssetKind.DATASET, "line-3 vibration", b"\x11" * 32)
    v1 = o1.add_version(a.asset_id, cid_v1(b"v1"), fresh_commitment(), 1234)
    v2 = o1.add_version(a.asset_id, cid_v0(b"v2"), fresh_commitment(), 2**64 - 1, [VersionRef(a.asset_id, 1)])
    b = o2.create_asset(AssetKind.MODEL, "pump twin")
    bv = o2.add_version(b.asset_id, b"\xff\x00not-a-cid", fresh_commitment(), 7,
                        [VersionRef(a.asset_id, 2), VersionRef(a.asset_id, 1)])
    o1.grant(a.asset_id, o2.address, Permission.READ | Permission.SYNC, now + 10_000, "twin sync")
    o1.grant(a.asset_id, o4.address, Permission.COMPUTE, FOREVER, "")
    o1.revoke(a.asset_id, o4.address)
    o1.grant(a.asset_id, o2.address, Permission.READ, now + 20_000, "read only")  # replaces the first grant
    c = o1.create_asset(AssetKind.OTHER, "obsolete")
    o1.retire_asset(c.asset_id)
    o1.anchor(1, 5, b"\x01" * 32)
    o1.anchor(6, 9, b"\x02" * 32)
    o2.anchor(1, 1, b"\x03" * 32)

    # A name that is not UTF-8 and holds a NUL: Solidity accepts it, so the indexer must too.
    selector = function_signature_to_4byte_selector("createAsset(uint8,string,bytes32)")
    data = selector + eth_abi.encode(["uint8", "bytes", "bytes32"], [3, b"bad\xff\x00name", b"\0" * 32])
    tx = w3.eth.send_transaction({"from": o1.address, "to": o1.asset_ledger.address, "data": data})
    assert w3.eth.wait_for_transaction_receipt(tx)["status"] == 1
    o1.sender.resync_nonce()

    s.update(a=a, v1=v1, v2=v2, b=b, bv=bv, c=c, now=now, head=w3.eth.block_number)
    return s


def test_every_event_lands(w3, deployment, story, db_url):
    indexer, engine = synced(w3, deployment, db_url, batch_blocks=7)
    q = IndexQueries(engine)
    o1, o2, o3, o4 = story["orgs"]
    a, b, c = story["a"].asset_id, story["b"].asset_id, story["c"].asset_id
    assert indexer.indexed_block() == story["head"]

    # orgs
    by_addr = {o.address: o for o in q.orgs()}
    assert set(by_addr) == {o1, o2, o3, o4}
    assert by_addr[o1].endpoint == "https://org1.example:8443" and by_addr[o1].name == "org1"
    assert by_addr[o2].age_recipient == NEW_RECIPIENT
    assert by_addr[o3].active is False and by_addr[o4].active is True
    assert {o.address for o in q.orgs(active=False)} == {o3}
    assert q.org(o2.lower()) == by_addr[o2]
    assert q.org("0x" + "00" * 20) is None

    # assets
    asset_a = q.asset(a)
    assert (asset_a.owner, asset_a.kind, asset_a.name, asset_a.metadata_digest, asset_a.version_count) == (
        o1, AssetKind.DATASET, "line-3 vibration", "0x" + "11" * 32, 2)
    assert asset_a.created_tx == story["a"].tx.tx_hash and asset_a.created_block == story["a"].tx.block_number
    assert q.asset(c).retired is True and q.asset(c).retired_block is not None
    assert [x.asset_id for x in q.assets(owner=o2)] == [b]
    assert [x.asset_id for x in q.assets(kind=AssetKind.MODEL)] == [b]
    weird = [x for x in q.assets(owner=o1) if x.kind == AssetKind.OTHER and x.asset_id != c]
    assert [x.name for x in weird] == ["bad\ufffd\ufffdname"]
    assert c not in [x.asset_id for x in q.assets(include_retired=False)]
    every = [x.asset_id for x in q.assets()]
    assert every == sorted(every) and len(every) >= 3
    paged, cursor = [], 0
    while page := q.assets(after=cursor, limit=2):  # keyset paging in SQL, as GET /v1/assets does
        assert len(page) <= 2
        paged += [x.asset_id for x in page]
        cursor = page[-1].asset_id
    assert paged == every
    assert q.assets(after=every[-1]) == [] and q.assets(after=2**256 - 1) == []

    # versions
    v1, v2 = q.versions(a)
    assert v1.cid == "b" + base64.b32encode(cid_v1(b"v1")).decode().lower().rstrip("=")
    assert v1.cid_hex == "0x" + cid_v1(b"v1").hex() and v1.size == 1234 and v1.parents == ()
    assert v2.cid == base58btc(cid_v0(b"v2")) and v2.cid.startswith("Qm")
    assert v2.size == 2**64 - 1 and v2.parents == (VersionRef(a, 1),)
    assert v2.tx_hash == story["v2"].tx.tx_hash and v2.block_number == story["v2"].tx.block_number
    assert v2.block_timestamp == w3.eth.get_block(v2.block_number)["timestamp"]
    assert q.versions(a, after=1) == [v2]
    bv = q.version(b, 1)
    assert bv.cid is None and bv.cid_hex == "0x" + b"\xff\x00not-a-cid".hex() and bv.author == o2
    assert bv.parents == (VersionRef(a, 2), VersionRef(a, 1))  # on-chain order kept
    assert q.version_by_commitment(bv.commitment) == bv
    assert q.version(b, 2) is None

    # grants: current state and history
    g2 = q.grant(a, o2)
    assert (g2.permissions, g2.expiry, g2.purpose, g2.active) == (Permission.READ, story["now"] + 20_000,
                                                                  "read only", True)
    assert g2.in_force(story["now"], Permission.READ) and not g2.in_force(story["now"], Permission.SYNC)
    assert not g2.in_force(story["now"] + 20_000)
    g4 = q.grant(a, o4)
    assert (g4.permissions, g4.expiry, g4.active) == (Permission.COMPUTE, FOREVER, False)
    assert g4.revoked_block is not None and not g4.in_force(story["now"])
    assert [g.grantee for g in q.grants_for_asset(a)] == sorted([o2, o4])
    assert [g.grantee for g in q.grants_for_asset(a, active_only=True)] == [o2]
    assert [g.asset_id for g in q.grants_for_grantee(o4)] == [a]
    assert q.grants_for_grantee(o4, active_only=True) == []
    history = q.grant_history(a)
    assert [(h.action, h.grantee) for h in history] == [("granted", o2), ("granted", o4), ("revoked", o4),
                                                        ("granted", o2)]
    assert history[0].purpose == "twin sync" and history[2].permissions is None
    assert [h.action for h in q.grant_history(a, o2)] == ["granted", "granted"]

    # anchors
    anchors = q.anchors(o1)
    assert [(x.batch_index, x.from_seq, x.to_seq, x.merkle_root) for x in anchors] == [
        (0, 1, 5, "0x" + "01" * 32), (1, 6, 9, "0x" + "02" * 32)]
    assert q.anchor_covering(o1, 7) == anchors[1] and q.anchor_covering(o1, 10) is None
    assert [x.to_seq for x in q.anchors(o2)] == [1]
    assert q.anchors(o3) == []


def test_queries_reject_malformed_addresses(w3, deployment, story, tmp_path):
    _, engine = synced(w3, deployment, f"sqlite:///{tmp_path / 'q.db'}")
    q = IndexQueries(engine)
    for bad in ("0x123", "not an address", "0x" + "zz" * 20):
        with pytest.raises(IndexerError, match="not an Ethereum address"):
            q.grants_for_grantee(bad)
    with pytest.raises(IndexerError, match="unknown version"):
        q.ancestors(story["a"].asset_id, 99)


def test_idempotent_reapplication(w3, deployment, story, db_url):
    indexer, engine = synced(w3, deployment, db_url, batch_blocks=5)
    before = dump(engine)
    assert before["idx_processed_logs"]  # there is something to re-apply
    assert indexer.index_range(deployment.deployment_block, indexer.indexed_block()) == 0
    assert indexer.sync_once() == 0
    assert dump(engine) == before
    with pytest.raises(IndexerError, match="gap"):
        indexer.index_range(indexer.indexed_block() + 5, indexer.indexed_block() + 6)


def test_second_indexer_on_same_database_adds_nothing(w3, deployment, story, tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first, engine = synced(w3, deployment, url)
    before = dump(engine)
    second, _ = synced(w3, deployment, url, batch_blocks=3)
    assert dump(engine) == before and second.indexed_block() == first.indexed_block()


def test_confirmations_hold_back_the_tip(w3, deployment, story, tmp_path):
    indexer, _ = synced(w3, deployment, f"sqlite:///{tmp_path / 'c.db'}", confirmations=3)
    assert indexer.indexed_block() == w3.eth.block_number - 3


def test_database_of_another_deployment_is_refused(w3, deployment, dev_accounts, story, tmp_path):
    from ledger.deployment import deploy
    from ledger.indexer import Indexer

    url = f"sqlite:///{tmp_path / 'other.db'}"
    _, engine = synced(w3, deployment, url)
    other = deploy(w3, dev_accounts[0])
    with pytest.raises(IndexerError, match="use another database or rebuild"):
        Indexer(w3, other, engine).sync_once()
    fresh = Indexer(w3, other, engine)
    fresh.rebuild()  # explicit rebuild switches the database over
    assert IndexQueries(engine).orgs() == []


def test_constructor_validates_arguments(w3, deployment, tmp_path):
    from ledger.db import make_engine
    from ledger.indexer import Indexer

    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(IndexerError, match="batch_blocks"):
        Indexer(w3, deployment, engine, batch_blocks=0)
    with pytest.raises(IndexerError, match="confirmations"):
        Indexer(w3, deployment, engine, confirmations=-1)
