"""Streaming UnixFS file exporter: walks the DAG depth-first, verifies every block against
its CID, and checks the sizes each node claims (filesize, blocksizes) against what its
children really hold, so a DAG that lies about its shape fails instead of returning
shifted bytes. Memory: the links of one node per level of the tree, at most
MAX_PENDING_LINKS in all; time: a subtree of size 0 is walked once however often it is
linked (see _Walk).
"""
from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass

from vault._mfbase import FormatError
from vault._mfdagpb import decode_node
from vault.cid import CID, DAG_PB, RAW
from vault.errors import InputValidationError, IntegrityError
from vault.unixfs._pb import T_FILE, T_RAW, TYPE_NAMES, decode_data

GetBlock = Callable[[CID], bytes]
Verify = Callable[[CID, bytes], None]
MAX_DEPTH = 32  # Kubo's deepest realistic balanced tree is < 8 levels


def export(root: CID, get_block: GetBlock, verify: Verify | None = None) -> Iterator[bytes]:
    """Yield the bytes of the UnixFS file `root`; raises BlockMismatchError for a block
    that does not hash to its CID, IntegrityError for an inconsistent DAG,
    InputValidationError for something that is not a file. `verify(cid, block)` checks
    each block (default: cid.verify); only for a get_block that has checked some blocks
    itself and vouches for exactly those (vault._pipeline._Prefetch)."""
    if not isinstance(root, CID):
        raise InputValidationError(f"export needs a CID, not {type(root).__name__}")
    return _iterate(root, get_block, verify or _verify)


@dataclass(frozen=True, slots=True)
class DagStat:
    """What a DAG's root block says about it. `size`: the bytes of the UnixFS file (None
    when the root is not a file); `dag_size`: the bytes of all its blocks, the root's own
    plus the Tsize of each link (Kubo's CumulativeSize; 0 for a link without one)."""

    size: int | None
    dag_size: int


def dag_stat(root: CID, get_block: GetBlock) -> DagStat:
    """Read and verify the root block only, for a progress bar's total: the sizes are what
    the root claims; export() checks them against the blocks under it. `size` is None
    unless the root is a raw block or a UnixFS file; `dag_size` is the root's own length
    plus its links' Tsize (a subtree linked twice counts twice)."""
    if not isinstance(root, CID):
        raise InputValidationError(f"dag_stat needs a CID, not {type(root).__name__}")
    block = get_block(root)
    root.verify(block)
    if root.codec != DAG_PB:
        return DagStat(len(block) if root.codec == RAW else None, len(block))
    try:
        links, data = decode_node(block)
    except FormatError as exc:
        raise IntegrityError(f"malformed dag-pb node {root}: {exc}") from None
    try:
        node = decode_data(data) if data is not None else None
    except FormatError:
        node = None  # dag-pb that is not UnixFS (a CAR export takes any): no file size
    size = None
    if node is not None and node.type in (T_FILE, T_RAW):
        size = (len(node.data) if node.data is not None else 0) + sum(node.blocksizes)
    return DagStat(size, len(block) + sum(link.tsize or 0 for link in links))


def _verify(cid: CID, block: bytes) -> None:
    cid.verify(block)


MAX_PENDING_LINKS = 1 << 17  # links the levels above a node may hold (Kubo: < 8 x 1024; ~250 bytes each)


def _iterate(root: CID, get_block: GetBlock, verify: Verify) -> Iterator[bytes]:
    yield from _Walk(get_block, verify).node(root, None, 0)


class _Walk:
    """One export's walk. Two bounds a DAG that is valid block by block cannot get past:
    - a subtree of size 0 is walked (fetched, verified) once, however often it is linked:
      it yields nothing, so its repeats need no second look (only its height, for the
      depth limit), and without this a few KB of nodes that each link one empty child
      many times cost L**depth fetches (the walk's time would follow the links, not the
      file's bytes);
    - the links held by the levels above a node (decoded, their node not finished) are
      at most MAX_PENDING_LINKS when it is entered: 32 levels of 2 MiB nodes would hold
      ~340 MiB before the first byte. One node's own links are not counted against it:
      they are decoded already, and a flat file of any width is refused by nothing else."""

    def __init__(self, get_block: GetBlock, verify: Verify) -> None:
        self._get = get_block
        self._verify = verify
        self._empty: dict[bytes, int] = {}  # CID (binary) of a subtree found to hold 0 bytes: its height
        self._pending = 0

    def node(self, cid: CID, expected: int | None, depth: int) -> Generator[bytes, None, tuple[int, int]]:
        """Yield the subtree's bytes; return (its size, its height: 0 for a leaf)."""
        if depth > MAX_DEPTH:
            raise IntegrityError(f"UnixFS DAG deeper than {MAX_DEPTH} levels at {cid}")
        if cid.codec not in (RAW, DAG_PB):
            raise InputValidationError(f"cannot export codec 0x{cid.codec:x} ({cid}) as a UnixFS file")
        if expected == 0:
            height = self._empty.get(cid.to_bytes())
            if height is not None:
                if depth + height > MAX_DEPTH:
                    raise IntegrityError(f"UnixFS DAG deeper than {MAX_DEPTH} levels under {cid}")
                return 0, height
        block = self._get(cid)
        self._verify(cid, block)
        if cid.codec == RAW:
            if expected is not None and len(block) != expected:
                raise IntegrityError(f"raw leaf {cid} holds {len(block)} bytes, parent says {expected}")
            if block:
                yield block
            else:
                self._empty[cid.to_bytes()] = 0
            return len(block), 0
        try:
            links, data = decode_node(block)
            if data is None:
                raise FormatError("dag-pb node without UnixFS data")
            node = decode_data(data)
        except FormatError as exc:
            raise IntegrityError(f"malformed UnixFS node {cid}: {exc}") from None
        if node.type not in (T_FILE, T_RAW):
            name = TYPE_NAMES.get(node.type, f"type {node.type}")
            raise InputValidationError(f"{cid} is a UnixFS {name}, not a file")
        if len(links) != len(node.blocksizes):
            raise IntegrityError(f"{cid} has {len(links)} links but {len(node.blocksizes)} blocksizes")
        own = len(node.data) if node.data is not None else 0
        claimed = own + sum(node.blocksizes)
        if node.filesize is not None and node.filesize != claimed:
            raise IntegrityError(f"{cid} claims filesize {node.filesize}, its parts hold {claimed}")
        if expected is not None and claimed != expected:
            raise IntegrityError(f"{cid} holds {claimed} bytes, parent says {expected}")
        if links and self._pending > MAX_PENDING_LINKS:
            raise IntegrityError(f"UnixFS DAG too wide at {cid}: the levels above it hold {self._pending} links "
                                 f"(at most {MAX_PENDING_LINKS})")
        self._pending += len(links)
        height = 0
        try:
            if own:
                yield bytes(node.data)
            for link, size in zip(links, node.blocksizes):
                _, below = yield from self.node(link.cid, size, depth + 1)
                height = max(height, below + 1)
        finally:
            self._pending -= len(links)
        if not claimed:
            self._empty[cid.to_bytes()] = height
        return claimed, height
