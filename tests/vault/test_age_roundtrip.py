"""Round trips (encrypt/decrypt, header encode/parse, bech32, keys), re-headering, API
contracts and streaming behaviour of vault.age."""
from __future__ import annotations

import dataclasses
import io
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.age import (
    CHUNK_SIZE,
    FILE_KEY_SIZE,
    Decryptor,
    X25519Identity,
    X25519Recipient,
    decrypt,
    encrypt,
    read_header,
    rewrap,
    unwrap_file_key,
)
from vault.age import _bech32, _format
from vault.errors import (
    HeaderError,
    HeaderMACError,
    InputValidationError,
    InvalidKeyError,
    NoIdentityMatchError,
)

OWNER = X25519Identity.generate()
CONSUMER = X25519Identity.generate()
TAG = 16


def seal(data: bytes, recipients=(OWNER.recipient,), **kw) -> bytes:
    return b"".join(encrypt([data], list(recipients), **kw))


def open_(blob: bytes, identities=(OWNER,)) -> bytes:
    return b"".join(decrypt(io.BytesIO(blob), list(identities)))


# --- encrypt / decrypt ---------------------------------------------------------------

@pytest.mark.parametrize(
    "size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE, 3 * CHUNK_SIZE + 5]
)
def test_round_trip_at_chunk_boundaries(size: int) -> None:
    data = random.Random(size).randbytes(size)
    pieces = list(encrypt([data], [OWNER.recipient]))
    header, nonce, chunks = pieces[0], pieces[1], pieces[2:]
    assert len(nonce) == 16
    # a full final chunk is never followed by an empty one; empty only for empty input
    assert len(chunks) == max(1, -(-size // CHUNK_SIZE))
    assert all(len(c) == CHUNK_SIZE + TAG for c in chunks[:-1])
    assert len(chunks[-1]) == size - (len(chunks) - 1) * CHUNK_SIZE + TAG
    assert open_(b"".join(pieces)) == data
    assert Decryptor(io.BytesIO(b"".join(pieces)), [OWNER]).header_bytes == header


@settings(max_examples=50, deadline=None)
@given(
    size=st.integers(0, 3 * CHUNK_SIZE + 10),
    cuts=st.lists(st.integers(0, 3 * CHUNK_SIZE + 10), max_size=8),
    seed=st.integers(0, 2**32),
)
def test_round_trip_any_piece_sizes(size: int, cuts: list[int], seed: int) -> None:
    data = random.Random(seed).randbytes(size)
    bounds = sorted({0, size, *(c for c in cuts if c <= size)})
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds)] + [b""]
    blob = b"".join(encrypt(pieces, [OWNER.recipient]))
    assert open_(blob) == data


@settings(max_examples=30, deadline=None)
@given(size=st.integers(0, 2 * CHUNK_SIZE + 3), cut=st.integers(0, 2 * CHUNK_SIZE + 3))
def test_chunking_is_independent_of_input_pieces(size: int, cut: int) -> None:
    data = bytes(size)
    one = list(encrypt([data], [OWNER.recipient]))[2:]
    two = list(encrypt([data[:cut], data[cut:]], [OWNER.recipient]))[2:]
    assert [len(c) for c in one] == [len(c) for c in two]


def test_accepts_bytes_bytearray_and_memoryviews() -> None:
    data = b"digital twin" * 10000
    pieces = [bytearray(data[:7]), memoryview(data)[7:70000], data[70000:]]
    assert open_(b"".join(encrypt(pieces, [OWNER.recipient]))) == data
    assert open_(b"".join(encrypt(data, [OWNER.recipient]))) == data


def test_multiple_recipients_each_open() -> None:
    blob = seal(b"shared", [OWNER.recipient, CONSUMER.recipient])
    assert open_(blob, [OWNER]) == b"shared"
    assert open_(blob, [CONSUMER]) == b"shared"
    assert open_(blob, [X25519Identity.generate(), CONSUMER]) == b"shared"


