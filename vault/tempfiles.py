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

Every step is relative to the output's directory as resolve_output() opened it
(vault/_outdir.py): the claim, the unnamed file, the rename and the fsync all happen in
the directory that was checked, even if a directory on the way is swapped meanwhile.
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
from pathlib import Path, PurePath

from vault._fileio import rename_noreplace
from vault._outdir import Output, OutputDir, output_path, resolve_output
from vault.errors import InputValidationError

__all__ = ["Claim", "atomic_output", "claim_temp", "output_path", "resolve_output", "temp_path"]

_ATTEMPTS = 8
_PROC_FD = Path("/proc/self/fd")  # how an O_TMPFILE file gets a name without privileges
_STALE_READY = 60.0  # seconds: a live writer's .ready exists for microseconds


def temp_name(name: str, purpose: str) -> str:
    """The guard's name for an output named `name`: short, whatever that name's length."""
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:20]
    return f".twinledger-{purpose}-{digest}.part"


def temp_path(out: Path, purpose: str) -> Path:
    return out.parent / temp_name(out.name, purpose)


def _with_suffix(name: str, suffix: str) -> str:
    return str(PurePath(name).with_suffix(suffix))


@contextlib.contextmanager
def atomic_output(out: Path | Output, purpose: str, mode: int = 0o600, *,
                  overwrite: bool = True) -> Iterator[tuple[int, Path]]:
    """(fd, tmp): an empty file for `out`'s bytes, open for writing, and the locked temp
    name `tmp` that guards `out`. The body writes and fsyncs fd; on success the file is
    renamed over `out` and the directory fsynced (Claim.install), on any failure removed;
    fd is closed either way. fd is an unnamed file where the filesystem allows it (see
    the module docstring), else the file at `tmp` itself. overwrite=False: an existing
    `out` is left as it is and FileExistsError raised (see Claim.install); else a path
    `out` is what resolve_output() makes of it (a symbolic link's target; not a device,
    not read-only). An Output (resolve_output's) is used as it is and left open."""
    owned = not isinstance(out, Output)
    target = resolve_output(out, follow=overwrite) if owned else out
    try:
        try:
            data = _unnamed(target.dir, mode)
        except OSError as exc:  # ENOSPC, EROFS, a directory removed meanwhile
            raise _cannot(target, exc) from None
        try:
            claim = claim_temp(target, purpose, mode, pass_foreign=data is not None)
        except BaseException:
            if data is not None:
                os.close(data)
            raise
        try:
            yield (claim.fd if data is None else data), claim.path
            claim.install(overwrite=overwrite, data=data)
        except BaseException:
            if data is not None:
                os.close(data)
            claim.discard()
            raise
        if data is not None:
            os.close(data)
        claim.close()
    finally:
        if owned:
            target.close()


