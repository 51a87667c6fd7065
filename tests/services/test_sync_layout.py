"""The sync directory's crash-safe steps (services/sync/_layout.py) and the checkpoint's
wire format (_checkpoint.py), on a real filesystem; property tests for every parser."""
from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.sync import SyncConfigError, SyncStateError
from services.sync._checkpoint import AssetEntry, SyncState, VersionEntry, decode_state, encode_state
from services.sync._layout import DEFAULT_FILENAME, SyncDir, safe_filename
from services.sync.errors import SyncBusyError
from services.sync.service import PAUSE_POINTS, parse_pause_hook

# -- checkpoint -------------------------------------------------------------------------------------

_finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
_versions = st.dictionaries(
    st.integers(1, 2**32 - 1),
    st.builds(VersionEntry, size=st.integers(0, 2**64), cid=st.none() | st.text(max_size=60),
              sha256=st.none() | st.text(max_size=64), timestamp=st.none() | st.integers(0, 2**40),
              materialised_at=st.none() | _finite, lag_seconds=st.none() | _finite), max_size=4)
_assets = st.dictionaries(
    st.integers(0, 2**256 - 1),
    st.builds(AssetEntry, purpose=st.text(max_size=30), status=st.sampled_from(["new", "following", "stopped"]),
              reason=st.none() | st.sampled_from(["revoked", "expired", "retired", "inactive", "no_grant"]),
              name=st.none() | st.text(max_size=30), filename=st.none() | st.text(max_size=30), versions=_versions),
    max_size=4)
_states = st.builds(SyncState, org=st.none() | st.from_regex(r"0x[0-9a-fA-F]{40}", fullmatch=True), assets=_assets)


@settings(max_examples=50, deadline=None)
@given(_states)
def test_checkpoint_round_trips(state):
    data = encode_state(state)
    assert decode_state(data) == state
    assert encode_state(decode_state(data)) == data  # canonical: sorted keys, compact


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_checkpoint_parser_rejects_garbage_with_a_named_error(data):
    try:
        decode_state(data)
    except SyncStateError:
        pass


GOOD = {"format": "twinledger-sync/1", "org": None, "assets": {"7": {
    "name": "n", "filename": "n", "purpose": "", "status": "following", "reason": None,
    "versions": {"1": {"cid": None, "size": 3, "sha256": None, "timestamp": 5, "materialised_at": 6.5,
                       "lag_seconds": 1.5}}}}}


@pytest.mark.parametrize("mutate, message", [
    (lambda o: o.update(format="twinledger-sync/2"), "format"),
    (lambda o: o.update(org="acme"), "org must be an address"),
    (lambda o: o.update(extra=1), "unknown ['extra']"),
    (lambda o: o["assets"].update({"07": o["assets"]["7"]}), "'07' is not a decimal"),
    (lambda o: o["assets"]["7"].update(status="paused"), "status must be one of"),
    (lambda o: o["assets"]["7"].update(reason="bored"), "reason must be null or one of"),
    (lambda o: o["assets"]["7"]["versions"].update({"0": o["assets"]["7"]["versions"]["1"]}), "version 0 out of range"),
    (lambda o: o["assets"]["7"]["versions"]["1"].update(size=-1), "size must be an unsigned integer"),
    (lambda o: o["assets"]["7"]["versions"]["1"].update(size=True), "size must be an unsigned integer"),
    (lambda o: o["assets"]["7"]["versions"]["1"].pop("cid"), "missing ['cid']"),
    (lambda o: o["assets"]["7"]["versions"]["1"].update(lag_seconds="1"), "lag_seconds must be a finite number"),
])
def test_checkpoint_parser_names_the_bad_field(mutate, message):
    assert decode_state(json.dumps(GOOD).encode()).assets[7].versions[1].lag_seconds == 1.5
    obj = json.loads(json.dumps(GOOD))
    mutate(obj)
    with pytest.raises(SyncStateError, match=message.replace("[", r"\[").replace("]", r"\]")):
        decode_state(json.dumps(obj).encode())


def test_checkpoint_refuses_nan():
    with pytest.raises(SyncStateError, match="not UTF-8 JSON"):
        decode_state(json.dumps(GOOD).replace("1.5", "NaN").encode())


# -- file names and the test hook --------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=300))
def test_safe_filename_is_always_one_plain_component(name):
    out = safe_filename(name)
    assert out == name or out == DEFAULT_FILENAME
    assert "/" not in out and "\0" not in out and not out.startswith(".") and out not in ("", "current")
    assert len(out.encode("utf-8")) <= 255
    assert os.path.basename(out) == out


