"""End to end over real processes and real HTTP on loopback (tests/e2e/cluster.py):
alpha owns and publishes, beta is granted READ, gamma is granted nothing.

Publish → grant → get through the CLI and the SDK; denials (no grant, SYNC without SYNC)
and their audit records in the owner's log; revocation; anchoring and `audit verify --all`
on every node; then the owner's audit database is tampered with (edit, delete, insert)
and verification names the bad seq. The tests run in file order on one cluster."""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time

import pytest

from api.sdk import RemoteForbiddenError
from ledger.audit.records import AuditRecord, parse
from ledger.models import Permission

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e")]
ANCHOR_WAIT = 60.0


@pytest.fixture(scope="module")
def clients(cluster):
    made = {name: cluster.client(name) for name in cluster.nodes}
    yield made
    for client in made.values():
        client.close()


@pytest.fixture(scope="module")
def payload(tmp_path_factory):
    path = tmp_path_factory.mktemp("payload") / "spindle-model.bin"
    path.write_bytes(os.urandom(3 << 20) + b"end of twin model")  # several blocks, several STREAM chunks
    return path


@pytest.fixture(scope="module")
def published(cluster, payload):
    """alpha publishes through the CLI and grants beta READ through the CLI."""
    result = cluster.cli_json("asset", "put", str(payload), "--org", "alpha", "--name", "spindle twin",
                              "--kind", "model")
    grant = cluster.cli_json("grant", str(result["asset_id"]), "beta", "--perm", "read", "--ttl", "1h",
                             "--purpose", "maintenance", "--org", "alpha")
    assert isinstance(grant["audit_seq"], int)
    return result


def wait_anchored(client, timeout: float = ANCHOR_WAIT) -> dict:
    """The node's audit head once everything logged so far is anchored on chain."""
    deadline = time.monotonic() + timeout
    while True:
        head = client.audit_head()
        if head["anchored_seq"] >= head["last_seq"]:
            return head
        if time.monotonic() > deadline:
            raise AssertionError(f"audit log not anchored within {timeout}s: {head}")
        time.sleep(0.5)


def test_publish_grant_and_get_through_the_cli_and_the_sdk(cluster, clients, published, payload, tmp_path):
    assert published["version"] == 1 and published["size"] == payload.stat().st_size
    target = f"{published['asset_id']}@{published['version']}"
    out = tmp_path / "via-cli.bin"
    got = cluster.cli_json("asset", "get", target, "-o", str(out), "--org", "beta", "--purpose", "maintenance")
    assert out.read_bytes() == payload.read_bytes()
    assert got["sha256"] == hashlib.sha256(payload.read_bytes()).hexdigest()
    assert got["owner"] == cluster.nodes["alpha"].address

    sdk_out = tmp_path / "via-sdk.bin"
    consumed = clients["beta"].get(published["asset_id"], 1, sdk_out, purpose="maintenance")
    assert sdk_out.read_bytes() == payload.read_bytes()
    # the owner logged both releases; the consumer logged both consumptions
    released = clients["alpha"].audit_records(kind="key_released", asset=published["asset_id"])["items"]
    assert {r["seq"] for r in released} >= {got["key_audit_seq"], consumed.key_audit_seq}
    assert all(r["actor"] == cluster.nodes["beta"].address for r in released)
    recorded = clients["beta"].audit_records(kind="consumption_recorded")["items"]
    assert {r["seq"] for r in recorded} >= {got["consumption_audit_seq"], consumed.consumption_audit_seq}

    shown = cluster.cli_json("asset", "show", str(published["asset_id"]), "--org", "gamma")
    assert [v["cid"] for v in shown["versions"]] == [published["cid"]]
    assert [(g["grantee"], g["permissions"]) for g in shown["grants"]] == [(cluster.nodes["beta"].address, ["READ"])]


def test_denials_are_refused_and_audited_by_the_owner(cluster, clients, published, tmp_path):
    asset = published["asset_id"]
    with pytest.raises(RemoteForbiddenError) as no_grant:
        clients["gamma"].get(asset, 1, tmp_path / "gamma.bin")
    with pytest.raises(RemoteForbiddenError) as wrong_use:
        clients["beta"].get(asset, 1, tmp_path / "beta.bin", permission=Permission.SYNC, purpose="maintenance")
    assert list(tmp_path.iterdir()) == []
    assert no_grant.value.audit_seq is not None and wrong_use.value.audit_seq is not None

    log = cluster.cli_json("audit", "log", "--kind", "key_denied", "--asset", str(asset), "--org", "alpha")
    by_seq = {r["seq"]: r for r in log["items"]}
    assert by_seq[no_grant.value.audit_seq]["actor"] == cluster.nodes["gamma"].address
    assert by_seq[wrong_use.value.audit_seq]["actor"] == cluster.nodes["beta"].address
    assert no_grant.value.reason in json.dumps(by_seq[no_grant.value.audit_seq]["details"])


