"""Decode every contract revert into a named Python exception.

Hand-written because web3.py stops at the raw selector (ContractCustomError("0x…")).
A selector table is built from the error entries of ALL committed ABIs (our custom
errors and the OpenZeppelin ones they inherit, e.g. AccessControlUnauthorizedAccount),
plus Solidity's builtin `Error(string)` and `Panic(uint256)`. One ContractRevertError
subclass is generated per error name and published in this module's namespace, so
callers write `except AssetLedgerNotOwner as e: e.args_by_name["caller"]`.

Revert data layout (Solidity ABI): 4-byte selector = keccak256("Name(type,...)")[:4],
then the arguments ABI-encoded as a tuple.

Reverts reach us three ways, all handled here: from eth_estimateGas and eth_call (web3
raises ContractLogicError with the raw data), and from a mined transaction with status 0
(the receipt has no data, so the transaction is replayed with eth_call at its block).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from eth_abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_utils import keccak, to_checksum_address
from web3 import Web3
from web3.exceptions import ContractLogicError

from ledger import artifacts
from ledger.errors import ContractRevertError, TransactionError

__all__ = [
    "ContractRevertError", "RevertReason", "Panic", "UnknownRevert", "ERRORS",
    "decode_revert", "from_web3", "translating", "replay_revert", "error_class",
]


class RevertReason(ContractRevertError):
    """`require(cond, "reason")` / `revert("reason")`: Error(string); args: reason."""


class Panic(ContractRevertError):
    """A Solidity panic (assert, overflow, ...): Panic(uint256); args: code."""


class UnknownRevert(ContractRevertError):
    """Revert data whose selector is in no ABI, or no revert data at all."""


@dataclass(frozen=True)
class ErrorSpec:
    name: str
    signature: str
    selector: str  # "0x" + 8 hex digits
    arg_names: tuple[str, ...]
    arg_types: tuple[str, ...]
    cls: type[ContractRevertError]


def _canonical_type(param: dict) -> str:
    kind = param["type"]
    if kind.startswith("tuple"):
        inner = ",".join(_canonical_type(c) for c in param["components"])
        return f"({inner}){kind[len('tuple'):]}"
    return kind


def _normalise(value: object, abi_type: str) -> object:
    """Checksummed addresses; tuples/arrays recursively; everything else as eth_abi gives it."""
    if abi_type == "address":
        return to_checksum_address(value)
    if abi_type.endswith("]") and isinstance(value, (list, tuple)):
        inner = abi_type[: abi_type.rindex("[")]
        return tuple(_normalise(v, inner) for v in value)
    return value


_CLASSES: dict[str, type[ContractRevertError]] = {"Error": RevertReason, "Panic": Panic}


def error_class(name: str) -> type[ContractRevertError]:
    """The exception class for custom error `name` (created on first use)."""
    cls = _CLASSES.get(name)
    if cls is None:
        cls = type(name, (ContractRevertError,), {"__module__": __name__, "__doc__": f"Custom error {name}."})
        _CLASSES[name] = cls
    return cls


def _spec(name: str, inputs: list[dict]) -> ErrorSpec:
    types = tuple(_canonical_type(i) for i in inputs)
    signature = f"{name}({','.join(types)})"
    return ErrorSpec(
        name=name,
        signature=signature,
        selector="0x" + keccak(text=signature)[:4].hex(),
        arg_names=tuple(i.get("name") or f"arg{n}" for n, i in enumerate(inputs)),
        arg_types=types,
        cls=error_class(name),
    )


def _build_table() -> dict[str, ErrorSpec]:
    table: dict[str, ErrorSpec] = {}
    builtin = [("Error", [{"name": "reason", "type": "string"}]), ("Panic", [{"name": "code", "type": "uint256"}])]
    for name, inputs in builtin:
        spec = _spec(name, inputs)
        table[spec.selector] = spec
    for artifact in artifacts.all_artifacts().values():
        for entry in artifact.abi:
            if entry.get("type") == "error":
                spec = _spec(entry["name"], entry.get("inputs", []))
                table.setdefault(spec.selector, spec)
    return table


# selector -> spec, for every error any deployed contract can raise.
ERRORS: dict[str, ErrorSpec] = _build_table()
globals().update({spec.name: spec.cls for spec in ERRORS.values() if spec.name not in ("Error", "Panic")})
__all__ += sorted(spec.name for spec in ERRORS.values() if spec.name not in ("Error", "Panic"))


def decode_revert(data: str | bytes | None) -> ContractRevertError:
    """The named exception (not raised) for raw revert `data`."""
    if isinstance(data, str):
        hexdata = data[2:] if data.startswith("0x") else data
        try:
            raw = bytes.fromhex(hexdata)
        except ValueError:
            return UnknownRevert("<unparseable>", {"data": data}, "", data)
    else:
        raw = bytes(data or b"")
    hexed = "0x" + raw.hex()
    if len(raw) < 4:
        return UnknownRevert("<no data>" if not raw else "<unknown>", {}, hexed[:10], hexed)
    selector = "0x" + raw[:4].hex()
    spec = ERRORS.get(selector)
    if spec is None:
        return UnknownRevert("<unknown>", {}, selector, hexed)
    try:
        values = abi_decode(list(spec.arg_types), raw[4:])
    except (DecodingError, ValueError, OverflowError):
        return UnknownRevert(spec.name, {}, selector, hexed)
    args = {n: _normalise(v, t) for n, v, t in zip(spec.arg_names, values, spec.arg_types)}
    return spec.cls(spec.name, args, selector, hexed)


def from_web3(exc: ContractLogicError) -> ContractRevertError:
    """Decode a web3 ContractLogicError (raised by eth_call / eth_estimateGas)."""
    data = exc.data
    if isinstance(data, dict):  # some nodes nest it: {"data": "0x…"} or {"<hash>": {...}}
        data = data.get("data") or next((v.get("data") for v in data.values() if isinstance(v, dict)), None)
    if isinstance(data, str) and data.startswith("Reverted "):
        data = data.split(" ", 1)[1]
    if not isinstance(data, str) or not data.startswith("0x"):
        return UnknownRevert("<no data>", {"message": str(exc.message or "")}, "", "")
    return decode_revert(data)


@contextlib.contextmanager
def translating() -> Iterator[None]:
    """Re-raise any web3 ContractLogicError inside the block as its named exception."""
    try:
        yield
    except ContractLogicError as exc:
        raise from_web3(exc) from exc


def replay_revert(w3: Web3, tx_hash: str | bytes, block_number: int) -> ContractRevertError:
    """Why the mined transaction `tx_hash` (status 0) reverted: replays it with eth_call
    on the state at its block (then the parent block) and decodes the revert data."""
    tx = w3.eth.get_transaction(tx_hash)
    call = {"from": tx["from"], "to": tx["to"], "data": tx["input"], "value": tx.get("value", 0), "gas": tx["gas"]}
    for block in (block_number, max(block_number - 1, 0)):
        try:
            w3.eth.call(call, block_identifier=block)
        except ContractLogicError as exc:
            return from_web3(exc)
    raise TransactionError(
        f"transaction {Web3.to_hex(tx_hash) if isinstance(tx_hash, bytes) else tx_hash} failed but its replay "
        "does not revert (out of gas, or state changed by a later transaction in the block)"
    )
