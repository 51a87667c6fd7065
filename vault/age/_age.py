"""Encrypt, decrypt and re-header age v1 files (X25519 recipients only)."""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import BinaryIO

from ..errors import HeaderError, InputValidationError, NoIdentityMatchError
from . import _format, _stream, _x25519
from ._x25519 import FILE_KEY_SIZE, X25519Identity, X25519Recipient


def _check_recipients(recipients: Sequence[X25519Recipient]) -> list[X25519Recipient]:
    if isinstance(recipients, (X25519Recipient, str, bytes)):
        raise InputValidationError("recipients must be a sequence of X25519Recipient")
    recipients = list(recipients)
    if not recipients:
        raise InputValidationError("at least one recipient is required")
    for r in recipients:
        if not isinstance(r, X25519Recipient):
            raise InputValidationError(f"recipients must be X25519Recipient, got {type(r).__name__}")
    return recipients


def _check_identities(identities: Sequence[X25519Identity]) -> list[X25519Identity]:
    if isinstance(identities, (X25519Identity, str, bytes)):
        raise InputValidationError("identities must be a sequence of X25519Identity")
    identities = list(identities)
    for i in identities:
        if not isinstance(i, X25519Identity):
            raise InputValidationError(f"identities must be X25519Identity, got {type(i).__name__}")
    return identities


def _new_header(file_key: bytes, recipients: list[X25519Recipient]) -> bytes:
    return _format.seal_header(file_key, [_x25519.wrap(file_key, r) for r in recipients])


def _unwrap(header: _format.Header, identities: list[X25519Identity]) -> bytes:
    """The file key from the first stanza an identity opens, then the header MAC checked."""
    stanzas = header.stanzas
    if any(s.type == "scrypt" for s in stanzas) and len(stanzas) != 1:
        raise HeaderError("an scrypt stanza must be the only stanza in the header")
    for identity in identities:
        for stanza in stanzas:
            file_key = _x25519.unwrap(identity, stanza)
            if file_key is not None:
                _format.verify_mac(file_key, header)
                return file_key
    if not identities:
        raise NoIdentityMatchError(["no identities were given"])
    reasons = [
        f"stanza {n} ({s.type}): " + ("not for these identities" if s.type == "X25519" else "unsupported type")
        for n, s in enumerate(stanzas)
    ]
    raise NoIdentityMatchError(reasons)


def encrypt(
    plaintext: Iterable[bytes] | bytes,
    recipients: Sequence[X25519Recipient],
    *,
    file_key: bytes | None = None,
) -> Iterator[bytes]:
    """Encrypt `plaintext` (an iterable of bytes pieces of any size, or one bytes object)
    to `recipients`. Yields the header, then the payload nonce, then STREAM chunks.
    Memory is bounded by one chunk plus the largest input piece."""
    recipients = _check_recipients(recipients)
    if file_key is None:
        file_key = os.urandom(FILE_KEY_SIZE)
    elif not isinstance(file_key, bytes) or len(file_key) != FILE_KEY_SIZE:
        raise InputValidationError(f"file_key must be {FILE_KEY_SIZE} bytes")
    if isinstance(plaintext, (bytes, bytearray, memoryview)):
        plaintext = (plaintext,)
    header = _new_header(file_key, recipients)
    return _encrypt(header, file_key, plaintext)


def header_for(file_key: bytes, recipients: Sequence[X25519Recipient]) -> bytes:
    """HAZMAT — the age header alone (stanzas + MAC) for `file_key`: for callers that write
    the payload themselves with _stream.ChunkSealer (the vault facade), and for a key
    release that re-headers a file key it unwrapped earlier (rewrap in two steps)."""
    recipients = _check_recipients(recipients)
    if not isinstance(file_key, bytes) or len(file_key) != FILE_KEY_SIZE:
        raise InputValidationError(f"file_key must be {FILE_KEY_SIZE} bytes")
    return _new_header(file_key, recipients)


def _encrypt(header: bytes, file_key: bytes, plaintext: Iterable[bytes]) -> Iterator[bytes]:
    yield header
    yield from _stream.seal(file_key, plaintext)


def read_header(src: BinaryIO) -> bytes:
    """The exact header bytes (through the mac line); `src` is left at the payload."""
    return _format.read_header(src)


def unwrap_file_key(header: bytes, identities: Sequence[X25519Identity]) -> bytes:
    """HAZMAT — returns the plaintext file key of `header` (exactly one header, nothing
    after it), after checking the header MAC. Whoever holds this key can decrypt the
    payload and forge payloads for this header. Never log it or send it anywhere."""
    if not isinstance(header, (bytes, bytearray, memoryview)):
        raise InputValidationError(f"header must be bytes, got {type(header).__name__}")
    return _unwrap(_format.parse(header), _check_identities(identities))


def rewrap(
    header: bytes,
    identities: Sequence[X25519Identity],
    recipients: Sequence[X25519Recipient],
) -> bytes:
    """Re-header: unwrap the file key of `header` with `identities` (MAC checked) and
    return a new header (fresh ephemeral X25519 stanzas + MAC) for `recipients`. The
    payload that followed `header` is unchanged and now opens with the new header."""
    recipients = _check_recipients(recipients)
    file_key = unwrap_file_key(header, identities)
    return _new_header(file_key, recipients)


class Decryptor:
    """Decrypts one age file from `src`.

    The constructor reads and verifies the header and the payload nonce (HeaderError,
    NoIdentityMatchError, HeaderMACError); iterating yields verified plaintext chunks and
    raises PayloadError at the first bad chunk, after yielding every chunk before it. A
    caller that must not act on a partial plaintext (e.g. writing an output file) keeps
    what it gets aside until iteration finished without error. Iterate once.

    Attributes:
        header_bytes  the exact header bytes read, mac line included.
        file_key      HAZMAT: the plaintext 16-byte file key. Exposed only to derive the
                      content commitment key (vault.commitment); never log, persist or send it.
    """

    __slots__ = ("header_bytes", "file_key", "_src", "_aead", "_started")

    def __init__(self, src: BinaryIO, identities: Sequence[X25519Identity]) -> None:
        identities = _check_identities(identities)
        self.header_bytes = _format.read_header(src)
        self.file_key = _unwrap(_format.parse(self.header_bytes), identities)
        nonce = bytearray(_stream.NONCE_SIZE)
        if _stream.read_full(src, memoryview(nonce)) != _stream.NONCE_SIZE:
            raise HeaderError("file ends before the payload nonce")
        self._aead = _stream.payload_aead(self.file_key, bytes(nonce))
        self._src = src
        self._started = False

    def __repr__(self) -> str:
        return f"Decryptor(header={len(self.header_bytes)} bytes)"

    def __iter__(self) -> Iterator[bytes]:
        if self._started:
            raise RuntimeError("a Decryptor can be iterated only once")
        self._started = True
        return _stream.open_(self._aead, self._src)


def decrypt(src: BinaryIO, identities: Sequence[X25519Identity]) -> Iterator[bytes]:
    """Header errors raise here; payload errors while iterating (see Decryptor)."""
    return iter(Decryptor(src, identities))
