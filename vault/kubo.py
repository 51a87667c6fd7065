"""A thin client for the Kubo RPC API (https://docs.ipfs.tech/reference/kubo/rpc/).

Every call is `POST /api/v0/<command>`; arguments go in the query string (`arg=` may
repeat), files go in a `multipart/form-data` body whose parts look like

    --<boundary>
    Content-Disposition: form-data; name="file"; filename="<url-escaped name>"
    Content-Type: application/octet-stream

    <bytes...>
    --<boundary>--

Uploads (`add`, `dag/import`) and downloads (`cat`, `dag/export`) stream, so memory stays
bounded whatever the size. Everything else Kubo sends is read with a cap, and refused
(KuboError) as soon as it goes over: MAX_JSON_SIZE for a JSON body or one ndjson line,
MAX_SECTION_SIZE for a `block/get` body; of an error body at most MAX_ERROR_BODY_SIZE is
read. Failures are mapped here, and no httpx exception leaves the client:

- the daemon cannot be reached (refused, DNS, timeout) or breaks off -> KuboUnavailableError
- HTTP 4xx/5xx, body `{"Message": ..., "Code": ..., "Type": "error"}` -> KuboError
  (message, Kubo's code, HTTP status); a missing block -> BlockNotFoundError, only for the
  block-level commands and only in Kubo's own words (`_NOT_FOUND`)
- a 200 whose body does not decode, is too large or does not have the documented shape
  -> KuboError saying what was wrong

An error that Kubo hits after it started streaming a 200 is only reported in an HTTP
trailer, which httpx does not expose: callers verify what they receive (every block
against its CID, every CAR through `read_car`), so truncation is still detected.

`KuboClient` also implements the `BlockStore` protocol (put/get/has/delete/iter_cids)
over block/put, block/get, block/stat, block/rm and refs/local. `get` and `has` send
`offline=true`, so "not here" means not in this node's repo, never a network search; the
others act on the local repo only and need no flag.
"""
from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx

from vault.car import MAX_SECTION_SIZE
from vault.cid import CID
from vault.errors import BlockNotFoundError, InputValidationError, KuboError, KuboUnavailableError
from vault.unixfs import DEFAULT_PROFILE, PROFILES

DEFAULT_URL = "http://127.0.0.1:5001"
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=5.0)
_CHUNK = 1 << 20
MAX_JSON_SIZE = 1 << 20  # a JSON body or one ndjson line; Kubo's are a few KiB at most
MAX_ERROR_BODY_SIZE = 64 << 10  # what is read of an error body; the rest is dropped

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
        # identity: the caps count decoded bytes, and one compressed network read can inflate
        # a thousandfold before they are checked (Kubo does not compress RPC answers anyway)
        self._http = httpx.Client(base_url=self.base_url, transport=transport, timeout=timeout,
                                  headers={"Accept-Encoding": "identity"})

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
        """`ipfs cat`: the file's bytes, streamed. Errors before the first byte raise here.

        The result has `close()`; closing, exhausting or dropping it releases the connection.
        """
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
        data = self._read_body("block/get", self._send("block/get", params), MAX_SECTION_SIZE)
        parsed.verify(data)  # BlockMismatchError
        return data

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
                _raise_for_message("block/rm", f"Kubo block/rm {obj['Hash']}: {error}", None, 200)

    # -- pins --------------------------------------------------------------------------

    def pin_add(self, cid: CID | str, *, recursive: bool = True) -> list[str]:
        obj = self._json("pin/add", {"arg": _cid_arg(cid), "recursive": _bool(recursive)})
        return _str_list(obj, "Pins", "pin/add")

    def pin_rm(self, cid: CID | str, *, recursive: bool = True) -> list[str]:
        obj = self._json("pin/rm", {"arg": _cid_arg(cid), "recursive": _bool(recursive)})
        return _str_list(obj, "Pins", "pin/rm")

    # -- CAR ---------------------------------------------------------------------------

    def dag_import(self, src: bytes | BinaryIO | Path | Iterable[bytes], *, pin_roots: bool = True) -> DagImportResult:
        """`ipfs dag import --stats`: upload a CARv1 stream; roots with Kubo's pin errors.

        Kubo reports roots only when it pins them: with `pin_roots` a result without any is a
        KuboError (a CAR has at least one root), without it `roots` is empty.
        """
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
        if pin_roots and not roots:
            raise KuboError("Kubo dag/import pinned no roots")
        return DagImportResult(tuple(roots), count, size)

    def dag_export(self, cid: CID | str) -> Iterator[bytes]:
        """`ipfs dag export`: the DAG under `cid` as a CARv1 stream (closes like `cat`'s)."""
        return self._stream("dag/export", {"arg": _cid_arg(cid), "progress": "false"})

    # -- node --------------------------------------------------------------------------

    def id(self) -> NodeIdentity:
        """`ipfs id`; a daemon without a libp2p host (`--offline`) has no addresses or protocols."""
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

    def _send(self, command: str, params: dict[str, str], body: _Multipart | None = None) -> httpx.Response:
        """Send the call; return the 200 response unread (the caller reads and closes it)."""
        headers, content = {}, None
        if body is not None:
            headers["Content-Type"] = f"multipart/form-data; boundary={body.boundary}"
            content = b"".join(body) if body.buffered else iter(body)
        request = self._http.build_request("POST", f"/api/v0/{command}", params=params, content=content,
                                           headers=headers)
        try:
            resp = self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._http_failure(command, exc, reading=False) from exc
        if resp.status_code != 200:
            try:
                raw = self._read_body(command, resp, MAX_ERROR_BODY_SIZE, truncate=True)
            except KuboError:  # broke off: the status says enough
                raw = b""
            _raise_for_body(command, resp.status_code, raw)
        return resp

    def _read_body(self, command: str, resp: httpx.Response, limit: int, *, truncate: bool = False) -> bytes:
        """Read and close `resp`; a body over `limit` bytes is a KuboError, or cut there if `truncate`."""
        body = bytearray()
        with _Body(self, command, resp) as pieces:
            for piece in pieces:
                body += piece
                if len(body) > limit:
                    if truncate:
                        break
                    raise KuboError(f"Kubo {command} returned more than {limit} bytes")
        return bytes(body[:limit])

    def _http_failure(self, command: str, exc: httpx.HTTPError, *, reading: bool) -> KuboError:
        """A transport failure means the daemon is gone; any other httpx error (e.g. a body
        whose Content-Encoding does not decode) means it answered something unreadable."""
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.TransportError):
            what = "broke off the response" if reading else "is not reachable"
            return KuboUnavailableError(f"Kubo RPC at {self.base_url} {what}: {reason}")
        return KuboError(f"Kubo {command} returned a response that cannot be read: {reason}")

    def _json(self, command: str, params: dict[str, str], body: _Multipart | None = None) -> dict[str, Any]:
        raw = self._read_body(command, self._send(command, params, body), MAX_JSON_SIZE)
        obj = _loads(raw, command, "a body")
        if not isinstance(obj, dict):
            raise KuboError(f"Kubo {command} returned {type(obj).__name__}, expected a JSON object")
        return obj

    def _ndjson(self, command: str, params: dict[str, str], body: _Multipart | None = None) -> Iterator[dict[str, Any]]:
        """Parse a newline-delimited JSON response (one object per line) as it streams."""
        with _Body(self, command, self._send(command, params, body)) as pieces:
            for line in _lines(pieces, MAX_JSON_SIZE, command):
                if not line.strip():
                    continue
                obj = _loads(line, command, "a line")
                if not isinstance(obj, dict):
                    raise KuboError(f"Kubo {command} returned {type(obj).__name__}, expected JSON objects")
                if obj.get("Type") == "error" and "Message" in obj:
                    _raise_for_message(command, f"Kubo {command}: {obj['Message']}", obj.get("Code"), 200)
                yield obj

    def _stream(self, command: str, params: dict[str, str]) -> Iterator[bytes]:
        return _Body(self, command, self._send(command, params), _CHUNK)


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


