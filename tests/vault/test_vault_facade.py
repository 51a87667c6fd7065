"""The vault facade end to end on real components: age, commitment, UnixFS importer,
FilesystemBlockstore, and the `age` command-line tool for interoperability."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vault.age import X25519Identity, read_header, unwrap_file_key
from vault.blockstore import FilesystemBlockstore, MemoryBlockstore
from vault.cid import CID
from vault.commitment import compute_commitment
from vault.errors import (
    BlockMismatchError,
    BlockNotFoundError,
    CommitmentMismatchError,
    DecryptionError,
    InputValidationError,
    IntegrityError,
    NoIdentityMatchError,
)
from vault.kubo import KuboClient
from vault.unixfs import export, import_bytes
from vault.vault import SealedVersion, Vault

AGE = shutil.which("age") or "/usr/bin/age"
MULTI = 2 * 1024 * 1024 + 12345  # ciphertext spans 3 leaves of the 1 MiB default profile


@pytest.fixture(scope="module")
def owner() -> X25519Identity:
    return X25519Identity.generate()


@pytest.fixture(scope="module")
def consumer() -> X25519Identity:
    return X25519Identity.generate()


@pytest.fixture
def store(tmp_path: Path) -> FilesystemBlockstore:
    return FilesystemBlockstore(tmp_path / "store")


@pytest.fixture
def outdir(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


def ciphertext_of(store, cid: str) -> bytes:
    return b"".join(export(CID.decode(cid), store.get))


def split(ciphertext: bytes) -> tuple[bytes, bytes]:
    src = io.BytesIO(ciphertext)
    header = read_header(src)
    return header, src.read()


def age_decrypt(tmp_path: Path, identity: X25519Identity, data: bytes) -> bytes:
    key = tmp_path / "age.key"
    key.write_text(str(identity) + "\n")
    key.chmod(0o600)
    proc = subprocess.run([AGE, "-d", "-i", str(key)], input=data, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def assert_nothing_at(out: Path) -> None:
    assert not out.exists()
    assert sorted(p.name for p in out.parent.iterdir()) == []  # no temp file either


# -- the happy path ----------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, MULTI], ids=["empty", "one-byte", "multi-chunk"])
def test_seal_rewrap_open_with_this_code_and_with_age(tmp_path, store, owner, consumer, outdir, size) -> None:
    plaintext = os.urandom(size)
    sealed = Vault(store, owner).seal(io.BytesIO(plaintext))

    stored = ciphertext_of(store, sealed.cid)
    stored_header, payload = split(stored)
    file_key = unwrap_file_key(stored_header, [owner])
    assert sealed == SealedVersion(
        cid=str(import_bytes(stored, "unixfs-v1-2025")),
        commitment=compute_commitment(file_key, [plaintext]),
        size=size,
        ciphertext_size=len(stored),
        profile="unixfs-v1-2025",
    )
    assert CID.decode(sealed.cid) in store.pins()
    assert age_decrypt(tmp_path, owner, stored) == plaintext  # `ipfs cat | age -d` works

    header = Vault(store, owner).rewrap_for(sealed.cid, consumer.recipient)
    assert header != stored_header
    assert age_decrypt(tmp_path, consumer, header + payload) == plaintext

    out = outdir / "twin.bin"
    written = Vault(MemoryBlockstore(), consumer).open(
        sealed.cid, header, consumer, out, commitment=sealed.commitment, get_block=store.get)
    assert written == size
    assert out.read_bytes() == plaintext
    assert sorted(p.name for p in outdir.iterdir()) == ["twin.bin"]


def test_seal_accepts_a_path_a_file_object_and_an_iterable(tmp_path, owner, outdir) -> None:
    plaintext = os.urandom(300_000)
    path = tmp_path / "plain.bin"
    path.write_bytes(plaintext)
    vault = Vault(MemoryBlockstore(), owner, profile="v1")
    with open(path, "rb") as fh:
        sources = [path, fh, [plaintext[:7], b"", plaintext[7:]]]
        sealed = [vault.seal(src) for src in sources]
    assert len({s.cid for s in sealed}) == 3  # a fresh file key each time
    for n, s in enumerate(sealed):
        assert (s.size, s.profile) == (len(plaintext), "v1")
        vault.open(s.cid, None, owner, outdir / f"{n}", commitment=s.commitment)
        assert (outdir / f"{n}").read_bytes() == plaintext


def test_progress_reports_every_plaintext_byte(owner, outdir) -> None:
    vault = Vault(MemoryBlockstore(), owner)
    sealed_steps: list[int] = []
    sealed = vault.seal([os.urandom(MULTI)], progress=sealed_steps.append)
    opened_steps: list[int] = []
    vault.open(sealed.cid, None, owner, outdir / "x", commitment=sealed.commitment, progress=opened_steps.append)
    assert sum(sealed_steps) == sum(opened_steps) == MULTI
    assert len(opened_steps) > 1


def test_rewrap_reads_only_the_first_blocks(owner, consumer) -> None:
    class CountingStore(MemoryBlockstore):
        gets: list[CID] = []

        def get(self, cid: CID) -> bytes:
            self.gets.append(cid)
            return super().get(cid)

    store = CountingStore()
    sealed = Vault(store, owner).seal([os.urandom(3 * MULTI)])
    store.gets.clear()
    Vault(store, owner).rewrap_for(sealed.cid, consumer.recipient)
    assert [str(c) for c in store.gets][0] == sealed.cid
    assert len(store.gets) == 2  # the root node and the first leaf, of 7 leaves


def test_seal_over_a_kubo_store(owner, outdir) -> None:
    from tests.vault.test_kubo import FakeKubo

    kubo = KuboClient("http://kubo.test:5001", transport=httpx.MockTransport(FakeKubo()))
    plaintext = os.urandom(MULTI)
    sealed = Vault(kubo, owner).seal([plaintext])
    Vault(kubo, owner).open(sealed.cid, None, owner, outdir / "x", commitment=sealed.commitment)
    assert (outdir / "x").read_bytes() == plaintext


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(st.binary(max_size=70_000), max_size=5))
def test_seal_then_open_round_trips_any_plaintext(tmp_path_factory, owner, pieces) -> None:
    out = tmp_path_factory.mktemp("prop") / "out"
    vault = Vault(MemoryBlockstore(), owner, profile="v1")
    sealed = vault.seal(pieces)
    assert vault.open(sealed.cid, None, owner, out, commitment=sealed.commitment) == sum(map(len, pieces))
    assert out.read_bytes() == b"".join(pieces)


# -- failures leave nothing behind ----------------------------------------------------


@pytest.fixture
def sealed_multi(store, owner) -> SealedVersion:
    return Vault(store, owner).seal([os.urandom(MULTI)])


def test_a_flipped_byte_in_a_stored_block_is_an_integrity_error(store, owner, sealed_multi, outdir) -> None:
    leaves = sorted((store.root / "blocks").rglob("*.data"), key=lambda p: p.stat().st_size)
    victim = leaves[-1]  # a full 1 MiB ciphertext leaf
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    out = outdir / "x"
    with pytest.raises(BlockMismatchError):
        Vault(store, owner).open(sealed_multi.cid, None, owner, out, commitment=sealed_multi.commitment)
    assert_nothing_at(out)


def test_a_gateway_lying_about_a_block_is_an_integrity_error(store, owner, sealed_multi, outdir) -> None:
    def lying_gateway(cid: CID) -> bytes:
        block = store.get(cid)
        return block[:-1] + bytes([block[-1] ^ 1]) if cid.codec == 0x55 else block

    out = outdir / "x"
    with pytest.raises(IntegrityError):
        Vault(MemoryBlockstore(), owner).open(sealed_multi.cid, None, owner, out,
                                              commitment=sealed_multi.commitment, get_block=lying_gateway)
    assert_nothing_at(out)


def test_a_missing_block_fails_and_leaves_nothing(store, owner, sealed_multi, outdir) -> None:
    def gateway(cid: CID) -> bytes:
        if cid.codec == 0x55 and store.get(cid) and len(store.get(cid)) < 1 << 20:
            raise BlockNotFoundError(f"{cid} not found")
        return store.get(cid)

    out = outdir / "x"
    with pytest.raises(BlockNotFoundError):
        Vault(store, owner).open(sealed_multi.cid, None, owner, out, commitment=sealed_multi.commitment,
                                 get_block=gateway)
    assert_nothing_at(out)


def test_wrong_commitment(store, owner, sealed_multi, outdir) -> None:
    out = outdir / "x"
    wrong = bytes([sealed_multi.commitment[0] ^ 1]) + sealed_multi.commitment[1:]
    with pytest.raises(CommitmentMismatchError):
        Vault(store, owner).open(sealed_multi.cid, None, owner, out, commitment=wrong)
    assert_nothing_at(out)


def test_wrong_identity(store, owner, consumer, sealed_multi, outdir) -> None:
    out = outdir / "x"
    with pytest.raises(NoIdentityMatchError):
        Vault(store, owner).open(sealed_multi.cid, None, consumer, out, commitment=sealed_multi.commitment)
    assert_nothing_at(out)


def test_a_header_for_another_file_fails_decryption(store, owner, consumer, sealed_multi, outdir) -> None:
    other = Vault(store, owner).seal([b"another file"])
    header = Vault(store, owner).rewrap_for(other.cid, consumer.recipient)
    out = outdir / "x"
    with pytest.raises(DecryptionError):
        Vault(store, consumer).open(sealed_multi.cid, header, consumer, out, commitment=sealed_multi.commitment)
    assert_nothing_at(out)


def test_a_failed_open_leaves_an_existing_output_untouched(store, owner, consumer, sealed_multi, outdir) -> None:
    out = outdir / "x"
    out.write_bytes(b"previous version")
    with pytest.raises(NoIdentityMatchError):
        Vault(store, owner).open(sealed_multi.cid, None, consumer, out, commitment=sealed_multi.commitment)
    assert out.read_bytes() == b"previous version"
    assert sorted(p.name for p in outdir.iterdir()) == ["x"]


def test_a_failing_store_aborts_the_seal(owner) -> None:
    class FullDisk(MemoryBlockstore):
        def put(self, cid: CID, data: bytes) -> None:
            if len(self) >= 1:
                raise OSError(28, "No space left on device")
            super().put(cid, data)

    with pytest.raises(OSError, match="No space left"):
        Vault(FullDisk(), owner).seal([os.urandom(4 * MULTI)])


def test_a_failing_source_aborts_the_seal(owner) -> None:
    def source():
        yield os.urandom(MULTI)
        raise OSError(5, "Input/output error")

    store = MemoryBlockstore()
    with pytest.raises(OSError, match="Input/output error"):
        Vault(store, owner).seal(source())
    assert store.pins() == frozenset()


class _NonBlocking(io.RawIOBase):
    """A pipe opened O_NONBLOCK, say: some data, then None ("none yet"), then the rest."""

    def __init__(self, answers: list[bytes | None]) -> None:
        self._answers = answers

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int | None:  # noqa: ANN001
        if not self._answers:
            return 0
        answer = self._answers.pop(0)
        if answer is None:
            return None
        buffer[: len(answer)] = answer
        return len(answer)


class _Greedy:
    """read(n) that ignores n."""

    def __init__(self) -> None:
        self._sent = False

    def read(self, n: int) -> bytes:
        if self._sent:
            return b""
        self._sent = True
        return os.urandom(n + 10)


class _ReadNone:
    def read(self, n: int) -> None:
        return None


@pytest.mark.parametrize(
    ("source", "match"),
    [
        (lambda tmp: _NonBlocking([b"x" * 1000, None, b"y" * 1000]), "non-blocking stream"),
        (lambda tmp: _ReadNone(), "non-blocking stream"),
        (lambda tmp: _Greedy(), r"returned \d+ bytes"),
        (lambda tmp: (tmp / "t.txt").open("w+"), "text stream: open the file in binary mode"),
    ],
    ids=["readinto-None", "read-None", "read-more-than-asked", "text-mode-file"],
)
def test_a_source_that_cannot_be_read_whole_is_refused_not_sealed_short(tmp_path, owner, source, match) -> None:
    store = MemoryBlockstore()
    src = source(tmp_path)
    try:
        with pytest.raises(InputValidationError, match=match):
            Vault(store, owner).seal(src)
    finally:
        close = getattr(src, "close", None)
        if close is not None:
            close()
    assert store.pins() == frozenset()


def test_a_text_mode_read_gives_a_clear_error_too(owner) -> None:
    class Text:
        def read(self, n: int) -> str:
            return "plaintext"

    with pytest.raises(InputValidationError, match="returned str, not bytes"):
        Vault(MemoryBlockstore(), owner).seal(Text())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cid": "not-a-cid"}, "CID"),
        ({"commitment": b"short"}, "32 bytes"),
        ({"out": Path("/nonexistent-dir/x")}, "does not exist"),
        ({"header": "text"}, "header must be bytes"),
    ],
)
def test_open_validates_its_arguments(store, owner, sealed_multi, outdir, kwargs, match) -> None:
    args = {"cid": sealed_multi.cid, "header": None, "identity": owner, "out": outdir / "x",
            "commitment": sealed_multi.commitment, **kwargs}
    with pytest.raises(InputValidationError, match=match):
        Vault(store, owner).open(**args)
    assert list(outdir.iterdir()) == []


def test_open_writes_an_output_whose_name_is_near_name_max(store, owner, outdir) -> None:
    data = os.urandom(5000)
    sealed = Vault(store, owner).seal([data])
    out = outdir / ("n" * 250)
    assert Vault(store, owner).open(sealed.cid, None, owner, out, commitment=sealed.commitment) == len(data)
    assert out.read_bytes() == data and [p.name for p in outdir.iterdir()] == [out.name]


def test_a_failed_directory_fsync_after_the_rename_leaves_nothing_at_out(store, owner, outdir, monkeypatch) -> None:
    from vault._outdir import OutputDir

    sealed = Vault(store, owner).seal([b"secret plaintext"])
    out = outdir / "o.bin"
    out.write_bytes(b"what was there")

    def failing(directory) -> None:  # noqa: ANN001
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(OutputDir, "fsync", failing)
    with pytest.raises(OSError, match="Input/output error"):
        Vault(store, owner).open(sealed.cid, None, owner, out, commitment=sealed.commitment)
    assert list(outdir.iterdir()) == []


def test_a_second_open_to_the_same_output_is_refused_while_one_is_under_way(store, owner, outdir) -> None:
    from vault.tempfiles import claim_temp

    sealed = Vault(store, owner).seal([b"plaintext"])
    out = outdir / "o.bin"
    claim = claim_temp(out, "open")  # as an open under way in another thread or process holds it
    tmp = claim.path
    os.write(claim.fd, b"the other open's partial plaintext")
    with pytest.raises(InputValidationError, match="another open to .* is under way"):
        Vault(store, owner).open(sealed.cid, None, owner, out, commitment=sealed.commitment)
    assert tmp.read_bytes() == b"the other open's partial plaintext" and not out.exists()
    claim.discard()
    assert Vault(store, owner).open(sealed.cid, None, owner, out, commitment=sealed.commitment) == 9
    assert [p.name for p in outdir.iterdir()] == ["o.bin"]


def test_constructor_validates(owner) -> None:
    with pytest.raises(InputValidationError, match="profile"):
        Vault(MemoryBlockstore(), owner, profile="v9")
    with pytest.raises(InputValidationError, match="X25519Identity"):
        Vault(MemoryBlockstore(), "AGE-SECRET-KEY-1...")  # type: ignore[arg-type]
    with pytest.raises(InputValidationError, match="X25519Recipient"):
        Vault(MemoryBlockstore(), owner).rewrap_for("bafkqaaa", "age1...")  # type: ignore[arg-type]


def test_open_refuses_an_output_inside_the_block_store(store, owner, tmp_path) -> None:
    vault = Vault(store, owner)
    sealed = vault.seal(b"twin model" * 1000)
    block = store._path(CID.decode(sealed.cid))
    (tmp_path / "link").symlink_to(block.parent)
    for out in (block, block.parent / "new", tmp_path / "link" / block.name, store.root / "pins" / "x",
                store.root / "pins.json", store.root / "gc.lock"):
        with pytest.raises(InputValidationError, match="inside the block store"):
            vault.open(sealed.cid, None, owner, out, commitment=sealed.commitment)
    assert store.get(CID.decode(sealed.cid))  # still whole
    out = store.root / "beside-the-store.bin"  # the store's own directory, outside blocks/ and pins/
    assert vault.open(sealed.cid, None, owner, out, commitment=sealed.commitment) == 10_000


def test_a_directory_swapped_for_a_link_into_the_store_after_the_check_is_not_written_through(
        store, owner, tmp_path, monkeypatch) -> None:
    """The output's directory is checked and written as one open directory: replacing it
    on the way by a link into a shard, between the check and the write, changes nothing
    (the path was resolved again for the write, and a pinned block replaced by plaintext)."""
    vault = Vault(store, owner)
    sealed = vault.seal(b"twin model" * 1000)
    block = store._path(CID.decode(sealed.cid))
    before = block.read_bytes()
    outdir = tmp_path / "out"
    outdir.mkdir()
    checked = FilesystemBlockstore.owns

    def swap_after_the_check(self, path, **kwargs):  # noqa: ANN001, ANN003, ANN202
        answer = checked(self, path, **kwargs)
        outdir.rename(tmp_path / "moved")
        outdir.symlink_to(block.parent)  # out/<block name> is the block now
        return answer

    monkeypatch.setattr(FilesystemBlockstore, "owns", swap_after_the_check)
    assert vault.open(sealed.cid, None, owner, outdir / block.name, commitment=sealed.commitment) == 10_000
    assert (tmp_path / "moved" / block.name).read_bytes() == b"twin model" * 1000
    assert block.read_bytes() == before and sorted(p.name for p in (tmp_path / "moved").iterdir()) == [block.name]


def test_owns_with_a_directory_descriptor_checks_that_directory_wherever_it_is_now(store, tmp_path) -> None:
    shard = store._path(CID.decode(Vault(store, X25519Identity.generate()).seal(b"x").cid)).parent
    (tmp_path / "d" / "sub").mkdir(parents=True)
    fd = os.open(tmp_path / "d" / "sub", os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert not store.owns("f", dir_fd=fd)
        (tmp_path / "d").rename(shard / "d")  # the directory held is inside a shard now
        assert store.owns("f", dir_fd=fd) and store.owns(shard / "d" / "sub" / "f")
        assert not store.owns(tmp_path / "d" / "sub" / "f")  # that path names nothing now
        root = os.open(store.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert store.owns("pins.json", dir_fd=root) and not store.owns("beside.bin", dir_fd=root)
        finally:
            os.close(root)
    finally:
        os.close(fd)


@pytest.mark.skipif(os.geteuid() != 0, reason="a bind mount needs root")
def test_open_refuses_the_block_store_seen_through_a_bind_mount(store, owner, tmp_path) -> None:
    import subprocess

    vault = Vault(store, owner)
    sealed = vault.seal(b"twin model" * 1000)
    block = store._path(CID.decode(sealed.cid))
    alias = tmp_path / "alias"
    alias.mkdir()
    if subprocess.run(["mount", "--bind", str(block.parent), str(alias)], capture_output=True).returncode:
        pytest.skip("mount --bind is not allowed here")
    try:
        with pytest.raises(InputValidationError, match="inside the block store"):
            vault.open(sealed.cid, None, owner, alias / block.name, commitment=sealed.commitment)
    finally:
        subprocess.run(["umount", str(alias)], check=True)
    assert store.get(CID.decode(sealed.cid))
