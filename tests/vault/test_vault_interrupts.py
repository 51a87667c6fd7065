"""An interruption (Ctrl-C, or an exception a signal handler raises) while seal or open
waits for its worker threads: every thread has stopped before the call raises, so none
writes into a descriptor the caller then closes (a number the next open() reuses) or
stores blocks after the import gate has opened. The interruption is a real signal whose
handler raises only while the main thread waits in _Sink.close() for the chosen stage;
the stage is slowed so that the wait is long enough to be hit."""
from __future__ import annotations

import contextlib
import mmap
import os
import signal
import threading
import time

import pytest

from vault import _output
from vault._pipeline import _PieceReader, _Sink
from vault._threads import stop_all
from vault.age import X25519Identity
from vault.blockstore import FilesystemBlockstore
from vault.errors import InputValidationError
from vault.vault import Vault

MIB = 1 << 20
pytestmark = pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer (POSIX)")


class Interrupted(Exception):
    """What the test's signal handler raises (as the default SIGINT handler raises
    KeyboardInterrupt, which pytest would take for the user's)."""


@contextlib.contextmanager
def interrupt_while_waiting_for(stage: str):
    """Raise Interrupted once, from SIGALRM, while the main thread waits in close() (or
    what it calls) of a _Sink whose threads are named vault-<stage>…"""
    fired: list[float] = []

    def handler(signum, frame) -> None:
        f = frame
        while f is not None and not fired:
            sink = f.f_locals.get("self")
            if isinstance(sink, _Sink) and f.f_code.co_name in ("close", "_finish") \
                    and sink._threads[0].name.startswith(f"vault-{stage}"):
                fired.append(time.monotonic())
                raise Interrupted
            f = f.f_back

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.002, 0.002)
    try:
        yield fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, old)


def vault_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("vault-") and t.is_alive()]


@pytest.fixture(scope="module")
def owner() -> X25519Identity:
    return X25519Identity.generate()


def test_an_interrupted_open_stops_its_writer_before_the_output_fd_is_closed(tmp_path, owner, monkeypatch) -> None:
    store = FilesystemBlockstore(tmp_path / "store")
    vault = Vault(store, owner)
    sealed = vault.seal(os.urandom(8 * MIB))
    writes: list[float] = []  # when each write began
    write = _output._Output.write

    def slow(self, view) -> None:
        writes.append(time.monotonic())
        time.sleep(0.03)
        write(self, view)

    monkeypatch.setattr(_output._Output, "write", slow)
    out = tmp_path / "out.bin"
    with interrupt_while_waiting_for("write") as fired, pytest.raises(Interrupted):
        vault.open(sealed.cid, None, owner, out, commitment=sealed.commitment)
    raised = time.monotonic()
    victim = tmp_path / "victim"  # likely to get the output's descriptor number
    fd = os.open(victim, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        time.sleep(0.2)  # a writer still running would write meanwhile
    finally:
        os.close(fd)
    assert fired
    assert writes and max(writes) <= raised, "the writer wrote after open had raised"
    assert victim.stat().st_size == 0
    assert len(writes) < 8  # what was still queued was dropped, not written
    assert not vault_threads()
    victim.unlink()
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_an_interrupted_seal_stores_nothing_after_it_raised(tmp_path, owner, monkeypatch) -> None:
    store = FilesystemBlockstore(tmp_path / "store")
    vault = Vault(store, owner)
    puts: list[float] = []
    put = FilesystemBlockstore.put

    def slow(self, *args, **kwargs):
        time.sleep(0.02)
        try:
            return put(self, *args, **kwargs)
        finally:
            puts.append(time.monotonic())

    monkeypatch.setattr(FilesystemBlockstore, "put", slow)
    with interrupt_while_waiting_for("write") as fired, pytest.raises(Interrupted):
        vault.seal(os.urandom(24 * MIB))
    raised = time.monotonic()
    assert fired
    time.sleep(0.2)
    assert puts and max(puts) <= raised, "a writer stored a block after seal had raised"
    assert not vault_threads()
    store.gc()  # the gate is free, and nothing was pinned
    assert not list(store.pins())


def test_abort_waits_for_a_busy_worker_and_drops_what_is_queued() -> None:
    gate, busy = threading.Event(), threading.Event()
    taken: list[int] = []
    released: list[int] = []
    finished: list[bool] = []

    def drain(items) -> None:
        for item in items:
            taken.append(item)
            busy.set()
            gate.wait()
        finished.append(True)

    sink = _Sink(drain, "test", released.append, depth=8)
    for i in range(5):
        sink.put(i)
    assert busy.wait(10)  # the worker holds item 0 when the abort comes
    threading.Timer(0.1, gate.set).start()
    assert sink.abort() is None
    assert finished  # returned only once the worker had stopped
    assert taken == [0] and released == [0, 1, 2, 3, 4]


def test_an_interrupted_close_can_be_resumed_by_abort_which_returns_a_second_interrupt() -> None:
    gate = threading.Event()
    finished: list[bool] = []

    def drain(items) -> None:
        for _ in items:
            gate.wait()
        finished.append(True)

    sink = _Sink(drain, "stage", depth=4)
    sink.put(1)
    with interrupt_while_waiting_for("stage") as fired, pytest.raises(Interrupted):
        sink.close()
    assert fired and not finished  # the worker is still at its first item
    sent: list[bool] = []

    def interrupt_then_open() -> None:  # a second Ctrl-C while abort() waits, then the gate
        sent.append(True)
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)
        gate.set()

    def handler(signum, frame) -> None:
        raise Interrupted("second")

    old = signal.signal(signal.SIGUSR1, handler)
    timer = threading.Timer(0.05, interrupt_then_open)
    try:
        timer.start()
        try:
            got = sink.abort()
        finally:
            timer.join()  # its signal is handled here, not by the default action, if abort() was early
            gate.set()
    except Interrupted as exc:
        got = exc  # delivered after abort() had returned: it did not wait
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert sent and finished
    assert isinstance(got, Interrupted) and str(got) == "second"


