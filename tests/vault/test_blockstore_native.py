"""The blockstore's native put (vault/_accel tl_write_block): the same files and the same
durability as the Python path, which tests/vault/test_blockstore.py checks by counting
os.fsync calls. The C code makes its syscalls directly, so here they are traced with
strace in a child process and their order is checked: temp file created (then switched
to O_DIRECT where asked), written, fsynced, renamed into place, then its shard directory
fsynced. And both paths on a real filesystem without O_DIRECT (ramfs, as root)."""
from __future__ import annotations

import contextlib
import json
import mmap
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vault import _accel
from vault.blockstore import filesystem as bs_filesystem
from vault.blockstore import FilesystemBlockstore
from vault.cid import CID, RAW

MIB = 1 << 20
pytestmark = pytest.mark.skipif(not _accel.available, reason="vault/_accel is not built")
REPO = Path(__file__).resolve().parents[2]

# The child: puts `n` blocks of `size` bytes (page-aligned mmap memory) in the given mode and
# prints the block files' paths.
CHILD = r"""
import json, mmap, os, sys
sys.path.insert(0, sys.argv[1])
from vault.blockstore import FilesystemBlockstore
from vault.cid import CID, RAW
root, mode, n, size, method = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
store = FilesystemBlockstore(root, sync=mode != "scratch", verify_writes=False, sync_method=method)
print("START", flush=True)
blocks = []
for i in range(n):
    buf = mmap.mmap(-1, size)
    buf[:] = os.urandom(size)
    blocks.append((CID.from_sha256(bytes(buf), RAW, 1), memoryview(buf)))
def put_all():
    for cid, view in blocks:
        store.put(cid, view)
if mode == "background":
    with store.batch(background=True, direct=True):
        put_all()
elif mode == "deferred":
    with store.batch():
        put_all()
        print("BATCH-END", flush=True)
else:
    put_all()
print(json.dumps([str(store._path(cid)) for cid, _ in blocks]))
"""