def test_wrong_identity_says_why() -> None:
    blob = seal(b"x")
    with pytest.raises(NoIdentityMatchError) as info:
        Decryptor(io.BytesIO(blob), [CONSUMER])
    assert info.value.reasons == ["stanza 0 (X25519): not for these identities"]
    with pytest.raises(NoIdentityMatchError, match="no identities"):
        Decryptor(io.BytesIO(blob), [])


def test_injected_file_key_is_used() -> None:
    key = bytes(range(FILE_KEY_SIZE))
    blob = seal(b"x", file_key=key)
    assert unwrap_file_key(read_header(io.BytesIO(blob)), [OWNER]) == key
    assert Decryptor(io.BytesIO(blob), [OWNER]).file_key == key


@pytest.mark.parametrize(
    "kwargs",
    [
        {"recipients": []},
        {"recipients": ["age1notaparsedrecipient"]},
        {"recipients": [OWNER.recipient], "file_key": b"short"},
        {"recipients": [OWNER.recipient], "file_key": "0" * 16},
    ],
)
def test_encrypt_rejects_bad_arguments(kwargs) -> None:
    recipients = kwargs.pop("recipients")
    with pytest.raises(InputValidationError):
        encrypt([b"x"], recipients, **kwargs)


def test_single_objects_and_text_instead_of_sequences_are_refused() -> None:
    blob = seal(b"x")
    with pytest.raises(InputValidationError):
        encrypt([b"x"], OWNER.recipient)  # type: ignore[arg-type]
    with pytest.raises(InputValidationError):
        Decryptor(io.BytesIO(blob), OWNER)  # type: ignore[arg-type]
    with pytest.raises(InputValidationError):
        rewrap(read_header(io.BytesIO(blob)).decode(), [OWNER], [CONSUMER.recipient])  # type: ignore[arg-type]


def test_encrypt_rejects_text_pieces() -> None:
    with pytest.raises(InputValidationError):
        b"".join(encrypt(["text, not bytes"], [OWNER.recipient]))


def test_decryptor_iterates_once() -> None:
    dec = Decryptor(io.BytesIO(seal(b"once")), [OWNER])
    assert b"".join(dec) == b"once"
    with pytest.raises(RuntimeError):
        iter(dec)


# --- streaming: bounded memory -------------------------------------------------------

def test_encrypt_streams_without_consuming_all_input() -> None:
    consumed = 0

    def endless():
        nonlocal consumed
        while True:
            consumed += 1
            yield b"\x00" * 10_000

    out = encrypt(endless(), [OWNER.recipient])
    first = list(itertools.islice(out, 6))  # header, nonce, 4 chunks
    assert [len(p) for p in first[2:]] == [CHUNK_SIZE + TAG] * 4
    assert consumed <= 4 * CHUNK_SIZE // 10_000 + 2


class _Tracking(io.BytesIO):
    """A source that records how far it has been read."""

    high = 0

    def readinto(self, b):  # type: ignore[override]
        n = super().readinto(b)
        self.high = max(self.high, self.tell())
        return n

    def read(self, n=-1):  # type: ignore[override]
        data = super().read(n)
        self.high = max(self.high, self.tell())
        return data


class _ReadOnly:
    """A source with nothing but read() (no readline, no readinto), returning short reads."""

    def __init__(self, data: bytes) -> None:
        self._src = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._src.read(min(n, 1000) if n > 0 else 1000)


def test_decrypt_from_a_minimal_reader() -> None:
    data = bytes(range(256)) * 700
    src = _ReadOnly(seal(data))
    assert b"".join(decrypt(src, [OWNER])) == data  # type: ignore[arg-type]
    blob = seal(b"x")
    src = _ReadOnly(blob)
    header = read_header(src)  # type: ignore[arg-type]
    assert header == read_header(io.BytesIO(blob))
    assert src.read(16) == blob[len(header) : len(header) + 16]  # nothing consumed past it


def test_decrypt_streams_with_bounded_read_ahead() -> None:
    blob = seal(bytes(64 * CHUNK_SIZE))  # 4 MiB
    src = _Tracking(blob)
    it = decrypt(src, [OWNER])
    assert len(next(it)) == CHUNK_SIZE
    assert src.high <= len(blob) // 3  # about 1 MiB read ahead, not the whole file
    assert sum(len(c) for c in it) == 63 * CHUNK_SIZE


