"""THE authorisation matrix of POST /v1/keys on a real chain and real node apps, on SQLite
and PostgreSQL: every case is allowed or denied exactly, and every outcome is an audit
record (key_released / key_denied with its reason) committed before the answer. The
released header opens the stored payload with the consumer's identity (vault and the
`age` CLI); the owner's signed receipt is recorded by the consumer's own node."""
from __future__ import annotations

import base64
import hashlib
import io
import shutil
import subprocess
import time
from dataclasses import dataclass

import pytest
from eth_utils import keccak

from api.auth import Eip712Domain, KeyReceipt
from ledger.errors import AuditError
from ledger.models import Permission
from tests.api.node_fixtures import NodeHarness, database, increase_time, key_body, key_request
from vault.age import read_header
from vault.blockstore import MemoryBlockstore
from vault.cid import CID
from vault.gateway import GatewayClient
from vault.vault import Vault

PLAINTEXT = b"spindle vibration, 10 s sampling\n" * 40_000  # 1.3 MB: two leaves


@dataclass
class World:
    alice: NodeHarness  # the owner's node
    bob: NodeHarness  # the consumer's node
    members: dict
    assets: dict[str, int]
    cids: dict[str, str]
    commitments: dict[str, bytes]
    bobs_asset: int


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def world(request, members, w3, deployment, tmp_path_factory):
    home = tmp_path_factory.mktemp(f"keys-{request.param}")
    with database(request.param, home) as alice_db, database(request.param, home) as bob_db, \
            NodeHarness.start(members["alice"].account, members["alice"].identity, "alice", w3, deployment,
                              home / "a", alice_db) as alice, \
            NodeHarness.start(members["bob"].account, members["bob"].identity, "bob", w3, deployment,
                              home / "b", bob_db) as bob:
        bob_addr = members["bob"].address
        assets, cids, commitments = {}, {}, {}
        for name in ("read", "sync", "compute", "expired", "revoked"):
            assets[name] = alice.create_asset(f"matrix {name}")
            published = alice.publish(assets[name], PLAINTEXT, key=f"{request.param}-{name}")
            assert published.status_code == 201, published.text
            cids[name] = published.json()["cid"]
            commitments[name] = bytes.fromhex(published.json()["commitment"][2:])
        alice.grant(assets["read"], bob_addr, ["READ"])
        alice.grant(assets["sync"], bob_addr, ["SYNC"])
        alice.grant(assets["compute"], bob_addr, ["COMPUTE"])
        alice.grant(assets["expired"], bob_addr, ["READ"], ttl_seconds=60)
        alice.grant(assets["revoked"], bob_addr, ["READ"])
        assert alice.delete(f"/v1/assets/{assets['revoked']}/grants/{bob_addr}").status_code == 200
        increase_time(w3, 120)  # the 60 s grant has expired at the latest block
        bobs_asset = bob.create_asset("bob's own")
        yield World(alice, bob, members, assets, cids, commitments, bobs_asset)


def _deadline(offset: int = 60) -> int:
    return int(time.time()) + offset


def _body(world: World, case: str) -> dict:
    """The POST /v1/keys body of one matrix case."""
    m, a, domain = world.members, world.assets, world.alice.domain
    bob, alice = m["bob"], m["alice"]

    def req(who=bob, asset="read", **kw):
        kw.setdefault("deadline", _deadline())
        recipient = kw.pop("recipient", who.recipient)
        asset_id = kw.pop("asset_id", a.get(asset))
        version = kw.pop("version", 1)
        sign_domain = kw.pop("domain", domain)
        return key_body(key_request(who.account, recipient, asset_id, version, **kw), who.account, sign_domain)

    return {
        "owner": lambda: req(alice),
        "grantee_read": lambda: req(),
        "sync_only_read": lambda: req(asset="sync"),
        "sync_only_sync": lambda: req(asset="sync", permission=Permission.SYNC),
        "compute_only_read": lambda: req(asset="compute"),
        "compute_only_compute": lambda: req(asset="compute", permission=Permission.COMPUTE),
        "expired_grant": lambda: req(asset="expired"),
        "revoked_grant": lambda: req(asset="revoked"),
        "inactive_org": lambda: req(m["carol"]),
        "unregistered": lambda: req(m["mallory"]),
        "wrong_recipient": lambda: req(recipient=alice.recipient),
        "passed_deadline": lambda: req(deadline=_deadline(-5)),
        "deadline_too_far": lambda: req(deadline=_deadline(3600)),
        "other_chain_id": lambda: req(domain=Eip712Domain(domain.chain_id + 1, domain.verifying_contract)),
        "other_contract": lambda: req(domain=Eip712Domain(domain.chain_id, "0x" + "12" * 20)),
        "wrong_purpose": lambda: req(purpose="marketing"),
        "unknown_version": lambda: req(version=9),
        "unknown_asset": lambda: req(asset_id=10**9),
        "not_owner_node": lambda: req(asset_id=world.bobs_asset),
        "invalid_permission": lambda: req(permission=8),
    }[case]()


