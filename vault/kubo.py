"""A thin client for the Kubo RPC API (https://docs.ipfs.tech/reference/kubo/rpc/).

Every call is `POST /api/v0/<command>`; arguments go in the query string (`arg=` may
repeat), files go in a `multipart/form-data` body whose parts look like

    --<boundary>
    Content-Disposition: form-data; name="file"; filename="<url-escaped name>"
    Content-Type: application/octet-stream

    <bytes...>
    --<boundary>--

Uploads (`add`, `dag/import`) and downloads (`cat`, `dag/export`) stream, so memory stays
bounded whatever the size. Failures are mapped once, in `_send`:

- the daemon cannot be reached (refused, DNS, timeout)  -> KuboUnavailableError
- HTTP 4xx/5xx, body `{"Message": ..., "Code": ..., "Type": "error"}` -> KuboError
  (message, Kubo's code, HTTP status); a missing block -> BlockNotFoundError
- a 200 whose body does not have the documented shape -> KuboError saying what was wrong

An error that Kubo hits after it started streaming a 200 is only reported in an HTTP
trailer, which httpx does not expose: callers verify what they receive (every block
against its CID, every CAR through `read_car`), so truncation is still detected.

`KuboClient` also implements the `BlockStore` protocol (put/get/has/delete/iter_cids)
over block/put, block/get, block/stat, block/rm and refs/local; those calls run with
`offline=true` so "not here" means not in this node's repo, never a network search.
"""
from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx

from vault.cid import CID
from vault.errors import BlockNotFoundError, InputValidationError, KuboError, KuboUnavailableError
from vault.unixfs import DEFAULT_PROFILE, PROFILES

DEFAULT_URL = "http://127.0.0.1:5001"
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=5.0)
_CHUNK = 1 << 20

# Codec names Kubo's block/put understands, by multicodec code.
_CODEC_NAMES = {0x55: "raw", 0x70: "dag-pb", 0x71: "dag-cbor", 0x0129: "dag-json"}


@dataclass(frozen=True)
class ImportedRoot:
    """One root line of `dag/import`: the root CID and Kubo's pin error ("" when pinned)."""

    cid: str
    pin_error: str


@dataclass(frozen=True)
class DagImportResult:
    roots: tuple[ImportedRoot, ...]
    block_count: int | None
    block_bytes: int | None


@dataclass(frozen=True)
class NodeIdentity:
    """What `id` says about the node."""

    peer_id: str
    agent_version: str
    addresses: tuple[str, ...]
    protocols: tuple[str, ...]
    public_key: str


def add_params(profile: str) -> dict[str, str]:
    """The `add` flags that make Kubo build exactly the DAG of vault `profile`.

    Every parameter that changes the CID is pinned explicitly, so the node's own
    `Import.*` configuration cannot change the result.
    """
    p = PROFILES.get(profile) if isinstance(profile, str) else None
    if p is None:
        raise InputValidationError(f"unknown import profile {profile!r}; known: {', '.join(PROFILES)}")
    return {
        "cid-version": str(p.cid_version),
        "raw-leaves": _bool(p.raw_leaves),
        "chunker": f"size-{p.chunk_size}",
        "max-file-links": str(p.max_links),
        "trickle": "false",
        "hash": "sha2-256",
        "inline": "false",
    }


