"""Where the vault commands (and Vault.open) write, and what happens when standard input
or output is not there: a FIFO, a device or `-` is streamed to, never replaced by a file;
a symbolic link is written through; a closed stdout or stdin is a one-line error; a
reader that goes away (`| head`) ends the command quietly with 141, as SIGPIPE would.
The commands run through CliRunner, or as real processes where file descriptors matter."""
from __future__ import annotations

import io
import json
import os
import shlex
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from twinledger.cli import app
from vault.age import X25519Identity
from vault.blockstore import FilesystemBlockstore
from vault.car import read_car
from vault.cid import CID
from vault.errors import InputValidationError
from vault.tempfiles import output_path
from vault.unixfs import import_bytes
from vault.vault import Vault

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("TWINLEDGER_HOME", str(path))
    return path


def cli(*args: str, input: bytes | None = None):
    return CliRunner().invoke(app, list(args), input=input, catch_exceptions=False)


def added(tmp_path: Path, data: bytes) -> str:
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    result = cli("ipfs", "add", str(src))
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def shell(command: str, home: Path) -> subprocess.CompletedProcess:
    """`command` in bash, with `tl` standing for this checkout's twinledger command."""
    tl = f"{shlex.quote(sys.executable)} -m twinledger.cli"
    env = {**os.environ, "TWINLEDGER_HOME": str(home), "PYTHONPATH": str(REPO)}
    return subprocess.run(["bash", "-c", command.replace("tl ", tl + " ")], cwd=REPO, env=env,
                          capture_output=True, timeout=120)


# -- car export: streams, links, special files ---------------------------------------------


def test_car_export_to_a_device_writes_to_it_and_leaves_it_a_device(tmp_path, home) -> None:
    cid = added(tmp_path, b"hello\n")
    link = tmp_path / "null"
    link.symlink_to(os.devnull)  # were it replaced, the link would be, not /dev/null
    result = cli("car", "export", cid, "-o", str(link), "--json")
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and stat.S_ISCHR(os.stat(link).st_mode)
    assert json.loads(result.stdout)["blocks"] == 1


def test_car_export_to_a_fifo_streams_the_car_through_it(tmp_path, home) -> None:
    data = os.urandom(3 << 20)
    cid = added(tmp_path, data)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    result = cli("car", "export", cid, "-o", str(fifo))
    reader.join(30)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    roots, blocks = read_car(io.BytesIO(got[0]))
    assert roots == [CID.decode(cid)] and sum(1 for _ in blocks) == 4  # 3 leaves and the root


def test_car_export_to_standard_output_with_its_report_on_stderr(tmp_path, home) -> None:
    cid = added(tmp_path, b"hello\n")
    result = cli("car", "export", cid, "-o", "-", "--json")
    assert result.exit_code == 0, result.output
    roots, blocks = read_car(io.BytesIO(result.stdout_bytes))
    assert roots == [CID.decode(cid)] and [c for c, _ in blocks] == [CID.decode(cid)]
    report = json.loads(result.stderr)
    assert report["path"] == "-" and report["bytes"] == len(result.stdout_bytes)
    assert not (REPO / "-").exists()


def test_car_export_through_a_symbolic_link_writes_its_target(tmp_path, home) -> None:
    cid = added(tmp_path, b"hello\n")
    target = tmp_path / "real" / "t.car"
    target.parent.mkdir()
    target.write_bytes(b"old")
    link = tmp_path / "link.car"
    link.symlink_to(target)
    result = cli("car", "export", cid, "-o", str(link))
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert read_car(io.BytesIO(target.read_bytes()))[0] == [CID.decode(cid)]


def test_car_export_to_a_directory_names_it_not_a_temp_file(tmp_path, home) -> None:
    cid = added(tmp_path, b"hello\n")
    result = cli("car", "export", cid, "-o", str(tmp_path))
    assert result.exit_code == 1
    assert f"{tmp_path} is a directory" in result.stderr and ".twinledger" not in result.stderr


# -- output_path and Vault.open ------------------------------------------------------------


def test_output_path_refuses_what_a_rename_would_replace_by_a_file(tmp_path, monkeypatch) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InputValidationError, match="is a FIFO"):
        output_path(fifo)
    link = tmp_path / "dev"
    link.symlink_to(os.devnull)
    with pytest.raises(InputValidationError, match="is a character device"):
        output_path(link)
    readonly = tmp_path / "ro"
    readonly.write_bytes(b"keep")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if p == "ro" else real_access(p, mode, **kw))
    with pytest.raises(InputValidationError, match="is not writable"):  # root may write anything
        output_path(readonly)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "new.bin")
    assert output_path(dangling) == tmp_path / "new.bin"
    assert output_path(tmp_path / "absent") == tmp_path / "absent"


def test_open_writes_through_a_link_and_refuses_a_fifo(tmp_path) -> None:
    owner = X25519Identity.generate()
    vault = Vault(FilesystemBlockstore(tmp_path / "store"), owner)
    sealed = vault.seal(b"plaintext")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InputValidationError, match="FIFO"):  # plaintext only once checked whole
        vault.open(sealed.cid, None, owner, fifo, commitment=sealed.commitment)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "plain.txt")
    vault.open(sealed.cid, None, owner, link, commitment=sealed.commitment)
    assert link.is_symlink() and (tmp_path / "plain.txt").read_bytes() == b"plaintext"