@pytest.mark.parametrize("name, expected", [
    ("spindle-twin.bin", "spindle-twin.bin"), ("pump model v2.onnx", "pump model v2.onnx"), ("Ünïcode.csv", "Ünïcode.csv"),
    ("../etc/passwd", DEFAULT_FILENAME), ("a/b", DEFAULT_FILENAME), (".hidden", DEFAULT_FILENAME),
    ("..", DEFAULT_FILENAME), ("", DEFAULT_FILENAME), (" padded ", DEFAULT_FILENAME), ("tab\there", DEFAULT_FILENAME),
    ("back\\slash", DEFAULT_FILENAME), ("current", DEFAULT_FILENAME), ("x" * 256, DEFAULT_FILENAME), (None, DEFAULT_FILENAME),
])
def test_safe_filename_examples(name, expected):
    assert safe_filename(name) == expected


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.sampled_from(PAUSE_POINTS), st.integers(0, 3600)))
def test_pause_hook_round_trips(pauses):
    text = ",".join(f"{point}={seconds}" for point, seconds in pauses.items())
    assert parse_pause_hook(text) == pauses


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=40))
def test_pause_hook_parser_raises_only_its_named_error(text):
    try:
        parse_pause_hook(text)
    except SyncConfigError:
        pass


@pytest.mark.parametrize("text", ["after_fetch", "after_fetch=", "before_fetch=1", "after_fetch=-1",
                                  "after_fetch=4000", "after_fetch=nan", "after_commit=x"])
def test_pause_hook_refuses_malformed_values(text):
    with pytest.raises(SyncConfigError, match="TWINLEDGER_SYNC_TEST_PAUSE"):
        parse_pause_hook(text)


# -- the directory -----------------------------------------------------------------------------------


@pytest.fixture
def sync_dir(tmp_path):
    d = SyncDir(tmp_path / "twins")
    d.open()
    yield d
    d.close()


def _commit(d: SyncDir, asset: int, version: int, data: bytes) -> None:
    staging = d.staging(asset, version)
    (staging / "f").write_bytes(data)
    d.commit(staging, asset, version)


def test_commit_and_current_pointer(sync_dir):
    _commit(sync_dir, 4, 1, b"one")
    sync_dir.point_current(4, 1)
    _commit(sync_dir, 4, 2, b"two")
    assert sync_dir.current(4) == 1  # the pointer moves only when told
    sync_dir.point_current(4, 2)
    adir = sync_dir.asset_dir(4)
    assert os.readlink(adir / "current") == "2" and (adir / "current" / "f").read_bytes() == b"two"
    assert sorted(p.name for p in adir.iterdir()) == ["1", "2", "current"]  # no temp symlink left
    assert sync_dir.scan() == {4: [1, 2]} and sync_dir.version_bytes(4, 2) == 3
    with pytest.raises(SyncStateError, match="already exists"):
        _commit(sync_dir, 4, 2, b"again")
    sync_dir.point_current(4, None)
    assert not (adir / "current").is_symlink()


def test_leftovers_of_a_killed_run_are_removed_and_junk_ignored(sync_dir):
    _commit(sync_dir, 9, 1, b"done")
    staging = sync_dir.staging(9, 2)
    (staging / "f").write_bytes(b"half")
    os.symlink("1", sync_dir.asset_dir(9) / ".current-dead")
    (sync_dir.meta / "state.json.abc").write_bytes(b"{")
    (sync_dir.meta / "purge-9-abc").mkdir()
    (sync_dir.root / "notes.txt").write_text("user file")
    (sync_dir.asset_dir(9) / "007").mkdir()  # not a canonical version name
    removed = {p.name for p in sync_dir.clean_leftovers()}
    assert removed == {staging.name, ".current-dead", "state.json.abc", "purge-9-abc"}
    assert sync_dir.scan() == {9: [1]}
    assert (sync_dir.root / "notes.txt").exists() and (sync_dir.asset_dir(9) / "1" / "f").read_bytes() == b"done"


def test_purge_removes_the_asset_and_reports_its_versions(sync_dir):
    for version in (1, 2):
        _commit(sync_dir, 3, version, b"x")
    sync_dir.point_current(3, 2)
    _commit(sync_dir, 5, 1, b"y")
    assert sync_dir.purge(3) == [1, 2]
    assert sync_dir.scan() == {5: [1]}
    assert [p.name for p in sync_dir.meta.iterdir()] == ["lock"]


def test_state_write_is_atomic_and_leaves_no_temp(sync_dir):
    state = SyncState(org="0x" + "ab" * 20, assets={1: AssetEntry(status="following")})
    sync_dir.write_state(encode_state(state))
    sync_dir.write_state(encode_state(state))
    assert decode_state(sync_dir.read_state()) == state
    assert sorted(p.name for p in sync_dir.meta.iterdir()) == ["lock", "state.json"]


def test_one_process_per_directory_and_refuses_a_file(tmp_path, sync_dir):
    other = SyncDir(sync_dir.root)
    with pytest.raises(SyncBusyError, match="another sync process"):
        other.open()
    sync_dir.close()
    other.open()  # released on close (and by the kernel when a process dies)
    other.close()
    (tmp_path / "file").write_text("x")
    with pytest.raises(SyncStateError, match="not a directory"):
        SyncDir(tmp_path / "file").open()
