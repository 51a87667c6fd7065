"""The locked temp file beside an output (vault/tempfiles.py)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from vault import tempfiles
from vault.errors import InputValidationError
from vault._outdir import OutputDir
from vault.tempfiles import atomic_output, claim_temp, resolve_output, temp_path


def _open_fds_to(path: Path) -> int:
    return sum(1 for fd in os.listdir("/proc/self/fd") if os.path.realpath(f"/proc/self/fd/{fd}") == str(path))


def _needs_unnamed(directory: Path, otherwise: str) -> None:
    """Skip unless `directory`'s filesystem has O_TMPFILE (`otherwise`: what happens there)."""
    with resolve_output(directory / "probe") as where:
        probe = tempfiles._unnamed(where.dir, 0o600)
    if probe is None:
        pytest.skip(f"no O_TMPFILE here: {otherwise}")
    os.close(probe)

def test_a_second_writer_to_the_same_output_is_refused_until_the_first_is_done(tmp_path: Path) -> None:
    out = tmp_path / "out.bin"
    with atomic_output(out, "open") as (fd, tmp):
        os.write(fd, b"first")
        with pytest.raises(InputValidationError, match=f"another open to {out} is under way"):
            claim_temp(out, "open")
        assert os.pread(fd, 100, 0) == b"first"  # the refused one did not touch it
        with atomic_output(tmp_path / "other.bin", "open") as (_, other):  # another output: its own name
            assert other != tmp
        os.fsync(fd)
    assert out.read_bytes() == b"first" and not tmp.exists() and _open_fds_to(out) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.bin", "out.bin"]


