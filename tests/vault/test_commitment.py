"""Content commitment (DESIGN §4), version 2: keyed BLAKE3 under HKDF-SHA256(file key, info v2)."""
from __future__ import annotations

import hashlib
import hmac
import io

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.age import Decryptor, X25519Identity, encrypt, read_header, rewrap
from vault.commitment import (
    COMMITMENT_INFO,
    COMMITMENT_SIZE,
    Committer,
    audit_commitment,
    commitment_key,
    compute_commitment,
    verified,
    verify_commitment,
)
from vault.errors import CommitmentMismatchError, InputValidationError

FILE_KEY = bytes(range(16))
TEXT = b"TwinLedger commitment test vector"
# Pinned: changing the construction must change COMMITMENT_INFO and these values.
KAT_KEY = "78fa1010bf8b4010dbb8642e86f4d3e20dd0d89424ed753922652be138035880"
KAT_COMMITMENT = "8389b2d23d498f4341f30c2f4db60886934195541b62bc1a198095f66e308770"
# BLAKE3's official keyed_hash vectors (BLAKE3-team/BLAKE3, test_vectors/test_vectors.json:
# key "whats the Elvish word for friend", input bytes i % 251; first 32 bytes of the output).
BLAKE3_KEY = b"whats the Elvish word for friend"
BLAKE3_KEYED = {
    0: "92b2b75604ed3c761f9d6f62392c8a9227ad0ea3f09573e783f1498a4ed60d26",
    1023: "c951ecdf03288d0fcc96ee3413563d8a6d3589547f2c2fb36d9786470f1b9d6e",
}


def _rfc5869(ikm: bytes, info: bytes, salt: bytes = b"", length: int = 32) -> bytes:
    """HKDF-SHA256 written from RFC 5869 with the stdlib, independent of the module."""
    prk = hmac.digest(salt or bytes(32), ikm, "sha256")
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.digest(prk, block + info + bytes([i]), "sha256")
        out, i = out + block, i + 1
    return out[:length]


def test_known_answer_and_independent_construction() -> None:
    assert COMMITMENT_INFO == b"twinledger/commitment/v2"
    key = commitment_key(FILE_KEY)
    assert key.hex() == KAT_KEY == _rfc5869(FILE_KEY, COMMITMENT_INFO).hex()
    c = compute_commitment(FILE_KEY, [TEXT])
    assert len(c) == COMMITMENT_SIZE
    assert c.hex() == KAT_COMMITMENT == blake3.blake3(TEXT, key=key).hexdigest()


@pytest.mark.parametrize("n", sorted(BLAKE3_KEYED))
def test_keyed_blake3_matches_the_official_vector(n: int) -> None:
    """The primitive under the commitment is standard keyed BLAKE3, checked through the
    auditor's entry point (which takes the 32-byte key as it is)."""
    data = bytes(i % 251 for i in range(n))
    expected = bytes.fromhex(BLAKE3_KEYED[n])
    audit_commitment(BLAKE3_KEY, [data[:100], data[100:]], expected)
    assert Committer.from_commitment_key(BLAKE3_KEY).digest() == bytes.fromhex(BLAKE3_KEYED[0])


def test_v1_is_gone() -> None:
    """The HMAC-SHA256 construction of version 1 no longer verifies."""
    v1_key = _rfc5869(FILE_KEY, b"twinledger/commitment/v1")
    with pytest.raises(CommitmentMismatchError):
        verify_commitment(FILE_KEY, [TEXT], hmac.digest(v1_key, TEXT, "sha256"))


def test_not_a_plain_hash_and_depends_on_the_key() -> None:
    """Outsiders (who know only the plaintext guess) cannot recompute the value."""
    c = compute_commitment(FILE_KEY, [TEXT])
    assert c != hashlib.sha256(TEXT).digest()
    assert c != compute_commitment(bytes(16), [TEXT])


def test_commitment_key_is_domain_separated_from_age_keys() -> None:
    key = commitment_key(FILE_KEY)
    assert key not in {_rfc5869(FILE_KEY, b"header"), _rfc5869(FILE_KEY, b"payload", salt=bytes(16))}


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=5000), cuts=st.lists(st.integers(0, 5000), max_size=6))
def test_independent_of_chunking(data: bytes, cuts: list[int]) -> None:
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    pieces = [data[a:b] for a, b in zip(bounds, bounds[1:])]
    assert compute_commitment(FILE_KEY, pieces) == compute_commitment(FILE_KEY, [data])


def test_verify_accepts_and_rejects() -> None:
    c = compute_commitment(FILE_KEY, [TEXT])
    verify_commitment(FILE_KEY, [TEXT[:5], TEXT[5:]], c)
    for bad_text, bad_c in [(TEXT + b"!", c), (TEXT, c[:-1] + bytes([c[-1] ^ 1])), (TEXT, c[:16]), (TEXT, b"")]:
        with pytest.raises(CommitmentMismatchError):
            verify_commitment(FILE_KEY, [bad_text], bad_c)


def test_auditor_checks_with_the_commitment_key_only() -> None:
    c = compute_commitment(FILE_KEY, [TEXT])
    k = commitment_key(FILE_KEY)
    audit_commitment(k, [TEXT], c)
    with pytest.raises(CommitmentMismatchError):
        audit_commitment(k, [b"the disputed other version"], c)


@pytest.mark.parametrize("bad", [b"", bytes(15), bytes(32), "0" * 16])
def test_bad_key_sizes(bad) -> None:
    with pytest.raises(InputValidationError):
        commitment_key(bad)
    with pytest.raises(InputValidationError):
        Committer.from_commitment_key(bad if len(bad) != 32 else bytes(31))


def test_repr_does_not_leak() -> None:
    assert commitment_key(FILE_KEY).hex() not in repr(Committer(FILE_KEY))


def test_end_to_end_with_age_and_rewrap() -> None:
    """Owner seals and commits; consumer gets a re-wrapped header, decrypts and verifies."""
    owner, consumer = X25519Identity.generate(), X25519Identity.generate()
    data = bytes(range(256)) * 1000
    blob = b"".join(encrypt([data], [owner.recipient]))
    owner_dec = Decryptor(io.BytesIO(blob), [owner])
    committed = compute_commitment(owner_dec.file_key, owner_dec)
    src = io.BytesIO(blob)
    new_header = rewrap(read_header(src), [owner], [consumer.recipient])
    dec = Decryptor(io.BytesIO(new_header + src.read()), [consumer])
    assert b"".join(verified(dec, dec.file_key, committed)) == data


def test_verified_raises_only_after_the_last_chunk() -> None:
    c = compute_commitment(FILE_KEY, [b"ab"])
    out = []
    with pytest.raises(CommitmentMismatchError):
        for piece in verified([b"a", b"c"], FILE_KEY, c):
            out.append(piece)
    assert out == [b"a", b"c"]
    assert list(verified([b"a", b"b"], FILE_KEY, c)) == [b"a", b"b"]
