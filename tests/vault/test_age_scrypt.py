"""scrypt (passphrase) recipients and identities (vault/age/_scrypt.py).

The CCTV scrypt_* vectors (test_age_cctv.py) pin decryption against the reference
implementation, including a known answer; these tests cover encryption, the API rules
and the stanza we write. Work factors stay small (2**4..2**10) to keep the tests quick."""
from __future__ import annotations

import io
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.age import (
    CHUNK_SIZE,
    Decryptor,
    ScryptIdentity,
    ScryptRecipient,
    X25519Identity,
    decrypt,
    encrypt,
    header_for,
    read_header,
    rewrap,
    unwrap_file_key,
)
from vault.age import _format, _scrypt
from vault.errors import HeaderError, InputValidationError, NoIdentityMatchError

FAST = 4  # work factor for tests: 2**4 iterations


def _seal(data: bytes, recipients, **kw) -> bytes:
    return b"".join(encrypt(data, recipients, **kw))


@settings(max_examples=25, deadline=None)
@given(
    passphrase=st.one_of(st.text(min_size=1, max_size=40), st.binary(min_size=1, max_size=40)),
    size=st.integers(0, CHUNK_SIZE + 10),
    work_factor=st.integers(1, 6),
    armor=st.booleans(),
)
def test_round_trip(passphrase, size: int, work_factor: int, armor: bool) -> None:
    data = bytes(size)
    blob = _seal(data, [ScryptRecipient(passphrase, work_factor)], armor=armor)
    assert b"".join(decrypt(io.BytesIO(blob), [ScryptIdentity(passphrase)])) == data


def test_stanza_layout() -> None:
    blob = _seal(b"x", [ScryptRecipient("pw", work_factor=7)])
    header = _format.parse(read_header(io.BytesIO(blob)))
    (stanza,) = header.stanzas
    assert stanza.type == "scrypt"
    salt, log_n = stanza.args
    assert len(_format.b64decode(salt.encode())) == 16 and log_n == "7"
    assert len(stanza.body) == 32
    other = _format.parse(read_header(io.BytesIO(_seal(b"x", [ScryptRecipient("pw", work_factor=7)]))))
    assert other.stanzas[0].args[0] != salt  # a fresh salt per file


def test_known_answer_with_a_fixed_salt() -> None:
    """The wrap key is scrypt over the labelled salt: the CCTV 'scrypt' vector's stanza
    is reproduced from its passphrase, salt, work factor and file key."""
    file_key = bytes.fromhex("59454c4c4f57205355424d4152494e45")
    salt = _format.b64decode(b"rF0/NwblUHHTpgQgRpe5CQ")
    stanza = _scrypt.wrap(file_key, ScryptRecipient("password", work_factor=10), salt=salt)
    assert stanza.encode() == (
        b"-> scrypt rF0/NwblUHHTpgQgRpe5CQ 10\ngUjEymFKMVXQEKdMMHL24oYexjE3TIC0O0zGSqJ2aUY\n"
    )


def test_wrong_passphrase_is_no_match() -> None:
    blob = _seal(b"x", [ScryptRecipient("right", FAST)])
    with pytest.raises(NoIdentityMatchError, match="wrong passphrase"):
        Decryptor(io.BytesIO(blob), [ScryptIdentity("wrong")])
    with pytest.raises(NoIdentityMatchError, match="needs a passphrase"):
        Decryptor(io.BytesIO(blob), [X25519Identity.generate()])


def test_mixed_identity_lists() -> None:
    x = X25519Identity.generate()
    blob = _seal(b"p", [ScryptRecipient("pw", FAST)])
    assert b"".join(decrypt(io.BytesIO(blob), [x, ScryptIdentity("nope"), ScryptIdentity("pw")])) == b"p"
    blob = _seal(b"k", [x.recipient])
    assert b"".join(decrypt(io.BytesIO(blob), [ScryptIdentity("pw"), x])) == b"k"


@pytest.mark.parametrize("limit", [FAST - 1, 1])
def test_work_factor_above_the_identity_maximum_is_refused(limit: int) -> None:
    blob = _seal(b"x", [ScryptRecipient("pw", FAST)])
    with pytest.raises(HeaderError, match="above this identity's maximum"):
        Decryptor(io.BytesIO(blob), [ScryptIdentity("pw", max_work_factor=limit)])
    assert b"".join(decrypt(io.BytesIO(blob), [ScryptIdentity("pw", max_work_factor=FAST)])) == b"x"