def test_a_failure_inside_leaves_nothing_and_closes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "out.bin"
    with pytest.raises(KeyboardInterrupt), atomic_output(out, "open") as (fd, tmp):
        os.write(fd, b"half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == [] and _open_fds_to(tmp) == 0


@pytest.mark.parametrize("leftover", ["crashed", "read-only", "hard-linked"])
def test_what_a_crashed_writer_left_is_removed_and_a_fresh_file_made(tmp_path: Path, leftover: str) -> None:
    out = tmp_path / ("o" * 250)  # near NAME_MAX: the temp name stays short
    tmp = temp_path(out, "open")
    tmp.write_bytes(b"partial plaintext of a run that was killed")
    precious = tmp_path / "precious"
    if leftover == "read-only":
        tmp.chmod(0o444)
    if leftover == "hard-linked":
        os.link(tmp, precious)
    claim = claim_temp(out, "open")
    fd, again = claim.fd, claim.path
    st = os.fstat(fd)
    assert again == tmp and len(tmp.name) < 60
    # a file of this process's own (the leftover's name removed; its inode number may be reused)
    assert st.st_size == 0 and st.st_nlink == 1 and st.st_uid == os.geteuid() and st.st_mode & 0o777 == 0o600
    os.write(fd, b"new plaintext")
    claim.discard()
    if leftover == "hard-linked":  # the other name keeps its bytes: nothing was written into it
        assert precious.read_bytes() == b"partial plaintext of a run that was killed"
        precious.unlink()
    assert list(tmp_path.iterdir()) == []


def test_a_symlink_or_directory_at_the_temp_name_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out.bin"
    target = tmp_path / "elsewhere"
    temp_path(out, "open").symlink_to(target)
    with pytest.raises(InputValidationError, match="is a symbolic link: remove it"):
        claim_temp(out, "open")
    assert not target.exists()
    temp_path(out, "open").unlink()
    temp_path(out, "open").mkdir()
    with pytest.raises(InputValidationError, match="is not a regular file: remove it"):
        claim_temp(out, "open")


def test_a_failed_directory_fsync_removes_the_output_only_if_it_is_still_ours(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out.bin"

    def replaced_meanwhile(directory: OutputDir) -> None:
        (tmp_path / "newer").write_bytes(b"another writer's output")
        os.replace(tmp_path / "newer", out)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(OutputDir, "fsync", replaced_meanwhile)
    claim = claim_temp(out, "open")
    os.write(claim.fd, b"ours")
    with pytest.raises(OSError, match="Input/output error"):
        claim.install()
    claim.discard()
    assert out.read_bytes() == b"another writer's output"


_RACER = r"""
import os, sys, time
from pathlib import Path
from vault.errors import InputValidationError
from vault.tempfiles import claim_temp
out, marker, seconds = Path(sys.argv[1]), sys.argv[2].encode(), float(sys.argv[3])
claims = unlinked = wrong = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        claim = claim_temp(out, "open")
    except InputValidationError:
        continue
    claims += 1
    if os.fstat(claim.fd).st_nlink == 0:
        unlinked += 1  # someone removed the file this claim is writing
    os.write(claim.fd, marker)
    if claims % 2:
        claim.discard()
        continue
    try:
        claim.install()
    except InputValidationError:
        wrong += 1  # the name no longer held this claim's file
    claim.close()
print(claims, unlinked, wrong)
"""


def test_two_processes_racing_for_one_output_never_write_into_each_others_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "plain.bin"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    racers = [subprocess.Popen([sys.executable, "-c", _RACER, str(out), name, "1.5"], env=env,
                               stdout=subprocess.PIPE, text=True) for name in ("a", "b")]
    results = [tuple(map(int, r.communicate(timeout=60)[0].split())) for r in racers]
    assert all(r.returncode == 0 for r in racers)
    assert all(claims > 0 for claims, _, _ in results)
    assert [(unlinked, wrong) for _, unlinked, wrong in results] == [(0, 0), (0, 0)]
    assert out.read_bytes() in (b"a", b"b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.bin"]


def test_a_filesystem_without_hard_links_still_gets_a_claimed_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(src, dst, **kwargs) -> None:  # noqa: ANN001, ANN003 (vfat, some FUSE filesystems)
        raise OSError(1, "Operation not permitted")

    out = tmp_path / "out.bin"
    temp_path(out, "open").write_bytes(b"a crashed run's leftover")
    monkeypatch.setattr(tempfiles.os, "link", no_links)
    monkeypatch.setattr(tempfiles, "_unnamed", lambda directory, mode: None)  # nor O_TMPFILE there
    with atomic_output(out, "open") as (fd, tmp):
        assert os.fstat(fd).st_size == 0
        os.write(fd, b"new")
        os.fsync(fd)
    assert out.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


@pytest.mark.parametrize("how", ["renameat2", "link", "no-links"])
def test_without_overwrite_an_existing_output_stays_and_nothing_is_left(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    if how != "renameat2":  # a kernel or filesystem without RENAME_NOREPLACE
        monkeypatch.setattr(tempfiles, "rename_noreplace", lambda src, dst, **kwargs: False)
    if how == "no-links":
        def no_links(src, dst, **kwargs) -> None:  # noqa: ANN001, ANN003
            raise OSError(1, "Operation not permitted")

        monkeypatch.setattr(tempfiles.os, "link", no_links)
        monkeypatch.setattr(tempfiles, "_unnamed", lambda directory, mode: None)
    out = tmp_path / "identity.key"
    with atomic_output(out, "keygen", overwrite=False) as (fd, _tmp):
        os.write(fd, b"first")
    assert out.read_bytes() == b"first" and out.stat().st_nlink == 1
    with pytest.raises(FileExistsError):
        with atomic_output(out, "keygen", overwrite=False) as (fd, _tmp):
            os.write(fd, b"second")
    assert out.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["identity.key"]
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError):
        with atomic_output(tmp_path / "dangling", "keygen", overwrite=False) as (fd, _tmp):
            os.write(fd, b"third")
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file of another user needs root")
@pytest.mark.parametrize("unnamed", [True, False])
def test_another_users_file_at_the_temp_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unnamed: bool) -> None:
    import fcntl

    if not unnamed:  # a filesystem without O_TMPFILE (and here without hard links either)
        monkeypatch.setattr(tempfiles.os, "link", lambda *a, **k: (_ for _ in ()).throw(OSError(1, "no links")))
        monkeypatch.setattr(tempfiles, "_unnamed", lambda directory, mode: None)
    out = tmp_path / "report.csv"
    squat = temp_path(out, "open")
    squat.write_bytes(b"")
    os.chown(squat, 65534, 65534)  # nobody's, in a shared directory
    held = os.open(squat, os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)  # and held
        if unnamed:  # passed by: the bytes have no name until they are whole
            with atomic_output(out, "open") as (fd, tmp):
                assert tmp != squat
                os.write(fd, b"ours")
                os.fsync(fd)
            assert out.read_bytes() == b"ours"
        else:  # passing by would leave a killed run's bytes under a name no one reclaims
            with pytest.raises(InputValidationError, match="belongs to another user \\(uid 65534\\)"):
                with atomic_output(out, "open") as (fd, tmp):
                    os.write(fd, b"ours")
    finally:
        os.close(held)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([squat.name] + ([out.name] if unnamed else []))


_KILLED = """
import os, signal, sys
from pathlib import Path
from vault.tempfiles import atomic_output
with atomic_output(Path(sys.argv[1]), "open") as (fd, tmp):
    os.write(fd, b"plaintext of a twin model " * 40_000)
    os.fsync(fd)
    os.kill(os.getpid(), signal.SIGKILL)  # a crash before the commitment is checked
"""


def test_a_killed_writer_leaves_no_bytes_behind(tmp_path: Path) -> None:
    import subprocess
    import sys

    _needs_unnamed(tmp_path, "the next claim removes the leftover instead")
    out = tmp_path / "model.bin"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    run = subprocess.run([sys.executable, "-c", _KILLED, str(out)], env=env, capture_output=True)
    assert run.returncode == -9, run.stderr
    left = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert list(left) == [temp_path(out, "open").name] and left[temp_path(out, "open").name] == b""
    with atomic_output(out, "open") as (fd, _):  # the empty guard is taken over as before
        os.write(fd, b"next")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]


