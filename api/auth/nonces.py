"""Single-use request nonces, atomically, on SQLite and PostgreSQL.

Atomicity comes from the database, not from a lock in this process: (signer, nonce) is
the primary key, and `consume` is one INSERT in its own transaction. Two concurrent
requests with the same nonce — in threads, processes or several node replicas sharing a
PostgreSQL — race on the unique index; exactly one commits, the other gets a unique
violation, reported as ReplayedNonceError.

Key release consumes its nonce differently: `claim()` returns the row as a
ledger.audit.Claim, which the audit log inserts (ON CONFLICT DO NOTHING) in the same
transaction as the release's record — a replay then gets the replayed_nonce record
instead, and a nonce is never consumed without its record.

Rows expire with the request deadline: once `deadline` has passed the request is refused
for its deadline anyway, so `prune(now)` may forget it.
"""
from __future__ import annotations

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel

from api.auth._fields import hex0x, parse_address, parse_bytes32, parse_uint
from api.errors import ReplayedNonceError
from ledger.audit.log import Claim


class UsedNonce(SQLModel, table=True):
    """A nonce some signer has used; kept until `expires_at` (unix seconds)."""

    __tablename__ = "auth_used_nonces"

    signer: str = Field(primary_key=True, max_length=42)  # checksummed 0x address
    nonce: str = Field(primary_key=True, max_length=66)  # 0x + 64 hex
    expires_at: int = Field(index=True)


_TABLE = UsedNonce.__table__  # type: ignore[attr-defined]


class NonceStore:
    """Remembers used (signer, nonce) pairs in the node database."""

    def __init__(self, engine: Engine, *, create: bool = True) -> None:
        self.engine = engine
        if create:
            _TABLE.create(engine, checkfirst=True)

    def claim(self, signer: str, nonce: bytes, expires_at: int) -> Claim:
        """The nonce's row, for an audit append that consumes it (AuditLog.append_claimed)."""
        return Claim(_TABLE, {
            "signer": parse_address(signer, "signer"),
            "nonce": hex0x(parse_bytes32(nonce, "nonce")),
            "expires_at": parse_uint(expires_at, 64, "expires_at"),
        })

    def consume(self, signer: str, nonce: bytes, expires_at: int) -> None:
        """Record the nonce as used, or raise ReplayedNonceError if it already was."""
        row = self.claim(signer, nonce, expires_at).row
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(_TABLE).values(**row))
        except IntegrityError:
            raise ReplayedNonceError(f"nonce {row['nonce']} was already used by {row['signer']}") from None

    def seen(self, signer: str, nonce: bytes) -> bool:
        with self.engine.connect() as conn:
            query = select(_TABLE.c.signer).where(_TABLE.c.signer == parse_address(signer, "signer"),
                                                  _TABLE.c.nonce == hex0x(parse_bytes32(nonce, "nonce")))
            return conn.execute(query).first() is not None

    def prune(self, now: int) -> int:
        """Forget nonces whose request deadline is before `now`; returns how many."""
        with self.engine.begin() as conn:
            return conn.execute(delete(_TABLE).where(_TABLE.c.expires_at < int(now))).rowcount