def test_a_none_piece_in_an_iterable_source_is_an_error_not_its_end(tmp_path, owner) -> None:
    reader = _PieceReader([b"first part|", None, b"the rest"])
    buffer = memoryview(bytearray(64))
    assert reader.readinto(buffer) == 11
    with pytest.raises(InputValidationError):
        reader.readinto(buffer)
    vault = Vault(FilesystemBlockstore(tmp_path / "store"), owner)
    with pytest.raises(InputValidationError):  # a prefix of the input sealed as the whole of it
        vault.seal(iter([b"first part|", None, b"the rest"]))


def test_the_output_writer_keeps_a_descriptor_of_its_own(tmp_path) -> None:
    """Were the caller's descriptor closed under a writer that outlived it (a second
    interruption, vault/_threads.py), the writer's bytes still go to the temp file, never
    to the file the process opened next under the same number."""
    temp = tmp_path / "temp"
    fd = os.open(temp, os.O_RDWR | os.O_CREAT, 0o600)
    output = _output._Output(fd)
    os.close(fd)
    victim = os.open(tmp_path / "victim", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        assert victim == fd  # the number was reused, as in the real case
        output.write(memoryview(mmap.mmap(-1, 1 << 20)))
        output.close()
        output.close()  # again, as a cleanup after an interruption may
        assert os.fstat(victim).st_size == 0 and temp.stat().st_size == 1 << 20
    finally:
        os.close(victim)


def test_stop_all_runs_again_a_step_interrupted_at_its_entry_and_raises_afterwards() -> None:
    calls: list[str] = []

    def first() -> None:
        calls.append("first")
        if calls.count("first") == 1:
            raise Interrupted("at its first instruction")  # before its own wait began

    def second() -> None:
        calls.append("second")

    with pytest.raises(Interrupted, match="first instruction"):
        stop_all(first, second)
    assert calls == ["first", "first", "second"]


def _started_threads_fail_at(n: int, monkeypatch) -> None:
    start = threading.Thread.start
    count = [0]

    def failing(self) -> None:
        count[0] += 1
        if count[0] == n:
            raise Interrupted("while starting a thread")
        start(self)

    monkeypatch.setattr(threading.Thread, "start", failing)


def _threads_end(prefix: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [name for name in vault_threads() if name.startswith(prefix)]:
            return True
        time.sleep(0.01)
    return False


def test_a_sink_interrupted_while_starting_its_threads_ends_those_it_started(monkeypatch) -> None:
    _started_threads_fail_at(3, monkeypatch)
    with pytest.raises(Interrupted):
        _Sink(lambda items: [None for _ in items], "partial", depth=8, threads=4)
    assert _threads_end("vault-partial"), vault_threads()


def test_a_seal_interrupted_while_starting_its_threads_leaves_none(tmp_path, owner, monkeypatch) -> None:
    from vault._seal import WRITERS

    vault = Vault(FilesystemBlockstore(tmp_path / "store"), owner)
    _started_threads_fail_at(WRITERS + 1, monkeypatch)  # all the writers are running by then
    with pytest.raises(Interrupted):
        vault.seal(os.urandom(2 * MIB))
    assert _threads_end("vault-"), vault_threads()


def test_a_sink_built_unstarted_runs_no_thread_until_start_and_aborts_at_once() -> None:
    """Seal and open build their sinks unstarted and start them inside the try whose
    cleanup aborts them: an interruption between construction and assignment leaves
    nothing running."""
    seen: list[int] = []
    sink = _Sink(lambda items: seen.extend(items), "unstarted", depth=4, threads=2, start=False)
    assert not [name for name in vault_threads() if name.startswith("vault-unstarted")]
    assert sink.abort() is None  # nothing started: nothing to wait for
    started = _Sink(lambda items: seen.extend(items), "later", depth=4, start=False)
    started.start()
    started.put(7)
    started.close()
    assert seen == [7] and _threads_end("vault-later")