_KILLED_AT_RENAME = """
import os, signal, sys
from pathlib import Path
from vault import tempfiles
def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # named, not yet renamed over the output
tempfiles.os.replace = killed
tempfiles.rename_noreplace = killed
with tempfiles.atomic_output(Path(sys.argv[1]), "open", overwrite=sys.argv[2] == "1") as (fd, tmp):
    os.write(fd, b"the whole plaintext")
    os.fsync(fd)
"""


@pytest.mark.parametrize("overwrite", [True, False])
def test_what_a_kill_between_naming_and_renaming_left_is_removed_by_the_next_claim(
        tmp_path: Path, overwrite: bool) -> None:
    import subprocess
    import sys

    out = tmp_path / "model.bin"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    run = subprocess.run([sys.executable, "-c", _KILLED_AT_RENAME, str(out), "1" if overwrite else "0"],
                         env=env, capture_output=True)
    assert run.returncode == -9, run.stderr
    left = sorted(p.name for p in tmp_path.iterdir())
    _needs_unnamed(tmp_path, "the bytes were at the guard's own name")
    ready = temp_path(out, "open").with_suffix(".ready")
    assert left == sorted([temp_path(out, "open").name, ready.name]) and ready.read_bytes() == b"the whole plaintext"
    with atomic_output(out, "open") as (fd, _):
        os.write(fd, b"next")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file of another user needs root")
def test_another_users_ready_name_does_not_throw_the_written_file_away(tmp_path: Path) -> None:
    out = tmp_path / "report.pdf"
    ready = temp_path(out, "open").with_suffix(".ready")
    ready.mkdir()  # not even root can unlink a directory
    os.chown(ready, 65534, 65534)
    _needs_unnamed(tmp_path, "the bytes are at the guard's own name")
    with atomic_output(out, "open") as (fd, _):
        os.write(fd, b"the whole file")
        os.fsync(fd)
    assert out.read_bytes() == b"the whole file"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, ready.name])


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file of another user needs root")
def test_a_passed_by_guard_sweeps_what_our_killed_runs_left_under_random_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setattr(tempfiles, "_STALE_READY", 2.0)  # a minute, in the module
    out = tmp_path / "report.csv"
    squat = temp_path(out, "open")
    squat.write_bytes(b"")
    os.chown(squat, 65534, 65534)
    stem = squat.name[: -len(".part")]
    dead_guard = tmp_path / f"{stem}.0123456789ab.new"  # ours, its lock died with its run
    dead_guard.write_bytes(b"")
    named = tmp_path / f"{stem}.0123456789ab.ready"  # a whole plaintext a kill left named
    named.write_bytes(b"plaintext")
    time.sleep(2.1)
    fresh = tmp_path / f"{stem}.fedcba987654.ready"  # a live writer's, a moment old: kept
    fresh.write_bytes(b"in flight")
    live = tmp_path / f"{stem}.111111111111.ready"  # linked just now, its bytes written long ago
    live.write_bytes(b"in flight too")
    an_hour_ago = time.time() - 3600
    os.utime(live, (an_hour_ago, an_hour_ago))  # mtime an hour old; ctime (what link(2) sets) is now
    claiming = tmp_path / f"{stem}.222222222222.new"  # a claim's, created, not locked yet
    claiming.write_bytes(b"")
    theirs = tmp_path / f"{stem}.aaaaaaaaaaaa.new"
    theirs.write_bytes(b"")
    os.chown(theirs, 65534, 65534)
    _needs_unnamed(tmp_path, "a squatted guard is refused instead")
    with atomic_output(out, "open") as (fd, _):
        os.write(fd, b"ours")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [out.name, squat.name, fresh.name, live.name, claiming.name, theirs.name])


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file of another user needs root")
def test_with_the_ready_name_taken_our_random_named_leftovers_are_swept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setattr(tempfiles, "_STALE_READY", 0.5)
    out = tmp_path / "identity.key"
    guard = temp_path(out, "keygen")
    taken = guard.with_suffix(".ready")
    taken.mkdir()
    os.chown(taken, 65534, 65534)
    killed = guard.with_suffix(".0123456789ab.ready")  # a secret a kill left between naming and link
    killed.write_bytes(b"AGE-SECRET-KEY-1...")
    time.sleep(0.6)
    with atomic_output(out, "keygen", overwrite=False) as (fd, _):
        os.write(fd, b"the new key")
    assert out.read_bytes() == b"the new key"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, taken.name])


