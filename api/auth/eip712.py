"""The EIP-712 typed messages of the node protocol: key requests, key receipts and signed
HTTP requests, with signing (SDK side, a LocalAccount) and signer recovery (node side).

Domain (the AssetLedger's ERC-5267 `eip712Domain()`):
    {name "TwinLedger", version "1", chainId, verifyingContract = AssetLedger address}
so a signature made for another chain or another deployment recovers another address.

Types (field order is part of the type hash; do not reorder):
    KeyRequest(uint256 asset, uint32 version, address consumer, string recipient,
               string purpose, uint8 permission, bytes32 nonce, uint64 deadline)
    KeyReceipt(uint256 asset, uint32 version, address owner, address consumer,
               string recipient, bytes32 headerHash, uint64 auditSeq, uint64 issuedAt)
    NodeRequest(string method, string path, bytes32 bodyHash, address signer,
                bytes32 nonce, uint64 deadline)

`signable()` is eth-account's `encode_typed_data` (the EIP-712 reference behaviour).
`digest()`, `sign()` and `recover()` hash by hand, because they are on the key-release
hot path (encode_typed_data costs ~0.3 ms a call, this ~15 µs): every field of these
types is atomic, so hashStruct(m) = keccak256(typeHash ‖ enc(field)…) with enc(uintN) =
32-byte big-endian, enc(address) = 12 zero bytes ‖ 20 bytes, enc(bytes32) = the bytes,
enc(string) = keccak256(utf-8); digest = keccak256(0x19 0x01 ‖ domainSeparator ‖
hashStruct). The type hashes and the domain separator are computed once. Tests check
digest() == keccak of signable() (property test) and an independent eth_abi computation.
Signing and recovery are eth-account / eth-keys over that digest (libsecp256k1 through
coincurve when it is installed, which eth-keys picks automatically).
Each message is a frozen dataclass whose constructor validates and normalises every
field (checksummed addresses, 32-byte values), so a bad value from a JSON body is an
InvalidFieldError (4xx) at once.
JSON form: the EIP-712 field names; bytes as "0x…" hex; integers as JSON numbers
(decimal strings are accepted too, for clients without big integers).
"""
from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Callable, ClassVar

from eth_account.messages import SignableMessage, encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_keys import keys as eth_keys
from eth_utils import keccak

from api.auth._fields import (
    hex0x,
    parse_address,
    parse_bytes32,
    parse_signature,
    parse_string,
    parse_uint,
)
from api.errors import BadSignatureError, InvalidFieldError, MalformedBodyError
from vault.age import X25519Recipient
from vault.errors import InvalidKeyError

DOMAIN_NAME = "TwinLedger"
DOMAIN_VERSION = "1"
MAX_PURPOSE_BYTES = 256  # AssetLedger.MAX_PURPOSE_LENGTH
MAX_PATH_BYTES = 8192
EMPTY_BODY_HASH = keccak(b"")
_METHOD = re.compile(r"[A-Z]{1,16}")
_PATH = re.compile(r"/[\x21-\x7e]*")  # printable ASCII, no spaces: the path as sent on the wire

_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]


@dataclass(frozen=True)
class Eip712Domain:
    chain_id: int
    verifying_contract: str
    name: str = DOMAIN_NAME
    version: str = DOMAIN_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "chain_id", parse_uint(self.chain_id, 256, "chainId"))
        object.__setattr__(self, "verifying_contract", parse_address(self.verifying_contract, "verifyingContract"))

    @classmethod
    def from_deployment(cls, deployment: Any) -> "Eip712Domain":
        """The domain of a ledger.deployment.Deployment (verifyingContract = AssetLedger)."""
        return cls(chain_id=deployment.chain_id, verifying_contract=deployment.asset_ledger)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "chainId": self.chain_id,
                "verifyingContract": self.verifying_contract}

    @functools.cached_property
    def separator(self) -> bytes:
        """The EIP-712 domainSeparator (hashStruct of the domain), computed once."""
        return keccak(_DOMAIN_TYPE_HASH + _word_string(self.name) + _word_string(self.version)
                      + _word_uint(self.chain_id) + _word_address(self.verifying_contract))


# -- EIP-712 encoding of atomic values (see the module docstring) ---------------------


def _type_hash(name: str, members: list[dict[str, str]]) -> bytes:
    return keccak(f"{name}({','.join(m['type'] + ' ' + m['name'] for m in members)})".encode())


