"""Trustless gateway (IPFS HTTP Gateway spec, trustless subset) over the node's own store.

    GET /ipfs/{cid}?format=raw    or Accept: application/vnd.ipld.raw   one block
    GET /ipfs/{cid}?format=car    or Accept: application/vnd.ipld.car   the DAG under cid,
                                  CARv1, depth-first pre-order, each block once (order=dfs; dups=n)

Open route: it serves ciphertext only, and every block is verifiable against its CID, so
no client has to trust this node. Only content already in the node's store is served
(the Kubo store reads with offline=true): unknown CID → 404, malformed CID → 400, neither
a format parameter nor an acceptable Accept header → 406. The CAR streams block by block
(bounded memory); a block that goes missing mid-stream truncates the CAR, which clients
detect (the gateway client requires a complete DAG).

The CAR framing is written here (header from vault.car.encode_header, then per block
varint(len(cid)+len(block)) ‖ cid ‖ block) because vault.car.write_car writes to a file
object and this route must yield bytes as it goes; the varint is unsigned LEB128.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import NodeDep
from api.errors import MalformedCIDError, NotAcceptableError
from vault.car import dag_blocks, encode_header
from vault.cid import CID
from vault.errors import BlockNotFoundError, InvalidCIDError
from vault.gateway import CAR_ACCEPT, RAW_ACCEPT

router = APIRouter(tags=["gateway"])

RAW_TYPE = RAW_ACCEPT
CAR_TYPE = CAR_ACCEPT
MAX_CID_CHARS = 512
_IMMUTABLE = "public, max-age=29030400, immutable"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _format(format_: str | None, accept: str | None) -> str:
    if format_ is not None:
        return format_
    for item in (accept or "").split(","):
        media = item.split(";", 1)[0].strip().lower()
        if media == "application/vnd.ipld.car":
            return "car"
        if media == "application/vnd.ipld.raw":
            return "raw"
    raise NotAcceptableError("this trustless gateway serves only ?format=raw|car (application/vnd.ipld.raw or "
                             "application/vnd.ipld.car)")


def _parse(cid: str) -> CID:
    if len(cid) > MAX_CID_CHARS:
        raise MalformedCIDError(f"CID longer than {MAX_CID_CHARS} characters")
    try:
        return CID.decode(cid)
    except InvalidCIDError as exc:
        raise MalformedCIDError(f"not a CID: {exc}") from None


def _car_stream(node, root: CID, header: bytes) -> Iterator[bytes]:
    yield header
    # One block at a time: a client may read slowly or stall, and a read-ahead would hold
    # its blocks and threads meanwhile (and read past the page cache a DAG asked for often).
    for cid, data in dag_blocks(node.blockstore, root, read_ahead=False):
        cid_bytes = cid.to_bytes()
        yield _varint(len(cid_bytes) + len(data)) + cid_bytes + data


@router.get("/ipfs/{cid}", summary="Trustless gateway: a block (raw) or a DAG (CAR)",
            responses={200: {"content": {RAW_TYPE: {}, "application/vnd.ipld.car": {}},
                             "description": "verifiable bytes"},
                       400: {"description": "malformed CID"}, 404: {"description": "not in this node's store"},
                       406: {"description": "no raw/car format requested"}})
async def get_ipfs(cid: str, node: NodeDep,
                   format: Annotated[Literal["raw", "car"] | None, Query(description="raw | car")] = None,
                   accept: Annotated[str | None, Header(max_length=1024)] = None) -> Response:
    root = _parse(cid)
    kind = _format(format, accept)
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": _IMMUTABLE, "X-Ipfs-Path": f"/ipfs/{cid}",
               "Etag": f'"{root}.{kind}"', "Vary": "Accept"}
    if kind == "raw":
        data = await run_in_threadpool(node.blockstore.get, root)  # verified on read; BlockNotFoundError → 404
        headers["Content-Disposition"] = f'attachment; filename="{root}.bin"'
        return Response(content=data, media_type=RAW_TYPE, headers=headers)
    if not await run_in_threadpool(node.blockstore.has, root):
        raise BlockNotFoundError(f"block {root} is not in this node's store")
    headers["Content-Disposition"] = f'attachment; filename="{root}.car"'
    return StreamingResponse(_car_stream(node, root, encode_header([root])), media_type=CAR_TYPE, headers=headers)
