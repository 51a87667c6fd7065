"""How a FilesystemBlockstore batch makes its puts durable: deferred per-file fsyncs,
background fsync threads, or one syncfs(2) of the store's filesystem (sync_method)."""
from __future__ import annotations

import dataclasses
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path

from vault import _fileio
from vault._fileio import fsync_dir
from vault.blockstore._layout import block_cid
from vault.errors import BlockMismatchError

SYNC_METHODS = ("auto", "fsync", "syncfs")
_SYNCFS_CHEAP = 64 << 20  # dirty + writeback bytes (whole machine) below which syncfs is cheap


def unflushed_bytes() -> int | None:
    """Dirty + Writeback from /proc/meminfo (the whole machine), or None if unknown."""
    try:
        with open("/proc/meminfo", "rb") as fh:
            fields = dict(line.split(b":", 1) for line in fh.read().splitlines() if b":" in line)
        return sum(int(fields[k].split()[0]) * 1024 for k in (b"Dirty", b"Writeback"))
    except (OSError, KeyError, ValueError, IndexError):
        return None


def syncfs_pays(read_unflushed: Callable[[], int | None] = unflushed_bytes) -> bool:
    """sync_method="auto": syncfs when the machine has little else waiting to be written
    (so syncfs costs about what our own files need), else per-file fsyncs."""
    if _fileio.SYNCFS is None:
        return False
    pending = read_unflushed()
    return pending is not None and pending < _SYNCFS_CHEAP


class Suspects:
    """What a store does with a block file whose fsync (or its directory's, or the batch's
    syncfs) failed. Linux marks the dirty pages of a failed writeback clean, so the page
    cache can go on holding a whole block that never reached the disk: a put or adopt would
    find it "present and whole", and a second fsync would succeed without writing anything
    (PostgreSQL stops on such an error; a content-addressed store can simply rewrite). So
    the block is written again at once, as a new file: its bytes read back (the page cache
    still has them) and checked against the CID its name stands for, written to a temp
    file, fsynced, renamed over it, and its directory fsynced. Nothing is ever missing or
    moved (a syncfs or directory failure names no file, so every file of the batch is
    rewritten, another writer's durable copies included: the same bytes, replaced
    atomically). The batch still raises the error. Only a block whose rewrite fails too is
    left as it was and remembered by this store object, whose next put writes it again
    (another process cannot know it: the disk is failing then, and its own writes fail)."""

    def __init__(self) -> None:
        self._paths: set[Path] = set()
        self._lock = threading.Lock()

    def failed(self, path: Path) -> None:
        """The sync of the block file at `path` failed: whichever file is there now is
        rewritten (the same bytes, whoever wrote it)."""
        try:
            _rewrite(path)
        except FileNotFoundError:
            return  # deleted meanwhile (a gc): nothing to make durable
        except (OSError, BlockMismatchError):  # a damaged copy: put repairs it (it hashes what it finds)
            self.remember(path)

    def remember(self, path: Path) -> None:
        """`path` is written again by this store object's next put of it."""
        with self._lock:
            self._paths.add(path)

    def discard(self, path: Path) -> None:
        if self._paths:  # the common case: no lock, no work
            with self._lock:
                self._paths.discard(path)

    def __contains__(self, path: Path) -> bool:
        return bool(self._paths) and path in self._paths


def _block_files(shard: Path) -> list[Path]:
    try:
        with os.scandir(shard) as entries:
            return [Path(e.path) for e in entries if e.name.endswith(".data") and not e.name.startswith(".")]
    except OSError:
        return []


def _rewrite(path: Path) -> None:
    """The block file at `path` written anew and made durable (see Suspects)."""
    cid = block_cid(path.stem)
    if cid is None:
        raise FileNotFoundError(path)  # not a block file's name: not ours to rewrite
    data = path.read_bytes()
    cid.verify(data)
    _fileio.write_durably(path, data)


