"""What one sync pass did (SyncReport) and the events it is made of. Each event is also
handed to the service's `on_event` callback the moment it happens (the CLI prints it)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

StopReason = Literal["revoked", "expired", "retired", "inactive", "no_grant"]


@dataclass(frozen=True)
class Materialised:
    """A version now complete at `path` (DIR/<asset>/<version>/<filename>). `lag_seconds`
    = materialised_at − the registration block's timestamp (whole seconds on chain; may be
    negative on a devnet whose clock was moved forward)."""

    asset_id: int
    version: int
    path: Path
    cid: str
    size: int
    lag_seconds: float
    sha256: str = ""
    timestamp: int = 0
    materialised_at: float = 0.0
    key_audit_seq: int | None = None
    consumption_audit_seq: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"event": "materialised", "asset_id": self.asset_id, "version": self.version, "path": str(self.path),
                "cid": self.cid, "size": self.size, "sha256": self.sha256, "lag_seconds": round(self.lag_seconds, 3),
                "timestamp": self.timestamp, "materialised_at": round(self.materialised_at, 3),
                "key_audit_seq": self.key_audit_seq, "consumption_audit_seq": self.consumption_audit_seq}


@dataclass(frozen=True)
class StoppedAsset:
    """The service stopped following `asset_id`: its SYNC grant is no longer in force.
    reason: revoked (also: SYNC withdrawn, grant replaced for another purpose), expired,
    retired (the owner retired the asset), inactive (owner or own org deactivated),
    no_grant (an asset asked for with --asset that this org holds no SYNC grant on)."""

    asset_id: int
    reason: StopReason
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"event": "stopped", "asset_id": self.asset_id, "reason": self.reason, "detail": self.detail}


@dataclass(frozen=True)
class Purged:
    """The local copies of a stopped asset were deleted (purge_on_revoke)."""

    asset_id: int
    versions: tuple[int, ...]
    path: Path

    def to_json(self) -> dict[str, Any]:
        return {"event": "purged", "asset_id": self.asset_id, "versions": list(self.versions), "path": str(self.path)}


@dataclass(frozen=True)
class SyncFailure:
    """Something failed for one asset/version (or for the pass, asset_id None); retried
    on the next pass. `reason` is the node's error code when there is one."""

    asset_id: int | None
    version: int | None
    reason: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"event": "error", "asset_id": self.asset_id, "version": self.version, "reason": self.reason,
                "message": self.message}

    def __str__(self) -> str:
        where = "" if self.asset_id is None else f"asset {self.asset_id}" + (
            f" version {self.version}" if self.version is not None else "") + ": "
        return where + self.message


Event = Materialised | StoppedAsset | Purged | SyncFailure


@dataclass
class SyncReport:
    materialised: list[Materialised] = field(default_factory=list)
    stopped: list[StoppedAsset] = field(default_factory=list)
    purged: list[Purged] = field(default_factory=list)
    errors: list[SyncFailure] = field(default_factory=list)
    following: list[int] = field(default_factory=list)  # assets followed after the pass

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(self, event: Event) -> None:
        {Materialised: self.materialised, StoppedAsset: self.stopped, Purged: self.purged,
         SyncFailure: self.errors}[type(event)].append(event)  # type: ignore[attr-defined]

    def to_json(self) -> dict[str, Any]:
        return {"materialised": [m.to_json() for m in self.materialised],
                "stopped": [s.to_json() for s in self.stopped], "purged": [p.to_json() for p in self.purged],
                "errors": [e.to_json() for e in self.errors], "following": list(self.following)}
