"""The event indexer: contracts' logs → database tables (DESIGN §6).

Model. The tables are a pure function of the contracts' logs in chain order
(block number, log index). Logs are fetched with eth_getLogs over the three contract
addresses in block ranges; each range is applied in ONE database transaction together
with the checkpoint update, so a crash leaves either the whole range or none of it.
Every applied log is recorded in `idx_processed_logs` keyed by (tx hash, log index):
applying a range twice is a no-op, and a restart resumes from the checkpoint.

Reorgs. The checkpoint keeps the hash of the last indexed block. If the chain no longer
has that block (hash differs or the chain is shorter), the indexer walks back over the
blocks it holds logs for until it finds one whose hash is still on the chain (the fork
point; all blocks below it are then unchanged, by the hash chain), deletes the logs
above it, replays the remaining stored logs into fresh tables (no RPC needed) and
re-indexes from there. `confirmations` keeps the indexer that many blocks behind the
head, so that on a chain with reorgs it rarely has to.

Read-your-writes. `wait_until_indexed(block)` returns once the checkpoint reaches
`block`: with a `run()` loop in the process it waits for it; without one it syncs itself
— unless the indexer is a `follower` (a node worker process whose sibling runs the
indexer loop on the same database, api/app.py): then it only polls the checkpoint, so
two processes never index at once.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

from sqlalchemy import delete, tuple_
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from web3 import Web3
from web3.exceptions import BlockNotFound, Web3RPCError

from ledger.deployment import Deployment
from ledger.errors import IndexerError
from ledger.indexer._apply import apply_event
from ledger.indexer._events import Event, EventDecoder, RawLog
from ledger.indexer.tables import (
    CHECKPOINT_ID,
    DERIVED_TABLES,
    INDEXER_METADATA,
    Checkpoint,
    ProcessedLog,
)

log = logging.getLogger(__name__)

_REPLAY_PAGE = 1000
FOLLOW_POLL_SECONDS = 0.02  # how often a follower re-reads the checkpoint while waiting


class _ChainMoved(Exception):
    """The chain changed under a range being fetched; the next sync handles the reorg."""


def _hex(value: bytes | str) -> str:
    if isinstance(value, str):
        return value.lower() if value.startswith("0x") else "0x" + value.lower()
    return "0x" + bytes(value).hex()


class Indexer:
    """Indexes one deployment's events into `engine`'s database.

    `batch_blocks` bounds each eth_getLogs range (and each DB transaction);
    `confirmations` keeps indexing that many blocks behind the chain head.
    `follower = True`: another process indexes this database; waits only poll it.
    """

    def __init__(self, w3: Web3, deployment: Deployment, engine: Engine, *, batch_blocks: int = 2000,
                 confirmations: int = 0) -> None:
        if batch_blocks < 1:
            raise IndexerError(f"batch_blocks must be >= 1, got {batch_blocks}")
        if confirmations < 0:
            raise IndexerError(f"confirmations must be >= 0, got {confirmations}")
        self._w3 = w3
        self._deployment = deployment
        self._engine = engine
        self.batch_blocks = batch_blocks
        self.confirmations = confirmations
        self._decoder = EventDecoder(deployment)
        self._contracts = ",".join(self._decoder.addresses)
        self._lock = threading.RLock()
        self._progress = threading.Condition()
        self._running = 0
        self._chain_checked = False
        self._tables_ready = False
        self._tables_lock = threading.Lock()
        self.follower = False

    # ------------------------------------------------------------------ setup

    def create_tables(self) -> None:
        """Create the indexer tables if missing and the checkpoint row if none."""
        INDEXER_METADATA.create_all(self._engine)
        with Session(self._engine) as session, session.begin():
            cp = session.get(Checkpoint, CHECKPOINT_ID)
            if cp is None:
                session.add(Checkpoint(id=CHECKPOINT_ID, chain_id=self._deployment.chain_id,
                                       contracts=self._contracts,
                                       deployment_block=self._deployment.deployment_block,
                                       last_block=self._deployment.deployment_block - 1))
            else:
                self._check_identity(cp)
        self._tables_ready = True

    def _ensure_tables(self) -> None:
        if self._tables_ready:
            return
        # The loop's thread and a reader (indexed_block) may both get here first; SQLite's
        # CREATE TABLE after a concurrent checkfirst fails with "table already exists".
        with self._tables_lock:
            if not self._tables_ready:
                self.create_tables()

    def rebuild(self) -> int:
        """Drop the indexer tables and re-index from the deployment block; returns the
        number of logs applied."""
        with self._lock:
            self._tables_ready = False
            INDEXER_METADATA.drop_all(self._engine)
            self.create_tables()
            return self.sync_once()

    def indexed_block(self) -> int:
        """The last block fully indexed (deployment_block - 1 before the first sync)."""
        self._ensure_tables()
        with Session(self._engine) as session:
            cp = session.get(Checkpoint, CHECKPOINT_ID)
            return self._deployment.deployment_block - 1 if cp is None else cp.last_block

    # ------------------------------------------------------------------ syncing

    def sync_once(self) -> int:
        """Index from the checkpoint up to head - confirmations; returns the number of
        logs newly applied. Handles a reorg first if the checkpoint block is gone."""
        with self._lock:
            self._ensure_tables()
            self._check_chain()
            self._handle_reorg()
            target = self._w3.eth.block_number - self.confirmations
            start = self.indexed_block() + 1
            applied = 0
            try:
                while start <= target:
                    end = min(start + self.batch_blocks - 1, target)
                    applied += self._index_range(start, end)
                    start = end + 1
            except _ChainMoved:
                log.warning("chain changed while indexing blocks from %d; will re-check on the next sync", start)
            finally:
                with self._progress:
                    self._progress.notify_all()
            return applied

    def index_range(self, from_block: int, to_block: int) -> int:
        """(Re-)apply the logs of blocks from_block..to_block in one transaction; logs
        already processed are skipped, so re-applying an indexed range changes nothing.
        `from_block` may not lie beyond the checkpoint + 1 (that would leave a gap)."""
        with self._lock:
            self._ensure_tables()
            if from_block < self._deployment.deployment_block or to_block < from_block:
                raise IndexerError(f"invalid block range {from_block}..{to_block} "
                                   f"(deployment block {self._deployment.deployment_block})")
            if from_block > self.indexed_block() + 1:
                raise IndexerError(f"range starts at {from_block}, after the checkpoint "
                                   f"{self.indexed_block()} + 1: it would leave a gap")
            try:
                return self._index_range(from_block, to_block)
            except _ChainMoved:
                raise IndexerError(f"the chain changed while fetching blocks {from_block}..{to_block}") from None

    def run(self, stop_event: threading.Event, poll_interval: float = 0.5) -> None:
        """Sync until `stop_event` is set. RPC and database failures are logged and
        retried with backoff; an IndexerError (wrong deployment, undecodable log) stops
        the loop and propagates."""
        self._running += 1
        backoff = poll_interval
        try:
            while not stop_event.is_set():
                try:
                    self.sync_once()
                    backoff = poll_interval
                except IndexerError:
                    log.exception("indexer stopped")
                    raise
                except Exception as exc:  # RPC / database outage: keep the node alive, retry
                    log.warning("indexer sync failed (%s: %s); retrying in %.1fs", type(exc).__name__, exc, backoff)
                    stop_event.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                stop_event.wait(poll_interval)
        finally:
            self._running -= 1
            with self._progress:
                self._progress.notify_all()

    def wait_until_indexed(self, block: int, timeout: float = 30.0) -> None:
        """Return once `block` is indexed; IndexerError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while True:
            indexed = self.indexed_block()
            if indexed >= block:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                cause = f"; last error: {last_error}" if last_error else ""
                raise IndexerError(f"block {block} not indexed within {timeout:g}s "
                                   f"(indexed up to {indexed}, confirmations {self.confirmations}){cause}")
            if self._running:
                with self._progress:
                    self._progress.wait(min(remaining, 0.5))
                continue
            if self.follower:  # the indexing process moves the checkpoint; never sync here
                time.sleep(min(remaining, FOLLOW_POLL_SECONDS))
                continue
            try:
                self.sync_once()
                last_error = None
            except IndexerError:
                raise
            except Exception as exc:
                last_error = exc
            if self.indexed_block() < block:
                time.sleep(min(max(remaining, 0), 0.05))

    # ------------------------------------------------------------------ internals

    def _apply_event(self, session: Session, event: Event) -> bool:
        """Apply one decoded event (overridable seam, e.g. for fault injection in tests)."""
        return apply_event(session, event)

    def _check_identity(self, cp: Checkpoint) -> None:
        if cp.chain_id != self._deployment.chain_id or cp.contracts != self._contracts:
            raise IndexerError(
                f"this database indexes chain {cp.chain_id} contracts {cp.contracts}, not chain "
                f"{self._deployment.chain_id} contracts {self._contracts}: use another database or rebuild()")

    def _check_chain(self) -> None:
        if not self._chain_checked:
            chain_id = self._w3.eth.chain_id
            if chain_id != self._deployment.chain_id:
                raise IndexerError(f"the RPC node serves chain {chain_id}, the deployment is on chain "
                                   f"{self._deployment.chain_id}")
            self._chain_checked = True

    def _block_hash(self, number: int) -> str | None:
        """The hash of block `number` on the chain now, None if the chain is shorter."""
        try:
            return _hex(self._w3.eth.get_block(number)["hash"])
        except BlockNotFound:
            return None

    def _index_range(self, start: int, end: int) -> int:
        try:
            parent_hash = _hex(self._w3.eth.get_block(start)["parentHash"])
        except BlockNotFound:
            raise _ChainMoved() from None
        end_hash = self._block_hash(end)
        raw = self._fetch_logs(start, end)
        if end_hash is None or self._block_hash(end) != end_hash:
            raise _ChainMoved()
        events = [self._decoder.decode(r) for r in raw]
        applied = 0
        with Session(self._engine) as session, session.begin():
            cp = session.get(Checkpoint, CHECKPOINT_ID, with_for_update=True)
            self._check_identity(cp)
            if start > cp.last_block + 1:
                raise IndexerError(f"checkpoint moved back to {cp.last_block} under range {start}..{end}")
            if start == cp.last_block + 1 and cp.last_block_hash not in (None, parent_hash):
                raise _ChainMoved()  # the range does not extend the chain indexed so far: a reorg
            done = self._already_processed(session, [e.log.key for e in events])
            for event in events:
                r = event.log
                if r.key in done:
                    continue
                session.add(ProcessedLog(
                    tx_hash=r.tx_hash, log_index=r.log_index, block_number=r.block_number,
                    block_hash=r.block_hash, block_timestamp=r.block_timestamp, address=r.address,
                    event=event.name, topics=",".join(r.topics), data=r.data))
                self._apply_event(session, event)
                applied += 1
            if end > cp.last_block:
                cp.last_block = end
                cp.last_block_hash = end_hash
        return applied

    @staticmethod
    def _already_processed(session: Session, keys: list[tuple[str, int]]) -> set[tuple[str, int]]:
        done: set[tuple[str, int]] = set()
        for i in range(0, len(keys), 400):
            rows = session.exec(select(ProcessedLog.tx_hash, ProcessedLog.log_index)
                                .where(tuple_(ProcessedLog.tx_hash, ProcessedLog.log_index).in_(keys[i:i + 400])))
            done.update((tx, index) for tx, index in rows)
        return done

    def _fetch_logs(self, start: int, end: int) -> list[RawLog]:
        """Logs of the three contracts in start..end, chain order, with block timestamps.
        A range the node refuses (too many results) is split in halves."""
        try:
            logs = self._w3.eth.get_logs({"fromBlock": start, "toBlock": end,
                                          "address": list(self._decoder.addresses)})
        except Web3RPCError:
            if start == end:
                raise
            middle = (start + end) // 2
            return self._fetch_logs(start, middle) + self._fetch_logs(middle + 1, end)
        timestamps: dict[int, int] = {}
        out = []
        for item in logs:
            number = int(item["blockNumber"])
            stamp = item.get("blockTimestamp")
            if stamp is not None:
                timestamps.setdefault(number, int(stamp, 16) if isinstance(stamp, str) else int(stamp))
            if number not in timestamps:
                timestamps[number] = int(self._w3.eth.get_block(number)["timestamp"])
            out.append(RawLog(
                block_number=number, block_hash=_hex(item["blockHash"]), block_timestamp=timestamps[number],
                tx_hash=_hex(item["transactionHash"]), log_index=int(item["logIndex"]),
                address=Web3.to_checksum_address(item["address"]),
                topics=tuple(_hex(t) for t in item["topics"]), data=_hex(item["data"])))
        out.sort(key=lambda r: (r.block_number, r.log_index))
        return out

    def _handle_reorg(self) -> None:
        with Session(self._engine) as session:
            cp = session.get(Checkpoint, CHECKPOINT_ID)
            last, stored = cp.last_block, cp.last_block_hash
        if last < self._deployment.deployment_block or stored is None:
            return
        if self._block_hash(last) == stored:
            return
        fork = self._fork_point(last)
        log.warning("reorg: indexed block %d is no longer on the chain; re-indexing from block %d", last, fork + 1)
        self._rewind(fork)

    def _fork_point(self, last: int) -> int:
        """The highest block we hold logs for whose hash is still on the chain."""
        with Session(self._engine) as session:
            rows = session.exec(
                select(ProcessedLog.block_number, ProcessedLog.block_hash)
                .where(ProcessedLog.block_number <= last)
                .group_by(ProcessedLog.block_number, ProcessedLog.block_hash)
                .order_by(ProcessedLog.block_number.desc())
            ).all()
        for number, block_hash in rows:
            if self._block_hash(number) == block_hash:
                return number
        return self._deployment.deployment_block - 1

    def _rewind(self, fork: int) -> None:
        """Drop logs above `fork` and rebuild the derived tables from the stored logs."""
        fork_hash = self._block_hash(fork) if fork >= 0 else None
        with Session(self._engine) as session, session.begin():
            cp = session.get(Checkpoint, CHECKPOINT_ID, with_for_update=True)
            session.exec(delete(ProcessedLog).where(ProcessedLog.block_number > fork))
            for table in DERIVED_TABLES:
                session.exec(delete(table))
            for event in self._stored_events(session):
                self._apply_event(session, event)
            cp.last_block = fork
            cp.last_block_hash = fork_hash

    def _stored_events(self, session: Session) -> Iterator[Event]:
        """The stored logs in chain order, decoded, fetched page by page (bounded memory)."""
        after = (-1, -1)
        while True:
            page = session.exec(
                select(ProcessedLog)
                .where((ProcessedLog.block_number > after[0])
                       | ((ProcessedLog.block_number == after[0]) & (ProcessedLog.log_index > after[1])))
                .order_by(ProcessedLog.block_number, ProcessedLog.log_index)
                .limit(_REPLAY_PAGE)
            ).all()
            if not page:
                return
            for row in page:
                yield self._decoder.decode(RawLog(
                    block_number=row.block_number, block_hash=row.block_hash,
                    block_timestamp=row.block_timestamp, tx_hash=row.tx_hash, log_index=row.log_index,
                    address=row.address, topics=tuple(row.topics.split(",")) if row.topics else (),
                    data=row.data))
            after = (page[-1].block_number, page[-1].log_index)
