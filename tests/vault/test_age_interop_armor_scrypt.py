"""Interoperability of ASCII armor and scrypt passphrases with the real `age` tool.

age reads passphrases only from a terminal (/dev/tty), so the passphrase tests run it
under a pseudo-terminal (pty.fork) and type the passphrase when it prompts."""
from __future__ import annotations

import io
import os
import pty
import random
import select
import signal
import time
from pathlib import Path

import pytest

from tests.vault.test_age_interop import SIZES, age, keygen, run_age  # noqa: F401 (fixtures)
from vault.age import ScryptIdentity, ScryptRecipient, dearmor, decrypt, encrypt

# Only a guard against a hung child (age waiting for input it will never get); no test
# result depends on how long anything takes.
_HANG_GUARD_SECONDS = 300


def _age_on_a_tty(age: str, args: list[str], passphrase: bytes) -> tuple[int, bytes]:
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


@pytest.mark.parametrize("size", SIZES)
def test_age_armored_output_opens_here(age, keygen, size: int) -> None:
    _, ident, public = keygen("owner")
    data = random.Random(size).randbytes(size)
    text = run_age(age, "-e", "-a", "-r", public, stdin=data)
    assert text.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----\n")
    assert b"".join(decrypt(io.BytesIO(text), [ident])) == data


@pytest.mark.parametrize("size", SIZES)
def test_our_armored_output_opens_with_age(age, keygen, size: int) -> None:
    key_file, ident, _ = keygen("owner")
    data = random.Random(size).randbytes(size)
    text = b"".join(encrypt(data, [ident.recipient], armor=True))
    assert run_age(age, "-d", "-i", str(key_file), stdin=text) == data
    # CRLF line ends (a file that went through a Windows editor) open in both.
    crlf = text.replace(b"\n", b"\r\n")
    assert run_age(age, "-d", "-i", str(key_file), stdin=crlf) == data


@pytest.mark.parametrize("armor", [False, True])
def test_age_passphrase_file_opens_here(age, tmp_path: Path, armor: bool) -> None:
    """`age -p` (its default work factor, 2**18) → ScryptIdentity."""
    data = random.Random(7).randbytes(100_000)
    (tmp_path / "plain").write_bytes(data)
    out = tmp_path / "sealed.age"
    args = ["-p", *(["-a"] if armor else []), "-o", str(out), str(tmp_path / "plain")]
    code, tty = _age_on_a_tty(age, args, b"correct horse battery")
    assert code == 0, tty.decode(errors="replace")
    blob = out.read_bytes()
    binary = dearmor(io.BytesIO(blob)).read() if armor else blob
    assert b"\n-> scrypt " in binary
    assert b"".join(decrypt(io.BytesIO(blob), [ScryptIdentity("correct horse battery")])) == data


@pytest.mark.parametrize("armor", [False, True])
def test_our_passphrase_file_opens_with_age(age, tmp_path: Path, armor: bool) -> None:
    data = random.Random(8).randbytes(70_000)
    sealed = tmp_path / "sealed.age"
    sealed.write_bytes(b"".join(encrypt(data, [ScryptRecipient("open sesame", work_factor=10)], armor=armor)))
    out = tmp_path / "opened"
    code, tty = _age_on_a_tty(age, ["-d", "-o", str(out), str(sealed)], b"open sesame")
    assert code == 0, tty.decode(errors="replace")
    assert out.read_bytes() == data


def test_age_refuses_our_passphrase_file_with_the_wrong_passphrase(age, tmp_path: Path) -> None:
    """The pty driver really types the passphrase: a wrong one fails in age too."""
    sealed = tmp_path / "sealed.age"
    sealed.write_bytes(b"".join(encrypt(b"x", [ScryptRecipient("right", work_factor=10)])))
    code, tty = _age_on_a_tty(age, ["-d", "-o", str(tmp_path / "out"), str(sealed)], b"wrong")
    assert code != 0 and b"incorrect passphrase" in tty.lower()
