"""Lineage (members), from the index: the ancestors / descendants of a version and its
W3C PROV-JSON export (entities = versions, activities = publish / compute / sync,
agents = orgs).

    GET /v1/lineage/{asset_id}/{version}?direction=ancestors|descendants|both
    GET /v1/lineage/{asset_id}/{version}/prov?include_descendants=
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi import Path as PathParam

from api import schemas
from api.deps import AuthenticatedOrg, NodeDep
from api.routers._views import indexed_version
from api.node import Node

router = APIRouter(prefix="/v1/lineage", tags=["lineage"])

AssetId = Annotated[int, PathParam(ge=0, lt=2**256)]
VersionNo = Annotated[int, PathParam(ge=1, lt=2**32)]
MaxDepth = Annotated[int | None, Query(ge=1, le=10_000, description="stop after this many derivation steps")]


def _require(node: Node, asset_id: int, version: int) -> None:
    indexed_version(node, asset_id, version)


def _nodes(items) -> list[schemas.LineageNodePublic]:
    return [schemas.LineageNodePublic(asset_id=n.asset_id, version=n.version, depth=n.depth) for n in items]


@router.get("/{asset_id}/{version}", response_model=schemas.LineagePublic, summary="Ancestors and descendants")
def lineage(asset_id: AssetId, version: VersionNo, caller: AuthenticatedOrg, node: NodeDep,
            direction: Literal["ancestors", "descendants", "both"] = "both",
            max_depth: MaxDepth = None) -> schemas.LineagePublic:
    _require(node, asset_id, version)
    assert node.queries is not None
    up = direction in ("ancestors", "both")
    down = direction in ("descendants", "both")
    return schemas.LineagePublic(
        root=schemas.VersionRefPublic(asset_id=asset_id, version=version),
        ancestors=_nodes(node.queries.ancestors(asset_id, version, max_depth=max_depth)) if up else [],
        descendants=_nodes(node.queries.descendants(asset_id, version, max_depth=max_depth)) if down else [])


@router.get("/{asset_id}/{version}/prov", summary="W3C PROV-JSON of a version and its ancestry",
            response_model=dict[str, Any])
def prov(asset_id: AssetId, version: VersionNo, caller: AuthenticatedOrg, node: NodeDep,
         include_descendants: bool = False) -> dict[str, Any]:
    _require(node, asset_id, version)
    assert node.queries is not None
    return node.queries.prov_json(asset_id, version, include_descendants=include_descendants)
