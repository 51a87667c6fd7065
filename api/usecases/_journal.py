"""The publish journal: makes POST /v1/assets/{id}/versions idempotent under an
Idempotency-Key.

One row per (signer, key), written BEFORE the addVersion transaction is sent:

    signer, idem_key        who published, and the client's key (primary key)
    asset_id                decimal string (uint256)
    content_sha256          SHA-256 of the uploaded plaintext (a retry must carry the same bytes)
    parents                 JSON list of "assetId@version" (a retry must name the same parents)
    cid, commitment, size, ciphertext_size, profile   the sealed version (reused on retry)
    status                  "sealed" (tx not known to have landed) | "registered"
    version, tx_hash, block the registration, once known
    audit_seq               the asset_published record, once written
    created_at              unix ms

A retry finds the row: a registered one is answered from here; a sealed one is checked
against the chain (versionByCommitment) — if the transaction landed after all, the row is
completed from the index, else the same sealed version is registered now. Identical
re-uploads WITHOUT a key are distinct versions (each seal draws a fresh file key), so the
SDK always sends a key.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from sqlalchemy import BigInteger, Column, String, Text, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel

from api.errors import ConflictError
from ledger.models import VersionRef
from vault.vault import SealedVersion

SEALED = "sealed"
REGISTERED = "registered"


class PublishJournalRow(SQLModel, table=True):
    __tablename__ = "node_publish_journal"

    signer: str = Field(sa_column=Column(String(42), primary_key=True))
    idem_key: str = Field(sa_column=Column(String(128), primary_key=True))
    asset_id: str = Field(sa_column=Column(String(78), nullable=False))
    content_sha256: Optional[str] = Field(default=None, sa_column=Column(String(64), nullable=True))
    parents: str = Field(sa_column=Column(Text, nullable=False))
    cid: str = Field(sa_column=Column(Text, nullable=False))
    commitment: str = Field(sa_column=Column(String(66), nullable=False))
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    ciphertext_size: int = Field(sa_column=Column(BigInteger, nullable=False))
    profile: str = Field(sa_column=Column(String(32), nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    version: Optional[int] = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    tx_hash: Optional[str] = Field(default=None, sa_column=Column(String(66), nullable=True))
    block: Optional[int] = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    audit_seq: Optional[int] = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))


_T = PublishJournalRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class JournalEntry:
    signer: str
    key: str
    asset_id: int
    content_sha256: str | None
    parents: tuple[VersionRef, ...]
    sealed: SealedVersion
    status: str
    version: int | None
    tx_hash: str | None
    block: int | None
    audit_seq: int | None


def _refs_json(parents: tuple[VersionRef, ...]) -> str:
    return json.dumps([f"{p.asset_id}@{p.version}" for p in parents])


def _entry(row: Any) -> JournalEntry:
    m = row._mapping
    parents = tuple(VersionRef(int(a), int(v)) for a, v in (s.split("@") for s in json.loads(m["parents"])))
    sealed = SealedVersion(cid=m["cid"], commitment=bytes.fromhex(m["commitment"][2:]), size=m["size"],
                           ciphertext_size=m["ciphertext_size"], profile=m["profile"])
    return JournalEntry(signer=m["signer"], key=m["idem_key"], asset_id=int(m["asset_id"]),
                        content_sha256=m["content_sha256"], parents=parents, sealed=sealed, status=m["status"],
                        version=m["version"], tx_hash=m["tx_hash"], block=m["block"], audit_seq=m["audit_seq"])


class PublishJournal:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        _T.create(engine, checkfirst=True)

    def get(self, signer: str, key: str) -> JournalEntry | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(_T).where(_T.c.signer == signer, _T.c.idem_key == key)).first()
        return None if row is None else _entry(row)

    def add(self, signer: str, key: str, asset_id: int, content_sha256: str | None,
            parents: tuple[VersionRef, ...], sealed: SealedVersion, now_ms: int) -> JournalEntry:
        """Journal a sealed version before its transaction. A concurrent request with the
        same key that got here first wins; this one is a ConflictError."""
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(_T).values(
                    signer=signer, idem_key=key, asset_id=str(asset_id), content_sha256=content_sha256,
                    parents=_refs_json(parents), cid=sealed.cid, commitment="0x" + sealed.commitment.hex(),
                    size=sealed.size, ciphertext_size=sealed.ciphertext_size, profile=sealed.profile,
                    status=SEALED, created_at=now_ms))
        except IntegrityError:
            raise ConflictError(f"a publish with Idempotency-Key {key!r} is in progress; retry later",
                                reason="publish_in_progress") from None
        entry = self.get(signer, key)
        assert entry is not None
        return entry

    def reseal(self, entry: JournalEntry, sealed: SealedVersion) -> None:
        """Replace the sealed version of an entry whose transaction never landed (its
        blocks were lost): only allowed while the entry is still `sealed`."""
        self._update(entry, {"cid": sealed.cid, "commitment": "0x" + sealed.commitment.hex(), "size": sealed.size,
                             "ciphertext_size": sealed.ciphertext_size, "profile": sealed.profile},
                     only_if_sealed=True)

    def mark_registered(self, entry: JournalEntry, version: int, tx_hash: str, block: int) -> None:
        self._update(entry, {"status": REGISTERED, "version": version, "tx_hash": tx_hash, "block": block})

    def set_audit_seq(self, entry: JournalEntry, seq: int) -> None:
        self._update(entry, {"audit_seq": seq})

    def _update(self, entry: JournalEntry, values: dict[str, Any], *, only_if_sealed: bool = False) -> None:
        stmt = update(_T).where(_T.c.signer == entry.signer, _T.c.idem_key == entry.key)
        if only_if_sealed:
            stmt = stmt.where(_T.c.status == SEALED)
        with self.engine.begin() as conn:
            conn.execute(stmt.values(**values))
