"""SDK unit tests: request signing, problem bodies → typed errors, retries, the upload
body and the JSON shapes it sends. The node is an httpx.MockTransport handler that
checks what the SDK sent independently (signature recovery, python-multipart parsing);
the chain is a real Anvil (tests/api/conftest.py) for the registry look-ups."""
from __future__ import annotations

import json

import httpx
import pytest
from eth_hash.auto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st
from python_multipart import MultipartParser

from api.auth.eip712 import Eip712Domain, NodeRequest
from api.auth.headers import parse_headers
from api.errors import InvalidFieldError, InputValidationError
from api.keystore import OrgKeys
from api.sdk import (
    NodeUnreachableError,
    RemoteAuthError,
    RemoteConflictError,
    RemoteError,
    RemoteForbiddenError,
    RemoteInputError,
    RemoteNotFoundError,
    RemoteUnavailableError,
    SdkError,
    TwinLedgerClient,
    UntrustedAnswerError,
    parse_ref,
    permission_names,
)
from api.sdk.models import ref_text
from ledger.client import LedgerClient
from ledger.models import Permission, VersionRef

NODE = "http://own.node:8700"


class Recorder:
    """A MockTransport handler: records requests, answers from a queue or a function."""

    def __init__(self, answer=None) -> None:
        self.requests: list[httpx.Request] = []
        self.bodies: list[bytes] = []
        self.answers: list[httpx.Response] = []
        self.answer = answer

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.bodies.append(request.read())
        if self.answers:
            return self.answers.pop(0)
        if self.answer is not None:
            return self.answer(request)
        return httpx.Response(200, json={"ok": True})


def recovered_signer(request: httpx.Request, domain: Eip712Domain, body: bytes) -> tuple[str, NodeRequest]:
    """Check the X-TwinLedger-* headers as a node would; the signer and signed message."""
    signed = parse_headers(dict(request.headers))
    digest = signed.body_hash if signed.body_hash is not None else keccak(body)
    if signed.body_hash is not None:
        assert keccak(body) == signed.body_hash
    message = NodeRequest(method=request.method, path=request.url.raw_path.decode(), body_hash=digest,
                          signer=signed.signer, nonce=signed.nonce, deadline=signed.deadline)
    return message.recover(domain, signed.signature), message


@pytest.fixture(scope="module")
def ledger(w3, deployment) -> LedgerClient:  # noqa: F811
    return LedgerClient(w3, deployment)


@pytest.fixture(scope="module")
def alice_keys(members) -> OrgKeys:
    return OrgKeys("alice", members["alice"].account, members["alice"].identity)


def client_with(handler, keys, ledger, **kw) -> TwinLedgerClient:
    return TwinLedgerClient(NODE, keys, ledger=ledger, transport=httpx.MockTransport(handler), **kw)


# -- signing -----------------------------------------------------------------------------------


def test_get_requests_are_signed_over_path_and_query_as_sent(alice_keys, ledger):
    rec = Recorder(lambda r: httpx.Response(200, json={"items": [], "next_after_seq": None}))
    client = client_with(rec, alice_keys, ledger, clock=lambda: 1_000_000)
    client.audit_records(kind="key_denied", asset=7, limit=5)
    client.audit_records(kind="key_denied", asset=7, limit=5)
    (first, second) = rec.requests
    assert first.url.raw_path == b"/v1/audit/records?asset=7&kind=key_denied&limit=5"
    domain = Eip712Domain.from_deployment(ledger.deployment)
    signer, message = recovered_signer(first, domain, b"")
    assert signer == alice_keys.address
    assert message.path == "/v1/audit/records?asset=7&kind=key_denied&limit=5"
    assert message.deadline == 1_000_000 + 60
    assert "x-twinledger-body-hash" not in first.headers  # only streamed uploads carry it
    assert first.headers["x-twinledger-nonce"] != second.headers["x-twinledger-nonce"]


def test_json_bodies_are_signed_by_their_exact_bytes(alice_keys, ledger, members):
    rec = Recorder(lambda r: httpx.Response(201, json={"tx_hash": "0x01", "block": 3, "audit_seq": 4}))
    client = client_with(rec, alice_keys, ledger)
    answer = client.grant(12, members["bob"].address.lower(), "read,sync", ttl_seconds=3600, purpose="twin sync")
    assert answer["audit_seq"] == 4
    request, body = rec.requests[0], rec.bodies[0]
    assert request.method == "POST" and request.url.path == "/v1/assets/12/grants"
    assert json.loads(body) == {"grantee": members["bob"].address, "permissions": ["READ", "SYNC"],
                                "purpose": "twin sync", "ttl_seconds": 3600}
    signer, _ = recovered_signer(request, Eip712Domain.from_deployment(ledger.deployment), body)
    assert signer == alice_keys.address


