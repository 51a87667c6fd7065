"""Block stores: content-addressed storage of blocks, keyed by multihash (as Kubo does).

    BlockStore (Protocol)      put / get / has / delete / iter_cids
    PinningBlockStore          + pin / unpin / pins / gc
    FilesystemBlockstore       the embedded default (on-disk, sharded, atomic, verified)
    MemoryBlockstore           for tests and short-lived staging

Blocks are identified by their multihash: a raw and a dag-pb CID with the same digest name
the same bytes, and `iter_cids()` yields CIDv1 **raw** CIDs (what Kubo's `refs local`
returns), because the store does not remember which codec a block was put under.

Every `get` verifies the bytes against the CID (BlockMismatchError); `put` refuses a block
that does not hash to its CID. Pins are recursive: pinning a root walks its dag-pb links,
requires every block to be present, and protects the whole DAG from `gc`. An import holds
`with store.importing():` from its first put to its pin, and `gc` waits until no import
does (and new imports wait for a running gc), as Kubo's GC lock does: in this process, and
for a FilesystemBlockstore in every process on the same store (flock(2) on
`<root>/gc.lock`). Vault.seal and the CLI's add and CAR import do; a caller that puts
blocks without it must not run gc meanwhile.

On-disk layout of FilesystemBlockstore (compatible in spirit with go-ds-flatfs
"next-to-last/2"):

    <root>/blocks/<SS>/<KEY>.data     KEY = base32 upper-case, unpadded, of the multihash
                                      ("CIQ…"); SS = KEY[-3:-1]
    <root>/blocks/SHARDING            "/repo/flatfs/shard/v1/next-to-last/2" (as flatfs)
    <root>/gc.lock                    empty; imports flock it shared, gc exclusive
    <root>/pins/<KEY>.pin             one file per pin, KEY = base32 upper-case, unpadded,
                                      of the CID's binary form; it holds the CID string
                                      (a pins.json of earlier versions is moved into pins/)

A durable store (sync=True) makes all 1024 shard directories when it is first opened.

Durability: a block is written to a temp file in its shard directory and renamed into
place, so a reader never sees a partial block. With `sync=True` (default) each put fsyncs
the file before the rename and the directory after it. Inside `with store.batch():` the
fsyncs are deferred: by default to the end of the batch (one pass over the written files,
then each shard directory once); with `batch(background=True)` two threads fsync each
block file, then its shard directory, as soon as the file is renamed into place, while the
caller goes on writing, and the end of the batch waits for them. Either way, when
the outermost batch exits, every block put inside it (bytes and directory entry) is
durable, and a failed fsync is raised there. A shard directory is made on its first
block, and then the blocks directory is fsynced too (inside a batch: once, at its end), so
that the shard's entry is as durable as the block (go-ds-flatfs does the same).
`sync_method` picks how a batch is made durable: "fsync" as above; "syncfs" writes every
block and its directory entry without syncing them and ends the batch with one syncfs(2)
of the store's filesystem (one device flush and the metadata written together, instead of
two flushes and two metadata writes per block: 5-15% of a seal on these VMs); "auto"
(default) takes syncfs when the machine has under 64 MiB waiting to be written (Dirty +
Writeback in /proc/meminfo) at the start of the batch and still at its end, else fsyncs
the batch's own files and shards at its end. syncfs also makes whatever else is dirty on that
filesystem durable: that is why "auto" looks first, and a store on a busy shared
filesystem can pin "fsync". Single puts outside a batch always fsync.
A batch belongs to the context that entered it (a contextvars.ContextVar of the store):
the puts of that thread, and of the worker threads it starts with a copy of its context
(vault/_pipeline._Sink, vault/car's put threads), join it; a put from any other thread,
or another thread's batch, has its own durability, so that one seal never returns before
its blocks are durable because another seal's batch was still open.
`batch(direct=True)` writes large blocks past the page cache (O_DIRECT; where the
accelerator is built, bytes that are not page-aligned are first copied into an aligned
buffer, which costs far less than new page-cache pages). With the native
accelerator (vault/_accel: tl_write_block) a put is one call that creates, writes, fsyncs,
renames and fsyncs the shard directory without the GIL; inside `batch(background=True)`
it then fsyncs inline (the caller's threads are the background: seal runs six writers)
instead of handing the file to the fsync threads. The files, their order of operations
and the guarantees are the same; tests/vault/test_blockstore_native.py traces them. A crash inside an
unfinished batch can leave torn blocks, which are detected on read (hash check) and
replaced by the next put of the same block: put reads a block file that is already
there with the right size and keeps it only if it hashes to its CID (`holds`), so a
re-import repairs what a crash or bit rot damaged. With `sync=False` nothing is fsynced (tests, scratch
stores). A pin file is always written with temp + fsync + rename + directory fsync.

`get(cid, verify=False)` skips the hash check for a caller that verifies the block itself
(unixfs.export does); every other read is verified here. `get(cid, direct=True)` reads a
large block past the page cache, unless all of it is there already (cachestat(2)).
"""
from __future__ import annotations

import base64
import contextlib
import contextvars
import ctypes
import dataclasses
import errno
import fcntl
import json
import mmap
import os
import platform
import queue
import secrets
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from vault import _accel
from vault._mfbase import FormatError
from vault._mfdagpb import link_cids
from vault.cid import CID, DAG_PB, RAW
from vault.errors import (BlockMismatchError, BlockNotFoundError, InputValidationError, IntegrityError,
                          InvalidCIDError)

