"""The dag-pb codec (ipld/specs dag-pb), the strict subset Kubo writes and reads.

Byte layout of a node (protobuf, fields written in this order, which is the canonical
dag-pb form — Links before Data):

    PBNode = { 0x12 varint(len(PBLink)) PBLink }*  [ 0x0a varint(len(Data)) Data ]
    PBLink = 0x0a varint(len(Hash)) Hash           binary CID (required)
             [ 0x12 varint(len(Name)) Name ]       UTF-8 (Kubo always writes it, "" for files)
             [ 0x18 varint(Tsize) ]                cumulative size of the linked DAG

Decoding is strict (no unknown fields, no duplicate fields, links before data) because a
block that decodes two ways is a block two peers disagree about. Callers map FormatError
into IntegrityError (the bytes hashed correctly, so the producer lied about their codec).
"""
from __future__ import annotations

from dataclasses import dataclass

from vault._mfbase import FormatError, decode_varint, encode_varint
from vault.cid import CID
from vault.errors import InvalidCIDError


@dataclass(frozen=True, slots=True)
class PBLink:
    cid: CID
    tsize: int | None = None
    name: str | None = ""


def encode_link(cid_bytes: bytes, tsize: int, name: bytes = b"") -> bytes:
    """One PBLink including its outer 0x12 field tag, as Kubo writes it (Name always present)."""
    body = b"".join((b"\x0a", encode_varint(len(cid_bytes)), cid_bytes,
                     b"\x12", encode_varint(len(name)), name,
                     b"\x18", encode_varint(tsize)))
    return b"\x12" + encode_varint(len(body)) + body


def encode_node(encoded_links: list[bytes], data: bytes | None) -> bytes:
    parts = list(encoded_links)
    if data is not None:
        parts += (b"\x0a", encode_varint(len(data)), data)
    return b"".join(parts)


def _read_bytes(buf: memoryview, pos: int, end: int) -> tuple[memoryview, int]:
    length, pos = decode_varint(buf, pos)
    if pos + length > end:
        raise FormatError("length-delimited field runs past the end")
    return buf[pos : pos + length], pos + length


def _decode_link(buf: memoryview) -> PBLink:
    pos, end = 0, len(buf)
    cid = None
    name: str | None = None
    tsize: int | None = None
    last = 0
    while pos < end:
        tag, pos = decode_varint(buf, pos)
        field = tag >> 3
        if field <= last:
            raise FormatError("PBLink fields out of order or repeated")
        last = field
        if tag == 0x0A:
            raw, pos = _read_bytes(buf, pos, end)
            try:
                cid = CID.decode(raw)
            except InvalidCIDError as exc:
                raise FormatError(f"bad link CID: {exc}") from None
        elif tag == 0x12:
            raw, pos = _read_bytes(buf, pos, end)
            try:
                name = bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                raise FormatError("link name is not UTF-8") from None
        elif tag == 0x18:
            tsize, pos = decode_varint(buf, pos)
        else:
            raise FormatError(f"unexpected PBLink field tag 0x{tag:x}")
    if cid is None:
        raise FormatError("PBLink without Hash")
    return PBLink(cid, tsize, name)


def decode_node(block: bytes | memoryview) -> tuple[list[PBLink], memoryview | None]:
    """Decode a dag-pb block into (links, data); data is None when absent."""
    buf = memoryview(block)
    pos, end = 0, len(buf)
    links: list[PBLink] = []
    data = None
    while pos < end:
        tag, pos = decode_varint(buf, pos)
        if tag == 0x12:
            if data is not None:
                raise FormatError("PBNode Links after Data")
            raw, pos = _read_bytes(buf, pos, end)
            links.append(_decode_link(raw))
        elif tag == 0x0A:
            if data is not None:
                raise FormatError("PBNode Data repeated")
            data, pos = _read_bytes(buf, pos, end)
        else:
            raise FormatError(f"unexpected PBNode field tag 0x{tag:x}")
    return links, data


def link_cids(block: bytes | memoryview) -> list[CID]:
    """The CIDs a dag-pb block links to, in order."""
    return [link.cid for link in decode_node(block)[0]]
