"""AuditLog: an org node's append-only audit log in SQL (SQLite or PostgreSQL).

`append` hands out the next seq and commits the record before it returns (the key
release path writes its record before the key leaves the node). Seqs are gapless under
concurrency: the per-org counter row in audit_heads is incremented with
UPDATE ... RETURNING in the same transaction as the INSERT, so appenders queue on that
row (PostgreSQL row lock / SQLite write lock) and a failed insert rolls the increment back.
Within one process, concurrent appends are group-committed (ledger/audit/_append.py, _group.py): one
transaction takes the counter once for the whole batch and inserts its records together.

`append_claimed` ties a record to a unique row written in the same transaction — the key
release path's request nonce: if the row is new, the record is appended as given; if it
already exists (a replay), the `fallback` record is appended instead. Either way the
nonce and the record commit or roll back together, so a crash can never consume a nonce
without its record.

Batches (audit_batches) are the ledger's side of anchoring; ledger/audit/anchoring.py
drives them, ledger/audit/verify.py checks them.
"""
from __future__ import annotations

import time as _time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, NamedTuple

from eth_utils import is_address, to_checksum_address
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel

from ledger.audit import _tables as t
from ledger.audit._append import Appender, Claim, Entry, _row
from ledger.audit.merkle import AuditTree
from ledger.audit.proof import AuditProof
from ledger.audit.reasons import Reason, error
from ledger.audit.records import AuditRecord, normalise_kind, parse
from ledger.errors import AuditError

MAX_PAGE = 1000
_CHUNK = 10_000


def system_clock_ms() -> int:
    return _time.time_ns() // 1_000_000


class RawRecord(NamedTuple):
    """A stored row as it is: the verifier trusts none of it."""

    seq: int
    canonical: str
    record_hash: bytes


@dataclass(frozen=True)
class Page:
    records: list[AuditRecord]
    next_after_seq: int | None  # pass as after_seq for the next page; None = last page


@dataclass(frozen=True)
class AuditBatch:
    org: str
    from_seq: int
    to_seq: int
    root: bytes
    status: str  # "pending" | "anchored"
    created_at: int
    attempts: int = 0
    last_error: str | None = None
    tx_hash: str | None = None
    block: int | None = None
    batch_index: int | None = None
    chain_id: int | None = None
    contract: str | None = None
    anchored_at: int | None = None

    @property
    def anchored(self) -> bool:
        return self.status == t.ANCHORED


