"""scrypt (passphrase) recipients and identities, and the scrypt stanza (age-encryption.org/v1).

Stanza:
    -> scrypt <base64(salt, 16 random bytes)> <log2 of the work factor N, decimal>
    <base64(ChaCha20-Poly1305(wrap key, nonce = 12 zero bytes, file key); 32 bytes)>

    wrap key = scrypt(passphrase, salt = "age-encryption.org/v1/scrypt" || salt,
                      N = 2**logN, r = 8, p = 1, 32 bytes)

Rules (the CCTV vectors check each one; a violation is a HeaderError):
- an scrypt stanza is the only stanza of its header (enforced in _age._unwrap for every
  identity type, because mixing would let a passphrase holder learn the file key of a
  file also sent to public keys, and age refuses it the same way);
- exactly two arguments; the salt is canonical unpadded base64 of exactly 16 bytes;
- logN is canonical decimal: digits only, no sign, no leading zero, at least 1;
- logN above the identity's max_work_factor is refused before any work is done, because
  the sender chooses N and a file could otherwise make us spend 2**logN KiB of memory;
- the body is exactly 16 + 16 bytes (checked before decrypting).
A body that does not authenticate under the derived key means "wrong passphrase": the
stanza is simply not for this identity (None, like an X25519 stanza for another key).

scrypt runs in OpenSSL through `cryptography` rather than `hashlib.scrypt`: hashlib caps
`maxmem` below 2 GiB, which rules out work factors of 21 and more (N = 2**21 needs 2 GiB),
while age's default decryption limit, which we keep, is 22.
"""
from __future__ import annotations

import hmac
import os
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..errors import HeaderError, InputValidationError
from ._format import Stanza, b64decode, b64encode
from ._x25519 import FILE_KEY_SIZE

STANZA_TYPE = "scrypt"
SALT_SIZE = 16
_LABEL = b"age-encryption.org/v1/scrypt"
_ZERO_NONCE = bytes(12)
_TAG_SIZE = 16
# age's own defaults: 18 (256 MiB, about a second) to encrypt; 22 (4 GiB) is the most a
# decryption accepts unless the caller says otherwise. A service that opens files from
# untrusted senders should pass a lower max_work_factor.
DEFAULT_WORK_FACTOR = 18
DEFAULT_MAX_WORK_FACTOR = 22
# 2**30 is age's own bound for both knobs (and already needs 1 TiB of memory).
MAX_WORK_FACTOR_LIMIT = 30
_CANONICAL_DECIMAL = re.compile(r"[1-9][0-9]*")


def _passphrase_bytes(passphrase: str | bytes) -> bytes:
    if isinstance(passphrase, str):
        passphrase = passphrase.encode("utf-8")
    elif not isinstance(passphrase, bytes):
        raise InputValidationError(f"a passphrase is str or bytes, got {type(passphrase).__name__}")
    if not passphrase:
        raise InputValidationError("a passphrase cannot be empty")
    return passphrase


def _work_factor(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputValidationError(f"{name} must be an int, got {type(value).__name__}")
    if not 1 <= value <= MAX_WORK_FACTOR_LIMIT:
        raise InputValidationError(f"{name} must be between 1 and {MAX_WORK_FACTOR_LIMIT}, got {value}")
    return value


class _Secret:
    """Shared behaviour: the passphrase never shows in repr and is never pickled."""

    __slots__ = ("_passphrase",)

    def __reduce__(self):
        raise TypeError(f"{type(self).__name__} cannot be pickled: it holds a passphrase")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return hmac.compare_digest(self._passphrase, other._passphrase) and self._knob == other._knob

    def __hash__(self) -> int:
        return hash((type(self), self._knob))

    @property
    def _knob(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError


class ScryptRecipient(_Secret):
    """Encrypt to a passphrase. Must be the only recipient of a file (age's rule).

    `work_factor` is log2(N): each step doubles the time and memory (18 ≈ 256 MiB and
    about a second, age's default). Decryptors refuse files above their own maximum."""

    __slots__ = ("work_factor",)

    def __init__(self, passphrase: str | bytes, work_factor: int = DEFAULT_WORK_FACTOR) -> None:
        self._passphrase = _passphrase_bytes(passphrase)
        self.work_factor = _work_factor(work_factor, "work_factor")

    @property
    def _knob(self) -> int:
        return self.work_factor

    def __repr__(self) -> str:
        return f"ScryptRecipient(work_factor={self.work_factor})"


class ScryptIdentity(_Secret):
    """Decrypt with a passphrase. Files whose scrypt work factor exceeds
    `max_work_factor` are refused (HeaderError) before any scrypt work is done."""

    __slots__ = ("max_work_factor",)

    def __init__(self, passphrase: str | bytes, max_work_factor: int = DEFAULT_MAX_WORK_FACTOR) -> None:
        self._passphrase = _passphrase_bytes(passphrase)
        self.max_work_factor = _work_factor(max_work_factor, "max_work_factor")

    @property
    def _knob(self) -> int:
        return self.max_work_factor

    def __repr__(self) -> str:
        return f"ScryptIdentity(max_work_factor={self.max_work_factor})"


def _wrap_key(passphrase: bytes, salt: bytes, log_n: int) -> ChaCha20Poly1305:
    key = Scrypt(salt=_LABEL + salt, length=32, n=1 << log_n, r=8, p=1).derive(passphrase)
    return ChaCha20Poly1305(key)


def wrap(file_key: bytes, recipient: ScryptRecipient, salt: bytes | None = None) -> Stanza:
    """A fresh scrypt stanza for `file_key` (a random salt unless one is given, for tests)."""
    salt = os.urandom(SALT_SIZE) if salt is None else salt
    body = _wrap_key(recipient._passphrase, salt, recipient.work_factor).encrypt(_ZERO_NONCE, file_key, None)
    args = (b64encode(salt).decode("ascii"), str(recipient.work_factor))
    return Stanza(STANZA_TYPE, args, body)


def unwrap(identity: ScryptIdentity, stanza: Stanza) -> bytes | None:
    """The file key if `stanza` opens with the identity's passphrase; None if it is not an
    scrypt stanza or the passphrase is wrong. HeaderError if it is a malformed scrypt
    stanza or asks for more work than the identity allows."""
    if stanza.type != STANZA_TYPE:
        return None
    if len(stanza.args) != 2:
        raise HeaderError("invalid scrypt stanza: expected a salt and a work factor")
    salt = b64decode(stanza.args[0].encode("ascii"))
    if len(salt) != SALT_SIZE:
        raise HeaderError(f"invalid scrypt stanza: the salt is not {SALT_SIZE} bytes")
    text = stanza.args[1]
    if not _CANONICAL_DECIMAL.fullmatch(text):
        raise HeaderError("invalid scrypt stanza: the work factor is not a canonical positive decimal")
    # Length first: int() of a huge digit string is itself work an attacker chooses.
    if len(text) > 2 or int(text) > identity.max_work_factor:
        raise HeaderError(
            f"scrypt work factor {text[:20]} is above this identity's maximum ({identity.max_work_factor})"
        )
    if len(stanza.body) != FILE_KEY_SIZE + _TAG_SIZE:
        raise HeaderError("invalid scrypt stanza: wrapped file key has the wrong size")
    try:
        return _wrap_key(identity._passphrase, salt, int(text)).decrypt(_ZERO_NONCE, stanza.body, None)
    except InvalidTag:
        return None
