"""Binary CID (as stored on chain) → its canonical string form, for display and queries.

Why a local helper: `ledger` and `vault` never import each other (DESIGN §1), and the
full CID codec lives in `vault/cid.py`. The indexer only needs the one direction
bytes → string, so it keeps this minimal, read-only converter:

- CIDv0: the binary form is a bare sha2-256 multihash, 34 bytes `0x12 0x20 <32-byte
  digest>`; its string is base58btc without a multibase prefix (`Qm…`).
- CIDv1: `varint(1) varint(codec) varint(hash code) varint(digest length) digest`; its
  canonical string is multibase base32 lower-case, no padding, prefix `b` (`bafy…`).

base32 comes from the standard library; base58btc has no stdlib codec and no well-kept
dependency is installed for it, so its ~10-line encoder is written out below.
Anything that is not a well-formed CID (the contract only checks 1..128 bytes) yields
None: the raw hex is always kept, so nothing is lost.
"""
from __future__ import annotations

import base64

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_MAX_VARINT_BYTES = 9  # multiformats unsigned-varint: at most 9 bytes (63 bits)


def base58btc(data: bytes) -> str:
    """Bitcoin base58 (leading zero bytes become '1')."""
    number = int.from_bytes(data, "big")
    out = []
    while number:
        number, rem = divmod(number, 58)
        out.append(_B58_ALPHABET[rem])
    zeros = len(data) - len(data.lstrip(b"\x00"))
    return "1" * zeros + "".join(reversed(out))


def _varint(data: bytes, pos: int) -> tuple[int, int] | None:
    """Decode a minimal unsigned varint at `pos`; (value, next position) or None."""
    value = shift = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(data):
            return None
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and i > 0:  # non-minimal encoding
                return None
            return value, pos + i + 1
        shift += 7
    return None


def cid_to_string(cid: bytes) -> str | None:
    """The canonical string of binary `cid`, or None if it is not a well-formed CID."""
    if len(cid) == 34 and cid[0] == 0x12 and cid[1] == 0x20:
        return base58btc(cid)
    version = _varint(cid, 0)
    if version is None or version[0] != 1:
        return None
    pos = version[1]
    for _ in range(2):  # codec, multihash code
        parsed = _varint(cid, pos)
        if parsed is None:
            return None
        pos = parsed[1]
    length = _varint(cid, pos)
    if length is None or len(cid) - length[1] != length[0]:
        return None
    return "b" + base64.b32encode(cid).decode("ascii").lower().rstrip("=")
