"""Every router of the node, gathered in one place: add yours to `api_router` here.

One APIRouter per resource (FastAPI full-stack template); prefixes live with the router.
"""
from __future__ import annotations

from fastapi import APIRouter

from api.routers import health

api_router = APIRouter()
api_router.include_router(health.router)
