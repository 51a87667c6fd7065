"""CARv1 archives (ipld/specs transport/car/carv1): move blocks to and from any IPFS node.

Byte layout:

    CAR     = varint(len(header)) header  section*
    header  = DAG-CBOR {"roots": [CID, …], "version": 1}    (at least one root)
    section = varint(len(cid) + len(block)) cid block       (cid binary; CIDv0 = multihash)

Reading verifies every block against its CID (BlockMismatchError) and refuses malformed
framing with InvalidCARError: a bad varint, a header that is not a DAG-CBOR map with
version 1 and a roots list, a truncated or empty section, a section over
MAX_SECTION_SIZE (2 MiB; Kubo's blocks are at most 1 MiB + CID) or a header over
MAX_HEADER_SIZE. `import_car` verifies before it writes: blocks are staged in a temporary
spool file (memory stays bounded) and written to the store only after the whole archive
verified, so a bad archive changes nothing. If the store fails midway (disk full), the
blocks written so far stay, unpinned, for gc to remove, as Kubo leaves them after a failed
`dag import`: deleting them again could delete a block that an import running at the same
time found present and skipped, and so break that import's DAG.
"""
from __future__ import annotations

import collections
import contextlib
import contextvars
import mmap
import queue
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import BinaryIO

from vault import _accel, _mfcbor
from vault._mfbase import FormatError, encode_varint
from vault._mfdagpb import link_cids
from vault._pipeline import disk_prefetch
from vault.age._stream import read_full
from vault.blockstore import BlockStore, FilesystemBlockstore
from vault.cid import CID, DAG_PB, RAW
from vault.errors import BlockMismatchError, IntegrityError, InvalidCARError, InvalidCIDError

__all__ = ["MAX_HEADER_SIZE", "MAX_SECTION_SIZE", "export_car", "import_blocks", "import_car", "linked_only",
           "read_car", "require_root", "write_car"]

MAX_SECTION_SIZE = 2 << 20
MAX_HEADER_SIZE = 1 << 20


def encode_header(roots: list[CID]) -> bytes:
    if not roots:
        raise InvalidCARError("a CAR needs at least one root")
    header = _mfcbor.encode({"roots": list(roots), "version": 1})
    return encode_varint(len(header)) + header


def write_car(roots: list[CID], blocks: Iterable[tuple[CID, bytes]], out: BinaryIO) -> int:
    """Write a CARv1 stream; returns the number of blocks written. Blocks are written as
    given (export_car reads them verified from a store)."""
    out.write(encode_header(roots))
    count = 0
    for cid, data in blocks:
        cid_bytes = cid.to_bytes()
        out.write(encode_varint(len(cid_bytes) + len(data)))
        out.write(cid_bytes)
        out.write(data)
        count += 1
    return count


def dag_blocks(store: BlockStore, root: CID, *, read_ahead: bool = True) -> Iterator[tuple[CID, bytes]]:
    """(cid, block) for the DAG under root: depth-first pre-order, links in order, each CID
    once (what `ipfs dag export` and trustless gateways send), each block verified.

    From a FilesystemBlockstore, with `read_ahead`, the leaves of a node are read ahead
    past the page cache, as open reads them, and checked on a thread of their own as many
    at a time as this CPU hashes side by side (vault/_pipeline.disk_prefetch; 16 with
    AVX-512): a 256 MiB export took 0.26 s instead of 0.40 s here (medians of 6); hashing
    them on this thread, as open does, 0.37 s. That holds up to 2 x lanes leaves (32 MiB)
    and three threads for as long as the consumer takes: a server streaming to clients
    that may stall passes read_ahead=False (one block at a time, through the page cache,
    so a DAG asked for often stays cached)."""
    seen: set[bytes] = set()
    prefetch = disk_prefetch(store, once=seen) if read_ahead and isinstance(store, FilesystemBlockstore) else None
    try:
        stack = [root]
        while stack:
            cid = stack.pop()
            key = cid.to_bytes()
            if key in seen:
                continue
            seen.add(key)
            if prefetch is None:
                data = store.get(cid)
            else:
                data = prefetch(cid)
                prefetch.verify(cid, data)  # BlockMismatchError
            if cid.codec == DAG_PB:
                try:
                    stack.extend(reversed(link_cids(data)))
                except FormatError as exc:
                    raise IntegrityError(f"malformed dag-pb block {cid}: {exc}") from None
            yield cid, data
    finally:
        if prefetch is not None:
            prefetch.close()


def export_car(store: BlockStore, root: CID, out: BinaryIO) -> int:
    """Write the DAG under `root` as a CAR; BlockNotFoundError if a block is missing (the
    output is then incomplete: write to a temp file if that matters)."""
    return write_car([root], dag_blocks(store, root), out)


