"""The vault's optional native accelerator: multi-lane SHA-256 and STREAM runs in C.

Two loops dominate seal's CPU (per 256 MiB on these machines: the leaves' SHA-256 0.14-0.24 s,
ChaCha20-Poly1305 0.06-0.2 s), and Python can only call them one message or one 64 KiB chunk
at a time. vault/_accel/_accel.c does both in one call that releases the GIL:

    sha256_many(messages)                   -> [digest, ...]   up to MAX_LANES at once
    stream_seal(key, first, plain, final, out) -> bytes written

`lanes` is how many messages this CPU hashes side by side: 16 with AVX-512 (one per 32-bit
vector lane) where that beats the SHA extensions (timed once at import: _wide_pays), 4 with
only the SHA extensions (interleaved), 0 when neither is usable; seal gives each worker that
many leaves to hash at once.

Why by hand: no maintained library exposes either (OpenSSL's multi-buffer SHA-256 is
internal to libcrypto; cryptography and PyNaCl seal one AEAD message per call). The STREAM
chunk rules stay in vault/age/_stream.py (ChunkSealer.seal_run), which calls this.

The compiled module (vault/_accel/_lib, built by setup.py or `python vault/_accel/build.py`)
is optional: without it, or on a CPU without the SHA extensions, or when its known-answer
test fails, `available` / `sha_lanes` are False (`lanes` 0) and the vault uses hashlib and
cryptography instead, with byte-identical results (tests/vault/test_accel.py checks both).
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

MAX_LANES = 16

try:  # the compiled module is optional
    from vault._accel._lib import ffi as _ffi, lib as _lib  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the build
    _ffi = _lib = None

Buffer = Any  # bytes, bytearray, memoryview, mmap: anything with the buffer protocol


def _sha256_native(messages: Sequence[Buffer]) -> list[bytes]:
    n = len(messages)
    views = [_ffi.from_buffer(m) for m in messages]  # kept alive across the call
    try:
        ptrs = _ffi.new("const uint8_t *[]", views)
        lens = _ffi.new("size_t[]", [len(v) for v in views])
        out = bytearray(32 * n)
        with _ffi.from_buffer(out) as dst:
            rc = _lib.tl_sha256_lanes(n, ptrs, lens, dst)
    finally:
        for view in views:  # released now, not when a traceback lets go of this frame
            _ffi.release(view)
    if rc != 0:
        raise RuntimeError("tl_sha256_lanes refused its input")  # cannot happen: checked below
    return [bytes(out[32 * i : 32 * i + 32]) for i in range(n)]


def _self_test() -> tuple[bool, int]:
    """(module usable, messages hashed side by side or 0): a known-answer test against
    hashlib and cryptography on lengths around the block and chunk boundaries, for both the
    SHA-NI and the AVX-512 paths, and STREAM runs sealed and opened."""
    if _lib is None:
        return False, 0
    lanes = int(_lib.tl_sha_ni())
    if lanes:
        for sizes in ((0, 55, 56, 64), (65, 119, 120, 1000), (4096, 1),
                      (640, 64, 0, 129, 700, 7, 640, 128, 1, 56, 300, 641, 65, 63, 1000, 200)):
            msgs = [bytes((i * 7 + n) & 0xFF for i in range(n)) for n in sizes]
            if _sha256_native(msgs) != [hashlib.sha256(m).digest() for m in msgs]:
                lanes = 0
                break
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    key = bytes(range(32))
    plain = (bytes(range(256)) * 257)[: 65536 + 100]  # byte i is i & 0xFF (a generator took 4 ms at import)
    out = bytearray(len(plain) + 32)
    if _lib.tl_stream_seal(key, 5, _ffi.from_buffer(plain), len(plain), 1, _ffi.from_buffer(out)) != len(out):
        return False, 0
    aead = ChaCha20Poly1305(key)
    want = (aead.encrypt((5 << 8).to_bytes(12, "big"), plain[:65536], None)
            + aead.encrypt(((6 << 8) | 1).to_bytes(12, "big"), plain[65536:], None))
    if bytes(out) != want:
        return False, 0
    # tl_stream_open: two non-final chunks back (the second as sealed by cryptography), then
    # the same with one byte of the second flipped: only the first authenticates.
    run = bytearray(want[:65552] + aead.encrypt((6 << 8).to_bytes(12, "big"), plain[:65536], None))
    back = bytearray(2 * 65536)
    if _lib.tl_stream_open(key, 5, _ffi.from_buffer(run), 2, _ffi.from_buffer(back)) != 2 or \
            bytes(back) != plain[:65536] * 2:
        return False, 0
    run[65552 + 100] ^= 1
    return _lib.tl_stream_open(key, 5, _ffi.from_buffer(run), 2, _ffi.from_buffer(back)) == 1, lanes


def _wide_pays() -> bool:
    """Whether 16 AVX-512 lanes beat 4 SHA-NI lanes per byte on this CPU: about 5 ms, timed
    once at import, the two interleaved (best of 5 each) and the wide path kept unless
    SHA-NI is clearly faster. On the Intel machines here it is not (0.07 against 0.12 s per
    256 MiB); a CPU with a fast SHA unit and narrow vector units may differ. The digests
    are the same either way; only the speed depends on the answer."""
    import time

    messages = [bytes(range(256)) * 256] * 16  # 16 x 64 KiB
    plans = {"wide": [messages], "ni": [messages[i : i + 4] for i in range(0, 16, 4)]}
    best = dict.fromkeys(plans, float("inf"))
    _sha256_native(messages)  # warm up the vector units
    for _ in range(5):
        for name, groups in plans.items():
            start = time.perf_counter()
            for group in groups:
                _sha256_native(group)
            best[name] = min(best[name], time.perf_counter() - start)
    return best["wide"] < 1.1 * best["ni"]


available, lanes = _self_test()
if lanes > MAX_LANES // 4 and not _wide_pays():
    lanes = MAX_LANES // 4  # the SHA-NI path: sha256_many still takes up to MAX_LANES
sha_lanes = lanes > 0


def sha256_many(messages: Sequence[Buffer]) -> list[bytes]:
    """SHA-256 of each message (at most MAX_LANES), side by side on this core when the CPU
    has the SHA extensions (see `lanes`), else with hashlib one after the other."""
    if not 1 <= len(messages) <= MAX_LANES:
        raise ValueError(f"sha256_many takes 1..{MAX_LANES} messages, got {len(messages)}")
    if sha_lanes and len(messages) > 1:
        return _sha256_native(messages)
    return [hashlib.sha256(m).digest() for m in messages]


def stream_seal(key: bytes, first: int, plain: Buffer, final: bool, out: Buffer) -> int:
    """Encrypt the STREAM chunks `first`, `first` + 1, ... that make up `plain` (every one
    64 KiB but the last) into `out` (len(plain) + 16 per chunk). The caller (ChunkSealer)
    checks the chunk rules and sizes; this only requires `available`."""
    if not available:
        raise RuntimeError("the native accelerator is not available")
    # `with`: the buffers are released when the call ends, not when its frame goes (a
    # traceback kept in a pipeline's error kept `out` exported: its release() then failed)
    with _ffi.from_buffer(plain) as src, _ffi.from_buffer(out, require_writable=True) as dst:
        count = max(1, -(-len(src) // 65536))
        need = len(src) + 16 * count
        if len(key) != 32 or not 0 <= first or first + count > 1 << 64 or len(dst) < need:  # the C code trusts these
            raise ValueError(f"stream_seal: bad key, index or output size ({len(dst)} < {need})")
        written = _lib.tl_stream_seal(key, first, src, len(src), bool(final), dst)
    if written < 0:
        raise RuntimeError(f"OpenSSL failed to seal a STREAM run ({written})")
    return written


def stream_open(key: bytes, first: int, ciphertext: Buffer, out: Buffer) -> int:
    """Decrypt the non-final STREAM chunks `first`, `first` + 1, ... that make up
    `ciphertext` (whole chunks of 65552 bytes) into `out` (65536 bytes each). Returns how
    many authenticated, in order, before the first that did not (all of them: their count);
    out past those is garbage. The caller (ChunkOpener) checks the chunk rules."""
    if not available:
        raise RuntimeError("the native accelerator is not available")
    with _ffi.from_buffer(ciphertext) as src, _ffi.from_buffer(out, require_writable=True) as dst:
        count, rest = divmod(len(src), 65552)
        if len(key) != 32 or rest or not 0 <= first or first + count > 1 << 64 or len(dst) < 65536 * count:
            raise ValueError(f"stream_open: bad key, index or sizes ({len(src)} -> {len(dst)})")
        done = _lib.tl_stream_open(key, first, src, count, dst)
    if done < 0:
        raise RuntimeError(f"OpenSSL failed to open a STREAM run ({done})")
    return done


def page_aligned(data: Buffer, alignment: int = 4096) -> bool:
    """Whether `data` starts on an `alignment` boundary in memory (what O_DIRECT needs)."""
    if not available:
        raise RuntimeError("the native accelerator is not available")
    with _ffi.from_buffer(data) as view:
        return int(_ffi.cast("uintptr_t", view)) % alignment == 0


def write_block(tmp: str, final: str, directory: str, data: Buffer, *, direct: bool, sync: bool) -> bool:
    """Create `tmp`, write `data`, fsync (if `sync`), rename to `final`, fsync `directory`
    (if `sync`), in one call without the GIL (see tl_write_block). Returns True when the
    filesystem or the buffer refused O_DIRECT and the page cache was used; raises OSError."""
    if not available:
        raise RuntimeError("the native accelerator is not available")
    paths = [os.fsencode(p) for p in (tmp, final, directory)]
    if any(b"\0" in p for p in paths):  # C would cut the path there
        raise ValueError("embedded null byte in a block path")
    with _ffi.from_buffer(data) as src:
        rc = _lib.tl_write_block(*paths, src, len(src), bool(direct), bool(sync))
    if rc < 0:  # from any step: the temp file's creation or write, its rename, the directory's fsync
        raise OSError(-rc, os.strerror(-rc), tmp, None, final)
    return rc == 1

