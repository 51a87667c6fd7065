"""Send transactions from one local account: sign locally, price with EIP-1559 fees,
estimate gas with headroom, allocate nonces safely across threads, wait for receipts.

Nonces: a lock serialises "allocate nonce → sign → submit" and a locally tracked next
nonce lets many threads pipeline transactions from one account without asking the node
between sends. After any submit error (or "nonce too low") the next nonce is resynced
from the node's `pending` transaction count.

Several PROCESSES sending as one account (the worker processes of `twinledger serve
--workers N`) pass the same `nonce_lock` file: "allocate → sign → submit" then also holds
an exclusive flock on it, and the next nonce is read from the node's pending count each
time (another process may have used nonces since), so processes never race for a nonce —
racing, they exhaust the retries ("could not find a free nonce") and two identical
transactions at one nonce collapse into one hash ("already known").

Retries: only transient RPC failures (connection errors, timeouts, HTTP 429/5xx) are
retried, with exponential backoff. Re-submitting the *same signed bytes* is always safe
(same nonce, same hash); a transaction is re-signed under a new nonce only after its
hash was looked up and the node does not know it.
"""
from __future__ import annotations

import fcntl
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import requests
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import (
    ContractLogicError,
    ProviderConnectionError,
    RequestTimedOut,
    TimeExhausted,
    TooManyRequests,
    TransactionNotFound,
    Web3RPCError,
)
from web3.types import TxReceipt

from ledger import reverts
from ledger.errors import ReceiptTimeoutError, RpcError, TransactionError, TransientRpcError

T = TypeVar("T")

GAS_HEADROOM = 1.2
MIN_PRIORITY_FEE = 10**9  # 1 gwei
_NONCE_CONFLICT = ("nonce too low", "replacement transaction underpriced", "already used", "nonce has already")
_ALREADY_KNOWN = ("already known", "already imported", "known transaction")


