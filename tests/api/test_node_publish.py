"""Publish end to end on a real chain and a real org node app: create → upload (streamed
multipart) → catalog → version → trustless gateway (CAR and raw, verified by the vault's
GatewayClient over a transport bound to the app), idempotent retries, refusals of bad
uploads (nothing sealed, nothing registered), grants listing, lineage and PROV."""
from __future__ import annotations

import io
import os

import pytest
from eth_utils import keccak

from api.auth import body_hash
from ledger.models import VersionRef
from tests.api.node_fixtures import NodeHarness, multipart
from vault.car import read_car
from vault.cid import CID
from vault.gateway import GatewayClient
from vault.unixfs import export

DATA = os.urandom(3 * 1024 * 1024 + 17)  # 4 leaves under unixfs-v1-2025 (1 MiB chunks)


@pytest.fixture(scope="module")
def alice_node(members, w3, deployment, tmp_path_factory):
    home = tmp_path_factory.mktemp("alice")
    with NodeHarness.start(members["alice"].account, members["alice"].identity, "alice", w3, deployment, home,
                           f"sqlite:///{home / 'node.db'}") as harness:
        yield harness


@pytest.fixture(scope="module")
def published(alice_node):
    asset_id = alice_node.create_asset("spindle twin")
    response = alice_node.publish(asset_id, DATA, key="first-upload")
    assert response.status_code == 201, response.text
    return asset_id, response.json()


def gateway(harness: NodeHarness) -> GatewayClient:
    return GatewayClient(["http://testserver"], transport=harness.client._transport)


def test_create_asset_answers_from_chain_and_audits(alice_node):
    response = alice_node.post_json("/v1/assets", {"kind": "model", "name": "twin model", "metadata": {"rev": 2}})
    assert response.status_code == 201, response.text
    body = response.json()
    state = alice_node.ledger.get_asset(body["asset_id"])
    assert (state.owner, state.kind.name.lower(), body["owner"], body["kind"]) == (
        alice_node.address, "model", alice_node.address, "model")
    assert body["metadata_digest"] == "0x" + keccak(b'{"rev":2}').hex()  # RFC 8785 form
    record = alice_node.node.audit.get(body["audit_seq"])
    assert (record.kind, record.asset_id, record.details["tx_hash"]) == ("asset_created", body["asset_id"],
                                                                         body["tx_hash"])
    detail = alice_node.get(f"/v1/assets/{body['asset_id']}").json()  # read your own write: indexed already
    assert (detail["name"], detail["metadata_digest"], detail["versions"]) == ("twin model", body["metadata_digest"], [])


def test_publish_registers_on_chain_and_indexes(alice_node, published):
    asset_id, body = published
    assert (body["asset_id"], body["version"], body["size"], body["parents"]) == (asset_id, 1, len(DATA), [])
    assert alice_node.ledger.version_by_commitment(bytes.fromhex(body["commitment"][2:])) == (asset_id, 1)
    version = alice_node.get(f"/v1/assets/{asset_id}/versions/1").json()
    assert (version["cid"], version["commitment"], version["tx_hash"], version["author"]) == (
        body["cid"], body["commitment"], body["tx_hash"], alice_node.address)
    record = alice_node.node.audit.get(body["audit_seq"])
    assert (record.kind, record.asset_id, record.version, record.details["cid"]) == (
        "asset_published", asset_id, 1, body["cid"])
    assert record.details["idempotency_key"] == "first-upload"
    assert not list((alice_node.node.settings.org_dir / "tmp").iterdir())  # temp upload removed


def test_catalog_lists_and_pages(alice_node, published, members):
    asset_id, _ = published
    alice_node.create_asset("another, so there are pages", kind="model")
    bob = members["bob"].account
    everything = alice_node.get("/v1/assets", signer=bob).json()
    ids = [a["asset_id"] for a in everything["items"]]
    assert asset_id in ids and ids == sorted(ids) and everything["next"] is None
    first = alice_node.get("/v1/assets?limit=1", signer=bob).json()
    assert len(first["items"]) == 1 and first["next"] == ids[0]
    rest = alice_node.get(f"/v1/assets?limit=1000&after={first['next']}", signer=bob).json()
    assert [a["asset_id"] for a in rest["items"]] == ids[1:]
    datasets = alice_node.get(f"/v1/assets?kind=dataset&owner={alice_node.address.lower()}", signer=bob).json()
    assert {a["kind"] for a in datasets["items"]} == {"dataset"} and asset_id in [a["asset_id"] for a in datasets["items"]]
    detail = alice_node.get(f"/v1/assets/{asset_id}", signer=bob).json()
    assert detail["version_count"] == 1 and [v["version"] for v in detail["versions"]] == [1]


