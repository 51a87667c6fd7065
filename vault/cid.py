"""Content identifiers (CIDs), sha2-256 only.

Binary layouts (multiformats/cid):

    CIDv0 = multihash                                  (always dag-pb, sha2-256)
    CIDv1 = varint(1) || varint(codec) || multihash
    multihash = varint(0x12 sha2-256) || varint(32) || 32-byte digest

String forms accepted and produced:

    CIDv0: base58btc of the multihash, 46 characters starting with "Qm"
    CIDv1: multibase prefix "b" + base32 lower-case without padding

Any other multibase (z, B, f, m, u, ...) or hash function is refused with InvalidCIDError:
TwinLedger produces only these, and accepting fewer forms means fewer ways to be confused.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from vault._mfbase import FormatError, b32_decode, b32_encode, b58_decode, b58_encode, decode_varint, encode_varint
from vault.errors import BlockMismatchError, InvalidCIDError

RAW = 0x55
DAG_PB = 0x70
DAG_CBOR = 0x71
SHA2_256 = 0x12
SHA2_256_LEN = 32
_MH_PREFIX = bytes([SHA2_256, SHA2_256_LEN])
_MULTIBASE_NAMES = {
    "z": "base58btc", "B": "base32upper", "f": "base16", "F": "base16upper", "m": "base64",
    "M": "base64pad", "u": "base64url", "U": "base64urlpad", "k": "base36", "K": "base36upper",
    "c": "base32pad", "v": "base32hex", "t": "base32hexpad", "h": "base32z", "9": "base10",
}


@dataclass(frozen=True, slots=True)
class CID:
    """A CID: version (0 or 1), multicodec `codec`, and the full sha2-256 multihash bytes."""

    version: int
    codec: int
    multihash: bytes

    def __post_init__(self) -> None:
        if self.version not in (0, 1):
            raise InvalidCIDError(f"unsupported CID version {self.version}")
        if self.version == 0 and self.codec != DAG_PB:
            raise InvalidCIDError("a CIDv0 is always dag-pb")
        if not 0 <= self.codec < 1 << 63:
            raise InvalidCIDError(f"codec out of range: {self.codec}")
        _check_multihash(self.multihash)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_sha256(cls, data: bytes | bytearray | memoryview, codec: int = RAW, version: int = 1) -> CID:
        return cls(version, codec, _MH_PREFIX + hashlib.sha256(data).digest())

    @classmethod
    def from_digest(cls, digest: bytes, codec: int = RAW, version: int = 1) -> CID:
        return cls(version, codec, _MH_PREFIX + digest)

    @classmethod
    def decode(cls, value: str | bytes | bytearray | memoryview) -> CID:
        """Parse a CID string (Qm… or b…) or its binary form."""
        if isinstance(value, str):
            return cls._decode_str(value)
        if isinstance(value, (bytes, bytearray, memoryview)):
            cid, end = cls.read_from(bytes(value), 0)
            if end != len(value):
                raise InvalidCIDError("trailing bytes after CID")
            return cid
        raise InvalidCIDError(f"a CID is a str or bytes, not {type(value).__name__}")

    @classmethod
    def _decode_str(cls, text: str) -> CID:
        if not text:
            raise InvalidCIDError("empty CID string")
        if len(text) > 200:
            raise InvalidCIDError("CID string too long")
        if text.startswith("Qm"):
            if len(text) != 46:
                raise InvalidCIDError(f"a CIDv0 has 46 characters, got {len(text)}")
            try:
                mh = b58_decode(text)
            except FormatError as exc:
                raise InvalidCIDError(f"bad CIDv0 {text!r}: {exc}") from None
            cid = cls(0, DAG_PB, mh)
            if str(cid) != text:  # pragma: no cover - 46 chars of Qm always round-trip
                raise InvalidCIDError(f"non-canonical CIDv0 {text!r}")
            return cid
        prefix = text[0]
        if prefix != "b":
            name = _MULTIBASE_NAMES.get(prefix, "unknown")
            raise InvalidCIDError(
                f"unsupported multibase {prefix!r} ({name}) in {text[:16]!r}…: "
                "only base32 lower-case ('b…') and base58btc CIDv0 ('Qm…') are accepted")
        try:
            raw = b32_decode(text[1:])
        except FormatError as exc:
            raise InvalidCIDError(f"bad base32 CID {text[:16]!r}…: {exc}") from None
        cid = cls.decode(raw)
        if cid.version == 0:
            raise InvalidCIDError("a CIDv0 must be written in base58btc (Qm…)")
        return cid

    @classmethod
    def read_from(cls, buf: bytes | memoryview, offset: int = 0) -> tuple[CID, int]:
        """Parse a binary CID at `offset` (as in CAR sections); return (cid, end offset)."""
        try:
            if buf[offset : offset + 2] == _MH_PREFIX:
                end = offset + 2 + SHA2_256_LEN
                if end > len(buf):
                    raise InvalidCIDError("truncated CIDv0")
                return cls(0, DAG_PB, bytes(buf[offset:end])), end
            version, pos = decode_varint(buf, offset)
            if version != 1:
                raise InvalidCIDError(f"unsupported CID version {version}")
            codec, pos = decode_varint(buf, pos)
            mh_start = pos
            code, pos = decode_varint(buf, pos)
            length, pos = decode_varint(buf, pos)
        except FormatError as exc:
            raise InvalidCIDError(f"bad binary CID: {exc}") from None
        if code != SHA2_256:
            raise InvalidCIDError(f"unsupported multihash function 0x{code:x}: only sha2-256 (0x12)")
        if length != SHA2_256_LEN:
            raise InvalidCIDError(f"sha2-256 digest must be 32 bytes, got {length}")
        end = pos + length
        if end > len(buf):
            raise InvalidCIDError("truncated multihash digest")
        return cls(1, codec, bytes(buf[mh_start:end])), end

    # -- views --------------------------------------------------------------------------
    @property
    def digest(self) -> bytes:
        return self.multihash[2:]

    def to_bytes(self) -> bytes:
        if self.version == 0:
            return self.multihash
        return encode_varint(1) + encode_varint(self.codec) + self.multihash

    def __str__(self) -> str:
        if self.version == 0:
            return b58_encode(self.multihash)
        return "b" + b32_encode(self.to_bytes())

    def __repr__(self) -> str:
        return f"CID({str(self)!r})"

    def to_v1(self) -> CID:
        return self if self.version == 1 else CID(1, self.codec, self.multihash)

    def verify(self, data: bytes | bytearray | memoryview) -> None:
        """Raise BlockMismatchError unless sha2-256(data) is this CID's digest."""
        if hashlib.sha256(data).digest() != self.multihash[2:]:
            raise BlockMismatchError(f"block does not hash to {self}")


def _check_multihash(mh: bytes) -> None:
    if not isinstance(mh, bytes):
        raise InvalidCIDError("multihash must be bytes")
    if len(mh) < 2:
        raise InvalidCIDError("multihash too short")
    if mh[0] != SHA2_256:
        raise InvalidCIDError(f"unsupported multihash function 0x{mh[0]:x}: only sha2-256 (0x12)")
    if mh[1] != SHA2_256_LEN or len(mh) != 2 + SHA2_256_LEN:
        raise InvalidCIDError("sha2-256 multihash must carry a 32-byte digest")
