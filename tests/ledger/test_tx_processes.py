"""Transaction nonces of ONE account shared by several processes (the worker processes of
`twinledger serve --workers N` all send as the org): each process's TransactionSender
keeps its own next nonce and the others would make it stale; with a shared `nonce_lock`
they take turns — every transaction lands, none is lost, doubled or refused."""
from __future__ import annotations

import itertools
import multiprocessing
import threading
from pathlib import Path

import httpx
from eth_account import Account
from web3 import Web3

from ledger.tx import TransactionSender

PROCESSES = 2
THREADS = 3
PER_THREAD = 5
SINK = "0x000000000000000000000000000000000000dEaD"


def _sender_process(url: str, key: str, lock: str, base: int, go, results) -> None:
    """One 'worker': a sender whose local nonce the other process makes stale."""
    sender = TransactionSender(Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30})),
                               Account.from_key(key), nonce_lock=Path(lock))
    values = itertools.count(base)  # every transaction distinct (identical ones share a hash)
    hashes: list[str] = []
    errors: list[str] = []
    try:
        sender.send(SINK, "0x", value=next(values))  # caches this process's next nonce
        go.wait(60)

        def burst() -> None:
            for _ in range(PER_THREAD):
                try:
                    receipt = sender.send(SINK, "0x", value=next(values))
                    hashes.append(Web3.to_hex(receipt["transactionHash"]))
                except Exception as exc:  # reported, not raised: the parent asserts
                    errors.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=burst) for _ in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    results.put((hashes, errors))


def test_processes_sending_from_one_account_take_turns_with_nonces(w3, anvil, tmp_path):
    account = Account.create()
    answer = httpx.post(anvil.url, json={"jsonrpc": "2.0", "id": 1, "method": "anvil_setBalance",
                                         "params": [account.address, hex(10**21)]}, timeout=10)
    assert "error" not in answer.json()
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters, like uvicorn's workers
    go, results = ctx.Event(), ctx.Queue()
    lock = str(tmp_path / "tx.lock")
    procs = [ctx.Process(target=_sender_process, args=(anvil.url, account.key.hex(), lock, 1000 * (i + 1), go, results))
             for i in range(PROCESSES)]
    for p in procs:
        p.start()
    try:
        # every process has sent its first transaction before the burst
        _wait_nonce(w3, account.address, PROCESSES)
        go.set()
        outcomes = [results.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    errors = [e for _, errs in outcomes for e in errs]
    hashes = [h for hs, _ in outcomes for h in hs]
    assert errors == []
    assert len(hashes) == len(set(hashes)) == PROCESSES * THREADS * PER_THREAD
    assert w3.eth.get_transaction_count(account.address) == PROCESSES * (1 + THREADS * PER_THREAD)
    nonces = sorted(w3.eth.get_transaction(h)["nonce"] for h in hashes)
    assert len(set(nonces)) == len(nonces)


def _wait_nonce(w3, address: str, count: int) -> None:
    import time

    deadline = time.monotonic() + 120
    while w3.eth.get_transaction_count(address) < count:
        assert time.monotonic() < deadline, "the sender processes did not start"
        time.sleep(0.1)