def test_gateway_car_stream_reads_one_block_at_a_time(alice_node, published, monkeypatch):
    """A client may stall mid-stream: the gateway holds no read-ahead (blocks, threads) for it."""
    from vault import car

    def no_read_ahead(*args, **kwargs):
        raise AssertionError("the gateway's CAR stream must not read ahead")

    monkeypatch.setattr(car, "disk_prefetch", no_read_ahead)
    root = CID.decode(published[1]["cid"])
    response = alice_node.client.get(f"/ipfs/{root}?format=car")
    assert response.status_code == 200
    roots, blocks = read_car(io.BytesIO(response.content))
    assert roots == [root] and b"".join(d for c, d in blocks if c.codec == 0x55) == \
        b"".join(export(root, alice_node.node.blockstore.get))


def test_gateway_serves_verifiable_car_and_raw(alice_node, published):
    _, body = published
    root = CID.decode(body["cid"])
    with gateway(alice_node) as gw:
        ciphertext = b"".join(gw.fetch_file(root, via="car"))
        assert ciphertext == b"".join(gw.fetch_file(root, via="raw"))
    assert ciphertext.startswith(b"age-encryption.org/v1\n")  # ciphertext only
    assert ciphertext == b"".join(export(root, alice_node.node.blockstore.get))
    response = alice_node.client.get(f"/ipfs/{root}", headers={"Accept": "application/vnd.ipld.car"})
    assert response.headers["content-type"].startswith("application/vnd.ipld.car")
    roots, blocks = read_car(io.BytesIO(response.content))
    assert roots == [root] and len(list(blocks)) == 5  # 4 leaves + root
    raw = alice_node.client.get(f"/ipfs/{root}?format=raw")
    assert raw.headers["content-type"] == "application/vnd.ipld.raw"
    root.verify(raw.content)


@pytest.mark.parametrize("path, headers, status, code", [
    ("/ipfs/not-a-cid?format=raw", {}, 400, "invalid_cid"),
    ("/ipfs/bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e?format=car", {}, 404, "block_not_found"),
    ("/ipfs/bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e?format=raw", {}, 404, "block_not_found"),
    ("/ipfs/bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e", {}, 406, "not_acceptable"),
    ("/ipfs/bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e?format=zip", {}, 422, "invalid_request"),
])
def test_gateway_refusals(alice_node, path, headers, status, code):
    response = alice_node.client.get(path, headers=headers)
    assert (response.status_code, response.json()["error"]) == (status, code)


def test_same_idempotency_key_gives_one_version(alice_node):
    asset_id = alice_node.create_asset("retried upload")
    first = alice_node.publish(asset_id, b"sensor rows\n" * 1000, key="retry-me")
    again = alice_node.publish(asset_id, b"sensor rows\n" * 1000, key="retry-me")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert alice_node.ledger.get_asset(asset_id).version_count == 1
    published = alice_node.node.audit.query(kind="asset_published", asset_id=asset_id).records
    assert [r.seq for r in published] == [first.json()["audit_seq"]]  # audited once


def test_retry_after_the_transaction_landed_unanswered(alice_node):
    """The node sealed, journalled and registered, but the answer never reached the
    client (simulated by rolling the journal row back to `sealed`): the retry finds the
    version on chain and answers 200 with it."""
    from sqlalchemy import text

    asset_id = alice_node.create_asset("lost answer")
    first = alice_node.publish(asset_id, b"abc" * 5000, key="lost-answer")
    with alice_node.node.engine.begin() as conn:
        conn.execute(text("UPDATE node_publish_journal SET status='sealed', version=NULL, tx_hash=NULL, block=NULL, "
                          "audit_seq=NULL WHERE idem_key='lost-answer'"))
    again = alice_node.publish(asset_id, b"abc" * 5000, key="lost-answer")
    assert again.status_code == 200, again.text
    assert {k: again.json()[k] for k in ("version", "cid", "commitment", "tx_hash")} == {
        k: first.json()[k] for k in ("version", "cid", "commitment", "tx_hash")}
    assert alice_node.ledger.get_asset(asset_id).version_count == 1


