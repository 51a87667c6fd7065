"""Grants: issue and revoke (own org, transactions), list per asset or per grantee
(members, from the index).

    POST   /v1/assets/{asset_id}/grants             201 GrantTx
    DELETE /v1/assets/{asset_id}/grants/{grantee}   200 GrantTx
    GET    /v1/assets/{asset_id}/grants             GrantList
    GET    /v1/grants?grantee=&permission=          GrantList (the sync service's feed)
"""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi import Path as PathParam

from api import schemas
from api.deps import AuthenticatedOrg, NodeDep, OwnOrg
from api.routers._views import grant_view, indexed_asset
from api.usecases import grant, revoke
from api.usecases._common import parse_permissions
from ledger.models import Permission

router = APIRouter(tags=["grants"])

AssetId = Annotated[int, PathParam(ge=0, lt=2**256, description="on-chain asset id")]
AddressPath = Annotated[str, PathParam(pattern=r"^0x[0-9a-fA-F]{40}$", description="grantee org address")]


def _tx(change) -> schemas.GrantTx:
    return schemas.GrantTx(tx_hash=change.tx_hash, block=change.block, audit_seq=change.audit_seq)


@router.post("/v1/assets/{asset_id}/grants", status_code=201, response_model=schemas.GrantTx,
             summary="Grant an org READ / SYNC / COMPUTE on an asset (own org)")
def create_grant(asset_id: AssetId, body: schemas.GrantCreate, caller: OwnOrg, node: NodeDep) -> schemas.GrantTx:
    change = grant(node, asset_id, body.grantee, parse_permissions(body.permissions), expiry=body.expiry,
                   ttl_seconds=body.ttl_seconds, purpose=body.purpose, actor=caller.address)
    return _tx(change)


@router.delete("/v1/assets/{asset_id}/grants/{grantee}", response_model=schemas.GrantTx,
               summary="Revoke a grant (own org); stops future key releases, cannot recall released bytes")
def delete_grant(asset_id: AssetId, grantee: AddressPath, caller: OwnOrg, node: NodeDep) -> schemas.GrantTx:
    return _tx(revoke(node, asset_id, grantee, actor=caller.address))


@router.get("/v1/assets/{asset_id}/grants", response_model=schemas.GrantList, summary="Grants on an asset (members)")
def asset_grants(asset_id: AssetId, caller: AuthenticatedOrg, node: NodeDep) -> schemas.GrantList:
    assert node.queries is not None
    indexed_asset(node, asset_id)
    now = node.ledger.chain_time()
    return schemas.GrantList(items=[grant_view(g, now) for g in node.queries.grants_for_asset(asset_id)])


@router.get("/v1/grants", response_model=schemas.GrantList, summary="Grants held by an org across assets (members)")
def grants_of(caller: AuthenticatedOrg, node: NodeDep,
              grantee: Annotated[str | None, Query(pattern=r"^0x[0-9a-fA-F]{40}$",
                                                   description="default: the caller")] = None,
              permission: schemas.PermissionName | None = None) -> schemas.GrantList:
    assert node.queries is not None
    bit = Permission[permission] if permission else Permission(0)
    now = node.ledger.chain_time()
    items = [grant_view(g, now) for g in node.queries.grants_for_grantee(grantee or caller.address)
             if g.permissions & bit == bit]
    return schemas.GrantList(items=items)