def _trace(tmp_path: Path, mode: str, n: int = 3, size: int = MIB,
           method: str = "fsync") -> tuple[list[str], list[str]]:
    """(syscall lines after the store was opened, block file paths)."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (Debian package strace; `make setup` installs it)")
    log = tmp_path / "trace.log"
    proc = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=openat,fcntl,write,fsync,fdatasync,syncfs,rename,renameat,renameat2,close",
         "-e", "signal=none", "-o", str(log), sys.executable, "-c", CHILD, str(REPO), str(tmp_path / "store"),
         mode, str(n), str(size), method],
        capture_output=True, text=True, check=True)
    paths = json.loads(proc.stdout.strip().splitlines()[-1])
    lines = log.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if 'write(1, "START' in ln)
    return [re.sub(r"^\d+\s+", "", ln) for ln in lines[start + 1:]], paths


def _fd_of(lines: list[str], path: str, *, flags: str = "") -> tuple[int, int]:
    """(line index, fd) of the openat of `path`."""
    for i, ln in enumerate(lines):
        m = re.match(r'openat\(AT_FDCWD, "([^"]+)", ([A-Z_|]+)(?:, \d+)?\)\s*= (\d+)', ln)
        if m and m.group(1) == path and flags in m.group(2):
            return i, int(m.group(3))
    raise AssertionError(f"no openat of {path} ({flags})")


def _index(lines: list[str], pattern: str, after: int = 0) -> int:
    for i in range(after, len(lines)):
        if re.search(pattern, lines[i]):
            return i
    raise AssertionError(f"no {pattern!r} after line {after}")


def _tmp_of(lines: list[str], final: str) -> str:
    for ln in lines:
        m = re.match(r'rename\("([^"]+)", "([^"]+)"\)\s*= 0', ln)
        if m and m.group(2) == final:
            return m.group(1)
    raise AssertionError(f"{final} was never renamed into place")


@pytest.mark.parametrize("mode", ["sync", "background"])
def test_each_block_is_written_fsynced_renamed_then_its_shard_fsynced(tmp_path: Path, mode: str) -> None:
    lines, paths = _trace(tmp_path, mode)
    for final in paths:
        tmp = _tmp_of(lines, final)
        assert Path(tmp).parent == Path(final).parent and Path(tmp).name.startswith(".")
        opened, fd = _fd_of(lines, tmp, flags="O_EXCL")
        assert "O_CREAT|O_EXCL" in lines[opened] and "O_DIRECT" not in lines[opened]
        wrote = _index(lines, rf"^write\({fd}, .*= {MIB}$", opened)
        if mode == "background":  # past the page cache, switched on after the open (tl_write_block)
            assert opened < _index(lines, rf"^fcntl\({fd}, F_SETFL, [A-Z_|]*O_DIRECT.*= 0", opened) < wrote
        synced = _index(lines, rf"^fsync\({fd}\)\s*= 0", wrote)
        renamed = _index(lines, rf'^rename\("{re.escape(tmp)}", "{re.escape(final)}"\)\s*= 0', synced)
        dir_opened, dir_fd = _fd_of(lines[renamed:], str(Path(final).parent), flags="O_DIRECTORY")
        _index(lines, rf"^fsync\({dir_fd}\)\s*= 0", renamed + dir_opened)
        assert Path(final).read_bytes() and not Path(tmp).exists()
    assert not any(re.match(r"^fdatasync", ln) for ln in lines)


def test_a_deferred_batch_fsyncs_every_file_and_shard_at_its_end(tmp_path: Path) -> None:
    lines, paths = _trace(tmp_path, "deferred")
    end = _index(lines, r'^write\(1, "BATCH-END')
    before = lines[:end]
    assert not any(ln.startswith("fsync(") for ln in before)  # nothing synced inside the batch
    for final in paths:
        _index(before, rf'^rename\("[^"]+", "{re.escape(final)}"\)\s*= 0')
        opened, fd = _fd_of(lines[end:], final)
        _index(lines, rf"^fsync\({fd}\)\s*= 0", end + opened)
        dir_opened, dir_fd = _fd_of(lines[end:], str(Path(final).parent))
        _index(lines, rf"^fsync\({dir_fd}\)\s*= 0", end + dir_opened)


@pytest.mark.parametrize("mode", ["background", "deferred"])
def test_a_syncfs_batch_writes_every_block_then_syncs_the_filesystem_once(tmp_path: Path, mode: str) -> None:
    """sync_method="syncfs": no per-file fsync inside the batch; after the last block is
    renamed into place, one syncfs(2) of the store's filesystem makes all of it durable."""
    lines, paths = _trace(tmp_path, mode, n=4, method="syncfs")
    assert not any(ln.startswith(("fsync(", "fdatasync(")) for ln in lines)
    synced = [i for i, ln in enumerate(lines) if re.match(r"^syncfs\(\d+\)\s*= 0", ln)]
    assert len(synced) == 1
    for final in paths:
        assert _index(lines, rf'^rename\("[^"]+", "{re.escape(final)}"\)\s*= 0') < synced[0]
        assert Path(final).stat().st_size == MIB


def test_a_scratch_store_never_fsyncs(tmp_path: Path) -> None:
    lines, paths = _trace(tmp_path, "scratch")
    assert not any(ln.startswith(("fsync(", "fdatasync(")) for ln in lines)
    assert all(Path(p).stat().st_size == MIB for p in paths)


def test_unaligned_memory_with_o_direct_falls_back_to_the_page_cache(tmp_path: Path) -> None:
    """A bytes object's data is not page-aligned: the kernel refuses the O_DIRECT write
    (EINVAL) and the C code rewrites the file through the page cache."""
    data = b"\x00" + os.urandom(MIB)
    view = memoryview(data)[1:]  # misaligned by construction
    final, tmp = tmp_path / "block.data", tmp_path / ".block.tmp"
    refused = _accel.write_block(str(tmp), str(final), str(tmp_path), view, direct=True, sync=True)
    assert refused is False  # the open took O_DIRECT; only the buffer was refused
    assert final.read_bytes() == data[1:] and not tmp.exists()


