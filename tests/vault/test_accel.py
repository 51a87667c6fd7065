"""vault/_accel, the native accelerator: multi-lane SHA-256 equals hashlib for any lengths,
a native STREAM run equals cryptography's chunk-by-chunk encryption for any index, size and
final flag (and is opened back, stopping at the first chunk that does not authenticate), the C code is never handed an output it could overrun, and ChunkSealer's run
rules hold with and without it. The compiled module must be there: `make setup` builds it,
so a missing build step fails here rather than silently sealing at half speed."""
from __future__ import annotations

import hashlib
import mmap
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from vault import _accel
from vault.age._kdf import hkdf_sha256
from vault.age._stream import CHUNK_SIZE, ENC_CHUNK_SIZE, TAG_SIZE, ChunkOpener, ChunkSealer, _chunk_nonce, seal
from vault.errors import InputValidationError

KEY = bytes(range(16))
NONCE = bytes(range(100, 116))
needs_native = pytest.mark.skipif(not _accel.available, reason="vault/_accel is not built")


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def test_the_accelerator_is_built_and_passed_its_self_test() -> None:
    assert _accel.available, "vault/_accel/_lib is missing or failed its known-answer test: run `make setup`"
    flags = _cpu_flags()
    assert _accel.sha_lanes == ("sha_ni" in flags)
    wide = {"sha_ni", "avx512f", "avx512bw"} <= flags
    # with AVX-512, 16 lanes unless SHA-NI timed clearly faster at import (_wide_pays)
    assert _accel.lanes in ((16, 4) if wide else (4,) if "sha_ni" in flags else (0,))


# -- multi-lane SHA-256 -------------------------------------------------------------------

_lengths = st.sampled_from([0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 129, 4096, 65552]) | st.integers(0, 9000)


@settings(max_examples=300, deadline=None)
@given(st.lists(_lengths, min_size=1, max_size=_accel.MAX_LANES), st.randoms(use_true_random=False))
def test_sha256_many_is_hashlib_for_any_lengths(lengths: list[int], rnd) -> None:
    messages = [rnd.randbytes(n) for n in lengths]
    assert _accel.sha256_many(messages) == [hashlib.sha256(m).digest() for m in messages]


def test_sha256_many_on_leaf_sized_page_aligned_buffers() -> None:
    """What seal hands it: 1 MiB mmap leaves, the last one shorter, as memoryviews."""
    leaves = []
    for size in [1 << 20] * 15 + [300_017]:
        buf = mmap.mmap(-1, 1 << 20)
        buf.write(os.urandom(size))
        leaves.append(memoryview(buf)[:size])
    want = [hashlib.sha256(v).digest() for v in leaves]
    for n in (1, 2, 3, 4, 5, 8, 15, 16):  # the short leaf drops out first: the others go on
        assert _accel.sha256_many(leaves[-n:]) == want[-n:]
        assert _accel.sha256_many(leaves[:n]) == want[:n]


def test_sha256_many_lanes_that_finish_at_different_blocks() -> None:
    """Every lane a different number of blocks, so lanes drop out one by one (AVX-512:
    the finished ones keep reading along with a live lane, their results dropped)."""
    messages = [os.urandom(64 * (k * 37 % 23) + k) for k in range(16)]
    assert _accel.sha256_many(messages) == [hashlib.sha256(m).digest() for m in messages]
    assert _accel.sha256_many(messages[::-1]) == [hashlib.sha256(m).digest() for m in messages[::-1]]


@pytest.mark.parametrize("count", [0, _accel.MAX_LANES + 1])
def test_sha256_many_takes_one_to_sixteen_messages(count: int) -> None:
    with pytest.raises(ValueError, match="1..16 messages"):
        _accel.sha256_many([b"x"] * count)


# -- native STREAM runs -------------------------------------------------------------------


def _reference_run(key: bytes, first: int, plain: bytes, final: bool) -> bytes:
    aead = ChaCha20Poly1305(key)
    pieces = [plain[i : i + CHUNK_SIZE] for i in range(0, len(plain), CHUNK_SIZE)] or [b""]
    return b"".join(aead.encrypt(_chunk_nonce(first + k, final and k == len(pieces) - 1), piece, None)
                    for k, piece in enumerate(pieces))


@needs_native
@settings(max_examples=80, deadline=None)
@given(first=st.sampled_from([0, 1, 255, 256, 65535, 1 << 32, (1 << 64) - 20]) | st.integers(0, 1 << 40),
       chunks=st.integers(1, 5), tail=st.integers(1, CHUNK_SIZE), final=st.booleans())
