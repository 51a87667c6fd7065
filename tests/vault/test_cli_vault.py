"""The vault commands of the `twinledger` CLI, through Typer's CliRunner on the real root app."""
from __future__ import annotations

import errno
import io
import json
import os
import re
import socket
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from twinledger.cli import app
from vault.age import X25519Identity
from vault.blockstore import FilesystemBlockstore
from vault.car import read_car, write_car
from vault.cid import CID
from vault.unixfs import import_bytes

HELLO_V1 = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
HELLO_V0 = "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("TWINLEDGER_HOME", str(path))
    return path


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args: str, input: bytes | None = None):
        return runner.invoke(app, list(args), input=input, catch_exceptions=False)

    return invoke


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# -- ipfs add / cat -------------------------------------------------------------------


@pytest.mark.parametrize(("profile", "cid"), [("v1", HELLO_V1), ("v0", HELLO_V0)])
def test_add_only_hash_prints_kubos_cid_and_stores_nothing(tmp_path, home, run, profile, cid) -> None:
    result = run("ipfs", "add", "--only-hash", "--profile", profile, str(write(tmp_path, "hw", b"hello world")))
    assert result.exit_code == 0, result.output
    assert result.stdout == cid + "\n"
    assert not home.exists()


def test_add_stores_pins_and_cat_reads_back(tmp_path, home, run) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)
    result = run("ipfs", "add", "--json", str(write(tmp_path, "f", data)))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc == {"cid": str(import_bytes(data)), "profile": "unixfs-v1-2025", "stored": True}
    store = FilesystemBlockstore(home)
    assert CID.decode(doc["cid"]) in store.pins()
    assert (home / "blocks").is_dir()
    cat = run("ipfs", "cat", doc["cid"])
    assert cat.exit_code == 0 and cat.stdout_bytes == data


def test_add_reads_standard_input_and_honours_home_option(tmp_path, run) -> None:
    other = tmp_path / "other-home"
    result = run("ipfs", "add", "--home", str(other), "--profile", "v1", "-", input=b"hello world")
    assert result.stdout == HELLO_V1 + "\n"
    assert CID.decode(HELLO_V1) in FilesystemBlockstore(other).pins()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ipfs", "add", "/nonexistent/file"), "No such file or directory: /nonexistent/file"),
        (("ipfs", "add", "--profile", "v7", "-"), "unknown import profile 'v7'"),
        (("ipfs", "cat", "zb2rhe5P4gXftAwvA4eXQ5HJwsER2owDyS9sKaQRRVQPn93bA"), "unsupported multibase 'z'"),
        (("ipfs", "cat", HELLO_V1), "is not in the store"),
        (("car", "import", "/nonexistent.car"), "No such file or directory"),
    ],
)
def test_errors_are_one_line_and_exit_1(home, run, args, message) -> None:
    result = run(*args, input=b"")
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


@pytest.mark.parametrize("args", [("ipfs", "add", "-"), ("ipfs", "cat", HELLO_V1), ("car", "import", "-")])
def test_an_unreachable_kubo_is_one_clear_error(tmp_path, home, run, args) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if args[-1] == "-" and args[0] == "car":
        args = (*args[:-1], str(write(tmp_path, "x.car", b"not read")))
    result = run(*args[:2], "--kubo", f"http://127.0.0.1:{port}", *args[2:], input=b"data")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: Kubo RPC at http://127.0.0.1:{port} is not reachable: ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_add_of_a_directory_is_refused(tmp_path, home, run) -> None:
    result = run("ipfs", "add", str(tmp_path))
    assert result.exit_code == 1
    assert "is a directory" in result.stderr


# -- car ------------------------------------------------------------------------------


