"""Bech32 (BIP 173) encoding as age uses it for keys.

Written by hand rather than taken from a package because age deviates from BIP 173 in one
way that the common libraries enforce: there is **no 90-character length limit** (age
identities are 74 characters and post-quantum keys are far longer; `bech32` on PyPI and
most wallets refuse anything over 90). Everything else is plain BIP 173 Bech32 (the
original checksum constant 1, not Bech32m):

    string   = hrp "1" data checksum
    hrp      = 1*(%x21-7E)                 human-readable part, e.g. "age", "AGE-SECRET-KEY-"
    data     = *(charset)                  5-bit groups of the payload, big-endian, zero-padded
    checksum = 6(charset)                  BCH code over hrp-expansion || data
    charset  = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"

A string is either all lowercase or all uppercase (mixed case is rejected); the checksum is
computed over the lowercase form. Padding bits must be zero and fewer than five (so that
every payload has exactly one encoding). Without the 90-character limit a string is
still capped, at MAX_LENGTH characters (a post-quantum recipient has about 1,960).
"""
from __future__ import annotations

from ..errors import InvalidKeyError

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_REV = {c: i for i, c in enumerate(_CHARSET)}
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
MAX_LENGTH = 4096


def _polymod(values: list[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            if (top >> i) & 1:
                chk ^= _GENERATOR[i]
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: bytes | list[int], from_bits: int, to_bits: int, pad: bool) -> list[int]:
    acc = 0
    bits = 0
    out: list[int] = []
    maxv = (1 << to_bits) - 1
    keep = (1 << (from_bits + to_bits - 1)) - 1  # the bits not yet emitted (BIP 173's max_acc)
    for value in data:
        acc = ((acc << from_bits) | value) & keep  # unmasked, acc grew to the whole payload: quadratic
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & maxv)
    elif bits >= from_bits or ((acc << (to_bits - bits)) & maxv):
        raise InvalidKeyError("invalid Bech32 padding")
    return out


def encode(hrp: str, data: bytes) -> str:
    """Lowercase Bech32 of `data` under `hrp` (callers upper-case identities themselves)."""
    hrp = hrp.lower()
    values = _convert_bits(data, 8, 5, pad=True)
    polymod = _polymod(_hrp_expand(hrp) + values + [0] * 6) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[v] for v in values + checksum)


def decode(s: str) -> tuple[str, bytes]:
    """(lowercase hrp, payload) of a Bech32 string; InvalidKeyError if it is not one."""
    if not isinstance(s, str):
        raise InvalidKeyError(f"expected a Bech32 string, got {type(s).__name__}")
    if len(s) > MAX_LENGTH:
        raise InvalidKeyError(f"Bech32 string of {len(s)} characters (at most {MAX_LENGTH})")
    if not s.isascii():
        raise InvalidKeyError("Bech32 string has non-ASCII characters")
    if s.lower() != s and s.upper() != s:
        raise InvalidKeyError("Bech32 string mixes upper and lower case")
    s = s.lower()
    pos = s.rfind("1")
    if pos < 1 or pos + 7 > len(s):
        raise InvalidKeyError("Bech32 separator '1' missing or misplaced")
    hrp = s[:pos]
    if any(not 33 <= ord(c) <= 126 for c in hrp):
        raise InvalidKeyError("invalid character in Bech32 human-readable part")
    try:
        values = [_CHARSET_REV[c] for c in s[pos + 1 :]]
    except KeyError:
        raise InvalidKeyError("invalid character in Bech32 data part") from None
    if _polymod(_hrp_expand(hrp) + values) != 1:
        raise InvalidKeyError("invalid Bech32 checksum")
    return hrp, bytes(_convert_bits(values[:-6], 5, 8, pad=False))
