"""Trustless-gateway client (IPFS HTTP Gateway spec, "trustless" subset).

    GET {gateway}/ipfs/{cid}?format=raw   Accept: application/vnd.ipld.raw   one block
    GET {gateway}/ipfs/{cid}?format=car   Accept: application/vnd.ipld.car; version=1;
                                          order=dfs; dups=n                   a whole DAG

No gateway is trusted: every block is hashed against its CID, a CAR must name the
requested root, may only carry blocks linked from blocks already received, each as often
as the blocks received link to it (so nothing unrequested is stored, and a stream that
repeats itself ends), and must end complete. Responses are taken uncompressed only
(Accept-Encoding: identity; a compressed one is refused, so a small body cannot inflate
past the size caps), and each attempt must keep up a minimum pace (`min_rate` bytes/s
on average after `timeout` seconds of grace), so a gateway that drips bytes just inside
httpx's per-read timeout is failed over from too. Any failure — connection error, HTTP
error, malformed CAR, hash mismatch, wrong root, missing block, too slow — moves on to
the next gateway; when all fail, GatewayError lists each gateway's reason. Errors of the
local store (disk full …) are not the gateway's fault and propagate at once.
"""
from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import httpx

from vault.blockstore import BlockStore, FilesystemBlockstore
from vault.car import MAX_SECTION_SIZE, import_blocks, linked_only, read_car, require_root
from vault.cid import CID
from vault.errors import GatewayError, InputValidationError, IntegrityError
from vault.unixfs import export

__all__ = ["CAR_ACCEPT", "RAW_ACCEPT", "GatewayClient"]

CAR_ACCEPT = "application/vnd.ipld.car; version=1; order=dfs; dups=n"
RAW_ACCEPT = "application/vnd.ipld.raw"
T = TypeVar("T")


class _BadResponse(Exception):
    """The gateway answered, but not with what the protocol requires."""


# httpx errors are the gateway's only where its response is read (_Paced turns them into
# _BadResponse there): one raised by a store that talks HTTP itself must not fail over.
_FAILOVER = (_BadResponse, InputValidationError, IntegrityError)
_IDENTITY = {"Accept-Encoding": "identity"}
MIN_RATE = 64 << 10  # bytes/s an attempt must average once its grace (the timeout) is over


class _Paced:
    """The body of one gateway response, chunk by chunk as it arrives, failing with
    _BadResponse when the transfer falls behind the pace (`grace` seconds plus one second
    per `min_rate` bytes received) or when httpx fails. A compressed body is refused
    before it is read, so iter_bytes decodes nothing."""

    def __init__(self, resp: httpx.Response, grace: float, min_rate: float) -> None:
        encoding = resp.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise _BadResponse(f"compressed response ({encoding}) to a request for identity")
        self._chunks = resp.iter_bytes()
        self._start = time.monotonic()
        self._grace = grace
        self._rate = min_rate
        self.received = 0

    def __iter__(self) -> Iterator[bytes]:
        while True:
            try:
                chunk = next(self._chunks, None)
            except httpx.HTTPError as exc:
                raise _BadResponse(f"{type(exc).__name__}: {exc}") from None
            if chunk is None:
                return
            self.received += len(chunk)
            elapsed = time.monotonic() - self._start
            if elapsed > self._grace + self.received / self._rate:
                raise _BadResponse(f"too slow: {self.received} bytes in {elapsed:.1f} s "
                                   f"(at least {self._rate:.0f} bytes/s after {self._grace:.0f} s)")
            yield chunk


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


class GatewayClient:
    """Fetch verified content from trustless gateways, in the order given."""

    def __init__(self, gateways: Sequence[str], transport: httpx.BaseTransport | None = None,
                 timeout: float = 30.0, min_rate: float = MIN_RATE) -> None:
        """`timeout`: seconds httpx waits for any one connect or read, and the grace before
        an attempt must average `min_rate` bytes/s (see the module docstring)."""
        if isinstance(gateways, str) or not gateways:
            raise InputValidationError("GatewayClient needs a non-empty list of gateway URLs")
        if not (timeout > 0 and min_rate > 0):
            raise InputValidationError(f"timeout and min_rate must be positive, got {timeout!r} and {min_rate!r}")
        urls = []
        for url in gateways:
            try:
                parsed = httpx.URL(url)
            except (httpx.InvalidURL, TypeError) as exc:
                raise InputValidationError(f"gateway URL {url!r} is not a URL: {exc}") from None
            if parsed.scheme not in ("http", "https") or not parsed.host or parsed.query or parsed.fragment:
                raise InputValidationError(f"gateway URL must be http(s)://host[:port][/path], got {url!r}")
            urls.append(url.rstrip("/"))
        self.gateways = tuple(urls)
        self._grace = float(timeout)
        self._min_rate = float(min_rate)
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

    @contextlib.contextmanager
    def _get(self, gateway: str, cid: CID, fmt: str, accept: str) -> Iterator[_Paced]:
        """The body of GET {gateway}/ipfs/{cid}?format=fmt, once its status is 200. Only
        the request's own httpx errors become _BadResponse (the caller's, e.g. a store's,
        pass through the with-block unchanged)."""
        request = self._client.build_request("GET", f"{gateway}/ipfs/{cid}", params={"format": fmt},
                                             headers={"Accept": accept, **_IDENTITY})
        try:
            resp = self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _BadResponse(f"{type(exc).__name__}: {exc}") from None
        try:
            if resp.status_code != 200:
                raise _BadResponse(f"HTTP {resp.status_code}")
            yield _Paced(resp, self._grace, self._min_rate)
        finally:
            resp.close()

    def _raw_from(self, gateway: str, cid: CID) -> bytes:
        with self._get(gateway, cid, "raw", RAW_ACCEPT) as body:
            data = bytearray()
            for chunk in body:
                data += chunk
                if len(data) > MAX_SECTION_SIZE:
                    raise _BadResponse(f"block larger than {MAX_SECTION_SIZE} bytes")
        block = bytes(data)
        cid.verify(block)
        return block

    def _car_from(self, gateway: str, root: CID, store: BlockStore) -> int:
        with self._get(gateway, root, "car", CAR_ACCEPT) as body:
            roots, blocks = read_car(_StreamReader(iter(body)))
            require_root(roots, root)
            return import_blocks(store, linked_only(root, blocks))


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, _BadResponse) else f"{type(exc).__name__}: {exc}"
