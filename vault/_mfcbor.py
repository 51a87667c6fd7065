"""The DAG-CBOR subset a CARv1 header needs, hand-written (no CBOR library is installed,
and the header is five kinds of item: map, text, array, unsigned int, CID).

Encoding (RFC 8949 with the DAG-CBOR rules): definite lengths, shortest integer forms,
map keys sorted by encoded length then bytewise, a CID is tag 42 over a byte string of
0x00 (identity multibase) + binary CID. Supported Python values: int, str, bytes, list,
dict with str keys, CID, bool, None.

Decoding accepts the same items (plus negative ints), refuses indefinite lengths, floats,
tags other than 42, non-minimal integers, duplicate map keys, nesting deeper than 16 and
trailing bytes. Errors are FormatError; callers translate them.
"""
from __future__ import annotations

import struct
from typing import Any

from vault._mfbase import FormatError
from vault.cid import CID
from vault.errors import InvalidCIDError

MAX_DEPTH = 16
_ARG_SIZES = {24: (1, 24), 25: (2, 1 << 8), 26: (4, 1 << 16), 27: (8, 1 << 32)}  # bytes, minimum


def _head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes([major << 5 | value])
    if value < 1 << 8:
        return bytes([major << 5 | 24, value])
    if value < 1 << 16:
        return bytes([major << 5 | 25]) + struct.pack(">H", value)
    if value < 1 << 32:
        return bytes([major << 5 | 26]) + struct.pack(">I", value)
    if value < 1 << 64:
        return bytes([major << 5 | 27]) + struct.pack(">Q", value)
    raise FormatError("integer too large for CBOR")


def encode(value: Any) -> bytes:
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Any, out: list[bytes]) -> None:
    if value is False or value is True or value is None:
        out.append({False: b"\xf4", True: b"\xf5", None: b"\xf6"}[value])
    elif isinstance(value, int):
        out.append(_head(0, value) if value >= 0 else _head(1, -1 - value))
    elif isinstance(value, bytes):
        out += (_head(2, len(value)), value)
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        out += (_head(3, len(raw)), raw)
    elif isinstance(value, (list, tuple)):
        out.append(_head(4, len(value)))
        for item in value:
            _encode(item, out)
    elif isinstance(value, dict):
        keys = []
        for key in value:
            if not isinstance(key, str):
                raise FormatError("DAG-CBOR map keys must be strings")
            keys.append((len(key.encode("utf-8")), key.encode("utf-8"), key))
        out.append(_head(5, len(value)))
        for _, _, key in sorted(keys):
            _encode(key, out)
            _encode(value[key], out)
    elif isinstance(value, CID):
        raw = b"\0" + value.to_bytes()
        out += (b"\xd8\x2a", _head(2, len(raw)), raw)
    else:
        raise FormatError(f"cannot encode {type(value).__name__} as DAG-CBOR")


def decode(buf: bytes) -> Any:
    value, pos = _decode(memoryview(buf), 0, 0)
    if pos != len(buf):
        raise FormatError("trailing bytes after DAG-CBOR item")
    return value


def _arg(buf: memoryview, pos: int, info: int) -> tuple[int, int]:
    if info < 24:
        return info, pos
    if info not in _ARG_SIZES:
        raise FormatError("indefinite length or reserved CBOR argument")
    n, minimum = _ARG_SIZES[info]
    if pos + n > len(buf):
        raise FormatError("truncated CBOR item")
    value = int.from_bytes(buf[pos : pos + n], "big")
    if value < minimum:
        raise FormatError("non-minimal CBOR integer")
    return value, pos + n


def _decode(buf: memoryview, pos: int, depth: int) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise FormatError("DAG-CBOR nesting too deep")
    if pos >= len(buf):
        raise FormatError("truncated CBOR item")
    major, info = buf[pos] >> 5, buf[pos] & 31
    pos += 1
    if major == 7:
        simple = {20: False, 21: True, 22: None}
        if info not in simple:
            raise FormatError("unsupported CBOR simple value or float")
        return simple[info], pos
    arg, pos = _arg(buf, pos, info)
    if major == 0:
        return arg, pos
    if major == 1:
        return -1 - arg, pos
    if major in (2, 3):
        if pos + arg > len(buf):
            raise FormatError("truncated CBOR string")
        raw = bytes(buf[pos : pos + arg])
        pos += arg
        if major == 2:
            return raw, pos
        try:
            return raw.decode("utf-8"), pos
        except UnicodeDecodeError:
            raise FormatError("CBOR text is not UTF-8") from None
    if major == 4:
        if arg > len(buf) - pos:
            raise FormatError("CBOR array longer than its input")
        items = []
        for _ in range(arg):
            item, pos = _decode(buf, pos, depth + 1)
            items.append(item)
        return items, pos
    if major == 5:
        if arg > len(buf) - pos:
            raise FormatError("CBOR map longer than its input")
        result: dict[str, Any] = {}
        for _ in range(arg):
            key, pos = _decode(buf, pos, depth + 1)
            if not isinstance(key, str):
                raise FormatError("DAG-CBOR map keys must be strings")
            if key in result:
                raise FormatError(f"duplicate map key {key!r}")
            result[key], pos = _decode(buf, pos, depth + 1)
        return result, pos
    # major 6: tags
    if arg != 42:
        raise FormatError(f"unsupported CBOR tag {arg}")
    raw, pos = _decode(buf, pos, depth + 1)
    if not isinstance(raw, bytes) or not raw.startswith(b"\0"):
        raise FormatError("tag 42 must wrap bytes starting with 0x00")
    try:
        return CID.decode(raw[1:]), pos
    except InvalidCIDError as exc:
        raise FormatError(f"bad CID in tag 42: {exc}") from None
