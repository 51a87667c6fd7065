"""EIP-712 messages: JSON round trips, sign/recover round trips, an independent digest
computation (so field order and type strings are pinned), and field validation."""
from __future__ import annotations

import json

import pytest
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from api.auth import Eip712Domain, KeyReceipt, KeyRequest, NodeRequest
from api.auth.headers import parse_headers, sign_request
from api.errors import BadSignatureError, InvalidFieldError, MalformedBodyError, MissingAuthError
from vault.age import X25519Identity

ACCOUNT = Account.from_key(b"\x01" * 32)
OTHER = Account.from_key(b"\x02" * 32)
RECIPIENTS = [str(X25519Identity(bytes([i + 1]) * 32).recipient) for i in range(3)]  # fixed: stable test ids

uint = lambda bits: st.integers(min_value=0, max_value=2**bits - 1)  # noqa: E731
addresses = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
bytes32 = st.binary(min_size=32, max_size=32)
purposes = st.text(max_size=60)
domains = st.builds(Eip712Domain, chain_id=uint(64), verifying_contract=addresses)

key_requests = st.builds(KeyRequest, asset=uint(256), version=uint(32), consumer=addresses,
                         recipient=st.sampled_from(RECIPIENTS), purpose=purposes, permission=uint(8),
                         nonce=bytes32, deadline=uint(64))
key_receipts = st.builds(KeyReceipt, asset=uint(256), version=uint(32), owner=addresses, consumer=addresses,
                         recipient=st.sampled_from(RECIPIENTS), header_hash=bytes32, audit_seq=uint(64),
                         issued_at=uint(64))
node_requests = st.builds(NodeRequest, method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
                          path=st.from_regex(r"/[a-z0-9/_?=&%.-]{0,40}", fullmatch=True), body_hash=bytes32,
                          signer=addresses, nonce=bytes32, deadline=uint(64))
messages = st.one_of(key_requests, key_receipts, node_requests)

SETTINGS = settings(max_examples=50, deadline=None)


@SETTINGS
@given(messages)
def test_json_round_trip(message):
    wire = json.loads(json.dumps(message.to_json()))
    assert type(message).from_json(wire) == message


@SETTINGS
@given(messages)
def test_decimal_string_integers_are_accepted(message):
    wire = {k: str(v) if isinstance(v, int) else v for k, v in message.to_json().items()}
    assert type(message).from_json(wire) == message


@settings(max_examples=25, deadline=None)
@given(messages, domains)
def test_sign_recover_round_trip(message, domain):
    signature = message.sign(domain, ACCOUNT)
    assert len(signature) == 65
    assert message.recover(domain, signature) == ACCOUNT.address
    assert message.recover(domain, "0x" + signature.hex()) == ACCOUNT.address
    assert message.recover(domain, OTHER.sign_message(message.signable(domain)).signature) == OTHER.address


def _type_hash(cls) -> bytes:
    body = ",".join(f"{t} {n}" for n, t, _ in cls._SCHEMA)
    return keccak(text=f"{cls.__name__}({body})")


