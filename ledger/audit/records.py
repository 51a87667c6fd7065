"""Audit records and their canonical bytes.

A record is one line of an org node's append-only audit log. Its canonical form is
RFC 8785 (JCS) JSON — object keys sorted by UTF-16 code units, no whitespace, UTF-8,
strings escaped as ECMAScript's JSON.stringify does — produced by the `rfc8785` library
(Trail of Bits), not by hand. Every field is always present (absent values are `null`):

    {"actor":str,"asset":int|null,"details":{...},"kind":str,"org":"0x<EIP-55>",
     "seq":int,"time":int,"v":1,"version":int|null}

- "v" is the format version (1). It is a first-class field checked before anything
  else; JCS fixes its byte position, so it is not literally first.
- Numbers are integers in the I-JSON safe range |n| <= 2**53-1; floats, NaN and
  infinities are refused (their canonical text is a source of disagreement).
- record_hash = keccak256(canonical bytes): 32 bytes, the `recordHash` of the
  on-chain Merkle leaf (see ledger/audit/merkle.py).

No `prev_hash` chain: seq is gapless and each batch is anchored under a Merkle root with
the contract enforcing fromSeq == previous toSeq + 1, which already detects edits,
deletions and insertions of anchored records. A hash chain would add nothing for the
unanchored tail either: whoever can rewrite the node's database can recompute it.

Parsing is strict: text is accepted only if it is exactly the canonical encoding of
the record it describes, so one record has one byte string and one hash.
"""
from __future__ import annotations

import enum
import functools
import json
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import rfc8785
from eth_utils import is_checksum_address

from ledger.audit._keccak import keccak256
from ledger.errors import AuditError

FORMAT_VERSION = 1
MAX_SAFE_INT = 2**53 - 1
MAX_RECORD_BYTES = 64 * 1024
MAX_ACTOR_CHARS = 256
_KIND_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_FIELDS = frozenset({"v", "seq", "kind", "time", "org", "actor", "asset", "version", "details"})


class AuditKind(enum.StrEnum):
    """What happened. New kinds may be added in later releases; records carrying a kind
    this release does not know still parse (kind stays a plain `str`) and verify."""

    KEY_RELEASED = "key_released"
    KEY_DENIED = "key_denied"
    ASSET_PUBLISHED = "asset_published"
    GRANT_ISSUED = "grant_issued"
    GRANT_REVOKED = "grant_revoked"
    CONSUMPTION_RECORDED = "consumption_recorded"
    JOB_RUN = "job_run"
    JOB_FAILED = "job_failed"
    SYNC_MATERIALISED = "sync_materialised"


def normalise_kind(kind: str) -> str:
    """`kind` as an AuditKind when known, else the validated plain string."""
    if isinstance(kind, AuditKind):
        return kind
    if not isinstance(kind, str) or not _KIND_RE.match(kind):
        raise AuditError(f"audit kind must match {_KIND_RE.pattern}, got {kind!r}")
    try:
        return AuditKind(kind)
    except ValueError:
        return kind


@functools.lru_cache(maxsize=1024)
def _is_checksum_address(value: str) -> bool:
    return is_checksum_address(value)


