"""FilesystemBlockstore pins on disk: one file per pin, the move from the pins.json of
earlier versions, and two processes pinning into one store at once; and gc, which waits
for imports (importing()) in this process and in others."""
from __future__ import annotations

import base64
import json
import multiprocessing
import os
import threading
from pathlib import Path

import pytest

from vault.blockstore import FilesystemBlockstore, MemoryBlockstore
from vault.cid import CID
from vault.errors import InputValidationError, IntegrityError
from vault.unixfs import import_bytes

from .blockstore_suite import TINY, TINY_PB


def _pin_name(cid: CID) -> str:
    return base64.b32encode(cid.to_bytes()).decode("ascii").rstrip("=") + ".pin"


def _roots(store: FilesystemBlockstore, n: int, tag: bytes = b"") -> list[CID]:
    return [import_bytes(tag + b"version %d " % i * 50, TINY, store.put) for i in range(n)]


def test_each_pin_is_one_file_named_by_its_cid(tmp_path: Path) -> None:
    store = FilesystemBlockstore(tmp_path)
    v1 = import_bytes(b"model " * 100, TINY, store.put)
    v0 = import_bytes(b"model " * 100, TINY_PB, store.put)  # a CIDv0 root
    assert v0.version == 0 and v1.version == 1
    store.pin(v1)
    store.pin(v1)  # again: nothing changes
    store.pin(v0)
    files = sorted(p.name for p in (tmp_path / "pins").iterdir())
    assert files == sorted([_pin_name(v1), _pin_name(v0)])
    assert (tmp_path / "pins" / _pin_name(v0)).read_text() == f"{v0}\n"
    assert not (tmp_path / "pins.json").exists()
    assert FilesystemBlockstore(tmp_path).pins() == {v0, v1}
    assert store.unpin(v0) is True
    assert store.unpin(v0) is False
    assert sorted(p.name for p in (tmp_path / "pins").iterdir()) == [_pin_name(v1)]


def test_a_pins_json_of_an_earlier_version_is_moved_into_pin_files(tmp_path: Path) -> None:
    store = FilesystemBlockstore(tmp_path)
    roots = _roots(store, 3)
    (tmp_path / "pins.json").write_text(json.dumps({"version": 1, "pins": sorted(map(str, roots[:2]))}))
    again = FilesystemBlockstore(tmp_path)
    assert not (tmp_path / "pins.json").exists()
    assert sorted(p.name for p in (tmp_path / "pins").iterdir()) == sorted(_pin_name(r) for r in roots[:2])
    assert again.pins() == set(roots[:2])
    removed = again.gc()  # the third version was never pinned
    assert removed > 0 and again.pins() == set(roots[:2])
    for root in roots[:2]:
        again.pin(root)  # every block of the pinned versions is still there


