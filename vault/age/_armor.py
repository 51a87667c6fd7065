"""age ASCII armor: a strict, streaming subset of PEM (age-encryption.org/v1, "ASCII armor").

Layout:

    -----BEGIN AGE ENCRYPTED FILE-----
    <standard base64 WITH padding of the binary age file, 64 columns per line>
    <the last line: 1..64 columns; when the file is a multiple of 48 bytes every line is full>
    -----END AGE ENCRYPTED FILE-----

Decoding follows the reference implementation and the CCTV armor_* vectors:
- accepted: up to 1024 bytes of ASCII whitespace before the BEGIN line and after the END
  line, LF or CRLF at the end of every line (mixed too), no line end after the END line;
- refused (ArmorError): anything else before BEGIN or after END, another label or case,
  PEM headers, empty lines, whitespace inside or at the end of a line, a line over 64
  columns, a line shorter than 64 columns that is not the last one (a short line must be
  followed by END), missing or misplaced padding, non-canonical base64 (unused bits set),
  characters outside the base64 alphabet, a PGP-style checksum line, a missing END line.
The decoded bytes are the binary age file: its header and payload are then checked as
usual, so an armored file with a bad header is a HeaderError like any other.

Memory stays bounded both ways: the decoder holds one read block (64 KiB of text) and
hands out decoded blocks; the encoder holds less than one input piece plus 48 bytes.
Most lines are validated in bulk (a block of whole 64-column lines is checked by its line
ends and decoded by one base64 call); anything irregular goes through the line-by-line
path, which enforces every rule above.
"""
from __future__ import annotations

import binascii
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from ..errors import HeaderError
from . import _format
from ._format import INTRO, _readline_fallback, require_bytes
from ._stream import byte_view

BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
END = b"-----END AGE ENCRYPTED FILE-----"
COLUMNS_PER_LINE = 64
BYTES_PER_LINE = 48
MAX_WHITESPACE = 1024
_WHITESPACE = frozenset(b" \t\r\n\v\f")
_READ_SIZE = 64 * 1024
_ENCODE_BLOCK = BYTES_PER_LINE * 1024  # 48 KiB in, 65 KiB of text out


class ArmorError(HeaderError):
    """The ASCII armor does not parse. A HeaderError, so callers that catch header (or
    decryption) failures need no change; the CCTV vectors tell it apart ("armor failure")."""


# -- encoding -------------------------------------------------------------------------


def _lines(data: bytes | bytearray | memoryview) -> bytes:
    """`data` as base64 lines of 64 columns, each followed by LF."""
    text = binascii.b2a_base64(data, newline=False)
    stops = range(COLUMNS_PER_LINE, len(text) + COLUMNS_PER_LINE, COLUMNS_PER_LINE)
    # map/slice keep the per-line work in C: ~1,000 lines per block.
    return b"\n".join(map(text.__getitem__, map(slice, range(0, len(text), COLUMNS_PER_LINE), stops))) + b"\n"


def armor(binary: Iterable[bytes | bytearray | memoryview]) -> Iterator[bytes]:
    """Armor a binary age file given as pieces of any size (e.g. what encrypt() yields).
    Yields the BEGIN line, blocks of base64 lines, then the END line."""
    yield BEGIN + b"\n"
    pending = bytearray()
    for piece in binary:
        pending += byte_view(piece, "armor input pieces")
        if len(pending) >= _ENCODE_BLOCK:
            whole = len(pending) - len(pending) % BYTES_PER_LINE
            yield _lines(memoryview(pending)[:whole])
            del pending[:whole]
    if pending:
        yield _lines(pending)
    yield END + b"\n"


# -- decoding -------------------------------------------------------------------------


def _decode_line(line: bytes) -> bytes:
    if not line:
        raise ArmorError("invalid armor: empty line")
    if len(line) % 4:
        raise ArmorError("invalid armor: base64 line without its padding")
    try:
        data = binascii.a2b_base64(line, strict_mode=True)
    except binascii.Error:
        raise ArmorError("invalid armor: not base64 (whitespace or a character outside the alphabet)") from None
    if binascii.b2a_base64(data, newline=False) != line:
        raise ArmorError("invalid armor: non-canonical base64")
    return data