@dataclasses.dataclass
class Batch:
    """One batch() of a store: who makes its puts durable, and whether they go past the
    page cache (cleared when the filesystem refuses O_DIRECT)."""

    flusher: Flusher | None
    direct: bool
    open: bool = True


class Flusher:
    """The fsyncs of one batch. Deferred (default): remember the files and shard
    directories, fsync them all in finish() (each directory once). background=True:
    _THREADS threads fsync each file and then its shard directory as soon as the file is
    submitted (after its rename), overlapping the disk writes with the caller's work (two
    fsyncs in flight keep the disk busier than one); a bounded queue keeps at most _DEPTH
    descriptors waiting, and finish() waits for the threads. finish() re-raises the first
    failure; every file whose sync failed (or may have: all of a failed syncfs's or
    deferred flush's) is added to `suspects`."""

    _DEPTH = 64
    _THREADS = 2

    def __init__(self, background: bool, syncfs: Path | None = None, *, recheck: bool = False,
                 suspects: Suspects | None = None) -> None:
        self.background = background
        self._suspects = suspects or Suspects()
        self.syncfs = syncfs  # set: the whole batch is made durable by one syncfs of it
        self._recheck = recheck  # "auto": at the end, per-file fsyncs if the machine got busy
        self._lock = threading.Lock()
        self._files: list[Path] = []
        self._known: set[Path] = set()  # deferred and syncfs: the files in _files (each once)
        self._dirs: set[Path] = set()
        self._parents: set[Path] = set()  # directories that got a new shard directory
        self._error: BaseException | None = None
        self._failed_dirs: set[Path] = set()  # background: shards whose fsync failed
        self._closed = False
        self._queue: queue.Queue[tuple[int, Path] | None] | None = None  # (fd, block file)
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
            fd, path = item
            try:
                if self._error is None:
                    try:
                        os.fsync(fd)
                    except BaseException:
                        self._suspects.failed(path)
                        raise
                    try:
                        fsync_dir(path.parent)  # the rename into it came before: it is covered
                    except BaseException:
                        self._failed_dirs.add(path.parent)  # all of its block files: finish()
                        raise
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
                    self._start().put((fd, path))
                return
        try:
            os.fsync(fd)
            fsync_dir(path.parent)
        except BaseException:
            self._suspects.failed(path)
            raise
        finally:
            os.close(fd)

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
                self._start().put((fd, path))
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
            # every block file of a shard whose fsync failed: the other thread may have taken
            # some for synced (Linux reports a writeback error once, to whoever asks first);
            # listing the shard keeps no paths during the batch (same bytes, replaced atomically)
            for shard in self._failed_dirs:
                for path in _block_files(shard):
                    self._suspects.failed(path)
            raise self._error
        if self.syncfs is not None and not (self._recheck and not syncfs_pays()):
            try:
                _fileio.syncfs(self.syncfs)
            except BaseException:
                for path in self._files:  # which of them the failure touched is not known
                    self._suspects.failed(path)
                raise
            return
        # per-file, also when "auto" chose syncfs but much else got dirty meanwhile (a long
        # batch): then syncfs would wait for other writers' data, this only for ours
        flush(self._files, self._dirs | self._parents, self._suspects)


def flush(files: list[Path], dirs: set[Path], suspects: Suspects) -> None:
    """fsync each file, then each directory, all of them; a file whose fsync failed, and
    the files in a directory whose fsync failed, go to `suspects`; the first error is
    raised at the end."""
    error: BaseException | None = None
    for path in files:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # deleted meanwhile
        try:
            os.fsync(fd)
        except OSError as exc:
            error = error or exc
            suspects.failed(path)
        finally:
            os.close(fd)
    for shard in dirs:
        try:
            fsync_dir(shard)
        except OSError as exc:
            error = error or exc
            for path in files:
                if path.parent == shard:
                    suspects.failed(path)
    if error is not None:
        raise error