def test_failures_raise_oserror_and_leave_no_temp_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        _accel.write_block(str(tmp_path / "missing" / ".t"), str(tmp_path / "missing" / "f"), str(tmp_path),
                           b"x", direct=False, sync=True)
    tmp = tmp_path / ".t"
    with pytest.raises(FileNotFoundError):  # the rename's target directory is missing
        _accel.write_block(str(tmp), str(tmp_path / "nowhere" / "f"), str(tmp_path), b"x", direct=False, sync=True)
    assert not tmp.exists()
    tmp.write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):  # O_EXCL: never writes through another writer's file
        _accel.write_block(str(tmp), str(tmp_path / "f"), str(tmp_path), b"x", direct=False, sync=False)
    assert tmp.read_bytes() == b"someone else's" and not (tmp_path / "f").exists()


def test_native_puts_make_missing_shards_and_blocks_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert bs_filesystem._NATIVE
    store = FilesystemBlockstore(tmp_path, sync=False)  # a scratch store makes shards on demand
    blocks = []
    for i in range(40):
        buf = mmap.mmap(-1, 64 << 10)
        buf[:] = os.urandom(64 << 10)
        blocks.append((CID.from_sha256(bytes(buf), RAW, 1), bytes(buf), memoryview(buf)))
    with store.batch(direct=True):
        for cid, _, view in blocks:
            store.put(cid, view)
    assert all(store.get(cid) == data for cid, data, _ in blocks)
    assert not list(tmp_path.rglob("*.tmp"))


@contextlib.contextmanager
def _ramfs(where: Path):
    """A ramfs mounted at `where` (it has no O_DIRECT: open(O_DIRECT) creates the file, then
    fails with EINVAL), or a skip."""
    if os.geteuid() != 0:
        pytest.skip("mounting a ramfs needs root")
    where.mkdir()
    if subprocess.run(["mount", "-t", "ramfs", "ramfs", str(where)], capture_output=True).returncode:
        pytest.skip("mount -t ramfs is not allowed here")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


@pytest.mark.parametrize("native", [True, False])
def test_a_filesystem_without_o_direct_stores_sealed_versions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             native: bool) -> None:
    """Seal asks for O_DIRECT writes: on ramfs every put used to fail with EEXIST (the
    fallback's second O_EXCL open found the file the refused open had made) and left that
    temp file behind."""
    from vault.age import X25519Identity
    from vault.vault import Vault

    monkeypatch.setattr(bs_filesystem, "_NATIVE", native)
    with _ramfs(tmp_path / "ramfs") as fs:
        probe = fs / "probe"
        with pytest.raises(OSError):  # what the test relies on: this filesystem refuses O_DIRECT
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_DIRECT))
        probe.unlink()
        owner = X25519Identity.generate()
        vault = Vault(FilesystemBlockstore(fs / "store"), owner)
        plaintext = os.urandom(3 * MIB + 5)
        sealed = vault.seal(plaintext)
        vault.open(sealed.cid, None, owner, fs / "out", commitment=sealed.commitment)
        assert (fs / "out").read_bytes() == plaintext
        assert not list(fs.rglob("*.tmp"))


def test_a_failed_write_block_does_not_keep_the_buffer_exported(tmp_path: Path) -> None:
    """A seal writer keeps the exception of a failed put and then releases its buffer: a
    buffer still exported by the failed call's frame made that release raise BufferError."""
    view = memoryview(mmap.mmap(-1, 1 << 16))
    with pytest.raises(FileNotFoundError) as failed:
        _accel.write_block(str(tmp_path / "missing" / ".t"), str(tmp_path / "missing" / "t"), str(tmp_path), view,
                           direct=False, sync=False)
    assert failed.value.filename2 == str(tmp_path / "missing" / "t")  # either path may be the one
    view.release()  # BufferError while the traceback (in `failed`) held the export


def test_a_path_with_a_nul_byte_is_refused_not_cut_short(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="null byte"):
        _accel.write_block(str(tmp_path / ".t"), str(tmp_path / "f\0junk"), str(tmp_path), b"x",
                           direct=False, sync=False)
    assert list(tmp_path.iterdir()) == []