class AuditLog:
    """The audit log of `org` (an Ethereum address) in the database behind `engine`."""

    def __init__(self, engine: Engine, org: str, *, clock: Callable[[], int] = system_clock_ms,
                 create_tables: bool = True) -> None:
        if not isinstance(org, str) or not is_address(org):
            raise AuditError(f"audit log org must be an address, got {org!r}")
        self.engine = engine
        self.org = to_checksum_address(org)
        self.clock = clock
        self._trees: dict[tuple[int, int], AuditTree] = {}
        self._appender = Appender(engine, self.org, lambda: self.clock())
        if create_tables:
            SQLModel.metadata.create_all(engine, tables=list(t.TABLES))
        self._ensure_head()

    def _ensure_head(self) -> None:
        with self.engine.begin() as conn:
            if conn.execute(select(t.heads.c.org).where(t.heads.c.org == self.org)).first():
                return
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(t.heads).values(org=self.org, last_seq=0, last_time=0))
        except IntegrityError:
            pass  # another process created it first

    # -- writing -------------------------------------------------------------------------

    def append(self, kind: str, actor: str, asset_id: int | None = None, version: int | None = None,
               details: Mapping[str, Any] | None = None) -> AuditRecord:
        """Log one event under the next seq and commit before returning it."""
        normalise_kind(kind)  # validate before joining a batch
        return self._appender.submit(Entry(kind, actor, asset_id, version, details))[0]

    def append_claimed(self, entry: Entry, claim: Claim, fallback: Entry) -> tuple[AuditRecord, bool]:
        """Insert `claim.row` and log `entry` in one transaction; if the row already
        exists, log `fallback` instead. Returns (the committed record, whether the claim
        was new)."""
        normalise_kind(entry.kind)
        normalise_kind(fallback.kind)
        return self._appender.submit(entry, claim, fallback)

    def close(self) -> None:
        """Release the append connection (appending later opens a new one)."""
        self._appender.close()

    # -- reading -------------------------------------------------------------------------

    def last_seq(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(t.heads.c.last_seq).where(t.heads.c.org == self.org)).scalar_one()

    def get(self, seq: int) -> AuditRecord:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.records.c.canonical).where(
                t.records.c.org == self.org, t.records.c.seq == seq)).first()
        if row is None:
            raise AuditError(f"no audit record {seq} for {self.org}")
        return _parse_stored(row.canonical, seq, self.org)

    def query(self, *, asset_id: int | None = None, actor: str | None = None, kind: str | None = None,
              since: int | None = None, until: int | None = None, after_seq: int | None = None,
              limit: int = 100) -> Page:
        """Records matching every given filter, ascending by seq. `since` (inclusive) and
        `until` (exclusive) are unix ms; page with `after_seq=page.next_after_seq`."""
        if not 1 <= limit <= MAX_PAGE:
            raise AuditError(f"limit must be 1..{MAX_PAGE}, got {limit}")
        c = t.records.c
        stmt = select(c.canonical, c.seq).where(c.org == self.org)
        if asset_id is not None:
            stmt = stmt.where(c.asset_id == asset_id)
        if actor is not None:
            stmt = stmt.where(c.actor == actor)
        if kind is not None:
            stmt = stmt.where(c.kind == str(normalise_kind(kind)))
        if after_seq is not None:
            stmt = stmt.where(c.seq > after_seq)
        with self.engine.connect() as conn:
            # Time never decreases along seq (append enforces it), so a time range is a
            # seq range: bound seq too, which lets the database walk the (org, kind|asset|
            # actor, seq) index from the right place instead of filtering from seq 1.
            # The time range then becomes ONLY a seq range: with the time predicates left
            # in, PostgreSQL picked the time index for "kind X in this day" and filtered a
            # whole day of rows (17 ms over 1M records) instead of walking (org, kind, seq).
            if since is not None:
                start = self._first_seq_at(conn, since)
                if start is None:
                    return Page([], None)
                stmt = stmt.where(c.seq >= start)
            if until is not None:
                end = self._first_seq_at(conn, until)
                if end is not None:  # else every record is older than `until`
                    stmt = stmt.where(c.seq < end)
            rows = conn.execute(stmt.order_by(c.seq).limit(limit)).all()
        records = [_parse_stored(r.canonical, r.seq, self.org) for r in rows]
        return Page(records, rows[-1].seq if len(rows) == limit else None)

    def _first_seq_at(self, conn: Any, at: int) -> int | None:
        """The first seq whose time is >= `at` (index (org, time, seq)); None if none."""
        c = t.records.c
        return conn.execute(select(c.seq).where(c.org == self.org, c.time >= at)
                            .order_by(c.time, c.seq).limit(1)).scalar()

    def iter_raw(self, from_seq: int = 1, to_seq: int | None = None) -> Iterator[RawRecord]:
        """Stored rows in seq order, streamed in chunks (bounded memory)."""
        c = t.records.c
        cursor = from_seq - 1
        while True:
            stmt = select(c.seq, c.canonical, c.record_hash).where(c.org == self.org, c.seq > cursor)
            if to_seq is not None:
                stmt = stmt.where(c.seq <= to_seq)
            with self.engine.connect() as conn:
                rows = conn.execute(stmt.order_by(c.seq).limit(_CHUNK)).all()
            for r in rows:
                yield RawRecord(r.seq, r.canonical, bytes(r.record_hash))
            if len(rows) < _CHUNK:
                return
            cursor = rows[-1].seq

    def leaf_entries(self, from_seq: int, to_seq: int) -> list[tuple[int, bytes]]:
        """(seq, stored record_hash) for from_seq..to_seq, the input of a batch tree."""
        # The DB-API cursor directly: SQLAlchemy's row processing costs ~4x the query
        # itself for a 100k-record batch (see benchmarks/audit.py).
        ph = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        sql = (f"SELECT seq, record_hash FROM audit_records WHERE org = {ph} AND seq >= {ph} AND seq <= {ph} "
               "ORDER BY seq")
        with self.engine.connect() as conn:
            cursor = conn.connection.cursor()
            try:
                cursor.execute(sql, (self.org, from_seq, to_seq))
                rows = cursor.fetchall()
            finally:
                cursor.close()
        return [(s, h if type(h) is bytes else bytes(h)) for s, h in rows]

    def record_time(self, seq: int) -> int | None:
        with self.engine.connect() as conn:
            return conn.execute(select(t.records.c.time).where(
                t.records.c.org == self.org, t.records.c.seq == seq)).scalar()

    # -- batches -------------------------------------------------------------------------

    def batches(self, status: str | None = None) -> list[AuditBatch]:
        stmt = select(t.batches).where(t.batches.c.org == self.org)
        if status is not None:
            stmt = stmt.where(t.batches.c.status == status)
        with self.engine.connect() as conn:
            return [_batch(r) for r in conn.execute(stmt.order_by(t.batches.c.from_seq)).all()]

    def batched_seq(self) -> int:
        """The last seq covered by any batch, pending or anchored (0 if none)."""
        with self.engine.connect() as conn:
            return conn.execute(select(func.coalesce(func.max(t.batches.c.to_seq), 0))
                                .where(t.batches.c.org == self.org)).scalar_one()

    def add_batch(self, from_seq: int, to_seq: int, root: bytes) -> AuditBatch:
        """Record a pending batch. It must start right after the last batch."""
        expected = self.batched_seq() + 1
        if from_seq != expected or to_seq < from_seq or to_seq > self.last_seq():
            raise AuditError(f"batch {from_seq}..{to_seq} does not follow the log (next batch starts at "
                             f"{expected}, last seq {self.last_seq()})")
        now = int(self.clock())
        with self.engine.begin() as conn:
            conn.execute(insert(t.batches).values(org=self.org, from_seq=from_seq, to_seq=to_seq, root=root,
                                                  status=t.PENDING, created_at=now, attempts=0))
        return self.batch(from_seq)

    def batch(self, from_seq: int) -> AuditBatch:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.batches).where(t.batches.c.org == self.org,
                                                       t.batches.c.from_seq == from_seq)).first()
        if row is None:
            raise AuditError(f"no audit batch starting at {from_seq}")
        return _batch(row)

    def batch_for(self, seq: int) -> AuditBatch | None:
        c = t.batches.c
        with self.engine.connect() as conn:
            row = conn.execute(select(t.batches).where(c.org == self.org, c.from_seq <= seq, c.to_seq >= seq)
                               .order_by(c.from_seq.desc()).limit(1)).first()
        return _batch(row) if row is not None else None

    def note_attempt(self, from_seq: int, error_text: str | None, *, count: bool = True) -> None:
        """Count a send attempt of a pending batch and/or record its error."""
        values: dict[str, Any] = {"last_error": error_text}
        if count:
            values["attempts"] = t.batches.c.attempts + 1
        with self.engine.begin() as conn:
            conn.execute(update(t.batches).where(t.batches.c.org == self.org, t.batches.c.from_seq == from_seq)
                         .values(**values))

    def mark_anchored(self, from_seq: int, *, tx_hash: str, block: int, batch_index: int, chain_id: int,
                      contract: str) -> AuditBatch:
        with self.engine.begin() as conn:
            conn.execute(update(t.batches).where(t.batches.c.org == self.org, t.batches.c.from_seq == from_seq)
                         .values(status=t.ANCHORED, tx_hash=tx_hash, block=block, batch_index=batch_index,
                                 chain_id=chain_id, contract=to_checksum_address(contract),
                                 anchored_at=int(self.clock()), last_error=None))
        return self.batch(from_seq)

    # -- proofs --------------------------------------------------------------------------

    def tree(self, batch: AuditBatch) -> AuditTree:
        """The Merkle tree of `batch` rebuilt from the stored hashes (last few cached)."""
        key = (batch.from_seq, batch.to_seq)
        tree = self._trees.get(key)
        if tree is None:
            tree = AuditTree.build(self.leaf_entries(batch.from_seq, batch.to_seq))
            if tree.to_seq != batch.to_seq:
                raise error(Reason.MISSING_RECORD, f"records of batch {batch.from_seq}..{batch.to_seq} are missing")
            if len(self._trees) >= 4:
                self._trees.pop(next(iter(self._trees)))
            self._trees[key] = tree
        if tree.root != batch.root:
            raise error(Reason.BATCH_ROOT_MISMATCH, f"stored records of batch {batch.from_seq}..{batch.to_seq} "
                                                    "no longer give its anchored root")
        return tree

    def proof(self, seq: int) -> AuditProof:
        """The inclusion proof of record `seq` in its anchored batch."""
        batch = self.batch_for(seq)
        if batch is None or not batch.anchored:
            raise AuditError(f"audit record {seq} of {self.org} is not anchored yet")
        tree = self.tree(batch)
        raw = next(self.iter_raw(seq, seq), None)
        if raw is None:
            raise error(Reason.MISSING_RECORD, f"audit record {seq} is missing")
        return AuditProof(
            record=raw.canonical, record_hash=raw.record_hash, seq=seq, leaf=tree.leaf(seq),
            proof=tuple(tree.proof(seq)), root=tree.root, from_seq=batch.from_seq, to_seq=batch.to_seq,
            batch_index=batch.batch_index, tx_hash=bytes.fromhex(batch.tx_hash.removeprefix("0x")),
            block=batch.block, org=self.org, chain_id=batch.chain_id, contract=batch.contract,
        )