MATRIX = [  # case, status, reason (None = released)
    ("owner", 200, None),
    ("grantee_read", 200, None),
    ("sync_only_read", 403, "permission_not_granted"),
    ("sync_only_sync", 200, None),
    ("compute_only_read", 403, "permission_not_granted"),
    ("compute_only_compute", 403, "compute_never_releases_keys"),
    ("expired_grant", 403, "grant_expired"),
    ("revoked_grant", 403, "grant_revoked"),
    ("inactive_org", 403, "inactive_org"),
    ("unregistered", 403, "unknown_org"),
    ("wrong_recipient", 403, "recipient_mismatch"),
    ("passed_deadline", 401, "deadline_expired"),
    ("deadline_too_far", 401, "deadline_too_far"),
    ("other_chain_id", 401, "bad_signature"),
    ("other_contract", 401, "bad_signature"),
    ("wrong_purpose", 403, "purpose_mismatch"),
    ("unknown_version", 404, "unknown_asset_version"),
    ("unknown_asset", 404, "unknown_asset"),
    ("not_owner_node", 404, "not_owner_node"),
    ("invalid_permission", 422, "invalid_permission"),
]


@pytest.mark.parametrize("case, status, reason", MATRIX, ids=[c for c, _, _ in MATRIX])
def test_key_release_matrix(world, case, status, reason):
    body = _body(world, case)
    response = world.alice.client.post("/v1/keys", json=body)
    assert response.status_code == status, response.text
    answer = response.json()
    record = world.alice.node.audit.get(answer["audit_seq"])  # committed before the answer
    assert record.details["nonce"] == body["request"]["nonce"]
    assert record.details["consumer"] == body["request"]["consumer"] and record.actor == body["request"]["consumer"]
    if reason is None:
        assert record.kind == "key_released" and "reason" not in record.details
        assert answer["receipt"]["auditSeq"] == record.seq
        assert record.details["header_hash"] == answer["receipt"]["headerHash"]
    else:
        assert record.kind == "key_denied" and answer["error"] == reason == record.details["reason"]
        assert "header" not in answer


def test_every_request_is_audited_over_http(world):
    """Members read the outcomes through the audit listing: one record per request, in
    order, each naming its nonce and (for denials) its reason."""
    cases = ["grantee_read", "wrong_purpose", "other_chain_id", "sync_only_sync", "unregistered"]
    start = world.alice.node.audit.last_seq()
    bodies = [_body(world, case) for case in cases]
    for body in bodies:
        world.alice.client.post("/v1/keys", json=body)
    items, after = [], start
    while after is not None:
        page = world.alice.get(f"/v1/audit/records?limit=2&after_seq={after}",
                               signer=world.members["bob"].account).json()
        items += [r for r in page["items"] if r["kind"] in ("key_released", "key_denied")]
        after = page["next_after_seq"]
    assert [r["details"]["nonce"] for r in items] == [b["request"]["nonce"] for b in bodies]
    assert [r["details"].get("reason") for r in items] == [None, "purpose_mismatch", "bad_signature", None,
                                                           "unknown_org"]


def test_replayed_nonce_is_refused_and_audited(world):
    body = _body(world, "grantee_read")
    first = world.alice.client.post("/v1/keys", json=body)
    second = world.alice.client.post("/v1/keys", json=body)
    assert first.status_code == 200
    assert (second.status_code, second.json()["error"]) == (401, "replayed_nonce")
    record = world.alice.node.audit.get(second.json()["audit_seq"])
    assert (record.kind, record.details["reason"]) == ("key_denied", "replayed_nonce")


def test_malformed_request_is_audited_without_an_actor(world):
    body = _body(world, "grantee_read")
    del body["request"]["purpose"]
    response = world.alice.client.post("/v1/keys", json=body)
    assert (response.status_code, response.json()["error"]) == (422, "invalid_field")
    record = world.alice.node.audit.get(response.json()["audit_seq"])
    assert (record.kind, record.actor, record.details["reason"], record.details["field"]) == (
        "key_denied", "unauthenticated", "invalid_field", "purpose")
    garbage = world.alice.client.post("/v1/keys", content=b"{not json", headers={"content-type": "application/json"})
    assert (garbage.status_code, garbage.json()["error"]) == (400, "malformed_json")


def test_no_record_no_key(world):
    """If the audit record cannot be committed, nothing is released."""
    node = world.alice.node
    real = node.audit

    class FailingLog:
        def __getattr__(self, name):
            return getattr(real, name)

        def append(self, *args, **kwargs):
            raise AuditError("database is gone")

        append_claimed = append

    before = real.last_seq()
    node.audit = FailingLog()
    try:
        response = world.alice.client.post("/v1/keys", json=_body(world, "grantee_read"))
    finally:
        node.audit = real
    assert response.status_code == 500 and "header" not in response.json()
    assert real.last_seq() == before