__all__ = ["BlockStore", "FilesystemBlockstore", "MemoryBlockstore", "PinningBlockStore", "walk_dag"]


@runtime_checkable
class BlockStore(Protocol):
    def put(self, cid: CID, data: bytes) -> None: ...
    def get(self, cid: CID) -> bytes: ...
    def has(self, cid: CID) -> bool: ...
    def delete(self, cid: CID) -> None: ...
    def iter_cids(self) -> Iterator[CID]: ...


@runtime_checkable
class PinningBlockStore(BlockStore, Protocol):
    def pin(self, root: CID) -> None: ...
    def importing(self) -> contextlib.AbstractContextManager[None]: ...
    def unpin(self, root: CID) -> bool: ...
    def pins(self) -> frozenset[CID]: ...
    def gc(self) -> int: ...


def walk_dag(store: BlockStore, root: CID, *, strict: bool = True) -> Iterator[CID]:
    """Yield every CID of the DAG under `root` once (depth-first, pre-order, links in
    order). dag-pb blocks are read (verified) to find their links; other blocks are only
    checked for presence. strict: a missing block raises BlockNotFoundError, otherwise it
    is yielded anyway and its subtree skipped."""
    seen: set[bytes] = set()
    stack = [root]
    while stack:
        cid = stack.pop()
        if cid.multihash in seen:
            continue
        seen.add(cid.multihash)
        if cid.codec == DAG_PB:
            try:
                block = store.get(cid)
            except BlockNotFoundError:
                if strict:
                    raise
                yield cid
                continue
            try:
                links = link_cids(block)
            except FormatError as exc:
                raise IntegrityError(f"malformed dag-pb block {cid}: {exc}") from None
            stack.extend(reversed(links))
        elif strict and not store.has(cid):
            raise BlockNotFoundError(f"block {cid} (under {root}) is not in the store")
        yield cid


class _Pinning:
    """Recursive pins and gc on top of put/get/has/delete/iter_cids. A store keeps its pins
    with _add_pin / _remove_pin / _load_pins, each pin on its own (no read-modify-write of
    a shared list, so two writers cannot lose each other's pin)."""

    _lock: threading.RLock
    _holding: threading.local  # .depth: this thread's importing() nesting

    def _load_pins(self) -> set[CID]:
        raise NotImplementedError

    def _gate(self, exclusive: bool) -> contextlib.AbstractContextManager[None]:
        """Shared (imports) or exclusive (gc) hold of the store's import gate."""
        raise NotImplementedError

    @contextlib.contextmanager
    def importing(self) -> Iterator[None]:
        """Hold while putting blocks that are not pinned yet, up to and including their pin:
        gc() waits for every holder, and a new holder waits for a running gc(). Nestable;
        gc() inside it raises (it would wait for itself)."""
        with self._gate(False):
            self._holding.depth = getattr(self._holding, "depth", 0) + 1
            try:
                yield
            finally:
                self._holding.depth -= 1

    def _add_pin(self, root: CID) -> None:
        raise NotImplementedError

    def _remove_pin(self, root: CID) -> bool:
        raise NotImplementedError

    def pin(self, root: CID) -> None:
        """Pin `root` recursively; BlockNotFoundError if any block of its DAG is missing.
        Pinning a root that is already pinned changes nothing."""
        with self.importing():  # no gc between the walk and the pin
            for _ in walk_dag(self, root, strict=True):  # type: ignore[arg-type]
                pass
            with self._lock:
                self._add_pin(root)

    def _pin_stored(self, root: CID) -> None:
        """pin() for a caller that has just put every block of root's DAG into this store
        itself inside importing() (Vault.seal, whose puts all returned, so no gc can have
        removed one): the walk that would only find them again (a stat per block: 8 ms per
        256 MiB, 3% of a seal) is skipped."""
        with self._lock:
            self._add_pin(root)

    def unpin(self, root: CID) -> bool:
        """Remove a pin; returns whether it existed."""
        with self._lock:
            return self._remove_pin(root)

    def pins(self) -> frozenset[CID]:
        with self._lock:
            return frozenset(self._load_pins())

    def gc(self) -> int:
        """Delete every block not reachable from a pin; returns how many were removed. Waits
        until no import holds importing() (in any process, for a FilesystemBlockstore).
        A pinned DAG with a dag-pb node missing stops gc before it deletes anything
        (BlockNotFoundError): what that node links to is unknown, and deleting it would
        leave the DAG broken for good once the node is put back (Kubo's gc aborts too). A
        missing raw leaf has nothing under it: gc goes on."""
        if getattr(self._holding, "depth", 0):
            raise InputValidationError("gc() inside importing() would wait for itself")
        with self._gate(True), self._lock:
            self._restore_misplaced()
            keep: set[bytes] = set()
            for root in self._load_pins():
                for cid in walk_dag(self, root, strict=False):  # type: ignore[arg-type]
                    if cid.codec == DAG_PB and not self.has(cid):  # type: ignore[attr-defined]
                        raise BlockNotFoundError(
                            f"gc stopped, nothing removed: block {cid} of the DAG pinned at {root} is not in "
                            "the store, so the blocks it links to are unknown; put it back (e.g. car import) "
                            "or unpin the root")
                    keep.add(cid.multihash)
            doomed = [c for c in self.iter_cids() if c.multihash not in keep]  # type: ignore[attr-defined]
            for cid in doomed:
                self.delete(cid)  # type: ignore[attr-defined]
            return len(doomed) + self._sweep(keep)

    def _restore_misplaced(self) -> None:
        """gc's first step, under its exclusive gate: put back what sits where get() cannot
        find it. Nothing to do here."""

    def _sweep(self, keep: set[bytes]) -> int:
        """gc's last step, under its exclusive gate: remove what is not a block of the
        store but takes room in it; returns how many block-like files went. None here."""
        return 0