class _Decoder:
    """The armor state machine; blocks() yields decoded bytes and raises ArmorError."""

    def __init__(self, src: BinaryIO) -> None:
        self._read = src.read
        self._source = src
        self._buf = bytearray()
        self._pos = 0
        self._eof = False
        self._slow_lines = 0  # lines to take one by one before trying the bulk path again

    def _fill(self) -> bool:
        """Append one read of input to the buffer; False at end of input."""
        if self._eof:
            return False
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        data = self._read(_READ_SIZE)
        if not data:
            self._eof = True
            return False
        require_bytes(data, self._source)
        self._buf += data
        return True

    def _line(self, limit: int) -> bytes | None:
        """The next line without its LF (or CRLF); None at end of input. A line longer than
        `limit` columns is an ArmorError."""
        while True:
            end = self._buf.find(b"\n", self._pos, self._pos + limit + 2)
            if end >= 0:
                line = bytes(self._buf[self._pos : end])
                self._pos = end + 1
                return line[:-1] if line.endswith(b"\r") else line
            if len(self._buf) - self._pos > limit + 1:
                raise ArmorError(f"invalid armor: line longer than {limit} columns")
            if not self._fill():
                if self._pos == len(self._buf):
                    return None
                line = bytes(self._buf[self._pos :])
                self._pos = len(self._buf)
                line = line[:-1] if line.endswith(b"\r") else line
                if len(line) > limit:
                    raise ArmorError(f"invalid armor: line longer than {limit} columns")
                return line

    def _bulk(self) -> bytes | None:
        """Decode a run of whole 64-column lines at once, or None when the buffered text
        is not such a run (then the caller goes line by line)."""
        if len(self._buf) - self._pos < _READ_SIZE and not self._eof:
            self._fill()
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 2 * (COLUMNS_PER_LINE + 2):
            return None
        crlf = buf[pos + COLUMNS_PER_LINE] == 0x0D
        stride = COLUMNS_PER_LINE + 1 + crlf
        n = (len(buf) - pos) // stride
        region = bytes(buf[pos : pos + n * stride])
        # n lines of exactly 64 columns: every line end where it belongs and nowhere else.
        # No padding inside (a padded line must be the last one: the line path checks it).
        regular = region.count(b"\n") == n and b"=" not in region
        if regular and crlf:
            regular = (
                region[COLUMNS_PER_LINE::stride] == b"\r" * n
                and region[COLUMNS_PER_LINE + 1 :: stride] == b"\n" * n
            )
        elif regular:
            regular = region[COLUMNS_PER_LINE::stride] == b"\n" * n
        if not regular:
            self._slow_lines = n
            return None
        try:
            data = binascii.a2b_base64(region.replace(b"\r\n" if crlf else b"\n", b""), strict_mode=True)
        except binascii.Error:
            # Bad somewhere in here: the line path finds the line and says what is wrong.
            self._slow_lines = n
            return None
        self._pos = pos + n * stride
        return data

    def blocks(self) -> Iterator[bytes]:
        skipped = 0
        while True:
            if self._pos == len(self._buf) and not self._fill():
                raise ArmorError("invalid armor: no BEGIN line")
            if self._buf[self._pos] not in _WHITESPACE:
                break
            self._pos += 1
            skipped += 1
            if skipped > MAX_WHITESPACE:
                raise ArmorError(f"invalid armor: more than {MAX_WHITESPACE} bytes of whitespace before it")
        try:
            first = self._line(len(BEGIN))
        except ArmorError:
            first = None
        if first != BEGIN:
            raise ArmorError(f"invalid armor: the first line is not {BEGIN.decode()}")
        while True:
            if self._slow_lines:
                self._slow_lines -= 1
            else:
                data = self._bulk()
                if data is not None:
                    yield data
                    continue
            line = self._line(COLUMNS_PER_LINE)
            if line is None:
                raise ArmorError("invalid armor: no END line")
            if line == END:
                break
            data = _decode_line(line)
            yield data
            if len(data) < BYTES_PER_LINE:
                if self._line(COLUMNS_PER_LINE) != END:
                    raise ArmorError("invalid armor: a short line must be the last, followed by the END line")
                break
        self._drain()

    def _drain(self) -> None:
        seen = 0
        while True:
            rest = self._buf[self._pos :]
            seen += len(rest)
            self._pos = len(self._buf)
            if rest.strip():
                raise ArmorError("invalid armor: data after the END line")
            if seen >= MAX_WHITESPACE:  # as age: it reads at most 1023 bytes of trailing whitespace
                raise ArmorError(f"invalid armor: {MAX_WHITESPACE} or more bytes of whitespace after it")
            if not self._fill():
                return


