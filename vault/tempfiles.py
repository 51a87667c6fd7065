"""The temp file beside an output that is written whole and then renamed into place
(open's plaintext, the CLI's CAR export).

One name per output and purpose (a hash of the output's name: short, whatever the
output's length), held by an exclusive flock(2) while it is written: a second writer
to the same output is refused at once instead of writing into the first one's file, and
the next run after a crash reuses (truncates) what the crashed one left instead of
leaving one more file behind. tempfile.mkstemp gives neither: a random name per run, so
every crash leaves a file (plaintext, for open) that nothing ever removes.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
from pathlib import Path

from vault.errors import InputValidationError

_ATTEMPTS = 8


def temp_path(out: Path, purpose: str) -> Path:
    digest = hashlib.sha256(os.fsencode(out.name)).hexdigest()[:20]
    return out.parent / f".twinledger-{purpose}-{digest}.part"


def claim_temp(out: Path, purpose: str, mode: int = 0o600) -> tuple[int, Path]:
    """An empty temp file for `out`, open for writing and locked: (fd, path). The caller
    renames it over `out` (or unlinks it) and then closes fd, which releases the lock.
    InputValidationError if another writer holds it (the same output, under way)."""
    tmp = temp_path(out, purpose)
    for _ in range(_ATTEMPTS):
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise InputValidationError(f"{tmp} is a symbolic link: remove it") from None
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InputValidationError(f"{tmp} is not a regular file: remove it")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise InputValidationError(f"another {purpose} to {out} is under way (it holds {tmp})") from None
            # the lock is on the inode: if the name moved meanwhile (the previous holder
            # renamed it over its output and let go), this is that output: start again
            try:
                same = os.path.samestat(os.fstat(fd), os.lstat(tmp))
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                return fd, tmp
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    raise InputValidationError(f"could not claim {tmp}: it keeps being replaced")


def install_temp(fd: int, tmp: Path, out: Path) -> None:
    """Rename the written (and fsynced) temp file over `out`, then fsync the directory so
    that the new entry is durable too. If that fsync fails, `out` is removed again (only
    if it is still this file: another writer may have replaced it meanwhile), so that a
    failure leaves nothing at `out`; what it replaced is gone either way. fd stays open."""
    os.replace(tmp, out)
    try:
        _fsync_dir(out.parent)
    except OSError:
        with contextlib.suppress(OSError):
            if os.path.samestat(os.fstat(fd), os.lstat(out)):
                out.unlink()
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def discard_temp(fd: int | None, tmp: Path) -> None:
    """After a failure: remove the temp file (while still holding its lock), then close."""
    with contextlib.suppress(OSError):
        if fd is None or os.path.samestat(os.fstat(fd), os.lstat(tmp)):
            tmp.unlink()
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
