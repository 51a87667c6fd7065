"""The sync checkpoint `DIR/.twinledger-sync/state.json`: what was materialised, with
which lag, and which assets are followed or stopped.

It is an optimisation and a report, not the truth: the directory layout is (see
_layout.py). On every pass the service reconciles the two — a version directory that
exists is done even if the checkpoint does not list it (killed between the commit rename
and the checkpoint write), a version the checkpoint lists whose directory is gone is
forgotten (and fetched again while the asset is followed).

Wire format (hand-written: a few fields, parsed strictly so that a damaged file is a
named error, not a KeyError). UTF-8 JSON, keys sorted, no insignificant whitespace,
written by temp file + fsync + rename + directory fsync:

    {"format": "twinledger-sync/1",                    version marker, first thing checked
     "org": "0x…" | null,                              the syncing org (a DIR serves one org)
     "assets": {"<asset id>": {
         "name": str | null, "filename": str | null,   asset name (on chain) and the file
                                                       name used inside each version dir
         "purpose": str,                               the SYNC grant's purpose
         "status": "new" | "following" | "stopped",
         "reason": null | "revoked" | "expired" | "retired" | "inactive" | "no_grant",
         "versions": {"<version>": {
             "cid": str | null, "size": int, "sha256": str | null,
             "timestamp": int | null,                  registration block time (unix s)
             "materialised_at": float | null,          unix s, the service's clock
             "lag_seconds": float | null}}}}}          materialised_at - timestamp

Null fields in a version entry mean "recovered from the directory after a crash": the
bytes are there, the metadata of the pass that wrote them was lost.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from services.sync.errors import SyncStateError

FORMAT = "twinledger-sync/1"
STATUSES = ("new", "following", "stopped")
REASONS = ("revoked", "expired", "retired", "inactive", "no_grant")
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,77}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


@dataclass
class VersionEntry:
    size: int
    cid: str | None = None
    sha256: str | None = None
    timestamp: int | None = None
    materialised_at: float | None = None
    lag_seconds: float | None = None


@dataclass
class AssetEntry:
    purpose: str = ""
    status: str = "new"
    reason: str | None = None
    name: str | None = None
    filename: str | None = None
    versions: dict[int, VersionEntry] = field(default_factory=dict)


@dataclass
class SyncState:
    org: str | None = None
    assets: dict[int, AssetEntry] = field(default_factory=dict)


def encode_state(state: SyncState) -> bytes:
    obj = {"format": FORMAT, "org": state.org, "assets": {
        str(asset_id): {
            "name": entry.name, "filename": entry.filename, "purpose": entry.purpose, "status": entry.status,
            "reason": entry.reason,
            "versions": {str(v): {"cid": e.cid, "size": e.size, "sha256": e.sha256, "timestamp": e.timestamp,
                                  "materialised_at": e.materialised_at, "lag_seconds": e.lag_seconds}
                         for v, e in entry.versions.items()}}
        for asset_id, entry in state.assets.items()}}
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def decode_state(data: bytes) -> SyncState:
    """The checkpoint in `data`; SyncStateError naming the first bad field otherwise."""
    try:
        obj = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise SyncStateError(f"sync checkpoint is not UTF-8 JSON: {exc}") from None
    _object(obj, "checkpoint", {"format", "org", "assets"})
    if obj["format"] != FORMAT:
        raise SyncStateError(f"sync checkpoint format is {obj['format']!r:.40}, expected {FORMAT!r}")
    org = obj["org"]
    if org is not None and not (isinstance(org, str) and _ADDRESS.fullmatch(org)):
        raise SyncStateError("sync checkpoint: org must be an address or null")
    assets = obj["assets"]
    if not isinstance(assets, dict):
        raise SyncStateError("sync checkpoint: assets must be an object")
    return SyncState(org=org, assets={_key(k, "asset id"): _asset(k, v) for k, v in assets.items()})


def _asset(key: str, obj: Any) -> AssetEntry:
    where = f"asset {key:.80}"
    _object(obj, where, {"name", "filename", "purpose", "status", "reason", "versions"})
    entry = AssetEntry(purpose=_text(obj["purpose"], f"{where} purpose"),
                       name=_opt(obj["name"], str, f"{where} name"),
                       filename=_opt(obj["filename"], str, f"{where} filename"))
    if obj["status"] not in STATUSES:
        raise SyncStateError(f"sync checkpoint: {where} status must be one of {', '.join(STATUSES)}")
    if obj["reason"] is not None and obj["reason"] not in REASONS:
        raise SyncStateError(f"sync checkpoint: {where} reason must be null or one of {', '.join(REASONS)}")
    entry.status, entry.reason = obj["status"], obj["reason"]
    versions = obj["versions"]
    if not isinstance(versions, dict):
        raise SyncStateError(f"sync checkpoint: {where} versions must be an object")
    for vkey, v in versions.items():
        version = _key(vkey, f"{where} version")
        if not 1 <= version < 2**32:
            raise SyncStateError(f"sync checkpoint: {where} version {version} out of range")
        vwhere = f"{where} version {version}"
        _object(v, vwhere, {"cid", "size", "sha256", "timestamp", "materialised_at", "lag_seconds"})
        entry.versions[version] = VersionEntry(
            size=_uint(v["size"], f"{vwhere} size"), cid=_opt(v["cid"], str, f"{vwhere} cid"),
            sha256=_opt(v["sha256"], str, f"{vwhere} sha256"),
            timestamp=None if v["timestamp"] is None else _uint(v["timestamp"], f"{vwhere} timestamp"),
            materialised_at=_opt_float(v["materialised_at"], f"{vwhere} materialised_at"),
            lag_seconds=_opt_float(v["lag_seconds"], f"{vwhere} lag_seconds"))
    return entry


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _object(obj: Any, where: str, keys: set[str]) -> None:
    if not isinstance(obj, dict):
        raise SyncStateError(f"sync checkpoint: {where} must be an object")
    if set(obj) != keys:
        missing, extra = sorted(keys - set(obj)), sorted(set(obj) - keys)
        raise SyncStateError(f"sync checkpoint: {where} has missing {missing} / unknown {str(extra)[:80]} fields")


def _key(text: str, what: str) -> int:
    if not _DECIMAL.fullmatch(text):
        raise SyncStateError(f"sync checkpoint: {what} {text!r:.40} is not a decimal number")
    return int(text)


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise SyncStateError(f"sync checkpoint: {what} must be a string")
    return value


def _opt(value: Any, kind: type, what: str) -> Any:
    if value is not None and not isinstance(value, kind):
        raise SyncStateError(f"sync checkpoint: {what} must be a {kind.__name__} or null")
    return value


def _uint(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SyncStateError(f"sync checkpoint: {what} must be an unsigned integer")
    return value


def _opt_float(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SyncStateError(f"sync checkpoint: {what} must be a finite number or null")
    return float(value)