def _unnamed(directory: OutputDir, mode: int) -> int | None:
    """A new, empty file in `directory` with no name (O_TMPFILE), or None where the
    platform, the kernel or the filesystem has none, or where /proc is not mounted."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag or not _PROC_FD.is_dir():
        return None
    try:
        return directory.open(".", flag | os.O_RDWR | os.O_CLOEXEC, mode)
    except OSError as exc:
        # EOPNOTSUPP: this filesystem has none; EISDIR: a kernel that predates O_TMPFILE
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EISDIR, errno.EINVAL):
            return None
        raise


class Claim:
    """A claimed temp name for an output (claim_temp): `fd`, the guard file, open and
    locked, at `name` in the output's directory (`path`, for messages). install() or
    discard() it, then close() it, which releases the lock."""

    def __init__(self, out: Output, fd: int, name: str, owned: bool) -> None:
        self.out, self.fd, self.name, self._owned = out, fd, name, owned

    @property
    def path(self) -> Path:
        return self.out.dir / self.name

    def close(self) -> None:
        fd, self.fd = self.fd, -1  # once: a second close could hit a reused number
        try:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        finally:
            if self._owned:
                self.out.close()

    def discard(self) -> None:
        """After a failure: remove the temp file if it is still ours (while still holding
        its lock), then close."""
        try:
            with contextlib.suppress(OSError):
                if os.path.samestat(os.fstat(self.fd), self.out.dir.lstat(self.name)):
                    self.out.dir.unlink(self.name)
        finally:
            self.close()

    def install(self, *, overwrite: bool = True, data: int | None = None) -> None:
        """Rename the written (and fsynced) temp file over the output, then fsync the
        directory so that the new entry is durable too. If that fsync fails, the output is
        removed again (only if it is still this file), so that a failure leaves nothing
        there; what it replaced is gone either way. The claim stays open.
        overwrite=False: the output gets the file only if nothing is there (FileExistsError
        otherwise, also for a dangling symbolic link; see _link_new). `data`: the unnamed
        file that holds the bytes (atomic_output), named beside the guard and installed
        instead of it; then the guard's name is removed once the output is in place."""
        d, out = self.out.dir, self.out.name
        try:
            ours = os.path.samestat(os.fstat(self.fd), d.lstat(self.name))
        except FileNotFoundError:
            ours = False
        if not ours:  # removed or replaced by someone else: do not install what is there now
            raise InputValidationError(f"{self.path} is no longer the file written for {self.out.path}: "
                                       "nothing was installed")
        src, written = self.name, self.fd
        if data is not None:
            src, written = _ready(self.name), data
            try:
                _name(data, d, src)
            except FileExistsError:  # another user's, made or kept there: a name of our own instead
                src = _with_suffix(self.name, f".{secrets.token_hex(6)}.ready")
                _name(data, d, src)
        try:
            try:
                if overwrite:
                    d.replace(src, out)
                else:
                    _link_new(d, src, out)
            except OSError as exc:  # EBUSY (a mount point), EXDEV: named in full, same class
                raise OSError(exc.errno, exc.strerror, str(d / src), None, str(d / out)) from None
        except BaseException:
            if src != self.name:
                with contextlib.suppress(OSError):
                    d.unlink(src)
            raise
        try:
            d.fsync()
        except OSError:
            with contextlib.suppress(OSError):
                if os.path.samestat(os.fstat(written), d.lstat(out)):
                    d.unlink(out)
            raise
        if src != self.name:  # the guard's name goes (its lock goes with close())
            with contextlib.suppress(OSError):
                if os.path.samestat(os.fstat(self.fd), d.lstat(self.name)):
                    d.unlink(self.name)


def claim_temp(out: Path | Output, purpose: str, mode: int = 0o600, *, pass_foreign: bool = False) -> Claim:
    """A fresh, empty temp file for `out`, open for writing and locked (a Claim; a path
    `out` is resolved as resolve_output() does, and that is closed with the claim). The
    caller installs it over `out` (or discards it), then closes it, which releases the
    lock. InputValidationError if another writer holds it (the same output, under way),
    or if the name holds something this process cannot remove.

    The file is made and locked with no name (or, without O_TMPFILE, under a private
    one) and only then linked to the shared one: a file at the shared name is always
    locked by a live writer or left by a dead one, never new and not yet locked (which a
    second claimant would take for a crashed run's and remove). What a crashed run left at `<name>.ready` (see the module
    docstring) is removed once the name is ours.

    A file at the shared name that another user owns (in a shared, sticky directory
    anyone can make it, and hold its lock, to stop every write to `out`) is refused,
    naming its owner, unless `pass_foreign` (atomic_output, when the bytes go to an unnamed
    file, so that nothing of them can be left under a name no one reclaims): then the
    private file is the guard, and a second writer of our own to that output is not
    refused."""
    owned = not isinstance(out, Output)
    target = resolve_output(out) if owned else out
    try:
        fd, name = _claim(target, purpose, mode, pass_foreign)
    except OSError as exc:
        if owned:
            target.close()
        raise _cannot(target, exc) from None
    except BaseException:
        if owned:
            target.close()
        raise
    return Claim(target, fd, name, owned)


def _cannot(out: Output, exc: OSError) -> InputValidationError:
    """An error of a step relative to the output's directory (whose names are relative to
    it), naming the output and its directory instead."""
    return InputValidationError(f"cannot write {out.path} (in {out.dir.path}): "
                                f"{exc.strerror or os.strerror(exc.errno or errno.EIO)}")


