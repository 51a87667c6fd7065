"""Audit routes on a real node, SQLite and PostgreSQL: filters and keyset pagination,
head, proofs only after anchoring, every proof verifying against the chain alone, and
editing / deleting / inserting a stored audit row being detected."""
from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import text

from ledger.audit import AuditProof, Reason, verify_log, verify_proof
from ledger.audit.chain import ChainAnchors
from ledger.audit.records import AuditRecord
from ledger.client import LedgerClient
from ledger.deployment import deploy
from ledger.errors import AuditVerificationError
from tests.api.conftest import Member as Org
from tests.api.node_fixtures import NodeHarness, database, key_body, key_request
from vault.age import X25519Identity




@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def world(request, w3, dev_accounts, tmp_path_factory):
    """A deployment of its own per backend: audit anchors are per org on chain, so two
    logs of the same org (one per database) cannot share a deployment."""
    home = tmp_path_factory.mktemp(f"audit-{request.param}")
    deployment = deploy(w3, dev_accounts[0])
    admin = LedgerClient(w3, deployment, dev_accounts[0])
    orgs = {name: Org(dev_accounts[i], X25519Identity.generate()) for i, name in ((1, "alice"), (2, "bob"))}
    for name, org in orgs.items():
        admin.register_org(org.address, name, org.recipient, "http://127.0.0.1:8700")
    with database(request.param, home) as url, \
            NodeHarness.start(orgs["alice"].account, orgs["alice"].identity, "alice", w3, deployment, home,
                              url) as harness:
        bob = orgs["bob"]
        asset = harness.create_asset("audited")
        assert harness.publish(asset, b"rows\n" * 100, key=f"audit-{request.param}").status_code == 201
        harness.grant(asset, bob.address, ["READ"])
        for purpose in ("maintenance", "maintenance", "wrong"):
            body = key_body(key_request(bob.account, bob.recipient, asset, 1, purpose=purpose,
                                        deadline=int(time.time()) + 60), bob.account, harness.domain)
            harness.client.post("/v1/keys", json=body)
        harness.asset = asset
        yield harness, ChainAnchors(LedgerClient(w3, deployment)), orgs  # the verifier: the chain alone


@pytest.fixture(scope="module")
def alice(world):
    return world[0]


@pytest.fixture(scope="module")
def source(world) -> ChainAnchors:
    return world[1]


@pytest.fixture(scope="module")
def members(world):
    return world[2]


def _all(harness: NodeHarness, query: str, limit: int) -> list[dict]:
    items, after = [], 0
    while after is not None:
        page = harness.get(f"/v1/audit/records?{query}&limit={limit}&after_seq={after}").json()
        items += page["items"]
        after = page["next_after_seq"]
    return items


