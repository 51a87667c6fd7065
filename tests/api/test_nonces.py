"""NonceStore: single use under concurrency, on SQLite and PostgreSQL (db_url fixture)."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from api.auth import NonceStore
from api.errors import InvalidFieldError, ReplayedNonceError
from ledger.db import make_engine

SIGNER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
OTHER = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
THREADS = 8


@pytest.fixture
def store(db_url):
    engine = make_engine(db_url)
    yield NonceStore(engine)
    engine.dispose()


def _race(store: NonceStore, calls: list[tuple[str, bytes]]) -> list[str]:
    """Run every consume() at once (a barrier releases them together); outcome per call."""
    barrier = threading.Barrier(len(calls))

    def attempt(call: tuple[str, bytes]) -> str:
        barrier.wait()
        try:
            store.consume(call[0], call[1], 2_000_000_000)
            return "ok"
        except ReplayedNonceError:
            return "replayed"

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(attempt, calls))


def test_same_nonce_raced_by_threads_is_accepted_exactly_once(store):
    for round_ in range(3):
        nonce = bytes([round_]) * 32
        outcomes = _race(store, [(SIGNER, nonce)] * THREADS)
        assert sorted(outcomes) == ["ok"] + ["replayed"] * (THREADS - 1)
        assert store.seen(SIGNER, nonce)


def test_distinct_nonces_all_accepted_concurrently(store):
    calls = [(SIGNER, bytes([i]) * 32) for i in range(THREADS)]
    assert _race(store, calls) == ["ok"] * THREADS


def test_nonces_are_per_signer(store):
    nonce = b"\x07" * 32
    store.consume(SIGNER, nonce, 10)
    store.consume(OTHER, nonce, 10)
    with pytest.raises(ReplayedNonceError):
        store.consume(SIGNER.lower(), nonce, 10)  # same address, other spelling


def test_prune(store):
    store.consume(SIGNER, b"\x01" * 32, 100)
    store.consume(SIGNER, b"\x02" * 32, 300)
    assert store.prune(200) == 1
    store.consume(SIGNER, b"\x01" * 32, 400)  # forgotten, hence usable again
    with pytest.raises(ReplayedNonceError):
        store.consume(SIGNER, b"\x02" * 32, 400)


def test_bad_values_are_input_errors(store):
    with pytest.raises(InvalidFieldError):
        store.consume("0x1234", b"\x01" * 32, 1)
    with pytest.raises(InvalidFieldError):
        store.consume(SIGNER, b"\x01" * 31, 1)
    with pytest.raises(InvalidFieldError):
        store.consume(SIGNER, b"\x01" * 32, -1)


def test_two_stores_on_one_database_share_nonces(db_url):
    """Two node replicas (two engines) on one database still accept a nonce once."""
    first, second = make_engine(db_url), make_engine(db_url)
    try:
        a, b = NonceStore(first), NonceStore(second)
        a.consume(SIGNER, b"\x09" * 32, 10)
        with pytest.raises(ReplayedNonceError):
            b.consume(SIGNER, b"\x09" * 32, 10)
    finally:
        first.dispose()
        second.dispose()
