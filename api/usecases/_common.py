"""Small helpers shared by the use cases: parsing references and permissions from the
outside, and writing audit records whose ids may exceed JSON's safe integer range."""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from api.errors import InputValidationError, InvalidFieldError
from api.node import Node
from ledger.audit.log import Entry
from ledger.audit.records import MAX_SAFE_INT, AuditRecord
from ledger.models import AssetKind, Permission, VersionRef

_REF = re.compile(r"([0-9]{1,78})@([0-9]{1,10})")
MAX_PARENTS = 32  # AssetLedger.MAX_PARENTS
KEY_PERMISSIONS = (Permission.READ, Permission.SYNC)  # the uses a key may be released for


def parse_ref(text: object, field: str = "parents") -> VersionRef:
    """"<assetId>@<version>" → VersionRef (version >= 1)."""
    if not isinstance(text, str) or not (m := _REF.fullmatch(text)):
        raise InvalidFieldError(field, 'each parent must be "<assetId>@<version>", e.g. "3@1"')
    asset_id, version = int(m.group(1)), int(m.group(2))
    if asset_id >= 2**256 or not 1 <= version < 2**32:
        raise InvalidFieldError(field, f"{text} is out of range (asset < 2**256, 1 <= version < 2**32)")
    return VersionRef(asset_id, version)


def parse_refs(items: Iterable[object], field: str = "parents") -> tuple[VersionRef, ...]:
    refs = tuple(parse_ref(item, field) for item in items)
    if len(refs) > MAX_PARENTS:
        raise InvalidFieldError(field, f"at most {MAX_PARENTS} parents, got {len(refs)}")
    return refs


def format_ref(ref: VersionRef) -> str:
    return f"{ref.asset_id}@{ref.version}"


def parse_kind(value: object) -> AssetKind:
    if isinstance(value, AssetKind):
        return value
    if isinstance(value, str) and value.upper() in AssetKind.__members__:
        return AssetKind[value.upper()]
    raise InvalidFieldError("kind", f"must be one of {', '.join(k.name.lower() for k in AssetKind)}")


def kind_name(kind: AssetKind | int) -> str:
    return AssetKind(kind).name.lower()


def parse_permissions(names: Iterable[object], field: str = "permissions") -> Permission:
    """["READ", "SYNC"] → Permission.READ | Permission.SYNC (non-empty, known names)."""
    bits = Permission(0)
    for name in names:
        if not isinstance(name, str) or name.upper() not in Permission.__members__:
            raise InvalidFieldError(field, f"each permission must be one of {', '.join(Permission.__members__)}")
        bits |= Permission[name.upper()]
    if not bits:
        raise InvalidFieldError(field, "at least one permission is required")
    return bits


def permission_names(bits: Permission | int) -> list[str]:
    return [p.name for p in Permission if p & int(bits)]  # type: ignore[misc]


def key_permission(value: int) -> Permission:
    """The permission a KeyRequest asks for: READ or SYNC. COMPUTE is refused by the
    release use case itself (with an audited denial); anything else is malformed."""
    if value in (Permission.READ, Permission.SYNC, Permission.COMPUTE):
        return Permission(value)
    raise InputValidationError(f"permission {value} is not one of READ (1), SYNC (2), COMPUTE (4)",
                               reason="invalid_permission")


def json_safe(value: Any) -> Any:
    """`value` with integers beyond ±(2**53-1) written as decimal strings (audit records
    hold only I-JSON safe integers)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if abs(value) <= MAX_SAFE_INT else str(value)
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def audit_entry(kind: str, actor: str, asset_id: int | None = None, version: int | None = None,
                details: Mapping[str, Any] | None = None) -> Entry:
    """An audit entry in the record format. Asset ids beyond 2**53-1 (legal on chain, not
    in the record format) go into details as a decimal string instead."""
    extra: dict[str, Any] = json_safe(dict(details or {}))
    if asset_id is not None and asset_id > MAX_SAFE_INT:
        extra["asset_id"] = str(asset_id)
        asset_id = None
    return Entry(kind, actor, asset_id, version, extra)


def audit(node: Node, kind: str, actor: str, asset_id: int | None = None, version: int | None = None,
          details: Mapping[str, Any] | None = None) -> AuditRecord:
    """Append (and commit) one audit record (see audit_entry)."""
    e = audit_entry(kind, actor, asset_id, version, details)
    assert node.audit is not None
    return node.audit.append(e.kind, e.actor, e.asset_id, e.version, e.details)