def test_records_filter_and_paginate(alice, members):
    log = alice.node.audit
    everything = [r.seq for r in log.query(limit=1000).records]
    assert everything == list(range(1, log.last_seq() + 1))
    paged = _all(alice, "x=1", 2)
    assert [r["seq"] for r in paged] == everything  # keyset pages: no gaps, no repeats
    for item in paged:
        record = AuditRecord.from_json_obj({"v": 1, **{k: item[k] for k in (
            "seq", "kind", "time", "org", "actor", "asset", "version", "details")}})
        assert record.canonical().decode() == item["canonical"] and "0x" + record.record_hash().hex() == item["record_hash"]
    kinds = {r["kind"] for r in paged}
    assert {"asset_created", "asset_published", "grant_issued", "key_released", "key_denied"} <= kinds
    released = _all(alice, "kind=key_released", 1)
    assert [r["details"]["purpose"] for r in released] == ["maintenance", "maintenance"]
    by_bob = _all(alice, f"actor={members['bob'].address}", 50)
    assert {r["kind"] for r in by_bob} == {"key_released", "key_denied"}
    by_asset = _all(alice, f"asset={alice.asset}", 50)
    assert len(by_asset) == len([r for r in paged if r["asset"] == alice.asset])
    middle = paged[len(paged) // 2]["time"]
    since = _all(alice, f"since={middle}", 50)
    until = _all(alice, f"until={middle}", 50)
    assert sorted(r["seq"] for r in since + until) == everything
    assert all(r["time"] >= middle for r in since) and all(r["time"] < middle for r in until)


def test_proofs_only_after_anchoring_and_each_verifies_on_chain(alice, source):
    log = alice.node.audit
    last = log.last_seq()
    head = alice.get("/v1/audit/head").json()
    assert head == {"org": alice.address, "last_seq": last, "anchored_seq": head["anchored_seq"],
                    "batches": head["batches"]}
    if head["anchored_seq"] < last:
        pending = alice.get(f"/v1/audit/records/{last}/proof")
        assert (pending.status_code, pending.json()["error"]) == (404, "not_anchored_yet")
    unknown = alice.get(f"/v1/audit/records/{last + 100}/proof")
    assert (unknown.status_code, unknown.json()["error"]) == (404, "unknown_audit_record")
    alice.node.anchorer.anchor_pending()
    head = alice.get("/v1/audit/head").json()
    assert head["anchored_seq"] == last and head["batches"] >= 1
    for seq in range(1, last + 1):
        response = alice.get(f"/v1/audit/records/{seq}/proof")
        assert response.status_code == 200, response.text
        proof = AuditProof.from_dict(response.json())
        record = verify_proof(proof, source)  # chain alone
        assert record.seq == seq and record.org == alice.address
        assert source.verify_record(proof.org, proof.to_seq, seq, proof.record_hash, proof.proof)  # on-chain check
    # new records form the next batch
    more = alice.post_json("/v1/assets", {"kind": "other", "name": "after anchoring"}).json()["audit_seq"]
    assert alice.get(f"/v1/audit/records/{more}/proof").json()["error"] == "not_anchored_yet"
    alice.node.anchorer.anchor_pending()
    verify_proof(alice.get(f"/v1/audit/records/{more}/proof").json(), source)
    assert verify_log(log.iter_raw(), source, alice.address, batches=log.batches()).ok


def _row(conn, org: str, seq: int):
    return conn.execute(text("SELECT * FROM audit_records WHERE org = :o AND seq = :s"), {"o": org, "s": seq}).one()


def _insert(conn, row) -> None:
    values = dict(row._mapping)
    conn.execute(text("INSERT INTO audit_records (org, seq, kind, time, actor, asset_id, version, record_hash, "
                      "canonical) VALUES (:org, :seq, :kind, :time, :actor, :asset_id, :version, :record_hash, "
                      ":canonical)"), values)


@pytest.mark.parametrize("tamper", ["edit", "edit_with_rehash", "delete", "insert"])
def test_tampering_with_stored_records_is_detected(alice, source, tamper):
    node, log = alice.node, alice.node.audit
    if log.batched_seq() < log.last_seq():
        node.anchorer.anchor_pending()
    org, target = alice.address, 3
    good = alice.get(f"/v1/audit/records/{target}/proof").json()
    assert verify_log(log.iter_raw(), source, org, batches=log.batches()).ok
    last = log.last_seq()
    with node.engine.begin() as conn:
        saved = [_row(conn, org, s) for s in range(target, last + 1)]
    original = AuditRecord.from_json_obj(json.loads(saved[0].canonical))
    forged = AuditRecord(seq=original.seq, kind=original.kind, time=original.time, org=original.org,
                         actor="0x" + "00" * 20, asset_id=original.asset_id, version=original.version,
                         details=original.details)
    try:
        with node.engine.begin() as conn:
            if tamper.startswith("edit"):
                values = {"c": forged.canonical().decode(), "o": org, "s": target,
                          "h": forged.record_hash() if tamper == "edit_with_rehash" else saved[0].record_hash}
                conn.execute(text("UPDATE audit_records SET canonical = :c, record_hash = :h "
                                  "WHERE org = :o AND seq = :s"), values)
            elif tamper == "delete":
                conn.execute(text("DELETE FROM audit_records WHERE org = :o AND seq = :s"), {"o": org, "s": target})
            else:  # insert a forged record at `target`, renumbering the rows after it
                for row in reversed(saved):
                    conn.execute(text("UPDATE audit_records SET seq = :n WHERE org = :o AND seq = :s"),
                                 {"n": row.seq + 1, "o": org, "s": row.seq})
                _insert(conn, _FakeRow(saved[0], forged))
        report = verify_log(log.iter_raw(), source, org, batches=log.batches())
        assert not report.ok
        expected = {"edit": Reason.RECORD_HASH_MISMATCH, "edit_with_rehash": Reason.BATCH_ROOT_MISMATCH,
                    "delete": Reason.MISSING_RECORD, "insert": Reason.SEQ_MISMATCH}[tamper]
        assert expected in report.reasons, report.to_dict()
        # whatever the node now serves for that record does not verify against the chain
        response = alice.get(f"/v1/audit/records/{target}/proof")
        if response.status_code == 200:
            with pytest.raises(AuditVerificationError):
                verify_proof(response.json(), source)
        else:
            assert response.status_code in (404, 422), response.text
        assert verify_proof(good, source).seq == target  # the proof taken before still holds
        with pytest.raises(AuditVerificationError):
            verify_proof({**good, "record": forged.canonical().decode(),
                          "record_hash": "0x" + forged.record_hash().hex()}, source)
    finally:
        with node.engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_records WHERE org = :o AND seq >= :s"), {"o": org, "s": target})
            for row in saved:
                _insert(conn, row)
        log._trees.clear()  # the log caches batch trees it built from the tampered rows
    assert verify_log(log.iter_raw(), source, org, batches=log.batches()).ok


class _FakeRow:
    """A row-like object for _insert: the stored row's columns with a forged record."""

    def __init__(self, like, record: AuditRecord) -> None:
        self._mapping = {**dict(like._mapping), "canonical": record.canonical().decode(),
                         "record_hash": record.record_hash(), "actor": record.actor}


def test_a_row_edited_into_non_canonical_text_is_named_by_its_seq(alice):
    """Listing records over a row that no longer parses answers 422 naming that seq (it
    used to fail the whole listing as an anonymous 500)."""
    node, org, target = alice.node, alice.address, 2
    with node.engine.begin() as conn:
        saved = _row(conn, org, target)
        conn.execute(text("UPDATE audit_records SET canonical = :c WHERE org = :o AND seq = :s"),
                     {"c": saved.canonical.replace("{", "{ ", 1), "o": org, "s": target})
    try:
        listing = alice.get("/v1/audit/records?limit=10")
        assert listing.status_code == 422, listing.text
        body = listing.json()
        assert body["error"] == "audit_verification_failed" and f"stored audit record {target} " in body["detail"]
        after = alice.get(f"/v1/audit/records?limit=10&after_seq={target}")
        assert after.status_code == 200 and after.json()["items"][0]["seq"] == target + 1  # the rest still list
    finally:
        with node.engine.begin() as conn:
            conn.execute(text("UPDATE audit_records SET canonical = :c WHERE org = :o AND seq = :s"),
                         {"c": saved.canonical, "o": org, "s": target})
    assert alice.get("/v1/audit/records?limit=10").status_code == 200