def test_car_export_then_import_into_another_home(tmp_path, home, run) -> None:
    data = os.urandom(2 * 1024 * 1024 + 1)
    cid = run("ipfs", "add", "--profile", "v1", str(write(tmp_path, "f", data))).stdout.strip()
    car = tmp_path / "out.car"
    exported = run("car", "export", cid, "-o", str(car), "--json")
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.stdout)["blocks"] == 10  # 9 leaves of 256 KiB + root
    roots, blocks = read_car(io.BytesIO(car.read_bytes()))
    assert [str(r) for r in roots] == [cid] and len(list(blocks)) == 10
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []

    other = tmp_path / "other"
    imported = run("car", "import", "--home", str(other), str(car))
    assert imported.exit_code == 0, imported.output
    assert imported.stdout == cid + "\n"
    assert CID.decode(cid) in FilesystemBlockstore(other).pins()
    assert run("ipfs", "cat", "--home", str(other), cid).stdout_bytes == data


def test_car_import_of_a_corrupt_car_fails_and_stores_nothing(tmp_path, home, run) -> None:
    leaf = b"some leaf"
    cid = CID.from_sha256(leaf)
    buf = io.BytesIO()
    write_car([cid], [(cid, b"other bytes")], buf)
    result = run("car", "import", str(write(tmp_path, "bad.car", buf.getvalue())))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert list(FilesystemBlockstore(home).iter_cids()) == []


def disk_full_at_third_put(monkeypatch):
    """FilesystemBlockstore.put whose third call fails with ENOSPC; returns the real put."""
    real_put, puts = FilesystemBlockstore.put, []

    def put(self, c, data):
        puts.append(c)
        if len(puts) == 3:
            raise OSError(28, "No space left on device")
        return real_put(self, c, data)

    monkeypatch.setattr(FilesystemBlockstore, "put", put)
    return real_put


def test_car_import_onto_a_full_disk_says_what_it_left_for_gc(tmp_path, home, run, monkeypatch) -> None:
    cid = run("ipfs", "add", "--profile", "v1", str(write(tmp_path, "f", os.urandom(1 << 20)))).stdout.strip()
    car = tmp_path / "out.car"
    assert run("car", "export", cid, "-o", str(car)).exit_code == 0  # 4 leaves of 256 KiB + root
    real_put = disk_full_at_third_put(monkeypatch)
    other = tmp_path / "other"
    result = run("car", "import", "--home", str(other), str(car))
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: No space left on device")
    stored = re.search(r"(\d) of the 5 blocks were stored", lines[0])
    assert stored and "gc removes them" in lines[0]
    monkeypatch.setattr(FilesystemBlockstore, "put", real_put)
    # the puts run on several threads: those under way when the third failed may have landed
    assert int(stored.group(1)) == len(list(FilesystemBlockstore(other).iter_cids())) >= 2
    assert FilesystemBlockstore(other).pins() == frozenset()
    gc = run("ipfs", "gc", "--home", str(other), "--json")
    assert gc.exit_code == 0, gc.output
    assert list(FilesystemBlockstore(other).iter_cids()) == []


def test_car_export_refuses_a_path_inside_the_block_store(tmp_path, home, run) -> None:
    src = tmp_path / "model.bin"
    src.write_bytes(b"twin" * 1000)
    cid = run("ipfs", "add", str(src)).stdout.strip()
    store = FilesystemBlockstore(home)
    block = store._path(CID.decode(cid))
    before = block.read_bytes()
    result = run("car", "export", cid, "-o", str(block))
    assert result.exit_code == 1 and "inside the node's block store" in result.stderr
    assert block.read_bytes() == before


def test_car_export_of_a_missing_root_leaves_no_file(tmp_path, home, run) -> None:
    out = tmp_path / "x.car"
    result = run("car", "export", HELLO_V1, "-o", str(out))
    assert result.exit_code == 1 and "error: " in result.stderr
    assert not out.exists() and not (tmp_path / ".x.car.part").exists()


# -- keygen ---------------------------------------------------------------------------