def test_same_key_with_other_bytes_is_a_conflict(alice_node):
    asset_id = alice_node.create_asset("key reuse")
    assert alice_node.publish(asset_id, b"one", key="reused").status_code == 201
    response = alice_node.publish(asset_id, b"two", key="reused")
    assert (response.status_code, response.json()["error"]) == (409, "idempotency_key_reused")
    assert alice_node.ledger.get_asset(asset_id).version_count == 1


def test_without_a_key_identical_uploads_are_distinct_versions(alice_node):
    asset_id = alice_node.create_asset("no key")
    a = alice_node.publish(asset_id, b"same bytes")
    b = alice_node.publish(asset_id, b"same bytes")
    assert (a.status_code, b.status_code) == (201, 201)
    assert (a.json()["version"], b.json()["version"]) == (1, 2) and a.json()["commitment"] != b.json()["commitment"]


def _store_size(harness: NodeHarness) -> int:
    return sum(1 for _ in harness.node.blockstore.iter_cids())


@pytest.mark.parametrize("case", ["hash_mismatch", "no_file_part", "unknown_part", "truncated", "not_multipart",
                                  "bad_parents", "duplicate_file", "bad_key"])
def test_bad_uploads_are_refused_with_nothing_sealed(alice_node, case):
    asset_id = alice_node.create_asset(f"bad upload {case}")
    blocks_before = _store_size(alice_node)
    body, content_type = multipart(b"payload bytes" * 100)
    signed_hash, key = None, None
    if case == "hash_mismatch":
        signed_hash = body_hash(body + b"x")
    elif case == "no_file_part":
        body = body.replace(b'name="file"', b'name="other"')
    elif case == "unknown_part":
        body, content_type = multipart(b"x", extra=[("comment", b"hi")])
    elif case == "truncated":
        body = body[:-10]
    elif case == "not_multipart":
        content_type = "application/octet-stream"
    elif case == "bad_parents":
        body, content_type = multipart(b"x", parents=["not-a-ref"])
    elif case == "duplicate_file":
        body, content_type = multipart(b"x", extra=[("file", b"again")])
    elif case == "bad_key":
        key = "has space"
    response = alice_node.upload(asset_id, body, content_type, key=key, signed_hash=signed_hash)
    expected = {"hash_mismatch": (401, "body_hash_mismatch"), "bad_parents": (422, "invalid_field"),
                "bad_key": (422, "invalid_field")}.get(case, (422, "invalid_multipart"))
    assert (response.status_code, response.json()["error"]) == expected, response.text
    assert _store_size(alice_node) == blocks_before
    assert alice_node.ledger.get_asset(asset_id).version_count == 0
    assert not list((alice_node.node.settings.org_dir / "tmp").iterdir())


def test_publish_refusals_before_reading(alice_node, members, published):
    asset_id, _ = published
    bob = members["bob"].account
    body, content_type = multipart(b"x")
    by_bob = alice_node.upload(asset_id, body, content_type, signer=bob)
    assert (by_bob.status_code, by_bob.json()["error"]) == (403, "not_own_org")
    unknown = alice_node.upload(10**6, body, content_type)
    assert (unknown.status_code, unknown.json()["error"]) == (404, "unknown_asset")
    unsigned = alice_node.client.post(f"/v1/assets/{asset_id}/versions", content=body,
                                      headers={"content-type": content_type})
    assert (unsigned.status_code, unsigned.json()["error"]) == (401, "missing_auth")