def test_a_move_cut_short_loses_no_pin_and_is_finished_later(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FilesystemBlockstore(tmp_path)
    roots = _roots(store, 3)
    store.pin(roots[0])
    (tmp_path / "pins.json").write_text(json.dumps({"version": 1, "pins": [str(r) for r in roots[1:]]}))
    real_add = FilesystemBlockstore._add_pin
    added: list[CID] = []

    def add_then_fail(self: FilesystemBlockstore, root: CID) -> None:
        if added:
            raise OSError(28, "No space left on device")  # the second pin file cannot be written
        real_add(self, root)
        added.append(root)

    monkeypatch.setattr(FilesystemBlockstore, "_add_pin", add_then_fail)
    halfway = FilesystemBlockstore(tmp_path)  # opens all the same
    assert (tmp_path / "pins.json").exists()
    assert halfway.pins() == set(roots)  # pin files and pins.json together
    monkeypatch.setattr(FilesystemBlockstore, "_add_pin", real_add)
    assert halfway.unpin(roots[2]) is True  # finishes the move first, so the pin does not come back
    assert not (tmp_path / "pins.json").exists()
    assert FilesystemBlockstore(tmp_path).pins() == {roots[0], roots[1]}


def test_a_damaged_pin_stops_gc_instead_of_freeing_what_it_pinned(tmp_path: Path) -> None:
    store = FilesystemBlockstore(tmp_path)
    (root,) = _roots(store, 1)
    store.pin(root)
    (tmp_path / "pins" / f".{_pin_name(root)}.1234.tmp").write_text("half")  # a pin being written: ignored
    (tmp_path / "pins" / "notes.txt").write_text("not a pin")  # not ours: ignored
    assert store.pins() == {root}
    (tmp_path / "pins" / "NOT-BASE32!.pin").write_text("?")
    with pytest.raises(IntegrityError, match="is not a CID"):
        store.pins()
    with pytest.raises(IntegrityError, match="is not a CID"):
        store.gc()
    assert store.has(root)


def test_a_damaged_pins_json_is_reported_and_kept(tmp_path: Path) -> None:
    store = FilesystemBlockstore(tmp_path)
    (tmp_path / "pins.json").write_text(json.dumps({"version": 1, "pins": ["not-a-cid"]}))
    again = FilesystemBlockstore(tmp_path)  # opens; the file stays for whoever repairs it
    assert (tmp_path / "pins.json").exists()
    with pytest.raises(IntegrityError, match="corrupt"):
        again.pins()
    with pytest.raises(IntegrityError, match="corrupt"):
        again.gc()
    with pytest.raises(IntegrityError, match="corrupt"):
        store.pins()  # a handle opened before the damage reads the same file


def _pin_all(path: str, tag: bytes, count: int, start: multiprocessing.synchronize.Event) -> None:
    store = FilesystemBlockstore(path)
    roots = _roots(store, count, tag)
    start.wait()
    for root in roots:
        store.pin(root)


def test_two_processes_pinning_into_one_store_keep_every_pin(tmp_path: Path) -> None:
    # With one shared pin list rewritten per pin, the two would overwrite each other's.
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    workers = [context.Process(target=_pin_all, args=(str(tmp_path), tag, 40, start)) for tag in (b"a", b"b")]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    store = FilesystemBlockstore(tmp_path)
    want = set(_roots(store, 40, b"a")) | set(_roots(store, 40, b"b"))
    assert len(want) == 80 and store.pins() == want
    assert len(os.listdir(tmp_path / "pins")) == 80


# -- gc and imports: the import gate ------------------------------------------------------------


@pytest.fixture(params=["memory", "filesystem"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path):
    return MemoryBlockstore() if request.param == "memory" else FilesystemBlockstore(tmp_path / "repo")


def test_gc_waits_for_an_import_until_its_root_is_pinned(any_store) -> None:
    store = any_store
    (old,) = _roots(store, 1, b"unpinned, old")  # gc's to remove
    ready, go, pinned = threading.Event(), threading.Event(), []

    def import_version() -> None:
        with store.importing():
            root = import_bytes(b"a new version " * 500, TINY, store.put)
            ready.set()
            go.wait(30)
            store.pin(root)  # walks the DAG: raises if gc took a block meanwhile
            pinned.append(root)

    importer = threading.Thread(target=import_version)
    importer.start()
    assert ready.wait(30)
    removed: list[int] = []
    collector = threading.Thread(target=lambda: removed.append(store.gc()))
    collector.start()
    collector.join(0.3)
    assert collector.is_alive()  # waiting for the import
    go.set()
    importer.join(30)
    collector.join(30)
    assert pinned and removed and removed[0] > 0
    assert store.pins() == set(pinned) and not store.has(old)
    store.pin(pinned[0])  # every block of the new version survived


def test_gc_inside_an_import_is_refused_rather_than_waiting_for_itself(any_store) -> None:
    with any_store.importing(), any_store.importing():  # nestable
        with pytest.raises(InputValidationError, match="wait for itself"):
            any_store.gc()
    assert any_store.gc() == 0


def test_seal_pins_its_root_while_it_still_holds_the_import_gate() -> None:
    from vault.age import X25519Identity
    from vault.vault import Vault

    depths: list[int] = []

    class Recording(MemoryBlockstore):
        def _add_pin(self, root: CID) -> None:
            depths.append(getattr(self._holding, "depth", 0))
            super()._add_pin(root)

    identity = X25519Identity.generate()
    Vault(Recording(), identity, "v1").seal([os.urandom(300_000)])
    assert depths == [1]


def _import_and_wait(path: str, ready, go) -> None:
    store = FilesystemBlockstore(path)
    with store.importing():
        root = import_bytes(b"from the other process " * 500, TINY, store.put)
        ready.set()
        go.wait(60)
        store.pin(root)


def test_gc_in_one_process_waits_for_an_import_in_another(tmp_path: Path) -> None:
    store = FilesystemBlockstore(tmp_path)
    context = multiprocessing.get_context("spawn")
    ready, go = context.Event(), context.Event()
    child = context.Process(target=_import_and_wait, args=(str(tmp_path), ready, go))
    child.start()
    try:
        assert ready.wait(60)
        removed: list[int] = []
        collector = threading.Thread(target=lambda: removed.append(store.gc()))
        collector.start()
        collector.join(0.3)
        assert collector.is_alive()  # the other process holds the gate
        go.set()
        child.join(60)
        assert child.exitcode == 0  # its pin() found every block
        collector.join(30)
    finally:
        go.set()
        child.join(60)
    assert removed == [0]
    (root,) = store.pins()
    store.pin(root)
