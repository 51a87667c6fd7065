"""X25519 recipients and identities, and the X25519 stanza (age-encryption.org/v1).

Keys (Bech32, see _bech32.py):
    recipient  "age1" + Bech32(32-byte Curve25519 public key), lowercase
    identity   "AGE-SECRET-KEY-1" + Bech32(32-byte X25519 scalar), uppercase

Stanza:
    -> X25519 <base64(ephemeral share, 32 bytes)>
    <base64(ChaCha20-Poly1305(wrap key, nonce = 12 zero bytes, file key); 32 bytes)>

    shared   = X25519(ephemeral secret, recipient)  (= X25519(identity, share))
    wrap key = HKDF-SHA256(ikm=shared, salt=share || recipient, info="age-encryption.org/v1/X25519")

An all-zero shared secret (the share is a low-order point) is rejected, as is a recipient
that is a low-order point (it would make every wrap produce that secret).
"""
from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ..errors import HeaderError, InvalidKeyError
from . import _bech32
from ._format import Stanza, b64decode, b64encode
from ._kdf import hkdf_sha256

STANZA_TYPE = "X25519"
RECIPIENT_HRP = "age"
IDENTITY_HRP = "age-secret-key-"
KEY_SIZE = 32
FILE_KEY_SIZE = 16
_WRAP_INFO = b"age-encryption.org/v1/X25519"
_ZERO_NONCE = bytes(12)
_ZERO_SECRET = bytes(32)
# Any clamped scalar is a multiple of the cofactor 8, so X25519(_PROBE, P) is all-zero
# exactly when P has small order.
_PROBE = X25519PrivateKey.from_private_bytes(bytes([0x40] + [0x11] * 31))


def _shared_secret(private: X25519PrivateKey, public: bytes) -> bytes | None:
    """X25519, or None when the result is the forbidden all-zero value."""
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:  # OpenSSL refuses an all-zero result
        return None
    return None if hmac.compare_digest(shared, _ZERO_SECRET) else shared


@dataclass(frozen=True)
class X25519Recipient:
    """An `age1…` public key. Compares and hashes by its 32 key bytes."""

    public_bytes: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.public_bytes, bytes) or len(self.public_bytes) != KEY_SIZE:
            raise InvalidKeyError("an X25519 recipient is 32 bytes")
        if _shared_secret(_PROBE, self.public_bytes) is None:
            raise InvalidKeyError("X25519 recipient is a low-order point")

    @classmethod
    def parse(cls, s: str) -> X25519Recipient:
        """`age1…`, or `AGE1…` all in upper case, as Bech32 (BIP 173) and rage accept it;
        the `age` tool refuses the upper-case form, and str() always gives the lower case
        one, so nothing written here is refused there. InvalidKeyError otherwise."""
        hrp, data = _bech32.decode(s)
        if hrp != RECIPIENT_HRP:
            raise InvalidKeyError("not an age X25519 recipient (expected 'age1…')")
        if len(data) != KEY_SIZE:
            raise InvalidKeyError("an X25519 recipient is 32 bytes")
        return cls(data)

    def __str__(self) -> str:
        return _bech32.encode(RECIPIENT_HRP, self.public_bytes)

    def __repr__(self) -> str:
        return f"X25519Recipient({str(self)!r})"


class _SecretKey:
    """What the identity types share: `recipient`, equality by the secret bytes (in
    constant time), a hash by the recipient, and no pickling."""

    _secret: bytes
    _recipient: object

    @property
    def recipient(self):  # typed by each subclass
        return self._recipient

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return hmac.compare_digest(self._secret, other._secret)  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._recipient)

    def __reduce__(self):  # no pickling of secrets by accident
        raise TypeError(f"{type(self).__name__} cannot be pickled; store str(identity) deliberately")


@dataclass(frozen=True, eq=False, repr=False)
class X25519Identity(_SecretKey):
    """An `AGE-SECRET-KEY-1…` secret key. repr() shows only the recipient."""

    _secret: bytes
    _private: X25519PrivateKey = field(init=False, compare=False)
    _recipient: X25519Recipient = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self._secret, bytes) or len(self._secret) != KEY_SIZE:
            raise InvalidKeyError("an X25519 identity is 32 bytes")
        private = X25519PrivateKey.from_private_bytes(self._secret)
        object.__setattr__(self, "_private", private)
        object.__setattr__(self, "_recipient", X25519Recipient(private.public_key().public_bytes_raw()))

    @classmethod
    def generate(cls) -> X25519Identity:
        return cls(X25519PrivateKey.generate().private_bytes_raw())

    @classmethod
    def parse(cls, s: str) -> X25519Identity:
        """`AGE-SECRET-KEY-1…` in upper or lower case (not mixed), as Bech32 and rage accept
        it (the `age` tool only the upper case that str() gives). InvalidKeyError otherwise."""
        hrp, data = _bech32.decode(s)
        if hrp != IDENTITY_HRP:
            raise InvalidKeyError("not an age X25519 identity (expected 'AGE-SECRET-KEY-1…')")
        if len(data) != KEY_SIZE:
            raise InvalidKeyError("an X25519 identity is 32 bytes")
        return cls(data)

    @property
    def recipient(self) -> X25519Recipient:
        return self._recipient  # type: ignore[return-value]

    def __str__(self) -> str:
        return _bech32.encode(IDENTITY_HRP, self._secret).upper()

    def __repr__(self) -> str:
        return f"X25519Identity(recipient={str(self._recipient)!r})"


def _wrap_key(shared: bytes, share: bytes, recipient: bytes) -> ChaCha20Poly1305:
    return ChaCha20Poly1305(hkdf_sha256(shared, share + recipient, _WRAP_INFO))


def wrap(file_key: bytes, recipient: X25519Recipient) -> Stanza:
    """A fresh X25519 stanza that gives `file_key` to `recipient`."""
    ephemeral = X25519PrivateKey.generate()
    share = ephemeral.public_key().public_bytes_raw()
    shared = _shared_secret(ephemeral, recipient.public_bytes)
    if shared is None:  # unreachable: low-order recipients are refused at construction
        raise InvalidKeyError("X25519 recipient is a low-order point")
    body = _wrap_key(shared, share, recipient.public_bytes).encrypt(_ZERO_NONCE, file_key, None)
    return Stanza(STANZA_TYPE, (b64encode(share).decode("ascii"),), body)


def unwrap(identity: X25519Identity, stanza: Stanza) -> bytes | None:
    """The file key if `stanza` is for `identity`, None if it is not (wrong type or wrong
    key: the AEAD fails). HeaderError if it is an X25519 stanza that is malformed."""
    if stanza.type != STANZA_TYPE:
        return None
    if len(stanza.args) != 1:
        raise HeaderError("invalid X25519 stanza: expected exactly one argument")
    share = b64decode(stanza.args[0].encode("ascii"))
    if len(share) != KEY_SIZE:
        raise HeaderError("invalid X25519 stanza: share is not 32 bytes")
    if len(stanza.body) != FILE_KEY_SIZE + 16:
        raise HeaderError("invalid X25519 stanza: wrapped file key has the wrong size")
    shared = _shared_secret(identity._private, share)
    if shared is None:
        raise HeaderError("invalid X25519 stanza: share is a low-order point")
    try:
        return _wrap_key(shared, share, identity.recipient.public_bytes).decrypt(
            _ZERO_NONCE, stanza.body, None
        )
    except InvalidTag:
        return None