def _parse_stored(canonical: str, seq: int, org: str) -> AuditRecord:
    """A stored row's record; a row that no longer parses as a canonical record (edited in
    the database) is named by its seq instead of failing a whole listing anonymously."""
    try:
        return parse(canonical)
    except AuditError as exc:
        raise error(Reason.MALFORMED, f"stored audit record {seq} of {org} is not a valid canonical record "
                                      f"({exc}); the log was altered — run `twinledger audit verify --all`") from None


def record_row(record: AuditRecord) -> dict[str, Any]:
    """The audit_records row of `record` (for bulk loaders such as benchmarks/audit.py)."""
    return _row(record)


def _batch(row: Any) -> AuditBatch:
    m = row._mapping
    return AuditBatch(org=m["org"], from_seq=m["from_seq"], to_seq=m["to_seq"], root=bytes(m["root"]),
                      status=m["status"], created_at=m["created_at"], attempts=m["attempts"],
                      last_error=m["last_error"], tx_hash=m["tx_hash"], block=m["block"],
                      batch_index=m["batch_index"], chain_id=m["chain_id"], contract=m["contract"],
                      anchored_at=m["anchored_at"])


__all__ = ["AuditBatch", "AuditLog", "Claim", "Entry", "Page", "RawRecord", "record_row", "system_clock_ms"]
