"""The vault facade: seal a file into content-addressed ciphertext, re-header it for a
consumer, open it again into a verified plaintext file.

    sealed = Vault(store, identity).seal(Path("twin.bin"))       # -> SealedVersion
    header = vault.rewrap_for(sealed.cid, consumer_recipient)   # age header, ~200 bytes
    Vault(store, consumer_identity).open(sealed.cid, header, consumer_identity, out,
                                         commitment=sealed.commitment)

What is stored under `SealedVersion.cid` is an ordinary age v1 file (header encrypted to
the owner's recipient, then the STREAM payload), imported as a UnixFS file with the
vault's profile, so `ipfs cat <cid> | age -d -i owner.key` works, and a consumer given a
new header opens `new header ‖ payload` with any age implementation.

Pipeline and memory (details in vault/_seal.py and vault/_pipeline.py). seal: the caller's
thread reads the plaintext once, in 1 MiB buffers, and feeds it to the commitment; two
worker threads each take whole UnixFS leaves of the age file (header, nonce, STREAM
chunks), encrypt their chunks straight into page-aligned leaf buffers (ChunkSealer.seal_run,
natively a run of chunks per call) and hash 16 leaves at once (AVX-512; 4 with SHA-NI);
writer threads store them and the DAG takes the leaves in order. The blocks go past the
page cache (O_DIRECT: they must be on disk before seal returns anyway), and the store's
batch makes them durable (one syncfs, or per-file fsyncs: see vault/blockstore/__init__.py).
open: the caller's thread fetches each block (the leaves of a node are read ahead on two
threads) and has export() check it against its CID (the only hash of
it: our own stores are asked for `get(verify=False)`); a worker decrypts the verified
blocks into 1 MiB plaintext buffers (the whole chunks inside a block in one native call
where vault/_accel is built, else decrypt_into per chunk) and feeds the commitment, and a
writer thread writes them out with O_DIRECT where the filesystem allows it (see
vault/_output.py), else through the page cache with fdatasyncs behind it. hashlib, blake3,
the AEAD and file I/O release the GIL, so the threads overlap. Buffers come from fixed
pools and bounded queues (seal: about 56 MiB with 16 lanes, 30 with 4; open: about
10 MiB), so memory
stays flat whatever the file size.

Durability. seal stores the blocks inside the store's `batch()` (FilesystemBlockstore:
`batch(background=True, direct=True)`), which returns only once every block file and every shard
directory that received one is fsynced; it then pins the root (one pin file: temp file,
fsync, rename, directory fsync) and only then returns. open writes a temp file next to
`out`, checks the commitment, fsyncs the temp file, renames it into place and fsyncs the
directory; on any failure the temp file is removed and `out` is untouched.

The STREAM chunk helpers (ChunkSealer, ChunkOpener, iter_runs) and header_for come
from the private modules of vault.age: they are the same format code the public
encrypt()/decrypt() use, one chunk at a time into caller-owned buffers.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from vault.age import (
    HybridIdentity,
    HybridRecipient,
    X25519Identity,
    X25519Recipient,
    read_header,
    rewrap,
    unwrap_file_key,
)
from vault.age._age import header_for
from vault.age._stream import (
    NONCE_SIZE,
    ChunkOpener,
    ChunkSealer,
    payload_key,
)
from vault._pipeline import (
    _Ciphertext,
    _InOrder,
    _open_payload,
    _plaintext_reader,
    disk_prefetch,
)
from vault._seal import LANES, seal_segments
from vault.blockstore import BlockStore, FilesystemBlockstore
from vault.blockstore._pinning import _Pinning
from vault.cid import CID, RAW
from vault.commitment import Committer
from vault.errors import HeaderError, InputValidationError, IntegrityError
from vault._threads import wait_out
from vault.tempfiles import Output, atomic_output, resolve_output
from vault.unixfs import DEFAULT_PROFILE, PROFILES, Importer, export

Progress = Callable[[int], None]
GetBlock = Callable[[CID], bytes]
COMMITMENT_SIZE = 32
_IDENTITIES = (X25519Identity, HybridIdentity)  # classic or post-quantum (age v1.3) keys


@dataclass(frozen=True)
class SealedVersion:
    """What seal() produced: the ciphertext's root CID, the plaintext commitment (32
    bytes, recorded on chain), plaintext and ciphertext sizes, and the import profile."""

    cid: str
    commitment: bytes
    size: int
    ciphertext_size: int
    profile: str


class Vault:
    """Seals files for `identity`'s recipient into `store`, re-headers and opens them."""

    def __init__(self, store: BlockStore, identity: X25519Identity | HybridIdentity,
                 profile: str = DEFAULT_PROFILE, *, accelerate: bool = True) -> None:
        if not isinstance(identity, _IDENTITIES):
            raise InputValidationError(
                f"identity must be an X25519Identity or HybridIdentity, got {type(identity).__name__}")
        for method in ("put", "get"):
            if not callable(getattr(store, method, None)):
                raise InputValidationError(f"store must be a BlockStore (no {method}()), got {type(store).__name__}")
        self.store = store
        self.identity = identity
        if not isinstance(profile, str) or profile not in PROFILES:
            raise InputValidationError(f"unknown import profile {profile!r}; known: {', '.join(PROFILES)}")
        self.profile = profile
        # vault/_accel (native STREAM runs, leaves hashed together) where it is built;
        # False: hashlib and cryptography only (the same bytes, for comparison).
        self.accelerate = accelerate

    def __repr__(self) -> str:
        return f"Vault({type(self.store).__name__}, recipient={self.identity.recipient}, profile={self.profile!r})"

    # -- seal ------------------------------------------------------------------------------

    def seal(self, src: BinaryIO | Path | Iterable[bytes], *, progress: Progress | None = None) -> SealedVersion:
        """Encrypt `src` to this vault's own recipient, commit to the plaintext, import the
        ciphertext as UnixFS, store every block and pin the root. `progress(n)` is called
        with the number of plaintext bytes consumed since the previous call. The store's
        put() is called from several threads at once (every store here allows that). The
        whole seal, pin included, holds the store's importing(), so that no gc removes a
        block before the root that protects it is pinned."""
        importing = getattr(self.store, "importing", None)
        with importing() if callable(importing) else contextlib.nullcontext():
            return self._seal(src, progress)

    def _seal(self, src: BinaryIO | Path | Iterable[bytes], progress: Progress | None) -> SealedVersion:
        file_key = os.urandom(16)
        header = header_for(file_key, [self.identity.recipient])
        sealer = ChunkSealer(file_key, native=self.accelerate)
        committer = Committer(file_key)
        profile = PROFILES[self.profile]
        lend = isinstance(self.store, FilesystemBlockstore)  # it writes a block out before put() returns
        with contextlib.ExitStack() as stack:
            reader = _plaintext_reader(src, stack)
            stack.enter_context(_batch(self.store))
            importer = Importer(profile, self.store.put)
            in_order = _InOrder()
            put = self.store.put

            # Workers encrypt and hash the leaves, writer threads store them (vault/_seal.py);
            # the DAG takes the leaves in order. A dag-pb leaf (profile v0) wraps its chunk:
            # the importer builds, hashes and stores it, from a copy, in order.
            def emit(index: int, leaf: memoryview, digest: bytes | None) -> None:
                if digest is None:
                    in_order.add(index, functools.partial(importer.write_chunk, bytes(leaf)))
                    return
                cid = CID.from_digest(digest, RAW, 1)
                put(cid, leaf if lend else bytes(leaf))
                in_order.add(index, functools.partial(importer.add_leaf, cid, len(leaf)))

            size, leaves = seal_segments(reader, header + sealer.nonce, sealer, committer.update,
                                         profile.chunk_size, emit, progress, hash_leaves=profile.raw_leaves,
                                         lanes=LANES if self.accelerate else 1)
            if in_order.done != leaves:  # cannot happen: every segment was emitted once
                raise IntegrityError(f"sealed {leaves} leaves but the DAG took {in_order.done}")
            root = importer.finish()  # the inner nodes
        if isinstance(self.store, _Pinning):  # ours: every block was just put (inside importing())
            self.store._pin_stored(root)  # noqa: SLF001
        elif callable(pin := getattr(self.store, "pin", None)):
            pin(root)
        return SealedVersion(
            cid=str(root),
            commitment=committer.digest(),
            size=size,
            ciphertext_size=importer.size or 0,
            profile=self.profile,
        )

    # -- share -----------------------------------------------------------------------------

    def rewrap_for(self, cid: str, recipient: X25519Recipient | HybridRecipient) -> bytes:
        """A new age header that opens the payload under `cid` for `recipient`. Reads only
        the first blocks of the ciphertext; the payload is not touched."""
        if not isinstance(recipient, (X25519Recipient, HybridRecipient)):
            raise InputValidationError(
                f"recipient must be an X25519Recipient or HybridRecipient, got {type(recipient).__name__}")
        blocks = export(_parse_cid(cid), self.store.get)
        try:
            header = read_header(_Ciphertext(blocks))
        finally:
            blocks.close()  # type: ignore[attr-defined]
        return rewrap(header, [self.identity], [recipient])

    # -- open ------------------------------------------------------------------------------

    def open(
        self,
        cid: str,
        header: bytes | None,
        identity: X25519Identity | HybridIdentity,
        out: Path,
        *,
        commitment: bytes,
        get_block: GetBlock | None = None,
        progress: Progress | None = None,
    ) -> int:
        """Fetch the ciphertext under `cid` (from this store, or `get_block`, e.g. a
        gateway client), replace its header by `header` (None keeps the stored one),
        decrypt with `identity`, check `commitment`, and write `out` atomically.
        Returns the number of plaintext bytes written. On any failure nothing is left
        at `out` and no temp file remains (a file that was at `out` stays unless the
        failure is the last step's, the fsync of the directory after the rename). A
        second open to the same `out` while one is under way is an InputValidationError. `progress(n)`: plaintext bytes since last call."""
        root = _parse_cid(cid)
        if not isinstance(commitment, bytes) or len(commitment) != COMMITMENT_SIZE:
            raise InputValidationError(f"commitment must be {COMMITMENT_SIZE} bytes")
        if not isinstance(identity, _IDENTITIES):
            raise InputValidationError(
                f"identity must be an X25519Identity or HybridIdentity, got {type(identity).__name__}")
        if header is not None and not isinstance(header, (bytes, bytearray)):
            raise InputValidationError(f"header must be bytes or None, got {type(header).__name__}")
        # the output's directory, found once and held open: every later step (the check
        # below, the temp file, the rename) is in it, whatever is swapped on the way meanwhile
        with resolve_output(out) as target:  # a symbolic link's target; not a device, not read-only
            if isinstance(self.store, FilesystemBlockstore) and self.store.owns(target.name, dir_fd=target.dir.fd):
                raise InputValidationError(f"output path {target.path} is inside the block store at {self.store.root}")
            return self._open_into(target, root, header, identity, commitment, get_block, progress)

    def _open_into(self, target: Output, root: CID, header: bytes | None, identity: X25519Identity | HybridIdentity,
                   commitment: bytes, get_block: GetBlock | None, progress: Progress | None) -> int:
        prefetch = None
        if get_block is None and isinstance(self.store, FilesystemBlockstore):
            # A disk: read the leaves ahead, past the page cache, and let export() hash them
            # on this thread, one at a time. With the SHA extensions (on every CPU where
            # vault/_accel has lanes) OpenSSL hashes a stream at ~1.9 GB/s on a thread that
            # runs no AVX code, and this thread has little else to do; a fourth thread
            # hashing 16 at a time needed 8x the read-ahead and was slower: 0.338 vs 0.3215 s
            # median over 24 interleaved opens of 256 MiB on an Intel Xeon, 17 of them won
            # by this (CAR export, whose caller also writes, keeps the 16 lanes).
            get_block = prefetch = disk_prefetch(self.store, 1)
        elif get_block is None:
            get_block = _get_once_verified(self.store)
        # one temp name per output, locked while written (vault/tempfiles.py): a second
        # open to the same `out` is refused, and a crashed one's plaintext is removed, not left
        blocks: Iterator[bytes] | None = None
        try:
            with atomic_output(target, "open") as (fd, _tmp), open(fd, "wb", buffering=0, closefd=False) as fh:
                blocks = export(root, get_block, prefetch.verify if prefetch is not None else None)
                ciphertext = _Ciphertext(blocks)
                stored = read_header(ciphertext)  # replaced by `header` unless None
                nonce = ciphertext.read(NONCE_SIZE)
                if len(nonce) != NONCE_SIZE:
                    raise HeaderError("file ends before the payload nonce")
                file_key = unwrap_file_key(stored if header is None else bytes(header), [identity])
                committer = Committer(file_key)
                key = payload_key(file_key, nonce)
                opener = ChunkOpener(ChaCha20Poly1305(key), key if self.accelerate else None)
                written = _open_payload(ciphertext, opener, committer, fh.fileno(), progress)
                committer.verify(commitment)  # CommitmentMismatchError
                os.fsync(fh.fileno())
        finally:
            if blocks is not None:
                blocks.close()  # type: ignore[attr-defined]
            if prefetch is not None:
                interrupted = wait_out(prefetch.close)  # its reads stopped too (vault/_threads.py)
                if interrupted is not None:
                    raise interrupted
        return written


