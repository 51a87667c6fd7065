"""FilesystemBlockstore: the embedded default store (see vault/blockstore/__init__.py for
its layout and durability)."""
from __future__ import annotations

import contextlib
import contextvars
import errno
import fcntl
import json
import os
import secrets
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from vault import _accel, _fileio
from vault._fileio import (ALIGN, DIRECT_MIN, O_DIRECT, aligned_copy, fsync_dir, read_direct, write_all,
                           write_direct, write_text_durably)
from vault.blockstore import _flusher
from vault.blockstore._flusher import SYNC_METHODS, Batch, Flusher, Suspects, flush
from vault.blockstore._layout import (B32, SHARDING, STALE_TEMP, b32_bytes, b32_key, owned_by,
                                      owned_entry, scan)
from vault.blockstore._pinning import _Pinning
from vault.cid import CID
from vault.errors import BlockMismatchError, BlockNotFoundError, InputValidationError, IntegrityError, InvalidCIDError

# With the native accelerator, a put is one call that releases the GIL once (vault/_accel
# tl_write_block: create, write, fsync, rename, directory fsync) instead of six Python
# syscalls that each drop and retake it; seal's writer threads then block in the kernel
# without waking one another (on these VMs every such wake-up costs a cross-CPU IPI).
_NATIVE = _accel.available


