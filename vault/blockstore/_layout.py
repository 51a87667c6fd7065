"""Where a FilesystemBlockstore keeps what (go-ds-flatfs "next-to-last/2"): the base32
names of block and pin files, and what each entry of a shard directory is."""
from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from vault.cid import CID, RAW
from vault.errors import InputValidationError, InvalidCIDError

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


_Identity = tuple[int, int]  # (st_dev, st_ino)
_SHARDS: dict[_Identity, tuple[int, frozenset[_Identity]]] = {}  # blocks dir -> (its mtime, ids)


def _identity(path: Path) -> _Identity | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _shard_identities(blocks: Path) -> set[_Identity]:
    """The identities of `blocks` and of each shard in it (a shard bound elsewhere is still
    a shard), kept while the directory's mtime says no shard came or went: 1,024 stats cost
    ~1.5 ms, about 0.5% of a 256 MiB open."""
    try:
        top = os.stat(blocks)
    except OSError:
        return set()
    key = (top.st_dev, top.st_ino)
    known = _SHARDS.get(key)
    if known is None or known[0] != top.st_mtime_ns:
        ids = {key}
        try:
            with os.scandir(blocks) as shards:
                for shard in shards:
                    with contextlib.suppress(OSError):  # one that vanished: the others are still compared
                        if shard.is_dir(follow_symlinks=False):
                            st = shard.stat(follow_symlinks=False)
                            ids.add((st.st_dev, st.st_ino))
        except OSError:  # EMFILE, EIO: what was found now, and nothing kept for the next call
            return ids
        known = _SHARDS[key] = (top.st_mtime_ns, frozenset(ids))
    return set(known[1])


def owned_by(root: Path, path: Path) -> bool:
    """Whether a file written at `path` would land in the store at `root` (see
    FilesystemBlockstore.owns): its directory as the kernel finds it now."""
    try:
        fd = os.open(path.parent, _UP)
    except OSError:  # no such directory: nothing can be written there
        return False
    try:
        return owned_entry(root, fd, path.name)
    finally:
        os.close(fd)


_UP = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC


def owned_entry(root: Path, directory: int, name: str) -> bool:
    """Whether a file named `name` in the open directory `directory` is in the store at
    `root`: the directory or one above it (walked up through `..` from the descriptor, so
    the chain is the directory's own, whatever happens to the path it was opened by) is
    the store's pins, blocks or a shard, or the directory is the store's root and `name`
    one of its own entries."""
    try:
        chain = _chain(directory)
    except OSError as exc:  # EACCES: a directory above that we may not search; fail closed
        raise InputValidationError(f"cannot check that the output is outside the block store at {root}: a "
                                   f"directory above its directory cannot be searched ({exc.strerror})") from None
    if chain[0] == _identity(root) and name in ("blocks", "pins", "pins.json", "gc.lock"):
        return True
    mine = {_identity(root / "pins")} | _shard_identities(root / "blocks")
    mine.discard(None)
    return any(ident in mine for ident in chain)


def _chain(directory: int) -> list[_Identity]:
    """The identities of `directory` and of each directory above it, up to the root."""
    st = os.fstat(directory)
    chain = [(st.st_dev, st.st_ino)]
    cur = os.open("..", _UP, dir_fd=directory)
    try:
        while True:
            st = os.fstat(cur)
            if (st.st_dev, st.st_ino) in chain:  # "/" is its own parent
                return chain
            chain.append((st.st_dev, st.st_ino))
            up = os.open("..", _UP, dir_fd=cur)
            os.close(cur)
            cur = up
    finally:
        os.close(cur)