def _word_uint(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _word_address(value: str) -> bytes:
    return b"\0" * 12 + bytes.fromhex(value[2:])


def _word_string(value: str) -> bytes:
    return keccak(value.encode("utf-8"))


_ENCODERS: dict[str, Callable[[Any], bytes]] = {
    "uint256": _word_uint, "uint64": _word_uint, "uint32": _word_uint, "uint8": _word_uint,
    "address": _word_address, "bytes32": bytes, "string": _word_string,
}
_DOMAIN_TYPE_HASH = _type_hash("EIP712Domain", _DOMAIN_TYPE)


@functools.lru_cache(maxsize=4096)
def _recipient_problem(text: str) -> str | None:
    """Why `text` is not a canonical age X25519 recipient (None if it is). Cached: bech32
    in pure Python costs ~0.3 ms, and a node sees the same few recipients over and over."""
    try:
        canonical = str(X25519Recipient.parse(text))
    except InvalidKeyError as exc:
        return f"is not an age X25519 recipient ({exc})"
    return None if canonical == text else "must be the canonical lower-case age1… form"


def _recipient(value: object, field: str) -> str:
    text = parse_string(value, field, max_bytes=128, min_bytes=1)
    problem = _recipient_problem(text)
    if problem is not None:
        raise InvalidFieldError(field, problem)
    return text


@functools.lru_cache(maxsize=8)
def _private_key(secret: bytes) -> eth_keys.PrivateKey:
    """The signing key object of an account (a node signs every receipt with the same one;
    building it derives the public key, an EC multiplication, each time)."""
    return eth_keys.PrivateKey(secret)


def _address(value: object, field: str) -> str:
    return parse_address(value, field)  # cached for strings in api.auth._fields


def _method(value: object, field: str) -> str:
    if not isinstance(value, str) or not _METHOD.fullmatch(value):
        raise InvalidFieldError(field, "must be an upper-case HTTP method")
    return value


def _path(value: object, field: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_PATH_BYTES or not _PATH.fullmatch(value):
        raise InvalidFieldError(field, f"must be a URL path starting with '/' (printable ASCII, <= {MAX_PATH_BYTES})")
    return value


_PARSERS: dict[str, Callable[[object, str], Any]] = {
    "uint256": lambda v, f: parse_uint(v, 256, f),
    "uint64": lambda v, f: parse_uint(v, 64, f),
    "uint32": lambda v, f: parse_uint(v, 32, f),
    "uint8": lambda v, f: parse_uint(v, 8, f),
    "address": _address,
    "bytes32": parse_bytes32,
}


class _TypedMessage:
    """Shared machinery: `_SCHEMA` lists (eip712 name, solidity type, special parser)."""

    _SCHEMA: ClassVar[tuple[tuple[str, str, Callable[[object, str], Any] | None], ...]]

    def __post_init__(self) -> None:
        for (name, soltype, special), f in zip(self._SCHEMA, fields(self)):  # type: ignore[arg-type]
            parser = special or _PARSERS[soltype]
            object.__setattr__(self, f.name, parser(getattr(self, f.name), name))

    @classmethod
    def type_name(cls) -> str:
        return cls.__name__

    @classmethod
    def eip712_types(cls) -> dict[str, list[dict[str, str]]]:
        return {"EIP712Domain": _DOMAIN_TYPE,
                cls.type_name(): [{"name": n, "type": t} for n, t, _ in cls._SCHEMA]}

    @classmethod
    def _struct_type(cls) -> tuple[bytes, tuple[tuple[str, Callable[[Any], bytes]], ...]]:
        """(typeHash, ((attribute, encoder), …)), computed once per class."""
        cached = cls.__dict__.get("_struct_type_cache")
        if cached is None:
            members = [{"name": n, "type": t} for n, t, _ in cls._SCHEMA]
            cached = (_type_hash(cls.type_name(), members),
                      tuple((f.name, _ENCODERS[t]) for (_, t, _), f in zip(cls._SCHEMA, fields(cls))))  # type: ignore[arg-type]
            setattr(cls, "_struct_type_cache", cached)
        return cached

    def struct_hash(self) -> bytes:
        """EIP-712 hashStruct(message)."""
        type_hash, encoders = self._struct_type()
        return keccak(type_hash + b"".join(encode(getattr(self, attr)) for attr, encode in encoders))

    def to_message(self) -> dict[str, Any]:
        """The EIP-712 `message` object (Python values: ints, bytes, str)."""
        return {n: getattr(self, f.name) for (n, _, _), f in zip(self._SCHEMA, fields(self))}  # type: ignore[arg-type]

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form (bytes as 0x-hex); from_json(to_json()) == self."""
        return {k: hex0x(v) if isinstance(v, bytes) else v for k, v in self.to_message().items()}

    @classmethod
    def from_json(cls, data: object):
        if not isinstance(data, Mapping):
            raise MalformedBodyError(f"{cls.type_name()} must be a JSON object, got {type(data).__name__}")
        names = [n for n, _, _ in cls._SCHEMA]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise InvalidFieldError(str(unknown[0])[:64], f"is not a field of {cls.type_name()}")
        missing = [n for n in names if n not in data]
        if missing:
            raise InvalidFieldError(missing[0], "is missing")
        return cls(*(data[n] for n in names))

    def signable(self, domain: Eip712Domain) -> SignableMessage:
        return encode_typed_data(full_message={
            "types": self.eip712_types(),
            "primaryType": self.type_name(),
            "domain": domain.to_dict(),
            "message": self.to_message(),
        })

    def digest(self, domain: Eip712Domain) -> bytes:
        """The 32-byte EIP-712 hash that is signed: keccak256(0x19 0x01 ‖ domainSeparator ‖ structHash)
        (equal to keccak256 of `signable(domain)`; computed without eth-account, see above)."""
        return keccak(b"\x19\x01" + domain.separator + self.struct_hash())

    def sign(self, domain: Eip712Domain, account: LocalAccount) -> bytes:
        """65-byte signature r ‖ s ‖ v (v = 27/28) by `account`, over `digest(domain)` —
        the same signature as account.sign_message(self.signable(domain))."""
        signature = _private_key(bytes(account.key)).sign_msg_hash(self.digest(domain))
        return signature.r.to_bytes(32, "big") + signature.s.to_bytes(32, "big") + bytes([27 + signature.v])

    def recover(self, domain: Eip712Domain, signature: object) -> str:
        """The checksummed address that signed this message under `domain`. A malformed
        signature is an InvalidFieldError; one that does not recover is BadSignatureError.
        v may be 27/28 or 0/1 (as eth-account's recover_message accepts)."""
        sig = parse_signature(signature)
        v = sig[64] - 27 if sig[64] >= 27 else sig[64]
        try:
            public = eth_keys.Signature(signature_bytes=sig[:64] + bytes([v])).recover_public_key_from_msg_hash(
                self.digest(domain))
        except Exception:  # eth-keys raises several types for invalid r/s/v
            raise BadSignatureError("the signature is not valid") from None
        return public.to_checksum_address()


@dataclass(frozen=True)
class KeyRequest(_TypedMessage):
    """A consumer asks an owner's node for the key of (asset, version), wrapped to `recipient`."""

    asset: int
    version: int
    consumer: str
    recipient: str
    purpose: str
    permission: int
    nonce: bytes
    deadline: int

    _SCHEMA = (
        ("asset", "uint256", None),
        ("version", "uint32", None),
        ("consumer", "address", None),
        ("recipient", "string", _recipient),
        ("purpose", "string", lambda v, f: parse_string(v, f, max_bytes=MAX_PURPOSE_BYTES)),
        ("permission", "uint8", None),
        ("nonce", "bytes32", None),
        ("deadline", "uint64", None),
    )


@dataclass(frozen=True)
class KeyReceipt(_TypedMessage):
    """The owner's node's signed statement that it released a header (audit record `auditSeq`)."""

    asset: int
    version: int
    owner: str
    consumer: str
    recipient: str
    header_hash: bytes
    audit_seq: int
    issued_at: int

    _SCHEMA = (
        ("asset", "uint256", None),
        ("version", "uint32", None),
        ("owner", "address", None),
        ("consumer", "address", None),
        ("recipient", "string", _recipient),
        ("headerHash", "bytes32", None),
        ("auditSeq", "uint64", None),
        ("issuedAt", "uint64", None),
    )


@dataclass(frozen=True)
class NodeRequest(_TypedMessage):
    """Authenticates one HTTP request: method, path (with ?query) and keccak256 of the body."""

    method: str
    path: str
    body_hash: bytes
    signer: str
    nonce: bytes
    deadline: int

    _SCHEMA = (
        ("method", "string", _method),
        ("path", "string", _path),
        ("bodyHash", "bytes32", None),
        ("signer", "address", None),
        ("nonce", "bytes32", None),
        ("deadline", "uint64", None),
    )


def new_nonce() -> bytes:
    """32 random bytes: a fresh request nonce."""
    return secrets.token_bytes(32)


def body_hash(body: bytes) -> bytes:
    """keccak256 of the raw body (of b"" when there is none)."""
    return keccak(body)
