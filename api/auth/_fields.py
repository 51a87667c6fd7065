"""Parsers for the scalar fields of signed messages and auth headers.

Hand-written (small) because the inputs come from JSON bodies and HTTP headers, where
every way a value can be wrong must become a named InvalidFieldError (a 4xx), never a
TypeError/ValueError from deep inside eth-abi (a 500). Each parser accepts the Python
value (when called from our own code) and the JSON/header form of it:

    uintN      int, or a decimal string ("123"; JSON clients cannot carry 2**256 as a number)
    address    "0x" + 40 hex digits; mixed case must be a valid EIP-55 checksum
    bytes32    32 bytes, or "0x" + 64 hex digits
    signature  65 bytes (r ‖ s ‖ v), or "0x" + 130 hex digits
"""
from __future__ import annotations

import functools
import re

from eth_utils import is_checksum_address, to_checksum_address

from api.errors import InvalidFieldError

_HEX40 = re.compile(r"0x[0-9a-fA-F]{40}")
_DECIMAL = re.compile(r"(0|[1-9][0-9]{0,77})")  # up to 78 digits covers 2**256 - 1


def parse_uint(value: object, bits: int, field: str) -> int:
    if isinstance(value, bool):
        raise InvalidFieldError(field, "must be an unsigned integer, got a boolean")
    if isinstance(value, str):
        if not _DECIMAL.fullmatch(value):
            raise InvalidFieldError(field, f"must be a decimal unsigned integer, got {value[:80]!r}")
        value = int(value)
    if not isinstance(value, int):
        raise InvalidFieldError(field, f"must be an unsigned integer, got {type(value).__name__}")
    if not 0 <= value < (1 << bits):
        raise InvalidFieldError(field, f"must be in 0..2**{bits}-1, got {value}")
    return value


def parse_address(value: object, field: str) -> str:
    """A checksummed address. All-lower or all-upper hex is accepted as is; mixed case
    must carry a correct EIP-55 checksum (a typo there is caught, not silently fixed)."""
    if isinstance(value, str):
        return _parse_address_text(value, field)
    return _parse_address(value, field)


def _parse_address(value: object, field: str) -> str:
    if not isinstance(value, str) or not _HEX40.fullmatch(value):
        raise InvalidFieldError(field, f"must be an address (0x + 40 hex digits), got {_show(value)}")
    body = value[2:]
    if body != body.lower() and body != body.upper() and not is_checksum_address(value):
        raise InvalidFieldError(field, f"has an invalid EIP-55 checksum: {value}")
    return to_checksum_address(value)


# EIP-55 costs two keccaks a call and a node sees the same few org addresses over and
# over (only valid inputs are cached: lru_cache does not keep raised errors).
_parse_address_text = functools.lru_cache(maxsize=4096)(_parse_address)


def parse_fixed_bytes(value: object, size: int, field: str) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
    elif isinstance(value, str):
        if not value.startswith(("0x", "0X")) or len(value) != 2 + 2 * size:
            raise InvalidFieldError(field, f"must be 0x + {2 * size} hex digits, got {_show(value)}")
        try:
            raw = bytes.fromhex(value[2:])
        except ValueError:
            raise InvalidFieldError(field, f"is not hexadecimal: {_show(value)}") from None
    else:
        raise InvalidFieldError(field, f"must be {size} bytes or a hex string, got {type(value).__name__}")
    if len(raw) != size:
        raise InvalidFieldError(field, f"must be exactly {size} bytes, got {len(raw)}")
    return raw


def parse_bytes32(value: object, field: str) -> bytes:
    return parse_fixed_bytes(value, 32, field)


def parse_signature(value: object, field: str = "signature") -> bytes:
    return parse_fixed_bytes(value, 65, field)


def parse_string(value: object, field: str, *, max_bytes: int, min_bytes: int = 0) -> str:
    if not isinstance(value, str):
        raise InvalidFieldError(field, f"must be a string, got {type(value).__name__}")
    size = len(value.encode("utf-8", "surrogatepass"))
    if not min_bytes <= size <= max_bytes:
        raise InvalidFieldError(field, f"must be {min_bytes}..{max_bytes} bytes of UTF-8, got {size}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidFieldError(field, "is not valid Unicode (lone surrogate)") from None
    return value


def hex0x(raw: bytes) -> str:
    return "0x" + raw.hex()


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 90 else text[:87] + "..."