# --- re-headering --------------------------------------------------------------------

def test_rewrap_gives_consumer_the_same_payload() -> None:
    blob = seal(b"asset version 1" * 5000)
    src = io.BytesIO(blob)
    header = read_header(src)
    payload = src.read()
    new_header = rewrap(header, [OWNER], [CONSUMER.recipient])
    assert new_header != header
    assert open_(new_header + payload, [CONSUMER]) == b"asset version 1" * 5000
    with pytest.raises(NoIdentityMatchError):
        Decryptor(io.BytesIO(new_header + payload), [OWNER])
    assert unwrap_file_key(new_header, [CONSUMER]) == unwrap_file_key(header, [OWNER])


def test_rewrap_refuses_wrong_identity_bad_mac_and_trailing_bytes() -> None:
    header = read_header(io.BytesIO(seal(b"x")))
    with pytest.raises(NoIdentityMatchError):
        rewrap(header, [CONSUMER], [CONSUMER.recipient])
    forged = _format.Header(_format.parse(header).stanzas, bytes(32), _format.parse(header).mac_input).encode()
    with pytest.raises(HeaderMACError):
        rewrap(forged, [OWNER], [CONSUMER.recipient])
    with pytest.raises(HeaderError):
        rewrap(header + b"payload", [OWNER], [CONSUMER.recipient])
    with pytest.raises(InputValidationError):
        rewrap(header, [OWNER], [])


# --- header encode / parse -----------------------------------------------------------

_VCHAR = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)
_STANZA = st.builds(
    _format.Stanza, type=_VCHAR, args=st.lists(_VCHAR, max_size=4).map(tuple), body=st.binary(max_size=200)
)


@settings(max_examples=50, deadline=None)
@given(stanzas=st.lists(_STANZA, max_size=4), file_key=st.binary(min_size=16, max_size=16))
def test_header_encode_parse_round_trip(stanzas, file_key) -> None:
    raw = _format.seal_header(file_key, stanzas)
    header = _format.parse(raw)
    assert list(header.stanzas) == stanzas
    assert header.encode() == raw
    _format.verify_mac(file_key, header)
    src = io.BytesIO(raw + b"payload")
    assert read_header(src) == raw and src.read() == b"payload"


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=100))
def test_base64_strict_round_trip(data: bytes) -> None:
    text = _format.b64encode(data)
    assert b"=" not in text and _format.b64decode(text) == data


@pytest.mark.parametrize("text", [b"QUE=", b"QUF", b"QU E", b"QUE\n", b"Q", b"QU\rE"])
def test_base64_rejects_non_canonical(text: bytes) -> None:
    with pytest.raises(HeaderError):
        _format.b64decode(text)


def test_read_header_is_bounded() -> None:
    with pytest.raises(HeaderError, match="larger than"):
        read_header(io.BytesIO(_format.INTRO + b"-> x\n" + b"A" * (_format.MAX_HEADER_SIZE + 10)))
    with pytest.raises(HeaderError, match="intro"):
        read_header(io.BytesIO(b"\x00" * 100))


# --- bech32 and keys -----------------------------------------------------------------

@settings(max_examples=50, deadline=None)
@given(
    hrp=st.text(st.characters(min_codepoint=33, max_codepoint=126).filter(lambda c: not c.isupper()), min_size=1, max_size=20),
    data=st.binary(max_size=100),
)
def test_bech32_round_trip_without_length_limit(hrp: str, data: bytes) -> None:
    s = _bech32.encode(hrp, data)
    assert _bech32.decode(s) == (hrp, data)
    assert _bech32.decode(s.upper()) == (hrp, data)


def test_bech32_rejects_bad_strings() -> None:
    s = str(OWNER.recipient)
    flipped = s[:-1] + ("q" if s[-1] != "q" else "p")
    for bad in [flipped, s[:5] + s[5:].upper(), s.replace("1", "", 1), "age1", s + "b", s[:-1] + "I", "ägé1qqqqqq"]:
        with pytest.raises(InvalidKeyError):
            _bech32.decode(bad)


