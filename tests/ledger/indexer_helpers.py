"""Helpers for the indexer tests: table dumps, CIDs, fresh indexers."""
from __future__ import annotations

import hashlib
import itertools

from sqlalchemy import select
from sqlalchemy.engine import Engine

from ledger.db import make_engine
from ledger.indexer import Indexer
from ledger.indexer.tables import ALL_TABLES

_counter = itertools.count(1)


def dump(engine: Engine) -> dict[str, list[tuple]]:
    """Every indexer table's rows as tuples, ordered by primary key (backend-neutral)."""
    out = {}
    with engine.connect() as conn:
        for model in ALL_TABLES:
            table = model.__table__
            rows = conn.execute(select(table).order_by(*table.primary_key.columns)).all()
            out[table.name] = [tuple(row) for row in rows]
    return out


def cid_v1(data: bytes) -> bytes:
    """Binary CIDv1, raw codec, sha2-256."""
    return b"\x01\x55\x12\x20" + hashlib.sha256(data).digest()


def cid_v0(data: bytes) -> bytes:
    """Binary CIDv0: a bare sha2-256 multihash."""
    return b"\x12\x20" + hashlib.sha256(data).digest()


def fresh_commitment() -> bytes:
    """A commitment never used before in this test session (the contract rejects reuse)."""
    return hashlib.sha256(b"commitment-%d" % next(_counter)).digest()


def synced(w3, deployment, url: str, **kwargs) -> tuple[Indexer, Engine]:
    """A new indexer on `url`, synced to the head."""
    engine = make_engine(url)
    indexer = Indexer(w3, deployment, engine, **kwargs)
    indexer.sync_once()
    return indexer, engine
