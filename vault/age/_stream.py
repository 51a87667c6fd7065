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
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ..errors import InputValidationError, PayloadError
from ._kdf import hkdf_sha256

NONCE_SIZE = 16
CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
ENC_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
_BATCH = 16  # chunks read per syscall when decrypting (~1 MiB)
_MAX_COUNTER = 1 << 88


def payload_aead(file_key: bytes, nonce: bytes) -> ChaCha20Poly1305:
    return ChaCha20Poly1305(hkdf_sha256(file_key, nonce, b"payload"))


def _chunk_nonce(counter: int, last: bool) -> bytes:
    return ((counter << 8) | last).to_bytes(12, "big")


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
        if not isinstance(piece, (bytes, bytearray, memoryview)):
            raise InputValidationError(f"plaintext pieces must be bytes, got {type(piece).__name__}")
        view = memoryview(piece)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
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


def read_full(src: BinaryIO, view: memoryview) -> int:
    """Fill `view` from `src`; fewer bytes only at end of stream."""
    readinto = getattr(src, "readinto", None)
    filled = 0
    while filled < len(view):
        if readinto is not None:
            n = readinto(view[filled:])
        else:
            data = src.read(len(view) - filled)
            n = len(data) if data else 0
            view[filled : filled + n] = data or b""
        if not n:
            break
        filled += n
    return filled


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