def test_keygen_writes_a_0600_identity_and_prints_its_recipient(tmp_path, home, run) -> None:
    path = tmp_path / "keys" / "me.key"
    result = run("keygen", "-o", str(path))
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    identity = X25519Identity.parse(secret[0])
    assert result.stdout == f"{identity.recipient}\n"
    assert f"# public key: {identity.recipient}" in path.read_text()

    again = run("keygen", "-o", str(path))
    assert again.exit_code == 1 and "refusing to overwrite" in again.stderr
    assert X25519Identity.parse(secret[0]) == X25519Identity.parse(
        [ln for ln in path.read_text().splitlines() if not ln.startswith("#")][0])


def test_ipfs_add_onto_a_full_disk_says_that_what_it_stored_is_left_for_gc(tmp_path, home, run,
                                                                            monkeypatch) -> None:
    disk_full_at_third_put(monkeypatch)
    result = run("ipfs", "add", "--profile", "v1", str(write(tmp_path, "f", os.urandom(2 << 20))))
    assert result.exit_code == 1 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: No space left on device")
    assert "not pinned" in lines[0] and "twinledger ipfs gc" in lines[0]
    assert FilesystemBlockstore(home).pins() == frozenset()


def test_keygen_to_standard_output_prints_the_identity_file_and_the_recipient_on_stderr(tmp_path, home, run,
                                                                                       monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("keygen", "-o", "-")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    identity = X25519Identity.parse(lines[-1])
    assert lines[0].startswith("# created: ") and lines[1] == f"# public key: {identity.recipient}"
    assert result.stderr == f"Public key: {identity.recipient}\n"
    assert not (tmp_path / "-").exists() and not (home / "identity.key").exists()
    as_json = run("keygen", "-o", "-", "--json")
    assert json.loads(as_json.stderr)["recipient"] == as_json.stdout.splitlines()[1].split(": ")[1]


def test_keygen_that_fails_to_write_leaves_no_identity_and_can_be_run_again(tmp_path, home, run, monkeypatch) -> None:
    path = tmp_path / "me.key"
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    failed = run("keygen", "-o", str(path))
    assert failed.exit_code != 0
    assert not os.path.lexists(path)  # no empty or partial identity that would refuse the retry
    assert list(tmp_path.iterdir()) == []  # no temp file either
    monkeypatch.setattr(os, "fsync", real_fsync)
    again = run("keygen", "-o", str(path))
    assert again.exit_code == 0, again.output
    assert str(X25519Identity.parse(path.read_text().splitlines()[-1]).recipient) == again.stdout.strip()


def test_keygen_is_0600_whatever_the_umask_and_refuses_a_dangling_link(tmp_path, home, run) -> None:
    old = os.umask(0)
    try:
        assert run("keygen", "-o", str(tmp_path / "a.key")).exit_code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.key").stat().st_mode) == 0o600
    link = tmp_path / "b.key"
    link.symlink_to(tmp_path / "elsewhere")
    refused = run("keygen", "-o", str(link))
    assert refused.exit_code == 1 and "refusing to overwrite" in refused.stderr
    assert link.is_symlink() and not (tmp_path / "elsewhere").exists()


def test_keygen_removes_the_second_name_a_killed_run_left_beside_the_key(tmp_path, home, run) -> None:
    from vault.tempfiles import temp_path

    path = tmp_path / "me.key"
    assert run("keygen", "-o", str(path)).exit_code == 0
    leftover = temp_path(path, "keygen")
    os.link(path, leftover)  # killed between link(2) and unlink(2) (no RENAME_NOREPLACE)
    refused = run("keygen", "-o", str(path))
    assert refused.exit_code == 1 and "refusing to overwrite" in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["me.key"]  # the secret has one name again
    assert path.stat().st_nlink == 1


def test_keygen_defaults_to_the_home_directory_and_json(home, run) -> None:
    result = run("keygen", "--json")
    doc = json.loads(result.stdout)
    assert doc["path"] == str(home / "identity.key")
    assert doc["recipient"].startswith("age1")
    assert stat.S_IMODE((home / "identity.key").stat().st_mode) == 0o600


def test_keygen_pq_writes_a_post_quantum_identity(tmp_path, home, run) -> None:
    from vault.age import HybridIdentity, decrypt, encrypt

    path = tmp_path / "pq.key"
    result = run("keygen", "--pq", "-o", str(path), "--json")
    assert result.exit_code == 0, result.output
    secret = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    identity = HybridIdentity.parse(secret[0])
    assert json.loads(result.stdout)["recipient"] == str(identity.recipient)
    assert json.loads(result.stdout)["recipient"].startswith("age1pq1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    sealed = b"".join(encrypt([b"for me"], [identity.recipient]))
    assert b"".join(decrypt(io.BytesIO(sealed), [identity])) == b"for me"


def test_keygen_file_is_an_identity_file_the_age_tool_accepts(tmp_path, home, run) -> None:
    import shutil
    import subprocess

    age = shutil.which("age") or "/usr/bin/age"
    path = tmp_path / "me.key"
    recipient = run("keygen", "-o", str(path)).stdout.strip()
    enc = subprocess.run([age, "-e", "-r", recipient], input=b"for me", capture_output=True, check=True).stdout
    dec = subprocess.run([age, "-d", "-i", str(path)], input=enc, capture_output=True, check=True).stdout
    assert dec == b"for me"


# -- pins and gc --------------------------------------------------------------------------


def test_pin_ls_rm_and_gc_reclaim_an_unpinned_version(tmp_path, home, run) -> None:
    kept, dropped = os.urandom(700_000), os.urandom(900_000)
    keep = run("ipfs", "add", str(write(tmp_path, "k", kept))).stdout.strip()
    drop = run("ipfs", "add", str(write(tmp_path, "d", dropped))).stdout.strip()
    listed = run("ipfs", "pin", "ls", "--json")
    assert listed.exit_code == 0 and json.loads(listed.stdout) == {"pins": sorted([keep, drop])}

    removed = run("ipfs", "pin", "rm", drop)
    assert removed.exit_code == 0 and removed.stdout == drop + "\n"
    assert run("ipfs", "pin", "ls").stdout == keep + "\n"
    blocks_before = len(list(FilesystemBlockstore(home).iter_cids()))
    gc = run("ipfs", "gc", "--json")
    assert gc.exit_code == 0, gc.output
    gone = json.loads(gc.stdout)["removed_blocks"]
    assert gone > 0 and len(list(FilesystemBlockstore(home).iter_cids())) == blocks_before - gone
    assert run("ipfs", "cat", keep).stdout_bytes == kept
    cat = run("ipfs", "cat", drop)
    assert cat.exit_code == 1 and "is not in the store" in cat.stderr
    assert run("ipfs", "gc").stdout == "removed 0 blocks\n"

    again = run("ipfs", "pin", "rm", drop)
    assert again.exit_code == 1 and again.stderr == f"error: {drop} is not pinned\n"


def test_pin_add_after_an_unpinned_car_import_protects_it_from_gc(tmp_path, home, run) -> None:
    data = os.urandom(600_000)
    cid = run("ipfs", "add", "--home", str(tmp_path / "src"), str(write(tmp_path, "f", data))).stdout.strip()
    car = tmp_path / "x.car"
    assert run("car", "export", "--home", str(tmp_path / "src"), cid, "-o", str(car)).exit_code == 0
    assert run("car", "import", "--no-pin", str(car)).exit_code == 0
    assert run("ipfs", "pin", "ls").stdout == ""
    pinned = run("ipfs", "pin", "add", "--json", cid)
    assert pinned.exit_code == 0 and json.loads(pinned.stdout) == {"pinned": cid}
    assert run("ipfs", "gc").stdout == "removed 0 blocks\n"
    assert run("ipfs", "cat", cid).stdout_bytes == data


def test_pin_add_of_an_incomplete_dag_is_one_clear_error(tmp_path, home, run) -> None:
    data = os.urandom(600_000)
    cid = run("ipfs", "add", "--profile", "v1", str(write(tmp_path, "f", data))).stdout.strip()
    store = FilesystemBlockstore(home)
    assert run("ipfs", "pin", "rm", cid).exit_code == 0
    leaf = next(c for c in store.iter_cids() if c.multihash != CID.decode(cid).multihash)
    store.delete(leaf)
    result = run("ipfs", "pin", "add", cid)
    assert result.exit_code == 1 and result.stderr.startswith("error: ") and "is not in the store" in result.stderr
    assert run("ipfs", "pin", "ls").stdout == ""


@pytest.mark.parametrize("verb", ["add", "rm"])
def test_pin_through_an_unreachable_kubo_is_one_clear_error(home, run, verb) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run("ipfs", "pin", verb, "--kubo", f"http://127.0.0.1:{port}", HELLO_V1)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: Kubo RPC at http://127.0.0.1:{port} is not reachable: ")


# -- progress bars ---------------------------------------------------------------------------


@pytest.fixture
def bars(monkeypatch: pytest.MonkeyPatch):
    """Record every bar the commands would show on a terminal: [label, total, bytes advanced]."""
    import contextlib

    from api.cli import vault_cmds

    shown: list[list] = []

    @contextlib.contextmanager
    def phases(total, *labels):
        assert vault_cmds._interactive()
        rows = [[label, total, 0] for label in labels]
        shown.extend(rows)

        class Bar:
            def __init__(self, row) -> None:
                self.row = row

            def __call__(self, n: int) -> None:
                assert n > 0
                self.row[2] += n

            def retotal(self, total: int) -> None:
                assert self.row[2] == 0, "a bar's total is corrected before it moves"
                self.row[1] = total

        yield tuple(Bar(row) for row in rows)

    monkeypatch.setattr(vault_cmds, "_interactive", lambda: True)
    monkeypatch.setattr(vault_cmds, "_phases", phases)
    return shown


def test_large_transfers_show_progress_that_reaches_the_total(tmp_path, home, run, bars) -> None:
    data = os.urandom((9 << 20) + 7)
    src = write(tmp_path, "big", data)
    cid = run("ipfs", "add", str(src)).stdout.strip()
    assert bars == [["adding", len(data), len(data)]]
    bars.clear()

    cat = run("ipfs", "cat", cid)
    assert cat.stdout_bytes == data
    assert bars == [["reading", len(data), len(data)]]
    bars.clear()

    car = tmp_path / "big.car"
    assert run("car", "export", cid, "-o", str(car)).exit_code == 0
    store = FilesystemBlockstore(home)
    dag = sum(len(store.get(c)) for c in store.iter_cids())
    (label, total, done), = bars
    assert (label, total) == ("exporting", dag) and done == car.stat().st_size  # blocks + CAR framing
    bars.clear()

    result = run("car", "import", "--home", str(tmp_path / "other"), str(car))
    assert result.exit_code == 0, result.output
    assert bars == [["verifying", car.stat().st_size, car.stat().st_size], ["storing", dag, dag]]


def test_the_storing_bar_counts_a_block_the_car_holds_twice_once(tmp_path, run, bars) -> None:
    blocks = [(CID.from_sha256(b), b) for b in (os.urandom(1 << 20) for _ in range(9))]
    car = tmp_path / "dups.car"
    with open(car, "wb") as fh:
        write_car([blocks[0][0]], blocks + blocks[3:], fh)
    result = run("car", "import", "--no-pin", "--home", str(tmp_path / "h"), str(car))
    assert result.exit_code == 0, result.output
    assert bars == [["verifying", car.stat().st_size, car.stat().st_size], ["storing", 9 << 20, 9 << 20]]


def test_ipfs_cat_of_a_root_that_is_not_a_file_shows_no_bar_before_its_error(home, run, bars) -> None:
    from vault._mfdagpb import encode_node
    from vault.cid import DAG_PB

    directory = encode_node([], b"\x08\x01")  # UnixFS Data{Type: Directory}, no entries
    root = CID.from_sha256(directory, DAG_PB, 1)
    FilesystemBlockstore(home).put(root, directory)
    result = run("ipfs", "cat", str(root))
    assert result.exit_code == 1 and "directory, not a file" in result.stderr
    assert bars == []


def test_a_real_bar_shows_its_total_once_the_work_succeeds(monkeypatch) -> None:
    from api.cli import vault_cmds

    monkeypatch.setattr(vault_cmds, "_interactive", lambda: True)
    with vault_cmds._phases(1 << 30, "estimated", "retotalled") as (estimated, retotalled):
        estimated(5 << 20)  # e.g. an export of a DAG whose Tsizes count a subtree twice
        retotalled.retotal(3 << 20)
        retotalled(3 << 20)
    tasks = estimated._display.tasks
    assert [(t.total, t.completed) for t in tasks] == [(5 << 20, 5 << 20), (3 << 20, 3 << 20)]

    with pytest.raises(RuntimeError), vault_cmds._progress(1 << 30, "failing") as failing:
        failing(1 << 20)
        raise RuntimeError("mid-way")
    (task,) = failing._display.tasks
    assert (task.total, task.completed) == (1 << 30, 1 << 20)  # not shown as done


def test_the_real_bars_run_inside_the_commands(tmp_path, home, run, monkeypatch) -> None:
    from api.cli import vault_cmds

    monkeypatch.setattr(vault_cmds, "_interactive", lambda: True)
    data = os.urandom(9 << 20)
    cid = run("ipfs", "add", str(write(tmp_path, "big", data))).stdout.strip()
    car = tmp_path / "big.car"
    assert run("car", "export", cid, "-o", str(car)).exit_code == 0
    assert run("car", "import", "--home", str(tmp_path / "other"), str(car)).exit_code == 0
    assert run("ipfs", "cat", "--home", str(tmp_path / "other"), cid).stdout_bytes == data


def test_no_bars_when_stderr_is_not_a_terminal_or_the_file_is_small(monkeypatch) -> None:
    from api.cli import vault_cmds

    monkeypatch.setattr(vault_cmds, "_interactive", lambda: False)
    with vault_cmds._phases(1 << 30, "a", "b") as advances:
        assert advances == (None, None)
    monkeypatch.setattr(vault_cmds, "_interactive", lambda: True)
    with vault_cmds._progress(1 << 20, "small") as advance:
        assert advance is None


def test_add_writes_its_blocks_as_seal_does(tmp_path, home, run, monkeypatch) -> None:
    batches = []
    real_batch = FilesystemBlockstore.batch
    monkeypatch.setattr(FilesystemBlockstore, "batch", lambda self, **kw: (batches.append(kw), real_batch(self, **kw))[1])
    data = os.urandom(3 << 20)
    cid = run("ipfs", "add", str(write(tmp_path, "f", data))).stdout.strip()
    assert batches == [{"background": True, "direct": True}]
    assert run("ipfs", "cat", cid).stdout_bytes == data


def test_car_export_of_a_dag_that_is_not_unixfs_works_on_a_terminal_too(tmp_path, home, run, monkeypatch) -> None:
    from api.cli import vault_cmds
    from vault._mfdagpb import encode_link, encode_node
    from vault.cid import DAG_PB

    store = FilesystemBlockstore(home)
    leaf = os.urandom(1000)
    cleaf = CID.from_sha256(leaf)
    block = encode_node([encode_link(cleaf.to_bytes(), len(leaf))], b"not unixfs")
    root = CID.from_sha256(block, DAG_PB, 1)
    store.put(cleaf, leaf)
    store.put(root, block)
    for terminal in (False, True):
        monkeypatch.setattr(vault_cmds, "_interactive", lambda: terminal)
        car = tmp_path / f"dag-{terminal}.car"
        result = run("car", "export", str(root), "-o", str(car))
        assert result.exit_code == 0, result.output
        roots, blocks = read_car(io.BytesIO(car.read_bytes()))
        assert roots == [root] and [c for c, _ in blocks] == [root, cleaf]


def test_car_export_to_a_name_near_name_max(tmp_path, home, run) -> None:
    cid = run("ipfs", "add", str(write(tmp_path, "f", b"long name"))).stdout.strip()
    out = tmp_path / "cars"
    out.mkdir()
    car = out / ("c" * 250)
    result = run("car", "export", cid, "-o", str(car))
    assert result.exit_code == 0, result.output
    roots, blocks = read_car(io.BytesIO(car.read_bytes()))
    assert [str(r) for r in roots] == [cid] and [p.name for p in out.iterdir()] == [car.name]


def test_car_export_removes_what_a_crashed_export_left(tmp_path, home, run) -> None:
    from vault.tempfiles import temp_path

    cid = run("ipfs", "add", str(write(tmp_path, "f", b"crash"))).stdout.strip()
    out = tmp_path / "cars"
    out.mkdir()
    car = out / "dag.car"
    temp_path(car, "car-export").write_bytes(b"half a CAR from a run that was killed")
    assert run("car", "export", cid, "-o", str(car)).exit_code == 0
    assert [p.name for p in out.iterdir()] == ["dag.car"]
    roots, _ = read_car(io.BytesIO(car.read_bytes()))
    assert [str(r) for r in roots] == [cid]


@pytest.mark.parametrize("served", ["whole", "half", "other-root", "missing-leaf"])
def test_car_export_from_kubo_is_checked_before_it_is_renamed_into_place(tmp_path, run, monkeypatch, served) -> None:
    """Kubo reports a failure after its stream began only in an HTTP trailer: the CLI checks
    the CAR it wrote (root, every block, the whole DAG) before renaming it into place."""
    import hashlib

    import httpx

    from api.cli import vault_cmds
    from vault.blockstore import MemoryBlockstore
    from vault.car import dag_blocks
    from vault.kubo import KuboClient
    from vault.unixfs import Profile

    store = MemoryBlockstore()
    root = import_bytes(hashlib.shake_256(b"k").digest(2500), Profile("tiny", 1, True, 100, 4), store.put)
    other = import_bytes(b"another file", "v1", store.put)
    blocks = list(dag_blocks(store, root))
    bodies = {"whole": ([root], blocks), "other-root": ([other], list(dag_blocks(store, other))),
              "missing-leaf": ([root], blocks[:-1]), "half": ([root], blocks)}
    out = io.BytesIO()
    write_car(*bodies[served], out)
    body = out.getvalue()[: len(out.getvalue()) // 2] if served == "half" else out.getvalue()

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v0/dag/export"
        return httpx.Response(200, content=body)

    monkeypatch.setattr(vault_cmds, "_kubo", lambda url: KuboClient(url, transport=httpx.MockTransport(handler)))
    target = tmp_path / "out.car"
    result = run("car", "export", str(root), "-o", str(target), "--kubo", "http://kubo.test:5001", "--json")
    if served == "whole":
        assert result.exit_code == 0, result.output
        assert target.read_bytes() == body and json.loads(result.stdout)["blocks"] == len(blocks)
    else:
        assert result.exit_code == 1 and result.output.startswith("error: "), result.output
        assert not target.exists() and list(tmp_path.iterdir()) == []


def test_commands_that_only_read_the_store_do_not_make_one(tmp_path, home, run) -> None:
    """A mistyped --home, or a `cat` on a new machine, leaves no empty store behind."""
    assert run("ipfs", "pin", "ls").stdout == ""
    assert run("ipfs", "gc").stdout == "removed 0 blocks\n"
    for args in (("ipfs", "cat", HELLO_V1), ("ipfs", "pin", "rm", HELLO_V1), ("ipfs", "pin", "add", HELLO_V1),
                 ("car", "export", HELLO_V1, "-o", str(tmp_path / "x.car")), ("car", "export", HELLO_V1, "-o", "-")):
        result = run(*args)
        assert result.exit_code == 1 and result.stderr.startswith("error: "), (args, result.output)
        assert "not in the store" in result.stderr or "not pinned" in result.stderr
    assert not home.exists() and not (tmp_path / "x.car").exists()