def test_stream_seal_is_chunk_by_chunk_chacha20_poly1305(first: int, chunks: int, tail: int, final: bool) -> None:
    key = os.urandom(32)
    size = (chunks - 1) * CHUNK_SIZE + (tail if final else CHUNK_SIZE)
    plain = os.urandom(size)
    out = bytearray(size + TAG_SIZE * chunks)
    assert _accel.stream_seal(key, first, plain, final, out) == len(out)
    assert bytes(out) == _reference_run(key, first, plain, final)


@needs_native
def test_stream_seal_of_the_empty_final_chunk() -> None:
    key = os.urandom(32)
    out = bytearray(TAG_SIZE)
    assert _accel.stream_seal(key, 0, b"", True, out) == TAG_SIZE
    assert bytes(out) == ChaCha20Poly1305(key).encrypt(_chunk_nonce(0, True), b"", None)


@needs_native
@pytest.mark.parametrize(("key", "first", "out_size"), [
    (bytes(32), 0, 2 * CHUNK_SIZE + 2 * TAG_SIZE - 1),  # one byte short: would overrun
    (bytes(32), 0, 0),
    (bytes(31), 0, 2 * ENC_CHUNK_SIZE),  # a key the C code would read past
    (bytes(32), -1, 2 * ENC_CHUNK_SIZE),
    (bytes(32), 1 << 64, 2 * ENC_CHUNK_SIZE),
    (bytes(32), (1 << 64) - 1, 2 * ENC_CHUNK_SIZE),  # its second chunk's index would wrap to 0: a nonce reused
])
def test_stream_seal_refuses_what_the_c_code_would_overrun(key: bytes, first: int, out_size: int) -> None:
    out = bytearray(out_size + 8)
    guard = bytes(out)
    with pytest.raises(ValueError, match="stream_seal"):
        _accel.stream_seal(key, first, bytes(2 * CHUNK_SIZE), False, memoryview(out)[:out_size])
    assert bytes(out) == guard  # nothing written


@needs_native
def test_stream_seal_refuses_a_read_only_output() -> None:
    with pytest.raises((TypeError, BufferError, ValueError)):
        _accel.stream_seal(bytes(32), 0, b"abc", True, bytes(3 + TAG_SIZE))


# -- ChunkSealer.seal_run, native and not ---------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(size=st.sampled_from([0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE, 3 * CHUNK_SIZE + 5])
       | st.integers(0, 5 * CHUNK_SIZE), split=st.integers(0, 6), native=st.booleans())
