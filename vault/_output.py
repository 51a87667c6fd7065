"""Open's output file: the writer behind vault/_pipeline.py's open (_Output) and the
fdatasync-behind helper (_Syncer) for output that goes through the page cache. Private."""
from __future__ import annotations

import errno
import fcntl
import os
import threading

from vault._fileio import ALIGN, write_all


class _Output:
    """Writes open's plaintext, buffer after buffer, to `fd` (a new temp file that open
    fsyncs before it returns), past the page cache where the filesystem allows it
    (O_DIRECT): those bytes have to reach the disk before open returns anyway, so caching
    them buys open nothing, and it saves copying them into freshly allocated page-cache
    pages (0.06 s per 256 MiB, and several times that on a VM whose memory is handed
    back to the host when free). A reader right after open reads the file from disk.
    O_DIRECT needs aligned memory (the aligned _Pool), offsets and lengths: every buffer
    but the last is _PLAIN_BUFFER bytes; the last one's unaligned tail, and everything on a
    filesystem that refuses O_DIRECT, is written through the page cache, with a _Syncer
    flushing behind so that the final fsync only waits for the tail."""

    def __init__(self, fd: int) -> None:
        # a descriptor of its own, closed by close(): a writer thread that outlived an
        # interrupted open (vault/_threads.py) writes into the same temp file, never into
        # whatever the process opened next under the caller's number once that was closed
        self._fd = os.dup(fd)
        try:
            self._direct = hasattr(os, "O_DIRECT") and self._set_direct(True)
            self._syncer: _Syncer | None = None if self._direct else _Syncer(self._fd)
        except BaseException:
            os.close(self._fd)
            raise

    def _set_direct(self, on: bool) -> bool:
        flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
        try:
            fcntl.fcntl(self._fd, fcntl.F_SETFL, flags | os.O_DIRECT if on else flags & ~os.O_DIRECT)
        except OSError:  # EINVAL: this filesystem has no O_DIRECT
            return False
        return on

    def write(self, view: memoryview) -> None:
        if self._direct:
            head = len(view) - len(view) % ALIGN
            while head:
                try:
                    n = os.write(self._fd, view[:head])
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    break  # refused (alignment): the rest through the page cache
                view, head = view[n:], head - n
            if view:  # the unaligned tail, or a refusal: the page cache from here on
                self._direct = self._set_direct(False)
                self._syncer = _Syncer(self._fd)
        write_all(self._fd, view)
        if self._syncer is not None:
            self._syncer.wrote(len(view))

    def close(self, *, check: bool = True) -> None:
        """Stop the syncer and close the descriptor; safe to call again (after an
        interruption, or once an error was raised)."""
        if self._syncer is not None:
            self._syncer.close(check=check)
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


class _Syncer:
    """Flushes a file being written to disk on a background thread (fdatasync after every
    _SYNC_EVERY bytes), so the caller's final fsync only waits for the tail. A failed
    fdatasync is re-raised by close(): the kernel reports a writeback error only once."""

    _SYNC_EVERY = 32 << 20

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pending = 0
        self._wake = threading.Condition()
        self._due = False
        self._done = False
        self._error: OSError | None = None
        self._stopped = threading.Event()  # waited for instead of a join (vault/_threads.py)
        self._thread = threading.Thread(target=self._run, name="vault-sync", daemon=True)
        self._thread.start()

    def wrote(self, n: int) -> None:
        self._pending += n
        if self._pending >= self._SYNC_EVERY:
            self._pending = 0
            with self._wake:
                self._due = True
                self._wake.notify()

    def _run(self) -> None:
        try:
            while True:
                with self._wake:
                    while not (self._due or self._done):
                        self._wake.wait()
                    if self._done:
                        return
                    self._due = False
                try:
                    os.fdatasync(self._fd)
                except OSError as exc:
                    self._error = self._error or exc
        finally:
            self._stopped.set()

    def close(self, *, check: bool = True) -> None:
        """Stop the thread and wait for it; safe to call again after an interruption."""
        with self._wake:
            self._done = True
            self._wake.notify()
        self._stopped.wait()
        if check and self._error is not None:
            raise self._error