def test_parents_lineage_and_prov(alice_node, published):
    asset_id, _ = published
    derived = alice_node.create_asset("derived report", kind="report")
    response = alice_node.publish(derived, b"report", parents=[f"{asset_id}@1"])
    assert response.status_code == 201, response.text
    assert response.json()["parents"] == [f"{asset_id}@1"]
    assert alice_node.node.queries.version(derived, 1).parents == (VersionRef(asset_id, 1),)
    up = alice_node.get(f"/v1/lineage/{derived}/1?direction=ancestors").json()
    assert up["ancestors"] == [{"asset_id": asset_id, "version": 1, "depth": 1}] and up["descendants"] == []
    down = alice_node.get(f"/v1/lineage/{asset_id}/1?direction=descendants").json()
    assert {"asset_id": derived, "version": 1, "depth": 1} in down["descendants"]
    prov = alice_node.get(f"/v1/lineage/{derived}/1/prov").json()
    assert f"tl:asset-{asset_id}-v1" in prov["entity"] and f"tl:asset-{derived}-v1" in prov["entity"]
    missing = alice_node.get(f"/v1/lineage/{derived}/9")
    assert (missing.status_code, missing.json()["error"]) == (404, "unknown_asset_version")
    unknown_parent = alice_node.publish(derived, b"x", parents=[f"{asset_id}@7"])
    assert (unknown_parent.status_code, unknown_parent.json()["error"]) == (422, "unknown_parent")


def test_grant_revoke_and_listings(alice_node, members, published):
    asset_id, _ = published
    bob = members["bob"]
    issued = alice_node.grant(asset_id, bob.address, ["READ", "SYNC"], purpose="twin sync")
    record = alice_node.node.audit.get(issued["audit_seq"])
    assert (record.kind, record.details["grantee"], list(record.details["permissions"])) == (
        "grant_issued", bob.address, ["READ", "SYNC"])
    listed = alice_node.get(f"/v1/assets/{asset_id}/grants", signer=bob.account).json()["items"]
    assert [(g["grantee"], g["permissions"], g["purpose"], g["active"], g["in_force"]) for g in listed] == [
        (bob.address, ["READ", "SYNC"], "twin sync", True, True)]
    feed = alice_node.get("/v1/grants?permission=SYNC", signer=bob.account).json()["items"]
    assert [g["asset_id"] for g in feed] == [asset_id]
    assert alice_node.get("/v1/grants?permission=COMPUTE", signer=bob.account).json()["items"] == []
    revoked = alice_node.delete(f"/v1/assets/{asset_id}/grants/{bob.address}")
    assert revoked.status_code == 200, revoked.text
    assert alice_node.node.audit.get(revoked.json()["audit_seq"]).kind == "grant_revoked"
    after = alice_node.get(f"/v1/assets/{asset_id}/grants", signer=bob.account).json()["items"]
    assert [(g["active"], g["in_force"]) for g in after] == [(False, False)]
    again = alice_node.delete(f"/v1/assets/{asset_id}/grants/{bob.address}")
    assert (again.status_code, again.json()["error"]) == (404, "no_grant")
    both = alice_node.post_json(f"/v1/assets/{asset_id}/grants", {
        "grantee": bob.address, "permissions": ["READ"], "expiry": 2**40, "ttl_seconds": 5})
    assert (both.status_code, both.json()["error"]) == (422, "invalid_field")


@pytest.mark.parametrize("path", ["/v1/assets/abc", "/v1/assets/1/versions/0", "/v1/audit/records?limit=0",
                                  "/v1/audit/records?kind=Bad-Kind", "/v1/assets?owner=0x12",
                                  "/v1/lineage/1/1?direction=sideways"])
def test_bad_parameters_are_4xx(alice_node, path):
    response = alice_node.get(path)
    assert 400 <= response.status_code < 500, response.text


def test_openapi_documents_the_routes(alice_node):
    spec = alice_node.client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in ("/v1/assets", "/v1/assets/{asset_id}/versions", "/v1/keys", "/v1/consumptions", "/ipfs/{cid}",
                 "/v1/audit/records", "/v1/audit/records/{seq}/proof", "/v1/audit/head", "/v1/grants",
                 "/v1/lineage/{asset_id}/{version}", "/v1/lineage/{asset_id}/{version}/prov"):
        assert path in paths, path
    upload = paths["/v1/assets/{asset_id}/versions"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload
    assert "examples" in spec["components"]["schemas"]["AssetCreate"]
