"""The age payload: STREAM (Hoang, Reyhanitabar, Rogaway, Vizár) over ChaCha20-Poly1305.

Byte layout of the payload (it follows the header's mac line directly):

    nonce  16 random bytes
    key    = HKDF-SHA256(ikm=file key, salt=nonce, info="payload")      (32 bytes)
    chunks  c_0 ‖ c_1 ‖ … ‖ c_n,  c_i = ChaCha20-Poly1305(key, nonce_i, p_i)
            nonce_i = i as 11-byte big-endian ‖ last flag (0x01 on c_n, else 0x00)
            |p_i| = 64 KiB for i < n, 1 ≤ |p_n| ≤ 64 KiB  (|p_n| = 0 only if n = 0, i.e.
            the whole plaintext is empty); every c_i carries a 16-byte tag.

Decryption mirrors the reference implementation: a full-size chunk is tried as a
non-final chunk and then as the final one; a short chunk must be final; an empty final
chunk after other chunks, a missing final chunk, or any data after the final chunk is a
PayloadError. Plaintext is released chunk by chunk, only after its tag verified.

Throughput: one OpenSSL AEAD call per 64 KiB chunk; ciphertext is read in batches of
_BATCH chunks into one reused buffer and chunks are sliced out with memoryviews.
ChunkSealer / ChunkOpener do the same one chunk at a time straight into buffers the caller
owns (encrypt_into / decrypt_into: no allocation per chunk); the vault facade uses them to
place ciphertext directly in UnixFS leaf buffers and plaintext directly in write buffers.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .. import _accel
from ..errors import InputValidationError, PayloadError
from ._kdf import hkdf_sha256

NONCE_SIZE = 16
CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
ENC_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
_BATCH = 16  # chunks read per syscall when decrypting (~1 MiB)
_MAX_COUNTER = 1 << 88


def payload_key(file_key: bytes, nonce: bytes) -> bytes:
    return hkdf_sha256(file_key, nonce, b"payload")


def payload_aead(file_key: bytes, nonce: bytes) -> ChaCha20Poly1305:
    return ChaCha20Poly1305(payload_key(file_key, nonce))


def _chunk_nonce(counter: int, last: bool) -> bytes:
    return ((counter << 8) | last).to_bytes(12, "big")


def byte_view(piece: object, what: str = "plaintext pieces") -> memoryview:
    """`piece` (bytes, bytearray or a memoryview of any shape) as a flat view of its bytes;
    a strided view (a slice with a step) is copied, since cast() refuses it. Anything else
    is an InputValidationError."""
    if not isinstance(piece, (bytes, bytearray, memoryview)):
        raise InputValidationError(f"{what} must be bytes, got {type(piece).__name__}")
    view = memoryview(piece)
    if not view.c_contiguous:
        view = memoryview(view.tobytes())
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    return view


def seal(file_key: bytes, plaintext: Iterable[bytes], nonce: bytes | None = None) -> Iterator[bytes]:
    """Yield the payload: the nonce, then one ciphertext chunk at a time. Input pieces may
    have any size; at most one chunk (plus the current input piece) is held."""
    nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
    aead = payload_aead(file_key, nonce)
    encrypt = aead.encrypt
    yield nonce
    pending = bytearray()  # < 1 chunk, or exactly 1 chunk not yet known to be non-final
    counter = 0
    for piece in plaintext:
        view = byte_view(piece)
        if pending:
            take = CHUNK_SIZE - len(pending)
            pending += view[:take]
            view = view[take:]
            if not view:
                continue
            # `pending` is a full chunk and more data follows: it is not the last one.
            yield encrypt(_chunk_nonce(counter, False), pending, None)
            counter += 1
            pending.clear()
        # Full chunks straight from the input piece (no copy), keeping 1..CHUNK_SIZE bytes
        # back: the final chunk is only known once the input ends.
        count = (len(view) - 1) // CHUNK_SIZE
        for i in range(count):
            yield encrypt(_chunk_nonce(counter, False), view[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE], None)
            counter += 1
        pending += view[count * CHUNK_SIZE :]
    yield encrypt(_chunk_nonce(counter, True), bytes(pending), None)


class ChunkSealer:
    """STREAM encryption one chunk at a time into caller-owned buffers.

    seal_into(plain, out, last): `plain` is CHUNK_SIZE bytes, or 1..CHUNK_SIZE bytes when
    `last` (0 bytes only when it is the first and only chunk); `out` is exactly
    len(plain) + TAG_SIZE bytes. After the last chunk nothing more may be sealed."""

    __slots__ = ("nonce", "_key", "_into", "_counter", "_done", "_native")

    def __init__(self, file_key: bytes, nonce: bytes | None = None, *, native: bool = True) -> None:
        self.nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
        self._key = payload_key(file_key, self.nonce)
        self._into = ChaCha20Poly1305(self._key).encrypt_into
        self._native = native and _accel.available
        self._counter = 0
        self._done = False

    def seal_into(self, plain: bytes | bytearray | memoryview, out: bytearray | memoryview, last: bool) -> None:
        n = len(plain)
        if self._done:
            raise InputValidationError("the final STREAM chunk was already sealed")
        if n > CHUNK_SIZE or (not last and n != CHUNK_SIZE) or (n == 0 and self._counter):
            raise InputValidationError(f"a STREAM chunk of {n} bytes is not valid here")
        self._into(_chunk_nonce(self._counter, last), plain, None, out)
        self._counter += 1
        self._done = last


    def seal_at(self, index: int, plain: bytes | bytearray | memoryview, out: bytearray | memoryview,
                last: bool) -> None:
        """seal_into() for chunk number `index`, in any order and from any thread (the
        vault's parallel sealer): the caller sees to it that every index up to the last is
        sealed once and that only the last one says `last`. Sizes are checked as by
        seal_into(); this sealer's own counter is not used."""
        n = len(plain)
        if not 0 <= index < _MAX_COUNTER:
            raise InputValidationError(f"STREAM chunk index {index} is out of range")
        if n > CHUNK_SIZE or (not last and n != CHUNK_SIZE) or (n == 0 and index):
            raise InputValidationError(f"a STREAM chunk of {n} bytes is not valid here")
        self._into(_chunk_nonce(index, last), plain, None, out)

    def seal_run(self, first: int, plain: bytes | bytearray | memoryview, out: bytearray | memoryview,
                 last: bool) -> None:
        """seal_at() for the consecutive chunks `first`, `first` + 1, ... that `plain` holds
        (every one CHUNK_SIZE bytes but the last, which is shorter only when `last`), into
        `out`, exactly len(plain) + TAG_SIZE per chunk. One native call for the whole run
        where vault/_accel is built, else one encrypt_into per chunk: the same bytes."""
        n = len(plain)
        count = max(1, -(-n // CHUNK_SIZE))
        if not 0 <= first or first + count > _MAX_COUNTER:
            raise InputValidationError(f"STREAM chunks {first}..{first + count - 1} are out of range")
        if (not last and n % CHUNK_SIZE) or (n == 0 and (first or not last)):
            raise InputValidationError(f"a STREAM run of {n} bytes is not valid here")
        if len(out) != n + TAG_SIZE * count:
            raise InputValidationError(f"a STREAM run of {n} bytes needs {n + TAG_SIZE * count} output bytes")
        if self._native and first + count <= 1 << 64:
            _accel.stream_seal(self._key, first, plain, last, out)
            return
        src, dst = memoryview(plain), memoryview(out)
        for k in range(count):
            piece = src[k * CHUNK_SIZE : (k + 1) * CHUNK_SIZE]
            at = k * ENC_CHUNK_SIZE
            self._into(_chunk_nonce(first + k, last and k == count - 1), piece, None,
                       dst[at : at + len(piece) + TAG_SIZE])


class ChunkOpener:
    """STREAM decryption one chunk at a time into caller-owned buffers, with the same
    rules as open_().

    open_into(chunk, out, at_end) decrypts the next chunk into out[:len(chunk) - TAG_SIZE]
    and returns that length. `chunk` is ENC_CHUNK_SIZE bytes, shorter only when `at_end`
    (no ciphertext follows it). Raises PayloadError for a chunk that does not
    authenticate, an empty final chunk after others, a final chunk followed by more data,
    or a stream that ends without a final chunk. On error `out` may hold unauthenticated
    bytes: discard it."""

    __slots__ = ("_into", "_key", "_counter", "finished")

    def __init__(self, aead: ChaCha20Poly1305, key: bytes | None = None) -> None:
        """`key`: the payload key of `aead` (payload_key()), for open_run's native path."""
        self._into = aead.decrypt_into
        self._key = key if key is not None and _accel.available else None
        self._counter = 0
        self.finished = False

    def open_run(self, run: bytes | bytearray | memoryview, out: bytearray | memoryview) -> int:
        """open_into(chunk, ..., at_end=False) for each of the whole chunks that make up
        `run` (a multiple of ENC_CHUNK_SIZE bytes, more ciphertext following it), into
        out[:CHUNK_SIZE * count]; returns that length. With a key and vault/_accel built,
        one native call opens the run; at the first chunk that does not authenticate
        open_into takes over, so the errors are open_into's."""
        count, rest = divmod(len(run), ENC_CHUNK_SIZE)
        if rest:
            raise PayloadError("payload truncated: short chunk")
        src, dst = memoryview(run), memoryview(out)
        done = 0
        if self._key is not None and count and not self.finished and self._counter + count <= 1 << 64:
            done = _accel.stream_open(self._key, self._counter, src, dst)
            self._counter += done
        for k in range(done, count):
            self.open_into(src[k * ENC_CHUNK_SIZE : (k + 1) * ENC_CHUNK_SIZE],
                           dst[k * CHUNK_SIZE : (k + 1) * CHUNK_SIZE], False)
        return count * CHUNK_SIZE

    def open_into(self, chunk: bytes | bytearray | memoryview, out: bytearray | memoryview, at_end: bool) -> int:
        if self.finished:
            raise PayloadError("trailing data after the final chunk")
        size = len(chunk)
        counter = self._counter
        if counter >= _MAX_COUNTER:
            raise PayloadError("payload has too many chunks")
        n = size - TAG_SIZE
        if n < 0 or (size != ENC_CHUNK_SIZE and not at_end):
            raise PayloadError("payload truncated: short chunk")
        target = memoryview(out)[:n]
        last = True
        if size == ENC_CHUNK_SIZE:
            try:
                self._into(_chunk_nonce(counter, False), chunk, None, target)
                last = False
            except InvalidTag:
                pass
        elif counter and n == 0:
            raise PayloadError("empty final chunk after a non-empty payload")
        if last:
            try:
                self._into(_chunk_nonce(counter, True), chunk, None, target)
            except InvalidTag:
                raise PayloadError("payload chunk failed to authenticate") from None
            if not at_end:
                raise PayloadError("trailing data after the final chunk")
        elif at_end:
            raise PayloadError("payload truncated: no final chunk")
        self._counter = counter + 1
        self.finished = last
        return n


def iter_runs(pieces: Iterable[bytes | bytearray | memoryview]) -> Iterator[tuple[memoryview, bool]]:
    """Split a ciphertext given as pieces of any size into STREAM chunks for ChunkOpener,
    each item paired with whether nothing follows it (one piece of look-ahead). The whole
    chunks lying inside one piece with more ciphertext after them come as one view (a run,
    for open_run); a chunk that straddles pieces (copied into a scratch buffer, valid only
    until the next item is requested) and the stream's last chunk (True) come alone, for
    open_into. Runs are views into the pieces."""
    scratch = memoryview(bytearray(ENC_CHUNK_SIZE))
    it = (memoryview(p) for p in pieces if len(p))
    piece = next(it, None)
    pos = 0
    while piece is not None:
        count = (len(piece) - pos) // ENC_CHUNK_SIZE
        if count:
            run = piece[pos : pos + count * ENC_CHUNK_SIZE]
            pos += len(run)
            if pos == len(piece):
                piece, pos = next(it, None), 0
            if piece is None:  # the run ends the stream: its last chunk comes alone
                if count > 1:
                    yield run[:-ENC_CHUNK_SIZE], False
                yield run[-ENC_CHUNK_SIZE:], True
            else:
                yield run, False
            continue
        filled = len(piece) - pos
        scratch[:filled] = piece[pos:]
        while filled < ENC_CHUNK_SIZE:
            piece, pos = next(it, None), 0
            if piece is None:
                break
            pos = min(ENC_CHUNK_SIZE - filled, len(piece))
            scratch[filled : filled + pos] = piece[:pos]
            filled += pos
        if piece is not None and pos == len(piece):
            piece, pos = next(it, None), 0
        yield scratch[:filled], piece is None


def read_full(src: BinaryIO, view: memoryview) -> int:
    """Fill `view` from `src`; fewer bytes only at end of stream. A source that answers
    None (a non-blocking stream with no data yet), anything but bytes (a text-mode file)
    or more than was asked for is an InputValidationError, not an early end: a sealed
    prefix of the input would pass for the whole of it."""
    readinto = getattr(src, "readinto", None)
    filled = 0
    while filled < len(view):
        want = len(view) - filled
        if readinto is not None:
            n = readinto(view[filled:])
            if n is None:
                raise _nonblocking(src)
            if not isinstance(n, int) or not 0 <= n <= want:
                raise InputValidationError(f"{type(src).__name__}.readinto() returned {n!r} for a {want}-byte buffer")
        else:
            data = src.read(want)
            if data is None:
                raise _nonblocking(src)
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise InputValidationError(f"{type(src).__name__}.read() returned {type(data).__name__}, not bytes "
                                           "(open the file in binary mode, 'rb')")
            n = len(data)
            if n > want:
                raise InputValidationError(f"{type(src).__name__}.read({want}) returned {n} bytes")
            view[filled : filled + n] = data
        if not n:
            break
        filled += n
    return filled


def _nonblocking(src: object) -> InputValidationError:
    return InputValidationError(f"{type(src).__name__} returned None (a non-blocking stream with no data yet): "
                                "give a blocking file or stream")


def open_(aead: ChaCha20Poly1305, src: BinaryIO) -> Iterator[bytes]:
    """Yield verified plaintext chunks of the STREAM read from `src` (positioned after the
    payload nonce); PayloadError at the first chunk that is bad, truncated or followed by
    trailing data, after yielding every chunk that verified before it."""
    decrypt = aead.decrypt
    buf = bytearray(_BATCH * ENC_CHUNK_SIZE)
    view = memoryview(buf)
    counter = 0
    filled = pos = 0
    eof = False
    while True:
        if pos == filled:
            if eof:
                raise PayloadError("payload truncated: no final chunk")
            filled, pos = read_full(src, view), 0
            eof = filled < len(buf)
            continue
        if counter >= _MAX_COUNTER:
            raise PayloadError("payload has too many chunks")
        end = min(pos + ENC_CHUNK_SIZE, filled)
        chunk = view[pos:end]
        if end - pos == ENC_CHUNK_SIZE:
            try:
                plain, last = decrypt(_chunk_nonce(counter, False), chunk, None), False
            except InvalidTag:
                try:
                    plain, last = decrypt(_chunk_nonce(counter, True), chunk, None), True
                except InvalidTag:
                    raise PayloadError("payload chunk failed to authenticate") from None
        else:  # a short chunk only occurs at end of stream: it must be the final one
            if counter and end - pos == TAG_SIZE:
                raise PayloadError("empty final chunk after a non-empty payload")
            try:
                plain, last = decrypt(_chunk_nonce(counter, True), chunk, None), True
            except InvalidTag:
                raise PayloadError("payload chunk failed to authenticate") from None
        pos = end
        counter += 1
        if not last:
            yield plain
            continue
        trailing = pos < filled or (not eof and bool(src.read(1)))
        yield plain
        if trailing:
            raise PayloadError("trailing data after the final chunk")
        return