class KuboClient:
    """Client for one Kubo daemon. Pass `transport` (e.g. httpx.MockTransport) in unit tests."""

    def __init__(self, base_url: str = DEFAULT_URL, transport: httpx.BaseTransport | None = None,
                 timeout: float | httpx.Timeout = DEFAULT_TIMEOUT) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise InputValidationError(f"Kubo RPC URL must be http(s)://host[:port], got {base_url!r}")
        self.base_url = str(url).rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, transport=transport, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> KuboClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- files -------------------------------------------------------------------------

    def add(self, src: bytes | BinaryIO | Path | Iterable[bytes], *, profile: str | None = None,
            only_hash: bool = False, pin: bool = True, quieter: bool = True, filename: str = "file") -> str:
        """`ipfs add`: stream `src` to Kubo, return the root CID (string, as Kubo prints it)."""
        params = add_params(profile or DEFAULT_PROFILE)
        params.update({"only-hash": _bool(only_hash), "pin": _bool(pin), "quieter": _bool(quieter)})
        root = None
        for obj in self._ndjson("add", params, _Multipart(filename, _chunks(src))):
            if "Hash" in obj:
                root = _cid_field(obj, "Hash", "add")
            elif "Bytes" not in obj:  # progress lines carry only Name/Bytes
                raise KuboError(f"Kubo add returned an unexpected object: {_short(obj)}")
        if root is None:
            raise KuboError("Kubo add returned no CID")
        return root

    def cat(self, cid: CID | str, *, offset: int | None = None, length: int | None = None) -> Iterator[bytes]:
        """`ipfs cat`: the file's bytes, streamed. Errors before the first byte raise here."""
        params: dict[str, str] = {"arg": _cid_arg(cid)}
        if offset is not None:
            params["offset"] = str(_non_negative(offset, "offset"))
        if length is not None:
            params["length"] = str(_non_negative(length, "length"))
        return self._stream("cat", params)

    # -- blocks ------------------------------------------------------------------------

    def block_get(self, cid: CID | str, *, offline: bool = False) -> bytes:
        """`ipfs block get`: the block's bytes, verified against `cid` (BlockMismatchError)."""
        parsed = _parse_cid(cid)
        params = {"arg": str(parsed)}
        if offline:
            params["offline"] = "true"
        resp = self._send("block/get", params)
        parsed.verify(resp.content)  # BlockMismatchError
        return resp.content

    def block_put(self, data: bytes, *, cid_codec: str = "raw", mhtype: str = "sha2-256", pin: bool = False) -> str:
        """`ipfs block put`: store `data`, return the CID Kubo reports (its `Key`)."""
        params = {"cid-codec": cid_codec, "mhtype": mhtype, "pin": _bool(pin)}
        obj = self._json("block/put", params, _Multipart("data", [bytes(data)], buffered=True))
        key = _cid_field(obj, "Key", "block/put")
        _int_field(obj, "Size", "block/put")
        return key

    def block_stat(self, cid: CID | str, *, offline: bool = False) -> int:
        """`ipfs block stat`: the block's size in bytes."""
        params = {"arg": _cid_arg(cid)}
        if offline:
            params["offline"] = "true"
        obj = self._json("block/stat", params)
        _cid_field(obj, "Key", "block/stat")
        return _int_field(obj, "Size", "block/stat")

    def block_rm(self, cid: CID | str, *, force: bool = False) -> None:
        """`ipfs block rm`. A missing block raises BlockNotFoundError unless `force`."""
        params = {"arg": _cid_arg(cid), "force": _bool(force)}
        for obj in self._ndjson("block/rm", params):
            error = obj.get("Error", "")
            if not isinstance(error, str) or not isinstance(obj.get("Hash"), str):
                raise KuboError(f"Kubo block/rm returned an unexpected object: {_short(obj)}")
            if error:
                _raise_for_message(f"Kubo block/rm {obj['Hash']}: {error}", None, 200)

    # -- pins --------------------------------------------------------------------------

    def pin_add(self, cid: CID | str, *, recursive: bool = True) -> list[str]:
        obj = self._json("pin/add", {"arg": _cid_arg(cid), "recursive": _bool(recursive)})
        return _str_list(obj, "Pins", "pin/add")

    def pin_rm(self, cid: CID | str, *, recursive: bool = True) -> list[str]:
        obj = self._json("pin/rm", {"arg": _cid_arg(cid), "recursive": _bool(recursive)})
        return _str_list(obj, "Pins", "pin/rm")

    # -- CAR ---------------------------------------------------------------------------

    def dag_import(self, src: bytes | BinaryIO | Path | Iterable[bytes], *, pin_roots: bool = True) -> DagImportResult:
        """`ipfs dag import --stats`: upload a CARv1 stream; roots with Kubo's pin errors."""
        params = {"pin-roots": _bool(pin_roots), "stats": "true"}
        roots: list[ImportedRoot] = []
        count = size = None
        for obj in self._ndjson("dag/import", params, _Multipart("file.car", _chunks(src))):
            if "Root" in obj:
                root = obj["Root"]
                cid = root.get("Cid") if isinstance(root, dict) else None
                if not isinstance(cid, dict) or not isinstance(cid.get("/"), str):
                    raise KuboError(f"Kubo dag/import returned a malformed Root: {_short(obj)}")
                _parse_cid(cid["/"], what="Kubo dag/import Root CID")
                err = root.get("PinErrorMsg", "")
                roots.append(ImportedRoot(cid["/"], err if isinstance(err, str) else str(err)))
            elif "Stats" in obj and isinstance(obj["Stats"], dict):
                count = _int_field(obj["Stats"], "BlockCount", "dag/import")
                size = _int_field(obj["Stats"], "BlockBytesCount", "dag/import")
            else:
                raise KuboError(f"Kubo dag/import returned an unexpected object: {_short(obj)}")
        return DagImportResult(tuple(roots), count, size)

    def dag_export(self, cid: CID | str) -> Iterator[bytes]:
        """`ipfs dag export`: the DAG under `cid` as a CARv1 stream."""
        return self._stream("dag/export", {"arg": _cid_arg(cid), "progress": "false"})

    # -- node --------------------------------------------------------------------------

    def id(self) -> NodeIdentity:
        obj = self._json("id", {})
        if not isinstance(obj.get("ID"), str) or not obj["ID"]:
            raise KuboError(f"Kubo id returned no ID: {_short(obj)}")
        return NodeIdentity(
            peer_id=obj["ID"],
            agent_version=str(obj.get("AgentVersion", "")),
            addresses=tuple(_str_list(obj, "Addresses", "id", optional=True)),
            protocols=tuple(_str_list(obj, "Protocols", "id", optional=True)),
            public_key=str(obj.get("PublicKey", "")),
        )

    def version(self) -> str:
        """The daemon's version string, e.g. "0.41.0"."""
        obj = self._json("version", {})
        if not isinstance(obj.get("Version"), str) or not obj["Version"]:
            raise KuboError(f"Kubo version returned no Version: {_short(obj)}")
        return obj["Version"]

    # -- BlockStore protocol -------------------------------------------------------------

    def put(self, cid: CID, data: bytes) -> None:
        """Store `data` under `cid` (verified locally first; idempotent)."""
        parsed = _parse_cid(cid)
        parsed.verify(data)  # BlockMismatchError
        codec = _CODEC_NAMES.get(parsed.codec)
        if codec is None:
            raise InputValidationError(f"cannot store a block with multicodec 0x{parsed.codec:x} in Kubo")
        key = self.block_put(data, cid_codec=codec, mhtype="sha2-256")
        if _parse_cid(key, what="Kubo block/put Key").multihash != parsed.multihash:
            raise KuboError(f"Kubo stored the block under {key}, expected {parsed}")

    def get(self, cid: CID) -> bytes:
        return self.block_get(cid, offline=True)

    def has(self, cid: CID) -> bool:
        try:
            self.block_stat(cid, offline=True)
        except BlockNotFoundError:
            return False
        return True

    def delete(self, cid: CID) -> None:
        self.block_rm(cid, force=True)

    def pin(self, root: CID) -> None:
        """Pin `root` recursively (as FilesystemBlockstore.pin)."""
        self.pin_add(root)

    def unpin(self, root: CID) -> bool:
        """Remove the recursive pin on `root`; returns whether it was pinned."""
        try:
            self.pin_rm(root)
        except KuboError as exc:
            if "not pinned" in exc.message:
                return False
            raise
        return True

    def iter_cids(self) -> Iterator[CID]:
        """Every block in the node's repo (`refs/local`)."""
        for obj in self._ndjson("refs/local", {}):
            err = obj.get("Err", "")
            if err:
                raise KuboError(f"Kubo refs/local: {err}")
            if not isinstance(obj.get("Ref"), str):
                raise KuboError(f"Kubo refs/local returned an unexpected object: {_short(obj)}")
            yield _parse_cid(obj["Ref"], what="Kubo refs/local Ref")

    # -- transport -----------------------------------------------------------------------

    def _send(self, command: str, params: dict[str, str], body: _Multipart | None = None, *,
              stream: bool = False) -> httpx.Response:
        headers, content = {}, None
        if body is not None:
            headers["Content-Type"] = f"multipart/form-data; boundary={body.boundary}"
            content = b"".join(body) if body.buffered else iter(body)
        request = self._http.build_request("POST", f"/api/v0/{command}", params=params, content=content,
                                           headers=headers)
        try:
            resp = self._http.send(request, stream=stream)
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise KuboUnavailableError(f"Kubo RPC at {self.base_url} is not reachable: {reason}") from exc
        if resp.status_code != 200:
            try:
                raw = resp.read()
            except httpx.TransportError:
                raw = b""
            finally:
                resp.close()
            _raise_for_body(command, resp.status_code, raw)
        return resp

    def _json(self, command: str, params: dict[str, str], body: _Multipart | None = None) -> dict[str, Any]:
        resp = self._send(command, params, body)
        try:
            obj = json.loads(resp.content)
        except ValueError:
            raise KuboError(f"Kubo {command} returned a body that is not JSON: {resp.content[:120]!r}") from None
        if not isinstance(obj, dict):
            raise KuboError(f"Kubo {command} returned {type(obj).__name__}, expected a JSON object")
        return obj

    def _ndjson(self, command: str, params: dict[str, str], body: _Multipart | None = None) -> Iterator[dict[str, Any]]:
        """Parse a newline-delimited JSON response (one object per line) as it streams."""
        resp = self._send(command, params, body, stream=True)
        try:
            for line in _read(self, resp, lines=True):
                try:
                    obj = json.loads(line)
                except ValueError:
                    raise KuboError(f"Kubo {command} returned a line that is not JSON: {line[:120]!r}") from None
                if not isinstance(obj, dict):
                    raise KuboError(f"Kubo {command} returned {type(obj).__name__}, expected JSON objects")
                if obj.get("Type") == "error" and "Message" in obj:
                    _raise_for_message(f"Kubo {command}: {obj['Message']}", obj.get("Code"), 200)
                yield obj
        finally:
            resp.close()

    def _stream(self, command: str, params: dict[str, str]) -> Iterator[bytes]:
        return _read(self, self._send(command, params, stream=True), lines=False)