class _Body(Iterator[bytes]):
    """A streamed response body in pieces of up to `chunk_size`; httpx errors become Kubo errors.

    A class, not a generator: a generator's `finally` does not run when it is closed or
    dropped before its first next(), which would leak the response's pooled connection.
    """

    def __init__(self, client: KuboClient, command: str, resp: httpx.Response, chunk_size: int | None = None) -> None:
        self._client, self._command, self._resp = client, command, resp
        self._pieces = resp.iter_bytes(chunk_size)

    def __next__(self) -> bytes:
        try:
            return next(self._pieces)
        except StopIteration:
            self.close()
            raise
        except httpx.HTTPError as exc:
            self.close()
            raise self._client._http_failure(self._command, exc, reading=True) from exc

    def close(self) -> None:
        self._pieces = iter(())
        self._resp.close()

    def __enter__(self) -> _Body:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def _lines(pieces: Iterable[bytes], limit: int, command: str) -> Iterator[bytes]:
    """Split a byte stream at newlines, refusing a line longer than `limit`.

    Hand-written because httpx's iter_lines() buffers until it sees a newline, without bound;
    this holds at most `limit` bytes plus one network read of an unfinished line.
    """
    too_long = f"Kubo {command} returned a line of more than {limit} bytes"
    line = bytearray()
    for piece in pieces:
        *complete, rest = piece.split(b"\n")
        for part in complete:
            line += part
            if len(line) > limit:
                raise KuboError(too_long)
            yield bytes(line)
            line.clear()
        line += rest
        if len(line) > limit:
            raise KuboError(too_long)
    if line:
        yield bytes(line)


def _loads(raw: bytes, command: str, what: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply for the parser
        raise KuboError(f"Kubo {command} returned {what} that is not JSON: {raw[:120]!r}") from None


def _raise_for_body(command: str, status: int, raw: bytes) -> None:
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        obj = None
    if isinstance(obj, dict) and isinstance(obj.get("Message"), str):
        code = obj.get("Code")
        _raise_for_message(command, f"Kubo {command} failed: {obj['Message']}", code, status)
    text = raw.decode("utf-8", "replace").strip()[:200] or "(empty body)"
    raise KuboError(f"Kubo {command} failed with HTTP {status}: {text}", None, status)


# The commands whose failure can mean "that block is not in the repo", and the words Kubo
# uses for it: boxo's ipld.ErrNotFound and the offline exchange's error. Any other "not
# found" (a routing miss, a missing path link, ...) stays a KuboError.
_BLOCK_COMMANDS = frozenset({"block/get", "block/stat", "block/rm", "cat", "dag/export", "pin/add", "pin/rm"})
_NOT_FOUND = ("ipld: could not find", "block was not found locally")


def _raise_for_message(command: str, message: str, code: Any, status: int) -> None:
    if command in _BLOCK_COMMANDS and any(phrase in message.lower() for phrase in _NOT_FOUND):
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
    # Kubo sends some sizes as strings; str.isdigit() would pass "²" and 5,000-digit strings
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,20}", value):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise KuboError(f"Kubo {command} returned a bad {key}: {_short(obj)}")
    return value


def _str_list(obj: dict[str, Any], key: str, command: str, *, optional: bool = False) -> list[str]:
    value = obj.get(key)
    if value is None and optional:  # absent, or null as Kubo sends a nil slice
        value = []
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
