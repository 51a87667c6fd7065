"""Every C2SP CCTV age vector in ../shared/testdata/age, read from there, outcome asserted
exactly: X25519, post-quantum hybrid (mlkem768x25519), scrypt and ASCII armor."""
from __future__ import annotations

import hashlib
import io

import pytest

from tests.conftest import shared_testdata_dir
from tests.vault.age_vectors import AgeVector, load_vector, vector_expectation, vector_names
from vault.age import ArmorError, Decryptor, ScryptIdentity, X25519Identity, armor, dearmor, parse_identity, read_header
from vault.age import _format, _stream
from vault.errors import (
    DecryptionError,
    HeaderError,
    HeaderMACError,
    NoIdentityMatchError,
    PayloadError,
)

_DIR = shared_testdata_dir() / "age"
# Names are listed at collection time (the fixture cannot parametrize); every test then
# reads its vector through the `shared_testdata` fixture.
_NAMES = vector_names(_DIR) if _DIR.is_dir() else ["<missing vector directory>"]
_EXPECT = {n: vector_expectation(_DIR / n) for n in _NAMES} if _DIR.is_dir() else {}
_PARSEABLE = [n for n in _NAMES if _EXPECT.get(n) not in ("header failure", "armor failure")]
_SUCCESS = [n for n in _NAMES if _EXPECT.get(n) == "success"]
_ARMOR_DECODES = [n for n in _NAMES if n.startswith("armor_") and _EXPECT.get(n) != "armor failure"]

EXPECTED_ERROR = {
    "no match": NoIdentityMatchError,
    "HMAC failure": HeaderMACError,
    "header failure": HeaderError,
    "payload failure": PayloadError,
    "armor failure": ArmorError,
}


@pytest.fixture
def vector(request, shared_testdata) -> AgeVector:
    v = load_vector(shared_testdata / "age" / request.param)
    if v.unsupported_feature:
        pytest.skip(f"not implemented: {v.unsupported_feature}")
    return v


def _identities(v: AgeVector) -> list:
    return [parse_identity(i) for i in v.identities] + [ScryptIdentity(p) for p in v.passphrases]


def _binary(v: AgeVector) -> io.BytesIO:
    """The binary age file of a vector (armor removed) for the header-level checks."""
    return io.BytesIO(dearmor(io.BytesIO(v.data)).read() if v.armored else v.data)


def _open(v: AgeVector, armor: bool | None) -> tuple[Exception | None, str, bool]:
    """(error or None, sha256 of every plaintext byte released, header accepted?)."""
    released = hashlib.sha256()
    header_ok = False
    try:
        dec = Decryptor(io.BytesIO(v.data), _identities(v), armor=armor)
        header_ok = True
        for chunk in dec:
            released.update(chunk)
    except (DecryptionError, NoIdentityMatchError) as exc:
        return exc, released.hexdigest(), header_ok
    return None, released.hexdigest(), header_ok


# "detected": armor=None, as callers use it (a binary file starts with "a", anything else
# is read as armor). "declared": armor=True/False from the vector's `armored:` line, as
# the CCTV harness of the reference implementation does. Both must give the outcome.
@pytest.mark.parametrize("mode", ["detected", "declared"])
@pytest.mark.parametrize("vector", _NAMES, indirect=True)
def test_vector_outcome(vector: AgeVector, mode: str) -> None:
    error, released, header_ok = _open(vector, None if mode == "detected" else vector.armored)
    if vector.expect == "success":
        assert error is None, f"{vector.name}: unexpected {error!r}"
        assert released == vector.payload_sha256
        return
    expected = EXPECTED_ERROR[vector.expect]
    assert type(error) is expected, f"{vector.name}: expected {expected.__name__}, got {error!r}"
    if vector.expect == "payload failure":
        assert header_ok
        assert released == vector.payload_sha256, "plaintext released before the failure differs"


@pytest.mark.parametrize("vector", _PARSEABLE, indirect=True)
def test_vector_header_round_trip(vector: AgeVector) -> None:
    """Every header that parses re-encodes to exactly the bytes it was read from."""
    src = _binary(vector)
    raw = read_header(src)
    header = _format.parse(raw)
    assert header.encode() == raw
    assert _format.encode_without_mac(header.stanzas) == header.mac_input
    assert src.tell() == len(raw)


@pytest.mark.parametrize("vector", _SUCCESS, indirect=True)
def test_vector_stream_round_trip(vector: AgeVector) -> None:
    """Re-sealing a success vector's plaintext under its file key and nonce reproduces its
    payload byte for byte (STREAM encryption is deterministic given key and nonce)."""
    binary = _binary(vector).getvalue()
    dec = Decryptor(io.BytesIO(binary), _identities(vector))
    assert dec.file_key == vector.file_key
    plaintext = b"".join(dec)
    payload = binary[len(dec.header_bytes) :]
    nonce = payload[: _stream.NONCE_SIZE]
    assert b"".join(_stream.seal(dec.file_key, [plaintext], nonce=nonce)) == payload


@pytest.mark.parametrize("vector", _ARMOR_DECODES, indirect=True)
def test_vector_armor_round_trip(vector: AgeVector) -> None:
    """Re-armoring what an armored vector decodes to gives the vector back, up to what
    the armor tolerates: whitespace around it, CRLF, and a missing final line end."""
    decoded = dearmor(io.BytesIO(vector.data)).read()
    canonical = vector.data.strip().replace(b"\r\n", b"\n") + b"\n"
    assert b"".join(armor([decoded])) == canonical


def test_scrypt_stanza_must_be_alone_without_a_passphrase(shared_testdata) -> None:
    """scrypt_and_x25519 is a header failure also for a caller holding only the X25519
    identity: the stanza-count rule does not depend on which identities are tried."""
    v = load_vector(shared_testdata / "age" / "scrypt_and_x25519")
    assert v.expect == "header failure"
    with pytest.raises(HeaderError, match="scrypt"):
        Decryptor(io.BytesIO(v.data), [X25519Identity.parse(i) for i in v.identities])


def test_every_implemented_expectation_is_exercised(shared_testdata) -> None:
    """Guards against the skip rule swallowing whole outcome classes or features."""
    seen, armored, scrypt = set(), 0, 0
    for name in vector_names(shared_testdata / "age"):
        v = load_vector(shared_testdata / "age" / name)
        if not v.unsupported_feature:
            seen.add(v.expect)
            armored += v.armored
            scrypt += bool(v.passphrases)
    assert seen == set(EXPECTED_ERROR) | {"success"}
    assert armored >= 30 and scrypt >= 20