def test_identity_string_round_trip_and_case() -> None:
    ident = X25519Identity.generate()
    s = str(ident)
    assert s.startswith("AGE-SECRET-KEY-1") and s == s.upper()
    assert X25519Identity.parse(s) == ident
    assert X25519Identity.parse(s.lower()) == ident
    assert X25519Identity.parse(s).recipient == ident.recipient
    r = str(ident.recipient)
    assert r.startswith("age1") and X25519Recipient.parse(r) == ident.recipient
    assert X25519Recipient.parse(r.upper()) == ident.recipient
    assert hash(X25519Recipient.parse(r)) == hash(ident.recipient)


def test_identity_repr_hides_the_secret_and_is_frozen() -> None:
    ident = X25519Identity.generate()
    secret_part = str(ident)[len("AGE-SECRET-KEY-1") : -6]
    assert secret_part.lower() not in repr(ident).lower()
    assert str(ident.recipient) in repr(ident)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ident._secret = bytes(32)  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ident.recipient.public_bytes = bytes(32)  # type: ignore[misc]
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(ident)


@pytest.mark.parametrize(
    "text, parser",
    [
        (str(OWNER), X25519Recipient.parse),  # an identity is not a recipient
        (str(OWNER.recipient), X25519Identity.parse),  # and vice versa
        (_bech32.encode("age", bytes(31)), X25519Recipient.parse),  # wrong length
        (_bech32.encode("age-secret-key-", bytes(33)).upper(), X25519Identity.parse),
        (_bech32.encode("age", bytes(32)), X25519Recipient.parse),  # low-order point (zero)
        (_bech32.encode("age", (1).to_bytes(32, "little")), X25519Recipient.parse),  # u = 1: order 4
        ("age1 " + str(OWNER.recipient)[4:], X25519Recipient.parse),
        ("", X25519Identity.parse),
        (None, X25519Identity.parse),
    ],
    # Stable ids: the keys above are generated per process, and pytest-xdist requires every
    # worker to collect the same test names.
    ids=["identity-as-recipient", "recipient-as-identity", "short-recipient", "long-identity",
         "zero-point", "order-4-point", "space-in-recipient", "empty", "none"],
)
def test_bad_keys_raise_invalid_key_error(text, parser) -> None:
    with pytest.raises(InvalidKeyError):
        parser(text)


def _bech32_with_values(hrp: str, values: list[int]) -> str:
    """Bech32 of raw 5-bit groups with a valid checksum (to build non-canonical payloads)."""
    polymod = _bech32._polymod(_bech32._hrp_expand(hrp) + values + [0] * 6) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_bech32._CHARSET[v] for v in values + checksum)


def test_bech32_rejects_non_zero_or_excess_padding() -> None:
    values = _bech32._convert_bits(OWNER.recipient.public_bytes, 8, 5, pad=True)  # 52 groups, 4 pad bits
    assert _bech32.decode(_bech32_with_values("age", values)) == ("age", OWNER.recipient.public_bytes)
    for bad in (values[:-1] + [values[-1] | 1], values + [0, 0]):  # 270 bits = 33 bytes + 6
        with pytest.raises(InvalidKeyError, match="padding"):
            _bech32.decode(_bech32_with_values("age", bad))


_HEADERISH = st.lists(
    st.sampled_from([b"-> X25519 ", b"-> a b", b"->", b"--- ", b"---", b"\n", b" ", b"QUFB", b"A" * 64, b"=", b"\r", b"\xff"]),
    max_size=12,
).map(b"".join)


@settings(max_examples=50, deadline=None)
@given(tail=st.one_of(st.binary(max_size=200), _HEADERISH))
def test_header_parser_only_raises_header_error(tail: bytes) -> None:
    """Any input either parses canonically or fails with HeaderError, nothing else."""
    data = _format.INTRO + tail
    try:
        header = _format.parse(data)
    except HeaderError:
        return
    assert header.encode() == data


@settings(max_examples=50, deadline=None)
@given(text=st.text(max_size=120))
def test_key_parsers_only_raise_invalid_key_error(text: str) -> None:
    for parser in (X25519Identity.parse, X25519Recipient.parse, _bech32.decode):
        try:
            parser(text)
        except InvalidKeyError:
            pass