class _Gate:
    """A shared/exclusive lock within one process (MemoryBlockstore's import gate)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False

    @contextlib.contextmanager
    def hold(self, exclusive: bool) -> Iterator[None]:
        with self._cond:
            while self._exclusive or (exclusive and self._shared):
                self._cond.wait()
            if exclusive:
                self._exclusive = True
            else:
                self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                if exclusive:
                    self._exclusive = False
                else:
                    self._shared -= 1
                self._cond.notify_all()


class MemoryBlockstore(_Pinning):
    """In-memory store with the same behaviour as FilesystemBlockstore."""

    def __init__(self) -> None:
        self._blocks: dict[bytes, bytes] = {}
        self._pins: set[CID] = set()
        self._lock = threading.RLock()
        self._holding = threading.local()
        self._gates = _Gate()

    def put(self, cid: CID, data: bytes) -> None:
        data = bytes(data)
        cid.verify(data)
        self._blocks[cid.multihash] = data

    def get(self, cid: CID, *, verify: bool = True) -> bytes:
        try:
            data = self._blocks[cid.multihash]
        except KeyError:
            raise BlockNotFoundError(f"block {cid} is not in the store") from None
        if verify:
            cid.verify(data)
        return data

    def has(self, cid: CID) -> bool:
        return cid.multihash in self._blocks

    def delete(self, cid: CID) -> None:
        self._blocks.pop(cid.multihash, None)

    def iter_cids(self) -> Iterator[CID]:
        return iter([CID(1, RAW, mh) for mh in list(self._blocks)])

    def __len__(self) -> int:
        return len(self._blocks)

    def _load_pins(self) -> set[CID]:
        return set(self._pins)

    def _gate(self, exclusive: bool) -> contextlib.AbstractContextManager[None]:
        return self._gates.hold(exclusive)

    def _add_pin(self, root: CID) -> None:
        self._pins.add(root)

    def _remove_pin(self, root: CID) -> bool:
        if root not in self._pins:
            return False
        self._pins.discard(root)
        return True


_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_SHARDING = "/repo/flatfs/shard/v1/next-to-last/2"  # what go-ds-flatfs writes for this layout


def _key(multihash: bytes) -> str:
    return base64.b32encode(multihash).decode("ascii").rstrip("=")


def _block_cid(key: str) -> CID | None:
    """The raw CID a block file's name stands for, or None if it names no sha2-256 multihash."""
    try:
        return CID(1, RAW, base64.b32decode(key + "=" * (-len(key) % 8)))
    except (ValueError, InvalidCIDError):
        return None


_STALE_TEMP = 3600.0  # seconds: a temp file older than this in the store is a crashed write's


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_text_durably(path: Path, text: str) -> None:
    """Write a small ASCII file whole or not at all: a temp file beside it, fsync, rename
    over `path`, fsync of the directory. A failure removes the temp file."""
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        with open(tmp, "w", encoding="ascii") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


_ALIGN = 4096  # O_DIRECT: offsets, lengths and memory aligned to >= any common logical block size
_DIRECT_MIN = 64 << 10  # smaller blocks go through the page cache: a direct write would only add latency
_O_DIRECT = getattr(os, "O_DIRECT", 0)
# With the native accelerator, a put is one call that releases the GIL once (vault/_accel
# tl_write_block: create, write, fsync, rename, directory fsync) instead of six Python
# syscalls that each drop and retake it; seal's writer threads then block in the kernel
# without waking one another (on these VMs every such wake-up costs a cross-CPU IPI).
_NATIVE = _accel.available


