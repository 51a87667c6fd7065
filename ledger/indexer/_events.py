"""Decode the contracts' logs with their ABIs (committed artifacts).

Decoding is done here with eth_abi rather than web3's `process_log` for one reason:
strings. Solidity does not check that a `string` argument is UTF-8, so any owner can
emit a name or purpose that is not; web3 would raise and stop every node's indexer.
Strings are therefore decoded as `bytes` (identical ABI encoding) and turned into text
with invalid sequences replaced (U+FFFD), and NUL replaced too because PostgreSQL text
cannot hold it. Everything else is plain eth_abi.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_utils import event_abi_to_log_topic, to_checksum_address

from ledger import artifacts
from ledger.deployment import Deployment
from ledger.errors import IndexerError


@dataclass(frozen=True)
class RawLog:
    """A log as fetched (or as stored in idx_processed_logs), normalised to hex strings."""

    block_number: int
    block_hash: str
    block_timestamp: int
    tx_hash: str
    log_index: int
    address: str  # checksummed
    topics: tuple[str, ...]
    data: str

    @property
    def key(self) -> tuple[str, int]:
        return (self.tx_hash, self.log_index)


@dataclass(frozen=True)
class Event:
    """A decoded log: `name` is "" for a log whose topic is in none of the ABIs."""

    name: str
    args: dict[str, Any]
    log: RawLog


def _type_string(param: dict) -> str:
    """ABI param → canonical type string, tuples expanded: "(uint256,uint32)[]"."""
    kind = param["type"]
    if kind.startswith("tuple"):
        return "(" + ",".join(_type_string(c) for c in param["components"]) + ")" + kind[len("tuple"):]
    return kind


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


@dataclass(frozen=True)
class _EventSpec:
    name: str
    indexed: tuple[tuple[str, str], ...]  # (name, type)
    plain: tuple[tuple[str, str], ...]


class EventDecoder:
    """Decodes logs of one deployment's three contracts."""

    def __init__(self, deployment: Deployment) -> None:
        by_contract = {
            "Consortium": deployment.consortium,
            "AssetLedger": deployment.asset_ledger,
            "AuditAnchors": deployment.audit_anchors,
        }
        self.addresses = tuple(to_checksum_address(a) for a in by_contract.values())
        self._specs: dict[tuple[str, str], _EventSpec] = {}
        for contract, address in by_contract.items():
            for item in artifacts.load(contract).abi:
                if item.get("type") != "event" or item.get("anonymous"):
                    continue
                topic = "0x" + event_abi_to_log_topic(item).hex()
                inputs = item["inputs"]
                self._specs[(to_checksum_address(address), topic)] = _EventSpec(
                    name=item["name"],
                    indexed=tuple((p["name"], _type_string(p)) for p in inputs if p["indexed"]),
                    plain=tuple((p["name"], _type_string(p)) for p in inputs if not p["indexed"]),
                )

    def decode(self, log: RawLog) -> Event:
        spec = self._specs.get((log.address, log.topics[0] if log.topics else ""))
        if spec is None:
            return Event(name="", args={}, log=log)
        if len(log.topics) != len(spec.indexed) + 1:
            raise IndexerError(f"log {log.tx_hash}:{log.log_index} has {len(log.topics)} topics, "
                               f"{spec.name} needs {len(spec.indexed) + 1}")
        args: dict[str, Any] = {}
        try:
            for (name, kind), topic in zip(spec.indexed, log.topics[1:]):
                args[name] = abi_decode([kind], bytes.fromhex(topic[2:]))[0]
            types = [("bytes" if kind == "string" else kind) for _, kind in spec.plain]
            values = abi_decode(types, bytes.fromhex(log.data[2:]))
        except (DecodingError, ValueError) as exc:
            raise IndexerError(f"cannot decode {spec.name} in log {log.tx_hash}:{log.log_index}: {exc}") from None
        for (name, kind), value in zip(spec.plain, values):
            args[name] = _text(value) if kind == "string" else value
        for name, kind in (*spec.indexed, *spec.plain):
            if kind == "address":
                args[name] = to_checksum_address(args[name])
        return Event(name=spec.name, args=args, log=log)
