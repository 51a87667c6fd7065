"""Interoperability of ASCII armor and scrypt passphrases with the real `age` tool.

age reads passphrases only from a terminal (/dev/tty), so the passphrase tests run it
under a pseudo-terminal (pty.fork) and type the passphrase when it prompts."""
from __future__ import annotations

import io
import random
from pathlib import Path

import pytest

from tests.age_tty import age_on_a_tty
from tests.vault.test_age_interop import SIZES, age, keygen, run_age  # noqa: F401 (fixtures)
from vault.age import ArmorError, ScryptIdentity, ScryptRecipient, dearmor, decrypt, encrypt


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
    code, tty = age_on_a_tty(age, args, b"correct horse battery")
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
    code, tty = age_on_a_tty(age, ["-d", "-o", str(out), str(sealed)], b"open sesame")
    assert code == 0, tty.decode(errors="replace")
    assert out.read_bytes() == data


def test_age_refuses_our_passphrase_file_with_the_wrong_passphrase(age, tmp_path: Path) -> None:
    """The pty driver really types the passphrase: a wrong one fails in age too."""
    sealed = tmp_path / "sealed.age"
    sealed.write_bytes(b"".join(encrypt(b"x", [ScryptRecipient("right", work_factor=10)])))
    code, tty = age_on_a_tty(age, ["-d", "-o", str(tmp_path / "out"), str(sealed)], b"wrong")
    assert code != 0 and b"incorrect passphrase" in tty.lower()


@pytest.mark.parametrize("trailing", [1023, 1024])
def test_whitespace_after_the_end_line_is_taken_as_age_takes_it(age, keygen, trailing: int) -> None:
    import subprocess

    key_file, ident, _ = keygen("owner")
    text = b"".join(encrypt([b"twin"], [ident.recipient], armor=True)) + b" " * trailing
    theirs = subprocess.run([age, "-d", "-i", str(key_file)], input=text, capture_output=True)
    try:
        ours = b"".join(decrypt(io.BytesIO(text), [ident]))
    except ArmorError:
        ours = None
    assert (theirs.returncode == 0) == (ours is not None)
    assert ours == (b"twin" if trailing < 1024 else None)