def require_root(roots: list[CID], root: CID) -> None:
    """IntegrityError unless a CAR header's `roots` name `root` (by multihash: a CIDv0 and
    its CIDv1 are the same DAG); the message names at most three of them."""
    if not any(r.multihash == root.multihash for r in roots):
        named = ", ".join(map(str, roots[:3])) + (f" and {len(roots) - 3} more" if len(roots) > 3 else "")
        raise IntegrityError(f"CAR is for root(s) {named}, not {root}")


def linked_only(root: CID, blocks: Iterator[tuple[CID, bytes]]) -> Iterator[tuple[CID, bytes]]:
    """The blocks of a CAR for `root` from an untrusted source (a gateway, a Kubo
    daemon), each already checked against its CID (read_car does), passed through only
    if each was linked from the root or an earlier block, and no more often than the
    blocks received so far link to it (a gateway that ignores dups=n sends a block once
    per reference, and re-sends the subtree under it: each copy of a node grants its
    links once more); at the end, require that every linked block arrived. So the stream
    is as long as a walk of the DAG at most, never endless."""
    allowed = {root.to_bytes(): 1}  # arrivals still allowed per block: references not yet used
    pending = {root.to_bytes()}
    links_of: dict[bytes, list[bytes]] = {}  # of each dag-pb node received (raw: none)
    for cid, data in blocks:
        key = cid.to_bytes()
        if not allowed.get(key):
            if key in links_of:
                raise IntegrityError(f"CAR for {root} repeats block {cid} more often than the DAG references it")
            raise IntegrityError(f"CAR for {root} carries block {cid}, which no earlier block links to")
        allowed[key] -= 1
        if key not in links_of:
            if cid.codec == DAG_PB:
                try:
                    links_of[key] = [c.to_bytes() for c in link_cids(data)]
                except FormatError as exc:
                    raise IntegrityError(f"malformed dag-pb block {cid}: {exc}") from None
            elif cid.codec == RAW:
                links_of[key] = []
            else:
                raise IntegrityError(f"cannot check links of codec 0x{cid.codec:x} ({cid})")
            pending.discard(key)
            pending.update(k for k in links_of[key] if k not in links_of)
            yield cid, data
        for link in links_of[key]:  # a duplicate (dups=y) is not stored again, only counted
            allowed[link] = allowed.get(link, 0) + 1
    if pending:
        example = CID.decode(next(iter(pending)))
        raise IntegrityError(f"CAR for {root} is incomplete: {len(pending)} block(s) missing, e.g. {example}")


# -- reading -------------------------------------------------------------------------------
def _read_exact(src: BinaryIO, n: int, what: str) -> bytes:
    data = src.read(n)
    if data is None:
        data = b""
    if len(data) == n:
        return data
    parts = bytearray(data)
    while len(parts) < n:
        more = src.read(n - len(parts))
        if not more:
            raise InvalidCARError(f"truncated CAR: {what} needs {n} bytes, got {len(parts)}")
        parts += more
    return bytes(parts)


def _read_varint(src: BinaryIO, what: str, *, eof_ok: bool = False) -> int | None:
    value = 0
    for i in range(9):
        byte = src.read(1)
        if not byte:
            if i == 0 and eof_ok:
                return None
            raise InvalidCARError(f"truncated CAR: {what} length varint cut off")
        b = byte[0]
        value |= (b & 0x7F) << (7 * i)
        if b < 0x80:
            if b == 0 and i > 0:
                raise InvalidCARError(f"bad CAR: non-minimal {what} length varint")
            return value
    raise InvalidCARError(f"bad CAR: {what} length varint longer than 9 bytes")


def _parse_header(raw: bytes) -> list[CID]:
    try:
        header = _mfcbor.decode(raw)
    except FormatError as exc:
        raise InvalidCARError(f"CAR header is not valid DAG-CBOR: {exc}") from None
    if not isinstance(header, dict):
        raise InvalidCARError("CAR header is not a map")
    version = header.get("version")
    if version == 2:
        raise InvalidCARError("CARv2 is not supported; export CARv1 (ipfs dag export)")
    if version != 1 or isinstance(version, bool):
        raise InvalidCARError(f"CAR header version must be 1, got {version!r}")
    if set(header) != {"roots", "version"}:
        raise InvalidCARError(f"CAR header has unexpected keys {sorted(set(header) - {'roots', 'version'})}")
    roots = header["roots"]
    if not isinstance(roots, list) or not roots or not all(isinstance(r, CID) for r in roots):
        raise InvalidCARError("CAR header roots must be a non-empty list of CIDs")
    return roots