def test_scrypt_recipient_must_be_alone() -> None:
    x = X25519Identity.generate()
    for recipients in (
        [ScryptRecipient("a", FAST), x.recipient],
        [x.recipient, ScryptRecipient("a", FAST)],
        [ScryptRecipient("a", FAST), ScryptRecipient("b", FAST)],
    ):
        with pytest.raises(InputValidationError, match="only recipient"):
            encrypt(b"x", recipients)
        with pytest.raises(InputValidationError, match="only recipient"):
            header_for(bytes(16), recipients)


def test_rewrap_between_key_and_passphrase() -> None:
    """Re-headering works across recipient types; the payload never changes."""
    owner = X25519Identity.generate()
    src = io.BytesIO(_seal(b"shared payload", [owner.recipient]))
    header = read_header(src)
    payload = src.read()
    to_pass = rewrap(header, [owner], [ScryptRecipient("pw", FAST)])
    assert b"".join(decrypt(io.BytesIO(to_pass + payload), [ScryptIdentity("pw")])) == b"shared payload"
    back = rewrap(to_pass, [ScryptIdentity("pw")], [owner.recipient])
    assert b"".join(decrypt(io.BytesIO(back + payload), [owner])) == b"shared payload"
    assert unwrap_file_key(to_pass, [ScryptIdentity("pw")]) == unwrap_file_key(header, [owner])


@pytest.mark.parametrize(
    "args, message",
    [
        (("rF0/NwblUHHTpgQgRpe5CQ",), "expected a salt"),
        (("rF0/NwblUHHTpgQgRpe5CQ", "4", "4"), "expected a salt"),
        (("rF0/NwblUHHTpgQg", "4"), "not 16 bytes"),
        (("rF0/NwblUHHTpgQgRpe5CR", "4"), "non-canonical"),
        (("rF0/NwblUHHTpgQgRpe5CQ==", "4"), "base64"),
        (("rF0/NwblUHHTpgQgRpe5CQ", "04"), "canonical positive decimal"),
        (("rF0/NwblUHHTpgQgRpe5CQ", "0"), "canonical positive decimal"),
        (("rF0/NwblUHHTpgQgRpe5CQ", "+4"), "canonical positive decimal"),
        (("rF0/NwblUHHTpgQgRpe5CQ", "4\u0660"), "canonical positive decimal"),
        (("rF0/NwblUHHTpgQgRpe5CQ", "9" * 4000), "above this identity's maximum"),
    ],
)
def test_malformed_stanzas_are_header_errors(args, message: str) -> None:
    stanza = _format.Stanza("scrypt", args, bytes(32))
    with pytest.raises(HeaderError, match=message):
        _scrypt.unwrap(ScryptIdentity("pw"), stanza)


def test_wrong_body_size_is_checked_before_decrypting() -> None:
    for body in (bytes(31), bytes(33), bytes(48)):
        with pytest.raises(HeaderError, match="wrong size"):
            stanza = _format.Stanza("scrypt", ("rF0/NwblUHHTpgQgRpe5CQ", "4"), body)
            _scrypt.unwrap(ScryptIdentity("pw"), stanza)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ScryptRecipient(""),
        lambda: ScryptIdentity(b""),
        lambda: ScryptRecipient(None),  # type: ignore[arg-type]
        lambda: ScryptRecipient("pw", 0),
        lambda: ScryptRecipient("pw", 31),
        lambda: ScryptRecipient("pw", True),
        lambda: ScryptRecipient("pw", 4.0),  # type: ignore[arg-type]
        lambda: ScryptIdentity("pw", max_work_factor=0),
        lambda: ScryptIdentity("pw", max_work_factor=31),
    ],
)
def test_bad_arguments(make) -> None:
    with pytest.raises(InputValidationError):
        make()


def test_passphrase_is_not_shown_or_pickled() -> None:
    for obj in (ScryptRecipient("hunter2", FAST), ScryptIdentity("hunter2")):
        assert "hunter2" not in repr(obj) and "hunter2" not in str(obj)
        with pytest.raises(TypeError):
            pickle.dumps(obj)
    assert ScryptIdentity("a") == ScryptIdentity("a") != ScryptIdentity("b")
    assert ScryptIdentity("a").max_work_factor == 22 and ScryptRecipient("a").work_factor == 18


def test_identity_or_recipient_as_a_single_object_is_refused() -> None:
    with pytest.raises(InputValidationError):
        encrypt(b"x", ScryptRecipient("pw", FAST))  # type: ignore[arg-type]
    with pytest.raises(InputValidationError):
        Decryptor(io.BytesIO(b""), ScryptIdentity("pw"))  # type: ignore[arg-type]