def test_a_directory_swapped_after_resolving_is_not_written_through(tmp_path: Path) -> None:
    """What resolve_output found is where atomic_output writes: the directory held open,
    not the path, which now names another directory."""
    (tmp_path / "d").mkdir()
    (tmp_path / "elsewhere").mkdir()
    with resolve_output(tmp_path / "d" / "out.bin") as target:
        (tmp_path / "d").rename(tmp_path / "moved")
        (tmp_path / "d").symlink_to(tmp_path / "elsewhere")
        with atomic_output(target, "open") as (fd, tmp):
            assert tmp == tmp_path / "d" / tmp.name  # named as found, for messages
            os.write(fd, b"ours")
            os.fsync(fd)
        assert target.dir.fd >= 0  # a given Output is left open for its owner
    assert (tmp_path / "moved" / "out.bin").read_bytes() == b"ours"
    assert list((tmp_path / "elsewhere").iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "moved").iterdir()) == ["out.bin"]


def test_resolve_output_walks_links_and_dot_dot_as_the_kernel_does(tmp_path: Path) -> None:
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "up").symlink_to("real/sub")  # relative
    (tmp_path / "real" / "sub" / "abs").symlink_to(tmp_path / "real")  # absolute, further on
    with resolve_output(tmp_path / "up" / "abs" / "sub" / ".." / "f") as found:
        assert found.path == tmp_path / "real" / "f" and found.name == "f"
        assert os.path.samestat(os.fstat(found.dir.fd), os.stat(tmp_path / "real"))
    with resolve_output(Path("relative-name")) as found:  # the working directory, as given
        assert found.path == Path("relative-name") and os.path.samestat(os.fstat(found.dir.fd), os.stat("."))
    (tmp_path / "f").write_bytes(b"")
    for bad, why in [(tmp_path / "f" / "x", "Not a directory"), (tmp_path / "real" / "..", "is a directory"),
                     (Path("/"), "is a directory")]:
        with pytest.raises(InputValidationError, match=why):
            resolve_output(bad)
    (tmp_path / "kept").symlink_to(tmp_path / "f")  # follow=False: the link's own name
    with resolve_output(tmp_path / "kept", follow=False) as found:
        assert found.name == "kept" and found.path == tmp_path / "kept"


def test_a_trailing_slash_names_a_directory_as_for_the_kernel(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"old")
    os.symlink("f/", tmp_path / "lf")  # the link's text says "a directory named f"
    os.symlink("newdir/", tmp_path / "ln")
    for given, why in [(f"{tmp_path}/new/", "does not exist"), (f"{tmp_path}/f/", "Not a directory"),
                       (str(tmp_path / "lf"), "Not a directory"), (str(tmp_path / "ln"), "does not exist"),
                       (f"{tmp_path}/", "is a directory")]:
        with pytest.raises(InputValidationError, match=why):
            resolve_output(given)
    assert (tmp_path / "f").read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["f", "lf", "ln"]