def read_car(src: BinaryIO) -> tuple[list[CID], Iterator[tuple[CID, bytes]]]:
    """Parse the header now; return (roots, lazy iterator of verified (cid, block))."""
    length = _read_varint(src, "header", eof_ok=True)
    if length is None:
        raise InvalidCARError("empty CAR stream")
    if length == 0 or length > MAX_HEADER_SIZE:
        raise InvalidCARError(f"CAR header length {length} out of range 1..{MAX_HEADER_SIZE}")
    roots = _parse_header(_read_exact(src, length, "header"))
    return roots, _sections(src)


# Blocks are checked in groups of up to 16 (or 16 MiB): with the native accelerator 16
# SHA-256 run side by side on one core (vault/_accel.sha256_many): reading and checking a
# 256 MiB CAR took 0.145 s instead of 0.19 s here. Nothing of a group is yielded before
# the whole group is checked, and the blocks before a bad one (or before a framing error,
# or a failed read of the source) come out first, as one by one.
_GROUP_BYTES = 16 << 20


def _sections(src: BinaryIO) -> Iterator[tuple[CID, bytes]]:
    group: list[tuple[CID, bytes]] = []
    size = index = 0
    while True:
        try:
            section = _read_section(src, index)
        except Exception:  # a framing error, or the source's own (OSError, a network error)
            yield from _checked(group)
            raise
        if section is None:
            yield from _checked(group)
            return
        group.append(section)
        size += len(section[1])
        index += 1
        if len(group) == _accel.MAX_LANES or size >= _GROUP_BYTES:
            yield from _checked(group)
            group, size = [], 0


def _read_section(src: BinaryIO, index: int) -> tuple[CID, bytes] | None:
    length = _read_varint(src, f"section {index}", eof_ok=True)
    if length is None:
        return None
    if length == 0:
        raise InvalidCARError(f"bad CAR: section {index} is empty")
    if length > MAX_SECTION_SIZE:
        raise InvalidCARError(f"bad CAR: section {index} is {length} bytes, limit {MAX_SECTION_SIZE}")
    body = _read_exact(src, length, f"section {index}")
    try:
        cid, offset = CID.read_from(body, 0)
    except InvalidCIDError as exc:
        raise InvalidCARError(f"bad CAR: section {index} CID: {exc}") from None
    return cid, body[offset:]


def _checked(group: list[tuple[CID, bytes]]) -> Iterator[tuple[CID, bytes]]:
    """The group's blocks in order, each checked against its CID (BlockMismatchError)."""
    digests = _accel.sha256_many([data for _, data in group]) if group else []
    for (cid, data), digest in zip(group, digests):
        if digest != cid.multihash[2:]:
            raise BlockMismatchError(f"block does not hash to {cid}")
        yield cid, data


# -- importing -----------------------------------------------------------------------------
def import_blocks(store: BlockStore, blocks: Iterable[tuple[CID, bytes]],
                  progress: Callable[[int], None] | None = None,
                  checked: Callable[[int], None] | None = None) -> int:
    """Consume `blocks` completely into a spool file (an exception from them, e.g. a block
    that does not match its CID, leaves the store untouched), then put the ones the store
    lacks. Returns how many were added. A put that fails leaves the blocks put before it
    (whole and verified, unpinned: see the module docstring), and says so in a note.
    `progress(n)`: the bytes of the blocks stored (or found present) since the last call,
    always on the calling thread. `checked(n)`: called once, when every block has been read
    and checked, with the bytes of the distinct blocks that the puts then go through (what
    `progress` adds up to), e.g. a progress bar's total.

    A FilesystemBlockstore gets them as seal writes its own: past the page cache from
    aligned buffers, on _WRITERS threads, fsynced on background threads (_import_batch);
    256 MiB imported in 0.44 s instead of 1.63 s here (medians of 5: 0.70 s without the
    writer threads), mostly by not growing the page cache. Any other store gets its blocks
    one at a time, as bytes of their own."""
    staged: list[tuple[CID, int, int]] = []
    seen: set[bytes] = set()
    with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool:
        offset = 0
        for cid, data in blocks:
            if cid.multihash in seen:
                continue
            seen.add(cid.multihash)
            spool.write(data)
            staged.append((cid, offset, len(data)))
            offset += len(data)
        if checked is not None:
            checked(offset)
        added = _Count()
        try:
            with _import_batch(store):
                if isinstance(store, FilesystemBlockstore):
                    _put_in_parallel(store, spool, staged, progress, added)
                else:
                    for cid, start, size in staged:
                        if not store.has(cid):
                            spool.seek(start)
                            store.put(cid, spool.read(size))  # verified when read from the CAR
                            added.add()
                        if progress is not None:
                            progress(size)
        except Exception as exc:
            if added.value:
                exc.add_note(f"{added.value} of the {len(staged)} blocks were stored before this failure; "
                             "this import did not pin them, and a gc removes them unless a pin reaches them")
            raise
    return added.value