class FilesystemBlockstore(_Pinning):
    """Blocks as files under `root` (see vault/blockstore/__init__.py for layout and durability).

    verify_writes=False skips re-hashing in put(); only for callers that have just hashed
    the block themselves (the importer, read_car, the gateway client). Reads always verify.
    """

    def __init__(self, root: Path | str, *, sync: bool = True, verify_writes: bool = True,
                 sync_method: str = "auto") -> None:
        if sync_method not in SYNC_METHODS:
            raise InputValidationError(f"sync_method must be one of {', '.join(SYNC_METHODS)}, got {sync_method!r}")
        if sync_method == "syncfs" and _fileio.SYNCFS is None:
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
        self._batch: contextvars.ContextVar[Batch | None] = contextvars.ContextVar(
            f"vault-batch-{id(self)}", default=None)
        self._suspects = Suspects()  # blocks whose sync failed (see Suspects)
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
            for a in B32:
                for b in B32:
                    (self._blocks / (a + b)).mkdir(exist_ok=True)
            write_text_durably(marker, SHARDING + "\n")
        except OSError:
            return

    def owns(self, path: Path | str, *, dir_fd: int | None = None) -> bool:
        """Whether writing a file at `path` would write into the store: in its blocks, a
        shard or its pins (each directory above `path`, symbolic links and `..` resolved,
        is compared with them by device and inode, so a bind mount or another name of them
        counts too), or over its pins.json or gc.lock. An output written there would replace a
        block or a pin, or stop every gc. `dir_fd` (as in os): `path` is a name in that open
        directory, which is the one checked (vault.tempfiles.resolve_output holds the one an
        output is written into); else the path is checked as it is now (a directory on the
        way swapped afterwards is not seen)."""
        return self.owned_by(self.root, path, dir_fd=dir_fd)

    @staticmethod
    def owned_by(root: Path | str, path: Path | str, *, dir_fd: int | None = None) -> bool:
        """owns() for the store at `root`, without opening it (which makes its directories)."""
        if dir_fd is not None:
            return owned_entry(Path(root), dir_fd, os.fspath(path))
        return owned_by(Path(root), Path(path))

    def _path(self, cid: CID) -> Path:
        key = b32_key(cid.multihash)
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
        direct = batch is not None and batch.direct and len(data) % ALIGN == 0 and len(data) >= DIRECT_MIN
        if _NATIVE:
            if direct and not _accel.page_aligned(data):
                data = aligned_copy(data)
            self._put_native(tmp, path, data, direct, batch)
            return
        fd, direct = self._create(tmp, direct, batch)
        flusher = batch.flusher if batch is not None else None
        try:
            if direct:
                write_direct(fd, data)
            else:
                write_all(fd, data)
            if self._sync and flusher is None:
                os.fsync(fd)
            os.replace(tmp, path)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        self._suspects.discard(path)  # written anew; a failed sync below makes it a suspect again
        if flusher is not None:
            flusher.submit(fd, path)  # fsynced later (see batch()); closes fd
            return
        os.close(fd)
        if self._sync:
            try:
                fsync_dir(shard)
            except BaseException:
                self._suspects.failed(path)
                raise

    def _put_native(self, tmp: Path, path: Path, data: bytes | bytearray | memoryview, direct: bool,
                    batch: Batch | None) -> None:
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
            except OSError:
                if inline:  # maybe renamed into place before its directory's fsync failed: the
                    self._suspects.remember(path)  # C call does not say, so nothing is moved aside
                raise
        self._suspects.discard(path)
        if refused and batch is not None:  # the filesystem has no O_DIRECT: the page cache for the rest of the batch
            batch.direct = False
        if deferred and not flusher.add(path):  # type: ignore[union-attr]
            flush([path], {path.parent}, self._suspects)  # the batch ended meanwhile

    def _make_shard(self, shard: Path, batch: Batch | None) -> None:
        """Make a shard directory on its first block; then the blocks directory is fsynced
        (at the end of a batch, once), so that the new shard's entry is as durable as the
        block about to land in it (as go-ds-flatfs does)."""
        shard.mkdir(exist_ok=True)
        flusher = batch.flusher if batch is not None else None
        if self._sync and (flusher is None or not flusher.made_dir(self._blocks)):
            fsync_dir(self._blocks)

    def _create(self, tmp: Path, direct: bool, batch: Batch | None) -> tuple[int, bool]:
        """(fd, direct): the new temp file `tmp` in its shard directory, making the shard on
        its first block (_make_shard), switched to O_DIRECT if `direct` and the filesystem
        allows it. One that refuses O_DIRECT (ramfs, tmpfs before Linux 6.6) gets the page
        cache, for the rest of the batch. O_DIRECT is set after the open: such a filesystem
        refuses it at open only after it has created the file (see tl_write_block)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileNotFoundError:
            self._make_shard(tmp.parent, batch)
            fd = os.open(tmp, flags, 0o666)
        if direct:
            try:
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | O_DIRECT)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    os.close(fd)
                    with contextlib.suppress(OSError):
                        tmp.unlink()
                    raise
                if batch is not None:
                    batch.direct = False
                return fd, False
        return fd, direct

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
            data = read_direct(path) if direct and O_DIRECT else path.read_bytes()
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

    def _present(self, cid: CID, path: Path, size: int | None, batch: Batch | None) -> bool:
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        except NotADirectoryError:
            raise self._not_a_file(cid, path) from None
        if not stat.S_ISREG(st.st_mode):
            raise self._not_a_file(cid, path)
        if path in self._suspects:
            return False  # its sync failed: what the page cache shows may not be on the disk
        if size is not None and st.st_size != size or not self._whole(cid, path):
            return False
        if self._sync:
            # durable as if put here: with this batch (its syncfs, its deferred fsyncs or its
            # fsync threads; once per file), else now (a file with nothing dirty costs little)
            flusher = batch.flusher if batch is not None else None
            if flusher is None or not flusher.adopt(path):
                flush([path], {path.parent}, self._suspects)
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
        for cid, _path, kind in scan(self._blocks):
            if kind == "block":
                yield cid  # type: ignore[misc]

    def _restore_misplaced(self) -> None:
        """A block file under a wrong name or in a wrong shard (a bad restore or copy) whose
        own path has no whole copy is moved there, if it hashes right: the walk that
        follows then finds it, so a pinned DAG is neither refused for it nor loses it.
        A failed move leaves the file where it was."""
        for cid, path, kind in scan(self._blocks):
            if kind != "misplaced" or cid is None:
                continue
            home = self._path(cid)
            if self._whole(cid, home) or not self._whole(cid, path):
                continue  # a spare, or damaged: _sweep removes it after the walk
            try:
                home.parent.mkdir(exist_ok=True)
                os.replace(path, home)
                if self._sync:
                    flush([home], {home.parent, path.parent, self._blocks}, self._suspects)
            except OSError:
                continue

    def _sweep(self, keep: set[bytes]) -> int:
        """Block files that get() cannot reach (misplaced) go once a whole copy is in place
        or if they are damaged (_restore_misplaced moved the only whole copies home); so do
        temp files of puts, pins and the layout file older than STALE_TEMP (a crashed put's: a put under
        way takes milliseconds, and one outside importing() is not held off by gc's
        gate). Only regular files; one that cannot be removed is left for the next gc."""
        removed = 0
        temps = []
        for cid, path, kind in scan(self._blocks):
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
        with contextlib.suppress(OSError):  # a kill while the layout file was written (_make_shards)
            temps += [self._blocks / n for n in os.listdir(self._blocks) if n.startswith(".SHARDING.")
                      and n.endswith(".tmp")]
        stale = time.time() - STALE_TEMP
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
        inside it fsyncs. The batch is this context's (see vault/blockstore/__init__.py): puts from
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
            whole = self.sync_method == "syncfs" or (self.sync_method == "auto" and _flusher.syncfs_pays())
            flusher = Flusher(background, self.root if whole else None, recheck=self.sync_method == "auto",
                              suspects=self._suspects)
        batch = Batch(flusher, direct and bool(O_DIRECT))
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

    def _current_batch(self) -> Batch | None:
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
        return self._pins_dir / f"{b32_key(root.to_bytes())}.pin"

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
                pins.add(CID.decode(b32_bytes(key)))
            except (ValueError, InvalidCIDError):
                # Not a CID: what it pinned is unknown, so gc must not guess.
                raise IntegrityError(f"pin file {self._pins_dir / name} is corrupt: its name is not a CID") from None
        return pins

    def _add_pin(self, root: CID) -> None:
        path = self._pin_path(root)
        if path.exists():
            return
        self._make_pins_dir()
        write_text_durably(path, f"{root}\n")

    def _remove_pin(self, root: CID) -> bool:
        self._migrate_pins()  # a pin still in pins.json would survive its unpin
        try:
            self._pin_path(root).unlink()
        except FileNotFoundError:
            return False
        fsync_dir(self._pins_dir)
        return True

    def _make_pins_dir(self) -> None:
        if not self._pins_dir.is_dir():
            self._pins_dir.mkdir(exist_ok=True)
            fsync_dir(self.root)

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
        fsync_dir(self.root)
