"""age input a caller or an attacker gets wrong: over-long keys, the armor's trailing
whitespace limit as the age tool applies it, text-mode sources, strided buffers, and a
header whose stanzas would make a huge NoIdentityMatchError."""
from __future__ import annotations

import io
import os

import pytest

from vault.age import ArmorError, X25519Identity, decrypt, encrypt, parse_recipient
from vault.age import _bech32
from vault.errors import InputValidationError, InvalidKeyError, NoIdentityMatchError


def test_bech32_round_trips_up_to_its_cap_and_refuses_longer() -> None:
    payload = os.urandom(2400)  # 3,850 characters: longer than any age key
    assert _bech32.decode(_bech32.encode("age", payload)) == ("age", payload)
    long = _bech32.encode("age", os.urandom(3000))  # a valid checksum, 4,810 characters
    with pytest.raises(InvalidKeyError, match="at most 4096"):
        _bech32.decode(long)
    with pytest.raises(InvalidKeyError, match="at most 4096"):
        parse_recipient(long)


def _armored_with_trailer(trailer: bytes) -> tuple[bytes, X25519Identity]:
    identity = X25519Identity.generate()
    return b"".join(encrypt([b"twin"], [identity.recipient], armor=True)) + trailer, identity


@pytest.mark.parametrize("blank", [b" ", b"\n", b"\r\n"])
def test_armor_takes_whitespace_after_the_end_line_as_age_does(blank: bytes) -> None:
    # age 1.1.1 reads 1023 bytes after the END line and refuses a 1024th
    ok, identity = _armored_with_trailer(blank * (1023 // len(blank)))
    assert b"".join(decrypt(io.BytesIO(ok), [identity])) == b"twin"
    too_much, identity = _armored_with_trailer(b" " * 1024)
    with pytest.raises(ArmorError, match="1024 or more bytes of whitespace"):
        b"".join(decrypt(io.BytesIO(too_much), [identity]))


@pytest.mark.parametrize("armor", [None, True, False])
def test_a_text_mode_source_is_said_to_be_one(tmp_path, armor: bool | None) -> None:
    identity = X25519Identity.generate()
    path = tmp_path / "sealed.age"
    path.write_bytes(b"".join(encrypt([b"twin"], [identity.recipient], armor=bool(armor))))
    with open(path, encoding="latin-1") as text, pytest.raises(InputValidationError, match="binary mode"):
        b"".join(decrypt(text, [identity], armor=armor))  # type: ignore[arg-type]


def test_a_strided_buffer_is_encrypted_as_its_bytes() -> None:
    identity = X25519Identity.generate()
    data = os.urandom(200_000)
    strided = memoryview(data)[::3]
    sealed = b"".join(encrypt([strided, memoryview(data)[1::7]], [identity.recipient]))
    assert b"".join(decrypt(io.BytesIO(sealed), [identity])) == data[::3] + data[1::7]


def test_no_identity_match_names_a_few_stanzas_and_counts_the_rest() -> None:
    kind = "x" * 5000
    stanzas = b"".join(b"-> " + kind.encode() + b"\n\n" for _ in range(200))
    header = b"age-encryption.org/v1\n" + stanzas + b"--- " + b"A" * 43 + b"\n"
    with pytest.raises(NoIdentityMatchError) as caught:
        b"".join(decrypt(io.BytesIO(header + bytes(32)), [X25519Identity.generate()]))
    reasons = caught.value.reasons
    assert len(reasons) == 17 and reasons[-1] == "184 more stanzas"
    assert reasons[0] == "stanza 0 (" + "x" * 32 + "...): unsupported type"
    assert len(str(caught.value)) < 2000


class _ViewSource:
    """A source whose read() and readline() answer memoryview slices."""

    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def read(self, n: int = -1) -> memoryview:
        end = len(self._data) if n is None or n < 0 else self._pos + n
        view = memoryview(self._data)[self._pos:end]
        self._pos += len(view)
        return view

    def readline(self, limit: int = -1) -> memoryview:
        end = self._data.find(b"\n", self._pos)
        end = len(self._data) if end < 0 else end + 1
        if limit >= 0:
            end = min(end, self._pos + limit)
        return self.read(end - self._pos)


@pytest.mark.parametrize("armor", [None, True, False])
def test_a_source_answering_memoryview_is_read_like_any_other(armor: bool | None) -> None:
    identity = X25519Identity.generate()
    data = os.urandom(100_000)
    sealed = b"".join(encrypt([data], [identity.recipient], armor=bool(armor)))
    assert b"".join(decrypt(_ViewSource(sealed), [identity], armor=armor)) == data  # type: ignore[arg-type]


def test_strided_buffers_are_taken_by_armor_and_by_seal(tmp_path) -> None:
    from vault.age import armor, dearmor
    from vault.blockstore import MemoryBlockstore
    from vault.vault import Vault

    data = os.urandom(150_000)
    assert dearmor(io.BytesIO(b"".join(armor([memoryview(data)[::2]])))).read() == data[::2]
    owner = X25519Identity.generate()
    vault = Vault(MemoryBlockstore(), owner)
    for src in (memoryview(data)[::2], [memoryview(data)[::2], memoryview(data)[1::3]]):
        sealed = vault.seal(src)
        out = tmp_path / f"out{sealed.size}"
        vault.open(sealed.cid, None, owner, out, commitment=sealed.commitment)
        assert out.read_bytes() == (data[::2] if isinstance(src, memoryview) else data[::2] + data[1::3])