def test_nonce_and_record_commit_together(world, monkeypatch):
    """The nonce is consumed in the record's transaction: when writing the record fails
    after the nonce row was inserted, both roll back, so the same signed request (same
    nonce) is then released once and only once."""
    import ledger.audit._append as audit_log

    body = _body(world, "grantee_read")
    real_row = audit_log._row

    def broken_row(record):
        raise AuditError("disk full")

    before = world.alice.node.audit.last_seq()
    monkeypatch.setattr(audit_log, "_row", broken_row)
    failed = world.alice.client.post("/v1/keys", json=body)
    monkeypatch.setattr(audit_log, "_row", real_row)
    assert failed.status_code == 500 and "header" not in failed.json()
    assert world.alice.node.audit.last_seq() == before
    assert not world.alice.node.authenticator.nonces.seen(body["request"]["consumer"],
                                                           bytes.fromhex(body["request"]["nonce"][2:]))
    again = world.alice.client.post("/v1/keys", json=body)
    assert again.status_code == 200, again.json()
    replay = world.alice.client.post("/v1/keys", json=body)
    assert (replay.status_code, replay.json()["error"]) == (401, "replayed_nonce")
    records = [world.alice.node.audit.get(seq) for seq in (before + 1, before + 2)]
    assert [(r.kind, r.details.get("reason")) for r in records] == [("key_released", None),
                                                                     ("key_denied", "replayed_nonce")]


def test_released_header_opens_the_payload_and_receipt_is_recorded(world, tmp_path):
    bob = world.members["bob"]
    body = _body(world, "grantee_read")
    answer = world.alice.client.post("/v1/keys", json=body).json()
    header = base64.b64decode(answer["header"], validate=True)
    receipt_json = dict(answer["receipt"])
    signature = receipt_json.pop("signature")
    receipt = KeyReceipt.from_json(receipt_json)
    assert receipt.recover(world.alice.domain, signature) == world.alice.address
    assert (receipt.header_hash, receipt.audit_seq, receipt.recipient) == (keccak(header), answer["audit_seq"],
                                                                         bob.recipient)
    cid = world.cids["read"]
    assert receipt.asset == world.assets["read"] and receipt.version == 1
    with GatewayClient(["http://testserver"], transport=world.alice.client._transport) as gateway:
        out = tmp_path / "twin.csv"
        Vault(MemoryBlockstore(), bob.identity).open(cid, header, bob.identity, out,
                                                     commitment=world.commitments["read"],
                                                     get_block=gateway.fetch_raw)
        assert out.read_bytes() == PLAINTEXT
        ciphertext = b"".join(gateway.fetch_file(CID.decode(cid)))
    assert shutil.which("age"), "the age CLI (Debian package age) is required"
    stored = read_header(io.BytesIO(ciphertext))
    (tmp_path / "bob.key").write_text(str(bob.identity) + "\n")  # AGE-SECRET-KEY-1…
    (tmp_path / "released.age").write_bytes(header + ciphertext[len(stored):])
    result = subprocess.run(["age", "-d", "-i", str(tmp_path / "bob.key"), str(tmp_path / "released.age")],
                            capture_output=True, check=True)
    assert result.stdout == PLAINTEXT
    # the consumer records it in its own log, with the owner's receipt
    recorded = world.bob.post_json("/v1/consumptions", {"receipt": answer["receipt"], "cid": cid,
                                                        "output_sha256": hashlib.sha256(PLAINTEXT).hexdigest()})
    assert recorded.status_code == 201, recorded.text
    record = world.bob.node.audit.get(recorded.json()["audit_seq"])
    assert (record.kind, record.asset_id, record.details["receipt"]["auditSeq"], record.details["cid"]) == (
        "consumption_recorded", world.assets["read"], answer["audit_seq"], cid)


@pytest.mark.parametrize("tamper", ["audit_seq", "signature", "cid", "posted_to_owner"])
def test_consumption_refuses_bad_receipts(world, tamper):
    answer = world.alice.client.post("/v1/keys", json=_body(world, "grantee_read")).json()
    receipt, cid, node = dict(answer["receipt"]), world.cids["read"], world.bob
    if tamper == "audit_seq":
        receipt["auditSeq"] += 1
    elif tamper == "signature":
        receipt["signature"] = "0x" + "11" * 65
    elif tamper == "cid":
        cid = world.cids["sync"]
    else:
        node = world.alice  # the receipt names bob as consumer
    response = node.post_json("/v1/consumptions", {"receipt": receipt, "cid": cid})
    assert response.status_code == 422, response.text
    assert response.json()["error"] in ("invalid_receipt", "invalid_field")


def test_revocation_takes_effect_for_the_next_request(world):
    bob = world.members["bob"]
    asset = world.alice.create_asset("revoke later")
    assert world.alice.publish(asset, b"v1", key=f"revoke-later-{asset}").status_code == 201
    world.alice.grant(asset, bob.address, ["READ"])
    body = lambda: key_body(key_request(bob.account, bob.recipient, asset, 1, deadline=_deadline()),  # noqa: E731
                            bob.account, world.alice.domain)
    assert world.alice.client.post("/v1/keys", json=body()).status_code == 200
    assert world.alice.delete(f"/v1/assets/{asset}/grants/{bob.address}").status_code == 200
    denied = world.alice.client.post("/v1/keys", json=body())
    assert (denied.status_code, denied.json()["error"]) == (403, "grant_revoked")
