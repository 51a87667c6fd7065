"""Multiformats primitives: unsigned varint, base32 (RFC 4648 lower, no padding), base58btc.

Hand-written on purpose: the PyPI `multiformats` package is slow and pulls in a large
registry we do not need; TwinLedger only ever uses sha2-256 CIDs in base32/base58btc, and
the few dozen lines below are easy to audit and property-test.

Unsigned varint (multiformats/unsigned-varint): little-endian base-128, the high bit of each
byte says "more follows"; at most 9 bytes (63 bits); the minimal encoding only.
"""
from __future__ import annotations

import base64

MAX_VARINT_BYTES = 9
_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}


class FormatError(ValueError):
    """A malformed encoding; callers translate it into their own named error."""


def encode_varint(value: int) -> bytes:
    if value < 0 or value >= 1 << 63:
        raise FormatError(f"varint out of range: {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(buf: bytes | memoryview, offset: int = 0) -> tuple[int, int]:
    """Decode one varint at `offset`; return (value, offset just after it)."""
    value = 0
    shift = 0
    end = len(buf)
    for i in range(MAX_VARINT_BYTES):
        pos = offset + i
        if pos >= end:
            raise FormatError("truncated varint")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and i > 0:
                raise FormatError("non-minimal varint")
            return value, pos + 1
        shift += 7
    raise FormatError("varint longer than 9 bytes")


def b32_encode(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def b32_decode(text: str) -> bytes:
    """Strict: lower-case alphabet only, no padding, canonical trailing bits."""
    if not text.isascii() or text != text.lower() or "=" in text:
        raise FormatError("base32 must be lower-case RFC 4648 without padding")
    if len(text) % 8 in (1, 3, 6):
        raise FormatError("impossible base32 length")
    try:
        data = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    except ValueError as exc:  # binascii.Error is a ValueError
        raise FormatError(f"invalid base32: {exc}") from None
    if b32_encode(data) != text:
        raise FormatError("non-canonical base32 (trailing bits set)")
    return data


def b58_encode(data: bytes) -> str:
    zeros = len(data) - len(data.lstrip(b"\0"))
    num = int.from_bytes(data, "big")
    chars = []
    while num:
        num, rem = divmod(num, 58)
        chars.append(_B58_ALPHABET[rem])
    return "1" * zeros + "".join(reversed(chars))


def b58_decode(text: str) -> bytes:
    num = 0
    for c in text:
        digit = _B58_INDEX.get(c)
        if digit is None:
            raise FormatError(f"invalid base58btc character {c!r}")
        num = num * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    body = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    return b"\0" * zeros + body
