"""Content commitment: a 32-byte value recorded on chain that binds an asset version to
its plaintext without revealing anything about it.

Construction (version 2):

    commitment key  K_c = HKDF-SHA256(ikm=file key, salt="", info=b"twinledger/commitment/v2")
    commitment      C   = BLAKE3-keyed_hash(K_c, plaintext)                (32 bytes)

The file key is the age file key of the sealed file (16 bytes, inside the encrypted
header). The info string carries the version: a different construction gets a new info
string, never a silent change. Version 1 (HMAC-SHA256 under info ".../v1") is dropped,
not supported side by side: it cost three times the CPU per byte, and TwinLedger only
runs on devnets, where no commitment was ever persisted that would need it.

Why outsiders cannot confirm plaintext guesses. Everything on chain is public to the
consortium, so a bare hash of the plaintext would let anyone test a guess ("is this the
2024 calibration file we already have?"). C is BLAKE3 in keyed mode under K_c, a key
derived from the file key, which exists only inside age headers encrypted to authorised
recipients. Keyed BLAKE3 is a PRF (its designers' claim, the same role keyed BLAKE2 and
HMAC play): without K_c, C is indistinguishable from random and says nothing about the
plaintext, guessable or not. K_c is domain-separated from age's own HKDF outputs (info
"header", "payload") and from v1's, so it neither reveals nor is revealed by them.

Why it binds. Given C on chain, producing a different (key, plaintext) pair with the
same output needs a collision of BLAKE3 at its full 256-bit output (128-bit security),
even for the owner who chose the key: the key enters as the chaining value of every
chunk, so BLAKE3's collision-resistance argument (a sound tree mode over a compression
function with no known weakness) covers the key as it covers the message. It also makes
the payload key-committing: ChaCha20-Poly1305 alone is not, so a malicious owner could
craft a header under which the same payload decrypts to other bytes; the consumer's
check of C after decryption catches that.

How an auditor checks a disputed plaintext. The owner (or the consumer, who also learns
the file key) hands the auditor K_c = commitment_key(file_key) — not the file key:
K_c cannot decrypt the payload or forge headers (HKDF is one-way, and it is a different
output from the header and payload keys). The auditor computes the keyed BLAKE3 of the
disputed plaintext under K_c with audit_commitment() (or any BLAKE3 tool: `b3sum
--keyed`) and compares it with the on-chain commitment. Because of binding, a K_c that
makes a plaintext match is convincing whoever supplied it.

Use: feed the plaintext as it is decrypted (Committer.update per chunk) and call
verify() only after the last chunk; CommitmentMismatchError means the plaintext must be
discarded. Comparisons are constant-time. The blake3 binding releases the GIL while it
hashes a large piece, so a committer runs next to the other stages of the vault pipeline.
"""
from __future__ import annotations

import hmac
from collections.abc import Iterable, Iterator

from blake3 import blake3
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import CommitmentMismatchError, InputValidationError

COMMITMENT_VERSION = 2
COMMITMENT_INFO = b"twinledger/commitment/v2"
COMMITMENT_SIZE = 32
COMMITMENT_KEY_SIZE = 32  # BLAKE3's keyed mode takes exactly 32 bytes
FILE_KEY_SIZE = 16


def commitment_key(file_key: bytes) -> bytes:
    """K_c for `file_key`. Safe to give an auditor: it cannot decrypt anything."""
    if not isinstance(file_key, (bytes, bytearray)) or len(file_key) != FILE_KEY_SIZE:
        raise InputValidationError(f"an age file key is {FILE_KEY_SIZE} bytes")
    hkdf = HKDF(algorithm=SHA256(), length=COMMITMENT_KEY_SIZE, salt=None, info=COMMITMENT_INFO)
    return hkdf.derive(bytes(file_key))


class Committer:
    """Incremental commitment: `Committer(file_key)`, `update()` per plaintext piece,
    then `digest()` or `verify(expected)`. An auditor uses `from_commitment_key(K_c)`."""

    __slots__ = ("_hasher",)

    def __init__(self, file_key: bytes) -> None:
        self._hasher = blake3(key=commitment_key(file_key))  # single-threaded (the default)

    @classmethod
    def from_commitment_key(cls, key: bytes) -> Committer:
        if not isinstance(key, (bytes, bytearray)) or len(key) != COMMITMENT_KEY_SIZE:
            raise InputValidationError(f"a commitment key is {COMMITMENT_KEY_SIZE} bytes")
        self = cls.__new__(cls)
        self._hasher = blake3(key=bytes(key))
        return self

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._hasher.update(data)

    def digest(self) -> bytes:
        return self._hasher.digest(length=COMMITMENT_SIZE)

    def verify(self, expected: bytes) -> None:
        """CommitmentMismatchError unless the plaintext so far commits to `expected`."""
        if not isinstance(expected, (bytes, bytearray)) or not hmac.compare_digest(self.digest(), bytes(expected)):
            raise CommitmentMismatchError("plaintext does not match the recorded content commitment")

    def __repr__(self) -> str:
        return f"Committer(v{COMMITMENT_VERSION})"


def compute_commitment(file_key: bytes, chunks: Iterable[bytes]) -> bytes:
    c = Committer(file_key)
    for chunk in chunks:
        c.update(chunk)
    return c.digest()


def verify_commitment(file_key: bytes, chunks: Iterable[bytes], expected: bytes) -> None:
    """Consumer side. CommitmentMismatchError if `chunks` do not commit to `expected`."""
    c = Committer(file_key)
    for chunk in chunks:
        c.update(chunk)
    c.verify(expected)


def audit_commitment(key: bytes, chunks: Iterable[bytes], expected: bytes) -> None:
    """Auditor side, given only K_c (see commitment_key). Raises CommitmentMismatchError."""
    c = Committer.from_commitment_key(key)
    for chunk in chunks:
        c.update(chunk)
    c.verify(expected)


def verified(chunks: Iterable[bytes], file_key: bytes, expected: bytes) -> Iterator[bytes]:
    """Pass `chunks` through while committing; after the last one, raise
    CommitmentMismatchError on a mismatch. Callers must not publish the output before the
    iterator is exhausted without error (e.g. write to a temp file, rename at the end)."""
    c = Committer(file_key)
    for chunk in chunks:
        c.update(chunk)
        yield chunk
    c.verify(expected)
