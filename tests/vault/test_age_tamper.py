"""DESIGN §8: tampered ciphertext in every region, truncation, reordered or foreign chunks
and trailing data each fail with the right error, releasing only verified chunks."""
from __future__ import annotations

import io
import random

import pytest

from vault.age import CHUNK_SIZE, Decryptor, X25519Identity, encrypt, read_header
from vault.age import _format, _stream, _x25519
from vault.errors import (
    DecryptionError,
    HeaderError,
    HeaderMACError,
    NoIdentityMatchError,
    PayloadError,
)

OWNER = X25519Identity.generate()
OTHER = X25519Identity.generate()
ENC = CHUNK_SIZE + 16
PLAINTEXT = random.Random(7).randbytes(2 * CHUNK_SIZE + CHUNK_SIZE // 2)  # 3 chunks


def seal(data: bytes = PLAINTEXT, recipients=(OWNER.recipient,)) -> bytes:
    return b"".join(encrypt([data], list(recipients)))


def attempt(blob: bytes, identities=(OWNER,)) -> tuple[Exception | None, bytes]:
    """(error, plaintext released before it)."""
    released = bytearray()
    try:
        for chunk in Decryptor(io.BytesIO(blob), list(identities)):
            released += chunk
    except (DecryptionError, NoIdentityMatchError) as exc:
        return exc, bytes(released)
    return None, bytes(released)


class Layout:
    """Offsets of the regions of a sealed file."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.header = read_header(io.BytesIO(blob))
        self.nonce = len(self.header)
        self.payload = self.nonce + _stream.NONCE_SIZE
        self.chunks = [(o, min(o + ENC, len(blob))) for o in range(self.payload, len(blob), ENC)]

    def line_offset(self, prefix: bytes, skip: int = 0) -> int:
        """Offset of the first character after `prefix` on the line that starts with it."""
        return self.header.index(b"\n" + prefix) + 1 + len(prefix) + skip

    def stanza_body_offset(self, index: int = 0) -> int:
        pos = 0
        for _ in range(index + 1):
            pos = self.header.index(b"\n->", pos) + 1
        return self.header.index(b"\n", pos) + 1


def flip(blob: bytes, pos: int, xor: int = 0x01) -> bytes:
    b = bytearray(blob)
    b[pos] ^= xor
    return bytes(b)


def swap_b64(blob: bytes, pos: int) -> bytes:
    """Replace the base64 character at `pos` by another one (the header still parses)."""
    b = bytearray(blob)
    b[pos] = ord("B") if b[pos] != ord("B") else ord("C")
    return bytes(b)


BLOB = seal()
L = Layout(BLOB)


def test_layout_is_three_chunks() -> None:
    assert [e - s for s, e in L.chunks] == [ENC, ENC, CHUNK_SIZE // 2 + 16]
    assert attempt(BLOB) == (None, PLAINTEXT)


# --- header regions ------------------------------------------------------------------

def test_stanza_body_tampered_means_no_identity_matches() -> None:
    """The wrapped file key no longer authenticates: the stanza is not ours any more."""
    err, released = attempt(swap_b64(BLOB, L.stanza_body_offset()))
    assert type(err) is NoIdentityMatchError and released == b""


def test_stanza_share_tampered_means_no_identity_matches() -> None:
    err, _ = attempt(swap_b64(BLOB, L.line_offset(b"-> X25519 ")))
    assert type(err) is NoIdentityMatchError


def test_other_recipients_stanza_tampered_is_a_mac_failure() -> None:
    """Our stanza still opens, so the file key is found, but the header MAC catches the
    change to the other recipient's stanza."""
    blob = seal(recipients=(OWNER.recipient, OTHER.recipient))
    err, released = attempt(swap_b64(blob, Layout(blob).stanza_body_offset(1)))
    assert type(err) is HeaderMACError and released == b""


def test_inserted_stanza_is_a_mac_failure() -> None:
    pos = L.header.index(b"\n---") + 1
    err, _ = attempt(BLOB[:pos] + b"-> grease x\n\n" + BLOB[pos:])
    assert type(err) is HeaderMACError


def test_mac_tampered() -> None:
    err, released = attempt(swap_b64(BLOB, L.line_offset(b"--- ")))
    assert type(err) is HeaderMACError and released == b""


def test_every_header_byte_flipped_fails_before_any_plaintext() -> None:
    for pos in range(len(L.header)):
        err, released = attempt(flip(BLOB, pos))
        assert isinstance(err, (HeaderError, HeaderMACError, NoIdentityMatchError)), (pos, err)
        assert released == b""


# --- payload regions -----------------------------------------------------------------

def test_nonce_tampered() -> None:
    err, released = attempt(flip(BLOB, L.nonce + 3))
    assert type(err) is PayloadError and released == b""


@pytest.mark.parametrize(
    "chunk, where, released_chunks",
    [(0, 0, 0), (0, ENC - 1, 0), (1, 100, 1), (2, 5, 2), (2, -1, 2)],
    ids=["first-chunk-start", "first-chunk-tag", "middle-chunk", "last-chunk", "last-chunk-tag"],
)
def test_chunk_byte_flipped(chunk: int, where: int, released_chunks: int) -> None:
    start, end = L.chunks[chunk]
    err, released = attempt(flip(BLOB, start + where if where >= 0 else end + where))
    assert type(err) is PayloadError
    assert released == PLAINTEXT[: released_chunks * CHUNK_SIZE]


@pytest.mark.parametrize(
    "cut, error, released_chunks",
    [
        (lambda: len(BLOB) - 1, PayloadError, 2),  # last byte of the tag
        (lambda: L.chunks[2][0], PayloadError, 2),  # whole final chunk dropped
        (lambda: L.chunks[1][0], PayloadError, 1),
        (lambda: L.chunks[0][0] + 10, PayloadError, 0),
        (lambda: L.payload, PayloadError, 0),  # no chunks at all
        (lambda: L.nonce + 5, HeaderError, 0),  # short nonce (as the CCTV vectors classify it)
        (lambda: L.nonce - 1, HeaderError, 0),  # inside the mac line
        (lambda: 30, HeaderError, 0),
        (lambda: 0, HeaderError, 0),
    ],
    ids=["tag", "final-chunk", "two-chunks", "inside-first", "no-chunks", "nonce", "mac-line", "stanza", "empty"],
)
def test_truncation(cut, error, released_chunks: int) -> None:
    err, released = attempt(BLOB[: cut()])
    assert type(err) is error
    assert released == PLAINTEXT[: released_chunks * CHUNK_SIZE]


def _chunks(blob: bytes) -> tuple[bytes, list[bytes]]:
    lay = Layout(blob)
    return blob[: lay.payload], [blob[s:e] for s, e in lay.chunks]


def test_reordered_chunks() -> None:
    prefix, c = _chunks(BLOB)
    err, released = attempt(prefix + c[1] + c[0] + c[2])
    assert type(err) is PayloadError and released == b""


def test_dropped_middle_chunk() -> None:
    prefix, c = _chunks(BLOB)
    err, released = attempt(prefix + c[0] + c[2])
    assert type(err) is PayloadError and released == PLAINTEXT[:CHUNK_SIZE]


def test_chunk_swapped_in_from_another_file() -> None:
    """Same plaintext, same recipient, different file key: its chunk does not fit here."""
    prefix, c = _chunks(BLOB)
    _, foreign = _chunks(seal())
    err, released = attempt(prefix + c[0] + foreign[1] + c[2])
    assert type(err) is PayloadError and released == PLAINTEXT[:CHUNK_SIZE]


def test_header_of_another_file() -> None:
    other = seal()
    err, released = attempt(read_header(io.BytesIO(other)) + BLOB[L.nonce :])
    assert type(err) is PayloadError and released == b""


@pytest.mark.parametrize("extra", [b"\x00", b"trailing garbage", bytes(ENC)])
def test_data_appended_to_a_short_final_chunk(extra: bytes) -> None:
    """The final chunk now reads longer and fails; the two full chunks were released."""
    err, released = attempt(BLOB + extra)
    assert type(err) is PayloadError and released == PLAINTEXT[: 2 * CHUNK_SIZE]


@pytest.mark.parametrize("extra", [b"\x00", b"trailing garbage", bytes(ENC)])
def test_data_after_a_full_final_chunk(extra: bytes) -> None:
    """Every chunk verified (so all of it was released, as age does), then the error."""
    data = PLAINTEXT[: 2 * CHUNK_SIZE]
    err, released = attempt(seal(data) + extra)
    assert type(err) is PayloadError and "trailing" in str(err) and released == data


def _handmade(chunks: list[tuple[bytes, bool]]) -> bytes:
    """A file whose STREAM chunks (plaintext, last flag) are chosen freely."""
    file_key, nonce = bytes(16), bytes(range(16))
    header = _format.seal_header(file_key, [_x25519.wrap(file_key, OWNER.recipient)])
    aead = _stream.payload_aead(file_key, nonce)
    body = b"".join(aead.encrypt(((i << 8) | last).to_bytes(12, "big"), p, None) for i, (p, last) in enumerate(chunks))
    return header + nonce + body


def test_handmade_stream_is_valid_when_well_formed() -> None:
    full = bytes(CHUNK_SIZE)
    assert attempt(_handmade([(full, False), (b"end", True)])) == (None, full + b"end")
    assert attempt(_handmade([(b"", True)])) == (None, b"")


@pytest.mark.parametrize(
    "chunks, released",
    [
        ([(bytes(CHUNK_SIZE), False), (b"", True)], CHUNK_SIZE),  # empty final after full
        ([(bytes(CHUNK_SIZE), True), (b"more", True)], CHUNK_SIZE),  # data after the final chunk
        ([(b"short", False), (b"x", True)], 0),  # short chunk not marked final
        ([(bytes(CHUNK_SIZE), False)], CHUNK_SIZE),  # no final chunk
    ],
    ids=["empty-final-after-full", "two-finals", "short-non-final", "missing-final"],
)
def test_stream_last_chunk_rules(chunks, released: int) -> None:
    err, out = attempt(_handmade(chunks))
    assert type(err) is PayloadError and out == bytes(released)
