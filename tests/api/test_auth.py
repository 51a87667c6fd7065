"""The authentication matrix (DESIGN §8) against a real Anvil chain and Consortium."""
from __future__ import annotations

import dataclasses
import time

import pytest

from api.auth import (
    Eip712Domain,
    KeyRequest,
    LedgerOrgDirectory,
    NonceStore,
    RequestAuthenticator,
    body_hash,
    new_nonce,
    sign_request,
)
from api.auth.headers import BODY_HASH, SIGNATURE
from api.errors import (
    BadSignatureError,
    BodyHashMismatchError,
    DeadlineExpiredError,
    DeadlineTooFarError,
    InactiveOrgError,
    InvalidFieldError,
    MissingAuthError,
    RecipientMismatchError,
    ReplayedNonceError,
    UnknownOrgError,
)
from ledger.client import LedgerClient
from ledger.db import make_engine
from vault.age import X25519Identity

NOW = 1_900_000_000
WINDOW = 300


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def domain(deployment) -> Eip712Domain:
    return Eip712Domain.from_deployment(deployment)


@pytest.fixture
def nonces(tmp_path) -> NonceStore:
    return NonceStore(make_engine(f"sqlite:///{tmp_path / 'nonces.db'}"))


@pytest.fixture
def auth(domain, nonces, w3, deployment) -> RequestAuthenticator:
    directory = LedgerOrgDirectory(LedgerClient(w3, deployment))  # read-only client
    return RequestAuthenticator(domain, nonces, directory, clock=Clock(NOW), max_window=WINDOW)


def key_request(member, **overrides) -> KeyRequest:
    fields = dict(asset=1, version=1, consumer=member.address, recipient=member.recipient, purpose="maintenance",
                  permission=1, nonce=new_nonce(), deadline=NOW + 60)
    fields.update(overrides)
    return KeyRequest(**fields)


def test_domain_matches_the_contracts_eip712_domain(domain, admin_ledger):
    assert admin_ledger.eip712_domain() == domain.to_dict()


def test_valid_key_request_is_accepted_and_its_nonce_consumed(auth, nonces, domain, members):
    alice = members["alice"]
    request = key_request(alice)
    assert auth.verify_key_request(request, request.sign(domain, alice.account)) == request
    assert nonces.seen(alice.address, request.nonce)


def test_replayed_nonce_is_rejected(auth, domain, members):
    alice = members["alice"]
    request = key_request(alice)
    signature = request.sign(domain, alice.account)
    auth.verify_key_request(request, signature)
    with pytest.raises(ReplayedNonceError) as info:
        auth.verify_key_request(request, signature)
    assert info.value.reason == "replayed_nonce"


def _other_chain(domain):
    return Eip712Domain(domain.chain_id + 1, domain.verifying_contract)


def _other_contract(domain):
    return Eip712Domain(domain.chain_id, "0x" + "11" * 20)


# (case, build(members, domain) -> (request, signature), expected error, reason)
CASES = [
    ("deadline passed", lambda m, d: _signed(m["alice"], d, deadline=NOW - 1), DeadlineExpiredError,
     "deadline_expired"),
    ("deadline too far", lambda m, d: _signed(m["alice"], d, deadline=NOW + WINDOW + 1), DeadlineTooFarError,
     "deadline_too_far"),
    ("another chain id", lambda m, d: _signed(m["alice"], _other_chain(d)), BadSignatureError, "bad_signature"),
    ("another verifying contract", lambda m, d: _signed(m["alice"], _other_contract(d)), BadSignatureError,
     "bad_signature"),
    ("unregistered address", lambda m, d: _signed(m["mallory"], d), UnknownOrgError, "unknown_org"),
    ("inactive org", lambda m, d: _signed(m["carol"], d), InactiveOrgError, "inactive_org"),
    ("recipient not the registered one",
     lambda m, d: _signed(m["alice"], d, recipient=str(X25519Identity.generate().recipient)),
     RecipientMismatchError, "recipient_mismatch"),
    ("another org's registered recipient", lambda m, d: _signed(m["alice"], d, recipient=m["bob"].recipient),
     RecipientMismatchError, "recipient_mismatch"),
    ("tampered purpose", lambda m, d: _tampered(m["alice"], d, purpose="something else"), BadSignatureError,
     "bad_signature"),
    ("tampered asset", lambda m, d: _tampered(m["alice"], d, asset=2), BadSignatureError, "bad_signature"),
    ("tampered permission", lambda m, d: _tampered(m["alice"], d, permission=2), BadSignatureError,
     "bad_signature"),
    ("signed by another org for alice", lambda m, d: _signed_by(m["bob"], m["alice"], d), BadSignatureError,
     "bad_signature"),
]


def _signed(member, domain, **overrides):
    request = key_request(member, **overrides)
    return request, request.sign(domain, member.account)


def _tampered(member, domain, **changes):
    request, signature = _signed(member, domain)
    return dataclasses.replace(request, **changes), signature


def _signed_by(signer, claimed, domain):
    request = key_request(claimed)
    return request, request.sign(domain, signer.account)