def test_revocation_stops_the_next_release(cluster, clients, published, tmp_path):
    source = tmp_path / "report.csv"
    source.write_bytes(b"t,rpm\n" + b"".join(b"%d,%d\n" % (i, 9000 + i % 7) for i in range(20000)))
    pub = clients["alpha"].publish(source, name="spindle report", kind="report",
                                   parents=[f"{published['asset_id']}@1"])
    assert pub.parents == (f"{published['asset_id']}@1",)
    lineage = cluster.cli_json("lineage", str(pub.asset_id), "--org", "gamma")  # latest version, from the chain
    assert [(n["asset_id"], n["version"], n["depth"]) for n in lineage["ancestors"]] == [(published["asset_id"], 1, 1)]
    listed = {a["asset_id"]: a for a in clients["gamma"].iter_assets(owner=cluster.nodes["alpha"].address)}
    assert listed[pub.asset_id]["kind"] == "report" and listed[published["asset_id"]]["name"] == "spindle twin"
    clients["alpha"].grant(pub.asset_id, "beta", "read", ttl_seconds=3600)
    first = clients["beta"].get(pub.asset_id, pub.version, tmp_path / "first.csv")
    assert (tmp_path / "first.csv").read_bytes() == source.read_bytes() and first.size == source.stat().st_size

    cluster.cli("revoke", str(pub.asset_id), "beta", "--org", "alpha")
    with pytest.raises(RemoteForbiddenError) as denied:
        clients["beta"].get(pub.asset_id, pub.version, tmp_path / "second.csv")
    assert not (tmp_path / "second.csv").exists()
    record = [r for r in clients["alpha"].audit_records(kind="key_denied", asset=pub.asset_id)["items"]
              if r["seq"] == denied.value.audit_seq]
    assert len(record) == 1


def test_every_node_log_is_anchored_and_verifies(cluster, clients, published):
    for client in clients.values():
        wait_anchored(client)
    report = cluster.cli_json("audit", "verify", "--all", "--org", "alpha")
    assert report["ok"] and report["complete"], report["problems"]
    assert report["anchored_seq"] >= 1 and report["proofs_verified"] == report["records_checked"]
    for name in ("beta", "gamma"):  # an auditor (alpha) verifies the other nodes, trusting only the chain
        other = clients["alpha"].verify(cluster.nodes[name].url, all=True)
        assert other.ok, other.problems
        assert other.org == cluster.nodes[name].address


# -- tampering with the owner's audit database ---------------------------------------------------


def _sql(cluster, statement: str, params: tuple = ()) -> None:
    with sqlite3.connect(cluster.db_path("alpha"), timeout=10) as db:
        db.execute(statement, params)


def _row(cluster, seq: int) -> tuple:
    with sqlite3.connect(cluster.db_path("alpha"), timeout=10) as db:
        return db.execute("SELECT org, seq, kind, time, actor, asset_id, version, record_hash, canonical "
                          "FROM audit_records WHERE seq = ?", (seq,)).fetchone()


@pytest.fixture
def anchored_release(cluster, clients, published):
    """An anchored key_released record of alpha's log (its seq), and the log's last seq."""
    head = wait_anchored(clients["alpha"])
    released = clients["alpha"].audit_records(kind="key_released")["items"]
    return released[0]["seq"], head["last_seq"]


def test_an_edited_record_fails_cli_verification_naming_its_seq(cluster, clients, anchored_release):
    seq, _ = anchored_release
    original = _row(cluster, seq)
    record = parse(original[8]).to_json_obj()
    record["actor"] = cluster.nodes["gamma"].address  # "it was gamma who got the key"
    _sql(cluster, "UPDATE audit_records SET canonical = ? WHERE seq = ?",
         (AuditRecord.from_json_obj(record).canonical().decode(), seq))
    try:
        proc = cluster.cli("audit", "verify", "--all", "--json", "--org", "alpha", check=False)
        assert proc.returncode == 1, proc.stderr
        report = json.loads(proc.stdout)
        assert not report["ok"]
        assert seq in {p["seq"] for p in report["problems"]}
        text = cluster.cli("audit", "verify", "--org", "beta", "--node", cluster.nodes["alpha"].url, check=False)
        assert text.returncode == 1 and f"seq {seq}:" in text.stderr
    finally:
        _sql(cluster, "UPDATE audit_records SET canonical = ? WHERE seq = ?", (original[8], seq))
    assert clients["beta"].verify(cluster.nodes["alpha"].url, all=True).ok


def test_a_deleted_record_is_named(cluster, clients, anchored_release):
    seq, _ = anchored_release
    original = _row(cluster, seq)
    _sql(cluster, "DELETE FROM audit_records WHERE seq = ?", (seq,))
    try:
        report = clients["gamma"].verify(cluster.nodes["alpha"].url, all=True)
        assert (seq, "missing-record") in {(p["seq"], p["reason"]) for p in report.problems}
    finally:
        _sql(cluster, "INSERT INTO audit_records (org, seq, kind, time, actor, asset_id, version, record_hash, "
                      "canonical) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", original)
    assert clients["gamma"].verify(cluster.nodes["alpha"].url, all=True).ok


def test_an_inserted_record_is_named(cluster, clients, anchored_release):
    """Insert a forged record at `seq`, renumbering the later rows (the only way to
    insert into a gapless log)."""
    seq, last = anchored_release
    rows = [_row(cluster, s) for s in range(seq, last + 1)]
    forged = parse(rows[0][8]).to_json_obj()
    forged["details"] = {"note": "forged"}
    record = AuditRecord.from_json_obj(forged)
    with sqlite3.connect(cluster.db_path("alpha"), timeout=10) as db:
        for s in range(last, seq - 1, -1):
            db.execute("UPDATE audit_records SET seq = seq + 1 WHERE seq = ?", (s,))
        db.execute("INSERT INTO audit_records (org, seq, kind, time, actor, asset_id, version, record_hash, "
                   "canonical) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (*rows[0][:7], record.record_hash(), record.canonical().decode()))
    try:
        report = clients["beta"].verify(cluster.nodes["alpha"].url, all=True)
        assert not report.ok
        assert seq in {p["seq"] for p in report.problems}
    finally:
        with sqlite3.connect(cluster.db_path("alpha"), timeout=10) as db:
            db.execute("DELETE FROM audit_records WHERE seq = ?", (seq,))
            for s in range(seq + 1, last + 2):
                db.execute("UPDATE audit_records SET seq = seq - 1 WHERE seq = ?", (s,))
    assert clients["beta"].verify(cluster.nodes["alpha"].url, all=True).ok