def test_runs_in_any_split_give_the_reference_stream(size: int, split: int, native: bool) -> None:
    """A plaintext sealed as runs of whole chunks (the last run final) is the same STREAM
    that seal() writes, native or not."""
    plaintext = os.urandom(size)
    sealer = ChunkSealer(KEY, NONCE, native=native)
    chunks = max(1, -(-size // CHUNK_SIZE))
    cut = min(split, chunks - 1)  # runs: chunks [0, cut) and [cut, chunks)
    out = bytearray()
    for first, last_chunk, last in ((0, cut, False), (cut, chunks, True)):
        if first == last_chunk:
            continue
        plain = plaintext[first * CHUNK_SIZE : last_chunk * CHUNK_SIZE] if not last else plaintext[first * CHUNK_SIZE :]
        buf = bytearray(len(plain) + TAG_SIZE * (last_chunk - first))
        sealer.seal_run(first, plain, buf, last)
        out += buf
    assert bytes(sealer.nonce) + bytes(out) == b"".join(seal(KEY, [plaintext], NONCE))


@pytest.mark.parametrize("native", [True, False])
def test_seal_run_checks_the_stream_rules(native: bool) -> None:
    sealer = ChunkSealer(KEY, NONCE, native=native)
    with pytest.raises(InputValidationError, match="not valid"):
        sealer.seal_run(0, bytes(CHUNK_SIZE + 1), bytearray(CHUNK_SIZE + 1 + 2 * TAG_SIZE), False)  # partial, not last
    with pytest.raises(InputValidationError, match="not valid"):
        sealer.seal_run(3, b"", bytearray(TAG_SIZE), True)  # empty only as the first and only chunk
    with pytest.raises(InputValidationError, match="not valid"):
        sealer.seal_run(0, b"", bytearray(TAG_SIZE), False)
    with pytest.raises(InputValidationError, match="output bytes"):
        sealer.seal_run(0, bytes(10), bytearray(10 + TAG_SIZE - 1), True)
    with pytest.raises(InputValidationError, match="out of range"):
        sealer.seal_run(-1, bytes(CHUNK_SIZE), bytearray(ENC_CHUNK_SIZE), False)
    with pytest.raises(InputValidationError, match="out of range"):
        sealer.seal_run((1 << 88) - 1, bytes(2 * CHUNK_SIZE), bytearray(2 * ENC_CHUNK_SIZE), True)


def test_seal_run_past_64_bit_indexes_falls_back_to_cryptography() -> None:
    """The native code takes a 64-bit index; the 88-bit STREAM counter above that still works."""
    first = 1 << 70
    plain = os.urandom(CHUNK_SIZE + 9)
    got = bytearray(len(plain) + 2 * TAG_SIZE)
    ChunkSealer(KEY, NONCE).seal_run(first, plain, got, True)
    assert bytes(got) == _reference_run(hkdf_sha256(KEY, NONCE, b"payload"), first, plain, True)


# -- native STREAM open runs ------------------------------------------------------------------


@pytest.mark.parametrize("native", [True, False])
def test_open_run_across_the_64_bit_index_boundary(native: bool) -> None:
    """Chunks (2**64 - 1) and 2**64: past what the native call takes, so cryptography's."""
    if native and not _accel.available:
        pytest.skip("vault/_accel is not built")
    key = hkdf_sha256(KEY, NONCE, b"payload")
    first = (1 << 64) - 1
    plain = os.urandom(2 * CHUNK_SIZE)
    run = bytearray(2 * ENC_CHUNK_SIZE)
    ChunkSealer(KEY, NONCE).seal_run(first, plain, run, False)
    opener = ChunkOpener(ChaCha20Poly1305(key), key if native else None)
    opener._counter = first
    out = bytearray(len(plain))
    assert opener.open_run(run, out) == len(plain) and bytes(out) == plain


@needs_native
@settings(max_examples=60, deadline=None)
@given(first=st.sampled_from([0, 1, 255, 256, (1 << 64) - 6]) | st.integers(0, 1 << 40),
       chunks=st.integers(1, 5), damage=st.none() | st.integers(0))
def test_stream_open_is_chunk_by_chunk_chacha20_poly1305(first: int, chunks: int, damage: int | None) -> None:
    """It opens what cryptography sealed as non-final chunks, and stops at the first chunk
    that does not authenticate: the count it returns is that chunk's index."""
    key = os.urandom(32)
    plain = os.urandom(chunks * CHUNK_SIZE)
    run = bytearray(_reference_run(key, first, plain, False))
    bad = None
    if damage is not None:
        run[damage % len(run)] ^= 0x01
        bad = damage % len(run) // ENC_CHUNK_SIZE
    out = bytearray(len(plain))
    done = _accel.stream_open(key, first, run, out)
    assert done == (chunks if bad is None else bad)
    assert out[: done * CHUNK_SIZE] == plain[: done * CHUNK_SIZE]


@needs_native
def test_stream_open_refuses_a_final_chunk() -> None:
    """A final chunk (last flag 1) does not authenticate as a non-final one."""
    key = os.urandom(32)
    run = _reference_run(key, 0, os.urandom(2 * CHUNK_SIZE), True)  # chunk 1 is final
    assert _accel.stream_open(key, 0, run, bytearray(2 * CHUNK_SIZE)) == 1


@needs_native
@pytest.mark.parametrize(("key", "first", "size", "out_size"), [
    (bytes(32), 0, 2 * ENC_CHUNK_SIZE, 2 * CHUNK_SIZE - 1),  # one byte short: would overrun
    (bytes(32), 0, 2 * ENC_CHUNK_SIZE - 1, 2 * CHUNK_SIZE),  # not whole chunks
    (bytes(31), 0, ENC_CHUNK_SIZE, CHUNK_SIZE),
    (bytes(32), -1, ENC_CHUNK_SIZE, CHUNK_SIZE),
    (bytes(32), (1 << 64) - 1, 2 * ENC_CHUNK_SIZE, 2 * CHUNK_SIZE),  # index past 64 bits
])
def test_stream_open_refuses_what_the_c_code_would_overrun(key: bytes, first: int, size: int, out_size: int) -> None:
    out = bytearray(out_size + 8)
    guard = bytes(out)
    with pytest.raises(ValueError, match="stream_open"):
        _accel.stream_open(key, first, bytes(size), memoryview(out)[:out_size])
    assert bytes(out) == guard  # nothing written
