"""The SDK's consumer flow and audit verification against a real chain, with the nodes
faked by an httpx.MockTransport built from real components: the owner's "node" re-wraps
headers with the real Vault, signs receipts with the owner's key and serves CARs from a
real blockstore; the audit "node" serves a real AuditLog whose batches are anchored on
the real AuditAnchors contract. Each test makes one party lie and checks the SDK notices.
(The flows against the real node processes are in tests/e2e.)"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import re

import httpx
import pytest
from eth_hash.auto import keccak
from sqlalchemy import text

from api.auth.eip712 import Eip712Domain, KeyReceipt, KeyRequest
from api.keystore import OrgKeys
from api.sdk import RemoteForbiddenError, TwinLedgerClient, UntrustedAnswerError
from ledger.audit import Anchorer, AuditLog
from ledger.audit.chain import ChainAnchors
from ledger.audit.records import AuditRecord, parse
from ledger.client import LedgerClient
from ledger.db import make_engine
from ledger.models import AssetKind, Permission
from vault.age import X25519Recipient
from vault.blockstore import MemoryBlockstore
from vault.car import export_car
from vault.cid import CID
from vault.errors import GatewayError
from vault.vault import Vault

OWN = "bob.node"
OWNER = "127.0.0.1:8701"  # alice's endpoint in tests/api/conftest.py
EXTRA = "gateway.example"
PLAINTEXT = b"spindle vibration twin " * 20_000


class World:
    """The published version, plus knobs that make one party misbehave."""

    def __init__(self, ledger, alice, store, sealed, asset_id, version, record) -> None:
        self.ledger, self.alice, self.store, self.sealed = ledger, alice, store, sealed
        self.asset_id, self.version, self.record = asset_id, version, record
        self.domain = Eip712Domain.from_deployment(ledger.deployment)
        self.requests: list[httpx.Request] = []
        self.consumptions: list[dict] = []
        self.own_record: dict | None = dict(record)
        self.receipt_signer = alice.account
        self.header_for_hash: bytes | None = None
        self.deny: dict | None = None
        self.tamper_owner_gateway = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        host, path = request.url.netloc.decode(), request.url.path
        if path.startswith("/ipfs/"):
            return self._car(request, tamper=host == OWNER and self.tamper_owner_gateway)
        if host == OWN and path == "/v1/consumptions":
            self.consumptions.append(json.loads(request.read()))
            return httpx.Response(201, json={"audit_seq": 5})
        if re.fullmatch(r"/v1/assets/\d+/versions/\d+", path):
            record = self.own_record if host == OWN else self.record
            return httpx.Response(200, json=record) if record else httpx.Response(
                404, json={"error": "not_found", "detail": "unknown version"})
        if host == OWNER and path == "/v1/keys":
            return self._keys(json.loads(request.read()))
        return httpx.Response(404, json={"error": "not_found", "detail": path})

    def _keys(self, body: dict) -> httpx.Response:
        request = KeyRequest.from_json(body["request"])
        assert request.recover(self.domain, body["signature"]) == request.consumer
        if self.deny:
            return httpx.Response(403, json=self.deny)
        header = Vault(self.store, self.alice.identity).rewrap_for(self.sealed.cid,
                                                                   X25519Recipient.parse(request.recipient))
        receipt = KeyReceipt(asset=request.asset, version=request.version, owner=self.alice.address,
                             consumer=request.consumer, recipient=request.recipient,
                             header_hash=keccak(self.header_for_hash or header), audit_seq=17, issued_at=1)
        signature = receipt.sign(self.domain, self.receipt_signer)
        return httpx.Response(200, json={"header": base64.b64encode(header).decode(), "audit_seq": 17,
                                         "receipt": {**receipt.to_json(), "signature": "0x" + signature.hex()}})

    def _car(self, request: httpx.Request, *, tamper: bool) -> httpx.Response:
        buf = io.BytesIO()
        export_car(self.store, CID.decode(request.url.path.removeprefix("/ipfs/")), buf)
        data = bytearray(buf.getvalue())
        if tamper:
            data[-10] ^= 1  # inside the last block: its hash no longer matches its CID
        return httpx.Response(200, content=bytes(data), headers={"Content-Type": "application/vnd.ipld.car"})


@pytest.fixture(scope="module")
def published(w3, deployment, members):  # noqa: F811
    alice = members["alice"]
    owner = LedgerClient(w3, deployment, alice.account)
    store = MemoryBlockstore()
    sealed = Vault(store, alice.identity).seal(PLAINTEXT)
    asset = owner.create_asset(AssetKind.DATASET, "spindle").asset_id
    added = owner.add_version(asset, CID.decode(sealed.cid).to_bytes(), sealed.commitment, sealed.size)
    owner.grant(asset, members["bob"].address, Permission.READ, owner.chain_time() + 3600, "")
    timestamp = w3.eth.get_block(added.tx.block_number)["timestamp"]
    record = {"asset_id": asset, "version": added.version, "cid": sealed.cid,
              "commitment": "0x" + sealed.commitment.hex(), "size": sealed.size, "parents": [],
              "author": alice.address, "block": added.tx.block_number, "timestamp": timestamp,
              "tx_hash": added.tx.tx_hash}
    return LedgerClient(w3, deployment), alice, store, sealed, asset, added.version, record


@pytest.fixture
def world(published) -> World:
    return World(*published)


@pytest.fixture
def bob(world, members) -> TwinLedgerClient:
    keys = OrgKeys("bob", members["bob"].account, members["bob"].identity)
    return TwinLedgerClient(f"http://{OWN}", keys, ledger=world.ledger, transport=httpx.MockTransport(world))


def paths(world: World) -> list[str]:
    return [f"{r.url.netloc.decode()}{r.url.path}" for r in world.requests]


def test_get_releases_fetches_opens_and_records(world, bob, tmp_path, members):
    out = tmp_path / "out.bin"
    seen: list[int] = []
    got = bob.get(world.asset_id, world.version, out, purpose="", progress=seen.append)
    assert out.read_bytes() == PLAINTEXT
    assert (got.size, got.owner, got.key_audit_seq, got.consumption_audit_seq) == \
        (len(PLAINTEXT), members["alice"].address, 17, 5)
    assert got.sha256 == hashlib.sha256(PLAINTEXT).hexdigest() and sum(seen) == len(PLAINTEXT)
    (recorded,) = world.consumptions
    receipt = dict(recorded["receipt"])
    signature = receipt.pop("signature")
    assert KeyReceipt.from_json(receipt).recover(world.domain, signature) == members["alice"].address
    assert (recorded["cid"], recorded["output_sha256"]) == (world.sealed.cid, got.sha256)
    assert paths(world) == [f"{OWN}/v1/assets/{world.asset_id}/versions/{world.version}", f"{OWNER}/v1/keys",
                            f"{OWNER}/ipfs/{world.sealed.cid}", f"{OWN}/v1/consumptions"]


@pytest.mark.parametrize("field, lie", [
    ("size", lambda record, members: record["size"] + 1),
    ("cid", lambda record, members: "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"),
    ("commitment", lambda record, members: "0x" + "11" * 32),
    ("timestamp", lambda record, members: record["timestamp"] - 1),
    ("parents", lambda record, members: ["1@1"]),
    ("author", lambda record, members: members["bob"].address),
    ("cid", lambda record, members: "not-a-cid"),
])
def test_a_version_record_that_disagrees_with_the_chain_is_refused(world, bob, tmp_path, members, field, lie):
    world.own_record[field] = lie(world.record, members)
    out = tmp_path / "out.bin"
    with pytest.raises(UntrustedAnswerError, match="does not match the chain|malformed"):
        bob.get(world.asset_id, world.version, out)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert f"{OWNER}/v1/keys" not in paths(world)  # no key is even asked for


def test_the_owner_node_is_asked_when_the_own_index_lags(world, bob, tmp_path):
    world.own_record = None
    bob.get(world.asset_id, world.version, tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == PLAINTEXT
    assert f"{OWNER}/v1/assets/{world.asset_id}/versions/{world.version}" in paths(world)


def test_a_denial_carries_its_audit_record(world, bob, tmp_path):
    world.deny = {"error": "access_denied", "detail": "no READ grant", "audit_seq": 23}
    with pytest.raises(RemoteForbiddenError) as info:
        bob.get(world.asset_id, world.version, tmp_path / "out.bin", permission=Permission.SYNC)
    assert (info.value.reason, info.value.audit_seq) == ("access_denied", 23)
    assert list(tmp_path.iterdir()) == [] and world.consumptions == []


def test_a_receipt_not_signed_by_the_owner_is_refused(world, bob, tmp_path, members):
    world.receipt_signer = members["carol"].account
    with pytest.raises(UntrustedAnswerError, match="not by the asset's owner"):
        bob.get(world.asset_id, world.version, tmp_path / "out.bin")
    assert list(tmp_path.iterdir()) == []


def test_a_receipt_for_another_header_is_refused(world, bob, tmp_path):
    world.header_for_hash = b"age-encryption.org/v1\nsome other header"
    with pytest.raises(UntrustedAnswerError, match="not for the header"):
        bob.get(world.asset_id, world.version, tmp_path / "out.bin")
    assert list(tmp_path.iterdir()) == []


def test_a_tampering_gateway_is_caught_and_another_one_used(world, bob, tmp_path):
    world.tamper_owner_gateway = True
    with pytest.raises(GatewayError):
        bob.get(world.asset_id, world.version, tmp_path / "out.bin")
    assert list(tmp_path.iterdir()) == [] and world.consumptions == []
    bob.get(world.asset_id, world.version, tmp_path / "out.bin", gateways=[f"http://{EXTRA}"])
    assert (tmp_path / "out.bin").read_bytes() == PLAINTEXT
    assert f"{EXTRA}/ipfs/{world.sealed.cid}" in paths(world)


def test_only_read_or_sync_keys_can_be_asked_for(bob, world, tmp_path):
    with pytest.raises(ValueError, match="READ or SYNC"):
        bob.get(world.asset_id, world.version, tmp_path / "x", permission=Permission.COMPUTE)
    with pytest.raises(ValueError, match="does not exist"):
        bob.get(world.asset_id, world.version, tmp_path / "missing" / "x")


# -- audit verification ------------------------------------------------------------------------


class AuditNode:
    """Serves a real AuditLog the way docs/api.md describes (raw rows, so tampering shows)."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path, params = request.url.path, request.url.params
        if path == "/v1/audit/head":
            return httpx.Response(200, json={"org": self.log.org, "last_seq": self.log.last_seq(),
                                             "anchored_seq": 0, "batches": 0})
        if path == "/v1/audit/records":
            after, limit = int(params.get("after_seq", 0)), int(params.get("limit", 100))
            rows = list(self.log.iter_raw(after + 1))[:limit]
            items = [{**json.loads(r.canonical), "record_hash": "0x" + r.record_hash.hex()} for r in rows]
            return httpx.Response(200, json={"items": items,
                                             "next_after_seq": rows[-1].seq if len(rows) == limit else None})
        m = re.fullmatch(r"/v1/audit/records/(\d+)/proof", path)
        if m:
            try:
                return httpx.Response(200, json=self.log.proof(int(m.group(1))).to_dict())
            except Exception as exc:  # the node's error table would map these
                return httpx.Response(422, json={"error": "audit_verification_failed", "detail": str(exc)})
        return httpx.Response(404, json={"error": "not_found", "detail": path})