def test_a_signature_for_another_deployment_does_not_recover_the_signer(alice_keys, ledger):
    rec = Recorder()
    client_with(rec, alice_keys, ledger).asset(3)
    other = Eip712Domain(chain_id=ledger.deployment.chain_id + 1, verifying_contract=ledger.deployment.asset_ledger)
    signer, _ = recovered_signer(rec.requests[0], other, b"")
    assert signer != alice_keys.address


def test_grant_resolves_org_names_on_chain_and_takes_an_expiry(alice_keys, ledger, members):
    rec = Recorder(lambda r: httpx.Response(201, json={"tx_hash": "0x01", "block": 3, "audit_seq": 1}))
    client = client_with(rec, alice_keys, ledger)
    client.grant(5, "bob", [Permission.COMPUTE], expiry=2_000_000_000)
    body = json.loads(rec.bodies[0])
    assert body["grantee"] == members["bob"].address and body["expiry"] == 2_000_000_000
    assert body["permissions"] == ["COMPUTE"] and "ttl_seconds" not in body
    client.revoke(5, "bob")
    assert rec.requests[1].method == "DELETE"
    assert rec.requests[1].url.path == f"/v1/assets/5/grants/{members['bob'].address}"
    with pytest.raises(SdkError, match="no organisation named 'nobody'"):
        client.grant(5, "nobody", "read", ttl_seconds=1)
    with pytest.raises(SdkError, match="not a registered organisation"):
        client.grant(5, members["mallory"].address, "read", ttl_seconds=1)
    with pytest.raises(InputValidationError, match="exactly one of"):
        client.grant(5, "bob", "read")
    assert len(rec.requests) == 2  # nothing sent for the refused calls


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status, cls", [
    (400, RemoteInputError), (401, RemoteAuthError), (403, RemoteForbiddenError), (404, RemoteNotFoundError),
    (409, RemoteConflictError), (413, RemoteInputError), (422, RemoteInputError), (418, RemoteInputError),
    (500, RemoteError), (502, RemoteUnavailableError), (503, RemoteUnavailableError),
])
def test_problem_bodies_become_typed_errors(alice_keys, ledger, status, cls):
    body = {"error": "some_code", "detail": "what went wrong", "audit_seq": 41}
    rec = Recorder(lambda r: httpx.Response(status, json=body, headers={"Content-Type": "application/problem+json"}))
    client = client_with(rec, alice_keys, ledger)
    client._http.retries = 0
    with pytest.raises(cls) as info:
        client.asset(1)
    exc = info.value
    assert type(exc) is cls
    assert (exc.status, exc.reason, exc.detail, exc.audit_seq) == (status, "some_code", "what went wrong", 41)
    assert "some_code: what went wrong (audit record 41)" in str(exc)


def test_a_problem_without_json_keeps_the_status(alice_keys, ledger):
    rec = Recorder(lambda r: httpx.Response(404, text="nothing here"))
    with pytest.raises(RemoteNotFoundError) as info:
        client_with(rec, alice_keys, ledger).asset(1)
    assert (info.value.reason, info.value.detail, info.value.audit_seq) == ("http_404", "nothing here", None)


def test_unreachable_node_and_malformed_answers(alice_keys, ledger):
    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)

    client = client_with(refuse, alice_keys, ledger)
    client._http.backoff = 0
    with pytest.raises(NodeUnreachableError, match="no answer from the node"):
        client.asset(1)
    bad = client_with(lambda r: httpx.Response(200, text="<html>"), alice_keys, ledger)
    with pytest.raises(UntrustedAnswerError, match="not JSON"):
        bad.asset(1)


def test_reads_are_retried_on_transient_failures_with_a_fresh_signature(alice_keys, ledger):
    rec = Recorder()
    rec.answers = [httpx.Response(503, json={"error": "chain_unavailable", "detail": "x"})]
    client = client_with(rec, alice_keys, ledger)
    client._http.backoff = 0
    assert client.asset(9) == {"ok": True}
    assert len(rec.requests) == 2
    assert rec.requests[0].headers["x-twinledger-nonce"] != rec.requests[1].headers["x-twinledger-nonce"]
    # a write is not retried: a grant is a transaction
    rec.answers = [httpx.Response(503, json={"error": "chain_unavailable", "detail": "x"})]
    with pytest.raises(RemoteUnavailableError):
        client.revoke(9, alice_keys.address)
    assert len(rec.requests) == 3


# -- publish -----------------------------------------------------------------------------------


def split_multipart(request: httpx.Request, body: bytes) -> dict[str, tuple[dict[str, str], bytes]]:
    boundary = request.headers["content-type"].split("boundary=", 1)[1]
    parts: dict[str, tuple[dict[str, str], bytes]] = {}
    state: dict = {}

    def on_part_begin():
        state.update(headers={}, data=bytearray(), field=b"", value=b"")

    def on_header_field(data, start, end):
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["field"].decode().lower()] = state["value"].decode()
        state["field"], state["value"] = b"", b""

    def on_part_data(data, start, end):
        state["data"] += data[start:end]

    def on_part_end():
        disposition = state["headers"]["content-disposition"]
        name = disposition.split('name="', 1)[1].split('"', 1)[0]
        parts[name] = (state["headers"], bytes(state["data"]))

    parser = MultipartParser(boundary, {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                                        "on_header_value": on_header_value, "on_header_end": on_header_end,
                                        "on_part_data": on_part_data, "on_part_end": on_part_end})
    parser.write(body)
    parser.finalize()
    return parts