def _independent_digest(message, domain) -> bytes:
    """EIP-712 computed by hand with eth_abi (no encode_typed_data)."""
    domain_sep = keccak(abi_encode(
        ["bytes32", "bytes32", "bytes32", "uint256", "address"],
        [keccak(text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
         keccak(text="TwinLedger"), keccak(text="1"), domain.chain_id, domain.verifying_contract]))
    types, values = ["bytes32"], [_type_hash(type(message))]
    for name, soltype, _ in type(message)._SCHEMA:
        value = message.to_message()[name]
        if soltype == "string":
            types.append("bytes32")
            values.append(keccak(text=value))
        else:
            types.append(soltype)
            values.append(value)
    return keccak(b"\x19\x01" + domain_sep + keccak(abi_encode(types, values)))


@SETTINGS
@given(messages, domains)
def test_digest_matches_an_independent_implementation(message, domain):
    assert message.digest(domain) == _independent_digest(message, domain)


def test_type_strings_are_pinned():
    assert _type_hash(KeyRequest) == keccak(text=(
        "KeyRequest(uint256 asset,uint32 version,address consumer,string recipient,string purpose,"
        "uint8 permission,bytes32 nonce,uint64 deadline)"))
    assert _type_hash(KeyReceipt) == keccak(text=(
        "KeyReceipt(uint256 asset,uint32 version,address owner,address consumer,string recipient,"
        "bytes32 headerHash,uint64 auditSeq,uint64 issuedAt)"))
    assert _type_hash(NodeRequest) == keccak(text=(
        "NodeRequest(string method,string path,bytes32 bodyHash,address signer,bytes32 nonce,uint64 deadline)"))


def _valid_request_json() -> dict:
    return KeyRequest(asset=7, version=1, consumer=ACCOUNT.address, recipient=RECIPIENTS[0], purpose="p",
                      permission=1, nonce=b"\x00" * 32, deadline=10).to_json()


@pytest.mark.parametrize("field, value", [
    ("asset", -1), ("asset", 2**256), ("asset", "0x10"), ("asset", "01"), ("asset", 1.5), ("asset", True),
    ("asset", None), ("version", 2**32), ("permission", 256), ("deadline", 2**64),
    ("consumer", "0x1234"), ("consumer", "not an address"), ("consumer", 5),
    ("consumer", "0x" + "aB" * 20),  # mixed case with a wrong checksum
    ("recipient", "age1notarecipient"), ("recipient", RECIPIENTS[0].upper()), ("recipient", ""),
    ("purpose", "x" * 257), ("purpose", "\ud800"), ("purpose", 3),
    ("nonce", "0x" + "00" * 31), ("nonce", "00" * 32), ("nonce", "0x" + "zz" * 32), ("nonce", 12),
])
def test_each_bad_field_is_a_named_input_error(field, value):
    wire = _valid_request_json()
    wire[field] = value
    with pytest.raises(InvalidFieldError) as info:
        KeyRequest.from_json(wire)
    assert info.value.field == field
    assert info.value.reason == "invalid_field"


def test_missing_unknown_and_non_object_inputs():
    wire = _valid_request_json()
    del wire["nonce"]
    with pytest.raises(InvalidFieldError, match="nonce"):
        KeyRequest.from_json(wire)
    with pytest.raises(InvalidFieldError, match="extra"):
        KeyRequest.from_json({**_valid_request_json(), "extra": 1})
    with pytest.raises(MalformedBodyError):
        KeyRequest.from_json([1, 2])


def test_node_request_rejects_bad_method_and_path():
    base = dict(method="GET", path="/x", body_hash=b"\x00" * 32, signer=ACCOUNT.address, nonce=b"\x00" * 32,
                deadline=1)
    for change in ({"method": "get"}, {"method": ""}, {"path": "x"}, {"path": "/a b"}, {"path": "/" + "a" * 9000}):
        with pytest.raises(InvalidFieldError):
            NodeRequest(**{**base, **change})


def test_lowercase_address_is_normalised_to_checksum():
    wire = _valid_request_json()
    wire["consumer"] = ACCOUNT.address.lower()
    assert KeyRequest.from_json(wire).consumer == ACCOUNT.address


def test_garbage_signature_never_escapes_as_a_raw_exception():
    request = KeyRequest.from_json(_valid_request_json())
    domain = Eip712Domain(1, "0x" + "00" * 20)
    for sig in (b"\x00" * 65, b"\xff" * 65, bytes(64) + b"\x05"):
        with pytest.raises(BadSignatureError):
            request.recover(domain, sig)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["GET", "POST"]), st.from_regex(r"/[a-z0-9/?=&]{0,30}", fullmatch=True),
       st.binary(max_size=64), uint(32))
def test_headers_round_trip(method, path, body, now):
    domain = Eip712Domain(31337, "0x" + "22" * 20)
    headers = sign_request(ACCOUNT, domain, method, path, body, clock=lambda: now, ttl=60)
    parsed = parse_headers({k.lower(): v for k, v in headers.items()})  # header names are case-insensitive
    assert parsed.signer == ACCOUNT.address and parsed.deadline == now + 60 and parsed.body_hash is None
    message = NodeRequest(method=method, path=path, body_hash=keccak(body), signer=parsed.signer,
                          nonce=parsed.nonce, deadline=parsed.deadline)
    assert message.recover(domain, parsed.signature) == ACCOUNT.address


def test_missing_header_names_the_header():
    headers = sign_request(ACCOUNT, Eip712Domain(1, "0x" + "00" * 20), "GET", "/")
    del headers["X-TwinLedger-Nonce"]
    with pytest.raises(MissingAuthError, match="X-TwinLedger-Nonce"):
        parse_headers(headers)
