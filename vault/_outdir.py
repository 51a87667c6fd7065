"""Where an output file goes, found once and then held: the directory it is written into,
open as a descriptor, and its name there (`resolve_output`). Every later step of writing
it (tempfiles.atomic_output: the temp file, the lock, the rename, the fsync; the check
that it is not inside a block store) is relative to that descriptor, so a directory on
the way that is swapped for another (or for a link) after the check is not written
through: what was checked is what is written.

The walk opens one component at a time, as the kernel resolves a path: a symbolic link
is read and its target walked in its place (`..` after a link is its target's parent,
as for the kernel), each link first checked as fs.protected_symlinks would (in a sticky,
world-writable directory only a link of ours or of the directory's owner is followed: a
victim's file would be replaced otherwise). Intermediate directories are held with
O_PATH, so a directory we may only search (`--x`) is walked as the kernel would.
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from vault.errors import InputValidationError

_O_PATH = getattr(os, "O_PATH", os.O_RDONLY)  # Linux; elsewhere a readable directory is needed
_WALK = _O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_MAX_LINKS = 40  # what the kernel follows before ELOOP
_PATH_MAX = 4096  # Linux's, with its NUL

_KINDS = {stat.S_IFDIR: "directory", stat.S_IFCHR: "character device", stat.S_IFBLK: "block device",
          stat.S_IFIFO: "FIFO", stat.S_IFSOCK: "socket"}


class OutputDir:
    """An open directory (its descriptor `fd`, readable, so that it can be listed and
    fsynced) and the path it had when it was opened (`path`, for messages only)."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def lstat(self, name: str) -> os.stat_result:
        return os.stat(name, dir_fd=self.fd, follow_symlinks=False)

    def lexists(self, name: str) -> bool:
        try:
            self.lstat(name)
        except FileNotFoundError:
            return False
        return True

    def open(self, name: str, flags: int, mode: int = 0o600) -> int:
        return os.open(name, flags, mode, dir_fd=self.fd)

    def unlink(self, name: str) -> None:
        os.unlink(name, dir_fd=self.fd)

    def link(self, src: str, dst: str) -> None:
        """link(2) of one name to another here, never following a link at `src`."""
        os.link(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd, follow_symlinks=False)

    def replace(self, src: str, dst: str) -> None:
        os.replace(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def names(self) -> list[str]:
        with os.scandir(self.fd) as entries:
            return [e.name for e in entries]

    def fsync(self) -> None:
        os.fsync(self.fd)

    def __truediv__(self, name: str) -> Path:
        return self.path / name


@dataclass
class Output:
    """An output file: `name` in the open directory `dir`; `path` as the caller gave it
    when no link was on the way, else the path the walk arrived at."""

    dir: OutputDir
    name: str
    path: Path

    def close(self) -> None:
        self.dir.close()

    def __enter__(self) -> Output:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def resolve_output(out: str | bytes | os.PathLike[str], *, follow: bool = True) -> Output:
    """Find and open the directory that an output at `out` is written into. follow: a
    symbolic link at `out` itself is written through (its target's directory and name; the
    link stays, as with cp); else the name `out` itself (a caller that never replaces).
    InputValidationError: a directory does not exist or is not one, a link is another
    user's (see the module docstring) or loops, or, with `follow`, something exists at
    `out` that the rename would wrongly replace by a regular file (a directory, a device,
    a FIFO: `-o /dev/null` made /dev/null a regular file) or that this process may not
    write (open() would refuse a read-only file; rename(2) replaces it all the same).
    A path given as text keeps its trailing slash (it names a directory, as for the
    kernel: refused); a Path has none. The caller closes the result (a context manager)."""
    try:
        text = os.fsdecode(out)
    except TypeError:
        raise InputValidationError(f"output must be a path, got {type(out).__name__}") from None
    if "\0" in text or not text:
        raise InputValidationError(f"output path {text!r} is empty or holds a NUL byte")
    out = Path(text)
    try:
        if len(os.fsencode(text)) >= _PATH_MAX:  # the walk has no limit of its own; open(2) would refuse it
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
        return _walk(text, out, follow)
    except InputValidationError:
        raise
    except FileNotFoundError:
        raise InputValidationError(f"output directory {out.parent} does not exist") from None
    except OSError as exc:  # ENOTDIR, ELOOP, ENAMETOOLONG, EACCES: nothing to write there
        raise InputValidationError(f"cannot write {out}: {exc.strerror}") from None


def output_path(out: Path) -> Path:
    """The file that atomic_output(out) writes: `out`, or the file a symbolic link at `out`
    names; refused as resolve_output() refuses it."""
    with resolve_output(out) as found:
        return found.path


def _parts(text: str) -> list[str]:
    """The components of a path or link target as the kernel walks them: a trailing slash
    is a last "." (the name before it must be a directory)."""
    parts = [p for p in text.split("/") if p]
    return parts + ["."] if text.endswith("/") and parts else parts


def _walk(text: str, out: Path, follow: bool) -> Output:
    absolute = text.startswith("/")
    pending = _parts(text)
    here = Path("/") if absolute else Path(os.getcwd())  # getcwd: no links in it
    cur = os.open("/" if absolute else ".", _WALK)
    links = 0
    try:
        while True:
            if not pending:  # "/", "." or a path ending in ".."
                raise InputValidationError(f"output path {out} is a directory")
            part = pending.pop(0)
            last = not pending
            if part == ".":  # the directory itself: only as the last, after a slash
                if last:
                    raise InputValidationError(f"output path {out} is a directory")
                continue
            if part == "..":
                cur = _step(cur, "..")
                here = here.parent
                continue
            try:
                st = os.stat(part, dir_fd=cur, follow_symlinks=False)
            except FileNotFoundError:
                if last:
                    return _found(cur, here, part, out if links == 0 else here / part)
                missing = here / part if links else out.parent  # a link's target: name what is missing
                raise InputValidationError(f"output directory {missing} does not exist") from None
            if stat.S_ISLNK(st.st_mode) and (follow or not last):
                links += 1
                if links > _MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(out))
                _require_own_link(cur, here / part, st)
                target = os.readlink(part, dir_fd=cur)  # text: a trailing slash counts
                if target.startswith("/"):
                    cur = _restart(cur)
                    here = Path("/")
                pending = _parts(target) + pending
                continue
            if last:
                if follow:
                    _require_writable(cur, part, st, out)
                return _found(cur, here, part, out if links == 0 else here / part)
            if not stat.S_ISDIR(st.st_mode):
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(out))
            cur = _step(cur, part)
            here = here / part
    finally:
        if cur >= 0:
            os.close(cur)


