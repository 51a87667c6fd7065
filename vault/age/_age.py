"""Encrypt, decrypt and re-header age v1 files: X25519, post-quantum hybrid
(mlkem768x25519) and scrypt (passphrase) recipients, binary or ASCII-armored."""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import BinaryIO

from ..errors import HeaderError, InputValidationError, NoIdentityMatchError
from . import _armor, _format, _pq, _scrypt, _stream, _x25519
from ._pq import HybridIdentity, HybridRecipient
from ._scrypt import ScryptIdentity, ScryptRecipient
from ._x25519 import FILE_KEY_SIZE, X25519Identity, X25519Recipient

Recipient = X25519Recipient | HybridRecipient | ScryptRecipient
Identity = X25519Identity | HybridIdentity | ScryptIdentity
_RECIPIENT_TYPES = (X25519Recipient, HybridRecipient, ScryptRecipient)
_IDENTITY_TYPES = (X25519Identity, HybridIdentity, ScryptIdentity)
_WRAP = {X25519Recipient: _x25519.wrap, HybridRecipient: _pq.wrap, ScryptRecipient: _scrypt.wrap}
_UNWRAP = {X25519Identity: _x25519.unwrap, HybridIdentity: _pq.unwrap, ScryptIdentity: _scrypt.unwrap}
_NAMES = "X25519Recipient, HybridRecipient or ScryptRecipient"
_MAX_REASONS = 16  # stanzas named in a NoIdentityMatchError; the rest are counted
_MAX_TYPE = 32  # characters of a stanza's type shown in it


def _handler(table: dict, key: object):  # by isinstance, so that subclasses work too
    return next(fn for kind, fn in table.items() if isinstance(key, kind))


def _check_recipients(recipients: Sequence[Recipient]) -> list[Recipient]:
    if isinstance(recipients, (*_RECIPIENT_TYPES, str, bytes)):
        raise InputValidationError(f"recipients must be a sequence of {_NAMES}")
    recipients = list(recipients)
    if not recipients:
        raise InputValidationError("at least one recipient is required")
    for r in recipients:
        if not isinstance(r, _RECIPIENT_TYPES):
            raise InputValidationError(f"recipients must be {_NAMES}, got {type(r).__name__}")
    # age's rule, checked again on decryption: a passphrase file has exactly one stanza.
    if len(recipients) > 1 and any(type(r) is ScryptRecipient for r in recipients):
        raise InputValidationError("a ScryptRecipient must be the only recipient of a file")
    # age's rule too: a classic stanza next to a post-quantum one would be the weak link.
    pq = [isinstance(r, HybridRecipient) for r in recipients]
    if any(pq) and not all(pq):
        raise InputValidationError("post-quantum (HybridRecipient) and classic recipients cannot be mixed in one file")
    return recipients


def _check_identities(identities: Sequence[Identity]) -> list[Identity]:
    if isinstance(identities, (*_IDENTITY_TYPES, str, bytes)):
        raise InputValidationError("identities must be a sequence of X25519Identity, HybridIdentity or ScryptIdentity")
    identities = list(identities)
    for i in identities:
        if not isinstance(i, _IDENTITY_TYPES):
            raise InputValidationError(
                f"identities must be X25519Identity, HybridIdentity or ScryptIdentity, got {type(i).__name__}"
            )
    return identities


def _new_header(file_key: bytes, recipients: list[Recipient]) -> bytes:
    return _format.seal_header(file_key, [_handler(_WRAP, r)(file_key, r) for r in recipients])


def _unwrap(header: _format.Header, identities: list[Identity]) -> bytes:
    """The file key from the first stanza an identity opens, then the header MAC checked."""
    stanzas = header.stanzas
    if any(s.type == _scrypt.STANZA_TYPE for s in stanzas) and len(stanzas) != 1:
        raise HeaderError("an scrypt stanza must be the only stanza in the header")
    for identity in identities:
        unwrap = _handler(_UNWRAP, identity)
        for stanza in stanzas:
            file_key = unwrap(identity, stanza)
            if file_key is not None:
                _format.verify_mac(file_key, header)
                return file_key
    if not identities:
        raise NoIdentityMatchError(["no identities were given"])
    given = {type(i) for i in identities}
    reasons = []
    for n, s in enumerate(stanzas):
        if n == _MAX_REASONS:  # a hostile header has up to ~9,000 stanzas: the message stays short
            reasons.append(f"{len(stanzas) - n} more stanzas")
            break
        if s.type == _x25519.STANZA_TYPE:
            why = "not for these identities" if X25519Identity in given else "needs an X25519 identity"
        elif s.type == _pq.STANZA_TYPE:
            why = ("not for these identities" if HybridIdentity in given
                   else "needs a post-quantum (HybridIdentity) identity")
        elif s.type == _scrypt.STANZA_TYPE:
            why = "wrong passphrase" if ScryptIdentity in given else "needs a passphrase (ScryptIdentity)"
        else:
            why = "unsupported type"
        shown = s.type if len(s.type) <= _MAX_TYPE else s.type[:_MAX_TYPE] + "..."
        reasons.append(f"stanza {n} ({shown}): {why}")
    raise NoIdentityMatchError(reasons)


