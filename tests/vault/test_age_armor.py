"""ASCII armor (vault/age/_armor.py): layout, strictness, detection, streaming.

The CCTV armor_* vectors (test_age_cctv.py) pin the reference behaviour on small files;
these tests cover what they cannot: files large enough for the bulk path, CRLF and mixed
line ends across read blocks, every cut of the input, and bounded memory."""
from __future__ import annotations

import binascii
import io
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.age import (
    CHUNK_SIZE,
    ArmorError,
    Decryptor,
    X25519Identity,
    armor,
    dearmor,
    decrypt,
    encrypt,
)
from vault.age import _armor
from vault.errors import HeaderError

BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----\n"
END = b"-----END AGE ENCRYPTED FILE-----\n"
IDENT = X25519Identity.generate()


def _armored(data: bytes) -> bytes:
    return b"".join(armor([data]))


class _Trickle(io.RawIOBase):
    """A stream that hands out at most `step` bytes per read and counts what it gave."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data, self._step, self.given = data, step, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), self._step, len(self._data) - self.given)
        b[:n] = self._data[self.given : self.given + n]
        self.given += n
        return n


@pytest.mark.parametrize("size", [0, 1, 47, 48, 49, 95, 96, 97, 48 * 1024, 48 * 1024 + 1, 200_001])
def test_layout_matches_the_spec(size: int) -> None:
    data = random.Random(size).randbytes(size)
    text = _armored(data)
    assert text.startswith(BEGIN) and text.endswith(END)
    lines = text[len(BEGIN) : -len(END)].split(b"\n")
    assert lines.pop() == b""  # every base64 line ends with LF
    assert all(len(line) == 64 for line in lines[:-1])
    if data:
        # The last line holds the remainder (48 bytes when the size is a multiple of 48):
        # never empty, and only it may be padded.
        assert 1 <= len(lines[-1]) <= 64
        assert len(binascii.a2b_base64(lines[-1])) == (size % 48 or 48)
        assert not any(b"=" in line for line in lines[:-1])
    assert binascii.a2b_base64(b"".join(lines)) == data
    assert dearmor(io.BytesIO(text)).read() == data


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=3000), step=st.integers(1, 200), crlf=st.booleans())
def test_round_trip_any_reads(data: bytes, step: int, crlf: bool) -> None:
    text = _armored(data)
    if crlf:
        text = text.replace(b"\n", b"\r\n")
    assert dearmor(_Trickle(text, step)).read() == data


@settings(max_examples=30, deadline=None)
@given(size=st.integers(0, 3 * CHUNK_SIZE), seed=st.integers(0, 2**32), crlf_every=st.integers(0, 5))
def test_large_files_and_mixed_line_ends(size: int, seed: int, crlf_every: int) -> None:
    """Across many read blocks, with some lines CRLF and some LF, the bulk path and the
    line path together decode every byte."""
    data = random.Random(seed).randbytes(size)
    lines = _armored(data).split(b"\n")
    if crlf_every:
        lines = [line + b"\r" if i % crlf_every == 0 else line for i, line in enumerate(lines[:-1])] + [b""]
    assert dearmor(io.BytesIO(b"\n".join(lines))).read() == data


@settings(max_examples=40, deadline=None)
@given(pieces=st.lists(st.binary(max_size=500), max_size=8))
def test_encoding_is_independent_of_input_pieces(pieces: list[bytes]) -> None:
    assert b"".join(armor(pieces)) == _armored(b"".join(pieces))


@settings(max_examples=20, deadline=None)
@given(size=st.integers(0, 2 * CHUNK_SIZE + 5), crlf=st.booleans())
def test_encrypt_armored_round_trip(size: int, crlf: bool) -> None:
    data = random.Random(size).randbytes(size)
    text = b"".join(encrypt(data, [IDENT.recipient], armor=True))
    if crlf:
        text = text.replace(b"\n", b"\r\n")
    assert b"".join(decrypt(io.BytesIO(text), [IDENT])) == data
    assert b"".join(decrypt(io.BytesIO(text), [IDENT], armor=True)) == data


def test_armor_of_encrypt_equals_encrypt_armor() -> None:
    key = bytes(range(16))
    binary = b"".join(encrypt(b"abc", [IDENT.recipient], file_key=key))
    assert dearmor(io.BytesIO(_armored(binary))).read() == binary
    text = b"".join(encrypt(b"abc", [IDENT.recipient], file_key=key, armor=True))
    assert b"".join(decrypt(io.BytesIO(text), [IDENT])) == b"abc"


def test_detection_and_explicit_modes() -> None:
    binary = b"".join(encrypt(b"x", [IDENT.recipient]))
    text = _armored(binary)
    with pytest.raises(HeaderError) as err:  # armor=False: armored text is not an age file
        Decryptor(io.BytesIO(text), [IDENT], armor=False)
    assert type(err.value) is HeaderError
    with pytest.raises(ArmorError):  # armor=True: a binary file is not armor
        Decryptor(io.BytesIO(binary), [IDENT], armor=True)
    assert b"".join(decrypt(io.BytesIO(b" \r\n\t" + text + b"\n\n"), [IDENT])) == b"x"
    # Neither format: reported as missing armor, which callers catch as a HeaderError.
    with pytest.raises(ArmorError, match="first line"):
        Decryptor(io.BytesIO(b"PK\x03\x04 not age"), [IDENT])
    with pytest.raises(HeaderError):
        Decryptor(io.BytesIO(b""), [IDENT])


class _ReadOnly:
    """Neither peek nor seek nor readline: detection must put the byte it read back."""

    def __init__(self, data: bytes) -> None:
        self._src = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._src.read(n)


@pytest.mark.parametrize("armored", [False, True])
def test_detection_on_a_minimal_reader(armored: bool) -> None:
    data = random.Random(3).randbytes(CHUNK_SIZE + 5)
    blob = b"".join(encrypt(data, [IDENT.recipient], armor=armored))
    assert b"".join(decrypt(_ReadOnly(blob), [IDENT])) == data  # type: ignore[arg-type]


def test_detection_with_peek_consumes_nothing(tmp_path) -> None:
    path = tmp_path / "f.age"
    path.write_bytes(b"".join(encrypt(b"peeked", [IDENT.recipient], armor=True)))
    with path.open("rb") as f:  # a BufferedReader: detection peeks
        assert b"".join(decrypt(f, [IDENT])) == b"peeked"


def _body_lines(size: int = 200) -> list[bytes]:
    return _armored(random.Random(size).randbytes(size)).split(b"\n")


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda ls: ls[:1] + [b""] + ls[1:], id="empty-line-first"),
        pytest.param(lambda ls: ls[:2] + [b""] + ls[2:], id="empty-line-middle"),
        pytest.param(lambda ls: ls[:-2] + [b""] + ls[-2:], id="empty-line-last"),
        pytest.param(lambda ls: [ls[0], ls[1] + ls[2]] + ls[3:], id="long-line"),
        pytest.param(lambda ls: [ls[0], ls[1][:32], ls[1][32:]] + ls[2:], id="short-line-not-last"),
        pytest.param(lambda ls: [ls[0], ls[1] + b" "] + ls[2:], id="trailing-space"),
        pytest.param(lambda ls: [ls[0], b"\t" + ls[1]] + ls[2:], id="leading-tab"),
        pytest.param(lambda ls: [ls[0], ls[1][:10] + b"\r" + ls[1][10:]] + ls[2:], id="inner-cr"),
        pytest.param(lambda ls: [ls[0], ls[1][:-1] + b"*"] + ls[2:], id="bad-character"),
        pytest.param(lambda ls: ls[:-2] + [b"=AbCd"] + ls[-2:], id="checksum-line"),
        pytest.param(lambda ls: ls[:-2], id="no-end-line"),
        pytest.param(lambda ls: ls[1:], id="no-begin-line"),
        pytest.param(lambda ls: [b"-----BEGIN AGE ENCRYPTED FILE----- "] + ls[1:], id="begin-trailing-space"),
        pytest.param(lambda ls: ls + [b"x"], id="garbage-after"),
        pytest.param(lambda ls: ls[:-1] + [b" " * 1100], id="too-much-trailing-space"),
        pytest.param(lambda ls: [b" " * 1100 + ls[0]] + ls[1:], id="too-much-leading-space"),
    ],
)
def test_malformed_armor_is_an_armor_error(mutate) -> None:
    text = b"\n".join(mutate(_body_lines()))
    with pytest.raises(ArmorError):
        dearmor(io.BytesIO(text)).read()


def test_padding_rules() -> None:
    lines = _body_lines(200)  # 200 bytes: 4 full lines, then 8 bytes in 12 columns ending "="
    last = lines[-3]
    assert len(last) == 12 and last.endswith(b"=")
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    # The character before "=" carries 4 data bits and 2 unused bits that must be zero.
    unused_bit_set = bytes([alphabet[alphabet.index(last[-2]) | 1]])
    # Padding missing, in excess, and a non-canonical last character.
    for bad in (last.rstrip(b"="), last + b"=", last[:-2] + unused_bit_set + b"="):
        with pytest.raises(ArmorError):
            dearmor(io.BytesIO(b"\n".join(lines[:-3] + [bad] + lines[-2:]))).read()


def test_bad_line_in_the_bulk_path_is_found() -> None:
    """A bad character deep inside a large run of full lines (decoded in bulk) is still
    an ArmorError, and so is a padded full line followed by more lines."""
    lines = _body_lines(300_000)
    for bad in (lines[3000][:-1] + b"!", lines[3000][:-2] + b"=="):
        text = b"\n".join(lines[:3000] + [bad] + lines[3001:])
        with pytest.raises(ArmorError):
            dearmor(io.BytesIO(text)).read()


def test_errors_are_sticky_and_raised_while_iterating() -> None:
    data = random.Random(4).randbytes(3 * CHUNK_SIZE)
    text = b"".join(encrypt(data, [IDENT.recipient], armor=True)) + b"trailing garbage\n"
    dec = Decryptor(io.BytesIO(text), [IDENT])  # the header decodes fine
    with pytest.raises(ArmorError, match="after the END line"):
        b"".join(dec)
    reader = dearmor(io.BytesIO(text))
    with pytest.raises(ArmorError):
        reader.read()
    with pytest.raises(ArmorError):
        reader.read(1)


def test_readline_and_partial_reads() -> None:
    data = b"line one\nline two\n" + bytes(range(256)) * 3
    reader = dearmor(io.BytesIO(_armored(data)))
    assert reader.readline() == b"line one\n"
    assert reader.readline(4) == b"line"
    assert reader.readline(100) == b" two\n"
    assert reader.read(3) == bytes(range(3))
    buf = bytearray(10)
    assert reader.readinto(buf) == 10 and bytes(buf) == bytes(range(3, 13))
    assert reader.read() == (bytes(range(256)) * 3)[13:]
    assert reader.read() == b"" and reader.readline() == b""


def test_decoding_streams_with_bounded_read_ahead() -> None:
    """Reading the start of a large armored file consumes about one read block of text."""
    text = _armored(bytes(4 * 1024 * 1024))
    src = _Trickle(text, 1 << 30)
    reader = dearmor(src)
    assert reader.read(1000) == bytes(1000)
    assert src.given <= 2 * _armor._READ_SIZE


def test_encoding_streams_without_consuming_all_input() -> None:
    consumed = 0

    def endless():
        nonlocal consumed
        for _ in itertools.count():
            consumed += CHUNK_SIZE
            yield bytes(CHUNK_SIZE)

    out = encrypt(endless(), [IDENT.recipient], armor=True)
    produced = sum(len(next(out)) for _ in range(20))
    assert produced > 10 * CHUNK_SIZE
    assert consumed <= 40 * CHUNK_SIZE
