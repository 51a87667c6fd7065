"""The age v1 header: grammar, strict parsing, canonical encoding, header MAC.

Written by hand because no maintained Python package parses age headers (pyrage wraps
the Rust crate and exposes no header access, which re-headering needs), and because the
CCTV vectors demand the exact strictness of the reference implementation.

Byte layout (age-encryption.org/v1; every line ends with a single LF, never CRLF):

    header   = intro *stanza mac-line
    intro    = "age-encryption.org/v1" LF
    stanza   = "->" 1*(SP arg) LF body           arg = 1*VCHAR (0x21-0x7E); the first
                                                 arg is the stanza type ("X25519", ...)
    body     = *full-line short-line             the body bytes in base64 (standard
    full-line  = 64(b64char) LF                  alphabet, NO padding, canonical: unused
    short-line = 0*63(b64char) LF                trailing bits are zero), wrapped at 64
                                                 columns; the last line is always shorter
                                                 than 64 columns, so a body whose length
                                                 is a multiple of 48 ends with an empty line
    mac-line = "---" SP 43(b64char) LF           HMAC-SHA256(HKDF-SHA256(file key, salt="",
                                                 info="header"), header up to and
                                                 including "---", i.e. without SP mac LF)

The payload (16-byte nonce + STREAM chunks, see _stream.py) follows the mac line directly.
Any deviation (CRLF, padding, non-canonical base64, long or extra short lines, empty
arguments, a bad intro) is a HeaderError. Because parsing is this strict, the bytes read
are exactly the canonical encoding of what was parsed (`encode(parse(h)) == h`), so the MAC
is computed over the bytes as read.
"""
from __future__ import annotations

import binascii
import hmac
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import HeaderError, HeaderMACError, InputValidationError
from ._kdf import hkdf_sha256, hmac_sha256

INTRO = b"age-encryption.org/v1\n"
STANZA_PREFIX = b"->"
MAC_PREFIX = b"---"
COLUMNS_PER_LINE = 64
BYTES_PER_LINE = COLUMNS_PER_LINE // 4 * 3  # 48
MAC_SIZE = 32
# A bound on the bytes read while looking for the mac line (memory stays bounded on
# garbage input). 1 MiB holds thousands of X25519 stanzas.
MAX_HEADER_SIZE = 1 << 20


def b64encode(data: bytes) -> bytes:
    """Standard base64 without padding."""
    return binascii.b2a_base64(data, newline=False).rstrip(b"=")


def b64decode(text: bytes) -> bytes:
    """Strict inverse of b64encode: no padding, no whitespace, canonical trailing bits."""
    if len(text) % 4 == 1 or b"=" in text:
        raise HeaderError("malformed base64")
    try:
        data = binascii.a2b_base64(text + b"=" * (-len(text) % 4), strict_mode=True)
    except binascii.Error:
        raise HeaderError("malformed base64") from None
    if b64encode(data) != text:
        raise HeaderError("non-canonical base64")
    return data


def _valid_arg(arg: bytes) -> bool:
    return bool(arg) and all(33 <= c <= 126 for c in arg)


@dataclass(frozen=True)
class Stanza:
    """One recipient stanza: its type, further arguments (str, VCHAR only) and body."""

    type: str
    args: tuple[str, ...]
    body: bytes

    def encode(self) -> bytes:
        words = [self.type.encode("ascii"), *(a.encode("ascii") for a in self.args)]
        if not all(_valid_arg(w) for w in words):
            raise HeaderError("stanza arguments must be non-empty printable ASCII without spaces")
        text = b64encode(self.body)
        lines = [text[i : i + COLUMNS_PER_LINE] for i in range(0, len(text), COLUMNS_PER_LINE)]
        if not lines or len(lines[-1]) == COLUMNS_PER_LINE:
            lines.append(b"")  # the final line must be short
        return STANZA_PREFIX + b"".join(b" " + w for w in words) + b"\n" + b"".join(
            line + b"\n" for line in lines
        )


@dataclass(frozen=True)
class Header:
    stanzas: tuple[Stanza, ...]
    mac: bytes
    mac_input: bytes  # the header bytes up to and including "---" (what the MAC covers)

    def encode(self) -> bytes:
        return self.mac_input + b" " + b64encode(self.mac) + b"\n"


def encode_without_mac(stanzas: tuple[Stanza, ...] | list[Stanza]) -> bytes:
    return INTRO + b"".join(s.encode() for s in stanzas) + MAC_PREFIX


