"""Interoperability with the real `age` / `age-keygen` tools (Debian package, /usr/bin)."""
from __future__ import annotations

import io
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from vault.age import (
    CHUNK_SIZE,
    Decryptor,
    X25519Identity,
    X25519Recipient,
    decrypt,
    encrypt,
    read_header,
    rewrap,
)
from vault.errors import HeaderMACError


def _tool(name: str) -> str:
    path = shutil.which(name) or f"/usr/bin/{name}"
    if not Path(path).exists():
        pytest.fail(f"{name} not installed (make setup installs the Debian package 'age')")
    return path


@pytest.fixture(scope="module")
def age() -> str:
    return _tool("age")


@pytest.fixture(scope="module")
def keygen(tmp_path_factory):
    """age-keygen → (identity file, our parse of the identity, the recipient it printed)."""
    tool = _tool("age-keygen")

    def make(name: str) -> tuple[Path, X25519Identity, str]:
        path = tmp_path_factory.mktemp("keys") / f"{name}.txt"
        subprocess.run([tool, "-o", str(path)], check=True, capture_output=True)
        lines = path.read_text().splitlines()
        public = next(line.split(": ")[1] for line in lines if line.startswith("# public key: "))
        secret = next(line for line in lines if line.startswith("AGE-SECRET-KEY-1"))
        return path, X25519Identity.parse(secret), public

    return make


def run_age(age: str, *args: str, stdin: bytes = b"") -> bytes:
    proc = subprocess.run([age, *args], input=stdin, capture_output=True)
    if proc.returncode:
        raise AssertionError(f"age {' '.join(args)} failed: {proc.stderr.decode()}")
    return proc.stdout


def ours(data: bytes, recipients) -> bytes:
    return b"".join(encrypt([data], recipients))


SIZES = [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE]


def test_keys_agree_with_age_keygen(keygen, tmp_path) -> None:
    _, ident, public = keygen("a")
    assert str(ident.recipient) == public
    mine = X25519Identity.generate()
    (tmp_path / "mine.txt").write_text(str(mine) + "\n")
    derived = subprocess.run(
        [_tool("age-keygen"), "-y", str(tmp_path / "mine.txt")], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert derived == str(mine.recipient)
    assert X25519Recipient.parse(derived) == mine.recipient


@pytest.mark.parametrize("size", SIZES)
def test_age_encrypts_we_decrypt(age, keygen, size: int) -> None:
    _, ident, public = keygen("owner")
    data = random.Random(size).randbytes(size)
    blob = run_age(age, "-e", "-r", public, stdin=data)
    assert b"".join(decrypt(io.BytesIO(blob), [ident])) == data


@pytest.mark.parametrize("size", SIZES)
def test_we_encrypt_age_decrypts(age, keygen, size: int) -> None:
    key_file, ident, _ = keygen("owner")
    data = random.Random(size).randbytes(size)
    assert run_age(age, "-d", "-i", str(key_file), stdin=ours(data, [ident.recipient])) == data


def test_our_identity_file_works_with_age(age, tmp_path) -> None:
    mine = X25519Identity.generate()
    (tmp_path / "id.txt").write_text(str(mine) + "\n")
    assert run_age(age, "-d", "-i", str(tmp_path / "id.txt"), stdin=ours(b"hi", [mine.recipient])) == b"hi"


def test_multiple_recipients_both_ways(age, keygen) -> None:
    key_a, ident_a, pub_a = keygen("a")
    _, ident_b, pub_b = keygen("b")
    blob = ours(b"to both", [ident_b.recipient, ident_a.recipient])
    assert run_age(age, "-d", "-i", str(key_a), stdin=blob) == b"to both"
    blob = run_age(age, "-e", "-r", pub_a, "-r", pub_b, stdin=b"from age")
    assert b"".join(decrypt(io.BytesIO(blob), [ident_b])) == b"from age"


@pytest.mark.parametrize("sealed_by", ["age", "us"])
def test_rewrapped_header_opens_with_age_and_here(age, keygen, sealed_by: str) -> None:
    """The owner's file (by either tool) gets a new header for the consumer; header +
    untouched payload opens with `age -d` and with our code."""
    _, owner, owner_pub = keygen("owner")
    consumer_file, consumer, _ = keygen("consumer")
    data = random.Random(1).randbytes(2 * CHUNK_SIZE + 17)
    if sealed_by == "age":
        blob = run_age(age, "-e", "-r", owner_pub, stdin=data)
    else:
        blob = ours(data, [owner.recipient])
    src = io.BytesIO(blob)
    header = read_header(src)
    payload = src.read()
    new_header = rewrap(header, [owner], [consumer.recipient])
    assert run_age(age, "-d", "-i", str(consumer_file), stdin=new_header + payload) == data
    assert b"".join(decrypt(io.BytesIO(new_header + payload), [consumer])) == data


def test_streaming_through_pipes(age, keygen, tmp_path) -> None:
    """Our decryptor reads age's stdout pipe (short reads), age reads ours from stdin."""
    key_file, ident, public = keygen("owner")
    data = random.Random(2).randbytes(40 * CHUNK_SIZE + 3)
    (tmp_path / "plain").write_bytes(data)
    with (tmp_path / "plain").open("rb") as plain, subprocess.Popen(
        [age, "-e", "-r", public], stdin=plain, stdout=subprocess.PIPE
    ) as proc:
        got = bytearray()
        for chunk in decrypt(proc.stdout, [ident]):  # type: ignore[arg-type]
            got += chunk
    assert got == data
    with subprocess.Popen(
        [age, "-d", "-i", str(key_file)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    ) as proc:
        out, _ = proc.communicate(b"".join(encrypt(iter([data[:1000], data[1000:]]), [ident.recipient])))
    assert out == data


def test_age_and_we_both_reject_a_bad_header_mac(age, keygen) -> None:
    key_file, ident, public = keygen("owner")
    blob = bytearray(run_age(age, "-e", "-r", public, stdin=b"x"))
    mac_at = bytes(blob).index(b"\n--- ") + 5
    blob[mac_at] = ord("A") if blob[mac_at] != ord("A") else ord("B")
    proc = subprocess.run([age, "-d", "-i", str(key_file)], input=bytes(blob), capture_output=True)
    assert proc.returncode != 0 and b"MAC" in proc.stderr
    with pytest.raises(HeaderMACError):
        Decryptor(io.BytesIO(bytes(blob)), [ident])