def _freeze(value: Any, path: str) -> Any:
    """Validate a JSON value (integers only) and return an immutable copy."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INT:
            raise AuditError(f"audit details {path}: integer {value} outside ±(2**53-1)")
        return int(value)
    if isinstance(value, float):
        raise AuditError(f"audit details {path}: floats are not allowed (use integers or strings)")
    if isinstance(value, str):
        _check_text(value, path)
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v, f"{path}[{i}]") for i, v in enumerate(value))
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise AuditError(f"audit details {path}: object keys must be strings, got {k!r}")
            _check_text(k, f"{path} key")
            out[k] = _freeze(v, f"{path}.{k}")
        return MappingProxyType(out)
    raise AuditError(f"audit details {path}: {type(value).__name__} is not a JSON value")


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    return value


def _check_text(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise AuditError(f"audit record {path}: string is not valid Unicode (lone surrogate)") from None


def _opt_int(value: Any, name: str, lo: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= MAX_SAFE_INT:
        raise AuditError(f"audit record {name} must be null or an integer in [{lo}, 2**53-1], got {value!r}")
    return value


@dataclass(frozen=True)
class AuditRecord:
    """One audit log entry. Construct through `AuditLog.append` or `parse`; the
    constructor validates every field at once."""

    seq: int
    kind: str
    time: int  # unix milliseconds, from the node's (injectable) clock
    org: str  # EIP-55 address of the node that logged the record
    actor: str  # who acted: an org address, a service name, a user id
    asset_id: int | None = None
    version: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.seq, bool) or not isinstance(self.seq, int) or not 1 <= self.seq <= MAX_SAFE_INT:
            raise AuditError(f"audit record seq must be an integer >= 1, got {self.seq!r}")
        object.__setattr__(self, "kind", normalise_kind(self.kind))
        if isinstance(self.time, bool) or not isinstance(self.time, int) or not 0 <= self.time <= MAX_SAFE_INT:
            raise AuditError(f"audit record time must be unix milliseconds >= 0, got {self.time!r}")
        if not isinstance(self.org, str) or not _is_checksum_address(self.org):
            raise AuditError(f"audit record org must be an EIP-55 checksummed address, got {self.org!r}")
        if not isinstance(self.actor, str) or not 1 <= len(self.actor) <= MAX_ACTOR_CHARS:
            raise AuditError(f"audit record actor must be 1..{MAX_ACTOR_CHARS} characters, got {self.actor!r}")
        _check_text(self.actor, "actor")
        _opt_int(self.asset_id, "asset", 0)
        _opt_int(self.version, "version", 0)
        if not isinstance(self.details, Mapping):
            raise AuditError(f"audit record details must be a JSON object, got {type(self.details).__name__}")
        object.__setattr__(self, "details", _freeze(self.details, "details"))
        if len(self.canonical()) > MAX_RECORD_BYTES:
            raise AuditError(f"audit record exceeds {MAX_RECORD_BYTES} bytes in canonical form")

    def to_json_obj(self) -> dict[str, Any]:
        """The record as a plain JSON object (fresh, mutable)."""
        return {
            "v": FORMAT_VERSION, "seq": self.seq, "kind": str(self.kind), "time": self.time, "org": self.org,
            "actor": self.actor, "asset": self.asset_id, "version": self.version, "details": _thaw(self.details),
        }

    def canonical(self) -> bytes:
        """RFC 8785 canonical JSON bytes (cached)."""
        cached = self.__dict__.get("_canonical")
        if cached is None:
            cached = rfc8785.dumps(self.to_json_obj())
            object.__setattr__(self, "_canonical", cached)
        return cached

    def record_hash(self) -> bytes:
        """keccak256 of the canonical bytes: the Merkle leaf's `recordHash`."""
        return keccak256(self.canonical())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AuditRecord) and self.canonical() == other.canonical()

    def __hash__(self) -> int:
        return hash(self.canonical())

    @classmethod
    def from_json_obj(cls, obj: Any) -> "AuditRecord":
        """A record from an already-decoded JSON object (any key order)."""
        if not isinstance(obj, Mapping):
            raise AuditError("audit record must be a JSON object")
        if obj.get("v") != FORMAT_VERSION or isinstance(obj.get("v"), bool):
            raise AuditError(f"unsupported audit record format version {obj.get('v')!r} (expected {FORMAT_VERSION})")
        keys = set(obj)
        if keys != _FIELDS:
            missing, extra = sorted(_FIELDS - keys), sorted(keys - _FIELDS)
            raise AuditError(f"audit record fields wrong: missing {missing}, unexpected {extra}")
        return cls(seq=obj["seq"], kind=obj["kind"], time=obj["time"], org=obj["org"], actor=obj["actor"],
                   asset_id=obj["asset"], version=obj["version"], details=obj["details"])


def _reject_constant(name: str) -> Any:
    raise AuditError(f"audit record contains {name}, which is not allowed")


def _reject_float(text: str) -> Any:
    raise AuditError(f"audit record contains a non-integer number {text}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise AuditError(f"audit record has duplicate key {k!r}")
        out[k] = v
    return out


def loads_json(data: bytes | str) -> Any:
    """Decode JSON refusing floats, NaN/Infinity and duplicate keys (AuditError)."""
    try:
        return json.loads(data, parse_float=_reject_float, parse_constant=_reject_constant,
                          object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, AuditError):
            raise
        raise AuditError(f"audit record is not valid JSON: {exc}") from None


def parse(data: bytes | str) -> AuditRecord:
    """Parse canonical record bytes. Raises AuditError unless `data` is exactly the
    canonical encoding of a valid v1 record."""
    try:
        raw = data.encode("utf-8", "strict") if isinstance(data, str) else bytes(data)
    except UnicodeEncodeError:
        raise AuditError("audit record is not valid Unicode (lone surrogate)") from None
    if len(raw) > MAX_RECORD_BYTES:
        raise AuditError(f"audit record exceeds {MAX_RECORD_BYTES} bytes")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise AuditError("audit record is not UTF-8") from None
    record = AuditRecord.from_json_obj(loads_json(raw))
    if record.canonical() != raw:
        raise AuditError("audit record is not in canonical (RFC 8785) form")
    return record


def encode(record: AuditRecord) -> bytes:
    return record.canonical()
