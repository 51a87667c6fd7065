"""The temp file beside an output that is written whole and then renamed into place
(open's plaintext, the CLI's CAR export): `with atomic_output(out, purpose) as (fd, tmp):`.

One name per output and purpose (a hash of the output's name: short, whatever the
output's length), always a fresh file of this process's (O_EXCL: its owner, the
umask's mode, one link), held by an exclusive flock(2) until it is renamed into place.
A second writer to the same output is refused at once instead of writing into the first
one's file; what a crashed run left at that name (whoever made it, whatever its mode)
is removed by the next run, under the lock, instead of staying forever, one file per
crash, as with tempfile.mkstemp's random names (for open: plaintext).

Where the filesystem has O_TMPFILE (Linux: ext4, xfs, btrfs, tmpfs), atomic_output's bytes
go to a file with no name at all, which vanishes with the process if it dies: the locked
temp name then stays empty and only guards the output, and the written file gets a name
only once it is whole (linked through /proc/self/fd to `<guard>.ready`, then renamed over
the output). So a killed or crashed open leaves no plaintext behind, but for a kill in the
microseconds between that link and the rename, whose `.ready` file the next claim of the
guard removes (under its lock), as it removes a crashed run's guard.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from vault._fileio import fsync_dir, rename_noreplace
from vault.errors import InputValidationError

_ATTEMPTS = 8
_PROC_FD = Path("/proc/self/fd")  # how an O_TMPFILE file gets a name without privileges
_STALE_READY = 60.0  # seconds: a live writer's .ready exists for microseconds


_KINDS = {stat.S_IFDIR: "directory", stat.S_IFCHR: "character device", stat.S_IFBLK: "block device",
          stat.S_IFIFO: "FIFO", stat.S_IFSOCK: "socket"}


def output_path(out: Path) -> Path:
    """Where atomic_output(out) puts its file: `out`, or the file a symbolic link at `out`
    names (written through it, as cp does; the link stays). InputValidationError for an
    existing output that is not a regular file, which the rename would replace by one (a
    device, a FIFO: `-o /dev/null` made /dev/null a regular file), or that this process may
    not write (open() would refuse a read-only file; rename(2) replaces it all the same).
    A link that another user made in a shared sticky directory, at `out` or anywhere on the
    way to the file, is not followed (what fs.protected_symlinks refuses to open(),
    os.path.realpath would still follow: a victim's file would be replaced)."""
    try:
        target = _resolve(out)
        st = os.stat(target)
    except FileNotFoundError:
        return target
    except OSError as exc:  # ENOTDIR, ELOOP, ENAMETOOLONG, EACCES: nothing to write there
        raise InputValidationError(f"cannot write {out}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "special file")
        raise InputValidationError(f"{out} is a {kind}: the output must be a regular file or a new name")
    if not os.access(target, os.W_OK):
        raise InputValidationError(f"{out} is not writable")
    return target


_MAX_LINKS = 40  # what the kernel follows before ELOOP


def _resolve(out: Path) -> Path:
    """`out` with each symbolic link on the way followed, one component at a time as the
    kernel does (`..` after a link is the link target's parent), each link checked by
    _require_own_link first; `out` itself when it holds none. A component that does not
    exist ends the walk (the rest joined as given). OSError ELOOP past _MAX_LINKS links."""
    current = Path("/") if out.is_absolute() else Path(os.getcwd())  # getcwd: no links in it
    pending = list(out.parts[1:] if out.is_absolute() else out.parts)
    links = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            current = current.parent
            continue
        candidate = current / part
        try:
            mode = os.lstat(candidate).st_mode
        except FileNotFoundError:
            current = candidate.joinpath(*pending)
            break
        if not stat.S_ISLNK(mode):
            current = candidate
            continue
        links += 1
        if links > _MAX_LINKS:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(out))
        _require_own_link(candidate)
        target = Path(os.readlink(candidate))
        if target.is_absolute():
            current = Path("/")
            pending = list(target.parts[1:]) + pending
        else:
            pending = list(target.parts) + pending
    return current if links else out


def _require_own_link(link: Path) -> None:
    """The kernel's rule for following `link` (fs.protected_symlinks): in a sticky,
    world-writable directory only a link of ours or of the directory's owner."""
    directory = os.stat(link.parent)
    if directory.st_mode & stat.S_ISVTX and directory.st_mode & stat.S_IWOTH:
        owner = os.lstat(link).st_uid
        if owner not in (os.geteuid(), directory.st_uid):
            raise InputValidationError(f"{link} is a symbolic link of another user's (uid {owner}) in a shared "
                                       "directory: not written through")


def temp_path(out: Path, purpose: str) -> Path:
    digest = hashlib.sha256(os.fsencode(out.name)).hexdigest()[:20]
    return out.parent / f".twinledger-{purpose}-{digest}.part"


@contextlib.contextmanager
def atomic_output(out: Path, purpose: str, mode: int = 0o600, *,
                  overwrite: bool = True) -> Iterator[tuple[int, Path]]:
    """(fd, tmp): an empty file for `out`'s bytes, open for writing, and the locked temp
    name `tmp` that guards `out`. The body writes and fsyncs fd; on success the file is
    renamed over `out` and the directory fsynced (install_temp), on any failure removed;
    fd is closed either way. fd is an unnamed file where the filesystem allows it (see
    the module docstring), else the file at `tmp` itself. overwrite=False: an existing
    `out` is left as it is and FileExistsError raised (see install_temp); else `out` is
    what output_path() makes of it (a symbolic link's target; not a device, not read-only)."""
    if overwrite:
        out = output_path(out)
    data = _unnamed(out.parent, mode)
    try:
        fd, tmp = claim_temp(out, purpose, mode, pass_foreign=data is not None)
    except BaseException:
        if data is not None:
            os.close(data)
        raise
    try:
        yield (fd if data is None else data), tmp
        install_temp(fd, tmp, out, overwrite=overwrite, data=data)
    except BaseException:
        if data is not None:
            os.close(data)
        discard_temp(fd, tmp)
        raise
    if data is not None:
        os.close(data)
    os.close(fd)


def _unnamed(directory: Path, mode: int) -> int | None:
    """A new, empty file in `directory` with no name (O_TMPFILE), or None where the
    platform, the kernel or the filesystem has none, or where /proc is not mounted."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag or not _PROC_FD.is_dir():
        return None
    try:
        return os.open(directory, flag | os.O_RDWR | os.O_CLOEXEC, mode)
    except OSError as exc:
        # EOPNOTSUPP: this filesystem has none; EISDIR: a kernel that predates O_TMPFILE
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EISDIR, errno.EINVAL):
            return None
        raise


def claim_temp(out: Path, purpose: str, mode: int = 0o600, *, pass_foreign: bool = False) -> tuple[int, Path]:
    """A fresh, empty temp file for `out`, open for writing and locked: (fd, path). The
    caller renames it over `out` (or discards it), then closes fd, which releases the
    lock. InputValidationError if another writer holds it (the same output, under way),
    or if the name holds something this process cannot remove.

    The file is made and locked under a private name first and only then linked to the
    shared one: a file at the shared name is always locked by a live writer or left by a
    dead one, never new and not yet locked (which a second claimant would take for a
    crashed run's and remove). What a crashed run left at `<name>.ready` (see the module
    docstring) is removed once the name is ours.

    A file at the shared name that another user owns (in a shared, sticky directory
    anyone can make it, and hold its lock, to stop every write to `out`) is refused,
    naming its owner, unless `pass_foreign` (atomic_output, when the bytes go to an unnamed
    file, so that nothing of them can be left under a name no one reclaims): then the
    private file is the guard, and a second writer of our own to that output is not
    refused."""
    tmp = temp_path(out, purpose)
    for _ in range(_ATTEMPTS):
        private = tmp.with_name(f"{tmp.name[: -len('.part')]}.{secrets.token_hex(6)}.new")
        fd = os.open(private, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        linked = False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # no one else knows this name
            try:
                os.link(private, tmp)
                linked = True
            except FileExistsError:
                if _foreign(tmp, out, purpose, pass_foreign):
                    return fd, private  # the shared name is squatted: this private one, unguarded
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
                    raise
                return _claim_without_links(fd, private, tmp, out, purpose, pass_foreign)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                private.unlink()
            raise
        with contextlib.suppress(OSError):
            private.unlink()
        if linked:
            _clear_ready(tmp)
            return fd, tmp
        os.close(fd)
        _remove_leftover(tmp, out, purpose)
    raise InputValidationError(f"could not claim {tmp}: it keeps being replaced")


def _foreign(tmp: Path, out: Path, purpose: str, passable: bool) -> bool:
    """Whether the file at the guard name `tmp` belongs to another user, who could hold it
    forever: True if that may be passed by (then our own killed runs' leftovers beside it
    are swept: _sweep_own), else InputValidationError."""
    try:
        owner = os.lstat(tmp).st_uid
    except FileNotFoundError:
        return False
    if owner == os.geteuid():
        return False
    if passable:
        _sweep_own(tmp)
        return True
    raise InputValidationError(f"{tmp}, the temp name of a {purpose} to {out}, belongs to another user "
                               f"(uid {owner}): remove it, or write {out.name} to a directory of your own")


def _clear_ready(tmp: Path) -> None:
    """With the guard `tmp` held: remove what a killed run left at `<guard>.ready` (ours to
    remove now: no live writer of this output can be using it). If something that is not
    ours stays there, installs use names with a random part, whose leftovers are swept.
    Limit: a leftover under such a name (a kill in the microseconds between naming and
    renaming, while another user held `.ready`) is swept only while something of another
    user is still at the guard or `.ready` name; once that is gone, no claim lists the
    directory, and it stays."""
    try:
        _ready(tmp).unlink()
    except FileNotFoundError:
        pass
    except OSError:  # another user's file or directory (a sticky directory keeps it)
        _sweep_own(tmp)


def _sweep_own(tmp: Path) -> None:
    """What our own killed runs left beside the guard `tmp` under names with a random part,
    which no claim of the shared name removes (a passed-by guard `<stem>.<hex>.new`, a
    `.ready` made when the fixed one was taken): only regular files of ours, at least
    _STALE_READY old by ctime (link(2) sets it: a live writer's `.ready` and a claim's `.new`
    before its flock exist for microseconds); a guard only if no one holds its lock. Called
    only when the shared guard or `.ready` is another user's, so only then does a claim
    list the directory."""
    prefix = tmp.name[: -len(".part")] + "."
    stale = time.time() - _STALE_READY
    with contextlib.suppress(OSError), os.scandir(tmp.parent) as entries:
        found = [(e.name, e.path) for e in entries if e.name.startswith(prefix)]
    for name, where in found:
        path = Path(where)
        with contextlib.suppress(OSError):
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_ctime >= stale:
                continue
            if name.endswith(".ready"):
                path.unlink()
            elif name.endswith(".new"):
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: a live writer's
                    if os.path.samestat(os.fstat(fd), os.lstat(path)):
                        path.unlink()
                finally:
                    os.close(fd)


def _ready(tmp: Path) -> Path:
    """The name the unnamed file's bytes get, beside the guard `tmp`, before the rename."""
    return tmp.with_suffix(".ready")


def _claim_without_links(fd: int, private: Path, tmp: Path, out: Path, purpose: str,
                         pass_foreign: bool) -> tuple[int, Path]:
    """A filesystem without hard links (vfat, some FUSE): the private file becomes the temp
    file by rename, which cannot refuse an existing name, so a leftover is removed first and
    two writers to one output racing in that instant are not told apart. A failure is
    cleaned up by claim_temp (fd closed, the private file removed)."""
    if os.path.lexists(tmp):
        if _foreign(tmp, out, purpose, pass_foreign):
            return fd, private  # squatted (see claim_temp)
        _remove_leftover(tmp, out, purpose)
    os.replace(private, tmp)
    _clear_ready(tmp)
    return fd, tmp


def _remove_leftover(tmp: Path, out: Path, purpose: str) -> None:
    """Something is at the temp name: a writer's under way (its lock held: refused), or a
    crashed run's (removed, under its lock, so that no one else removes a live one)."""
    try:
        st = os.lstat(tmp)
    except FileNotFoundError:
        return  # gone meanwhile: try again
    if not stat.S_ISREG(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        raise InputValidationError(f"{tmp} (the temp file of a {purpose} to {out}) is {kind}: remove it")
    flags = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        try:
            fd = os.open(tmp, os.O_RDWR | flags)  # NFS's flock emulation wants a writable fd
        except PermissionError:
            fd = os.open(tmp, os.O_RDONLY | flags)  # a read-only leftover of our own
    except FileNotFoundError:
        return
    except OSError as exc:
        raise InputValidationError(f"{tmp}, left by an earlier {purpose} to {out}, cannot be opened "
                                   f"({os.strerror(exc.errno or errno.EIO)}): remove it") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _under_way(out, purpose, tmp) from None
        except OSError as exc:
            raise InputValidationError(f"{tmp}, left by an earlier {purpose} to {out}, cannot be locked "
                                       f"({os.strerror(exc.errno or errno.EIO)}): remove it") from None
        try:
            if os.path.samestat(os.fstat(fd), os.lstat(tmp)):
                tmp.unlink()  # a crashed run's: its lock died with it
        except FileNotFoundError:
            pass  # renamed or removed by its holder meanwhile: try again
        except OSError as exc:
            raise InputValidationError(f"{tmp}, left by an earlier {purpose} to {out}, cannot be removed "
                                       f"({os.strerror(exc.errno or errno.EIO)}): remove it") from None
    finally:
        os.close(fd)


def _under_way(out: Path, purpose: str, tmp: Path) -> InputValidationError:
    return InputValidationError(f"another {purpose} to {out} is under way (it holds {tmp})")


def _name(data: int, path: Path) -> None:
    """Give the unnamed file `data` the name `path`: linkat(2) of its /proc/self/fd entry
    with AT_SYMLINK_FOLLOW (os.link takes that flag only with a dir_fd)."""
    proc = os.open(_PROC_FD, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(str(data), path.absolute(), src_dir_fd=proc, follow_symlinks=True)
    finally:
        os.close(proc)


def install_temp(fd: int, tmp: Path, out: Path, *, overwrite: bool = True, data: int | None = None) -> None:
    """Rename the written (and fsynced) temp file over `out`, then fsync the directory so
    that the new entry is durable too. If that fsync fails, `out` is removed again (only
    if it is still this file), so that a failure leaves nothing at `out`; what it
    replaced is gone either way. fd stays open. overwrite=False: `out` gets the file
    only if nothing is there (link(2), which never replaces: FileExistsError otherwise,
    also for a dangling symbolic link). `data`: the unnamed file that holds the bytes
    (atomic_output), named beside `tmp` and installed instead of it; then the temp name,
    which only guarded `out`, is removed once `out` is in place."""
    try:
        ours = os.path.samestat(os.fstat(fd), os.lstat(tmp))
    except FileNotFoundError:
        ours = False
    if not ours:  # removed or replaced by someone else: do not install what is there now
        raise InputValidationError(f"{tmp} is no longer the file written for {out}: nothing was installed")
    src, written = tmp, fd
    if data is not None:
        src, written = _ready(tmp), data
        try:
            _name(data, src)
        except FileExistsError:  # another user's, made or kept there: a name of our own instead
            src = tmp.with_suffix(f".{secrets.token_hex(6)}.ready")
            _name(data, src)
    try:
        if overwrite:
            os.replace(src, out)
        else:
            _link_new(src, out)
    except BaseException:
        if src != tmp:
            with contextlib.suppress(OSError):
                src.unlink()
        raise
    try:
        fsync_dir(out.parent)
    except OSError:
        with contextlib.suppress(OSError):
            if os.path.samestat(os.fstat(written), os.lstat(out)):
                out.unlink()
        raise
    if src != tmp:  # the guard's name goes (fd, its lock, is closed by the caller)
        with contextlib.suppress(OSError):
            if os.path.samestat(os.fstat(fd), os.lstat(tmp)):
                tmp.unlink()


def _link_new(tmp: Path, out: Path) -> None:
    """tmp's file at `out` instead, unless something is there (FileExistsError): one
    renameat2(RENAME_NOREPLACE) where the kernel and filesystem have it; else link(2), which
    never replaces, and then tmp is unlinked (a crash in between leaves a second name, at
    the guard's name or its `.ready` one, which the next claim of the guard removes); on a filesystem without hard links, a check
    and a rename (a writer that makes `out` in between is not seen)."""
    if rename_noreplace(tmp, out):
        return
    try:
        os.link(tmp, out, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        if os.path.lexists(out):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(out)) from None
        os.rename(tmp, out)
        return
    with contextlib.suppress(OSError):  # else removed by the next claim of this temp name
        tmp.unlink()


def discard_temp(fd: int, tmp: Path) -> None:
    """After a failure: remove the temp file if it is still ours (while still holding its
    lock), then close fd."""
    try:
        with contextlib.suppress(OSError):
            if os.path.samestat(os.fstat(fd), os.lstat(tmp)):
                tmp.unlink()
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
