"""SQL tables of the audit log (SQLModel; SQLite and PostgreSQL).

audit_heads     one row per org: last_seq, the counter that hands out seqs, and
                last_time. Appends increment it with UPDATE ... RETURNING inside the
                record's transaction, which serialises appenders (row lock on PostgreSQL,
                the write lock on SQLite) and rolls back with a failed insert, so seqs
                stay gapless; a record's time is max(clock, last_time), so time never
                decreases along seq and a time range is a seq range (see AuditLog.query).
audit_records   (org, seq) -> canonical JSON text + record_hash, plus copies of the
                queried fields (kind, actor, asset_id, version, time) with indexes for
                queries by asset, actor, kind and time range, paginated by seq.
audit_batches   (org, from_seq) -> to_seq, Merkle root, status pending | anchored,
                tx hash, block, batch index on chain, chain id, contract, attempts and
                the last error. A batch is written `pending` before its transaction is
                sent and is retried with the same range and root until anchored.
"""
from __future__ import annotations

from typing import Optional

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, String, Text
from sqlmodel import Field, SQLModel

PENDING = "pending"
ANCHORED = "anchored"


class AuditHeadRow(SQLModel, table=True):
    __tablename__ = "audit_heads"

    org: str = Field(sa_column=Column(String(42), primary_key=True))
    last_seq: int = Field(sa_column=Column(BigInteger, nullable=False, default=0))
    last_time: int = Field(sa_column=Column(BigInteger, nullable=False, default=0))


class AuditRecordRow(SQLModel, table=True):
    __tablename__ = "audit_records"
    __table_args__ = (
        Index("ix_audit_records_asset", "org", "asset_id", "seq"),
        Index("ix_audit_records_actor", "org", "actor", "seq"),
        Index("ix_audit_records_kind", "org", "kind", "seq"),
        Index("ix_audit_records_time", "org", "time", "seq"),
    )

    org: str = Field(sa_column=Column(String(42), primary_key=True))
    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    kind: str = Field(sa_column=Column(String(64), nullable=False))
    time: int = Field(sa_column=Column(BigInteger, nullable=False))
    actor: str = Field(sa_column=Column(String(256), nullable=False))
    asset_id: Optional[int] = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    version: Optional[int] = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    record_hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    canonical: str = Field(sa_column=Column(Text, nullable=False))


class AuditBatchRow(SQLModel, table=True):
    __tablename__ = "audit_batches"

    org: str = Field(sa_column=Column(String(42), primary_key=True))
    from_seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    to_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    root: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    last_error: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    tx_hash: Optional[str] = Field(default=None, sa_column=Column(String(66), nullable=True))
    block: Optional[int] = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    batch_index: Optional[int] = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    chain_id: Optional[int] = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    contract: Optional[str] = Field(default=None, sa_column=Column(String(42), nullable=True))
    anchored_at: Optional[int] = Field(default=None, sa_column=Column(BigInteger, nullable=True))


TABLES = (AuditHeadRow.__table__, AuditRecordRow.__table__, AuditBatchRow.__table__)
heads = AuditHeadRow.__table__
records = AuditRecordRow.__table__
batches = AuditBatchRow.__table__
