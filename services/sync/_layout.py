"""The sync directory on disk, and every step that changes it made crash-safe.

    DIR/
      <asset id>/                       decimal, one per followed asset
        <version>/<filename>            a materialised version (decimal dir name)
        current -> <version>            RELATIVE symlink to the newest materialised version
        .tmp-<version>-<random>/        staging of a version being fetched (never read)
      .twinledger-sync/
        state.json                      checkpoint (_checkpoint.py), written atomically
        lock                            flock(2) held by the running sync process
        purge-<asset>-<random>/         an asset directory being deleted

Commit points (a crash before one leaves the previous state, after it the new one):
- a version: the SDK writes and fsyncs the plaintext inside the staging dir; the staging
  dir is renamed to `<version>/` and DIR/<asset> is fsynced. A version directory that
  exists is complete, so it is never fetched (nor its key asked for) again.
- `current`: a new symlink `.current-<random>` is created and os.replace()d over `current`
  (rename(2) is atomic), then the directory is fsynced. Readers always see an old or a new
  complete target.
- purge: DIR/<asset> is renamed into `.twinledger-sync/` (one rename: the asset vanishes
  from the layout at once), then removed.
Leftovers of a crash (`.tmp-*`, `.current-*`, `purge-*`) are removed before each pass;
`current` is re-pointed at the highest version directory.

`current` is a symlink (not a pointer file) so that `DIR/<asset>/current/<filename>` is
directly usable by any program reading the twin.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path

from services.sync.errors import SyncBusyError, SyncStateError

META = ".twinledger-sync"
STATE_FILE = "state.json"
LOCK_FILE = "lock"
CURRENT = "current"
STAGING_PREFIX = ".tmp-"
_POINTER_PREFIX = ".current-"
_PURGE_PREFIX = "purge-"
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,77}")
DEFAULT_FILENAME = "content"
_MAX_NAME_BYTES = 255


def safe_filename(name: str | None) -> str:
    """The file name used inside each version directory: the asset's name when it is one
    plain path component (no separator, no control character, not hidden, at most 255
    bytes), else DEFAULT_FILENAME. Asset names are chosen by the owner: never trusted as paths."""
    if not isinstance(name, str) or not name or name != name.strip() or name in (".", ".."):
        return DEFAULT_FILENAME
    if name.startswith(".") or name == CURRENT or "/" in name or "\\" in name:
        return DEFAULT_FILENAME
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return DEFAULT_FILENAME
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return DEFAULT_FILENAME
    return name if len(encoded) <= _MAX_NAME_BYTES else DEFAULT_FILENAME


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _decimal(name: str) -> int | None:
    return int(name) if _DECIMAL.fullmatch(name) else None


class SyncDir:
    """The layout above under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.meta = self.root / META
        self._lock_fd: int | None = None

    # -- lifetime ----------------------------------------------------------------------------

    def open(self) -> None:
        """Create DIR and its metadata directory, take the lock (SyncBusyError if held)."""
        if self.root.exists() and not self.root.is_dir():
            raise SyncStateError(f"{self.root} exists and is not a directory")
        try:
            self.meta.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.meta / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SyncStateError(f"cannot use {self.root}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise SyncBusyError(f"another sync process is using {self.root}") from None
            raise SyncStateError(f"cannot lock {self.root}: {exc.strerror or exc}") from None
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # -- reading -----------------------------------------------------------------------------

    def asset_dir(self, asset_id: int) -> Path:
        return self.root / str(asset_id)

    def version_dir(self, asset_id: int, version: int) -> Path:
        return self.asset_dir(asset_id) / str(version)

    def scan(self) -> dict[int, list[int]]:
        """{asset id: sorted versions} of the committed version directories (anything that
        is not a decimal directory name is ignored)."""
        found: dict[int, list[int]] = {}
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.root):
                asset_id = _decimal(entry.name)
                if asset_id is None or not entry.is_dir(follow_symlinks=False):
                    continue
                found[asset_id] = self.versions(asset_id)
        return found

    def versions(self, asset_id: int) -> list[int]:
        out = []
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.asset_dir(asset_id)):
                version = _decimal(entry.name)
                if version is not None and entry.is_dir(follow_symlinks=False):
                    out.append(version)
        return sorted(out)

    def current(self, asset_id: int) -> int | None:
        """The version `current` points to (None: no pointer, or not a version)."""
        try:
            target = os.readlink(self.asset_dir(asset_id) / CURRENT)
        except OSError:
            return None
        return _decimal(target)

    def version_bytes(self, asset_id: int, version: int) -> int:
        """Total size of the regular files in a version directory."""
        total = 0
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.version_dir(asset_id, version)):
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
        return total

    # -- changing ------------------------------------------------------------------------------

    def clean_leftovers(self) -> list[Path]:
        """Remove what a killed process left half-done; the removed paths."""
        removed: list[Path] = []
        for asset_id in self.scan():
            adir = self.asset_dir(asset_id)
            for entry in os.scandir(adir):
                if entry.name.startswith(STAGING_PREFIX) or entry.name.startswith(_POINTER_PREFIX):
                    path = Path(entry.path)
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)
                    removed.append(path)
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.meta):
                if entry.name.startswith(_PURGE_PREFIX) or entry.name.startswith(STATE_FILE + "."):
                    path = Path(entry.path)
                    shutil.rmtree(path, ignore_errors=True) if entry.is_dir(follow_symlinks=False) \
                        else path.unlink(missing_ok=True)
                    removed.append(path)
        return removed

    def staging(self, asset_id: int, version: int) -> Path:
        adir = self.asset_dir(asset_id)
        adir.mkdir(exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{version}-", dir=adir))

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def commit(self, staging: Path, asset_id: int, version: int) -> Path:
        """Rename a complete staging dir to `<version>/` (the commit point)."""
        final = self.version_dir(asset_id, version)
        if final.exists():
            raise SyncStateError(f"{final} already exists")
        _fsync_dir(staging)
        os.rename(staging, final)
        _fsync_dir(final.parent)
        return final

    def point_current(self, asset_id: int, version: int | None) -> None:
        """Make `current` point at `version` atomically (None: remove the pointer)."""
        adir = self.asset_dir(asset_id)
        link = adir / CURRENT
        if version is None:
            if link.is_symlink():
                link.unlink()
                _fsync_dir(adir)
            return
        if self.current(asset_id) == version:
            return
        tmp = adir / f"{_POINTER_PREFIX}{secrets.token_hex(6)}"
        os.symlink(str(version), tmp)
        try:
            os.replace(tmp, link)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(adir)

    def purge(self, asset_id: int) -> list[int]:
        """Delete DIR/<asset> (renamed away first, so it vanishes at once); its versions."""
        adir = self.asset_dir(asset_id)
        versions = self.versions(asset_id)
        if not adir.exists():
            return versions
        trash = self.meta / f"{_PURGE_PREFIX}{asset_id}-{secrets.token_hex(6)}"
        os.rename(adir, trash)
        _fsync_dir(self.root)
        shutil.rmtree(trash)
        return versions

    # -- checkpoint ------------------------------------------------------------------------------

    def read_state(self) -> bytes | None:
        try:
            return (self.meta / STATE_FILE).read_bytes()
        except FileNotFoundError:
            return None

    def write_state(self, data: bytes) -> None:
        """temp file + fsync + rename + directory fsync."""
        final = self.meta / STATE_FILE
        tmp = self.meta / f"{STATE_FILE}.{secrets.token_hex(6)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.meta)