# -- helpers ---------------------------------------------------------------------------


class _Multipart:
    """A multipart/form-data body with one file part; streamed unless `buffered`."""

    def __init__(self, filename: str, chunks: Iterable[bytes], *, buffered: bool = False) -> None:
        self.boundary = secrets.token_hex(16)
        self.filename = filename
        self.chunks = chunks
        self.buffered = buffered

    def __iter__(self) -> Iterator[bytes]:
        yield (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{quote(self.filename, safe="")}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        for chunk in self.chunks:
            if chunk:
                yield chunk
        yield f"\r\n--{self.boundary}--\r\n".encode()


def _chunks(src: bytes | bytearray | memoryview | BinaryIO | os.PathLike | Iterable[bytes]) -> Iterator[bytes]:
    if isinstance(src, (bytes, bytearray, memoryview)):
        yield bytes(src)
    elif isinstance(src, (str, os.PathLike)):
        with open(src, "rb") as f:
            while chunk := f.read(_CHUNK):
                yield chunk
    elif hasattr(src, "read"):
        while chunk := src.read(_CHUNK):
            yield chunk
    else:
        for chunk in src:
            if not isinstance(chunk, (bytes, bytearray, memoryview)):
                raise InputValidationError(f"expected an iterable of bytes, got {type(chunk).__name__}")
            yield bytes(chunk)


def _read(client: KuboClient, resp: httpx.Response, lines: bool) -> Iterator[Any]:
    """The response body as lines or byte pieces; a broken connection -> KuboUnavailableError."""
    try:
        yield from (line for line in resp.iter_lines() if line.strip()) if lines else resp.iter_bytes(_CHUNK)
    except httpx.TransportError as exc:
        raise KuboUnavailableError(f"Kubo RPC at {client.base_url} broke off the response: {exc}") from exc
    finally:
        resp.close()


def _raise_for_body(command: str, status: int, raw: bytes) -> None:
    try:
        obj = json.loads(raw)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and isinstance(obj.get("Message"), str):
        code = obj.get("Code")
        _raise_for_message(f"Kubo {command} failed: {obj['Message']}", code if isinstance(code, int) else None, status)
    text = raw.decode("utf-8", "replace").strip()[:200] or "(empty body)"
    raise KuboError(f"Kubo {command} failed with HTTP {status}: {text}", None, status)


def _raise_for_message(message: str, code: Any, status: int) -> None:
    low = message.lower()
    if "not found" in low or "could not find" in low:
        raise BlockNotFoundError(message)
    raise KuboError(message, code if isinstance(code, int) else None, status)


def _parse_cid(value: CID | str, *, what: str = "CID") -> CID:
    if isinstance(value, CID):
        return value
    if not isinstance(value, str):
        raise InputValidationError(f"{what} must be a string, got {type(value).__name__}")
    try:
        return CID.decode(value)
    except InputValidationError as exc:
        if what.startswith("Kubo"):
            raise KuboError(f"{what} {value!r} is not a valid CID: {exc}") from None
        raise


def _cid_arg(value: CID | str) -> str:
    return str(_parse_cid(value))


def _cid_field(obj: dict[str, Any], key: str, command: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise KuboError(f"Kubo {command} returned no {key}: {_short(obj)}")
    _parse_cid(value, what=f"Kubo {command} {key}")
    return value


def _int_field(obj: dict[str, Any], key: str, command: str) -> int:
    value = obj.get(key)
    if isinstance(value, str) and value.isdigit():  # Kubo sends some sizes as strings
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise KuboError(f"Kubo {command} returned a bad {key}: {_short(obj)}")
    return value


def _str_list(obj: dict[str, Any], key: str, command: str, *, optional: bool = False) -> list[str]:
    value = obj.get(key, [] if optional else None)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise KuboError(f"Kubo {command} returned a bad {key}: {_short(obj)}")
    return value


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _non_negative(value: int, name: str) -> int:
    if not isinstance(value, int) or value < 0:
        raise InputValidationError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def _short(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True)
    return text if len(text) <= 200 else text[:197] + "..."
