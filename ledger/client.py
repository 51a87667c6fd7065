"""LedgerClient: one typed method per contract function, results as ledger.models values.

Writes go through a TransactionSender (local signing, nonce management, retries) and
raise the decoded revert (ledger.reverts) on failure; reads retry transient RPC errors
and decode reverts too. The web3 Contract objects are exposed for the event indexer.

Reads take `block_identifier` ("latest", a number, ...). Passing a `BlockRef` (from
`latest_block()`) pins the read to that exact block by HASH (EIP-1898 `{"blockHash": …}`),
so several reads answer for one and the same block even if a new block (or a reorg)
arrives in between; such reads go out as one raw `eth_call` (ABI encoding by eth_abi,
no web3 middleware), because web3's contract call would turn a hash back into a number.
These raw calls and `latest_block()` are key release's hot path; they use `ledger._rpc.FastRpc`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils import is_address, keccak, to_checksum_address
from eth_utils.abi import function_abi_to_4byte_selector, get_abi_input_types, get_abi_output_types
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD
from web3.types import TxReceipt

from ledger import artifacts, reverts
from ledger._rpc import FastRpc
from ledger.deployment import Deployment, check
from ledger.errors import DeploymentError, InvalidArgumentError, RpcError, TransactionError
from ledger.models import (
    AddedVersion,
    AssetKind,
    AssetState,
    AuditHead,
    CreatedAsset,
    GrantState,
    OrgInfo,
    Permission,
    TxResult,
    VersionRef,
)
from ledger.tx import TransactionSender, is_transient, retrying

T = TypeVar("T")
_UINT64 = 2**64 - 1
_UINT32 = 2**32 - 1
_UINT256 = 2**256 - 1


def _address(value: str, what: str) -> str:
    if not isinstance(value, str) or not is_address(value):
        raise InvalidArgumentError(f"{what} is not an Ethereum address: {value!r}")
    return to_checksum_address(value)


def _bytes32(value: bytes, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != 32:
        raise InvalidArgumentError(f"{what} must be 32 bytes, got {value!r:.80}")
    return bytes(value)


def _uint(value: int, maximum: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise InvalidArgumentError(f"{what} must be an integer in 0..{maximum}, got {value!r}")
    return value


def _refs(parents: Sequence[VersionRef]) -> list[tuple[int, int]]:
    out = []
    for p in parents:
        if not isinstance(p, VersionRef):
            raise InvalidArgumentError(f"parents must be VersionRef values, got {p!r}")
        out.append((_uint(p.asset_id, _UINT256, "parent asset id"), _uint(p.version, _UINT32, "parent version")))
    return out


def _tx(receipt: TxReceipt) -> TxResult:
    return TxResult(tx_hash=Web3.to_hex(receipt["transactionHash"]), block_number=receipt["blockNumber"],
                    gas_used=receipt["gasUsed"])


@dataclass(frozen=True)
class BlockRef:
    """One block, by number and hash (`LedgerClient.latest_block()`); as a read's
    `block_identifier` it pins the read to this exact block."""

    number: int
    hash: bytes  # 32 bytes


def purpose_hash(purpose: str) -> bytes:
    """What a grant stores for `purpose`: the first 23 bytes of keccak256(utf-8 purpose)."""
    return keccak(purpose.encode("utf-8"))[:23]


def compute_version_digest(asset_id: int, version: int, cid: bytes, commitment: bytes, size: int,
                           parents: Sequence[VersionRef], author: str, timestamp: int) -> bytes:
    """The digest AssetLedger stores per version:
    keccak256(abi.encode(uint256 assetId, uint32 version, keccak256(cid), bytes32 commitment,
    uint64 size, keccak256(abi.encode((uint256,uint32)[] parents)), address author,
    uint256 timestamp))."""
    parents_hash = keccak(abi_encode(["(uint256,uint32)[]"], [_refs(parents)]))
    return keccak(abi_encode(
        ["uint256", "uint32", "bytes32", "bytes32", "uint64", "bytes32", "address", "uint256"],
        [asset_id, version, keccak(bytes(cid)), _bytes32(commitment, "commitment"), size, parents_hash,
         _address(author, "author"), timestamp],
    ))


class LedgerClient:
    """Typed access to a TwinLedger deployment. Without `account` the client is read-only."""

    def __init__(self, w3: Web3, deployment: Deployment, account: LocalAccount | None = None, *,
                 receipt_timeout: float = 60, retries: int = 3) -> None:
        self.w3 = w3
        self.deployment = deployment
        self.account = account
        self.retries = retries
        self.sender = (TransactionSender(w3, account, receipt_timeout=receipt_timeout, retries=retries)
                       if account is not None else None)

        def contract(name: str, address: str) -> Contract:
            return w3.eth.contract(address=to_checksum_address(address), abi=list(artifacts.load(name).abi))

        self._consortium = contract("Consortium", deployment.consortium)
        self._asset_ledger = contract("AssetLedger", deployment.asset_ledger)
        self._audit_anchors = contract("AuditAnchors", deployment.audit_anchors)
        self._fast = FastRpc(w3.provider)

    @classmethod
    def connect(cls, rpc_url: str, manifest_path: Path | str, account: LocalAccount | None = None,
                **kwargs: Any) -> "LedgerClient":
        """A client for the node at `rpc_url`, after checking that the chain holds the
        deployment described by the manifest at `manifest_path`."""
        w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
        deployment = Deployment.load(Path(manifest_path))
        try:
            check(w3, deployment)
        except DeploymentError:
            raise
        except Exception as exc:
            if is_transient(exc):
                raise RpcError(f"cannot reach the chain at {rpc_url}: {exc}") from None
            raise
        return cls(w3, deployment, account, **kwargs)

    # -- plumbing ----------------------------------------------------------------------

    @property
    def consortium(self) -> Contract:
        return self._consortium

    @property
    def asset_ledger(self) -> Contract:
        return self._asset_ledger

    @property
    def audit_anchors(self) -> Contract:
        return self._audit_anchors

    @property
    def address(self) -> str | None:
        """The address transactions are sent from (None for a read-only client)."""
        return self.account.address if self.account is not None else None

    def _rpc(self, what: str, fn: Callable[[], T]) -> T:
        return retrying(what, fn, retries=self.retries)

    def _call(self, contract: Contract, fn: str, *args: Any, block_identifier: Any = "latest") -> Any:
        if isinstance(block_identifier, BlockRef):
            return self._call_at(contract, fn, args, block_identifier)
        bound = contract.functions[fn](*args)
        return self._rpc(fn, lambda: bound.call(block_identifier=block_identifier))

    def _call_at(self, contract: Contract, fn: str, args: tuple[Any, ...], block: BlockRef) -> Any:
        """eth_call of a view at the block with hash `block.hash` (EIP-1898), decoded as
        web3 would (one output → the value itself, addresses checksummed by the callers)."""
        selector, in_types, out_types = self._abi_of(contract, fn)
        data = "0x" + (selector + abi_encode(in_types, list(args))).hex()
        params = [{"to": contract.address, "data": data}, {"blockHash": "0x" + block.hash.hex()}]

        def call() -> Any:
            answer = self._fast.request("eth_call", params)
            error = answer.get("error")
            if error is not None:
                revert = error.get("data") if isinstance(error, dict) else None
                if isinstance(revert, dict):
                    revert = revert.get("data")
                if isinstance(revert, str) and revert.startswith("0x"):
                    raise reverts.decode_revert(revert)
                message = error.get("message") if isinstance(error, dict) else error
                raise RpcError(f"{fn} at block {block.number} (0x{block.hash.hex()}): {message}")
            values = abi_decode(out_types, bytes.fromhex(str(answer["result"])[2:]))
            return values[0] if len(values) == 1 else values

        return self._rpc(fn, call)

    _ABI_CACHE: dict[tuple[str, str], tuple[bytes, list[str], list[str]]] = {}

    def _abi_of(self, contract: Contract, fn: str) -> tuple[bytes, list[str], list[str]]:
        key = (contract.address, fn)
        found = self._ABI_CACHE.get(key)
        if found is None:
            abi = next(e for e in contract.abi if e.get("type") == "function" and e.get("name") == fn)
            found = (function_abi_to_4byte_selector(abi), get_abi_input_types(abi), get_abi_output_types(abi))
            self._ABI_CACHE[key] = found
        return found

    def _transact(self, contract: Contract, fn: str, *args: Any) -> TxReceipt:
        if self.sender is None:
            raise TransactionError(f"{fn}: this LedgerClient has no account (read-only)")
        data = contract.encode_abi(fn, args=list(args))
        return self.sender.send(contract.address, data)

    @staticmethod
    def _event(contract: Contract, receipt: TxReceipt, name: str) -> Any:
        logs = contract.events[name]().process_receipt(receipt, errors=DISCARD)
        if not logs:
            raise TransactionError(f"{name} event missing from {Web3.to_hex(receipt['transactionHash'])}")
        return logs[0]["args"]

    # -- Consortium --------------------------------------------------------------------

    def register_org(self, org: str, name: str, age_recipient: str, endpoint: str) -> TxResult:
        return _tx(self._transact(self._consortium, "registerOrg", _address(org, "org"), name, age_recipient,
                                  endpoint))

    def deactivate_org(self, org: str) -> TxResult:
        return _tx(self._transact(self._consortium, "deactivateOrg", _address(org, "org")))

    def reactivate_org(self, org: str) -> TxResult:
        return _tx(self._transact(self._consortium, "reactivateOrg", _address(org, "org")))

    def update_recipient(self, age_recipient: str) -> TxResult:
        return _tx(self._transact(self._consortium, "updateRecipient", age_recipient))

    def update_endpoint(self, endpoint: str) -> TxResult:
        return _tx(self._transact(self._consortium, "updateEndpoint", endpoint))

    def get_org(self, org: str, *, block_identifier: Any = "latest") -> OrgInfo:
        address = _address(org, "org")
        name, recipient, endpoint, active, registered_at = self._call(self._consortium, "getOrg", address,
                                                                      block_identifier=block_identifier)
        return OrgInfo(address=address, name=name, age_recipient=recipient, endpoint=endpoint, active=active,
                       registered_at=registered_at)

    def is_active(self, org: str, *, block_identifier: Any = "latest") -> bool:
        return self._call(self._consortium, "isActive", _address(org, "org"), block_identifier=block_identifier)

    def is_registered(self, org: str, *, block_identifier: Any = "latest") -> bool:
        return self._call(self._consortium, "isRegistered", _address(org, "org"), block_identifier=block_identifier)

    def members(self) -> list[str]:
        return [to_checksum_address(a) for a in self._call(self._consortium, "members")]

    # -- AssetLedger -------------------------------------------------------------------

    def create_asset(self, kind: AssetKind, name: str, metadata_digest: bytes = b"\0" * 32) -> CreatedAsset:
        receipt = self._transact(self._asset_ledger, "createAsset", int(AssetKind(kind)), name,
                                 _bytes32(metadata_digest, "metadata_digest"))
        args = self._event(self._asset_ledger, receipt, "AssetCreated")
        return CreatedAsset(asset_id=args["assetId"], tx=_tx(receipt))

    def add_version(self, asset_id: int, cid: bytes, commitment: bytes, size: int,
                    parents: Sequence[VersionRef] = ()) -> AddedVersion:
        if not isinstance(cid, (bytes, bytearray)):
            raise InvalidArgumentError(f"cid must be the binary CID (bytes), got {type(cid).__name__}")
        receipt = self._transact(self._asset_ledger, "addVersion", _uint(asset_id, _UINT256, "asset_id"),
                                 bytes(cid), _bytes32(commitment, "commitment"), _uint(size, _UINT64, "size"),
                                 _refs(parents))
        args = self._event(self._asset_ledger, receipt, "VersionAdded")
        return AddedVersion(asset_id=args["assetId"], version=args["version"], tx=_tx(receipt))

    def retire_asset(self, asset_id: int) -> TxResult:
        return _tx(self._transact(self._asset_ledger, "retireAsset", _uint(asset_id, _UINT256, "asset_id")))

    def grant(self, asset_id: int, grantee: str, permissions: Permission, expiry: int, purpose: str = "") -> TxResult:
        return _tx(self._transact(self._asset_ledger, "grant", _uint(asset_id, _UINT256, "asset_id"),
                                  _address(grantee, "grantee"), _uint(int(permissions), 255, "permissions"),
                                  _uint(expiry, _UINT64, "expiry"), purpose))

    def revoke(self, asset_id: int, grantee: str) -> TxResult:
        return _tx(self._transact(self._asset_ledger, "revoke", _uint(asset_id, _UINT256, "asset_id"),
                                  _address(grantee, "grantee")))

    def has_access(self, asset_id: int, org: str, permission: Permission, *, block_identifier: Any = "latest") -> bool:
        return self._call(self._asset_ledger, "hasAccess", _uint(asset_id, _UINT256, "asset_id"),
                          _address(org, "org"), _uint(int(permission), 255, "permission"),
                          block_identifier=block_identifier)

    def has_access_for(self, asset_id: int, org: str, permission: Permission, purpose: str, *,
                       block_identifier: Any = "latest") -> bool:
        return self._call(self._asset_ledger, "hasAccessFor", _uint(asset_id, _UINT256, "asset_id"),
                          _address(org, "org"), _uint(int(permission), 255, "permission"), purpose,
                          block_identifier=block_identifier)

    def get_asset(self, asset_id: int, *, block_identifier: Any = "latest") -> AssetState:
        owner, kind, retired, count = self._call(self._asset_ledger, "getAsset", _uint(asset_id, _UINT256, "asset_id"),
                                                 block_identifier=block_identifier)
        return AssetState(asset_id=asset_id, owner=to_checksum_address(owner), kind=AssetKind(kind), retired=retired,
                          version_count=count)

    def get_grant(self, asset_id: int, grantee: str, *, block_identifier: Any = "latest") -> GrantState:
        permissions, expiry, purpose = self._call(self._asset_ledger, "getGrant", _uint(asset_id, _UINT256, "asset_id"),
                                                  _address(grantee, "grantee"), block_identifier=block_identifier)
        return GrantState(permissions=Permission(permissions), expiry=expiry, purpose_hash=bytes(purpose))

    def version_digest(self, asset_id: int, version: int) -> bytes:
        return bytes(self._call(self._asset_ledger, "versionDigest", _uint(asset_id, _UINT256, "asset_id"),
                                _uint(version, _UINT32, "version")))

    def version_by_commitment(self, commitment: bytes) -> tuple[int, int] | None:
        asset_id, version = self._call(self._asset_ledger, "versionByCommitment", _bytes32(commitment, "commitment"))
        return None if asset_id == 0 else (asset_id, version)

    def asset_count(self) -> int:
        return self._call(self._asset_ledger, "assetCount")

    compute_version_digest = staticmethod(compute_version_digest)
    purpose_hash = staticmethod(purpose_hash)

    def eip712_domain(self) -> dict[str, Any]:
        """ERC-5267 eip712Domain() of the AssetLedger (the key requests' verifying contract)."""
        _fields, name, version, chain_id, verifying, _salt, _ext = self._call(self._asset_ledger, "eip712Domain")
        return {"name": name, "version": version, "chainId": chain_id,
                "verifyingContract": to_checksum_address(verifying)}

    # -- AuditAnchors ------------------------------------------------------------------

    def anchor(self, from_seq: int, to_seq: int, merkle_root: bytes) -> TxResult:
        return _tx(self._transact(self._audit_anchors, "anchor", _uint(from_seq, _UINT64, "from_seq"),
                                  _uint(to_seq, _UINT64, "to_seq"), _bytes32(merkle_root, "merkle_root")))

    def audit_head(self, org: str) -> AuditHead:
        last_seq, batches = self._call(self._audit_anchors, "head", _address(org, "org"))
        return AuditHead(last_seq=last_seq, batches=batches)

    def root_of(self, org: str, to_seq: int) -> bytes:
        return bytes(self._call(self._audit_anchors, "rootOf", _address(org, "org"), _uint(to_seq, _UINT64, "to_seq")))

    def verify_record(self, org: str, to_seq: int, seq: int, record_hash: bytes, proof: Sequence[bytes]) -> bool:
        return self._call(self._audit_anchors, "verifyRecord", _address(org, "org"), _uint(to_seq, _UINT64, "to_seq"),
                          _uint(seq, _UINT256, "seq"), _bytes32(record_hash, "record_hash"),
                          [_bytes32(p, "proof element") for p in proof])

    # -- chain -------------------------------------------------------------------------

    def block_number(self) -> int:
        return self._rpc("eth_blockNumber", lambda: self.w3.eth.block_number)

    def latest_block(self) -> BlockRef:
        """The chain's latest block (number and hash), in one raw eth_getBlockByNumber."""

        def call() -> BlockRef:
            answer = self._fast.request("eth_getBlockByNumber", ["latest", False])
            block = answer.get("result")
            if not isinstance(block, dict):
                raise RpcError(f"eth_getBlockByNumber(latest): {answer.get('error') or 'no block'}")
            return BlockRef(number=int(block["number"], 16), hash=bytes.fromhex(block["hash"][2:]))

        return self._rpc("eth_getBlockByNumber", call)

    def block_time(self, block: BlockRef) -> int:
        """Timestamp of `block` (what `block.timestamp` is in a view call pinned to it)."""
        return self._rpc("eth_getBlockByHash", lambda: self.w3.eth.get_block(block.hash)["timestamp"])

    def chain_time(self) -> int:
        """Timestamp of the latest block (the `block.timestamp` the next view call sees)."""
        return self._rpc("eth_getBlockByNumber", lambda: self.w3.eth.get_block("latest")["timestamp"])