@pytest.fixture(scope="module")
def audit_log(w3, deployment, members, tmp_path_factory):  # noqa: F811
    alice = members["alice"]
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('audit') / 'node.db'}")
    log = AuditLog(engine, alice.address)
    anchorer = Anchorer(log, ChainAnchors(LedgerClient(w3, deployment, alice.account)), every_records=1)
    for i in range(7):
        log.append("key_released", members["bob"].address, 1, 1, {"n": i})
    anchorer.anchor_pending()
    for i in range(3):
        log.append("key_denied", members["carol"].address, 1, 1, {"reason": "access_denied"})
    anchorer.anchor_pending()
    log.append("grant_issued", alice.address, 1, None, {})
    log.append("grant_issued", alice.address, 2, None, {})  # 11, 12: not anchored yet
    return log


@pytest.fixture
def auditor(audit_log, published, members):
    keys = OrgKeys("bob", members["bob"].account, members["bob"].identity)
    ledger = published[0]
    return TwinLedgerClient("http://alice.node", keys, ledger=ledger, transport=httpx.MockTransport(AuditNode(audit_log)))


def sql(log: AuditLog, statement: str, **params) -> None:
    with log.engine.begin() as conn:
        conn.execute(text(statement), params)


def test_an_untouched_log_verifies(auditor, members):
    report = auditor.verify(all=True)
    assert report.ok, report.problems
    assert (report.org, report.anchored_seq, report.batches) == (members["alice"].address, 10, 2)
    assert (report.records_checked, report.proofs_verified, report.unanchored_records) == (12, 10, 2)