class ArmoredReader:
    """A read-only binary stream of the age file inside the armored text of `src`.

    read()/readinto()/readline() return decoded bytes; they raise ArmorError once the
    armor turns out bad (and again on every later call). End of stream is reported only
    after the END line and what follows it were checked."""

    __slots__ = ("_blocks", "_cur", "_pos", "_error")

    def __init__(self, src: BinaryIO) -> None:
        self._blocks = _Decoder(src).blocks()
        self._cur: bytes = b""
        self._pos = 0
        self._error: ArmorError | None = None

    def _next(self) -> bool:
        if self._error is not None:
            raise self._error
        try:
            for block in self._blocks:
                if block:
                    self._cur, self._pos = block, 0
                    return True
        except ArmorError as exc:
            self._error = exc
            raise
        return False

    def readinto(self, b) -> int:
        view = memoryview(b).cast("B")
        n = 0
        while n < len(view):
            if self._pos == len(self._cur) and not self._next():
                break
            take = min(len(view) - n, len(self._cur) - self._pos)
            view[n : n + take] = self._cur[self._pos : self._pos + take]
            self._pos += take
            n += take
        return n

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            out = bytearray(self._cur[self._pos :])
            self._pos = len(self._cur)
            while self._next():
                out += self._cur
                self._pos = len(self._cur)
            return bytes(out)
        out = bytearray(size)
        return bytes(out[: self.readinto(out)])

    def readline(self, limit: int = -1) -> bytes:
        out = bytearray()
        while limit < 0 or len(out) < limit:
            if self._pos == len(self._cur) and not self._next():
                break
            stop = len(self._cur) if limit < 0 else min(len(self._cur), self._pos + limit - len(out))
            nl = self._cur.find(b"\n", self._pos, stop)
            end = stop if nl < 0 else nl + 1
            out += self._cur[self._pos : end]
            self._pos = end
            if nl >= 0:
                break
        return bytes(out)


def dearmor(src: BinaryIO) -> ArmoredReader:
    """The binary age file inside armored `src`, as a stream (see ArmoredReader)."""
    return ArmoredReader(src)


class _Prepended:
    """`src` with its first byte `head` (already read from it) put back in front: for
    inputs that can neither peek nor seek."""

    __slots__ = ("_head", "_src")

    def __init__(self, head: bytes, src: BinaryIO) -> None:
        self._head = head
        self._src = src

    def read(self, size: int = -1) -> bytes:
        head, self._head = self._head, b""
        if size is not None and 0 <= size <= len(head):
            self._head = head[size:]
            return head[:size]
        rest = self._src.read(-1 if size is None or size < 0 else size - len(head))
        return head + bytes(rest or b"")

    def readline(self, limit: int = -1) -> bytes:
        inner = getattr(self._src, "readline", None) or _readline_fallback(self._src)
        head, self._head = self._head, b""
        if not head:
            return inner(limit if limit >= 0 else _format.MAX_HEADER_SIZE)
        if limit == 0:
            self._head = head
            return b""
        if head == b"\n" or limit == 1:
            return head
        return head + inner(limit - 1 if limit > 0 else _format.MAX_HEADER_SIZE)


def sniff(src: BinaryIO) -> tuple[bool, BinaryIO]:
    """Whether `src` holds an armored file rather than a binary one, without consuming
    anything (the returned stream starts where `src` did). A binary age file starts with
    "a" (its intro line); anything else is treated as armor, so a file that is neither
    fails as an ArmorError saying the BEGIN line is missing (still a HeaderError)."""
    peek = getattr(src, "peek", None)
    if peek is not None:
        head = _first(peek(1), src)
    elif getattr(src, "seekable", lambda: False)():
        at = src.tell()
        head = _first(src.read(1), src)
        src.seek(at)
    else:
        head = _first(src.read(1), src)
        if head:
            src = _Prepended(head, src)
    return bool(head) and head != INTRO[:1], src


def _first(data: object, src: BinaryIO) -> bytes:
    if data is None:  # a non-blocking source with nothing yet: read_header says so
        return b""
    require_bytes(data, src)
    return bytes(data[:1])  # type: ignore[index] bool(head) and head != INTRO[:1], src