def encrypt(
    plaintext: Iterable[bytes] | bytes,
    recipients: Sequence[Recipient],
    *,
    file_key: bytes | None = None,
    armor: bool = False,
) -> Iterator[bytes]:
    """Encrypt `plaintext` (an iterable of bytes pieces of any size, or one bytes object)
    to `recipients`. Yields the header, then the payload nonce, then STREAM chunks; with
    `armor=True` the same file as ASCII armor (BEGIN line, base64 lines, END line).
    Memory is bounded by one chunk plus the largest input piece."""
    recipients = _check_recipients(recipients)
    if file_key is None:
        file_key = os.urandom(FILE_KEY_SIZE)
    elif not isinstance(file_key, bytes) or len(file_key) != FILE_KEY_SIZE:
        raise InputValidationError(f"file_key must be {FILE_KEY_SIZE} bytes")
    if isinstance(plaintext, (bytes, bytearray, memoryview)):
        plaintext = (plaintext,)
    header = _new_header(file_key, recipients)
    binary = _encrypt(header, file_key, plaintext)
    return _armor.armor(binary) if armor else binary


def header_for(file_key: bytes, recipients: Sequence[Recipient]) -> bytes:
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


def unwrap_file_key(header: bytes, identities: Sequence[Identity]) -> bytes:
    """HAZMAT — returns the plaintext file key of `header` (exactly one header, nothing
    after it), after checking the header MAC. Whoever holds this key can decrypt the
    payload and forge payloads for this header. Never log it or send it anywhere."""
    if not isinstance(header, (bytes, bytearray, memoryview)):
        raise InputValidationError(f"header must be bytes, got {type(header).__name__}")
    return _unwrap(_format.parse(header), _check_identities(identities))


def rewrap(
    header: bytes,
    identities: Sequence[Identity],
    recipients: Sequence[Recipient],
) -> bytes:
    """Re-header: unwrap the file key of `header` with `identities` (MAC checked) and
    return a new header (fresh stanzas + MAC) for `recipients`. The
    payload that followed `header` is unchanged and now opens with the new header."""
    recipients = _check_recipients(recipients)
    file_key = unwrap_file_key(header, identities)
    return _new_header(file_key, recipients)


class Decryptor:
    """Decrypts one age file from `src`.

    The constructor reads and verifies the header and the payload nonce (HeaderError,
    NoIdentityMatchError, HeaderMACError). `armor`: None (default) detects ASCII armor
    (a binary age file starts with "a"; anything else is read as armor), True requires
    it, False reads binary only. Armor problems raise ArmorError (a HeaderError), also
    while iterating, since the armor is decoded as the payload streams; iterating yields verified plaintext chunks and
    raises PayloadError at the first bad chunk, after yielding every chunk before it. A
    caller that must not act on a partial plaintext (e.g. writing an output file) keeps
    what it gets aside until iteration finished without error. Iterate once.

    Attributes:
        header_bytes  the exact header bytes read, mac line included.
        file_key      HAZMAT: the plaintext 16-byte file key. Exposed only to derive the
                      content commitment key (vault.commitment); never log, persist or send it.
    """

    __slots__ = ("header_bytes", "file_key", "_src", "_aead", "_started")

    def __init__(
        self, src: BinaryIO, identities: Sequence[Identity], *, armor: bool | None = None
    ) -> None:
        identities = _check_identities(identities)
        if armor is None:
            armor, src = _armor.sniff(src)
        if armor:
            src = _armor.ArmoredReader(src)
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


def decrypt(src: BinaryIO, identities: Sequence[Identity], *, armor: bool | None = None) -> Iterator[bytes]:
    """Header errors raise here; payload errors while iterating (see Decryptor)."""
    return iter(Decryptor(src, identities, armor=armor))
