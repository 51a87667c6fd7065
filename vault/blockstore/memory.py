"""MemoryBlockstore: the in-memory store (tests, short-lived staging)."""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from vault.blockstore._pinning import _Pinning
from vault.cid import CID, RAW
from vault.errors import BlockNotFoundError


class _Gate:
    """A shared/exclusive lock within one process (MemoryBlockstore's import gate)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False

    @contextlib.contextmanager
    def hold(self, exclusive: bool) -> Iterator[None]:
        with self._cond:
            while self._exclusive or (exclusive and self._shared):
                self._cond.wait()
            if exclusive:
                self._exclusive = True
            else:
                self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                if exclusive:
                    self._exclusive = False
                else:
                    self._shared -= 1
                self._cond.notify_all()


class MemoryBlockstore(_Pinning):
    """In-memory store with the same behaviour as FilesystemBlockstore."""

    def __init__(self) -> None:
        self._blocks: dict[bytes, bytes] = {}
        self._pins: set[CID] = set()
        self._lock = threading.RLock()
        self._holding = threading.local()
        self._gates = _Gate()

    def put(self, cid: CID, data: bytes) -> None:
        data = bytes(data)
        cid.verify(data)
        self._blocks[cid.multihash] = data

    def get(self, cid: CID, *, verify: bool = True) -> bytes:
        try:
            data = self._blocks[cid.multihash]
        except KeyError:
            raise BlockNotFoundError(f"block {cid} is not in the store") from None
        if verify:
            cid.verify(data)
        return data

    def has(self, cid: CID) -> bool:
        return cid.multihash in self._blocks

    def delete(self, cid: CID) -> None:
        self._blocks.pop(cid.multihash, None)

    def iter_cids(self) -> Iterator[CID]:
        return iter([CID(1, RAW, mh) for mh in list(self._blocks)])

    def __len__(self) -> int:
        return len(self._blocks)

    def _load_pins(self) -> set[CID]:
        return set(self._pins)

    def _gate(self, exclusive: bool) -> contextlib.AbstractContextManager[None]:
        return self._gates.hold(exclusive)

    def _add_pin(self, root: CID) -> None:
        self._pins.add(root)

    def _remove_pin(self, root: CID) -> bool:
        if root not in self._pins:
            return False
        self._pins.discard(root)
        return True
