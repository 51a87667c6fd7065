"""Streaming UnixFS file importer, producing exactly Kubo's (boxo) CIDs.

Kubo's balanced builder (boxo/ipld/unixfs/importer/balanced) reads fixed-size chunks, puts
the first chunk as the root, and whenever more data follows a full tree of depth d it makes
a new root whose first child is the old one and fills the rest depth-first. We reach the
same shape streaming: `_levels[i]` holds the pending links to finished depth-i subtrees
(level 0 = leaves). A link is appended to a level only after that level, if already full
(max_links), has been closed into one node and pushed up a level. At the end the levels
are closed bottom-up. Memory: one partial chunk + at most max_links links per level.

Nodes (see _pb / vault._mfdagpb for the byte layouts):
  leaf, raw-leaves profile:  raw block = the chunk bytes, CIDv1 raw
  leaf, otherwise:           dag-pb { Data: UnixFS{File, Data=chunk, filesize=len} }
  internal:                  dag-pb { Links: (cid, Name "", Tsize)*, Data: UnixFS{File,
                             filesize=sum, blocksizes=[child file bytes]*} }
  empty file:                raw empty block (raw-leaves) or dag-pb { Data: UnixFS{File, filesize 0} }
  one-chunk file:            just its leaf
Tsize of a link = encoded size of the child block + the Tsizes of the child's links.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

from vault._mfdagpb import encode_link, encode_node
from vault.cid import CID, DAG_PB, RAW
from vault.errors import InputValidationError
from vault.unixfs._pb import empty_file_data, internal_data, leaf_prefix_suffix
from vault.unixfs._profiles import DEFAULT_PROFILE, Profile, resolve_profile

PutBlock = Callable[[CID, bytes], None]
_Link = tuple[CID, int, int]  # (cid, tsize, file bytes below it)


class Importer:
    """Import one file written in pieces of any size. `put_block=None` only hashes.

    lend_chunks=True: write_chunk() hands put_block a view of the caller's chunk instead of
    a bytes copy, valid only during the call; only for a store that writes the block out
    before it returns and keeps no reference (FilesystemBlockstore)."""

    def __init__(self, profile: str | Profile = DEFAULT_PROFILE, put_block: PutBlock | None = None,
                 *, lend_chunks: bool = False) -> None:
        self.profile = resolve_profile(profile)
        self._put = put_block
        self._lend = lend_chunks
        self._cs = self.profile.chunk_size
        self._max = self.profile.max_links
        self._node_version = self.profile.cid_version
        self._buf = bytearray(self._cs)  # the partial chunk, reused (no reallocation)
        self._fill = 0
        self._levels: list[list[_Link]] = [[]]
        self._written = 0
        self._short = False  # a chunk shorter than chunk_size was added: it must be the last
        self._leaves = 0
        self._root: CID | None = None
        full_pre, full_suf = leaf_prefix_suffix(self._cs)
        self._full_affix = (full_pre, full_suf)
        self.size: int | None = None

    # -- input ----------------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._root is not None:
            raise InputValidationError("write() after finish()")
        if self._short:
            raise InputValidationError("write() after the last, short chunk")
        mv = memoryview(data)
        if mv.ndim != 1 or mv.itemsize != 1:
            mv = mv.cast("B")
        n = len(mv)
        pos = 0
        cs = self._cs
        if self._fill:
            take = min(cs - self._fill, n)
            self._buf[self._fill : self._fill + take] = mv[:take]
            self._fill += take
            pos = take
            if self._fill == cs:
                self._chunk(memoryview(self._buf))
                self._fill = 0
        while n - pos >= cs:  # whole chunks straight from the caller's buffer
            self._chunk(mv[pos : pos + cs])
            pos += cs
        if pos < n:
            self._buf[: n - pos] = mv[pos:]
            self._fill = n - pos
        self._written += n

    def write_chunk(self, chunk: bytes | bytearray | memoryview, digest: bytes | None = None) -> None:
        """Add one whole leaf: chunk_size bytes, or fewer for the file's last one (nothing
        may follow it). Only between whole chunks (no partial chunk from write() pending).
        `digest` is the SHA-256 of `chunk` when the caller has already hashed it (raw-leaves
        profiles only: a dag-pb leaf hashes its wrapping too), so it is not hashed twice.
        Same CIDs as write()."""
        if self._root is not None:
            raise InputValidationError("write_chunk() after finish()")
        n = len(chunk)
        if self._fill or self._short or not 0 < n <= self._cs:
            raise InputValidationError(f"write_chunk() needs a whole chunk of 1..{self._cs} bytes at a chunk boundary")
        if digest is not None and not self.profile.raw_leaves:
            raise InputValidationError("a precomputed digest only applies to raw leaves")
        if not self.profile.raw_leaves:
            self._short = n < self._cs
            self._chunk(chunk)  # a dag-pb leaf: its own block, wrapping the chunk
            self._written += n
            return
        cid = CID.from_digest(digest if digest is not None else hashlib.sha256(chunk).digest(), RAW, 1)
        if self._put is not None:
            self._put(cid, chunk if self._lend else bytes(chunk))  # type: ignore[arg-type]
        self._raw_leaf(cid, n)

    def add_leaf(self, cid: CID, size: int) -> None:
        """Add one whole raw leaf that the caller has hashed and stored itself (raw-leaves
        profiles only): `cid` is the CIDv1 raw of its `size` bytes. Same rules and same
        CIDs as write_chunk(); nothing is put."""
        if self._root is not None:
            raise InputValidationError("add_leaf() after finish()")
        if not self.profile.raw_leaves:
            raise InputValidationError("add_leaf() only applies to raw-leaves profiles")
        if not isinstance(cid, CID) or cid.codec != RAW or cid.version != 1:
            raise InputValidationError(f"add_leaf() needs a CIDv1 raw, got {cid!r}")
        if self._fill or self._short or not 0 < size <= self._cs:
            raise InputValidationError(f"add_leaf() needs a whole leaf of 1..{self._cs} bytes at a chunk boundary")
        self._raw_leaf(cid, size)

    def _raw_leaf(self, cid: CID, n: int) -> None:
        self._short = n < self._cs
        self._leaves += 1
        self._add(0, (cid, n, n))
        self._written += n

    def finish(self) -> CID:
        """Close the file and return its root CID (idempotent)."""
        if self._root is not None:
            return self._root
        if self._fill:
            self._chunk(memoryview(self._buf)[: self._fill])
            self._fill = 0
        elif self._leaves == 0:
            self._empty_leaf()
        levels = self._levels
        if len(levels) == 1 and len(levels[0]) == 1:
            root = levels[0][0][0]
        else:
            i = 0
            while True:
                link = self._node(levels[i])
                if i == len(levels) - 1:
                    root = link[0]
                    break
                levels[i] = []
                self._add(i + 1, link)
                i += 1
        self._levels = []
        self._buf = bytearray()
        self.size = self._written
        self._root = root
        return root

    # -- tree -----------------------------------------------------------------------------
    def _emit(self, block: bytes, codec: int, version: int) -> CID:
        cid = CID.from_sha256(block, codec, version)
        if self._put is not None:
            self._put(cid, block)
        return cid

    def _chunk(self, view: bytes | bytearray | memoryview) -> None:
        length = len(view)
        if self.profile.raw_leaves:
            if self._put is None:
                cid = CID.from_sha256(view, RAW, 1)
            else:
                cid = self._emit(bytes(view), RAW, 1)
            tsize = length
        else:
            pre, suf = self._full_affix if length == self._cs else leaf_prefix_suffix(length)
            block = b"".join((pre, view, suf))
            cid = self._emit(block, DAG_PB, self._node_version)
            tsize = len(block)
        self._leaves += 1
        self._add(0, (cid, tsize, length))

    def _empty_leaf(self) -> None:
        if self.profile.raw_leaves:
            cid = self._emit(b"", RAW, 1)
            tsize = 0
        else:
            block = encode_node([], empty_file_data())
            cid = self._emit(block, DAG_PB, self._node_version)
            tsize = len(block)
        self._leaves += 1
        self._add(0, (cid, tsize, 0))

    def _add(self, level: int, link: _Link) -> None:
        levels = self._levels
        if level == len(levels):
            levels.append([])
        if len(levels[level]) == self._max:
            parent = self._node(levels[level])
            levels[level] = []
            self._add(level + 1, parent)
        levels[level].append(link)

    def _node(self, links: list[_Link]) -> _Link:
        encoded = [encode_link(cid.to_bytes(), tsize) for cid, tsize, _ in links]
        block = encode_node(encoded, internal_data([size for _, _, size in links]))
        cid = self._emit(block, DAG_PB, self._node_version)
        return cid, len(block) + sum(t for _, t, _ in links), sum(s for _, _, s in links)


def import_stream(chunks: Iterable[bytes | bytearray | memoryview], profile: str | Profile = DEFAULT_PROFILE,
                  put_block: PutBlock | None = None) -> CID:
    importer = Importer(profile, put_block)
    for piece in chunks:
        importer.write(piece)
    return importer.finish()


def import_bytes(data: bytes | bytearray | memoryview, profile: str | Profile = DEFAULT_PROFILE,
                 put_block: PutBlock | None = None) -> CID:
    return import_stream((data,), profile, put_block)
