"""Values the SDK returns, parsed from the node's JSON (docs/api.md) and validated.

Anything a node says that the SDK acts on (a version record, a key answer) is parsed
strictly here: a malformed field is an UntrustedAnswerError naming it. Listings the SDK
only passes through (catalog pages, grants, lineage, PROV) stay plain JSON dicts.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from api.auth.eip712 import KeyReceipt
from api.errors import InvalidFieldError, UntrustedAnswerError
from ledger.models import AssetKind, Permission, VersionRef

_REF = re.compile(r"\s*([0-9]{1,78})\s*@\s*([0-9]{1,10})\s*")
_HEX32 = re.compile(r"0x[0-9a-fA-F]{64}")


def parse_ref(text: str, field_name: str = "parent") -> VersionRef:
    """"ASSET@VERSION" → VersionRef (InvalidFieldError otherwise)."""
    m = _REF.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise InvalidFieldError(field_name, f"must be ASSET@VERSION (e.g. 12@3), got {text!r}")
    asset, version = int(m.group(1)), int(m.group(2))
    if version < 1 or version >= 2**32 or asset >= 2**256:
        raise InvalidFieldError(field_name, f"asset or version out of range in {text!r}")
    return VersionRef(asset, version)


def ref_text(ref: VersionRef | str) -> str:
    if isinstance(ref, str):
        ref = parse_ref(ref)
    return f"{ref.asset_id}@{ref.version}"


def permission_names(permissions: Permission | int | str | Iterable[Permission | str]) -> list[str]:
    """["READ", "SYNC", ...] from a Permission flag, "read,sync", or a list of names/flags."""
    if isinstance(permissions, str):
        permissions = [p for p in permissions.split(",") if p.strip()]
    if isinstance(permissions, int):
        flag = Permission(permissions)
    else:
        flag = Permission(0)
        for item in permissions:
            if isinstance(item, str):
                name = item.strip().upper()
                if name not in Permission.__members__:
                    raise InvalidFieldError("permissions", f"unknown permission {item!r} (read, sync, compute)")
                flag |= Permission[name]
            else:
                flag |= Permission(item)
    if not flag:
        raise InvalidFieldError("permissions", "at least one of read, sync, compute is required")
    return [p.name for p in Permission if p in flag]  # type: ignore[misc]


def asset_kind(kind: AssetKind | str) -> str:
    """"model" | "dataset" | "report" | "other"."""
    if isinstance(kind, AssetKind):
        return kind.name.lower()
    if isinstance(kind, str) and kind.upper() in AssetKind.__members__:
        return kind.lower()
    raise InvalidFieldError("kind", f"must be one of model, dataset, report, other; got {kind!r}")


# -- strict parsing of node answers -----------------------------------------------------------


def _bad(what: str, problem: str) -> UntrustedAnswerError:
    return UntrustedAnswerError(f"the node's answer is malformed: {what} {problem}")


def field_of(obj: Mapping[str, Any], name: str, what: str) -> Any:
    if not isinstance(obj, Mapping):
        raise _bad(what, "is not a JSON object")
    if name not in obj:
        raise _bad(what, f"lacks {name!r}")
    return obj[name]


def uint(value: Any, what: str) -> int:
    """An unsigned integer given as a JSON number or a decimal string."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(what, f"must be an unsigned integer, got {value!r:.60}")
    return value