@pytest.mark.parametrize("build, error, reason", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_key_request_rejections(auth, nonces, domain, members, build, error, reason):
    request, signature = build(members, domain)
    with pytest.raises(error) as info:
        auth.verify_key_request(request, signature)
    assert info.value.reason == reason
    consumed = nonces.seen(request.consumer, request.nonce)
    # The nonce is consumed only after signature, deadline and org checks passed.
    assert consumed == (error is RecipientMismatchError)


def test_malformed_signature_is_an_input_error(auth, members):
    request = key_request(members["alice"])
    with pytest.raises(InvalidFieldError):
        auth.verify_key_request(request, b"\x01" * 64)
    with pytest.raises(BadSignatureError):  # right length, not a valid signature
        auth.verify_key_request(request, b"\xff" * 65)


def test_deadline_boundaries(domain, nonces, members, auth):
    alice = members["alice"]
    for deadline in (NOW, NOW + WINDOW):  # both ends of the window are accepted
        request, signature = _signed(alice, domain, deadline=deadline)
        assert auth.verify_key_request(request, signature) == request


# -- signed HTTP requests (NodeRequest headers) ----------------------------------------


def _headers(member, domain, method="POST", path="/v1/things?x=1", body=b'{"a":1}', **kw):
    return sign_request(member.account, domain, method, path, body, clock=lambda: NOW, **kw)


def test_signed_http_request_returns_the_signer(auth, domain, members):
    alice = members["alice"]
    headers = _headers(alice, domain)
    assert auth.authenticate_request("POST", "/v1/things?x=1", body_hash(b'{"a":1}'), headers) == alice.address
    with pytest.raises(ReplayedNonceError):
        auth.authenticate_request("POST", "/v1/things?x=1", body_hash(b'{"a":1}'), headers)


@pytest.mark.parametrize("method, path, body", [
    ("PUT", "/v1/things?x=1", b'{"a":1}'),
    ("POST", "/v1/things?x=2", b'{"a":1}'),
    ("POST", "/v1/things", b'{"a":1}'),
    ("POST", "/v1/things?x=1", b'{"a":2}'),
    ("POST", "/v1/things?x=1", b""),
], ids=["method", "query", "no query", "body", "empty body"])
def test_signed_http_request_bound_to_method_path_and_body(auth, domain, members, method, path, body):
    headers = _headers(members["alice"], domain)
    with pytest.raises(BadSignatureError):
        auth.authenticate_request(method, path, body_hash(body), headers)


def test_http_request_errors(auth, domain, members):
    alice = members["alice"]
    with pytest.raises(MissingAuthError):
        auth.authenticate_request("GET", "/", body_hash(b""), {})
    headers = _headers(alice, domain)
    headers[SIGNATURE] = "0x1234"
    with pytest.raises(InvalidFieldError) as info:
        auth.authenticate_request("POST", "/v1/things?x=1", body_hash(b'{"a":1}'), headers)
    assert info.value.field == SIGNATURE
    with pytest.raises(InactiveOrgError):
        auth.authenticate_request("GET", "/v1/x", body_hash(b""), _headers(members["carol"], domain, "GET", "/v1/x", b""))
    with pytest.raises(DeadlineExpiredError):
        auth.authenticate_request("GET", "/v1/x", body_hash(b""),
                                  _headers(alice, domain, "GET", "/v1/x", b"", ttl=-1))


def test_streamed_body_hash_header(auth, domain, members):
    alice = members["alice"]
    data = b"x" * 1000
    headers = sign_request(alice.account, domain, "POST", "/v1/upload", streamed_body_hash=body_hash(data),
                           clock=lambda: NOW)
    assert BODY_HASH in headers
    assert auth.authenticate_request("POST", "/v1/upload", None, headers) == alice.address
    # a node that did read the body compares it with the header first
    headers = sign_request(alice.account, domain, "POST", "/v1/upload", streamed_body_hash=body_hash(data),
                           clock=lambda: NOW)
    with pytest.raises(BodyHashMismatchError):
        auth.authenticate_request("POST", "/v1/upload", body_hash(b"other"), headers)
    with pytest.raises(MissingAuthError):  # no body hash from anywhere
        auth.authenticate_request("POST", "/v1/upload", None, _headers(alice, domain))


def test_directory_follows_the_chain_without_cache(auth, domain, members, admin_ledger):
    """Deactivation takes effect for the very next request (no cache)."""
    bob = members["bob"]
    request, signature = _signed(bob, domain)
    auth.verify_key_request(request, signature)
    admin_ledger.deactivate_org(bob.address)
    try:
        request, signature = _signed(bob, domain)
        with pytest.raises(InactiveOrgError):
            auth.verify_key_request(request, signature)
    finally:
        admin_ledger.reactivate_org(bob.address)


def test_prune_forgets_only_expired_nonces(nonces, members):
    alice = members["alice"].address
    nonces.consume(alice, b"\x01" * 32, 100)
    nonces.consume(alice, b"\x02" * 32, 200)
    assert nonces.prune(150) == 1
    assert not nonces.seen(alice, b"\x01" * 32)
    assert nonces.seen(alice, b"\x02" * 32)


def test_wall_clock_default(domain, nonces, w3, deployment, members):
    auth = RequestAuthenticator(domain, nonces, LedgerOrgDirectory(LedgerClient(w3, deployment)))
    alice = members["alice"]
    request = key_request(alice, deadline=int(time.time()) + 30)
    assert auth.verify_key_request(request, request.sign(domain, alice.account)) == request