def read_file(store: BlockStore, root: CID) -> Iterator[bytes]:
    """The bytes of the UnixFS file `root` as stored (nothing is decrypted: what `ipfs cat`
    prints), every block verified. From a FilesystemBlockstore the leaves are read ahead
    past the page cache, as open reads them, and checked on a thread of their own as
    many at a time as this CPU hashes side by side (16 with AVX-512), as CAR export does
    (this caller, too, has output to write): 256 MiB from the disk in 0.45 s instead of
    0.72 s here."""
    if not isinstance(store, FilesystemBlockstore):
        yield from export(root, _get_once_verified(store))
        return
    prefetch = disk_prefetch(store)
    try:
        yield from export(root, prefetch, prefetch.verify)
    finally:
        prefetch.close()


# -- plumbing ------------------------------------------------------------------------------


def _parse_cid(cid: str | CID) -> CID:
    if isinstance(cid, CID):
        return cid
    if not isinstance(cid, str):
        raise InputValidationError(f"cid must be a CID string, got {type(cid).__name__}")
    return CID.decode(cid)


def _get_once_verified(store: BlockStore) -> GetBlock:
    """The store's get for export(), which checks every block against its CID itself: a
    store whose get() takes `verify` (FilesystemBlockstore, MemoryBlockstore) is told not
    to hash the block a second time."""
    try:
        takes_verify = "verify" in inspect.signature(store.get).parameters
    except (TypeError, ValueError):
        takes_verify = False
    return functools.partial(store.get, verify=False) if takes_verify else store.get


def _batch(store: BlockStore) -> contextlib.AbstractContextManager[Any]:
    """The store's batch() (fsyncs overlapped on a background thread when the store can),
    else nothing."""
    if isinstance(store, FilesystemBlockstore):
        return store.batch(background=True, direct=True)
    batch = getattr(store, "batch", None)
    return batch() if callable(batch) else contextlib.nullcontext()
