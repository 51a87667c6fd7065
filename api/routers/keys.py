"""Key release: POST /v1/keys (self-authenticating — the KeyRequest is signed, so no
X-TwinLedger-* headers). The decision and its audit record are the use case's
(api/usecases/release.py); a denial answers with the error's status and `audit_seq`."""
from __future__ import annotations

import base64

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api import schemas
from api.deps import NodeDep, read_limited_body
from api.usecases import release_key

router = APIRouter(tags=["keys"])

_DENIAL = {"description": "denied; the body names the reason code and the audit record",
           "content": {"application/problem+json": {"example": {
               "error": "grant_expired", "detail": "0x… may not READ asset 1: the grant expired at 1767225600",
               "audit_seq": 42}}}}


@router.post("/v1/keys", response_model=schemas.KeyReleaseResult, summary="Request the key of an asset version",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": schemas.KeyReleaseRequest.model_json_schema(),
             }}}},
             responses={401: _DENIAL, 403: _DENIAL, 404: _DENIAL})
async def request_key(request: Request, node: NodeDep) -> JSONResponse:
    raw = await read_limited_body(request, node.settings.max_body_bytes)
    try:
        body = schemas.KeyReleaseRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors()]) from None
    release = await run_in_threadpool(release_key, node, body.request, body.signature)
    # A JSONResponse as is: FastAPI would otherwise validate and serialise the model a
    # second time on the hottest route (response_model above still documents the shape).
    return JSONResponse({
        "header": base64.b64encode(release.header).decode("ascii"),
        "receipt": {**release.receipt.to_json(), "signature": "0x" + release.signature.hex()},
        "audit_seq": release.audit_seq,
    })