def test_paths_the_kernel_would_refuse_are_input_errors(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["d" * 200] * 25)  # each name fine, the whole past PATH_MAX
    with pytest.raises(InputValidationError, match="File name too long"):
        resolve_output(deep / "out")
    for bad in ["", "a\0b", b"a\0b"]:
        with pytest.raises(InputValidationError, match="empty or holds a NUL"):
            resolve_output(bad)
    with pytest.raises(InputValidationError, match="must be a path"):
        resolve_output(3)  # type: ignore[arg-type]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "link").symlink_to("nodir/x")
    with pytest.raises(InputValidationError, match=f"output directory {tmp_path}/d/nodir does not exist"):
        resolve_output(tmp_path / "d" / "link")  # what is missing, not the link's own directory


def test_a_claim_closes_once(tmp_path: Path) -> None:
    claim = claim_temp(tmp_path / "out", "open")
    claim.discard()
    other = os.open(tmp_path, os.O_RDONLY)  # very likely the number the claim had
    try:
        claim.close()  # a second close must not close this
        os.fstat(other)
    finally:
        os.close(other)
    assert claim.fd == -1 and list(tmp_path.iterdir()) == []


def test_a_directory_removed_while_held_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "gone").mkdir()
    with resolve_output(tmp_path / "gone" / "x") as target:
        (tmp_path / "gone").rmdir()
        with pytest.raises(InputValidationError, match=f"cannot write {tmp_path}/gone/x"):
            with atomic_output(target, "open") as (fd, _):
                os.write(fd, b"x")
    assert list(tmp_path.iterdir()) == []


def _as_nobody(fn, cwd: Path) -> str:  # noqa: ANN001
    """fn() in a forked child that runs as nobody in `cwd` (no exec: the interpreter may sit
    where nobody cannot reach it); what it returned or the InputValidationError it raised."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            os.chdir(cwd)
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            try:
                answer = f"ok {fn()}"
            except InputValidationError as exc:
                answer = f"InputValidationError {exc}"
            os.write(write, answer.encode())
        except BaseException as exc:  # noqa: BLE001
            os.write(write, f"child failed: {exc!r}".encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        chunks = []
        while chunk := os.read(read, 65536):
            chunks.append(chunk)
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    return b"".join(chunks).decode()


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another user needs root")
def test_what_another_user_may_not_do_here_is_an_input_error(tmp_path: Path) -> None:
    from vault.blockstore import FilesystemBlockstore

    os.chmod(tmp_path, 0o755)
    (tmp_path / "ro").mkdir(mode=0o755)  # root's: nobody may not write in it
    (tmp_path / "locked" / "mine").mkdir(parents=True)
    os.chown(tmp_path / "locked" / "mine", 65534, 65534)

    def write() -> None:
        with atomic_output(Path("out"), "open") as (fd, _):
            os.write(fd, b"x")

    def owns() -> bool:
        fd = os.open(".", os.O_RDONLY)
        return FilesystemBlockstore.owned_by(tmp_path / "store", "out", dir_fd=fd)

    assert _as_nobody(write, tmp_path / "ro") == (
        f"InputValidationError cannot write out: its directory {tmp_path}/ro is not writable")
    assert _as_nobody(write, tmp_path / "locked" / "mine") == "ok None"
    os.chmod(tmp_path / "locked", 0o700)  # nobody's working directory, under one nobody may not search
    try:
        checked = _as_nobody(owns, tmp_path / "locked" / "mine")
    finally:
        os.chmod(tmp_path / "locked", 0o755)
    assert checked.startswith("InputValidationError cannot check that the output is outside the block store"), checked
    assert list((tmp_path / "ro").iterdir()) == []


_KILLED_IN_CLAIM = """
import os, signal, sys
from pathlib import Path
from vault import tempfiles
def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # the guard made, not yet locked nor named
tempfiles.fcntl.flock = killed
tempfiles.claim_temp(Path(sys.argv[1]), "open")
"""


def test_a_kill_while_claiming_leaves_no_private_name_behind(tmp_path: Path) -> None:
    """The guard has no name until it is locked and linked to the shared one (a helper's
    kill loop left an empty `.new` that no later claim removed, 3 times in 180 kills)."""
    import subprocess
    import sys

    _needs_unnamed(tmp_path, "the guard is made under a private name there")
    out = tmp_path / "model.bin"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    run = subprocess.run([sys.executable, "-c", _KILLED_IN_CLAIM, str(out)], env=env, capture_output=True)
    assert run.returncode == -9, run.stderr
    assert list(tmp_path.iterdir()) == []
    claim = claim_temp(out, "open")
    assert os.fstat(claim.fd).st_nlink == 1 and claim.path == temp_path(out, "open")
    claim.discard()
    assert list(tmp_path.iterdir()) == []
