"""Drive the `age` tool under a pseudo-terminal: age reads passphrases only from a
terminal, so interop tests with passphrase-encrypted files type it when it prompts."""
from __future__ import annotations

import os
import pty
import select
import signal
import time

# Only a guard against a hung child (age waiting for input it will never get); no test
# result depends on how long anything takes.
_HANG_GUARD_SECONDS = 300


def age_on_a_tty(age: str, args: list[str], passphrase: bytes) -> tuple[int, bytes]:
    """Run age with a pty as its controlling terminal, answering every passphrase
    prompt. Returns (exit code, terminal output)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes age
        try:
            os.execv(age, [age, *args])
        finally:
            os._exit(127)
    output = bytearray()
    answered = 0
    give_up = time.monotonic() + _HANG_GUARD_SECONDS
    try:
        while time.monotonic() < give_up:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                continue
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal (it exited)
                break
            if not data:
                break
            output += data
            # "Enter passphrase…:" and "Confirm passphrase:" each get one answer.
            while output.lower().count(b"passphrase") > answered:
                os.write(fd, passphrase + b"\n")
                answered += 1
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), bytes(output)
