"""Trustless-gateway client (IPFS HTTP Gateway spec, "trustless" subset).

    GET {gateway}/ipfs/{cid}?format=raw   Accept: application/vnd.ipld.raw   one block
    GET {gateway}/ipfs/{cid}?format=car   Accept: application/vnd.ipld.car; version=1;
                                          order=dfs; dups=n                   a whole DAG

No gateway is trusted: every block is hashed against its CID, a CAR must name the
requested root, may only carry blocks linked from blocks already received (so nothing
unrequested is stored), and must end complete. Any failure — connection error, HTTP
error, malformed CAR, hash mismatch, wrong root, missing block — moves on to the next
gateway; when all fail, GatewayError lists each gateway's reason. Errors of the local
store (disk full …) are not the gateway's fault and propagate at once.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import httpx

from vault._mfbase import FormatError
from vault._mfdagpb import link_cids
from vault.blockstore import BlockStore, FilesystemBlockstore
from vault.car import MAX_SECTION_SIZE, import_blocks, read_car
from vault.cid import CID, DAG_PB, RAW
from vault.errors import GatewayError, InputValidationError, IntegrityError
from vault.unixfs import export

__all__ = ["CAR_ACCEPT", "RAW_ACCEPT", "GatewayClient"]

CAR_ACCEPT = "application/vnd.ipld.car; version=1; order=dfs; dups=n"
RAW_ACCEPT = "application/vnd.ipld.raw"
T = TypeVar("T")


class _BadResponse(Exception):
    """The gateway answered, but not with what the protocol requires."""


_FAILOVER = (httpx.HTTPError, _BadResponse, InputValidationError, IntegrityError)


class _StreamReader:
    """A read(n) file object over an iterator of byte chunks (for read_car)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = bytearray()

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buf += chunk
        if n < 0 or n >= len(self._buf):
            out = bytes(self._buf)
            self._buf.clear()
            return out
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out


def _linked_only(root: CID, blocks: Iterator[tuple[CID, bytes]]) -> Iterator[tuple[CID, bytes]]:
    """Pass blocks through only if each was linked from the root or an earlier block;
    at the end, require that every linked block arrived."""
    pending = {root.to_bytes()}
    done: set[bytes] = set()
    fanout: dict[bytes, int] = {}  # links per received block
    references = 1
    received = 0
    for cid, data in blocks:
        received += 1
        key = cid.to_bytes()
        if key in done:  # a duplicate (dups=y) re-sends its subtree: count its links again
            references += fanout[key]
            if received > references:
                raise IntegrityError(f"CAR for {root} repeats blocks more often than the DAG references them")
            continue
        if key not in pending:
            raise IntegrityError(f"CAR for {root} carries block {cid}, which no earlier block links to")
        pending.discard(key)
        done.add(key)
        if cid.codec == DAG_PB:
            try:
                links = link_cids(data)
            except FormatError as exc:
                raise IntegrityError(f"malformed dag-pb block {cid}: {exc}") from None
            references += len(links)
            fanout[key] = len(links)
            pending.update(k for k in (c.to_bytes() for c in links) if k not in done)
        elif cid.codec == RAW:
            fanout[key] = 0
        else:
            raise IntegrityError(f"cannot check links of codec 0x{cid.codec:x} ({cid})")
        yield cid, data
    if pending:
        example = CID.decode(next(iter(pending)))
        raise IntegrityError(f"CAR for {root} is incomplete: {len(pending)} block(s) missing, e.g. {example}")


class GatewayClient:
    """Fetch verified content from trustless gateways, in the order given."""

    def __init__(self, gateways: Sequence[str], transport: httpx.BaseTransport | None = None,
                 timeout: float = 30.0) -> None:
        if isinstance(gateways, str) or not gateways:
            raise InputValidationError("GatewayClient needs a non-empty list of gateway URLs")
        urls = []
        for url in gateways:
            parsed = httpx.URL(url)
            if parsed.scheme not in ("http", "https") or not parsed.host:
                raise InputValidationError(f"gateway URL must be http(s)://host[:port], got {url!r}")
            urls.append(url.rstrip("/"))
        self.gateways = tuple(urls)
        self._client = httpx.Client(transport=transport, timeout=timeout, follow_redirects=False)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public -----------------------------------------------------------------------------
    def fetch_raw(self, cid: CID) -> bytes:
        """One block, verified against `cid`."""
        return self._each(cid, lambda gw: self._raw_from(gw, cid))

    def fetch_car(self, root: CID, store: BlockStore) -> int:
        """Fetch the whole DAG under `root` as a CAR into `store`; returns the number of
        blocks added. Nothing is stored before the whole CAR verified (a gateway that sends
        a bad one is failed over from with the store untouched); a store that fails while
        writing leaves the blocks written so far unpinned (vault.car.import_blocks)."""
        return self._each(root, lambda gw: self._car_from(gw, root, store))

    def fetch_file(self, root: CID, *, via: str = "car") -> Iterator[bytes]:
        """The bytes of the UnixFS file `root`, verified. via="car": one CAR request per
        gateway, staged in a temporary on-disk store, then streamed (memory bounded, disk =
        file size, nothing yielded before the whole DAG verified). via="raw": one
        ?format=raw request per block, failing over block by block; bytes flow at once."""
        if via == "raw":
            return export(root, self.fetch_raw)
        if via != "car":
            raise InputValidationError(f"via must be 'car' or 'raw', not {via!r}")
        return self._file_via_car(root)

    # -- internals --------------------------------------------------------------------------
    def _file_via_car(self, root: CID) -> Iterator[bytes]:
        with tempfile.TemporaryDirectory(prefix="twinledger-fetch-") as tmp:
            store = FilesystemBlockstore(Path(tmp), sync=False)
            self.fetch_car(root, store)
            yield from export(root, store.get)

    def _each(self, cid: CID, attempt: Callable[[str], T]) -> T:
        if not isinstance(cid, CID):
            raise InputValidationError(f"expected a CID, not {type(cid).__name__}")
        failures: list[tuple[str, str]] = []
        for gateway in self.gateways:
            try:
                return attempt(gateway)
            except _FAILOVER as exc:
                failures.append((gateway, _reason(exc)))
        raise GatewayError(str(cid), failures)

    def _raw_from(self, gateway: str, cid: CID) -> bytes:
        url = f"{gateway}/ipfs/{cid}"
        with self._client.stream("GET", url, params={"format": "raw"}, headers={"Accept": RAW_ACCEPT}) as resp:
            _check_status(resp)
            body = bytearray()
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) > MAX_SECTION_SIZE:
                    raise _BadResponse(f"block larger than {MAX_SECTION_SIZE} bytes")
        data = bytes(body)
        cid.verify(data)
        return data

    def _car_from(self, gateway: str, root: CID, store: BlockStore) -> int:
        url = f"{gateway}/ipfs/{root}"
        with self._client.stream("GET", url, params={"format": "car"}, headers={"Accept": CAR_ACCEPT}) as resp:
            _check_status(resp)
            roots, blocks = read_car(_StreamReader(resp.iter_bytes()))
            if not any(r.multihash == root.multihash for r in roots):
                raise _BadResponse(f"CAR is for root(s) {', '.join(map(str, roots))}, not {root}")
            return import_blocks(store, _linked_only(root, blocks))


def _check_status(resp: httpx.Response) -> None:
    if resp.status_code != 200:
        raise _BadResponse(f"HTTP {resp.status_code}")


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, _BadResponse) else f"{type(exc).__name__}: {exc}"