def test_an_edited_record_is_named(auditor, audit_log):
    original = next(audit_log.iter_raw(4, 4)).canonical
    record = parse(original).to_json_obj()
    record["details"] = {"n": 999}
    forged = AuditRecord.from_json_obj(record).canonical().decode()
    sql(audit_log, "UPDATE audit_records SET canonical = :c WHERE seq = 4", c=forged)
    try:
        for all_ in (False, True):
            report = auditor.verify(all=all_)
            assert not report.ok
            assert {p["seq"] for p in report.problems} == {4}
            assert "record-hash-mismatch" in {p["reason"] for p in report.problems}
    finally:
        sql(audit_log, "UPDATE audit_records SET canonical = :c WHERE seq = 4", c=original)
    assert auditor.verify(all=True).ok


def test_an_edit_with_a_recomputed_hash_fails_its_whole_batch(auditor, audit_log):
    original = next(audit_log.iter_raw(9, 9))
    record = parse(original.canonical).to_json_obj()
    record["actor"] = record["org"]
    forged = AuditRecord.from_json_obj(record)
    sql(audit_log, "UPDATE audit_records SET canonical = :c, record_hash = :h WHERE seq = 9",
        c=forged.canonical().decode(), h=forged.record_hash())
    audit_log._trees.clear()  # as after a node restart: no Merkle tree cached from before the edit
    try:
        report = auditor.verify(all=True)
        reasons = {(p["seq"], p["reason"]) for p in report.problems}
        assert (8, "batch-root-mismatch") in reasons  # batch 8..10 no longer gives its root
        assert {seq for seq, _ in reasons} == {8, 9, 10}, report.problems  # the node can prove none of 8..10
    finally:
        sql(audit_log, "UPDATE audit_records SET canonical = :c, record_hash = :h WHERE seq = 9",
            c=original.canonical, h=original.record_hash)
        audit_log._trees.clear()
    assert auditor.verify(all=True).ok


