"""The post-quantum hybrid recipient type of age v1.3: mlkem768x25519 (C2SP age spec).

Keys (Bech32 without a length limit, see _bech32.py):
    identity   "AGE-SECRET-KEY-PQ-1" + Bech32(32-byte seed), uppercase
    recipient  "age1pq1" + Bech32(1216-byte public key), lowercase: the ML-KEM-768
               encapsulation key (1184 bytes) ‖ the X25519 public key (32 bytes)

The seed is an X-Wing decapsulation key (draft-connolly-cfrg-xwing-kem, which is the KEM
MLKEM768-X25519 of draft-ietf-hpke-pq): SHAKE256(seed, 96 bytes) gives the ML-KEM-768
key-generation seed d ‖ z (64 bytes) and the X25519 secret (32 bytes).

Stanza:
    -> mlkem768x25519 <base64(enc, 1120 bytes: ML-KEM ciphertext ‖ X25519 share)>
    <base64(HPKE ciphertext of the file key; 32 bytes)>

    enc, body = HPKE SealBase(KEM MLKEM768-X25519, HKDF-SHA256, ChaCha20-Poly1305,
                              pkR = recipient, info = "age-encryption.org/mlkem768x25519",
                              aad = "", file key)

A share that is a low-order X25519 point (the all-zero shared secret) is a malformed
stanza, as are a wrong number of arguments, an enc or body of the wrong size, or
non-canonical base64. A stanza that does not open (ML-KEM's implicit rejection, a wrong
key) is "not for this identity". Files to such a recipient must not also go to classic
recipients (their X25519 or passphrase stanzas would be the weak link): encrypt() refuses
the mix, as age does.

HPKE, ML-KEM and the hybrid KEM are cryptography's (OpenSSL); only the key encoding and the
stanza are written here.
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from ..errors import HeaderError, InvalidKeyError
from . import _bech32
from ._format import Stanza, b64decode, b64encode
from ._x25519 import _PROBE, FILE_KEY_SIZE, _SecretKey, _shared_secret

STANZA_TYPE = "mlkem768x25519"
RECIPIENT_HRP = "age1pq"
IDENTITY_HRP = "age-secret-key-pq-"
SEED_SIZE = 32
MLKEM_PUBLIC_SIZE = 1184
X25519_SIZE = 32
PUBLIC_SIZE = MLKEM_PUBLIC_SIZE + X25519_SIZE
ENC_SIZE = 1088 + X25519_SIZE
_BODY_SIZE = FILE_KEY_SIZE + 16
_INFO = b"age-encryption.org/mlkem768x25519"


@functools.cache
def _suite() -> hpke.Suite:
    """Made on first use, so that vault.age imports where cryptography's OpenSSL has no
    ML-KEM (then only post-quantum keys fail, with UnsupportedAlgorithm)."""
    return hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)


@dataclass(frozen=True)
class HybridRecipient:
    """An `age1pq1…` public key. Compares and hashes by its 1216 key bytes."""

    public_bytes: bytes
    _key: hpke.MLKEM768X25519PublicKey = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.public_bytes, bytes) or len(self.public_bytes) != PUBLIC_SIZE:
            raise InvalidKeyError(f"an mlkem768x25519 recipient is {PUBLIC_SIZE} bytes")
        classic = self.public_bytes[MLKEM_PUBLIC_SIZE:]
        if _shared_secret(_PROBE, classic) is None:
            raise InvalidKeyError("the X25519 part of the recipient is a low-order point")
        try:
            pq = mlkem.MLKEM768PublicKey.from_public_bytes(self.public_bytes[:MLKEM_PUBLIC_SIZE])
        except ValueError:  # FIPS 203 encapsulation key check (coefficients mod q)
            raise InvalidKeyError("the ML-KEM-768 part of the recipient is not a valid key") from None
        key = hpke.MLKEM768X25519PublicKey(pq, x25519.X25519PublicKey.from_public_bytes(classic))
        object.__setattr__(self, "_key", key)

    @classmethod
    def parse(cls, s: str) -> HybridRecipient:
        hrp, data = _bech32.decode(s)
        if hrp != RECIPIENT_HRP:
            raise InvalidKeyError("not an age post-quantum recipient (expected 'age1pq1…')")
        return cls(data)

    def __str__(self) -> str:
        return _bech32.encode(RECIPIENT_HRP, self.public_bytes)

    def __repr__(self) -> str:
        text = str(self)
        return f"HybridRecipient('{text[:16]}…{text[-8:]}')"


@dataclass(frozen=True, eq=False, repr=False)
class HybridIdentity(_SecretKey):
    """An `AGE-SECRET-KEY-PQ-1…` secret key (a 32-byte seed). repr() shows no secret."""

    _secret: bytes  # the seed
    _private: hpke.MLKEM768X25519PrivateKey = field(init=False, compare=False)
    _classic: x25519.X25519PrivateKey = field(init=False, compare=False)
    _recipient: HybridRecipient = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self._secret, bytes) or len(self._secret) != SEED_SIZE:
            raise InvalidKeyError(f"an mlkem768x25519 identity is a {SEED_SIZE}-byte seed")
        expanded = hashlib.shake_256(self._secret).digest(64 + X25519_SIZE)
        pq = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
        classic = x25519.X25519PrivateKey.from_private_bytes(expanded[64:])
        object.__setattr__(self, "_private", hpke.MLKEM768X25519PrivateKey(pq, classic))
        object.__setattr__(self, "_classic", classic)
        public = pq.public_key().public_bytes_raw() + classic.public_key().public_bytes_raw()
        object.__setattr__(self, "_recipient", HybridRecipient(public))

    @classmethod
    def generate(cls) -> HybridIdentity:
        return cls(os.urandom(SEED_SIZE))

    @classmethod
    def parse(cls, s: str) -> HybridIdentity:
        """`AGE-SECRET-KEY-PQ-1…` in upper or lower case (not mixed). InvalidKeyError otherwise."""
        hrp, data = _bech32.decode(s)
        if hrp != IDENTITY_HRP:
            raise InvalidKeyError("not an age post-quantum identity (expected 'AGE-SECRET-KEY-PQ-1…')")
        return cls(data)

    @property
    def recipient(self) -> HybridRecipient:
        return self._recipient  # type: ignore[return-value]

    def __str__(self) -> str:
        return _bech32.encode(IDENTITY_HRP, self._secret).upper()

    def __repr__(self) -> str:
        return f"HybridIdentity(recipient={self._recipient!r})"


def wrap(file_key: bytes, recipient: HybridRecipient) -> Stanza:
    """A fresh mlkem768x25519 stanza that gives `file_key` to `recipient`."""
    sealed = _suite().encrypt(file_key, recipient._key, info=_INFO)
    enc, body = sealed[:ENC_SIZE], sealed[ENC_SIZE:]
    return Stanza(STANZA_TYPE, (b64encode(enc).decode("ascii"),), body)


def unwrap(identity: HybridIdentity, stanza: Stanza) -> bytes | None:
    """The file key if `stanza` is for `identity`, None if it is not (another type, or it
    does not open). HeaderError if it is an mlkem768x25519 stanza that is malformed."""
    if stanza.type != STANZA_TYPE:
        return None
    if len(stanza.args) != 1:
        raise HeaderError("invalid mlkem768x25519 stanza: expected exactly one argument")
    enc = b64decode(stanza.args[0].encode("ascii"))
    if len(enc) != ENC_SIZE:
        raise HeaderError(f"invalid mlkem768x25519 stanza: enc is not {ENC_SIZE} bytes")
    if len(stanza.body) != _BODY_SIZE:  # checked before anything is decrypted
        raise HeaderError("invalid mlkem768x25519 stanza: wrapped file key has the wrong size")
    if _shared_secret(identity._classic, enc[-X25519_SIZE:]) is None:
        raise HeaderError("invalid mlkem768x25519 stanza: the X25519 share is a low-order point")
    try:
        return _suite().decrypt(enc + stanza.body, identity._private, info=_INFO)
    except (InvalidTag, ValueError):  # another key (ML-KEM rejects implicitly: the AEAD fails)
        return None