def published(request: httpx.Request) -> httpx.Response:
    return httpx.Response(201, json={"asset_id": 3, "version": 2, "cid": "bafkqaaa", "commitment": "0x" + "ab" * 32,
                                     "size": 5, "parents": ["1@1", {"asset_id": 2, "version": 4}],
                                     "tx_hash": "0x" + "11" * 32, "block": 9, "audit_seq": 12})


def test_publish_streams_a_multipart_body_signed_by_its_hash(tmp_path, alice_keys, ledger):
    data = bytes(range(256)) * 5000 + b"tail"
    src = tmp_path / 'odd "name".bin'
    src.write_bytes(data)
    rec = Recorder(published)
    rec.answers = [httpx.Response(503, json={"error": "store_unavailable", "detail": "busy"})]
    client = client_with(rec, alice_keys, ledger)
    client._http.backoff = 0
    seen: list[int] = []
    result = client.publish(src, asset_id=3, parents=["1@1", VersionRef(2, 4)], progress=seen.append)
    assert (result.asset_id, result.version, result.parents, result.audit_seq, result.created) == \
        (3, 2, ("1@1", "2@4"), 12, True)
    assert len(rec.requests) == 2  # one transient failure, one retry
    first, second = rec.requests
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert first.headers["x-twinledger-nonce"] != second.headers["x-twinledger-nonce"]
    for request, body in zip(rec.requests, rec.bodies):
        assert request.url.path == "/v1/assets/3/versions"
        assert int(request.headers["content-length"]) == len(body)
        signer, message = recovered_signer(request, Eip712Domain.from_deployment(ledger.deployment), body)
        assert signer == alice_keys.address and message.body_hash == keccak(body)
        parts = split_multipart(request, body)
        assert parts["file"][1] == data
        assert 'filename="odd %22name%22.bin"' in parts["file"][0]["content-disposition"]
        assert json.loads(parts["parents"][1]) == ["1@1", "2@4"]
    assert sum(seen) == len(data)  # the retry's progress starts over


def test_publish_without_parents_sends_only_the_file_and_creates_the_asset(tmp_path, alice_keys, ledger):
    src = tmp_path / "f.bin"
    src.write_bytes(b"hello")

    def answer(request):
        if request.url.path == "/v1/assets":
            return httpx.Response(201, json={"asset_id": "3", "owner": alice_keys.address, "kind": "model",
                                             "name": "pump", "metadata_digest": "0x" + "00" * 32})
        return published(request)

    rec = Recorder(answer)
    result = client_with(rec, alice_keys, ledger).publish(src, name="pump", kind="MODEL", metadata={"site": "B"})
    assert json.loads(rec.bodies[0]) == {"kind": "model", "name": "pump", "metadata": {"site": "B"}}
    assert rec.requests[1].url.path == "/v1/assets/3/versions"
    assert set(split_multipart(rec.requests[1], rec.bodies[1])) == {"file"}
    assert result.version == 2
    with pytest.raises(InputValidationError):
        client_with(rec, alice_keys, ledger).publish(src)  # neither asset nor name+kind
    with pytest.raises(InvalidFieldError, match="kind"):
        client_with(rec, alice_keys, ledger).publish(src, name="x", kind="spaceship")


# -- value parsing (property tests) ----------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**256 - 1), st.integers(1, 2**32 - 1))
def test_version_refs_round_trip(asset, version):
    ref = VersionRef(asset, version)
    assert parse_ref(ref_text(ref)) == ref
    assert parse_ref(f" {asset} @ {version} ") == ref


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=30))
def test_bad_version_refs_are_named_errors(text):
    try:
        ref = parse_ref(text)
    except InvalidFieldError as exc:
        assert exc.field == "parent"
    else:
        asset, version = (int(part) for part in text.split("@"))
        assert ref == VersionRef(asset, version) and version >= 1


@settings(max_examples=50, deadline=None)
@given(st.sets(st.sampled_from(["read", "sync", "compute", "READ", "Sync"]), min_size=1))
def test_permission_names_from_any_spelling(names):
    expected = [p for p in ("READ", "SYNC", "COMPUTE") if p in {n.upper() for n in names}]
    assert permission_names(",".join(names)) == expected
    flag = Permission(0)
    for n in expected:
        flag |= Permission[n]
    assert permission_names(flag) == expected


def test_bad_permissions_are_refused():
    with pytest.raises(InvalidFieldError, match="unknown permission 'write'"):
        permission_names("read,write")
    with pytest.raises(InvalidFieldError, match="at least one"):
        permission_names("")
