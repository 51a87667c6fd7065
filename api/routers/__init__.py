"""Every router of the node, gathered in one place: add yours to `api_router` here.

One APIRouter per resource (FastAPI full-stack template); prefixes live with the router.
Extensions (e.g. the compute-to-data job router) add theirs in `install(app, node)`.
"""
from __future__ import annotations

from fastapi import APIRouter

from api.routers import assets, audit, consumptions, gateway, grants, health, keys, lineage

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(assets.router)
api_router.include_router(grants.router)
api_router.include_router(keys.router)
api_router.include_router(consumptions.router)
api_router.include_router(audit.router)
api_router.include_router(lineage.router)
api_router.include_router(gateway.router)
