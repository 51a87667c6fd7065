"""Which worker process of an organisation node runs the background loops.

    leadership = LoopLeadership(settings.org_dir / "loops.lock")
    if leadership.try_acquire():   # non-blocking; True while this process holds the lock
        ...start the loops...
    else:
        leadership.holder()        # pid written by the holder (None if unknown)

With `twinledger serve --workers N` several processes serve one org over one database.
The indexer, audit anchoring and nonce pruning must run in exactly ONE of them: two
anchorers on one database would race to form the same batch (ledger/audit/anchoring.py),
two indexers would apply the same ranges concurrently. The leader is the process holding
an exclusive `flock` on the lock file. The kernel drops the lock when the holder's
process ends — however it ends, SIGKILL included — so a standby worker that retries
`try_acquire()` takes over the loops of a dead leader, and there is never a moment in
which two live processes both hold it. The lock is per host: workers of one org share a
machine (they share its listening port).

flock locks belong to an open file description, so two LoopLeadership objects on one
path exclude each other even inside one process (the in-process tests rely on that).
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = "loops.lock"


class LoopLeadership:
    """An exclusive, non-blocking flock on `path`, with the holder's pid in the file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; True if this object holds it now."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        # Only for humans and /readyz ("loops run in worker pid X"); the lock is the truth.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return True

    def holder(self) -> int | None:
        """The pid the current (or last) holder wrote, None if unknown."""
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return int(text) if text.isdigit() else None

    def release(self) -> None:
        """Give the lock up (closing the descriptor drops the flock)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


__all__ = ["LOCK_FILE", "LoopLeadership"]