# -- standard input and output -------------------------------------------------------------


def test_car_import_reads_standard_input_and_refuses_a_directory(tmp_path, home) -> None:
    cid = added(tmp_path, b"hello\n")
    car = cli("car", "export", cid, "-o", "-").stdout_bytes
    other = tmp_path / "other"
    result = cli("car", "import", "--home", str(other), "-", input=car)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == cid and CID.decode(cid) in FilesystemBlockstore(other).pins()
    result = cli("car", "import", str(tmp_path))
    assert result.exit_code == 1 and "is a directory" in result.stderr


def test_a_closed_stdout_or_stdin_is_an_error_not_a_lost_cid(tmp_path) -> None:
    home = tmp_path / "home"
    src = tmp_path / "f"
    src.write_bytes(b"hello\n")
    done = shell(f"tl ipfs add {shlex.quote(str(src))} >&-", home)
    assert done.returncode == 1 and b"standard output is closed" in done.stderr, done.stderr
    assert b"Traceback" not in done.stderr and not home.exists()  # refused before any work
    done = shell("tl ipfs add - <&-", home)
    assert done.returncode == 1 and b"standard input is closed" in done.stderr, done.stderr


def test_a_reader_that_goes_away_ends_cat_quietly(tmp_path) -> None:
    home = tmp_path / "home"
    data = os.urandom(8 << 20)
    store = FilesystemBlockstore(home)
    root = import_bytes(data, put_block=store.put)
    store.pin(root)
    done = shell(f"tl ipfs cat {root} | head -c 10 > /dev/null; exit ${{PIPESTATUS[0]}}", home)
    assert done.returncode == 141 and done.stderr == b"", done.stderr


def test_output_path_errors_are_input_errors_naming_the_output(tmp_path) -> None:
    afile = tmp_path / "afile"
    afile.write_bytes(b"")
    with pytest.raises(InputValidationError, match="cannot write .*afile/out"):  # was NotADirectoryError
        output_path(afile / "out")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(InputValidationError, match="cannot write .*loop"):  # was OSError ELOOP
        output_path(loop)


@pytest.mark.skipif(os.geteuid() != 0, reason="a link owned by another user needs root (lchown)")
def test_another_users_link_in_a_shared_sticky_directory_is_not_written_through(tmp_path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    planted = shared / "out.car"
    planted.symlink_to(victim)
    os.lchown(planted, 65534, 65534)  # nobody's
    with pytest.raises(InputValidationError, match="another user's"):
        output_path(planted)
    mine = shared / "mine.car"
    mine.symlink_to(tmp_path / "target")
    assert output_path(mine) == tmp_path / "target"  # our own link is followed
    assert victim.read_bytes() == b"keep"


@pytest.mark.skipif(os.geteuid() != 0, reason="a link owned by another user needs root (lchown)")
def test_another_users_link_further_along_the_way_is_not_followed_either(tmp_path) -> None:
    """Our own link whose target is, or passes through, another user's link in a sticky
    directory: realpath() followed the whole chain once the first link was ours."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    victims = tmp_path / "victims"
    victims.mkdir()
    (victims / "secret").write_bytes(b"keep")
    for name, target in (("to-file", victims / "secret"), ("to-dir", victims)):
        planted = shared / name
        planted.symlink_to(target)
        os.lchown(planted, 65534, 65534)
    chained = tmp_path / "chained"
    chained.symlink_to(shared / "to-file")
    through = tmp_path / "through"
    through.symlink_to(shared / "to-dir" / "secret")
    for out in (chained, through, shared / "to-dir" / "secret"):
        with pytest.raises(InputValidationError, match="another user's"):
            output_path(out)
    assert (victims / "secret").read_bytes() == b"keep"


def test_dot_dot_after_a_link_is_the_targets_parent(tmp_path) -> None:
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "a").symlink_to(tmp_path / "real" / "sub")
    assert output_path(tmp_path / "a" / ".." / "out") == tmp_path / "real" / "out"  # as the kernel resolves it
    (tmp_path / "plain").mkdir()
    assert output_path(tmp_path / "plain" / ".." / "x") == tmp_path / "plain" / ".." / "x"  # no link: as given
    with pytest.raises(InputValidationError, match="does not exist"):  # as the kernel's ENOENT
        output_path(tmp_path / "missing" / ".." / "x")


def test_dot_slash_dash_is_a_file_named_dash(tmp_path, home, monkeypatch) -> None:
    cid = added(tmp_path, b"hello\n")
    monkeypatch.chdir(tmp_path)
    result = cli("car", "export", cid, "-o", "./-")
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == b"" and read_car(io.BytesIO((tmp_path / "-").read_bytes()))[0] == [CID.decode(cid)]
    assert json.loads(cli("car", "export", cid, "-o", "./-", "--json").stdout)["path"] == "./-"
