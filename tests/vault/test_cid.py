"""CIDs and the multiformats primitives under them (varint, base32, base58btc)."""
from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault._mfbase import FormatError, b32_decode, b32_encode, b58_decode, b58_encode, decode_varint, encode_varint
from vault.cid import CID, DAG_CBOR, DAG_PB, RAW
from vault.errors import BlockMismatchError, InputValidationError, InvalidCIDError

FEW = settings(max_examples=50, deadline=None)

HELLO_V0 = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
HELLO_RAW = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"  # raw "hello world"
HELLO_PB_V1 = "bafybeicg2rebjoofv4kbyovkw7af3rpiitvnl6i7ckcywaq6xjcxnc2mby"

cids = st.one_of(
    st.builds(lambda d: CID.from_digest(d, DAG_PB, 0), st.binary(min_size=32, max_size=32)),
    st.builds(lambda d, c: CID.from_digest(d, c, 1), st.binary(min_size=32, max_size=32),
              st.one_of(st.sampled_from([RAW, DAG_PB, DAG_CBOR]), st.integers(0, 2**63 - 1))),
)


def test_known_cids_parse_and_print() -> None:
    v0 = CID.decode(HELLO_V0)
    assert (v0.version, v0.codec) == (0, DAG_PB)
    assert str(v0) == HELLO_V0 and len(v0.to_bytes()) == 34
    raw = CID.decode(HELLO_RAW)
    assert (raw.version, raw.codec) == (1, RAW)
    assert raw == CID.from_sha256(b"hello world", RAW, 1)
    assert raw.digest == hashlib.sha256(b"hello world").digest()
    assert str(CID.decode(HELLO_PB_V1)) == HELLO_PB_V1
    assert repr(raw) == f"CID({HELLO_RAW!r})"


def test_v0_and_v1_of_one_hash_differ_but_share_the_multihash() -> None:
    v0 = CID.decode(HELLO_V0)
    assert v0.to_v1() != v0 and v0.to_v1().multihash == v0.multihash
    assert str(v0.to_v1()).startswith("bafybei")


@FEW
@given(cids)
def test_string_and_binary_round_trip(cid: CID) -> None:
    assert CID.decode(str(cid)) == cid
    assert CID.decode(cid.to_bytes()) == cid
    parsed, end = CID.read_from(cid.to_bytes() + b"tail")
    assert parsed == cid and end == len(cid.to_bytes())


@FEW
@given(st.text(max_size=80))
def test_string_parser_only_raises_invalid_cid(text: str) -> None:
    try:
        CID.decode(text)
    except InvalidCIDError:
        pass


@FEW
@given(st.binary(max_size=80))
def test_binary_parser_only_raises_invalid_cid(raw: bytes) -> None:
    try:
        cid = CID.decode(raw)
    except InvalidCIDError:
        return
    assert cid.to_bytes() == raw


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("zb2rhe5P4gXftAwvA4eXQ5HJwsER2owDyS9sKaQRRVQPn93bA", "base58btc"),
        ("BAFKREIFZJUT3TE2NHYEKKLSS27NH3K72YSCO7Y32KOAO5EEI66WOF36N5E", "base32upper"),
        ("f01551220b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9", "base16"),
        ("mAVUSILlNJ7mTTT4IpS5S19p9q/rEhO/jelOA7pCI96zi783p", "base64"),
        ("", "empty"),
        ("Qm" + "1" * 50, "46 characters"),
        ("QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff50", "base58btc character"),
        ("bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5", "base32"),
        ("bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5f", "non-canonical"),
        ("baFkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e", "lower-case"),
        ("bciqlstjhxgju2pqiuuxffv62pwv7vree57rxuu4a52iir55m4lx432i", "base58btc (Qm"),  # v0 bytes in base32
    ],
)
def test_bad_strings_are_refused_with_a_reason(text: str, needle: str) -> None:
    with pytest.raises(InvalidCIDError, match=None) as info:
        CID.decode(text)
    assert needle.lower() in str(info.value).lower()
    assert isinstance(info.value, InputValidationError) and isinstance(info.value, ValueError)


def _v1(codec: int, mh: bytes) -> bytes:
    return encode_varint(1) + encode_varint(codec) + mh


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (_v1(RAW, b"\x13\x40" + bytes(64)), "sha2-256"),          # sha2-512
        (_v1(RAW, b"\x00\x05hello"), "sha2-256"),                   # identity
        (_v1(RAW, b"\x12\x10" + bytes(16)), "32 bytes"),
        (_v1(RAW, b"\x12\x20" + bytes(31)), "truncated"),
        (_v1(RAW, b"\x12\x20" + bytes(33)), "trailing"),
        (b"\x02\x55\x12\x20" + bytes(32), "version 2"),
        (b"\x01\xd5\x00\x12\x20" + bytes(32), "non-minimal"),
        (b"\x12\x20" + bytes(10), "truncated"),
        (b"", "truncated"),
    ],
)
def test_bad_binary_cids_are_refused(raw: bytes, needle: str) -> None:
    with pytest.raises(InvalidCIDError) as info:
        CID.decode(raw)
    assert needle in str(info.value)


def test_constructor_validates() -> None:
    with pytest.raises(InvalidCIDError, match="dag-pb"):
        CID(0, RAW, b"\x12\x20" + bytes(32))
    with pytest.raises(InvalidCIDError, match="sha2-256"):
        CID(1, RAW, b"\x11\x14" + bytes(20))
    with pytest.raises(InvalidCIDError, match="version"):
        CID(3, RAW, b"\x12\x20" + bytes(32))
    with pytest.raises(InvalidCIDError):
        CID.decode(12345)  # type: ignore[arg-type]


def test_verify_detects_a_mismatch() -> None:
    cid = CID.from_sha256(b"block")
    cid.verify(b"block")
    with pytest.raises(BlockMismatchError, match=str(cid)):
        cid.verify(b"blocK")


@FEW
@given(st.integers(0, 2**63 - 1))
def test_varint_round_trip(value: int) -> None:
    encoded = encode_varint(value)
    assert decode_varint(encoded + b"\xff") == (value, len(encoded))
    assert len(encoded) <= 9


@pytest.mark.parametrize("raw", [b"", b"\x80", b"\x80\x00", b"\xff" * 10])
def test_bad_varints(raw: bytes) -> None:
    with pytest.raises(FormatError):
        decode_varint(raw)


@FEW
@given(st.binary(max_size=64))
def test_base32_and_base58_round_trip(data: bytes) -> None:
    assert b32_decode(b32_encode(data)) == data
    assert b58_decode(b58_encode(data)) == data


@FEW
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz234567=A1", max_size=20))
def test_base32_decoder_is_strict_and_total(text: str) -> None:
    try:
        data = b32_decode(text)
    except FormatError:
        return
    assert b32_encode(data) == text
