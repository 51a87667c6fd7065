"""age v1 encryption (age-encryption.org/v1): X25519, post-quantum hybrid (mlkem768x25519,
age v1.3) and scrypt (passphrase) recipients, binary or ASCII-armored, streaming both ways.

Files produced here open with any age implementation (`age -d`; post-quantum ones need age
1.3 or later), and files from `age -e` (also `-a`, `-p`, `-r age1pq1…`) open here. Every
C2SP CCTV vector passes.

Keys
    X25519Identity.generate() / .parse("AGE-SECRET-KEY-1…")   secret key (repr hides it)
    X25519Recipient.parse("age1…"); identity.recipient         public key
    HybridIdentity.generate() / .parse("AGE-SECRET-KEY-PQ-1…") post-quantum hybrid
    HybridRecipient.parse("age1pq1…")                           (ML-KEM-768 + X25519); cannot
                                                     be mixed with classic recipients in one file
    parse_identity(s) / parse_recipient(s)           whichever type the string is
    Bad encodings raise InvalidKeyError.
    ScryptRecipient(passphrase, work_factor=18)      encrypt to a passphrase; must be the
                                                     only recipient (InputValidationError)
    ScryptIdentity(passphrase, max_work_factor=22)   decrypt with it; files asking for more
                                                     scrypt work are refused (HeaderError)
    Both are accepted wherever X25519 recipients / identities are.

Sealing
    for piece in encrypt(chunks, [recipient, ...]):   # header, nonce, then 64 KiB chunks
        out.write(piece)
    encrypt(chunks, recipients, armor=True)           # the same as ASCII armor
    armor(binary_pieces)                              # armor an existing binary age file

Opening
    dec = Decryptor(src, [identity])   # reads + verifies header and nonce
    for chunk in dec: ...              # verified plaintext, chunk by chunk
    decrypt(src, [identity])           # the same, as one iterator
    armor is detected (armor=None); armor=True requires it, armor=False refuses it
    dearmor(src)                       # the binary file inside armored src, as a stream

Sharing by re-headering (the payload is never touched)
    header = read_header(src)                          # src now at the payload
    new_header = rewrap(header, [owner], [consumer])   # new stanzas + MAC
    consumer file = new_header + payload

Errors (vault.errors): HeaderError (header does not parse, or the nonce is missing),
NoIdentityMatchError (no identity opens a stanza; `.reasons` says why per stanza),
HeaderMACError (a stanza opened but the header MAC is wrong), PayloadError (a STREAM
chunk is bad, truncated, reordered or followed by trailing data; raised after every
chunk before it was yielded), ArmorError (a HeaderError: the ASCII armor is malformed;
raised while reading, so also while iterating). The first three are raised by
Decryptor(); PayloadError while iterating. All but NoIdentityMatchError derive from
DecryptionError.

HAZMAT: `Decryptor.file_key` and `unwrap_file_key()` expose the plaintext file key,
needed only for the content commitment (vault.commitment). Whoever has it can read and
forge the payload: never log, persist or transmit it.

Wire formats are documented where they are encoded: _format.py (header), _x25519.py
(stanza, keys), _pq.py (post-quantum stanza, keys), _scrypt.py (passphrase stanza),
_stream.py (payload), _armor.py (ASCII armor), _bech32.py (key encoding).
"""
from __future__ import annotations

from ._age import Decryptor, decrypt, encrypt, header_for, read_header, rewrap, unwrap_file_key
from ._armor import ArmoredReader, ArmorError, armor, dearmor
from ._pq import HybridIdentity, HybridRecipient
from ._scrypt import ScryptIdentity, ScryptRecipient
from ._stream import CHUNK_SIZE
from ._x25519 import FILE_KEY_SIZE, X25519Identity, X25519Recipient

__all__ = [
    "CHUNK_SIZE",
    "HybridIdentity",
    "HybridRecipient",
    "parse_identity",
    "parse_recipient",
    "FILE_KEY_SIZE",
    "ArmorError",
    "ArmoredReader",
    "Decryptor",
    "ScryptIdentity",
    "ScryptRecipient",
    "armor",
    "dearmor",
    "X25519Identity",
    "X25519Recipient",
    "decrypt",
    "encrypt",
    "header_for",
    "read_header",
    "rewrap",
    "unwrap_file_key",
]


def parse_identity(s: str) -> X25519Identity | HybridIdentity:
    """An `AGE-SECRET-KEY-1…` or `AGE-SECRET-KEY-PQ-1…` identity; InvalidKeyError otherwise."""
    if isinstance(s, str) and s.upper().startswith("AGE-SECRET-KEY-PQ-"):
        return HybridIdentity.parse(s)
    return X25519Identity.parse(s)


def parse_recipient(s: str) -> X25519Recipient | HybridRecipient:
    """An `age1…` or `age1pq1…` recipient; InvalidKeyError otherwise."""
    if isinstance(s, str) and s.lower().startswith("age1pq1"):
        return HybridRecipient.parse(s)
    return X25519Recipient.parse(s)