def _claim(out: Output, purpose: str, mode: int, pass_foreign: bool) -> tuple[int, str]:
    """The guard is made and locked with no name (O_TMPFILE) and then linked to the shared
    name, so that a kill at any instant leaves nothing but a locked-then-dead guard at that
    name, which the next claim removes; where the filesystem has no unnamed files, under a
    private name first (a kill between its creation and its unlink leaves that empty file
    behind, swept only as _sweep_own sweeps: a killed open's `.new` was found so)."""
    d = out.dir
    tmp = temp_name(out.name, purpose)
    unnamed = True
    for _ in range(_ATTEMPTS):
        fd = _unnamed(d, mode) if unnamed else None
        private = None if fd is not None else _private(tmp)
        if fd is None:
            fd = d.open(private, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        linked = False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # no one else knows this file
            try:
                if private is None:
                    _name(fd, d, tmp)
                else:
                    d.link(private, tmp)
                linked = True
            except FileExistsError:
                if _foreign(out, tmp, purpose, pass_foreign):
                    if private is None:  # a name of its own, which _sweep_own sweeps once its lock is dead
                        private = _private(tmp)
                        _name(fd, d, private)
                    return fd, private  # the shared name is squatted: this private one, unguarded
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
                    raise
                if private is None:  # unnamed files but no links to them: named guards from now on
                    os.close(fd)
                    unnamed = False
                    continue
                return _claim_without_links(out, fd, private, tmp, purpose, pass_foreign)
        except BaseException:
            os.close(fd)
            if private is not None:
                with contextlib.suppress(OSError):
                    d.unlink(private)
            raise
        if private is not None:
            with contextlib.suppress(OSError):
                d.unlink(private)
        if linked:
            _clear_ready(d, tmp)
            return fd, tmp
        os.close(fd)
        _remove_leftover(out, tmp, purpose)
    raise InputValidationError(f"could not claim {d / tmp}: it keeps being replaced")


def _private(tmp: str) -> str:
    return f"{tmp[: -len('.part')]}.{secrets.token_hex(6)}.new"


def _foreign(out: Output, tmp: str, purpose: str, passable: bool) -> bool:
    """Whether the file at the guard name `tmp` belongs to another user, who could hold it
    forever: True if that may be passed by (then our own killed runs' leftovers beside it
    are swept: _sweep_own), else InputValidationError."""
    try:
        owner = out.dir.lstat(tmp).st_uid
    except FileNotFoundError:
        return False
    if owner == os.geteuid():
        return False
    if passable:
        _sweep_own(out.dir, tmp)
        return True
    raise InputValidationError(f"{out.dir / tmp}, the temp name of a {purpose} to {out.path}, belongs to another "
                               f"user (uid {owner}): remove it, or write {out.path.name} to a directory of your own")


def _clear_ready(d: OutputDir, tmp: str) -> None:
    """With the guard `tmp` held: remove what a killed run left at `<guard>.ready` (ours to
    remove now: no live writer of this output can be using it). If something that is not
    ours stays there, installs use names with a random part, whose leftovers are swept.
    Limit: a leftover under such a name (a kill in the microseconds between naming and
    renaming, while another user held `.ready`) is swept only while something of another
    user is still at the guard or `.ready` name; once that is gone, no claim lists the
    directory, and it stays."""
    try:
        d.unlink(_ready(tmp))
    except FileNotFoundError:
        pass
    except OSError:  # another user's file or directory (a sticky directory keeps it)
        _sweep_own(d, tmp)


def _sweep_own(d: OutputDir, tmp: str) -> None:
    """What our own killed runs left beside the guard `tmp` under names with a random part,
    which no claim of the shared name removes (a passed-by guard `<stem>.<hex>.new`, a
    `.ready` made when the fixed one was taken): only regular files of ours, at least
    _STALE_READY old by ctime (link(2) sets it: a live writer's `.ready` and a claim's `.new`
    before its flock exist for microseconds); a guard only if no one holds its lock. Called
    only when the shared guard or `.ready` is another user's, so only then does a claim
    list the directory."""
    prefix = tmp[: -len(".part")] + "."
    stale = time.time() - _STALE_READY
    found: list[str] = []
    with contextlib.suppress(OSError):
        found = [name for name in d.names() if name.startswith(prefix)]
    for name in found:
        with contextlib.suppress(OSError):
            st = d.lstat(name)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_ctime >= stale:
                continue
            if name.endswith(".ready"):
                d.unlink(name)
            elif name.endswith(".new"):
                fd = d.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: a live writer's
                    if os.path.samestat(os.fstat(fd), d.lstat(name)):
                        d.unlink(name)
                finally:
                    os.close(fd)


def _ready(tmp: str) -> str:
    """The name the unnamed file's bytes get, beside the guard `tmp`, before the rename."""
    return _with_suffix(tmp, ".ready")


def _claim_without_links(out: Output, fd: int, private: str, tmp: str, purpose: str,
                         pass_foreign: bool) -> tuple[int, str]:
    """A filesystem without hard links (vfat, some FUSE): the private file becomes the temp
    file by rename, which cannot refuse an existing name, so a leftover is removed first and
    two writers to one output racing in that instant are not told apart. A failure is
    cleaned up by _claim (fd closed, the private file removed)."""
    if out.dir.lexists(tmp):
        if _foreign(out, tmp, purpose, pass_foreign):
            return fd, private  # squatted (see claim_temp)
        _remove_leftover(out, tmp, purpose)
    out.dir.replace(private, tmp)
    _clear_ready(out.dir, tmp)
    return fd, tmp


def _remove_leftover(out: Output, tmp: str, purpose: str) -> None:
    """Something is at the temp name: a writer's under way (its lock held: refused), or a
    crashed run's (removed, under its lock, so that no one else removes a live one)."""
    d, shown = out.dir, out.dir / tmp
    try:
        st = d.lstat(tmp)
    except FileNotFoundError:
        return  # gone meanwhile: try again
    if not stat.S_ISREG(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        raise InputValidationError(f"{shown} (the temp file of a {purpose} to {out.path}) is {kind}: remove it")
    flags = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        try:
            fd = d.open(tmp, os.O_RDWR | flags)  # NFS's flock emulation wants a writable fd
        except PermissionError:
            fd = d.open(tmp, os.O_RDONLY | flags)  # a read-only leftover of our own
    except FileNotFoundError:
        return
    except OSError as exc:
        raise InputValidationError(f"{shown}, left by an earlier {purpose} to {out.path}, cannot be opened "
                                   f"({os.strerror(exc.errno or errno.EIO)}): remove it") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputValidationError(f"another {purpose} to {out.path} is under way (it holds {shown})") from None
        except OSError as exc:
            raise InputValidationError(f"{shown}, left by an earlier {purpose} to {out.path}, cannot be locked "
                                       f"({os.strerror(exc.errno or errno.EIO)}): remove it") from None
        try:
            if os.path.samestat(os.fstat(fd), d.lstat(tmp)):
                d.unlink(tmp)  # a crashed run's: its lock died with it
        except FileNotFoundError:
            pass  # renamed or removed by its holder meanwhile: try again
        except OSError as exc:
            raise InputValidationError(f"{shown}, left by an earlier {purpose} to {out.path}, cannot be removed "
                                       f"({os.strerror(exc.errno or errno.EIO)}): remove it") from None
    finally:
        os.close(fd)


def _name(data: int, d: OutputDir, name: str) -> None:
    """Give the unnamed file `data` the name `name` in `d`: linkat(2) of its /proc/self/fd
    entry with AT_SYMLINK_FOLLOW (os.link takes that flag only with a dir_fd)."""
    proc = os.open(_PROC_FD, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(str(data), name, src_dir_fd=proc, dst_dir_fd=d.fd, follow_symlinks=True)
    finally:
        os.close(proc)


def _link_new(d: OutputDir, src: str, out: str) -> None:
    """src's file at `out` instead, unless something is there (FileExistsError): one
    renameat2(RENAME_NOREPLACE) where the kernel and filesystem have it; else link(2), which
    never replaces, and then src is unlinked (a crash in between leaves a second name, at
    the guard's name or its `.ready` one, which the next claim of the guard removes); on a
    filesystem without hard links, a check and a rename (a writer that makes `out` in
    between is not seen)."""
    if rename_noreplace(src, out, dir_fd=d.fd):
        return
    try:
        d.link(src, out)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        if d.lexists(out):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(d / out)) from None
        d.replace(src, out)
        return
    with contextlib.suppress(OSError):  # else removed by the next claim of this temp name
        d.unlink(src)
