"""The locked temp file beside an output (vault/tempfiles.py)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from vault import tempfiles
from vault.errors import InputValidationError
from vault.tempfiles import claim_temp, discard_temp, install_temp, temp_path


def test_a_second_writer_to_the_same_output_is_refused_until_the_first_lets_go(tmp_path: Path) -> None:
    out = tmp_path / "out.bin"
    fd, tmp = claim_temp(out, "open")
    os.write(fd, b"first")
    with pytest.raises(InputValidationError, match=f"another open to {out} is under way"):
        claim_temp(out, "open")
    assert tmp.read_bytes() == b"first"  # the refused one did not truncate it
    other_fd, other = claim_temp(tmp_path / "other.bin", "open")  # another output: its own name
    assert other != tmp
    discard_temp(other_fd, other)
    install_temp(fd, tmp, out)
    os.close(fd)
    assert out.read_bytes() == b"first" and not tmp.exists()
    fd, again = claim_temp(out, "open")
    assert again == tmp and out.read_bytes() == b"first"
    discard_temp(fd, again)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_what_a_crashed_writer_left_is_reused_not_added_to(tmp_path: Path) -> None:
    out = tmp_path / ("o" * 250)  # near NAME_MAX: the temp name stays short
    fd, tmp = claim_temp(out, "car-export", 0o666)
    os.write(fd, b"partial output of a run that was killed")
    os.close(fd)  # the process died: the lock went with it, the file stayed
    fd, again = claim_temp(out, "car-export", 0o666)
    assert again == tmp and os.fstat(fd).st_size == 0 and len(tmp.name) < 60
    discard_temp(fd, again)
    assert list(tmp_path.iterdir()) == []


def test_a_claim_that_loses_the_name_to_a_rename_starts_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between our open and our lock the previous holder renamed the temp file over its
    output: the inode we locked is that output now, and must not be truncated."""
    out = tmp_path / "out.bin"
    tmp = temp_path(out, "open")
    tmp.write_bytes(b"the previous holder's finished output")
    real = tempfiles.fcntl.flock
    calls = []

    def flock(fd: int, op: int) -> None:
        if not calls:
            os.replace(tmp, out)
        calls.append(op)
        real(fd, op)

    monkeypatch.setattr(tempfiles.fcntl, "flock", flock)
    fd, claimed = claim_temp(out, "open")
    assert len(calls) == 2 and claimed == tmp
    assert out.read_bytes() == b"the previous holder's finished output"
    discard_temp(fd, claimed)


def test_a_symlink_or_directory_at_the_temp_name_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out.bin"
    target = tmp_path / "elsewhere"
    temp_path(out, "open").symlink_to(target)
    with pytest.raises(InputValidationError, match="is a symbolic link"):
        claim_temp(out, "open")
    assert not target.exists()
    temp_path(out, "open").unlink()
    temp_path(out, "open").mkdir()
    with pytest.raises((InputValidationError, IsADirectoryError)):
        claim_temp(out, "open")


def test_a_failed_directory_fsync_removes_the_output_only_if_it_is_still_ours(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out.bin"

    def replaced_meanwhile(path: Path) -> None:
        (tmp_path / "newer").write_bytes(b"another writer's output")
        os.replace(tmp_path / "newer", out)
        raise OSError(5, "Input/output error")

    fd, tmp = claim_temp(out, "open")
    os.write(fd, b"ours")
    monkeypatch.setattr(tempfiles, "_fsync_dir", replaced_meanwhile)
    with pytest.raises(OSError, match="Input/output error"):
        install_temp(fd, tmp, out)
    discard_temp(fd, tmp)
    assert out.read_bytes() == b"another writer's output"
