"""AuditProof: everything a third party needs to check one audit record against the chain.

JSON layout (`to_dict`; all byte strings 0x-prefixed lowercase hex, 32 bytes each):

    {"format": "twinledger-audit-proof/1",
     "record": "<canonical JSON text of the record>",
     "record_hash": "0x…", "seq": int, "leaf": "0x…", "proof": ["0x…", …],
     "root": "0x…", "from_seq": int, "to_seq": int, "batch_index": int,
     "tx_hash": "0x…", "block": int,
     "org": "0x<EIP-55>", "chain_id": int, "contract": "0x<EIP-55 AuditAnchors>"}

`from_dict` refuses anything else with AuditVerificationError (reason "malformed").
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from eth_utils import is_address, to_checksum_address

from ledger.audit.reasons import Reason, fail

PROOF_FORMAT = "twinledger-audit-proof/1"
_MAX_SIBLINGS = 64


@dataclass(frozen=True)
class AuditProof:
    record: str
    record_hash: bytes
    seq: int
    leaf: bytes
    proof: tuple[bytes, ...]
    root: bytes
    from_seq: int
    to_seq: int
    batch_index: int
    tx_hash: bytes
    block: int
    org: str
    chain_id: int
    contract: str

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("record_hash", "leaf", "root", "tx_hash"):
            out[key] = "0x" + out[key].hex()
        out["proof"] = ["0x" + p.hex() for p in self.proof]
        return {"format": PROOF_FORMAT, **out}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=2) + "\n"

    @property
    def size_bytes(self) -> int:
        """Bytes of the Merkle path itself (32 per sibling)."""
        return 32 * len(self.proof)

    @classmethod
    def from_json(cls, text: str | bytes) -> "AuditProof":
        try:
            data = json.loads(text)
        except ValueError as exc:
            fail(Reason.MALFORMED, f"proof is not JSON: {exc}")
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> "AuditProof":
        if not isinstance(data, dict):
            fail(Reason.MALFORMED, "proof must be a JSON object")
        if data.get("format") != PROOF_FORMAT:
            fail(Reason.MALFORMED, f"unknown proof format {data.get('format')!r} (expected {PROOF_FORMAT})")
        expected = {"format", *cls.__dataclass_fields__}
        if set(data) != expected:
            fail(Reason.MALFORMED, f"proof fields wrong: missing {sorted(expected - set(data))}, "
                                   f"unexpected {sorted(set(data) - expected)}")
        if not isinstance(data["record"], str):
            fail(Reason.MALFORMED, "proof.record must be the record's canonical JSON text")
        siblings = data["proof"]
        if not isinstance(siblings, list) or len(siblings) > _MAX_SIBLINGS:
            fail(Reason.MALFORMED, f"proof.proof must be a list of at most {_MAX_SIBLINGS} hashes")
        return cls(
            record=data["record"],
            record_hash=_b32(data["record_hash"], "record_hash"),
            seq=_uint(data["seq"], "seq"),
            leaf=_b32(data["leaf"], "leaf"),
            proof=tuple(_b32(p, f"proof[{i}]") for i, p in enumerate(siblings)),
            root=_b32(data["root"], "root"),
            from_seq=_uint(data["from_seq"], "from_seq"),
            to_seq=_uint(data["to_seq"], "to_seq"),
            batch_index=_uint(data["batch_index"], "batch_index"),
            tx_hash=_b32(data["tx_hash"], "tx_hash"),
            block=_uint(data["block"], "block"),
            org=_address(data["org"], "org"),
            chain_id=_uint(data["chain_id"], "chain_id"),
            contract=_address(data["contract"], "contract"),
        )


def _b32(value: Any, name: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x") or len(value) != 66:
        fail(Reason.MALFORMED, f"proof.{name} must be 0x + 64 hex digits")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        fail(Reason.MALFORMED, f"proof.{name} is not hex")


def _uint(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
        fail(Reason.MALFORMED, f"proof.{name} must be an unsigned 64-bit integer")
    return value


def _address(value: Any, name: str) -> str:
    if not isinstance(value, str) or not is_address(value):
        fail(Reason.MALFORMED, f"proof.{name} must be an address")
    return to_checksum_address(value)
