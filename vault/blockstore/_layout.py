"""Where a FilesystemBlockstore keeps what (go-ds-flatfs "next-to-last/2"): the base32
names of block and pin files, and what each entry of a shard directory is."""
from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

from vault.cid import CID, RAW
from vault.errors import InvalidCIDError

B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
SHARDING = "/repo/flatfs/shard/v1/next-to-last/2"  # what go-ds-flatfs writes for this layout


def b32_key(multihash: bytes) -> str:
    return base64.b32encode(multihash).decode("ascii").rstrip("=")


def b32_bytes(key: str) -> bytes:
    """The bytes a b32_key() names (binascii.Error, a ValueError, if it names none)."""
    return base64.b32decode(key + "=" * (-len(key) % 8))


def block_cid(key: str) -> CID | None:
    """The raw CID a block file's name stands for, or None if it names no sha2-256 multihash."""
    try:
        return CID(1, RAW, b32_bytes(key))
    except (ValueError, InvalidCIDError):
        return None


STALE_TEMP = 3600.0  # seconds: a temp file older than this in the store is a crashed write's


def scan(blocks: Path) -> Iterator[tuple[CID | None, Path, str]]:
    """(cid, path, kind) of each entry in the shard directories. kind: "block" (a
    regular file, canonical name, right shard), "misplaced" (a block file under another
    name or in another shard: get() never reads it), "temp" (a put's or a pin's temp
    file) or "other" (left alone: not ours to remove)."""
    with os.scandir(blocks) as shards:
        dirs = sorted((e.name, e.path) for e in shards if e.is_dir(follow_symlinks=False))
    for name, shard_path in dirs:
        with os.scandir(shard_path) as entries:
            found = sorted((e.name, e.is_file(follow_symlinks=False)) for e in entries)
        for entry, regular in found:
            path = Path(shard_path, entry)
            if not regular:
                yield None, path, "other"
            elif entry.startswith("."):
                yield None, path, "temp" if entry.endswith(".tmp") else "other"
            elif entry.endswith(".data"):
                cid = block_cid(entry[: -len(".data")])
                if cid is None:
                    yield None, path, "other"
                elif b32_key(cid.multihash) + ".data" == entry and name == entry[-8:-6]:
                    yield cid, path, "block"
                else:
                    yield cid, path, "misplaced"
            else:
                yield None, path, "other"