def test_a_deleted_record_is_named_by_the_completeness_check(auditor, audit_log):
    original = next(audit_log.iter_raw(6, 6))
    record = parse(original.canonical)
    row = {"org": audit_log.org, "seq": 6, "kind": "key_released", "time": record.time, "actor": record.actor,
           "asset_id": 1, "version": 1, "record_hash": original.record_hash, "canonical": original.canonical}
    sql(audit_log, "DELETE FROM audit_records WHERE seq = 6")
    audit_log._trees.clear()
    try:
        listed_only = auditor.verify(all=False)  # the node cannot prove batch 1..7 any more, but 6 is not listed
        assert not listed_only.ok and 6 not in {p["seq"] for p in listed_only.problems}
        report = auditor.verify(all=True)
        assert (6, "missing-record") in {(p["seq"], p["reason"]) for p in report.problems}
        assert {p["seq"] for p in report.problems} <= {1, 2, 3, 4, 5, 6, 7}
    finally:
        sql(audit_log, "INSERT INTO audit_records (org, seq, kind, time, actor, asset_id, version, record_hash, "
                       "canonical) VALUES (:org, :seq, :kind, :time, :actor, :asset_id, :version, :record_hash, "
                       ":canonical)", **row)
        audit_log._trees.clear()
    assert auditor.verify(all=True).ok


def test_verifying_another_org_than_the_node_keeps_is_refused(auditor, members):
    with pytest.raises(UntrustedAnswerError, match="keeps the audit log of"):
        auditor.verify(org=members["bob"].address)