def header_mac(file_key: bytes, mac_input: bytes) -> bytes:
    return hmac_sha256(hkdf_sha256(file_key, b"", b"header"), mac_input)


def seal_header(file_key: bytes, stanzas: list[Stanza]) -> bytes:
    """The complete canonical header for `stanzas`, MAC'd under `file_key`."""
    mac_input = encode_without_mac(stanzas)
    return Header(tuple(stanzas), header_mac(file_key, mac_input), mac_input).encode()


def verify_mac(file_key: bytes, header: Header) -> None:
    if not hmac.compare_digest(header_mac(file_key, header.mac_input), header.mac):
        raise HeaderMACError("bad header MAC")


class _Lines:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def next(self) -> tuple[int, bytes]:
        end = self.data.find(b"\n", self.pos)
        if end < 0:
            raise HeaderError("header ends without a mac line")
        start, self.pos = self.pos, end + 1
        return start, self.data[start:end]


def parse(data: bytes) -> Header:
    """Parse exactly one header (nothing may follow the mac line). HeaderError if malformed."""
    data = bytes(data)
    if not data.startswith(INTRO):
        raise HeaderError("not an age v1 file (bad intro line)")
    lines = _Lines(data)
    lines.pos = len(INTRO)
    stanzas: list[Stanza] = []
    while True:
        start, line = lines.next()
        if line.startswith(MAC_PREFIX):
            parts = line.split(b" ")
            if parts[0] != MAC_PREFIX or len(parts) != 2:
                raise HeaderError("malformed mac line")
            mac = b64decode(parts[1])
            if len(mac) != MAC_SIZE:
                raise HeaderError("malformed mac line")
            if lines.pos != len(data):
                raise HeaderError("unexpected bytes after the header")
            return Header(tuple(stanzas), mac, lines.data[: start + len(MAC_PREFIX)])
        if not line.startswith(STANZA_PREFIX):
            raise HeaderError("unexpected line in header")
        parts = line.split(b" ")
        if parts[0] != STANZA_PREFIX or len(parts) < 2 or not all(map(_valid_arg, parts[1:])):
            raise HeaderError("malformed stanza line")
        body = bytearray()
        while True:
            _, body_line = lines.next()
            if len(body_line) > COLUMNS_PER_LINE:
                raise HeaderError("stanza body line longer than 64 columns")
            body += b64decode(body_line)
            if len(body_line) < COLUMNS_PER_LINE:
                break
        args = [p.decode("ascii") for p in parts[1:]]
        stanzas.append(Stanza(args[0], tuple(args[1:]), bytes(body)))


def require_bytes(data: object, source: object) -> None:
    """A text-mode source (str from read()) is the caller's mistake, said as such."""
    if data is None:
        raise InputValidationError(f"{type(source).__name__}.read() returned None: a non-blocking stream "
                                   "with no data yet (decrypt reads blocking streams)")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputValidationError(f"{type(source).__name__}.read() returned {type(data).__name__}, not bytes "
                                   "(open the file in binary mode, 'rb')")


def _readline_fallback(src: BinaryIO):
    """readline(limit) for sources that only have read(): one byte at a time, so nothing
    past the newline is consumed (headers are a few hundred bytes)."""

    def readline(limit: int) -> bytes:
        out = bytearray()
        while len(out) < limit:
            b = src.read(1)
            if not b:
                break
            out += b
            if b == b"\n":
                break
        return bytes(out)

    return readline


def read_header(src: BinaryIO) -> bytes:
    """Read the exact header bytes (through the mac line) from `src`, leaving it at the
    payload. Only line framing is checked here; parse() checks the grammar. `src` needs
    read(); its readline() is used when it has one."""
    readline = getattr(src, "readline", None) or _readline_fallback(src)
    first = readline(len(INTRO))
    require_bytes(first, src)
    first = bytes(first)  # a source may answer memoryview or bytearray
    if first != INTRO:
        raise HeaderError("not an age v1 file (bad intro line)")
    out = bytearray(first)
    while True:
        budget = MAX_HEADER_SIZE - len(out)
        if budget <= 0:
            raise HeaderError(f"header larger than {MAX_HEADER_SIZE} bytes")
        line = bytes(readline(budget))
        out += line
        if not line.endswith(b"\n"):
            if len(out) >= MAX_HEADER_SIZE:
                raise HeaderError(f"header larger than {MAX_HEADER_SIZE} bytes")
            raise HeaderError("header ends without a mac line")
        if line.startswith(MAC_PREFIX):
            return bytes(out)