def is_transient(exc: BaseException) -> bool:
    """True for failures worth retrying: connection problems, timeouts, HTTP 429 and 5xx."""
    if isinstance(exc, (requests.ConnectionError, requests.Timeout, ProviderConnectionError,
                        TooManyRequests, RequestTimedOut, TimeExhausted, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        return status == 429 or 500 <= status < 600
    return False


def _backoff_sleep(backoff: float, attempt: int) -> None:
    time.sleep(backoff * (2**attempt) * (0.5 + random.random() / 2))  # jittered exponential


def retrying(what: str, fn: Callable[[], T], *, retries: int = 3, backoff: float = 0.2) -> T:
    """Run `fn`; retry transient RPC failures up to `retries` times with backoff. A
    revert is raised as its named exception, another RPC error as RpcError."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except ContractLogicError as exc:
            raise reverts.from_web3(exc) from exc
        except Exception as exc:
            if not is_transient(exc):
                if isinstance(exc, Web3RPCError):
                    raise RpcError(f"{what}: {exc.message}") from exc
                raise
            if attempt == retries:
                raise TransientRpcError(f"{what} failed after {retries + 1} attempts: {exc}") from exc
            _backoff_sleep(backoff, attempt)
    raise AssertionError("unreachable")  # pragma: no cover


class _NonceConflict(Exception):
    pass


class TransactionSender:
    """Signs and sends transactions for `account` over `w3`; thread-safe."""

    def __init__(self, w3: Web3, account: LocalAccount, *, receipt_timeout: float = 60, retries: int = 3,
                 backoff: float = 0.2, poll_interval: float = 0.05,
                 min_priority_fee: int = MIN_PRIORITY_FEE, nonce_lock: Path | None = None) -> None:
        if retries < 0 or receipt_timeout <= 0:
            raise TransactionError("retries must be >= 0 and receipt_timeout > 0")
        self.w3 = w3
        self.account = account
        self.receipt_timeout = receipt_timeout
        self.retries = retries
        self.backoff = backoff
        self.poll_interval = poll_interval
        self.min_priority_fee = min_priority_fee
        self._lock = threading.Lock()
        self._next_nonce: int | None = None
        self._chain_id: int | None = None
        self.nonce_lock = nonce_lock  # a file every process sending as this account locks

    @property
    def address(self) -> str:
        return self.account.address

    # -- RPC helpers -------------------------------------------------------------------

    def call_rpc(self, what: str, fn: Callable[[], T]) -> T:
        """Run `fn`, retrying transient failures; reverts are raised decoded."""
        return retrying(what, fn, retries=self.retries, backoff=self.backoff)

    def _sleep(self, attempt: int) -> None:
        _backoff_sleep(self.backoff, attempt)

    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = self.call_rpc("eth_chainId", lambda: self.w3.eth.chain_id)
        return self._chain_id

    def fees(self) -> dict[str, int]:
        """EIP-1559 fees: the median tip of the last block (at least min_priority_fee) and
        a max fee covering two doublings of the next base fee."""
        history = self.call_rpc("eth_feeHistory", lambda: self.w3.eth.fee_history(1, "latest", [50]))
        base = int(history["baseFeePerGas"][-1])
        rewards = history.get("reward") or [[0]]
        tip = max(int(rewards[-1][0]) if rewards[-1] else 0, self.min_priority_fee)
        return {"maxPriorityFeePerGas": tip, "maxFeePerGas": 2 * base + tip}

    def estimate_gas(self, to: str | None, data: str, value: int = 0) -> int:
        call = {"from": self.address, "data": data, "value": value}
        if to is not None:
            call["to"] = to
        estimate = self.call_rpc("eth_estimateGas", lambda: self.w3.eth.estimate_gas(call))
        return int(estimate * GAS_HEADROOM)

    def resync_nonce(self) -> int:
        """Forget the local nonce and take the node's pending transaction count."""
        with self._lock:
            self._next_nonce = None
            return self._pending_nonce()

    def _pending_nonce(self) -> int:
        return self.call_rpc("eth_getTransactionCount",
                             lambda: self.w3.eth.get_transaction_count(self.address, "pending"))

    def _known(self, tx_hash: str) -> bool:
        try:
            self.w3.eth.get_transaction(tx_hash)
            return True
        except TransactionNotFound:
            return False
        except Exception as exc:
            if is_transient(exc):
                return False
            raise

    # -- sending -----------------------------------------------------------------------

    @contextmanager
    def _nonce_section(self) -> Iterator[None]:
        """Exclusive use of the account's nonces: among this sender's threads and, with a
        nonce_lock, among every process locking the same file."""
        with self._lock:
            if self.nonce_lock is None:
                yield
                return
            fd = os.open(self.nonce_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._next_nonce = None  # another process may have sent since we last held it
                yield
            finally:
                os.close(fd)  # drops the flock

    def submit(self, to: str | None, data: str, *, value: int = 0, gas: int | None = None) -> str:
        """Sign and submit; returns the transaction hash ("0x…") without waiting.
        Without `gas`, gas is estimated first (a revert is raised decoded here)."""
        if gas is None:
            gas = self.estimate_gas(to, data, value)
        fees = self.fees()
        chain_id = self.chain_id()
        with self._nonce_section():
            for _ in range(self.retries + 1):
                nonce = self._next_nonce if self._next_nonce is not None else self._pending_nonce()
                tx = {"type": 2, "chainId": chain_id, "nonce": nonce, "gas": gas, "value": value,
                      "data": data, **fees}
                if to is not None:
                    tx["to"] = to
                signed = self.account.sign_transaction(tx)
                try:
                    tx_hash = self._submit_signed(signed.raw_transaction, Web3.to_hex(signed.hash))
                except _NonceConflict:
                    self._next_nonce = None
                    continue
                except BaseException:
                    self._next_nonce = None
                    raise
                self._next_nonce = nonce + 1
                return tx_hash
        raise TransactionError(f"could not find a free nonce for {self.address} after {self.retries + 1} tries")

    def _submit_signed(self, raw: bytes, tx_hash: str) -> str:
        for attempt in range(self.retries + 1):
            try:
                self.w3.eth.send_raw_transaction(raw)
                return tx_hash
            except Web3RPCError as exc:
                message = (exc.message or str(exc)).lower()
                if any(s in message for s in _ALREADY_KNOWN):
                    return tx_hash
                if any(s in message for s in _NONCE_CONFLICT):
                    if self._known(tx_hash):  # our earlier attempt got in after all
                        return tx_hash
                    raise _NonceConflict(message) from exc
                if not is_transient(exc):
                    raise TransactionError(f"eth_sendRawTransaction rejected {tx_hash}: {exc.message}") from exc
                last: Exception = exc
            except Exception as exc:
                if not is_transient(exc):
                    raise
                last = exc
            # transient: it may have been accepted; look before sending the same bytes again
            self._sleep(attempt)
            if self._known(tx_hash):
                return tx_hash
        raise TransientRpcError(f"eth_sendRawTransaction failed after {self.retries + 1} attempts: {last}")

    def wait(self, tx_hash: str, timeout: float | None = None) -> TxReceipt:
        """The receipt of `tx_hash`; ReceiptTimeoutError if none within `timeout` seconds,
        the decoded revert if the transaction failed."""
        timeout = self.receipt_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        interval = self.poll_interval
        while True:
            try:
                receipt = self.w3.eth.get_transaction_receipt(tx_hash)
                break
            except TransactionNotFound:
                pass
            except Exception as exc:
                if not is_transient(exc):
                    raise
            if time.monotonic() >= deadline:
                raise ReceiptTimeoutError(f"no receipt for transaction {tx_hash} within {timeout:g}s")
            time.sleep(interval)
            interval = min(interval * 1.5, 1.0)
        if receipt["status"] != 1:
            raise self.call_rpc("replay", lambda: reverts.replay_revert(self.w3, tx_hash, receipt["blockNumber"]))
        return receipt

    def send(self, to: str | None, data: str, *, value: int = 0, gas: int | None = None) -> TxReceipt:
        """submit() then wait(): the receipt of a successful transaction."""
        return self.wait(self.submit(to, data, value=value, gas=gas))