def _step(cur: int, part: str) -> int:
    """The directory `part` of `cur`, opened for the walk (never through a link: one that
    appeared since the lstat is ELOOP); `cur` is closed once it is open."""
    nxt = os.open(part, _WALK | os.O_NOFOLLOW, dir_fd=cur)  # a failure leaves `cur` to the caller
    os.close(cur)
    return nxt


def _restart(cur: int) -> int:
    nxt = os.open("/", _WALK)
    os.close(cur)
    return nxt


def _found(cur: int, here: Path, name: str, shown: Path) -> Output:
    """The directory reached, reopened readable (it is listed and fsynced later)."""
    if not os.access(".", os.W_OK | os.X_OK, dir_fd=cur):
        raise InputValidationError(f"cannot write {shown}: its directory {here} is not writable")
    try:
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=cur)
    except PermissionError:
        raise InputValidationError(f"cannot write {shown}: its directory {here} is not readable (its "
                                   "entries and fsync need it)") from None
    return Output(OutputDir(fd, here), name, shown)


def _require_own_link(cur: int, link: Path, st: os.stat_result) -> None:
    """The kernel's rule for following a link (fs.protected_symlinks): in a sticky,
    world-writable directory only a link of ours or of the directory's owner."""
    directory = os.fstat(cur)
    if directory.st_mode & stat.S_ISVTX and directory.st_mode & stat.S_IWOTH:
        if st.st_uid not in (os.geteuid(), directory.st_uid):
            raise InputValidationError(f"{link} is a symbolic link of another user's (uid {st.st_uid}) in a shared "
                                       "directory: not written through")


def _require_writable(cur: int, name: str, st: os.stat_result, out: Path) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise InputValidationError(f"output path {out} is a directory")
    if not stat.S_ISREG(st.st_mode):
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "special file")
        raise InputValidationError(f"{out} is a {kind}: the output must be a regular file or a new name")
    if not os.access(name, os.W_OK, dir_fd=cur):
        raise InputValidationError(f"{out} is not writable")