def hex32(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not _HEX32.fullmatch(value):
        raise _bad(what, "must be 0x + 64 hex digits")
    return bytes.fromhex(value[2:])


def parent_ref(value: Any, what: str) -> VersionRef:
    """A lineage parent as "A@V", {"asset_id", "version"} or [A, V]."""
    if isinstance(value, str):
        try:
            return parse_ref(value)
        except InvalidFieldError:
            raise _bad(what, f"is not ASSET@VERSION: {value!r:.60}") from None
    if isinstance(value, Mapping):
        return VersionRef(uint(field_of(value, "asset_id", what), what), uint(field_of(value, "version", what), what))
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return VersionRef(uint(value[0], what), uint(value[1], what))
    raise _bad(what, f"is not a version reference: {value!r:.60}")


@dataclass(frozen=True)
class VersionInfo:
    """One asset version as registered on chain (the fields of its on-chain digest)."""

    asset_id: int
    version: int
    cid: str
    commitment: bytes
    size: int
    parents: tuple[VersionRef, ...]
    author: str
    timestamp: int
    block: int | None = None
    tx_hash: str | None = None

    @classmethod
    def from_json(cls, obj: Any) -> "VersionInfo":
        what = "version record"
        parents = field_of(obj, "parents", what)
        if not isinstance(parents, list):
            raise _bad(what, "parents must be a list")
        author = field_of(obj, "author", what)
        if not isinstance(author, str):
            raise _bad(what, "author must be an address")
        cid = field_of(obj, "cid", what)
        if not isinstance(cid, str):
            raise _bad(what, "cid must be a string")
        block = obj.get("block")
        tx_hash = obj.get("tx_hash")
        return cls(
            asset_id=uint(field_of(obj, "asset_id", what), "asset_id"),
            version=uint(field_of(obj, "version", what), "version"),
            cid=cid,
            commitment=hex32(field_of(obj, "commitment", what), "commitment"),
            size=uint(field_of(obj, "size", what), "size"),
            parents=tuple(parent_ref(p, "parent") for p in parents),
            author=author,
            timestamp=uint(field_of(obj, "timestamp", what), "timestamp"),
            block=uint(block, "block") if block is not None else None,
            tx_hash=tx_hash if isinstance(tx_hash, str) else None,
        )

    def to_json(self) -> dict[str, Any]:
        return {"asset_id": self.asset_id, "version": self.version, "cid": self.cid,
                "commitment": "0x" + self.commitment.hex(), "size": self.size,
                "parents": [ref_text(p) for p in self.parents], "author": self.author,
                "timestamp": self.timestamp, "block": self.block, "tx_hash": self.tx_hash}


@dataclass(frozen=True)
class Published:
    """What `publish` registered (created=False: the node already had this content)."""

    asset_id: int
    version: int
    cid: str
    commitment: str
    size: int
    parents: tuple[str, ...]
    tx_hash: str | None
    block: int | None
    audit_seq: int | None
    created: bool

    @classmethod
    def from_json(cls, obj: Any, *, created: bool) -> "Published":
        what = "publish answer"
        parents = (obj.get("parents") or []) if isinstance(obj, Mapping) else []
        audit_seq = obj.get("audit_seq") if isinstance(obj, Mapping) else None
        commitment = field_of(obj, "commitment", what)
        hex32(commitment, "commitment")
        return cls(
            asset_id=uint(field_of(obj, "asset_id", what), "asset_id"),
            version=uint(field_of(obj, "version", what), "version"),
            cid=str(field_of(obj, "cid", what)),
            commitment=commitment,
            size=uint(field_of(obj, "size", what), "size"),
            parents=tuple(ref_text(parent_ref(p, "parent")) for p in parents),
            tx_hash=obj.get("tx_hash"),
            block=obj.get("block"),
            audit_seq=audit_seq if isinstance(audit_seq, int) else None,
            created=created,
        )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["parents"] = list(self.parents)
        return out


@dataclass(frozen=True)
class Consumed:
    """The result of `get`: the verified plaintext at `path`, the owner's signed receipt,
    the owner's audit record of the release and the own node's consumption record."""

    asset_id: int
    version: int
    path: Path
    size: int
    cid: str
    owner: str
    sha256: str
    receipt: KeyReceipt
    receipt_signature: bytes
    key_audit_seq: int
    consumption_audit_seq: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"asset_id": self.asset_id, "version": self.version, "path": str(self.path), "size": self.size,
                "cid": self.cid, "owner": self.owner, "sha256": self.sha256,
                "receipt": {**self.receipt.to_json(), "signature": "0x" + self.receipt_signature.hex()},
                "key_audit_seq": self.key_audit_seq, "consumption_audit_seq": self.consumption_audit_seq}
