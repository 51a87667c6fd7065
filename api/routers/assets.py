"""Assets and versions: create (own org), publish a version as a streamed multipart upload
(own org), and the catalog from the index (members).

    POST /v1/assets                                  201 AssetCreated
    POST /v1/assets/{asset_id}/versions              201 VersionPublished (200: idempotent retry)
    GET  /v1/assets?owner=&kind=&limit=&after=       AssetList
    GET  /v1/assets/{asset_id}                       AssetDetail
    GET  /v1/assets/{asset_id}/versions/{version}    VersionPublic
"""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool

from api import schemas
from api.deps import AuthenticatedOrg, NodeDep, OwnOrg, StreamingOwnOrg
from api.routers._upload import FILE_PART, PARENTS_PART, receive_upload
from api.routers._views import asset_view, indexed_asset, indexed_version, version_view
from api.usecases import check_publishable, create_asset, publish_version
from api.usecases._common import format_ref, kind_name, parse_kind
from api.usecases.publish import check_idempotency_key

router = APIRouter(prefix="/v1/assets", tags=["assets"])

AssetId = Annotated[int, PathParam(ge=0, lt=2**256, description="on-chain asset id")]
VersionNo = Annotated[int, PathParam(ge=1, lt=2**32, description="version number (1, 2, …)")]
OwnerQuery = Annotated[str | None, Query(pattern=r"^0x[0-9a-fA-F]{40}$", description="owner org address")]
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", max_length=128,
    description="Makes the upload idempotent: a retry with the same key (and the same bytes) returns the version "
                "registered the first time (200) instead of registering twice. The SDK always sends one.")]

_UPLOAD_BODY = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": [FILE_PART],
        "properties": {
            FILE_PART: {"type": "string", "format": "binary", "description": "the plaintext, streamed"},
            PARENTS_PART: {"type": "string", "description": 'JSON list of "assetId@version"',
                           "examples": ['["3@1", "4@2"]']},
        }}}},
}


@router.post("", status_code=201, response_model=schemas.AssetCreated,
             summary="Create an asset (own org)")
def create(body: schemas.AssetCreate, caller: OwnOrg, node: NodeDep) -> schemas.AssetCreated:
    result = create_asset(node, body.kind, body.name, body.metadata, actor=caller.address)
    return schemas.AssetCreated(asset_id=result.asset_id, owner=result.owner, kind=kind_name(result.kind),
                                name=result.name, metadata_digest="0x" + result.metadata_digest.hex(),
                                tx_hash=result.tx_hash, block=result.block, audit_seq=result.audit_seq)


@router.post("/{asset_id}/versions", status_code=201, response_model=schemas.VersionPublished,
             summary="Publish a version (own org, streamed multipart upload)",
             openapi_extra={"requestBody": _UPLOAD_BODY},
             responses={200: {"model": schemas.VersionPublished,
                              "description": "idempotent retry: the version registered the first time"}})
async def publish(asset_id: AssetId, request: Request, response: Response, caller: StreamingOwnOrg, node: NodeDep,
                  idempotency_key: IdempotencyKey = None) -> schemas.VersionPublished:
    check_idempotency_key(idempotency_key)
    await run_in_threadpool(check_publishable, node, asset_id)  # refuse before reading the upload
    upload = await receive_upload(request, caller, node.settings.org_dir / "tmp" if node.settings.org
                                  else node.settings.home / "tmp")
    try:
        result = await run_in_threadpool(publish_version, node, asset_id, upload.path, upload.parents,
                                         idempotency_key, actor=caller.address, content_sha256=upload.sha256)
    finally:
        upload.discard()
    if not result.created:
        response.status_code = 200
    return schemas.VersionPublished(asset_id=result.asset_id, version=result.version, cid=result.cid,
                                    commitment="0x" + result.commitment.hex(), size=result.size,
                                    parents=[format_ref(p) for p in result.parents], tx_hash=result.tx_hash,
                                    block=result.block, audit_seq=result.audit_seq)


@router.get("", response_model=schemas.AssetList, summary="List assets from the index (members)")
def list_assets(caller: AuthenticatedOrg, node: NodeDep, owner: OwnerQuery = None,
                kind: schemas.KindName | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                after: Annotated[int, Query(ge=0, lt=2**256, description="asset id cursor")] = 0,
                ) -> schemas.AssetList:
    assert node.queries is not None
    found = node.queries.assets(owner=owner, kind=parse_kind(kind) if kind else None, after=after, limit=limit + 1)
    page = found[:limit]
    return schemas.AssetList(items=[asset_view(a) for a in page],
                             next=page[-1].asset_id if len(found) > limit else None)


@router.get("/{asset_id}", response_model=schemas.AssetDetail, summary="An asset with its versions (members)")
def get_asset(asset_id: AssetId, caller: AuthenticatedOrg, node: NodeDep) -> schemas.AssetDetail:
    assert node.queries is not None
    asset = indexed_asset(node, asset_id)
    return schemas.AssetDetail(**asset_view(asset).model_dump(),
                               versions=[version_view(v) for v in node.queries.versions(asset_id)])


@router.get("/{asset_id}/versions/{version}", response_model=schemas.VersionPublic,
            summary="One version (members)")
def get_version(asset_id: AssetId, version: VersionNo, caller: AuthenticatedOrg, node: NodeDep) -> schemas.VersionPublic:
    return version_view(indexed_version(node, asset_id, version))