_WRITERS = 4  # import's put threads for a FilesystemBlockstore (its native put holds no GIL)


class _Count:
    """How many blocks an import stored, counted from the writer threads."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def add(self) -> None:
        with self._lock:
            self.value += 1


def _put_in_parallel(store: FilesystemBlockstore, spool: BinaryIO, staged: list[tuple[CID, int, int]],
                     progress: Callable[[int], None] | None, added: _Count) -> None:
    """Put the staged blocks the store lacks on _WRITERS threads, each from a page-aligned
    buffer (what O_DIRECT wants; the store keeps no reference to what it is given) of a
    pool of _WRITERS + 1, filled from the spool on this thread; a block larger than the
    pool's buffers (import_blocks takes any, only read_car caps them at MAX_SECTION_SIZE)
    gets a mapping of its own, still holding a pool buffer so that no more are in flight.
    After a failed put no other is started (one already queued is skipped); the first
    failure, in staged order, is raised once the puts under way have ended."""
    free: queue.Queue[mmap.mmap] = queue.Queue()
    for _ in range(_WRITERS + 1):
        free.put(mmap.mmap(-1, MAX_SECTION_SIZE))
    failed = threading.Event()

    def put(cid: CID, token: mmap.mmap, buffer: mmap.mmap, size: int) -> None:
        try:
            if failed.is_set():
                raise _Skipped
            with memoryview(buffer) as view:
                store.put(cid, view[:size])
            added.add()
        except _Skipped:
            raise
        except BaseException:
            failed.set()
            raise
        finally:
            if buffer is not token:
                buffer.close()
            free.put(token)

    pending: collections.deque[tuple[Future[None] | None, int]] = collections.deque()

    def report(until_done: bool) -> None:
        while pending and (until_done or pending[0][0] is None or pending[0][0].done()):
            future, size = pending.popleft()
            if future is not None:
                try:
                    future.result()  # the first failure in order
                except _Skipped:  # a later put than the one that failed: not stored, not reported
                    continue
            if progress is not None:
                progress(size)

    with ThreadPoolExecutor(_WRITERS, thread_name_prefix="vault-car-put") as pool:
        try:
            for cid, start, size in staged:
                if failed.is_set():
                    break
                if store.adopt(cid):  # there and whole, made durable with this batch (a damaged copy is put again)
                    pending.append((None, size))
                else:
                    token = free.get()
                    if failed.is_set():  # while this thread waited for a buffer
                        free.put(token)
                        break
                    buffer = token
                    try:
                        if size > len(token):
                            buffer = mmap.mmap(-1, size)
                        spool.seek(start)
                        _read_into(spool, buffer, size)
                    except BaseException:
                        if buffer is not token:
                            buffer.close()
                        free.put(token)
                        raise
                    # in this thread's context: the put joins its batch (see blockstore.batch)
                    pending.append((pool.submit(contextvars.copy_context().run, put, cid, token, buffer, size), size))
                report(False)
        finally:
            wait([f for f, _ in pending if f is not None])
        report(True)


class _Skipped(Exception):
    """A put that _put_in_parallel did not start because an earlier one had failed."""


def _read_into(spool: BinaryIO, buffer: mmap.mmap, size: int) -> None:
    with memoryview(buffer) as view:
        got = read_full(spool, view[:size])
    if got != size:
        raise OSError(f"the import spool ended {size - got} bytes early")


def _import_batch(store: BlockStore) -> contextlib.AbstractContextManager[None]:
    """The store's batch: for a FilesystemBlockstore with its fsyncs on background threads
    and large blocks past the page cache (they must be on disk before the import returns
    anyway, and new page-cache pages are what costs most on these VMs); inside a batch the
    caller already holds, that outer batch's settings."""
    if isinstance(store, FilesystemBlockstore):
        return store.batch(background=True, direct=True)
    batch = getattr(store, "batch", None)
    return batch() if batch is not None else contextlib.nullcontext()


def import_car(store: BlockStore, src: BinaryIO, progress: Callable[[int], None] | None = None,
               checked: Callable[[int], None] | None = None) -> list[CID]:
    """Verify a whole CARv1 stream, then add its blocks to `store`; returns its roots.
    Any bad block or framing error raises and leaves the store unchanged. `progress` and
    `checked`: as for import_blocks (the reading is the caller's to count, e.g. by
    wrapping `src`)."""
    roots, blocks = read_car(src)
    import_blocks(store, blocks, progress, checked)
    return roots