def _thread_buffer(local: threading.local, size: int) -> mmap.mmap:
    """This thread's page-aligned buffer kept in `local`, grown to at least `size` bytes
    (a multiple of _ALIGN)."""
    buf = getattr(local, "buf", None)
    if buf is None or len(buf) < size:
        buf = local.buf = mmap.mmap(-1, -(-size // _ALIGN) * _ALIGN)
    return buf


_WRITE_BUFFERS = threading.local()  # one aligned buffer per putting thread


def _aligned_copy(data: bytes | bytearray | memoryview) -> memoryview:
    """`data` copied into this thread's page-aligned buffer (valid until its next call):
    a direct put of bytes that are not page-aligned (an Importer's blocks, as in `ipfs
    add`) would otherwise be refused and go through the page cache, and one copy costs
    far less than the new page-cache pages."""
    view = memoryview(_thread_buffer(_WRITE_BUFFERS, len(data)))[: len(data)]
    view[:] = data
    return view


def _write_direct(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write `data` to the new, empty file `fd`, opened with O_DIRECT. Memory that is not
    page-aligned makes the kernel refuse (EINVAL) before anything is written: then the file
    is written through the page cache instead."""
    try:
        _write_all(fd, data)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        os.ftruncate(fd, 0)  # a partial direct write ahead of the refusal, if any
        os.lseek(fd, 0, os.SEEK_SET)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~_O_DIRECT)
        _write_all(fd, data)


SYNC_METHODS = ("auto", "fsync", "syncfs")
_SYNCFS_CHEAP = 64 << 20  # dirty + writeback bytes (whole machine) below which syncfs is cheap


def _libc_syncfs() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):  # not Linux/glibc: per-file fsyncs only
        return None


_SYNCFS = _libc_syncfs()


def _syncfs(path: Path) -> None:
    """syncfs(2) of the filesystem holding `path`: every dirty inode, data and metadata
    block of that filesystem written, then one cache flush of its device."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _SYNCFS(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs: {os.strerror(err)}", str(path))
    finally:
        os.close(fd)


def _unflushed_bytes() -> int | None:
    """Dirty + Writeback from /proc/meminfo (the whole machine), or None if unknown."""
    try:
        with open("/proc/meminfo", "rb") as fh:
            fields = dict(line.split(b":", 1) for line in fh.read().splitlines() if b":" in line)
        return sum(int(fields[k].split()[0]) * 1024 for k in (b"Dirty", b"Writeback"))
    except (OSError, KeyError, ValueError, IndexError):
        return None


def _syncfs_pays(read_unflushed: Callable[[], int | None] = _unflushed_bytes) -> bool:
    """sync_method="auto": syncfs when the machine has little else waiting to be written
    (so syncfs costs about what our own files need), else per-file fsyncs."""
    if _SYNCFS is None:
        return False
    pending = read_unflushed()
    return pending is not None and pending < _SYNCFS_CHEAP


class _CacheStatRange(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _CacheStat(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64)
                for name in ("nr_cache", "nr_dirty", "nr_writeback", "nr_evicted", "nr_recently_evicted")]


# cachestat(2), Linux >= 6.5: 451 in the generic syscall table and on x86; only called
# where that number is known to be cachestat, since a wrong one would be another syscall.
_NR_CACHESTAT = 451 if sys.platform == "linux" and platform.machine() in ("x86_64", "aarch64", "riscv64") else None
_PAGE = mmap.PAGESIZE


def _libc_syscall() -> Any:
    if _NR_CACHESTAT is None or not hasattr(os, "O_DIRECT"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None


_SYSCALL = _libc_syscall()


def _in_page_cache(fd: int, size: int) -> bool:
    """Whether every page of the first `size` bytes of `fd` is in the page cache, by
    cachestat(2) (no I/O, no change to the cache); False where that is unknown (an older
    kernel: ENOSYS). No library wraps it; the stdlib has no mincore either."""
    if _SYSCALL is None:
        return False
    span, cached = _CacheStatRange(0, size), _CacheStat()
    if _SYSCALL(ctypes.c_long(_NR_CACHESTAT), ctypes.c_int(fd), ctypes.byref(span), ctypes.byref(cached),
                ctypes.c_uint(0)) != 0:
        return False
    return cached.nr_cache * _PAGE >= size


_READ_BUFFERS = threading.local()  # one aligned buffer per reading thread


def _read_direct(path: Path) -> bytes:
    """The file's bytes read with O_DIRECT through this thread's page-aligned buffer;
    through the page cache instead when the file is small, when all of it is already
    there (a block that `ipfs add` or another writer put through the page cache, or that
    was just read: 0.256 s against 0.315 s to open a 256 MiB asset whose blocks were all
    cached, the medians of six interleaved opens here), and on filesystems or files that
    refuse O_DIRECT."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | _O_DIRECT)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return path.read_bytes()
    try:
        size = os.fstat(fd).st_size
        if size < _DIRECT_MIN or _in_page_cache(fd, size):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~_O_DIRECT)
            return _read_fd(fd, size)
        need = -(-size // _ALIGN) * _ALIGN
        view = memoryview(_thread_buffer(_READ_BUFFERS, need))[:need]
        try:
            got = 0
            while got < size:
                n = os.preadv(fd, [view[got:]], got)
                if n == 0:
                    break
                got += n
            return bytes(view[:got])
        finally:
            view.release()
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return path.read_bytes()
    finally:
        os.close(fd)


def _read_fd(fd: int, size: int) -> bytes:
    """Up to `size` bytes from the start of `fd` (fewer only at end of file)."""
    data = os.pread(fd, size, 0)
    while len(data) < size:
        more = os.pread(fd, size - len(data), len(data))
        if not more:
            break
        data += more
    return data


@dataclasses.dataclass
class _Batch:
    """One batch() of a store: who makes its puts durable, and whether they go past the
    page cache (cleared when the filesystem refuses O_DIRECT)."""

    flusher: _Flusher | None
    direct: bool
    open: bool = True


class _Flusher:
    """The fsyncs of one batch. Deferred (default): remember the files and shard
    directories, fsync them all in finish() (each directory once). background=True:
    _THREADS threads fsync each file and then its shard directory as soon as the file is
    submitted (after its rename), overlapping the disk writes with the caller's work (two
    fsyncs in flight keep the disk busier than one); a bounded queue keeps at most _DEPTH
    descriptors waiting, and finish() waits for the threads. finish() re-raises the first
    failure."""

    _DEPTH = 64
    _THREADS = 2

    def __init__(self, background: bool, syncfs: Path | None = None, *, recheck: bool = False) -> None:
        self.background = background
        self.syncfs = syncfs  # set: the whole batch is made durable by one syncfs of it
        self._recheck = recheck  # "auto": at the end, per-file fsyncs if the machine got busy
        self._lock = threading.Lock()
        self._files: list[Path] = []
        self._known: set[Path] = set()  # deferred and syncfs: the files in _files (each once)
        self._dirs: set[Path] = set()
        self._parents: set[Path] = set()  # directories that got a new shard directory
        self._error: BaseException | None = None
        self._closed = False
        self._queue: queue.Queue[tuple[int, Path] | None] | None = None
        self._threads: list[threading.Thread] = []

    def _start(self) -> queue.Queue[tuple[int, Path] | None]:
        """The background threads, started by the first submit() (native puts fsync
        inline and never need them). Called with the lock held."""
        if self._queue is None:
            self._queue = queue.Queue(self._DEPTH)
            for n in range(self._THREADS):
                thread = threading.Thread(target=self._run, name=f"blockstore-fsync{n}", daemon=True)
                thread.start()
                self._threads.append(thread)
        return self._queue

    @property
    def closed(self) -> bool:
        return self._closed

    def _run(self) -> None:
        assert self._queue is not None
        while (item := self._queue.get()) is not None:
            fd, shard = item
            try:
                if self._error is None:
                    os.fsync(fd)
                    _fsync_dir(shard)  # the rename into it came before: it is covered
            except BaseException as exc:  # re-raised by finish()
                self._error = self._error or exc
            finally:
                try:
                    os.close(fd)
                except OSError as exc:  # (EIO on NFS): recorded; the thread must live on
                    self._error = self._error or exc

    def submit(self, fd: int, path: Path) -> None:
        """Takes ownership of `fd` (the block file, already renamed to `path`)."""
        with self._lock:  # held across queue.put, so nothing is queued after finish()
            late = self._closed  # a put racing the end of the batch: synced right here
            if not late:
                if self.syncfs is not None or not self.background:
                    if path not in self._known:
                        self._files.append(path)
                        self._dirs.add(path.parent)
                    os.close(fd)
                    self._known.add(path)
                else:
                    self._start().put((fd, path.parent))
                return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(path.parent)

    def add(self, path: Path) -> bool:
        """A deferred batch: `path` (written, renamed, not fsynced) is fsynced at finish().
        False once the batch is finishing: the caller syncs it itself."""
        with self._lock:
            if self._closed:
                return False
            if path not in self._known:
                self._known.add(path)
                self._files.append(path)  # kept in syncfs mode too, for the end's recheck
                self._dirs.add(path.parent)
            return True

    def adopt(self, path: Path) -> bool:
        """A block file found already there (written by another batch, maybe not synced):
        synced with this batch by whatever syncs its own (deferred or syncfs: by path, once;
        background: the fsync threads, each time it is found, by the inode found then: the
        path may have been written again by another batch meanwhile, and keeping no set of
        paths keeps a long batch's memory flat). False once the batch is finishing."""
        if self.syncfs is not None or not self.background:
            return self.add(path)
        with self._lock:
            if self._closed:
                return False
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return True  # deleted meanwhile (a gc): nothing to sync
            try:
                self._start().put((fd, path.parent))
            except BaseException:
                os.close(fd)
                raise
            return True

    def made_dir(self, parent: Path) -> bool:
        """A new shard directory was made in `parent`: fsync `parent` at finish() (once,
        however many shards the batch made). False once the batch is finishing: the caller
        fsyncs it itself."""
        with self._lock:
            if self._closed:
                return False
            self._parents.add(parent)
            return True

    def finish(self) -> None:
        with self._lock:
            self._closed = True
        if self._queue is not None:
            for _ in self._threads:
                self._queue.put(None)
            for thread in self._threads:
                thread.join()
        if self._error is not None:
            raise self._error
        if self.syncfs is not None and not (self._recheck and not _syncfs_pays()):
            _syncfs(self.syncfs)
            return
        # per-file, also when "auto" chose syncfs but much else got dirty meanwhile (a long
        # batch): then syncfs would wait for other writers' data, this only for ours
        _flush(self._files, self._dirs | self._parents)


def _flush(files: list[Path], dirs: set[Path]) -> None:
    for path in files:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # deleted meanwhile
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for shard in dirs:
        _fsync_dir(shard)


class FilesystemBlockstore(_Pinning):
    """Blocks as files under `root` (see the module docstring for layout and durability).

    verify_writes=False skips re-hashing in put(); only for callers that have just hashed
    the block themselves (the importer, read_car, the gateway client). Reads always verify.
    """

    def __init__(self, root: Path | str, *, sync: bool = True, verify_writes: bool = True,
                 sync_method: str = "auto") -> None:
        if sync_method not in SYNC_METHODS:
            raise InputValidationError(f"sync_method must be one of {', '.join(SYNC_METHODS)}, got {sync_method!r}")
        if sync_method == "syncfs" and _SYNCFS is None:
            raise InputValidationError("sync_method='syncfs' needs syncfs(2) (Linux)")
        self.sync_method = sync_method
        self.root = Path(root)
        self._blocks = self.root / "blocks"
        self._blocks.mkdir(parents=True, exist_ok=True)
        self._pins_dir = self.root / "pins"
        self._legacy_pins_path = self.root / "pins.json"  # before pins/ (see _migrate_pins)
        self._sync = sync
        self._verify_writes = verify_writes
        self._lock = threading.RLock()
        self._holding = threading.local()
        self._batch: contextvars.ContextVar[_Batch | None] = contextvars.ContextVar(
            f"vault-batch-{id(self)}", default=None)
        if sync:
            self._make_shards()
        try:
            self._migrate_pins()
        except (OSError, IntegrityError):
            pass  # read-only, or a damaged pins.json: it is read (and reported) where pins are used

    def _make_shards(self) -> None:
        """A durable store makes all 1024 shard directories once, when it is first opened,
        and then writes blocks/SHARDING (go-ds-flatfs's name for its layout file), so that a
        put never makes a directory: seal's cost does not depend on how full the store is.
        A store that cannot (read-only) makes each shard on its first block, as before."""
        marker = self._blocks / "SHARDING"
        if marker.exists():
            return
        try:
            for a in _B32:
                for b in _B32:
                    (self._blocks / (a + b)).mkdir(exist_ok=True)
            _write_text_durably(marker, _SHARDING + "\n")
        except OSError:
            return

    def _path(self, cid: CID) -> Path:
        key = _key(cid.multihash)
        return self._blocks / key[-3:-1] / f"{key}.data"

    # -- blocks ---------------------------------------------------------------------------
    def put(self, cid: CID, data: bytes | bytearray | memoryview) -> None:
        if self._verify_writes:
            cid.verify(data)
        path = self._path(cid)
        batch = self._current_batch()
        if self._present(cid, path, len(data), batch):
            return  # content-addressed: already there (a torn or damaged copy is replaced)
        shard = path.parent
        tmp = shard / f".{path.stem}.{secrets.token_hex(6)}.tmp"
        direct = batch is not None and batch.direct and len(data) % _ALIGN == 0 and len(data) >= _DIRECT_MIN
        if _NATIVE:
            if direct and not _accel.page_aligned(data):
                data = _aligned_copy(data)
            self._put_native(tmp, path, data, direct, batch)
            return
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        fd = self._create(tmp, flags | _O_DIRECT if direct else flags, batch)
        flusher = batch.flusher if batch is not None else None
        try:
            if direct:
                _write_direct(fd, data)
            else:
                _write_all(fd, data)
            if self._sync and flusher is None:
                os.fsync(fd)
            os.replace(tmp, path)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        if flusher is not None:
            flusher.submit(fd, path)  # fsynced later (see batch()); closes fd
            return
        os.close(fd)
        if self._sync:
            _fsync_dir(shard)

    def _put_native(self, tmp: Path, path: Path, data: bytes | bytearray | memoryview, direct: bool,
                    batch: _Batch | None) -> None:
        """put() in one GIL-free call (see _NATIVE), with the same durability: fsynced in
        the call unless a deferred batch takes the file (then at its end)."""
        flusher = batch.flusher if batch is not None else None
        deferred = flusher is not None and (not flusher.background or flusher.syncfs is not None) and not flusher.closed
        inline = self._sync and not deferred
        for attempt in range(2):
            try:
                refused = _accel.write_block(str(tmp), str(path), str(path.parent), data, direct=direct, sync=inline)
                break
            except FileNotFoundError:
                if attempt or path.parent.is_dir():
                    raise
                self._make_shard(path.parent, batch)
        if refused and batch is not None:  # the filesystem has no O_DIRECT: the page cache for the rest of the batch
            batch.direct = False
        if deferred and not flusher.add(path):  # type: ignore[union-attr]
            _flush([path], {path.parent})  # the batch ended meanwhile

    def _make_shard(self, shard: Path, batch: _Batch | None) -> None:
        """Make a shard directory on its first block; then the blocks directory is fsynced
        (at the end of a batch, once), so that the new shard's entry is as durable as the
        block about to land in it (as go-ds-flatfs does)."""
        shard.mkdir(exist_ok=True)
        flusher = batch.flusher if batch is not None else None
        if self._sync and (flusher is None or not flusher.made_dir(self._blocks)):
            _fsync_dir(self._blocks)

    def _create(self, tmp: Path, flags: int, batch: _Batch | None) -> int:
        """Create the temp file `tmp` in its shard directory, making the shard on its first
        block (_make_shard). A filesystem that refuses O_DIRECT (tmpfs before Linux 6.6)
        gets the page cache, for the rest of the batch."""
        for _ in range(2):
            try:
                return os.open(tmp, flags, 0o666)
            except FileNotFoundError:
                self._make_shard(tmp.parent, batch)
            except OSError as exc:
                if exc.errno != errno.EINVAL or not flags & _O_DIRECT:
                    raise
                if batch is not None:
                    batch.direct = False
                flags &= ~_O_DIRECT
        return os.open(tmp, flags, 0o666)

    def get(self, cid: CID, *, verify: bool = True, direct: bool = False) -> bytes:
        """The block's bytes, checked against `cid` (BlockMismatchError) unless
        verify=False, which is only for a caller that checks them itself.

        direct=True reads a large block past the page cache (O_DIRECT, into a reused
        buffer): for a caller that streams a whole file once (open), whose blocks would
        otherwise fill the page cache with pages nobody reads again. On these VMs growing
        the page cache means fresh memory from the host, and open's time per 256 MiB
        drifted from 0.30 to 0.60 s over eight opens; direct reads stayed at 0.30-0.42 s.
        A block that is all in the page cache already is read from there (cachestat(2),
        Linux >= 6.5): no disk read, and nothing added to the cache."""
        path = self._path(cid)
        try:
            data = _read_direct(path) if direct and _O_DIRECT else path.read_bytes()
        except FileNotFoundError:
            raise BlockNotFoundError(f"block {cid} is not in the store") from None
        except (IsADirectoryError, NotADirectoryError):
            raise self._not_a_file(cid, path) from None
        if verify:
            cid.verify(data)
        return data

    def has(self, cid: CID) -> bool:
        return self._path(cid).is_file()

    def holds(self, cid: CID) -> bool:
        """The block is there and whole: its file read and hashed against `cid` (has()
        only looks for the file). A damaged copy makes this False, and a put replaces it."""
        return self._whole(cid, self._path(cid))

    def adopt(self, cid: CID) -> bool:
        """put() for a block that may be there already, without its bytes: True if it is
        there and whole, and then as durable as a put makes it (with this context's batch,
        else now: another batch may have written it and not synced it yet); False if a
        put must write it."""
        return self._present(cid, self._path(cid), None, self._current_batch())

    def _present(self, cid: CID, path: Path, size: int | None, batch: _Batch | None) -> bool:
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        except NotADirectoryError:
            raise self._not_a_file(cid, path) from None
        if not stat.S_ISREG(st.st_mode):
            raise self._not_a_file(cid, path)
        if size is not None and st.st_size != size or not self._whole(cid, path):
            return False
        if self._sync:
            # durable as if put here: with this batch (its syncfs, its deferred fsyncs or its
            # fsync threads; once per file), else now (a file with nothing dirty costs little)
            flusher = batch.flusher if batch is not None else None
            if flusher is None or not flusher.adopt(path):
                _flush([path], {path.parent})
        return True

    @staticmethod
    def _whole(cid: CID, path: Path) -> bool:
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return False
        try:
            cid.verify(data)
        except BlockMismatchError:
            return False
        return True

    def delete(self, cid: CID) -> None:
        path = self._path(cid)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except NotADirectoryError:
            raise self._not_a_file(cid, path) from None
        except (IsADirectoryError, PermissionError) as exc:  # Linux: EISDIR; macOS: EPERM
            if not path.is_dir():
                raise
            raise self._not_a_file(cid, path) from exc

    @staticmethod
    def _not_a_file(cid: CID, path: Path) -> IntegrityError:
        odd = path.parent if path.parent.exists() and not path.parent.is_dir() else path
        return IntegrityError(f"the store is damaged: {odd} (block {cid}{', its shard' if odd != path else ''}) "
                              "is not a regular file; remove it, then put the block again")

    def iter_cids(self) -> Iterator[CID]:
        """Every block file of the store: regular files only, each under its canonical
        name in its own shard (what get() reads); anything else in the shards is left to
        gc (_sweep)."""
        for cid, _path, kind in self._scan():
            if kind == "block":
                yield cid  # type: ignore[misc]

    def _scan(self) -> Iterator[tuple[CID | None, Path, str]]:
        """(cid, path, kind) of each entry in the shard directories. kind: "block" (a
        regular file, canonical name, right shard), "misplaced" (a block file under another
        name or in another shard: get() never reads it), "temp" (a put's or a pin's temp
        file) or "other" (left alone: not ours to remove)."""
        with os.scandir(self._blocks) as shards:
            dirs = sorted((e.name, e.path) for e in shards if e.is_dir(follow_symlinks=False))
        for name, shard_path in dirs:
            with os.scandir(shard_path) as entries:
                found = sorted((e.name, e.is_file(follow_symlinks=False)) for e in entries)
            for entry, regular in found:
                path = Path(shard_path, entry)
                if not regular:
                    yield None, path, "other"
                elif entry.startswith("."):
                    yield None, path, "temp" if entry.endswith(".tmp") else "other"
                elif entry.endswith(".data"):
                    cid = _block_cid(entry[: -len(".data")])
                    if cid is None:
                        yield None, path, "other"
                    elif _key(cid.multihash) + ".data" == entry and name == entry[-8:-6]:
                        yield cid, path, "block"
                    else:
                        yield cid, path, "misplaced"
                else:
                    yield None, path, "other"

    def _restore_misplaced(self) -> None:
        """A block file under a wrong name or in a wrong shard (a bad restore or copy) whose
        own path has no whole copy is moved there, if it hashes right: the walk that
        follows then finds it, so a pinned DAG is neither refused for it nor loses it.
        A failed move leaves the file where it was."""
        for cid, path, kind in self._scan():
            if kind != "misplaced" or cid is None:
                continue
            home = self._path(cid)
            if self._whole(cid, home) or not self._whole(cid, path):
                continue  # a spare, or damaged: _sweep removes it after the walk
            try:
                home.parent.mkdir(exist_ok=True)
                os.replace(path, home)
                if self._sync:
                    _flush([home], {home.parent, path.parent, self._blocks})
            except OSError:
                continue

    def _sweep(self, keep: set[bytes]) -> int:
        """Block files that get() cannot reach (misplaced) go once a whole copy is in place
        or if they are damaged (_restore_misplaced moved the only whole copies home); so do
        temp files of puts and pins older than _STALE_TEMP (a crashed put's: a put under
        way takes milliseconds, and one outside importing() is not held off by gc's
        gate). Only regular files; one that cannot be removed is left for the next gc."""
        removed = 0
        temps = []
        for cid, path, kind in self._scan():
            if kind == "misplaced" and cid is not None:
                if not self._whole(cid, self._path(cid)) and self._whole(cid, path):
                    continue  # the only whole copy, and it could not be moved: keep it
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed += 1
            elif kind == "temp":
                temps.append(path)
        with contextlib.suppress(OSError):
            temps += [self._pins_dir / n for n in os.listdir(self._pins_dir) if n.startswith(".") and n.endswith(".tmp")]
        stale = time.time() - _STALE_TEMP
        for path in temps:
            with contextlib.suppress(OSError):
                st = path.lstat()
                if stat.S_ISREG(st.st_mode) and st.st_mtime < stale:
                    path.unlink()
        return removed

    @contextlib.contextmanager
    def batch(self, *, background: bool = False, direct: bool = False) -> Iterator[None]:
        """Defer the fsyncs of the puts inside the block; every block put inside it is
        durable once it exits. Default: all fsyncs at the end. With sync_method "syncfs"
        (or "auto" on a quiet machine) the batch ends with one syncfs instead and no put
        inside it fsyncs. The batch is this context's (see the module docstring): puts from
        other threads are not deferred into it. A batch entered inside another of the same
        context joins it (its options are the outer one's).
        background=True: each block file and then its shard directory are fsynced by
        background threads while the caller goes on, so the end only waits for the last few.

        direct=True: large blocks (>= 64 KiB, a multiple of 4 KiB, in page-aligned memory
        such as an mmap) are written past the page cache (O_DIRECT). They must reach the
        disk before the batch ends anyway, so caching them would only cost copying them
        into freshly allocated pages; a reader right after the batch reads them from the
        disk. Other blocks, and filesystems without O_DIRECT, use the page cache."""
        if self._current_batch() is not None:
            yield
            return
        flusher = None
        if self._sync:
            whole = self.sync_method == "syncfs" or (self.sync_method == "auto" and _syncfs_pays())
            flusher = _Flusher(background, self.root if whole else None, recheck=self.sync_method == "auto")
        batch = _Batch(flusher, direct and bool(_O_DIRECT))
        token = self._batch.set(batch)
        try:
            yield
        finally:
            batch.open = False  # a copied context that still sees it (a worker's) treats it as gone
            try:
                self._batch.reset(token)
            except ValueError:  # left from another context (a generator resumed elsewhere)
                if self._batch.get() is batch:  # not that context's own batch, if it has one
                    self._batch.set(None)
            finally:
                if flusher is not None:
                    flusher.finish()

    def _current_batch(self) -> _Batch | None:
        batch = self._batch.get()
        return batch if batch is not None and batch.open else None

    # -- pins -----------------------------------------------------------------------------
    # One file per pin in <root>/pins/, named by the base32 of the CID's binary form (a
    # CIDv0 and a CIDv1 of the same DAG are two pins, as in Kubo; the names are safe on
    # case-insensitive filesystems) and holding the CID string for whoever lists the
    # folder. A pin is written temp + fsync + rename + directory fsync: adding one costs the
    # same however many there are, and two processes that pin at once both keep theirs.
    # Stores written before kept every pin in pins.json, rewritten whole for each pin (a
    # lost update when two processes pinned at once): it is still read, and moved into
    # pins/ when the store is opened, or before an unpin.

    @contextlib.contextmanager
    def _gate(self, exclusive: bool) -> Iterator[None]:
        # flock(2) locks belong to the open file description, so each hold opens the file
        # anew: threads of this process and other processes exclude each other alike.
        fd = os.open(self.root / "gc.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)  # waits, without the GIL
            yield
        finally:
            os.close(fd)  # releases it

    def _pin_path(self, root: CID) -> Path:
        return self._pins_dir / f"{_key(root.to_bytes())}.pin"

    def _load_pins(self) -> set[CID]:
        pins = self._legacy_pins()
        try:
            names = os.listdir(self._pins_dir)
        except FileNotFoundError:
            return pins
        for name in names:
            if name.startswith(".") or not name.endswith(".pin"):
                continue  # a temp file of a pin being written, or not ours
            key = name[: -len(".pin")]
            try:
                pins.add(CID.decode(base64.b32decode(key + "=" * (-len(key) % 8))))
            except (ValueError, InvalidCIDError):
                # Not a CID: what it pinned is unknown, so gc must not guess.
                raise IntegrityError(f"pin file {self._pins_dir / name} is corrupt: its name is not a CID") from None
        return pins

    def _add_pin(self, root: CID) -> None:
        path = self._pin_path(root)
        if path.exists():
            return
        self._make_pins_dir()
        _write_text_durably(path, f"{root}\n")

    def _remove_pin(self, root: CID) -> bool:
        self._migrate_pins()  # a pin still in pins.json would survive its unpin
        try:
            self._pin_path(root).unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(self._pins_dir)
        return True

    def _make_pins_dir(self) -> None:
        if not self._pins_dir.is_dir():
            self._pins_dir.mkdir(exist_ok=True)
            _fsync_dir(self.root)

    def _legacy_pins(self) -> set[CID]:
        """The pins in a pins.json left by an earlier version (none if there is none)."""
        try:
            doc = json.loads(self._legacy_pins_path.read_text("utf-8"))
        except FileNotFoundError:
            return set()
        except ValueError as exc:
            raise IntegrityError(f"pin file {self._legacy_pins_path} is corrupt: {exc}") from None
        if not isinstance(doc, dict) or doc.get("version") != 1 or not isinstance(doc.get("pins"), list):
            raise IntegrityError(f"pin file {self._legacy_pins_path} has an unknown format")
        try:
            return {CID.decode(s) for s in doc["pins"]}
        except InvalidCIDError as exc:
            raise IntegrityError(f"pin file {self._legacy_pins_path} is corrupt: {exc}") from None

    def _migrate_pins(self) -> None:
        """Move the pins of a legacy pins.json into pins/: each pin file is durable before
        pins.json is removed, so a crash part-way loses nothing (both are read, and the
        next migration finishes the job)."""
        if not self._legacy_pins_path.exists():
            return
        for root in self._legacy_pins():
            self._add_pin(root)
        with contextlib.suppress(FileNotFoundError):  # another process migrated it meanwhile
            self._legacy_pins_path.unlink()
        _fsync_dir(self.root)
