"""The UnixFS `Data` protobuf (ipfs/specs UNIXFS), the part a file needs.

Byte layout as Kubo (gogo-protobuf, proto2) writes it, fields in number order:

    0x08 varint(Type)                 Raw=0 Directory=1 File=2 Metadata=3 Symlink=4 HAMTShard=5
    [0x12 varint(len) Data]           file bytes carried by this node (leaves only; absent if nil)
    0x18 varint(filesize)             always written (Kubo initialises it to 0)
    {0x20 varint(blocksize)}*         one per child link, unpacked
    (5 hashType, 6 fanout, 7 mode, 8 mtime: never written here; skipped when read)
"""
from __future__ import annotations

from dataclasses import dataclass

from vault._mfbase import FormatError, decode_varint, encode_varint

T_RAW, T_DIRECTORY, T_FILE, T_METADATA, T_SYMLINK, T_HAMT = range(6)
TYPE_NAMES = {0: "raw", 1: "directory", 2: "file", 3: "metadata", 4: "symlink", 5: "hamt-shard"}


def leaf_prefix_suffix(length: int) -> tuple[bytes, bytes]:
    """The bytes around a chunk of `length` bytes inside a dag-pb UnixFS leaf block:
    block = prefix + chunk + suffix (so the chunk is copied only once)."""
    inner_head = b"\x08\x02\x12" + encode_varint(length)
    inner_tail = b"\x18" + encode_varint(length)
    inner_len = len(inner_head) + length + len(inner_tail)
    return b"\x0a" + encode_varint(inner_len) + inner_head, inner_tail


def empty_file_data() -> bytes:
    return b"\x08\x02\x18\x00"


def internal_data(blocksizes: list[int]) -> bytes:
    parts = [b"\x08\x02\x18", encode_varint(sum(blocksizes))]
    for size in blocksizes:
        parts += (b"\x20", encode_varint(size))
    return b"".join(parts)


@dataclass(slots=True)
class UnixFSData:
    type: int
    data: memoryview | None
    filesize: int | None
    blocksizes: list[int]


def decode_data(buf: memoryview) -> UnixFSData:
    pos, end = 0, len(buf)
    type_ = None
    data = None
    filesize = None
    blocksizes: list[int] = []
    while pos < end:
        tag, pos = decode_varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = decode_varint(buf, pos)
            if field == 1:
                type_ = value
            elif field == 3:
                filesize = value
            elif field == 4:
                blocksizes.append(value)
        elif wire == 2:
            length, pos = decode_varint(buf, pos)
            if pos + length > end:
                raise FormatError("UnixFS field runs past the end")
            chunk = buf[pos : pos + length]
            pos += length
            if field == 2:
                data = chunk
            elif field == 4:  # packed blocksizes (proto2 readers accept both)
                p = 0
                while p < len(chunk):
                    value, p = decode_varint(chunk, p)
                    blocksizes.append(value)
        elif wire == 5:
            pos += 4
        elif wire == 1:
            pos += 8
        else:
            raise FormatError(f"unsupported protobuf wire type {wire}")
    if pos != end:
        raise FormatError("UnixFS data truncated")
    if type_ is None:
        raise FormatError("UnixFS data without Type")
    return UnixFSData(type_, data, filesize, blocksizes)
